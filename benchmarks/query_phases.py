"""The phases of a cold `kbindex query`, in one fresh process: the model loaded beside chromadb's
import (what `kbindex query` does, kbindex.warmup) or after the collection is open.

Usage: python -m benchmarks.query_phases DB {warm|serial} [QUERY]
(run the two modes alternately, each in a fresh process; docs/benchmarks.md, issue 21).
"""

import sys
import time

T0 = time.perf_counter()

from pathlib import Path  # noqa: E402

from kbindex.cli.common import make_embedder, model_warmup  # noqa: E402
from kbindex.config import Settings  # noqa: E402


def main() -> None:
    db, mode = Path(sys.argv[1]), sys.argv[2]
    query = sys.argv[3] if len(sys.argv) > 3 else "reset password"
    settings = Settings(db=db)
    t1 = time.perf_counter()
    warm = model_warmup(settings, [query]) if mode == "warm" else None
    t2 = time.perf_counter()
    from kbindex.store import Index

    collection = Index.from_settings(settings).collection()
    t3 = time.perf_counter()
    embedder = (warm.embedder(collection.model) if warm else None) or make_embedder(settings, collection.model)
    from kbindex.search import search

    search(collection, embedder, [query], k=5, where=None, mode="hybrid", per_doc=1)
    t4 = time.perf_counter()
    print(f"{mode}: imports {t1 - T0:.2f} s, start the warm-up {t2 - t1:.2f} s, open the collection "
          f"{t3 - t2:.2f} s, embed + search {t4 - t3:.2f} s, total {t4 - T0:.2f} s")


if __name__ == "__main__":
    main()
