"""Frozen dataclasses that flow between pipeline stages.

sources -> Page (fetched bytes) -> Document (extracted text) -> Chunk -> store -> Hit
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


def text_hash(text: str) -> str:
    """Stable short hash of a text, used for document and chunk identity."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Page:
    """Raw bytes of one source, with the facts needed to decode and identify them."""

    source: str  # the page's name (crawl.page_name, after redirects), or absolute file path
    body: bytes
    content_type: str | None = None  # e.g. "text/html; charset=utf-8"; None for files
    url: str | None = None  # final URL after redirects (None for files)
    status: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    size: int | None = None  # file size in bytes
    mtime: float | None = None  # file modification time


@dataclass(frozen=True)
class Section:
    """A run of text under one heading path."""

    heading_path: tuple[str, ...]  # ("Install", "On Linux"); () for text before any heading
    text: str
    anchor: str | None = None  # the heading's id, for deep links

    @property
    def heading(self) -> str:
        return " > ".join(self.heading_path)


@dataclass(frozen=True)
class Document:
    """The article text of one source, split into sections."""

    source: str
    title: str
    sections: tuple[Section, ...]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections if s.text)

    @property
    def content_hash(self) -> str:
        return text_hash(self.title + "\n" + self.text)


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, sized to fit the embedding model."""

    id: str
    source: str
    title: str
    section: str  # heading path joined with " > "
    position: int  # 0-based order within the document
    text: str  # the chunk as stored and shown
    embed_text: str  # what is embedded: "Title > Section" context line + text
    doc_hash: str
    anchor: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """One search result."""

    rank: int
    score: float
    id: str
    source: str
    title: str
    section: str
    text: str
    anchor: str | None = None
    metadata: dict[str, str | int | float | bool] = field(default_factory=dict)
    vector_rank: int | None = None
    keyword_rank: int | None = None


@dataclass(frozen=True)
class Visit:
    """What a crawl learned from one HTML page, kept between runs (in the ledger).

    With it a page that answers 304 Not Modified is followed as if it had been read again: its
    links, canonical URL, meta robots and listing test are those stored here.
    """

    url: str  # the URL requested, by its identity (crawl.url_identity): what it is recalled by
    final: str  # where it led after redirects, as requested
    name: str  # the name the page went by: final's, or its trusted rel=canonical target's
    outcome: str  # "page" (handed on to be indexed), "listing", "noindex", "duplicate", "out_of_scope",
    #               "soft_404", "redirect" (a meta refresh stub: never recalled)
    etag: str | None = None
    last_modified: str | None = None
    links: tuple[str, ...] = ()  # absolute, as written, before scope filtering
    canonical: str | None = None
    noindex: bool = False
    nofollow: bool = False
    listing: bool = False
    thin: bool = False
    parser: int = 0  # the version of the crawler's page analysis that made it
    seen: str | None = field(default=None, compare=False)  # when (UTC, ISO 8601) the page was
    #                                                         read with what is recorded here
    fingerprint: str | None = None  # hash of its title and main text: a rel=canonical is trusted
    #                                 only to a target of the same text, also after a 304


# -- what an index run reports of each source (Indexer.on_event -> progress.Progress.event) ------


@dataclass(frozen=True)
class SourceEvent:
    """Something an index run did with one source; `what` names it in messages."""

    source: str

    what = "event"

    @property
    def detail(self) -> str:
        """The part of a message after the source ("" when there is nothing to add)."""
        return ""


@dataclass(frozen=True)
class Indexed(SourceEvent):
    """The source's chunks were written."""

    chunks: int = 0

    what = "indexed"

    @property
    def detail(self) -> str:
        return f"{self.chunks} chunks"


@dataclass(frozen=True)
class Unchanged(SourceEvent):
    """The source was found unchanged; nothing was written."""

    what = "unchanged"


@dataclass(frozen=True)
class Skipped(SourceEvent):
    """The source was deliberately not indexed (a listing page, a duplicate, an empty file...)."""

    reason: str = ""

    what = "skipped"

    @property
    def detail(self) -> str:
        return self.reason


@dataclass(frozen=True)
class Failed(SourceEvent):
    """The source could not be read or indexed; what it had in the index is kept."""

    reason: str = ""

    what = "failed"

    @property
    def detail(self) -> str:
        return self.reason


@dataclass(frozen=True)
class Pruned(SourceEvent):
    """The source is gone, and its chunks were deleted."""

    reason: str = ""

    what = "pruned"

    @property
    def detail(self) -> str:
        return self.reason
