"""Crawl Python's HTML manual (Debian's python3.11-doc) served on 127.0.0.1 with --delay 0.

Figures: pages/s for the crawl alone (fetch + link parsing), for fetch + extract + chunk (the
--dry-run path, real tokenizer, no embedding), and for a whole `kbindex index` run with the real
packaged model. Baseline in the same run: plain sequential httpx GETs of the same pages.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import WORK, Timer, run_kbindex

NAME = "crawl"
PACKAGE = "python3.11-doc"
DOCS = WORK / "python3.11-doc"
HTML = DOCS / "usr" / "share" / "doc" / "python3.11" / "html"
FULL_RUN_PAGES = 60  # the whole index run embeds with the real model: a sample keeps it short


def ensure_docs() -> str | None:
    """Download and unpack the Debian package into .bench once; the reason it failed, or None."""
    if (HTML / "index.html").exists():
        return None
    download = WORK / "deb"
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir(parents=True)

    def fetch() -> bool:
        proc = subprocess.run(["apt-get", "download", PACKAGE], cwd=download, capture_output=True, text=True)
        return proc.returncode == 0 and any(download.glob("*.deb"))

    try:
        if not fetch():
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True, timeout=300)
            if not fetch():
                return f"apt-get download {PACKAGE} failed (no apt, no network or not root)"
        deb = next(download.glob("*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(DOCS)], check=True, capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot get {PACKAGE}: {exc}"
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return None if (HTML / "index.html").exists() else f"{PACKAGE} has no html/index.html"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(root: Path) -> tuple[subprocess.Popen, str]:
    """http.server in its own process, so that it does not share our GIL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}"


def run() -> list[str]:
    reason = ensure_docs()
    if reason:
        return [f"skipped: {reason}"]
    from kbindex.config import Settings
    from kbindex.crawl import Crawler, CrawlOptions, CrawlResult
    from kbindex.embedding import load_embedder
    from kbindex.fetch import Fetcher
    from kbindex.indexing.plan import dry_run
    from kbindex.indexing.sources import parse_sources
    from kbindex.pipeline import default_workers
    from kbindex.records import Page

    server, base = serve(HTML)
    start = base + "/index.html"
    lines = []
    try:
        # 1. The crawl alone: fetch + parse links, nothing extracted.
        with Fetcher(delay=0) as fetcher, Timer() as crawl_t:
            result = CrawlResult(start)
            items = list(Crawler(fetcher, CrawlOptions()).crawl(start, result))
        urls = [p.url for p in items if isinstance(p, Page)]
        fetched = result.fetched
        # Baseline: the same pages with plain sequential GETs.
        import httpx

        with httpx.Client() as client, Timer() as get_t:
            for url in urls:
                client.get(url).read()
        # 2. fetch + extract + chunk: the dry-run path with the model's tokenizer.
        embedder = load_embedder("all-MiniLM-L6-v2", "cpu")
        embedder.count_tokens(["warm up"])
        from kbindex.chunk import check_config
        from kbindex.config import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP

        config = check_config(DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP, embedder.max_tokens)
        # Extraction in this process (--workers 1, the baseline) and in the default worker pool.
        plans = {}
        for workers in (1, default_workers()):
            entries = []
            with Fetcher(delay=0) as fetcher, Timer() as plan_t:
                sources = parse_sources([start], CrawlOptions())
                summary = dry_run(Settings(db=WORK / "index-dry-run"), embedder, config, sources, fetcher,
                                  entries.append, workers=workers)  # writes nothing under db
            plans[workers] = (summary, entries, plan_t.seconds)
        summary, entries, plan_s = plans[default_workers()]
        one_summary, one_entries, one_s = plans[1]
        indexed = sum(e.action == "index" for e in entries)
        # 3. A whole index run, real model, fresh process.
        db = WORK / "index-crawl"
        shutil.rmtree(db, ignore_errors=True)
        seconds, rss, out = run_kbindex("index", start, "--db", str(db), "--delay", "0",
                                        "--max-pages", str(FULL_RUN_PAGES), "--json")
        full = json.loads(out)
    finally:
        server.terminate()
        server.wait()
    lines += [
        f"site: {len(list(HTML.rglob('*.html')))} HTML files; crawl fetched {fetched} pages, "
        f"{summary.indexed} to index, {summary.chunks_added} chunks",
        f"baseline, sequential httpx GET of the {len(urls)} pages: {get_t.seconds:.2f} s, "
        f"{len(urls) / get_t.seconds:.1f} pages/s",
        f"crawl only (fetch + links, concurrency 4): {crawl_t.seconds:.2f} s, {fetched / crawl_t.seconds:.1f} pages/s, "
        f"ratio to baseline {(fetched / crawl_t.seconds) / (len(urls) / get_t.seconds):.2f}",
        f"fetch + extract + chunk (dry run, real tokenizer), --workers 1: {one_s:.2f} s, "
        f"{one_summary.fetched / one_s:.1f} pages/s fetched ({indexed / one_s:.1f} indexed pages/s)",
        f"fetch + extract + chunk, --workers {default_workers()} (default here): {plan_s:.2f} s, "
        f"{summary.fetched / plan_s:.1f} pages/s fetched ({indexed / plan_s:.1f} indexed pages/s), "
        f"ratio to --workers 1 {one_s / plan_s:.2f}; same plan: {one_entries == entries} "
        f"(target 50 pages/s)",
        f"whole index run, real model, --max-pages {FULL_RUN_PAGES} (fresh process, model load included): "
        f"{seconds:.1f} s, {full['fetched'] / seconds:.1f} pages/s, {full['chunks_added']} chunks, "
        f"peak RSS (all processes) {rss:.0f} MiB",
    ]
    return lines
