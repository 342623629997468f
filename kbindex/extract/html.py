"""HTML pages: trafilatura decides which text is the article, our own walk over the same tree
(extract.blocks) keeps the structure it flattens; metadata from meta tags, JSON-LD and htmldate."""

from __future__ import annotations

import re
from collections import Counter

from kbindex.errors import SkipSource
from kbindex.extract.blocks import Walker, list_lines, make_sections, table_text, title_from_source
from kbindex.extract.chrome import NEVER_TEXT, boxed, drop_chrome, strip_tags
from kbindex.extract.encoding import decode
from kbindex.records import Document


def extract_html(body: bytes | str, source: str, content_type: str | None = None) -> Document:
    """Article text of an HTML page, with its headings as sections and its metadata.

    trafilatura decides which text is the article; our own walk over the same tree keeps the
    structure trafilatura flattens (heading ids for deep links, code verbatim, tables as rows,
    definition lists). Where trafilatura finds no article, rules on tags and class names do.
    """
    markup = decode(body, content_type, html=True, source=source) if isinstance(body, bytes) else body
    tree = parse_html(markup)
    if tree is None:
        raise SkipSource(source, "no text to index (empty document)", kind="empty")
    metadata = html_metadata(tree, source)
    items = _items_by_trafilatura(tree, source, metadata.get("title", ""))
    if items is None:
        # The same tree, not a second parse: trafilatura and htmldate work on copies, and what
        # _items_by_trafilatura may have stripped already is a part of what the rules strip.
        items = items_by_rules(tree)
    title = _pick_title(items) or metadata.get("title") or title_from_source(source)
    metadata.pop("title", None)
    kept = [rendered(i) for i in items if i[0] == "heading" or i[3]]
    sections = make_sections([i for i in kept if i[0] == "heading" or i[1]], title)
    return Document(source=source, title=title, sections=sections, metadata=metadata)


def parse_html(markup: str):
    """The lxml tree of decoded HTML, parsed as trafilatura parses (no comments or processing
    instructions); None when there is nothing to parse or lxml refuses it."""
    import lxml.html
    from lxml.etree import ParserError

    # lxml refuses a str that still carries an XML encoding declaration (XHTML, DocBook output).
    markup = _XML_DECLARATION.sub("", markup, count=1)
    if not markup.strip():
        return None
    global _PARSER
    if _PARSER is None:
        # The settings trafilatura parses with: it expects no comment nodes in the tree
        # (text after a comment inside a paragraph would be lost otherwise).
        _PARSER = lxml.html.HTMLParser(collect_ids=False, default_doctype=False,
                                       remove_comments=True, remove_pis=True)
    try:
        return lxml.html.document_fromstring(markup, parser=_PARSER)
    except (ParserError, ValueError):
        return None


_PARSER = None
_XML_DECLARATION = re.compile(r"\A\s*<\?xml[^>]*>")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MODIFIED_META = ("article:modified_time", "og:updated_time", "last-modified", "dcterms.modified",
                  "dc.date.modified", "datemodified", "modified")
_JSON_MODIFIED = re.compile(r'"dateModified"\s*:\s*"([^"]+)"')


def html_metadata(tree, source: str) -> dict[str, str]:
    """title, description, author, published, modified, language and canonical, where present.

    Meta tags and JSON-LD are read by trafilatura's metadata functions and the published date
    by htmldate (fast settings); the modified date comes from meta tags and JSON-LD only, as a
    second htmldate pass costs more than the rest of the metadata.
    """
    from htmldate import find_date
    from trafilatura.metadata import examine_meta, extract_meta_json

    found = extract_meta_json(tree, examine_meta(tree))
    if not found.title:
        found.title = tree.findtext(".//title")
    if not found.url:
        link = tree.find(".//link[@rel='canonical']")
        found.url = link.get("href") if link is not None else None
    meta: dict[str, str] = {}
    for key, value in (("title", found.title), ("description", found.description),
                       ("author", found.author), ("canonical", found.url)):
        if value and value.strip():
            meta[key] = " ".join(value.split())
    url = source if "://" in source else None  # a date in the URL is the cheapest clue
    published = find_date(tree, url=url, extensive_search=False, original_date=True)
    modified = _meta_modified(tree)
    if published:
        meta["published"] = published
    if modified and modified != published:
        meta["modified"] = modified
    language = tree.get("lang") or tree.get("xml:lang") or found.language
    if not language:
        for node in tree.iterfind(".//meta[@http-equiv]"):
            if node.get("http-equiv", "").lower() == "content-language" and node.get("content"):
                language = node.get("content")
    if language and language.strip():
        meta["language"] = language.strip().split(",")[0].replace("_", "-")
    return meta


def _meta_modified(tree) -> str | None:
    for node in tree.iterfind(".//meta"):
        key = (node.get("property") or node.get("name") or node.get("itemprop") or "").lower()
        if key in _MODIFIED_META or (node.get("http-equiv") or "").lower() == "last-modified":
            match = _ISO_DATE.search(node.get("content") or "")
            if match:
                return match.group(0)
    for script in tree.iterfind(".//script[@type='application/ld+json']"):
        match = _JSON_MODIFIED.search(script.text or "")
        if match and _ISO_DATE.match(match.group(1)):
            return match.group(1)[:10]
    return None


def _items_by_trafilatura(tree, source: str, page_title: str = "") -> list[tuple] | None:
    """Walk the whole page, keeping the text blocks that trafilatura counts as the article."""
    from trafilatura import bare_extraction

    url = source if "://" in source else None
    # trafilatura works on its own copy of the tree. Comments (reader comments) are left out,
    # tables kept; favor_precision trims link lists and teasers at the article's edges.
    result = bare_extraction(tree, url=url, include_comments=False, include_tables=True,
                             favor_precision=True, with_metadata=False)
    article = getattr(result, "text", None) if result is not None else None
    if not article or not article.strip():
        return None
    strip_tags(tree, NEVER_TEXT + ("nav", "aside", "footer"))
    body = tree.find("body")
    walker = Walker()
    items = walker.run(body if body is not None else tree)
    selected = _select(items, article, page_title, walker.sources)
    return selected if any(i[0] == "text" and i[3] for i in selected) else None


def items_by_rules(tree) -> list[tuple]:
    """Without trafilatura's verdict: drop page chrome by tag, role and class name; keep the rest."""
    drop_chrome(tree)
    return Walker().run(_main_root(tree))


def _main_root(tree):
    articles = tree.findall(".//article")
    if articles:
        return max(articles, key=lambda a: len(a.text_content()))
    for candidate in (tree.find(".//main"), tree.find(".//*[@role='main']")):
        if candidate is not None:
            return candidate
    body = tree.find("body")
    return body if body is not None else tree


def _select(items: list[tuple], article: str, page_title: str = "",
            sources: dict[int, object] | None = None) -> list[tuple]:
    """Keep the text blocks whose word 4-grams are mostly in trafilatura's article text.

    A short block (under four words) is kept when it is a whole line of that text. Structured
    blocks that trafilatura pruned inside the article are restored (see `_restore_blocks`).
    Headings before the first kept block that trafilatura left out (kickers, standfirsts) go,
    unless they are the page's title. `sources`: the element each structured block came from.
    """
    title_words = " ".join(_WORD.findall(page_title.lower()))
    words = _WORD.findall(article.lower())
    counts = Counter(_fourgrams(words))
    grams = set(counts)
    lines = {" ".join(_WORD.findall(line.lower())) for line in article.split("\n")}
    # A 4-gram vouches for as many blocks as trafilatura's text has copies of it, so an article
    # that a page carries twice (a hidden or teaser copy) is kept once.
    claimed: Counter = Counter()
    spent: set = set()  # 4-grams claimed as often as trafilatura's text has them
    marks: list = []
    for item in items:
        if item[0] != "text":
            marks.append(None)
            continue
        block = _words(item)
        if len(block) >= 4:
            own = set(_fourgrams(block))
            hits = own & grams
            keep = len(hits) - len(hits & spent) >= 0.5 * len(own)
            if keep:
                claimed.update(hits)
                spent.update(g for g in hits if claimed[g] >= counts[g])
        else:
            keep = bool(block) and " ".join(block) in lines
        marks.append(keep)
    texts = [n for n, m in enumerate(marks) if m is not None]
    _restore_blocks(items, marks, texts, sources or {})
    _restore_sections(items, marks)
    first = next((n for n in texts if marks[n]), len(items))
    selected = []
    for n, (item, mark) in enumerate(zip(items, marks, strict=True)):
        if mark is not None:
            selected.append((item[0], item[1], item[2], mark))
        else:
            heading = " ".join(_WORD.findall(item[2].lower()))
            if n > first or item[1] == 1 or heading in lines or (heading and heading in title_words):
                selected.append(item)
    return selected


# Block kinds that trafilatura prunes from inside an article: code in highlighted markup
# (MkDocs), tables, lists and definition lists directly under <body> or in containers it does
# not score (case 08-lists). Paragraphs are not among them: the ones it drops between kept
# paragraphs are mostly captions, bylines and "read more" teasers (restoring them cost 0.011 F1
# on the extraction benchmark).
RESTORED_BLOCKS = ("pre", "table", "list", "dl")


def _restore_blocks(items: list[tuple], marks: list, texts: list[int], sources: dict[int, object]) -> None:
    """Keep the structured blocks trafilatura dropped that lie inside the article.

    Inside means: between two kept blocks (no dropped paragraph in the way), or right after a
    kept block, when that block announces it with a colon ("References:", "in order of
    importance:") or it is a list. A block in a box whose class or id names page chrome or
    media (share bar, related posts, gallery) stays out, and so does a list that is mostly
    link text unless it is announced: between paragraphs that is a "related articles" list.
    A definition list right after the article without an announcement is its metadata
    ("Author: ... Publish date: ...") on news pages, and stays out.
    """
    kept_before, waiting = False, []  # dropped blocks since the last block that decides
    for n in texts:
        kind = items[n][2]
        if not marks[n] and kind in RESTORED_BLOCKS and not boxed(sources.get(n)) \
                and not (kind == "list" and _link_list(items[n][1])):
            waiting.append(n)
            continue
        if marks[n] and kept_before:
            for k in waiting:
                marks[k] = True
        kept_before, waiting = marks[n], []
    for n, m in zip(texts, texts[1:]):
        if not marks[n] or marks[m] or m != n + 1 or items[m][2] not in RESTORED_BLOCKS \
                or boxed(sources.get(m)):
            continue
        lead = items[n][1]
        announced = isinstance(lead, str) and lead.rstrip().endswith(":")
        if announced or (items[m][2] == "list" and not _link_list(items[m][1])):
            marks[m] = True


def _link_list(lst) -> bool:
    """A list whose words are mostly link text (or one with no words)."""
    total = len("".join(lst.itertext()).split())
    linked = sum(len("".join(a.itertext()).split()) for a in lst.iter("a"))
    return total == 0 or linked >= 0.5 * total


def _restore_sections(items: list[tuple], marks: list) -> None:
    """Keep whole sections trafilatura dropped between kept ones, where headings have anchors.

    trafilatura prunes elements whose id or class looks like chrome ("menu", "navigation",
    "comments"); documentation generators derive section ids from heading text, so a section
    titled "Menus" vanishes with its content. A run of sections with no kept text, each headed
    by an anchored heading, that lies between kept text is part of the article. Headings
    without anchors (promos and teasers on news pages rarely have them) are left alone.
    """
    segments: list[tuple[int, list[int]]] = []  # (heading index, text indexes under it)
    for n, item in enumerate(items):
        if item[0] == "heading":
            segments.append((n, []))
        elif segments:
            segments[-1][1].append(n)
    kept = [any(marks[k] for k in texts) for _, texts in segments]
    run: list[int] = []
    seen_kept = any(marks[n] for n in range(segments[0][0])) if segments else False
    for index, (heading, texts) in enumerate(segments):
        if kept[index]:
            if seen_kept:
                for k in run:
                    for n in segments[k][1]:
                        marks[n] = True
            seen_kept, run = True, []
        elif items[heading][3] and texts:
            run.append(index)
        elif texts or not items[heading][3]:
            run = []


_WORD = re.compile(r"\w+")


def _fourgrams(words: list[str]):
    return zip(words, words[1:], words[2:], words[3:], strict=False)


def rendered(item: tuple) -> tuple:
    """A text item with its list or table (kept as an element until now) written out as text."""
    if item[0] != "text" or isinstance(item[1], str):
        return item
    text = "\n".join(list_lines(item[1])) if item[2] == "list" else table_text(item[1])
    return (item[0], text, item[2], item[3])


def _words(item: tuple) -> list[str]:
    text = _MARKER.sub("", item[1]) if isinstance(item[1], str) else " ".join(item[1].itertext())
    return _WORD.findall(text.lower())


_MARKER = re.compile(r"\A(?:\d+\.|-) ")  # a list marker the walker put in front of a step


def _pick_title(items: list[tuple]) -> str:
    """The h1 nearest before the first kept block, else the first h1 after it."""
    first = next((n for n, i in enumerate(items) if i[0] == "text" and i[3]), len(items))
    h1s = [(n, i[2]) for n, i in enumerate(items) if i[0] == "heading" and i[1] == 1]
    before = [t for n, t in h1s if n < first]
    return before[-1] if before else (h1s[0][1] if h1s else "")
