"""Re-crawling an unchanged site: what is downloaded again.

Python's HTML manual (Debian's python3.11-doc, as in bench_crawl) served by `python -m http.server`
on 127.0.0.1, which sends Last-Modified and answers If-Modified-Since with 304. The site is indexed
once, then re-indexed unchanged: with the visits the first run stored (every page fetched
conditionally, 304s followed by their stored links), and, as the baseline in the same run, with the
visits table emptied first (the behaviour before visits: every page downloaded in full, unchanged
pages skipped by body hash). Figures: requests, bytes of page bodies received, seconds.

The embedder is a constant stand-in (nothing is re-embedded when unchanged in any case, and the
first run's embedding cost is not what is measured here); chunking counts words.
"""

from __future__ import annotations

import shutil
from collections import Counter

from benchmarks.bench_crawl import HTML, ensure_docs, serve
from benchmarks.common import WORK, Timer

NAME = "recrawl"


class _ConstantEmbedder:
    name = "bench:constant"
    dimension = 8
    max_tokens = 256

    def count_tokens(self, texts):
        return [len(t.split()) + 2 for t in texts]

    def embed(self, texts):
        return [[1.0] + [0.0] * (self.dimension - 1) for _ in texts]


def _counting_fetcher():
    from kbindex.errors import SourceError
    from kbindex.fetch import Fetcher

    class CountingFetcher(Fetcher):
        """Counts page requests and the body bytes received (robots.txt included)."""

        def __init__(self, **kw):
            super().__init__(**kw)
            self.statuses: Counter = Counter()
            self.body_bytes = 0

        def fetch(self, url, **kw):
            try:
                page = super().fetch(url, **kw)
            except SourceError as exc:
                self.statuses[getattr(exc, "status", None) or exc.kind] += 1
                raise
            self.statuses[page.status] += 1
            self.body_bytes += len(page.body)
            return page

    return CountingFetcher(delay=0)


def _index(db, start: str) -> tuple[float, dict, Counter, int]:
    from kbindex.chunk import check_config
    from kbindex.config import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP, Settings
    from kbindex.crawl import CrawlOptions
    from kbindex.indexing.runner import Indexer
    from kbindex.indexing.sources import parse_sources

    embedder = _ConstantEmbedder()
    config = check_config(DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP, embedder.max_tokens)
    fetcher = _counting_fetcher()
    try:
        with Timer() as t, Indexer(Settings(db=db, model=embedder.name), embedder, config,
                                   fetcher=fetcher) as indexer:
            indexer.open()
            summary = indexer.run(parse_sources([start], CrawlOptions()))
    finally:
        fetcher.close()
    return t.seconds, summary.as_dict(), fetcher.statuses, fetcher.body_bytes


def run() -> list[str]:
    reason = ensure_docs()
    if reason:
        return [f"skipped: {reason}"]
    from kbindex.store.ledger import Ledger

    db = WORK / "index-recrawl"
    shutil.rmtree(db, ignore_errors=True)
    server, base = serve(HTML)
    start = base + "/index.html"
    try:
        first = _index(db, start)
        again = _index(db, start)
        ledger = Ledger(db, "kbindex")
        visits = ledger.visits()
        with ledger._tx() as tx:  # the baseline: as before visits were kept
            tx.execute("DELETE FROM visits")
        ledger.close()
        before = _index(db, start)
    finally:
        server.terminate()
        server.wait()

    def line(label: str, figures) -> str:
        seconds, summary, statuses, body = figures
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str))
        return (f"{label}: {seconds:.2f} s, {sum(statuses.values())} requests ({codes}), "
                f"{body:,} bytes of bodies, indexed {summary['indexed']}, "
                f"unchanged {summary['unchanged']}, chunks_added {summary['chunks_added']}, "
                f"not_modified {summary['not_modified']}")

    return [
        f"site: {len(list(HTML.rglob('*.html')))} HTML files served by http.server (Last-Modified, "
        f"If-Modified-Since); {len(visits)} visits stored by the first run",
        line("first index", first),
        line("re-index unchanged, with visits (this change)", again),
        line("re-index unchanged, visits emptied (before: full downloads, body-hash skip)", before),
        f"bytes re-downloaded, with visits / without: {again[3] / max(before[3], 1):.4f}; "
        f"time with / without: {again[0] / before[0]:.2f}",
    ]
