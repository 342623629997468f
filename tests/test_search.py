"""Keyword index, hybrid search, per-document collapsing and highlighting (real Chroma, fake embedder)."""

import json

import pytest

from kbindex.store.chroma import Store
from kbindex.store.lexical import LexicalIndex, Row, match_expression, query_terms
from tests.conftest import SAMPLE_KB

DOCS = {
    "azure": "Set AZURE_CLIENT_ID to the client id of the user-assigned identity.",
    "azure-words": "The client asked for an id card; azure skies over the identity office.",
    "code3": "The installer fails with error 0x80000003 after a reboot.",
    "code4": "The installer fails with error 0x80000004 after a reboot.",
    "wal": "Raise max_wal_size so checkpoints happen less often.",
    "wal-words": "The maximum size of the wall is fixed.",
    "alter": "Run ALTER TABLE users ADD COLUMN email to migrate.",
    "table": "A table of contents lists the chapters.",
    "printers": "Restart the printers after the spooler service hangs.",
}


@pytest.fixture
def lexical(tmp_path):
    index = LexicalIndex.open(tmp_path, "test-kb")
    index.upsert_rows(
        Row(name, f"/kb/{name}.md", name.title(), text, {"source": f"/kb/{name}.md", "position": 0,
                                                         "title": name.title()})
        for name, text in DOCS.items()
    )
    yield index
    index.close()


@pytest.mark.parametrize("query,expected", [
    ("AZURE_CLIENT_ID", ["azure"]),
    ("0x80000003", ["code3"]),
    ("max_wal_size", ["wal"]),
    ("printer", ["printers"]),  # Porter stemming
])
def test_identifiers_are_found_as_typed_and_only_there(lexical, query, expected):
    assert [m.id for m in lexical.search(query, 10)] == expected


def test_two_word_command_ranks_the_document_with_both_words_first(lexical):
    ids = [m.id for m in lexical.search("ALTER TABLE", 10)]
    assert ids[0] == "alter" and "table" in ids


def test_query_terms_keep_identifiers_and_drop_stopwords():
    assert query_terms("how do I set AZURE_CLIENT_ID for the app") == ["set", "AZURE_CLIENT_ID", "app"]
    assert query_terms("pg_hba.conf and 0x80000003") == ["pg_hba.conf", "0x80000003"]
    assert query_terms("what is it") == ["what", "is", "it"]  # nothing but stopwords: keep them
    # FTS5 syntax typed by a user is searched as words, never parsed as operators
    assert match_expression('"quoted" NEAR(x) -y*') == '"quoted" OR "NEAR" OR "x" OR "y"'
    assert match_expression("?!") is None


def test_upsert_replaces_and_delete_removes(lexical):
    lexical.upsert_rows([Row("code3", "/kb/code3.md", "Code3", "now about 0x9999", {"source": "/kb/code3.md"})])
    assert lexical.search("0x80000003", 10) == []
    assert [m.id for m in lexical.search("0x9999", 10)] == ["code3"]
    lexical.delete(["code3", "no-such-id"])
    assert lexical.search("0x9999", 10) == [] and lexical.count() == len(DOCS) - 1
    assert "code3" not in lexical.ids()


def test_where_filters_keyword_search(lexical):
    hits = lexical.search("installer error reboot", 10, {"source": "/kb/code4.md"})
    assert [m.id for m in hits] == ["code4"]
    both = {"$and": [{"source": "/kb/code4.md"}, {"position": 0}]}
    assert [m.id for m in lexical.search("installer", 10, both)] == ["code4"]
    assert lexical.search("installer", 10, {"position": 1}) == []


def _chroma_ids(db, name="kbindex"):
    return {m.id for m in Store(db).collection(name).scan()}


def test_index_keeps_the_keyword_index_in_step_with_chroma(kb, db, tmp_path):
    folder = tmp_path / "kb"
    folder.mkdir()
    page = folder / "long.md"
    page.write_text("# Long\n\n" + "\n\n".join(f"## Part {i}\n\nText of part {i} zq{i}." for i in range(20)))
    (folder / "other.md").write_text("# Other\n\nSomething else entirely.")
    kb("index", str(folder))
    lexical = LexicalIndex.open(db, "kbindex")
    assert lexical.ids() == _chroma_ids(db) and len(lexical.ids()) > 20
    page.write_text("# Long\n\n## Part 0\n\nOnly one part now.")
    kb("index", str(folder))
    assert lexical.ids() == _chroma_ids(db)
    assert lexical.search("zq7", 5) == [] and not lexical.dirty
    hits = kb.json("query", "only one part", "--mode", "keyword")["hits"]
    assert hits[0]["source"] == str(page.resolve())


def test_a_crash_between_chroma_and_the_keyword_index_is_healed_by_the_next_run(kb, db, tmp_path, monkeypatch):
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nThe first article about zqalpha.")
    kb("index", str(folder))
    (folder / "a.md").write_text("# A\n\nThe first article, now about zqbeta.")
    (folder / "b.md").write_text("# B\n\nA second article about zqgamma.")

    def crash(self, chunks, model):
        raise RuntimeError("power cut")

    with monkeypatch.context() as patched, pytest.raises(RuntimeError):
        patched.setattr(LexicalIndex, "upsert", crash)
        kb("index", str(folder))
    lexical = LexicalIndex.open(db, "kbindex")
    # Chroma holds a.md's new text, the keyword index still the old one; b.md was never reached.
    assert lexical.dirty and lexical.search("zqbeta", 5) == []
    again = kb.json("index", str(folder))
    # both updates were interrupted, so both are written again, from the embedding cache
    assert again["indexed"] == 2 and again["chunks_embedded"] == 0, again
    assert lexical.ids() == _chroma_ids(db) and not lexical.dirty
    assert [m.metadata["source"] for m in lexical.search("zqbeta", 5)] == [str((folder / "a.md").resolve())]
    assert lexical.search("zqalpha", 5) == []
    assert lexical.differences(Store(db).collection("kbindex")) == ([], [])


def test_query_rebuilds_a_missing_keyword_index_from_chroma(kb, db):
    kb("index", str(SAMPLE_KB))
    (db / "lexical.sqlite3").unlink()
    for suffix in ("-wal", "-shm"):
        (db / f"lexical.sqlite3{suffix}").unlink(missing_ok=True)
    hits = kb.json("query", "0x80070002", "--mode", "keyword")["hits"]
    assert hits[0]["source"].endswith("windows-update-error-0x80070002.rst")
    assert LexicalIndex.open(db, "kbindex").ids() == _chroma_ids(db)


def test_hybrid_json_carries_both_ranks_and_the_fused_score(kb):
    kb("index", str(SAMPLE_KB))
    hits = kb.json("query", "PostgreSQL max_wal_size checkpoints", "-k", "8")["hits"]
    assert hits[0]["source"].endswith("postgresql-wal-disk-full.md")
    assert any(h["vector_rank"] and h["keyword_rank"] for h in hits)
    for h in hits:
        ranks = [r for r in (h["vector_rank"], h["keyword_rank"]) if r is not None]
        assert ranks and h["score"] == pytest.approx(sum(1 / (60 + r) for r in ranks), abs=1e-6)
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and [h["rank"] for h in hits] == list(range(1, 9))
    vector = kb.json("query", "PostgreSQL max_wal_size", "--mode", "vector")["hits"]
    assert all(h["keyword_rank"] is None and h["vector_rank"] for h in vector)
    keyword = kb.json("query", "PostgreSQL max_wal_size", "--mode", "keyword")["hits"]
    assert all(h["vector_rank"] is None and h["keyword_rank"] and h["score"] > 0 for h in keyword)


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_per_doc_limits_hits_per_document(kb, mode):
    kb("index", str(SAMPLE_KB))
    args = ("query", "PostgreSQL WAL disk full checkpoint archive", "-k", "10", "--mode", mode)
    default = [h["source"] for h in kb.json(*args)["hits"]]
    assert len(default) == len(set(default))
    two = [h["source"] for h in kb.json(*args, "--per-doc", "2")["hits"]]
    assert max(two.count(s) for s in two) == 2
    every = [h["source"] for h in kb.json(*args, "--per-doc", "0")["hits"]]
    assert len(every) == 10 and max(every.count(s) for s in every) > 2


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_where_applies_to_every_mode(kb, mode):
    kb("index", str(SAMPLE_KB))
    md = str(SAMPLE_KB.resolve() / "postgresql-wal-disk-full.md")
    hits = kb.json("query", "printer offline disk", "--mode", mode, "--per-doc", "0",
                   "--where", f"source={md}")["hits"]
    assert hits and all(h["source"] == md for h in hits)
    first = kb.json("query", "WAL", "--mode", mode, "--per-doc", "0", "--where", f"source={md}",
                    "--where", "position=0")["hits"]
    assert [h["id"] for h in first] == [hits[0]["id"].rsplit("-", 1)[0] + "-00000"]


def test_keyword_query_without_words_finds_nothing(kb):
    kb("index", str(SAMPLE_KB))
    assert kb.json("query", "?!?", "--mode", "keyword")["hits"] == []


def test_human_output_is_plain_when_not_a_terminal(kb):
    kb("index", str(SAMPLE_KB))
    out = kb("query", "max_wal_size checkpoints")
    assert out.exit_code == 0 and "max_wal_size" in out.stdout
    assert "\x1b[" not in out.stdout
    assert "(vector #" in out.stdout or "(keyword #" in out.stdout


def test_table_highlights_query_terms_and_shows_ranks_on_a_terminal(monkeypatch):
    from kbindex.output import render
    from kbindex.records import Hit

    hit = Hit(1, 0.5, "x", "/kb/a.md", "A", "", "Raise max_wal_size now", vector_rank=2, keyword_rank=1)
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = render([("max_wal_size", [hit])], "table", tty=True)
    assert "max_wal_size\x1b[0m" in out and "(vector #2, keyword #1)" in out
    monkeypatch.setenv("NO_COLOR", "1")
    plain = render([("max_wal_size", [hit])], "table", tty=True)
    assert "\x1b[1m" not in plain and "\x1b[33m" not in plain and "(vector #2, keyword #1)" in plain


@pytest.mark.parametrize("args,message", [
    (["--mode", "fuzzy"], "Invalid value for '--mode'"),
    (["--per-doc", "-1"], "--per-doc must be 0"),
    (["-k", "0"], "-k must be at least 1"),
])
def test_bad_query_options(kb, args, message):
    kb("index", str(SAMPLE_KB / "printer-offline-windows.html"))
    out = kb("query", "printer", *args)
    assert out.exit_code == 2 and message in out.stderr


def test_json_hits_for_all_chunks_from_stdin(kb):
    kb("index", str(SAMPLE_KB))
    out = kb("query", "--queries", "-", "--json", "--per-doc", "0", "-k", "3",
             input="max_wal_size\nAZURE_CLIENT_ID\n")
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[0]["hits"][0]["source"].endswith("postgresql-wal-disk-full.md")
    assert lines[1]["hits"][0]["source"].endswith("container-app-managed-identity-not-assigned.html")


def test_import_and_collection_delete_keep_the_keyword_index_in_step(kb, db, tmp_path):
    kb("index", str(SAMPLE_KB))
    export = tmp_path / "kb.jsonl"
    kb("export", "--with-vectors", "-o", str(export))
    kb("import", str(export), "--collection", "copy-kb")
    assert LexicalIndex.open(db, "copy-kb").ids() == _chroma_ids(db, "copy-kb")
    hits = kb.json("query", "AZURE_CLIENT_ID", "--collection", "copy-kb", "--mode", "keyword")["hits"]
    assert hits[0]["source"].endswith("container-app-managed-identity-not-assigned.html")
    kb("collections", "delete", "copy-kb", "--yes")
    assert LexicalIndex.open(db, "copy-kb").count() == 0


def test_large_collections_leave_out_terms_found_in_most_chunks(lexical, monkeypatch):
    import kbindex.store.lexical as lx

    assert lexical._expression("installer 0x80000003") == '"installer" OR "0x80000003"'
    monkeypatch.setattr(lx, "PRUNE_MIN_CHUNKS", 1)  # as if the 9 chunks were a large collection
    # "installer" is in 2 of 9 chunks (more than 20%): dropped; the error code stays
    assert lexical._expression("installer 0x80000003") == '"0x80000003"'
    assert [m.id for m in lexical.search("installer 0x80000003", 5)] == ["code3"]
    # every term common: the rarest one is kept, so the query still finds something
    assert lexical._expression("installer the fails") in ('"installer"', '"fails"')


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_a_keyword_table_from_before_scopes_is_checked_against_chroma_before_it_is_trusted(kb, db, tmp_path, mode):
    # Before keyword indexes were keyed by scope, a Chroma server indexed from the same --db
    # wrote its chunks into the local collection's table. Such a file (user_version 0) must not
    # answer with the server's chunks, and must lose none of the local ones.
    import sqlite3

    kb("index", str(SAMPLE_KB))
    lexical = LexicalIndex.open(db, "kbindex")
    # As many rows as Chroma holds, one of them the server's: counting cannot tell.
    lexical.delete([sorted(lexical.ids())[0]])
    lexical.upsert_rows([Row("server-chunk", "http://elsewhere/zqserver.html", "Server", "zqserver only here",
                             {"source": "http://elsewhere/zqserver.html", "title": "Server"})])
    lexical.close()
    conn = sqlite3.connect(db / "lexical.sqlite3")
    conn.execute("PRAGMA user_version = 0")
    conn.commit()
    conn.close()
    hits = kb.json("query", "zqserver", "--mode", mode)["hits"]
    assert not any(h["source"].startswith("http://elsewhere") for h in hits), hits
    hits = kb.json("query", "0x80070002", "--mode", "keyword")["hits"]
    assert hits[0]["source"].endswith("windows-update-error-0x80070002.rst")
    assert LexicalIndex.open(db, "kbindex").ids() == _chroma_ids(db)
