"""Bytes -> Document: decode, find the article, keep its structure. Pure: no I/O.

A page travels: `extract` tells what its bytes are (signatures, Content-Type, name), `encoding`
decodes text as a browser does, then `html` (trafilatura and our own block walk in `blocks`, with
the page-chrome rules of `chrome`, which the crawler shares) or `formats` (Markdown,
reStructuredText, plain text, PDF, Word) makes the Document. The package's public names are
re-exported here.
"""

from __future__ import annotations

import io
import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from kbindex.errors import SkipSource, SourceError
from kbindex.extract.encoding import decode, detect_encoding, undeclared_encoding
from kbindex.extract.formats import extract_docx, extract_markdown, extract_pdf, extract_plain, extract_rst
from kbindex.extract.html import extract_html, html_metadata, items_by_rules, parse_html, rendered
from kbindex.records import Document, Page

__all__ = [
    "DOCX_TYPE", "decode", "detect_encoding", "document_dict", "document_text", "extract",
    "extract_docx", "extract_html", "extract_markdown", "extract_or_error", "extract_pdf",
    "extract_plain", "extract_rst", "html_metadata", "items_by_rules", "looks_binary",
    "parse_html", "rendered", "undeclared_encoding",
]

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HTML_TYPES = ("text/html", "application/xhtml+xml")
MARKDOWN_EXTENSIONS = (".md", ".markdown")
RST_EXTENSIONS = (".rst",)
HTML_EXTENSIONS = (".html", ".htm", ".xhtml")


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
