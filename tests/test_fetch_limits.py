"""Hostile HTTP responses: each is bounded in time and memory and ends in a one-line message."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable

import pytest

from kbindex.errors import FetchError, SkipSource
from kbindex.fetch import Fetcher
from tests.server import FixtureServer, Response


class RawServer:
    """A TCP server on 127.0.0.1 (OS-chosen port) that answers every connection by hand.

    `answer(conn)` gets the socket once the request's header block has been read, so a test can
    send a response at any pace or stop in the middle of it.
    """

    def __init__(self, answer: Callable[[socket.socket], None]):
        self.answer = answer
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(4096)
                if not data:
                    return
                request += data
            try:
                self.answer(conn)
            except OSError:
                pass  # the client hung up: what the limits are for

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def trickle(data: bytes, every: float, stop_after: float = 20.0):
    """An answer that sends `data` a byte at a time, `every` seconds apart (for at most stop_after)."""
    def answer(conn: socket.socket) -> None:
        began = time.monotonic()
        for byte in data:
            if time.monotonic() - began > stop_after:
                return
            conn.sendall(bytes([byte]))
            time.sleep(every)
    return answer


HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n" + b"".join(
    b"X-Pad-%d: %s\r\n" % (i, b"a" * 40) for i in range(200)) + b"\r\n"


def test_a_header_block_at_a_trickle_times_out_within_three_times_the_timeout():
    with RawServer(trickle(HEADERS, every=0.05)) as server, Fetcher(timeout=0.5, retries=0) as fetcher:
        began = time.monotonic()
        with pytest.raises(FetchError) as caught:
            fetcher.fetch(server.url("/slow"))
        took = time.monotonic() - began
    assert caught.value.kind == "timeout"
    assert "no complete response within 1.5s" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert 1.4 < took < 4, took


def test_a_body_at_a_trickle_times_out_within_three_times_the_timeout():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5000\r\n\r\n"

    def answer(conn):
        conn.sendall(head)
        trickle(b"<p>" + b"x" * 4997, every=0.05)(conn)

    with RawServer(answer) as server, Fetcher(timeout=0.5, retries=0) as fetcher:
        began = time.monotonic()
        with pytest.raises(FetchError, match="no complete response within 1.5s"):
            fetcher.fetch(server.url("/slow-body"))
        assert time.monotonic() - began < 4


def test_the_deadline_starts_after_the_politeness_delay():
    """Waiting for a host's turn is not the server being slow (made-up: a delay above 3 x timeout)."""
    with FixtureServer({"/a": Response(body=b"<p>a</p>"), "/b": Response(body=b"<p>b</p>")}) as site, \
            Fetcher(timeout=0.3, retries=0, delay=1.2) as fetcher:
        assert fetcher.fetch(site.url("/a")).body == b"<p>a</p>"
        assert fetcher.fetch(site.url("/b")).body == b"<p>b</p>"  # after a 1.2 s wait


def test_a_body_shorter_than_its_content_length_says_the_server_closed_early():
    def answer(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000\r\n\r\n")
        conn.sendall(b"<html><body><p>only part of it")
        conn.shutdown(socket.SHUT_RDWR)

    with RawServer(answer) as server, Fetcher(timeout=2, retries=0) as fetcher:
        with pytest.raises(FetchError) as caught:
            fetcher.fetch(server.url("/cut"))
    message = str(caught.value)
    assert "the server closed the connection early" in message and "cannot connect" not in message
    assert "\n" not in message


def test_a_chunked_body_cut_short_says_the_server_closed_early():
    """Made up: the same fault with chunked transfer coding instead of a Content-Length."""
    def answer(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"10\r\n<p>sixteen byte\r\n40\r\n<p>not all")
        conn.shutdown(socket.SHUT_RDWR)

    with RawServer(answer) as server, Fetcher(timeout=2, retries=0) as fetcher:
        with pytest.raises(FetchError, match="the server closed the connection early"):
            fetcher.fetch(server.url("/cut"))


def test_a_closed_port_still_says_cannot_connect():
    with RawServer(lambda conn: None) as server:
        url = server.url("/")
    with Fetcher(timeout=2, retries=0) as fetcher, pytest.raises(FetchError, match="cannot connect"):
        fetcher.fetch(url)


def test_extract_reports_a_truncated_body_in_one_line(kb):
    def answer(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 900\r\n\r\n<p>half")
        conn.shutdown(socket.SHUT_RDWR)

    with RawServer(answer) as server:
        out = kb("extract", server.url("/cut"), "--timeout", "2")
    assert out.exit_code == 1
    assert "the server closed the connection early" in out.stderr
    assert "Traceback" not in out.output and len(out.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- stacked content codings


def _zeros_gzip(size: int) -> bytes:
    """gzip of `size` zero bytes, made in pieces (never holding the zeros)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [packer.compress(block) for _ in range(size >> 20)]
    return b"".join(parts) + packer.flush()


def test_a_gzip_bomb_stacked_twice_stops_at_the_cap_in_bounded_memory():
    bomb = gzip.compress(_zeros_gzip(200 << 20))  # 200 MiB behind two layers of gzip
    assert len(bomb) < 10_000
    cap = 1 << 20
    with FixtureServer({"/bomb": Response(body=bomb, headers={
            "Content-Type": "text/html", "Content-Encoding": "gzip, gzip"})}) as site, \
            Fetcher(timeout=5, retries=0, max_bytes=cap) as fetcher:
        tracemalloc.start()
        try:
            with pytest.raises(SkipSource) as caught:
                fetcher.fetch(site.url("/bomb"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < cap + 8 * (1 << 20), peak  # the cap, a few 64 KiB pieces, zlib's state
    assert caught.value.kind == "too_large"
    assert f"page larger than {cap} bytes (decompressed, 2 layers)" in str(caught.value)


@pytest.mark.parametrize("codings,encode", [
    # made up: other stacks and forms of the same codings
    ("deflate, gzip", lambda b: gzip.compress(zlib.compress(b))),
    ("gzip,deflate", lambda b: zlib.compress(gzip.compress(b))),
    ("x-gzip", gzip.compress),
    ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send it
    ("gzip", lambda b: gzip.compress(b[:3000]) + gzip.compress(b[3000:])),  # two gzip members
    ("identity", lambda b: b),
])
def test_stacked_and_legacy_codings_are_decoded(codings, encode):
    page = b"<html><body><h1>Title</h1>" + b"<p>certificate renewal steps</p>" * 200 + b"</body></html>"
    with FixtureServer({"/p": Response(body=encode(page), headers={
            "Content-Type": "text/html", "Content-Encoding": codings})}) as site, \
            Fetcher(timeout=5, retries=0) as fetcher:
        assert fetcher.fetch(site.url("/p")).body == page


@pytest.mark.parametrize("codings,message", [
    ("br", "unsupported Content-Encoding 'br'"),
    ("gzip, gzip, gzip, gzip, gzip", "5 stacked content encodings"),
])
def test_unreadable_codings_are_reported(codings, message):
    with FixtureServer({"/p": Response(body=b"\x1f\x8b whatever", headers={
            "Content-Type": "text/html", "Content-Encoding": codings})}) as site, \
            Fetcher(timeout=5, retries=0) as fetcher, pytest.raises(FetchError, match=message):
        fetcher.fetch(site.url("/p"))


def test_decode_body_never_hands_on_more_than_a_piece_per_step():
    """Decoding is incremental at every layer: 20 MiB of zeros behind three layers, capped at 2 MiB."""
    from kbindex.fetch import decode_body

    data = gzip.compress(gzip.compress(_zeros_gzip(20 << 20)))
    pieces = []
    with pytest.raises(Exception) as caught:
        for piece in decode_body([data], ["gzip", "gzip", "gzip"], 2 << 20):
            pieces.append(len(piece))
    assert type(caught.value).__name__ == "_TooLarge"
    assert max(pieces) <= 64 * 1024
    assert sum(pieces) <= 2 << 20
