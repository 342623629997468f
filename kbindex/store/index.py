"""One `Index`: the three stores of one collection behind one scope and a small verb set.

A collection's chunks live in three places that must agree: the Chroma collection (vectors, text,
metadata: chroma.py), the keyword index beside it (SQLite FTS5: lexical.py) and the ledger (one row
per source: ledger.py). All three are keyed by the same scope, the collection's name plus the
Chroma server's URL in server mode, so two servers indexed from one `--db` never share a keyword
table or ledger rows. Nothing outside this package opens one of the stores itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kbindex.config import DEFAULT_TIMEOUT
from kbindex.records import Chunk
from kbindex.store.chroma import Collection, CollectionMissing, Store, check_name
from kbindex.store.ledger import Ledger
from kbindex.store.lexical import LexicalIndex


def scope_name(collection: str, url: str | None = None) -> str:
    """The ledger's name for a collection: its name, prefixed by the server URL in server mode
    (`http://host:8000#name`)."""
    return f"{url.rstrip('/')}#{collection}" if url else collection


def keyword_key(collection: str, url: str | None = None) -> str:
    """The keyword index's name for a collection: its name in local mode (as before scopes, so
    existing files stay readable), `name@<12 hex digits of the server URL's SHA-256>` in server
    mode. Table names allow only a few characters, hence the digest rather than the URL."""
    if not url:
        return collection
    return f"{collection}@{hashlib.sha256(url.rstrip('/').encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Stats:
    """What `kbindex stats` shows of one collection."""

    collection: str
    documents: int  # sources with chunks
    chunks: int
    model: str | None
    dimensions: int | None
    store: str  # the server URL, or the local store's absolute folder
    last_indexed: str | None  # the latest indexed_at of its chunks (ISO 8601 UTC)


@dataclass(frozen=True)
class SourceSummary:
    """One indexed source as `kbindex sources` lists it."""

    source: str
    title: str
    chunks: int
    indexed_at: str | None  # ISO 8601 UTC, as the run that wrote it recorded


class Index:
    """The collection `collection` in the store at `db` (or on the Chroma server at `url`), its
    keyword index and its ledger.

    A little over 200 lines: the verb set spans three stores, each verb a few lines.

    Opening an Index touches nothing: each store is opened on first use. Call close() (or use
    it as a context manager) to close the SQLite connections. Verbs raise Index.DoesNotExist
    when the collection is missing, StoreError when a store cannot be read or written, and
    CollectionError for an invalid name.
    """

    DoesNotExist = CollectionMissing

    def __init__(self, db: Path, collection: str, url: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, store: Store | None = None):
        """timeout: seconds a Chroma server may take to answer. store: a Store to share (one
        client per process and folder)."""
        check_name(collection)
        self.db = Path(db)
        self.name = collection
        self.store = store or Store(db, url, timeout)
        self.url = self.store.url
        self.scope = scope_name(collection, self.url)
        self._ledger: Ledger | None = None
        self._keywords: LexicalIndex | None = None
        self._collection: Collection | None = None
        self._writing = False  # the keyword index is flagged dirty until finish()

    @classmethod
    def from_settings(cls, settings, collection: str | None = None) -> Index:
        """The Index of settings.collection (or `collection`) with settings' db, server and timeout."""
        return cls(settings.db, collection or settings.collection, settings.chroma_url, settings.timeout)

    @classmethod
    def of(cls, collection: Collection) -> Index:
        """The Index of a collection already open (its store's folder and server)."""
        index = cls(collection.store.db, collection.name, store=collection.store)
        index.use(collection)
        return index

    def sibling(self, collection: str) -> Index:
        """Another collection of the same store (same server, same folder)."""
        return Index(self.db, collection, store=self.store)

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()  # opened again by the next use
        if self._keywords is not None:
            self._keywords.close()
            self._keywords = None

    # -- the three stores ----------------------------------------------------------------------

    @property
    def location(self) -> str:
        return self.store.location

    @property
    def ledger(self) -> Ledger:
        """This scope's ledger (opened, and its file made, on first use)."""
        if self._ledger is None:
            self._ledger = Ledger(self.db, self.scope)
        return self._ledger

    def keywords(self) -> LexicalIndex:
        """This scope's keyword index (its tables made on first use)."""
        if self._keywords is None:
            self._keywords = LexicalIndex.open(self.db, keyword_key(self.name, self.url))
        return self._keywords

    def exists(self) -> bool:
        """Whether the collection exists in the store (False where there is no store yet)."""
        return self.store.exists() and self.name in self.store.collection_names()

    def collection_names(self) -> list[str]:
        """Every collection in this store, sorted ([] where there is no store yet)."""
        return self.store.collection_names()

    def collection(self) -> Collection:
        """The Chroma collection; Index.DoesNotExist when there is none."""
        return self.store.collection(self.name)

    def create(self, model: str, dimension: int) -> Collection:
        """The collection, made for `model`'s `dimension`-dimensional vectors when missing and
        bound to this ledger; ModelMismatchError when it holds another model's."""
        return self.store.create(self.name, model, dimension, ledger_id=self.ledger.ledger_id)

    # -- writing: the store side of the crash-safe order ----------------------------------------

    def write(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> None:
        """Upsert chunks with their vectors (one per chunk, the collection's dimension) into
        Chroma, then the keyword index. The caller has marked the ledger dirty first."""
        self._begin()
        collection = self.collection_cached()
        collection.upsert(chunks, vectors, collection.model)
        self.keywords().upsert(chunks, collection.model)

    def delete(self, ids: Sequence[str]) -> None:
        """Delete chunks by id from Chroma and the keyword index; unknown ids are ignored."""
        if ids:
            self._begin()
            self.collection_cached().delete(ids)
            self.keywords().delete(ids)

    def finish(self) -> None:
        """End of a write: the keyword index is in step with Chroma again."""
        if self._writing:
            self.keywords().mark_clean()
            self._writing = False

    def _begin(self) -> None:
        # Flag the keyword index until the write ends, so a crash is reconciled from Chroma.
        if not self._writing:
            self.keywords().mark_dirty()
            self._writing = True

    def collection_cached(self) -> Collection:
        """The collection, looked up once (a server round trip) per Index."""
        if self._collection is None:
            self._collection = self.collection()
        return self._collection

    def use(self, collection: Collection) -> None:
        """Write into `collection` (opened or created by the caller) from now on."""
        self._collection = collection

    def heal(self) -> bool:
        """Reconcile the keyword index with Chroma when a write was interrupted or the counts
        differ; True when it copied or deleted anything."""
        return self.keywords().heal(self.collection_cached())

    def lagging_keywords(self) -> LexicalIndex:
        """The keyword index for a reader: copied over from Chroma first where it lags and no
        write is in progress (a keyword index deleted, or made before kbindex had one)."""
        keywords = self.keywords()
        collection = self.collection_cached()
        if keywords.unverified or (not keywords.dirty and keywords.count() != collection.count()):
            keywords.sync(collection)
        return keywords

    # -- reading ---------------------------------------------------------------------------------

    def stats(self) -> Stats:
        """Size, model and location of the collection; Index.DoesNotExist when missing.

        Read from the ledger (one row per source) when it describes the collection exactly (see
        _from_ledger); otherwise from every chunk's metadata in Chroma.
        """
        collection = self.collection_cached()
        count = collection.count()
        per_source, last = self._from_ledger(collection, count, titles=False) or self._scan(collection)
        return Stats(collection.name, len(per_source), count, collection.model,
                     collection.dimension, self.location, last or None)

    def sources(self) -> list[SourceSummary]:
        """Every source with chunks in the collection, sorted by source (the ledger's rows when
        it describes the collection exactly, else every chunk's metadata)."""
        collection = self.collection_cached()
        found = self._from_ledger(collection, collection.count(), titles=True) or self._scan(collection)
        per_source = found[0]
        return [per_source[s] for s in sorted(per_source)]

    def _from_ledger(self, collection: Collection, count: int,
                     titles: bool) -> tuple[dict[str, SourceSummary], str] | None:
        """What _scan finds, from the ledger alone, or None when the ledger cannot be trusted to
        say it: not bound to this very collection (another machine's, or a store filled before
        the ledger), an entry dirty (a write cut short), its chunk ids not adding up to the
        collection's count, or (titles) an entry from before titles were kept."""
        if not self.ledger.exists() or self.ledger.binding() != collection.id:
            return None
        rows = self.ledger.summaries()
        if not all(clean for *_, clean in rows) or sum(n for _, _, n, _, _ in rows) != count:
            return None
        if titles and any(title is None for _, title, n, _, _ in rows if n):
            return None
        per_source = {s: SourceSummary(s, title or "", n, when) for s, title, n, when, _ in rows if n}
        last = max((when or "" for _, _, n, when, _ in rows if n), default="")
        return per_source, last

    def _scan(self, collection: Collection) -> tuple[dict[str, SourceSummary], str]:
        """Per source: title and indexed_at of its first chunk, and its chunks; and the latest
        indexed_at of any chunk ("" when none records one)."""
        docs: dict[str, SourceSummary] = {}
        last = ""
        for match in collection.scan():
            meta = match.metadata
            source = meta.get("source", "")
            seen = docs.get(source)
            docs[source] = SourceSummary(source, meta.get("title", ""), 1, meta.get("indexed_at")) \
                if seen is None else SourceSummary(source, seen.title, seen.chunks + 1, seen.indexed_at)
            last = max(last, str(meta.get("indexed_at", "")))
        return docs, last

    # -- whole collections -----------------------------------------------------------------------

    def rename_to(self, new_name: str) -> Index:
        """Rename the collection in Chroma and hand its ledger scope and keyword index to the new
        name (the keyword index is made again from Chroma); returns the renamed Index."""
        self.store.rename_collection(self.name, new_name)
        renamed = self.sibling(new_name)
        self.ledger.move_scope(renamed.scope)
        self.keywords().drop()
        self.close()
        renamed.keywords().drop()
        renamed.close()
        renamed.keywords().sync(renamed.collection())
        return renamed

    def drop(self) -> None:
        """Delete the collection, its ledger entries and its keyword index."""
        self.store.delete_collection(self.name)
        self._collection = None
        self.ledger.drop_scope()
        self.keywords().drop()
        self.close()
