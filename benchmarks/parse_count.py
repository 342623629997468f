"""HTML parses per page (`python -m benchmarks.parse_count [--time]`, from the repository root).

A crawl of the fixture blog and docs sites, then extraction of each page the crawl hands on (what
`kbindex index` does). Every lxml.html parse entry is counted once
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


def main() -> None:
    global phase
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


def time_analysis() -> None:
    """The crawler's reading of the 181 pages of the extraction benchmark (../shared/data): its
    analysis, and the main text the soft-404 test reads for an article (kept from the analysis
    where the code keeps it, else parsed again), best of 3."""
    import glob
    import gzip
    import time

    from kbindex.crawl import analyze, main_text

    pages = []
    for f in sorted(glob.glob("/work/shared/data/article-extraction/html/*.html.gz")):
        name = "https://example.org/" + f.rsplit("/", 1)[-1][:-3]
        pages.append(Page(source=name, body=gzip.decompress(open(f, "rb").read()), content_type="text/html", url=name))
    best = None
    for _ in range(3):
        t = time.perf_counter()
        for p in pages:
            a = analyze(p, p.url)
            if not a.listing:  # an article: the soft-404 test reads its main text
                getattr(a, "main", None) or main_text(p)
        d = time.perf_counter() - t
        best = d if best is None else min(best, d)
    print(f"{len(pages)} pages: analysis + soft-404 main text, best of 3: {best:.2f} s ({best / len(pages) * 1000:.1f} ms/page)")


if __name__ == "__main__":
    main()
    if "--time" in sys.argv:
        time_analysis()
