"""Orchestration: sources -> pages -> documents -> chunks -> vectors -> store."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from kbindex.chunk import ChunkConfig, chunk_document
from kbindex.config import DEFAULT_MAX_BYTES, Settings
from kbindex.crawl import Crawler, CrawlOptions, CrawlResult
from kbindex.embed import Embedder
from kbindex.errors import SkipSource, SourceError, UsageError
from kbindex.extract import extract
from kbindex.fetch import Fetcher, check_scheme
from kbindex.files import read_file, walk
from kbindex.records import Chunk, Document, Page
from kbindex.store import Collection, Store

EMBED_BATCH = 64  # chunks embedded together; large enough to keep the model busy
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
    chunks_added: int = 0
    chunks_deleted: int = 0
    discovered: int = 0  # distinct URLs crawls found
    fetched: int = 0  # pages crawls received
    failures: list[dict] = field(default_factory=list)
    skips: list[dict] = field(default_factory=list)
    crawl_skipped: Counter = field(default_factory=Counter)
    crawls: list[dict] = field(default_factory=list)

    def add_crawl(self, result: CrawlResult) -> None:
        """Fold one crawl's counts of URLs it never requested into the summary."""
        self.discovered += result.discovered
        self.fetched += result.fetched
        self.crawl_skipped.update(result.skipped)
        self.skipped += sum(result.skipped.values())
        self.crawls.append(result.as_dict())

    def as_dict(self) -> dict:
        skipped_by = Counter(s["kind"] for s in self.skips) + self.crawl_skipped
        return {
            "sources": self.sources,
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "failed": self.failed,
            "chunks_added": self.chunks_added,
            "chunks_deleted": self.chunks_deleted,
            "discovered": self.discovered,
            "fetched": self.fetched,
            "skipped_by": dict(sorted(skipped_by.items())),
            "failed_by": dict(sorted(Counter(f["kind"] for f in self.failures).items())),
            "crawls": self.crawls,
            "failures": self.failures,
            "skips": self.skips,
        }


# Kinds of skip that are a crawl's decisions, never a failure even for the start URL.
CRAWL_DECISIONS = frozenset({"listing", "duplicate", "noindex", "out_of_scope"})


@dataclass(frozen=True)
class Source:
    """One SOURCE argument: a folder, a file or a URL (a site, a sitemap or a feed).

    For a URL, `crawl` is filled in while its pages are read (see crawl.CrawlResult); after
    `iter_pages` has gone through the source, `complete` says whether every page of it was seen:
    True for files and folders, and for a crawl that ended on its own; False for one cut short by
    --max-pages, --max-time, transient errors or an unreadable robots.txt.
    """

    kind: str  # "folder" | "file" | "url"
    value: str
    options: CrawlOptions | None = field(default=None, compare=False)
    crawl: CrawlResult | None = field(default=None, compare=False)

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


def parse_sources(args: Sequence[str], options: CrawlOptions | None = None) -> list[Source]:
    """Classify SOURCE arguments; a missing path or a bad URL scheme is a usage error."""
    if not args:
        raise UsageError("give at least one SOURCE: a folder, a file or an http(s) URL")
    sources = []
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_dir():
            sources.append(Source("folder", str(path.resolve())))
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


def iter_pages(
    sources: Sequence[Source], fetcher: Fetcher, max_bytes: int = DEFAULT_MAX_BYTES
) -> Iterator[tuple[Source, str, Page | SourceError]]:
    """Each source's pages (or the error that replaced one), with the root source they came from.

    A URL source is crawled (crawl.Crawler): a site breadth-first within its scope, a sitemap's
    or a feed's entries. `name` is the page's canonical URL or the file's path. Once a source is
    exhausted, `source.complete` tells whether all of it was seen.
    """
    for source in sources:
        if source.kind == "folder":
            for path in walk(Path(source.value)):
                yield source, str(path), _read(path, max_bytes)
        elif source.kind == "file":
            yield source, source.value, _read(Path(source.value), max_bytes)
        else:
            crawler = Crawler(fetcher, source.options or CrawlOptions(), _agent_token(fetcher))
            result = source.crawl if source.crawl is not None else CrawlResult(source.value)
            for item in crawler.crawl(source.value, result):
                yield source, item.source, item


def _agent_token(fetcher: Fetcher) -> str:
    """The product token robots.txt groups are matched against: "kbindex" unless overridden."""
    return (getattr(fetcher, "user_agent", "") or "kbindex").split("/", 1)[0].split()[0] or "kbindex"


def _read(path: Path, max_bytes: int) -> Page | SourceError:
    try:
        return read_file(path, max_bytes)
    except SourceError as exc:
        return exc


class Indexer:
    """Runs sources through the pipeline into one collection."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        config: ChunkConfig | None = None,
        on_event: Event | None = None,
        fetcher: Fetcher | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ):
        self.max_bytes = max_bytes
        self.settings = settings
        self.embedder = embedder
        self.config = config
        self.on_event = on_event or (lambda what, source, detail: None)
        self.fetcher = fetcher
        self.summary = Summary()
        self._pending: list[tuple[Document, list[Chunk], list[str]]] = []
        self._seen: set[str] = set()
        self._texts: dict[str, str] = {}  # content hash -> first source with that text
        self.collection: Collection | None = None

    def check_model(self) -> None:
        """Refuse a model other than the collection's before loading it or writing anything."""
        store = Store(self.settings.db)
        if store.exists() and self.settings.collection in store.collection_names():
            store.collection(self.settings.collection).check_model(self.embedder.name)

    def open(self) -> Collection:
        """Create the collection (or open it), recording the model; checks model and dimension."""
        store = Store(self.settings.db)
        self.collection = store.create(
            self.settings.collection, self.embedder.name, self.embedder.dimension
        )
        return self.collection

    def run(self, sources: Sequence[Source]) -> Summary:
        if self.config is None:
            raise ValueError("Indexer.config must be set before run()")
        self._indexed_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        collection = self.collection or self.open()
        fetcher = self.fetcher or Fetcher()
        try:
            for source, name, item in iter_pages(sources, fetcher, self.max_bytes):
                if name in self._seen:
                    continue
                self._seen.add(name)
                self.summary.sources += 1
                if isinstance(item, SourceError):
                    self._record(item, explicit=source.explicit(name, item.kind))
                    continue
                self._add_page(item, collection, explicit=source.explicit(name))
            self._flush(collection)
            for source in sources:
                if source.crawl is not None:
                    self.summary.add_crawl(source.crawl)
        finally:
            if self.fetcher is None:
                fetcher.close()
        return self.summary

    def _add_page(self, page: Page, collection: Collection, explicit: bool) -> None:
        try:
            doc = extract(page)
        except SourceError as exc:
            self._record(exc, explicit)
            return
        first = self._texts.setdefault(doc.content_hash, doc.source)
        if first != doc.source:  # the same article under another URL or file name
            self._record(SkipSource(doc.source, f"same text as {first}", kind="duplicate"), False)
            return
        chunks = chunk_document(doc, self.embedder.count_tokens, self.config)
        signature = self.config.signature()
        chunks = [_with_meta(c, chunking=signature, indexed_at=self._indexed_at) for c in chunks]
        existing = collection.for_source(doc.source)
        old_ids = [m.id for m in existing]
        if existing and {m.id for m in existing} == {c.id for c in chunks} and all(
            m.metadata.get("doc_hash") == doc.content_hash
            and m.metadata.get("chunking") == signature
            for m in existing
        ):
            self.summary.unchanged += 1
            self.on_event("unchanged", doc.source, "")
            return
        self._pending.append((doc, chunks, old_ids))
        if sum(len(c) for _, c, _ in self._pending) >= EMBED_BATCH:
            self._flush(collection)

    def _flush(self, collection: Collection) -> None:
        if not self._pending:
            return
        texts = [c.embed_text for _, chunks, _ in self._pending for c in chunks]
        vectors = self.embedder.embed(texts)
        offset = 0
        for doc, chunks, old_ids in self._pending:
            mine = vectors[offset:offset + len(chunks)]
            offset += len(chunks)
            # New chunks first, then the stale ones: a reader never sees the page missing.
            collection.upsert(chunks, mine, self.embedder.name)
            stale = sorted(set(old_ids) - {c.id for c in chunks})
            if stale:
                collection.delete(stale)
            self.summary.indexed += 1
            self.summary.chunks_added += len(chunks)
            self.summary.chunks_deleted += len(stale)
            self.on_event("indexed", doc.source, f"{len(chunks)} chunks")
        self._pending = []

    def _record(self, error: SourceError, explicit: bool) -> None:
        entry = {"source": error.source, "reason": error.reason, "kind": error.kind}
        # A file skipped inside a folder is reported and the run goes on; a source named
        # explicitly that yields nothing is a failure of what the user asked for.
        if isinstance(error, SkipSource) and not explicit:
            self.summary.skipped += 1
            self.summary.skips.append(entry)
            self.on_event("skipped", error.source, error.reason)
        else:
            self.summary.failed += 1
            self.summary.failures.append(entry)
            self.on_event("failed", error.source, error.reason)


def _with_meta(chunk: Chunk, **extra: str) -> Chunk:
    return replace(chunk, metadata={**chunk.metadata, **extra})


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
) -> Iterator[PlanEntry]:
    """What `Indexer.run` would index, skip or fail, without embedding or writing anything.

    Pages are fetched (a crawl has to read them to find links), extracted and chunked; `summary`
    is filled in as the real run would fill it, minus the store's unchanged/deleted counts.
    """
    summary = summary if summary is not None else Summary()
    seen: set[str] = set()
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

    for source, name, item in iter_pages(sources, fetcher, max_bytes):
        if name in seen:
            continue
        seen.add(name)
        summary.sources += 1
        if isinstance(item, SourceError):
            yield problem(source, name, item)
            continue
        try:
            doc = extract(item)
        except SourceError as exc:
            yield problem(source, name, exc)
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
