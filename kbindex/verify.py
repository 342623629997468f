"""Reconcile the ledger with the store: find what disagrees and, with repair, fix it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kbindex.chunk import ChunkConfig
from kbindex.config import Settings
from kbindex.crawl import CrawlOptions
from kbindex.embed import Embedder
from kbindex.errors import KbindexError
from kbindex.index import _SCHEME, Indexer, Source, Summary
from kbindex.ledger import Entry
from kbindex.lexical import LexicalIndex


@dataclass
class Report:
    """What verify found (problems) and, with repair, what it did (actions)."""

    sources: int = 0
    chunks: int = 0
    problems: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    repaired: Summary | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"ok": self.ok, "sources": self.sources, "chunks": self.chunks,
                "problems": self.problems, "actions": self.actions}


@dataclass
class _Findings:
    orphans: list[str] = field(default_factory=list)  # chunk ids no ledger entry lists
    broken: list[Entry] = field(default_factory=list)  # entries with missing chunks, or dirty
    keyword_out_of_step: bool = False  # the BM25 index differs from the store


def verify(settings: Settings, repair: bool = False, wait: bool = False,
           embedder: Callable[[str], Embedder] | None = None) -> Report:
    """Check (and with repair, fix) one collection against its ledger.

    embedder(model_name) loads the model a repair needs to re-index; it is called only then.
    Repair takes the write lock; a plain check does not (it only reads).
    """
    indexer = Indexer(settings, None, wait=wait)
    if repair:
        indexer.lock.acquire()
    try:
        report, findings = _check(indexer)
        if repair and report.problems and findings is not None:
            _repair(indexer, report, findings, embedder)
            after, _ = _check(indexer)
            report.problems, report.sources, report.chunks = after.problems, after.sources, after.chunks
        return report
    finally:
        indexer.close()
        indexer.lock.release()


def _check(indexer: Indexer) -> tuple[Report, _Findings | None]:
    report = Report()
    entries = indexer.ledger.entries() if indexer.ledger.exists() else {}
    report.sources = len(entries)
    try:
        collection = indexer.store.collection(indexer.settings.collection)
        report.chunks = collection.count()
        stored = {m.id: m.metadata.get("source", "") for m in collection.scan()}
        dimension = collection.vector_length()
        if report.chunks:
            probe = [1.0] + [0.0] * ((dimension or collection.dimension or 1) - 1)
            collection.similar([probe], 1)
    except KbindexError as exc:
        report.problems.append(f"the store fails to open or answer: {exc}")
        return report, None
    indexer.collection = collection
    models = {e.model for e in entries.values() if e.model}
    if collection.model and models - {collection.model}:
        report.problems.append(
            f"model mismatch: the collection records {collection.model!r}, the ledger "
            f"{', '.join(sorted(models))} (re-embed with 'kbindex index --rebuild --model ...')")
    if dimension is not None and collection.dimension is not None and dimension != collection.dimension:
        report.problems.append(
            f"dimension mismatch: the collection records {collection.dimension}, "
            f"its vectors have {dimension} (rebuild it with 'kbindex index --rebuild')")
    findings = _Findings()
    listed = {i for e in entries.values() for i in e.chunk_ids}
    findings.orphans = sorted(set(stored) - listed)
    if findings.orphans:
        sources = sorted({stored[i] for i in findings.orphans})
        report.problems.append(
            f"{len(findings.orphans)} chunks in the store have no ledger entry "
            f"(from {len(sources)} sources, e.g. {sources[0]})")
    lexical = LexicalIndex.open(indexer.settings.db, indexer.settings.collection)
    try:
        different, extra = lexical.differences(collection)
    finally:
        lexical.close()
    if different or extra:
        findings.keyword_out_of_step = True
        report.problems.append(
            f"the keyword index is out of step with the store: {len(different)} chunks missing or "
            f"different, {len(extra)} that the store does not have")
    for entry in sorted(entries.values(), key=lambda e: e.source):
        missing = [i for i in entry.chunk_ids if i not in stored]
        if not entry.clean:
            report.problems.append(f"{entry.source}: an update was interrupted")
            findings.broken.append(entry)
        elif missing:
            report.problems.append(f"{entry.source}: {len(missing)} of its {len(entry.chunk_ids)} chunks "
                                   "are missing from the store")
            findings.broken.append(entry)
    return report, findings


def _repair(indexer: Indexer, report: Report, findings: _Findings,
            embedder: Callable[[str], Embedder] | None) -> None:
    if findings.orphans:
        indexer._delete_chunks(findings.orphans)
        indexer._finish()
        report.actions.append(f"deleted {len(findings.orphans)} chunks that no ledger entry lists")
    if findings.keyword_out_of_step:
        lexical = LexicalIndex.open(indexer.settings.db, indexer.settings.collection)
        copied, deleted = lexical.sync(indexer.collection)
        lexical.close()
        report.actions.append(f"keyword index: copied {copied} chunks from the store, deleted {deleted}")
    if not findings.broken:
        return
    if embedder is None:
        report.actions.append("cannot re-index without a model")
        return
    by_setup: dict[tuple[str, str], list[Entry]] = {}
    for entry in findings.broken:
        by_setup.setdefault((entry.model or indexer.collection.model or "", entry.chunking or ""), []).append(entry)
    for (model, chunking), entries in by_setup.items():
        # Forget the recorded hashes, so that each source is read and written again in full.
        for entry in entries:
            indexer.ledger.put(_dirty(entry))
        worker = Indexer(indexer.settings, embedder(model), config=_config(chunking),
                         lock=indexer.lock)
        worker.keep_roots = True
        with worker:
            worker.open()
            summary = worker.run([
                Source("url", e.source, options=CrawlOptions(depth=0)) if _SCHEME.match(e.source)
                else Source("file", e.source) for e in entries])
        report.repaired = summary
        report.actions.append(
            f"re-indexed {summary.indexed} sources ({summary.chunks_added} chunks written, "
            f"{summary.chunks_embedded} embedded), removed {summary.pruned} that are gone, "
            f"{summary.failed} failed")


def _dirty(entry: Entry) -> Entry:
    from dataclasses import replace

    return replace(entry, content_hash=None, body_hash=None, mtime=None, etag=None, last_modified=None)


def _config(signature: str) -> ChunkConfig:
    tokens, _, overlap = signature.partition("/")
    try:
        return ChunkConfig(int(tokens), int(overlap))
    except ValueError:
        from kbindex.config import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP

        return ChunkConfig(DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP)
