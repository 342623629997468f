"""Indexed text and queries are normalized alike: NFKC, invisible characters removed."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbindex.chunk import ChunkConfig, chunk_document
from kbindex.extract import extract
from kbindex.normalize import normalize_text
from kbindex.records import Page
from kbindex.store.lexical import query_terms
from tests.test_extract_files import make_pdf


@pytest.mark.parametrize("raw,plain", [
    ("certi\ufb01cate", "certificate"),  # fi ligature, as PDF text layers hold it
    ("\ufb00ective o\ufb04ine", "ffective offline"),  # ff, ffl
    ("\uff25\uff52\uff52\uff4f\uff52 \uff10\uff58\uff18\uff10", "Error 0x80"),  # full-width forms
    ("\uff8a\uff9f\uff7d\uff9c\uff70\uff84\uff9e", "\u30d1\u30b9\u30ef\u30fc\u30c9"),  # half-width katakana
    ("10\u00a0GB and 5\u202fMB", "10 GB and 5 MB"),  # no-break spaces
    ("pass\u200bword", "password"),  # zero-width space
    ("certi\u00adfi\u00adcate", "certificate"),  # soft hyphens
    ("\ufeffre\u2060set \u200eRTL\u200f", "reset RTL"),  # BOM, word joiner, bidi marks
    ("Caf\u0065\u0301", "Caf\u00e9"),  # composed
    ("line one\nline two\n\n- item", "line one\nline two\n\n- item"),  # structure kept
])
def test_normalize_text(raw, plain):
    assert normalize_text(raw) == plain


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_normalize_text_is_idempotent(text):
    once = normalize_text(text)
    assert normalize_text(once) == once


def test_query_terms_are_normalized():
    assert query_terms("certi\ufb01cate \uff36\uff30\uff2e") == ["certificate", "VPN"]


@pytest.fixture
def folder(tmp_path) -> Path:
    folder = tmp_path / "kb"
    folder.mkdir()
    # \256 is the "fi" glyph of the PDF standard encoding: pypdf reads it as U+FB01.
    (folder / "vpn.pdf").write_bytes(make_pdf([["VPN client"], ["Renew the certi\\256cate before it expires."]]))
    (folder / "wifi.html").write_text(
        "<html><head><title>Wi-Fi</title></head><body><article><h1>\uff37\uff49-\uff26\uff49 settings</h1>"
        "<p>Forget the net\u00adwork, then type the pass\u200bword again; the \uff33\uff33\uff29\uff24 is "
        "printed on the router\u00a0label.</p></article></body></html>", encoding="utf-8")
    return folder


def _chunks(path: Path):
    doc = extract(Page(source=str(path), body=path.read_bytes()))
    return chunk_document(doc, lambda texts: [len(t.split()) + 2 for t in texts], ChunkConfig(256, 0))


def test_the_chunked_text_is_normalized_and_the_document_hash_is_the_extracted_ones(folder):
    pdf = _chunks(folder / "vpn.pdf")[-1]  # page 2
    assert pdf.text == "Renew the certificate before it expires." and "certificate" in pdf.embed_text
    (html,) = _chunks(folder / "wifi.html")
    assert html.text == ("Forget the network, then type the password again; the SSID is printed on "
                         "the router label.")
    assert html.title == "Wi-Fi settings" and html.embed_text.startswith("Wi-Fi settings\n\n")
    # The ledger compares the extracted document's hash: it must not change with normalization.
    doc = extract(Page(source=str(folder / "wifi.html"), body=(folder / "wifi.html").read_bytes()))
    assert "\u00ad" in doc.text and html.doc_hash == doc.content_hash


@pytest.mark.parametrize("query,name", [
    ("certificate", "vpn.pdf"),
    ("certi\ufb01cate", "vpn.pdf"),  # a query typed (pasted) with the ligature
    ("\uff43\uff45\uff52\uff54\uff49\uff46\uff49\uff43\uff41\uff54\uff45", "vpn.pdf"),  # full-width
    ("password", "wifi.html"),
    ("network", "wifi.html"),
    ("SSID", "wifi.html"),
    ("pass\u00adword", "wifi.html"),
])
def test_keyword_search_matches_across_compatibility_forms(kb, folder, query, name):
    assert kb.json("index", str(folder))["indexed"] == 2
    hits = kb.json("query", query, "--mode", "keyword")["hits"]
    assert hits and Path(hits[0]["source"]).name == name
