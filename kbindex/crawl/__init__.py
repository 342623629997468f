"""Crawling a site: URL identity, scope, robots.txt, sitemaps, feeds, the frontier, the crawler.

The package's public names are re-exported here, so `from kbindex.crawl import Crawler` keeps
working wherever the code behind it lives.
"""

from kbindex.crawl.crawler import (
    ANALYSIS_VERSION,
    HTML_TYPES,
    PAGE_TYPES,
    START_TYPES,
    TOKEN_VARIANTS,
    Analysis,
    CrawlMemory,
    CrawlOptions,
    Crawler,
    CrawlResult,
    Scope,
    TokenWatch,
    analyze,
    compile_patterns,
    is_html,
    iter_sitemap,
    main_text,
    page_name,
    parse_lastmod,
    read_feed,
    read_sitemap,
    read_sitemap_entries,
    request_url,
    says_not_found,
    sniff_xml,
    trap_reason,
    url_identity,
    url_pattern,
)

__all__ = [
    "ANALYSIS_VERSION", "HTML_TYPES", "PAGE_TYPES", "START_TYPES", "TOKEN_VARIANTS", "Analysis",
    "CrawlMemory", "CrawlOptions", "CrawlResult", "Crawler", "Scope", "TokenWatch", "analyze",
    "compile_patterns", "is_html", "iter_sitemap", "main_text", "page_name", "parse_lastmod",
    "read_feed", "read_sitemap", "read_sitemap_entries", "request_url", "says_not_found",
    "sniff_xml", "trap_reason", "url_identity", "url_pattern",
]
