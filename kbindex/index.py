"""Orchestration: sources -> pages -> documents -> chunks -> vectors -> store."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from kbindex.chunk import ChunkConfig, chunk_document
from kbindex.config import DEFAULT_MAX_BYTES, Settings
from kbindex.embed import Embedder
from kbindex.errors import SkipSource, SourceError, UsageError
from kbindex.extract import extract
from kbindex.fetch import Fetcher, check_scheme
from kbindex.files import read_file, walk
from kbindex.lexical import LexicalIndex
from kbindex.records import Chunk, Document, Page
from kbindex.store import Collection, Store

EMBED_BATCH = 64  # chunks embedded together; large enough to keep the model busy
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+:")


@dataclass
class Summary:
    """What an index run did."""

    sources: int = 0
    indexed: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    chunks_added: int = 0
    chunks_deleted: int = 0
    failures: list[dict] = field(default_factory=list)
    skips: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "sources": self.sources,
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "failed": self.failed,
            "chunks_added": self.chunks_added,
            "chunks_deleted": self.chunks_deleted,
            "failures": self.failures,
            "skips": self.skips,
        }


@dataclass(frozen=True)
class Source:
    """One SOURCE argument: a folder, a file or a URL."""

    kind: str  # "folder" | "file" | "url"
    value: str


def parse_sources(args: Sequence[str]) -> list[Source]:
    """Classify SOURCE arguments; a missing path or a bad URL scheme is a usage error."""
    if not args:
        raise UsageError("give at least one SOURCE: a folder, a file or an http(s) URL")
    sources = []
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_dir():
            sources.append(Source("folder", str(path.resolve())))
        elif path.exists():
            sources.append(Source("file", str(path.resolve())))
        elif _SCHEME.match(arg):
            check_scheme(arg)
            sources.append(Source("url", arg))
        else:
            raise UsageError(f"no such file or folder: {arg}")
    return sources


Event = Callable[[str, str, str], None]  # (what, source, detail): "indexed", "skipped", "failed"


def iter_pages(
    sources: Sequence[Source], fetcher: Fetcher, max_bytes: int = DEFAULT_MAX_BYTES
) -> Iterator[tuple[Source, str, Page | SourceError]]:
    """Each source's pages (or the error that replaced one), with the source they came from."""
    for source in sources:
        if source.kind == "folder":
            for path in walk(Path(source.value)):
                yield source, str(path), _read(path, max_bytes)
        elif source.kind == "file":
            yield source, source.value, _read(Path(source.value), max_bytes)
        else:
            try:
                yield source, source.value, fetcher.fetch(source.value)
            except SourceError as exc:
                yield source, source.value, exc


def _read(path: Path, max_bytes: int) -> Page | SourceError:
    try:
        return read_file(path, max_bytes)
    except SourceError as exc:
        return exc


class Indexer:
    """Runs sources through the pipeline into one collection."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        config: ChunkConfig | None = None,
        on_event: Event | None = None,
        fetcher: Fetcher | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ):
        self.max_bytes = max_bytes
        self.settings = settings
        self.embedder = embedder
        self.config = config
        self.on_event = on_event or (lambda what, source, detail: None)
        self.fetcher = fetcher
        self.summary = Summary()
        self._pending: list[tuple[Document, list[Chunk], list[str]]] = []
        self._seen: set[str] = set()
        self.collection: Collection | None = None
        self.lexical: LexicalIndex | None = None

    def check_model(self) -> None:
        """Refuse a model other than the collection's before loading it or writing anything."""
        store = Store(self.settings.db)
        if store.exists() and self.settings.collection in store.collection_names():
            store.collection(self.settings.collection).check_model(self.embedder.name)

    def open(self) -> Collection:
        """Create the collection (or open it), recording the model; checks model and dimension."""
        store = Store(self.settings.db)
        self.collection = store.create(
            self.settings.collection, self.embedder.name, self.embedder.dimension
        )
        # The keyword index follows Chroma; an interrupted earlier run is healed from Chroma here.
        self.lexical = LexicalIndex.open(self.settings.db, self.settings.collection)
        self.lexical.heal(self.collection)
        return self.collection

    def run(self, sources: Sequence[Source]) -> Summary:
        if self.config is None:
            raise ValueError("Indexer.config must be set before run()")
        self._indexed_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        collection = self.collection or self.open()
        fetcher = self.fetcher or Fetcher()
        try:
            for source, name, item in iter_pages(sources, fetcher, self.max_bytes):
                if name in self._seen:
                    continue
                self._seen.add(name)
                self.summary.sources += 1
                if isinstance(item, SourceError):
                    self._record(item, explicit=source.kind != "folder")
                    continue
                self._add_page(item, collection, explicit=source.kind != "folder")
            self._flush(collection)
        finally:
            if self.fetcher is None:
                fetcher.close()
        self._lexical().mark_clean()
        return self.summary

    def add_documents(self, docs: Iterable[Document]) -> Summary:
        """Index documents made elsewhere (kbindex eval's corpus entries) like extracted pages."""
        if self.config is None:
            raise ValueError("Indexer.config must be set before add_documents()")
        self._indexed_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        collection = self.collection or self.open()
        for doc in docs:
            self.summary.sources += 1
            self._add_document(doc, collection)
        self._flush(collection)
        self._lexical().mark_clean()
        return self.summary

    def _lexical(self) -> LexicalIndex:
        if self.lexical is None:
            self.lexical = LexicalIndex.open(self.settings.db, self.settings.collection)
        return self.lexical

    def _add_page(self, page: Page, collection: Collection, explicit: bool) -> None:
        try:
            doc = extract(page)
        except SourceError as exc:
            self._record(exc, explicit)
            return
        self._add_document(doc, collection)

    def _add_document(self, doc: Document, collection: Collection) -> None:
        chunks = chunk_document(doc, self.embedder.count_tokens, self.config)
        signature = self.config.signature()
        chunks = [_with_meta(c, chunking=signature, indexed_at=self._indexed_at) for c in chunks]
        existing = collection.for_source(doc.source)
        old_ids = [m.id for m in existing]
        if existing and {m.id for m in existing} == {c.id for c in chunks} and all(
            m.metadata.get("doc_hash") == doc.content_hash
            and m.metadata.get("chunking") == signature
            for m in existing
        ):
            self.summary.unchanged += 1
            self.on_event("unchanged", doc.source, "")
            return
        self._pending.append((doc, chunks, old_ids))
        if sum(len(c) for _, c, _ in self._pending) >= EMBED_BATCH:
            self._flush(collection)

    def _flush(self, collection: Collection) -> None:
        if not self._pending:
            return
        texts = [c.embed_text for _, chunks, _ in self._pending for c in chunks]
        vectors = self.embedder.embed(texts)
        lexical = self._lexical()
        lexical.mark_dirty()  # until run() ends: tells the next run to reconcile after a crash
        offset = 0
        for doc, chunks, old_ids in self._pending:
            mine = vectors[offset:offset + len(chunks)]
            offset += len(chunks)
            # New chunks first, then the stale ones: a reader never sees the page missing.
            collection.upsert(chunks, mine, self.embedder.name)
            lexical.upsert(chunks, self.embedder.name)
            stale = sorted(set(old_ids) - {c.id for c in chunks})
            if stale:
                collection.delete(stale)
                lexical.delete(stale)
            self.summary.indexed += 1
            self.summary.chunks_added += len(chunks)
            self.summary.chunks_deleted += len(stale)
            self.on_event("indexed", doc.source, f"{len(chunks)} chunks")
        self._pending = []

    def _record(self, error: SourceError, explicit: bool) -> None:
        entry = {"source": error.source, "reason": error.reason, "kind": error.kind}
        # A file skipped inside a folder is reported and the run goes on; a source named
        # explicitly that yields nothing is a failure of what the user asked for.
        if isinstance(error, SkipSource) and not explicit:
            self.summary.skipped += 1
            self.summary.skips.append(entry)
            self.on_event("skipped", error.source, error.reason)
        else:
            self.summary.failed += 1
            self.summary.failures.append(entry)
            self.on_event("failed", error.source, error.reason)


def _with_meta(chunk: Chunk, **extra: str) -> Chunk:
    return replace(chunk, metadata={**chunk.metadata, **extra})


def import_chunks(settings: Settings, header, rows, embedder_factory) -> dict:
    """Write exported chunks into a collection, embedding those that carry no vector."""
    store = Store(settings.db)
    dimension = header.dimension
    embedder = None
    collection = None
    written = embedded = 0
    batch: list[tuple[Chunk, list[float] | None]] = []
    lexical = LexicalIndex.open(settings.db, settings.collection)

    def flush() -> None:
        nonlocal embedder, collection, written, embedded, dimension
        missing = [c for c, v in batch if v is None]
        vectors_for_missing: list = []
        if missing:
            embedder = embedder or embedder_factory()
            if embedder.name != header.model:
                raise UsageError(f"the export was made with model {header.model!r}, which is not available here")
            vectors_for_missing = embedder.embed([c.embed_text for c in missing])
            embedded += len(missing)
        it = iter(vectors_for_missing)
        vectors = [v if v is not None else next(it) for _, v in batch]
        if collection is None:
            dimension = dimension or len(vectors[0])
            collection = store.create(settings.collection, header.model, dimension)
            lexical.mark_dirty()
        collection.upsert([c for c, _ in batch], vectors, header.model)
        lexical.upsert([c for c, _ in batch], header.model)
        written += len(batch)
        batch.clear()

    for item in rows:
        batch.append(item)
        if len(batch) >= 256:
            flush()
    if batch:
        flush()
    if collection is None and dimension:  # an export of an empty collection
        store.create(settings.collection, header.model, dimension)
    lexical.mark_clean()
    return {"collection": settings.collection, "model": header.model, "chunks": written, "embedded": embedded}


def delete_collection(settings: Settings, name: str) -> None:
    """Drop a collection."""
    Store(settings.db).delete_collection(name)
    LexicalIndex.open(settings.db, name).drop()
