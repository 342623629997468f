"""store.Index: stats, sources and collections read the ledger when it describes the collection
exactly, and every chunk otherwise (real Chroma on tmp_path, fake embedder)."""

from __future__ import annotations

import sqlite3

import pytest

from kbindex.store import Index
from kbindex.store.chroma import Collection, Store
from tests.conftest import SAMPLE_KB


def _scanned(db, name="kbindex") -> dict:
    """What every chunk's metadata says: {source: (title, chunks, indexed_at)} and the latest time."""
    docs: dict[str, list] = {}
    last = ""
    for m in Store(db).collection(name).scan():
        doc = docs.setdefault(m.metadata["source"], [m.metadata.get("title", ""), 0, m.metadata.get("indexed_at")])
        doc[1] += 1
        last = max(last, str(m.metadata.get("indexed_at", "")))
    return {"sources": {s: tuple(v) for s, v in docs.items()}, "last": last}


def _listed(kb) -> dict:
    rows = kb.json("sources")
    return {r["source"]: (r["title"], r["chunks"], r["indexed_at"]) for r in rows}


def test_stats_sources_and_collections_match_the_chunks_without_reading_them(kb, db, tmp_path, monkeypatch):
    kb("index", str(SAMPLE_KB))
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "one.md").write_text("# One\n\nA first page.\n")
    (extra / "untitled.txt").write_text("Plain text without a title line, long enough to be kept as a page.\n")
    kb("index", str(extra))
    expected = _scanned(db)
    stats_scanned = kb.json("stats")
    with monkeypatch.context() as patched:
        patched.setattr(Collection, "scan", lambda self, *a, **k: (_ for _ in ()).throw(AssertionError("scan")))
        assert _listed(kb) == expected["sources"]
        stats = kb.json("stats")
        collections = kb.json("collections")
    assert stats == stats_scanned and stats["documents"] == len(expected["sources"]) == 12
    assert stats["chunks"] == sum(n for _, n, _ in expected["sources"].values())
    assert collections == [{"collection": "kbindex", "model": "fake:hash", "documents": 12,
                            "chunks": stats["chunks"], "last_indexed": expected["last"]}]


def test_a_dirty_entry_or_an_old_ledger_falls_back_to_the_chunks(kb, db):
    kb("index", str(SAMPLE_KB))
    expected = _scanned(db)
    conn = sqlite3.connect(db / "kbindex.sqlite")
    # An entry left dirty by a write cut short: its chunk ids list old and new, so the ledger's
    # counts cannot be trusted.
    conn.execute("UPDATE sources SET content_hash = NULL, chunk_ids = json_insert(chunk_ids, '$[#]', 'x') "
                 "WHERE rowid = (SELECT min(rowid) FROM sources)")
    conn.commit()
    assert _listed(kb) == expected["sources"]
    assert kb.json("stats")["documents"] == len(expected["sources"])
    # A ledger from before titles were kept: sources needs the titles from the chunks.
    conn.execute("UPDATE sources SET content_hash = 'x', chunk_ids = json_remove(chunk_ids, '$[#-1]') "
                 "WHERE content_hash IS NULL")
    conn.execute("UPDATE sources SET title = NULL")
    conn.commit()
    conn.close()
    assert _listed(kb) == expected["sources"]


def test_a_ledger_from_before_titles_gains_the_column_and_loses_nothing(tmp_path):
    db = tmp_path / "index"
    db.mkdir()
    conn = sqlite3.connect(db / "kbindex.sqlite")
    conn.execute("CREATE TABLE sources (scope TEXT NOT NULL, source TEXT NOT NULL, root TEXT NOT NULL, "
                 "etag TEXT, last_modified TEXT, size INTEGER, mtime REAL, body_hash TEXT, content_hash TEXT, "
                 "chunking TEXT, model TEXT, chunk_ids TEXT NOT NULL, text_hashes TEXT NOT NULL, "
                 "indexed_at TEXT, last_error TEXT, PRIMARY KEY (scope, source))")
    conn.execute("INSERT INTO sources VALUES ('kbindex', '/kb/a.md', '/kb', NULL, NULL, 3, 1.0, 'b', 'c', "
                 "'256/32', 'fake:hash', '[\"a#0\"]', '[\"h\"]', '2026-01-01T00:00:00Z', NULL)")
    conn.commit()
    conn.close()
    with Index(db, "kbindex") as index:
        entry = index.ledger.get("/kb/a.md")
        assert entry.chunk_ids == ("a#0",) and entry.title is None and entry.clean
        assert index.ledger.summaries() == [("/kb/a.md", None, 1, "2026-01-01T00:00:00Z", True)]


def test_a_missing_collection_raises_index_does_not_exist(tmp_path):
    with pytest.raises(Index.DoesNotExist):
        Index(tmp_path / "nothing", "kbindex").collection()
    Store(tmp_path / "index").create("other", "fake:hash", 8)
    with pytest.raises(Index.DoesNotExist, match="collections here: other"):
        Index(tmp_path / "index", "kbindex").stats()


def test_rename_to_carries_the_chunks_the_ledger_and_the_keyword_index(kb, db):
    kb("index", str(SAMPLE_KB))
    with Index(db, "kbindex") as index:
        chunks, entries = index.collection().count(), index.ledger.entries()
        renamed = index.rename_to("renamed")
    with renamed:
        assert renamed.collection().count() == chunks and renamed.ledger.entries() == entries
        assert renamed.keywords().count() == chunks and not renamed.keywords().dirty
        assert not renamed.sibling("kbindex").exists()
    assert kb.json("stats", "--collection", "renamed")["chunks"] == chunks
    hits = kb.json("query", "0x80070002", "--mode", "keyword", "--collection", "renamed")["hits"]
    assert hits[0]["source"].endswith("windows-update-error-0x80070002.rst")
    assert kb.json("index", str(SAMPLE_KB), "--collection", "renamed")["unchanged"] == 10
