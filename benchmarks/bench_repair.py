"""What checking and healing a store costs.

1. `kbindex verify` on collections of 10,000 and 100,000 chunks (sizes: KBINDEX_BENCH_VERIFY_SIZES,
   comma-separated). The collections are written directly through kbindex's store, keyword index
   and ledger with random unit vectors (384 dimensions, as all-MiniLM-L6-v2's), so that building
   them does not take hours of embedding; verify reads them exactly as it reads an indexed one.
2. `kbindex verify --repair` of a collection whose HNSW files were destroyed, against a full
   re-index of the same sources (into a fresh index folder, so every chunk is embedded again),
   both with the default model, in the same run. Corpus: the first KBINDEX_BENCH_REPAIR_DOCS
   (default 1,500) SciFact abstracts as Markdown files (more than Chroma's sync threshold of
   1,000 chunks, so the HNSW files on disk hold the vectors).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from benchmarks.common import KBINDEX, ROOT, SHARED_DATA, WORK, run_kbindex

NAME = "repair"
DIMENSION = 384
WORDS = ("printer spooler router cable battery standby proxy token vpn dns certificate disk wal replica "
         "backup kernel driver firmware update mailbox quota tenant policy license account password "
         "reset sync calendar share folder permission group laptop dock monitor display audio").split()


def build_collection(db: Path, chunks: int, per_source: int = 50, seed: int = 0) -> None:
    """A collection of `chunks` chunks as kbindex writes them (store, keyword index, ledger with
    entries and the embedding cache, the two bound to each other), with random unit vectors."""
    import numpy as np

    from kbindex.config import Settings
    from kbindex.indexing.sync import bind, ledger_scope
    from kbindex.records import text_hash
    from kbindex.store.chroma import Store
    from kbindex.store.ledger import Entry, Ledger
    from kbindex.store.lexical import LexicalIndex, Row

    shutil.rmtree(db, ignore_errors=True)
    settings = Settings(db=db, model="bench:random")
    rng = random.Random(seed)
    vectors = np.random.default_rng(seed).standard_normal((chunks, DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = Store(db)
    ledger = Ledger(db, ledger_scope(settings))
    collection = store.create(settings.collection, settings.model, DIMENSION, ledger_id=ledger.ledger_id)
    bind(collection, ledger)
    lexical = LexicalIndex.open(db, settings.collection)
    for first in range(0, chunks, 1000):
        ids, texts, metas, rows, hashes, entries = [], [], [], [], [], []
        count = min(1000, chunks - first)
        for n in range(first, first + count):
            source = f"/kb/article-{n // per_source:06d}.md"
            position = n % per_source
            title, section = f"Article {n // per_source}", f"Step {position}"
            text = " ".join(rng.choice(WORDS) for _ in range(40))
            meta = {"source": source, "title": title, "section": section, "position": position,
                    "doc_hash": text_hash(source), "model": settings.model, "chunking": "256/32",
                    "indexed_at": "2026-12-01T00:00:00Z"}
            row = Row.from_stored(f"{text_hash(source)[:16]}-{position:05d}", text, meta)
            ids.append(row.id)
            texts.append(text)
            metas.append(meta)
            rows.append(row)
            hashes.append(text_hash(f"{row.context}\n\n{text}"))
        collection.add_stored(ids, vectors[first:first + count].tolist(), texts, metas)
        lexical.upsert_rows(rows)
        ledger.cache_vectors(settings.model, dict(zip(hashes, vectors[first:first + count].tolist())))
        by_source: dict[str, list[int]] = {}
        for k, meta in enumerate(metas):
            by_source.setdefault(meta["source"], []).append(k)
        for source, ks in by_source.items():
            entries.append(Entry(source=source, root="/kb", content_hash=text_hash(source), chunking="256/32",
                                 model=settings.model, chunk_ids=tuple(ids[k] for k in ks),
                                 text_hashes=tuple(hashes[k] for k in ks), indexed_at="2026-12-01T00:00:00Z"))
        ledger.commit(entries)
    lexical.close()
    ledger.close()
    Store.forget_clients()


def write_corpus(folder: Path, docs: int) -> int:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    written = 0
    with open(SHARED_DATA / "scifact" / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            if written == docs:
                break
            doc = json.loads(line)
            if not doc.get("text", "").strip():
                continue
            (folder / f"{doc['_id']}.md").write_text(f"# {doc.get('title') or doc['_id']}\n\n{doc['text']}\n",
                                                    encoding="utf-8")
            written += 1
    return written


def destroy_hnsw(db: Path) -> None:
    """Truncate the data file of every HNSW index in the store to nothing."""
    for folder in db.iterdir():
        try:
            uuid.UUID(folder.name)
        except ValueError:
            continue
        data = folder / "data_level0.bin"
        if data.exists():
            os.truncate(data, 0)


def verify(*args: str) -> tuple[float, float, dict]:
    """`kbindex verify ARGS --json` in a fresh process: (seconds, peak MiB, report); exit 0 or 1."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.measure", *KBINDEX, "verify", *args, "--json"],
                          capture_output=True, text=True, env=full_env, cwd=ROOT)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    if data["rc"] not in (0, 1):
        raise RuntimeError(f"kbindex verify exited {data['rc']}:\n{proc.stderr[-2000:]}")
    return data["s"], data["rss"] / 1024, json.loads(data["out"])


def run() -> list[str]:
    lines = []
    sizes = [int(s) for s in os.environ.get("KBINDEX_BENCH_VERIFY_SIZES", "10000,100000").split(",") if s]
    for size in sizes:
        db = WORK / f"verify-{size}"
        marker = db / "bench-built.json"  # building 100,000 chunks takes minutes: kept for the next run
        if not marker.exists():
            build_collection(db, size)
            marker.write_text(json.dumps({"chunks": size}))
        seconds, rss, report = verify("--db", str(db), "--model", "bench:random")
        lines.append(f"verify, {size:,} chunks ({size // 50:,} sources, {DIMENSION} dimensions): {seconds:.1f} s, "
                     f"peak RSS (all processes) {rss:.0f} MiB, ok {report['ok']}"
                     + ("" if report["ok"] else f" ({'; '.join(report['problems'])[:200]})"))

    if not (SHARED_DATA / "scifact" / "corpus.jsonl").exists():
        return lines + [f"repair: skipped, no {SHARED_DATA / 'scifact'}"]
    docs = int(os.environ.get("KBINDEX_BENCH_REPAIR_DOCS", "1500"))
    folder = WORK / "repair-corpus"
    written = write_corpus(folder, docs)
    db, fresh = WORK / "repair-index", WORK / "repair-reindex"
    for path in (db, fresh):
        shutil.rmtree(path, ignore_errors=True)
    # The first run exports and quantizes the model once (into the benchmarks' model cache, which
    # every run shares; older versions kept it in db/onnx): not part of either figure.
    _, _, out = run_kbindex("index", str(folder), "--db", str(db), "--device", "cpu", "--json")
    first = json.loads(out)
    fresh.mkdir(parents=True)
    if (db / "onnx").exists():
        shutil.copytree(db / "onnx", fresh / "onnx")
    reindex_s, reindex_rss, out = run_kbindex("index", str(folder), "--db", str(fresh), "--device", "cpu", "--json")
    reindex = json.loads(out)
    destroy_hnsw(db)
    check_s, _, found = verify("--db", str(db))
    damaged = "said consistent" if found["ok"] else f"found it in {check_s:.1f} s: {found['problems'][0][:120]}"
    repair_s, repair_rss, repair = verify("--repair", "--db", str(db), "--device", "cpu")
    rebuilt = repair["rebuilt"] or {}
    lines += [
        f"corpus: {written} SciFact abstracts as Markdown, {first['chunks_added']} chunks, default model",
        f"HNSW data file truncated to 0 bytes: verify {damaged}",
        f"full re-index (fresh folder, model export copied in): {reindex_s:.1f} s, "
        f"peak RSS {reindex_rss:.0f} MiB, embedded {reindex['chunks_embedded']}",
        f"verify --repair: {repair_s:.1f} s, peak RSS {repair_rss:.0f} MiB, ok {repair['ok']}, "
        f"rebuilt {rebuilt.get('chunks')} chunks, {rebuilt.get('from_cache')} vectors from the cache, "
        f"{rebuilt.get('embedded')} embedded",
        f"ratio re-index / repair: {reindex_s / repair_s:.1f}x (target >= 10x, 0 embedded)",
    ]
    return lines
