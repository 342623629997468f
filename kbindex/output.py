"""Formatting results for people (aligned, coloured, linked) and machines (json, jsonl, csv)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import click

from kbindex.records import Hit

CSV_FIELDS = ("query", "rank", "score", "title", "section", "url", "source", "id", "text")


def use_color(stream_is_tty: bool) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    return stream_is_tty and not os.environ.get("NO_COLOR")


def hit_url(hit: Hit) -> str:
    """A link to the hit: the page URL, or a file:// URI, with the section anchor when known."""
    source = hit.source
    base = source if "://" in source else Path(source).as_uri() if source.startswith("/") else source
    return f"{base}#{hit.anchor}" if hit.anchor else base


def hit_dict(hit: Hit) -> dict:
    return {
        "rank": hit.rank,
        "score": hit.score,
        "id": hit.id,
        "source": hit.source,
        "url": hit_url(hit),
        "title": hit.title,
        "section": hit.section,
        "text": hit.text,
        "anchor": hit.anchor,
        "vector_rank": hit.vector_rank,
        "keyword_rank": hit.keyword_rank,
    }


def render(results: Sequence[tuple[str, Sequence[Hit]]], fmt: str, tty: bool) -> str:
    """All results in the chosen format, as one string ending in a newline."""
    if fmt == "jsonl":
        return "".join(json.dumps({"query": q, "hits": [hit_dict(h) for h in hits]}) + "\n" for q, hits in results)
    if fmt == "json":
        return json.dumps([{"query": q, "hits": [hit_dict(h) for h in hits]} for q, hits in results], indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for q, hits in results:
            for hit in hits:
                writer.writerow({"query": q, **hit_dict(hit)})
        return buffer.getvalue()
    return "".join(_table(q, hits, many=len(results) > 1, color=use_color(tty), links=tty) for q, hits in results)


def _table(query: str, hits: Sequence[Hit], many: bool, color: bool, links: bool) -> str:
    def style(text, **kw):
        return click.style(text, **kw) if color else text

    lines = []
    if many:
        lines.append(style(f"# {query}", bold=True))
    if not hits:
        lines.append("no hits")
    terms = _terms(query)
    for hit in hits:
        heading = hit.title + (f" › {hit.section}" if hit.section else "")
        lines.append(f"{style(f'{hit.rank:>2}.', dim=True)} {style(f'{hit.score:.3f}', fg='green')}  "
                     f"{style(heading, bold=True)}")
        url = hit_url(hit)
        shown = _link(url, url) if links else url
        # Which retrievers found the hit, and how high: why it is there (hybrid search).
        ranks = ", ".join(f"{name} #{rank}" for name, rank in
                          (("vector", hit.vector_rank), ("keyword", hit.keyword_rank)) if rank is not None)
        lines.append(f"    {style(shown, fg='blue') if color else shown}"
                     + (f"  {style(f'({ranks})', dim=True)}" if ranks else ""))
        lines.append(f"    {highlight(snippet(hit.text, terms), terms, color)}")
    return "\n".join(lines) + "\n\n"


def _link(url: str, text: str) -> str:
    """An OSC 8 terminal hyperlink (terminals without support show the text)."""
    return f"\033]8;;{url}\033\\{text}\033]8;;\033\\"


_WORD = re.compile(r"\w[\w.-]*\w|\w", re.UNICODE)
STOPWORDS = frozenset("a an and are as at be by do does for from how i in is it my of on or the to what when why with".split())


def _terms(query: str) -> list[str]:
    return [w for w in _WORD.findall(query.lower()) if w not in STOPWORDS]


def snippet(text: str, terms: Sequence[str], width: int = 240) -> str:
    """About `width` characters of text around the first query term found."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    lower = flat.lower()
    positions = [lower.find(t) for t in terms if lower.find(t) >= 0]
    start = max(0, min(positions) - width // 4) if positions else 0
    if start:
        start = flat.find(" ", start) + 1 or start
    piece = flat[start:start + width]
    return ("…" if start else "") + piece + ("…" if start + width < len(flat) else "")


def highlight(text: str, terms: Sequence[str], color: bool) -> str:
    """Query terms in bold yellow (whole-word prefix match, case-insensitive)."""
    if not color or not terms:
        return text
    pattern = re.compile(r"\b(" + "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)) + r")\w*",
                         re.IGNORECASE)
    return pattern.sub(lambda m: click.style(m.group(0), fg="yellow", bold=True), text)
