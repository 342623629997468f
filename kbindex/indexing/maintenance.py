"""Whole-collection jobs: import, delete, rebuild (re-embed and swap in), restore from kbindex's
own copies (the keyword index or the store's metadata, vectors from the embedding cache).

verify --repair (verify.py) uses restore and restore_store; every chunk written here goes through
the store.Index verbs, and import through writer.WriteOrder like an index run.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from kbindex.chunk import ChunkConfig, refit_context
from kbindex.config import Settings
from kbindex.crawl import CrawlOptions
from kbindex.embedding import Embedder
from kbindex.embedding.modelcache import recorded_identity
from kbindex.errors import ModelMismatchError, StoreError, UsageError
from kbindex.indexing.runner import Indexer, Summary
from kbindex.indexing.sources import parse_sources
from kbindex.indexing.sync import bind
from kbindex.indexing.writer import IMPORT_BATCH, WriteOrder
from kbindex.records import Chunk, text_hash
from kbindex.store import Index
from kbindex.store.chroma import Collection, Store
from kbindex.store.ledger import Entry, Ledger
from kbindex.store.lock import WriteLock

RESTORE_BATCH = 2048  # rows a restore writes together: nothing to embed, so fewer, larger store calls


def import_chunks(settings: Settings, export, embedder_factory: Callable[[], Embedder]) -> dict:
    """Write a checked export file (transfer.CheckedExport) into a collection, embedding the
    chunks that carry no vector with the file's model.

    Everything that can be refused is refused before the first write: the model the file names
    against the target collection's, and the model's dimension against the file's.
    """
    model = export.header.model
    embedder = None
    dimension = export.dimension
    if export.without_vector:
        embedder = embedder_factory()
        if embedder.name != model:
            raise UsageError(f"the export was made with model {model!r}; give --model {model}")
        if dimension is not None and embedder.dimension != dimension:
            raise ModelMismatchError(
                f"the export holds {dimension}-dimensional vectors, and model {model!r} makes "
                f"{embedder.dimension}-dimensional ones")
        dimension = embedder.dimension
    if dimension is None:  # no chunks and no dimension in the header: nothing to write
        return {"collection": settings.collection, "model": model, "chunks": 0, "embedded": 0,
                "documents": 0}
    with WriteLock(settings.db), Index.from_settings(settings) as index:
        return import_rows(index, model, dimension, export.rows(), embedder)


def import_rows(index: Index, model: str, dimension: int,
                rows: Iterable[tuple[Chunk, Sequence[float] | None]], embedder: Embedder | None) -> dict:
    """Write exported (chunk, vector or None) rows, recording each source in the ledger; the
    caller holds the write lock.

    The rows were checked whole beforehand (transfer.open_export), and embedder, when given,
    makes `dimension`-dimensional vectors of `model`. Each batch goes through writer.WriteOrder
    as every writer's does: the ledger marks its sources dirty (listing their old and new chunk
    ids), then the store; at the end the chunks a source no longer has are deleted and its entry
    made clean. A crash leaves dirty entries, and running the import again completes it.
    Returns {"collection", "model", "chunks", "embedded", "documents"}.
    """
    if index.exists():
        collection = index.collection()
        collection.check_model(model, dimension)
    else:
        collection = index.create(model, dimension)
    bind(collection, index.ledger)
    index.use(collection)
    order = WriteOrder(index)
    known = index.ledger.entries()
    sources: dict[str, dict] = {}
    written = embedded = 0
    batch: list[tuple[Chunk, Sequence[float] | None]] = []

    def entry(source: str) -> Entry:
        info = sources[source]
        chunk = info["chunk"]
        return Entry(
            source=source, root=source, content_hash=chunk.doc_hash or text_hash(source),
            chunking=chunk.metadata.get("chunking"), model=model, chunk_ids=tuple(info["ids"]),
            text_hashes=tuple(info["hashes"]), indexed_at=chunk.metadata.get("indexed_at"),
            title=chunk.title,
        )

    def old_ids(source: str) -> list[str]:
        old = known.get(source)
        return list(old.chunk_ids) if old else []

    def flush() -> None:
        nonlocal written, embedded
        missing = [i for i, (_, v) in enumerate(batch) if v is None]
        if missing:  # embedded as an index run embeds them: the context line cut to its share
            refitted = refit_context([batch[i][0] for i in missing], embedder.count_tokens,
                                     embedder.max_tokens)
            for i, chunk in zip(missing, refitted, strict=True):
                batch[i] = (chunk, None)
        fresh = iter(embedder.embed([batch[i][0].embed_text for i in missing]) if missing else [])
        embedded += len(missing)
        vectors = [list(v) if v is not None else list(next(fresh)) for _, v in batch]
        chunks = [c for c, _ in batch]
        hashes = [text_hash(c.embed_text) for c in chunks]
        for chunk, h in zip(chunks, hashes):
            info = sources.setdefault(chunk.source, {"chunk": chunk, "ids": [], "hashes": []})
            info["ids"].append(chunk.id)
            info["hashes"].append(h)
        touched = dict.fromkeys(c.source for c in chunks)
        order.begin([(entry(s), old_ids(s)) for s in touched], chunks, vectors,
                    fresh=dict(zip(hashes, vectors)), model=model)
        written += len(batch)
        batch.clear()

    for row in rows:
        batch.append(row)
        if len(batch) >= IMPORT_BATCH:
            flush()
    if batch:
        flush()
    order.end([(entry(s), old_ids(s)) for s in sources])
    index.finish()
    return {"collection": index.name, "model": model, "chunks": written, "embedded": embedded,
            "documents": len(sources)}


def delete_collection(settings: Settings, name: str) -> None:
    """Drop a collection and forget its ledger entries (under the write lock)."""
    index = Index.from_settings(settings, name)
    index.collection()  # a clear error when there is none
    with WriteLock(settings.db).acquire():
        index.drop()


REBUILD_SUFFIX = "--rebuild"


OLD_SUFFIX = "--old"


def rebuild(settings: Settings, embedder: Embedder, config: ChunkConfig, args: Sequence[str],
            crawl: CrawlOptions | None = None, follow_links: bool = False, **options) -> Summary:
    """Re-embed a collection with embedder's model: fill a new collection, then swap it in.

    args are SOURCE arguments; none means every root recorded in the ledger. Queries keep using
    the old collection until the swap, which is two renames. A rebuild that was interrupted is
    started again by running it again.
    """
    lock = WriteLock(settings.db, wait=options.pop("wait", False)).acquire()
    try:
        index = Index.from_settings(settings)
        store = index.store
        name = settings.collection
        temp = replace(settings, collection=name + REBUILD_SUFFIX)
        names = store.collection_names()
        if name not in names and name + OLD_SUFFIX in names:  # a swap was interrupted
            store.rename_collection(name + OLD_SUFFIX, name)
            names = store.collection_names()
        if not args:
            args = sorted({e.root for e in index.ledger.entries().values()})
            index.close()
            if not args:
                raise UsageError("nothing to rebuild: the ledger records no sources; give SOURCE")
        sources = parse_sources(args, crawl, follow_links)
        for stale in (temp.collection, name + OLD_SUFFIX):
            if stale in names:
                store.delete_collection(stale)
        indexer = Indexer(temp, embedder, config, lock=lock, **options)
        indexer.ledger.drop_scope()
        with indexer:
            indexer.open()
            summary = indexer.run(sources)
        swap(store, name, temp.collection, names, keep_old=True)
        built = index.sibling(temp.collection)
        built.ledger.move_scope(index.scope)
        # The keyword index is keyed by collection name: rebuild the swapped-in one from Chroma.
        built.keywords().drop()
        built.close()
        index.keywords().sync(store.collection(name))
        index.close()
        if name in names:
            store.delete_collection(name + OLD_SUFFIX)
        return summary
    finally:
        lock.release()


def swap(store: Store, name: str, fresh: str, names: Sequence[str], keep_old: bool = False) -> None:
    """Put collection `fresh` in the place of `name` with two renames (name -> name--old, fresh ->
    name), then drop the old one unless keep_old. Queries use the old collection until the second
    rename; an interrupted swap is finished by rebuild() or verify --repair."""
    if name in names:
        store.rename_collection(name, name + OLD_SUFFIX)
    store.rename_collection(fresh, name)
    if name in names and not keep_old:
        store.delete_collection(name + OLD_SUFFIX)


@dataclass
class Restored:
    """What restore() wrote: chunks, and where their vectors came from."""

    chunks: int = 0
    from_cache: int = 0
    embedded: int = 0


def restore(settings: Settings, rows: Iterable, model: str, dimension: int | None, ledger: Ledger,
            embedder_factory: Callable[[str], Embedder] | None) -> Restored:
    """Write a fresh collection from chunks kbindex holds elsewhere and swap it in for the
    collection of settings.

    rows are lexical.Row (id, text, metadata and context line: the keyword index's copy, or
    Chroma's metadata read back); each vector comes from the embedding cache, by model and hash
    of the embedded text (context line and text, as chunk.chunk_document embeds them). Only
    chunks whose vector is not cached are embedded, with embedder_factory(model); StoreError
    when that is needed and no factory is given. The caller holds the write lock.
    """
    store = Index(settings.db, settings.collection, settings.chroma_url, settings.timeout).store
    name = settings.collection
    temp = name + REBUILD_SUFFIX
    names = store.collection_names()
    for stale in (temp, name + OLD_SUFFIX):  # left by an interrupted restore or rebuild
        if stale in names and (stale == temp or name in names):
            store.delete_collection(stale)
    fresh, done = _fill(store, temp, rows, model, dimension, ledger, embedder_factory)
    swap(store, name, temp, names)
    ledger.bind(fresh.id)
    return done


def _fill(store: Store, name: str, rows: Iterable, model: str, dimension: int | None, ledger: Ledger,
          embedder_factory: Callable[[str], Embedder] | None) -> tuple[Collection, Restored]:
    """Create collection `name` in store and write rows into it, vectors from the cache (see
    restore)."""
    fresh: Collection | None = None
    embedder: Embedder | None = None
    done = Restored()
    # The cache key of each chunk as the ledger recorded it when the chunk was embedded: a row
    # holds the context line uncut, and a line longer than its share of the window was embedded
    # cut (chunk.fit_context_lines), so the row alone does not always give the embedded text.
    try:
        known = ledger.text_hashes() if ledger.exists() else {}
        chunking = {source: e.chunking for source, e in ledger.entries().items() if e.chunking} if ledger.exists() else {}
    except (StoreError, sqlite3.Error):
        known, chunking = {}, {}

    def write(part: list) -> None:
        nonlocal fresh, embedder
        hashes = [known.get(r.id) or text_hash(f"{r.context}\n\n{r.text}") for r in part]
        vectors = ledger.cached_vectors(recorded_identity(ledger.path.parent, ledger.scope, model), hashes)
        todo = [(i, r) for i, (h, r) in enumerate(zip(hashes, part)) if h not in vectors]
        done.from_cache += len(part) - len(todo)
        if todo:
            if embedder is None:
                if embedder_factory is None:
                    raise StoreError(f"{len(todo)} chunks have no vector in the embedding cache "
                                     "and no model was given to embed them")
                embedder = embedder_factory(model)
            texts = embedded_texts([r for _, r in todo], embedder, chunking)
            made = embedder.embed(texts)
            fresh_hashes = [text_hash(t) for t in texts]
            ledger.cache_vectors(embedder.identity, dict(zip(fresh_hashes, made)))
            for (i, _), h, vector in zip(todo, fresh_hashes, made, strict=True):
                hashes[i] = h
                vectors[h] = vector
            done.embedded += len(todo)
        if fresh is None:
            fresh = store.create(name, model, dimension or len(next(iter(vectors.values()))),
                                 ledger_id=ledger.ledger_id)
        fresh.add_stored([r.id for r in part], [vectors[h] for h in hashes], [r.text for r in part],
                         [r.metadata for r in part])
        done.chunks += len(part)

    part: list = []
    for row in rows:
        part.append(row)
        if len(part) >= RESTORE_BATCH:
            write(part)
            part = []
    if part:
        write(part)
    if fresh is None:
        fresh = store.create(name, model, dimension or 1, ledger_id=ledger.ledger_id)
    return fresh, done


def embedded_texts(rows: Sequence, embedder: Embedder, chunking: dict[str, str] | None = None) -> list[str]:
    """What chunk_document embedded for each keyword-index row (lexical.Row): its context line,
    cut as chunk.fit_context_lines cuts it to its share of the window of the chunk size the chunk
    was made with (chunking: "tokens/overlap" by source, as the ledger records it; else the
    row's own `chunking` metadata, else the model's window), then the text."""
    chunking = chunking or {}
    chunks = [Chunk(id=r.id, source=r.source, title=str(r.metadata.get("title", "")),
                    section=str(r.metadata.get("section", "")), position=0, text=r.text,
                    embed_text="", doc_hash="",
                    metadata={"chunking": chunking.get(r.source) or r.metadata.get("chunking", "")})
              for r in rows]
    return [c.embed_text for c in refit_context(chunks, embedder.count_tokens, embedder.max_tokens)]


@dataclass(frozen=True)
class Carried:
    """One collection to carry into a fresh local store (restore_store)."""

    name: str
    model: str
    dimension: int | None
    rows: Callable[[], Iterable]  # lexical.Row of every chunk
    ledger: Ledger  # the ledger scope of the collection


def restore_store(db: Path, collections: Sequence[Carried],
                  embedder_factory: Callable[[str], Embedder] | None) -> tuple[Path, dict[str, Restored]]:
    """Make a fresh local Chroma store holding `collections` (written as restore() does) and put
    it in the place of a store whose own SQLite file is damaged, which is kept in a folder
    `store-damaged-<time>` beside it. Returns that folder and what was written per collection.

    A Chroma store is one SQLite file for all its collections plus a folder per vector index;
    once the file is damaged no collection can be written into it, so the whole store is made
    again, in a folder next to it, then moved in by renames. The caller holds the write lock.
    """
    import shutil
    import uuid

    db = Path(db)
    building = db / ".store-rebuild"
    shutil.rmtree(building, ignore_errors=True)
    fresh = Store(building)
    written: dict[str, Restored] = {}
    for carried in collections:
        made, written[carried.name] = _fill(fresh, carried.name, carried.rows(), carried.model,
                                            carried.dimension, carried.ledger, embedder_factory)
        carried.ledger.bind(made.id)
    Store.forget_clients()  # Chroma keeps one client per folder: neither may be used after the moves

    def store_parts(folder: Path) -> list[Path]:
        parts = []
        for path in folder.iterdir():
            if path.name.startswith("chroma.sqlite3"):
                parts.append(path)
            elif path.is_dir():
                try:
                    uuid.UUID(path.name)  # a vector index folder is named by its segment's id
                except ValueError:
                    continue
                parts.append(path)
        return parts

    aside = db / f"store-damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    for path in store_parts(db):
        path.rename(aside / path.name)
    for path in store_parts(building):
        path.rename(db / path.name)
    shutil.rmtree(building, ignore_errors=True)
    return aside, written
