"""The ASGI app: JSON API, the web search page, MCP at /mcp; bearer token, limits, access log.

Every error answers `{"error": "one line"}` with its status: 400 bad input, 401 no or wrong
token, 404 unknown collection, document or chunk, 413 body over 1 MiB, 504 past the deadline,
500 for anything else (the traceback goes to the server's log, never to the client).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from kbindex import __version__
from kbindex.errors import CollectionError, KbindexError, UsageError
from kbindex.serve import tools
from kbindex.serve.reader import Reader

STATIC = Path(__file__).parent / "static"
MAX_BODY = 1 << 20  # bytes: a batch of 100 queries of 2,000 characters fits with room to spare
# Seconds a search may take before the client gets 504; the search thread finishes on its own.
# A hybrid query takes tens of milliseconds (docs/benchmarks.md): this is for a stuck store.
DEADLINE = 10.0
# Paths served without a token: they hold no data (the page asks for the token itself).
OPEN_PATHS = ("/healthz", "/", "/favicon.ico")
OPEN_PREFIXES = ("/static/",)

access = logging.getLogger("kbindex.serve.access")


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class SearchRequest(BaseModel):
    """POST /api/search: several queries with the same options."""

    queries: list[str] = Field(min_length=1, max_length=tools.MAX_BATCH)
    k: int = 5
    mode: str = "hybrid"
    per_doc: int = 1
    collection: str | None = None
    where: list[str] | None = None


def create_app(reader: Reader, token: str | None = None, cors_origins: tuple[str, ...] = (),
               host: str = "127.0.0.1", deadline: float = DEADLINE) -> FastAPI:
    """The app over reader; with token, every path but OPEN_PATHS needs `Authorization: Bearer`."""
    mcp = tools.mcp_server(reader)
    # Stateless JSON responses: the tools are read-only calls, no session needs keeping. The SDK
    # guards a loopback server against DNS rebinding (Host and Origin checked) on its own.
    mcp_app = mcp.streamable_http_app(streamable_http_path="/mcp", stateless_http=True,
                                      json_response=True, host=host)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        reader.start()
        async with mcp.session_manager.run():
            yield
        reader.stop()

    app = FastAPI(title="kbindex", version=__version__, lifespan=lifespan,
                  description="Hybrid (keyword + semantic) search over a kbindex index. Read-only.")

    async def run(call, *args, **kwargs):
        with anyio.fail_after(deadline):
            return await anyio.to_thread.run_sync(lambda: call(*args, **kwargs), abandon_on_cancel=True)

    @app.exception_handler(KbindexError)
    async def kbindex_error(request: Request, exc: KbindexError):
        status = 400 if isinstance(exc, UsageError) else 404 if isinstance(exc, CollectionError) else 503
        return error(status, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":  # its location is a character offset, not a field
            return error(400, "the request body is not valid JSON")
        if first.get("loc", ())[:1] == ("body",) and len(first.get("loc", ())) == 1:
            return error(400, 'the request body must be a JSON object, e.g. {"queries": ["..."]}')
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return error(400, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(TimeoutError)
    async def timeout_error(request: Request, exc: TimeoutError):
        return error(504, f"the search took longer than {deadline:g} s")

    @app.exception_handler(404)
    async def not_found(request: Request, exc):
        return error(404, getattr(exc, "detail", None) or "not found")

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc):
        return error(405, "method not allowed: this server only reads")

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception):
        access.exception("kbindex: %s %s failed", request.method, request.url.path)
        return error(500, f"internal error: {type(exc).__name__}")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """Access log, token, body cap: outermost, so that it sees every answer."""
        start = time.perf_counter()
        response = await _guarded(request, call_next)
        # The query's values are left out of the log (they may be private); its keys stay.
        keys = "&".join(dict.fromkeys(k for k, _ in request.query_params.multi_items()))
        access.info("%s %s%s %d %.1f ms", request.method, request.url.path, f"?{keys}" if keys else "",
                    response.status_code, (time.perf_counter() - start) * 1000)
        return response

    async def _guarded(request: Request, call_next):
        path = request.url.path
        if token and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            # Constant time, so the token cannot be guessed a character at a time.
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                return error(401, "missing or wrong token: send 'Authorization: Bearer TOKEN'",
                             {"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return error(413, f"request body over {MAX_BODY} bytes")
        if request.method == "POST" and length is None:
            body = b""
            async for part in request.stream():  # chunked upload: count as it arrives
                body += part
                if len(body) > MAX_BODY:
                    return error(413, f"request body over {MAX_BODY} bytes")
            request._body = body  # Starlette reads a consumed stream from here
        return await call_next(request)

    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.get("/healthz", summary="Liveness (no token needed)")
    async def healthz():
        return {"status": "ok"}

    @app.get("/api/search", summary="Search one query: what `kbindex query --json` prints")
    async def search_get(
        q: Annotated[str, Query(description="The query text (1-2,000 characters).")],
        k: Annotated[int, Query(description="Hits (1-100).")] = 5,
        mode: Annotated[str, Query(description="hybrid, vector or keyword.")] = "hybrid",
        per_doc: Annotated[int, Query(description="At most N hits from one document; 0: no limit.")] = 1,
        collection: Annotated[str | None, Query(description="Collection (default: the server's).")] = None,
        where: Annotated[list[str] | None, Query(description="KEY=VALUE metadata filter (repeatable).")] = None,
    ):
        return (await run(tools.search, reader, [q], k, mode, per_doc, collection, where))[0]

    @app.post("/api/search", summary="Search several queries: {\"results\": [...]}")
    async def search_post(body: SearchRequest):
        results = await run(tools.search, reader, body.queries, body.k, body.mode, body.per_doc,
                            body.collection, body.where)
        return {"results": results}

    @app.get("/api/collections", summary="Collections: name, model, chunks, default")
    async def collections_get():
        return await run(tools.collections, reader)

    @app.get("/api/sources", summary="A collection's documents: source, title, chunks, indexed_at")
    async def sources_get(collection: str | None = None):
        return await run(reader.sources, collection)

    @app.get("/api/document", summary="A document's chunks in order, and its text by sections")
    async def document_get(
        source: Annotated[str, Query(description="URL or path, as listed by /api/sources.")],
        collection: str | None = None,
    ):
        return await run(tools.document, reader, source, collection)

    @app.get("/api/chunk/{chunk_id}", summary="A chunk with N neighbours on each side")
    async def chunk_get(
        chunk_id: str,
        context: Annotated[int, Query(description="Neighbours per side (0-20).")] = 0,
        collection: str | None = None,
    ):
        return await run(tools.chunk, reader, chunk_id, context, collection)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.router.routes.extend(mcp_app.routes)  # POST/GET/DELETE /mcp (streamable HTTP)
    return app


def access_logging() -> None:
    """Access log lines to stderr: `GET /api/search?q&k 200 12.3 ms`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    for name in ("kbindex.serve", "kbindex.serve.access"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
