"""Re-crawling a site: every page is fetched conditionally, a 304 is followed by the links the
last run stored (records.Visit in the ledger), and only what changed is downloaded and indexed.

The fixture server's request log (status and Content-Type of each answer) is what is asserted on.
"""

from __future__ import annotations

import json
import signal
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from kbindex.crawl import (
    ANALYSIS_VERSION,
    Crawler,
    CrawlOptions,
    CrawlResult,
    parse_lastmod,
    read_sitemap_entries,
)
from kbindex.errors import FetchError
from kbindex.fetch import Fetcher
from kbindex.records import Page, Visit
from kbindex.store.chroma import Store
from kbindex.store.ledger import Ledger
from tests.server import FixtureServer, Request, Response
from tests.sites import ALL_POSTS, OLD_POST, POSTS, blog
from tests.sync_helpers import assert_consistent, run, snapshot, spawn, summary, wait_for

FAST = ("--delay", "0")


def html_requests(server: FixtureServer) -> list[Request]:
    """Requests for pages (robots.txt, sitemaps and feeds left out)."""
    return [r for r in server.log if (r.content_type or "").startswith("text/html")]


def downloaded(server: FixtureServer) -> list[str]:
    """Paths of pages sent in full (HTTP 200 with a body), without the utm_ parameters some
    links carry (they are requested as linked)."""
    return [page_path(r) for r in html_requests(server) if r.status == 200]


def page_path(request: Request) -> str:
    """The path requested, without the utm_ parameters the blog's home page adds to its links
    (a link is requested as found)."""
    return request.path.split("?utm_")[0]


def visits(db) -> dict[str, Visit]:
    ledger = Ledger(db, "kbindex")
    try:
        return ledger.visits()
    finally:
        ledger.close()


def post_changed(site: FixtureServer, path: str, old: bytes, new: bytes) -> None:
    body = site.routes[path].body
    assert old in body
    site.routes[path] = Response(body=body.replace(old, new))


# -- a blog re-crawled through the index -----------------------------------------------------------


@pytest.mark.parametrize("validators,header", [("etag", "if-none-match"),
                                                ("last-modified", "if-modified-since")])
def test_unchanged_site_is_revalidated_not_downloaded(kb, db, validators, header):
    with blog(validators=validators) as site:
        first = kb.json("index", site.url("/"), *FAST)
        assert first["indexed"] == len(ALL_POSTS) and first["not_modified"] == 0
        assert not any(r.conditional for r in site.log)
        pages = {r.path for r in html_requests(site)}
        before = snapshot(db)
        site.log.clear()
        again = kb.json("index", site.url("/"), *FAST)
        requests = html_requests(site)
    # Every article and listing page (home, archives, calendar) was asked "changed since?" and
    # answered 304; the crawl still reached the same pages through the stored links.
    assert {r.path for r in requests} == pages
    assert all(header in r.headers and r.status == 304 for r in requests)
    paths = {p.split("?")[0] for p in pages}  # posts the home page links with utm_ parameters
    assert {p.path for p in ALL_POSTS} < paths and "/" in pages and "/2026/10/" in pages
    assert again["not_modified"] == len(requests) == again["fetched"]
    assert again["chunks_added"] == 0 and again["indexed"] == 0 and again["chunks_deleted"] == 0
    assert again["unchanged"] == len(ALL_POSTS) and again["pruned"] == 0
    assert again["skipped_by"] == first["skipped_by"]  # the same decisions, from the stored visits
    assert again["crawls"][0]["complete"] is True
    assert snapshot(db) == before


def test_an_edited_page_alone_is_downloaded_and_reindexed(kb, db):
    post = POSTS[1]
    with blog(validators="etag") as site:
        kb("index", site.url("/"), *FAST)
        before = snapshot(db)
        post_changed(site, post.path, b"corrupted OST cache file", b"damaged offline cache file")
        site.log.clear()
        again = kb.json("index", site.url("/"), *FAST)
        assert downloaded(site) == [post.path]
        after = assert_consistent(db)
        # The new validators were recorded: a third run downloads nothing.
        site.log.clear()
        third = kb.json("index", site.url("/"), *FAST)
        assert downloaded(site) == [] and third["chunks_added"] == 0
    assert again["indexed"] == 1 and again["unchanged"] == len(ALL_POSTS) - 1
    assert again["chunks_added"] >= 1
    assert after["store"].keys() == before["store"].keys()
    changed = {s for s in after["store"] if after["store"][s] != before["store"][s]}
    assert changed <= {site.url(post.path)}


def test_a_page_gone_from_the_site_is_pruned_with_its_visit(kb, db):
    gone = POSTS[4]
    with blog(validators="etag") as site:
        kb("index", site.url("/"), *FAST)
        assert site.url(gone.path) in visits(db)
        site.routes[gone.path] = Response(404, b"<h1>Not found</h1>")
        site.log.clear()
        again = kb.json("index", site.url("/"), *FAST)
        assert downloaded(site) == []  # the pages linking to it did not change: all 304
    # Pruned, and that is success: not a failure of the run.
    assert again["pruned"] == 1 and again["failed_by"] == {} and again["prunes"][0]["kind"] == "http_404"
    snap = assert_consistent(db)
    assert site.url(gone.path) not in snap["store"]
    assert site.url(gone.path) not in visits(db)


def test_an_article_whose_entry_disagrees_with_its_visit_is_read_in_full(kb, db):
    """A run killed after a page's visit was stored and before its ledger entry was written leaves
    the two with different validators: the page is then fetched in full, never trusted."""
    post = POSTS[0]
    with blog(validators="etag") as site:
        kb("index", site.url("/"), *FAST)
        ledger = Ledger(db, "kbindex")
        entry = ledger.get(site.url(post.path))
        ledger.put(replace(entry, etag='"from-an-older-run"'))
        ledger.close()
        site.log.clear()
        again = kb.json("index", site.url("/"), *FAST)
        assert downloaded(site) == [post.path]
        assert not next(r for r in site.log if page_path(r) == post.path).conditional
    assert again["unchanged"] == len(ALL_POSTS) and again["chunks_added"] == 0
    assert visits(db)[site.url(post.path)].etag == Ledger(db, "kbindex").get(site.url(post.path)).etag


def test_a_server_without_validators_is_read_in_full_and_skipped_by_hash(kb, db):
    with blog() as site:
        kb("index", site.url("/"), *FAST)
        site.log.clear()
        again = kb.json("index", site.url("/"), *FAST)
        requests = html_requests(site)
    assert requests and not any(r.conditional for r in requests)
    assert all(r.status == 200 for r in requests)
    assert again["not_modified"] == 0 and again["chunks_added"] == 0
    assert again["unchanged"] == len(ALL_POSTS)


def test_new_chunk_settings_refetch_articles_but_not_listing_pages(kb, db):
    """Article visits are trusted only while their ledger entry is current; listing pages' are not
    tied to the model or chunk settings."""
    articles = {p.path for p in ALL_POSTS}
    with blog(validators="etag") as site:
        kb("index", site.url("/"), *FAST)
        site.log.clear()
        again = kb.json("index", site.url("/"), *FAST, "--chunk-tokens", "128")
        assert set(downloaded(site)) == articles
        assert not any(r.conditional for r in html_requests(site) if page_path(r) in articles)
        assert all(r.status == 304 for r in html_requests(site) if page_path(r) not in articles)
        assert again["indexed"] == len(ALL_POSTS)
        site.log.clear()
        third = kb.json("index", site.url("/"), *FAST, "--chunk-tokens", "128")
        assert downloaded(site) == [] and third["chunks_added"] == 0


def test_rebuild_and_delete_keep_the_visits_in_step(kb, db):
    with blog(validators="etag") as site:
        kb("index", site.url("/"), *FAST)
        count = len(visits(db))
        # --rebuild crawls again into a new collection (nothing it may trust: all downloaded),
        # then its visits replace the old ones with the collection.
        site.log.clear()
        assert kb.json("index", "--rebuild", "--model", "fake:other", *FAST)["indexed"] == len(ALL_POSTS)
        assert {p.path for p in ALL_POSTS} <= set(downloaded(site))
        assert len(visits(db)) == count
        site.log.clear()
        again = kb.json("index", site.url("/"), *FAST, "--model", "fake:other")
        assert downloaded(site) == [] and again["chunks_added"] == 0
        # Deleting a URL prefix forgets what was crawled under it; the next crawl reads those
        # pages in full and indexes them again.
        out = kb("delete", site.url("/2026/11/"), "--model", "fake:other")
        assert out.exit_code == 0, out.output
        assert not [u for u in visits(db) if u.startswith(site.url("/2026/11/"))]
        site.log.clear()
        again = kb.json("index", site.url("/"), *FAST, "--model", "fake:other")
        november = [p.path for p in POSTS if p.path.startswith("/2026/11/")]
        assert sorted(downloaded(site)) == sorted(november + ["/2026/11/"])
        assert again["indexed"] == len(november)
    assert_consistent(db)


def test_verify_repair_of_a_crawled_page_keeps_its_visit_with_the_crawl(kb, db):
    post = POSTS[2]
    with blog(validators="etag") as site:
        kb("index", site.url("/"), *FAST)
        Store(db).collection("kbindex").delete(snapshot(db)["store"][site.url(post.path)][:1])
        out = kb("verify", "--repair")
        assert out.exit_code == 0 and "re-indexed 1 sources" in out.stdout, out.output
        assert visits(db)[site.url(post.path)] is not None
        site.log.clear()
        again = kb.json("index", site.url("/"), *FAST)
        assert downloaded(site) == [] and again["chunks_added"] == 0
    ledger = Ledger(db, "kbindex")
    roots = {r for (r,) in ledger.db.execute("SELECT root FROM visits")}
    ledger.close()
    assert roots == {site.url("/")}
    assert kb("verify").exit_code == 0


# -- the crawler's side of it, with a memory of its own ----------------------------------------------


class DictMemory:
    """crawl.CrawlMemory in a dict: the crawler needs no ledger."""

    def __init__(self):
        self.visits: dict[str, Visit] = {}

    def recall(self, url: str) -> Visit | None:
        return self.visits.get(url)

    def remember(self, visit: Visit) -> None:
        self.visits[visit.url] = visit


def _article(title: str, canonical: str | None = None) -> bytes:
    head = f'<link rel="canonical" href="{canonical}">' if canonical else ""
    words = " ".join(f"{title.lower()} word{i}" for i in range(60))
    return (f"<html><head><title>{title}</title>{head}</head><body><main><h1>{title}</h1>"
            f"<p>{words}</p></main></body></html>").encode()


def _listing(*paths: str) -> bytes:
    posts = "".join(f'<article><h2><a href="{p}">Post {p}</a></h2><p>A teaser.</p></article>' for p in paths)
    return f"<html><head><title>Home</title></head><body><main>{posts}</main></body></html>".encode()


def _crawl(server: FixtureServer, memory: DictMemory) -> tuple[list, CrawlResult]:
    result = CrawlResult(server.url("/"))
    with Fetcher(timeout=2, retries=0) as fetcher:
        items = list(Crawler(fetcher, CrawlOptions(), memory=memory).crawl(server.url("/"), result))
    return items, result


def _pages(items) -> dict[str, Page]:
    return {i.source: i for i in items if isinstance(i, Page)}


def test_a_304_listing_page_is_followed_by_its_stored_links():
    """A page linked from an unchanged listing page is found, though the listing is not read."""
    memory = DictMemory()
    server = FixtureServer({"/": Response(body=_listing("/a", "/b", "/c")),
                            "/a": Response(body=_article("Alpha")),
                            "/b": Response(body=_article("Beta"))}, validators="etag")
    with server:
        items, _ = _crawl(server, memory)
        assert set(_pages(items)) == {server.url("/a"), server.url("/b")}  # /c: 404
        assert [type(i) for i in items if not isinstance(i, Page)].count(FetchError) == 1
        home = memory.visits[server.url("/")]
        assert home.outcome == "listing" and home.parser == ANALYSIS_VERSION
        assert home.links == (server.url("/a"), server.url("/b"), server.url("/c"))
        assert memory.visits[server.url("/a")].outcome == "page"
        server.routes["/c"] = Response(body=_article("Gamma"))  # written since
        server.log.clear()
        items, result = _crawl(server, memory)
        log = {r.path: r for r in server.log if r.path != "/robots.txt"}
    pages = _pages(items)
    assert {p: r.status for p, r in log.items()} == {"/": 304, "/a": 304, "/b": 304, "/c": 200}
    assert not log["/c"].conditional  # nothing stored for it: asked for in full
    assert pages[server.url("/a")].status == 304 and pages[server.url("/a")].body == b""
    assert pages[server.url("/c")].status == 200 and b"Gamma" in pages[server.url("/c")].body
    assert result.not_modified == 3 and result.fetched == 4 and result.complete


def _listing_and_two_articles() -> FixtureServer:
    return FixtureServer({"/": Response(body=_listing("/a", "/b")),
                          "/a": Response(body=_article("Alpha")),
                          "/b": Response(body=_article("Beta"))}, validators="etag")


def test_scope_and_depth_still_apply_to_stored_links():
    memory = DictMemory()
    server = _listing_and_two_articles()
    with server:
        _crawl(server, memory)
        server.log.clear()
        result = CrawlResult(server.url("/"))
        with Fetcher(timeout=2, retries=0) as fetcher:
            crawler = Crawler(fetcher, CrawlOptions(exclude=("/b$",), depth=1), memory=memory)
            items = list(crawler.crawl(server.url("/"), result))
        paths = [(r.path, r.status) for r in server.log if r.path != "/robots.txt"]
    assert paths == [("/", 304), ("/a", 304)] and result.skipped["out_of_scope"] == 1
    assert set(_pages(items)) == {server.url("/a")}


def test_a_redirect_is_revalidated_and_a_changed_redirect_is_read_in_full():
    memory = DictMemory()
    body = _article("Alpha")
    server = FixtureServer({"/": Response(body=_listing("/old", "/b")),
                            "/old": Response(301, b"", {"Location": "/new"}),
                            "/new": Response(body=body),
                            "/b": Response(body=_article("Beta"))}, validators="etag")
    with server:
        _crawl(server, memory)
        visit = memory.visits[server.url("/old")]
        assert (visit.final, visit.name, visit.outcome) == (server.url("/new"), server.url("/new"), "page")
        server.log.clear()
        items, _ = _crawl(server, memory)
        assert [(r.path, r.status) for r in server.log if r.path in ("/old", "/new")] == [
            ("/old", 301), ("/new", 304)]
        assert _pages(items)[server.url("/new")].status == 304
        # The redirect now leads elsewhere, to a page that happens to have the same validators:
        # the 304 is not about the page stored, so it is read again in full.
        server.routes["/old"] = Response(301, b"", {"Location": "/newer"})
        server.routes["/newer"] = Response(body=body)
        server.log.clear()
        items, _ = _crawl(server, memory)
        hops = [(r.path, r.status, r.conditional) for r in server.log if r.path in ("/old", "/newer")]
    assert hops == [("/old", 301, True), ("/newer", 304, True), ("/old", 301, False), ("/newer", 200, False)]
    page = _pages(items)[server.url("/newer")]
    assert page.status == 200 and page.body == body
    assert memory.visits[server.url("/old")].final == server.url("/newer")


def test_a_canonical_target_no_longer_linked_is_still_read_and_indexed():
    """/x was a duplicate of /y (rel=canonical) last time; /y is no longer linked. /x stays a
    duplicate of /y, an article: /y is revalidated on its own (a 304 with its stored visit) and
    handed on under its own name, not /x's body under /y's name."""
    memory = DictMemory()
    server = FixtureServer({"/": Response(body=_listing("/y", "/x")),
                            "/y": Response(body=_article("Why")),
                            "/x": Response(body=_article("Why", canonical="/y"))}, validators="etag")
    with server:
        _crawl(server, memory)
        assert memory.visits[server.url("/x")].outcome == "duplicate"
        server.routes["/"] = Response(body=_listing("/x", "/z"))
        server.log.clear()
        items, _ = _crawl(server, memory)
        requests = [(r.path, r.status, r.conditional) for r in server.log if r.path in ("/x", "/y")]
    assert requests == [("/x", 304, True), ("/y", 304, True)]
    assert _pages(items)[server.url("/y")].status == 304
    assert (memory.visits[server.url("/x")].outcome, memory.visits[server.url("/x")].name) == (
        "duplicate", server.url("/y"))


def test_visits_of_another_analysis_version_are_ignored():
    memory = DictMemory()
    server = _listing_and_two_articles()
    with server:
        _crawl(server, memory)
        memory.visits = {u: Visit(**{**v.__dict__, "parser": ANALYSIS_VERSION - 1})
                         for u, v in memory.visits.items()}
        server.log.clear()
        _crawl(server, memory)
        statuses = {r.path: (r.status, r.conditional) for r in server.log if r.path != "/robots.txt"}
    assert statuses == {"/": (200, False), "/a": (200, False), "/b": (200, False)}


# -- sitemap lastmod (--trust-lastmod) ------------------------------------------------------------


@pytest.mark.parametrize("value,expected", [
    ("2026-11-24", "2026-11-25T12:00:00+00:00"),  # a bare date: its latest possible moment
    ("2026-11", "2026-12-01T12:00:00+00:00"),
    ("2026", "2027-01-01T12:00:00+00:00"),
    ("2026-11-24T10:00:00+02:00", "2026-11-24T08:00:00+00:00"),
    ("2026-11-24T10:00:00Z", "2026-11-24T10:00:00+00:00"),
    ("2026-11-24T10:00:00", "2026-11-24T10:00:00+00:00"),
    ("yesterday", None), ("", None), (None, None), ("2026-13-01", None),
])
def test_parse_lastmod(value, expected):
    when = parse_lastmod(value)
    assert (when.isoformat() if when else None) == expected


def test_read_sitemap_entries_keeps_lastmod():
    body = (b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" '
            b'xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">'
            b"<url><loc>https://x.example/a</loc><lastmod>2026-01-02</lastmod>"
            b"<image:image><image:loc>https://x.example/a.png</image:loc></image:image></url>"
            b"<url><loc> https://x.example/b </loc></url></urlset>")
    assert read_sitemap_entries(body, 10_000) == (
        [("https://x.example/a", "2026-01-02"), ("https://x.example/b", None)], [])


def test_trust_lastmod_skips_pages_the_sitemap_says_are_unchanged(kb, db):
    posts = {p.path for p in ALL_POSTS}
    with blog(validators="etag") as site:
        site.lastmods.update({path: "2020-01-01" for path in posts})
        kb("index", site.url("/"), *FAST, "--trust-lastmod")  # nothing stored yet: all read
        site.log.clear()
        again = kb.json("index", site.url("/"), *FAST, "--trust-lastmod")
        requested = {page_path(r) for r in site.log}
        listings = html_requests(site)
        assert not requested & posts  # not even asked
        assert listings and all(r.status == 304 for r in listings)  # listing pages: no lastmod
        assert again["unchanged"] == len(ALL_POSTS) and again["chunks_added"] == 0
        assert again["fetched"] == len(listings)
        assert again["not_modified"] == len(listings) + len(ALL_POSTS)
        # An edit the sitemap announces is read and indexed; the rest stays unrequested.
        edited = POSTS[1].path
        post_changed(site, edited, b"corrupted OST cache file", b"damaged offline cache file")
        site.lastmods[edited] = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        site.log.clear()
        third = kb.json("index", site.url("/"), *FAST, "--trust-lastmod")
        assert {page_path(r) for r in site.log} & posts == {edited}
        assert downloaded(site) == [edited] and third["indexed"] == 1
        # Without the option every page is asked, and answers 304.
        site.log.clear()
        kb.json("index", site.url("/"), *FAST)
        assert posts <= {page_path(r) for r in html_requests(site) if r.status == 304}
    assert_consistent(db)


def test_trust_lastmod_for_a_sitemap_source(kb):
    with blog(validators="last-modified") as site:
        site.lastmods.update({p.path: "2020-01-01T00:00:00Z" for p in ALL_POSTS})
        first = kb.json("index", site.url("/sitemap.xml"), *FAST, "--trust-lastmod")
        assert first["indexed"] == len(ALL_POSTS)
        site.lastmods[OLD_POST.path] = "2999-01-01"  # says it changed: asked (and answers 304)
        site.log.clear()
        again = kb.json("index", site.url("/sitemap.xml"), *FAST, "--trust-lastmod")
        requests = [(r.path, r.status) for r in site.log]
    assert requests == [("/robots.txt", 200), ("/sitemap.xml", 200), (OLD_POST.path, 304)]
    assert again["unchanged"] == len(ALL_POSTS) and again["not_modified"] == len(ALL_POSTS)


# -- crash safety ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["page:4", "commit"])
def test_a_crawl_killed_midway_heals_and_then_revalidates(tmp_path, stage):
    """Killed while pages are being fetched (visits of some pages stored, nothing indexed), or
    after the store was written and before the ledger (visits stored, entries still dirty): the
    next run re-reads what it cannot trust, and the one after downloads nothing."""
    db = tmp_path / "index"
    with blog(validators="etag") as site:
        args = ("index", site.url("/"), "--delay", "0", "--db", str(db), "--json")
        err = tmp_path / "killed.txt"
        proc = spawn(*args, env={"KBINDEX_TEST_PAUSE": stage}, stderr_path=err)
        wait_for(err, f"paused at {stage.partition(':')[0]}", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert visits(db)  # the killed run had stored some
        code, out, stderr = run(*args, tmp=tmp_path)
        assert code == 0, stderr
        assert summary(out)["indexed"] == len(ALL_POSTS)  # nothing trusted from the killed run
        assert_consistent(db)
        site.log.clear()
        code, out, stderr = run(*args, tmp=tmp_path)
        assert code == 0, stderr
        assert downloaded(site) == [] and summary(out)["chunks_added"] == 0
    code, out, _ = run("verify", "--db", str(db), "--json", tmp=tmp_path)
    assert code == 0 and json.loads(out)["ok"]
