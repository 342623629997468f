"""What a body is comes from its bytes: a PDF served as text/html is a PDF, random bytes named
.txt are binary (without a single NUL byte), whatever the name or Content-Type says."""

import io
import random
import zipfile

import pytest

from kbindex.errors import SkipSource
from kbindex.extract import extract, looks_binary
from kbindex.fetch import Fetcher
from kbindex.files import read_file
from kbindex.records import Page
from tests.server import FixtureServer, Response
from tests.test_extract_files import make_docx, make_pdf


def random_text_like(size: int, seed: int = 7) -> bytes:
    """Random bytes with no NUL in them: what a `.txt` holding encrypted or compressed data is."""
    rng = random.Random(seed)
    return bytes(rng.randrange(1, 256) for _ in range(size))


PDF = make_pdf([["Certificate renewal"], ["Renew the VPN certificate before it expires."]])


def test_a_pdf_served_as_html_is_read_as_a_pdf():
    routes = {"/guide": Response(body=PDF, headers={"Content-Type": "text/html; charset=utf-8"})}
    with FixtureServer(routes) as site, Fetcher() as fetcher:
        doc = extract(fetcher.fetch(site.url("/guide")))
    assert [s.anchor for s in doc.sections] == ["page=1", "page=2"]
    assert "Renew the VPN certificate" in doc.text
    assert "endobj" not in doc.text and "%PDF" not in doc.text


@pytest.mark.parametrize("name", ["guide.html", "guide.txt", "guide.md"])
def test_a_pdf_under_another_name_is_read_as_a_pdf(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(PDF)
    doc = extract(read_file(path))
    assert "Renew the VPN certificate" in doc.text and "endobj" not in doc.text


def test_an_index_run_over_http_indexes_the_pdf_text_not_its_syntax(kb):
    routes = {"/guide": Response(body=PDF, headers={"Content-Type": "text/html"})}
    with FixtureServer(routes) as site:
        summary = kb.json("index", site.url("/guide"))
    assert summary["indexed"] == 1
    hits = kb.json("query", "endobj xref startxref", "--mode", "keyword")["hits"]
    assert hits == []
    hits = kb.json("query", "certificate expires", "--mode", "keyword")["hits"]
    assert hits and hits[0]["anchor"] == "page=2"


@pytest.mark.parametrize("size", [40, 300, 5000, 200_000])
def test_random_bytes_named_txt_are_binary(tmp_path, size):
    body = random_text_like(size)
    assert b"\x00" not in body
    path = tmp_path / "notes.txt"
    path.write_bytes(body)
    with pytest.raises(SkipSource) as err:
        extract(read_file(path))
    assert err.value.kind == "binary"


@pytest.mark.parametrize("content_type", ["text/plain", "text/html", "text/plain; charset=utf-8", None])
def test_random_bytes_over_http_are_binary(content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    routes = {"/notes": Response(body=random_text_like(3000, seed=11), headers=headers)}
    with FixtureServer(routes) as site, Fetcher() as fetcher:
        page = fetcher.fetch(site.url("/notes"), accept=())
    with pytest.raises(SkipSource) as err:
        extract(page)
    assert err.value.kind == "binary"


def test_an_index_run_skips_random_bytes_as_binary_and_keeps_the_rest(kb, tmp_path):
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "blob.txt").write_bytes(random_text_like(20_000))
    (folder / "note.txt").write_text("Printer offline\n\nRestart the spooler service.\n")
    summary = kb.json("index", str(folder))
    assert summary["indexed"] == 1 and summary["failed"] == 0
    assert [s["kind"] for s in summary["skips"]] == ["binary"]
    assert kb.json("stats")["chunks"] == 1


def test_a_zip_that_is_not_a_word_document_is_binary(tmp_path):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("data.csv", "a,b\n" * 100)
    path = tmp_path / "export.txt"
    path.write_bytes(out.getvalue())
    with pytest.raises(SkipSource) as err:
        extract(read_file(path))
    assert err.value.kind == "binary"


def test_a_word_document_served_as_octet_stream_is_read():
    doc = extract(Page(source="http://x/download?id=7", body=make_docx(),
                       content_type="application/octet-stream"))
    assert doc.title == "Mapped drives"


@pytest.mark.parametrize("text", [
    "Old DOS note\n\nThe file ends with a Ctrl-Z mark, as editors of that time wrote it.\x1a",
    "Form feeds\f separate pages\f in printed manuals; escape codes \x1b[1mbold\x1b[0m too.",
    "Caf\u00e9 au lait\n\nIt is served hot. \ufffd one broken byte.",
    "\u041f\u0435\u0440\u0435\u0437\u0430\u043f\u0443\u0441\u0442\u0438\u0442\u0435 " * 200,
])
def test_text_with_a_few_control_characters_is_text(text):
    assert not looks_binary(text)


def test_looks_binary_counts_controls_and_invalid_sequences():
    assert looks_binary("\x01\x02\x03\x04\x05 short")
    assert looks_binary("ok " * 100 + "\ufffd" * 10)
    assert not looks_binary("ok " * 1000 + "\ufffd" * 10)
