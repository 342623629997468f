"""Decoding: BOM, declared charset, <meta> charset, then detection; never fatal."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbindex.errors import SkipSource
from kbindex.extract import decode, detect_encoding, extract
from kbindex.records import Page

ARTICLE = ("<html><head><title>Straße</title>{meta}</head><body><article><h1>Größe ändern</h1>"
           "<p>Die Datei ist größer als erwartet, deshalb schlägt die Übertragung fehl. "
           "Öffnen Sie die Einstellungen und ändern Sie die maximale Größe.</p></article></body></html>")


def _html(encoding: str, meta: str = "") -> bytes:
    return ARTICLE.format(meta=meta).encode(encoding)


def _extract(body: bytes, content_type: str | None = "text/html", source: str = "http://x/p"):
    return extract(Page(source=source, body=body, content_type=content_type))


def test_declared_charset_wins_over_a_wrong_meta():
    body = _html("iso-8859-1", '<meta charset="utf-8">')
    doc = _extract(body, "text/html; charset=ISO-8859-1")
    assert doc.title == "Größe ändern" and "schlägt die Übertragung" in doc.text


def test_meta_charset_when_nothing_is_declared():
    body = _html("cp1252", '<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">')
    assert "schlägt die Übertragung" in _extract(body, "text/html").text


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])  # both write a BOM
def test_bom_wins(encoding):
    body = _html(encoding)
    assert detect_encoding(body, "text/html; charset=iso-8859-1", html=True) in ("utf-8-sig", "utf-16")
    assert "schlägt die Übertragung" in _extract(body, "text/html; charset=iso-8859-1").text


def test_detection_without_any_declaration():
    russian = ("Перезапустите службу печати и очистите очередь заданий, затем проверьте, "
               "что принтер снова в сети и принимает задания.")
    body = f"<html><body><p>{russian}</p></body></html>".encode("cp1251")
    assert decode(body, None, html=True).count("принтер") == 1


def test_undecodable_bytes_are_replaced_not_fatal():
    body = "Caf\u00e9 au lait\n\nIt is served hot.".encode() + b"\xff\xfe\xfa broken tail"
    doc = _extract(body, "text/plain; charset=utf-8", "/kb/note.txt")
    assert doc.title == "Café au lait"
    assert "broken tail" in doc.text


def test_a_wrong_declared_charset_falls_through_to_one_that_decodes():
    body = "<html><body><p>naïve café ünïcödé text, long enough to be an article paragraph here.</p></body></html>"
    assert "naïve café" in decode(body.encode("utf-8"), "text/html; charset=utf-16", html=True)


def test_nul_bytes_are_binary_and_skipped():
    with pytest.raises(SkipSource) as err:
        _extract(b"\x7fELF\x02\x01\x01\x00\x00\x00 not text", None, "/kb/tool.txt")
    assert err.value.kind == "binary"


def test_a_page_mislabelled_as_utf8_is_detected():
    body = _html("cp1252", '<meta charset="utf-8">')  # German text in cp1252, labelled UTF-8
    doc = _extract(body, "text/html; charset=utf-8")
    assert "schlägt die Übertragung" in doc.text and "\ufffd" not in doc.text



@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=400), charset=st.sampled_from([None, "utf-8", "latin-1", "utf-16", "bogus"]),
       kind=st.sampled_from(["text/html", "text/plain", None]))
def test_any_bytes_decode_or_skip_never_crash(body, charset, kind):
    content_type = f"{kind}; charset={charset}" if kind and charset else kind
    text = decode(body, content_type, html=kind == "text/html")
    assert isinstance(text, str)
    try:
        extract(Page(source="http://x/p", body=body, content_type=content_type))
    except SkipSource:
        pass
