"""The crawler: a breadth-first crawl of one source (a site, a sitemap or a feed), as in Scrapy a
scheduler (`CrawlRun`: what is fetched, in which order), a downloader (`Gate` over fetch.Fetcher,
called from a small thread pool) and a parser (`analysis.analyze`, with lxml).

No HTTP of its own: every request goes through fetch.Fetcher, so its limits, retries, per-host
delay and address checks apply to pages, robots.txt, sitemaps and feeds alike.

This module (about 600 lines) and `CrawlRun` (about 450) are longer than the house limits, for a
reason: CrawlRun is the one state machine of a crawl (the breadth-first loop, the start URL, the
outcome of each page: redirects, rel=canonical, duplicates, soft 404s), and its steps read and
write the same few sets (done, handled, facts, prefetched, inflight); cut in two, each half would
reach into the other's state. What has state of its own is its own class in its own module:
Frontier, Robots, SitemapReader, Soft404Check, Gate.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from kbindex.crawl.analysis import ANALYSIS_VERSION, HTML_TYPES, MAX_NESTING, Analysis, analyze, is_html
from kbindex.crawl.feeds import read_feed
from kbindex.crawl.frontier import Frontier, Item, trap_reason
from kbindex.crawl.gate import Gate
from kbindex.crawl.options import CrawlMemory, CrawlOptions, CrawlResult, Forgetful
from kbindex.crawl.robots import Robots
from kbindex.crawl.scope import Scope, compile_patterns
from kbindex.crawl.sitemaps import SitemapReader, gunzip, parse_lastmod, sniff_xml
from kbindex.crawl.soft404 import Soft404Check
from kbindex.crawl.urls import page_name, request_url, url_identity
from kbindex.errors import FetchError, SkipSource, SourceError
from kbindex.fetch import TEXT_TYPES, Fetcher
from kbindex.records import Page, Visit

XML_TYPES = (
    "application/xml", "text/xml", "application/rss+xml", "application/atom+xml",
    "application/rdf+xml", "application/gzip", "application/x-gzip", "application/octet-stream",
)
# Start URLs with these endings name a sitemap or a feed, never a site's start page.
LIST_SUFFIXES = (".xml", ".xml.gz", ".rss", ".atom", ".rdf")
# What a start URL may be: a page (HTML or a text format kbindex reads), a sitemap or a feed.
START_TYPES = TEXT_TYPES + XML_TYPES
MAX_PREFETCHED = 32  # canonical targets fetched ahead of their turn to check a rel=canonical


@dataclass(frozen=True)
class _Facts:
    """What a handled or probed page is, for judging another page's rel=canonical to it."""

    name: str
    fingerprint: str | None  # Analysis.fingerprint (from the stored visit after a 304)


def _analysis(visit: Visit) -> Analysis:
    return Analysis(visit.links, visit.canonical, visit.noindex, visit.nofollow, visit.listing,
                    visit.thin, fingerprint=visit.fingerprint)


def _visit(key: str, final: str, name: str, outcome: str, page: Page, analysis: Analysis) -> Visit:
    return Visit(key, final, name, outcome, page.etag, page.last_modified,
                 tuple(dict.fromkeys(analysis.links)), analysis.canonical, analysis.noindex,
                 analysis.nofollow, analysis.listing, analysis.thin, ANALYSIS_VERSION,
                 fingerprint=analysis.fingerprint)


def _renamed(error: SourceError, name: str) -> SourceError:
    """The error under the page's name (what an index keeps it under), not the URL requested."""
    if error.source == name:
        return error
    renamed = copy.copy(error)
    renamed.source = name
    renamed.args = (f"{name}: {error.reason}",)
    return renamed


def _article(name: str, page: Page) -> Page:
    """A page handed on to be indexed, under its canonical name (a 304 without a body)."""
    if page.status == 304:
        return Page(source=name, body=b"", url=page.url, status=304, etag=page.etag,
                    last_modified=page.last_modified)
    media = page.content_type or "text/html"
    if not media.lower().startswith(HTML_TYPES):
        media = "text/html"  # sniffed as HTML: let the extractor treat it so
    return Page(source=name, body=page.body, content_type=media, url=page.url,
                status=page.status, etag=page.etag, last_modified=page.last_modified)




class Crawler:
    """Breadth-first crawl of one source: yields each page to index, or the error instead.

    Pages are yielded with `source` set to their name (page_name after redirects, or the name
    `names` says an index keeps a page of that identity under); URLs are requested as found and
    de-duplicated by url_identity, so a page reached by two URLs comes out once. A trusted
    `<link rel="canonical">` makes a page a duplicate of its target, a meta refresh a redirect.
    Listing pages, noindex pages and duplicates come out as SkipSource so that they are counted and reported;
    URLs never requested (out of scope, robots.txt, depth, traps) are only counted, in
    `result.skipped`.

    With a `memory` (CrawlMemory), what each HTML page was and linked to is remembered; on the
    next crawl such a page is fetched conditionally, and a 304 is handled exactly like the page it
    stands for, from what was remembered: its links followed, an article yielded as a Page with
    status 304 and no body, a listing page followed and skipped.

    A Crawler holds what is the same for every crawl it makes; each call of `crawl` makes a
    CrawlRun with that crawl's state. Raises UsageError for a bad --include or --exclude.
    """

    def __init__(self, fetcher: Fetcher, options: CrawlOptions | None = None, user_agent_token: str = "kbindex",
                 validators: Callable[[str], tuple[str | None, str | None]] | None = None,
                 memory: CrawlMemory | None = None, names: Callable[[str], str] | None = None):
        self.fetcher = fetcher
        # The name an index already keeps a page under (one with the same url_identity), so that
        # a name that changed form (query order, escapes) goes on naming the same entry.
        self.names = names or (lambda name: name)
        # ETag / Last-Modified from the last run, for conditional GETs of pages whose links are
        # not needed (sitemap and feed entries, a start page with depth 0).
        self.validators = validators or (lambda url: (None, None))
        # Pages whose links are needed (a site's pages) are fetched conditionally only when the
        # last run's Visit is known: a 304 has no body, so its stored links are followed instead.
        self.memory: CrawlMemory = memory or Forgetful()
        self.options = options or CrawlOptions()
        self.token = user_agent_token
        self.include = compile_patterns(self.options.include, "--include")
        self.exclude = compile_patterns(self.options.exclude, "--exclude")

    def crawl(self, start: str, result: CrawlResult | None = None) -> Iterator[Page | SourceError]:
        """Pages of the site (or sitemap, or feed) at `start`, in breadth-first order; `result`
        is filled in as the crawl goes (a new CrawlResult when None)."""
        yield from CrawlRun(self, start, result if result is not None else CrawlResult(start)).run()


class CrawlRun:
    """The state of one crawl of `start` by `crawler` (see Crawler), made once per crawl.

    Whether non-public addresses may be fetched is decided here, once, for the whole crawl
    (--allow-private, or a start host that is itself private) and held by the fetch gate.
    """

    def __init__(self, crawler: Crawler, start: str, result: CrawlResult):
        options = crawler.options
        self.crawler = crawler
        self.options = options
        self.memory = crawler.memory
        self.start = start
        self.result = result
        allow_private = options.allow_private or crawler.fetcher.is_private_host(start)
        self.gate = Gate(crawler.fetcher, allow_private, crawler.validators, crawler.names,
                         options.render, options.renderer, self.subresource_refusal)
        self.robots = Robots(self.gate, crawler.token, result, obey=options.robots)
        self.start_url = request_url(start) or start
        self.start_name = self.gate.name(self.start_url)
        scope = Scope.for_start(self.start_name, options.scope, crawler.include, crawler.exclude)
        self.frontier = Frontier(result, scope, options.depth, self.robots.allowed)
        self.sitemaps = SitemapReader(self.gate, self.frontier, result, options.max_pages,
                                      options.trust_lastmod)
        self.soft_404 = Soft404Check(self.gate, self.robots.allowed)
        self.done: set[str] = set()  # canonical URLs of pages already handled
        self.handled: set[str] = set()  # identities of requested URLs handled
        self.facts: dict[str, _Facts] = {}  # identity -> what the page there is (rel=canonical)
        # canonical targets probed, not yet handled: (their fetch, the visit it was made with)
        self.prefetched: dict[str, tuple[Future, Visit | None]] = {}
        self.inflight: deque[tuple[Future, Item]] = deque()
        self.transient = False  # a page failed with a transient error: the crawl is incomplete

    @property
    def scope(self) -> Scope:
        return self.frontier.scope

    def subresource_refusal(self, url: str) -> str | None:
        """Why a page being rendered may not request `url` (a script, an API call), or None.

        The crawl's rules, applied to the browser: no non-public address unless the crawl may
        reach them, only the crawl's own hosts (a script or an API is seldom under the article's
        folder, so the host, not the path, is the scope here), and robots.txt.
        """
        if self.gate.refuses(url):
            return "a non-public address (use --allow-private to allow)"
        parts = urlsplit(page_name(url) or url)
        if not any(parts.scheme == scheme and parts.netloc == netloc for scheme, netloc, _ in self.scope.roots):
            return "not on the crawl's hosts (out of scope)"
        if not self.robots.allowed(url):
            return "disallowed by robots.txt"
        return None

    @scope.setter
    def scope(self, scope: Scope) -> None:
        self.frontier.scope = scope

    # -------------------------------------------------------- the scheduler

    def run(self) -> Iterator[Page | SourceError]:
        """The crawl: the start URL, then the frontier in breadth-first order."""
        result, options, gate = self.result, self.options, self.gate
        deadline = time.monotonic() + options.max_time if options.max_time else None
        start, start_url, start_name = self.start, self.start_url, self.start_name
        start_item = Item(start_url, 0)
        result.start_names.update({start, start_url, start_name})
        self.frontier.seen.add(start_item.key)
        result.discovered += 1

        if not self.robots.allowed(start_url):
            result.complete, result.stopped = False, result.stopped or "robots"
            error = self.robots.error
            if error is not None:
                result.errors += 1
                yield FetchError(start, f"robots.txt could not be read, so nothing is fetched: {error.reason}",
                                 kind=error.kind, status=error.status)
            else:
                yield SkipSource(start, "disallowed by robots.txt", kind="robots")
            return
        # A site's start page is fetched conditionally when the last run read it as a site's page
        # (its links are then known); a start URL crawled with --depth 0 needs no links.
        visit = self.recall(start_item) if options.depth != 0 else None
        if visit is not None:
            etag, modified = visit.etag, visit.last_modified
        else:
            etag, modified = gate.validators(start_name) if options.depth == 0 else (None, None)
        try:
            page = gate.get(start_url, accept=START_TYPES, etag=etag, last_modified=modified)
        except SourceError as exc:
            result.complete, result.stopped = False, "start_failed"
            result.errors += isinstance(exc, FetchError)
            yield _renamed(exc, start_name)
            return
        if page.status == 304 and visit is None:  # unchanged since the last run: nothing to follow
            result.kind, result.complete = "page", True
            result.fetched += 1
            result.not_modified += 1
            yield replace(page, source=start_name)
            return
        final = gate.name(page.url or start_url)
        result.start_names.add(final)
        if final != start_name and not self.scope.in_roots(final):
            # The start URL redirected (http -> https, / -> /en/): crawl where it led.
            self.scope = self.scope.widen(final, options.scope)
        if page.status == 304:  # a site's start page, unchanged: followed by its stored links
            result.kind = "site"
            start_item.visit = visit
            yield from self.site(start_item, page, None)
        else:
            yield from self.start_page(page, final)
        yield from self.loop(deadline)

    def loop(self, deadline: float | None) -> Iterator[Page | SourceError]:
        """Fetch and handle the frontier until it is empty or a limit is reached."""
        result, options, frontier = self.result, self.options, self.frontier
        pool = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="kbindex-fetch")
        # Results are handled in the order requests were made (breadth-first, deterministic: the
        # same site gives the same pages in the same order, so "first of two duplicates" is
        # stable); a window of queued requests keeps the workers busy behind a slow page.
        inflight = self.inflight
        window = options.concurrency * 4
        requested = result.fetched  # the start page counts against --max-pages
        try:
            while frontier.queue or inflight:
                if deadline is not None and time.monotonic() >= deadline:
                    result.stopped = "max_time"
                    break
                held: list[Item] = []
                while frontier.queue and len(inflight) < window:
                    if options.max_pages is not None and requested >= options.max_pages:
                        break
                    item = frontier.queue.popleft()
                    if item.key in self.handled:
                        continue  # handled early: the canonical target of a page before it
                    if frontier.tokens.refuses(item.key):  # found to be a session token meanwhile
                        result.skipped["trap"] += 1
                        continue
                    if frontier.tokens.hold(item.key):  # its pattern may be a token: wait for it
                        held.append(item)
                        if len(held) >= window * 16:
                            break  # bounded work per page handled; the rest waits its turn
                        continue
                    if item.key in self.prefetched:  # probed as a canonical target: not fetched again
                        future, item.visit = self.prefetched.pop(item.key)
                        inflight.append((future, item))
                        continue
                    item.visit = self.recall(item)
                    if self.unchanged_by_lastmod(item):
                        item.unrequested = True  # handled as a 304 that was never asked for
                        future: Future = Future()
                        future.set_result((Page(item.url, b"", url=item.visit.final, status=304,
                                                etag=item.visit.etag,
                                                last_modified=item.visit.last_modified), None))
                        inflight.append((future, item))
                        continue
                    inflight.append((pool.submit(self.gate.page, item.url, not item.follow, item.visit), item))
                    frontier.tokens.sent(item.key)
                    item.sent = True
                    requested += 1
                frontier.queue.extendleft(reversed(held))
                result.queued = len(frontier.queue) + len(inflight)
                if not inflight:
                    if frontier.queue:  # what is left waits for page requests the budget has not
                        result.stopped = "max_pages"
                    break
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                future, item = inflight[0]
                if not wait([future], timeout=timeout).done:
                    continue  # the deadline passed: stopped at the top of the loop
                inflight.popleft()
                if item.sent:
                    frontier.tokens.sent(item.key, -1)
                yield from self.handle(item, future)
                if options.on_progress:
                    options.on_progress(result)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        result.queued = 0
        if result.stopped is None and self.transient:
            result.stopped = "errors"
        if result.stopped is None and self.sitemaps.failed:
            result.stopped = "sitemap_failed"
        if result.stopped is None and self.sitemaps.cut:
            result.stopped = self.sitemaps.cut
        result.complete = result.stopped is None
        if result.stopped and frontier.queue:
            result.skipped["not_fetched"] += len(frontier.queue)

    def start_page(self, page: Page, final: str) -> Iterator[Page | SourceError]:
        """The start URL decides what the source is: a site, a sitemap, a feed or one page."""
        result, start = self.result, self.start
        try:
            body = gunzip(page.body, self.gate.fetcher.max_bytes)
        except SkipSource as exc:
            result.stopped = "start_failed"  # what it lists is unknown: nothing is pruned
            yield SkipSource(start, exc.reason, kind=exc.kind)
            return
        xml = sniff_xml(body) if not is_html(page) else None
        if xml == "sitemap":
            result.kind = "sitemap"
            self.scope = self.scope.widen(final, "host")
            self.sitemaps.read_body(body, final)
            yield from self.sitemaps.drain()
            return
        if xml == "feed":
            entries = read_feed(body, final)
            if entries is not None:
                result.kind = "feed"
                self.scope = self.scope.widen(final, "host")
                parent = Item(final, -1, follow=False)  # entries are depth 0: --depth does not apply
                for link in entries:
                    self.frontier.enqueue(link, None, parent, barren=False, follow=False)
                return
        if not is_html(page):
            media = (page.content_type or "").split(";")[0].strip().lower()
            if media in XML_TYPES or xml:
                result.stopped = "start_failed"  # a feed or sitemap that does not parse
                yield SkipSource(start, f"not a page, sitemap or feed (Content-Type {media or 'none'})",
                                 kind="not_html")
                return
            result.kind = "page"  # Markdown, reStructuredText or plain text: index it as it is
            result.fetched += 1
            self.done.add(url_identity(final) or final)
            yield Page(source=final, body=page.body, content_type=page.content_type, url=page.url,
                       status=page.status, etag=page.etag, last_modified=page.last_modified)
            return
        if urlsplit(start).path.lower().endswith(LIST_SUFFIXES):
            # A sitemap or feed URL that answers with a web page (a maintenance or error page
            # sent with 200): what it lists is unknown, so it is not crawled as a site.
            result.stopped = "start_failed"
            yield FetchError(start, "a sitemap or feed URL answered with an HTML page; nothing it "
                             "listed is pruned", kind="not_sitemap")
            return
        result.kind = "site"
        try:
            page = self.gate.rendered(start, page)
        except SourceError as exc:
            result.stopped = "start_failed"  # what the site links to is unknown: nothing is pruned
            result.errors += 1
            yield exc
            return
        analysis = analyze(page, page.url or start)
        if analysis.nesting > MAX_NESTING:
            yield SkipSource(start, f"markup nested more than {MAX_NESTING} elements deep", kind="too_deep")
            return
        yield from self.site(Item(self.start_url, 0), page, analysis)

    def site(self, item: Item, page: Page, analysis: Analysis | None) -> Iterator[Page | SourceError]:
        """A site's start page (read, or a 304 to follow by its stored links), then its sitemaps."""
        future: Future = Future()
        future.set_result((page, analysis))
        yield from self.handle(item, future)
        final = page.url or item.url
        if self.options.robots:
            for sitemap in self.robots.sitemaps(final):
                if not self.sitemaps.room():
                    break
                self.sitemaps.read(sitemap)
        yield from self.sitemaps.drain()

    def recall(self, item: Item) -> Visit | None:
        """The last run's visit of a page, if its validators can be used."""
        visit = self.memory.recall(item.key)
        if visit is None or visit.parser != ANALYSIS_VERSION or not (visit.etag or visit.last_modified):
            return None
        if visit.outcome == "redirect":
            return None  # a meta refresh stub: a 304 would not say where it leads
        return visit

    def unchanged_by_lastmod(self, item: Item) -> bool:
        """--trust-lastmod: the sitemap says the page changed no later than the stored visit was
        made (a sitemap that lies about lastmod hides changes: hence an option)."""
        if not self.options.trust_lastmod or item.visit is None:
            return False
        lastmod = self.sitemaps.lastmods.get(item.key)
        seen = parse_lastmod(item.visit.seen)
        return lastmod is not None and seen is not None and lastmod <= seen

    def settle(self, fetch: Callable[[], tuple[Page, Analysis | None]]):
        """(page, analysis) from a fetch, or the error that replaced them (a failure counted)."""
        try:
            return fetch()
        except SkipSource as exc:
            return exc
        except FetchError as exc:
            self.result.errors += 1
            self.transient = self.transient or exc.transient
            return exc

    # -------------------------------------------------------- what a page is

    def handle(self, item: Item, future: Future) -> Iterator[Page | SourceError]:
        """The outcome of one fetched page: redirects, duplicates, noindex, listing pages, soft
        404s and articles (see Crawler)."""
        if item.key in self.handled:
            return  # handled already: the canonical target of a page before it, or a redirect's
        self.handled.add(item.key)
        result, gate = self.result, self.gate
        outcome = self.settle(future.result)
        if isinstance(outcome, SourceError):
            yield _renamed(outcome, gate.name(item.url))
            return
        page, analysis = outcome
        result.fetched += not item.unrequested
        visit = item.visit
        if page.status == 304:
            result.not_modified += 1
            if visit is None:  # a sitemap or feed entry unchanged since the last run
                self.done.add(item.key)
                yield replace(page, source=gate.name(item.url))
                return
            if url_identity(page.url or item.url) != url_identity(visit.final):
                # It redirects somewhere else now: what was stored is about another page.
                self.handled.discard(item.key)
                yield from self.handle(Item(item.url, item.depth, item.streak, item.follow),
                                       gate.now(item.url))
                return
            # Unchanged: followed exactly as if it had been read, by what the last run stored.
            analysis = _analysis(visit)
            page = replace(page, etag=page.etag or visit.etag,
                           last_modified=page.last_modified or visit.last_modified)
        final_url = page.url or item.url
        final = url_identity(final_url) or final_url
        name = gate.name(final_url)

        def remember(outcome: str, as_name: str = name) -> None:
            self.memory.remember(_visit(item.key, final_url, as_name, outcome, page, analysis))

        if final != item.key:
            if final in self.done:
                remember("duplicate")
                yield SkipSource(gate.name(item.url), f"redirects to {name}, already seen", kind="duplicate")
                return
            if not self.scope.contains(final_url) and item.depth > 0:
                remember("out_of_scope")
                yield SkipSource(gate.name(item.url), f"redirects out of scope to {name}",
                                 kind="out_of_scope")
                return
            self.frontier.seen.add(final)
        self.done.add(final)
        if item.depth == 0:
            result.start_names.add(name)
        if analysis.refresh and url_identity(analysis.refresh) != final:
            remember("redirect")  # never recalled: a 304 would not say where the stub leads
            self.facts[final] = _Facts(name, analysis.fingerprint)
            yield from self.client_redirect(item, name, analysis.refresh)
            return
        self.facts[final] = self.facts[item.key] = _Facts(name, analysis.fingerprint)
        if item.follow and not (analysis.nofollow and self.options.robots):
            self.frontier.follow(item, final_url, analysis.links, analysis.listing, analysis.thin)
        duplicate = self.same_text(final, name, analysis) or self.canonical(item, final, analysis)
        if duplicate is not None:
            remember("duplicate", duplicate[0])
            yield SkipSource(name, duplicate[1], kind="duplicate")
        elif analysis.noindex and self.options.robots:
            remember("noindex")
            yield SkipSource(name, "meta robots noindex", kind="noindex")
        elif analysis.listing:
            remember("listing")
            yield SkipSource(name, "listing page: its links were followed, it is not indexed",
                             kind="listing")
        elif page.status == 304 and (visit.outcome, visit.name) == ("soft_404", name):
            remember("soft_404", name)  # unchanged since it was found to be a "not found" page
            yield SkipSource(name, "soft 404: unchanged since it said the page does not exist",
                             kind="soft_404")
        elif page.status == 304 and (visit.outcome, visit.name) != ("page", name):
            # The last run did not hand this page on under this name (it was a duplicate then, or
            # noindex under --no-robots...), so the index has nothing to compare a 304 with: the
            # body is needed. Its links were followed above; it is read in full now.
            outcome = self.settle(lambda: gate.page(item.url))
            if isinstance(outcome, SourceError):
                yield _renamed(outcome, name)
                return
            page, analysis = outcome
            if page.status == 304:  # a 304 to an unconditional request is the index's error
                yield _article(name, page)
            else:
                yield self.article(name, page, analysis, remember)
        else:
            yield self.article(name, page, analysis, remember)

    def article(self, name: str, page: Page, analysis: Analysis,
                remember: Callable[[str, str], None]) -> Page | SkipSource:
        """The page handed on to be indexed, or a soft 404 in its place."""
        if page.status != 304:
            reason = self.soft_404.reason(page, analysis.main)
            if reason:
                remember("soft_404", name)
                return SkipSource(name, f"soft 404: {reason}", kind="soft_404")
        remember("page", name)
        return _article(name, page)

    def same_text(self, final: str, name: str, analysis: Analysis) -> tuple[str, str] | None:
        """(earlier page, reason) when a page read before has this text at a URL that differs in
        one part only; the part is reported once found to be a session token (TokenWatch)."""
        if analysis.fingerprint is None:
            return None
        other, part = self.frontier.tokens.see(final, analysis.fingerprint, name)
        if other is None:
            return None
        if part:
            return other, (f"same page as {other}: URLs that differ only in {part!r} are one page "
                           "(a session token), so URLs like it are not followed")
        return other, f"same page as {other} (same text, the URLs differ in one part)"

    def canonical(self, item: Item, final: str, analysis: Analysis) -> tuple[str, str] | None:
        """(target, reason) when the page's rel=canonical is trusted: the target is in scope and
        its title and main text are the page's (Analysis.fingerprint; after a 304, the one stored
        with the visit). A target not read yet is fetched to see (`probe`) and then handled
        before the pages waiting in the frontier, so that the article it is gets indexed.

        A target of other text (an article, a listing, the home page a template names on every
        page) or one that cannot be read is not evidence of a copy: the page is indexed under
        its own URL, so that nothing is lost to a careless template."""
        target = request_url(analysis.canonical) if analysis.canonical else None
        key = url_identity(target) if target else None
        if key is None or key == final or analysis.fingerprint is None or not self.scope.contains(target):
            return None
        facts = self.facts.get(key) or self.probe(target, key)
        if facts is None or facts.fingerprint != analysis.fingerprint:
            return None
        if key in self.prefetched:  # probed just now: its turn comes next
            self.frontier.seen.add(key)
            self.frontier.queue.appendleft(Item(target, item.depth, item.streak, item.follow))
        return facts.name, f"same page as {facts.name} (rel=canonical)"

    def probe(self, target: str, key: str) -> _Facts | None:
        """What a canonical target not handled yet is: its fetch (or the one in flight) is
        waited for; a new fetch waits in `prefetched` for the target's turn. None where it
        cannot be read (or may not be: robots.txt, traps, too many probes waiting)."""
        waiting = next(((f, i) for f, i in self.inflight if i.key == key), None)
        if waiting is None and key in self.prefetched:  # probed for an earlier page: asked once
            future, visit = self.prefetched[key]
            waiting = future, Item(target, 0, visit=visit)
        if waiting is None:
            if (len(self.prefetched) >= MAX_PREFETCHED or trap_reason(target)
                    or not self.robots.allowed(target)):
                return None
            queued = Item(target, 0)
            queued.visit = self.recall(queued)  # a 304 says what it is from the stored visit
            future = self.gate.now(target, queued.visit)
            self.prefetched[key] = future, queued.visit
            waiting = future, queued
        future, queued = waiting
        try:
            page, analysis = future.result()
        except SourceError:
            return None
        if analysis is None:  # a 304 of a page fetched with its stored visit
            if queued.visit is None:
                return None
            analysis = _analysis(queued.visit)
        final_url = page.url or target
        return _Facts(self.gate.name(final_url), analysis.fingerprint)

    def client_redirect(self, item: Item, name: str, target: str) -> Iterator[SourceError]:
        """A meta refresh to another URL is a redirect: followed with the checks an HTTP redirect
        gets (scope, robots.txt, hop count; the fetcher checks addresses), the stub never indexed."""
        result, fetcher = self.result, self.gate.fetcher
        url = request_url(target)
        if url is None:
            yield SkipSource(name, f"meta refresh to {target[:200]}, not an http(s) URL", kind="bad_redirect")
            return
        key, to = url_identity(url), self.gate.name(url)
        if item.hops >= fetcher.max_redirects:
            result.errors += 1
            yield FetchError(name, f"more than {fetcher.max_redirects} redirects (meta refresh)",
                             kind="too_many_redirects")
            return
        if key in self.done or key in self.handled:
            yield SkipSource(name, f"redirects to {to} (meta refresh), already seen", kind="duplicate")
            return
        if not self.scope.contains(url):
            if item.depth > 0:
                yield SkipSource(name, f"redirects out of scope to {to} (meta refresh)", kind="out_of_scope")
                return
            self.scope = self.scope.widen(url, self.options.scope)  # as for the start URL's redirects
        if self.gate.refuses(url):
            result.errors += 1
            yield FetchError(name, f"refused the meta refresh to {to}: its host resolves to a non-public "
                             "address (use --allow-private to allow)", kind="private_address")
            return
        if trap_reason(url) or not self.robots.allowed(url):
            yield SkipSource(name, f"redirects to {to} (meta refresh), disallowed by robots.txt",
                             kind="robots")
            return
        result.discovered += key not in self.frontier.seen
        self.frontier.seen.add(key)
        if item.depth == 0:  # the start URL's stub: what it leads to is what the user named
            result.start_names.add(to)
        self.frontier.queue.appendleft(Item(url, item.depth, item.streak, item.follow, hops=item.hops + 1))
