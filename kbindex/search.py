"""Query -> Hits: vector (Chroma), keyword (BM25 in the lexical index) or hybrid (both, fused)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kbindex.embedding import Embedder
from kbindex.errors import CollectionError, UsageError
from kbindex.normalize import normalize_text
from kbindex.records import Hit
from kbindex.store import Index
from kbindex.store.chroma import Collection, Match
from kbindex.store.lexical import LexicalIndex, LexicalMatch

MODES = ("hybrid", "vector", "keyword")
DEFAULT_MODE = "hybrid"
RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al. 2009), the usual default
# Chunks each retriever contributes to the fusion: deeper lists let a document that one retriever
# ranks low still gain from the other (measured on SciFact, docs/benchmarks.md).
CANDIDATES = 100
DEFAULT_PER_DOC = 1
MAX_RESULTS_PER_CALL = 10_000  # hits per document shown to people; 0 keeps every chunk


def parse_where(pairs: Sequence[str]) -> dict | None:
    """KEY=VALUE filters as a Chroma where clause (all must match)."""
    clauses = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--where needs KEY=VALUE, got {pair!r}")
        clauses.append({key.strip(): _typed(value)})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _typed(value: str):
    """Numbers compare as numbers in Chroma metadata: position=0 must match the int 0."""
    if value.lstrip("-").isdigit():
        return int(value)
    return value


@dataclass
class _Candidate:
    id: str
    text: str
    metadata: dict
    cosine: float | None = None
    bm25: float | None = None
    vector_rank: int | None = None
    keyword_rank: int | None = None
    fused: float = 0.0


def search(
    collection: Collection,
    embedder: Embedder | None,
    queries: Sequence[str],
    k: int = 5,
    where: dict | None = None,
    mode: str = DEFAULT_MODE,
    per_doc: int = DEFAULT_PER_DOC,
    lexical: LexicalIndex | None = None,
    candidates: int = CANDIDATES,
    rrf_k: int = RRF_K,
) -> list[list[Hit]]:
    """The k best hits for each query, best first.

    Args:
        mode: "hybrid" fuses the vector and keyword rankings by reciprocal rank; "vector" and
            "keyword" use one retriever.
        per_doc: at most this many hits from one document (source); 0 for no limit.
        lexical: the collection's keyword index (opened from the collection's folder when None).
        candidates: chunks taken from each retriever before fusion and per-document collapsing.
        rrf_k: the reciprocal rank fusion constant: a hit at rank r adds 1 / (rrf_k + r).
    """
    for q in queries:
        if not q.strip():
            raise UsageError("empty query: give some text to search for")
    if k < 1:
        raise UsageError("-k must be at least 1")
    if per_doc < 0:
        raise UsageError("--per-doc must be 0 (no limit) or more")
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    if mode == "keyword" and lexical is None:
        # Keyword search reads only the keyword index, so that a damaged vector index (which can
        # crash the process that loads it) does not stop it; Chroma is read only to fill a keyword
        # index that is empty or was left mid-write.
        index = Index.of(collection)
        lexical = index.keywords()
        if lexical.dirty or lexical.count() == 0:
            lexical = index.lagging_keywords()
    if (lexical.count() if mode == "keyword" else collection.count()) == 0:
        raise CollectionError(
            f"collection {collection.name!r} is empty: run 'kbindex index SOURCE' first"
        )
    queries = [normalize_text(q) for q in queries]  # as the indexed text is (kbindex.normalize)
    # Enough chunks that collapsing to per_doc per document still leaves k documents in most cases.
    depth = k * 3 if per_doc else k
    if mode == "hybrid":
        depth = max(depth, candidates)
    vector_lists: list[list[Match]] = [[] for _ in queries]
    keyword_lists: list[list[LexicalMatch]] = [[] for _ in queries]
    lexical = lexical or open_lexical(collection)
    keyword_job = None
    if mode == "hybrid":
        # BM25 (SQLite) and the query embedding (torch) both release the GIL: run them side by side.
        keyword_job = _executor().submit(lambda: [lexical.search(q, depth, where) for q in queries])
    if mode in ("vector", "hybrid"):
        if embedder is None:
            raise ValueError(f"mode {mode!r} needs an embedder")
        collection.check_model(embedder.name)
        vectors = embedder.embed(list(queries))
        # Chroma fetches all results of one call in a single SQL statement, which allows some
        # 32,000 variables: split a large batch of queries to stay well below that.
        step = max(1, MAX_RESULTS_PER_CALL // depth)
        vector_lists = [
            matches
            for start in range(0, len(vectors), step)
            for matches in collection.similar(vectors[start:start + step], depth, where, include_text=False)
        ]
        if keyword_job is not None:
            keyword_job.result()  # the connection is free again before it is read below
        vector_lists = _with_text(vector_lists, collection, lexical)
    if keyword_job is not None:
        keyword_lists = keyword_job.result()
    elif mode == "keyword":
        keyword_lists = [lexical.search(q, depth, where) for q in queries]
    return [
        _rank(_fuse(v, kw, rrf_k), mode, k, per_doc)
        for v, kw in zip(vector_lists, keyword_lists)
    ]


_EXECUTOR = None


def _executor():
    global _EXECUTOR
    if _EXECUTOR is None:
        from concurrent.futures import ThreadPoolExecutor

        _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kbindex-keyword")
    return _EXECUTOR


def _with_text(lists: list[list[Match]], collection: Collection, lexical: LexicalIndex) -> list[list[Match]]:
    """Fill in text and metadata of vector matches from the keyword index (one SQLite read);
    chunks it lacks (an index run in progress) are read from Chroma."""
    wanted = list(dict.fromkeys(m.id for matches in lists for m in matches))
    stored = lexical.stored(wanted)
    missing = [i for i in wanted if i not in stored]
    if missing:
        stored.update((m.id, (m.text, m.metadata)) for m in collection.get(ids=missing, include_text=True))
    return [
        [Match(m.id, m.distance, *stored.get(m.id, ("", {}))) for m in matches]
        for matches in lists
    ]


def open_lexical(collection: Collection) -> LexicalIndex:
    """The collection's keyword index, rebuilt from Chroma when it lags and no index run is
    active (store.Index.lagging_keywords)."""
    return Index.of(collection).lagging_keywords()


def _fuse(vector: list[Match], keyword: list[LexicalMatch], rrf_k: int = RRF_K) -> list[_Candidate]:
    """Candidates from both lists with reciprocal-rank fused scores, best first."""
    found: dict[str, _Candidate] = {}
    for rank, m in enumerate(vector, 1):
        c = found.setdefault(m.id, _Candidate(m.id, m.text, m.metadata))
        c.cosine, c.vector_rank = round(1.0 - m.distance, 6), rank
        c.fused += 1.0 / (rrf_k + rank)
    for rank, m in enumerate(keyword, 1):
        c = found.setdefault(m.id, _Candidate(m.id, m.text, m.metadata))
        c.bm25, c.keyword_rank = m.score, rank
        c.fused += 1.0 / (rrf_k + rank)
    # Ties (same fused score) keep the vector order, then the keyword order.
    return sorted(found.values(), key=lambda c: (-c.fused, c.vector_rank or 10**9, c.keyword_rank or 10**9))


def _rank(candidates: list[_Candidate], mode: str, k: int, per_doc: int) -> list[Hit]:
    hits: list[Hit] = []
    per_source: dict[str, int] = {}
    for c in candidates:
        source = str(c.metadata.get("source", ""))
        if per_doc:
            if per_source.get(source, 0) >= per_doc:
                continue
            per_source[source] = per_source.get(source, 0) + 1
        hits.append(_hit(len(hits) + 1, c, mode))
        if len(hits) == k:
            break
    return hits


def _hit(rank: int, c: _Candidate, mode: str) -> Hit:
    meta = c.metadata
    score = {"vector": c.cosine, "keyword": c.bm25}.get(mode, round(c.fused, 6))
    return Hit(
        rank=rank,
        score=float(score or 0.0),
        id=c.id,
        source=str(meta.get("source", "")),
        title=str(meta.get("title", "")),
        section=str(meta.get("section", "")),
        text=c.text,
        anchor=meta.get("anchor"),
        metadata=dict(meta),
        vector_rank=c.vector_rank,
        keyword_rank=c.keyword_rank,
    )

