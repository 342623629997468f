"""An lxml element tree flattened into headings and text blocks in document order (`Walker`), the
blocks written out as text (lists, tables, definition lists), and blocks made into Sections."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from kbindex.records import Section

HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
BLOCK_TAGS = {
    "p", "div", "section", "article", "main", "blockquote", "figure", "figcaption", "li",
    "address", "details", "summary", "center", "body", "html", "hgroup", "dd", "dt", "td", "th",
}
SPACE = re.compile(r"[ \t\r\f\v\u00a0]+")


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
    lines = (SPACE.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _line(element, skip=()) -> str:
    return _clean(_text(element, skip)).replace("\n", " ")


_PERMALINK = "¶#§\u200b\uf0c1 "  # permalink signs that doc generators append to headings


class Walker:
    """Flattens an element tree into headings and text blocks, in document order.

    Items: ("heading", level, text, anchor) and ("text", text, kind, kept).
    """

    def __init__(self) -> None:
        self.items: list[tuple] = []
        self._buffer: list[str] = []
        self._heading: tuple | None = None
        self.sources: dict[int, object] = {}  # item index -> element, for structured blocks

    def run(self, root) -> list[tuple]:
        """The items of the tree under `root`, in document order."""
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
_STRUCTURED = {"pre", "table", "ul", "ol", "dl"}  # tags whose blocks the restore step of html.py weighs
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


def list_lines(lst, depth: int = 0) -> list[str]:
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
            lines.extend(list_lines(item, depth + 1))
        elif item.tag == "li":
            number += 1
            nested = [c for c in item if c.tag in ("ul", "ol")]
            marker = f"{number}." if lst.tag == "ol" else "-"
            text = _line(item, skip=nested)
            if text:
                lines.append(f"{indent}{marker} {text}")
            for sub in nested:
                lines.extend(list_lines(sub, depth + 1))
        elif isinstance(item.tag, str):
            loose(_line(item))
        loose(item.tail)
    return lines


def table_text(table) -> str:
    """A data table as lines: its caption, then one "cell | cell" line per row with text."""
    rows = []
    caption = table.find("caption")
    if caption is not None:
        rows.append(_line(caption))
    for tr in table.iter("tr"):
        cells = [_line(c) for c in tr if c.tag in ("th", "td")]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def make_sections(items: list[tuple], title: str) -> tuple[Section, ...]:
    """Walker items (headings and kept texts) as Sections: each run of texts under its heading
    path (the document title left out of the path), with the anchor of the nearest heading."""
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


def title_from_source(source: str) -> str:
    """A title for a document that has none: the file or URL path's last name without its
    extension, dashes and underscores as spaces (the host for a bare URL)."""
    path = urlsplit(source).path if "://" in source else source
    stem = PurePosixPath(path.rstrip("/")).stem or urlsplit(source).netloc
    return stem.replace("-", " ").replace("_", " ").strip() or source
