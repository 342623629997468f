"""A real HTTP server on 127.0.0.1 (OS-chosen port) serving fixture routes, with a request log."""

from __future__ import annotations

import email.utils
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/html; charset=utf-8"})
    delay: float = 0.0  # seconds before the status line is sent


Route = Response | Callable[["Request"], Response]


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    status: int | None = None  # of the response sent
    content_type: str | None = None

    @property
    def conditional(self) -> bool:
        return "if-none-match" in self.headers or "if-modified-since" in self.headers


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # clients that hang up early (size caps, timeouts) are expected here


def validators(body: bytes) -> tuple[str, str]:
    """(ETag, Last-Modified) that FixtureServer gives a body: both change when the body does."""
    digest = hashlib.sha256(body).hexdigest()
    stamp = email.utils.formatdate(1_600_000_000 + int(digest[:8], 16) % 100_000_000, usegmt=True)
    return f'"{digest[:16]}"', stamp


class FixtureServer:
    """Serve routes {path: Response or callable(Request) -> Response}; 404 otherwise.

    `validators` ("etag", "last-modified" or "both"; None by default) adds an ETag and/or a
    Last-Modified header derived from the body to every 200 response that has none, and answers
    a matching If-None-Match / If-Modified-Since with 304 Not Modified, as a static file server
    does. The log records each request with the status and Content-Type of its response.
    """

    def __init__(self, routes: dict[str, Route] | None = None, validators: str | None = None):
        self.routes: dict[str, Route] = dict(routes or {})
        self.log: list[Request] = []
        self.validators = validators
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's naming)
                request = Request(self.path, {k.lower(): v for k, v in self.headers.items()})
                server.log.append(request)
                route = server.routes.get(self.path)
                if route is None:
                    route = Response(404, b"<h1>Not found</h1>")
                response = route(request) if callable(route) else route
                response = server._conditional(request, response)
                request.status = response.status
                request.content_type = response.headers.get("Content-Type")
                if response.delay:
                    time.sleep(response.delay)
                try:
                    self.send_response(response.status)
                    for key, value in response.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(response.body)))
                    self.end_headers()
                    self.wfile.write(response.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def _conditional(self, request: Request, response: Response) -> Response:
        if not self.validators or response.status != 200 or any(
                k.lower() in ("etag", "last-modified") for k in response.headers):
            return response
        etag, stamp = validators(response.body)
        headers = dict(response.headers)
        match = False
        if self.validators in ("etag", "both"):
            headers["ETag"] = etag
            match = request.headers.get("if-none-match") == etag
        if self.validators in ("last-modified", "both"):
            headers["Last-Modified"] = stamp
            if "if-none-match" not in request.headers or self.validators == "last-modified":
                match = match or request.headers.get("if-modified-since") == stamp
        if match:
            return Response(304, b"", headers)
        return Response(response.status, response.body, headers, response.delay)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def __enter__(self) -> FixtureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
