"""What the API and the MCP tools answer, as JSON-ready dicts, and the MCP server built on them.

The checks on input live here once (query length, k, mode, context), so the HTTP API and the MCP
tools refuse the same things with the same one-line messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kbindex.errors import UsageError
from kbindex.serve.reader import Reader, parse_where

MAX_QUERY_CHARS = 2000
MAX_K = 100
MAX_BATCH = 100  # queries in one POST /api/search
MAX_CONTEXT = 20  # neighbours on each side of a chunk
MODES = ("hybrid", "vector", "keyword")


def check_query(q: str) -> str:
    if not q or not q.strip():
        raise UsageError("empty query: give some text to search for")
    if len(q) > MAX_QUERY_CHARS:
        raise UsageError(f"query too long: {len(q)} characters, at most {MAX_QUERY_CHARS}")
    return q


def check_search(k: int, mode: str, per_doc: int) -> None:
    if not 1 <= k <= MAX_K:
        raise UsageError(f"k must be between 1 and {MAX_K}, got {k}")
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    if per_doc < 0:
        raise UsageError("per_doc must be 0 (no limit) or more")


def where_clause(where: Sequence[str] | str | None) -> dict | None:
    if where is None:
        return None
    return parse_where([where] if isinstance(where, str) else list(where))


def link(source: str, anchor: str | None) -> str:
    """The page URL (or file:// URI) with the section anchor: kbindex.output.hit_url's rule."""
    base = source if "://" in source else Path(source).as_uri() if source.startswith("/") else source
    return f"{base}#{anchor}" if anchor else base


def search(reader: Reader, queries: Sequence[str], k: int = 5, mode: str = "hybrid", per_doc: int = 1,
           collection: str | None = None, where: Sequence[str] | str | None = None) -> list[dict[str, Any]]:
    """One `{"query", "hits"}` object per query: what `kbindex query --json` prints per line."""
    from kbindex.output import hit_dict

    for q in queries:
        check_query(q)
    check_search(k, mode, per_doc)
    results = reader.search(queries, k=k, mode=mode, per_doc=per_doc, collection=collection,
                            where=where_clause(where))
    return [{"query": q, "hits": [hit_dict(h) for h in hits]} for q, hits in zip(queries, results)]


def collections(reader: Reader) -> list[dict[str, Any]]:
    return [{"collection": c.name, "model": c.model, "chunks": c.chunks,
             "default": c.name == reader.default_collection} for c in reader.collections()]


def document(reader: Reader, source: str, collection: str | None = None) -> dict[str, Any]:
    """The document's chunks in order, and its text by sections (chunk overlaps removed)."""
    if not source:
        raise UsageError("give the document's source (a URL or path, as listed by sources)")
    chunks = reader.document(source, collection)
    for c in chunks:
        c["url"] = link(c["source"], c["anchor"])
    sections: list[dict] = []
    for c in chunks:
        if sections and sections[-1]["section"] == c["section"]:
            sections[-1]["text"] = _join(sections[-1]["text"], c["text"])
        else:
            sections.append({"section": c["section"], "anchor": c["anchor"], "url": c["url"], "text": c["text"]})
    return {"source": source, "title": chunks[0]["title"], "url": link(source, None),
            "sections": sections, "chunks": chunks}


def chunk(reader: Reader, chunk_id: str, context: int = 0, collection: str | None = None) -> dict[str, Any]:
    """The chunk with `context` neighbours on each side, in document order."""
    if not 0 <= context <= MAX_CONTEXT:
        raise UsageError(f"context must be between 0 and {MAX_CONTEXT}, got {context}")
    chunks, at = reader.chunk(chunk_id, context, collection)
    for c in chunks:
        c["url"] = link(c["source"], c["anchor"])
    return {"chunk": chunks[at], "before": chunks[:at], "after": chunks[at + 1:]}


def _join(text: str, following: str) -> str:
    """Two consecutive chunks' text with the overlap the chunker repeats (the end of one at the
    start of the next, kbindex.chunk) written once."""
    longest = min(len(text), len(following), 4000)
    for size in range(longest, 15, -1):
        if text.endswith(following[:size]):
            return text + following[size:]
    return f"{text}\n{following}"


def mcp_server(reader: Reader):
    """The MCP server (official SDK) with kbindex's read-only tools."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations

    from kbindex import __version__
    from kbindex.errors import KbindexError

    server = MCPServer(
        "kbindex", version=__version__, log_level="WARNING",
        instructions="Search a knowledge base indexed by kbindex (hybrid keyword + semantic search). "
                     "Call search first; widen a hit with get_chunk, read a whole page with get_document.",
    )
    read_only = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                                open_world_hint=False)

    def answer(call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except KbindexError as exc:  # bad input, unknown collection or source: a message, no crash
            raise ToolError(str(exc)) from None

    def search_tool(query: str, k: int = 5, mode: str = "hybrid", collection: str | None = None,
                    where: list[str] | None = None) -> dict[str, Any]:
        """Search the knowledge base. Returns {"query", "hits"}: hits best first, each with rank,
        score, id (for get_chunk), title, section, text, url (the page with its section anchor),
        source (for get_document), vector_rank and keyword_rank (why it matched). mode: hybrid
        (default), vector or keyword; k: 1-100 hits; collection: from list_collections (default:
        the server's); where: metadata filters as KEY=VALUE strings, all must match."""
        return answer(search, reader, [query], k=k, mode=mode, collection=collection, where=where)[0]

    @server.tool(annotations=read_only, structured_output=True)
    def get_document(source: str, collection: str | None = None) -> dict[str, Any]:
        """One document's full text by sections. Returns {"source", "title", "url", "sections":
        [{"section", "anchor", "url", "text"}], "chunks": [...]}, in reading order. source is a
        hit's source or one from list_sources."""
        return answer(document, reader, source, collection)

    @server.tool(annotations=read_only, structured_output=True)
    def get_chunk(id: str, context: int = 1, collection: str | None = None) -> dict[str, Any]:
        """A chunk with `context` (0-20) neighbouring chunks on each side, to widen a search hit.
        Returns {"chunk", "before", "after"}, each chunk with id, position, title, section, url
        and text, in document order."""
        return answer(chunk, reader, id, context, collection)

    @server.tool(annotations=read_only, structured_output=True)
    def list_collections() -> list[dict[str, Any]]:
        """The collections that can be searched: [{"collection", "model", "chunks", "default"}]."""
        return answer(collections, reader)

    @server.tool(annotations=read_only, structured_output=True)
    def list_sources(collection: str | None = None) -> list[dict[str, Any]]:
        """The documents of a collection: [{"source", "title", "chunks", "indexed_at"}]."""
        return answer(reader.sources, collection)

    # The public name is "search"; the function is named apart from the module's search().
    server.add_tool(search_tool, name="search", annotations=read_only, structured_output=True)
    return server
