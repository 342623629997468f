"""verify finds real damage in a real store, and verify --repair heals it without re-embedding and
without deleting what it cannot prove is orphaned; import is all or nothing; a check never reads a
write half done."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest

from kbindex.config import Settings
from kbindex.store.chroma import Store
from kbindex.store.ledger import Ledger
from tests.conftest import SAMPLE_KB
from tests.sync_helpers import assert_consistent, run, snapshot, spawn, wait_for

WORDS = ("printer spooler router cable battery standby proxy token vpn dns certificate disk wal "
         "replica backup kernel driver firmware update mailbox quota").split()


def write_manuals(folder: Path, files: int, sections: int, seed: int = 1) -> None:
    """Markdown files of `sections` short sections each: one chunk per section."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        parts = [f"# Manual {f}\n"]
        for s in range(sections):
            words = " ".join(rng.choice(WORDS) for _ in range(16))
            parts.append(f"## Part {s}\n\n{words} step {s} of manual {f}.\n")
        (folder / f"manual-{f:02d}.md").write_text("\n".join(parts))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(folder, index) with 1,200 chunks: more than Chroma's sync threshold (1,000), so that the
    HNSW files on disk hold the vectors (below it Chroma rebuilds the index from its log)."""
    from kbindex.chunk import ChunkConfig
    from kbindex.indexing.runner import Indexer
    from kbindex.indexing.sources import parse_sources
    from tests.fakes import HashEmbedder

    root = tmp_path_factory.mktemp("built")
    folder = root / "kb"
    write_manuals(folder, 12, 100)
    db = root / "index"
    with Indexer(Settings(db=db, model="fake:hash"), HashEmbedder(), ChunkConfig(256, 32), workers=1) as indexer:
        indexer.open()
        summary = indexer.run(parse_sources([str(folder)]))
    assert summary.chunks_added == 1200
    return folder.resolve(), db


@pytest.fixture(scope="module")
def expected(built, tmp_path_factory) -> list[str]:
    """What a vector query finds in the intact store."""
    return vector_hits(built[1], "printer spooler firmware")


@pytest.fixture
def store(built, tmp_path) -> Path:
    """A fresh copy of the built index, to damage."""
    db = tmp_path / "index"
    shutil.copytree(built[1], db)
    return db


def segment(db: Path) -> Path:
    (folder,) = [p for p in db.iterdir() if p.is_dir() and len(p.name) == 36]
    return folder


def garble(path: Path, every: int = 7, start: int = 0) -> None:
    data = bytearray(path.read_bytes())
    for i in range(start, len(data), every):
        data[i] = (data[i] * 31 + 0x5B) & 0xFF
    path.write_bytes(bytes(data))


def overwrite_middle(path: Path, size: int = 8192) -> None:
    with path.open("r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        handle.write(random.Random(7).randbytes(size))


DAMAGE = {
    # the HNSW files of the collection's vector index
    "truncated data file": lambda db: os.truncate(segment(db) / "data_level0.bin",
                                                  (segment(db) / "data_level0.bin").stat().st_size // 2),
    "truncated by a few bytes": lambda db: os.truncate(segment(db) / "data_level0.bin",
                                                       (segment(db) / "data_level0.bin").stat().st_size - 100),
    "garbled data file": lambda db: garble(segment(db) / "data_level0.bin"),  # Chroma crashes (SIGSEGV)
    "garbled header": lambda db: garble(segment(db) / "header.bin", every=1),
    "garbled vector lengths": lambda db: garble(segment(db) / "length.bin", every=1),
    "garbled id map": lambda db: garble(segment(db) / "index_metadata.pickle", every=5),
    "vector index folder gone": lambda db: shutil.rmtree(segment(db)),
    # the SQLite file that holds Chroma's metadata, documents and log
    "garbled chroma.sqlite3": lambda db: overwrite_middle(db / "chroma.sqlite3"),
}


def vector_hits(db: Path, query: str) -> list[str]:
    code, out, err = run("query", query, "--mode", "vector", "-k", "5", "--db", str(db), "--json",
                         tmp=db.parent)
    assert code == 0, err
    return [h["id"] for h in json.loads(out)["hits"]]


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_store_is_found_and_rebuilt_without_re_embedding(built, expected, store, kind, tmp_path):
    DAMAGE[kind](store)
    # verify (in a process of its own: the damage may crash whatever loads the store)
    code, out, err = run("verify", "--db", str(store), "--json", tmp=tmp_path)
    assert code == 1 and "Traceback" not in err, err
    report = json.loads(out)
    assert any("damaged" in p and "verify --repair" in p for p in report["problems"]), report
    if kind == "garbled data file":  # keyword queries do not load the vector index, which crashes
        code, out, err = run("query", "printer firmware", "--mode", "keyword", "--db", str(store), "--json",
                             tmp=tmp_path)
        assert code == 0 and json.loads(out)["hits"], err
    # repair: every vector from the embedding cache (KBINDEX_MODEL is the fake model, which would
    # embed; the report says it did not)
    code, out, err = run("verify", "--repair", "--db", str(store), "--json", tmp=tmp_path)
    assert code == 0, (out, err)
    report = json.loads(out)
    assert report["ok"] and report["rebuilt"]["chunks"] == 1200
    assert report["rebuilt"]["from_cache"] == 1200 and report["rebuilt"]["embedded"] == 0
    assert vector_hits(store, "printer spooler firmware") == expected
    assert_consistent(store)
    if kind == "garbled chroma.sqlite3":  # a fresh store: the next index run finds it up to date
        code, out, _ = run("index", str(built[0]), "--db", str(store), "--json", tmp=tmp_path)
        assert code == 0 and json.loads(out.splitlines()[-1])["unchanged"] == 12


def hits(db: Path, query: str, mode: str) -> list[str]:
    code, out, err = run("query", query, "--mode", mode, "-k", "5", "--db", str(db), "--json", tmp=db.parent)
    assert code == 0, err
    return [h["id"] for h in json.loads(out)["hits"]]


def delete_store_files(db: Path, folders: bool) -> None:
    """Delete chroma.sqlite3 (and its -wal/-shm, if any), and with folders the vector index folders."""
    for path in db.iterdir():
        if path.name.startswith("chroma.sqlite3"):
            path.unlink()
        elif folders and path.is_dir() and len(path.name) == 36:
            shutil.rmtree(path)


def drop_collection(db: Path) -> None:
    """Delete the collection through Chroma's own client, beside another collection that stays."""
    store = Store(db)
    store.create("other-notes", "fake:hash", 3).add_stored(["n1"], [[1.0, 0.0, 0.0]], ["a note"], [{"source": "n"}])
    store.delete_collection("kbindex")
    Store.forget_clients()


# The store loses the collection while the ledger and the keyword index keep it. (A collection
# whose vector index folder alone is gone is a damaged store: DAMAGE above.)
STORE_LOSS = {
    "chroma.sqlite3 deleted": lambda db: delete_store_files(db, folders=False),
    "every file of the store deleted": lambda db: delete_store_files(db, folders=True),
    "the collection deleted from the store": drop_collection,
}


@pytest.mark.parametrize("kind", list(STORE_LOSS))
def test_a_store_that_lost_the_collection_is_rebuilt_from_the_keyword_index(built, expected, store, kind,
                                                                             tmp_path):
    before = {mode: hits(store, "printer spooler firmware", mode) for mode in ("keyword", "hybrid")}
    STORE_LOSS[kind](store)
    code, out, err = run("verify", "--db", str(store), "--json", tmp=tmp_path)
    assert code == 1 and "Traceback" not in err, err
    report = json.loads(out)
    assert any("is missing" in p and "verify --repair" in p for p in report["problems"]), report
    code, out, err = run("verify", "--repair", "--db", str(store), "--json", tmp=tmp_path)
    assert code == 0, (out, err)
    report = json.loads(out)
    assert report["ok"] and report["rebuilt"]["chunks"] == 1200, report
    assert report["rebuilt"]["from_cache"] == 1200 and report["rebuilt"]["embedded"] == 0
    assert vector_hits(store, "printer spooler firmware") == expected
    assert {mode: hits(store, "printer spooler firmware", mode) for mode in before} == before
    assert_consistent(store)
    assert run("verify", "--db", str(store), tmp=tmp_path)[0] == 0
    if kind == "the collection deleted from the store":
        assert "other-notes" in Store(store).collection_names()
        Store.forget_clients()
    code, out, _ = run("index", str(built[0]), "--db", str(store), "--json", tmp=tmp_path)
    assert code == 0 and json.loads(out.splitlines()[-1])["unchanged"] == 12


def test_a_lost_collection_without_its_keyword_index_is_reported_not_rebuilt(built, store, tmp_path):
    delete_store_files(store, folders=True)
    (store / "lexical.sqlite3").unlink()
    code, out, err = run("verify", "--repair", "--db", str(store), "--json", tmp=tmp_path)
    assert code == 1 and "Traceback" not in err, err
    report = json.loads(out)
    assert any("is missing" in p and "kbindex index" in p for p in report["problems"]), report
    assert len(Ledger(store, "kbindex").entries()) == 12  # nothing of the ledger was given up


def test_the_check_after_a_rebuild_confirms_the_write_on_a_sample(store):
    """What a repair writes is confirmed by count and a sample read back and searched for
    (store.probe with written): a collection that differs from what was written is not healthy."""
    from kbindex.store.chroma import metadata_digest, probe
    from kbindex.store.lexical import LexicalIndex
    from kbindex.verify_child import cache_lookup

    lexical = LexicalIndex.open(store, "kbindex")
    written = {r.id: (r.source, metadata_digest(r.metadata)) for r in lexical.rows()}
    lexical.close()

    def check(listing: dict) -> list[str]:
        try:
            collection = Store(store).collection("kbindex")
            return probe(collection, cache_lookup(store, "kbindex", "fake:hash"), written=listing).damage
        finally:
            Store.forget_clients()

    assert check(written) == []
    some = sorted(written)[::7]
    assert any("metadata" in d for d in check({**written, **{i: (written[i][0], "0" * 16) for i in some}}))
    assert any("were written" in d for d in check({**written, "extra-00001": ("/kb/x.md", "0" * 16)}))
    DAMAGE["truncated data file"](store)
    assert check(written)


def test_repair_embeds_only_the_vectors_the_cache_lacks(built, expected, store, tmp_path):
    ledger = sqlite3.connect(store / "kbindex.sqlite")
    dropped = ledger.execute("SELECT count(*) FROM (SELECT text_hash FROM embeddings LIMIT 7)").fetchone()[0]
    ledger.execute("DELETE FROM embeddings WHERE text_hash IN (SELECT text_hash FROM embeddings LIMIT 7)")
    ledger.commit()
    ledger.close()
    DAMAGE["truncated data file"](store)
    code, out, err = run("verify", "--repair", "--db", str(store), "--json", tmp=tmp_path)
    assert code == 0, err
    rebuilt = json.loads(out)["rebuilt"]
    assert rebuilt["embedded"] == dropped == 7 and rebuilt["from_cache"] == 1193
    assert vector_hits(store, "printer spooler firmware") == expected


@pytest.mark.parametrize("kind", ["garbled file", "full-text index out of step"])
def test_a_damaged_keyword_index_is_found_and_rebuilt(built, store, kind, tmp_path):
    if kind == "garbled file":
        overwrite_middle(store / "lexical.sqlite3")
    else:  # the FTS5 index loses entries of chunks its content table still has
        conn = sqlite3.connect(store / "lexical.sqlite3")
        conn.execute('INSERT INTO "kbindex:fts"("kbindex:fts", rowid, title, headings, text) '
                     'SELECT \'delete\', rowid, title, headings, text FROM "kbindex:chunks" WHERE rowid % 10 = 0')
        conn.commit()
        conn.close()
    code, out, err = run("verify", "--db", str(store), "--json", tmp=tmp_path)
    assert code == 1 and "Traceback" not in err, err
    assert any("keyword index" in p and "damaged" in p for p in json.loads(out)["problems"])
    code, out, err = run("verify", "--repair", "--db", str(store), "--json", tmp=tmp_path)
    assert code == 0, (out, err)
    code, out, _ = run("query", "printer firmware", "--mode", "keyword", "-k", "3", "--db", str(store),
                       "--json", tmp=tmp_path)
    assert code == 0 and len(json.loads(out)["hits"]) == 3
    assert run("verify", "--db", str(store), tmp=tmp_path)[0] == 0


def test_keyword_queries_do_not_open_the_vector_index(kb, db, monkeypatch):
    kb("index", str(SAMPLE_KB))
    from kbindex.store.chroma import Collection

    def refuse(*args, **kwargs):
        raise AssertionError("the vector store was read by a keyword query")

    for name in ("count", "similar", "get", "scan"):
        monkeypatch.setattr(Collection, name, refuse)
    out = kb("query", "printer spooler", "--mode", "keyword", "--json")
    assert out.exit_code == 0 and json.loads(out.stdout)["hits"]


# -- the ledger: adopt, never delete what it cannot prove is orphaned --------------------------


def lose_ledger(db: Path, how: str) -> None:
    path = db / "kbindex.sqlite"
    if how == "missing":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    elif how == "empty":
        conn = sqlite3.connect(path)
        conn.execute("DELETE FROM sources")
        conn.commit()
        conn.close()
    elif how == "garbled":
        overwrite_middle(path, 4096)
    elif how == "not a database":
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.write_bytes(b"this is not SQLite\n" * 500)


@pytest.mark.parametrize("how", ["missing", "empty", "garbled", "not a database"])
def test_repair_adopts_the_chunks_of_a_lost_ledger(kb, db, tmp_path, how):
    folder = tmp_path / "kb"
    shutil.copytree(SAMPLE_KB, folder)
    first = kb.json("index", str(folder))
    before = snapshot(db)["store"]
    lose_ledger(db, how)
    out = kb("verify", "--repair", "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert any("adopted" in a for a in report["actions"]) and not any(a.startswith("deleted") for a in report["actions"])
    assert report["chunks"] == first["chunks_added"] and report["sources"] == 10
    snap = assert_consistent(db)
    assert snap["store"] == before
    if how in ("garbled", "not a database"):
        assert list(db.glob("kbindex.sqlite.damaged-*"))  # set aside, not deleted
    # The adopted entries describe the store: nothing to re-embed, nothing to prune.
    again = kb.json("index", str(folder))
    assert again["unchanged"] == 10 and again["chunks_embedded"] == 0 and again["chunks_deleted"] == 0


def test_a_ledger_that_lists_only_some_sources_adopts_the_others(kb, db, tmp_path):
    """A ledger made again (a new ledger id) that then indexed one folder: the store's other chunks
    are not proven orphaned, so they are adopted, not deleted."""
    first, second = tmp_path / "a", tmp_path / "b"
    write_manuals(first, 2, 3, seed=1)
    write_manuals(second, 2, 3, seed=2)
    kb("index", str(first), str(second))
    before = snapshot(db)["store"]
    lose_ledger(db, "missing")
    kb("index", str(first))
    out = kb("verify", "--json")
    assert out.exit_code == 1 and "adopts them" in " ".join(json.loads(out.stdout)["problems"])
    out = kb("verify", "--repair", "--json")
    assert out.exit_code == 0, out.output
    assert "adopted 6 chunks of 2 sources" in " ".join(json.loads(out.stdout)["actions"])
    assert snapshot(db)["store"] == before
    # Adopted, the ledger now is the collection's: a real orphan is deleted again.
    from kbindex.records import Chunk

    stray = Chunk(id="stray-00000", source="/nowhere/stray.md", title="Stray", section="", position=0,
                  text="stray", embed_text="stray", doc_hash="x")
    Store(db).collection("kbindex").upsert([stray], [[1.0] + [0.0] * 63], "fake:hash")
    out = kb("verify", "--repair")
    assert out.exit_code == 0 and "deleted 1 chunks" in out.stdout
    assert snapshot(db)["store"] == before


def test_the_collection_and_its_ledger_record_each_other(kb, db):
    kb("index", str(SAMPLE_KB / "printer-offline-windows.html"))
    collection = Store(db).collection("kbindex")
    ledger = Ledger(db, "kbindex")
    assert collection.ledger_id == ledger.ledger_id and ledger.binding() == collection.id
    ledger.close()
    kb("index", "--rebuild")  # a new collection swapped in: still paired
    collection = Store(db).collection("kbindex")
    ledger = Ledger(db, "kbindex")
    assert collection.ledger_id == ledger.ledger_id and ledger.binding() == collection.id
    ledger.close()


# -- a write in progress --------------------------------------------------------------------------


def test_verify_during_an_index_run_reports_a_write_in_progress(tmp_path):
    folder = tmp_path / "kb"
    shutil.copytree(SAMPLE_KB, folder)
    db = tmp_path / "index"
    assert run("index", str(folder), "--db", str(db), tmp=tmp_path)[0] == 0
    write_manuals(folder, 1, 300)  # a second batch for the paused run to be in the middle of
    err = tmp_path / "writer.txt"
    writer = spawn("index", str(folder), "--db", str(db), env={"KBINDEX_TEST_PAUSE": "write"}, stderr_path=err)
    try:
        wait_for(err, "paused at write", writer)
        code, out, stderr = run("verify", "--db", str(db), "--json", tmp=tmp_path)
        assert code == 75 and "a write is in progress" in stderr and f"pid {writer.pid}" in stderr
        assert out == ""  # no problems reported about the chunks being written
        code, _, stderr = run("verify", "--repair", "--db", str(db), tmp=tmp_path)
        assert code == 75 and "a write is in progress" in stderr
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()


def test_verify_wait_checks_once_the_write_is_over(tmp_path, kb, db):
    import threading
    import time

    from kbindex.store.lock import WriteLock

    kb("index", str(SAMPLE_KB))
    lock = WriteLock(db).acquire()
    timer = threading.Timer(1.0, lock.release)
    timer.start()
    started = time.monotonic()
    out = kb("verify", "--wait")
    assert out.exit_code == 0 and time.monotonic() - started >= 0.9, out.output
    timer.join()


# -- import is all or nothing ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """An export of 600 chunks with vectors (more than two import batches)."""
    from kbindex.chunk import ChunkConfig
    from kbindex.indexing.runner import Indexer
    from kbindex.indexing.sources import parse_sources
    from kbindex.indexing.transfer import export_jsonl
    from tests.fakes import HashEmbedder

    root = tmp_path_factory.mktemp("export")
    write_manuals(root / "kb", 6, 100)
    with Indexer(Settings(db=root / "index", model="fake:hash"), HashEmbedder(), ChunkConfig(256, 32),
                 workers=1) as indexer:
        indexer.open()
        indexer.run(parse_sources([str(root / "kb")]))
    path = root / "dump.jsonl"
    with path.open("w") as out:
        assert export_jsonl(Store(root / "index").collection("kbindex"), out, with_vectors=True) == 600
    return path


def spoil(path: Path, line: int, text: str) -> Path:
    lines = path.read_text().splitlines()
    lines[line] = text
    spoiled = path.with_name(f"spoiled-{line}-{abs(hash(text))}.jsonl")
    spoiled.write_text("\n".join(lines) + "\n")
    return spoiled


BAD_LINES = {
    "not JSON": lambda row: "{not json",
    "no metadata": lambda row: json.dumps({"id": row["id"], "text": row["text"]}),
    "short vector": lambda row: json.dumps({**row, "embedding": row["embedding"][:10]}),
    "vector of strings": lambda row: json.dumps({**row, "embedding": ["x"] * len(row["embedding"])}),
    "nested metadata": lambda row: json.dumps({**row, "metadata": {**row["metadata"], "tags": {"a": 1}}}),
    "NaN in the vector": lambda row: json.dumps({**row, "embedding": [float("nan")] * len(row["embedding"])}),
}


@pytest.mark.parametrize("bad,line", [(bad, 513) for bad in BAD_LINES] + [("not JSON", 3), ("not JSON", 600)])
def test_a_bad_line_anywhere_leaves_nothing_written(kb, export, tmp_path, line, bad):
    row = json.loads(export.read_text().splitlines()[line])
    spoiled = spoil(export, line, BAD_LINES[bad](row))
    other = tmp_path / "other"
    out = kb("import", str(spoiled), "--db", str(other), "--collection", "copy-kb")
    assert out.exit_code == 1 and "Traceback" not in out.output, out.output
    assert "copy-kb" not in Store(other).collection_names()
    # ... and into a collection that exists: it keeps exactly what it had
    kb("import", str(export), "--db", str(other), "--collection", "copy-kb")
    before = snapshot(other, "copy-kb")["store"]
    shifted = spoil(export, line, BAD_LINES[bad]({**row, "id": row["id"] + "-new"}))
    assert kb("import", str(shifted), "--db", str(other), "--collection", "copy-kb").exit_code == 1
    assert snapshot(other, "copy-kb")["store"] == before


def test_import_from_stdin_is_checked_whole_too(kb, export, tmp_path):
    spoiled = spoil(export, 590, "{broken")
    other = tmp_path / "other"
    out = kb("import", "-", "--db", str(other), "--collection", "copy-kb", input=spoiled.read_text())
    assert out.exit_code == 1 and "bad chunk record" in out.stderr
    assert not Store(other).exists() or "copy-kb" not in Store(other).collection_names()
    out = kb("import", "-", "--db", str(other), "--collection", "copy-kb", input=export.read_text())
    assert out.exit_code == 0 and json.loads(kb("stats", "--db", str(other), "--collection", "copy-kb",
                                                "--json").stdout)["chunks"] == 600


def test_import_checks_the_header_dimension_against_the_model(kb, export, tmp_path):
    lines = export.read_text().splitlines()
    header = json.loads(lines[0])
    # No vectors in the file: the model (64 dimensions) must make what the header says.
    rows = [json.loads(line) for line in lines[1:]]
    for row in rows:
        row.pop("embedding")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text("\n".join([json.dumps({**header, "dimension": 384})] + [json.dumps(r) for r in rows]) + "\n")
    other = tmp_path / "other"
    out = kb("import", str(wrong), "--db", str(other), "--collection", "copy-kb")
    assert out.exit_code == 1 and "384-dimensional" in out.stderr and "64-dimensional" in out.stderr
    assert not Store(other).exists() or "copy-kb" not in Store(other).collection_names()
    # Vectors in the file that disagree with the header's dimension
    header_says = tmp_path / "header.jsonl"
    header_says.write_text("\n".join([json.dumps({**header, "dimension": 32})] + lines[1:]) + "\n")
    out = kb("import", str(header_says), "--db", str(other), "--collection", "copy-kb")
    assert out.exit_code == 1 and "the header says 32" in out.stderr


def test_import_writes_the_ledger_before_the_store(kb, export, tmp_path, monkeypatch):
    """A store failure in the middle of an import leaves dirty ledger entries that list what was
    written (never chunks no entry lists), and the same import again completes it."""
    from kbindex.errors import StoreError
    from kbindex.store.chroma import Collection

    real = Collection.upsert
    calls = []

    def fail_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise StoreError("the disk went away")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Collection, "upsert", fail_second)
    other = tmp_path / "other"
    out = kb("import", str(export), "--db", str(other), "--collection", "copy-kb")
    assert out.exit_code == 1 and "the disk went away" in out.stderr
    monkeypatch.setattr(Collection, "upsert", real)
    snap = snapshot(other, "copy-kb")
    listed = {i for ids in snap["ledger"].values() for i in ids}
    assert snap["store"] and {i for ids in snap["store"].values() for i in ids} <= listed
    report = json.loads(kb("verify", "--db", str(other), "--collection", "copy-kb", "--json").stdout)
    assert not any("no ledger entry" in p for p in report["problems"])
    assert any("interrupted" in p for p in report["problems"])
    assert kb("import", str(export), "--db", str(other), "--collection", "copy-kb").exit_code == 0
    assert_consistent(other, collection="copy-kb")
    assert kb("verify", "--db", str(other), "--collection", "copy-kb").exit_code == 0


def test_repair_finishes_a_swap_that_was_interrupted(kb, db):
    """Killed between the two renames of a swap (repair's or --rebuild's): the collection is only
    there under its old name; repair puts it back, and nothing is lost."""
    kb("index", str(SAMPLE_KB))
    before = snapshot(db)["store"]
    Store(db).rename_collection("kbindex", "kbindex--old")
    out = kb("verify", "--json")
    assert out.exit_code == 1 and "interrupted" in " ".join(json.loads(out.stdout)["problems"])
    out = kb("verify", "--repair")
    assert out.exit_code == 0, out.output
    assert Store(db).collection_names() == ["kbindex"] and snapshot(db)["store"] == before


@pytest.mark.parametrize("loss", ["chroma.sqlite3 deleted", "every file of the store deleted"])
def test_a_repair_finds_the_cached_vectors_of_chunks_whose_context_line_was_cut(tmp_path, loss):
    """A context line longer than its share of the window is embedded cut (chunk.fit_context_lines)
    while the keyword index keeps it whole: the repair looks the vectors up by the hash the ledger
    recorded, so nothing is embedded again (6 of SciFact's 9,976 chunks were, before)."""
    from kbindex.chunk import ChunkConfig
    from kbindex.indexing.runner import Indexer
    from kbindex.indexing.sources import parse_sources
    from kbindex.records import text_hash
    from kbindex.store.lexical import LexicalIndex
    from tests.fakes import HashEmbedder

    folder = tmp_path / "kb"
    folder.mkdir()
    title = " ".join(f"title{i}" for i in range(30))
    heading = " ".join(f"part{i}" for i in range(30))
    (folder / "long.md").write_text(f"# {title}\n\n## {heading}\n\nThe printer spooler restarts after the update.\n")
    write_manuals(folder, 2, 3)
    db = tmp_path / "index"
    with Indexer(Settings(db=db, model="fake:hash"), HashEmbedder(), ChunkConfig(64, 8), workers=1) as indexer:
        indexer.open()
        added = indexer.run(parse_sources([str(folder)])).chunks_added
    lexical = LexicalIndex.open(db, "kbindex")
    rows = list(lexical.rows())
    lexical.close()
    recorded = Ledger(db, "kbindex").text_hashes()
    # the premise: some chunk was embedded with its context line cut
    assert any(recorded[r.id] != text_hash(f"{r.context}\n\n{r.text}") for r in rows)
    STORE_LOSS[loss](db)
    code, out, err = run("verify", "--repair", "--db", str(db), "--json", tmp=tmp_path)
    assert code == 0, (out, err)
    report = json.loads(out)
    assert report["rebuilt"]["chunks"] == added, report
    assert report["rebuilt"]["from_cache"] == added and report["rebuilt"]["embedded"] == 0, report
    assert run("verify", "--db", str(db), tmp=tmp_path)[0] == 0
