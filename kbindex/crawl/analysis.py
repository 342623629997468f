"""What the crawler reads from an HTML page (`analyze`): links, rel=canonical, meta robots, meta
refresh, the listing-page test and the text fingerprint, from one lxml parse of the page."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from kbindex.crawl.urls import url_identity
from kbindex.extract.chrome import drop_chrome
from kbindex.records import Page, text_hash

HTML_TYPES = ("text/html", "application/xhtml+xml")
# Media types read for a discovered link; the ones that are not HTML are sniffed.
PAGE_TYPES = HTML_TYPES + ("text/plain", "application/octet-stream")
# A meta refresh within this many seconds is a redirect (Scrapy's METAREFRESH_MAXDELAY); a longer
# one is a page that reloads itself now and then.
MAX_REFRESH_DELAY = 100
_REFRESH = re.compile(
    r"""\s*(\d+(?:\.[\d.]*)?|\.[\d.]*)(?:\s*[;,]\s*|\s+|$)(?:url\s*=\s*)?(?:(['"])(.*?)(?:\2|$)|(.*))""",
    re.IGNORECASE | re.DOTALL,
)
# The version of `analyze` and of what a Visit records. Raise it whenever either changes: stored
# visits of another version are ignored, so every page is read again once.
# 2: request URLs kept as found, meta refresh, canonical checked; 3: text fingerprint kept;
# 4: page chrome told by the extractor's rules (extract.chrome), which changes main texts.
ANALYSIS_VERSION = 4

LISTING_LINK_DENSITY = 0.5  # share of the main text's words inside links
THIN_WORDS = 50  # fewer words of non-link text: not an article on its own
# Real pages nest a few dozen elements deep; thousands is an attack or a broken generator, and the
# extractor's tree walk is recursive and slows down with depth: such pages are skipped.
MAX_NESTING = 250  # lxml itself stops nesting at 256 levels




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
    # (title, first heading, main text) as main_text gives them, for the soft-404 test: kept from
    # this parse so that the page is not parsed again. None where unknown (after a 304).
    main: tuple[str, str, str] | None = field(default=None, compare=False, repr=False)


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
        return Analysis(thin=True, main=("", "", ""))
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
    listing, thin, text, heading = _listing(doc, base, {url_identity(base), url_identity(canonical or base)} - {None})
    return Analysis(tuple(links), canonical, noindex, nofollow, listing, thin, nesting, refresh,
                    text_hash(title + "\n" + text), (title, heading, text))


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
    drop_chrome(doc)  # the extractor's rules (extract.chrome): both read the same main content
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


def _listing(doc, base: str, own: set[str]) -> tuple[bool, bool, str, str]:
    """(is a listing page, is thin, its main text with spaces collapsed, its first heading):
    computed on the main content, page chrome removed."""
    root, articles = _main(doc)
    heading = _first_heading(root)
    words = root.text_content().split()
    text_words = len(words)
    anchors = list(root.iter("a"))
    link_words = sum(len(a.text_content().split()) for a in anchors)
    thin = text_words - link_words < THIN_WORDS
    text = " ".join(words)
    if len(articles) >= 2:  # one <article> per post: a blog's home, archive or label page
        return True, thin, text, heading
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
        return True, thin, text, heading
    density = link_words / max(text_words, 1)
    dense = len(anchors) >= 5 and density >= LISTING_LINK_DENSITY
    # A near-empty page that is mostly navigation (an empty calendar month, a last archive page).
    empty_nav = thin and len(anchors) >= 2 and density >= 0.3
    return dense or empty_nav, thin, text, heading


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
    return title, _first_heading(root), " ".join(root.text_content().split())


def _first_heading(root) -> str:
    return next((" ".join(h.text_content().split()) for h in root.iter("h1", "h2")), "")


