"""Rendered pages per second and the browser's peak memory: a 50-page script-built help centre
(every page an app shell that fetches its article from a JSON endpoint) crawled with --render
auto, beside the same articles served as plain HTML, in one run.

    python -m benchmarks.run --only render       (or: python -m benchmarks.bench_render [PAGES])

The browser's memory is the summed proportional set size (and resident size) of Chromium and all its processes (renderers,
GPU, utility; Playwright's driver left out), sampled every 50 ms (benchmarks.measure.tree_rss_kib).
"""

from __future__ import annotations

import os
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


def _browsers(root: int) -> list[int]:
    """The Chromium processes started under `root` (Playwright's driver starts the browser), the
    topmost of each tree: tree_rss_kib adds their children."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                is_browser = b"chrom" in f.read().split(b"\0")[0].lower()
            children = []
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    children += [int(c) for c in f.read().split()]
        except OSError:
            continue
        if is_browser and pid != root:
            found.append(pid)
        else:
            todo += children
    return found


def _tree_pss_kib(root: int) -> int:
    """Proportional set size of `root` and its descendants (Linux smaps_rollup), in KiB: shared
    pages split between the processes that share them, so the sum is the tree's real share."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            pass
    return total


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
        peak = [0, 0]  # KiB: summed RSS, summed PSS
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                browsers = _browsers(os.getpid())
                peak[0] = max(peak[0], sum(tree_rss_kib(pid) for pid in browsers))
                peak[1] = max(peak[1], sum(_tree_pss_kib(pid) for pid in browsers))

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
    yield (f"browser peak memory: {peak[1] / 1024:.0f} MiB PSS ({peak[0] / 1024:.0f} MiB summed RSS, "
           "which counts shared pages once per process), Chromium and its child processes")


if __name__ == "__main__":
    for line in run(int(sys.argv[1]) if len(sys.argv) > 1 else PAGES):
        print(line, flush=True)
