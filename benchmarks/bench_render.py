"""Rendered pages per second and the browser's peak memory: a 50-page script-built help centre
(every page an app shell that fetches its article from a JSON endpoint) crawled with --render
auto, beside the same articles served as plain HTML, in one run.

    python -m benchmarks.run --only render       (or: python -m benchmarks.bench_render [PAGES])

The browser's memory is the summed resident size of Chromium and all its processes (renderers,
GPU, utility), sampled every 50 ms (benchmarks.measure.tree_rss_kib).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.measure import tree_rss_kib  # noqa: E402
from kbindex.crawl import Crawler, CrawlOptions, CrawlResult  # noqa: E402
from kbindex.fetch import Fetcher  # noqa: E402
from kbindex.records import Page  # noqa: E402
from kbindex.render import Renderer, browser_available  # noqa: E402
from tests.render_site import site  # noqa: E402

NAME = "render"
PAGES = 50


def _crawl(fetcher: Fetcher, base: str, render: str, renderer: Renderer | None) -> tuple[int, float]:
    options = CrawlOptions(render=render, renderer=renderer, concurrency=4)
    began = time.perf_counter()
    pages = sum(isinstance(item, Page) for item in
                Crawler(fetcher, options).crawl(base + "/kb/", CrawlResult(base + "/kb/")))
    return pages, time.perf_counter() - began


def run(n: int = PAGES):
    if not browser_available():
        yield "skipped: no chromium (make install-browser) or no playwright"
        return
    with site(n, plain=True) as plain, Fetcher(delay=0, retries=0) as fetcher:
        pages, seconds = _crawl(fetcher, plain.base, "never", None)
    yield f"plain HTML:     {pages} pages in {seconds:.2f} s, {pages / seconds:.1f} pages/s (baseline)"
    base_rate = pages / seconds
    with site(n) as shell, Fetcher(delay=0, retries=0) as fetcher, Renderer(fetcher) as renderer:
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                pid = renderer.browser_pid()
                if pid:
                    peak[0] = max(peak[0], tree_rss_kib(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            pages, seconds = _crawl(fetcher, shell.base, "auto", renderer)
        finally:
            done.set()
            sampler.join()
        rendered = renderer.rendered
    yield (f"rendered (auto): {pages} pages in {seconds:.2f} s, {pages / seconds:.1f} pages/s "
           f"({rendered} pages rendered, browser start included), "
           f"{(pages / seconds) / base_rate:.3f}x the plain rate")
    yield f"browser peak memory: {peak[0] / 1024:.0f} MiB (Chromium and its child processes)"


if __name__ == "__main__":
    for line in run(int(sys.argv[1]) if len(sys.argv) > 1 else PAGES):
        print(line, flush=True)
