"""The one write path: changed documents -> chunks -> vectors -> store.Index, in the crash-safe order.

Every writer (index runs, import, verify --repair's re-index and orphan deletion) goes through
WriteOrder: a source's ledger entry is marked dirty, listing every chunk id the store may hold for
it, before the store is written; stale chunks are deleted after; the entry is made clean last. A
crash anywhere leaves at worst a dirty entry, which the next run treats as changed and rewrites.

Writer adds what an index run needs in front of it: chunking, the embedding cache (vectors kept by
model and hash of the embedded text, so unchanged text is never embedded twice) and EmbedAhead,
which embeds the next batch while the previous one is written.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from kbindex.chunk import ChunkConfig, chunk_document
from kbindex.embedding import Embedder
from kbindex.errors import ModelMismatchError
from kbindex.indexing.sync import page_facts
from kbindex.pipeline import EmbedAhead
from kbindex.records import Chunk, Document, Page, text_hash
from kbindex.store import Index
from kbindex.store.ledger import Entry

# Chunks embedded (and written) together. Large enough that sorting a batch by length leaves
# little padding and that store writes come in few calls; small enough that the first batch is
# ready soon and the last one, which nothing overlaps, is short.
EMBED_BATCH = 256


IMPORT_BATCH = 256  # exported rows written together by import


# Test hook, documented in the README: KBINDEX_TEST_PAUSE=STAGE[:N] makes a run sleep the N-th
# time (default: the first) it reaches STAGE, after printing "kbindex: paused at STAGE" on
# stderr, so that a crash test can SIGKILL it at a known point. Stages: "page" (a page was read or
# fetched), "embed" (before a batch is embedded), "write" (the store holds the new chunks, the
# stale ones are not deleted yet), "commit" (the store is fully written, the ledger not yet).
_PAUSE_ENV = "KBINDEX_TEST_PAUSE"


_pause_counts: dict[str, int] = {}


def pause(stage: str) -> None:
    want = os.environ.get(_PAUSE_ENV)
    if not want or want.partition(":")[0] != stage:
        return
    _pause_counts[stage] = _pause_counts.get(stage, 0) + 1
    if _pause_counts[stage] == int(want.partition(":")[2] or 1):
        sys.stderr.write(f"kbindex: paused at {stage}\n")
        sys.stderr.flush()
        time.sleep(3600)


@dataclass
class _Batch:
    """Changed sources on their way through the embedding thread."""

    updates: list[Update]
    chunks: list[Chunk]
    hashes: list[str]  # of each chunk's embedded text
    cached: dict[str, list[float]]  # vectors the embedding cache had
    todo: list[str]  # hashes sent to the model, in the order of the vectors that come back


@dataclass
class Update:
    """A changed source waiting in the batch to be embedded and written."""

    root: str
    page: Page
    body_hash: str
    doc: Document
    chunks: list[Chunk]
    entry: Entry | None


def _with_meta(chunk: Chunk, **extra: str) -> Chunk:
    return replace(chunk, metadata={**chunk.metadata, **extra})


@dataclass(frozen=True)
class Written:
    """What one batch's write did: the entries now clean (in order), and chunk counts."""

    entries: list[Entry]
    chunks_added: int
    chunks_embedded: int  # of those, vectors made by the model (the rest came from the cache)
    chunks_deleted: int


class WriteOrder:
    """The crash-safe order of every write into an Index, in two steps.

    begin() marks the sources dirty in the ledger (listing their old and new chunk ids) and writes
    the store; end() deletes the chunks a source no longer has and marks it clean. An index run
    calls both for each batch; an import calls begin() for each batch and end() once, since one
    source's chunks may span batches.
    """

    def __init__(self, index: Index):
        self.index = index

    def begin(self, updates: Sequence[tuple[Entry, Sequence[str]]], chunks: Sequence[Chunk],
              vectors: Sequence[Sequence[float]], fresh: dict[str, Sequence[float]] | None = None,
              model: str | None = None) -> None:
        """updates: (entry as it will be, ids the store may still hold from before); vectors: one
        per chunk; fresh: new embeddings by text hash, cached in the same ledger transaction."""
        self.index.ledger.begin(updates, vectors=fresh, model=model)
        self.index.write(chunks, vectors)
        pause("write")

    def end(self, updates: Sequence[tuple[Entry, Sequence[str]]]) -> int:
        """Delete stale chunks, then record each entry clean; returns the chunks deleted."""
        stale = [i for entry, old in updates for i in dict.fromkeys(old) if i not in set(entry.chunk_ids)]
        self.index.delete(stale)
        pause("commit")
        self.index.ledger.commit(entry for entry, _ in updates)
        return len(stale)


class Writer:
    """Chunks changed documents, embeds them in batches (cache first) and writes each batch
    through WriteOrder, in the order the batches were made.

    `indexed_at` (ISO 8601 UTC) is stamped on each chunk and entry; `adopt` means the store was
    filled before the ledger existed, so a source's old chunks are found by their metadata.
    on_written is called after each batch is clean in the ledger.
    """

    def __init__(self, index: Index, embedder: Embedder, config: ChunkConfig,
                 on_written: Callable[[Written], None], dimension_checked: bool = False):
        self.index = index
        self.order = WriteOrder(index)
        self.embedder = embedder
        self.config = config
        self.on_written = on_written
        self.indexed_at: str | None = None
        self.adopt = False
        self._dimension_checked = dimension_checked
        self._pending: list[Update] = []
        self._ahead: EmbedAhead[_Batch] | None = None  # started by the first batch to embed
        self._in_flight: set[str] = set()  # text hashes sent to the model, not yet in the cache

    def queue(self, root: str, page: Page, body_hash: str | None, doc: Document, entry: Entry | None) -> None:
        """Chunk a changed document and add it to the batch being embedded."""
        chunks = chunk_document(doc, self.embedder.count_tokens, self.config)
        signature = self.config.signature()
        chunks = [_with_meta(c, chunking=signature, indexed_at=self.indexed_at) for c in chunks]
        self._pending.append(Update(root, page, body_hash, doc, chunks, entry))
        if sum(len(u.chunks) for u in self._pending) >= EMBED_BATCH:
            self.flush()

    def flush(self) -> None:
        """Send the pending batch to the embedding thread; write the batches it has finished.

        Vectors come from the embedding cache where it has them; a text already being embedded
        for an earlier batch of this run is not embedded twice (the earlier batch, written first,
        puts its vector in the cache). Batches are written in the order they were made.
        """
        if not self._pending:
            return
        chunks = [c for u in self._pending for c in u.chunks]
        hashes = [text_hash(c.embed_text) for c in chunks]
        cached = self.index.ledger.cached_vectors(self.embedder.identity, hashes)
        todo = {h: c.embed_text for h, c in zip(hashes, chunks, strict=True)
                if h not in cached and h not in self._in_flight}
        self._in_flight.update(todo)
        batch = _Batch(self._pending, chunks, hashes, cached, list(todo))
        self._pending = []
        if todo:
            pause("embed")
        if self._ahead is None:
            self._ahead = EmbedAhead(self.embedder.embed, depth=1)
        for done, vectors in self._ahead.submit(batch, list(todo.values())):
            self._write(done, vectors)

    def drain(self) -> None:
        """Flush, then wait for every batch to be embedded and write it."""
        self.flush()
        if self._ahead is not None:
            for done, vectors in self._ahead.drain():
                self._write(done, vectors)

    def close(self) -> None:
        """Drop the batches not written: their ledger entries were never begun."""
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None
            self._in_flight.clear()

    def _write(self, batch: _Batch, embedded: Sequence[Sequence[float]]) -> None:
        collection = self.index.collection_cached()
        model = self.embedder.name
        fresh = dict(zip(batch.todo, embedded, strict=True))
        if fresh:
            self._check_dimension(next(iter(fresh.values())))
        vectors = {**batch.cached, **fresh}
        borrowed = [h for h in batch.hashes if h not in vectors]
        if borrowed:  # embedded for an earlier batch, which is written and cached by now
            vectors.update(self.index.ledger.cached_vectors(self.embedder.identity, borrowed))
        updates = []
        hashes = iter(batch.hashes)  # the batch's chunks are its updates' chunks, in order
        for u in batch.updates:
            old = list(u.entry.chunk_ids) if u.entry else []
            if self.adopt:
                old += [m.id for m in collection.for_source(u.doc.source)]
            entry = Entry(
                source=u.doc.source, root=u.root, body_hash=u.body_hash,
                content_hash=u.doc.content_hash, chunking=self.config.signature(), model=model,
                chunk_ids=tuple(c.id for c in u.chunks),
                text_hashes=tuple(next(hashes) for _ in u.chunks),
                indexed_at=self.indexed_at, title=u.doc.title, **page_facts(u.page, u.entry),
            )
            updates.append((entry, old))
        self.order.begin(updates, batch.chunks, [vectors[h] for h in batch.hashes], fresh=fresh,
                         model=self.embedder.identity)
        deleted = self.order.end(updates)
        self._in_flight.difference_update(fresh)
        self.on_written(Written([entry for entry, _ in updates], len(batch.chunks), len(fresh), deleted))

    def _check_dimension(self, vector: Sequence[float]) -> None:
        if self._dimension_checked:
            return
        collection = self.index.collection_cached()
        expected = collection.dimension
        if expected is not None and len(vector) != expected:
            raise ModelMismatchError(
                f"collection {collection.name!r} holds {expected}-dimensional vectors; "
                f"model {self.embedder.name!r} makes {len(vector)}-dimensional ones"
            )
        self._dimension_checked = True

