"""Page chrome: the one set of rules for what on a page is not its content (navigation, headers and
footers, sidebars, comment threads, share bars, cookie banners). The extractor drops it where
trafilatura finds no article; the crawler drops it before its listing-page test and its text
fingerprint (crawl.analysis), so both read the same main content."""

from __future__ import annotations

import re

# Elements that are never article text.
NEVER_TEXT = (
    "script", "style", "template", "noscript", "iframe", "svg", "canvas", "button", "input",
    "select", "textarea", "object", "embed", "dialog", "head",
)
# Elements that are page chrome on most sites.
CHROME_TAGS = ("nav", "header", "footer", "aside", "form", "menu")
# ARIA landmark roles of page chrome (WAI-ARIA 1.2, landmark roles).
CHROME_ROLES = ("navigation", "banner", "contentinfo", "complementary", "search")
# id/class words of page chrome: navigation bars, site headers and footers, comment threads,
# "related/popular posts" widgets, share bars. One set for the extractor and the crawler: the union
# of the two sets they had, measured on the 181 pages of the extraction benchmark (no extracted
# document changed; 26 pages read as listings, as before; without "header" and "footer", 28).
CHROME_PATTERN = re.compile(
    r"(^|[-_\s])(nav|navbar|header|footer|comments?|comment-list|respond|disqus|related|popular|recent-posts|"
    r"sidebar|widget|share|sharing|social|newsletter|subscribe|breadcrumbs?|cookie|banner|advert|"
    r"ads|promo|pagination|pager|toc-sidebar|menu)($|[-_\s])",
    re.IGNORECASE,
)
# id/class words of boxes that hold media and their captions, not article text.
MEDIA_PATTERN = re.compile(r"gallery|carousel|slider|slideshow|lightbox", re.IGNORECASE)
# Containers that hold the content itself, whatever their class names say.
CONTENT_TAGS = ("html", "body", "main", "article")


def strip_tags(tree, tags: tuple[str, ...]) -> None:
    """Remove the elements with these tags, and comments, from an lxml tree in place; the text
    that follows each (its tail) stays."""
    from lxml import etree

    etree.strip_elements(tree, etree.Comment, *tags, with_tail=False)


def is_chrome(element) -> bool:
    """Whether an element is page chrome by its ARIA role or its class and id words (never one
    of CONTENT_TAGS)."""
    if not isinstance(element.tag, str) or element.tag in CONTENT_TAGS:
        return False
    words = f"{element.get('class') or ''} {element.get('id') or ''}"
    role = (element.get("role") or "").lower()
    return role in CHROME_ROLES or bool(words.strip() and CHROME_PATTERN.search(words))


def drop_chrome(tree) -> None:
    """Remove page chrome from an lxml tree in place: NEVER_TEXT and CHROME_TAGS elements, then
    elements that is_chrome says are (except inside <pre> and <code>, where class names are
    syntax highlighting)."""
    strip_tags(tree, NEVER_TEXT + CHROME_TAGS)
    for element in list(tree.iter()):
        if is_chrome(element) and element.getparent() is not None \
                and not any(a.tag in ("pre", "code") for a in element.iterancestors()):
            element.drop_tree()


def boxed(element) -> bool:
    """True when the element or an ancestor has a class or id that names page chrome or media."""
    while element is not None and element.tag not in ("body", "html"):
        words = f"{element.get('class') or ''} {element.get('id') or ''}"
        if words.strip() and (CHROME_PATTERN.search(words) or MEDIA_PATTERN.search(words)):
            return True
        element = element.getparent()
    return False
