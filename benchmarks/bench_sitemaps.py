"""A sitemap index naming many gzipped sitemaps, crawled with a small page budget (issue 15).

200 gzipped child sitemaps of SITEMAP_URLS entries each, served by `python -m http.server` on
127.0.0.1; `kbindex index INDEX --max-pages 3 --dry-run` runs in a fresh process (wall time, peak
memory of all its processes, sitemap requests). The baseline in the same run is the same command
on the code before sitemaps were streamed (commit BASELINE, exported under .bench/ with
`git archive`), which read every child sitemap in full and queued all its entries.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.bench_crawl import serve
from benchmarks.common import ROOT, WORK

NAME = "sitemaps"
CHILDREN = 200
SITEMAP_URLS = int(os.environ.get("KBINDEX_BENCH_SITEMAP_URLS", "5000"))
BASELINE = "9460aed"  # the last commit before streamed sitemaps


def _site(root: Path, base: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "robots.txt").write_text("User-agent: *\nAllow: /\n")
    children = "".join(f"<sitemap><loc>{base}/maps/{i}.xml.gz</loc></sitemap>" for i in range(CHILDREN))
    (root / "sitemap.xml").write_text(f"<sitemapindex>{children}</sitemapindex>")
    (root / "maps").mkdir(exist_ok=True)
    for i in range(CHILDREN):
        entries = "".join(f"<url><loc>{base}/p/{i}/{j}.html</loc></url>" for j in range(SITEMAP_URLS))
        (root / "maps" / f"{i}.xml.gz").write_bytes(
            gzip.compress(f"<urlset>{entries}</urlset>".encode(), compresslevel=1))
    (root / "p" / "0").mkdir(parents=True, exist_ok=True)
    for j in range(5):
        words = " ".join(f"word{k}" for k in range(200))
        (root / "p" / "0" / f"{j}.html").write_text(
            f"<html><head><title>Page {j}</title></head><body><main><h1>Page {j}</h1><p>{words}</p>"
            "</main></body></html>")


def _baseline_tree() -> Path | None:
    """The baseline's files, exported with `git archive` (no worktree registered in the repo)."""
    tree = WORK / f"baseline-{BASELINE}"
    if not (tree / "kbindex").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", BASELINE, "kbindex", "tests", "benchmarks"],
                                 cwd=ROOT, capture_output=True)
        if archive.returncode != 0:
            return None
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def _measure(tree: Path, url: str, db: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KBINDEX_MODEL": "fake:hash",
           "PYTHONPATH": f"{tree}{os.pathsep}{ROOT}"}
    cmd = [sys.executable, "-m", "benchmarks.measure", sys.executable, "-m", "tests.fake_kbindex", "index",
           url, "--max-pages", "3", "--dry-run", "--delay", "0", "--workers", "1", "--json", "--db", str(db)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run() -> list[str]:
    root = WORK / "sitemaps-site"
    root.mkdir(parents=True, exist_ok=True)
    server, base = serve(root)  # the sitemaps name the port, known only now
    try:
        _site(root, base)
        lines = [f"{CHILDREN} gzipped sitemaps x {SITEMAP_URLS} URLs, --max-pages 3 --dry-run"]
        results = {}
        baseline = _baseline_tree()
        for label, tree in (("baseline " + BASELINE, baseline), ("streamed", ROOT)):
            if tree is None:
                lines.append(f"{label}: no git worktree could be made")
                continue
            data = _measure(tree, f"{base}/sitemap.xml", WORK / f"sitemaps-db-{label.split()[0]}")
            results[label] = data
            lines.append(f"{label:<18} {data['s']:7.1f} s  peak {data['rss'] / 1024:7.0f} MiB  exit {data['rc']}")
        if len(results) == 2:
            old, new = results.values()
            lines.append(f"ratio baseline/streamed: time {old['s'] / new['s']:.1f}x, "
                         f"memory {old['rss'] / new['rss']:.1f}x")
        return lines
    finally:
        server.terminate()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    for line in run():
        print(line)
