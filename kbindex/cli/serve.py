"""`serve` (HTTP and MCP at /mcp) and `mcp` (MCP over stdio): read-only servers over the index."""

from __future__ import annotations

import click

from kbindex.cli.common import common_options, make_embedder


@click.command()
@click.option("--host", default="127.0.0.1", envvar="KBINDEX_HOST", show_default=True,
              help="Address to listen on; any but loopback needs --token. [env var: KBINDEX_HOST]")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, envvar="KBINDEX_PORT", show_default=True,
              help="Port (0: one the system picks). [env var: KBINDEX_PORT]")
@click.option("--token", envvar="KBINDEX_TOKEN", metavar="TOKEN",
              help="Require 'Authorization: Bearer TOKEN' on everything but /healthz and the page's "
                   "static files. [env var: KBINDEX_TOKEN]")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Let web pages from ORIGIN (e.g. https://intranet.example.com) call the API "
                   "(repeatable; default: none).")
@common_options
def serve(host, port, token, cors_origins, settings):
    """Serve search over HTTP: a JSON API, a web page at /, and MCP tools at /mcp.

    Read-only, and always in step with the index: a `kbindex index` run in another process is
    served within seconds after it finishes. --collection is the default collection.

    \b
    Example:
      kbindex serve
      kbindex serve --host 0.0.0.0 --token "$(openssl rand -hex 16)"
    """
    from kbindex.serve.server import check_address
    from kbindex.serve.server import serve as run_server

    check_address(host, token)  # before the model loads: a refusal is instant
    run_server(_reader(settings), host, port, token, tuple(cors_origins))


@click.command("mcp")
@common_options
def mcp_cmd(settings):
    """Serve the MCP tools (search, get_document, get_chunk, list_collections, list_sources) over stdio.

    For desktop agents that start a process; `kbindex serve` offers the same tools at /mcp.

    \b
    Example (an MCP client's configuration):
      {"mcpServers": {"kbindex": {"command": "kbindex", "args": ["mcp", "--db", "/srv/kb/index"]}}}
    """
    from kbindex.serve.server import serve_stdio

    serve_stdio(_reader(settings))


def _reader(settings):
    """The server's read-only view of the index, with embedders loaded per collection's model."""
    from kbindex.serve.reader import Reader, with_collection

    return Reader(settings, lambda name, model: make_embedder(with_collection(settings, name), model))
