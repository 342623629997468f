"""`make bench`: run each benchmark and print its figures; `--only NAME` runs one."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BENCHMARKS = ["bench_index", "bench_firstrun", "bench_crawl", "bench_sync", "bench_recrawl", "bench_embed",
              "bench_langchain", "bench_extract", "bench_search", "bench_sitemaps", "bench_repair", "bench_serve",
              "bench_render", "bench_stats"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", help="run only these (by NAME)")
    args = parser.parse_args()
    failed = 0
    for module_name in BENCHMARKS:
        module = importlib.import_module(f"benchmarks.{module_name}")
        if args.only and module.NAME not in args.only:
            continue
        print(f"== {module.NAME}", flush=True)
        start = time.perf_counter()
        try:
            for line in module.run():
                print(f"  {line}", flush=True)
        except Exception as exc:  # one broken benchmark must not hide the others
            failed += 1
            print(f"  FAILED: {type(exc).__name__}: {exc}", flush=True)
        print(f"  ({time.perf_counter() - start:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
