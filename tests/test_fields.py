"""Field-aware keyword ranking: title, heading path and body as separate FTS5 columns with
per-column BM25 weights, and the in-place conversion of keyword indexes made before the split."""

import sqlite3

import pytest

from kbindex.store import lexical as lx
from kbindex.store.lexical import FIELDS, LexicalIndex, Row


def _row(id, title, section, text):
    meta = {"source": f"/kb/{id}.md", "position": 0, "title": title, "section": section}
    return Row(id, meta["source"], f"{title} > {section}" if section else title, text, meta)


# Each query word appears once in a title (or heading) of one chunk, and once in the body of another
# chunk of the same length: only the column can tell them apart.
ROWS = [
    _row("title-hit", "Logging", "", "How records travel from a call to a file or a stream."),
    _row("body-hit", "Handlers", "", "Handlers pass records on; logging may pass them upward."),
    _row("heading-hit", "Sockets", "Timeouts", "Each call waits until data arrives or fails."),
    _row("heading-body", "Sockets", "Buffers", "Reads fail after a timeouts setting elapses here."),
    _row("ident-title", "AZURE_CLIENT_ID", "", "Which identity the application signs in as."),
    _row("ident-body", "Identities", "", "The variable AZURE_CLIENT_ID names the signing identity."),
]


@pytest.fixture
def index(tmp_path):
    index = LexicalIndex.open(tmp_path, "kbs")
    index.upsert_rows(ROWS)
    yield index
    index.close()


def _ids(index, query, weights):
    index.weights = weights
    return [m.id for m in index.search(query, 10)]


@pytest.mark.parametrize("query,field_hit,body_hit,weights", [
    ("logging", "title-hit", "body-hit", (8.0, 1.0, 1.0)),
    ("timeouts", "heading-hit", "heading-body", (1.0, 8.0, 1.0)),
    ("AZURE_CLIENT_ID", "ident-title", "ident-body", (8.0, 1.0, 1.0)),
])
def test_a_weighted_column_decides_the_order(index, query, field_hit, body_hit, weights):
    # weighting that column puts its chunk first; weighting the body instead reverses the order
    assert _ids(index, query, weights)[:2] == [field_hit, body_hit]
    body_first = (1.0, 1.0, 8.0)
    assert _ids(index, query, body_first)[:2] == [body_hit, field_hit]


def test_default_weights_rank_a_title_word_above_the_same_word_in_a_body(index):
    index.weights = lx.FIELD_WEIGHTS
    assert [m.id for m in index.search("logging", 10)][:2] == ["title-hit", "body-hit"]


def test_identifiers_in_titles_are_found_as_typed_and_only_there(index):
    # AZURE_CLIENT_ID is searched as the phrase azure+client+id, in any column
    assert sorted(m.id for m in index.search("AZURE_CLIENT_ID", 10)) == ["ident-body", "ident-title"]


OLD_SCHEMA = """
CREATE TABLE kbindex_lexical_state (collection TEXT PRIMARY KEY, dirty INTEGER NOT NULL DEFAULT 0);
CREATE TABLE "kbs:chunks" (
    rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, source TEXT NOT NULL,
    context TEXT NOT NULL, text TEXT NOT NULL, meta TEXT NOT NULL);
CREATE INDEX "kbs:by_source" ON "kbs:chunks"(source);
CREATE VIRTUAL TABLE "kbs:fts" USING fts5(
    context, text, content='kbs:chunks', content_rowid='rowid',
    tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER "kbs:ai" AFTER INSERT ON "kbs:chunks" BEGIN
    INSERT INTO "kbs:fts"(rowid, context, text) VALUES (new.rowid, new.context, new.text);
END;
CREATE TRIGGER "kbs:ad" AFTER DELETE ON "kbs:chunks" BEGIN
    INSERT INTO "kbs:fts"("kbs:fts", rowid, context, text) VALUES ('delete', old.rowid, old.context, old.text);
END;
INSERT INTO kbindex_lexical_state(collection, dirty) VALUES ('kbs', 0);
"""


def _old_index(tmp_path, rows):
    """A keyword index file as kbindex wrote it before the columns were split."""
    import json

    conn = sqlite3.connect(tmp_path / lx.FILENAME)
    conn.executescript(OLD_SCHEMA)
    conn.executemany('INSERT INTO "kbs:chunks"(id, source, context, text, meta) VALUES (?, ?, ?, ?, ?)',
                     [(r.id, r.source, r.context, r.text, json.dumps(r.metadata)) for r in rows])
    conn.commit()
    conn.close()


def test_an_old_single_context_index_is_converted_in_place_keeping_every_chunk(tmp_path):
    _old_index(tmp_path, ROWS)
    index = LexicalIndex.open(tmp_path, "kbs")
    assert index._fts_columns() == list(FIELDS)
    assert index.check() == []  # the full-text index matches the rows
    assert index.ids() == {r.id for r in ROWS}
    assert {r.id: (r.context, r.text, r.metadata) for r in index.rows()} == {
        r.id: (r.context, r.text, r.metadata) for r in ROWS}
    # the title and heading path now sit in their own columns and rank as such
    assert _ids(index, "logging", (8.0, 1.0, 1.0))[:2] == ["title-hit", "body-hit"]
    assert _ids(index, "timeouts", (1.0, 8.0, 1.0))[:2] == ["heading-hit", "heading-body"]
    # later writes go through the new triggers
    index.upsert_rows([_row("new", "Logging cookbook", "", "Recipes.")])
    index.delete(["body-hit"])
    assert index.check() == []
    assert "new" in _ids(index, "cookbook", lx.FIELD_WEIGHTS)
    index.close()
    # opening again converts nothing more
    again = LexicalIndex.open(tmp_path, "kbs")
    assert again.count() == len(ROWS)
    again.close()
