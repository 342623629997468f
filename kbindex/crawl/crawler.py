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

import copy
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
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit, urlunsplit

from kbindex.config import DEFAULT_CONCURRENCY, DEFAULT_MAX_PAGES, MAX_CRAWL_DELAY
from kbindex.errors import FetchError, SkipSource, SourceError, UsageError
from kbindex.fetch import TEXT_TYPES, Fetcher, host_key
from kbindex.records import Page, Visit, text_hash

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

# Parameters that never choose the page: left out of a page's name and identity, never out of the
# request. Tracking parameters, and the session parameters of platforms that name them so (Java,
# PHP, ASP, ColdFusion). Ambiguous names (`sid`, `id`, `s`, `token`) are kept: `sid` is an article
# number on PHP-Nuke sites; session tokens under other names are found by their pages' text
# (`TokenWatch`).
IGNORED_PARAM = re.compile(
    r"^(utm_\w+|fbclid|gclid|dclid|gbraid|wbraid|msclkid|yclid|igshid|mc_cid|mc_eid|_ga|_gl|"
    r"_hsenc|_hsmi|mkt_tok|ref_src|jsessionid|phpsessid|aspsessionid\w*|cfid|cftoken)$",
    re.IGNORECASE,
)
_PATH_SESSION = re.compile(r";(jsessionid|phpsessid)=[^/?#;]*", re.IGNORECASE)
_TOKEN_SEGMENT = re.compile(r"\d|[a-z][A-Z]")
_BAD_HOST = re.compile(r"[\x00-\x20\x7f]")

# Trap bounds. A crawl always ends (--max-pages bounds it in any case); these stop the known
# traps long before that, without cutting a real site short.
MAX_URL_LENGTH = 2048  # longer URLs are almost always generated (Scrapy's URLLENGTH_LIMIT: 2083)
MAX_SEGMENT_REPEATS = 3  # /a/b/a/b/a/...: a relative-link loop
MAX_QUERY_PARAMS = 12  # facet explosions
MAX_QUERY_VARIANTS = 1000  # distinct query strings on one path
TRAP_STREAK = 5  # chained listing pages of one URL pattern that found nothing new: an endless
#                  calendar or an archive paginated past its end
# Pages of one URL pattern (one part wildcarded) with the same text that make that part a session
# token: two can be a page and its print version, three are a generator.
TOKEN_VARIANTS = 3
MAX_TEXTS_PER_PATTERN = 8  # distinct texts kept per pattern: past two, the part is not volatile
MAX_PREFETCHED = 32  # canonical targets fetched ahead of their turn to check a rel=canonical
MAX_SITEMAPS = 200  # sitemap files read per crawl (an index may name many)
MAX_SITEMAP_NESTING = 3  # sitemap indexes naming sitemap indexes
# Entries taken from all the sitemaps of one crawl. --max-pages stops reading sitemaps much
# sooner (see Crawler._sitemap_room); this bounds a crawl without a page limit: about 300 bytes
# of frontier and seen-set per URL, so some 150 MB at most.
MAX_SITEMAP_ENTRIES = 500_000
# A meta refresh within this many seconds is a redirect (Scrapy's METAREFRESH_MAXDELAY); a longer
# one is a page that reloads itself now and then.
MAX_REFRESH_DELAY = 100
_REFRESH = re.compile(
    r"""\s*(\d+(?:\.[\d.]*)?|\.[\d.]*)(?:\s*[;,]\s*|\s+|$)(?:url\s*=\s*)?(?:(['"])(.*?)(?:\2|$)|(.*))""",
    re.IGNORECASE | re.DOTALL,
)
# The version of `analyze` and of what a Visit records. Raise it whenever either changes: stored
# visits of another version are ignored, so every page is read again once.
ANALYSIS_VERSION = 3  # 2: request URLs kept as found, meta refresh, canonical checked; 3: text fingerprint kept

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
def request_url(url: str, base: str | None = None) -> str | None:
    """The URL to request for a link as found: joined to `base`, the fragment removed, unsafe
    characters percent-encoded and an international host name in punycode (w3lib's
    `safe_url_string`, after the WHATWG URL standard), nothing else changed; None for schemes
    other than http(s) and malformed URLs. Idempotent.

    The query string above all is sent as written: applications route on it (`index.php?/kb/x`,
    `?name=News&sid=12`), so reordering or dropping parameters can lead to pages that do not exist.
    """
    url = url.strip()
    if base is not None:
        try:
            url = urljoin(base, url)
        except ValueError:
            return None
    # The fragment is never sent: cut first, so that all anchors of a page are one cache entry.
    url = url.partition("#")[0]
    found = _REQUESTED.get(url, _MISSING)
    if found is _MISSING:
        # safe_url_string is pure Python: cached without the fragment (links to the anchors of
        # one page), the result too (it is its own request URL, so page_name does not pay again).
        found = _request_url(url)
        if len(_REQUESTED) > MAX_CACHED_URLS:
            _REQUESTED.clear()
        _REQUESTED[url] = found
        if found is not None:
            _REQUESTED[found] = found
    return found


_MISSING = object()
MAX_CACHED_URLS = 1 << 16
_REQUESTED: dict[str, str | None] = {}


def _request_url(url: str) -> str | None:
    from w3lib.url import safe_url_string

    try:
        parts = urlsplit(url)
        if (parts.scheme.lower() not in ("http", "https") or not parts.hostname
                or _BAD_HOST.search(parts.hostname)):
            return None
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
        return safe_url_string(url)
    except ValueError:  # a bad port, IPv6 literal or host name (UnicodeError is a ValueError)
        return None


@functools.lru_cache(maxsize=1 << 16)
def page_name(url: str) -> str | None:
    """The name a page is stored and shown under: its request URL without user info, default
    port, trailing fragment and IGNORED_PARAM parameters (query order kept), so the name is still
    a URL that fetches the page. None where request_url is None."""
    url = request_url(url)
    if url is None:
        return None
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    if (parts.scheme, parts.port) in (("http", 80), ("https", 443)):
        host = host.rpartition(":")[0]
    path = _PATH_SESSION.sub("", parts.path) or "/"
    url = urlunsplit((parts.scheme, host, path, parts.query, ""))
    ignored = {k for k, _ in parse_qsl(parts.query, keep_blank_values=True) if IGNORED_PARAM.match(k)}
    if ignored:
        from w3lib.url import url_query_cleaner

        # unique=False: a repeated parameter (?tag=a&tag=b) is data, not a duplicate
        url = url_query_cleaner(url, ignored, remove=True, unique=False)
    return url


@functools.lru_cache(maxsize=1 << 16)
def url_identity(url: str, base: str | None = None) -> str | None:
    """A page's identity, for de-duplication only (never requested): w3lib's `canonicalize_url`
    of its page_name, which sorts query parameters, normalizes percent-encoding, resolves dot
    segments (also percent-encoded ones) and lower-cases the host. None for non-http(s) URLs."""
    from w3lib.url import canonicalize_url

    name = page_name(url) if base is None else page_name(request_url(url, base) or "")
    return None if name is None else canonicalize_url(name, keep_blank_values=True)


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


def token_slots(identity: str) -> list[tuple[str, str]]:
    """(pattern, part) for each part of a URL that may carry a session token: each query
    parameter's value, each path parameter's value (`;name=value`) and each path segment with a
    digit or a lower-to-upper case change in it (`/s/ABC123/page`, `/s/qWxYz/page`); the pattern
    is the URL with that part replaced by `*`. Other segments are words that choose the page
    (`/about`, `/getting-started`) and are left out."""
    parts = urlsplit(identity)
    slots = []

    def with_part(i: int, segment: str) -> str:
        path = "/".join(segments[:i] + [segment] + segments[i + 1:])
        return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))

    segments = parts.path.split("/")
    for i, segment in enumerate(segments):
        head, *params = segment.split(";")
        if _TOKEN_SEGMENT.search(head):
            slots.append((with_part(i, ";".join(["*", *params])), head))
        for j, param in enumerate(params):
            key, eq, value = param.partition("=")
            if value:
                wild = params[:j] + [key + "=*"] + params[j + 1:]
                slots.append((with_part(i, ";".join([head, *wild])), param))
    pairs = parts.query.split("&") if parts.query else []
    for i, pair in enumerate(pairs):
        key, eq, value = pair.partition("=")
        if value:
            query = "&".join(pairs[:i] + [key + "=*"] + pairs[i + 1:])
            slots.append((urlunsplit((parts.scheme, parts.netloc, parts.path, query, "")), pair))
    return slots


@dataclass
class _Variants:
    texts: dict[str, str] = field(default_factory=dict)  # fingerprint -> first page name with it
    pages: int = 0  # read
    pending: int = 0  # requested, not read yet


class TokenWatch:
    """Finds URL parts that change while the page stays the same: session tokens under any name,
    in the query or the path, which otherwise make every link new on every page.

    Each page read is filed under every pattern of its URL with one part wildcarded
    (token_slots); a page whose URL lacks a query parameter counts for the pattern of that
    parameter too (`/p` and `/p?s=A`). A page with the same text as an earlier page of one of its
    patterns is a duplicate of it; once TOKEN_VARIANTS pages of a pattern have the same text and
    none of them another, the wildcarded part is volatile and URLs of that pattern are no longer
    requested. Until a pattern has shown two texts, no more of its URLs are requested at once
    than would make it volatile (`hold`), so that requests in flight do not outrun the finding.
    """

    def __init__(self):
        self._patterns: dict[str, _Variants] = {}
        self._pages: dict[str, tuple[str, str]] = {}  # identity -> (fingerprint, name)
        self.volatile: set[str] = set()

    def see(self, identity: str, fingerprint: str, name: str) -> tuple[str | None, str | None]:
        """(the name of an earlier page with this text whose URL differs in one part or None,
        the part found volatile just now or None)."""
        self._pages[identity] = (fingerprint, name)
        first = found = None
        for pattern, part in token_slots(identity):
            variants = self._variants(pattern, identity, part)
            variants.pages += 1
            if len(variants.texts) < MAX_TEXTS_PER_PATTERN:
                variants.texts.setdefault(fingerprint, name)
            earlier = variants.texts.get(fingerprint)
            if earlier != name and first is None:
                first = earlier
            if (variants.pages >= TOKEN_VARIANTS and len(variants.texts) == 1
                    and pattern not in self.volatile):
                self.volatile.add(pattern)
                found = found or part
        return first, found

    def _variants(self, pattern: str, identity: str, part: str) -> _Variants:
        variants = self._patterns.get(pattern)
        if variants is None:
            variants = self._patterns[pattern] = _Variants()
            # The same URL without this query parameter, read before, is one of its variants.
            parts = urlsplit(identity)
            pairs = [p for p in parts.query.split("&") if p != part]
            if len(pairs) < len(parts.query.split("&")):
                bare = urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(pairs), ""))
                if bare in self._pages:
                    fingerprint, name = self._pages[bare]
                    variants.texts[fingerprint] = name
                    variants.pages += 1
        return variants

    def refuses(self, identity: str) -> bool:
        """Whether the URL is of a pattern found volatile."""
        return bool(self.volatile) and any(p in self.volatile for p, _ in token_slots(identity))

    def hold(self, identity: str) -> bool:
        """Whether requesting the URL now could outrun finding its pattern volatile."""
        for pattern, _ in token_slots(identity):
            variants = self._patterns.get(pattern)
            # pages >= 1: a pattern known only from 304s (no text) is never held back
            if variants is not None and variants.pages and len(variants.texts) <= 1 and (
                    variants.pages + variants.pending >= TOKEN_VARIANTS):
                return True
        return False

    def sent(self, identity: str, count: int = 1) -> None:
        """The URL was requested (count=1) or its answer was read (count=-1)."""
        for pattern, part in token_slots(identity):
            self._variants(pattern, identity, part).pending += count


# ---------------------------------------------------------------- scope


@dataclass(frozen=True)
class Scope:
    """Which URLs a crawl may fetch: same scheme and host, under a path prefix, filtered by
    --include/--exclude regular expressions (searched in the page's name: page_name)."""

    roots: tuple[tuple[str, str, str], ...]  # (scheme, netloc, path prefix)
    include: tuple[re.Pattern, ...] = ()
    exclude: tuple[re.Pattern, ...] = ()

    @classmethod
    def for_start(cls, url: str, mode: str = "path", include=(), exclude=()) -> Scope:
        return cls((), tuple(include), tuple(exclude)).widen(url, mode)

    def widen(self, url: str, mode: str = "path") -> Scope:
        """This scope plus the root of url (a start URL, or where it redirected)."""
        parts = urlsplit(page_name(url) or url)
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
        parts = urlsplit(page_name(url) or url)  # no user info or default port
        for scheme, netloc, prefix in self.roots:
            if parts.scheme == scheme and parts.netloc == netloc and (
                parts.path.startswith(prefix) or parts.path == prefix.rstrip("/")
            ):
                return True
        return False

    def contains(self, url: str) -> bool:
        if not self.in_roots(url):
            return False
        name = page_name(url) or url
        if self.include and not any(p.search(name) for p in self.include):
            return False
        return not any(p.search(name) for p in self.exclude)


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

    links: tuple[str, ...] = ()  # absolute, as written (requested as found: request_url)
    canonical: str | None = None
    noindex: bool = False
    nofollow: bool = False
    listing: bool = False  # mostly links to other pages: followed, not indexed
    thin: bool = False  # little text of its own
    nesting: int = 0  # deepest element nesting
    refresh: str | None = None  # a client-side redirect (meta refresh): its target, absolute
    fingerprint: str | None = None  # hash of the title and main text: the same article


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

    doc = parse_page(page)
    if doc is None:
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
    refresh = _refresh_target(doc, base)
    title = " ".join((doc.findtext(".//title") or "").split())
    listing, thin, text = _listing(doc, base, {url_identity(base), url_identity(canonical or base)} - {None})
    return Analysis(tuple(links), canonical, noindex, nofollow, listing, thin, nesting, refresh,
                    text_hash(title + "\n" + text))


def _refresh_target(doc, base: str) -> str | None:
    """The target of a `<meta http-equiv="refresh">` that sends the reader elsewhere within
    MAX_REFRESH_DELAY seconds, joined to base; None for none, a reload or one inside <noscript>.

    The content is parsed as the HTML standard's "shared declarative refresh steps" say
    (https://html.spec.whatwg.org/#shared-declarative-refresh-steps): a delay, then `;` or `,`,
    then an optional `URL=`, then the URL, optionally quoted. By hand because w3lib's
    get_meta_refresh is a regular expression over the raw HTML that needs `url=` and the
    http-equiv attribute before content.
    """
    for el in doc.iter("meta"):
        if (el.get("http-equiv") or "").strip().lower() != "refresh":
            continue
        if any(a.tag == "noscript" for a in el.iterancestors()):
            continue  # a fallback for readers without JavaScript, not where the page is
        match = _REFRESH.match(el.get("content") or "")
        if match is None or float(match.group(1).split(".")[0] or 0) > MAX_REFRESH_DELAY:
            continue
        target = match.group(3) if match.group(3) is not None else match.group(4)
        target = (target or "").strip()
        if target:
            try:
                return urljoin(base, target)
            except ValueError:  # a malformed URL (a bad IPv6 literal): not a redirect to follow
                continue
    return None


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


def _listing(doc, base: str, own: set[str]) -> tuple[bool, bool, str]:
    """(is a listing page, is thin, its main text with spaces collapsed): computed on the main
    content, page chrome removed."""
    root, articles = _main(doc)
    words = root.text_content().split()
    text_words = len(words)
    anchors = list(root.iter("a"))
    link_words = sum(len(a.text_content().split()) for a in anchors)
    thin = text_words - link_words < THIN_WORDS
    text = " ".join(words)
    if len(articles) >= 2:  # one <article> per post: a blog's home, archive or label page
        return True, thin, text
    host = urlsplit(base).netloc

    def title_link(heading) -> str | None:
        """The page a heading links to when the link is (nearly) the whole heading: a title."""
        words = len(heading.text_content().split())
        for a in heading.iter("a"):
            target = url_identity(a.get("href") or "", base)
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
        return True, thin, text
    density = link_words / max(text_words, 1)
    dense = len(anchors) >= 5 and density >= LISTING_LINK_DENSITY
    # A near-empty page that is mostly navigation (an empty calendar month, a last archive page).
    empty_nav = thin and len(anchors) >= 2 and density >= 0.3
    return dense or empty_nav, thin, text


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
# What a "not found" page says, by language: its words for the page (or article) and its phrases
# for "not found" / "does not exist". A title part or heading that is one of these phrases, with or
# without the page word before or after it (Russian and Polish put it either side), is a "not
# found" message; so is the pair a few words apart in the opening of the text. A table rather than
# one hand-written phrase per language, so that word order, articles and punctuation vary freely.
_NOT_FOUND_WORDS = {
    "fr": (r"page|article|document",
           r"introuvable|(?:non|pas)\s+trouv[ée]e?|n['’]existe\s+(?:pas|plus)"),
    "de": (r"seite|artikel|dokument",
           r"(?:wurde\s+)?nicht\s+gefunden|existiert\s+nicht(?:\s+mehr)?|nicht\s+(?:mehr\s+)?vorhanden"),
    "es": (r"p[áa]gina|art[íi]culo|documento",
           r"no\s+(?:(?:se\s+)?(?:ha\s+)?(?:pudo\s+)?)?encontrad[ao]|no\s+se\s+encontr[óo]|no\s+existe"),
    "it": (r"pagina|articolo|documento",
           r"non\s+(?:è\s+stat[ao]\s+)?trovat[ao]|non\s+esiste(?:\s+più)?"),
    "nl": (r"pagina|artikel|document",
           r"(?:is\s+)?niet\s+gevonden|(?:kon\s+)?niet\s+(?:worden\s+)?gevonden|bestaat\s+niet(?:\s+meer)?"),
    "pt": (r"p[áa]gina|artigo|documento",
           r"n[ãa]o\s+(?:foi\s+)?encontrad[ao]|n[ãa]o\s+existe"),
    "pl": (r"stron[ayę]|artyku[łl]u?|dokument(?:u)?",
           r"nie\s+znaleziono|nie\s+(?:zosta[łl]a\s+|zosta[łl]\s+)?znalezion[aey]|nie\s+istnieje"),
    "ru": (r"страниц[аыу]|стать[яиюё]|документ(?:а)?",
           r"не\s+(?:была\s+|был\s+)?найден[аоы]?|не\s+существует"),
}
# Words that may stand around such a phrase in a title: an error number, an apology, the article
# or demonstrative before the page word ("la page", "diese Seite", "a página", "эта страница").
_NOT_FOUND_NOISE = (r"(?:404|error|erreur|fehler|errore|fout|erro|b[łl][ąa]d|ошибка|oops|oups|hoppla|ups|sorry|"
                    r"d[ée]sol[ée]|lo\s+sentimos|spiacenti|helaas|przepraszamy|извините|"
                    r"la|le|cette|die|diese|de|deze|het|esta|questa|a|esta|ta|эта|данная)")
_FOREIGN_TITLE = re.compile(
    r"^\W*(?:" + _NOT_FOUND_NOISE + r"\W+)*(?:"
    + "|".join(rf"(?:(?:{page})\W+(?:(?:{_NOT_FOUND_NOISE})\W+)?)?(?:{gone})(?:\W+(?:{page}))?"
               for page, gone in _NOT_FOUND_WORDS.values())
    + r")(?:\W+" + _NOT_FOUND_NOISE + r")*\W*$",
    re.IGNORECASE,
)
_FOREIGN_TEXT = "|".join(rf"\b(?:{page})\b(?:\W+\w+){{0,6}}?\W+(?:{gone})\b|\b(?:{gone})\W+(?:{page})\b"
                         for page, gone in _NOT_FOUND_WORDS.values())
# ... in its title or first heading (as the whole of it, or of one part of a "Page not found |
# Site" title) ...
_NOT_FOUND_TITLE = re.compile(
    r"^(?=.*(?:404|found|exist|missing|gone|available))"
    r"\W*(?:(?:oops|sorry|error)\W+)*(?:(?:error\W*)?404\b\W*(?:error\W*)?)?"
    r"(?:(?:the\s+|this\s+|that\s+)?(?:page|article|document|content|file|url|resource)\s+)?"
    r"(?:(?:was\s+|could\s+|can\s*)?not(?:\s+be)?\s+found|can[’']?t\s+be\s+found|(?:does\s+not|doesn'?t|doesn’t|no\s+longer)"
    r"\s+exists?|is\s+(?:missing|gone)|not\s+available|unavailable)?\W*$",
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
    r"|\b404\W+(?:page\s+)?not\s+found|" + _FOREIGN_TEXT,
    re.IGNORECASE,
)
# A quotation in an article's opening is the error message the article is about ("Word says “The
# document could not be found”"), never the page speaking of itself.
_QUOTED = re.compile(r"“[^”]{0,200}”|„[^“”]{0,200}[“”]|«[^»]{0,200}»|\"[^\"]{0,200}\"|'[^']{0,200}'(?!\w)")
_TITLE_PARTS = re.compile(r"\s+[|–—:·-]\s+|\s*[|–—·]\s*")
SOFT_404_OPENING = 200  # characters of main text where a "not found" message is looked for
_WORD = re.compile(r"\w+")


def parse_page(page: Page):
    """The lxml tree of an HTML page decoded as the extractor decodes it (the Content-Type
    charset, a BOM, <meta charset>, else detection: kbindex.extract.detect_encoding), or None
    when it does not parse. lxml left to itself reads undeclared bytes as Latin-1 and ignores the
    HTTP header, which garbles non-ASCII links (café.html requested as caf%C3%83%C2%A9.html)."""
    import lxml.etree
    import lxml.html

    from kbindex.extract import decode

    text = decode(page.body, page.content_type, html=True, source=page.url or page.source)
    text = _XML_DECLARATION.sub("", text, count=1)  # lxml refuses a str that declares one
    try:
        return lxml.html.document_fromstring(text)
    except (lxml.etree.ParserError, ValueError):
        return None


_XML_DECLARATION = re.compile(r"\A\s*<\?xml[^>]*>")


def main_text(page: Page) -> tuple[str, str, str]:
    """(title, first heading, main text) of an HTML page, page chrome removed (as for the
    listing test)."""
    doc = parse_page(page)
    if doc is None:
        return "", "", ""
    title = " ".join((doc.findtext(".//title") or "").split())
    root, _ = _main(doc)
    heading = next((" ".join(h.text_content().split()) for h in root.iter("h1", "h2")), "")
    return title, heading, " ".join(root.text_content().split())


def says_not_found(title: str, heading: str, text: str) -> bool:
    """Whether a page's title or first heading is a "not found" message, or its main text opens
    with one (see _soft_404: only short pages are asked)."""
    parts = [p.strip() for p in _TITLE_PARTS.split(title) if p.strip()] + [heading.strip()]
    if any(p and _WORD.search(p) and (_NOT_FOUND_TITLE.match(p) or _FOREIGN_TITLE.match(p)) for p in parts):
        return True
    return bool(_NOT_FOUND_TEXT.search(_QUOTED.sub(" ", text[:SOFT_404_OPENING])))


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
    url: str  # as requested: the link as found (request_url)
    depth: int
    streak: int = 0  # chained barren listing pages of this URL's pattern before it
    follow: bool = True  # follow its links (not for sitemap and feed entries)
    visit: Visit | None = None  # what the last run learned from it, when it is fetched conditionally
    unrequested: bool = False  # known unchanged from the sitemap's lastmod: handled without a request
    hops: int = 0  # client-side redirects (meta refresh) that led here
    sent: bool = False  # requested by the scheduler's loop (counted in TokenWatch until read)

    @property
    def key(self) -> str:
        """Its identity (url_identity): what the crawl's seen and done sets hold."""
        return url_identity(self.url) or self.url


@dataclass(frozen=True)
class _Facts:
    """What a handled or probed page is, for judging another page's rel=canonical to it."""

    name: str
    fingerprint: str | None  # Analysis.fingerprint (from the stored visit after a 304)


_DISALLOW_ALL = object()  # robots.txt answered 5xx or not at all: RFC 9309 says assume disallow


class CrawlMemory(Protocol):
    """What the crawler keeps between runs (the index keeps it in its ledger).

    Called from the crawl's own thread only, never from the fetch workers.
    """

    def recall(self, url: str) -> Visit | None:
        """The visit recorded for a requested URL (by its url_identity), when its validators may
        be used."""

    def remember(self, visit: Visit) -> None:
        """Record what this run learned from a page (called for every HTML page handled)."""


class _Forgetful:
    def recall(self, url: str) -> Visit | None:
        return None

    def remember(self, visit: Visit) -> None:
        pass


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
        self.memory: CrawlMemory = memory or _Forgetful()
        self.options = options or CrawlOptions()
        self.token = user_agent_token
        self._include = compile_patterns(self.options.include, "--include")
        self._exclude = compile_patterns(self.options.exclude, "--exclude")

    def _name(self, url: str) -> str:
        """The name a page at this URL is handed on under: its page_name, or the index's own."""
        return self.names(page_name(url) or url)

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
        self._lastmods: dict[str, datetime] = {}  # URL identity -> sitemap lastmod (--trust-lastmod)
        self._handled: set[str] = set()  # identities of requested URLs handled
        self._facts: dict[str, _Facts] = {}  # identity -> what the page there is (rel=canonical)
        # canonical targets probed, not yet handled: (their fetch, the visit it was made with)
        self._prefetched: dict[str, tuple[Future, Visit | None]] = {}
        self._tokens = TokenWatch()
        self._inflight: deque[tuple[Future, _Item]] = deque()
        self._transient = False
        started = time.monotonic()
        deadline = started + options.max_time if options.max_time else None
        allow_private = options.allow_private or self.fetcher.is_private_host(start)
        start_url = request_url(start) or start
        start_item = _Item(start_url, 0)
        start_name = self._name(start_url)
        result.start_names.update({start, start_url, start_name})
        self._seen.add(start_item.key)
        result.discovered += 1
        self.scope = Scope.for_start(start_name, options.scope, self._include, self._exclude)

        self._robots_error: FetchError | None = None
        if not self._allowed(start_url, result, allow_private):
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
        visit = self._recall(start_item) if options.depth != 0 else None
        if visit is not None:
            etag, modified = visit.etag, visit.last_modified
        else:
            etag, modified = self.validators(start_name) if options.depth == 0 else (None, None)
        try:
            page = self.fetcher.fetch(start_url, accept=START_TYPES, allow_private=allow_private,
                                      etag=etag, last_modified=modified)
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
        final = self._name(page.url or start_url)
        result.start_names.add(final)
        if final != start_name and not self.scope.in_roots(final):
            # The start URL redirected (http -> https, / -> /en/): crawl where it led.
            self.scope = self.scope.widen(final, options.scope)
        if page.status == 304:  # a site's start page, unchanged: followed by its stored links
            result.kind = "site"
            start_item.visit = visit
            yield from self._site(start_item, page, None, result, allow_private)
        else:
            yield from self._start(page, start, final, result, allow_private)

        pool = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="kbindex-fetch")
        # Results are handled in the order requests were made (breadth-first, deterministic: the
        # same site gives the same pages in the same order, so "first of two duplicates" is
        # stable); a window of queued requests keeps the workers busy behind a slow page.
        inflight = self._inflight
        window = options.concurrency * 4
        requested = result.fetched  # the start page counts against --max-pages
        try:
            while self._frontier or inflight:
                if deadline is not None and time.monotonic() >= deadline:
                    result.stopped = "max_time"
                    break
                held: list[_Item] = []
                while self._frontier and len(inflight) < window:
                    if options.max_pages is not None and requested >= options.max_pages:
                        break
                    item = self._frontier.popleft()
                    if item.key in self._handled:
                        continue  # handled early: the canonical target of a page before it
                    if self._tokens.refuses(item.key):  # found to be a session token meanwhile
                        result.skipped["trap"] += 1
                        continue
                    if self._tokens.hold(item.key):  # its pattern may be a token: wait for it
                        held.append(item)
                        if len(held) >= window * 16:
                            break  # bounded work per page handled; the rest waits its turn
                        continue
                    if item.key in self._prefetched:  # probed as a canonical target: not fetched again
                        future, item.visit = self._prefetched.pop(item.key)
                        inflight.append((future, item))
                        continue
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
                    self._tokens.sent(item.key)
                    item.sent = True
                    requested += 1
                self._frontier.extendleft(reversed(held))
                result.queued = len(self._frontier) + len(inflight)
                if not inflight:
                    if self._frontier:  # what is left waits for page requests the budget has not
                        result.stopped = "max_pages"
                    break
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                future, item = inflight[0]
                if not wait([future], timeout=timeout).done:
                    continue  # the deadline passed: stopped at the top of the loop
                inflight.popleft()
                if item.sent:
                    self._tokens.sent(item.key, -1)
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
            self._done.add(url_identity(final) or final)
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
        yield from self._site(_Item(request_url(start) or start, 0), page, analysis, result, allow_private)

    def _site(self, item: _Item, page: Page, analysis: Analysis | None, result: CrawlResult,
              allow_private: bool):
        """A site's start page (read, or a 304 to follow by its stored links), then its sitemaps."""
        future: Future = Future()
        future.set_result((page, analysis))
        yield from self._handle(item, future, result, allow_private)
        final = page.url or item.url
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
                    child_url = request_url(link, url)  # requested as written: cHash=... must match
                    if child_url and urlsplit(child_url).netloc == host and len(children) <= MAX_SITEMAPS:
                        children.append(child_url)
                    continue
                free = False
                if self.options.trust_lastmod and (when := parse_lastmod(lastmod)) is not None:
                    key = url_identity(link, url)
                    if key:
                        self._lastmods[key] = when
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
            url, f"sitemap could not be read ({exc.reason}); the crawl is incomplete, so no page is "
            "pruned for being missing from it", kind=exc.kind, status=status))

    def _drain_reports(self) -> Iterator[SourceError]:
        while self._reports:
            yield self._reports.pop(0)

    def _recall(self, item: _Item) -> Visit | None:
        """The last run's visit of a page, if its validators can be used."""
        visit = self.memory.recall(item.key)
        if visit is None or visit.parser != ANALYSIS_VERSION or not (visit.etag or visit.last_modified):
            return None
        if visit.outcome == "redirect":
            return None  # a meta refresh stub: a 304 would not say where it leads
        return visit

    def _unchanged_by_lastmod(self, item: _Item) -> bool:
        """--trust-lastmod: the sitemap says the page changed no later than the stored visit was
        made (a sitemap that lies about lastmod hides changes: hence an option)."""
        if not self.options.trust_lastmod or item.visit is None:
            return False
        lastmod = self._lastmods.get(item.key)
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
            etag, modified = self.validators(self._name(url)) if conditional else (None, None)
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
        if item.key in self._handled:
            return  # handled already: the canonical target of a page before it, or a redirect's
        self._handled.add(item.key)
        outcome = self._settle(future.result, result)
        if isinstance(outcome, SourceError):
            yield _renamed(outcome, self._name(item.url))
            return
        page, analysis = outcome
        result.fetched += not item.unrequested
        visit = item.visit
        if page.status == 304:
            result.not_modified += 1
            if visit is None:  # a sitemap or feed entry unchanged since the last run
                self._done.add(item.key)
                yield replace(page, source=self._name(item.url))
                return
            if url_identity(page.url or item.url) != url_identity(visit.final):
                # It redirects somewhere else now: what was stored is about another page.
                self._handled.discard(item.key)
                yield from self._handle(_Item(item.url, item.depth, item.streak, item.follow),
                                        self._fetch_now(item.url, allow_private), result, allow_private)
                return
            # Unchanged: followed exactly as if it had been read, by what the last run stored.
            analysis = _analysis(visit)
            page = replace(page, etag=page.etag or visit.etag,
                           last_modified=page.last_modified or visit.last_modified)
        final_url = page.url or item.url
        final = url_identity(final_url) or final_url
        name = self._name(final_url)

        def remember(outcome: str, as_name: str = name) -> None:
            self.memory.remember(_visit(item.key, final_url, as_name, outcome, page, analysis))

        if final != item.key:
            if final in self._done:
                remember("duplicate")
                yield SkipSource(self._name(item.url), f"redirects to {name}, already seen", kind="duplicate")
                return
            if not self.scope.contains(final_url) and item.depth > 0:
                remember("out_of_scope")
                yield SkipSource(self._name(item.url), f"redirects out of scope to {name}",
                                 kind="out_of_scope")
                return
            self._seen.add(final)
        self._done.add(final)
        if item.depth == 0:
            result.start_names.add(name)
        if analysis.refresh and url_identity(analysis.refresh) != final:
            remember("redirect")  # never recalled: a 304 would not say where the stub leads
            self._facts[final] = _Facts(name, analysis.fingerprint)
            yield from self._client_redirect(item, name, analysis.refresh, result, allow_private)
            return
        self._facts[final] = self._facts[item.key] = _Facts(name, analysis.fingerprint)
        self._follow(item, final_url, analysis, result, allow_private)
        duplicate = self._same_text(final, name, analysis) or self._canonical(
            item, final, analysis, result, allow_private)
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
            outcome = self._settle(lambda: self._fetch(item.url, allow_private), result)
            if isinstance(outcome, SourceError):
                yield _renamed(outcome, name)
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
        title, heading, text = main_text(page)
        words = _words(text)
        if len(words) > SOFT_404_MAX_WORDS:
            return None
        if says_not_found(title, heading, text):
            return "the page says it does not exist"
        if len(words) >= SOFT_404_PROBE_WORDS:
            return None
        url = page.url or page.source
        probe = self._soft_404_probe(url, result, allow_private)
        if probe is None:
            return None
        final, probe_words = probe
        if url_identity(url) == final:
            return None  # the page the site sends unknown URLs to is itself no soft 404
        mine = set(words) - _url_words(url)
        if mine and len(mine & probe_words) / len(mine | probe_words) >= SOFT_404_SIMILARITY:
            return "the same text as the site's answer to a URL that does not exist"
        return None

    def _soft_404_probe(self, url: str, result: CrawlResult,
                        allow_private: bool) -> tuple[str, frozenset[str]] | None:
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
        _, _, text = main_text(page)
        found = (url_identity(page.url or probe_url) or probe_url,
                 frozenset(_words(text)) - _url_words(probe_url))
        self._probes[host] = found
        return found


    def _same_text(self, final: str, name: str, analysis: Analysis) -> tuple[str, str] | None:
        """(earlier page, reason) when a page read before has this text at a URL that differs in
        one part only; the part is reported once found to be a session token (TokenWatch)."""
        if analysis.fingerprint is None:
            return None
        other, part = self._tokens.see(final, analysis.fingerprint, name)
        if other is None:
            return None
        if part:
            return other, (f"same page as {other}: URLs that differ only in {part!r} are one page "
                           "(a session token), so URLs like it are not followed")
        return other, f"same page as {other} (same text, the URLs differ in one part)"

    def _canonical(self, item: _Item, final: str, analysis: Analysis, result: CrawlResult,
                   allow_private: bool) -> tuple[str, str] | None:
        """(target, reason) when the page's rel=canonical is trusted: the target is in scope and
        its title and main text are the page's (Analysis.fingerprint; after a 304, the one stored
        with the visit). A target not read yet is fetched to see (_probe) and then handled
        before the pages waiting in the frontier, so that the article it is gets indexed.

        A target of other text (an article, a listing, the home page a template names on every
        page) or one that cannot be read is not evidence of a copy: the page is indexed under
        its own URL, so that nothing is lost to a careless template."""
        target = request_url(analysis.canonical) if analysis.canonical else None
        key = url_identity(target) if target else None
        if key is None or key == final or analysis.fingerprint is None or not self.scope.contains(target):
            return None
        facts = self._facts.get(key) or self._probe(target, key, result, allow_private)
        if facts is None or facts.fingerprint != analysis.fingerprint:
            return None
        if key in self._prefetched:  # probed just now: its turn comes next
            self._seen.add(key)
            self._frontier.appendleft(_Item(target, item.depth, item.streak, item.follow))
        return facts.name, f"same page as {facts.name} (rel=canonical)"

    def _probe(self, target: str, key: str, result: CrawlResult, allow_private: bool) -> _Facts | None:
        """What a canonical target not handled yet is: its fetch (or the one in flight) is
        waited for; a new fetch waits in _prefetched for the target's turn. None where it
        cannot be read (or may not be: robots.txt, traps, too many probes waiting)."""
        waiting = next(((f, i) for f, i in self._inflight if i.key == key), None)
        if waiting is None and key in self._prefetched:  # probed for an earlier page: asked once
            future, visit = self._prefetched[key]
            waiting = future, _Item(target, 0, visit=visit)
        if waiting is None:
            if (len(self._prefetched) >= MAX_PREFETCHED or trap_reason(target)
                    or not self._allowed(target, result, allow_private)):
                return None
            queued = _Item(target, 0)
            queued.visit = self._recall(queued)  # a 304 says what it is from the stored visit
            future = self._fetch_now(target, allow_private, queued.visit)
            self._prefetched[key] = future, queued.visit
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
        return _Facts(self._name(final_url), analysis.fingerprint)

    def _client_redirect(self, item: _Item, name: str, target: str, result: CrawlResult,
                         allow_private: bool):
        """A meta refresh to another URL is a redirect: followed with the checks an HTTP redirect
        gets (scope, robots.txt, hop count; the fetcher checks addresses), the stub never indexed."""
        url = request_url(target)
        if url is None:
            yield SkipSource(name, f"meta refresh to {target[:200]}, not an http(s) URL", kind="bad_redirect")
            return
        key, to = url_identity(url), self._name(url)
        if item.hops >= self.fetcher.max_redirects:
            result.errors += 1
            yield FetchError(name, f"more than {self.fetcher.max_redirects} redirects (meta refresh)",
                             kind="too_many_redirects")
            return
        if key in self._done or key in self._handled:
            yield SkipSource(name, f"redirects to {to} (meta refresh), already seen", kind="duplicate")
            return
        if not self.scope.contains(url):
            if item.depth > 0:
                yield SkipSource(name, f"redirects out of scope to {to} (meta refresh)", kind="out_of_scope")
                return
            self.scope = self.scope.widen(url, self.options.scope)  # as for the start URL's redirects
        if not allow_private and self.fetcher.is_private_host(url):
            result.errors += 1
            yield FetchError(name, f"refused the meta refresh to {to}: its host resolves to a non-public "
                             "address (use --allow-private to allow)", kind="private_address")
            return
        if trap_reason(url) or not self._allowed(url, result, allow_private):
            yield SkipSource(name, f"redirects to {to} (meta refresh), disallowed by robots.txt",
                             kind="robots")
            return
        result.discovered += key not in self._seen
        self._seen.add(key)
        if item.depth == 0:  # the start URL's stub: what it leads to is what the user named
            result.start_names.add(to)
        self._frontier.appendleft(_Item(url, item.depth, item.streak, item.follow, hops=item.hops + 1))

    def _fetch_now(self, url: str, allow_private: bool, visit: Visit | None = None) -> Future:
        """A fetch in this thread (unconditional without a visit), as a finished future."""
        future: Future = Future()
        try:
            future.set_result(self._fetch(url, allow_private, visit=visit))
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
            url = request_url(link)
            if url is None:
                continue
            links.append(url)
            if (url_identity(url) not in self._seen and url_pattern(url) != pattern
                    and self.scope.contains(url)):
                new_elsewhere = True
        barren = (analysis.listing or analysis.thin) and not new_elsewhere
        for url in links:
            self._enqueue(url, pattern, item, barren, result, allow_private, follow=True)

    def _enqueue(self, url: str, parent_pattern: str | None, parent: _Item, barren: bool,
                 result: CrawlResult, allow_private: bool, follow: bool) -> None:
        url = request_url(url)
        key = url_identity(url) if url else None
        if key is None or key in self._seen:
            return
        self._seen.add(key)
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
        if trap_reason(url) or self._tokens.refuses(url_identity(url)):
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
