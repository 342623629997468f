"""Bytes -> Document: decode, find the article, keep its structure. Pure: no I/O."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from bs4 import BeautifulSoup, Comment, NavigableString, Tag, UnicodeDammit

from kbindex.errors import SkipSource
from kbindex.records import Document, Page, Section

HTML_TYPES = ("text/html", "application/xhtml+xml")
MARKDOWN_EXTENSIONS = (".md", ".markdown")
RST_EXTENSIONS = (".rst",)
HTML_EXTENSIONS = (".html", ".htm", ".xhtml")

# Elements that are never article text.
DROP_TAGS = [
    "script", "style", "template", "noscript", "nav", "header", "footer", "aside", "form",
    "iframe", "svg", "canvas", "button", "input", "select", "textarea", "object", "embed",
    "dialog", "menu",
]
# id/class words of page chrome: comment threads, "related/popular posts" widgets, share bars.
CHROME_PATTERN = re.compile(
    r"(^|[-_\s])(comments?|comment-list|respond|disqus|related|popular|recent-posts|sidebar|"
    r"widget|share|sharing|social|newsletter|subscribe|breadcrumbs?|cookie|banner|advert|ads|"
    r"promo|pagination|pager|toc-sidebar|site-header|site-footer|menu)($|[-_\s])",
    re.IGNORECASE,
)
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
BLOCK_TAGS = {
    "p", "div", "section", "article", "main", "blockquote", "figure", "figcaption", "li",
    "address", "details", "summary", "center", "body", "html", "hgroup", "dd", "dt", "td", "th",
}
_SPACE = re.compile(r"[ \t\r\f\v\u00a0]+")


def extract(page: Page) -> Document:
    """The article of a page or file as a Document; raises SkipSource when there is nothing."""
    kind = _kind(page)
    if kind == "binary":
        raise SkipSource(page.source, "binary file, not text", kind="binary")
    text_or_bytes = page.body
    if kind == "html":
        doc = extract_html(text_or_bytes, page.source, page.content_type)
    else:
        text = decode_text(page.body, page.source, page.content_type)
        if kind == "markdown":
            doc = extract_markdown(text, page.source)
        elif kind == "rst":
            doc = extract_rst(text, page.source)
        else:
            doc = extract_plain(text, page.source)
    if not doc.text.strip():
        raise SkipSource(page.source, "no text to index (empty document)", kind="empty")
    return doc


def _kind(page: Page) -> str:
    head = page.body[:8192]
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "binary"
    ctype = (page.content_type or "").split(";")[0].strip().lower()
    suffix = PurePosixPath(urlsplit(page.source).path if "://" in page.source else page.source)
    ext = suffix.suffix.lower()
    if ctype in HTML_TYPES or ext in HTML_EXTENSIONS:
        return "html"
    if ctype == "text/markdown" or ext in MARKDOWN_EXTENSIONS:
        return "markdown"
    if ctype == "text/x-rst" or ext in RST_EXTENSIONS:
        return "rst"
    if not ctype and re.match(rb"\s*(<!doctype html|<html)", head, re.IGNORECASE):
        return "html"
    return "text"


def _charset(content_type: str | None) -> str | None:
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type or "", re.IGNORECASE)
    return match.group(1) if match else None


def decode_text(body: bytes, source: str, content_type: str | None = None) -> str:
    """Decode text: declared charset, BOM, UTF-8, then detection."""
    declared = _charset(content_type)
    dammit = UnicodeDammit(
        body, known_definite_encodings=[declared] if declared else [], is_html=False
    )
    if dammit.unicode_markup is None:
        raise SkipSource(source, "cannot decode the file as text", kind="undecodable")
    return dammit.unicode_markup.replace("\r\n", "\n").replace("\r", "\n")


# ---------------------------------------------------------------- HTML


def extract_html(body: bytes | str, source: str, content_type: str | None = None) -> Document:
    """Article text of an HTML page, with its headings as sections."""
    declared = _charset(content_type)
    if isinstance(body, bytes):
        dammit = UnicodeDammit(
            body, known_definite_encodings=[declared] if declared else [], is_html=True
        )
        markup = dammit.unicode_markup or body.decode("utf-8", "replace")
    else:
        markup = body
    soup = BeautifulSoup(markup, "lxml")
    metadata = _html_metadata(soup)
    page_title = metadata.pop("page_title", "")
    for node in soup.find_all(string=lambda s: isinstance(s, Comment)):
        node.extract()
    for tag in soup.find_all(DROP_TAGS):
        tag.decompose()
    _drop_chrome(soup)
    root = _main_root(soup)
    blocks = _Blocks()
    blocks.walk(root)
    blocks.flush()
    h1 = next((b for b in blocks.items if b[0] == "heading" and b[1] == 1), None)
    title = (h1[2] if h1 else "") or page_title or _title_from_source(source)
    sections = _sections(blocks.items, title)
    return Document(source=source, title=title, sections=sections, metadata=metadata)


def _html_metadata(soup: BeautifulSoup) -> dict[str, str]:
    meta: dict[str, str] = {}
    if soup.title and soup.title.string:
        meta["page_title"] = _SPACE.sub(" ", soup.title.string).strip()
    for tag in soup.find_all("meta"):
        key = (tag.get("name") or tag.get("property") or "").lower()
        value = (tag.get("content") or "").strip()
        if not value:
            continue
        if key in ("description", "og:description") and "description" not in meta:
            meta["description"] = value
        elif key == "author":
            meta["author"] = value
    link = soup.find("link", rel=lambda r: r and "canonical" in r)
    if link and link.get("href"):
        meta["canonical"] = link["href"].strip()
    html = soup.find("html")
    if html and html.get("lang"):
        meta["language"] = html["lang"].strip()
    return meta


def _drop_chrome(soup: BeautifulSoup) -> None:
    # Matching tags are collected first and only they pay for the (slow) decomposed and
    # ancestor checks: on large pages those checks for every tag dominated extraction time.
    candidates = []
    for tag in soup.find_all(True):
        if tag.name in ("html", "body", "main", "article"):
            continue
        words = " ".join(tag.get("class") or []) + " " + (tag.get("id") or "")
        role = (tag.get("role") or "").lower()
        if role in ("navigation", "banner", "contentinfo", "complementary", "search") or (
            words.strip() and CHROME_PATTERN.search(words)
        ):
            candidates.append(tag)
    for tag in candidates:
        if tag.decomposed or tag.find_parent(["pre", "code"]):
            continue
        tag.decompose()


def _main_root(soup: BeautifulSoup) -> Tag:
    articles = soup.find_all("article")
    if articles:
        return max(articles, key=lambda a: len(a.get_text()))
    for candidate in (soup.find("main"), soup.find(attrs={"role": "main"})):
        if candidate is not None:
            return candidate
    return soup.body or soup


def _inline(tag: Tag | NavigableString) -> str:
    if isinstance(tag, NavigableString):
        return str(tag)
    parts = []
    for node in tag.descendants:
        if isinstance(node, NavigableString) and not isinstance(node, Comment):
            parts.append(str(node))
        elif isinstance(node, Tag) and node.name == "br":
            parts.append("\n")
    return "".join(parts)


def _clean(text: str) -> str:
    lines = (_SPACE.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


class _Blocks:
    """Flattens an element tree into headings and text blocks, in document order."""

    def __init__(self) -> None:
        self.items: list[tuple] = []  # ("heading", level, text, anchor) | ("text", str)
        self._buffer: list[str] = []

    def flush(self) -> None:
        text = _clean("".join(self._buffer))
        self._buffer = []
        if text:
            self.items.append(("text", text))

    def walk(self, element: Tag) -> None:
        for child in element.children:
            if isinstance(child, NavigableString):
                if not isinstance(child, Comment):
                    self._buffer.append(str(child))
                continue
            if not isinstance(child, Tag):
                continue
            name = child.name
            if name in HEADINGS:
                self.flush()
                anchor = child.get("id") or _inner_anchor(child)
                text = _clean(_inline(child)).replace("\n", " ").rstrip("¶#").strip()
                if text:
                    self.items.append(("heading", HEADINGS[name], text, anchor))
            elif name == "pre":
                self.flush()
                code = child.get_text().strip("\n")
                if code.strip():
                    self.items.append(("text", code))
            elif name in ("ul", "ol"):
                self.flush()
                self.items.append(("text", _list_text(child)))
            elif name == "table":
                self.flush()
                self.items.append(("text", _table_text(child)))
            elif name == "dl":
                self.flush()
                self.items.append(("text", _dl_text(child)))
            elif name == "br":
                self._buffer.append("\n")
            elif name in BLOCK_TAGS or _has_block(child):
                self.flush()
                self.walk(child)
                self.flush()
            else:
                self._buffer.append(_inline(child))


_NESTED_BLOCKS = frozenset(BLOCK_TAGS) | {"pre", "table", "ul", "ol"}


def _has_block(tag: Tag) -> bool:
    """Whether a block element is inside tag (a plain walk: Tag.find builds a filter per call,
    which on large pages cost more than the walk itself)."""
    return any(isinstance(node, Tag) and node.name in _NESTED_BLOCKS for node in tag.descendants)


def _inner_anchor(heading: Tag) -> str | None:
    inner = heading.find(attrs={"id": True})
    if inner is not None:
        return inner["id"]
    parent = heading.parent
    if parent is not None and parent.name == "section" and parent.get("id"):
        return parent["id"]
    return None


def _list_text(lst: Tag, depth: int = 0) -> str:
    lines = []
    ordered = lst.name == "ol"
    for n, item in enumerate(lst.find_all("li", recursive=False), start=1):
        nested = item.find_all(["ul", "ol"], recursive=False)
        for sub in nested:
            sub.extract()
        marker = f"{n}." if ordered else "-"
        text = _clean(_inline(item)).replace("\n", " ")
        lines.append("  " * depth + f"{marker} {text}")
        for sub in nested:
            lines.append(_list_text(sub, depth + 1))
    return "\n".join(line for line in lines if line.strip())


def _table_text(table: Tag) -> str:
    rows = []
    caption = table.find("caption")
    if caption:
        rows.append(_clean(_inline(caption)))
    for tr in table.find_all("tr"):
        cells = [_clean(_inline(c)).replace("\n", " ") for c in tr.find_all(["th", "td"])]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _dl_text(dl: Tag) -> str:
    lines = []
    for item in dl.find_all(["dt", "dd"], recursive=False):
        text = _clean(_inline(item)).replace("\n", " ")
        lines.append(text if item.name == "dt" else "  " + text)
    return "\n".join(lines)


def _sections(items: list[tuple], title: str) -> tuple[Section, ...]:
    sections: list[Section] = []
    path: list[tuple[int, str, str | None]] = []  # (level, text, anchor)
    texts: list[str] = []

    def close() -> None:
        if texts:
            headings = tuple(h for _, h, _ in path if h != title or len(path) > 1)
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


def _title_from_source(source: str) -> str:
    path = urlsplit(source).path if "://" in source else source
    stem = PurePosixPath(path.rstrip("/")).stem or urlsplit(source).netloc
    return stem.replace("-", " ").replace("_", " ").strip() or source


# ---------------------------------------------------------------- Markdown, reST, text


def extract_markdown(text: str, source: str) -> Document:
    """Markdown: ATX and setext headings become sections (fenced code is not a heading)."""
    from markdown_it import MarkdownIt

    metadata: dict[str, str] = {}
    front = re.match(r"\A---\n(.*?)\n---\n", text, re.DOTALL)
    if front:
        for line in front.group(1).splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() in ("title", "description", "author", "date"):
                metadata[key.strip()] = value.strip().strip("\"'")
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
    for (_start, end, level, heading), nxt in zip(bounds, bounds[1:]):
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


def _tidy(text: str) -> str:
    text = re.sub(r"\n{3,}", "\n\n", text)
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def _slug(text: str) -> str:
    return re.sub(r"[^\w]+", "-", text.lower()).strip("-")
