"""Check one collection for real and reconcile it with its ledger; with repair, fix what is found.

What `verify` reads: the ledger (`kbindex.sqlite`), the vector store (every chunk's metadata and
vector read back, compared with the embedding cache, and a sample searched for), the keyword index
(`lexical.sqlite3`: SQLite's and FTS5's own integrity checks, then chunk by chunk against the
store) and, in local mode, the store's own SQLite file. The store is read in a child process: a
damaged HNSW file can crash the process that loads it (a segmentation fault inside Chroma's native
code), and a crash there must become a finding, not the end of `verify`.

What `--repair` may do, in this order, and never more:
- set an unreadable ledger or keyword index file aside (renamed, kept) and start a new one;
- rebuild a damaged vector index into a fresh collection from what kbindex holds (texts and
  metadata in the keyword index, vectors in the embedding cache; only vectors the cache lacks are
  embedded) and swap it in, as `index --rebuild` does; the same for a collection the store lost
  (its files deleted) while the ledger and keyword index hold it. What a rebuild wrote is then
  confirmed on a sample (store.probe), not read back whole a second time;
- adopt chunks that the ledger does not list (entries rebuilt from the chunks' own metadata) when
  the ledger cannot be shown to be the collection's ledger; delete them only when it can (the
  collection and the ledger each record the other's id: index.bind);
- re-index sources whose chunks are missing or whose update was interrupted.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kbindex.chunk import ChunkConfig
from kbindex.config import Settings
from kbindex.crawl import CrawlOptions
from kbindex.embedding import Embedder
from kbindex.embedding.modelcache import recorded_identity
from kbindex.errors import KbindexError, LockedError, StoreError, WriteInProgressError
from kbindex.indexing.maintenance import OLD_SUFFIX, REBUILD_SUFFIX, Carried, Restored, restore, restore_store
from kbindex.indexing.runner import Indexer, Summary
from kbindex.indexing.sources import Source, is_url
from kbindex.indexing.sync import bind, ledger_scope
from kbindex.records import text_hash
from kbindex.store import Index
from kbindex.store.chroma import Collection, Probe, Store
from kbindex.store.ledger import Entry, Ledger
from kbindex.store.lexical import FILENAME as LEXICAL_FILE
from kbindex.store.lexical import LexicalIndex, Row
from kbindex.store.lock import LOCK_NAME, WriteLock

# The chunks a repair wrote into a fresh collection: chunk id -> (source, store.metadata_digest).
Written = dict[str, tuple[str, str]]

# How many times a plain `verify --wait` checks again when a write happened while it read.
WAIT_ROUNDS = 5


@dataclass
class Report:
    """What verify found (problems) and, with repair, what it did (actions)."""

    sources: int = 0
    chunks: int = 0
    problems: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    repaired: Summary | None = None
    rebuilt: dict | None = None  # the vector index rebuilt: chunks, from_cache, embedded

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"ok": self.ok, "sources": self.sources, "chunks": self.chunks,
                "problems": self.problems, "actions": self.actions, "rebuilt": self.rebuilt}


@dataclass
class _Findings:
    ledger_damaged: bool = False
    swap_interrupted: bool = False
    collection_missing: bool = False  # the store lacks the collection that the ledger or keyword index hold
    vector_damaged: bool = False
    store_file_damaged: bool = False  # local mode: chroma.sqlite3 fails SQLite's check
    keyword: str = ""  # "" | "file" (damaged file) | "fts" (full-text index) | "step" (out of step)
    bound: bool = False  # the ledger is known to be this collection's (index.bind)
    ledger_empty: bool = False
    orphans: list[str] = field(default_factory=list)  # chunk ids no ledger entry lists
    broken: list[Entry] = field(default_factory=list)  # entries with missing chunks, or dirty


def verify(settings: Settings, repair: bool = False, wait: bool = False,
           embedder: Callable[[str], Embedder] | None = None) -> Report:
    """Check (and with repair, fix) one collection against its ledger.

    embedder(model_name) loads the model a repair needs to re-index or to embed chunks whose vector
    is not cached; it is called only then. Repair takes the write lock; a plain check does not,
    and raises WriteInProgressError when a write holds the store while it reads (with wait, it
    waits for the write to end and checks again).
    """
    if repair:
        lock = WriteLock(settings.db, wait=wait)
        try:
            lock.acquire()
        except LockedError as exc:
            raise WriteInProgressError(f"a write is in progress: {exc}") from None
        try:
            report, findings = _check(settings)
            if report.problems and findings is not None:
                after = _repair(settings, report, findings, embedder, lock)
                if after is None:  # something changed since the repair's last look
                    after, _ = _check(settings)
                report.problems, report.sources, report.chunks = after.problems, after.sources, after.chunks
            return report
        finally:
            lock.release()
    for _ in range(WAIT_ROUNDS):
        _refuse_or_wait(settings.db, wait)
        writes = _Writes(settings.db)
        report, _ = _check(settings)
        if not writes.happened() and _writer(settings.db) is None:
            return report
        if not wait:
            break
    raise WriteInProgressError(_busy_message(settings.db, _writer(settings.db)))


# -- one writer at a time: a check must not read a write half done -------------------------------


def _writer(db: Path) -> int | str | None:
    """The pid of the process holding the write lock (or "another process"); None when free.

    A shared flock on a read-only handle: it never creates the lock file, and it is refused only
    while a writer holds the exclusive lock (lock.WriteLock).
    """
    path = Path(db) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # no lock file: nothing ever wrote here
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            text = os.pread(fd, 32, 0).decode().strip()
            return int(text) if text else "another process"
        except (OSError, ValueError):
            return "another process"
    finally:
        os.close(fd)  # drops the shared lock, if taken
    return None


def _refuse_or_wait(db: Path, wait: bool) -> None:
    holder = _writer(db)
    if holder is None:
        return
    if not wait:
        raise WriteInProgressError(_busy_message(db, holder))
    fd = os.open(Path(db) / LOCK_NAME, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # blocks until the writer lets go
    finally:
        os.close(fd)


def _busy_message(db: Path, holder) -> str:
    who = f"pid {holder}" if isinstance(holder, int) else "another process"
    return (f"a write is in progress (kbindex, {who}, is writing to {Path(db).resolve()}): the chunks it "
            "is writing would look like problems; run verify again when it ends, or pass --wait")


class _Writes:
    """Whether anything committed to the ledger while it was open: SQLite's `PRAGMA data_version`
    changes, for one connection, when another connection commits. Every writer writes the ledger
    before and after the store (the crash-safe order), so a write that started and ended while
    verify read shows here even though the write lock was free both times verify looked."""

    def __init__(self, db: Path):
        path = Path(db) / "kbindex.sqlite"
        self._conn = None
        if path.exists():
            ledger = Ledger(db, "")
            try:
                _ = ledger.db  # any upgrade of an older file's schema is done before the count starts
            except StoreError:
                pass
            finally:
                ledger.close()
            try:
                self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
                self._start = self._version()
            except sqlite3.Error:
                self._conn = None

    def _version(self) -> int:
        return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def happened(self) -> bool:
        if self._conn is None:
            return False
        try:
            return self._version() != self._start
        except sqlite3.Error:
            return False
        finally:
            self._conn.close()
            self._conn = None


# -- the check -------------------------------------------------------------------------------------


def _check(settings: Settings, written: Written | None = None) -> tuple[Report, _Findings | None]:
    """Look at the ledger, the store and the keyword index; (the report, what repair needs to
    know) or (report, None) when the store cannot be read at all.

    written: the chunks a repair has just written into a fresh collection of settings: the store
    is then confirmed on a sample (store.probe) instead of read back whole.
    """
    report = Report()
    findings = _Findings()
    name = settings.collection
    ledger = Ledger(settings.db, ledger_scope(settings))
    entries: dict[str, Entry] = {}
    try:
        if ledger.exists():
            ledger.check()
            entries = ledger.entries()
    except StoreError as exc:
        findings.ledger_damaged = True
        report.problems.append(f"{exc} (verify --repair sets it aside and adopts the store's chunks)")
    report.sources = len(entries)
    findings.ledger_empty = not entries
    try:
        store = Store(settings.db, settings.chroma_url, settings.timeout)
        names = store.collection_names() if store.exists() else []
        if name not in names and name + OLD_SUFFIX in names:
            findings.swap_interrupted = True
            report.problems.append(f"a swap of collection {name!r} was interrupted: its previous "
                                   f"copy is {name + OLD_SUFFIX!r}")
            ledger.close()
            return report, findings
        if name not in names and _missing(settings, store, entries, report):
            findings.collection_missing = True
            ledger.close()
            return report, findings
        collection = store.collection(name)
    except KbindexError as exc:
        report.problems.append(f"the store fails to open or answer: {exc}")
        ledger.close()
        return report, None
    if not settings.chroma_url:
        damage = _sqlite_damage(Path(settings.db) / "chroma.sqlite3")
        if damage:
            findings.store_file_damaged = True
            report.problems.append(f"the store's file chroma.sqlite3 is damaged ({damage}): run "
                                   "`kbindex verify --repair`")
    probe, failure = _probe(settings, written)
    if failure is not None and "cannot reach the Chroma server" in failure:
        report.problems.append(f"the store fails to open or answer: {failure}")
        ledger.close()
        return report, None
    if failure is not None or (probe is not None and probe.damage):
        findings.vector_damaged = True
        detail = failure if failure is not None else "; ".join(probe.damage)
        report.problems.append(f"the vector index of collection {name!r} is damaged ({detail}): run "
                               "`kbindex verify --repair`")
    if probe is not None:
        report.chunks = probe.count
    if not findings.ledger_damaged:
        findings.bound = collection.ledger_id == ledger.ledger_id and ledger.binding() == collection.id
    models = {e.model for e in entries.values() if e.model}
    if collection.model and models - {collection.model}:
        report.problems.append(
            f"model mismatch: the collection records {collection.model!r}, the ledger "
            f"{', '.join(sorted(models))} (re-embed with 'kbindex index --rebuild --model ...')")
    if probe is not None:
        listed = {i for e in entries.values() for i in e.chunk_ids}
        findings.orphans = sorted(set(probe.digests) - listed)
        if findings.orphans:
            sources = sorted({probe.digests[i][0] for i in findings.orphans})
            report.problems.append(
                f"{len(findings.orphans)} chunks in the store have no ledger entry "
                f"(from {len(sources)} sources, e.g. {sources[0]})" + _orphan_note(settings, findings, collection))
    _check_keyword(settings, report, findings, probe)
    if probe is not None:
        for entry in sorted(entries.values(), key=lambda e: e.source):
            missing = [i for i in entry.chunk_ids if i not in probe.digests]
            if not entry.clean:
                report.problems.append(f"{entry.source}: an update was interrupted")
                findings.broken.append(entry)
            elif missing:
                report.problems.append(f"{entry.source}: {len(missing)} of its {len(entry.chunk_ids)} chunks "
                                       "are missing from the store")
                findings.broken.append(entry)
    ledger.close()
    return report, findings


def _missing(settings: Settings, store: Store, entries: dict[str, Entry], report: Report) -> bool:
    """Whether the collection, absent from the store, is still held by the ledger or the keyword
    index (its files were deleted, or the collection alone): a loss to report and to rebuild, not
    an index that was never made. Adds the problem to report."""
    chunks = _keyword_count(settings)
    if not entries and not chunks:
        return False
    name = settings.collection
    why = (f"the store's file {Path(settings.db) / 'chroma.sqlite3'} is missing" if not store.exists()
           else f"the store at {store.location} has no collection {name!r}")
    if chunks:
        fix = (f"run `kbindex verify --repair` to rebuild it from the keyword index ({chunks} chunks) and "
               "the embedding cache")
    else:
        fix = ("the keyword index holds none of its chunks, so re-index its sources with `kbindex index` "
               "(vectors still cached are not embedded again)")
    report.problems.append(f"collection {name!r} is missing: {why}, but the ledger lists {len(entries)} of "
                           f"its sources; {fix}")
    return True


def _keyword_count(settings: Settings) -> int:
    """How many chunks the keyword index holds for the collection of settings; 0 when it cannot
    be read (without creating the file)."""
    if not (Path(settings.db) / LEXICAL_FILE).exists():
        return 0
    try:
        lexical = Index.from_settings(settings).keywords()
        try:
            return lexical.count()
        finally:
            lexical.close()
    except (StoreError, sqlite3.Error):
        return 0


def _orphan_note(settings: Settings, findings: _Findings, collection: Collection) -> str:
    if findings.bound:
        return ""
    if _may_adopt(settings, findings, collection):
        return ("; this ledger is not known to be the collection's, so verify --repair adopts them "
                "(it deletes nothing)")
    return (f"; this ledger ({Path(settings.db).resolve()}) is not the collection's (the collection "
            f"records ledger {collection.ledger_id}): verify --repair deletes nothing here; run it "
            "with the --db of the machine that indexes this collection")


def _may_adopt(settings: Settings, findings: _Findings, collection: Collection) -> bool:
    """Whether chunks this ledger does not list may be adopted into it (never deleted).

    Always for a local store (its ledger lives beside it: a ledger that does not know its chunks
    was lost or replaced) and for a ledger that lists nothing; on a server, also for a collection
    bound to no ledger yet. A server collection bound to another ledger is left alone: that
    machine's ledger describes it.
    """
    return (not settings.chroma_url or findings.ledger_empty or findings.ledger_damaged
            or collection.ledger_id is None)


def _sqlite_damage(path: Path) -> str:
    """What SQLite's quick_check finds wrong with a database file, read-only; "" when sound."""
    if not path.exists():
        return ""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            found = [r[0] for r in conn.execute("PRAGMA quick_check")]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return str(exc)
    return "" if found == ["ok"] else "; ".join(found[:2])


def _check_keyword(settings: Settings, report: Report, findings: _Findings, probe: Probe | None) -> None:
    name = settings.collection
    try:
        lexical = Index.from_settings(settings, name).keywords()
    except StoreError as exc:
        findings.keyword = "file"
        report.problems.append(f"the keyword index is damaged ({exc}): run `kbindex verify --repair`")
        return
    try:
        damage = lexical.check()
        if damage:
            findings.keyword = "file" if damage[0].startswith("the file") else "fts"
            report.problems.append(f"the keyword index of collection {name!r} is damaged: "
                                   f"{damage[0]}: run `kbindex verify --repair`")
            return
        if probe is None or findings.vector_damaged:
            return
        mine = lexical.digests()
        different = [i for i, (_, digest) in probe.digests.items() if mine.get(i) != digest]
        extra = set(mine) - set(probe.digests)
        if different or extra:
            findings.keyword = "step"
            report.problems.append(
                f"the keyword index is out of step with the store: {len(different)} chunks missing or "
                f"different, {len(extra)} that the store does not have")
    except sqlite3.Error as exc:
        findings.keyword = "file"
        report.problems.append(f"the keyword index of collection {name!r} is damaged ({exc}): run "
                               "`kbindex verify --repair`")
    finally:
        lexical.close()


# -- the store, read in a child process -------------------------------------------------------------


def _probe(settings: Settings, written: Written | None = None) -> tuple[Probe | None, str | None]:
    """(what reading the collection back found, None) or (None, why it could not be read)."""
    answer, failure = _in_child(settings, {"task": "probe", "written": written})
    if failure is not None:
        return None, failure
    data = answer["probe"]
    data["digests"] = {i: tuple(v) for i, v in data["digests"].items()}
    probe = Probe(**data)
    return probe, None


def _in_child(settings: Settings, task: dict) -> tuple[dict | None, str | None]:
    """Run a store task in a child Python process; (its JSON answer, None) or (None, failure)."""
    request = {**task, "db": str(settings.db), "url": settings.chroma_url, "timeout": settings.timeout,
               "collection": settings.collection,
               "scope": ledger_scope(settings)}
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryFile("w+") as out:
        # kbindex.verify_child imports only the store and the ledger: this module's imports (the
        # indexing pipeline, the crawler) took a second or more of each child's start.
        proc = subprocess.run([sys.executable, "-c", "from kbindex.verify_child import main; main()"],
                              input=json.dumps(request), stdout=out, stderr=subprocess.PIPE, text=True,
                              env=env)
        out.seek(0)
        text = out.read()
    if proc.returncode < 0:
        import signal

        try:
            what = signal.Signals(-proc.returncode).name
        except ValueError:
            what = f"signal {-proc.returncode}"
        return None, f"the store library crashed reading it ({what})"
    try:
        answer = json.loads(text)
    except json.JSONDecodeError:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return None, f"reading it failed: {last[:300]}"
    if not answer.get("ok"):
        return None, answer.get("error", "reading it failed")
    return answer, None


# -- repair ---------------------------------------------------------------------------------------------


def _repair(settings: Settings, report: Report, findings: _Findings,
            embedder: Callable[[str], Embedder] | None, lock: WriteLock) -> Report | None:
    """Fix what findings name; return the report of the repair's last look when nothing changed
    after it (None: check again)."""
    name = settings.collection
    store = Store(settings.db, settings.chroma_url, settings.timeout)
    ledger = Ledger(settings.db, ledger_scope(settings))
    try:
        if findings.ledger_damaged:
            aside = ledger.set_aside()
            report.actions.append(f"set the unreadable ledger aside as {aside.name}; a new ledger "
                                  "adopts the store's chunks")
        if findings.swap_interrupted:
            store.rename_collection(name + OLD_SUFFIX, name)
            report.actions.append(f"finished an interrupted swap: {name + OLD_SUFFIX!r} is {name!r} again")
        if findings.keyword == "file":
            aside = LexicalIndex.set_aside(settings.db)
            report.actions.append(f"set the damaged keyword index aside as {aside.name}")
        elif findings.keyword == "fts":
            lexical = Index.from_settings(settings, name).keywords()
            lexical.rebuild_fts()
            lexical.close()
            report.actions.append("rebuilt the keyword index's full-text index from its chunks")
        written: Written | None = None
        if findings.collection_missing:
            written = _rebuild_missing(settings, report, ledger, embedder)
            if written is None:
                return None
        elif findings.store_file_damaged:
            written = _rebuild_store(settings, report, embedder)
            if written is None:
                return None
        elif findings.vector_damaged:
            written = _rebuild_vectors(settings, report, findings, ledger, embedder)
            if written is None:
                return None
        if findings.ledger_damaged or findings.swap_interrupted or findings.vector_damaged or \
                findings.store_file_damaged or findings.collection_missing or findings.keyword in ("file", "fts"):
            # What the first steps changed: look again before the ledger is reconciled. After a
            # rebuild the fresh collection is confirmed on a sample (see store.probe): reading
            # back every chunk just written cost as much as writing them (docs/benchmarks.md).
            ledger.close()
            again, refreshed = _check(settings, written)
            if refreshed is None or not again.problems:
                return again
            if (refreshed.vector_damaged or refreshed.store_file_damaged) and written is None:
                # Found only now (the first look stopped at an interrupted swap or a lost ledger).
                written = _rebuild_store(settings, report, embedder) if refreshed.store_file_damaged \
                    else _rebuild_vectors(settings, report, refreshed, ledger, embedder)
                if written is None:
                    return None
                again, refreshed = _check(settings, written)
                if refreshed is None or not again.problems:
                    return again
            findings = refreshed
        collection = Store(settings.db, settings.chroma_url, settings.timeout).collection(name)
        if findings.orphans:
            _orphans(settings, report, findings, collection, ledger)
        if findings.keyword == "step" or (findings.keyword == "file"):
            lexical = Index.from_settings(settings, name).keywords()
            copied, deleted = lexical.sync(collection)
            lexical.close()
            report.actions.append(f"keyword index: copied {copied} chunks from the store, deleted {deleted}")
        if findings.broken:
            if not findings.bound and settings.chroma_url:
                report.actions.append(
                    f"not re-indexed: {len(findings.broken)} sources, because this ledger is not known to "
                    "be the collection's")
                return None
            _reindex(settings, report, findings, collection, embedder, lock)
        return None
    finally:
        ledger.close()


def _rebuild_vectors(settings: Settings, report: Report, findings: _Findings, ledger: Ledger,
                     embedder: Callable[[str], Embedder] | None) -> Written | None:
    """Write a fresh collection from the keyword index (or, when that cannot be read, the
    store's own copy of texts and metadata) and the embedding cache; swap it in. Returns what
    was written; None when nothing was (the reason is in report.actions)."""
    name = settings.collection
    store = Store(settings.db, settings.chroma_url, settings.timeout)
    collection = store.collection(name)
    model, dimension = collection.model, collection.dimension
    if model is None:
        report.actions.append(f"cannot rebuild collection {name!r}: it records no model")
        return None
    if not findings.ledger_damaged and collection.ledger_id not in (None, ledger.ledger_id) and settings.chroma_url:
        report.actions.append(f"not rebuilt: collection {name!r} belongs to another ledger (run verify "
                              "--repair with the --db that indexes it)")
        return None
    rows, origin = _chunks_of(settings)
    if rows is None:
        report.actions.append(
            f"cannot rebuild collection {name!r}: neither the keyword index nor the store's copy of the "
            "chunks can be read; re-index it with `kbindex index --rebuild`")
        return None
    return _restore(settings, report, rows, model, dimension, ledger, embedder,
                    f"the vector index of collection {name!r} from {origin}")


def _rebuild_missing(settings: Settings, report: Report, ledger: Ledger,
                     embedder: Callable[[str], Embedder] | None) -> Written | None:
    """Write the collection again from the keyword index and the embedding cache when the store
    lost it (its files deleted: a fresh local store is made), as _rebuild_vectors does for a
    damaged one. The model is the one the chunks' metadata record. Returns what was written;
    None when nothing was (the reason is in report.actions)."""
    name = settings.collection
    rows: list[Row] = []
    if (Path(settings.db) / LEXICAL_FILE).exists():
        try:
            lexical = Index.from_settings(settings, name).keywords()
            try:
                rows = list(lexical.rows())
            finally:
                lexical.close()
        except (StoreError, sqlite3.Error):
            rows = []
    if not rows:
        report.actions.append(f"cannot rebuild the missing collection {name!r}: the keyword index holds none "
                              "of its chunks; re-index its sources with `kbindex index`")
        return None
    models = {str(r.metadata["model"]) for r in rows if r.metadata.get("model")}
    if not models:
        try:
            models = {e.model for e in ledger.entries().values() if e.model}
        except StoreError:
            models = set()
    if len(models) != 1:
        report.actions.append(f"cannot rebuild the missing collection {name!r}: its chunks record "
                              f"{'no model' if not models else 'several models: ' + ', '.join(sorted(models))}; "
                              "re-index it with `kbindex index --rebuild`")
        return None
    (model,) = models
    return _restore(settings, report, rows, model, None, ledger, embedder,
                    f"the missing collection {name!r} from the keyword index")


def _restore(settings: Settings, report: Report, rows: list[Row], model: str, dimension: int | None,
             ledger: Ledger, embedder: Callable[[str], Embedder] | None, what: str) -> Written:
    """restore() the collection from rows and say in report what was rebuilt (`what`: from where)."""
    done: Restored = restore(settings, rows, model, dimension, ledger, embedder)
    report.rebuilt = {"collection": settings.collection, "chunks": done.chunks,
                      "from_cache": done.from_cache, "embedded": done.embedded}
    report.actions.append(
        f"rebuilt {what}: {done.chunks} chunks, "
        f"{done.from_cache} vectors from the embedding cache, {done.embedded} embedded")
    return _written(rows)


def _written(rows: list[Row]) -> Written:
    from kbindex.store.chroma import metadata_digest

    return {r.id: (str(r.metadata.get("source", "")), metadata_digest(r.metadata)) for r in rows}


def _chunks_of(settings: Settings) -> tuple[list[Row] | None, str]:
    """Every chunk of the collection (text, metadata, context line) and where they were read:
    the keyword index when it holds any, else the store's own copy, read in a child process
    (the vector index may crash the process that loads it). (None, "") when neither can be read."""
    try:
        lexical = Index.from_settings(settings).keywords()
        try:
            if lexical.count():
                return list(lexical.rows()), "the keyword index"
        finally:
            lexical.close()
    except (StoreError, sqlite3.Error):
        pass
    fd, name = tempfile.mkstemp(suffix=".jsonl")
    os.close(fd)
    dump = Path(name)
    try:
        _, failure = _in_child(settings, {"task": "rows", "out": str(dump)})
        if failure is not None:
            return None, ""
        with open(dump, encoding="utf-8") as handle:
            rows = [Row.from_stored(r["id"], r["text"], r["metadata"]) for r in map(json.loads, handle)]
        return rows, "the store's own copy of the chunks"
    finally:
        dump.unlink(missing_ok=True)


def _rebuild_store(settings: Settings, report: Report,
                   embedder: Callable[[str], Embedder] | None) -> Written | None:
    """Make the local store again, every collection in it, when its SQLite file is damaged.
    Returns what was written into the collection of settings; None when nothing was."""
    from dataclasses import replace

    store = Store(settings.db)
    carried: list[Carried] = []
    mine_rows: list[Row] = []
    ledgers: list[Ledger] = []
    for name in store.collection_names():
        if name.endswith(REBUILD_SUFFIX):  # an unfinished rebuild: made again by running it again
            continue
        collection = store.collection(name)
        target = replace(settings, collection=name)
        rows, origin = _chunks_of(target)
        if rows is None or collection.model is None:
            report.actions.append(
                f"not rebuilt: the store's file is damaged and the chunks of collection {name!r} cannot be "
                "read from the keyword index or the store; re-index it with `kbindex index --rebuild`")
            for ledger in ledgers:
                ledger.close()
            return None
        if name == settings.collection:
            mine_rows = rows
        ledger = Ledger(settings.db, ledger_scope(target))
        ledgers.append(ledger)
        carried.append(Carried(name, collection.model, collection.dimension, lambda rows=rows: rows, ledger))
    try:
        aside, written = restore_store(settings.db, carried, embedder)
    finally:
        for ledger in ledgers:
            ledger.close()
    for name, done in written.items():
        report.actions.append(
            f"rebuilt collection {name!r} into a fresh store: {done.chunks} chunks, {done.from_cache} "
            f"vectors from the embedding cache, {done.embedded} embedded")
    mine = written.get(settings.collection)
    if mine is not None:
        report.rebuilt = {"collection": settings.collection, "chunks": mine.chunks,
                          "from_cache": mine.from_cache, "embedded": mine.embedded}
    report.actions.append(f"the damaged store's files are kept in {aside}")
    return _written(mine_rows)


def _orphans(settings: Settings, report: Report, findings: _Findings, collection: Collection,
             ledger: Ledger) -> None:
    """Delete the chunks no entry lists when this ledger is the collection's; otherwise adopt
    them where that is safe (see _may_adopt)."""
    if findings.bound and not findings.ledger_empty:
        with Index.of(collection) as index:
            index.delete(findings.orphans)
            index.finish()
        report.actions.append(f"deleted {len(findings.orphans)} chunks that no ledger entry lists")
        return
    if not _may_adopt(settings, findings, collection):
        report.actions.append(f"not deleted: {len(findings.orphans)} chunks this ledger does not list, "
                              "because it is not the collection's ledger")
        return
    adopted = _adopt(collection, ledger, findings.orphans)
    report.actions.append(f"adopted {len(findings.orphans)} chunks of {adopted} sources that the ledger "
                          "did not list (rebuilt from their metadata; nothing deleted)")
    if not settings.chroma_url or collection.ledger_id is None:
        # The ledger now lists every chunk: it is this collection's ledger from here on.
        collection.bind(ledger.ledger_id)
        ledger.bind(collection.id)
    else:
        bind(collection, ledger)


def _adopt(collection: Collection, ledger: Ledger, ids: list[str]) -> int:
    """Record ledger entries for chunks from their own metadata (source, doc_hash, model,
    chunking), merged into the source's entry when it has one, and cache their vectors."""
    model = collection.model
    by_source: dict[str, list] = {}
    for match in collection.read(ids):
        by_source.setdefault(str(match.metadata.get("source", "")), []).append(match)
    entries = ledger.entries()
    finished, vectors = [], {}
    for source, matches in by_source.items():
        matches.sort(key=lambda m: (int(m.metadata.get("position", 0) or 0), m.id))
        hashes = []
        for m in matches:
            row = Row.from_stored(m.id, m.text, m.metadata)
            h = text_hash(f"{row.context}\n\n{row.text}")
            hashes.append(h)
            if m.vector is not None and model:
                vectors[h] = m.vector
        meta = matches[0].metadata
        old = entries.get(source)
        if old is not None:
            finished.append(Entry(**{**asdict(old), "chunk_ids": old.chunk_ids + tuple(m.id for m in matches),
                                     "text_hashes": old.text_hashes + tuple(hashes)}))
            continue
        finished.append(Entry(
            source=source, root=source, content_hash=str(meta.get("doc_hash") or text_hash(source)),
            chunking=meta.get("chunking"), model=meta.get("model") or model,
            chunk_ids=tuple(m.id for m in matches), text_hashes=tuple(hashes),
            indexed_at=meta.get("indexed_at")))
    if model:
        ledger.cache_vectors(recorded_identity(ledger.path.parent, ledger.scope, model), vectors)
    ledger.commit(finished)
    return len(finished)


def _reindex(settings: Settings, report: Report, findings: _Findings, collection: Collection,
             embedder: Callable[[str], Embedder] | None, lock: WriteLock) -> None:
    if embedder is None:
        report.actions.append("cannot re-index without a model")
        return
    ledger = Ledger(settings.db, ledger_scope(settings))
    by_setup: dict[tuple[str, str], list[Entry]] = {}
    for entry in findings.broken:
        by_setup.setdefault((entry.model or collection.model or "", entry.chunking or ""), []).append(entry)
    for (model, chunking), entries in by_setup.items():
        # Forget the recorded hashes, so that each source is read and written again in full.
        for entry in entries:
            ledger.put(_dirty(entry))
        worker = Indexer(settings, embedder(model), config=_config(chunking), lock=lock)
        worker.keep_roots = True
        with worker:
            worker.open()
            summary = worker.run([
                Source("url", e.source, options=CrawlOptions(depth=0)) if is_url(e.source)
                else Source("file", e.source) for e in entries])
        report.repaired = summary
        report.actions.append(
            f"re-indexed {summary.indexed} sources ({summary.chunks_added} chunks written, "
            f"{summary.chunks_embedded} embedded), removed {summary.pruned} that are gone, "
            f"{summary.failed} failed")
    ledger.close()


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
