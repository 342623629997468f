"""Server mode: every command against a real `chroma run` server on a free 127.0.0.1 port."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SAMPLE_KB
from tests.server import FixtureServer, Response
from tests.sync_helpers import assert_consistent, run, snapshot, summary

pytestmark = pytest.mark.server

CHROMA = Path(sys.executable).parent / "chroma"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ChromaServer:
    """`chroma run` on a folder and port; start() waits until it answers its heartbeat."""

    def __init__(self, path: Path, port: int):
        self.path, self.port = path, port
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(CHROMA), "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"chroma run exited {self.proc.returncode}")
            time.sleep(0.2)
        raise RuntimeError("chroma run did not start within 60 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def chroma(tmp_path):
    if not CHROMA.exists():
        pytest.skip(f"no chroma executable next to {sys.executable}")
    server = ChromaServer(tmp_path / "chroma-data", free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "kb"
    shutil.copytree(SAMPLE_KB, path)
    return path.resolve()


def test_every_command_works_against_a_server(kb, chroma, folder, db, monkeypatch):
    monkeypatch.setenv("KBINDEX_CHROMA_URL", chroma.url)
    first = kb.json("index", str(folder))
    assert first["indexed"] == 10 and first["failed"] == 0
    assert (db / "kbindex.sqlite").exists() and not (db / "chroma.sqlite3").exists()
    stats = kb.json("stats")
    assert stats["store"] == chroma.url and stats["chunks"] == first["chunks_added"]
    hits = json.loads(kb("query", "printer spooler offline", "--json").stdout)["hits"]
    assert hits[0]["source"].endswith("printer-offline-windows.html")
    assert len(json.loads(kb("sources", "--json").stdout)) == 10
    again = kb.json("index", str(folder))
    assert again["unchanged"] == 10 and again["chunks_added"] == 0
    (folder / "printer-offline-windows.html").unlink()
    assert kb.json("index", str(folder))["pruned"] == 1
    assert kb("delete", str(folder / "rmm-vs-dex-tools.html")).exit_code == 0
    assert kb("verify").exit_code == 0
    assert_consistent(db, {str(p) for p in folder.iterdir()} - {str(folder / "rmm-vs-dex-tools.html")},
                      url=chroma.url)
    # The command-line option works too, and the local store was never created.
    assert kb("stats", "--chroma-url", chroma.url).exit_code == 0
    assert not (db / "chroma.sqlite3").exists()


def test_a_local_store_and_a_server_indexed_from_one_db_keep_their_keyword_indexes_apart(kb, chroma, folder,
                                                                                         db, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    other = other.resolve()
    (other / "zebra.md").write_text("# Zebra crossings\n\nA zqquagga crossing is painted in stripes.")
    (other / "okapi.md").write_text("# Okapi\n\nThe zqokapi lives in the forest.")
    assert kb.json("index", str(folder))["indexed"] == 10
    assert kb.json("index", str(other), "--chroma-url", chroma.url)["indexed"] == 2
    # The same collection name, two stores: each query finds only its own store's chunks.
    for mode in ("keyword", "hybrid"):
        local = kb.json("query", "zqquagga", "--mode", mode)["hits"]
        assert all(not h["source"].startswith(str(other)) for h in local), local
        remote = kb.json("query", "0x80070002 zqquagga", "--mode", mode, "--chroma-url", chroma.url)["hits"]
        assert {h["source"] for h in remote} <= {str(other / "zebra.md"), str(other / "okapi.md")}, remote
    assert kb.json("query", "0x80070002", "--mode", "keyword")["hits"][0]["source"].endswith(
        "windows-update-error-0x80070002.rst")
    assert kb.json("query", "zqquagga", "--mode", "keyword", "--chroma-url", chroma.url)["hits"][0][
        "source"] == str(other / "zebra.md")
    # A local run after the server's keeps them apart too.
    (folder / "new.md").write_text("# New\n\nA zqlocal article.")
    assert kb.json("index", str(folder))["indexed"] == 1
    assert kb.json("query", "zqlocal", "--mode", "keyword", "--chroma-url", chroma.url)["hits"] == []
    assert kb.json("query", "zqokapi", "--mode", "keyword")["hits"] == []


def test_a_server_that_is_down_gives_a_clear_error(kb, folder):
    out = kb("index", str(folder), "--chroma-url", f"http://127.0.0.1:{free_port()}")
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "cannot reach the Chroma server" in out.stderr
    out = kb("query", "printer", "--chroma-url", f"http://127.0.0.1:{free_port()}")
    assert out.exit_code == 1 and "cannot reach the Chroma server" in out.stderr


def test_a_bad_chroma_url_is_a_usage_error(kb):
    out = kb("stats", "--chroma-url", "ftp://x")
    assert out.exit_code == 2 and "--chroma-url must look like" in out.stderr


def test_the_server_going_away_mid_run_then_the_next_run_completes(kb, chroma, tmp_path, db, monkeypatch):
    monkeypatch.setenv("KBINDEX_CHROMA_URL", chroma.url)
    monkeypatch.setattr("kbindex.indexing.writer.EMBED_BATCH", 40)  # a batch a page (40 sections each)
    page = "<html><body><main><h1>Page {i}</h1>{body}</main></body></html>"
    body = "".join(f"<h2>Step {j}</h2><p>Do step {j} of the procedure carefully.</p>" for j in range(40))
    routes = {f"/p{i}": Response(body=page.format(i=i, body=body).encode()) for i in range(4)}

    def stop_chroma(request):
        chroma.stop()  # the server goes away after the first batch was written
        return Response(body=page.format(i=9, body=body).encode())

    routes["/stop"] = stop_chroma
    with FixtureServer(routes) as site:
        urls = [site.url(p) for p in ("/p0", "/p1", "/stop", "/p2", "/p3")]
        out = kb("index", *urls, "--json")
        assert out.exit_code == 1 and "Traceback" not in out.output
        assert "cannot reach the Chroma server" in out.stderr
        chroma.start()
        # What was written before the server went away: a batch or two, whole.
        written = set(snapshot(db, url=chroma.url)["store"])
        assert written and written <= {urls[0], urls[1]}
        site.routes["/stop"] = Response(body=page.format(i=9, body=body).encode())
        result = kb.json("index", *urls)
        assert result["failed"] == 0 and result["indexed"] + result["unchanged"] == 5
    assert kb("verify").exit_code == 0
    assert len(assert_consistent(db, url=chroma.url)["store"]) == 5


def test_export_from_a_laptop_then_import_into_a_server(kb, chroma, folder, db, tmp_path):
    kb("index", str(folder))  # the local store
    dump = tmp_path / "kb.jsonl"
    assert kb("export", "--with-vectors", "-o", str(dump)).exit_code == 0
    team = tmp_path / "team-ledger"
    out = kb("import", str(dump), "--chroma-url", chroma.url, "--db", str(team), "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["embedded"] == 0
    out = kb("stats", "--chroma-url", chroma.url, "--db", str(team), "--json")
    assert out.exit_code == 0, out.output
    stats = json.loads(out.stdout)
    assert stats["store"] == chroma.url and stats["chunks"] == kb.json("stats")["chunks"]
    hits = json.loads(kb("query", "printer spooler offline", "--chroma-url", chroma.url,
                         "--db", str(team), "--json").stdout)["hits"]
    assert hits[0]["source"].endswith("printer-offline-windows.html")
    assert kb("verify", "--chroma-url", chroma.url, "--db", str(team)).exit_code == 0


class StallingProxy:
    """A TCP proxy on 127.0.0.1 to a Chroma server. It forwards everything until a client sends a
    request whose bytes contain `stall_on` (a path such as b"/upsert"); that request is swallowed,
    and its connection never answers again: a server that hangs in the middle of a run."""

    def __init__(self, port: int):
        self.upstream = ("127.0.0.1", port)
        self.stall_on: bytes | None = None
        self.stalled = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
                server = socket.create_connection(self.upstream)
            except OSError:
                return
            self.conns += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        mute = False
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    return
                if from_client and self.stall_on and self.stall_on in data:
                    mute = True
                    self.stalled += 1
                if not mute:
                    target.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_a_server_that_stops_answering_mid_run_times_out_then_the_next_run_completes(chroma, folder, tmp_path, db):
    """After the client is made (its first requests answered), a request that is never answered
    fails within --timeout with "cannot reach the Chroma server", for a query and mid-index."""
    proxy = StallingProxy(chroma.port)
    common = ("--chroma-url", proxy.url, "--db", str(db), "--timeout", "2")
    try:
        code, _, err = run("index", str(folder), *common, tmp=tmp_path)
        assert code == 0, err
        proxy.stall_on = b"/query"
        code, _, err = run("query", "printer offline", *common, tmp=tmp_path)
        assert code == 1 and proxy.stalled == 1, err
        assert err.startswith("kbindex: error: ") and "cannot reach the Chroma server" in err, err
        assert len(err.strip().splitlines()) == 1, err
        changed = folder / "printer-offline-windows.html"
        changed.write_text(changed.read_text().replace("</h1>", " (updated)</h1>", 1))
        proxy.stall_on = b"/upsert"
        code, _, err = run("index", str(folder), *common, tmp=tmp_path)
        assert code == 1 and proxy.stalled == 2, err
        assert "cannot reach the Chroma server" in err and "Traceback" not in err, err
        proxy.stall_on = None
        code, out, err = run("index", str(folder), *common, "--json", tmp=tmp_path)
        assert code == 0, err
        assert summary(out)["indexed"] == 1 and summary(out)["unchanged"] == 9  # the change, written now
        code, out, err = run("query", "printer offline", *common, tmp=tmp_path)
        assert code == 0 and "printer" in out.lower(), out + err
        assert_consistent(db, {str(p) for p in folder.iterdir()}, url=proxy.url)
    finally:
        proxy.close()


def test_repair_from_another_machine_deletes_nothing_of_the_shared_collection(kb, chroma, folder, db, tmp_path):
    """A second machine with its own --db (its own ledger) runs verify --repair against the shared
    server: the collection is bound to the first machine's ledger, so nothing it does not list
    is deleted; an empty ledger adopts the chunks instead, one that lists other sources refuses."""
    first = kb.json("index", str(folder), "--chroma-url", chroma.url)
    chunks = first["chunks_added"]
    before = snapshot(db, url=chroma.url)["store"]
    empty = tmp_path / "second-machine"
    out = kb("verify", "--repair", "--chroma-url", chroma.url, "--db", str(empty), "--json")
    assert out.exit_code == 0, out.output
    assert "adopted" in " ".join(json.loads(out.stdout)["actions"])
    assert snapshot(db, url=chroma.url)["store"] == before
    # A third machine that indexed one page of its own into the same collection
    other = tmp_path / "page.md"
    other.write_text("# VPN\n\nThe VPN client needs a restart after the certificate update.\n")
    third = tmp_path / "third-machine"
    assert kb("index", str(other), "--chroma-url", chroma.url, "--db", str(third)).exit_code == 0
    out = kb("verify", "--repair", "--chroma-url", chroma.url, "--db", str(third), "--json")
    assert out.exit_code == 1
    report = json.loads(out.stdout)
    assert any("is not the collection's" in p for p in report["problems"]), report
    assert any(a.startswith("not deleted") for a in report["actions"])
    assert kb.json("stats", "--chroma-url", chroma.url)["chunks"] == chunks + 1
    assert {s: ids for s, ids in snapshot(db, url=chroma.url)["store"].items() if s in before} == before
    # To the first machine, whose ledger is the collection's, the third machine's page is a chunk
    # no entry lists (index a collection from one machine: see the README).
    out = kb("verify", "--chroma-url", chroma.url, "--json")
    assert out.exit_code == 1 and "1 chunks in the store have no ledger entry" in out.stdout
