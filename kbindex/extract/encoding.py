"""Bytes to text as a Web browser decodes them (the WHATWG Encoding Standard,
https://encoding.spec.whatwg.org/): BOM, declared charset, <meta charset>, UTF-8, then detection
with Firefox's detector (chardetng)."""

from __future__ import annotations

import codecs
import re
from urllib.parse import urlsplit

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([\w.:-]+)""", re.IGNORECASE)
# What browsers do (WHATWG encoding spec): a page labelled Latin-1 or ASCII is read as windows-1252.
_ALIASES = {"iso-8859-1": "cp1252", "latin-1": "cp1252", "latin1": "cp1252", "ascii": "cp1252",
            "us-ascii": "cp1252", "iso8859-1": "cp1252", "iso-8859-8-i": "iso8859-8",
            "x-mac-cyrillic": "mac-cyrillic", "windows-874": "cp874"}


def _charset(content_type: str | None) -> str | None:
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type or "", re.IGNORECASE)
    return match.group(1) if match else None


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    label = _ALIASES.get(label.strip().lower(), label.strip().lower())
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def detect_encoding(body: bytes, content_type: str | None = None, html: bool = False,
                    source: str | None = None) -> str:
    """The encoding of a body: BOM, declared charset, <meta> charset, UTF-8, then detection.

    The BOM goes first, as in browsers, because a server's header is more often wrong than a
    BOM. A declared or meta charset that leaves more than a few bytes undecodable is passed
    over (the page was saved in another encoding than it claims), as is a UTF-16 label on
    bytes without NULs. Bytes that declare nothing and are not UTF-8 are read as a browser
    reads them (see `undeclared_encoding`); `source`, a URL, gives the detector its TLD hint.
    """
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name
    labelled = [_codec(_charset(content_type))]
    if html:
        match = _META_CHARSET.search(body[:4096])
        labelled.append(_codec(match.group(1).decode("ascii", "replace")) if match else None)
    for name in labelled:
        if name is None or (name.startswith(("utf-16", "utf-32")) and b"\x00" not in body):
            continue  # UTF-16/32 text without a BOM has NUL bytes in it; that label is wrong
        try:
            body.decode(name)
        except UnicodeDecodeError:
            # A few corrupt bytes do not make a label wrong (browsers replace them too);
            # many do: the page was saved in another encoding than it claims.
            if body.decode(name, "replace").count("\ufffd") > 3 + len(body) // 1000:
                continue
        return name
    try:
        body.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    return undeclared_encoding(body, _tld(source))


# Bytes read by the detectors: enough for any verdict, bounded for a large file.
_DETECT_BYTES = 65536
# An ISO 8859 reading needs at least this many byte values that it reads differently from
# windows-1252. chardetng proposes ISO-8859-2 or -4 for Western text that has none of the bytes
# 0x80-0x9F which would tell the two families apart: one accented letter (naïve, 0xEF) is ī in
# ISO-8859-4, a ± is ą in ISO-8859-2. The windows code pages it proposes (windows-1250 for
# Czech, windows-1251 for Russian) are right even on a few words, so they need no such margin.
_MIN_EVIDENCE = 2
_FALLBACK = "cp1252"


def undeclared_encoding(body: bytes, tld: str | None = None) -> str:
    """The encoding of bytes that declare none and are not UTF-8, as a Web browser decides it.

    The WHATWG Encoding Standard leaves this to the browser's detector, with windows-1252 as
    the fallback for Western locales. Firefox's detector, chardetng (through chardetng-py), is
    asked; its answer replaces windows-1252 when it is confident: a windows code page, KOI8 or
    a multi-byte encoding is taken as it is, an ISO 8859 reading only with `_MIN_EVIDENCE` byte
    values read differently from windows-1252 (see there). A statistical detector's first
    candidate (charset-normalizer's, used before) is one of many tied ones on short texts, and
    read Spanish and French help articles as windows-1250 (contraseńa, paramčtres).
    """
    from chardetng_py import EncodingDetector

    sample = body[:_DETECT_BYTES]
    detector = EncodingDetector()
    detector.feed(sample, last=len(body) <= _DETECT_BYTES)
    guess = _codec(detector.guess(tld=tld.encode("ascii") if tld else None, allow_utf8=False))
    if guess is None or guess == _FALLBACK:
        return _FALLBACK
    if guess.startswith("iso8859"):
        # Distinct byte values, not occurrences: a word repeated (a title that is also the
        # first line) is no more evidence than the word once.
        readings = [(bytes([b]).decode(guess, "replace"), bytes([b]).decode(_FALLBACK, "replace"))
                    for b in set(sample) if b >= 0x80]
        if sum(a != b for a, b in readings) < _MIN_EVIDENCE and all(b != "\ufffd" for _, b in readings):
            return _FALLBACK
    return guess


def _tld(source: str | None) -> str | None:
    """The top-level domain label of a URL, as chardetng takes it (ASCII letters, lower case)."""
    host = urlsplit(source).hostname if source and "://" in source else None
    label = host.rsplit(".", 1)[-1] if host and "." in host else ""
    return label if label.isascii() and label.isalpha() else None


def decode(body: bytes, content_type: str | None = None, html: bool = False,
           source: str | None = None) -> str:
    """Bytes to text in the encoding detect_encoding finds, as the WHATWG Encoding Standard's
    "decode" does: a BOM is removed, undecodable bytes become U+FFFD (never an error), and line
    ends become "\\n". `html` lets <meta charset> count; `source` (a URL) gives the detector its
    top-level-domain hint."""
    text = body.decode(detect_encoding(body, content_type, html, source), "replace")
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
