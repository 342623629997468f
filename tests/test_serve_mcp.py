"""The MCP tools, called with the official SDK's client: streamable HTTP at /mcp and `kbindex mcp`."""

from __future__ import annotations

import sys

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.serving import ROOT, Served, env, kbindex

SAMPLE_KB = ROOT / "data" / "sample-kb"
TOOLS = {"search", "get_document", "get_chunk", "list_collections", "list_sources"}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    db = tmp_path_factory.mktemp("serve-mcp") / "index"
    done = kbindex("index", str(SAMPLE_KB), "--db", str(db), "--model", "fake:hash", "-q")
    assert done.returncode == 0, done.stderr
    return db


async def exercise(client: Client) -> None:
    """What an agent does: list the tools, search, widen a hit, read its page; and a bad call."""
    listed = await client.list_tools()
    tools = {t.name: t for t in listed.tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description and "Returns" in tool.description or tool.name.startswith("list_")
        assert tool.annotations.read_only_hint is True and tool.annotations.destructive_hint is False

    found = await client.call_tool("search", {"query": "printer shows offline spooler snmp", "k": 3})
    assert not found.is_error
    hits = found.structured_content["hits"]
    assert len(hits) == 3 and hits[0]["source"].endswith("printer-offline-windows.html")
    assert {"id", "title", "text", "url", "score", "vector_rank", "keyword_rank"} <= set(hits[0])

    widened = (await client.call_tool("get_chunk", {"id": hits[0]["id"], "context": 1})).structured_content
    assert widened["chunk"]["id"] == hits[0]["id"]
    assert len(widened["before"]) + len(widened["after"]) >= 1

    doc = (await client.call_tool("get_document", {"source": hits[0]["source"]})).structured_content
    assert doc["title"] == hits[0]["title"] and hits[0]["text"][:80] in "\n".join(s["text"] for s in doc["sections"])

    collections = (await client.call_tool("list_collections", {})).structured_content
    assert collections["result"][0]["collection"] == "kbindex"
    sources = (await client.call_tool("list_sources", {})).structured_content
    assert len(sources["result"]) == 10

    bad = await client.call_tool("search", {"query": "printer", "k": 0})
    assert bad.is_error and "k must be between 1 and 100" in bad.content[0].text
    missing = await client.call_tool("get_document", {"source": "/no/such.md"})
    assert missing.is_error and "no document" in missing.content[0].text


def test_tools_over_streamable_http(indexed):
    with Served(indexed) as served:
        async def main():
            async with Client(served.url + "/mcp") as client:
                await exercise(client)

        anyio.run(main)
    assert "POST /mcp 200" in served.log


def test_tools_over_http_need_the_token_when_one_is_set(indexed):
    with Served(indexed, "--token", "mcp-token") as served:
        async def main():
            headers = {"Authorization": "Bearer mcp-token"}
            async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
                async with Client(streamable_http_client(served.url + "/mcp", http_client=http)) as client:
                    await exercise(client)
            with pytest.raises(Exception):  # noqa: B017 - the SDK's error type for a 401 varies by version
                async with Client(served.url + "/mcp") as client:
                    await client.list_tools()

        anyio.run(main)
    assert "POST /mcp 401" in served.log


def test_tools_over_stdio(indexed):
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "tests.fake_kbindex", "mcp", "--db", str(indexed), "--model", "fake:hash"],
        cwd=str(ROOT), env=env(),
    )

    async def main():
        async with Client(params) as client:
            await exercise(client)

    anyio.run(main)
