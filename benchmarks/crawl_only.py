"""Crawl-only time of Python's HTML manual (`bench_crawl`'s first phase: fetch + link parsing,
concurrency 4, --delay 0), for comparing two checkouts run alternately on the same machine.

Usage, from a checkout's root: python benchmarks/crawl_only.py LABEL [HTML_DIR]
(HTML_DIR: the manual unpacked by bench_crawl, default .bench/python3.11-doc/.../html).
Prints one line: pages fetched, seconds, pages/s, URLs discovered.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))  # the checkout being measured, not an installed kbindex

from benchmarks.bench_crawl import HTML, serve  # noqa: E402
from kbindex.crawl import Crawler, CrawlOptions, CrawlResult  # noqa: E402
from kbindex.fetch import Fetcher  # noqa: E402


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else "this checkout"
    html = Path(sys.argv[2]) if len(sys.argv) > 2 else HTML
    server, base = serve(html)
    try:
        start = base + "/index.html"
        with Fetcher(delay=0) as fetcher:
            began = time.perf_counter()
            result = CrawlResult(start)
            for _ in Crawler(fetcher, CrawlOptions()).crawl(start, result):
                pass
            seconds = time.perf_counter() - began
    finally:
        server.terminate()
        server.wait()
    print(f"{label}: fetched {result.fetched} pages in {seconds:.2f} s, "
          f"{result.fetched / seconds:.1f} pages/s, discovered {result.discovered}")


if __name__ == "__main__":
    main()
