"""Running the app: address rules, one socket bound before uvicorn starts, graceful shutdown."""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys

from kbindex.errors import UsageError
from kbindex.serve.reader import Reader


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1 and "localhost"."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_address(host: str, token: str | None) -> None:
    """UsageError when the server would be reachable from other machines without a token."""
    if not is_loopback(host) and not token:
        raise UsageError(f"refusing to serve on {host} without --token: anyone who can reach it "
                         "could read the index (set --token or KBINDEX_TOKEN, or bind 127.0.0.1)")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: one the OS picks); UsageError when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def serve(reader: Reader, host: str, port: int, token: str | None, cors_origins: tuple[str, ...]) -> None:
    """Serve until SIGTERM or Ctrl-C; requests in flight are finished first, then return."""
    import uvicorn

    from kbindex.serve.app import access_logging, create_app

    check_address(host, token)
    access_logging()
    app = create_app(reader, token, cors_origins, host)
    reader.warm()  # the model is loaded before the first request, not during it
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    missing = reader.missing_default()
    if missing:  # a mistyped --db or --collection would otherwise look like a healthy server
        print(f"kbindex: note: {missing}", file=sys.stderr, flush=True)
    print(f"kbindex: serving http://{shown}:{bound}/ (API /api, MCP /mcp, docs /docs); "
          "Ctrl-C stops", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=30)
    server = uvicorn.Server(config)
    # uvicorn raises the signal again after its graceful shutdown, which would end the process
    # with SIGTERM's status; a handler that ignores it lets `kbindex serve` exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock])


def serve_stdio(reader: Reader) -> None:
    """The MCP tools over stdin/stdout until the client closes them."""
    import anyio

    from kbindex.serve.app import access_logging
    from kbindex.serve.tools import mcp_server

    access_logging()  # stderr: stdout carries the protocol
    reader.warm()
    reader.start()
    try:
        anyio.run(mcp_server(reader).run_stdio_async)
    finally:
        reader.stop()
