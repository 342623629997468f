"""`python -m benchmarks.parse_count`: Count HTML parses per page: a crawl of the fixture blog and docs sites, then extraction of each
page the crawl hands on (what `kbindex index` does). Every lxml.html parse entry is counted once
(a nested fromstring -> document_fromstring call is one parse), split by who asked: kbindex's
own code, or a library inside it (trafilatura's readability comparison re-parses a serialized
copy of its tree; that is trafilatura's algorithm, not ours to share)."""

import sys
import threading
from collections import Counter

import lxml.html

counts = Counter()
local = threading.local()
for name in ("document_fromstring", "fromstring", "fragment_fromstring", "fragments_fromstring"):
    real = getattr(lxml.html, name)

    def counted(*a, _real=real, **k):
        if getattr(local, "inside", False):
            return _real(*a, **k)
        caller = sys._getframe(1).f_globals.get("__name__", "")
        counts[(phase, "kbindex" if caller.startswith("kbindex") else "library")] += 1
        local.inside = True
        try:
            return _real(*a, **k)
        finally:
            local.inside = False

    setattr(lxml.html, name, counted)

from kbindex.crawl import Crawler, CrawlOptions, CrawlResult  # noqa: E402
from kbindex.extract import extract_or_error  # noqa: E402
from kbindex.fetch import Fetcher  # noqa: E402
from kbindex.records import Page  # noqa: E402
from tests.sites import blog, docs  # noqa: E402

phase = "crawl"
fetched = articles = 0
for site, path in ((blog(), "/"), (docs(slow_delay=0.1), "/docs/index.html")):
    with site, Fetcher(timeout=5, retries=0, delay=0) as fetcher:
        result = CrawlResult(site.url(path))
        phase = "crawl"
        pages = [p for p in Crawler(fetcher, CrawlOptions()).crawl(site.url(path), result) if isinstance(p, Page)]
        fetched += result.fetched
        phase = "extract"
        for page in pages:
            if page.body:
                articles += 1
                extract_or_error(page)
print(f"pages fetched {fetched}, articles extracted {articles}")
for key in sorted(counts):
    print(f"  {key[0]:8} by {key[1]:8} {counts[key]:3}")
own = counts["crawl", "kbindex"] + counts["extract", "kbindex"]
print(f"kbindex's own parses: {own}, {own / fetched:.2f} per fetched page; "
      f"crawl {counts['crawl', 'kbindex'] / fetched:.2f} per fetched page, "
      f"extract {counts['extract', 'kbindex'] / articles:.2f} per article")
