"""Feeds (RSS 0.9x/2.0, RSS 1.0/RDF and Atom, RFC 4287): the pages their entries link to, read
with feedparser."""

from __future__ import annotations

import io
from urllib.parse import urljoin


def read_feed(body: bytes, base: str) -> list[str] | None:
    """The linked pages of an RSS or Atom feed's entries, as absolute URLs joined to `base` (the
    feed's URL), in feed order; None if the body is not a feed.

    An entry's <link> (RSS 2.0) or its first link with an href (Atom, RFC 4287 4.2.7) is taken.
    feedparser reads the body from a stream, never as a URL: it fetches nothing.
    """
    import feedparser

    # A stream, never bytes or str: feedparser treats a string as a URL or a file name to open.
    parsed = feedparser.parse(io.BytesIO(body), sanitize_html=False, resolve_relative_uris=False)
    if not parsed.get("version") and not parsed.entries:
        return None
    links = []
    for entry in parsed.entries:
        href = entry.get("link")
        if not href:
            href = next((x.get("href") for x in entry.get("links", []) if x.get("href")), None)
        if href:
            links.append(urljoin(base, href.strip()))
    return links

