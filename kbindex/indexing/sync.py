"""Change detection: what the ledger says about a source, and when that lets a run skip it, fetch
it conditionally, or remove it.

A source is re-indexed unless its ledger entry is current (clean, same model and chunk settings)
and its bytes or validators say it did not change; it is removed only on positive evidence that it
is gone (404/410, a file deleted, a finished walk that no longer reaches it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from kbindex.config import Settings
from kbindex.errors import FetchError, SkipSource, SourceError
from kbindex.indexing.sources import Source, is_url
from kbindex.records import Page, Visit
from kbindex.store import scope_name
from kbindex.store.chroma import Collection
from kbindex.store.ledger import Entry, Ledger


def is_current(entry: Entry | None, model: str, chunking: str) -> bool:
    """The entry is complete and was made with this model and these chunk settings
    (chunk.ChunkConfig.signature())."""
    return entry is not None and entry.clean and entry.model == model and entry.chunking == chunking


# A file modified this recently may be modified again within the file system's timestamp
# granularity without its mtime changing; such an mtime is not recorded, so the next run compares
# the bytes instead (git calls these entries "racy").
RACY_SECONDS = 2.0


def ledger_scope(settings: Settings) -> str:
    """The ledger's name for settings' collection (store.scope_name)."""
    return scope_name(settings.collection, settings.chroma_url)


class LedgerMemory:
    """A crawl's memory (crawl.CrawlMemory) of one root, kept in the ledger's visits table.

    A visit is given back to the crawler, which then fetches the page conditionally and on a 304
    follows the stored links, only when that is safe: a page that was handed on to be indexed
    needs a current ledger entry (same model and chunk settings, clean) with the same validators,
    since a 304 makes the index keep what it has. Listing, noindex and duplicate pages have no
    entry and nothing embedded: their stored analysis stands as long as the page is unchanged
    (the crawler ignores visits made by another version of its page analysis).
    """

    def __init__(self, ledger: Ledger, root: str, current: Callable[[Entry | None], bool],
                 when: str | None, keep_root: bool = False):
        """current: whether an entry is complete and made with this run's model and chunking
        (is_current); when: the run's start (ISO 8601 UTC), recorded with each visit; keep_root:
        visits stay with the crawl that made them (verify --repair re-reads single pages)."""
        self.ledger = ledger
        self.root = root
        self.current = current
        self.when = when
        self.keep_root = keep_root
        self.touched: set[str] = set()  # URLs this crawl handled
        self._recalled: dict[str, Visit] = {}  # in flight: given to the crawler, not yet handled

    def recall(self, url: str) -> Visit | None:
        visit = self.ledger.visit(url)
        if visit is None:
            return None
        if visit.outcome == "page":
            entry = self.ledger.get(visit.name)
            if not self.current(entry) or (entry.etag, entry.last_modified) != (
                    visit.etag, visit.last_modified):
                return None
        self._recalled[url] = visit
        return visit

    def remember(self, visit: Visit) -> None:
        self.touched.add(visit.url)
        if self._recalled.pop(visit.url, None) != visit:
            # verify --repair re-reads single pages: their visits stay with the crawl that made them.
            self.ledger.remember(visit, self.root, self.when, keep_root=self.keep_root)


def matching(target: str, entries: dict[str, Entry]) -> list[Entry]:
    if target in entries:
        return [entries[target]]
    if is_url(target):
        return [e for s, e in entries.items() if s.startswith(target)]
    path = Path(target).expanduser().resolve()
    if str(path) in entries:
        return [entries[str(path)]]
    prefix = str(path).rstrip(os.sep) + os.sep
    return [e for s, e in entries.items() if s.startswith(prefix)]


def walk_complete(root: Source) -> bool:
    """Whether the run saw everything under root, so that what it did not see is gone.

    Folders are walked whole, except subfolders that could not be listed (their entries are
    kept by the runner's pruning). A single URL is never a walk: it is pruned only when it answers 404 or
    410 (or a soft 404). A crawl sets `complete` on its root when it finished on its own.
    """
    complete = getattr(root, "complete", None)
    if complete is not None:
        return bool(complete)
    return root.kind == "folder"


def gone(error: SourceError) -> bool:
    """The source no longer exists or no longer has indexable content (never a transient error)."""
    if isinstance(error, FetchError):
        return error.status in (404, 410)
    if isinstance(error, SkipSource):
        return True  # now empty, binary, not text, or too large: what was indexed is obsolete
    return error.kind == "os_error" and not is_url(error.source) and _vanished(error.source)


def _vanished(path: str) -> bool:
    """The file is not there (deleted between listing and reading), as opposed to unreadable."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False  # there, but not readable now: not evidence that it is gone
    return False


def page_facts(page: Page, entry: Entry | None) -> dict:
    """The change-detection facts of a page, keeping validators a 304 did not repeat."""
    mtime = page.mtime
    if mtime is not None and time.time() - mtime < RACY_SECONDS:
        mtime = None
    return {
        "etag": page.etag or (entry.etag if entry and page.status == 304 else None),
        "last_modified": page.last_modified or (
            entry.last_modified if entry and page.status == 304 else None),
        "size": page.size,
        "mtime": mtime,
    }


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
