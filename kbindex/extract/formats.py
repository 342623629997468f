"""Markdown, reStructuredText, plain text, PDF and Word documents: each to a Document with its
headings as sections."""

from __future__ import annotations

import io
import re

from kbindex.errors import SkipSource
from kbindex.extract.blocks import SPACE, make_sections, title_from_source
from kbindex.records import Document, Section

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
    title = title or title_from_source(source)
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
        title, body = title_from_source(source), stripped
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
            text = _tidy(SPACE.sub(" ", pdf_page.extract_text() or ""))
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
    title = title or title_from_source(source)
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
    title = title or (props.title or "").strip() or title_from_source(source)
    return Document(source=source, title=title, sections=make_sections(items, title), metadata=metadata)


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
