"""The crawler against fixture sites on 127.0.0.1 (tests/sites.py), plus its pure parts."""

from __future__ import annotations

import gzip
import io
import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kbindex import __version__
from kbindex.crawl import (
    Crawler,
    CrawlOptions,
    CrawlResult,
    Scope,
    page_name,
    read_feed,
    read_sitemap,
    request_url,
    trap_reason,
    url_identity,
)
from kbindex.errors import FetchError, SkipSource, UsageError
from kbindex.fetch import Fetcher, HostThrottle, is_public_address, parse_retry_after
from kbindex.progress import Progress
from kbindex.records import Failed, Indexed, Page
from tests.server import FixtureServer, Response
from tests.sites import ALL_POSTS, DOC_PAGES, OLD_POST, POSTS, blog, docs

FAST = ("--delay", "0")


def sources_of(kb) -> set[str]:
    return {row["source"] for row in json.loads(kb("sources", "--json").stdout)}


def crawl(server_or_url, fetcher=None, **options) -> tuple[list, CrawlResult]:
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.url("/")
    own = fetcher is None
    fetcher = fetcher or Fetcher(timeout=2, retries=0)
    try:
        result = CrawlResult(url)
        items = list(Crawler(fetcher, CrawlOptions(**options)).crawl(url, result))
    finally:
        if own:
            fetcher.close()
    return items, result


# ---------------------------------------------------------------- URLs: requested, named, identified


@pytest.mark.parametrize("url,expected", [
    ("HTTP://Example.COM:80/a/./b/../c", "http://example.com/a/c"),
    ("https://example.com:443", "https://example.com/"),
    ("https://example.com:8443/x#frag", "https://example.com:8443/x"),
    ("https://example.com/%7euser/a%2fb/%e2%82%ac", "https://example.com/~user/a%2Fb/%E2%82%AC"),
    ("https://example.com/a b/é", "https://example.com/a%20b/%C3%A9"),
    ("https://example.com/p?b=2&a=1&utm_source=x&fbclid=y&gclid=z", "https://example.com/p?a=1&b=2"),
    ("https://example.com/p?utm_medium=web", "https://example.com/p"),
    ("https://example.com/p;jsessionid=ABC123?x=1&PHPSESSID=9", "https://example.com/p?x=1"),
    ("https://user:secret@example.com/p", "https://example.com/p"),
    # sid is an article number on PHP-Nuke sites: never dropped (case 06-query-rewrite)
    ("http://example.com/modules.php?name=News&file=article&sid=12",
     "http://example.com/modules.php?file=article&name=News&sid=12"),
    # percent-encoded dot segments resolve as browsers resolve them, once (idempotent)
    ("https://example.com/a/%2e%2e/b", "https://example.com/b"),
    ("https://example.com/a/%2E/b/.%2e/c", "https://example.com/a/c"),
    # international host names in punycode
    ("https://Bücher.example/ä", "https://xn--bcher-kva.example/%C3%A4"),
    ("mailto:someone@example.com", None),
    ("javascript:alert(1)", None),
    ("ftp://example.com/file", None),
    ("http://[::1]:8080/x", "http://[::1]:8080/x"),
    ("https://example.com:99999/x", None),
])
def test_url_identity(url, expected):
    assert url_identity(url) == expected


@pytest.mark.parametrize("link,requested", [
    # the query string is sent as written: no parameter dropped, reordered or re-encoded
    ("http://h.example/index.php?/kb/printer", "http://h.example/index.php?/kb/printer"),
    ("http://h.example/modules.php?name=News&file=article&sid=12#c",
     "http://h.example/modules.php?name=News&file=article&sid=12"),
    ("http://h.example/p?utm_source=x&b=2&a=1&a=0", "http://h.example/p?utm_source=x&b=2&a=1&a=0"),
    ("http://h.example/sitemap.xml?sitemap=pages&cHash=219806291a",
     "http://h.example/sitemap.xml?sitemap=pages&cHash=219806291a"),
    ("http://h.example/a;jsessionid=X1?q=%7e", "http://h.example/a;jsessionid=X1?q=%7e"),
    # unsafe characters percent-encoded, the host in punycode, the fragment removed
    ("http://h.example/a b/é?q=ü ü#top", "http://h.example/a%20b/%C3%A9?q=%C3%BC%20%C3%BC"),
    ("https://bücher.example/x", "https://xn--bcher-kva.example/x"),
    ("mailto:a@h.example", None),
])
def test_request_url_is_the_link_as_found(link, requested):
    assert request_url(link) == requested


def test_page_name_keeps_the_query_and_drops_only_what_never_chooses_the_page():
    assert page_name("http://h.example/index.php?/kb/vpn") == "http://h.example/index.php?/kb/vpn"
    assert page_name("https://u:p@h.example:443/p?utm_source=x&b=2&a=1&utm_medium=y&tag=a&tag=b#f") == \
        "https://h.example/p?b=2&a=1&tag=a&tag=b"
    assert page_name("http://h.example/p;jsessionid=AB12?sid=3") == "http://h.example/p?sid=3"


def test_url_identity_resolves_relative_links():
    assert url_identity("../b/c.html?x=1#top", "https://example.com/a/d/e.html") == "https://example.com/a/b/c.html?x=1"
    assert url_identity("//other.example/x", "https://example.com/") == "https://other.example/x"
    assert request_url("../b/c.html?x=1#top", "https://example.com/a/d/e.html") == "https://example.com/a/b/c.html?x=1"


# Paths from pieces that normalizers get wrong (escaped dots, escapes of unreserved characters,
# non-ASCII, spaces, empty segments), joined by "/", then any query and fragment text.
SEGMENTS = st.sampled_from(["a", "B", ".", "..", "%2e", "%2E%2e", ".%2e", "%7e", "%2F", "é", "a b", "",
                            "x;y=1", "%25", "~"])
URL_TEXT = st.builds(lambda segments, rest: "/".join(segments) + rest, st.lists(SEGMENTS, max_size=6),
                     st.text(alphabet="abAB/.%?&=#é ~_-2Ee;:@+", max_size=20))
HOSTS = st.sampled_from(["example.com", "EXAMPLE.com:80", "bücher.example", "u:p@h.example:8080",
                         "[::1]", "xn--bcher-kva.example"])


@given(HOSTS, URL_TEXT)
def test_url_forms_are_idempotent_and_agree(host, path):
    url = f"http://{host}/{path}"
    identity = url_identity(url)
    assert identity is None or url_identity(identity) == identity
    requested = request_url(url)
    assert (requested is None) == (identity is None)
    if requested is not None:
        assert request_url(requested) == requested  # the fetcher gets what the link said
        assert page_name(page_name(requested)) == page_name(requested)
        # every form of one link is the same page
        assert url_identity(requested) == url_identity(page_name(requested)) == identity


def test_scope_is_under_the_start_folder_unless_host():
    scope = Scope.for_start("https://kb.example/docs/index.html")
    assert scope.contains("https://kb.example/docs/a/b.html")
    assert scope.contains("https://kb.example/docs")
    assert not scope.contains("https://kb.example/blog/x.html")
    assert not scope.contains("http://kb.example/docs/a.html")  # another scheme
    assert not scope.contains("https://other.example/docs/a.html")
    assert Scope.for_start("https://kb.example/docs").contains("https://kb.example/docs/x")
    assert not Scope.for_start("https://kb.example/docs").contains("https://kb.example/docsets/x")
    host = Scope.for_start("https://kb.example/docs/", "host")
    assert host.contains("https://kb.example/blog/x.html")


@pytest.mark.parametrize("url,trap", [
    ("https://x.example/a/b/c.html", False),
    ("https://x.example/" + "a/" * 4 + "x", True),
    ("https://x.example/p?" + "&".join(f"k{i}=1" for i in range(13)), True),
    ("https://x.example/" + "y" * 2100, True),
])
def test_trap_reason(url, trap):
    assert (trap_reason(url) is not None) == trap


# ---------------------------------------------------------------- sitemaps and feeds


def test_read_sitemap_urlset_index_and_gzip():
    urlset = b'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">' \
             b"<url><loc> https://x.example/a </loc></url><url><loc>https://x.example/b</loc></url></urlset>"
    assert read_sitemap(urlset, 10_000) == (["https://x.example/a", "https://x.example/b"], [])
    index = b'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><sitemap>' \
            b"<loc>https://x.example/s1.xml.gz</loc></sitemap></sitemapindex>"
    assert read_sitemap(gzip.compress(index), 10_000) == ([], ["https://x.example/s1.xml.gz"])
    assert read_sitemap(b"<html><body>no</body></html>", 10_000) is None
    with pytest.raises(SkipSource, match="larger than"):
        read_sitemap(gzip.compress(b"<urlset>" + b" " * 50_000 + b"</urlset>"), 10_000)


def test_read_sitemap_does_not_expand_entities():
    evil = b'<?xml version="1.0"?><!DOCTYPE u [<!ENTITY x SYSTEM "file:///etc/passwd">]>' \
           b'<urlset><url><loc>https://x.example/&x;</loc></url></urlset>'
    pages, _ = read_sitemap(evil, 10_000)
    assert all("root:" not in p for p in pages)


def test_read_feed_rss_and_atom(tmp_path):
    rss = b"<?xml version='1.0'?><rss version='2.0'><channel><title>t</title>" \
          b"<item><title>a</title><link>/posts/a.html</link></item></channel></rss>"
    assert read_feed(rss, "https://x.example/feed") == ["https://x.example/posts/a.html"]
    atom = b"<feed xmlns='http://www.w3.org/2005/Atom'><entry><link rel='alternate' href='https://x.example/b'/>" \
           b"</entry></feed>"
    assert read_feed(atom, "https://x.example/feed") == ["https://x.example/b"]
    # A body that happens to be a path is data, never a file to open.
    secret = tmp_path / "secret.xml"
    secret.write_bytes(rss)
    assert read_feed(str(secret).encode(), "https://x.example/") in (None, [])


# ---------------------------------------------------------------- the blog, end to end


def test_blog_is_crawled_politely_and_completely(kb):
    with blog() as site:
        out = kb("index", site.url("/"), *FAST, "--json")
        paths = [r.path for r in site.log]
        agents = {r.headers.get("user-agent") for r in site.log}
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    # Every post, the one only the sitemap names included; no listing page.
    assert sources_of(kb) == {site.url(p.path) for p in ALL_POSTS}
    assert summary["indexed"] == len(ALL_POSTS) and summary["failed"] == 0
    # robots.txt first, and nothing it disallows (label pages under /search) is ever requested.
    assert paths[0] == "/robots.txt"
    assert not any(p.startswith("/search") for p in paths)
    assert agents == {f"kbindex/{__version__} (+https://github.com/kbindex/kbindex; knowledge-base indexer)"}
    # The endless calendar is cut short; nothing outside the site, no image.
    calendar = [p for p in paths if p.startswith("/calendar/")]
    assert 1 <= len(calendar) <= 15
    assert "/img/logo.png" not in paths
    # Each post was fetched once although linked with and without tracking parameters and
    # fragments; the link found first is requested as written, tracking parameters included.
    for post in ALL_POSTS:
        assert sum(p.split("?")[0] == post.path for p in paths) == 1, post.path
    assert f"{POSTS[0].path}?utm_source=home&utm_medium=web" in paths
    by = summary["skipped_by"]
    assert by["robots"] >= 3 and by["trap"] >= 1 and by["out_of_scope"] >= 1 and by["not_html"] >= 1
    assert by["listing"] >= 4  # home, three monthly archives, calendar pages
    assert summary["discovered"] >= summary["fetched"] >= len(ALL_POSTS) + 4
    assert summary["crawls"][0]["complete"] is True
    assert "skipped: " + site.url("/") + ": listing page" in out.stderr


def test_recrawl_changes_nothing(kb):
    with blog() as site:
        kb("index", site.url("/"), *FAST)
        again = kb.json("index", site.url("/"), *FAST)
    assert again["unchanged"] == len(ALL_POSTS) and again["indexed"] == 0


def test_ignore_robots_reads_label_pages(kb):
    with blog() as site:
        kb("index", site.url("/"), *FAST, "--ignore-robots", "--json")
        paths = [r.path for r in site.log]
    assert "/robots.txt" not in paths
    assert any(p.startswith("/search/label/") for p in paths)


def test_sitemap_and_feed_sources_index_their_entries(kb):
    with blog() as site:
        from_sitemap = kb.json("index", site.url("/sitemap.xml"), *FAST)
        assert from_sitemap["indexed"] == len(ALL_POSTS)
        assert from_sitemap["crawls"][0]["kind"] == "sitemap"
        paths = [r.path for r in site.log]
        assert "/" not in paths and not any(p.startswith("/calendar") for p in paths)  # no link following
        site.log.clear()
        from_feed = kb.json("index", site.url("/feeds/posts/default"), *FAST)
    assert from_feed["crawls"][0]["kind"] == "feed"
    assert from_feed["unchanged"] == len(POSTS)
    assert OLD_POST.path not in {r.path for r in site.log}


def test_sitemap_index_with_gzip_children():
    urls = "".join(f"<url><loc>BASE{p.path}</loc></url>" for p in POSTS[:2])
    with blog() as site:
        child = f"<urlset>{urls}</urlset>".replace("BASE", site.base).encode()
        site.routes["/s1.xml.gz"] = Response(body=gzip.compress(child), headers={"Content-Type": "application/gzip"})
        site.routes["/sitemap_index.xml"] = Response(
            body=f"<sitemapindex><sitemap><loc>{site.base}/s1.xml.gz</loc></sitemap></sitemapindex>".encode(),
            headers={"Content-Type": "text/xml"})
        items, result = crawl(site.url("/sitemap_index.xml"))
    assert sorted(p.source for p in items if isinstance(p, Page)) == sorted(site.url(p.path) for p in POSTS[:2])
    assert result.complete


def test_urls_file_and_stdin(kb, tmp_path):
    with blog() as site:
        listing = tmp_path / "urls.txt"
        listing.write_text(f"# posts\n\n{site.url(POSTS[0].path)}\n{site.url(POSTS[1].path)}\n")
        out = kb.json("index", "--urls", str(listing), "--depth", "0", *FAST)
        assert out["indexed"] == 2
        out = kb("index", "--urls", "-", "--depth", "0", *FAST, "--json", input=site.url(POSTS[2].path) + "\n")
    assert json.loads(out.stdout)["indexed"] == 1
    bad = tmp_path / "bad.txt"
    bad.write_text("not a url\n")
    out = kb("index", "--urls", str(bad))
    assert out.exit_code == 2 and "--urls line 1 is not a URL" in out.stderr


def test_dry_run_lists_and_writes_nothing(kb, db):
    with blog() as site:
        out = kb("index", "--dry-run", site.url("/"), *FAST)
        lines = out.stdout.splitlines()
        out_json = kb("index", "--dry-run", site.url("/"), *FAST, "--json")
    assert out.exit_code == 0
    assert not db.exists()
    for post in ALL_POSTS:
        assert any(line.startswith("index") and site.url(post.path) in line for line in lines)
    assert any(line.startswith("skip") and "listing page" in line for line in lines)
    assert "would index 6" in out.stdout
    rows = [json.loads(line) for line in out_json.stdout.splitlines()]
    planned = [r for r in rows[:-1] if r["action"] == "index"]
    assert len(planned) == len(ALL_POSTS) and all(r["chunks"] >= 1 for r in planned)
    assert rows[-1]["indexed"] == len(ALL_POSTS)


# ---------------------------------------------------------------- the docs site


def test_docs_scope_dedupe_and_content_types(kb):
    with docs() as site:
        out = kb("index", site.url("/docs/index.html"), *FAST, "--max-bytes", "1000000", "--timeout", "1",
                 "--retries", "0", "--json")
        paths = [r.path for r in site.log]
    summary = json.loads(out.stdout)
    indexed = sources_of(kb)
    assert indexed == {site.url(p) for p in DOC_PAGES} | {site.url("/docs/legacy")}  # sniffed as HTML
    assert "/other/page.html" not in paths and "/docs/api.json" not in paths
    skips = {s["source"].rsplit("/", 1)[-1]: s["kind"] for s in summary["skips"]}
    assert skips["index.html"] == "listing"
    assert skips["copy.html"] == "duplicate"  # same text as install.html
    assert skips["moved.html"] == "duplicate"  # redirects to configure.html
    assert skips["changelog"] == skips["report"] == "not_html"
    assert skips["big.html"] == "too_large"  # the gzip bomb stops at the cap
    assert summary["skipped_by"]["out_of_scope"] == 1
    assert summary["failed_by"] == {"timeout": 1}  # the slow page; the crawl went on
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert summary["crawls"][0]["complete"] is False and summary["crawls"][0]["stopped"] == "errors"


def test_docs_scope_host_include_exclude_and_depth(kb, tmp_path):
    with docs(slow_delay=0) as site:
        start = site.url("/docs/index.html")
        wide = kb.json("index", start, *FAST, "--scope", "host", "--exclude", "big|slow|copy")
        assert site.url("/other/page.html") in sources_of(kb) and wide["failed"] == 0
        site.log.clear()
        kb("index", start, *FAST, "--include", r"/guide/", "--db", str(tmp_path / "b"))
        assert {r.path for r in site.log} <= {"/robots.txt", "/docs/index.html", "/docs/guide/network.html"}
        site.log.clear()
        zero = kb.json("index", start, *FAST, "--depth", "0", "--db", str(tmp_path / "c"))
    assert [r.path for r in site.log] == ["/robots.txt", "/docs/index.html"]
    assert zero["skipped_by"]["depth"] >= 5


def test_max_pages_and_max_time_cut_the_crawl_short():
    with blog() as site:
        items, result = crawl(site, max_pages=3)
        assert result.fetched == 3 and result.complete is False and result.stopped == "max_pages"
        assert result.skipped["not_fetched"] > 0
        site.routes["/2026/11/"] = Response(body=b"<html><body><a href='/a'>a</a></body></html>", delay=1.5)
        began = time.monotonic()
        _, timed = crawl(site, max_time=0.5, concurrency=1)
    assert timed.stopped == "max_time" and not timed.complete
    assert time.monotonic() - began < 5


# ---------------------------------------------------------------- robots.txt


def test_robots_5xx_means_nothing_is_fetched(kb):
    with blog() as site:
        site.routes["/robots.txt"] = Response(503, b"down")
        out = kb("index", site.url("/"), *FAST, "--retries", "0", "--json")
        paths = [r.path for r in site.log]
    assert paths == ["/robots.txt"]
    summary = json.loads(out.stdout)
    assert out.exit_code == 1 and "robots.txt could not be read" in summary["failures"][0]["reason"]
    assert summary["crawls"][0]["stopped"] == "robots_unavailable"


def test_robots_4xx_means_everything_is_allowed():
    with blog() as site:
        site.routes["/robots.txt"] = Response(404, b"none")
        items, result = crawl(site)
        paths = [r.path for r in site.log]
    assert any(p.startswith("/search/label/") for p in paths)
    assert result.complete


def test_robots_crawl_delay_and_disallowed_start():
    with blog(robots="User-agent: kbindex\nCrawl-delay: 0.3\nDisallow: /2026/10/\n") as site:
        started = time.monotonic()
        items, result = crawl(site, depth=1)
        elapsed = time.monotonic() - started
        paths = [r.path for r in site.log]
        assert not any(p.startswith("/2026/10/") for p in paths)
        assert result.skipped["robots"] >= 1
        # after robots.txt, one request every 0.3 s at most
        assert len(paths) >= 5 and elapsed >= 0.3 * (len(paths) - 2)
        _, disallowed = crawl(site.url("/2026/10/"))
    assert disallowed.stopped == "robots"


# ---------------------------------------------------------------- safety


class PretendPublic:
    """A resolver seam: 127.0.0.1 pretends to be a public host; the rest resolves as usual."""

    def __call__(self, host):
        if host == "127.0.0.1":
            return ["93.184.215.14"]
        from kbindex.fetch import system_resolver

        return system_resolver(host)


def test_redirect_from_a_public_host_to_a_private_address_is_refused():
    with FixtureServer() as site:
        site.routes.update({
            "/robots.txt": Response(404, b""),
            "/": Response(body=b"<html><body><main><a href='/go'>go</a><a href='/page'>page</a></main></body></html>"),
            "/go": Response(302, b"", {"Location": f"http://localhost:{site.port}/secret"}),
            "/page": Response(body=b"<html><body><main><h1>Fine</h1><p>" + b"word " * 80 + b"</p></main></body></html>"),
            "/secret": Response(body=b"<html><body>internal</body></html>"),
        })
        fetcher = Fetcher(timeout=2, retries=0, resolver=PretendPublic())
        items, result = crawl(site.url("/"), fetcher=fetcher)
        assert "/secret" not in [r.path for r in site.log]
        refused = [i for i in items if isinstance(i, FetchError)]
        assert [e.kind for e in refused] == ["private_address"] and "localhost" in refused[0].reason
        assert [i.source for i in items if isinstance(i, Page)] == [site.url("/page")]
        # Allowed explicitly, the same redirect is followed.
        site.log.clear()
        crawl(site.url("/"), fetcher=fetcher, allow_private=True)
        assert "/secret" in [r.path for r in site.log]
        fetcher.close()


def test_an_explicitly_private_start_url_is_allowed(kb):
    # 127.0.0.1 really is loopback: given as the start URL, it is an intranet KB and allowed.
    with blog() as site:
        assert kb.json("index", site.url(POSTS[0].path), *FAST, "--depth", "0")["indexed"] == 1


@pytest.mark.parametrize("address,public", [
    ("93.184.215.14", True), ("127.0.0.1", False), ("10.1.2.3", False), ("169.254.169.254", False),
    ("::1", False), ("fe80::1", False), ("::ffff:10.0.0.1", False), ("2606:4700::1111", True),
    ("100.64.0.1", False), ("0.0.0.0", False),
])
def test_is_public_address(address, public):
    assert is_public_address(address) is public


def test_hostile_pages_do_not_crash_or_hang_the_crawl(kb):
    deep = b"<html><body><main>" + b"<div>" * 20_000 + b"deep" + b"</div>" * 20_000 + b"</main></body></html>"
    links = "".join(f"<a href='/{p}'>{p}</a>" for p in ("deep", "garbage", "latin1", "empty", "huge", "good"))
    with FixtureServer({
        "/robots.txt": Response(404, b""),
        "/": Response(body=f"<html><body><main>{links}</main></body></html>".encode()),
        "/deep": Response(body=deep),
        "/garbage": Response(body=bytes(range(256)) * 40),
        "/latin1": Response(body="<html><body><main><h1>Caf\xe9</h1><p>cr\xe8me br\xfbl\xe9e</p></main></body></html>"
                            .encode("latin-1"), headers={"Content-Type": "text/html; charset=utf-8"}),
        "/empty": Response(body=b""),
        "/huge": Response(body=b"<html><body>" + b"<p>x</p>" * 20_000 + b"</body></html>"),
        "/good": Response(body=b"<html><body><main><h1>Good</h1><p>" + b"text " * 80 + b"</p></main></body></html>"),
    }) as site:
        began = time.monotonic()
        out = kb("index", site.url("/"), *FAST, "--json")
    assert time.monotonic() - began < 30
    summary = json.loads(out.stdout)
    assert site.url("/good") in sources_of(kb)
    assert summary["failed"] == 0 and summary["crawls"][0]["complete"] is True
    assert summary["skipped_by"]["too_deep"] == 1  # the extractor never sees 20,000 nested divs
    assert "Traceback" not in out.output
    # The same page as the start URL fails cleanly.
    with FixtureServer({"/robots.txt": Response(404, b""), "/deep": Response(body=deep)}) as site:
        out = kb("index", site.url("/deep"), *FAST, "--json")
    assert out.exit_code == 1 and json.loads(out.stdout)["failed_by"] == {"too_deep": 1}


# ---------------------------------------------------------------- retries and backoff


def test_429_retry_after_is_honoured():
    calls = []

    def flaky(request):
        calls.append(time.monotonic())
        if len(calls) == 1:
            return Response(429, b"slow down", {"Retry-After": "1"})
        return Response(body=b"<html><body><p>ok</p></body></html>")

    with FixtureServer({"/p": flaky}) as site, Fetcher(retries=2) as fetcher:
        page = fetcher.fetch(site.url("/p"))
    assert page.status == 200 and len(calls) == 2 and calls[1] - calls[0] >= 0.95


def test_5xx_is_retried_with_backoff_then_fails():
    with FixtureServer({"/down": Response(500, b"oops")}) as site, Fetcher(retries=2, backoff=0.1) as fetcher:
        with pytest.raises(FetchError, match="HTTP 500") as info:
            fetcher.fetch(site.url("/down"))
        assert len(site.log) == 3 and info.value.transient
        site.log.clear()
        site.routes["/gone"] = Response(404, b"")
        with pytest.raises(FetchError):
            fetcher.fetch(site.url("/gone"))
        assert len(site.log) == 1  # a 404 is not retried


def test_too_long_retry_after_is_not_waited_for():
    with FixtureServer({"/p": Response(503, b"", {"Retry-After": "3600"})}) as site, Fetcher(retries=3) as fetcher:
        began = time.monotonic()
        with pytest.raises(FetchError, match="HTTP 503"):
            fetcher.fetch(site.url("/p"))
    assert time.monotonic() - began < 5 and len(site.log) == 1


def test_parse_retry_after():
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_host_throttle_spaces_requests_per_host():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    throttle = HostThrottle(0.5, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        throttle.wait("a")
    throttle.wait("b")  # another host does not wait
    throttle.set_delay("a", 2.0)
    throttle.wait("a")
    assert slept == [0.5, 0.5, 0.5]
    throttle.wait("a")
    assert slept[-1] == 2.0


# ---------------------------------------------------------------- options and progress


@pytest.mark.parametrize("args,message", [
    (["--include", "("], "--include '(' is not a valid regular expression"),
    (["--delay", "-1"], "Invalid value for '--delay'"),
    (["--concurrency", "0"], "Invalid value for '--concurrency'"),
    (["--scope", "planet"], "Invalid value for '--scope'"),
])
def test_bad_crawl_options(kb, args, message):
    out = kb("index", "http://127.0.0.1:9/", *args)
    assert out.exit_code == 2 and message in out.stderr


def test_crawl_options_validate():
    with pytest.raises(UsageError):
        CrawlOptions(scope="site")


def test_progress_logs_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    now = [0.0]
    progress = Progress(stream, live=False, interval=10, clock=lambda: now[0])
    result = CrawlResult("http://x/")
    with progress:
        result.fetched, result.queued = 3, 7
        progress.crawl(result)
        progress.event(Indexed("http://x/a", 4))
        assert stream.getvalue() == ""  # not yet: one line per interval
        now[0] = 11
        progress.event(Failed("http://x/b", "HTTP 500"))
    assert stream.getvalue() == "kbindex: fetched 3  queue 7  indexed 1  chunks 4  errors 1  11s\n"


def test_quiet_progress_shows_no_status_but_keeps_messages():
    stream = io.StringIO()
    now = [0.0]
    with Progress(stream, live=None, interval=10, clock=lambda: now[0], quiet=True) as progress:
        progress.event(Indexed("http://x/a", 4))
        now[0] = 60
        progress.event(Indexed("http://x/c", 1))
        progress.message("failed: http://x/b: HTTP 500")
    assert stream.getvalue() == "failed: http://x/b: HTTP 500\n"


def test_progress_live_display_renders():
    stream = io.StringIO()
    with Progress(stream, live=True) as progress:
        progress.event(Indexed("http://x/a", 2))
        progress.message("skipped: http://x/b: listing page")
    assert "skipped: http://x/b: listing page" in stream.getvalue()


# ---------------------------------------------------------------- the "done when", real model


@pytest.mark.model
def test_new_user_crawls_the_blog_and_finds_each_post_by_a_paraphrase(tmp_path):
    """kbindex index http://127.0.0.1:PORT/ with the defaults a new user gets (real model, the
    default 0.5 s delay): every post indexed, robots.txt obeyed, the endless calendar left, the
    User-Agent naming kbindex, and a paraphrased question finds each post as the top hit."""
    from click.testing import CliRunner

    from kbindex.cli import cli

    runner = CliRunner()
    common = ["--db", str(tmp_path / "index"), "--model", "all-MiniLM-L6-v2", "--device", "cpu"]
    with blog() as site:
        out = runner.invoke(cli, ["index", site.url("/"), *common, "--json"], catch_exceptions=False)
        paths = [r.path for r in site.log]
        agents = {r.headers.get("user-agent", "") for r in site.log}
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["indexed"] == len(ALL_POSTS)
    assert not any(p.startswith("/search") for p in paths)
    assert all(a.startswith(f"kbindex/{__version__}") for a in agents)
    questions = "\n".join(p.question for p in ALL_POSTS) + "\n"
    result = runner.invoke(cli, ["query", "--queries", "-", "-k", "1", "--json", *common], input=questions,
                           catch_exceptions=False)
    tops = [json.loads(line)["hits"][0]["source"] for line in result.stdout.splitlines()]
    assert tops == [site.url(p.path) for p in ALL_POSTS]


def test_iter_pages_yields_the_root_source_and_says_whether_it_completed():
    from kbindex.indexing.sources import iter_pages, parse_sources

    with blog() as site, Fetcher(retries=0) as fetcher:
        full, cut = parse_sources([site.url("/"), site.url("/sitemap.xml")], CrawlOptions(max_pages=3))
        rows = list(iter_pages([full], fetcher))
        assert {source for source, _, _ in rows} == {full}
        assert all(name == item.source for _, name, item in rows)
        assert full.complete is False and full.crawl.stopped == "max_pages"
        whole = parse_sources([site.url("/")], CrawlOptions())[0]
        list(iter_pages([whole], fetcher))
    assert whole.complete is True and cut.complete is False  # cut was never read
