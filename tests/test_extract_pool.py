"""ExtractAhead: extraction in worker processes, results in order, crashes survived; the index run with it."""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

import pytest

from kbindex.errors import FetchError, SkipSource, SourceError
from kbindex.pipeline import ExtractAhead
from kbindex.records import Page

# Work functions run in the worker processes: module level, so that they pickle by name.


def tag_with_pid(page: Page):
    """The page's text and the process that handled it; later pages finish first."""
    delay = float(page.body.decode().split()[-1])
    time.sleep(delay)
    return page.source, os.getpid()


def meet(page: Page):
    """Returns "met" only if another page is handled at the same time (files as a rendezvous)."""
    folder = Path(page.body.decode())
    (folder / page.source).touch()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if len(list(folder.iterdir())) >= 2:
            return "met"
        time.sleep(0.01)
    return "alone"


def crash_on_bomb(page: Page):
    if page.source == "bomb":
        os._exit(3)  # as a segfault or the OOM killer would: no exception, the process is gone
    return page.source


def _page(source: str, text: str = "0") -> Page:
    return Page(source=source, body=text.encode())


def _all(ahead: ExtractAhead, pages) -> list:
    out = []
    for payload, page in pages:
        out += ahead.submit(payload, page)
        assert len(ahead._waiting) <= ahead.depth
    return out + ahead.drain()


def test_results_come_back_in_submission_order_from_worker_processes():
    # Early pages are the slowest, so the workers finish them last.
    pages = [(i, _page(f"p{i}", f"x {0.3 if i < 2 else 0.0}")) for i in range(8)]
    with ExtractAhead(tag_with_pid, workers=2, inline=0) as ahead:
        out = _all(ahead, pages)
        assert ahead.started
    assert [payload for payload, _ in out] == list(range(8))
    assert [result[0] for _, result in out] == [f"p{i}" for i in range(8)]
    assert all(pid != os.getpid() for _, (_, pid) in out), "a page was handled in the calling process"


def test_pages_are_handled_in_parallel(tmp_path):
    pages = [(i, Page(source=f"p{i}", body=str(tmp_path).encode())) for i in range(2)]
    with ExtractAhead(meet, workers=2, inline=0) as ahead:
        out = _all(ahead, pages)
    assert [result for _, result in out] == ["met", "met"]


def test_the_first_pages_stay_in_this_process_and_a_short_run_starts_no_pool():
    with ExtractAhead(tag_with_pid, workers=2, inline=3) as ahead:
        out = _all(ahead, [(i, _page(f"p{i}")) for i in range(3)])
        assert not ahead.started
    assert {pid for _, (_, pid) in out} == {os.getpid()}


def test_one_worker_means_no_pool_at_all():
    with ExtractAhead(tag_with_pid, workers=1, inline=0) as ahead:
        out = _all(ahead, [(i, _page(f"p{i}")) for i in range(6)])
        assert not ahead.started
    assert {pid for _, (_, pid) in out} == {os.getpid()}


def test_payloads_without_a_page_keep_their_place():
    pages = [(0, _page("a", "x 0.2")), (1, None), (2, _page("c")), (3, None)]
    with ExtractAhead(tag_with_pid, workers=2, inline=0) as ahead:
        out = _all(ahead, pages)
    assert [p for p, _ in out] == [0, 1, 2, 3]
    assert out[1][1] is None and out[3][1] is None and out[2][1][0] == "c"


def test_a_page_that_kills_its_worker_fails_alone_and_the_run_goes_on():
    names = ["a", "b", "bomb", "c", "d", "e"]
    with ExtractAhead(crash_on_bomb, workers=2, inline=0) as ahead:
        out = _all(ahead, [(n, _page(n)) for n in names])
        assert ahead.restarts >= 1
    results = dict(out)
    assert [n for n, _ in out] == names
    crashed = results.pop("bomb")
    assert isinstance(crashed, SourceError) and crashed.kind == "crash" and crashed.source == "bomb"
    assert results == {n: n for n in names if n != "bomb"}


def test_depth_bounds_the_pages_queued():
    with ExtractAhead(tag_with_pid, workers=2, depth=3, inline=0) as ahead:
        out = _all(ahead, [(i, _page(f"p{i}", "x 0.05")) for i in range(10)])
    assert len(out) == 10


def test_source_errors_survive_the_trip_between_processes():
    error = FetchError("http://x/a", "HTTP 503", kind="http_503", status=503, retry_after=2.0)
    back = pickle.loads(pickle.dumps(error))
    assert (type(back), back.source, back.reason, back.kind, back.status, back.retry_after, str(back)) == (
        FetchError, "http://x/a", "HTTP 503", "http_503", 503, 2.0, str(error))
    skip = pickle.loads(pickle.dumps(SkipSource("f.txt", "empty", kind="empty")))
    assert (type(skip), skip.source, skip.reason, skip.kind) == (SkipSource, "f.txt", "empty", "empty")


@pytest.fixture
def counted_pools(monkeypatch):
    """Every ExtractAhead the index module makes, to see whether its pool was started."""
    from kbindex.indexing import runner as index_module

    made = []

    class Counted(ExtractAhead):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

        def close(self):
            self.was_started = self.started
            super().close()

    monkeypatch.setattr(index_module, "ExtractAhead", Counted)
    return made


def _kb_folder(root: Path) -> Path:
    folder = root / "kb"
    folder.mkdir()
    for i in range(10):
        (folder / f"article{i}.html").write_text(
            f"<html><head><title>Article {i}</title></head><body><nav><a href='/'>Home</a></nav>"
            f"<article><h1>Article {i}</h1><p>Paragraph one of article {i} about topic{i}, long "
            f"enough to count as the page's text for the extractor to keep it.</p>"
            f"<h2>Details {i}</h2><p>Second paragraph of article {i}, with details on topic{i}.</p>"
            f"</article></body></html>")
    (folder / "empty.html").write_text("")
    (folder / "same.html").write_text((folder / "article3.html").read_text())
    return folder


def test_an_index_run_with_workers_writes_what_one_process_writes(tmp_path, counted_pools):
    from kbindex.chunk import check_config
    from kbindex.config import Settings
    from kbindex.indexing.runner import Indexer
    from kbindex.indexing.sources import parse_sources
    from kbindex.store.chroma import Store
    from tests.fakes import HashEmbedder
    from tests.sync_helpers import assert_consistent

    folder = _kb_folder(tmp_path)
    outcome = {}
    for workers in (1, 2):
        embedder = HashEmbedder()
        db = tmp_path / f"db{workers}"
        settings = Settings(db=db, collection="kbindex", model=embedder.name, device="cpu")
        with Indexer(settings, embedder, check_config(64, 8, embedder.max_tokens), workers=workers) as ix:
            summary = ix.run(parse_sources([str(folder)]))
        rows = sorted((r.metadata["source"], r.text) for r in Store(db).collection("kbindex").scan(include_text=True))
        outcome[workers] = (summary.as_dict(), rows)
        assert_consistent(db, {str(p) for p in folder.iterdir()} - {str(folder / "empty.html"),
                                                                     str(folder / "same.html")})
    assert [pool.was_started for pool in counted_pools] == [False, True]
    assert outcome[1] == outcome[2]
    summary = outcome[2][0]
    assert (summary["indexed"], summary["skipped"]) == (10, 2)
    assert {s["kind"] for s in summary["skips"]} == {"empty", "duplicate"}


def test_an_unchanged_rerun_starts_no_workers(tmp_path, counted_pools):
    from kbindex.chunk import check_config
    from kbindex.config import Settings
    from kbindex.indexing.runner import Indexer
    from kbindex.indexing.sources import parse_sources
    from tests.fakes import HashEmbedder

    folder = _kb_folder(tmp_path)
    embedder = HashEmbedder()
    settings = Settings(db=tmp_path / "db", collection="kbindex", model=embedder.name, device="cpu")
    config = check_config(64, 8, embedder.max_tokens)
    with Indexer(settings, embedder, config, workers=2) as ix:
        ix.run(parse_sources([str(folder)]))
    for page in folder.iterdir():  # new mtimes, same bytes: only the body hash tells
        os.utime(page, (time.time() + 10, time.time() + 10))
    with Indexer(settings, embedder, config, workers=2) as ix:
        summary = ix.run(parse_sources([str(folder)]))
    assert (summary.unchanged, summary.indexed, summary.skipped) == (10, 0, 2)
    assert [pool.was_started for pool in counted_pools] == [True, False]


def test_the_cli_takes_workers_from_the_option_or_the_environment(tmp_path, kb, counted_pools, monkeypatch):
    folder = _kb_folder(tmp_path)
    plan = kb("index", str(folder), "--dry-run", "--workers", "2", "--json")
    assert plan.exit_code == 0, plan.output
    actions = [json.loads(line)["action"] for line in plan.stdout.splitlines()[:-1]]
    assert sorted(actions) == ["index"] * 10 + ["skip"] * 2
    monkeypatch.setenv("KBINDEX_WORKERS", "1")
    done = kb.json("index", str(folder))
    assert (done["indexed"], done["skipped"]) == (10, 2)
    assert [pool.workers for pool in counted_pools] == [2, 1]
    assert [pool.was_started for pool in counted_pools] == [True, False]
    bad = kb("index", str(folder), "--workers", "0")
    assert bad.exit_code == 2 and "--workers" in bad.output


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(b")") + 2:].split()[1]), []).append(int(name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return state[state.rindex(b")") + 2:state.rindex(b")") + 3] != b"Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_workers_end_when_the_indexing_process_is_killed(tmp_path):
    import signal

    from tests.sync_helpers import spawn, wait_for

    folder = _kb_folder(tmp_path)
    err = tmp_path / "stderr.txt"
    proc = spawn("index", str(folder), "--db", str(tmp_path / "db"), "--workers", "2",
                 env={"KBINDEX_TEST_PAUSE": "page:8"}, stderr_path=err)
    try:
        wait_for(err, "paused at page", proc)
        helpers = _descendants(proc.pid)
        workers = [p for p in helpers if b"forkserver" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(workers) >= 3, "no fork server and workers were started"  # the server + 2 workers
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in helpers):
        time.sleep(0.1)
    assert not [p for p in helpers if _alive(p)], "processes outlived the killed indexing process"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_ctrl_c_stops_the_run_and_its_workers(tmp_path):
    """Ctrl-C on a terminal signals the whole process group: workers included."""
    import signal
    import subprocess
    import sys

    from tests.sync_helpers import ROOT, wait_for

    folder = _kb_folder(tmp_path)
    err = tmp_path / "stderr.txt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KBINDEX_MODEL": "fake:hash", "KBINDEX_TEST_PAUSE": "page:8"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_kbindex", "index", str(folder), "--db", str(tmp_path / "db"),
         "--workers", "2"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err.open("w"),
        start_new_session=True)
    try:
        wait_for(err, "paused at page", proc)
        helpers = _descendants(proc.pid)
        assert len(helpers) >= 3
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in helpers):
        time.sleep(0.1)
    assert not [p for p in helpers if _alive(p)], "processes outlived the interrupted run"
    output = err.read_text()
    assert "interrupted" in output and "Traceback" not in output, output
