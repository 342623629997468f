"""`kbindex serve` and `kbindex mcp`: the hybrid search over HTTP, a web page and MCP (read-only).

Modules:
    reader   the one seam to the index (today's Store, LexicalIndex and search()): snapshots that
             are reopened when another process changed the index, thread-safe embedding
    app      the ASGI app: JSON API, web page, /mcp, auth, limits, access log
    tools    the MCP tools, shared by /mcp (streamable HTTP) and stdio
    server   binding and running uvicorn (address rules, graceful shutdown)
"""
