"""Unicode normalization of the text that is indexed and of the queries that search it. Pure."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace

from kbindex.records import Document

# Unicode's Default_Ignorable_Code_Point characters (DerivedCoreProperties.txt, Unicode 15.1):
# invisible unless a renderer does something special with them. Written out because Python's
# unicodedata does not expose the property. They split or hide words: "certi\u00adficate" with a
# soft hyphen, "re\u200bset" with a zero-width space, a word joined by ZWNJ or ZWJ, a BOM in mid-text,
# bidi and variation marks.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)


def normalize_text(text: str) -> str:
    """NFKC (Unicode Standard Annex #15) with the default-ignorable characters removed.

    Compatibility forms become their plain letters: the ligatures that PDF text layers hold
    ("certiﬁcate" -> "certificate"), full-width and half-width forms ("ｅｒｒｏｒ" -> "error"),
    no-break and other spaces (-> " "). Soft hyphens, zero-width spaces and joiners, bidi marks
    and variation selectors are removed. Idempotent; line breaks and word order are kept.
    """
    if text.isascii():
        return text  # nothing to do, and by far the most common case
    # Removed before NFKC so that letters around a removed mark compose, and after, because
    # NFKC maps a few compatibility characters (U+3164 HANGUL FILLER) to ignorable ones.
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", _INVISIBLE.sub("", text)))


def normalize_document(doc: Document) -> Document:
    """The document with its title, headings and text normalized (see normalize_text)."""
    sections = tuple(
        replace(s, heading_path=tuple(normalize_text(h) for h in s.heading_path),
                text=normalize_text(s.text))
        for s in doc.sections
    )
    return replace(doc, title=normalize_text(doc.title), sections=sections)
