"""The fast CPU embedding paths (issue 6): throughput of kbindex's onnxruntime and OpenVINO paths,
fp32 and int8, against plain SentenceTransformer.encode; int8 quality on SciFact (nDCG@10); cold
`kbindex query` per backend; the default index run's overhead over pure encoding and its peak RSS."""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
from collections.abc import Iterator

from benchmarks.common import MODEL_CACHE, SHARED_DATA, WORK, Timer, run_kbindex

NAME = "embed"
SCIFACT = SHARED_DATA / "scifact"
THROUGHPUT_DOCS = int(os.environ.get("BENCH_EMBED_DOCS", "400"))
PIPELINE_PAGES = int(os.environ.get("BENCH_PIPELINE_PAGES", "2000"))
ROUNDS = 3  # timings are interleaved and the best round of each path is kept: the machine is shared
CACHE = MODEL_CACHE  # where the kbindex processes started here find the models
# "all"; "index" for only the index, memory and cold-query figures; "throughput" for only the
# chunks/s table (SciFact nDCG@10 over the whole corpus takes long); "batch" for chunks/s by
# texts per inference call.
PARTS = os.environ.get("BENCH_EMBED_PARTS", "all")


def load_scifact() -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]], dict[str, str]]:
    """(corpus id -> "title text", test query id -> text, qrels, corpus id -> title), BEIR layout."""
    corpus, titles = {}, {}
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            titles[str(doc["_id"])] = doc.get("title", "")
            corpus[str(doc["_id"])] = f"{doc.get('title', '')} {doc['text']}".strip()
    qrels: dict[str, dict[str, int]] = {}
    with (SCIFACT / "qrels" / "test.tsv").open(encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            qid, did, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                qrels.setdefault(qid, {})[did] = int(score)
    queries = {}
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            q = json.loads(line)
            if str(q["_id"]) in qrels:
                queries[str(q["_id"])] = q["text"]
    return corpus, queries, qrels, titles


def ndcg_at_10(ranked: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> float:
    """Mean nDCG@10 over the judged queries (linear gains, as BEIR/pytrec_eval compute it)."""
    scores = []
    for qid, relevant in qrels.items():
        dcg = sum(relevant.get(did, 0) / math.log2(rank + 2) for rank, did in enumerate(ranked.get(qid, [])[:10]))
        ideal = sorted(relevant.values(), reverse=True)[:10]
        idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
        scores.append(dcg / idcg if idcg else 0.0)
    return sum(scores) / len(scores)


def retrieve(embedder, corpus: dict[str, str], queries: dict[str, str]) -> dict[str, list[str]]:
    import numpy as np

    ids = list(corpus)
    docs = embedder.embed_array([corpus[i] for i in ids])
    qids = list(queries)
    qvecs = embedder.embed_array([queries[q] for q in qids])
    scores = qvecs @ docs.T
    top = np.argsort(-scores, axis=1)[:, :10]
    return {qid: [ids[j] for j in row] for qid, row in zip(qids, top, strict=True)}


def _html_folder(corpus: dict[str, str], titles: dict[str, str], count: int):
    """A documentation-like folder: one HTML page per SciFact abstract, with site chrome."""
    folder = WORK / f"scifact-html-{count}"
    if folder.exists() and len(list(folder.iterdir())) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for did in list(corpus)[:count]:
        title = titles[did]
        body = corpus[did][len(title):].strip()
        paragraphs = "".join(f"<p>{p.strip()}.</p>" for p in body.split(". ") if p.strip())
        (folder / f"{did}.html").write_text(
            f"<!doctype html><html><head><title>{title}</title></head><body>"
            "<nav><a href='/'>Home</a> <a href='/topics'>Topics</a></nav>"
            f"<article><h1>{title}</h1>{paragraphs}</article>"
            "<footer>Copyright Example Docs. <a href='/privacy'>Privacy</a></footer></body></html>",
            encoding="utf-8",
        )
    return folder


def run() -> Iterator[str]:
    """Lines as they are measured (run.py prints each at once: this benchmark takes minutes)."""
    if not (SCIFACT / "corpus.jsonl").exists():
        yield f"skipped: SciFact not found at {SCIFACT}"
        return

    from kbindex.embedding import load_embedder

    corpus, queries, qrels, titles = load_scifact()

    paths = {f"{runtime}-{kind}": load_embedder("all-MiniLM-L6-v2", "cpu", runtime, quantize, CACHE)
             for runtime in ("onnx", "openvino") for kind, quantize in (("fp32", "none"), ("int8", "int8"))}
    default = load_embedder("all-MiniLM-L6-v2", "cpu", cache_dir=CACHE)  # what a new user gets
    yield f"default for a new collection on this machine: {default.runtime}, {default.name}"
    for embedder in paths.values():
        embedder.embed(["export and quantize once"])
    if PARTS in ("all", "throughput"):
        yield from _throughput_and_quality(corpus, queries, qrels, paths, PARTS == "all")
    if PARTS in ("all", "index"):
        yield from _index_and_query(corpus, titles, default)
    if PARTS in ("all", "batch"):
        yield from _batch_sizes(corpus)


def _batch_sizes(corpus) -> Iterator[str]:
    """Texts per inference call against chunks/s, and how many cores the model keeps busy."""
    import time

    from kbindex.embedding import load_embedder

    texts = list(corpus.values())[:400]
    for runtime, quantize in (("onnx", "int8"), ("onnx", "none"), ("openvino", "int8"), ("openvino", "none")):
        model = load_embedder("all-MiniLM-L6-v2", "cpu", runtime, quantize, CACHE)
        model.embed(texts[:8])
        rates = []
        for size in (2, 4, 8, 32):
            model.batch_size = size
            wall, cpu = time.perf_counter(), time.process_time()
            model.embed(texts)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rates.append(f"{size}: {len(texts) / wall:.1f} chunks/s ({cpu / wall:.2f} cores)")
        yield f"{runtime} {quantize}, 400 SciFact abstracts, texts per call -> " + "; ".join(rates)


def _throughput_and_quality(corpus, queries, qrels, paths, quality: bool) -> Iterator[str]:
    from sentence_transformers import SentenceTransformer

    from kbindex.embedding.spec import available_cores, packaged_model_path

    # 1. Throughput, chunks/s, all paths interleaved.
    texts = list(corpus.values())[:THROUGHPUT_DOCS]
    model = SentenceTransformer(str(packaged_model_path()), device="cpu")
    runs = {"torch": lambda: model.encode(texts, batch_size=32, normalize_embeddings=True)}
    runs.update({name: (lambda e=embedder: e.embed(texts)) for name, embedder in paths.items()})
    model.encode(texts[:32])  # warm up
    for embedder in paths.values():
        embedder.embed(texts[:32])
    best = {name: float("inf") for name in runs}
    for _ in range(ROUNDS):
        for name, run_path in runs.items():
            with Timer() as t:
                run_path()
            best[name] = min(best[name], t.seconds)
    rate = {name: len(texts) / s for name, s in best.items()}
    yield (f"throughput on {len(texts)} SciFact abstracts (best of {ROUNDS} interleaved rounds, "
           f"{available_cores()} cores):")
    for name in runs:
        target = "  (target 1.4x)" if name.endswith("fp32") else "  (target 2.5x)" if name.endswith("int8") else ""
        yield f"  {name:<14} {rate[name]:7.1f} chunks/s  ratio vs torch {rate[name] / rate['torch']:.2f}x{target}"
    sample = texts[:200]
    ref = model.encode(sample, batch_size=32, normalize_embeddings=True)
    cosines = []
    for name, embedder in paths.items():
        cos = (ref * embedder.embed_array(sample)).sum(axis=1)
        cosines.append(f"{name} mean {cos.mean():.4f} min {cos.min():.4f}")
    yield "cosine to torch on 200 abstracts: " + "; ".join(cosines)

    # 2. int8 quality: SciFact nDCG@10 over the 300 test queries, whole corpus.
    if not quality:
        return
    scores = {}
    for name in ("onnx-fp32", "onnx-int8", "openvino-int8"):
        with Timer() as t:
            scores[name] = ndcg_at_10(retrieve(paths[name], corpus, queries), qrels)
        yield (f"SciFact nDCG@10 ({len(corpus)} docs, {len(qrels)} queries), {paths[name].name}: "
               f"{scores[name]:.4f} ({t.seconds:.0f} s)"
               + ("" if name == "onnx-fp32" else f", loss vs fp32 {scores['onnx-fp32'] - scores[name]:+.4f} "
                  "(int8 may be the default only at <= 0.005)"))


def _index_and_query(corpus, titles, default) -> Iterator[str]:
    from kbindex.chunk import context_line
    from kbindex.store.chroma import Store

    # 4. Peak RSS of `kbindex index` (defaults, models cached) on 100 vs 400 pages.
    results = {}
    for count in (100, 400):
        folder = _html_folder(corpus, titles, count)
        db = WORK / f"embed-index-{count}"
        shutil.rmtree(db, ignore_errors=True)
        seconds, rss, out = run_kbindex("index", str(folder), "--db", str(db), "--json")
        results[count] = (seconds, rss, json.loads(out)["chunks_added"], db)
        yield (f"kbindex index {count} pages (defaults, models cached, fresh process): {seconds:.1f} s, "
                     f"{results[count][2]} chunks, peak RSS (all processes) {rss:.0f} MiB")
    yield (f"peak RSS 400 / 100 pages: {results[400][1] / results[100][1]:.2f}")

    # 2. The pipeline's overhead: `kbindex index` (fresh process, export cached) of a larger folder
    # against embedding alone of the very chunks it stored, in this process, all in one call
    # (sorted by length over the whole set: the least padding possible). A fixed probe is embedded
    # before and after, to show whether the load on the machine changed in between.
    folder = _html_folder(corpus, titles, PIPELINE_PAGES)
    db = WORK / f"embed-index-{PIPELINE_PAGES}"
    shutil.rmtree(db, ignore_errors=True)
    probe = list(corpus.values())[:200]
    with Timer() as before:
        default.embed(probe)
    seconds, rss, out = run_kbindex("index", str(folder), "--db", str(db), "--json")
    chunks = json.loads(out)["chunks_added"]
    matches = list(Store(db).collection("kbindex").scan(include_text=True))
    embed_texts = [f"{context_line(m.metadata['title'], m.metadata.get('section', ''))}\n\n{m.text}"
                   for m in matches]
    with Timer() as enc:
        default.embed(embed_texts)
    with Timer() as after:
        default.embed(probe)
    encode = enc.seconds
    yield (f"kbindex index {PIPELINE_PAGES} pages (fresh process, export cached): {seconds:.1f} s, "
           f"{chunks} chunks, {chunks / seconds:.1f} chunks/s, peak RSS (all processes) {rss:.0f} MiB "
           f"({rss / results[100][1]:.2f}x the 100-page run)")
    yield (f"{default.name} embedding alone of the same {len(embed_texts)} chunks in-process: {encode:.1f} s "
           f"({len(embed_texts) / encode:.1f} chunks/s; 200-abstract load probe {before.seconds:.1f} s "
           f"before, {after.seconds:.1f} s after)")
    yield (f"end to end / pure encoding: {encode / seconds:.2f}x (target 0.9x; includes process "
           "start, imports, opening Chroma and every write)")

    # 5. Cold `kbindex query`, fresh processes, alternating backends, on an fp32 collection (every
    # backend can query it), then on the default collection (static int8, OpenVINO only).
    db = results[100][3]
    run_kbindex("index", str(_html_folder(corpus, titles, 100)), "--db", str(db), "--collection", "fp32",
                "--quantize", "none", "--json")
    cold = {"openvino": [], "onnx": [], "torch": [], "default": []}
    for _ in range(3):
        for backend in cold:
            where = ["--collection", "fp32", "--backend", backend] if backend != "default" else []
            s, _, _ = run_kbindex("query", "cerebral white matter in newborns", "--db", str(db), *where, "--json")
            cold[backend].append(s)
    med = {b: statistics.median(v) for b, v in cold.items()}
    yield (f"cold kbindex query, fp32 collection (median of 3 fresh processes): openvino "
           f"{med['openvino']:.2f} s, onnx {med['onnx']:.2f} s, torch {med['torch']:.2f} s; ratio "
           f"torch/openvino {med['torch'] / med['openvino']:.2f}x, torch/onnx {med['torch'] / med['onnx']:.2f}x")
    yield f"cold kbindex query, default collection ({default.name}): {med['default']:.2f} s"
