"""The index run: pages from sources, through change detection, to the writer; and its summary.

Indexer is the loop a page travels: read or fetched (sources.py), skipped when the ledger says it
is unchanged (sync.py), extracted in worker processes (pipeline.ExtractAhead), checked for a
duplicate text, then chunked, embedded and written (writer.py); at the end, what a complete walk no
longer reached is pruned. A dry run (plan.py) is this same loop with a writer that writes nothing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from kbindex.chunk import ChunkConfig
from kbindex.config import DEFAULT_MAX_BYTES, Settings
from kbindex.crawl import url_identity
from kbindex.embedding import Embedder
from kbindex.errors import FetchError, SkipSource, SourceError, UnreadableFolder, UsageError
from kbindex.extract import extract_or_error
from kbindex.fetch import Fetcher
from kbindex.indexing.sources import Source, collapse, is_url, iter_pages
from kbindex.indexing.summary import Summary
from kbindex.indexing.sync import (
    LedgerMemory,
    bind,
    gone,
    is_current,
    matching,
    page_facts,
    walk_complete,
)
from kbindex.indexing.writer import Writer, Written, pause
from kbindex.pipeline import ExtractAhead, default_workers
from kbindex.records import Document, Failed, Indexed, Page, Pruned, Skipped, SourceEvent, Unchanged
from kbindex.store import Index
from kbindex.store.chroma import Collection
from kbindex.store.ledger import Entry
from kbindex.store.lock import WriteLock

__all__ = ["Event", "Indexer", "Summary"]  # Summary: imported from here by maintenance and verify


Event = Callable[[SourceEvent], None]  # records.Indexed, Unchanged, Skipped, Failed, Pruned


class Indexer:
    """Runs sources through the pipeline into one collection, keeping the ledger in step.

    Call open() (takes the write lock), run() any number of times, then close(). Raises
    ModelMismatchError (another model's collection), LockedError (another writer), StoreError.

    Over 200 lines because it is one run's state (entries, names and texts seen, crawl memories)
    that every step of the loop reads and updates: the rules themselves live in sync.py and the
    writing in writer.py.
    """

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder | None,
        config: ChunkConfig | None = None,
        on_event: Event | None = None,
        fetcher: Fetcher | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        prune: bool = True,
        wait: bool = False,
        lock: WriteLock | None = None,
        workers: int | None = None,
        dry_writer: Callable[[Callable[[Written], None]], Writer] | None = None,
    ):
        self.max_bytes = max_bytes
        self.workers = workers or default_workers()  # extraction processes (1: in this process)
        self.settings = settings
        self.embedder = embedder
        self.config = config
        self.on_event = on_event or (lambda event: None)
        self.fetcher = fetcher
        self.prune = prune
        self.keep_roots = False  # verify --repair re-indexes single sources without re-rooting them
        self.summary = Summary()
        self.index = Index.from_settings(settings)
        self.store = self.index.store
        self.ledger = self.index.ledger
        self.lock = lock or WriteLock(settings.db, wait=wait)
        self._own_lock = lock is None
        self._writer: Writer | None = None  # made on first use (deleting needs no model)
        # A dry run: this writer (given on_written) instead of Writer, no lock, and the store and
        # ledger neither read nor written, so every page is judged as by a run into a new collection.
        self._dry_writer = dry_writer
        self._seen: set[str] = set()
        self._unreadable: list[str] = []  # folders a walk could not list: nothing under them is pruned
        self._seen_keys: dict[str | None, str] = {}  # URL identity (crawl.url_identity) -> name seen
        self._entries: dict[str, Entry] = {}
        self._adopt = False
        self._dimension_checked = False
        self._indexed_at: str | None = None
        self._texts: dict[str, str] = {}  # content hash -> first source with that text
        self._memories: dict[str, LedgerMemory] = {}  # crawl root -> its memory (this run)
        self._identities: dict[str | None, str] | None = None  # URL identity -> entry key, when asked
        self.collection: Collection | None = None

    def open(self, create: bool = True) -> Collection:
        """Take the write lock, then open the collection (creating it, recording the model).

        The model is loaded here only when the collection must be created (its dimension is
        recorded); otherwise the first batch to embed checks the dimension.
        """
        if self._dry_writer is not None:
            self._entries = {}
            return self.collection
        self.lock.acquire()
        try:
            name = self.settings.collection
            if name in self.store.collection_names() or not create:
                self.collection = self.store.collection(name)
                if self.embedder is not None:
                    self.collection.check_model(self.embedder.name)
            else:
                self.collection = self.index.create(self.embedder.name, self.embedder.dimension)
                self._dimension_checked = True
            self._entries = self.ledger.entries()
            count = self.collection.count()
            if self._entries and count == 0:
                # The collection was deleted or emptied behind the ledger's back: what the ledger
                # says was indexed is not there, so everything is indexed again.
                self.ledger.drop_scope()
                self._entries = {}
            # A store filled before the ledger existed: find old chunks by their source metadata.
            self._adopt = not self._entries and count > 0
            bind(self.collection, self.ledger)
            self.index.use(self.collection)
            # The keyword index follows Chroma; an interrupted earlier run is healed from Chroma.
            self.index.heal()
        except BaseException:
            self.close()
            raise
        return self.collection

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()  # batches not written are dropped: their ledger entries are not begun
        self.index.close()
        if self._own_lock and self._dry_writer is None:
            self.lock.release()

    def __enter__(self) -> Indexer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def writer(self) -> Writer:
        """The write path of this run (store.Index through WriteOrder), made on first use."""
        if self._writer is None and self._dry_writer is not None:
            self._writer = self._dry_writer(self._written)
        elif self._writer is None:
            self._writer = Writer(self.index, self.embedder, self.config, self._written,
                                  dimension_checked=self._dimension_checked)
        self._writer.indexed_at = self._indexed_at
        self._writer.adopt = self._adopt
        return self._writer

    # -- indexing -------------------------------------------------------------------------------

    def run(self, sources: Sequence[Source]) -> Summary:
        if self.config is None:
            raise ValueError("Indexer.config must be set before run()")
        self._indexed_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        dry = self._dry_writer is not None
        if self.collection is None:
            self.open()
        fetcher = self.fetcher or Fetcher()
        # Pages that must be extracted go to worker processes as they arrive; every page is then
        # taken in the order it arrived, as if it had been extracted here.
        extractor = ExtractAhead(extract_or_error, self.workers)
        try:
            for source, name, item in iter_pages(sources, fetcher, self.max_bytes, self._validators,
                                                 None if dry else self._memory, self._stored_name):
                key = url_identity(name) if is_url(name) else name
                if name in self._seen or key in self._seen_keys:
                    self._collapsed(source, name, self._seen_keys.get(key, name), item)
                    continue
                self._seen.add(name)
                self._seen_keys[key] = name
                wanted, body_hash = self._triage(item) if isinstance(item, Page) else (False, None)
                for payload, extracted in extractor.submit((source, item, body_hash), item if wanted else None):
                    self._take(*payload, extracted)
            for payload, extracted in extractor.drain():
                self._take(*payload, extracted)
            self.writer.drain()
            for source in sources:
                if source.crawl is not None:
                    self.summary.add_crawl(source.crawl)
            if dry:
                return self.summary
            if self.prune:
                self._prune_roots(sources)
            for source in sources:
                memory = self._memories.pop(source.value, None)
                if memory is not None and source.complete:
                    # Visits of pages the finished crawl no longer reached are of no use now.
                    self.ledger.prune_visits(source.value, memory.touched)
            self.index.finish()
            if self.summary.chunks_added or self.summary.chunks_deleted:
                self.ledger.collect_garbage()
        finally:
            extractor.close()
            if self.fetcher is None:
                fetcher.close()
        return self.summary

    def add_documents(self, docs: Iterable[Document], root: str) -> Summary:
        """Index documents made elsewhere (kbindex eval's corpus entries) like extracted pages."""
        if self.config is None:
            raise ValueError("Indexer.config must be set before add_documents()")
        self._indexed_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.collection is None:
            self.open()
        for doc in docs:
            self.summary.sources += 1
            entry = self._entries.get(doc.source)
            if self._current(entry) and entry.content_hash == doc.content_hash:
                self.summary.unchanged += 1
                continue
            self._queue(root, Page(source=doc.source, body=b""), None, doc, entry)
        self.writer.drain()
        self.index.finish()
        return self.summary

    def _current(self, entry: Entry | None) -> bool:
        """The entry is complete and was made with this model and these chunk settings."""
        return is_current(entry, self.embedder.name, self.config.signature())

    def _validators(self, url: str) -> tuple[str | None, str | None]:
        entry = self._entries.get(url)
        if not self._current(entry):
            return None, None  # must be fetched in full: nothing (valid) to compare with
        return entry.etag, entry.last_modified

    def _stored_name(self, name: str) -> str:
        """The key this index keeps a page under: an entry with the same URL identity as `name`
        (crawl.url_identity) when there is one (made when names had another form: query
        parameters sorted, escapes decoded), else `name`."""
        if name in self._entries or not is_url(name):
            return name
        if self._identities is None:
            self._identities = {url_identity(k): k for k in self._entries if is_url(k)}
        return self._identities.get(url_identity(name), name)

    def _collapsed(self, source: Source, name: str, first: str, item: Page | SourceError) -> None:
        skip = collapse(source, name, first, item)
        if skip is not None:  # reported only: no entry is touched
            self.summary.skipped += 1
            self.summary.skips.append({"source": skip.source, "reason": skip.reason, "kind": skip.kind})
            self.on_event(Skipped(skip.source, skip.reason))

    def _memory(self, source: Source) -> LedgerMemory:
        memory = self._memories[source.value] = LedgerMemory(
            self.ledger, source.value, self._current, self._indexed_at, keep_root=self.keep_roots)
        return memory

    def _take(self, source: Source, item: Page | SourceError, body_hash: str | None,
              extracted: Document | SourceError | None) -> None:
        """One page (or the error that replaced it) of the run, in arrival order."""
        pause("page")
        self.summary.sources += 1
        if isinstance(item, SourceError):
            self._record(source, item)
        else:
            self._add_page(source, item, body_hash, extracted)

    def _triage(self, page: Page) -> tuple[bool, str | None]:
        """Whether the page must be extracted (it is not known unchanged), and its body's hash."""
        entry = self._entries.get(page.source)
        current = self._current(entry)
        if page.status == 304:
            return False, None
        if current and page.size is not None and entry.mtime is not None and (
            entry.size, entry.mtime) == (page.size, page.mtime):
            return False, None
        body_hash = hashlib.sha256(page.body).hexdigest()[:32]
        return not (current and body_hash == entry.body_hash), body_hash

    def _add_page(self, source: Source, page: Page, body_hash: str | None,
                  doc: Document | SourceError | None) -> None:
        """Index a page unless it is unchanged. `body_hash` and `doc` (its extract() result, None
        where _triage found it unchanged) were worked out when the page arrived: its ledger entry
        cannot change before its turn, as each source is taken once a run."""
        entry = self._entries.get(page.source)
        current = self._current(entry)
        if page.status == 304 and not current:
            self._record(source, FetchError(page.source, "HTTP 304 to an unconditional request",
                                            kind="http_304", status=304))
            return
        if doc is None:
            self._unchanged(source, entry, page, entry.body_hash)
            return
        if isinstance(doc, SourceError):
            self._record(source, doc)
            return
        if current and doc.content_hash == entry.content_hash:
            self._unchanged(source, entry, page, body_hash)
            return
        first = self._texts.setdefault(doc.content_hash, doc.source)
        if first != doc.source:  # the same article under another URL or file name
            self._record(source, SkipSource(doc.source, f"same text as {first}", kind="duplicate"))
            return
        self._queue(self._root(source, entry), page, body_hash, doc, entry)

    def _root(self, source: Source, entry: Entry | None) -> str:
        return entry.root if self.keep_roots and entry is not None else source.value

    def _queue(self, root: str, page: Page, body_hash: str | None, doc: Document, entry: Entry | None) -> None:
        self.writer.queue(root, page, body_hash, doc, entry)

    def _written(self, written: Written) -> None:
        for entry in written.entries:
            self._entries[entry.source] = entry
            self.summary.indexed += 1
            self.on_event(Indexed(entry.source, len(entry.chunk_ids)))
        self.summary.chunks_added += written.chunks_added
        self.summary.chunks_embedded += written.chunks_embedded
        self.summary.chunks_deleted += written.chunks_deleted

    def _unchanged(self, source: Source, entry: Entry, page: Page, body_hash: str | None) -> None:
        self._texts.setdefault(entry.content_hash, entry.source)
        self.summary.unchanged += 1
        self.on_event(Unchanged(entry.source))
        facts = replace(entry, root=self._root(source, entry), body_hash=body_hash, last_error=None,
                        **page_facts(page, entry))
        if facts != entry:  # e.g. touched but identical, new validators, an error cleared
            self.ledger.put(facts)
            self._entries[entry.source] = facts

    # -- errors and removal ---------------------------------------------------------------------

    def _record(self, source: Source, error: SourceError) -> None:
        if isinstance(error, UnreadableFolder):
            self._unreadable.append(error.source)
        entry = self._entries.get(error.source)
        pruned = False
        if entry is not None:
            if self.prune and gone(error):
                self._remove([entry], reason=error.reason, kind=error.kind)
                pruned = True
            else:  # keep what was indexed; transient or not, the source may come back
                failed = replace(entry, last_error=error.reason)
                self.ledger.put(failed)
                self._entries[entry.source] = failed
        if pruned and not isinstance(error, SkipSource):
            # A page that answers 404/410, a file deleted meanwhile: the source says it is gone,
            # and removing it is the normal end of an article, not a failure (counted in pruned).
            return
        entry = {"source": error.source, "reason": error.reason, "kind": error.kind}
        # A file skipped inside a folder is reported and the run goes on; a source named
        # explicitly that yields nothing is a failure of what the user asked for, unless what it
        # replaced was removed for it (a soft 404, a file that became empty).
        if isinstance(error, SkipSource) and (pruned or not source.explicit(error.source, error.kind)):
            self.summary.skipped += 1
            self.summary.skips.append(entry)
            self.on_event(Skipped(error.source, error.reason))
        else:
            self.summary.failed += 1
            self.summary.failures.append(entry)
            self.on_event(Failed(error.source, error.reason))

    def _prune_roots(self, sources: Sequence[Source]) -> None:
        """Remove entries under each fully walked root that this run did not see.

        Only on positive evidence: a crawl that did not complete (a limit hit, a sitemap, feed or
        page that failed with a transient error) prunes nothing by absence, nor does a folder
        under a subfolder the walk could not list.
        """
        gone: dict[str, Entry] = {}
        known = dict(self._entries)
        if self._adopt:  # sources only the store knows of, from before the ledger
            for match in self.collection.scan():
                source = match.metadata.get("source", "")
                if source not in known:
                    known[source] = Entry(source=source, root="")
        for root in sources:
            if not walk_complete(root):
                continue
            if root.kind == "folder":
                prefix = root.value.rstrip(os.sep) + os.sep
                lost = tuple(p.rstrip(os.sep) + os.sep for p in self._unreadable if p.startswith(prefix)
                             or p == root.value)
                # Entries named outside the folder but found through it (a symbolic link that
                # led outside, indexed under its target by earlier versions) are its entries too;
                # where a subfolder was lost, they may have come from there and are kept.
                under = (e for e in known.values()
                         if (e.source.startswith(prefix) or e.root == root.value and not lost)
                         and not e.source.startswith(lost))
            else:
                under = (e for e in known.values() if e.root == root.value)
            gone.update((e.source, e) for e in under if e.source not in self._seen)
        if gone:
            self._remove(list(gone.values()), reason="gone from its source", kind="gone")

    def _remove(self, entries: Sequence[Entry], reason: str, kind: str = "deleted") -> int:
        """Delete sources' chunks from the store, then their entries; return chunks deleted."""
        ids = [i for e in entries for i in e.chunk_ids]
        if self._adopt:
            ids += [m.id for e in entries for m in self.collection.for_source(e.source)]
        ids = list(dict.fromkeys(ids))
        self.index.delete(ids)
        self.ledger.remove(e.source for e in entries)
        for e in entries:
            self._entries.pop(e.source, None)
            self.summary.pruned += 1
            self.summary.prunes.append({"source": e.source, "reason": reason, "kind": kind})
            self.on_event(Pruned(e.source, reason))
        self.summary.chunks_deleted += len(ids)
        return len(ids)

    def delete(self, targets: Sequence[str]) -> list[str]:
        """Remove sources named exactly, or every source under a folder or URL prefix.

        Returns the sources removed; UsageError when a target matches nothing.
        """
        if self.collection is None:
            self.open(create=False)
        chosen: dict[str, Entry] = {}
        for target in targets:
            matches = matching(target, self._entries)
            extra = [] if matches else [m.id for m in self.collection.for_source(target)]
            if not matches and not extra:
                raise UsageError(f"nothing indexed matches {target!r} (see 'kbindex sources')")
            chosen.update((e.source, e) for e in matches)
            if extra:  # chunks the ledger does not know (a store built before it)
                self.index.delete(extra)
                self.summary.chunks_deleted += len(extra)
                self.summary.pruned += 1
        if chosen:
            self._remove(list(chosen.values()), reason="deleted")
        for target in targets:
            if is_url(target):  # what the crawler stored about pages under it too
                self.ledger.forget_visits_under(target)
        self.index.finish()
        return sorted(chosen)
