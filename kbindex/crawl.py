"""Crawling a site: frontier, scope, canonical URLs, robots.txt, sitemaps, feeds, traps.

No HTTP of its own: every request goes through fetch.Fetcher, so its limits, retries, per-host
delay and address checks apply to pages, robots.txt, sitemaps and feeds alike.

The parts, as in Scrapy: a scheduler (the breadth-first frontier in `Crawler.crawl`, which
decides what is fetched: scope, robots.txt, depth, trap bounds, URL deduplication), a downloader
(`Fetcher`, called from a small thread pool) and a parser (`analyze`: links, canonical URL, meta
robots and the listing-page test, with lxml, which is much faster than the extractor's
BeautifulSoup and is all link discovery needs).
"""

from __future__ import annotations

import functools
import io
import re
import secrets
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode, urljoin, urlsplit, urlunsplit

from kbindex.config import DEFAULT_CONCURRENCY, DEFAULT_MAX_PAGES, MAX_CRAWL_DELAY
from kbindex.errors import FetchError, SkipSource, SourceError, UsageError
from kbindex.fetch import TEXT_TYPES, Fetcher, host_key
from kbindex.records import Page, Visit

HTML_TYPES = ("text/html", "application/xhtml+xml")
# Media types read for a discovered link; the ones that are not HTML are sniffed.
PAGE_TYPES = HTML_TYPES + ("text/plain", "application/octet-stream")
XML_TYPES = (
    "application/xml", "text/xml", "application/rss+xml", "application/atom+xml",
    "application/rdf+xml", "application/gzip", "application/x-gzip", "application/octet-stream",
)
# Start URLs with these endings name a sitemap or a feed, never a site's start page.
LIST_SUFFIXES = (".xml", ".xml.gz", ".rss", ".atom", ".rdf")
# What a start URL may be: a page (HTML or a text format kbindex reads), a sitemap or a feed.
START_TYPES = TEXT_TYPES + XML_TYPES

# Links with these extensions are never HTML: skipped without a request (as Scrapy does).
IGNORED_EXTENSIONS = frozenset("""
7z apk avi bin bmp bz2 css csv deb dmg doc docx eot exe flac gif gz ico iso jar jpeg jpg js json
m4a m4v mkv mov mp3 mp4 mpeg mpg msi odp ods odt ogg otf pdf png ppt pptx ps rar rpm rss svg
svgz tar tgz tif tiff ttf txt wav webm webp wma wmv woff woff2 xls xlsx xz zip
""".split())

# Tracking and session parameters: they change the URL, never the page.
TRACKING_PARAM = re.compile(
    r"^(utm_\w+|fbclid|gclid|dclid|gbraid|wbraid|msclkid|yclid|igshid|mc_cid|mc_eid|_ga|_gl|"
    r"_hsenc|_hsmi|mkt_tok|ref_src|spm|jsessionid|phpsessid|aspsessionid\w*|sid|sessionid|"
    r"session_id|cfid|cftoken)$",
    re.IGNORECASE,
)
_PATH_SESSION = re.compile(r";(jsessionid|phpsessid|sid)=[^/?#]*", re.IGNORECASE)
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"

# Trap bounds. A crawl always ends (--max-pages bounds it in any case); these stop the known
# traps long before that, without cutting a real site short.
MAX_URL_LENGTH = 2048  # longer URLs are almost always generated (Scrapy's URLLENGTH_LIMIT: 2083)
MAX_SEGMENT_REPEATS = 3  # /a/b/a/b/a/...: a relative-link loop
MAX_QUERY_PARAMS = 12  # facet explosions
MAX_QUERY_VARIANTS = 1000  # distinct query strings on one path
TRAP_STREAK = 5  # chained listing pages of one URL pattern that found nothing new: an endless
#                  calendar or an archive paginated past its end
MAX_SITEMAPS = 200  # sitemap files read per crawl (an index may name many)
MAX_SITEMAP_NESTING = 3  # sitemap indexes naming sitemap indexes
# Entries taken from all the sitemaps of one crawl. --max-pages stops reading sitemaps much
# sooner (see Crawler._sitemap_room); this bounds a crawl without a page limit: about 300 bytes
# of frontier and seen-set per URL, so some 150 MB at most.
MAX_SITEMAP_ENTRIES = 500_000
# The version of `analyze` and of what a Visit records. Raise it whenever either changes: stored
# visits of another version are ignored, so every page is read again once.
ANALYSIS_VERSION = 1

LISTING_LINK_DENSITY = 0.5  # share of the main text's words inside links
THIN_WORDS = 50  # fewer words of non-link text: not an article on its own
# Real pages nest a few dozen elements deep; thousands is an attack or a broken generator, and the
# extractor's tree walk is recursive and slows down with depth: such pages are skipped.
MAX_NESTING = 250  # lxml itself stops nesting at 256 levels

CHROME = re.compile(
    r"(^|[-_\s])(nav|navbar|menu|sidebar|widget|footer|header|breadcrumbs?|comments?|related|"
    r"popular|share|social|cookie|banner|pagination|pager)($|[-_\s])",
    re.IGNORECASE,
)
_DROP = ("script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form")


# ---------------------------------------------------------------- URLs


@functools.lru_cache(maxsize=1 << 16)  # a site repeats its navigation links on every page
def canonicalize(url: str, base: str | None = None) -> str | None:
    """The canonical form of an http(s) URL, or None for other schemes and malformed URLs.

    Written by hand because none of the libraries at hand does all of it (courlan keeps
    fragments, dot segments and session ids; w3lib is not a dependency): lower-case scheme and
    host, no default port, no user info, dot segments resolved, percent-encoding normalized
    (unreserved characters decoded, hex upper-cased, unsafe characters encoded), query
    parameters sorted with tracking and session parameters removed, no fragment.
    """
    url = url.strip()
    try:
        if base is not None:
            url = urljoin(base, url)
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            return None
        host = parts.hostname.rstrip(".")
        port = parts.port
    except ValueError:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port and not (scheme == "http" and port == 80 or scheme == "https" and port == 443):
        host = f"{host}:{port}"
    path = _PATH_SESSION.sub("", parts.path)
    path = _normalize_escapes(_remove_dot_segments(path or "/"))
    path = quote(path, safe=_PATH_SAFE)
    query = ""
    if parts.query:
        pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                 if not TRACKING_PARAM.match(k)]
        query = urlencode(sorted(pairs))
    return urlunsplit((scheme, host, path, query, ""))


def _normalize_escapes(text: str) -> str:
    def fix(match: re.Match) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return _PERCENT.sub(fix, text)


def _remove_dot_segments(path: str) -> str:
    if "." not in path:
        return path
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments):
        if seg == "..":
            if len(out) > 1:
                out.pop()
            if i == len(segments) - 1:
                out.append("")
        elif seg == ".":
            if i == len(segments) - 1:
                out.append("")
        else:
            out.append(seg)
    result = "/".join(out)
    return result if result.startswith("/") else "/" + result


def url_pattern(url: str) -> str:
    """Host and path with digit runs folded: pages of one calendar or pagination share it."""
    parts = urlsplit(url)
    return parts.netloc + re.sub(r"\d+", "N", parts.path)


def trap_reason(url: str) -> str | None:
    """Why a URL looks generated by a crawler trap, or None."""
    if len(url) > MAX_URL_LENGTH:
        return f"URL longer than {MAX_URL_LENGTH} characters"
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if segments and Counter(segments).most_common(1)[0][1] > MAX_SEGMENT_REPEATS:
        return "a path segment repeats"
    if parts.query and parts.query.count("&") + 1 > MAX_QUERY_PARAMS:
        return f"more than {MAX_QUERY_PARAMS} query parameters"
    return None


# ---------------------------------------------------------------- scope


@dataclass(frozen=True)
class Scope:
    """Which URLs a crawl may fetch: same scheme and host, under a path prefix, filtered by
    --include/--exclude regular expressions (searched in the canonical URL)."""

    roots: tuple[tuple[str, str, str], ...]  # (scheme, netloc, path prefix)
    include: tuple[re.Pattern, ...] = ()
    exclude: tuple[re.Pattern, ...] = ()

    @classmethod
    def for_start(cls, url: str, mode: str = "path", include=(), exclude=()) -> Scope:
        return cls((), tuple(include), tuple(exclude)).widen(url, mode)

    def widen(self, url: str, mode: str = "path") -> Scope:
        """This scope plus the root of url (a start URL, or where it redirected)."""
        parts = urlsplit(url)
        if mode == "host":
            prefix = "/"
        elif parts.path.endswith("/"):
            prefix = parts.path
        else:
            head, _, last = parts.path.rpartition("/")
            # /docs is the docs folder; /docs/index.html is a page in it.
            prefix = parts.path + "/" if "." not in last else head + "/"
        root = (parts.scheme, parts.netloc, prefix)
        if root in self.roots:
            return self
        return Scope(self.roots + (root,), self.include, self.exclude)

    def in_roots(self, url: str) -> bool:
        parts = urlsplit(url)
        for scheme, netloc, prefix in self.roots:
            if parts.scheme == scheme and parts.netloc == netloc and (
                parts.path.startswith(prefix) or parts.path == prefix.rstrip("/")
            ):
                return True
        return False

    def contains(self, url: str) -> bool:
        if not self.in_roots(url):
            return False
        if self.include and not any(p.search(url) for p in self.include):
            return False
        return not any(p.search(url) for p in self.exclude)


def compile_patterns(patterns, option: str) -> tuple[re.Pattern, ...]:
    """Regular expressions from the command line; a bad one is a usage error."""
    out = []
    for pattern in patterns:
        try:
            out.append(re.compile(pattern))
        except re.error as exc:
            raise UsageError(f"{option} {pattern!r} is not a valid regular expression: {exc}") from exc
    return tuple(out)


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Analysis:
    """What the crawler needs from an HTML page."""

    links: tuple[str, ...] = ()  # absolute, as written (canonicalized by the scheduler)
    canonical: str | None = None
    noindex: bool = False
    nofollow: bool = False
    listing: bool = False  # mostly links to other pages: followed, not indexed
    thin: bool = False  # little text of its own
    nesting: int = 0  # deepest element nesting


def is_html(page: Page) -> bool:
    """By Content-Type, then by sniffing the first bytes when the type says nothing useful."""
    media = (page.content_type or "").split(";")[0].strip().lower()
    if media in HTML_TYPES:
        return True
    if media in ("", "text/plain", "application/octet-stream"):
        head = page.body[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
        return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--"))
    return False


def analyze(page: Page, base: str) -> Analysis:
    """Links, canonical URL, meta robots and the listing-page test of an HTML page."""
    import lxml.etree
    import lxml.html

    try:
        doc = lxml.html.document_fromstring(page.body)
    except (lxml.etree.ParserError, ValueError):
        return Analysis(thin=True)
    nesting = _nesting(doc)
    if nesting > MAX_NESTING:
        return Analysis(nesting=nesting)
    base_el = doc.find(".//base[@href]")
    if base_el is not None:
        base = urljoin(base, base_el.get("href", "").strip())
    links = []
    for el in doc.iter("a", "area"):
        href = (el.get("href") or "").strip()
        if href and not href.startswith("#"):
            links.append(urljoin(base, href) if "://" not in href[:12] else href)
    canonical = None
    noindex = nofollow = False
    for el in doc.iter("link", "meta"):
        if el.tag == "link":
            rel = (el.get("rel") or "").lower().split()
            if "canonical" in rel and el.get("href") and canonical is None:
                canonical = urljoin(base, el.get("href").strip())
        elif (el.get("name") or "").lower() in ("robots", "kbindex"):
            content = (el.get("content") or "").lower()
            noindex = noindex or "noindex" in content or "none" in content
            nofollow = nofollow or "nofollow" in content or "none" in content
    listing, thin = _listing(doc, base, {canonicalize(base), canonicalize(canonical or base)} - {None})
    return Analysis(tuple(links), canonical, noindex, nofollow, listing, thin, nesting)


def _nesting(doc) -> int:
    import lxml.etree

    depth = deepest = 0
    for event, _ in lxml.etree.iterwalk(doc, events=("start", "end")):
        depth += 1 if event == "start" else -1
        deepest = max(deepest, depth)
    return deepest


def _main(doc) -> tuple:
    """(main content element, its <article> elements), page chrome removed from doc in place."""
    for el in list(doc.iter(*_DROP)):
        if el.getparent() is not None:
            el.drop_tree()
    for el in list(doc.iter()):
        if not isinstance(el.tag, str) or el.getparent() is None:
            continue
        words = f"{el.get('class') or ''} {el.get('id') or ''}"
        if words.strip() and el.tag not in ("html", "body", "main", "article") and CHROME.search(words):
            el.drop_tree()
    articles = [a for a in doc.iter("article")]
    body = doc.find("body")
    root = body if body is not None else doc
    if len(articles) == 1:
        root = articles[0]
    elif not articles:
        main = doc.find(".//main")
        if main is None:
            found = doc.xpath(".//*[@role='main']")
            main = found[0] if found else None
        if main is not None:
            root = main
    return root, articles


def _listing(doc, base: str, own: set[str]) -> tuple[bool, bool]:
    """(is a listing page, is thin): computed on the main content, page chrome removed."""
    root, articles = _main(doc)
    text_words = len(root.text_content().split())
    anchors = list(root.iter("a"))
    link_words = sum(len(a.text_content().split()) for a in anchors)
    thin = text_words - link_words < THIN_WORDS
    if len(articles) >= 2:  # one <article> per post: a blog's home, archive or label page
        return True, thin
    host = urlsplit(base).netloc

    def title_link(heading) -> str | None:
        """The page a heading links to when the link is (nearly) the whole heading: a title."""
        words = len(heading.text_content().split())
        for a in heading.iter("a"):
            target = canonicalize(a.get("href") or "", base)
            if (target and target not in own and urlsplit(target).netloc == host
                    and len(a.text_content().split()) >= 0.6 * words):
                return target
        return None

    headings = list(root.iter("h1", "h2", "h3", "h4"))
    targets = {t for t in map(title_link, headings) if t}
    first_links_away = bool(headings) and title_link(headings[0]) is not None
    # Headings that link to other pages are the titles of the articles a listing shows; a page
    # whose own title links elsewhere is a teaser of that page (a one-post archive).
    if len(targets) >= 2 or first_links_away:
        return True, thin
    density = link_words / max(text_words, 1)
    dense = len(anchors) >= 5 and density >= LISTING_LINK_DENSITY
    # A near-empty page that is mostly navigation (an empty calendar month, a last archive page).
    empty_nav = thin and len(anchors) >= 2 and density >= 0.3
    return dense or empty_nav, thin


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
    """A sitemap <lastmod> (W3C datetime) as an aware UTC datetime; None if unreadable.

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


def read_feed(body: bytes, base: str) -> list[str] | None:
    """The linked pages of an RSS or Atom feed's entries; None if it is not a feed."""
    import feedparser

    # A stream, never bytes or str: feedparser treats a string as a URL or a file name to open.
    parsed = feedparser.parse(io.BytesIO(body), sanitize_html=False, resolve_relative_uris=False)
    if not parsed.get("version") and not parsed.entries:
        return None
    links = []
    for entry in parsed.entries:
        href = entry.get("link")
        if not href:
            href = next((x.get("href") for x in entry.get("links", []) if x.get("href")), None)
        if href:
            links.append(urljoin(base, href.strip()))
    return links


def gunzip(body: bytes, max_bytes: int) -> bytes:
    """Decompress a gzip body (a .xml.gz sitemap), stopping at max_bytes."""
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


# ---------------------------------------------------------------- soft 404s

# A soft 404 is a "not found" page sent with HTTP 200. Such a page is short: the longest found in
# the wild (a message, a search box, a few suggestions) stays well under this in main-text words.
SOFT_404_MAX_WORDS = 120
# Shorter pages may be the site's generic answer to unknown URLs, which says nothing about a
# missing page (a search box, "try these links"): those are compared with a probe of the host.
SOFT_404_PROBE_WORDS = 50
SOFT_404_SIMILARITY = 0.8  # Jaccard similarity of word sets with the host's probe answer
# What a "not found" page says, in its title or first heading (as the whole of it, or of one part
# of a "Page not found | Site" title) ...
_NOT_FOUND_TITLE = re.compile(
    r"^(?=.*(?:404|found|exist|missing|gone|available))"
    r"\W*(?:(?:oops|sorry|error)\W+)*(?:(?:error\W*)?404\b\W*(?:error\W*)?)?"
    r"(?:(?:the\s+|this\s+|that\s+)?(?:page|article|document|content|file|url|resource)\s+)?"
    r"(?:(?:was\s+|could\s+|can\s*)?not(?:\s+be)?\s+found|can[’']?t\s+be\s+found|(?:does\s+not|doesn'?t|doesn’t|no\s+longer)"
    r"\s+exists?|is\s+(?:missing|gone)|not\s+available|unavailable)?\W*$"
    r"|^\W*(?:page\s+)?(?:introuvable|non\s+trouvée|nicht\s+gefunden|no\s+encontrada|"
    r"non\s+trovata|niet\s+gevonden|не\s+найдена)\W*$|^\W*seite\s+nicht\s+gefunden\W*$",
    re.IGNORECASE,
)
# ... or in the opening of its main text.
_NOT_FOUND_TEXT = re.compile(
    r"\b(?:page|article|document|content|resource|url)\s+(?:you\s+(?:are|were|'re|’re)\s+looking\s+for|"
    r"you\s+requested|requested)\s+(?:(?:does|could|can|was|is|has)\s*(?:not|n'?t|n’t)|cannot|"
    r"no\s+longer|may\s+have\s+been)"
    r"|\b(?:can\s*not|can'?t|can’t|could\s*not|couldn'?t|couldn’t|unable\s+to)\s+(?:find|locate)\s+"
    r"(?:the|that|this|your|any)\s+(?:page|article|document|content)"
    r"|\b(?:page|article|document)\s+(?:(?:was\s+|could\s+|can\s*)?not(?:\s+be)?|can[’']?t\s+be)\s+found"
    r"|\b(?:this|the)\s+(?:page|article|document)\s+(?:does\s+not|doesn'?t|doesn’t|no\s+longer)\s+exists?"
    r"|\b404\W+(?:page\s+)?not\s+found"
    r"|\bseite\s+(?:wurde\s+)?nicht\s+gefunden|\bpage\s+introuvable|\bpágina\s+no\s+encontrada",
    re.IGNORECASE,
)
_TITLE_PARTS = re.compile(r"\s+[|–—:·-]\s+|\s*[|–—·]\s*")
SOFT_404_OPENING = 200  # characters of main text where a "not found" message is looked for
_WORD = re.compile(r"\w+")


def main_text(body: bytes) -> tuple[str, str, str]:
    """(title, first heading, main text) of an HTML page, page chrome removed (as for the
    listing test)."""
    import lxml.etree
    import lxml.html

    try:
        doc = lxml.html.document_fromstring(body)
    except (lxml.etree.ParserError, ValueError):
        return "", "", ""
    title = " ".join((doc.findtext(".//title") or "").split())
    root, _ = _main(doc)
    heading = next((" ".join(h.text_content().split()) for h in root.iter("h1", "h2")), "")
    return title, heading, " ".join(root.text_content().split())


def says_not_found(title: str, heading: str, text: str) -> bool:
    """Whether a page's title or first heading is a "not found" message, or its main text opens
    with one (see _soft_404: only short pages are asked)."""
    parts = [p for p in _TITLE_PARTS.split(title) if p.strip()] + [heading]
    if any(p.strip() and _NOT_FOUND_TITLE.match(p.strip()) and _WORD.search(p) for p in parts):
        return True
    return bool(_NOT_FOUND_TEXT.search(text[:SOFT_404_OPENING]))


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _url_words(url: str) -> frozenset[str]:
    """Words of a URL's path: a "not found" page may repeat the address it was asked for."""
    return frozenset(_words(unquote(urlsplit(url).path)))


# ---------------------------------------------------------------- the crawl


@dataclass(frozen=True)
class CrawlOptions:
    """How far and how fast one crawl goes. Limits apply per source."""

    scope: str = "path"  # "path": under the start URL's folder; "host": the whole host
    include: tuple[str, ...] = ()  # regular expressions; a URL must match one of them
    exclude: tuple[str, ...] = ()  # regular expressions; a URL matching any is not fetched
    depth: int | None = None  # links followed from the start page; None: no limit
    max_pages: int | None = DEFAULT_MAX_PAGES  # page requests per source
    max_time: float | None = None  # seconds per source
    robots: bool = True  # obey robots.txt (and meta robots)
    concurrency: int = DEFAULT_CONCURRENCY
    allow_private: bool = False  # allow non-public addresses even when the start host is public
    trust_lastmod: bool = False  # a sitemap lastmod not newer than the stored visit: not requested
    on_progress: Callable[[CrawlResult], None] | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.scope not in ("path", "host"):
            raise UsageError(f"--scope must be path or host, not {self.scope!r}")
        for name, value in (("--depth", self.depth), ("--max-pages", self.max_pages)):
            if value is not None and value < 0:
                raise UsageError(f"{name} must be 0 or more")
        if self.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        compile_patterns(self.include, "--include")
        compile_patterns(self.exclude, "--exclude")


@dataclass
class CrawlResult:
    """What one crawl did, filled in while it runs (progress displays read it live).

    `complete` is True once the crawl ran out of pages to fetch on its own: nothing was cut
    short by --max-pages or --max-time, robots.txt could be read, every sitemap it was given
    could be read, and no page failed with a transient error (timeout, connection, 5xx, 429).
    Only then does the set of pages it yielded stand for the whole site, so only then may pages
    missing from it be pruned from an index. `stopped` says why it is not complete
    ("max_pages", "max_time", "errors", "sitemap_failed", "sitemap_limit",
    "robots_unavailable", "start_failed"); None while running and when complete.
    """

    start: str
    kind: str = "site"  # "site" (crawled), "sitemap", "feed" or "page" (a non-HTML start)
    discovered: int = 0  # distinct canonical URLs seen (links, sitemap and feed entries)
    fetched: int = 0  # pages received (HTTP 2xx or 304), robots.txt, sitemaps and feeds not counted
    not_modified: int = 0  # pages known unchanged without a download: answers 304 (also counted in
    #                        fetched) and, with trust_lastmod, pages not requested at all
    queued: int = 0  # in the frontier or being fetched
    errors: int = 0  # pages, sitemaps and feeds that failed
    skipped: Counter = field(default_factory=Counter)  # URLs never requested, by reason
    start_names: set[str] = field(default_factory=set)  # the start page under every name
    complete: bool | None = None
    stopped: str | None = None

    def as_dict(self) -> dict:
        return {
            "source": self.start, "kind": self.kind, "discovered": self.discovered,
            "fetched": self.fetched, "not_modified": self.not_modified, "errors": self.errors,
            "skipped": dict(self.skipped),
            "complete": bool(self.complete), "stopped": self.stopped,
        }


@dataclass
class _Item:
    url: str
    depth: int
    streak: int = 0  # chained barren listing pages of this URL's pattern before it
    follow: bool = True  # follow its links (not for sitemap and feed entries)
    visit: Visit | None = None  # what the last run learned from it, when it is fetched conditionally
    unrequested: bool = False  # known unchanged from the sitemap's lastmod: handled without a request


_DISALLOW_ALL = object()  # robots.txt answered 5xx or not at all: RFC 9309 says assume disallow


class CrawlMemory(Protocol):
    """What the crawler keeps between runs (the index keeps it in its ledger).

    Called from the crawl's own thread only, never from the fetch workers.
    """

    def recall(self, url: str) -> Visit | None:
        """The visit recorded for a requested URL, when its validators may be used."""

    def remember(self, visit: Visit) -> None:
        """Record what this run learned from a page (called for every HTML page handled)."""


class _Forgetful:
    def recall(self, url: str) -> Visit | None:
        return None

    def remember(self, visit: Visit) -> None:
        pass


def _analysis(visit: Visit) -> Analysis:
    return Analysis(visit.links, visit.canonical, visit.noindex, visit.nofollow, visit.listing,
                    visit.thin)


def _visit(url: str, final: str, name: str, outcome: str, page: Page, analysis: Analysis) -> Visit:
    return Visit(url, final, name, outcome, page.etag, page.last_modified,
                 tuple(dict.fromkeys(analysis.links)), analysis.canonical, analysis.noindex,
                 analysis.nofollow, analysis.listing, analysis.thin, ANALYSIS_VERSION)


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

    Pages are yielded with `source` set to their canonical URL (after redirects and an in-scope
    `<link rel="canonical">`), so a page reached by two URLs comes out once. Listing pages,
    noindex pages and duplicates come out as SkipSource so that they are counted and reported;
    URLs never requested (out of scope, robots.txt, depth, traps) are only counted, in
    `result.skipped`.

    With a `memory` (CrawlMemory), what each HTML page was and linked to is remembered; on the
    next crawl such a page is fetched conditionally, and a 304 is handled exactly like the page it
    stands for, from what was remembered: its links followed, an article yielded as a Page with
    status 304 and no body, a listing page followed and skipped.
    """

    def __init__(self, fetcher: Fetcher, options: CrawlOptions | None = None, user_agent_token: str = "kbindex",
                 validators: Callable[[str], tuple[str | None, str | None]] | None = None,
                 memory: CrawlMemory | None = None):
        self.fetcher = fetcher
        # ETag / Last-Modified from the last run, for conditional GETs of pages whose links are
        # not needed (sitemap and feed entries, a start page with depth 0).
        self.validators = validators or (lambda url: (None, None))
        # Pages whose links are needed (a site's pages) are fetched conditionally only when the
        # last run's Visit is known: a 304 has no body, so its stored links are followed instead.
        self.memory: CrawlMemory = memory or _Forgetful()
        self.options = options or CrawlOptions()
        self.token = user_agent_token
        self._include = compile_patterns(self.options.include, "--include")
        self._exclude = compile_patterns(self.options.exclude, "--exclude")

    # -------------------------------------------------------- robots.txt

    def _robots(self, url: str, result: CrawlResult, allow_private: bool):
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        if key in self._robots_cache:
            return self._robots_cache[key]
        from protego import Protego

        robots_url = f"{parts.scheme}://{parts.netloc}/robots.txt"
        rules = None
        try:
            page = self.fetcher.fetch(robots_url, accept=(), allow_private=allow_private)
            rules = Protego.parse(page.body.decode("utf-8", "replace"))
            delay = rules.crawl_delay(self.token)
            if delay:
                self.fetcher.throttle.set_delay(host_key(url), min(float(delay), MAX_CRAWL_DELAY))
        except FetchError as exc:
            # 4xx: there are no rules, everything is allowed. 5xx, timeouts, refused
            # connections: the site cannot say, so nothing is fetched (RFC 9309, 2.3.1).
            if exc.status is None or exc.status >= 500 or exc.status == 429:
                rules = _DISALLOW_ALL
                result.stopped = "robots_unavailable"
                self._robots_error = exc
        except SkipSource:
            rules = None  # a robots.txt too large or of a strange type: no usable rules
        self._robots_cache[key] = rules
        return rules

    def _allowed(self, url: str, result: CrawlResult, allow_private: bool) -> bool:
        if not self.options.robots:
            return True
        rules = self._robots(url, result, allow_private)
        if rules is None:
            return True
        if rules is _DISALLOW_ALL:
            return False
        return rules.can_fetch(url, self.token)

    # -------------------------------------------------------- the scheduler

    def crawl(self, start: str, result: CrawlResult | None = None) -> Iterator[Page | SourceError]:
        """Pages of the site (or sitemap, or feed) at `start`, in breadth-first order."""
        result = result if result is not None else CrawlResult(start)
        options = self.options
        self._robots_cache: dict = {}
        self._seen: set[str] = set()
        self._done: set[str] = set()  # canonical URLs of pages already handled
        self._query_variants: Counter = Counter()
        self._frontier: deque[_Item] = deque()
        self._sitemaps_read = 0
        self._sitemap_entries = 0  # entries read from all sitemaps (MAX_SITEMAP_ENTRIES)
        self._free = 0  # frontier entries that --trust-lastmod may settle without a request
        self._cut: str | None = None  # why sitemaps were not all read: "max_pages", "sitemap_limit"
        self._sitemap_failed = False  # a sitemap could not be read: its pages are unknown
        self._reports: list[SourceError] = []  # sitemap problems, yielded by the generator
        self._probes: dict[str, frozenset[str] | None] = {}  # host -> its soft-404 words
        self._lastmods: dict[str, datetime] = {}  # canonical URL -> sitemap lastmod (--trust-lastmod)
        self._transient = False
        started = time.monotonic()
        deadline = started + options.max_time if options.max_time else None
        allow_private = options.allow_private or self.fetcher.is_private_host(start)
        canonical_start = canonicalize(start) or start
        result.start_names.update({start, canonical_start})
        self._seen.add(canonical_start)
        result.discovered += 1
        self.scope = Scope.for_start(canonical_start, options.scope, self._include, self._exclude)

        self._robots_error: FetchError | None = None
        if not self._allowed(canonical_start, result, allow_private):
            result.complete, result.stopped = False, result.stopped or "robots"
            error = self._robots_error
            if error is not None:
                result.errors += 1
                yield FetchError(start, f"robots.txt could not be read, so nothing is fetched: {error.reason}",
                                 kind=error.kind, status=error.status)
            else:
                yield SkipSource(start, "disallowed by robots.txt", kind="robots")
            return
        # A site's start page is fetched conditionally when the last run read it as a site's page
        # (its links are then known); a start URL crawled with --depth 0 needs no links.
        visit = self._recall(_Item(canonical_start, 0)) if options.depth != 0 else None
        if visit is not None:
            etag, modified = visit.etag, visit.last_modified
        else:
            etag, modified = self.validators(canonical_start) if options.depth == 0 else (None, None)
        try:
            page = self.fetcher.fetch(start, accept=START_TYPES, allow_private=allow_private,
                                      etag=etag, last_modified=modified)
        except SourceError as exc:
            result.complete, result.stopped = False, "start_failed"
            result.errors += isinstance(exc, FetchError)
            yield exc
            return
        if page.status == 304 and visit is None:  # unchanged since the last run: nothing to follow
            result.kind, result.complete = "page", True
            result.fetched += 1
            result.not_modified += 1
            yield replace(page, source=canonical_start)
            return
        final = canonicalize(page.url or start) or canonical_start
        result.start_names.add(final)
        if final != canonical_start and not self.scope.in_roots(final):
            # The start URL redirected (http -> https, / -> /en/): crawl where it led.
            self.scope = self.scope.widen(final, options.scope)
        if page.status == 304:  # a site's start page, unchanged: followed by its stored links
            result.kind = "site"
            yield from self._site(_Item(canonical_start, 0, visit=visit), page, None, result, allow_private)
        else:
            yield from self._start(page, start, final, result, allow_private)

        pool = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="kbindex-fetch")
        # Results are handled in the order requests were made (breadth-first, deterministic: the
        # same site gives the same pages in the same order, so "first of two duplicates" is
        # stable); a window of queued requests keeps the workers busy behind a slow page.
        inflight: deque[tuple[Future, _Item]] = deque()
        window = options.concurrency * 4
        requested = result.fetched  # the start page counts against --max-pages
        try:
            while self._frontier or inflight:
                if deadline is not None and time.monotonic() >= deadline:
                    result.stopped = "max_time"
                    break
                while self._frontier and len(inflight) < window:
                    if options.max_pages is not None and requested >= options.max_pages:
                        break
                    item = self._frontier.popleft()
                    item.visit = self._recall(item)
                    if self._unchanged_by_lastmod(item):
                        item.unrequested = True  # handled as a 304 that was never asked for
                        future: Future = Future()
                        future.set_result((Page(item.url, b"", url=item.visit.final, status=304,
                                                etag=item.visit.etag,
                                                last_modified=item.visit.last_modified), None))
                        inflight.append((future, item))
                        continue
                    inflight.append((pool.submit(self._fetch, item.url, allow_private, not item.follow,
                                                 item.visit), item))
                    requested += 1
                result.queued = len(self._frontier) + len(inflight)
                if not inflight:
                    result.stopped = "max_pages"
                    break
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                future, item = inflight[0]
                if not wait([future], timeout=timeout).done:
                    continue  # the deadline passed: stopped at the top of the loop
                inflight.popleft()
                yield from self._handle(item, future, result, allow_private)
                if options.on_progress:
                    options.on_progress(result)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        result.queued = 0
        if result.stopped is None and self._transient:
            result.stopped = "errors"
        if result.stopped is None and self._sitemap_failed:
            result.stopped = "sitemap_failed"
        if result.stopped is None and self._cut:
            result.stopped = self._cut
        result.complete = result.stopped is None
        if result.stopped and self._frontier:
            result.skipped["not_fetched"] += len(self._frontier)

    def _start(self, page: Page, start: str, final: str, result: CrawlResult, allow_private: bool):
        """The start URL decides what the source is: a site, a sitemap, a feed or one page."""
        try:
            body = gunzip(page.body, self.fetcher.max_bytes)
        except SkipSource as exc:
            result.stopped = "start_failed"  # what it lists is unknown: nothing is pruned
            yield SkipSource(start, exc.reason, kind=exc.kind)
            return
        xml = sniff_xml(body) if not is_html(page) else None
        if xml == "sitemap":
            result.kind = "sitemap"
            self.scope = self.scope.widen(final, "host")
            self._read_sitemap_body(body, final, result, allow_private)
            yield from self._drain_reports()
            return
        if xml == "feed":
            entries = read_feed(body, final)
            if entries is not None:
                result.kind = "feed"
                self.scope = self.scope.widen(final, "host")
                parent = _Item(final, -1, follow=False)  # entries are depth 0: --depth does not apply
                for link in entries:
                    self._enqueue(link, None, parent, barren=False, result=result,
                                  allow_private=allow_private, follow=False)
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
            self._done.add(final)
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
        analysis = analyze(page, page.url or start)
        if analysis.nesting > MAX_NESTING:
            yield SkipSource(start, f"markup nested more than {MAX_NESTING} elements deep", kind="too_deep")
            return
        yield from self._site(_Item(canonicalize(start) or start, 0), page, analysis, result, allow_private)

    def _site(self, item: _Item, page: Page, analysis: Analysis | None, result: CrawlResult,
              allow_private: bool):
        """A site's start page (read, or a 304 to follow by its stored links), then its sitemaps."""
        future: Future = Future()
        future.set_result((page, analysis))
        yield from self._handle(item, future, result, allow_private)
        final = canonicalize(page.url or item.url) or item.url
        if self.options.robots:
            rules = self._robots(final, result, allow_private)
            if rules is not None and rules is not _DISALLOW_ALL:
                for sitemap in rules.sitemaps:
                    if not self._sitemap_room(result):
                        break
                    self._read_sitemap(sitemap, result, allow_private)
        yield from self._drain_reports()

    # -------------------------------------------------------- sitemaps

    def _read_sitemap(self, url: str, result: CrawlResult, allow_private: bool, level: int = 0) -> None:
        if self._sitemaps_read >= MAX_SITEMAPS or level > MAX_SITEMAP_NESTING:
            self._cut = self._cut or "sitemap_limit"  # pages it lists are unknown: not complete
            return
        self._sitemaps_read += 1
        try:
            page = self.fetcher.fetch(url, accept=(), allow_private=allow_private)
        except SourceError as exc:
            self._sitemap_problem(url, exc, result)
            return
        self._read_sitemap_body(page.body, url, result, allow_private, level)

    def _read_sitemap_body(self, body: bytes, url: str, result: CrawlResult, allow_private: bool,
                           level: int = 0) -> None:
        """Enqueue a sitemap's entries, then read the sitemaps it names, while the page budget
        lasts (a sitemap is streamed: reading stops as soon as the budget is spent)."""
        # Entries are the site's own list of its pages: depth 1, links followed as usual when
        # the source is a site, not followed when the source is the sitemap itself.
        follow = result.kind == "site"
        parent = _Item(url, 0 if follow else -1, follow=follow)
        children: list[str] = []
        host = urlsplit(url).netloc
        try:
            for kind, link, lastmod in iter_sitemap(body, self.fetcher.max_bytes):
                if not self._sitemap_room(result):
                    return
                self._sitemap_entries += 1
                if kind == "sitemap":
                    child_url = canonicalize(link, url)
                    if child_url and urlsplit(child_url).netloc == host and len(children) <= MAX_SITEMAPS:
                        children.append(child_url)
                    continue
                free = False
                if self.options.trust_lastmod and (when := parse_lastmod(lastmod)) is not None:
                    canonical = canonicalize(link, url)
                    if canonical:
                        self._lastmods[canonical] = when
                        free = True
                queued = len(self._frontier)
                self._enqueue(link, None, parent, barren=False, result=result,
                              allow_private=allow_private, follow=follow)
                self._free += free and len(self._frontier) > queued
        except SkipSource as exc:
            self._sitemap_problem(url, exc, result)
            return
        for child_url in children:
            if not self._sitemap_room(result):
                return
            self._read_sitemap(child_url, result, allow_private, level + 1)

    def _sitemap_room(self, result: CrawlResult) -> bool:
        """Whether reading sitemaps may go on: the page budget (--max-pages, less the pages
        already fetched) is not yet spent on queued pages, and MAX_SITEMAP_ENTRIES not reached.

        Stops one entry past the budget, so that the crawl sees it was cut short.
        """
        if self._sitemap_entries >= MAX_SITEMAP_ENTRIES:
            self._cut = self._cut or "sitemap_limit"
            return False
        budget = self.options.max_pages
        if budget is not None and len(self._frontier) - self._free > budget - result.fetched:
            self._cut = self._cut or "max_pages"
            return False
        return True

    def _sitemap_problem(self, url: str, exc: SourceError, result: CrawlResult) -> None:
        """A sitemap that could not be read. Its pages are unknown, so the crawl is not complete
        and nothing is pruned for want of them; reported as a failure. Only a sitemap that
        answers 404 or 410 is gone, like a page: reported as a skip, the crawl goes on."""
        status = getattr(exc, "status", None)
        if status in (404, 410):
            self._reports.append(SkipSource(url, f"sitemap gone ({exc.reason})", kind="sitemap_gone"))
            return
        result.errors += 1
        self._sitemap_failed = True
        self._reports.append(FetchError(
            url, f"sitemap could not be read ({exc.reason}); the crawl is incomplete, so nothing "
            "is pruned", kind=exc.kind, status=status))

    def _drain_reports(self) -> Iterator[SourceError]:
        while self._reports:
            yield self._reports.pop(0)

    def _recall(self, item: _Item) -> Visit | None:
        """The last run's visit of a page, if its validators can be used."""
        visit = self.memory.recall(item.url)
        if visit is None or visit.parser != ANALYSIS_VERSION or not (visit.etag or visit.last_modified):
            return None
        return visit

    def _unchanged_by_lastmod(self, item: _Item) -> bool:
        """--trust-lastmod: the sitemap says the page changed no later than the stored visit was
        made (a sitemap that lies about lastmod hides changes: hence an option)."""
        if not self.options.trust_lastmod or item.visit is None:
            return False
        lastmod = self._lastmods.get(item.url)
        seen = parse_lastmod(item.visit.seen)
        return lastmod is not None and seen is not None and lastmod <= seen

    def _fetch(self, url: str, allow_private: bool, conditional: bool = False,
               visit: Visit | None = None) -> tuple[Page, Analysis | None]:
        """Runs in a worker thread: download and parse.

        Conditional with the visit's validators when there is one (a page whose links are
        followed), else with `validators` when `conditional` (a sitemap or feed entry).
        """
        if visit is not None:
            etag, modified = visit.etag, visit.last_modified
        else:
            etag, modified = self.validators(url) if conditional else (None, None)
        page = self.fetcher.fetch(url, accept=PAGE_TYPES, allow_private=allow_private,
                                  etag=etag, last_modified=modified)
        if page.status == 304:
            return page, None
        if not is_html(page):
            media = (page.content_type or "").split(";")[0].strip().lower() or "none"
            raise SkipSource(url, f"not an HTML page (Content-Type {media})", kind="not_html")
        analysis = analyze(page, page.url or url)
        if analysis.nesting > MAX_NESTING:
            raise SkipSource(url, f"markup nested more than {MAX_NESTING} elements deep", kind="too_deep")
        return page, analysis

    def _settle(self, fetch: Callable[[], tuple[Page, Analysis]], result: CrawlResult):
        """(page, analysis) from a fetch, or the error that replaced them (a failure counted)."""
        try:
            return fetch()
        except SkipSource as exc:
            return exc
        except FetchError as exc:
            result.errors += 1
            self._transient = self._transient or exc.transient
            return exc

    def _handle(self, item: _Item, future: Future, result: CrawlResult, allow_private: bool):
        outcome = self._settle(future.result, result)
        if isinstance(outcome, SourceError):
            yield outcome
            return
        page, analysis = outcome
        result.fetched += not item.unrequested
        visit = item.visit
        if page.status == 304:
            result.not_modified += 1
            if visit is None:  # a sitemap or feed entry unchanged since the last run
                self._done.add(item.url)
                yield replace(page, source=item.url)
                return
            if (canonicalize(page.url or item.url) or item.url) != visit.final:
                # It redirects somewhere else now: what was stored is about another page.
                yield from self._handle(_Item(item.url, item.depth, item.streak, item.follow),
                                        self._fetch_now(item.url, allow_private), result, allow_private)
                return
            # Unchanged: followed exactly as if it had been read, by what the last run stored.
            analysis = _analysis(visit)
            page = replace(page, etag=page.etag or visit.etag,
                           last_modified=page.last_modified or visit.last_modified)
        final = canonicalize(page.url or item.url) or item.url

        def remember(outcome: str, name: str) -> None:
            self.memory.remember(_visit(item.url, final, name, outcome, page, analysis))

        if final != item.url:
            if final in self._done:
                remember("duplicate", final)
                yield SkipSource(item.url, f"redirects to {final}, already seen", kind="duplicate")
                return
            if not self.scope.contains(final) and item.depth > 0:
                remember("out_of_scope", final)
                yield SkipSource(item.url, f"redirects out of scope to {final}", kind="out_of_scope")
                return
            self._seen.add(final)
        self._done.add(final)
        name = final
        if analysis.canonical:
            canonical = canonicalize(analysis.canonical)
            if canonical and canonical != final and self.scope.contains(canonical):
                if canonical in self._done:
                    remember("duplicate", canonical)
                    yield SkipSource(final, f"same page as {canonical} (rel=canonical)", kind="duplicate")
                    self._follow(item, final, analysis, result, allow_private)
                    return
                self._seen.add(canonical)
                self._done.add(canonical)
                name = canonical
        if item.depth == 0:
            result.start_names.update({final, name})
        self._follow(item, final, analysis, result, allow_private)
        if analysis.noindex and self.options.robots:
            remember("noindex", name)
            yield SkipSource(name, "meta robots noindex", kind="noindex")
        elif analysis.listing:
            remember("listing", name)
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
            outcome = self._settle(lambda: self._fetch(item.url, allow_private), result)
            if isinstance(outcome, SourceError):
                yield outcome
                return
            page, analysis = outcome
            if page.status == 304:  # a 304 to an unconditional request is the index's error
                yield _article(name, page)
            else:
                yield self._article(name, page, remember, result, allow_private)
        else:
            yield self._article(name, page, remember, result, allow_private)

    def _article(self, name: str, page: Page, remember: Callable[[str, str], None],
                 result: CrawlResult, allow_private: bool) -> Page | SkipSource:
        """The page handed on to be indexed, or a soft 404 in its place."""
        if page.status != 304:
            reason = self._soft_404(page, result, allow_private)
            if reason:
                remember("soft_404", name)
                return SkipSource(name, f"soft 404: {reason}", kind="soft_404")
        remember("page", name)
        return _article(name, page)

    # -------------------------------------------------------- soft 404s

    def _soft_404(self, page: Page, result: CrawlResult, allow_private: bool) -> str | None:
        """Why a 200 page is a "not found" page in disguise (a soft 404), or None.

        Only short pages can be (SOFT_404_MAX_WORDS of main text): one whose title, first
        heading or opening says the page does not exist, or, shorter than SOFT_404_PROBE_WORDS,
        whose text is the text the site returns for a URL that cannot exist (probed once per
        host and crawl, when such a page first needs it; the probe asks for a random name in the
        page's folder).
        """
        title, heading, text = main_text(page.body)
        words = _words(text)
        if len(words) > SOFT_404_MAX_WORDS:
            return None
        if says_not_found(title, heading, text):
            return "the page says it does not exist"
        if len(words) >= SOFT_404_PROBE_WORDS:
            return None
        url = page.url or page.source
        probe = self._probe(url, result, allow_private)
        if probe is None:
            return None
        final, probe_words = probe
        if canonicalize(url) == final:
            return None  # the page the site sends unknown URLs to is itself no soft 404
        mine = set(words) - _url_words(url)
        if mine and len(mine & probe_words) / len(mine | probe_words) >= SOFT_404_SIMILARITY:
            return "the same text as the site's answer to a URL that does not exist"
        return None

    def _probe(self, url: str, result: CrawlResult, allow_private: bool) -> tuple[str, frozenset[str]] | None:
        """(final URL, main-text words) of the host's answer to a random URL beside `url` when
        that is a 200 HTML page; None when the host answers such URLs with an error."""
        host = host_key(url)
        if host in self._probes:
            return self._probes[host]
        self._probes[host] = None
        probe_url = urljoin(url, f"kbindex-probe-{secrets.token_hex(8)}")
        if not self._allowed(probe_url, result, allow_private):
            return None
        try:
            page = self.fetcher.fetch(probe_url, accept=PAGE_TYPES, allow_private=allow_private)
        except SourceError:
            return None  # a real 404 (or no answer): nothing to compare with
        if page.status != 200 or not is_html(page):
            return None
        _, _, text = main_text(page.body)
        found = (canonicalize(page.url or probe_url) or probe_url,
                 frozenset(_words(text)) - _url_words(probe_url))
        self._probes[host] = found
        return found

    def _fetch_now(self, url: str, allow_private: bool) -> Future:
        """An unconditional fetch in this thread, as a finished future for _handle."""
        future: Future = Future()
        try:
            future.set_result(self._fetch(url, allow_private))
        except SourceError as exc:
            future.set_exception(exc)
        return future

    def _follow(self, item: _Item, final: str, analysis: Analysis, result: CrawlResult,
                allow_private: bool) -> None:
        if not item.follow or (analysis.nofollow and self.options.robots):
            return
        pattern = url_pattern(final)
        links = []
        new_elsewhere = False
        for link in analysis.links:
            url = canonicalize(link)
            if url is None:
                continue
            links.append(url)
            if url not in self._seen and url_pattern(url) != pattern and self.scope.contains(url):
                new_elsewhere = True
        barren = (analysis.listing or analysis.thin) and not new_elsewhere
        for url in links:
            self._enqueue(url, pattern, item, barren, result, allow_private, follow=True)

    def _enqueue(self, url: str, parent_pattern: str | None, parent: _Item, barren: bool,
                 result: CrawlResult, allow_private: bool, follow: bool) -> None:
        url = canonicalize(url)
        if url is None or url in self._seen:
            return
        self._seen.add(url)
        result.discovered += 1
        reason = self._refuse(url, parent, parent_pattern, barren, result, allow_private)
        if reason:
            result.skipped[reason] += 1
            return
        streak = parent.streak + 1 if barren and url_pattern(url) == parent_pattern else 0
        self._frontier.append(_Item(url, parent.depth + 1, streak, follow))

    def _refuse(self, url, parent, parent_pattern, barren, result, allow_private) -> str | None:
        if not self.scope.contains(url):
            return "out_of_scope"
        path = urlsplit(url).path
        if path.rsplit(".", 1)[-1].lower() in IGNORED_EXTENSIONS and "." in path.rsplit("/", 1)[-1]:
            return "not_html"
        if self.options.depth is not None and parent.depth + 1 > self.options.depth:
            return "depth"
        if trap_reason(url):
            return "trap"
        if urlsplit(url).query:
            key = url.split("?", 1)[0]
            self._query_variants[key] += 1
            if self._query_variants[key] > MAX_QUERY_VARIANTS:
                return "trap"
        if barren and parent.streak + 1 > TRAP_STREAK and url_pattern(url) == parent_pattern:
            return "trap"
        if not self._allowed(url, result, allow_private):
            return "robots"
        return None

