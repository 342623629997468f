"""Index data/sample-kb end to end; baseline: plain SentenceTransformer.encode of the same chunks."""

from __future__ import annotations

import json
import shutil

from benchmarks.common import ROOT, WORK, Timer, run_kbindex

NAME = "index"


def run() -> list[str]:
    db = WORK / "index-sample"
    shutil.rmtree(db, ignore_errors=True)
    kb = ROOT / "data" / "sample-kb"
    seconds, rss, out = run_kbindex("index", str(kb), "--db", str(db), "--json")
    summary = json.loads(out)
    chunks = summary["chunks_added"]
    again, _, out2 = run_kbindex("index", str(kb), "--db", str(db), "--json")

    # Baseline in this process: load the model and encode exactly the chunks kbindex stored.
    from sentence_transformers import SentenceTransformer

    from kbindex.embedding import packaged_model_path
    from kbindex.store.chroma import Store

    texts = [m.text for m in Store(db).collection("kbindex").scan(include_text=True)]
    with Timer() as load:
        model = SentenceTransformer(str(packaged_model_path()), device="cpu")
    model.encode(texts[:8])
    with Timer() as enc:
        model.encode(texts, batch_size=32, normalize_embeddings=True)
    return [
        f"sample-kb: {summary['indexed']} documents, {chunks} chunks",
        f"kbindex index (fresh process, model load included): {seconds:.2f} s, "
        f"{chunks / seconds:.1f} chunks/s, peak RSS (all processes) {rss:.0f} MiB",
        f"re-index unchanged: {again:.2f} s, chunks_added {json.loads(out2)['chunks_added']}",
        f"baseline: model load {load.seconds:.2f} s + encode only {enc.seconds:.2f} s "
        f"({chunks / enc.seconds:.1f} chunks/s)",
        f"ratio kbindex total / (baseline load + encode): {seconds / (load.seconds + enc.seconds):.2f}",
    ]
