"""The ledger: what was indexed from each source, kept in SQLite next to the index.

One row per source (URL or file) per collection: the root it was found under, HTTP validators
(URLs), size and mtime (files), hashes of the raw bytes and of the extracted text, the chunk ids in
the store, the model and chunk settings, when it was indexed and its last error. A second table
caches embeddings by (model, hash of the embedded text), so text that did not change is never
embedded twice. A third keeps what crawls learned from each HTML page they read (records.Visit:
validators, links, canonical URL, meta robots, whether it was a listing page), so that a re-crawl
fetches every page conditionally and follows the links of a page that answers 304 without
downloading it.

Crash safety comes from the order of writes (see Ledger.begin / Ledger.commit): a source's row is
marked dirty, listing every chunk id the store may hold for it, *before* the store is written, and
made clean only after. A run killed anywhere leaves at worst a dirty row, which the next run treats
as changed and rewrites. SQLite in WAL mode keeps each transaction atomic and lets readers go on
while a writer works.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from kbindex.embedding.base import model_of
from kbindex.errors import StoreError
from kbindex.records import Visit

LEDGER_NAME = "kbindex.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    scope TEXT NOT NULL,          -- the collection (and server URL in server mode)
    source TEXT NOT NULL,         -- canonical URL or absolute file path
    root TEXT NOT NULL,           -- the SOURCE argument it was found under
    etag TEXT,
    last_modified TEXT,
    size INTEGER,
    mtime REAL,                   -- NULL when too recent to trust (see Indexer)
    body_hash TEXT,               -- hash of the raw bytes
    content_hash TEXT,            -- hash of the extracted text; NULL = dirty, must be rewritten
    chunking TEXT,
    model TEXT,
    chunk_ids TEXT NOT NULL,      -- JSON list; while dirty, every id the store may hold
    text_hashes TEXT NOT NULL,    -- JSON list, hashes of the embedded texts (cache keys)
    indexed_at TEXT,
    last_error TEXT,
    title TEXT,                   -- the document's title; NULL in rows from before it was kept
    PRIMARY KEY (scope, source)
);
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    vector BLOB NOT NULL,         -- float32
    PRIMARY KEY (model, text_hash)
);
CREATE TABLE IF NOT EXISTS visits (
    scope TEXT NOT NULL,
    url TEXT NOT NULL,            -- the URL requested (canonical)
    root TEXT NOT NULL,           -- the SOURCE argument whose crawl reached it
    final TEXT NOT NULL,          -- after redirects
    name TEXT NOT NULL,           -- the name it went by (sources.source when outcome is 'page')
    outcome TEXT NOT NULL,        -- page, listing, noindex, duplicate, out_of_scope
    etag TEXT,
    last_modified TEXT,
    analysis TEXT NOT NULL,       -- JSON: links, canonical, noindex, nofollow, listing, thin, parser
    visited_at TEXT,              -- when the page was read with what is recorded (run start)
    PRIMARY KEY (scope, url)
);
CREATE INDEX IF NOT EXISTS visits_name ON visits (scope, name);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS bindings (
    scope TEXT PRIMARY KEY,
    collection_id TEXT NOT NULL   -- Chroma's id of the collection this scope's entries describe
);
"""

_SCOPED = ("sources", "visits", "bindings")  # the tables with a row per scope
_COLUMNS = ("source", "root", "etag", "last_modified", "size", "mtime", "body_hash", "content_hash",
            "chunking", "model", "chunk_ids", "text_hashes", "indexed_at", "last_error", "title")


@dataclass(frozen=True)
class Entry:
    """The ledger's record of one source."""

    source: str
    root: str
    etag: str | None = None
    last_modified: str | None = None
    size: int | None = None
    mtime: float | None = None
    body_hash: str | None = None
    content_hash: str | None = None
    chunking: str | None = None
    model: str | None = None
    chunk_ids: tuple[str, ...] = ()
    text_hashes: tuple[str, ...] = field(default=(), repr=False)
    indexed_at: str | None = None
    last_error: str | None = None
    title: str | None = None  # None: not recorded (an entry written before titles were)

    @property
    def clean(self) -> bool:
        """False while an update of this source was started and not finished."""
        return self.content_hash is not None


class Ledger:
    """The ledger of one collection (scope) in <folder>/kbindex.sqlite.

    Over 200 lines: one class per SQLite file, with a verb or two for each of its tables (sources,
    visits, embeddings, bindings), each verb one transaction. Raises StoreError when the file
    cannot be opened or written.
    """

    def __init__(self, folder: Path, scope: str):
        self.path = Path(folder) / LEDGER_NAME
        self.scope = scope
        self._db: sqlite3.Connection | None = None

    def exists(self) -> bool:
        return self.path.exists()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                # NORMAL is durable against process crashes in WAL mode (only a power loss can
                # drop the last transactions); FULL would fsync on every source.
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
                if "title" not in {r[1] for r in db.execute("PRAGMA table_info(sources)")}:
                    # A ledger made before titles were kept: the column is added, empty, and
                    # filled as sources are written again (Index.sources reads the store meanwhile).
                    try:
                        db.execute("ALTER TABLE sources ADD COLUMN title TEXT")
                    except sqlite3.OperationalError as exc:  # another process added it just now
                        if "duplicate column" not in str(exc):
                            raise
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                # Made once with the file: a ledger deleted and made again is another ledger.
                db.execute("INSERT OR IGNORE INTO meta VALUES ('ledger_id', ?)", (uuid.uuid4().hex,))
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the ledger {self.path}: {exc}") from exc
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- reading --------------------------------------------------------------------------------

    @property
    def ledger_id(self) -> str:
        """This ledger file's id, made when the file was made (hex UUID)."""
        return self.db.execute("SELECT value FROM meta WHERE key = 'ledger_id'").fetchone()[0]

    def binding(self) -> str | None:
        """The id of the Chroma collection this scope's entries describe, when recorded."""
        row = self.db.execute("SELECT collection_id FROM bindings WHERE scope = ?", (self.scope,)).fetchone()
        return row[0] if row else None

    def check(self) -> None:
        """Read the whole file (SQLite's quick_check) and this scope's entries; StoreError if it
        cannot be read."""
        try:
            problems = [r[0] for r in self.db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:3]))
            self.entries()
        except (sqlite3.Error, ValueError, TypeError) as exc:
            raise StoreError(f"cannot read the ledger {self.path}: {exc}") from exc

    def set_aside(self) -> Path:
        """Rename a damaged ledger file (and its WAL) out of the way, keeping it; returns the new
        name of the file. The next use makes a new, empty ledger."""
        import time

        self.close()
        aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.rename(f"{aside}{suffix}")
        return aside

    def entries(self) -> dict[str, Entry]:
        """Every entry of this scope, by source."""
        rows = self.db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM sources WHERE scope = ?", (self.scope,)
        )
        return {row[0]: _entry(row) for row in rows}

    def text_hashes(self) -> dict[str, str]:
        """The embedding cache key of every chunk that a clean entry lists, by chunk id."""
        return {i: h for e in self.entries().values() if e.clean and len(e.chunk_ids) == len(e.text_hashes)
                for i, h in zip(e.chunk_ids, e.text_hashes)}

    def get(self, source: str) -> Entry | None:
        row = self.db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM sources WHERE scope = ? AND source = ?",
            (self.scope, source),
        ).fetchone()
        return _entry(row) if row else None

    def summaries(self) -> list[tuple[str, str | None, int, str | None, bool]]:
        """(source, title, number of chunk ids, indexed_at, clean) of every entry of this scope,
        read without decoding the chunk id lists (one row per source)."""
        return [(s, t, n, when, bool(clean)) for s, t, n, when, clean in self.db.execute(
            "SELECT source, title, json_array_length(chunk_ids), indexed_at, content_hash IS NOT NULL "
            "FROM sources WHERE scope = ?", (self.scope,))]

    # -- writing: every method is one transaction -----------------------------------------------

    def begin(self, updates: Sequence[tuple[Entry, Sequence[str]]],
              vectors: dict[str, Sequence[float]] | None = None, model: str | None = None) -> None:
        """Before the store is written: mark each source dirty, listing old and new chunk ids.

        updates: (entry as it will be, the ids the store may still hold from before). New
        embeddings go into the cache in the same transaction.
        """
        with self._tx() as db:
            if vectors:
                db.executemany(
                    "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                    [(model, h, _pack(v)) for h, v in vectors.items()],
                )
            for entry, old_ids in updates:
                ids = list(dict.fromkeys([*old_ids, *entry.chunk_ids]))
                self._put(db, replace(entry, content_hash=None, chunk_ids=tuple(ids)))

    def commit(self, entries: Iterable[Entry]) -> None:
        """After the store was written: record each source as clean."""
        with self._tx() as db:
            for entry in entries:
                self._put(db, entry)

    def put(self, entry: Entry) -> None:
        """Record facts that changed no chunk (new mtime, validators, last error)."""
        self.commit([entry])

    def remove(self, sources: Iterable[str]) -> None:
        """Forget sources, and the crawl visits that handed them on to be indexed."""
        rows = [(self.scope, s) for s in sources]
        with self._tx() as db:
            db.executemany("DELETE FROM sources WHERE scope = ? AND source = ?", rows)
            db.executemany("DELETE FROM visits WHERE scope = ? AND name = ? AND outcome = 'page'", rows)

    def bind(self, collection_id: str) -> None:
        """Record that this scope's entries describe the Chroma collection collection_id."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO bindings VALUES (?, ?)", (self.scope, collection_id))

    def drop_scope(self) -> None:
        """Forget every entry and visit of this scope."""
        with self._tx() as db:
            for table in _SCOPED:
                db.execute(f"DELETE FROM {table} WHERE scope = ?", (self.scope,))

    def move_scope(self, to: str) -> None:
        """Give this scope's entries and visits to another scope, replacing what it had (one
        transaction)."""
        with self._tx() as db:
            for table in _SCOPED:
                db.execute(f"DELETE FROM {table} WHERE scope = ?", (to,))
                db.execute(f"UPDATE {table} SET scope = ? WHERE scope = ?", (to, self.scope))

    # -- what crawls learned from pages ---------------------------------------------------------

    def visit(self, url: str) -> Visit | None:
        row = self.db.execute(
            "SELECT url, final, name, outcome, etag, last_modified, analysis, visited_at FROM visits "
            "WHERE scope = ? AND url = ?", (self.scope, url),
        ).fetchone()
        if row is None:
            return None
        url, final, name, outcome, etag, last_modified, analysis, visited_at = row
        data = json.loads(analysis)
        return Visit(url, final, name, outcome, etag, last_modified, tuple(data["links"]),
                     data["canonical"], data["noindex"], data["nofollow"], data["listing"],
                     data["thin"], data["parser"], visited_at, data.get("fingerprint"))

    def remember(self, visit: Visit, root: str, when: str | None = None, keep_root: bool = False) -> None:
        """Record a visit under root (with keep_root, a visit already recorded keeps its root)."""
        analysis = json.dumps({
            "links": list(visit.links), "canonical": visit.canonical, "noindex": visit.noindex,
            "nofollow": visit.nofollow, "listing": visit.listing, "thin": visit.thin,
            "parser": visit.parser, "fingerprint": visit.fingerprint,
        })
        with self._tx() as db:
            db.execute(
                "INSERT INTO visits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (scope, url) DO UPDATE SET "
                f"root = {'visits.root' if keep_root else 'excluded.root'}, final = excluded.final, "
                "name = excluded.name, outcome = excluded.outcome, etag = excluded.etag, "
                "last_modified = excluded.last_modified, analysis = excluded.analysis, "
                "visited_at = excluded.visited_at",
                (self.scope, visit.url, root, visit.final, visit.name, visit.outcome, visit.etag,
                 visit.last_modified, analysis, when),
            )

    def visits(self) -> dict[str, Visit]:
        """Every visit of this scope, by URL requested."""
        urls = [u for (u,) in self.db.execute("SELECT url FROM visits WHERE scope = ?", (self.scope,))]
        return {u: self.visit(u) for u in urls}

    def prune_visits(self, root: str, keep: set[str]) -> int:
        """Forget the visits a finished crawl of root did not make again; return how many."""
        urls = [u for (u,) in self.db.execute(
            "SELECT url FROM visits WHERE scope = ? AND root = ?", (self.scope, root)) if u not in keep]
        if urls:
            with self._tx() as db:
                db.executemany("DELETE FROM visits WHERE scope = ? AND url = ?",
                               [(self.scope, u) for u in urls])
        return len(urls)

    def forget_visits_under(self, prefix: str) -> None:
        """Forget the visits of every URL that starts with prefix."""
        with self._tx() as db:
            db.execute("DELETE FROM visits WHERE scope = ? AND substr(url, 1, ?) = ?",
                       (self.scope, len(prefix), prefix))

    # -- the embedding cache --------------------------------------------------------------------

    def cached_vectors(self, model: str, hashes: Iterable[str]) -> dict[str, list[float]]:
        hashes = list(dict.fromkeys(hashes))
        found: dict[str, list[float]] = {}
        for start in range(0, len(hashes), 500):  # SQLite caps the number of parameters
            part = hashes[start:start + 500]
            rows = self.db.execute(
                f"SELECT text_hash, vector FROM embeddings WHERE model = ? AND text_hash IN "
                f"({', '.join('?' * len(part))})", (model, *part),
            )
            found.update((h, _unpack(v)) for h, v in rows)
        return found

    def cache_vectors(self, model: str, vectors: dict[str, Sequence[float]]) -> None:
        """Put vectors into the embedding cache (by hash of the embedded text), in one transaction."""
        if vectors:
            with self._tx() as db:
                db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                               [(model, h, _pack(v)) for h, v in vectors.items()])

    def collect_garbage(self) -> int:
        """Drop cached embeddings that no entry of any scope uses any more; return how many."""
        used = {(m, h) for m, hashes in self.db.execute("SELECT model, text_hashes FROM sources")
                for h in json.loads(hashes)}
        # A cached vector's key is its vector identity (the model, plus an int8 artifact's key).
        unused = [(m, h) for m, h in self.db.execute("SELECT model, text_hash FROM embeddings")
                  if (model_of(m), h) not in used]
        if unused:
            with self._tx() as db:
                db.executemany("DELETE FROM embeddings WHERE model = ? AND text_hash = ?", unused)
        return len(unused)

    # -- internals ------------------------------------------------------------------------------

    def _put(self, db: sqlite3.Connection, e: Entry) -> None:
        db.execute(
            f"INSERT OR REPLACE INTO sources (scope, {', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join('?' * (len(_COLUMNS) + 1))})",
            (self.scope, e.source, e.root, e.etag, e.last_modified, e.size, e.mtime, e.body_hash,
             e.content_hash, e.chunking, e.model, json.dumps(list(e.chunk_ids)),
             json.dumps(list(e.text_hashes)), e.indexed_at, e.last_error, e.title),
        )

    def _tx(self):
        return _Transaction(self.db, self.path)


class _Transaction:
    def __init__(self, db: sqlite3.Connection, path: Path):
        self.db = db
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
            except sqlite3.Error as err:
                raise StoreError(f"cannot write the ledger {self.path}: {err}") from err
        else:
            self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot write the ledger {self.path}: {exc}") from exc


def _entry(row) -> Entry:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["chunk_ids"] = tuple(json.loads(values["chunk_ids"]))
    values["text_hashes"] = tuple(json.loads(values["text_hashes"]))
    return Entry(**values)


def _pack(vector: Sequence[float]) -> bytes:
    return array("f", vector).tobytes()


def _unpack(blob: bytes) -> list[float]:
    values = array("f")
    values.frombytes(blob)
    return values.tolist()
