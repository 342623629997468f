"""`kbindex extract`, metadata filters and deep links, through the CLI."""

import json
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_KB
from tests.server import FixtureServer, Response

FIXTURES = Path(__file__).parent / "fixtures" / "extract"


def test_extract_file_json_shows_metadata_and_sections_and_writes_nothing(kb, db):
    out = kb("extract", str(FIXTURES / "docusaurus-retries.html"), "--json")
    assert out.exit_code == 0
    data = json.loads(out.stdout)
    assert data["title"] == "Retrying requests"
    assert data["metadata"]["canonical"] == "https://sdk.acme.dev/docs/guides/retries"
    assert {"heading", "anchor", "text"} <= set(data["sections"][0])
    params = next(s for s in data["sections"] if s["anchor"] == "parameters")
    assert params["heading"] == "Configure the policy > Parameters"
    assert "maxAttempts | number | 3" in params["text"]
    assert not db.exists()


def test_extract_human_output_lists_sections_with_anchors(kb):
    out = kb("extract", str(FIXTURES / "mkdocs-config.html"))
    assert out.exit_code == 0
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["title", "Configuration"]
    assert any(line.split() == ["author", "Platform", "Team"] for line in lines)
    assert "## Options  #options" in out.stdout
    assert "[sync]\ninterval = 60" in out.stdout


def test_extract_url_uses_the_fetcher_and_the_declared_charset():
    page = ("<html><head><title>Café</title><meta name='author' content='Zoë Ng'></head><body><main>"
            "<h1 id='top'>Crème brûlée</h1><p>Caramelize the sugar with a torch until it turns "
            "amber, then let the custard rest for five minutes before serving it.</p></main></body></html>")
    from click.testing import CliRunner

    from kbindex.cli import cli

    routes = {"/dessert": Response(body=page.encode("iso-8859-1"),
                                   headers={"Content-Type": "text/html; charset=iso-8859-1"})}
    with FixtureServer(routes) as server:
        out = CliRunner().invoke(cli, ["extract", server.url("/dessert"), "--json"], catch_exceptions=False)
    data = json.loads(out.stdout)
    assert data["title"] == "Crème brûlée"
    assert data["metadata"]["author"] == "Zoë Ng"
    assert data["sections"][0]["anchor"] == "top"
    assert "Caramelize the sugar" in data["sections"][0]["text"]


@pytest.mark.parametrize("args, message, code", [
    (["extract", str(SAMPLE_KB)], "give one file or URL, not a folder", 2),
    (["extract", "no-such-file.html"], "no such file or folder", 2),
    (["extract", "ftp://example.com/a.html"], "unsupported URL scheme", 2),
])
def test_extract_bad_sources(kb, args, message, code):
    out = kb(*args)
    assert out.exit_code == code
    assert message in out.stderr


def test_extract_reports_a_page_without_text_as_a_failure(kb, tmp_path):
    empty = tmp_path / "empty.html"
    empty.write_text("<html><body><script>render()</script><img src='a.png'></body></html>")
    out = kb("extract", str(empty))
    assert out.exit_code == 1 and "no text to index" in out.stderr


def test_hits_deep_link_to_the_section_that_answers(kb):
    routes = {f"/docs/{p.name}": Response(body=p.read_bytes()) for p in FIXTURES.glob("*.html")}
    with FixtureServer(routes) as server:
        summary = kb.json("index", "--depth", "0", *(server.url(path) for path in sorted(routes)))
        assert summary["indexed"] == len(routes) and summary["failed"] == 0
        base = server.url("/docs/")
    # Ranking is not under test here (the fake embedder is a bag of hashed words): each hit's
    # url must name the section its text came from.
    hits = kb.json("query", "format quote_all plpgsql retries maxAttempts", "-k", "20", "--per-doc", "0")["hits"]
    by_text = {h["text"].split("\n")[0]: h for h in hits}
    assert by_text["The function format produces output formatted according to a format string, "
                   "in a style similar to the C function sprintf."]["url"] == (
        base + "docbook-functions-string.html#FUNCTIONS-STRING-FORMAT")
    assert by_text["Name | Type | Default | Meaning"]["url"] == base + "docusaurus-retries.html#parameters"
    assert all(h["url"] == h["source"] + "#" + h["anchor"] for h in hits if h["anchor"])
    human = kb("query", "retry policy maxAttempts baseDelayMs parameters", "-k", "20").stdout
    assert base + "docusaurus-retries.html#parameters" in human


def test_code_and_tables_of_doc_pages_reach_the_index(kb, db):
    kb("index", str(FIXTURES))
    from kbindex.store.chroma import Store

    texts = "\n".join(m.text for m in Store(db).collection("kbindex").scan(include_text=True))
    assert "RETURN format('SELECT * FROM %I', tbl);" in texts
    assert "btrim('xyxtrimyyx', 'xyz') → trim" in texts
    assert "interval | 300 | Seconds between two sync passes." in texts
    assert "  retries: { maxAttempts: 4, baseDelayMs: 250 }," in texts
    assert "object | dict" in texts


def test_where_filters_on_extracted_metadata(kb):
    kb("index", str(SAMPLE_KB))
    hits = kb.json("query", "printer offline", "--where", "author=Kevin Brandt", "-k", "10")["hits"]
    assert hits and all(h["source"].endswith("printer-offline-windows.html") for h in hits)
    other = kb.json("query", "printer offline", "--where", "language=en", "-k", "3")["hits"]
    assert len(other) == 3
    dated = kb.json("query", "printer offline", "--where", "published=2026-01-27", "-k", "10")["hits"]
    assert dated and {h["source"].rsplit("/", 1)[-1] for h in dated} == {"printer-offline-windows.html"}
