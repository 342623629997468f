"""One parse per page: the crawler's analysis of a page serves its listing test, its fingerprint and
its soft-404 test; the extractor's rules fallback reads the tree trafilatura was given."""

from __future__ import annotations

import sys

import lxml.html
import pytest

from kbindex.crawl import Crawler, CrawlOptions, CrawlResult
from kbindex.extract import extract
from kbindex.fetch import Fetcher
from kbindex.records import Page
from tests.sites import blog, docs


@pytest.fixture
def parses(monkeypatch):
    """Counts the HTML parses kbindex's own code asks lxml for (a library's own parses, such as
    trafilatura's readability comparison, are not ours to share)."""
    counts = {"kbindex": 0}
    real = lxml.html.document_fromstring

    def counted(*args, **kwargs):
        if sys._getframe(1).f_globals.get("__name__", "").startswith("kbindex"):
            counts["kbindex"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(lxml.html, "document_fromstring", counted)
    return counts


@pytest.mark.parametrize("site", [blog, docs], ids=["blog", "docs"])
def test_a_crawl_parses_each_page_it_reads_once(parses, site):
    server = site() if site is blog else site(slow_delay=0.1)
    with server, Fetcher(timeout=5, retries=0, delay=0) as fetcher:
        start = server.url("/" if site is blog else "/docs/index.html")
        result = CrawlResult(start)
        items = list(Crawler(fetcher, CrawlOptions()).crawl(start, result))
    articles = [i for i in items if isinstance(i, Page)]
    assert articles and result.fetched > len(articles)  # listings and articles were read
    # Each page read is parsed once: the soft-404 test of an article reads the main text kept
    # from the analysis instead of parsing the page again.
    assert parses["kbindex"] == result.fetched


def test_the_rules_fallback_reads_the_same_tree(parses):
    # trafilatura finds no article in a heading and a bare list: the rules take over, on the
    # tree already parsed.
    body = (b"<html><head><title>T</title></head><body><nav><a href='/'>Home</a></nav>"
            b"<div><h1>Fix</h1><ul><li>Step one</li><li>Step two</li></ul></div></body></html>")
    doc = extract(Page(source="https://kb.example/fix.html", body=body, content_type="text/html"))
    assert (doc.title, [s.text for s in doc.sections]) == ("Fix", ["- Step one\n- Step two"])
    assert parses["kbindex"] == 1
