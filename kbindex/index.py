"""Orchestration: sources -> pages -> documents -> chunks -> vectors -> store."""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path

from kbindex.chunk import ChunkConfig, chunk_document, refit_context
from kbindex.config import DEFAULT_MAX_BYTES, Settings
from kbindex.crawl import Crawler, CrawlMemory, CrawlOptions, CrawlResult, url_identity
from kbindex.embed import Embedder
from kbindex.errors import (
    FetchError,
    ModelMismatchError,
    SkipSource,
    SourceError,
    StoreError,
    UnreadableFolder,
    UsageError,
)
from kbindex.extract import extract, extract_or_error
from kbindex.fetch import Fetcher, check_scheme
from kbindex.files import read_file, walk
from kbindex.ledger import Entry, Ledger
from kbindex.lexical import LexicalIndex
from kbindex.lock import WriteLock
from kbindex.pipeline import EmbedAhead, ExtractAhead, default_workers
from kbindex.records import Chunk, Document, Page, Visit, text_hash
from kbindex.store import Collection, Store

# Chunks embedded (and written) together. Large enough that sorting a batch by length leaves
# little padding and that store writes come in few calls; small enough that the first batch is
# ready soon and the last one, which nothing overlaps, is short.
EMBED_BATCH = 256
IMPORT_BATCH = 256  # exported rows written together by import
RESTORE_BATCH = 2048  # rows a restore writes together: nothing to embed, so fewer, larger store calls
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+:")


@dataclass
class Summary:
    """What an index run did.

    `skipped` counts everything deliberately not indexed: pages and files skipped after reading
    them (listed in `skips`) plus URLs a crawl never requested (out of scope, robots.txt, depth,
    traps; counted in `skipped_by` only). `skipped_by` and `failed_by` count by reason kind.
    """

    sources: int = 0
    indexed: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    pruned: int = 0  # sources removed because they are gone (listed in `prunes`)
    chunks_added: int = 0  # chunks written to the store
    chunks_embedded: int = 0  # of those, how many needed the model (the rest came from the cache)
    chunks_deleted: int = 0
    discovered: int = 0  # distinct URLs crawls found
    fetched: int = 0  # pages crawls received
    not_modified: int = 0  # pages known unchanged without a download (304, or sitemap lastmod)
    failures: list[dict] = field(default_factory=list)
    skips: list[dict] = field(default_factory=list)
    prunes: list[dict] = field(default_factory=list)
    crawl_skipped: Counter = field(default_factory=Counter)
    crawls: list[dict] = field(default_factory=list)

    def add_crawl(self, result: CrawlResult) -> None:
        """Fold one crawl's counts of URLs it never requested into the summary."""
        self.discovered += result.discovered
        self.fetched += result.fetched
        self.not_modified += result.not_modified
        self.crawl_skipped.update(result.skipped)
        self.skipped += sum(result.skipped.values())
        self.crawls.append(result.as_dict())

    def merge(self, other: Summary) -> Summary:
        """The sum of two runs' summaries (one `index` over several configured sources)."""
        merged = Summary()
        for f in fields(Summary):
            a, b = getattr(self, f.name), getattr(other, f.name)
            setattr(merged, f.name, a + b)
        return merged

    def as_dict(self) -> dict:
        skipped_by = Counter(s["kind"] for s in self.skips) + self.crawl_skipped
        return {
            "sources": self.sources,
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "failed": self.failed,
            "pruned": self.pruned,
            "chunks_added": self.chunks_added,
            "chunks_embedded": self.chunks_embedded,
            "chunks_deleted": self.chunks_deleted,
            "discovered": self.discovered,
            "fetched": self.fetched,
            "not_modified": self.not_modified,
            "skipped_by": dict(sorted(skipped_by.items())),
            "failed_by": dict(sorted(Counter(f["kind"] for f in self.failures).items())),
            "crawls": self.crawls,
            "failures": self.failures,
            "skips": self.skips,
            "prunes": self.prunes,
        }


# Kinds of skip that are a crawl's decisions, never a failure even for the start URL (a soft 404
# is the site saying that the page does not exist, as a 404 would for a page never indexed).
CRAWL_DECISIONS = frozenset({"listing", "duplicate", "noindex", "out_of_scope", "soft_404"})


@dataclass(frozen=True)
class Source:
    """One SOURCE argument: a folder, a file or a URL (a site, a sitemap or a feed).

    For a URL, `crawl` is filled in while its pages are read (see crawl.CrawlResult); after
    `iter_pages` has gone through the source, `complete` says whether every page of it was seen:
    True for files and folders (a folder's unreadable subfolders are excluded from pruning one by
    one, see files.walk), and for a crawl that ended on its own; False for one cut short by
    --max-pages, --max-time, transient errors, a sitemap or feed that could not be read, or an
    unreadable robots.txt.
    """

    kind: str  # "folder" | "file" | "url"
    value: str
    options: CrawlOptions | None = field(default=None, compare=False)
    crawl: CrawlResult | None = field(default=None, compare=False)
    follow_links: bool = False  # a folder: follow symbolic links that lead outside it

    @property
    def complete(self) -> bool:
        return self.crawl is None or bool(self.crawl.complete)

    def explicit(self, name: str, kind: str | None = None) -> bool:
        """Whether a problem with page `name` is a failure of what the user asked for
        (a file named, or the start URL itself), rather than a skip inside a folder or site."""
        if self.kind == "folder":
            return False
        if self.kind == "file":
            return True
        names = self.crawl.start_names if self.crawl else {self.value}
        return (name == self.value or name in names) and kind not in CRAWL_DECISIONS


def parse_sources(args: Sequence[str], options: CrawlOptions | None = None,
                  follow_links: bool = False) -> list[Source]:
    """Classify SOURCE arguments; a missing path or a bad URL scheme is a usage error.

    follow_links: folders follow symbolic links that lead outside them (see files.walk).
    """
    if not args:
        raise UsageError("give at least one SOURCE: a folder, a file or an http(s) URL")
    sources = []
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_dir():
            sources.append(Source("folder", str(path.resolve()), follow_links=follow_links))
        elif path.exists():
            sources.append(Source("file", str(path.resolve())))
        elif _SCHEME.match(arg):
            check_scheme(arg)
            sources.append(Source("url", arg, options or CrawlOptions(), CrawlResult(arg)))
        else:
            raise UsageError(f"no such file or folder: {arg}")
    return sources


def read_url_list(lines: Iterable[str]) -> list[str]:
    """URLs of a --urls file: one a line; blank lines and lines starting with # are ignored."""
    urls = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not _SCHEME.match(line):
            raise UsageError(f"--urls line {number} is not a URL: {line[:80]}")
        check_scheme(line)
        urls.append(line)
    return urls


Event = Callable[[str, str, str], None]  # (what, source, detail): "indexed", "skipped", "failed"


Validators = Callable[[str], tuple[str | None, str | None]]  # url -> (etag, last_modified)


def iter_pages(
    sources: Sequence[Source], fetcher: Fetcher, max_bytes: int = DEFAULT_MAX_BYTES,
    validators: Validators | None = None, memory: Callable[[Source], CrawlMemory] | None = None,
    names: Callable[[str], str] | None = None,
) -> Iterator[tuple[Source, str, Page | SourceError]]:
    """Each source's pages (or the error that replaced one), with the root source they came from.

    A URL source is crawled (crawl.Crawler): a site breadth-first within its scope, a sitemap's
    or a feed's entries. `name` is the page's name (crawl.page_name) or the file's path. Once a source is
    exhausted, `source.complete` tells whether all of it was seen. validators gives the ETag and
    Last-Modified seen last time for a URL; pages whose links are not needed (sitemap and feed
    entries, a start URL with --depth 0) are then fetched conditionally (a 304 comes back as a
    Page with status 304 and no body). memory gives each crawl what the last run learned from the
    site's pages (crawl.CrawlMemory), so that those are fetched conditionally too. names gives
    the name an index already keeps a page under (see crawl.Crawler).
    """
    for source in sources:
        if source.kind == "folder":
            for path in walk(Path(source.value), follow_links=source.follow_links):
                if isinstance(path, SourceError):  # an unreadable folder, a link not followed
                    yield source, path.source, path
                else:
                    yield source, str(path), _read(path, max_bytes)
        elif source.kind == "file":
            yield source, source.value, _read(Path(source.value), max_bytes)
        else:
            crawler = Crawler(fetcher, source.options or CrawlOptions(), _agent_token(fetcher),
                              validators=validators, memory=memory(source) if memory else None,
                              names=names)
            result = source.crawl if source.crawl is not None else CrawlResult(source.value)
            for item in crawler.crawl(source.value, result):
                yield source, item.source, item


def _collapse(source: Source, name: str, first: str, item: Page | SourceError) -> SkipSource | None:
    """A page already taken this run (as `first`) came again as `name`: a skip to report when it
    is the start page of a URL named on the command line, which would otherwise vanish without
    a word (two sources never collapse into one silently)."""
    if source.kind != "url" or not isinstance(item, Page) or name not in source.crawl.start_names:
        return None
    return SkipSource(source.value, f"same page as {first}, already read from another source",
                      kind="duplicate")


def _agent_token(fetcher: Fetcher) -> str:
    """The product token robots.txt groups are matched against: "kbindex" unless overridden."""
    return (getattr(fetcher, "user_agent", "") or "kbindex").split("/", 1)[0].split()[0] or "kbindex"


def _read(path: Path, max_bytes: int) -> Page | SourceError:
    try:
        return read_file(path, max_bytes)
    except SourceError as exc:
        return exc



def ledger_scope(settings: Settings) -> str:
    """The ledger's name for a collection: its name, prefixed by the server URL in server mode."""
    if settings.chroma_url:
        return f"{settings.chroma_url.rstrip('/')}#{settings.collection}"
    return settings.collection


# Test hook, documented in the README: KBINDEX_TEST_PAUSE=STAGE[:N] makes a run sleep the N-th
# time (default: the first) it reaches STAGE, after printing "kbindex: paused at STAGE" on
# stderr, so that a crash test can SIGKILL it at a known point. Stages: "page" (a page was read or
# fetched), "embed" (before a batch is embedded), "write" (the store holds the new chunks, the
# stale ones are not deleted yet), "commit" (the store is fully written, the ledger not yet).
_PAUSE_ENV = "KBINDEX_TEST_PAUSE"
_pause_counts: dict[str, int] = {}


def _pause(stage: str) -> None:
    want = os.environ.get(_PAUSE_ENV)
    if not want or want.partition(":")[0] != stage:
        return
    _pause_counts[stage] = _pause_counts.get(stage, 0) + 1
    if _pause_counts[stage] == int(want.partition(":")[2] or 1):
        sys.stderr.write(f"kbindex: paused at {stage}\n")
        sys.stderr.flush()
        time.sleep(3600)


# A file modified this recently may be modified again within the file system's timestamp
# granularity without its mtime changing; such an mtime is not recorded, so the next run compares
# the bytes instead (git calls these entries "racy").
_RACY_SECONDS = 2.0


@dataclass
class _Batch:
    """Changed sources on their way through the embedding thread."""

    updates: list[_Update]
    chunks: list[Chunk]
    hashes: list[str]  # of each chunk's embedded text
    cached: dict[str, list[float]]  # vectors the embedding cache had
    todo: list[str]  # hashes sent to the model, in the order of the vectors that come back


@dataclass
class _Update:
    """A changed source waiting in the batch to be embedded and written."""

    root: str
    page: Page
    body_hash: str
    doc: Document
    chunks: list[Chunk]
    entry: Entry | None


class Indexer:
    """Runs sources through the pipeline into one collection, keeping the ledger in step.

    Call open() (takes the write lock), run() any number of times, then close().
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
    ):
        self.max_bytes = max_bytes
        self.workers = workers or default_workers()  # extraction processes (1: in this process)
        self.settings = settings
        self.embedder = embedder
        self.config = config
        self.on_event = on_event or (lambda what, source, detail: None)
        self.fetcher = fetcher
        self.prune = prune
        self.keep_roots = False  # verify --repair re-indexes single sources without re-rooting them
        self.summary = Summary()
        self.store = Store(settings.db, settings.chroma_url, settings.timeout)
        self.ledger = Ledger(settings.db, ledger_scope(settings))
        self.lock = lock or WriteLock(settings.db, wait=wait)
        self._own_lock = lock is None
        self._pending: list[_Update] = []
        self._ahead: EmbedAhead[_Batch] | None = None  # started by the first batch to embed
        self._in_flight: set[str] = set()  # text hashes sent to the model, not yet in the cache
        self._seen: set[str] = set()
        self._unreadable: list[str] = []  # folders a walk could not list: nothing under them is pruned
        self._seen_keys: dict[str | None, str] = {}  # URL identity (crawl.url_identity) -> name seen
        self._entries: dict[str, Entry] = {}
        self._adopt = False
        self._dimension_checked = False
        self._texts: dict[str, str] = {}  # content hash -> first source with that text
        self._memories: dict[str, _LedgerMemory] = {}  # crawl root -> its memory (this run)
        self._identities: dict[str | None, str] | None = None  # URL identity -> entry key, when asked
        self.collection: Collection | None = None
        self.lexical: LexicalIndex | None = None
        self._lexical_flagged = False

    def check_model(self) -> None:
        """Refuse a model other than the collection's before loading it or writing anything."""
        if self.store.exists() and self.settings.collection in self.store.collection_names():
            self.store.collection(self.settings.collection).check_model(self.embedder.name)

    def open(self, create: bool = True) -> Collection:
        """Take the write lock, then open the collection (creating it, recording the model).

        The model is loaded here only when the collection must be created (its dimension is
        recorded); otherwise the first batch to embed checks the dimension.
        """
        self.lock.acquire()
        try:
            name = self.settings.collection
            if name in self.store.collection_names() or not create:
                self.collection = self.store.collection(name)
                if self.embedder is not None:
                    self.collection.check_model(self.embedder.name)
            else:
                self.collection = self.store.create(name, self.embedder.name, self.embedder.dimension,
                                                    ledger_id=self.ledger.ledger_id)
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
            # The keyword index follows Chroma; an interrupted earlier run is healed from Chroma.
            self.lexical = LexicalIndex.open(self.settings.db, self.settings.collection)
            self.lexical.heal(self.collection)
        except BaseException:
            self.close()
            raise
        return self.collection

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.close()  # batches not written are dropped: their ledger entries are not begun
            self._ahead = None
            self._in_flight.clear()
        self.ledger.close()
        if self.lexical is not None:
            self.lexical.close()
            self.lexical = None
        if self._own_lock:
            self.lock.release()

    def __enter__(self) -> Indexer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- indexing -------------------------------------------------------------------------------

    def run(self, sources: Sequence[Source]) -> Summary:
        if self.config is None:
            raise ValueError("Indexer.config must be set before run()")
        self._indexed_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.collection is None:
            self.open()
        fetcher = self.fetcher or Fetcher()
        # Pages that must be extracted go to worker processes as they arrive; every page is then
        # taken in the order it arrived, as if it had been extracted here.
        extractor = ExtractAhead(extract_or_error, self.workers)
        try:
            for source, name, item in iter_pages(sources, fetcher, self.max_bytes, self._validators,
                                                 self._memory, self._stored_name):
                key = url_identity(name) if _SCHEME.match(name) else name
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
            self._drain()
            for source in sources:
                if source.crawl is not None:
                    self.summary.add_crawl(source.crawl)
            if self.prune:
                self._prune_roots(sources)
            for source in sources:
                memory = self._memories.pop(source.value, None)
                if memory is not None and source.complete:
                    # Visits of pages the finished crawl no longer reached are of no use now.
                    self.ledger.prune_visits(source.value, memory.touched)
            self._finish()
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
        self._drain()
        self._finish()
        return self.summary

    def _current(self, entry: Entry | None) -> bool:
        """The entry is complete and was made with this model and these chunk settings."""
        return (
            entry is not None and entry.clean and entry.model == self.embedder.name
            and entry.chunking == self.config.signature()
        )

    def _validators(self, url: str) -> tuple[str | None, str | None]:
        entry = self._entries.get(url)
        if not self._current(entry):
            return None, None  # must be fetched in full: nothing (valid) to compare with
        return entry.etag, entry.last_modified

    def _stored_name(self, name: str) -> str:
        """The key this index keeps a page under: an entry with the same URL identity as `name`
        (crawl.url_identity) when there is one (made when names had another form: query
        parameters sorted, escapes decoded), else `name`."""
        if name in self._entries or not _SCHEME.match(name):
            return name
        if self._identities is None:
            self._identities = {url_identity(k): k for k in self._entries if _SCHEME.match(k)}
        return self._identities.get(url_identity(name), name)

    def _collapsed(self, source: Source, name: str, first: str, item: Page | SourceError) -> None:
        skip = _collapse(source, name, first, item)
        if skip is not None:  # reported only: no entry is touched
            self.summary.skipped += 1
            self.summary.skips.append({"source": skip.source, "reason": skip.reason, "kind": skip.kind})
            self.on_event("skipped", skip.source, skip.reason)

    def _memory(self, source: Source) -> _LedgerMemory:
        memory = self._memories[source.value] = _LedgerMemory(self, source.value)
        return memory

    def _take(self, source: Source, item: Page | SourceError, body_hash: str | None,
              extracted: Document | SourceError | None) -> None:
        """One page (or the error that replaced it) of the run, in arrival order."""
        _pause("page")
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

    def _queue(self, root: str, page: Page, body_hash: str | None, doc: Document, entry: Entry | None) -> None:
        """Chunk a changed document and add it to the batch being embedded."""
        chunks = chunk_document(doc, self.embedder.count_tokens, self.config)
        signature = self.config.signature()
        chunks = [_with_meta(c, chunking=signature, indexed_at=self._indexed_at) for c in chunks]
        self._pending.append(_Update(root, page, body_hash, doc, chunks, entry))
        if sum(len(u.chunks) for u in self._pending) >= EMBED_BATCH:
            self._flush()

    def _root(self, source: Source, entry: Entry | None) -> str:
        return entry.root if self.keep_roots and entry is not None else source.value

    def _unchanged(self, source: Source, entry: Entry, page: Page, body_hash: str | None) -> None:
        self._texts.setdefault(entry.content_hash, entry.source)
        self.summary.unchanged += 1
        self.on_event("unchanged", entry.source, "")
        facts = replace(entry, root=self._root(source, entry), body_hash=body_hash, last_error=None,
                        **_page_facts(page, entry))
        if facts != entry:  # e.g. touched but identical, new validators, an error cleared
            self.ledger.put(facts)
            self._entries[entry.source] = facts

    def _flush(self) -> None:
        """Send the pending batch to the embedding thread; write the batches it has finished.

        Vectors come from the embedding cache where it has them; a text already being embedded
        for an earlier batch of this run is not embedded twice (the earlier batch, written first,
        puts its vector in the cache). Batches are written in the order they were made.
        """
        if not self._pending:
            return
        chunks = [c for u in self._pending for c in u.chunks]
        hashes = [text_hash(c.embed_text) for c in chunks]
        cached = self.ledger.cached_vectors(self.embedder.name, hashes)
        todo = {h: c.embed_text for h, c in zip(hashes, chunks, strict=True)
                if h not in cached and h not in self._in_flight}
        self._in_flight.update(todo)
        batch = _Batch(self._pending, chunks, hashes, cached, list(todo))
        self._pending = []
        if todo:
            _pause("embed")
        if self._ahead is None:
            self._ahead = EmbedAhead(self.embedder.embed, depth=1)
        for done, vectors in self._ahead.submit(batch, list(todo.values())):
            self._write(done, vectors)

    def _drain(self) -> None:
        """Flush, then wait for every batch to be embedded and write it."""
        self._flush()
        if self._ahead is not None:
            for done, vectors in self._ahead.drain():
                self._write(done, vectors)

    def _write(self, batch: _Batch, embedded: Sequence[Sequence[float]]) -> None:
        collection = self.collection
        model = self.embedder.name
        fresh = dict(zip(batch.todo, embedded, strict=True))
        if fresh:
            self._check_dimension(next(iter(fresh.values())))
        vectors = {**batch.cached, **fresh}
        borrowed = [h for h in batch.hashes if h not in vectors]
        if borrowed:  # embedded for an earlier batch, which is written and cached by now
            vectors.update(self.ledger.cached_vectors(model, borrowed))
        updates = []
        hashes = iter(batch.hashes)  # the batch's chunks are its updates' chunks, in order
        for u in batch.updates:
            old = list(u.entry.chunk_ids) if u.entry else []
            if self._adopt:
                old += [m.id for m in collection.for_source(u.doc.source)]
            entry = Entry(
                source=u.doc.source, root=u.root, body_hash=u.body_hash,
                content_hash=u.doc.content_hash, chunking=self.config.signature(), model=model,
                chunk_ids=tuple(c.id for c in u.chunks),
                text_hashes=tuple(next(hashes) for _ in u.chunks),
                indexed_at=self._indexed_at, **_page_facts(u.page, u.entry),
            )
            updates.append((entry, old))
        # Ledger first (dirty, listing old and new ids), then the store, then the ledger again
        # (clean): a crash anywhere in between leaves a dirty entry that the next run rewrites.
        self.ledger.begin(updates, vectors=fresh, model=model)
        self._write_chunks(batch.chunks, [vectors[h] for h in batch.hashes])
        _pause("write")
        stale = [i for entry, old in updates for i in set(old) - set(entry.chunk_ids)]
        self._delete_chunks(stale)
        _pause("commit")
        self.ledger.commit(entry for entry, _ in updates)
        self._in_flight.difference_update(fresh)
        for entry, _ in updates:
            self._entries[entry.source] = entry
            self.summary.indexed += 1
            self.on_event("indexed", entry.source, f"{len(entry.chunk_ids)} chunks")
        self.summary.chunks_added += len(batch.chunks)
        self.summary.chunks_embedded += len(fresh)
        self.summary.chunks_deleted += len(stale)

    def _check_dimension(self, vector: Sequence[float]) -> None:
        if self._dimension_checked:
            return
        expected = self.collection.dimension
        if expected is not None and len(vector) != expected:
            raise ModelMismatchError(
                f"collection {self.collection.name!r} holds {expected}-dimensional vectors; "
                f"model {self.embedder.name!r} makes {len(vector)}-dimensional ones"
            )
        self._dimension_checked = True

    # The one place where chunks enter and leave the store: indexes kept beside Chroma hook here.

    def _write_chunks(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> None:
        self._lexical_dirty()
        self.collection.upsert(chunks, vectors, self.collection.model)
        self.lexical.upsert(chunks, self.collection.model)

    def _delete_chunks(self, ids: Sequence[str]) -> None:
        if ids:
            self._lexical_dirty()
            self.collection.delete(ids)
            self.lexical.delete(ids)

    def _lexical_dirty(self) -> None:
        """Flag the keyword index until the run ends, so a crash is reconciled from Chroma."""
        if self.lexical is None:
            self.lexical = LexicalIndex.open(self.settings.db, self.settings.collection)
        if not self._lexical_flagged:
            self.lexical.mark_dirty()
            self._lexical_flagged = True

    def _finish(self) -> None:
        """End of a write: the keyword index is in step with Chroma again."""
        if self._lexical_flagged:
            self.lexical.mark_clean()
            self._lexical_flagged = False

    # -- import ---------------------------------------------------------------------------------

    def import_rows(self, model: str, dimension: int, rows: Iterable[tuple[Chunk, Sequence[float] | None]],
                    embedder: Embedder | None) -> dict:
        """Write exported (chunk, vector or None) rows, recording each source in the ledger.

        The rows were checked whole beforehand (transfer.open_export), and embedder, when given,
        makes `dimension`-dimensional vectors of `model`. Each batch is written in the crash-safe
        order of every writer: the ledger marks its sources dirty (listing their old and new
        chunk ids), then the store; at the end the chunks a source no longer has are deleted
        and its entry made clean. A crash leaves dirty entries, and running the import again
        completes it.
        """
        self.lock.acquire()
        name = self.settings.collection
        if name in self.store.collection_names():
            self.collection = self.store.collection(name)
            self.collection.check_model(model, dimension)
        else:
            self.collection = self.store.create(name, model, dimension, ledger_id=self.ledger.ledger_id)
        bind(self.collection, self.ledger)
        self._entries = self.ledger.entries()
        sources: dict[str, dict] = {}
        written = embedded = 0
        batch: list[tuple[Chunk, Sequence[float] | None]] = []

        def entry(source: str) -> Entry:
            info = sources[source]
            chunk = info["chunk"]
            return Entry(
                source=source, root=source, content_hash=chunk.doc_hash or text_hash(source),
                chunking=chunk.metadata.get("chunking"), model=model, chunk_ids=tuple(info["ids"]),
                text_hashes=tuple(info["hashes"]), indexed_at=chunk.metadata.get("indexed_at"),
            )

        def old_ids(source: str) -> list[str]:
            old = self._entries.get(source)
            return list(old.chunk_ids) if old else []

        def flush() -> None:
            nonlocal written, embedded
            missing = [i for i, (_, v) in enumerate(batch) if v is None]
            if missing:  # embedded as an index run embeds them: the context line cut to its share
                refitted = refit_context([batch[i][0] for i in missing], embedder.count_tokens,
                                         embedder.max_tokens)
                for i, chunk in zip(missing, refitted, strict=True):
                    batch[i] = (chunk, None)
            fresh = iter(embedder.embed([batch[i][0].embed_text for i in missing]) if missing else [])
            embedded += len(missing)
            vectors = [list(v) if v is not None else list(next(fresh)) for _, v in batch]
            chunks = [c for c, _ in batch]
            hashes = [text_hash(c.embed_text) for c in chunks]
            for chunk, h in zip(chunks, hashes):
                info = sources.setdefault(chunk.source, {"chunk": chunk, "ids": [], "hashes": []})
                info["ids"].append(chunk.id)
                info["hashes"].append(h)
            touched = dict.fromkeys(c.source for c in chunks)
            # Dirty first, listing every id the store may hold for these sources after the write.
            self.ledger.begin([(entry(s), old_ids(s)) for s in touched],
                              vectors=dict(zip(hashes, vectors)), model=model)
            self._write_chunks(chunks, vectors)
            written += len(batch)
            batch.clear()

        for row in rows:
            batch.append(row)
            if len(batch) >= IMPORT_BATCH:
                flush()
        if batch:
            flush()
        finished = [entry(s) for s in sources]
        stale = [i for e in finished for i in old_ids(e.source) if i not in set(e.chunk_ids)]
        self._delete_chunks(stale)
        self.ledger.commit(finished)
        self._finish()
        return {"collection": name, "model": model, "chunks": written, "embedded": embedded,
                "documents": len(sources)}

    # -- errors and removal ---------------------------------------------------------------------

    def _record(self, source: Source, error: SourceError) -> None:
        if isinstance(error, UnreadableFolder):
            self._unreadable.append(error.source)
        entry = self._entries.get(error.source)
        pruned = False
        if entry is not None:
            if self.prune and _gone(error):
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
            self.on_event("skipped", error.source, error.reason)
        else:
            self.summary.failed += 1
            self.summary.failures.append(entry)
            self.on_event("failed", error.source, error.reason)

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
            if not _walk_complete(root):
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
        self._delete_chunks(ids)
        self.ledger.remove(e.source for e in entries)
        for e in entries:
            self._entries.pop(e.source, None)
            self.summary.pruned += 1
            self.summary.prunes.append({"source": e.source, "reason": reason, "kind": kind})
            self.on_event("pruned", e.source, reason)
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
            matches = _matching(target, self._entries)
            extra = [] if matches else [m.id for m in self.collection.for_source(target)]
            if not matches and not extra:
                raise UsageError(f"nothing indexed matches {target!r} (see 'kbindex sources')")
            chosen.update((e.source, e) for e in matches)
            if extra:  # chunks the ledger does not know (a store built before it)
                self._delete_chunks(extra)
                self.summary.chunks_deleted += len(extra)
                self.summary.pruned += 1
        if chosen:
            self._remove(list(chosen.values()), reason="deleted")
        for target in targets:
            if _SCHEME.match(target):  # what the crawler stored about pages under it too
                self.ledger.forget_visits_under(target)
        self._finish()
        return sorted(chosen)


class _LedgerMemory:
    """A crawl's memory (crawl.CrawlMemory) of one root, kept in the ledger's visits table.

    A visit is given back to the crawler, which then fetches the page conditionally and on a 304
    follows the stored links, only when that is safe: a page that was handed on to be indexed
    needs a current ledger entry (same model and chunk settings, clean) with the same validators,
    since a 304 makes the index keep what it has. Listing, noindex and duplicate pages have no
    entry and nothing embedded: their stored analysis stands as long as the page is unchanged
    (the crawler ignores visits made by another version of its page analysis).
    """

    def __init__(self, indexer: Indexer, root: str):
        self.indexer = indexer
        self.root = root
        self.touched: set[str] = set()  # URLs this crawl handled
        self._recalled: dict[str, Visit] = {}  # in flight: given to the crawler, not yet handled

    def recall(self, url: str) -> Visit | None:
        visit = self.indexer.ledger.visit(url)
        if visit is None:
            return None
        if visit.outcome == "page":
            entry = self.indexer._entries.get(visit.name)
            if not self.indexer._current(entry) or (entry.etag, entry.last_modified) != (
                    visit.etag, visit.last_modified):
                return None
        self._recalled[url] = visit
        return visit

    def remember(self, visit: Visit) -> None:
        self.touched.add(visit.url)
        if self._recalled.pop(visit.url, None) != visit:
            # verify --repair re-reads single pages: their visits stay with the crawl that made them.
            self.indexer.ledger.remember(visit, self.root, self.indexer._indexed_at,
                                         keep_root=self.indexer.keep_roots)


def _matching(target: str, entries: dict[str, Entry]) -> list[Entry]:
    if target in entries:
        return [entries[target]]
    if _SCHEME.match(target):
        return [e for s, e in entries.items() if s.startswith(target)]
    path = Path(target).expanduser().resolve()
    if str(path) in entries:
        return [entries[str(path)]]
    prefix = str(path).rstrip(os.sep) + os.sep
    return [e for s, e in entries.items() if s.startswith(prefix)]


def _walk_complete(root: Source) -> bool:
    """Whether the run saw everything under root, so that what it did not see is gone.

    Folders are walked whole, except subfolders that could not be listed (their entries are
    kept by _prune_roots). A single URL is never a walk: it is pruned only when it answers 404 or
    410 (or a soft 404). A crawl sets `complete` on its root when it finished on its own.
    """
    complete = getattr(root, "complete", None)
    if complete is not None:
        return bool(complete)
    return root.kind == "folder"


def _gone(error: SourceError) -> bool:
    """The source no longer exists or no longer has indexable content (never a transient error)."""
    if isinstance(error, FetchError):
        return error.status in (404, 410)
    if isinstance(error, SkipSource):
        return True  # now empty, binary, not text, or too large: what was indexed is obsolete
    return error.kind == "os_error" and not _SCHEME.match(error.source) and _vanished(error.source)


def _vanished(path: str) -> bool:
    """The file is not there (deleted between listing and reading), as opposed to unreadable."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False  # there, but not readable now: not evidence that it is gone
    return False


def _page_facts(page: Page, entry: Entry | None) -> dict:
    """The change-detection facts of a page, keeping validators a 304 did not repeat."""
    mtime = page.mtime
    if mtime is not None and time.time() - mtime < _RACY_SECONDS:
        mtime = None
    return {
        "etag": page.etag or (entry.etag if entry and page.status == 304 else None),
        "last_modified": page.last_modified or (
            entry.last_modified if entry and page.status == 304 else None),
        "size": page.size,
        "mtime": mtime,
    }


def _with_meta(chunk: Chunk, **extra: str) -> Chunk:
    return replace(chunk, metadata={**chunk.metadata, **extra})


def bind(collection: Collection, ledger: Ledger) -> bool:
    """Pair a collection that records no ledger with this one (in both); True when they are
    paired afterwards. A collection paired with another ledger is left as it is."""
    if collection.ledger_id is None:
        collection.bind(ledger.ledger_id)
    if collection.ledger_id != ledger.ledger_id:
        return False
    if ledger.binding() != collection.id:
        ledger.bind(collection.id)
    return True


def import_chunks(settings: Settings, export, embedder_factory: Callable[[], Embedder]) -> dict:
    """Write a checked export file (transfer.CheckedExport) into a collection, embedding the
    chunks that carry no vector with the file's model.

    Everything that can be refused is refused before the first write: the model the file names
    against the target collection's, and the model's dimension against the file's.
    """
    model = export.header.model
    embedder = None
    dimension = export.dimension
    if export.without_vector:
        embedder = embedder_factory()
        if embedder.name != model:
            raise UsageError(f"the export was made with model {model!r}; give --model {model}")
        if dimension is not None and embedder.dimension != dimension:
            raise ModelMismatchError(
                f"the export holds {dimension}-dimensional vectors, and model {model!r} makes "
                f"{embedder.dimension}-dimensional ones")
        dimension = embedder.dimension
    if dimension is None:  # no chunks and no dimension in the header: nothing to write
        return {"collection": settings.collection, "model": model, "chunks": 0, "embedded": 0,
                "documents": 0}
    with Indexer(settings, None) as indexer:
        return indexer.import_rows(model, dimension, export.rows(), embedder)


def delete_collection(settings: Settings, name: str) -> None:
    """Drop a collection and forget its ledger entries (under the write lock)."""
    store = Store(settings.db, settings.chroma_url, settings.timeout)
    store.collection(name)  # a clear error when there is none
    target = replace(settings, collection=name)
    with WriteLock(settings.db).acquire():
        store.delete_collection(name)
        ledger = Ledger(settings.db, ledger_scope(target))
        ledger.drop_scope()
        ledger.close()
        LexicalIndex.open(settings.db, name).drop()


REBUILD_SUFFIX = "--rebuild"
OLD_SUFFIX = "--old"


def rebuild(settings: Settings, embedder: Embedder, config: ChunkConfig, args: Sequence[str],
            crawl: CrawlOptions | None = None, follow_links: bool = False, **options) -> Summary:
    """Re-embed a collection with embedder's model: fill a new collection, then swap it in.

    args are SOURCE arguments; none means every root recorded in the ledger. Queries keep using
    the old collection until the swap, which is two renames. A rebuild that was interrupted is
    started again by running it again.
    """
    lock = WriteLock(settings.db, wait=options.pop("wait", False)).acquire()
    try:
        store = Store(settings.db, settings.chroma_url, settings.timeout)
        name = settings.collection
        temp = replace(settings, collection=name + REBUILD_SUFFIX)
        names = store.collection_names()
        if name not in names and name + OLD_SUFFIX in names:  # a swap was interrupted
            store.rename_collection(name + OLD_SUFFIX, name)
            names = store.collection_names()
        if not args:
            main_ledger = Ledger(settings.db, ledger_scope(settings))
            args = sorted({e.root for e in main_ledger.entries().values()})
            main_ledger.close()
            if not args:
                raise UsageError("nothing to rebuild: the ledger records no sources; give SOURCE")
        sources = parse_sources(args, crawl, follow_links)
        for stale in (temp.collection, name + OLD_SUFFIX):
            if stale in names:
                store.delete_collection(stale)
        indexer = Indexer(temp, embedder, config, lock=lock, **options)
        indexer.ledger.drop_scope()
        with indexer:
            indexer.open()
            summary = indexer.run(sources)
        swap(store, name, temp.collection, names, keep_old=True)
        temp_ledger = Ledger(settings.db, ledger_scope(temp))
        temp_ledger.move_scope(ledger_scope(settings))
        temp_ledger.close()
        # The keyword index is keyed by collection name: rebuild the swapped-in one from Chroma.
        LexicalIndex.open(settings.db, temp.collection).drop()
        lexical = LexicalIndex.open(settings.db, name)
        lexical.sync(store.collection(name))
        lexical.close()
        if name in names:
            store.delete_collection(name + OLD_SUFFIX)
        return summary
    finally:
        lock.release()


def swap(store: Store, name: str, fresh: str, names: Sequence[str], keep_old: bool = False) -> None:
    """Put collection `fresh` in the place of `name` with two renames (name -> name--old, fresh ->
    name), then drop the old one unless keep_old. Queries use the old collection until the second
    rename; an interrupted swap is finished by rebuild() or verify --repair."""
    if name in names:
        store.rename_collection(name, name + OLD_SUFFIX)
    store.rename_collection(fresh, name)
    if name in names and not keep_old:
        store.delete_collection(name + OLD_SUFFIX)


@dataclass
class Restored:
    """What restore() wrote: chunks, and where their vectors came from."""

    chunks: int = 0
    from_cache: int = 0
    embedded: int = 0


def restore(settings: Settings, rows: Iterable, model: str, dimension: int | None, ledger: Ledger,
            embedder_factory: Callable[[str], Embedder] | None) -> Restored:
    """Write a fresh collection from chunks kbindex holds elsewhere and swap it in for the
    collection of settings.

    rows are lexical.Row (id, text, metadata and context line: the keyword index's copy, or
    Chroma's metadata read back); each vector comes from the embedding cache, by model and hash
    of the embedded text (context line and text, as chunk.chunk_document embeds them). Only
    chunks whose vector is not cached are embedded, with embedder_factory(model); StoreError
    when that is needed and no factory is given. The caller holds the write lock.
    """
    store = Store(settings.db, settings.chroma_url, settings.timeout)
    name = settings.collection
    temp = name + REBUILD_SUFFIX
    names = store.collection_names()
    for stale in (temp, name + OLD_SUFFIX):  # left by an interrupted restore or rebuild
        if stale in names and (stale == temp or name in names):
            store.delete_collection(stale)
    fresh, done = _fill(store, temp, rows, model, dimension, ledger, embedder_factory)
    swap(store, name, temp, names)
    ledger.bind(fresh.id)
    return done


def _fill(store: Store, name: str, rows: Iterable, model: str, dimension: int | None, ledger: Ledger,
          embedder_factory: Callable[[str], Embedder] | None) -> tuple[Collection, Restored]:
    """Create collection `name` in store and write rows into it, vectors from the cache (see
    restore)."""
    fresh: Collection | None = None
    embedder: Embedder | None = None
    done = Restored()

    def write(part: list) -> None:
        nonlocal fresh, embedder
        hashes = [text_hash(f"{r.context}\n\n{r.text}") for r in part]
        vectors = ledger.cached_vectors(model, hashes)
        missing = {h: f"{r.context}\n\n{r.text}" for h, r in zip(hashes, part) if h not in vectors}
        done.from_cache += sum(1 for h in hashes if h in vectors)
        if missing:
            if embedder is None:
                if embedder_factory is None:
                    raise StoreError(f"{len(missing)} chunks have no vector in the embedding cache "
                                     "and no model was given to embed them")
                embedder = embedder_factory(model)
            made = embedder.embed(list(missing.values()))
            ledger.cache_vectors(model, dict(zip(missing, made)))
            vectors.update(zip(missing, made))
            done.embedded += sum(1 for h in hashes if h in missing)
        if fresh is None:
            fresh = store.create(name, model, dimension or len(next(iter(vectors.values()))),
                                 ledger_id=ledger.ledger_id)
        fresh.add_stored([r.id for r in part], [vectors[h] for h in hashes], [r.text for r in part],
                         [r.metadata for r in part])
        done.chunks += len(part)

    part: list = []
    for row in rows:
        part.append(row)
        if len(part) >= RESTORE_BATCH:
            write(part)
            part = []
    if part:
        write(part)
    if fresh is None:
        fresh = store.create(name, model, dimension or 1, ledger_id=ledger.ledger_id)
    return fresh, done


@dataclass(frozen=True)
class Carried:
    """One collection to carry into a fresh local store (restore_store)."""

    name: str
    model: str
    dimension: int | None
    rows: Callable[[], Iterable]  # lexical.Row of every chunk
    ledger: Ledger  # the ledger scope of the collection


def restore_store(db: Path, collections: Sequence[Carried],
                  embedder_factory: Callable[[str], Embedder] | None) -> tuple[Path, dict[str, Restored]]:
    """Make a fresh local Chroma store holding `collections` (written as restore() does) and put
    it in the place of a store whose own SQLite file is damaged, which is kept in a folder
    `store-damaged-<time>` beside it. Returns that folder and what was written per collection.

    A Chroma store is one SQLite file for all its collections plus a folder per vector index;
    once the file is damaged no collection can be written into it, so the whole store is made
    again, in a folder next to it, then moved in by renames. The caller holds the write lock.
    """
    import shutil
    import uuid

    db = Path(db)
    building = db / ".store-rebuild"
    shutil.rmtree(building, ignore_errors=True)
    fresh = Store(building)
    written: dict[str, Restored] = {}
    for carried in collections:
        made, written[carried.name] = _fill(fresh, carried.name, carried.rows(), carried.model,
                                            carried.dimension, carried.ledger, embedder_factory)
        carried.ledger.bind(made.id)
    Store.forget_clients()  # Chroma keeps one client per folder: neither may be used after the moves

    def store_parts(folder: Path) -> list[Path]:
        parts = []
        for path in folder.iterdir():
            if path.name.startswith("chroma.sqlite3"):
                parts.append(path)
            elif path.is_dir():
                try:
                    uuid.UUID(path.name)  # a vector index folder is named by its segment's id
                except ValueError:
                    continue
                parts.append(path)
        return parts

    aside = db / f"store-damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    for path in store_parts(db):
        path.rename(aside / path.name)
    for path in store_parts(building):
        path.rename(db / path.name)
    shutil.rmtree(building, ignore_errors=True)
    return aside, written


def read_document(arg: str, fetcher: Fetcher, max_bytes: int = DEFAULT_MAX_BYTES) -> Document:
    """One file or URL through the same read and extract steps as indexing; writes nothing."""
    (source,) = parse_sources([arg])
    if source.kind == "folder":
        raise UsageError(f"give one file or URL, not a folder: {arg}")
    if source.kind == "file":
        page = read_file(Path(source.value), max_bytes)
    else:
        page = fetcher.fetch(source.value)
    return extract(page)


@dataclass(frozen=True)
class PlanEntry:
    """One line of a dry run: what would happen to a page."""

    action: str  # "index" | "skip" | "fail"
    source: str
    detail: str  # the title for "index", the reason otherwise
    chunks: int = 0
    kind: str = ""  # the skip or failure reason kind


def dry_run(
    sources: Sequence[Source],
    fetcher: Fetcher,
    count_tokens: Callable[[Sequence[str]], list[int]],
    config: ChunkConfig,
    summary: Summary | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    workers: int | None = None,
) -> Iterator[PlanEntry]:
    """What `Indexer.run` would index, skip or fail, without embedding or writing anything.

    Pages are fetched (a crawl has to read them to find links), extracted and chunked; `summary`
    is filled in as the real run would fill it, minus the store's unchanged/deleted counts.
    """
    summary = summary if summary is not None else Summary()
    seen: dict[str | None, str] = {}  # URL identity (or path) -> name
    texts: dict[str, str] = {}

    def problem(source: Source, name: str, error: SourceError) -> PlanEntry:
        entry = {"source": error.source or name, "reason": error.reason, "kind": error.kind}
        if isinstance(error, SkipSource) and not source.explicit(name, error.kind):
            summary.skipped += 1
            summary.skips.append(entry)
            return PlanEntry("skip", entry["source"], error.reason, kind=error.kind)
        summary.failed += 1
        summary.failures.append(entry)
        return PlanEntry("fail", entry["source"], error.reason, kind=error.kind)

    def pages() -> Iterator[tuple[tuple[Source, str, Page | SourceError], Document | SourceError | None]]:
        with ExtractAhead(extract_or_error, workers or default_workers()) as extractor:
            for source, name, item in iter_pages(sources, fetcher, max_bytes):
                key = url_identity(name) if _SCHEME.match(name) else name
                if key not in seen:
                    seen[key] = name
                    yield from extractor.submit((source, name, item), item if isinstance(item, Page) else None)
                elif (skip := _collapse(source, name, seen[key], item)) is not None:
                    yield from extractor.submit((source, name, skip), None)
            yield from extractor.drain()

    for (source, name, item), doc in pages():
        summary.sources += 1
        if isinstance(item, SourceError):
            yield problem(source, name, item)
            continue
        if isinstance(doc, SourceError):
            yield problem(source, name, doc)
            continue
        first = texts.setdefault(doc.content_hash, doc.source)
        if first != doc.source:
            yield problem(source, name, SkipSource(doc.source, f"same text as {first}", kind="duplicate"))
            continue
        chunks = chunk_document(doc, count_tokens, config)
        summary.indexed += 1
        summary.chunks_added += len(chunks)
        yield PlanEntry("index", doc.source, doc.title, len(chunks))
    for source in sources:
        if source.crawl is not None:
            summary.add_crawl(source.crawl)
