"""Bytes -> Document: decode, find the article, keep its structure. Pure: no I/O."""

from __future__ import annotations

import codecs
import io
import re
from collections import Counter
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from kbindex.errors import SkipSource, SourceError
from kbindex.records import Document, Page, Section

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HTML_TYPES = ("text/html", "application/xhtml+xml")
MARKDOWN_EXTENSIONS = (".md", ".markdown")
RST_EXTENSIONS = (".rst",)
HTML_EXTENSIONS = (".html", ".htm", ".xhtml")

# Elements that are never article text.
DROP_ALWAYS = (
    "script", "style", "template", "noscript", "iframe", "svg", "canvas", "button", "input",
    "select", "textarea", "object", "embed", "dialog", "head",
)
# Elements that are page chrome on most sites (dropped when trafilatura finds no article).
DROP_CHROME = ("nav", "header", "footer", "aside", "form", "menu")
# id/class words of page chrome: comment threads, "related/popular posts" widgets, share bars.
CHROME_PATTERN = re.compile(
    r"(^|[-_\s])(comments?|comment-list|respond|disqus|related|popular|recent-posts|sidebar|"
    r"widget|share|sharing|social|newsletter|subscribe|breadcrumbs?|cookie|banner|advert|ads|"
    r"promo|pagination|pager|toc-sidebar|site-header|site-footer|menu)($|[-_\s])",
    re.IGNORECASE,
)
# id/class words of boxes that hold media and their captions, not article text.
MEDIA_PATTERN = re.compile(r"gallery|carousel|slider|slideshow|lightbox", re.IGNORECASE)
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
BLOCK_TAGS = {
    "p", "div", "section", "article", "main", "blockquote", "figure", "figcaption", "li",
    "address", "details", "summary", "center", "body", "html", "hgroup", "dd", "dt", "td", "th",
}
_SPACE = re.compile(r"[ \t\r\f\v\u00a0]+")


def extract(page: Page) -> Document:
    """The article of a page or file as a Document; raises SkipSource when there is nothing.

    What a body is comes from its bytes first (see `_kind`), then from its Content-Type and
    name: a PDF served as text/html is read as a PDF, and bytes that decode to text full of
    control characters or invalid sequences are skipped as binary, whatever they are named.
    """
    kind = _kind(page)
    if kind == "binary":
        raise SkipSource(page.source, "binary file, not text", kind="binary")
    if kind == "pdf":
        doc = extract_pdf(page.body, page.source)
    elif kind == "docx":
        doc = extract_docx(page.body, page.source)
    else:
        text = decode(page.body, page.content_type, html=kind == "html", source=page.source)
        if looks_binary(text):
            raise SkipSource(page.source, "binary data, not text (control characters or invalid "
                             "byte sequences)", kind="binary")
        if kind == "html":
            doc = extract_html(text, page.source)
        elif kind == "markdown":
            doc = extract_markdown(text, page.source)
        elif kind == "rst":
            doc = extract_rst(text, page.source)
        else:
            doc = extract_plain(text, page.source)
    if not doc.text.strip():
        raise SkipSource(page.source, "no text to index (empty document)", kind="empty")
    return doc


def extract_or_error(page: Page) -> Document | SourceError:
    """extract() as a function of its page alone, for worker processes: a SourceError is returned."""
    try:
        return extract(page)
    except SourceError as exc:
        return exc


def _kind(page: Page) -> str:
    """pdf, docx, binary, html, markdown, rst or text: signatures first, then type and name.

    A signature at the start of the body wins over the Content-Type and the file name, as in
    the WHATWG MIME Sniffing Standard's rules for PDF and ZIP ("%PDF-", "PK\\x03\\x04"): servers
    label PDFs text/html and files get wrong names. A ZIP archive is a Word document only when
    it holds word/document.xml; any other archive is binary.
    """
    head = page.body[:8192]
    ctype = (page.content_type or "").split(";")[0].strip().lower()
    suffix = PurePosixPath(urlsplit(page.source).path if "://" in page.source else page.source)
    ext = suffix.suffix.lower()
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "docx" if ext == ".docx" or ctype == DOCX_TYPE or _is_docx(page.body) else "binary"
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "binary"
    if ctype in HTML_TYPES or ext in HTML_EXTENSIONS:
        return "html"
    if ctype == "text/markdown" or ext in MARKDOWN_EXTENSIONS:
        return "markdown"
    if ctype == "text/x-rst" or ext in RST_EXTENSIONS:
        return "rst"
    if not ctype and re.match(rb"\s*(<!doctype html|<html)", head, re.IGNORECASE):
        return "html"
    return "text"


def _is_docx(body: bytes) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            return "word/document.xml" in archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


# The WHATWG MIME Sniffing Standard's "binary data bytes" (C0 controls other than tab, line
# feed, form feed, carriage return and escape), and U+FFFD, which decoding puts for an invalid
# byte sequence.
_BINARY_CHARS = re.compile("[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\ufffd]")
_SNIFF_CHARS = 16384


def looks_binary(text: str) -> bool:
    """True when decoded text is mostly not text: more than 4 + 1% of its first 16 Ki characters
    are control characters or replacement characters.

    The standard calls a resource binary at the first such byte (in its first 1,445); a share is
    used instead so that a stray control character (a DOS end-of-file mark, a vertical tab) or
    the few invalid bytes that `detect_encoding` tolerates in a labelled page do not cost a
    document. Random bytes have about 10% of them whatever encoding they are read in.
    """
    sample = text[:_SNIFF_CHARS]
    if _BINARY_CHARS.search(sample) is None:  # the usual case, without building a list
        return False
    return len(_BINARY_CHARS.findall(sample)) > 4 + len(sample) // 100


# ---------------------------------------------------------------- decoding

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([\w.:-]+)""", re.IGNORECASE)
# What browsers do (WHATWG encoding spec): a page labelled Latin-1 or ASCII is read as windows-1252.
_ALIASES = {"iso-8859-1": "cp1252", "latin-1": "cp1252", "latin1": "cp1252", "ascii": "cp1252",
            "us-ascii": "cp1252", "iso8859-1": "cp1252", "iso-8859-8-i": "iso8859-8",
            "x-mac-cyrillic": "mac-cyrillic", "windows-874": "cp874"}


def _charset(content_type: str | None) -> str | None:
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type or "", re.IGNORECASE)
    return match.group(1) if match else None


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    label = _ALIASES.get(label.strip().lower(), label.strip().lower())
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def detect_encoding(body: bytes, content_type: str | None = None, html: bool = False,
                    source: str | None = None) -> str:
    """The encoding of a body: BOM, declared charset, <meta> charset, UTF-8, then detection.

    The BOM goes first, as in browsers, because a server's header is more often wrong than a
    BOM. A declared or meta charset that leaves more than a few bytes undecodable is passed
    over (the page was saved in another encoding than it claims), as is a UTF-16 label on
    bytes without NULs. Bytes that declare nothing and are not UTF-8 are read as a browser
    reads them (see `undeclared_encoding`); `source`, a URL, gives the detector its TLD hint.
    """
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name
    labelled = [_codec(_charset(content_type))]
    if html:
        match = _META_CHARSET.search(body[:4096])
        labelled.append(_codec(match.group(1).decode("ascii", "replace")) if match else None)
    for name in labelled:
        if name is None or (name.startswith(("utf-16", "utf-32")) and b"\x00" not in body):
            continue  # UTF-16/32 text without a BOM has NUL bytes in it; that label is wrong
        try:
            body.decode(name)
        except UnicodeDecodeError:
            # A few corrupt bytes do not make a label wrong (browsers replace them too);
            # many do: the page was saved in another encoding than it claims.
            if body.decode(name, "replace").count("\ufffd") > 3 + len(body) // 1000:
                continue
        return name
    try:
        body.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    return undeclared_encoding(body, _tld(source))


# Bytes read by the detectors: enough for any verdict, bounded for a large file.
_DETECT_BYTES = 65536
# An ISO 8859 reading needs at least this many byte values that it reads differently from
# windows-1252. chardetng proposes ISO-8859-2 or -4 for Western text that has none of the bytes
# 0x80-0x9F which would tell the two families apart: one accented letter (naïve, 0xEF) is ī in
# ISO-8859-4, a ± is ą in ISO-8859-2. The windows code pages it proposes (windows-1250 for
# Czech, windows-1251 for Russian) are right even on a few words, so they need no such margin.
_MIN_EVIDENCE = 2
_FALLBACK = "cp1252"


def undeclared_encoding(body: bytes, tld: str | None = None) -> str:
    """The encoding of bytes that declare none and are not UTF-8, as a Web browser decides it.

    The WHATWG Encoding Standard leaves this to the browser's detector, with windows-1252 as
    the fallback for Western locales. Firefox's detector, chardetng (through chardetng-py), is
    asked; its answer replaces windows-1252 when it is confident: a windows code page, KOI8 or
    a multi-byte encoding is taken as it is, an ISO 8859 reading only with `_MIN_EVIDENCE` byte
    values read differently from windows-1252 (see there). A statistical detector's first
    candidate (charset-normalizer's, used before) is one of many tied ones on short texts, and
    read Spanish and French help articles as windows-1250 (contraseńa, paramčtres).
    """
    from chardetng_py import EncodingDetector

    sample = body[:_DETECT_BYTES]
    detector = EncodingDetector()
    detector.feed(sample, last=len(body) <= _DETECT_BYTES)
    guess = _codec(detector.guess(tld=tld.encode("ascii") if tld else None, allow_utf8=False))
    if guess is None or guess == _FALLBACK:
        return _FALLBACK
    if guess.startswith("iso8859"):
        # Distinct byte values, not occurrences: a word repeated (a title that is also the
        # first line) is no more evidence than the word once.
        readings = [(bytes([b]).decode(guess, "replace"), bytes([b]).decode(_FALLBACK, "replace"))
                    for b in set(sample) if b >= 0x80]
        if sum(a != b for a, b in readings) < _MIN_EVIDENCE and all(b != "\ufffd" for _, b in readings):
            return _FALLBACK
    return guess


def _tld(source: str | None) -> str | None:
    """The top-level domain label of a URL, as chardetng takes it (ASCII letters, lower case)."""
    host = urlsplit(source).hostname if source and "://" in source else None
    label = host.rsplit(".", 1)[-1] if host and "." in host else ""
    return label if label.isascii() and label.isalpha() else None


def decode(body: bytes, content_type: str | None = None, html: bool = False,
           source: str | None = None) -> str:
    """Bytes to text in the detected encoding; undecodable bytes become U+FFFD, never an error."""
    text = body.decode(detect_encoding(body, content_type, html, source), "replace")
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def decode_text(body: bytes, source: str, content_type: str | None = None) -> str:
    """Decode a text file or response (kept for callers of the foundation's name)."""
    return decode(body, content_type, source=source)


# ---------------------------------------------------------------- HTML


def extract_html(body: bytes | str, source: str, content_type: str | None = None) -> Document:
    """Article text of an HTML page, with its headings as sections and its metadata.

    trafilatura decides which text is the article; our own walk over the same tree keeps the
    structure trafilatura flattens (heading ids for deep links, code verbatim, tables as rows,
    definition lists). Where trafilatura finds no article, rules on tags and class names do.
    """
    markup = decode(body, content_type, html=True, source=source) if isinstance(body, bytes) else body
    tree = _parse(markup)
    if tree is None:
        raise SkipSource(source, "no text to index (empty document)", kind="empty")
    metadata = html_metadata(tree, source)
    items = _items_by_trafilatura(tree, source, metadata.get("title", ""))
    if items is None:
        tree = _parse(markup)
        items = _items_by_rules(tree)
    title = _pick_title(items) or metadata.get("title") or _title_from_source(source)
    metadata.pop("title", None)
    kept = [_rendered(i) for i in items if i[0] == "heading" or i[3]]
    sections = _sections([i for i in kept if i[0] == "heading" or i[1]], title)
    return Document(source=source, title=title, sections=sections, metadata=metadata)


def _parse(markup: str):
    import lxml.html
    from lxml.etree import ParserError

    # lxml refuses a str that still carries an XML encoding declaration (XHTML, DocBook output).
    markup = _XML_DECLARATION.sub("", markup, count=1)
    if not markup.strip():
        return None
    global _PARSER
    if _PARSER is None:
        # The settings trafilatura parses with: it expects no comment nodes in the tree
        # (text after a comment inside a paragraph would be lost otherwise).
        _PARSER = lxml.html.HTMLParser(collect_ids=False, default_doctype=False,
                                       remove_comments=True, remove_pis=True)
    try:
        return lxml.html.document_fromstring(markup, parser=_PARSER)
    except (ParserError, ValueError):
        return None


_PARSER = None
_XML_DECLARATION = re.compile(r"\A\s*<\?xml[^>]*>")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MODIFIED_META = ("article:modified_time", "og:updated_time", "last-modified", "dcterms.modified",
                  "dc.date.modified", "datemodified", "modified")
_JSON_MODIFIED = re.compile(r'"dateModified"\s*:\s*"([^"]+)"')


def html_metadata(tree, source: str) -> dict[str, str]:
    """title, description, author, published, modified, language and canonical, where present.

    Meta tags and JSON-LD are read by trafilatura's metadata functions and the published date
    by htmldate (fast settings); the modified date comes from meta tags and JSON-LD only, as a
    second htmldate pass costs more than the rest of the metadata.
    """
    from htmldate import find_date
    from trafilatura.metadata import examine_meta, extract_meta_json

    found = extract_meta_json(tree, examine_meta(tree))
    if not found.title:
        found.title = tree.findtext(".//title")
    if not found.url:
        link = tree.find(".//link[@rel='canonical']")
        found.url = link.get("href") if link is not None else None
    meta: dict[str, str] = {}
    for key, value in (("title", found.title), ("description", found.description),
                       ("author", found.author), ("canonical", found.url)):
        if value and value.strip():
            meta[key] = " ".join(value.split())
    url = source if "://" in source else None  # a date in the URL is the cheapest clue
    published = find_date(tree, url=url, extensive_search=False, original_date=True)
    modified = _meta_modified(tree)
    if published:
        meta["published"] = published
    if modified and modified != published:
        meta["modified"] = modified
    language = tree.get("lang") or tree.get("xml:lang") or found.language
    if not language:
        for node in tree.iterfind(".//meta[@http-equiv]"):
            if node.get("http-equiv", "").lower() == "content-language" and node.get("content"):
                language = node.get("content")
    if language and language.strip():
        meta["language"] = language.strip().split(",")[0].replace("_", "-")
    return meta


def _meta_modified(tree) -> str | None:
    for node in tree.iterfind(".//meta"):
        key = (node.get("property") or node.get("name") or node.get("itemprop") or "").lower()
        if key in _MODIFIED_META or (node.get("http-equiv") or "").lower() == "last-modified":
            match = _ISO_DATE.search(node.get("content") or "")
            if match:
                return match.group(0)
    for script in tree.iterfind(".//script[@type='application/ld+json']"):
        match = _JSON_MODIFIED.search(script.text or "")
        if match and _ISO_DATE.match(match.group(1)):
            return match.group(1)[:10]
    return None


def _items_by_trafilatura(tree, source: str, page_title: str = "") -> list[tuple] | None:
    """Walk the whole page, keeping the text blocks that trafilatura counts as the article."""
    from trafilatura import bare_extraction

    url = source if "://" in source else None
    # trafilatura works on its own copy of the tree. Comments (reader comments) are left out,
    # tables kept; favor_precision trims link lists and teasers at the article's edges.
    result = bare_extraction(tree, url=url, include_comments=False, include_tables=True,
                             favor_precision=True, with_metadata=False)
    article = getattr(result, "text", None) if result is not None else None
    if not article or not article.strip():
        return None
    _strip(tree, DROP_ALWAYS + ("nav", "aside", "footer"))
    body = tree.find("body")
    walker = _Walker()
    items = walker.run(body if body is not None else tree)
    selected = _select(items, article, page_title, walker.sources)
    return selected if any(i[0] == "text" and i[3] for i in selected) else None


def _items_by_rules(tree) -> list[tuple]:
    """Without trafilatura's verdict: drop page chrome by tag, role and class name; keep the rest."""
    _strip(tree, DROP_ALWAYS + DROP_CHROME)
    _drop_chrome(tree)
    return _Walker().run(_main_root(tree))


def _strip(tree, tags: tuple[str, ...]) -> None:
    from lxml import etree

    etree.strip_elements(tree, etree.Comment, *tags, with_tail=False)


def _drop_chrome(tree) -> None:
    for element in list(tree.iter()):
        if not isinstance(element.tag, str) or element.tag in ("html", "body", "main", "article"):
            continue
        words = f"{element.get('class') or ''} {element.get('id') or ''}"
        role = (element.get("role") or "").lower()
        if role in ("navigation", "banner", "contentinfo", "complementary", "search") or (
            words.strip() and CHROME_PATTERN.search(words)
        ):
            if element.getparent() is not None and not _inside(element, ("pre", "code")):
                element.drop_tree()


def _inside(element, tags: tuple[str, ...]) -> bool:
    return any(a.tag in tags for a in element.iterancestors())


def _main_root(tree):
    articles = tree.findall(".//article")
    if articles:
        return max(articles, key=lambda a: len(a.text_content()))
    for candidate in (tree.find(".//main"), tree.find(".//*[@role='main']")):
        if candidate is not None:
            return candidate
    body = tree.find("body")
    return body if body is not None else tree


def _select(items: list[tuple], article: str, page_title: str = "",
            sources: dict[int, object] | None = None) -> list[tuple]:
    """Keep the text blocks whose word 4-grams are mostly in trafilatura's article text.

    A short block (under four words) is kept when it is a whole line of that text. Structured
    blocks that trafilatura pruned inside the article are restored (see `_restore_blocks`).
    Headings before the first kept block that trafilatura left out (kickers, standfirsts) go,
    unless they are the page's title. `sources`: the element each structured block came from.
    """
    title_words = " ".join(_WORD.findall(page_title.lower()))
    words = _WORD.findall(article.lower())
    counts = Counter(_fourgrams(words))
    grams = set(counts)
    lines = {" ".join(_WORD.findall(line.lower())) for line in article.split("\n")}
    # A 4-gram vouches for as many blocks as trafilatura's text has copies of it, so an article
    # that a page carries twice (a hidden or teaser copy) is kept once.
    claimed: Counter = Counter()
    spent: set = set()  # 4-grams claimed as often as trafilatura's text has them
    marks: list = []
    for item in items:
        if item[0] != "text":
            marks.append(None)
            continue
        block = _words(item)
        if len(block) >= 4:
            own = set(_fourgrams(block))
            hits = own & grams
            keep = len(hits) - len(hits & spent) >= 0.5 * len(own)
            if keep:
                claimed.update(hits)
                spent.update(g for g in hits if claimed[g] >= counts[g])
        else:
            keep = bool(block) and " ".join(block) in lines
        marks.append(keep)
    texts = [n for n, m in enumerate(marks) if m is not None]
    _restore_blocks(items, marks, texts, sources or {})
    _restore_sections(items, marks)
    first = next((n for n in texts if marks[n]), len(items))
    selected = []
    for n, (item, mark) in enumerate(zip(items, marks, strict=True)):
        if mark is not None:
            selected.append((item[0], item[1], item[2], mark))
        else:
            heading = " ".join(_WORD.findall(item[2].lower()))
            if n > first or item[1] == 1 or heading in lines or (heading and heading in title_words):
                selected.append(item)
    return selected


# Block kinds that trafilatura prunes from inside an article: code in highlighted markup
# (MkDocs), tables, lists and definition lists directly under <body> or in containers it does
# not score (case 08-lists). Paragraphs are not among them: the ones it drops between kept
# paragraphs are mostly captions, bylines and "read more" teasers (restoring them cost 0.011 F1
# on the extraction benchmark).
RESTORED_BLOCKS = ("pre", "table", "list", "dl")


def _restore_blocks(items: list[tuple], marks: list, texts: list[int], sources: dict[int, object]) -> None:
    """Keep the structured blocks trafilatura dropped that lie inside the article.

    Inside means: between two kept blocks (no dropped paragraph in the way), or right after a
    kept block, when that block announces it with a colon ("References:", "in order of
    importance:") or it is a list. A block in a box whose class or id names page chrome or
    media (share bar, related posts, gallery) stays out, and so does a list that is mostly
    link text unless it is announced: between paragraphs that is a "related articles" list.
    A definition list right after the article without an announcement is its metadata
    ("Author: ... Publish date: ...") on news pages, and stays out.
    """
    kept_before, waiting = False, []  # dropped blocks since the last block that decides
    for n in texts:
        kind = items[n][2]
        if not marks[n] and kind in RESTORED_BLOCKS and not _boxed(sources.get(n)) \
                and not (kind == "list" and _link_list(items[n][1])):
            waiting.append(n)
            continue
        if marks[n] and kept_before:
            for k in waiting:
                marks[k] = True
        kept_before, waiting = marks[n], []
    for n, m in zip(texts, texts[1:]):
        if not marks[n] or marks[m] or m != n + 1 or items[m][2] not in RESTORED_BLOCKS \
                or _boxed(sources.get(m)):
            continue
        lead = items[n][1]
        announced = isinstance(lead, str) and lead.rstrip().endswith(":")
        if announced or (items[m][2] == "list" and not _link_list(items[m][1])):
            marks[m] = True


def _boxed(element) -> bool:
    """True when the element or an ancestor has a class or id that names page chrome or media.

    Checked only for the blocks that could be restored (a few per page), not while walking.
    """
    while element is not None and element.tag not in ("body", "html"):
        words = f"{element.get('class') or ''} {element.get('id') or ''}"
        if words.strip() and (CHROME_PATTERN.search(words) or MEDIA_PATTERN.search(words)):
            return True
        element = element.getparent()
    return False


def _link_list(lst) -> bool:
    """A list whose words are mostly link text (or one with no words)."""
    total = len("".join(lst.itertext()).split())
    linked = sum(len("".join(a.itertext()).split()) for a in lst.iter("a"))
    return total == 0 or linked >= 0.5 * total


def _restore_sections(items: list[tuple], marks: list) -> None:
    """Keep whole sections trafilatura dropped between kept ones, where headings have anchors.

    trafilatura prunes elements whose id or class looks like chrome ("menu", "navigation",
    "comments"); documentation generators derive section ids from heading text, so a section
    titled "Menus" vanishes with its content. A run of sections with no kept text, each headed
    by an anchored heading, that lies between kept text is part of the article. Headings
    without anchors (promos and teasers on news pages rarely have them) are left alone.
    """
    segments: list[tuple[int, list[int]]] = []  # (heading index, text indexes under it)
    for n, item in enumerate(items):
        if item[0] == "heading":
            segments.append((n, []))
        elif segments:
            segments[-1][1].append(n)
    kept = [any(marks[k] for k in texts) for _, texts in segments]
    run: list[int] = []
    seen_kept = any(marks[n] for n in range(segments[0][0])) if segments else False
    for index, (heading, texts) in enumerate(segments):
        if kept[index]:
            if seen_kept:
                for k in run:
                    for n in segments[k][1]:
                        marks[n] = True
            seen_kept, run = True, []
        elif items[heading][3] and texts:
            run.append(index)
        elif texts or not items[heading][3]:
            run = []


_WORD = re.compile(r"\w+")


def _fourgrams(words: list[str]):
    return zip(words, words[1:], words[2:], words[3:], strict=False)


def _rendered(item: tuple) -> tuple:
    """A text item with its list or table (kept as an element until now) written out as text."""
    if item[0] != "text" or isinstance(item[1], str):
        return item
    text = "\n".join(_list_lines(item[1])) if item[2] == "list" else _table_text(item[1])
    return (item[0], text, item[2], item[3])


def _words(item: tuple) -> list[str]:
    text = _MARKER.sub("", item[1]) if isinstance(item[1], str) else " ".join(item[1].itertext())
    return _WORD.findall(text.lower())


_MARKER = re.compile(r"\A(?:\d+\.|-) ")  # a list marker the walker put in front of a step


def _pick_title(items: list[tuple]) -> str:
    """The h1 nearest before the first kept block, else the first h1 after it."""
    first = next((n for n, i in enumerate(items) if i[0] == "text" and i[3]), len(items))
    h1s = [(n, i[2]) for n, i in enumerate(items) if i[0] == "heading" and i[1] == 1]
    before = [t for n, t in h1s if n < first]
    return before[-1] if before else (h1s[0][1] if h1s else "")


def _text(element, skip=(), pre: bool = False) -> str:
    """Text of an element: <br> and block children become line breaks, comments are left out."""
    parts: list[str] = []
    _collect(element, parts, skip, pre)
    return "".join(parts)


def _collect(element, parts: list[str], skip, pre: bool = False) -> None:
    # Line breaks in HTML source are spaces, except inside <pre>.
    if element.text and isinstance(element.tag, str):
        parts.append(element.text if pre else element.text.replace("\n", " "))
    for child in element:
        if isinstance(child.tag, str) and child not in skip:
            if child.tag == "br":
                parts.append("\n")
            elif child.tag in BLOCK_TAGS or child.tag in LINE_TAGS:
                parts.append("\n")
                _collect(child, parts, skip, pre or child.tag == "pre")
                parts.append("\n")
            else:
                _collect(child, parts, skip, pre)
        if child.tail:
            parts.append(child.tail if pre else child.tail.replace("\n", " "))


def _clean(text: str) -> str:
    lines = (_SPACE.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _line(element, skip=()) -> str:
    return _clean(_text(element, skip)).replace("\n", " ")


_PERMALINK = "¶#§\u200b\uf0c1 "  # permalink signs that doc generators append to headings


class _Walker:
    """Flattens an element tree into headings and text blocks, in document order.

    Items: ("heading", level, text, anchor) and ("text", text, kind, kept).
    """

    def __init__(self) -> None:
        self.items: list[tuple] = []
        self._buffer: list[str] = []
        self._heading: tuple | None = None
        self.sources: dict[int, object] = {}  # item index -> element, for structured blocks

    def run(self, root) -> list[tuple]:
        self.walk(root)
        self.flush()
        return self.items

    def flush(self) -> None:
        if not self._buffer:
            return
        text = "".join(self._buffer)
        self._buffer = []
        if not text.isspace():
            text = _clean(text)
            if text:
                self.items.append(("text", text, "p", True))

    def text(self, text: str, kind: str) -> None:
        if text.strip():
            self.items.append(("text", text, kind, True))

    def walk(self, element) -> None:
        if element.text:
            self._buffer.append(element.text.replace("\n", " "))
        for child in element:
            tag = child.tag
            if isinstance(tag, str):
                self.element(child, tag)
            if child.tail:
                self._buffer.append(child.tail.replace("\n", " "))

    def element(self, child, tag: str) -> None:
        start = len(self.items)
        self._element(child, tag)
        if tag in _STRUCTURED:
            for n in range(start, len(self.items)):
                self.sources.setdefault(n, child)

    def _element(self, child, tag: str) -> None:
        if tag in HEADINGS:
            self.flush()
            text = _line(child).rstrip(_PERMALINK).strip()
            if text:
                self._heading = ("heading", HEADINGS[tag], text, _anchor(child))
                self.items.append(self._heading)
        elif tag == "pre":
            self.flush()
            self.text(_text(child, pre=True).strip("\n").rstrip(), "pre")
        elif tag in ("ul", "ol"):
            self.flush()
            self.list(child)
        elif tag == "table":
            self.flush()
            if _layout_table(child):
                self.walk(child)
                self.flush()
            else:
                self.items.append(("text", child, "table", True))
        elif tag == "dl":
            self.flush()
            self.definitions(child)
        elif tag == "br":
            self._buffer.append("\n")
        elif tag in BLOCK_TAGS:
            self.flush()
            self.walk(child)
            self.flush()
        else:
            self.walk(child)

    def list(self, lst) -> None:
        if lst.find(".//pre") is None and lst.find(".//table") is None:
            self.items.append(("text", lst, "list", True))  # rendered once known to be kept
            return
        # Steps with code or tables in them: each item is walked so its code stays verbatim.
        # Text outside the items (a lead line before the first <li>) is kept as a paragraph.
        number = 0
        if lst.text:
            self._buffer.append(lst.text.replace("\n", " "))
        for item in lst:
            if item.tag == "li":
                number += 1
                self.flush()
                start = len(self.items)
                self.walk(item)
                self.flush()
                first = self.items[start] if len(self.items) > start else None
                if first is not None and first[0] == "text" and first[2] == "p":
                    marker = f"{number}." if lst.tag == "ol" else "-"
                    self.items[start] = ("text", f"{marker} {first[1]}", "p", True)
            elif isinstance(item.tag, str):
                self.element(item, item.tag)
            if item.tail:
                self._buffer.append(item.tail.replace("\n", " "))
        self.flush()

    def definitions(self, dl) -> None:
        lines: list[str] = [" ".join(dl.text.split())] if dl.text and dl.text.strip() else []
        enclosing = self._heading
        for child in _definition_entries(dl):
            if child.tag == "dt":
                term = _line(child).rstrip(_PERMALINK).strip()
                anchor = child.get("id")
                if anchor and enclosing is not None and "sig" in (child.get("class") or ""):
                    # An API object in Sphinx output (json.dump): its own section, deep-linkable,
                    # one level below the section (or class) it is documented in.
                    if lines:
                        self.text("\n".join(lines), "dl")
                        lines = []
                    self._heading = ("heading", min(enclosing[1] + 1, 6), anchor, anchor)
                    self.items.append(self._heading)
                lines.append(term)
            elif child.tag == "dd":
                blocks = [c for c in child.iter() if c is not child and c.tag in DD_BLOCKS]
                if blocks and not (len(blocks) == 1 and blocks[0].tag == "p"):
                    if lines:
                        self.text("\n".join(lines), "dl")
                        lines = []
                    self.walk(child)
                    self.flush()
                else:
                    lines.append("  " + _line(child))
        if lines:
            self.text("\n".join(lines), "dl")
        if self._heading is not enclosing:
            # Back to the enclosing section: text after the list belongs to it again.
            self._heading = enclosing
            self.items.append(enclosing)


def _definition_entries(dl):
    """The <dt> and <dd> of a definition list, also those grouped in <div>s (HTML allows it)."""
    for child in dl:
        if child.tag == "div":
            yield from _definition_entries(child)
        elif child.tag in ("dt", "dd"):
            yield child


DD_BLOCKS = {"p", "pre", "table", "ul", "ol", "dl", "div"}
_STRUCTURED = {"pre", "table", "ul", "ol", "dl"}  # tags whose blocks _restore_blocks weighs
LINE_TAGS = {"tr", "ul", "ol", "dl", "table", "pre", "hr"} | set(HEADINGS)


def _anchor(heading) -> str | None:
    """The fragment that links to a heading: its id, its permalink, or its section's id."""
    if heading.get("id"):
        return heading.get("id")
    for link in heading.iter("a"):
        href = link.get("href") or ""
        if href.startswith("#") and len(href) > 1 and not link.text_content().strip(_PERMALINK):
            return href[1:]
    for inner in heading.iterdescendants():
        if isinstance(inner.tag, str) and (inner.get("id") or (inner.tag == "a" and inner.get("name"))):
            return inner.get("id") or inner.get("name")
    previous = heading.getprevious()
    if previous is not None and previous.tag in ("a", "span") and previous.get("id") \
            and not previous.text_content().strip():
        return previous.get("id")
    for depth, ancestor in enumerate(heading.iterancestors()):
        if ancestor.tag in ("body", "html") or depth > 4:
            break
        if ancestor.get("id") and (ancestor.tag == "section" or _SECTION_CLASS.search(ancestor.get("class") or "")):
            first = next(ancestor.iter(*HEADINGS), None)
            return ancestor.get("id") if first is heading else None
    return None


_SECTION_CLASS = re.compile(r"\b(sect\d|section|chapter|appendix|preface|refentry|refsect\d|simplesect)\b")


def _layout_table(table) -> bool:
    """A table used for page layout (nested tables, headings, long cells), not for data."""
    # (next(..., None), not any(): an element without children is false in a boolean test)
    if table.find(".//table") is not None or next(table.iter(*HEADINGS), None) is not None:
        return True
    return any(len(cell.text_content()) > 2000 for cell in table.iter("td"))


def _list_lines(lst, depth: int = 0) -> list[str]:
    """A list as lines: "- item" or "1. item", nested lists indented under their item.

    Text directly in the list, outside any item (a lead line before the first <li>, invalid but
    common in hand-written pages), and elements other than <li> in it are lines of their own,
    without a marker.
    """
    lines: list[str] = []
    indent = "  " * depth

    def loose(text: str | None) -> None:
        text = " ".join((text or "").split())
        if text:
            lines.append(indent + text)

    loose(lst.text)
    number = 0
    for item in lst:
        if item.tag in ("ul", "ol"):  # a list nested without its <li> (common, invalid)
            lines.extend(_list_lines(item, depth + 1))
        elif item.tag == "li":
            number += 1
            nested = [c for c in item if c.tag in ("ul", "ol")]
            marker = f"{number}." if lst.tag == "ol" else "-"
            text = _line(item, skip=nested)
            if text:
                lines.append(f"{indent}{marker} {text}")
            for sub in nested:
                lines.extend(_list_lines(sub, depth + 1))
        elif isinstance(item.tag, str):
            loose(_line(item))
        loose(item.tail)
    return lines


def _table_text(table) -> str:
    rows = []
    caption = table.find("caption")
    if caption is not None:
        rows.append(_line(caption))
    for tr in table.iter("tr"):
        cells = [_line(c) for c in tr if c.tag in ("th", "td")]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _sections(items: list[tuple], title: str) -> tuple[Section, ...]:
    sections: list[Section] = []
    path: list[tuple[int, str, str | None]] = []  # (level, text, anchor)
    texts: list[str] = []

    def close() -> None:
        if texts:
            headings = tuple(h for _, h, _ in path)
            if headings and headings[0] == title:
                headings = headings[1:]
            anchor = path[-1][2] if path else None
            sections.append(Section(headings, "\n\n".join(texts), anchor))
            texts.clear()

    for item in items:
        if item[0] == "heading":
            close()
            _, level, text, anchor = item
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, text, anchor))
        else:
            texts.append(item[1])
    close()
    return tuple(sections)


def document_text(doc: Document) -> str:
    """The document as plain text: each section's heading on its own line, then its text."""
    parts: list[str] = []
    previous: tuple[str, ...] = ()
    for section in doc.sections:
        if section.heading_path and section.heading_path != previous:
            parts.append(section.heading_path[-1])
        previous = section.heading_path
        parts.append(section.text)
    return "\n\n".join(parts)


def document_dict(doc: Document) -> dict:
    """The document as JSON-ready data: what `kbindex extract --json` prints."""
    return {
        "source": doc.source,
        "title": doc.title,
        "metadata": dict(doc.metadata),
        "sections": [
            {"heading": s.heading, "heading_path": list(s.heading_path), "anchor": s.anchor,
             "text": s.text}
            for s in doc.sections
        ],
    }


def _title_from_source(source: str) -> str:
    path = urlsplit(source).path if "://" in source else source
    stem = PurePosixPath(path.rstrip("/")).stem or urlsplit(source).netloc
    return stem.replace("-", " ").replace("_", " ").strip() or source


# ---------------------------------------------------------------- Markdown, reST, text


# Front matter keys, named as in HTML metadata so that one --where works across formats.
_FRONT_MATTER_KEYS = {
    "title": "title", "description": "description", "summary": "description", "author": "author",
    "date": "published", "published": "published", "modified": "modified", "updated": "modified",
    "lastmod": "modified", "lang": "language", "language": "language",
}


def extract_markdown(text: str, source: str) -> Document:
    """Markdown: ATX and setext headings become sections (fenced code is not a heading)."""
    from markdown_it import MarkdownIt

    metadata: dict[str, str] = {}
    front = re.match(r"\A---\n(.*?)\n---\n", text, re.DOTALL)
    if front:
        for line in front.group(1).splitlines():
            key, sep, value = line.partition(":")
            name = _FRONT_MATTER_KEYS.get(key.strip().lower())
            if sep and name and value.strip().strip("\"'"):
                metadata[name] = value.strip().strip("\"'")
        text = text[front.end():]
    lines = text.split("\n")
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    headings = []  # (start line, end line, level, text)
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.map:
            headings.append((tok.map[0], tok.map[1], int(tok.tag[1]), tokens[i + 1].content))
    return _outline(lines, headings, source, metadata)


_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")


def extract_rst(text: str, source: str) -> Document:
    """reStructuredText: underlined (and overlined) titles become sections."""
    lines = text.split("\n")
    styles: list[tuple[bool, str]] = []
    headings = []
    i = 0
    while i < len(lines) - 1:
        over = bool(_RST_UNDERLINE.match(lines[i])) and i + 2 < len(lines)
        title_i = i + 1 if over else i
        under_i = title_i + 1
        if under_i < len(lines):
            title = lines[title_i].strip()
            under = _RST_UNDERLINE.match(lines[under_i])
            if (
                title
                and not _RST_UNDERLINE.match(lines[title_i])
                and under
                and len(lines[under_i].rstrip()) >= len(title)
                and (not over or lines[i].strip()[:1] == under.group(1))
            ):
                style = (over, under.group(1))
                if style not in styles:
                    styles.append(style)
                headings.append((i, under_i + 1, styles.index(style) + 1, title))
                i = under_i + 1
                continue
        i += 1
    return _outline(lines, headings, source, {})


def _outline(lines, headings, source, metadata) -> Document:
    """Sections from heading line ranges [(start, end, level, text)] over the text's lines."""
    title = metadata.pop("title", "") if metadata else ""
    if not title:
        title = next((h[3] for h in headings if h[2] == min(x[2] for x in headings)), "")
    title = title or _title_from_source(source)
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    bounds = [(0, 0, 0, None)] + headings + [(len(lines), len(lines), 0, None)]
    for (_, end, level, heading), nxt in zip(bounds, bounds[1:], strict=False):
        if heading is not None:
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, heading))
        body = "\n".join(lines[end:nxt[0]]).strip("\n")
        if body.strip():
            names = tuple(h for _, h in path)
            if names and names[0] == title:
                names = names[1:]
            sections.append(Section(names, _tidy(body), _slug(path[-1][1]) if path else None))
    return Document(source=source, title=title, sections=tuple(sections), metadata=metadata)


def extract_plain(text: str, source: str) -> Document:
    """Plain text: a short first line is the title; the rest is one section."""
    stripped = text.strip("\n")
    first, _, rest = stripped.partition("\n")
    if first.strip() and len(first) <= 120 and rest.strip():
        title, body = first.strip(), rest
    else:
        title, body = _title_from_source(source), stripped
    sections = (Section((), _tidy(body)),) if body.strip() else ()
    return Document(source=source, title=title, sections=sections)


# ---------------------------------------------------------------- PDF, DOCX


def extract_pdf(body: bytes, source: str) -> Document:
    """The text layer of a PDF, one section per page; the anchor `page=N` opens that page.

    A PDF without a text layer (a scan) is skipped rather than indexed empty: OCR is out of scope.
    """
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(body))
        if reader.is_encrypted and not reader.decrypt(""):
            raise SkipSource(source, "encrypted PDF, not indexed", kind="encrypted")
        sections = []
        for number, pdf_page in enumerate(reader.pages, start=1):
            text = _tidy(_SPACE.sub(" ", pdf_page.extract_text() or ""))
            if text.strip():
                sections.append(Section((f"page {number}",), text, f"page={number}"))
        info = reader.metadata
        pages = len(reader.pages)
    except SkipSource:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise SkipSource(source, f"unreadable PDF: {exc}", kind="unreadable") from exc
    if not sections:
        raise SkipSource(source, "PDF has no text layer (scanned?), not indexed", kind="no_text_layer")
    metadata: dict[str, str | int] = {"pages": pages}
    title = ""
    if info is not None:
        title = (info.title or "").strip()
        for key, value in (("author", info.author), ("description", info.subject)):
            if value and str(value).strip():
                metadata[key] = str(value).strip()
        for key, attr in (("published", "creation_date"), ("modified", "modification_date")):
            try:
                when = getattr(info, attr)
            except (ValueError, TypeError):  # a malformed date string in the PDF
                when = None
            if when is not None:
                metadata[key] = when.date().isoformat()
    title = title or _title_from_source(source)
    return Document(source=source, title=title, sections=tuple(sections), metadata=metadata)


def extract_docx(body: bytes, source: str) -> Document:
    """A Word document: Heading 1-9 paragraphs become sections; lists and tables kept as text.

    Every block is read, also those nested: paragraphs and tables inside content controls
    (w:sdt), and inside table cells the cell's paragraphs, lists and nested tables.
    """
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(body))
        blocks = list(_docx_blocks(document.element.body, document._body))
        props = document.core_properties
    except Exception as exc:  # python-docx raises zip, XML and key errors alike on a bad file
        raise SkipSource(source, f"unreadable DOCX: {exc}", kind="unreadable") from exc
    items: list[tuple] = []
    title = ""
    for block in blocks:
        if isinstance(block, Table):
            rows = _docx_rows(block)
            if rows:
                items.append(("text", "\n".join(rows), "table", True))
            continue
        text = block.text.strip()
        if not text:
            continue
        style = _docx_style(block)
        level = re.match(r"Heading (\d)$", style)
        if style == "Title" and not title:
            title = text
            items.append(("heading", 1, text, None))
        elif level:
            items.append(("heading", int(level.group(1)) + 1, text, None))
        elif style.startswith("List"):
            run = items[-1][1].split("\n") if items and items[-1][2:3] == ("list",) else []
            marker = f"{len(run) + 1}." if "Number" in style else "-"
            line = f"{marker} {text}"
            if run:
                items[-1] = ("text", items[-1][1] + "\n" + line, "list", True)
            else:
                items.append(("text", line, "list", True))
        else:
            items.append(("text", text, "p", True))
    metadata: dict[str, str] = {}
    for key, value in (("author", props.author), ("description", props.subject),
                       ("language", props.language)):
        if value and value.strip():
            metadata[key] = value.strip()
    for key, value in (("published", props.created), ("modified", props.modified)):
        if value is not None:
            metadata[key] = value.date().isoformat()
    title = title or (props.title or "").strip() or _title_from_source(source)
    return Document(source=source, title=title, sections=_sections(items, title), metadata=metadata)


def _docx_blocks(element, parent):
    """Paragraphs and tables under a body or cell element, in order, content controls opened.

    python-docx's iter_inner_content() yields only direct w:p and w:tbl children, so text in a
    content control (a w:sdt block: templates, cover pages, tables of contents) was lost.
    """
    from docx.oxml.ns import qn
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for child in element.iterchildren():
        if child.tag == qn("w:p"):
            yield Paragraph(child, parent)
        elif child.tag == qn("w:tbl"):
            yield Table(child, parent)
        elif child.tag == qn("w:sdt"):
            content = child.find(qn("w:sdtContent"))
            if content is not None:
                yield from _docx_blocks(content, parent)


def _docx_rows(table) -> list[str]:
    """A table's rows as "cell | cell" lines; a merged cell (repeated once per grid column by
    python-docx) is written once."""
    rows = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = _docx_cell_text(cell)
            if not cells or cells[-1] != text:
                cells.append(text)
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


def _docx_cell_text(cell) -> str:
    """A cell's text on one line: its paragraphs (list items with their marker), and a table
    nested in it as its rows in brackets, "[a | b; c | d]" (cell.text leaves nested tables out)."""
    from docx.table import Table

    parts: list[str] = []
    for block in _docx_blocks(cell._tc, cell):
        if isinstance(block, Table):
            rows = _docx_rows(block)
            if rows:
                parts.append("[" + "; ".join(rows) + "]")
            continue
        text = " ".join(block.text.split())
        if text:
            parts.append(f"- {text}" if _docx_style(block).startswith("List") else text)
    return " ".join(parts)


def _docx_style(paragraph) -> str:
    try:
        return paragraph.style.name if paragraph.style is not None else ""
    except (KeyError, ValueError):  # a style id the styles part does not define
        return ""


def _tidy(text: str) -> str:
    text = re.sub(r"\n{3,}", "\n\n", text)
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def _slug(text: str) -> str:
    return re.sub(r"[^\w]+", "-", text.lower()).strip("-")
