"""What a crawl requests and what it takes a page to be: links requested as found (case
06-query-rewrite), rel=canonical checked against its target (case 19-bad-canonical), meta refresh
followed as a redirect, and session tokens under any name found by the pages' text."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import pytest

from kbindex.crawl import TOKEN_VARIANTS
from kbindex.errors import FetchError, SkipSource
from kbindex.fetch import Fetcher
from kbindex.records import Page
from tests.server import FixtureServer, Response
from tests.sites import FIXTURES, from_folder, from_routes
from tests.test_crawl import crawl

FAST = ("--delay", "0")
ROBOTS_ALL = Response(body=b"User-agent: *\nAllow: /\n", headers={"Content-Type": "text/plain"})


def plan(kb, *args) -> list[dict]:
    """The JSON lines of `index --dry-run --json` (the summary line last)."""
    out = kb("index", *args, "--dry-run", "--json", *FAST)
    return [json.loads(line) for line in out.stdout.splitlines()]


def article(title: str, text: str = "", head: str = "", links: str = "") -> bytes:
    words = text or " ".join(f"{title.lower()} fact{i}" for i in range(60))
    return (f"<html><head><title>{title}</title>{head}</head><body><main><article><h1>{title}</h1>"
            f"<p>{words}</p>{links}</article></main></body></html>").encode()


def pages(items) -> dict[str, Page]:
    return {i.source: i for i in items if isinstance(i, Page)}


def skips(items) -> dict[str, SkipSource]:
    return {i.source: i for i in items if isinstance(i, SkipSource)}


# ---------------------------------------------------------------- case 06: the address linked


def test_case_06_links_are_requested_with_their_query_string_as_written(kb):
    with from_routes(FIXTURES / "query-rewrite" / "routes.json") as site:
        home = plan(kb, site.url("/index.php"))
        news = plan(kb, site.url("/modules.php?name=News"))
        sitemap = plan(kb, site.url("/sitemap.xml"))
        requested = [r.path for r in site.log]
    titles = {name: [r["detail"] for r in rows if r.get("action") == "index"]
              for name, rows in (("home", home), ("news", news), ("sitemap", sitemap))}
    assert sorted(titles["home"]) == ["Printer offline", "VPN error 809"]
    assert sorted(titles["news"]) == ["Mailbox quota", "Password reset"]  # two pages, not one
    assert titles["sitemap"] == ["VPN error 809"]
    assert not any(r.get("action") == "fail" for rows in (home, news, sitemap) for r in rows)
    for path in ("/index.php?/kb/printer", "/index.php?/kb/vpn", "/modules.php?name=News&file=article&sid=12",
                 "/modules.php?name=News&file=article&sid=13", "/sitemap.xml?sitemap=pages&cHash=219806291a"):
        assert path in requested, path
    # nothing was asked for under another form (all of the routes exist)
    # (but the soft-404 probe: one random path per host, which is a 404 here)
    assert all(r.status == 200 for r in site.log if "/kbindex-probe-" not in r.path), \
        [(r.path, r.status) for r in site.log]
    # each page is named by the URL that fetches it
    assert {r["source"] for r in home if r.get("action") == "index"} == {
        site.url("/index.php?/kb/printer"), site.url("/index.php?/kb/vpn")}


def test_query_order_encoding_repeats_and_bare_keys_reach_the_server_as_linked(kb):
    """Made-up: a server that answers only the exact query string, for links whose query is
    not sorted, repeats a key, has a key without a value, `;` separators or escapes that a
    normalizer would rewrite; links that are one page in another order are fetched once."""
    queries = ("?b=2&a=1", "?tag=x&tag=y", "?print", "?a=1;b=2", "?q=caf%C3%A9&path=%2Fdocs", "?x=%7e")
    links = "".join(f'<a href="/page{q}">link {i}</a> ' for i, q in enumerate(queries))
    links += '<a href="/page?a=1&b=2#top">same as the first, another order</a>'
    routes = {"/robots.txt": ROBOTS_ALL, "/": Response(body=article("Home", links=links))}
    for i, q in enumerate(queries):
        routes[f"/page{q}"] = Response(body=article(f"Page {i}"))
    with FixtureServer(routes) as site:
        out = kb.json("index", site.url("/"), *FAST)
        requested = [r.path for r in site.log]
    assert out["failed"] == 0 and out["indexed"] == len(queries) + 1
    assert all(f"/page{q}" in requested for q in queries)
    assert "/page?a=1&b=2" not in requested  # the same page as ?b=2&a=1: not asked twice
    sources = {row["source"] for row in json.loads(kb("sources", "--json").stdout)}
    assert site.url("/page?b=2&a=1") in sources and site.url("/page?print") in sources


def test_urls_that_differ_in_a_parameter_are_different_pages(kb):
    """Made-up: `id` and `p` choose the article (no name is taken for a session id)."""
    links = "".join(f'<a href="/show?id={i}&p=kb">Article {i}</a> ' for i in range(1, 4))
    routes = {"/robots.txt": ROBOTS_ALL, "/": Response(body=article("Home", links=links))}
    for i in range(1, 4):
        routes[f"/show?id={i}&p=kb"] = Response(body=article(f"Article {i}"))
    with FixtureServer(routes) as site:
        out = kb.json("index", site.url("/"), *FAST)
    assert out["indexed"] == 4 and out["failed"] == 0


def test_feed_entries_are_requested_as_written():
    """Made-up: a feed whose entry links carry an unsorted query with an empty value."""
    feed = (b"<?xml version='1.0'?><rss version='2.0'><channel><title>t</title>"
            b"<item><title>a</title><link>/kb.php?view=article&amp;id=7&amp;lang=</link></item>"
            b"</channel></rss>")
    with FixtureServer({"/robots.txt": ROBOTS_ALL,
                        "/feed": Response(body=feed, headers={"Content-Type": "application/rss+xml"}),
                        "/kb.php?view=article&id=7&lang=": Response(body=article("Seven"))}) as site:
        items, result = crawl(site.url("/feed"))
    assert list(pages(items)) == [site.url("/kb.php?view=article&id=7&lang=")]


# ---------------------------------------------------------------- case 19: rel=canonical checked


def test_case_19_a_canonical_naming_the_listing_is_not_trusted(kb):
    with from_folder(FIXTURES / "bad-canonical") as site:
        rows = plan(kb, site.url("/kb/"))
    indexed = {r["source"] for r in rows if r.get("action") == "index"}
    assert indexed == {site.url(f"/kb/{p}.html") for p in ("printer", "vpn", "mail")}
    listing = [r for r in rows if r.get("action") == "skip" and r["source"] == site.url("/kb/")]
    assert listing and listing[0]["kind"] == "listing"
    assert not any(r.get("kind") == "duplicate" for r in rows)


def test_case_19_two_named_pages_stay_two_pages(kb):
    with from_folder(FIXTURES / "bad-canonical") as site:
        out = kb.json("index", site.url("/kb/printer.html"), site.url("/kb/vpn.html"), *FAST)
        sources = json.loads(kb("sources", "--json").stdout)
    assert {s["source"] for s in sources} == {site.url("/kb/printer.html"), site.url("/kb/vpn.html")}
    assert {s["title"] for s in sources} == {"Printer offline", "VPN error 809"}
    assert out["indexed"] == 2 and out["failed"] == 0


def _canonical_site(canonical: str, home: bytes) -> FixtureServer:
    head = f'<link rel="canonical" href="{canonical}">'
    links = "".join(f'<li><a href="/help/{n}.html">{n}</a></li>' for n in ("wifi", "vpn"))
    home = home.replace(b"</main>", f"<ul>{links}</ul></main>".encode())
    return FixtureServer({
        "/robots.txt": ROBOTS_ALL,
        "/": Response(body=home),
        "/index.html": Response(body=home),
        "/help/wifi.html": Response(body=article("Wi-Fi drops", head=head)),
        "/help/vpn.html": Response(body=article("VPN slow", head=head)),
    })


@pytest.mark.parametrize("home", ["/", "/index.html"])
def test_a_home_page_named_canonical_everywhere_is_not_trusted_even_when_it_is_not_a_listing(kb, home):
    """Made-up: the home page is a welcome text (not a listing) and every page names it."""
    welcome = article("Welcome", " ".join(f"welcome text {i}" for i in range(80)))
    with _canonical_site(home, welcome) as site:
        out = kb.json("index", site.url("/"), *FAST, "--scope", "host")
    sources = {s["source"] for s in json.loads(kb("sources", "--json").stdout)}
    assert {site.url("/help/wifi.html"), site.url("/help/vpn.html")} <= sources
    assert out["failed"] == 0


def test_a_canonical_named_by_pages_of_different_text_is_not_trusted():
    """Made-up: every page names one article (not the home page) as its canonical."""
    head = '<link rel="canonical" href="/kb/about.html">'
    links = "".join(f'<a href="/kb/{n}.html">{n}</a> ' for n in ("a", "b", "c"))
    with FixtureServer({
        "/robots.txt": ROBOTS_ALL,
        "/kb/": Response(body=article("Start", links=links)),
        "/kb/about.html": Response(body=article("About us")),
        **{f"/kb/{n}.html": Response(body=article(f"Topic {n}", head=head)) for n in ("a", "b", "c")},
    }) as site:
        items, _ = crawl(site.url("/kb/"))
        requested = [r.path for r in site.log]
    named = set(pages(items))
    # not even the first: a canonical is trusted only to a target of the same text; the target is
    # read once to see, and not indexed (a rel=canonical is a claim to check, not a link)
    assert named == {site.url("/kb/")} | {site.url(f"/kb/{n}.html") for n in ("a", "b", "c")}
    assert requested.count("/kb/about.html") == 1
    assert not any(s.kind == "duplicate" for s in skips(items).values())


PRINTER = '<link rel="canonical" href="/one/printer.html">'


def _one_article_named_everywhere(canonical: str = PRINTER) -> FixtureServer:
    """The tester's case: every page's canonical is one article (printer.html), listed in a
    sitemap with the others (vpn.html first)."""
    routes = {"/robots.txt": ROBOTS_ALL,
              **{f"/one/{n}.html": Response(body=article(t, head=canonical))
                 for n, t in (("vpn", "VPN error 809"), ("mail", "Mail stuck"), ("printer", "Printer offline"))}}
    server = FixtureServer(routes)
    entries = "".join(f"<url><loc>{{origin}}/one/{n}.html</loc></url>" for n in ("vpn", "mail", "printer"))
    server.routes["/one/sitemap.xml"] = lambda request: Response(
        body=f"<urlset>{entries}</urlset>".replace("{origin}", server.base).encode(),
        headers={"Content-Type": "application/xml"})
    return server


def test_an_article_named_canonical_by_pages_of_other_text_folds_none_of_them():
    with _one_article_named_everywhere() as site:
        items, result = crawl(site.url("/one/sitemap.xml"))
    assert set(pages(items)) == {site.url(f"/one/{n}.html") for n in ("vpn", "mail", "printer")}
    assert not skips(items) and result.complete


@pytest.mark.parametrize("target", [
    "/one/printer.html",  # an article of other text
    "/one/missing.html",  # cannot be read (404)
    "/one/",  # a listing, not linked from anywhere
    "/other/page.html",  # out of the crawl's path scope
])
def test_the_three_named_sources_are_each_indexed_under_their_own_url(kb, target):
    with _one_article_named_everywhere(f'<link rel="canonical" href="{target}">') as site:
        site.routes["/one/"] = Response(body=article("Start", links='<a href="vpn.html">vpn</a> <a href="mail.html">m</a>'))
        site.routes["/other/page.html"] = Response(body=article("Other"))
        out = kb.json("index", *(site.url(f"/one/{n}.html") for n in ("vpn", "mail", "printer")), *FAST)
        sources = {s["source"] for s in json.loads(kb("sources", "--json").stdout)}
    assert out["indexed"] == 3 and out["failed"] == 0
    assert not any(s["kind"] == "duplicate" for s in out["skips"])
    assert sources == {site.url(f"/one/{n}.html") for n in ("vpn", "mail", "printer")}


def test_a_canonical_to_a_changed_target_is_no_longer_trusted_after_a_304(kb):
    """b.html was a copy of a.html (folded); a.html is rewritten, b.html answers 304: the text
    stored with b's visit no longer matches a's, so b is indexed under its own URL."""
    text = " ".join(f"printer driver {i}" for i in range(60))
    with FixtureServer({
        "/robots.txt": ROBOTS_ALL,
        "/kb/": Response(body=article("Start", links='<a href="a.html">a</a> <a href="b.html">b</a>')),
        "/kb/a.html": Response(body=article("Driver", text)),
        "/kb/b.html": Response(body=article("Driver", text, head='<link rel="canonical" href="a.html">')),
    }, validators="etag") as site:
        first = kb.json("index", site.url("/kb/"), *FAST)
        unchanged = kb.json("index", site.url("/kb/"), *FAST)
        site.routes["/kb/a.html"] = Response(body=article("Driver", text + " and a new section"))
        again = kb.json("index", site.url("/kb/"), *FAST)
        sources = {s["source"] for s in json.loads(kb("sources", "--json").stdout)}
    assert first["indexed"] == 2 and unchanged["indexed"] == 0 and unchanged["pruned"] == 0
    assert again["indexed"] == 2 and again["pruned"] == 0
    assert sources == {site.url("/kb/"), site.url("/kb/a.html"), site.url("/kb/b.html")}


def test_a_true_duplicate_is_folded_into_its_canonical_even_when_the_target_is_not_linked():
    """Made-up: a print version names the article, which nothing links to; the article is read
    (once) and indexed under its own URL, the print version skipped as a duplicate."""
    text = " ".join(f"router reset step{i}" for i in range(60))
    with FixtureServer({
        "/robots.txt": ROBOTS_ALL,
        "/": Response(body=article("Home", links='<a href="/reset?print=1">print</a>')),
        "/reset": Response(body=article("Reset the router", text)),
        "/reset?print=1": Response(body=article("Reset the router", text, head='<link rel="canonical" href="/reset">')),
    }) as site:
        items, _ = crawl(site.url("/"))
        requested = [r.path for r in site.log]
    assert site.url("/reset") in pages(items)
    assert "same page as" in skips(items)[site.url("/reset?print=1")].reason
    assert requested.count("/reset") == 1


def test_a_canonical_out_of_scope_is_ignored():
    with FixtureServer({
        "/robots.txt": ROBOTS_ALL,
        "/kb/a.html": Response(body=article("Alpha", head='<link rel="canonical" href="https://elsewhere.example/a">')),
    }) as site:
        items, _ = crawl(site.url("/kb/a.html"))
        requested = [r.path for r in site.log]
    assert list(pages(items)) == [site.url("/kb/a.html")] and requested == ["/robots.txt", "/kb/a.html"]


def test_two_named_sources_that_are_one_page_are_reported(kb):
    """Made-up: b.html names a.html as canonical and has its text; given both, b is reported."""
    text = " ".join(f"printer driver {i}" for i in range(60))
    with FixtureServer({
        "/robots.txt": ROBOTS_ALL,
        "/kb/a.html": Response(body=article("Driver", text)),
        "/kb/b.html": Response(body=article("Driver", text, head='<link rel="canonical" href="a.html">')),
        "/kb/c.html?x=1&y=2": Response(body=article("Other")),
        "/kb/c.html?y=2&x=1": Response(body=article("Other")),
    }) as site:
        out = kb("index", site.url("/kb/a.html"), site.url("/kb/b.html"), site.url("/kb/c.html?x=1&y=2"),
                 site.url("/kb/c.html?y=2&x=1"), "--depth", "0", *FAST, "--json")
    summary = json.loads(out.stdout)
    reported = {s["source"]: s["reason"] for s in summary["skips"]}
    assert "same page as " + site.url("/kb/a.html") in reported[site.url("/kb/b.html")]
    assert "already read from another source" in reported[site.url("/kb/c.html?y=2&x=1")]
    assert summary["indexed"] == 2
    assert "skipped: " + site.url("/kb/c.html?y=2&x=1") in out.stderr


def test_two_named_sources_joined_by_a_redirect_are_reported(kb):
    with FixtureServer({
        "/robots.txt": ROBOTS_ALL,
        "/kb/new.html": Response(body=article("Driver")),
        "/kb/old.html": Response(301, b"", {"Location": "/kb/new.html"}),
    }) as site:
        out = kb.json("index", site.url("/kb/new.html"), site.url("/kb/old.html"), "--depth", "0", *FAST)
    assert out["indexed"] == 1
    assert [(s["source"], s["kind"]) for s in out["skips"]] == [(site.url("/kb/old.html"), "duplicate")]
    assert "already read from another source" in out["skips"][0]["reason"]


# ---------------------------------------------------------------- meta refresh


STUB = '<html><head><meta {attrs}><title>Moved</title></head><body><p>This page has moved.</p></body></html>'


@pytest.mark.parametrize("attrs", [
    """http-equiv="Refresh" content="0;url='new.html'\"""",  # the form
    "HTTP-EQUIV=REFRESH CONTENT=\"0; URL=new.html\"",
    "content='2, url=\"new.html\"' http-equiv='refresh'",  # content first, a comma, double quotes
    'http-equiv="refresh" content="  1 ;URL = /kb/new.html "',
    'http-equiv="refresh" content="0 new.html"',  # no URL=, a space as the separator
])
def test_a_meta_refresh_is_a_redirect_and_its_stub_is_not_indexed(attrs):
    with FixtureServer({
        "/robots.txt": ROBOTS_ALL,
        "/kb/old.html": Response(body=STUB.format(attrs=attrs).encode()),
        "/kb/new.html": Response(body=article("New home of the article")),
    }) as site:
        items, result = crawl(site.url("/kb/old.html"))
    assert list(pages(items)) == [site.url("/kb/new.html")]
    assert not [i for i in items if isinstance(i, FetchError)]
    assert result.complete and site.url("/kb/new.html") in result.start_names


def test_a_meta_refresh_in_a_crawl_is_checked_like_an_http_redirect():
    """Made-up: refreshes out of scope, to a path robots.txt disallows, in a loop, in a long
    chain, after a long delay and inside <noscript>."""
    def stub(target: str, delay: int = 0) -> Response:
        return Response(body=STUB.format(attrs=f'http-equiv="refresh" content="{delay}; url={target}"').encode())

    names = ("out", "private", "loop1", "chain0", "slow", "noscript", "good")
    links = "".join(f'<a href="/kb/{n}">{n}</a> ' for n in names)
    routes = {
        "/robots.txt": Response(body=b"User-agent: *\nDisallow: /kb/private/\n"),
        "/kb/": Response(body=article("Start", links=links)),
        "/kb/out": stub("/elsewhere/page"),
        "/elsewhere/page": Response(body=article("Elsewhere")),
        "/kb/private": stub("/kb/private/page"),
        "/kb/private/page": Response(body=article("Private")),
        "/kb/loop1": stub("/kb/loop2"),
        "/kb/loop2": stub("/kb/loop1"),
        "/kb/slow": Response(body=article("Reloads itself", head='<meta http-equiv="refresh" content="600; url=/kb/good">')),
        "/kb/noscript": Response(body=article("Needs no script", head='<noscript><meta http-equiv="refresh" content="0; url=/kb/nojs"></noscript>')),
        "/kb/nojs": Response(body=article("Enable JavaScript")),
        "/kb/good": stub("/kb/good-target"),
        "/kb/good-target": Response(body=article("Good target")),
    }
    for i in range(12):
        routes[f"/kb/chain{i}"] = stub(f"/kb/chain{i + 1}")
    with FixtureServer(routes) as site:
        items, result = crawl(site.url("/kb/"))
        requested = [r.path for r in site.log]
    by_source = {i.source.rsplit("/", 1)[-1]: i for i in items}
    assert by_source["out"].kind == "out_of_scope" and "/elsewhere/page" not in requested
    assert by_source["private"].kind == "robots" and "/kb/private/page" not in requested
    assert by_source["loop2"].kind == "duplicate"  # loop1 -> loop2 -> loop1: already seen
    assert isinstance(by_source["chain10"], FetchError) and "redirects" in by_source["chain10"].reason
    assert "/kb/chain11" not in requested
    assert {"slow", "noscript", "good-target"} <= {s.rsplit("/", 1)[-1] for s in pages(items)}
    assert "/kb/nojs" not in requested
    stubs = {"out", "private", "loop1", "loop2", "good"} | {f"chain{i}" for i in range(11)}
    assert not stubs & {s.rsplit("/", 1)[-1] for s in pages(items)}  # no stub indexed


def test_a_meta_refresh_from_a_public_host_to_a_private_address_is_refused():
    from tests.test_crawl import PretendPublic

    with FixtureServer() as site:
        site.routes.update({
            "/robots.txt": Response(404, b""),
            "/": Response(body=STUB.format(attrs=f'http-equiv="refresh" content="0; url=http://localhost:{site.port}/secret"').encode()),
            "/secret": Response(body=article("Secret")),
        })
        with Fetcher(timeout=2, retries=0, resolver=PretendPublic()) as fetcher:
            items, _ = crawl(site.url("/"), fetcher=fetcher)
        assert "/secret" not in [r.path for r in site.log]
    assert [i.kind for i in items if isinstance(i, FetchError)] == ["private_address"]
    assert not pages(items)


# ---------------------------------------------------------------- session tokens under any name


def _token_site(link) -> FixtureServer:
    """Three pages that answer any URL of theirs with the same text and link each other (and
    themselves) under a fresh token made by link(page, token)."""
    def page(name: str):
        def respond(request) -> Response:
            token = uuid.uuid4().hex[:12]
            links = "".join(f'<a href="{link(other, token)}">{other}</a> ' for other in ("a", "b", "c"))
            return Response(body=article(f"Page {name}", links=links))
        return respond

    server = FixtureServer()
    server.routes = _TokenRoutes({"/robots.txt": ROBOTS_ALL}, page)
    return server


def _letters(token: str) -> str:
    """A hex token as letters of alternating case (aBcD...): a token without a digit."""
    return "".join(chr(97 + int(c, 16)).upper() if i % 2 else chr(97 + int(c, 16)) for i, c in enumerate(token))


class _TokenRoutes(dict):
    """Exact routes, then any path whose page (last segment without parameters, or ?page=) is
    a, b or c."""

    def __init__(self, routes, page):
        super().__init__(routes)
        self.page = page

    def get(self, path, default=None):
        if path in self:
            return self[path]
        route, _, query = path.partition("?")
        name = dict(p.partition("=")[::2] for p in query.split("&")).get("page") or \
            route.rsplit("/", 1)[-1].split(";")[0]
        return self.page(name) if name in ("a", "b", "c", "p") else default


@pytest.mark.parametrize("link,trap", [
    (lambda page, token: f"/{page}?token={token}", True),  # a query parameter under an unknown name
    (lambda page, token: f"/s/{token}/{page}", True),  # a path segment
    (lambda page, token: f"/s/{_letters(token)}/{page}", True),  # a path segment without digits
    (lambda page, token: f"/{page};sess={token}", True),  # a path parameter under an unknown name
    (lambda page, token: f"/{page};jsessionid={token}", False),  # a known name: not in the identity
    (lambda page, token: f"/view?page={page}&s={int(token, 16) % 10_000}", True),  # a counter
], ids=["query", "path", "path-letters", "path-param", "jsessionid", "counter"])
def test_session_tokens_under_any_name_stop_the_crawl_of_that_pattern(link, trap):
    with _token_site(link) as site:
        items, result = crawl(site.url(link("a", "5a5a5a5a5a5a")), scope="host", max_pages=300)
        requested = len([r for r in site.log if r.path != "/robots.txt"])
    titles = sorted(i.body.split(b"<title>")[1].split(b"<")[0] for i in pages(items).values())
    assert titles == [b"Page a", b"Page b", b"Page c"]  # every page, once
    assert requested <= 3 * TOKEN_VARIANTS  # at most three variants of each page
    assert result.complete and (result.skipped["trap"] >= 1) == trap


def test_a_page_that_links_to_itself_with_a_fresh_token_ends_in_a_handful_of_requests():
    def respond(request) -> Response:
        token = uuid.uuid4().hex
        return Response(body=article("Only page", links=f'<a href="/p?sessionkey={token}">again</a>'))

    server = FixtureServer()
    server.routes = _TokenRoutes({"/robots.txt": ROBOTS_ALL}, lambda name: respond)
    with server as site:
        items, result = crawl(site.url("/p"), max_pages=10_000)
        requested = [r.path for r in site.log if r.path != "/robots.txt"]
    assert len(requested) <= 5
    assert len(pages(items)) == 1 and result.complete
    reasons = [s.reason for s in skips(items).values()]
    assert any("session token" in r for r in reasons)


def test_pages_of_one_pattern_with_different_text_are_all_read():
    """Made-up, the other way round: ids that choose different articles are no token."""
    links = "".join(f'<a href="/item?id={i}">Item {i}</a> ' for i in range(8))
    routes = {"/robots.txt": ROBOTS_ALL, "/": Response(body=article("Items", links=links))}
    routes.update({f"/item?id={i}": Response(body=article(f"Item {i}")) for i in range(8)})
    with FixtureServer(routes) as site:
        items, result = crawl(site.url("/"))
    assert len(pages(items)) == 9 and result.skipped["trap"] == 0


# ---------------------------------------------------------------- names kept across forms


def test_an_entry_keeps_its_name_when_the_link_changes_form(kb):
    """A page stored under one form of its URL (parameters in another order, an escape decoded,
    a tracking parameter added) is the same entry: not indexed again, nothing pruned."""
    routes = {"/robots.txt": ROBOTS_ALL,
              "/": Response(body=article("Home", links='<a href="/page?a=1&b=%7Ex">page</a>'))}
    for query in ("?a=1&b=%7Ex", "?b=~x&a=1&utm_source=mail"):
        routes[f"/page{query}"] = Response(body=article("The page"))
    with FixtureServer(routes) as site:
        first = kb.json("index", site.url("/"), *FAST)
        site.routes["/"] = Response(body=article("Home", links='<a href="/page?b=~x&a=1&utm_source=mail">page</a>'))
        again = kb.json("index", site.url("/"), *FAST)
        requested = [r.path for r in site.log]
    assert first["indexed"] == 2
    assert "/page?b=~x&a=1&utm_source=mail" in requested  # requested as now linked
    assert (again["indexed"], again["unchanged"], again["pruned"]) == (0, 2, 0)
    sources = {s["source"] for s in json.loads(kb("sources", "--json").stdout)}
    assert sources == {site.url("/"), site.url("/page?a=1&b=%7Ex")}


# ---------------------------------------------------------------- the page's encoding in link analysis


@pytest.mark.parametrize("declared", ["header", "meta", "none"])
@pytest.mark.parametrize("encoding", ["utf-8", "cp1252"])
def test_non_ascii_links_are_requested_as_the_page_encodes_them(encoding, declared):
    """Made-up: links written with non-ASCII letters (café.html, straße.html, and принтер.html
    where the encoding has Cyrillic) are read in the page's encoding (the HTTP charset, <meta>, or
    detection, as the extractor reads it) and requested percent-encoded as UTF-8, as browsers do.
    Read as Latin-1, a UTF-8 link asked for caf%C3%83%C2%A9.html and got a 404."""
    names = ["café", "straße"] + (["принтер"] if encoding == "utf-8" else [])
    links = "".join(f'<li><a href="{n}.html">{n}</a></li>' for n in names)
    meta = f'<meta charset="{encoding}">' if declared == "meta" else ""
    body = (f"<html><head><title>Home</title>{meta}</head><body><ul>{links}</ul></body>"
            "</html>").encode(encoding)
    content_type = "text/html" + (f"; charset={encoding}" if declared == "header" else "")
    routes = {"/robots.txt": ROBOTS_ALL, "/kb/": Response(body=body, headers={"Content-Type": content_type})}
    for name in names:
        routes[f"/kb/{quote(name)}.html"] = Response(body=article(name.capitalize()))
    with FixtureServer(routes) as site:
        items, result = crawl(site.url("/kb/"))
        requested = {r.path for r in site.log}
    assert {f"/kb/{quote(name)}.html" for name in names} <= requested
    assert len(pages(items)) == len(names), [str(i) for i in items]
    assert result.errors == 0
