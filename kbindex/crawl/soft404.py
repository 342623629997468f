"""Soft 404s: "not found" pages sent with HTTP 200, told by what they say (in nine languages) or by
their likeness to the site's answer for a URL that cannot exist (a probe of the host)."""

from __future__ import annotations

import re
import secrets
from urllib.parse import unquote, urljoin, urlsplit

from kbindex.crawl.analysis import is_html, main_text
from kbindex.crawl.urls import url_identity
from kbindex.errors import SourceError
from kbindex.fetch import host_key
from kbindex.records import Page

# A soft 404 is a "not found" page sent with HTTP 200. Such a page is short: the longest found in
# the wild (a message, a search box, a few suggestions) stays well under this in main-text words.
SOFT_404_MAX_WORDS = 120
# Shorter pages may be the site's generic answer to unknown URLs, which says nothing about a
# missing page (a search box, "try these links"): those are compared with a probe of the host.
SOFT_404_PROBE_WORDS = 50
SOFT_404_SIMILARITY = 0.8  # Jaccard similarity of word sets with the host's probe answer
# What a "not found" page says, by language: its words for the page (or article) and its phrases
# for "not found" / "does not exist". A title part or heading that is one of these phrases, with or
# without the page word before or after it (Russian and Polish put it either side), is a "not
# found" message; so is the pair a few words apart in the opening of the text. A table rather than
# one hand-written phrase per language, so that word order, articles and punctuation vary freely.
_NOT_FOUND_WORDS = {
    "fr": (r"page|article|document",
           r"introuvable|(?:non|pas)\s+trouv[ée]e?|n['’]existe\s+(?:pas|plus)"),
    "de": (r"seite|artikel|dokument",
           r"(?:wurde\s+)?nicht\s+gefunden|existiert\s+nicht(?:\s+mehr)?|nicht\s+(?:mehr\s+)?vorhanden"),
    "es": (r"p[áa]gina|art[íi]culo|documento",
           r"no\s+(?:(?:se\s+)?(?:ha\s+)?(?:pudo\s+)?)?encontrad[ao]|no\s+se\s+encontr[óo]|no\s+existe"),
    "it": (r"pagina|articolo|documento",
           r"non\s+(?:è\s+stat[ao]\s+)?trovat[ao]|non\s+esiste(?:\s+più)?"),
    "nl": (r"pagina|artikel|document",
           r"(?:is\s+)?niet\s+gevonden|(?:kon\s+)?niet\s+(?:worden\s+)?gevonden|bestaat\s+niet(?:\s+meer)?"),
    "pt": (r"p[áa]gina|artigo|documento",
           r"n[ãa]o\s+(?:foi\s+)?encontrad[ao]|n[ãa]o\s+existe"),
    "pl": (r"stron[ayę]|artyku[łl]u?|dokument(?:u)?",
           r"nie\s+znaleziono|nie\s+(?:zosta[łl]a\s+|zosta[łl]\s+)?znalezion[aey]|nie\s+istnieje"),
    "ru": (r"страниц[аыу]|стать[яиюё]|документ(?:а)?",
           r"не\s+(?:была\s+|был\s+)?найден[аоы]?|не\s+существует"),
}
# Words that may stand around such a phrase in a title: an error number, an apology, the article
# or demonstrative before the page word ("la page", "diese Seite", "a página", "эта страница").
_NOT_FOUND_NOISE = (r"(?:404|error|erreur|fehler|errore|fout|erro|b[łl][ąa]d|ошибка|oops|oups|hoppla|ups|sorry|"
                    r"d[ée]sol[ée]|lo\s+sentimos|spiacenti|helaas|przepraszamy|извините|"
                    r"la|le|cette|die|diese|de|deze|het|esta|questa|a|esta|ta|эта|данная)")
_FOREIGN_TITLE = re.compile(
    r"^\W*(?:" + _NOT_FOUND_NOISE + r"\W+)*(?:"
    + "|".join(rf"(?:(?:{page})\W+(?:(?:{_NOT_FOUND_NOISE})\W+)?)?(?:{gone})(?:\W+(?:{page}))?"
               for page, gone in _NOT_FOUND_WORDS.values())
    + r")(?:\W+" + _NOT_FOUND_NOISE + r")*\W*$",
    re.IGNORECASE,
)
_FOREIGN_TEXT = "|".join(rf"\b(?:{page})\b(?:\W+\w+){{0,6}}?\W+(?:{gone})\b|\b(?:{gone})\W+(?:{page})\b"
                         for page, gone in _NOT_FOUND_WORDS.values())
# ... in its title or first heading (as the whole of it, or of one part of a "Page not found |
# Site" title) ...
_NOT_FOUND_TITLE = re.compile(
    r"^(?=.*(?:404|found|exist|missing|gone|available))"
    r"\W*(?:(?:oops|sorry|error)\W+)*(?:(?:error\W*)?404\b\W*(?:error\W*)?)?"
    r"(?:(?:the\s+|this\s+|that\s+)?(?:page|article|document|content|file|url|resource)\s+)?"
    r"(?:(?:was\s+|could\s+|can\s*)?not(?:\s+be)?\s+found|can[’']?t\s+be\s+found|(?:does\s+not|doesn'?t|doesn’t|no\s+longer)"
    r"\s+exists?|is\s+(?:missing|gone)|not\s+available|unavailable)?\W*$",
    re.IGNORECASE,
)
# ... or in the opening of its main text.
_NOT_FOUND_TEXT = re.compile(
    r"\b(?:page|article|document|content|resource|url)\s+(?:you\s+(?:are|were|'re|’re)\s+looking\s+for|"
    r"you\s+requested|requested)\s+(?:(?:does|could|can|was|is|has)\s*(?:not|n'?t|n’t)|cannot|"
    r"no\s+longer|may\s+have\s+been)"
    r"|\b(?:can\s*not|can'?t|can’t|could\s*not|couldn'?t|couldn’t|unable\s+to)\s+(?:find|locate)\s+"
    r"(?:the|that|this|your|any)\s+(?:page|article|document|content)"
    r"|\b(?:page|article|document)\s+(?:(?:was\s+|could\s+|can\s*)?not(?:\s+be)?|can[’']?t\s+be)\s+found"
    r"|\b(?:this|the)\s+(?:page|article|document)\s+(?:does\s+not|doesn'?t|doesn’t|no\s+longer)\s+exists?"
    r"|\b404\W+(?:page\s+)?not\s+found|" + _FOREIGN_TEXT,
    re.IGNORECASE,
)
# A quotation in an article's opening is the error message the article is about ("Word says “The
# document could not be found”"), never the page speaking of itself.
_QUOTED = re.compile(r"“[^”]{0,200}”|„[^“”]{0,200}[“”]|«[^»]{0,200}»|\"[^\"]{0,200}\"|'[^']{0,200}'(?!\w)")
_TITLE_PARTS = re.compile(r"\s+[|–—:·-]\s+|\s*[|–—·]\s*")
SOFT_404_OPENING = 200  # characters of main text where a "not found" message is looked for
_WORD = re.compile(r"\w+")


def says_not_found(title: str, heading: str, text: str) -> bool:
    """Whether a page's title or first heading is a "not found" message, or its main text opens
    with one (see Soft404Check.reason: only short pages are asked)."""
    parts = [p.strip() for p in _TITLE_PARTS.split(title) if p.strip()] + [heading.strip()]
    if any(p and _WORD.search(p) and (_NOT_FOUND_TITLE.match(p) or _FOREIGN_TITLE.match(p)) for p in parts):
        return True
    return bool(_NOT_FOUND_TEXT.search(_QUOTED.sub(" ", text[:SOFT_404_OPENING])))


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _url_words(url: str) -> frozenset[str]:
    """Words of a URL's path: a "not found" page may repeat the address it was asked for."""
    return frozenset(_words(unquote(urlsplit(url).path)))



class Soft404Check:
    """The soft-404 test of one crawl, with its probes (one per host, made when a page first
    needs it). `gate` is the crawl's fetch gate (crawl.gate.Gate), `allowed` its robots.txt test."""

    def __init__(self, gate, allowed):
        self.gate = gate
        self.allowed = allowed
        self.probes: dict[str, tuple[str, frozenset[str]] | None] = {}  # host -> its answer

    def reason(self, page: Page, main: tuple[str, str, str] | None = None) -> str | None:
        """Why a 200 page is a "not found" page in disguise (a soft 404), or None.

        Only short pages can be (SOFT_404_MAX_WORDS of main text): one whose title, first
        heading or opening says the page does not exist, or, shorter than SOFT_404_PROBE_WORDS,
        whose text is the text the site returns for a URL that cannot exist (probed once per
        host and crawl, when such a page first needs it; the probe asks for a random name in the
        page's folder). `main` is the page's (title, first heading, main text) where the caller
        has it (Analysis.main), so that the page is not parsed again.
        """
        title, heading, text = main if main is not None else main_text(page)
        words = _words(text)
        if len(words) > SOFT_404_MAX_WORDS:
            return None
        if says_not_found(title, heading, text):
            return "the page says it does not exist"
        if len(words) >= SOFT_404_PROBE_WORDS:
            return None
        url = page.url or page.source
        probe = self.probe(url)
        if probe is None:
            return None
        final, probe_words = probe
        if url_identity(url) == final:
            return None  # the page the site sends unknown URLs to is itself no soft 404
        mine = set(words) - _url_words(url)
        if mine and len(mine & probe_words) / len(mine | probe_words) >= SOFT_404_SIMILARITY:
            return "the same text as the site's answer to a URL that does not exist"
        return None

    def probe(self, url: str) -> tuple[str, frozenset[str]] | None:
        """(final URL identity, main-text words) of the host's answer to a random URL beside
        `url` when that is a 200 HTML page; None when the host answers such URLs with an error."""
        host = host_key(url)
        if host in self.probes:
            return self.probes[host]
        self.probes[host] = None
        probe_url = urljoin(url, f"kbindex-probe-{secrets.token_hex(8)}")
        if not self.allowed(probe_url):
            return None
        try:
            page = self.gate.get(probe_url)
        except SourceError:
            return None  # a real 404 (or no answer): nothing to compare with
        if page.status != 200 or not is_html(page):
            return None
        _, _, text = main_text(page)
        found = (url_identity(page.url or probe_url) or probe_url,
                 frozenset(_words(text)) - _url_words(probe_url))
        self.probes[host] = found
        return found
