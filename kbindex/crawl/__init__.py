"""Crawling a site: a page travels urls -> scope -> robots -> frontier -> gate (fetch) ->
analysis -> crawler, with sitemaps, feeds and soft 404s on the side.

- `urls`: the URL requested for a link, the name a page is stored under, its identity (w3lib).
- `scope`: which URLs a crawl may fetch (host, folder, --include/--exclude).
- `robots`: robots.txt rules per host (RFC 9309, Protego).
- `sitemaps`, `feeds`: the sitemaps.org protocol (streamed) and RSS/Atom entries.
- `frontier`: the queue, the seen set and the trap bounds (session tokens, calendars).
- `gate`: the one way a crawl reaches fetch.Fetcher, with its address policy decided once.
- `analysis`: links, canonical, meta robots, listing test and text fingerprint of an HTML page.
- `soft404`: "not found" pages sent with 200.
- `crawler`: the Crawler and the per-crawl state (CrawlRun) that ties these together.

The package's public names are re-exported here, so `from kbindex.crawl import Crawler` keeps
working wherever the code behind it lives.
"""

from kbindex.crawl.analysis import (
    ANALYSIS_VERSION,
    HTML_TYPES,
    PAGE_TYPES,
    Analysis,
    analyze,
    is_html,
    main_text,
    parse_page,
)
from kbindex.crawl.crawler import START_TYPES, Crawler, CrawlMemory, CrawlOptions, CrawlResult, CrawlRun
from kbindex.crawl.feeds import read_feed
from kbindex.crawl.frontier import TOKEN_VARIANTS, Frontier, Item, TokenWatch, trap_reason
from kbindex.crawl.scope import Scope, compile_patterns
from kbindex.crawl.sitemaps import (
    iter_sitemap,
    parse_lastmod,
    read_sitemap,
    read_sitemap_entries,
    sniff_xml,
)
from kbindex.crawl.soft404 import says_not_found
from kbindex.crawl.urls import page_name, request_url, url_identity, url_pattern

__all__ = [
    "ANALYSIS_VERSION", "HTML_TYPES", "PAGE_TYPES", "START_TYPES", "TOKEN_VARIANTS", "Analysis",
    "CrawlMemory", "CrawlOptions", "CrawlResult", "CrawlRun", "Crawler", "Frontier", "Item",
    "Scope", "TokenWatch", "analyze", "compile_patterns", "is_html", "iter_sitemap", "main_text",
    "page_name", "parse_lastmod", "parse_page", "read_feed", "read_sitemap",
    "read_sitemap_entries", "request_url", "says_not_found", "sniff_xml", "trap_reason",
    "url_identity", "url_pattern",
]
