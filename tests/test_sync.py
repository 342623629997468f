"""Keeping the index in sync: change detection, embedding cache, pruning, delete, the write lock,
crash safety (SIGKILL at named points), verify [--repair], --rebuild, and a property-based test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kbindex.config import Settings
from kbindex.store.chroma import Store
from kbindex.store.lock import WriteLock
from tests.conftest import SAMPLE_KB
from tests.server import FixtureServer, Request, Response
from tests.sync_helpers import assert_consistent, run, snapshot, spawn, summary, wait_for


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "kb"
    shutil.copytree(SAMPLE_KB, path)
    return path.resolve()


def files_in(folder: Path) -> set[str]:
    return {str(p) for p in folder.iterdir() if p.is_file()}


def sections(n: int, word: str = "part") -> str:
    return "# Manual\n\n" + "\n\n".join(f"## {word.title()} {i}\n\nThe {word} {i} text, number {i}." for i in range(n))


# -- change detection and the embedding cache ---------------------------------------------------


def test_unchanged_folder_embeds_nothing_and_never_touches_the_model(kb, folder, db, monkeypatch):
    first = kb.json("index", str(folder))
    assert first["indexed"] == 10 and first["chunks_embedded"] == first["chunks_added"] > 0
    from tests.fakes import HashEmbedder

    def no_model(*args):
        raise AssertionError("the model was used on an unchanged re-run")

    monkeypatch.setattr(HashEmbedder, "embed", no_model)
    monkeypatch.setattr(HashEmbedder, "count_tokens", no_model)
    again = kb.json("index", str(folder))
    assert again["unchanged"] == 10 and again["indexed"] == 0
    assert again["chunks_added"] == again["chunks_embedded"] == again["chunks_deleted"] == 0
    # touched but identical bytes: still nothing to do, the new mtime is recorded
    for path in folder.iterdir():
        os.utime(path, (time.time() - 100, time.time() - 100))
    assert kb.json("index", str(folder))["unchanged"] == 10
    assert_consistent(db, files_in(folder))


def test_packaged_model_max_tokens_is_read_without_loading_it():
    from kbindex.embedding import load_embedder

    for backend in ("torch", "onnx", "openvino"):
        embedder = load_embedder("all-MiniLM-L6-v2", "cpu", backend)
        assert embedder.max_tokens == 256
        loaded = embedder._model if backend == "torch" else embedder._session
        assert loaded is None


def test_editing_one_section_re_embeds_only_that_chunk(kb, tmp_path, db):
    folder = tmp_path / "kb"
    folder.mkdir()
    page = folder / "manual.md"
    page.write_text(sections(8))
    first = kb.json("index", str(folder))
    assert first["chunks_added"] == 8
    page.write_text(sections(8).replace("The part 3 text", "The edited part 3 text"))
    second = kb.json("index", str(folder))
    assert second["indexed"] == 1 and second["chunks_added"] == 8
    assert second["chunks_embedded"] == 1 and second["chunks_deleted"] == 0
    hits = json.loads(kb("query", "edited part 3", "-k", "1", "--json").stdout)["hits"]
    assert "edited part 3" in hits[0]["text"]
    assert kb.json("stats")["chunks"] == 8
    assert_consistent(db, {str(page.resolve())})


def test_shrink_delete_and_rename_files(kb, folder, db):
    kb("index", str(folder))
    before = kb.json("stats")["chunks"]
    (folder / "printer-offline-windows.html").unlink()
    gone = snapshot(db)["ledger"][str(folder / "postgresql-wal-disk-full.md")]
    (folder / "postgresql-wal-disk-full.md").rename(folder / "wal-renamed.md")
    result = kb.json("index", str(folder))
    assert result["pruned"] == 2 and result["indexed"] == 1
    assert result["chunks_embedded"] == 0  # the renamed file's text is in the cache
    snap = assert_consistent(db, files_in(folder))
    assert str(folder / "printer-offline-windows.html") not in snap["store"]
    assert len(snap["ledger"][str(folder / "wal-renamed.md")]) == len(gone)
    assert kb.json("stats")["chunks"] < before
    hits = json.loads(kb("query", "printer spooler offline", "-k", "20", "--json").stdout)["hits"]
    assert all("printer-offline" not in h["source"] for h in hits)


def test_no_prune_keeps_deleted_files(kb, folder, db):
    kb("index", str(folder))
    (folder / "printer-offline-windows.html").unlink()
    result = kb.json("index", str(folder), "--no-prune")
    assert result["pruned"] == 0
    assert str(folder / "printer-offline-windows.html") in snapshot(db)["store"]
    assert kb.json("index", str(folder))["pruned"] == 1


def test_a_file_that_became_empty_is_removed(kb, folder, db):
    kb("index", str(folder))
    (folder / "rmm-vs-dex-tools.html").write_text("")
    result = kb.json("index", str(folder))
    assert result["pruned"] == 1 and result["skipped"] == 1
    assert_consistent(db, files_in(folder) - {str(folder / "rmm-vs-dex-tools.html")})


def test_a_store_without_ledger_is_adopted_without_duplicates(kb, folder, db):
    kb("index", str(folder))
    before = snapshot(db)["store"]
    (db / "kbindex.sqlite").unlink()  # as left by a kbindex without a ledger
    for suffix in ("-wal", "-shm"):
        (db / f"kbindex.sqlite{suffix}").unlink(missing_ok=True)
    page = folder / "laptop-battery-drain-modern-standby.html"
    page.write_text("<h1>Battery</h1><p>Short now.</p>")
    (folder / "rmm-vs-dex-tools.html").unlink()
    result = kb.json("index", str(folder))
    assert result["indexed"] == 9 and result["pruned"] == 1
    snap = assert_consistent(db, files_in(folder))
    assert len(snap["store"][str(page)]) == 1 < len(before[str(page)])
    out = kb("verify")
    assert out.exit_code == 0, out.output


def test_a_collection_deleted_behind_the_ledger_is_rebuilt(kb, folder, db):
    first = kb.json("index", str(folder))
    Store(db).delete_collection("kbindex")
    again = kb.json("index", str(folder))
    assert again["indexed"] == 10 and again["chunks_added"] == first["chunks_added"]
    assert again["chunks_embedded"] == 0  # all from the cache
    assert_consistent(db, files_in(folder))


def test_changed_chunk_settings_rewrite_everything(kb, folder):
    first = kb.json("index", str(folder))
    second = kb.json("index", str(folder), "--chunk-tokens", "128")
    assert second["indexed"] == 10 and second["chunks_added"] > first["chunks_added"]


# -- URLs: conditional GET, 404/410, transient errors ---------------------------------------------

PAGE = "<html><head><title>{t}</title></head><body><main><h1>{t}</h1><p>{body}</p></main></body></html>"


class Site:
    """Pages with ETag / Last-Modified that answer 304 to a matching conditional request."""

    def __init__(self):
        self.pages: dict[str, tuple[int, str]] = {}
        self.server = FixtureServer()

    def set(self, path: str, text: str, status: int = 200, validator: str = "etag") -> None:
        self.pages[path] = (status, text)
        self.server.routes[path] = lambda request, path=path, validator=validator: self._answer(
            path, request, validator)

    def _answer(self, path: str, request: Request, validator: str) -> Response:
        status, text = self.pages[path]
        if status != 200:
            return Response(status, b"error")
        body = PAGE.format(t=path.strip("/"), body=text).encode()
        tag = f'"{hash(body) & 0xffffffff:x}"'
        stamp = f"Mon, 0{1 + hash(body) % 9} Jan 2024 00:00:00 GMT"
        headers = {"Content-Type": "text/html"}
        if validator == "etag":
            headers["ETag"] = tag
            if request.headers.get("if-none-match") == tag:
                return Response(304, b"", headers)
        elif validator == "last-modified":
            headers["Last-Modified"] = stamp
            if request.headers.get("if-modified-since") == stamp:
                return Response(304, b"", headers)
        return Response(200, body, headers)


@pytest.fixture
def site():
    s = Site()
    with s.server:
        yield s


@pytest.mark.parametrize("validator,header", [("etag", "if-none-match"),
                                               ("last-modified", "if-modified-since")])
def test_unchanged_site_is_not_downloaded_again(kb, site, validator, header):
    """Pages indexed one by one (--depth 0) and a sitemap's entries are fetched conditionally."""
    site.set("/a", "Reset the router first.", validator=validator)
    site.set("/b", "Then check the cable.", validator=validator)
    site.server.routes["/sitemap.xml"] = Response(body=(
        '<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        f'<url><loc>{site.server.url("/c")}</loc></url></urlset>').encode(),
        headers={"Content-Type": "application/xml"})
    site.set("/c", "Finally call support.", validator=validator)
    urls = [site.server.url("/a"), site.server.url("/b"), site.server.url("/sitemap.xml")]
    assert kb.json("index", "--depth", "0", *urls)["indexed"] == 3
    assert all(header not in r.headers for r in site.server.log)
    site.server.log.clear()
    again = kb.json("index", "--depth", "0", *urls)
    assert again["unchanged"] == 3 and again["chunks_added"] == 0
    pages = [r for r in site.server.log if r.path in ("/a", "/b", "/c")]
    assert len(pages) == 3 and all(header in r.headers for r in pages)


@pytest.mark.parametrize("status", [404, 410])
def test_a_page_that_is_gone_is_pruned(kb, site, db, status):
    site.set("/a", "Reset the router first.")
    site.set("/b", "Then check the cable.")
    kb("index", site.server.url("/a"), site.server.url("/b"))
    site.set("/b", "", status=status)
    out = kb("index", site.server.url("/a"), site.server.url("/b"), "--json")
    # The page is gone and so is its entry: a normal event, not a failure of the run.
    assert out.exit_code == 0
    result = json.loads(out.stdout)
    assert result["pruned"] == 1 and result["failed"] == 0 and result["failures"] == []
    assert result["prunes"] == [{"source": site.server.url("/b"), "reason": f"HTTP {status} "
                                 + ("Not Found" if status == 404 else "Gone"), "kind": f"http_{status}"}]
    assert "pruned:" in out.stderr
    # Named again while never indexed, the same answer is a failure of that page.
    out = kb("index", site.server.url("/a"), site.server.url("/b"), "--json")
    assert out.exit_code == 1 and json.loads(out.stdout)["failed_by"] == {f"http_{status}": 1}
    assert set(assert_consistent(db)["store"]) == {site.server.url("/a")}


@pytest.mark.parametrize("status", [503, 500, 429])
def test_a_transient_error_deletes_nothing(kb, site, db, status):
    site.set("/a", "Reset the router first.")
    kb("index", site.server.url("/a"))
    before = snapshot(db)
    site.set("/a", "", status=status)
    result = json.loads(kb("index", site.server.url("/a"), "--json").stdout)
    assert result["failed"] == 1 and result["pruned"] == 0 and result["chunks_deleted"] == 0
    assert snapshot(db)["store"] == before["store"]
    from kbindex.store.ledger import Ledger

    assert f"HTTP {status}" in Ledger(db, "kbindex").get(site.server.url("/a")).last_error
    site.set("/a", "Reset the router first.")
    assert kb.json("index", site.server.url("/a"))["unchanged"] == 1


# -- delete ---------------------------------------------------------------------------------------


def test_delete_one_file_a_folder_and_a_url_prefix(kb, folder, site, db):
    site.set("/docs/a", "Reset the router first.")
    site.set("/docs/b", "Then check the cable.")
    site.set("/other", "Unrelated.")
    kb("index", str(folder), site.server.url("/docs/a"), site.server.url("/docs/b"),
       site.server.url("/other"))
    out = kb("delete", str(folder / "printer-offline-windows.html"), "--json")
    assert out.exit_code == 0 and json.loads(out.stdout)["sources"] == 1
    out = kb("delete", site.server.url("/docs/"), "--json")
    assert json.loads(out.stdout)["deleted"] == [site.server.url("/docs/a"), site.server.url("/docs/b")]
    snap = assert_consistent(db)
    assert site.server.url("/other") in snap["store"] and len(snap["store"]) == 10
    out = kb("delete", str(folder))
    assert out.exit_code == 0 and "deleted 9 sources" in out.stdout
    assert set(assert_consistent(db)["store"]) == {site.server.url("/other")}
    out = kb("delete", str(folder))
    assert out.exit_code == 2 and "nothing indexed matches" in out.stderr


# -- one writer -----------------------------------------------------------------------------------


def test_a_second_writer_is_refused_and_readers_are_not_blocked(kb, folder, db):
    kb("index", str(folder))
    with WriteLock(db):
        out = kb("index", str(folder))
        assert out.exit_code == 1
        assert f"pid {os.getpid()}" in out.stderr and "--wait" in out.stderr
        assert kb("delete", str(folder)).exit_code == 1
        assert kb("query", "printer offline").exit_code == 0
        assert kb("stats").exit_code == 0
        # verify would read the write half done: it says so, with its own exit code
        out = kb("verify")
        assert out.exit_code == 75 and "a write is in progress" in out.stderr, out.output
        assert "problem" not in out.stdout
    assert kb("index", str(folder)).exit_code == 0
    assert kb("verify").exit_code == 0


def test_wait_queues_behind_the_holder(kb, folder, db):
    lock = WriteLock(db).acquire()
    timer = threading.Timer(1.0, lock.release)
    timer.start()
    started = time.monotonic()
    out = kb("index", str(folder), "--wait")
    assert out.exit_code == 0 and time.monotonic() - started >= 0.9
    timer.join()


def test_two_writer_processes(tmp_path, folder):
    db = tmp_path / "index"
    err = tmp_path / "first.txt"
    first = spawn("index", str(folder), "--db", str(db), env={"KBINDEX_TEST_PAUSE": "embed"},
                  stderr_path=err)
    try:
        wait_for(err, "paused at embed", first)
        code, _, stderr = run("index", str(folder), "--db", str(db), tmp=tmp_path)
        assert code == 1 and f"(pid {first.pid})" in stderr and "Traceback" not in stderr
    finally:
        first.kill()
        first.wait()
    code, out, _ = run("index", str(folder), "--db", str(db), "--json", tmp=tmp_path)
    assert code == 0 and summary(out)["indexed"] == 10
    assert_consistent(db, files_in(folder))


# -- crash safety ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["page:4", "embed:2", "write", "commit"])
def test_sigkill_at_any_point_heals_on_the_next_run(tmp_path, folder, stage):
    db = tmp_path / "index"
    args = ("index", str(folder), "--db", str(db), "--json")
    assert run(*args, tmp=tmp_path)[0] == 0
    # Changes for the killed run to be in the middle of: edit, shrink, delete, add.
    (folder / "printer-offline-windows.html").write_text(
        (folder / "printer-offline-windows.html").read_text().replace("spooler", "print queue"))
    (folder / "laptop-battery-drain-modern-standby.html").write_text("<h1>Battery</h1><p>Short now.</p>")
    (folder / "rmm-vs-dex-tools.html").unlink()
    for i in range(3):  # 300 chunks: more than one batch to embed (kbindex.indexing.writer.EMBED_BATCH)
        (folder / f"new-{i}.md").write_text(sections(100, f"topic{i}"))
    err = tmp_path / "killed.txt"
    proc = spawn(*args, env={"KBINDEX_TEST_PAUSE": stage}, stderr_path=err)
    wait_for(err, f"paused at {stage.partition(':')[0]}", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The store opens and answers after the kill.
    code, out, stderr = run("query", "printer", "--db", str(db), "--json", tmp=tmp_path)
    assert code == 0 and json.loads(out)["hits"], stderr
    if stage in ("write", "commit"):  # killed between the store write and the ledger write
        code, out, _ = run("verify", "--db", str(db), "--json", tmp=tmp_path)
        assert code == 1 and any("interrupted" in p for p in json.loads(out)["problems"])
    # The same command again makes everything consistent.
    code, out, stderr = run(*args, tmp=tmp_path)
    assert code == 0, stderr
    code, out, _ = run("verify", "--db", str(db), "--json", tmp=tmp_path)
    assert code == 0 and json.loads(out)["ok"], out
    snap = assert_consistent(db, files_in(folder))
    # ... and equal to a fresh index of the same folder.
    fresh = tmp_path / "fresh"
    run("index", str(folder), "--db", str(fresh), tmp=tmp_path)
    assert snap["store"] == snapshot(fresh)["store"]


# -- verify ---------------------------------------------------------------------------------------


def test_verify_finds_and_repairs_orphans_and_missing_chunks(kb, folder, db):
    kb("index", str(folder))
    assert kb("verify").exit_code == 0
    collection = Store(db).collection("kbindex")
    victim = str(folder / "printer-offline-windows.html")
    lost = snapshot(db)["store"][victim][:2]
    collection.delete(lost)
    orphan = collection.get(ids=[snapshot(db)["store"][str(folder / "rmm-vs-dex-tools.html")][0]],
                            include_text=True)[0]
    from kbindex.records import Chunk

    fake = Chunk(id="stray-00000", source="/nowhere/stray.md", title="Stray", section="", position=0,
                 text=orphan.text, embed_text=orphan.text, doc_hash="x")
    collection.upsert([fake], [[1.0] + [0.0] * 63], "fake:hash")
    out = kb("verify", "--json")
    assert out.exit_code == 1
    report = json.loads(out.stdout)
    # orphan, missing chunks, and the keyword index (the test wrote to Chroma behind its back)
    assert not report["ok"] and len(report["problems"]) == 3
    assert any("1 chunks in the store have no ledger entry" in p for p in report["problems"])
    assert any(victim in p and "2 of its" in p for p in report["problems"])
    out = kb("verify", "--repair")
    assert out.exit_code == 0, out.output
    assert "deleted 1 chunks" in out.stdout and "re-indexed 1 sources" in out.stdout
    assert kb("verify").exit_code == 0
    assert_consistent(db, files_in(folder))


def test_verify_reports_a_store_that_does_not_open(kb, db):
    out = kb("verify", "--json")
    assert out.exit_code == 1 and "fails to open" in json.loads(out.stdout)["problems"][0]


def test_verify_repair_removes_sources_whose_file_is_gone(kb, folder, db):
    kb("index", str(folder))
    victim = folder / "printer-offline-windows.html"
    Store(db).collection("kbindex").delete(snapshot(db)["store"][str(victim)])
    victim.unlink()
    out = kb("verify", "--repair", "--json")
    assert out.exit_code == 0 and "removed 1 that are gone" in " ".join(json.loads(out.stdout)["actions"])
    assert_consistent(db, files_in(folder))


# -- rebuild --------------------------------------------------------------------------------------


def test_rebuild_with_another_model_swaps_the_collection(kb, folder, db):
    kb("index", str(folder))
    chunks = kb.json("stats")["chunks"]
    assert kb("index", str(folder), "--model", "fake:other").exit_code == 1  # pinned
    result = kb.json("index", "--rebuild", "--model", "fake:other")  # sources from the ledger
    assert result["indexed"] == 10
    stats = kb.json("stats", "--model", "fake:other")
    assert stats["model"] == "fake:other" and stats["chunks"] == chunks
    assert Store(db).collection_names() == ["kbindex"]
    assert kb("query", "printer", "--model", "fake:other").exit_code == 0
    again = kb.json("index", str(folder), "--model", "fake:other")
    assert again["unchanged"] == 10
    assert_consistent(db, files_in(folder))


def test_an_interrupted_rebuild_leaves_the_old_collection_working_and_finishes_when_rerun(tmp_path, folder):
    db = tmp_path / "index"
    assert run("index", str(folder), "--db", str(db), tmp=tmp_path)[0] == 0
    err = tmp_path / "killed.txt"
    proc = spawn("index", "--rebuild", "--model", "fake:other", "--db", str(db),
                 env={"KBINDEX_TEST_PAUSE": "commit"}, stderr_path=err)
    wait_for(err, "paused at commit", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    code, out, _ = run("query", "printer", "--db", str(db), "--json", tmp=tmp_path)
    assert code == 0 and json.loads(out)["hits"]  # still the old model's collection
    code, out, stderr = run("index", "--rebuild", "--model", "fake:other", "--db", str(db), "--json",
                            tmp=tmp_path)
    assert code == 0, stderr
    assert Store(db).collection_names() == ["kbindex"]
    assert Store(db).collection("kbindex").model == "fake:other"
    code, _, _ = run("verify", "--db", str(db), tmp=tmp_path)
    assert code == 0
    assert_consistent(db, files_in(folder))


# -- property: random edits, re-indexes and queries keep store, ledger and folder in agreement ----

WORDS = ["printer", "spooler", "router", "cable", "battery", "standby", "proxy", "token"]
names = st.sampled_from(["a.md", "b.md", "c.txt", "sub/d.md"])
texts = st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join),
                 min_size=1, max_size=6).map(lambda paras: "# Title\n\n" + "\n\n".join(paras))
operations = st.lists(st.one_of(
    st.tuples(st.just("write"), names, texts),
    st.tuples(st.just("delete"), names),
    st.tuples(st.just("index")),
    st.tuples(st.just("query"), st.sampled_from(WORDS)),
), min_size=1, max_size=10)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_random_sequences_keep_everything_in_agreement(ops):
    from kbindex.chunk import ChunkConfig
    from kbindex.indexing.runner import Indexer
    from kbindex.indexing.sources import parse_sources
    from kbindex.search import search
    from tests.fakes import HashEmbedder

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "kb").resolve()
        folder.mkdir()
        db = Path(tmp, "index")
        settings_ = Settings(db=db, model="fake:hash")
        embedder = HashEmbedder()
        indexed = False
        for op in ops + [("index",)]:
            if op[0] == "write":
                path = folder / op[1]
                path.parent.mkdir(exist_ok=True)
                path.write_text(op[2])
            elif op[0] == "delete":
                (folder / op[1]).unlink(missing_ok=True)
            elif op[0] == "index":
                with Indexer(settings_, embedder, ChunkConfig(64, 8)) as indexer:
                    indexer.open()
                    indexer.run(parse_sources([str(folder)]))
                indexed = True
                present = {str(p) for p in folder.rglob("*") if p.is_file()}
                snap = assert_consistent(db, present)
                collection = Store(db).collection("kbindex")
                for path in present:  # the stored text is the file's current text
                    stored = " ".join(m.text for m in collection.get(ids=snap["store"][path], include_text=True))
                    for para in Path(path).read_text().split("\n\n")[1:]:
                        assert para in stored
            elif op[0] == "query" and indexed and Store(db).collection("kbindex").count():
                hits = search(Store(db).collection("kbindex"), embedder, [op[1]], k=3)[0]
                assert hits and {h.source for h in hits} <= set(snapshot(db)["ledger"])
