"""What `kbindex stats` costs on a large collection: from the ledger against reading every chunk.

A collection of KBINDEX_BENCH_STATS_CHUNKS chunks (default 100,000; 50 a source) is written with
`kbindex import` of a generated export file that carries vectors (64 dimensions, the fake
embedder's `fake:hash`, so nothing is embedded). Then `kbindex stats --json` runs in fresh
processes, three times each way, in the same run:

- ledger: as kbindex runs it, reading the ledger's one row per source;
- baseline: the same store with its ledger moved aside, so stats reads every chunk's metadata
  from Chroma, which is what every `stats` did before it read the ledger.

Both must report the same documents and chunks. Run alone: `python -m benchmarks.bench_stats`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import sys

from benchmarks.common import WORK, run_kbindex

NAME = "stats"
DIMENSION = 64
PER_SOURCE = 50
REPEAT = 3


def write_export(path, chunks: int, seed: int = 0) -> None:
    """A kbindex export file of `chunks` chunks with random unit vectors of the fake model."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"kbindex_export": 1, "collection": "kbindex", "model": "fake:hash",
                              "dimension": DIMENSION, "chunks": chunks, "vectors": True}) + "\n")
        for i in range(chunks):
            doc, position = divmod(i, PER_SOURCE)
            vector = [rng.gauss(0, 1) for _ in range(DIMENSION)]
            norm = sum(x * x for x in vector) ** 0.5
            out.write(json.dumps({
                "id": f"doc{doc}#{position}",
                "text": f"Paragraph {position} of article {doc} about topic {rng.randrange(1000)}.",
                "metadata": {"source": f"/kb/article-{doc:06d}.md", "title": f"Article {doc}",
                             "section": f"Part {position}", "position": position, "doc_hash": f"h{doc}",
                             "indexed_at": "2026-01-01T00:00:00Z", "chunking": "256/32"},
                "embedding": [round(x / norm, 7) for x in vector],
            }) + "\n")


def _stats(db) -> tuple[list[float], dict]:
    env = {"KBINDEX_DB": str(db), "KBINDEX_MODEL": "fake:hash"}
    times, out = [], ""
    for _ in range(REPEAT):
        seconds, _, out = run_kbindex("stats", "--json", env=env)
        times.append(seconds)
    return times, json.loads(out)


def run():
    chunks = int(os.environ.get("KBINDEX_BENCH_STATS_CHUNKS", "100000"))
    work = WORK / "stats"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    export = work / "export.jsonl"
    write_export(export, chunks)
    db = work / "index"
    seconds, _, _ = run_kbindex("import", str(export), env={"KBINDEX_DB": str(db), "KBINDEX_MODEL": "fake:hash"})
    yield f"import of {chunks:,} chunks ({chunks // PER_SOURCE:,} sources, vectors given): {seconds:.1f} s"
    ledger_times, ledger_out = _stats(db)
    aside = work / "ledger-aside"
    aside.mkdir()
    for part in db.glob("kbindex.sqlite*"):
        part.rename(aside / part.name)
    scan_times, scan_out = _stats(db)
    assert (ledger_out["documents"], ledger_out["chunks"]) == (scan_out["documents"], scan_out["chunks"]) == (
        chunks // PER_SOURCE, chunks), (ledger_out, scan_out)
    base, new = statistics.median(scan_times), statistics.median(ledger_times)
    yield (f"kbindex stats, baseline (every chunk read): median {base:.2f} s of {REPEAT} "
           f"({', '.join(f'{t:.2f}' for t in scan_times)})")
    yield (f"kbindex stats, from the ledger: median {new:.2f} s of {REPEAT} "
           f"({', '.join(f'{t:.2f}' for t in ledger_times)}), {base / new:.1f}x faster than the baseline")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    for line in run():
        print(line, flush=True)
    sys.exit(0)
