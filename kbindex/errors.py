"""Errors raised by kbindex. Only cli.py turns them into messages and exit codes."""

from __future__ import annotations

import errno
import os
from pathlib import Path


class KbindexError(Exception):
    """A foreseeable failure; its message is shown to the user as one line."""

    exit_code = 1


class UsageError(KbindexError):
    """The command was called wrongly (bad option value, empty query)."""

    exit_code = 2


class SourceError(KbindexError):
    """One source (file or URL) could not be read; the run goes on without it."""

    def __init__(self, source: str, reason: str, kind: str = "error"):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
        self.kind = kind  # short machine-readable reason, e.g. "http_404", "timeout"

    def __reduce__(self):
        # Rebuilt from its fields (args holds only the message): it crosses from the extraction
        # worker processes as a pickle.
        return self.__class__, (self.source, self.reason, self.kind), self.__dict__


class FetchError(SourceError):
    """An HTTP fetch failed (network, status, limits)."""

    def __init__(
        self,
        source: str,
        reason: str,
        kind: str = "fetch",
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(source, reason, kind)
        self.status = status
        self.retry_after = retry_after  # seconds the server asked us to wait (429/503)

    @property
    def transient(self) -> bool:
        """True for failures that may pass on their own (timeouts, 5xx, 429)."""
        return self.kind in {"timeout", "connection"} or (
            self.status is not None and (self.status >= 500 or self.status == 429)
        )


class UnreadableFolder(SourceError):
    """A folder a walk could not list: what it holds is unknown, so nothing under it is pruned."""


class SkipSource(SourceError):
    """A source that is deliberately not indexed (empty, binary, not HTML)."""


class ModelMismatchError(KbindexError):
    """The collection was built with a different embedding model."""


class CollectionError(KbindexError):
    """The collection is missing, empty, or its name is invalid."""


class StoreError(KbindexError):
    """The vector store could not be opened, read or written."""


class WriteError(StoreError):
    """A file of the index could not be written: the disk is full, or writing is refused."""

    def __init__(self, path: str | os.PathLike, reason: str, full: bool = False):
        self.path = str(path)
        self.reason = reason
        self.full = full
        what = f"cannot write {self.path}"
        super().__init__(full_disk_message(what) if full else f"{what}: {reason}")

    @classmethod
    def of(cls, path: str | os.PathLike, exc: BaseException) -> WriteError:
        """The WriteError for exc (an OSError, or a sqlite3 or chromadb error) met writing path."""
        return cls(path, first_line(exc), disk_full(exc, path))


def full_disk_message(what: str) -> str:
    """The one message for a full disk, whatever was being written (what: "cannot write PATH").

    Nothing is lost: the write lock goes with the process, and the ledger is written before and
    after the store (ledger.py), so a write cut short leaves sources marked dirty, which the next
    run writes again.
    """
    return (f"the disk is full: {what}; free some space and run the command again "
            "(nothing indexed is lost: the next run finishes the work)")


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# SQLite's primary result codes (sqlite.org/rescode.html): SQLITE_FULL "database or disk is full",
# SQLITE_IOERR "disk I/O error".
_SQLITE_FULL, _SQLITE_IOERR = 13, 10
_FULL_TEXTS = ("database or disk is full", "no space left on device", "disk quota exceeded")


# A write to the local Chroma store that failed for a reason it does not name is put down to the
# disk when less than this is left on it (or a tenth of the disk, on a small one): Chroma reports a
# full disk met while it compacts as "Error in compaction: Failed to apply logs to the metadata
# segment", and by then it has often given back what it had taken (measured on a 40 MB tmpfs
# filled during an index run: 4 KB to 1.3 MB free afterwards).
LOW_SPACE = 64 * 2**20


def disk_full(exc: BaseException, path: str | os.PathLike | None = None, local_store: bool = False) -> bool:
    """True when exc, or an exception it was raised from, says the disk is full.

    With path (the index folder): also when the file system there is (nearly) full and exc is an
    I/O error (SQLite reports some full-disk writes, those of its WAL index, only as "disk I/O
    error"), or, with local_store, an error of Chroma's own.
    """
    io_error = chroma = False
    for cause in _chain(exc):
        code = (getattr(cause, "sqlite_errorcode", None) or 0) & 0xFF
        text = str(cause).lower()
        if isinstance(cause, OSError) and cause.errno in _FULL_ERRNOS or code == _SQLITE_FULL:
            return True
        if any(t in text for t in _FULL_TEXTS):  # chromadb's Rust errors carry only text
            return True
        io_error |= (isinstance(cause, OSError) and cause.errno in (errno.EIO, None)
                     or code == _SQLITE_IOERR or "disk i/o error" in text)
        chroma |= type(cause).__module__.startswith("chromadb")
    if path is None or not (io_error or local_store and chroma):
        return False
    stat = _statvfs(path)
    if stat is None or stat.f_flag & os.ST_RDONLY:  # a read-only disk is not a full one
        return False
    return stat.f_bavail * stat.f_frsize < min(LOW_SPACE, stat.f_blocks * stat.f_frsize // 10)


def _chain(exc: BaseException | None):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _statvfs(path: str | os.PathLike) -> os.statvfs_result | None:
    """The file system facts of path's nearest existing folder; None when they cannot be read."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return os.statvfs(folder)
    except OSError:
        return None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (OSError: its strerror), or its class name."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class LockedError(KbindexError):
    """Another process holds the write lock on the store."""


class ModelError(KbindexError):
    """The embedding model could not be loaded."""


class ConfigError(KbindexError):
    """The project config file is invalid; the message names the file, line and key."""

    exit_code = 2


class WriteInProgressError(KbindexError):
    """A write holds the store, so a check would see it half done (retry later, or --wait)."""

    # EX_TEMPFAIL of sysexits.h (BSD): a temporary failure; the user is invited to retry.
    exit_code = 75
