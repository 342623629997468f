"""Dry run: the index run itself (runner.Indexer) with a writer that writes nothing.

Every decision (duplicate URLs collapsed, duplicate texts skipped, skipped or failed pages) is
made by the same loop as in a real run; only the writer differs: PlanWriter chunks each document
to count its chunks and reports it written, with no embedding and no store or ledger write. The
run neither takes the write lock nor reads the index, so pages are judged as by a first run into
a new collection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kbindex.chunk import ChunkConfig, chunk_document
from kbindex.config import DEFAULT_MAX_BYTES, Settings
from kbindex.embedding import Embedder
from kbindex.fetch import Fetcher
from kbindex.indexing.runner import Indexer
from kbindex.indexing.sources import Source
from kbindex.indexing.summary import Summary
from kbindex.indexing.writer import Written
from kbindex.records import Document, Failed, Indexed, Page, Skipped, SourceEvent
from kbindex.store.ledger import Entry


@dataclass(frozen=True)
class PlanEntry:
    """One line of a dry run: what would happen to a page."""

    action: str  # "index" | "skip" | "fail"
    source: str
    detail: str  # the title for "index", the reason otherwise
    chunks: int = 0
    kind: str = ""  # the skip or failure reason kind


class PlanWriter:
    """Stands where writer.Writer stands in a run (queue, drain, close) and writes nothing.

    queue() chunks the document with the model's tokenizer (no embedding) and reports it to
    on_written at once as one clean entry with its chunk count; `titles` keeps each title by
    source for the plan's lines.
    """

    def __init__(self, count_tokens: Callable[[Sequence[str]], list[int]], config: ChunkConfig,
                 on_written: Callable[[Written], None]):
        self.count_tokens = count_tokens
        self.config = config
        self.on_written = on_written
        self.indexed_at: str | None = None  # set by Indexer, as on Writer; unused here
        self.adopt = False
        self.titles: dict[str, str] = {}

    def queue(self, root: str, page: Page, body_hash: str | None, doc: Document, entry: Entry | None) -> None:
        chunks = chunk_document(doc, self.count_tokens, self.config)
        self.titles[doc.source] = doc.title
        entry = Entry(source=doc.source, root=root, title=doc.title, chunk_ids=tuple(c.id for c in chunks))
        self.on_written(Written([entry], len(chunks), 0, 0))

    def drain(self) -> None:
        pass

    def close(self) -> None:
        pass


def dry_run(
    settings: Settings,
    embedder: Embedder,
    config: ChunkConfig,
    sources: Sequence[Source],
    fetcher: Fetcher,
    on_plan: Callable[[PlanEntry], None],
    max_bytes: int = DEFAULT_MAX_BYTES,
    workers: int | None = None,
) -> Summary:
    """Run `sources` as `Indexer.run` would, writing nothing; call on_plan with each page's fate
    (index, skip or fail) in the order the run decides it, and return the run's Summary.

    Pages are fetched (a crawl has to read them to find links), extracted and chunked; nothing is
    embedded, and nothing under settings.db is read, created or written. Raises what
    `Indexer.run` raises for a source as a whole (UsageError, for instance).
    """
    writers: list[PlanWriter] = []

    def make_writer(on_written: Callable[[Written], None]) -> PlanWriter:
        writers.append(PlanWriter(embedder.count_tokens, config, on_written))
        return writers[0]

    indexer: Indexer

    def on_event(event: SourceEvent) -> None:
        summary = indexer.summary
        # Indexer lists a skip or failure in the summary just before it reports the event.
        if isinstance(event, Indexed):
            on_plan(PlanEntry("index", event.source, writers[0].titles[event.source], event.chunks))
        elif isinstance(event, Skipped):
            row = summary.skips[-1]
            on_plan(PlanEntry("skip", row["source"], row["reason"], kind=row["kind"]))
        elif isinstance(event, Failed):
            row = summary.failures[-1]
            on_plan(PlanEntry("fail", row["source"], row["reason"], kind=row["kind"]))

    with Indexer(settings, embedder, config, on_event=on_event, fetcher=fetcher, max_bytes=max_bytes,
                 prune=False, workers=workers, dry_writer=make_writer) as indexer:
        return indexer.run(sources)
