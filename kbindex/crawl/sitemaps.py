"""Sitemaps (the sitemaps.org protocol 0.9, https://www.sitemaps.org/protocol.html): streamed
reading of sitemaps and sitemap indexes, gzip bodies, <lastmod> dates, and telling a sitemap or a
feed from the first bytes of a body."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from kbindex.crawl.frontier import Frontier, Item
from kbindex.crawl.urls import request_url, url_identity
from kbindex.errors import FetchError, SkipSource, SourceError

MAX_SITEMAPS = 200  # sitemap files read per crawl (an index may name many)
MAX_SITEMAP_NESTING = 3  # sitemap indexes naming sitemap indexes
# Entries taken from all the sitemaps of one crawl. --max-pages stops reading sitemaps much
# sooner (see SitemapReader.room); this bounds a crawl without a page limit: about 300 bytes
# of frontier and seen-set per URL, so some 150 MB at most.
MAX_SITEMAP_ENTRIES = 500_000


def read_sitemap(body: bytes, max_bytes: int) -> tuple[list[str], list[str]] | None:
    """(page URLs, child sitemap URLs) of a sitemap or sitemap index; None if it is not one.

    Raises SkipSource when it is larger than max_bytes decompressed, or its gzip data is corrupt
    or cut short.
    """
    parsed = read_sitemap_entries(body, max_bytes)
    return None if parsed is None else ([loc for loc, _ in parsed[0]], parsed[1])


def read_sitemap_entries(body: bytes, max_bytes: int) -> tuple[list[tuple[str, str | None]], list[str]] | None:
    """Like read_sitemap, with each page's <lastmod> (as written, or None)."""
    pages: list[tuple[str, str | None]] = []
    children: list[str] = []
    try:
        for kind, loc, lastmod in iter_sitemap(body, max_bytes):
            if kind == "url":
                pages.append((loc, lastmod))
            else:
                children.append(loc)
    except SkipSource as exc:
        if exc.kind == "not_sitemap":
            return None
        raise
    return pages, children


def iter_sitemap(body: bytes, max_bytes: int) -> Iterator[tuple[str, str, str | None]]:
    """("url" or "sitemap", <loc>, <lastmod> or None) for each entry of a sitemap or sitemap
    index (sitemaps.org protocol 0.9), streamed.

    A gzip body (a .xml.gz file) is decompressed SITEMAP_READ bytes at a time and parsed as it
    comes (lxml's pull parser, each entry's element freed once read), so memory stays a few
    blocks whatever the sitemap's size, and a caller that stops iterating stops the work.
    Parsed with lxml rather than ultimate-sitemap-parser, which does its own HTTP and so would
    bypass the fetcher's size caps, delays and address checks. Entities are not resolved and
    nothing is loaded from the network (no XXE).

    Raises SkipSource: kind "not_sitemap" (not a urlset or sitemapindex), "too_large" (over
    max_bytes decompressed), "decoding" (corrupt gzip data) or "truncated" (the gzip stream or
    the XML ends early). Entries before the problem have been yielded by then.
    """
    import lxml.etree

    parser = lxml.etree.XMLPullParser(
        events=("start", "end"), resolve_entities=False, no_network=True, recover=True,
        remove_comments=True, remove_pis=True,
    )
    root_kind: str | None = None
    depth = 0

    def entries() -> Iterator[tuple[str, str, str | None]]:
        nonlocal root_kind, depth
        for event, el in parser.read_events():
            if not isinstance(el.tag, str):
                continue
            if event == "start":
                depth += 1
                if depth == 1:
                    root_kind = lxml.etree.QName(el).localname
                    if root_kind not in ("urlset", "sitemapindex"):
                        raise SkipSource("", f"not a sitemap (<{root_kind}>)", kind="not_sitemap")
                continue
            depth -= 1
            if depth != 1:
                continue
            name = lxml.etree.QName(el).localname
            wanted = "url" if root_kind == "urlset" else "sitemap"
            if name == wanted:
                loc = lastmod = None
                for child in el:
                    if not isinstance(child.tag, str):
                        continue
                    field_name = lxml.etree.QName(child).localname
                    text = (child.text or "").strip()
                    if field_name == "loc" and text and loc is None:
                        loc = text
                    elif field_name == "lastmod" and text:
                        lastmod = text
                if loc:
                    yield wanted, loc, lastmod
            # Read: freed, with the siblings before it (the parser keeps the tree otherwise).
            el.clear(keep_tail=False)
            parent = el.getparent()
            while parent is not None and el.getprevious() is not None:
                del parent[0]

    for block in _blocks(body, max_bytes):
        try:
            parser.feed(block)
        except lxml.etree.XMLSyntaxError as exc:
            raise SkipSource("", f"not a readable sitemap: {exc}", kind="not_sitemap") from exc
        yield from entries()
    if root_kind is not None and depth > 0:
        # The parser would close the open elements (recover=True), hiding that the list is cut.
        raise SkipSource("", f"cut short: <{root_kind}> is never closed", kind="truncated")
    try:
        parser.close()
    except lxml.etree.XMLSyntaxError as exc:
        if root_kind is None:
            raise SkipSource("", "not a sitemap", kind="not_sitemap") from exc
    if root_kind is None:
        raise SkipSource("", "not a sitemap", kind="not_sitemap")


SITEMAP_READ = 64 * 1024  # bytes decompressed and parsed at a time


def _blocks(body: bytes, max_bytes: int) -> Iterator[bytes]:
    """The (decompressed) body in blocks of at most SITEMAP_READ bytes; see iter_sitemap."""
    view = memoryview(body)
    if body[:2] != b"\x1f\x8b":
        for start in range(0, len(view), SITEMAP_READ):
            yield bytes(view[start:start + SITEMAP_READ])
        return
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending: bytes | memoryview = view
    total = 0
    while not decompressor.eof:
        try:
            out = decompressor.decompress(pending, SITEMAP_READ)
        except zlib.error as exc:
            raise SkipSource("", f"corrupt gzip data: {exc}", kind="decoding") from exc
        total += len(out)
        if total > max_bytes:
            raise SkipSource("", f"larger than {max_bytes} bytes (decompressed)", kind="too_large")
        if out:
            yield out
        pending = decompressor.unconsumed_tail
        if not pending and not out:
            raise SkipSource("", "gzip data cut short", kind="truncated")


def parse_lastmod(value: str | None) -> datetime | None:
    """A sitemap <lastmod> as an aware UTC datetime; None if unreadable.

    The sitemaps protocol gives <lastmod> in the W3C Datetime format
    (https://www.w3.org/TR/NOTE-datetime): YYYY, YYYY-MM, YYYY-MM-DD, or a date and time with a
    time zone designator.

    A date without a time may be any hour of that day in any time zone: it stands for the latest
    moment it can mean (the end of the day at UTC-12), so that it never hides a change.
    """
    if not value:
        return None
    value = value.strip()
    try:
        if len(value) <= 10:  # YYYY, YYYY-MM or YYYY-MM-DD: up to the start of the next one
            parts = [int(x) for x in value.split("-")]
            if len(parts) == 1:
                end = datetime(parts[0] + 1, 1, 1, tzinfo=UTC)
            elif len(parts) == 2:
                end = (datetime(parts[0], parts[1], 1, tzinfo=UTC) + timedelta(days=32)).replace(day=1)
            else:
                end = datetime(parts[0], parts[1], parts[2], tzinfo=UTC) + timedelta(days=1)
            return end + timedelta(hours=12)
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def gunzip(body: bytes, max_bytes: int) -> bytes:
    """Decompress a gzip body (a .xml.gz sitemap, RFC 1952), stopping at max_bytes; a body
    without the gzip magic bytes is returned as it is.

    Raises SkipSource: kind "too_large" (over max_bytes decompressed) or "decoding" (corrupt data).
    """
    if body[:2] != b"\x1f\x8b":
        return body
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise SkipSource("", f"corrupt gzip data: {exc}", kind="decoding") from exc
    if len(out) > max_bytes:
        raise SkipSource("", f"larger than {max_bytes} bytes (decompressed)", kind="too_large")
    return out


def sniff_xml(body: bytes) -> str | None:
    """"sitemap", "feed" or None, from the first bytes of a (decompressed) body."""
    head = body[:2048].lower()
    if b"<urlset" in head or b"<sitemapindex" in head:
        return "sitemap"
    if b"<rss" in head or b"<feed" in head or b"<rdf:rdf" in head:
        return "feed"
    return None



class SitemapReader:
    """Reads one crawl's sitemaps into its frontier, while the page budget lasts.

    `gate` is the crawl's fetch gate (crawl.gate.Gate), `frontier` its Frontier, `result` its
    CrawlResult, `max_pages` the --max-pages budget (None: none); with `trust_lastmod` the
    entries' <lastmod> dates are kept (`lastmods`, by URL identity) for the crawler to settle
    unchanged pages without a request. After reading, `cut` says why not every sitemap was read
    ("max_pages", "sitemap_limit") and `failed` whether one could not be read; problems wait in
    `reports` (SourceErrors) for the crawl to yield.
    """

    def __init__(self, gate, frontier: Frontier, result, max_pages: int | None, trust_lastmod: bool):
        self.gate = gate
        self.frontier = frontier
        self.result = result
        self.max_pages = max_pages
        self.trust_lastmod = trust_lastmod
        self.read_count = 0  # sitemap files read (MAX_SITEMAPS)
        self.entries = 0  # entries read from all sitemaps (MAX_SITEMAP_ENTRIES)
        self.free = 0  # frontier entries that --trust-lastmod may settle without a request
        self.cut: str | None = None
        self.failed = False
        self.reports: list[SourceError] = []
        self.lastmods: dict[str, datetime] = {}  # URL identity -> sitemap lastmod (--trust-lastmod)

    def read(self, url: str, level: int = 0) -> None:
        """Fetch the sitemap at `url` (nested `level` deep in sitemap indexes) and read it."""
        if self.read_count >= MAX_SITEMAPS or level > MAX_SITEMAP_NESTING:
            self.cut = self.cut or "sitemap_limit"  # pages it lists are unknown: not complete
            return
        self.read_count += 1
        try:
            page = self.gate.get(url, accept=())
        except SourceError as exc:
            self.problem(url, exc)
            return
        self.read_body(page.body, url, level)

    def read_body(self, body: bytes, url: str, level: int = 0) -> None:
        """Enqueue a sitemap's entries, then read the sitemaps it names, while the page budget
        lasts (a sitemap is streamed: reading stops as soon as the budget is spent)."""
        # Entries are the site's own list of its pages: depth 1, links followed as usual when
        # the source is a site, not followed when the source is the sitemap itself.
        follow = self.result.kind == "site"
        parent = Item(url, 0 if follow else -1, follow=follow)
        children: list[str] = []
        host = urlsplit(url).netloc
        try:
            for kind, link, lastmod in iter_sitemap(body, self.gate.fetcher.max_bytes):
                if not self.room():
                    return
                self.entries += 1
                if kind == "sitemap":
                    child_url = request_url(link, url)  # requested as written: cHash=... must match
                    if child_url and urlsplit(child_url).netloc == host and len(children) <= MAX_SITEMAPS:
                        children.append(child_url)
                    continue
                free = False
                if self.trust_lastmod and (when := parse_lastmod(lastmod)) is not None:
                    key = url_identity(link, url)
                    if key:
                        self.lastmods[key] = when
                        free = True
                queued = len(self.frontier.queue)
                self.frontier.enqueue(link, None, parent, barren=False, follow=follow)
                self.free += free and len(self.frontier.queue) > queued
        except SkipSource as exc:
            self.problem(url, exc)
            return
        for child_url in children:
            if not self.room():
                return
            self.read(child_url, level + 1)

    def room(self) -> bool:
        """Whether reading sitemaps may go on: the page budget (--max-pages, less the pages
        already fetched) is not yet spent on queued pages, and MAX_SITEMAP_ENTRIES not reached.

        Stops one entry past the budget, so that the crawl sees it was cut short.
        """
        if self.entries >= MAX_SITEMAP_ENTRIES:
            self.cut = self.cut or "sitemap_limit"
            return False
        budget = self.max_pages
        if budget is not None and len(self.frontier.queue) - self.free > budget - self.result.fetched:
            self.cut = self.cut or "max_pages"
            return False
        return True

    def problem(self, url: str, exc: SourceError) -> None:
        """A sitemap that could not be read. Its pages are unknown, so the crawl is not complete
        and nothing is pruned for want of them; reported as a failure. Only a sitemap that
        answers 404 or 410 is gone, like a page: reported as a skip, the crawl goes on."""
        status = getattr(exc, "status", None)
        if status in (404, 410):
            self.reports.append(SkipSource(url, f"sitemap gone ({exc.reason})", kind="sitemap_gone"))
            return
        self.result.errors += 1
        self.failed = True
        self.reports.append(FetchError(
            url, f"sitemap could not be read ({exc.reason}); the crawl is incomplete, so no page is "
            "pruned for being missing from it", kind=exc.kind, status=status))

    def drain(self) -> Iterator[SourceError]:
        """The problems found so far, each once."""
        while self.reports:
            yield self.reports.pop(0)
