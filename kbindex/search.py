"""Query -> Hits."""

from __future__ import annotations

from collections.abc import Sequence

from kbindex.embed import Embedder
from kbindex.errors import CollectionError, UsageError
from kbindex.records import Hit
from kbindex.store import Collection, Match


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


def search(
    collection: Collection,
    embedder: Embedder,
    queries: Sequence[str],
    k: int = 5,
    where: dict | None = None,
) -> list[list[Hit]]:
    """The k best hits for each query, best first."""
    for q in queries:
        if not q.strip():
            raise UsageError("empty query: give some text to search for")
    if k < 1:
        raise UsageError("-k must be at least 1")
    if collection.count() == 0:
        raise CollectionError(
            f"collection {collection.name!r} is empty: run 'kbindex index SOURCE' first"
        )
    collection.check_model(embedder.name)
    vectors = embedder.embed(list(queries))
    return [[_hit(rank, m) for rank, m in enumerate(matches, 1)] for matches in collection.similar(vectors, k, where)]


def _hit(rank: int, match: Match) -> Hit:
    meta = match.metadata
    return Hit(
        rank=rank,
        score=round(1.0 - match.distance, 6),
        id=match.id,
        source=str(meta.get("source", "")),
        title=str(meta.get("title", "")),
        section=str(meta.get("section", "")),
        text=match.text,
        anchor=meta.get("anchor"),
        metadata=dict(meta),
        vector_rank=rank,
    )
