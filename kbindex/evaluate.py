"""Retrieval quality on a BEIR-layout data set: load it, index it, run its queries, score them.

The metrics follow their standard (trec_eval / BEIR) definitions over the queries that have at
least one relevant document in the split's qrels:

- nDCG@k: sum over the first k results of rel_i / log2(i + 1), divided by the same sum for the
  ideal order of all judged documents (gain = the qrels grade, as trec_eval's ndcg_cut).
- Recall@k: relevant documents among the first k, divided by all relevant documents.
- MRR@k: 1 / rank of the first relevant document within the first k, 0 when there is none.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kbindex.config import Settings
from kbindex.errors import UsageError
from kbindex.records import Document, Section, text_hash

Qrels = Mapping[str, Mapping[str, int]]  # query id -> {doc id: grade}
SOURCE_PREFIX = "beir:"  # a corpus entry's source is "beir:<data set>/<doc id>"
DEPTH = 100  # documents retrieved per query: enough for Recall@100


@dataclass(frozen=True)
class Dataset:
    """A BEIR data set: corpus, queries and one split's relevance judgements."""

    name: str
    path: Path
    corpus_file: Path
    queries: dict[str, str]  # id -> text, only the queries that have judgements
    qrels: dict[str, dict[str, int]]

    def documents(self) -> Iterator[Document]:
        """One Document per corpus entry: its title, and its text as a single section.

        An entry may carry `sections` (a kbindex extension that other BEIR readers ignore): a list of
        {"heading_path": [str, ...], "anchor": str | None, "text": str}; then those sections are
        indexed, with their heading paths, instead of `text`.
        """
        with self.corpus_file.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                entry = json.loads(line)
                text = str(entry.get("text") or "").strip()
                title = str(entry.get("title") or "").strip()
                if not text and not title:
                    continue
                yield Document(
                    source=f"{SOURCE_PREFIX}{self.name}/{entry['_id']}",
                    title=title,
                    sections=_sections(entry.get("sections")) or (Section((), text or title),),
                )

    def corpus_size(self) -> int:
        with self.corpus_file.open(encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())


def _sections(value) -> tuple[Section, ...]:
    """The optional `sections` of a corpus entry; () when absent or malformed."""
    if not isinstance(value, list):
        return ()
    sections = []
    for item in value:
        if not isinstance(item, dict) or not str(item.get("text") or "").strip():
            continue
        path = item.get("heading_path") or []
        anchor = item.get("anchor")
        sections.append(Section(tuple(str(h) for h in path if str(h).strip()) if isinstance(path, list) else (),
                                str(item["text"]).strip(), str(anchor) if anchor else None))
    return tuple(sections)


def load_dataset(path: Path, split: str = "test") -> Dataset:
    """Read corpus.jsonl, queries.jsonl and qrels/<split>.tsv; UsageError when they are missing."""
    path = Path(path)
    corpus = path / "corpus.jsonl"
    queries_file = path / "queries.jsonl"
    qrels_file = path / "qrels" / f"{split}.tsv"
    for needed in (corpus, queries_file, qrels_file):
        if not needed.is_file():
            raise UsageError(f"{path} is not a BEIR data set: {needed.name} is missing "
                             "(expected corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_file.open(encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            try:
                grade = int(float(row[2]))
            except ValueError:
                continue
            qrels.setdefault(row[0], {})[row[1]] = grade
    queries: dict[str, str] = {}
    with queries_file.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                entry = json.loads(line)
                if str(entry["_id"]) in qrels:
                    queries[str(entry["_id"])] = str(entry["text"])
    judged = {q: docs for q, docs in qrels.items() if q in queries and any(g > 0 for g in docs.values())}
    if not judged:
        raise UsageError(f"no query in {qrels_file} has a relevant document and a text in {queries_file}")
    name = re.sub(r"[^a-zA-Z0-9-]+", "-", path.resolve().name).strip("-").lower() or "beir"
    return Dataset(name, path, corpus, {q: queries[q] for q in judged}, judged)


def parse_weights(text: str) -> tuple[float, float, float]:
    """"TITLE,HEADINGS,BODY" -> three non-negative floats (the keyword index's bm25() weights);
    UsageError otherwise."""
    parts = [p.strip() for p in text.split(",")]
    try:
        weights = tuple(float(p) for p in parts)
    except ValueError:
        weights = ()
    if len(weights) != 3 or any(w < 0 or w != w for w in weights) or not any(weights):
        raise UsageError(f"--field-weights needs three numbers >= 0 as TITLE,HEADINGS,BODY, got {text!r}")
    return weights  # type: ignore[return-value]


@dataclass(frozen=True)
class SelfQueries:
    """Queries made from a collection's own page titles and section headings (`kbindex eval --self`)."""

    name: str
    queries: dict[str, str]  # id -> the title or heading text
    qrels: dict[str, dict[str, int]]  # id -> {source: 1}: the one page it names


def self_queries(metadatas: Iterable[Mapping], name: str, sample: int = 200, seed: int = 0) -> SelfQueries:
    """Sample titles and headings of a collection's chunks as queries judged by their own page.

    metadatas: the chunks' metadata (source, title, section "A > B"). A heading path contributes
    its last heading (what a reader would type). Only texts found in one source are kept: a
    heading such as "Overview" that many pages share names no one page. The metrics this gives are
    an optimistic upper bound: the query's words are in its page's own title or headings, which
    the keyword index matches. UsageError when the collection has no usable title or heading.
    """
    import random

    found: dict[str, set[str]] = {}
    for meta in metadatas:
        source = str(meta.get("source") or "")
        if not source:
            continue
        section = str(meta.get("section") or "")
        for text in (str(meta.get("title") or ""), section.rsplit(" > ", 1)[-1] if section else ""):
            text = " ".join(text.split())
            if len(text) >= 3 and any(ch.isalpha() for ch in text):
                found.setdefault(text, set()).add(source)
    usable = sorted((text, next(iter(sources))) for text, sources in found.items() if len(sources) == 1)
    if not usable:
        raise UsageError(f"collection {name!r} has no page title or section heading that names one page")
    picked = random.Random(seed).sample(usable, min(sample, len(usable)))
    return SelfQueries(name, {f"self-{n}": text for n, (text, _) in enumerate(picked)},
                       {f"self-{n}": {source: 1} for n, (_, source) in enumerate(picked)})


def collection_name(dataset: str, model: str, chunk_tokens: int, overlap: int) -> str:
    """The eval collection for a data set, model and chunk settings, e.g. eval-scifact-all-minilm-l6-v2-…"""
    stem = re.sub(r"[^a-z0-9]+", "-", Path(model).name.lower()).strip("-") or "model"
    return f"eval-{dataset}-{stem}-{text_hash(model)[:6]}-c{chunk_tokens}o{overlap}"


def doc_id(source: str) -> str:
    """The corpus id of a chunk's source ("beir:scifact/4983" -> "4983"; an id may hold slashes:
    "beir:python-manual/library/os.html" -> "library/os.html"). The data set's name has none."""
    if not source.startswith(SOURCE_PREFIX):
        return source
    return source[len(SOURCE_PREFIX):].split("/", 1)[-1]


# -- metrics -----------------------------------------------------------------------------------


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    wanted = {d for d, g in relevant.items() if g > 0}
    return len(wanted.intersection(ranked[:k])) / len(wanted) if wanted else 0.0


def mrr_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    for i, d in enumerate(ranked[:k]):
        if relevant.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


METRICS: dict[str, Callable[[Sequence[str], Mapping[str, int]], float]] = {
    "ndcg@10": lambda r, q: ndcg_at(r, q, 10),
    "recall@10": lambda r, q: recall_at(r, q, 10),
    "recall@100": lambda r, q: recall_at(r, q, 100),
    "mrr@10": lambda r, q: mrr_at(r, q, 10),
}


def score_run(run: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """Each metric averaged over the judged queries (a query missing from run scores 0)."""
    judged = [q for q, docs in qrels.items() if any(g > 0 for g in docs.values())]
    if not judged:
        return {name: 0.0 for name in METRICS}
    return {
        name: sum(metric(run.get(q, []), qrels[q]) for q in judged) / len(judged)
        for name, metric in METRICS.items()
    }


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# -- running -----------------------------------------------------------------------------------


@dataclass
class ModeResult:
    mode: str
    metrics: dict[str, float]
    latency_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "mode": self.mode,
            **{k: round(v, 4) for k, v in self.metrics.items()},
            "latency_p50_ms": round(percentile(self.latency_ms, 50), 2),
            "latency_p95_ms": round(percentile(self.latency_ms, 95), 2),
        }


def ensure_indexed(dataset: Dataset, settings: Settings, embedder, config,
                   progress: Callable[[str], None] | None = None) -> tuple[str, bool]:
    """Index the corpus into its eval collection unless already there; (collection, reused)."""
    from kbindex.indexing.runner import Indexer
    from kbindex.store import Index

    name = settings.collection
    index = Index.from_settings(settings)
    if index.exists():
        collection = index.collection()
        collection.check_model(embedder.name)
        sources = {m.metadata.get("source") for m in collection.scan()}
        if len(sources) == dataset.corpus_size() and all(
            s.startswith(f"{SOURCE_PREFIX}{dataset.name}/") for s in sources
        ):
            index.heal()
            index.close()
            return name, True
    if progress:
        progress(f"indexing {dataset.corpus_size()} documents of {dataset.name} into collection {name} "
                 f"in {index.location} (once; later runs reuse it)")
    with Indexer(settings, embedder, config) as indexer:
        indexer.open()
        indexer.add_documents(dataset.documents(), root=f"{SOURCE_PREFIX}{dataset.name}/")
    return name, False


def evaluate(dataset: Dataset | SelfQueries, searcher, modes: Sequence[str], depth: int = DEPTH) -> list[ModeResult]:
    """Run every judged query in each mode; document rankings are the best chunk per document.

    searcher(queries, k, mode) -> list of hit lists (collapsed to one hit per document).
    """
    ids = list(dataset.queries)
    texts = [dataset.queries[q] for q in ids]
    results = []
    for mode in modes:
        searcher(texts[:1], depth, mode)  # warm-up: first-call costs are not query latency
        run: dict[str, list[str]] = {}
        latencies: list[float] = []
        for qid, text in zip(ids, texts):
            start = time.perf_counter()
            hits = searcher([text], depth, mode)[0]
            latencies.append((time.perf_counter() - start) * 1000)
            run[qid] = [doc_id(h.source) for h in hits]
        results.append(ModeResult(mode, score_run(run, dataset.qrels), latencies))
    return results

