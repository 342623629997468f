"""A Chroma server that accepts connections and then never answers: every command fails within its
--timeout with "cannot reach the Chroma server" and exit 1, instead of waiting for ever.

The commands run in child processes, so that a hang fails the test (TimeoutExpired) rather than
hanging the test run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from tests.conftest import ROOT, SAMPLE_KB


class MuteServer:
    """A TCP server on 127.0.0.1 (OS-chosen port) that never completes an HTTP answer.

    mode "silent": accepts connections, reads nothing, answers nothing.
    mode "backlog": listens but never even accepts (the kernel completes the handshake).
    mode "stall": reads the request, sends a status line and headers, then nothing more.
    """

    def __init__(self, mode: str):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.held: list[socket.socket] = []
        self.closed = threading.Event()
        if mode != "backlog":
            threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)  # kept open: the client sees a live, mute connection
            if self.mode == "stall":
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 4096\r\n\r\n{\"nanosecond")
                except OSError:
                    pass

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        for conn in self.held:
            conn.close()


# A hang fails the test instead of hanging the run (generous: a Python start with chromadb took up
# to 50 s at a load average of 20 on 2 cores).
LIMIT = 90


def _kbindex(*args: str, tmp_path) -> tuple[int, str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KBINDEX_MODEL": "fake:hash",
           "KBINDEX_DB": str(tmp_path / "index")}
    proc = subprocess.run([sys.executable, "-m", "tests.fake_kbindex", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=LIMIT)
    return proc.returncode, proc.stdout, proc.stderr


PAGE = str(SAMPLE_KB / "printer-offline-windows.html")


@pytest.mark.parametrize(("mode", "args"), [
    ("silent", ("query", "printer offline")),
    ("stall", ("query", "printer offline")),
    ("silent", ("query", "printer offline", "--mode", "keyword")),
    ("silent", ("stats",)),
    ("backlog", ("stats",)),
    ("stall", ("stats",)),
    ("silent", ("index", PAGE)),
    ("stall", ("index", PAGE)),
    ("backlog", ("sources",)),
], ids=lambda v: v if isinstance(v, str) else " ".join(a for a in v if a != PAGE))
def test_a_mute_chroma_server_fails_within_the_timeout(mode, args, tmp_path):
    server = MuteServer(mode)
    try:
        code, stdout, stderr = _kbindex(*args, "--chroma-url", server.url, "--timeout", "1",
                                        tmp_path=tmp_path)
    finally:
        server.close()
    assert code == 1, stderr
    assert stderr.startswith("kbindex: error: ") and "cannot reach the Chroma server" in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr  # one line, no traceback
    assert not (tmp_path / "index" / "chroma.sqlite3").exists()  # no local store made instead


def test_verify_reports_a_mute_chroma_server(tmp_path):
    server = MuteServer("silent")
    try:
        code, stdout, stderr = _kbindex("verify", "--chroma-url", server.url, "--timeout", "1",
                                        tmp_path=tmp_path)
    finally:
        server.close()
    assert code == 1 and "Traceback" not in stderr, stderr
    assert "problem: the store fails to open or answer" in stdout and "cannot reach the Chroma server" in stdout
    # --timeout 1 bounds it: the client's three setup requests, 1 s each (kbindex.store._http_client),
    # not 3 x the default 20 s.
    assert "no answer within 3 s" in stdout, stdout
