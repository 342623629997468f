"""The CLI contract against a real Chroma store on tmp_path, with the fake embedder."""

import gzip
import json
import shutil

import pytest

from tests.conftest import SAMPLE_KB
from tests.server import FixtureServer, Response

CHROME = ["Subscribe to the Helpdesk Digest", "Popular posts", "Leave a comment",
          "2026 Northwind Helpdesk", "Ten keyboard shortcuts", "Thanks, this saved my weekend"]


def test_index_sample_kb_then_reindex_changes_nothing(kb):
    first = kb.json("index", str(SAMPLE_KB))
    assert first["sources"] == 10 and first["indexed"] == 10 and first["failed"] == 0
    assert first["chunks_added"] > 10
    stats = kb.json("stats")
    assert stats["documents"] == 10 and stats["chunks"] == first["chunks_added"]
    assert stats["model"] == "fake:hash" and stats["dimensions"] == 64
    again = kb.json("index", str(SAMPLE_KB))
    assert again["indexed"] == 0 and again["unchanged"] == 10 and again["chunks_added"] == 0
    assert kb.json("stats")["chunks"] == stats["chunks"]


def test_no_page_chrome_reaches_the_index(kb, db):
    kb("index", str(SAMPLE_KB))
    from kbindex.store.chroma import Store

    texts = [m.text for m in Store(db).collection("kbindex").scan(include_text=True)]
    assert texts
    for chrome in CHROME:
        assert not any(chrome in t for t in texts), chrome


def test_query_json_shape_and_where_filter(kb):
    kb("index", str(SAMPLE_KB))
    out = kb("query", "printer spooler offline SNMP", "-k", "3", "--json")
    assert out.exit_code == 0
    result = json.loads(out.stdout)
    assert result["query"] == "printer spooler offline SNMP"
    hit = result["hits"][0]
    assert set(hit) >= {"rank", "score", "id", "source", "title", "section", "text"}
    assert hit["rank"] == 1 and isinstance(hit["score"], float)
    assert hit["source"].endswith("printer-offline-windows.html")
    md = str(SAMPLE_KB.resolve() / "postgresql-wal-disk-full.md")
    filtered = json.loads(kb("query", "printer", "--where", f"source={md}", "--json").stdout)
    assert filtered["hits"] and all(h["source"] == md for h in filtered["hits"])


def test_batch_queries_from_stdin(kb):
    kb("index", str(SAMPLE_KB))
    out = kb("query", "--queries", "-", "--json", input="printer offline\n\nWAL files fill the disk\n")
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["query"] for r in lines] == ["printer offline", "WAL files fill the disk"]


def test_sources_lists_each_document(kb):
    kb("index", str(SAMPLE_KB))
    rows = json.loads(kb("sources", "--json").stdout)
    assert len(rows) == 10
    assert all({"source", "title", "chunks"} <= set(r) and r["chunks"] >= 1 for r in rows)


def test_shrinking_a_document_leaves_no_stale_chunks(kb, tmp_path):
    folder = tmp_path / "kb"
    folder.mkdir()
    page = folder / "long.md"
    page.write_text("# Long\n\n" + "\n\n".join(f"## Part {i}\n\nText of part {i}." for i in range(20)))
    first = kb.json("index", str(folder))
    page.write_text("# Long\n\n## Part 0\n\nOnly one part now.")
    second = kb.json("index", str(folder))
    assert second["chunks_deleted"] == first["chunks_added"] - second["chunks_added"] > 0
    assert kb.json("stats")["chunks"] == second["chunks_added"]
    hits = json.loads(kb("query", "Text of part 7", "-k", "20", "--json").stdout)["hits"]
    assert all("part 7" not in h["text"] for h in hits)


def test_model_mismatch_is_refused_before_writing(kb, monkeypatch):
    kb("index", str(SAMPLE_KB / "printer-offline-windows.html"))
    before = kb.json("stats")["chunks"]
    out = kb("index", str(SAMPLE_KB), "--model", "fake:other")
    assert out.exit_code == 1
    assert "built with model 'fake:hash'" in out.stderr
    out = kb("query", "printer", "--model", "fake:other")
    assert out.exit_code == 1 and "fake:hash" in out.stderr
    assert kb.json("stats")["chunks"] == before


@pytest.fixture
def site():
    html = b"<html><head><title>Web page</title></head><body><main><h1>Proxy settings</h1><p>Set the proxy in the control panel.</p></main></body></html>"
    big = b"<html><body>" + b"a" * 2_000_000 + b"</body></html>"
    routes = {
        "/page": Response(body=html),
        "/gone": Response(404, b"nope"),
        "/broken": Response(500, b"oops"),
        "/loop-a": Response(302, b"", {"Location": "/loop-b"}),
        "/loop-b": Response(302, b"", {"Location": "/loop-a"}),
        "/moved": Response(301, b"", {"Location": "/page"}),
        "/slow": Response(body=html, delay=3),
        "/image.png": Response(body=b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, headers={"Content-Type": "image/png"}),
        "/bomb": Response(body=gzip.compress(b"<p>" + b"a" * 30_000_000),
                          headers={"Content-Type": "text/html", "Content-Encoding": "gzip"}),
        "/big": Response(body=big),
    }
    with FixtureServer(routes) as server:
        yield server


def test_index_a_url_and_a_redirected_url(kb, site):
    # /moved redirects to /page: one page reached by two URLs is indexed once, as /page.
    result = kb.json("index", site.url("/page"), site.url("/moved"), "--delay", "0")
    assert result["indexed"] == 1 and result["failed"] == 0
    assert [s["source"] for s in json.loads(kb("sources", "--json").stdout)] == [site.url("/page")]
    hits = json.loads(kb("query", "proxy control panel", "--json").stdout)["hits"]
    assert hits[0]["title"] == "Proxy settings"
    assert "kbindex/" in site.log[0].headers["user-agent"]


@pytest.mark.parametrize("path,message", [
    ("/gone", "HTTP 404"),
    ("/broken", "HTTP 500"),
    ("/loop-a", "redirect loop"),
    ("/slow", "timed out"),
    ("/image.png", "not a text page (Content-Type image/png)"),
    ("/bomb", "larger than"),
    ("/big", "larger than"),
])
def test_url_failures_are_reported_and_lose_nothing(kb, site, path, message):
    kb("index", site.url("/page"))
    out = kb("index", site.url(path), str(SAMPLE_KB / "printer-offline-windows.html"),
             "--timeout", "1", "--max-bytes", "1000000", "--retries", "0", "--json")  # not a retry test
    assert out.exit_code == 1
    summary = json.loads(out.stdout)
    assert summary["failed"] == 1 and summary["indexed"] == 1
    assert message in summary["failures"][0]["reason"]
    assert message in out.stderr and "Traceback" not in out.stderr
    assert kb.json("stats")["documents"] == 2  # the earlier page is still there


def test_unreachable_url(kb):
    import socket

    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = kb("index", f"http://127.0.0.1:{port}/x", "--retries", "0", "--json")  # not a retry test
    assert out.exit_code == 1
    assert "cannot connect" in json.loads(out.stdout)["failures"][0]["reason"]


def test_binary_and_empty_files_in_a_folder_are_skipped_and_reported(kb, tmp_path):
    folder = tmp_path / "kb"
    shutil.copytree(SAMPLE_KB, folder)
    (folder / "empty.md").write_text("")
    (folder / "blob.txt").write_bytes(b"\x00\x01\x02binary\x00" * 50)
    out = kb("index", str(folder), "--json")
    assert out.exit_code == 0
    summary = json.loads(out.stdout)
    assert summary["indexed"] == 10 and summary["skipped"] == 2
    reasons = {s["source"].rsplit("/", 1)[-1]: s["reason"] for s in summary["skips"]}
    assert "empty" in reasons["empty.md"] and "binary" in reasons["blob.txt"]
    assert "skipped:" in out.stderr


@pytest.mark.parametrize("args,message,code", [
    (["index", "/no/such/folder"], "no such file or folder: /no/such/folder", 2),
    (["index", "ftp://example.com/x"], "unsupported URL scheme 'ftp:'", 2),
    (["index", "file:///etc/passwd"], "unsupported URL scheme 'file:'", 2),
    (["index", "javascript:alert(1)"], "unsupported URL scheme 'javascript:'", 2),
    (["index"], "give at least one SOURCE", 2),
    (["index", "SAMPLE", "--collection", "a"], "collection name must be 3-512 characters", 2),
    (["index", "SAMPLE", "--collection", "bad name!"], "collection name must be 3-512 characters", 2),
    (["query", "printer", "--collection", "kb..old"], "invalid --collection 'kb..old'", 2),
    (["stats", "--collection", "-kb"], "collection name must be 3-512 characters", 2),
    (["index", "SAMPLE", "--chunk-tokens", "1000"], "exceeds the model's limit of 256", 2),
    (["query", ""], "empty query", 2),
    (["query", "   "], "empty query", 2),
    (["query", "anything"], "no index at", 1),
    (["query", "printer", "--collection", "other-kb"], "no collection 'other-kb'", 1),
    (["query", "printer", "--where", "novalue"], "--where needs KEY=VALUE", 2),
    (["index", "EMPTYFILE"], "empty", 1),
    (["index", "BINFILE"], "binary", 1),
])
def test_bad_input(kb, tmp_path, args, message, code):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binfile = tmp_path / "x.txt"
    binfile.write_bytes(b"\x00\x01" * 100)
    if args[0] == "query" and "no index at" not in message:
        kb("index", str(SAMPLE_KB / "printer-offline-windows.html"))
    replace = {"SAMPLE": str(SAMPLE_KB), "EMPTYFILE": str(empty), "BINFILE": str(binfile)}
    out = kb(*[replace.get(a, a) for a in args])
    assert out.exit_code == code, out.output
    assert message in out.stderr
    assert "Traceback" not in out.output


def test_query_against_an_empty_collection(kb, db):
    from kbindex.store.chroma import Store

    Store(db).create("kbindex", "fake:hash", 64)
    out = kb("query", "printer")
    assert out.exit_code == 1 and "is empty" in out.stderr
