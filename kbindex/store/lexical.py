"""The keyword (BM25) index beside the Chroma collection: SQLite FTS5, one file per index folder.

Chroma's local mode has no ranked full-text search, so kbindex keeps its own. FTS5 was chosen over
bm25s (see docs/benchmarks.md): it ranks with BM25 (`bm25()`), stems with Porter, is transactional,
updates a few rows without rebuilding anything, and ships with Python.

The file `lexical.sqlite3` in the index folder holds, per collection, a table of chunks (same ids
as in Chroma, with the metadata Chroma holds, so `--where` filters here too) and an FTS5 table over
it with three columns, ranked with per-column BM25 weights (FIELD_WEIGHTS): the page title, the
heading path and the body. An index made before the columns were split (one `context` column for
"Title > Section") is converted in place when opened: the chunks table keeps every row, gains the
two columns (filled from each chunk's stored metadata) and the full-text index is rebuilt from it. Chroma is written first, then this index, both idempotently; a `dirty` flag set before the first
write of an index run and cleared after its last tells the next run to reconcile with Chroma (which
holds every chunk's text and metadata, so no re-embedding is needed).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kbindex.chunk import context_line
from kbindex.errors import StoreError, UsageError
from kbindex.normalize import normalize_text
from kbindex.records import Chunk

FILENAME = "lexical.sqlite3"
# Porter stemming over unicode61 words; "_" and "-" separate words, so AZURE_CLIENT_ID is indexed as
# azure+client+id and a query term typed that way is searched as that exact phrase (see _terms).
TOKENIZER = "porter unicode61 remove_diacritics 2"

# A query term: a run of word characters, with identifier joiners inside it kept together
# (AZURE_CLIENT_ID, max_wal_size, pg_hba.conf, 0x80000003, en-US, C:\Windows).
_TERM = re.compile(r"\w+(?:[._\-:/\\@]+\w+)*")
# Query words that match most of a corpus: dropping them keeps BM25 fast on large collections and
# changes its ranking little (their idf is near zero). Kept when a query has nothing else.
STOPWORDS = frozenset(
    "a an and are as at be but by for from has have he her his i if in into is it its me my no not "
    "of on or our she so than that the their them then there these they this to was we were what "
    "when where which who why will with would you your do does did can could how".split()
)

# BM25 weights of the FTS5 columns (title, heading path, body), as bm25()'s per-column weights
# (https://sqlite.org/fts5.html#the_bm25_function). Chosen on the dev split of the Python manual
# data set (benchmarks/docs_index_eval.py; every variant tried is in docs/benchmarks.md): a word
# of the title counts as 16 body words, a word of the heading path as 4. 32,4,1 scored 0.002 MRR
# higher on dev, within noise; the milder one was kept, as SciFact could not be re-measured.
FIELD_WEIGHTS = (16.0, 4.0, 1.0)
FIELDS = ("title", "headings", "text")

# Query terms found in more than this share of the chunks are left out of keyword queries (see
# LexicalIndex._expression). Measured on SciFact and 100,000 chunks (docs/benchmarks.md): 0.2 costs
# 0.0015 nDCG@10 and halves BM25 time on large collections.
COMMON_SHARE = 0.2
# ... but only in collections this large: in small ones BM25 is fast anyway, and a word in a fifth
# of 50 chunks can still tell them apart.
PRUNE_MIN_CHUNKS = 50_000


@dataclass(frozen=True)
class LexicalMatch:
    """A chunk found by keyword search; score is BM25 (higher is better)."""

    id: str
    score: float
    text: str
    metadata: dict


@dataclass(frozen=True)
class Row:
    """What the lexical index stores for one chunk."""

    id: str
    source: str
    context: str  # "Title > Section", searched together with the text
    text: str
    metadata: dict  # the chunk's Chroma metadata

    @classmethod
    def from_stored(cls, id: str, text: str, metadata: dict) -> Row:
        """The row for a chunk as Chroma holds it."""
        title, section = str(metadata.get("title", "")), str(metadata.get("section", ""))
        return cls(id, str(metadata.get("source", "")), context_line(title, section), text, dict(metadata))


def query_terms(query: str) -> list[str]:
    """The terms of a query as typed, stopwords left out unless nothing else remains.

    The query is normalized as indexed text is (kbindex.normalize), so that a term typed with a
    ligature, in full-width forms or with a soft hyphen matches the plain word.
    """
    terms = list(dict.fromkeys(t for t in _TERM.findall(normalize_text(query))))
    content = [t for t in terms if t.lower() not in STOPWORDS]
    return content or terms


def match_expression(query: str) -> str | None:
    """An FTS5 query: each term quoted (an identifier becomes a phrase of its parts), OR-ed."""
    terms = query_terms(query)
    if not terms:
        return None
    return " OR ".join(f'"{t}"' for t in terms)


class LexicalIndex:
    """The BM25 index of one collection in one store (its key: store.index.keyword_key).

    Over 200 lines: writing, reading, BM25 search with its term pruning, integrity checks and the
    reconciliation with Chroma all act on the same two tables, and split apart they would share
    the table names and the connection. Raises StoreError when SQLite fails.
    """

    def __init__(self, conn: sqlite3.Connection, collection: str,
                 weights: tuple[float, float, float] = FIELD_WEIGHTS):
        self._conn = conn
        self.collection = collection  # the key
        self.weights = weights  # bm25() weights of title, heading path and body
        # Keys are validated ([a-zA-Z0-9._-] and "@"), so they are safe inside quotes.
        self._chunks = f'"{collection}:chunks"'
        self._fts = f'"{collection}:fts"'

    @classmethod
    def open(cls, db_dir: Path, key: str) -> LexicalIndex:
        """Open (creating when missing) the keyword index `key` (store.index.keyword_key: the
        collection's name, with a digest of the server URL in server mode) in an index folder.

        StoreError when the file cannot be opened; CollectionError for a key that is not a
        collection name with an optional `@hex` suffix.
        """
        from kbindex.store.chroma import check_name

        name, _, server = key.partition("@")
        check_name(name)
        if server and not _HEX.match(server):
            raise StoreError(f"invalid keyword index name {key!r}")
        path = Path(db_dir) / FILENAME
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            _upgrade(conn)
            index = cls(conn, key)
            if not index._exists():
                index._create()
            elif index._fts_columns() != list(FIELDS):
                index._split_fields()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the keyword index at {path}: {exc}") from exc
        return index

    def close(self) -> None:
        self._conn.close()

    def _exists(self) -> bool:
        """True when this collection's tables are there (opening for a query then writes nothing)."""
        row = self._conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name IN (?, ?, 'kbindex_lexical_state')",
            (f"{self.collection}:chunks", f"{self.collection}:fts"),
        ).fetchone()
        return row[0] == 3

    def _create(self) -> None:
        name = self.collection
        # executescript commits any open transaction first, so the script carries its own.
        self._conn.executescript(f"""
                BEGIN IMMEDIATE;
                CREATE TABLE IF NOT EXISTS kbindex_lexical_state (
                    collection TEXT PRIMARY KEY, dirty INTEGER NOT NULL DEFAULT 0);
                CREATE TABLE IF NOT EXISTS {self._chunks} (
                    rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, source TEXT NOT NULL,
                    context TEXT NOT NULL, text TEXT NOT NULL, meta TEXT NOT NULL,
                    title TEXT NOT NULL DEFAULT '', headings TEXT NOT NULL DEFAULT '');
                CREATE INDEX IF NOT EXISTS "{name}:by_source" ON {self._chunks}(source);
                {self._fts_schema()}
                INSERT OR IGNORE INTO kbindex_lexical_state(collection, dirty) VALUES ('{name}', 0);
                COMMIT;
            """)

    def _fts_schema(self) -> str:
        """The FTS5 table over the chunks' title, heading path and body, and the triggers that
        keep it in step with the chunks table (an external-content table:
        https://sqlite.org/fts5.html#external_content_tables)."""
        name = self.collection
        return f"""
                CREATE VIRTUAL TABLE IF NOT EXISTS {self._fts} USING fts5(
                    title, headings, text, content='{name}:chunks', content_rowid='rowid',
                    tokenize='{TOKENIZER}');
                CREATE TRIGGER IF NOT EXISTS "{name}:ai" AFTER INSERT ON {self._chunks} BEGIN
                    INSERT INTO {self._fts}(rowid, title, headings, text)
                    VALUES (new.rowid, new.title, new.headings, new.text);
                END;
                CREATE TRIGGER IF NOT EXISTS "{name}:ad" AFTER DELETE ON {self._chunks} BEGIN
                    INSERT INTO {self._fts}({self._fts}, rowid, title, headings, text)
                    VALUES ('delete', old.rowid, old.title, old.headings, old.text);
                END;
                CREATE TRIGGER IF NOT EXISTS "{name}:au" AFTER UPDATE ON {self._chunks} BEGIN
                    INSERT INTO {self._fts}({self._fts}, rowid, title, headings, text)
                    VALUES ('delete', old.rowid, old.title, old.headings, old.text);
                    INSERT INTO {self._fts}(rowid, title, headings, text)
                    VALUES (new.rowid, new.title, new.headings, new.text);
                END;"""

    def _fts_columns(self) -> list[str]:
        return [r[1] for r in self._conn.execute(f"PRAGMA table_info({self._fts})")]

    def _split_fields(self) -> None:
        """Convert an index with one context column to the title / headings / body columns.

        Every chunk row stays; the title and heading path come from its stored metadata (the
        same values the context line was made from), then the full-text index is rebuilt from
        the rows, all in one transaction, so an interruption leaves the old index as it was.
        """
        name = self.collection
        have = {r[1] for r in self._conn.execute(f"PRAGMA table_info({self._chunks})")}
        added = "".join(f"ALTER TABLE {self._chunks} ADD COLUMN {column} TEXT NOT NULL DEFAULT '';\n"
                        for column in ("title", "headings") if column not in have)
        self._conn.executescript(f"""
                BEGIN IMMEDIATE;
                DROP TRIGGER IF EXISTS "{name}:ai";
                DROP TRIGGER IF EXISTS "{name}:ad";
                DROP TRIGGER IF EXISTS "{name}:au";
                DROP TABLE IF EXISTS {self._fts};
                {added}
                UPDATE {self._chunks} SET
                    title = coalesce(json_extract(meta, '$.title'), ''),
                    headings = coalesce(json_extract(meta, '$.section'), '');
                {self._fts_schema()}
                INSERT INTO {self._fts}({self._fts}) VALUES ('rebuild');
                COMMIT;
            """)

    def _transaction(self):
        return _Transaction(self._conn)

    # -- writing ------------------------------------------------------------------------------

    def upsert(self, chunks: Sequence[Chunk], model: str) -> None:
        """Add or replace chunks (by id), with the metadata Chroma stores for them."""
        from kbindex.store.chroma import chunk_metadata

        self.upsert_rows(
            Row(c.id, c.source, context_line(c.title, c.section), c.text, chunk_metadata(c, model))
            for c in chunks
        )

    def upsert_rows(self, rows: Iterable[Row]) -> None:
        """Add or replace rows by id, in one transaction."""
        with self._transaction():
            self._conn.executemany(
                f"INSERT INTO {self._chunks}(id, source, context, text, meta, title, headings) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET source=excluded.source, context=excluded.context, "
                "text=excluded.text, meta=excluded.meta, title=excluded.title, headings=excluded.headings",
                ((r.id, r.source, r.context, r.text, json.dumps(r.metadata, sort_keys=True),
                  str(r.metadata.get("title") or ""), str(r.metadata.get("section") or "")) for r in rows),
            )

    def delete(self, ids: Iterable[str]) -> None:
        """Remove chunks by id; ids not present are ignored."""
        with self._transaction():
            self._conn.executemany(f"DELETE FROM {self._chunks} WHERE id = ?", ((i,) for i in ids))

    def drop(self) -> None:
        """Remove this collection's tables (the collection was deleted)."""
        name = self.collection
        self._conn.executescript(f"""
            BEGIN IMMEDIATE;
            DROP TABLE IF EXISTS {self._fts};
            DROP TABLE IF EXISTS {self._chunks};
            DELETE FROM kbindex_lexical_state WHERE collection = '{name}';
            COMMIT;
        """)

    def mark_dirty(self) -> None:
        """Record that Chroma is about to change; cleared by mark_clean after this index caught up."""
        self._set_dirty(1)

    def mark_clean(self) -> None:
        self._set_dirty(0)

    def _set_dirty(self, value: int) -> None:
        with self._transaction():
            self._conn.execute(
                "UPDATE kbindex_lexical_state SET dirty = ? WHERE collection = ?", (value, self.collection)
            )

    @property
    def dirty(self) -> bool:
        """True while a write is in progress or was interrupted, or the table is UNVERIFIED."""
        return self._state() != 0

    @property
    def unverified(self) -> bool:
        """A table from before keyword indexes were keyed by scope (see _upgrade): it must be
        compared with its Chroma collection once before it is trusted."""
        return self._state() == UNVERIFIED

    def _state(self) -> int:
        row = self._conn.execute(
            "SELECT dirty FROM kbindex_lexical_state WHERE collection = ?", (self.collection,)
        ).fetchone()
        return row[0] if row else 0

    # -- reading ------------------------------------------------------------------------------

    def count(self) -> int:
        return self._conn.execute(f"SELECT count(*) FROM {self._chunks}").fetchone()[0]

    def ids(self) -> set[str]:
        return {r[0] for r in self._conn.execute(f"SELECT id FROM {self._chunks}")}

    def rows(self) -> Iterator[Row]:
        """Every stored row."""
        for i, source, context, text, meta in self._conn.execute(
            f"SELECT id, source, context, text, meta FROM {self._chunks} ORDER BY rowid"
        ):
            yield Row(i, source, context, text, json.loads(meta))

    def stored(self, ids: Sequence[str]) -> dict[str, tuple[str, dict]]:
        """(text, metadata) of the given chunks that are here, by id."""
        out: dict[str, tuple[str, dict]] = {}
        ids = list(ids)
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            for i, t, m in self._conn.execute(
                f"SELECT id, text, meta FROM {self._chunks} WHERE id IN ({marks})", part
            ):
                out[i] = (t, json.loads(m))
        return out

    def metadata(self) -> dict[str, dict]:
        """Every chunk's stored metadata, by id."""
        return {i: json.loads(m) for i, m in self._conn.execute(f"SELECT id, meta FROM {self._chunks}")}

    def digests(self) -> dict[str, str]:
        """store.metadata_digest of every chunk's stored metadata, by id."""
        from kbindex.store.chroma import metadata_digest

        return {i: metadata_digest(json.loads(m)) for i, m in self._conn.execute(f"SELECT id, meta FROM {self._chunks}")}

    def check(self) -> list[str]:
        """What SQLite finds wrong with the file (`PRAGMA integrity_check`) and with this
        collection's full-text index (FTS5's 'integrity-check' command); [] when sound."""
        try:
            found = [r[0] for r in self._conn.execute("PRAGMA integrity_check")]
        except sqlite3.Error as exc:
            return [f"the file is damaged ({exc})"]
        if found != ["ok"]:
            return [f"the file is damaged ({'; '.join(found[:2])})"]
        try:
            # rank 1: also compare the index with its external content table, the chunks
            # (https://sqlite.org/fts5.html#the_integrity_check_command).
            self._conn.execute(f"INSERT INTO {self._fts}({self._fts}, rank) VALUES ('integrity-check', 1)")
        except sqlite3.Error as exc:
            return [f"its full-text index does not match its chunks ({exc})"]
        return []

    def rebuild_fts(self) -> None:
        """Rebuild the full-text index from the chunks table (FTS5's 'rebuild' command)."""
        with self._transaction():
            self._conn.execute(f"INSERT INTO {self._fts}({self._fts}) VALUES ('rebuild')")

    @staticmethod
    def set_aside(db_dir: Path) -> Path:
        """Rename a damaged keyword index file (and its WAL) out of the way, keeping it; the
        next open makes a new one. Returns the file's new name."""
        import time

        path = Path(db_dir) / FILENAME
        aside = path.with_name(f"{FILENAME}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{path}{suffix}")
            if part.exists():
                part.rename(f"{aside}{suffix}")
        return aside

    def search(self, query: str, k: int, where: dict | None = None) -> list[LexicalMatch]:
        """The k chunks that best match the query's terms by BM25, best first."""
        expression = self._expression(query)
        if expression is None or k < 1:
            return []
        conditions, params = _where_sql(where)
        if not conditions:
            # Rank inside the FTS5 table first, then read only the k winners' rows: joining
            # before ORDER BY would read the row of every chunk that matches any term.
            sql = (
                f"SELECT c.id, m.s, c.text, c.meta FROM (SELECT rowid, {self._bm25()} AS s "
                f"FROM {self._fts} WHERE {self._fts} MATCH ? ORDER BY s LIMIT ?) AS m "
                f"JOIN {self._chunks} AS c ON c.rowid = m.rowid ORDER BY m.s"
            )
            try:
                rows = self._conn.execute(sql, (expression, k)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"keyword search failed: {exc}") from exc
            return [LexicalMatch(i, round(-s, 6), t, json.loads(m)) for i, s, t, m in rows]
        sql = (
            f"SELECT c.id, {self._bm25()} AS s, c.text, c.meta FROM {self._fts} "
            f"JOIN {self._chunks} AS c ON c.rowid = {self._fts}.rowid "
            f"WHERE {self._fts} MATCH ?{''.join(' AND ' + c for c in conditions)} ORDER BY s LIMIT ?"
        )
        try:
            rows = self._conn.execute(sql, (expression, *params, k)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"keyword search failed: {exc}") from exc
        # FTS5's bm25() is negated so that ORDER BY ascending puts the best first.
        return [LexicalMatch(i, round(-s, 6), t, json.loads(m)) for i, s, t, m in rows]

    def _bm25(self) -> str:
        """bm25() with this index's column weights (floats, so safe to write into the SQL)."""
        return f"bm25({self._fts}, {', '.join(repr(float(w)) for w in self.weights)})"

    def _expression(self, query: str) -> str | None:
        """The FTS5 query, without terms found in more than COMMON_SHARE of the chunks.

        Such a term adds almost nothing to BM25 (its idf is near zero) but makes FTS5 score most
        of the collection; the rarest terms are kept so a query never ends up empty.
        """
        terms = query_terms(query)
        if not COMMON_SHARE or len(terms) < 2:
            return match_expression(query)
        total = self.count()
        limit = int(total * COMMON_SHARE)
        if total < PRUNE_MIN_CHUNKS or limit < 1:
            return match_expression(query)
        frequency = {}
        for term in terms:
            # LIMIT bounds the work: we only need to know whether the term is that common.
            frequency[term] = self._conn.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {self._fts} WHERE {self._fts} MATCH ? LIMIT ?)",
                (f'"{term}"', limit + 1),
            ).fetchone()[0]
        kept = [t for t in terms if frequency[t] <= limit] or sorted(terms, key=frequency.get)[:1]
        return " OR ".join(f'"{t}"' for t in kept)

    # -- keeping in step with Chroma ----------------------------------------------------------

    def differences(self, collection) -> tuple[list[str], list[str]]:
        """(ids to copy from Chroma: missing here or with other metadata, ids here but not in Chroma)."""
        theirs = {m.id: m.metadata for m in collection.scan()}
        mine = self.metadata()
        stale = [i for i, meta in theirs.items() if mine.get(i) != meta]
        extra = sorted(set(mine) - set(theirs))
        return sorted(stale), extra

    def sync(self, collection, batch: int = 1000) -> tuple[int, int]:
        """Make this index hold exactly Chroma's chunks; returns (copied, deleted)."""
        stale, extra = self.differences(collection)
        if extra:
            self.delete(extra)
        for start in range(0, len(stale), batch):
            part = collection.get(ids=stale[start:start + batch], include_text=True)
            self.upsert_rows(Row.from_stored(m.id, m.text, m.metadata) for m in part)
        self.mark_clean()
        return len(stale), len(extra)

    def heal(self, collection) -> bool:
        """Reconcile with Chroma when a run was interrupted or the counts differ; True if it did."""
        if self.dirty or self.count() != collection.count():
            self.sync(collection)
            return True
        return False


# The file's version (PRAGMA user_version). 0: every collection's tables were keyed by its name
# alone, so a local store and a Chroma server indexed from one --db shared (and mixed) one table.
# 1: keyed by store.index.keyword_key, the server's tables apart.
VERSION = 1
# The dirty value of a table made under version 0: like a dirty table, it is reconciled with its
# Chroma collection (differences() compares every chunk) before it is trusted, by the next write
# or the next search; mark_clean then makes it 0.
UNVERIFIED = 2
_HEX = re.compile(r"^[0-9a-f]{12}$")


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a file made by an older kbindex to VERSION, losing nothing: tables of version 0 stay
    where they are (a local collection's name is its key still) and are marked UNVERIFIED, since
    a server's chunks may have been written into them."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] < VERSION:  # not upgraded meanwhile
            has_state = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'kbindex_lexical_state'").fetchone()
            if has_state:
                conn.execute("UPDATE kbindex_lexical_state SET dirty = ? WHERE dirty = 0", (UNVERIFIED,))
            conn.execute(f"PRAGMA user_version = {VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error (the connection is in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def __enter__(self):
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")
        return False


_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _where_sql(where: dict | None) -> tuple[list[str], list]:
    """SQL conditions on the stored metadata for a Chroma where clause of equalities."""
    if not where:
        return [], []
    clauses = where["$and"] if set(where) == {"$and"} else [where]
    conditions, params = [], []
    for clause in clauses:
        for key, value in clause.items():
            if isinstance(value, dict):
                if set(value) != {"$eq"}:
                    raise UsageError(f"keyword search supports only equality filters, not {value!r}")
                value = value["$eq"]
            if not _KEY.match(key):
                raise UsageError(f"--where key {key!r}: use letters, digits, '_', '.' or '-'")
            conditions.append(f"json_extract(c.meta, '$.\"{key}\"') = ?")
            params.append(value)
    return conditions, params
