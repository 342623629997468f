"""One writer per store: an exclusive advisory lock on <db>/kbindex.lock, held for a whole write.

flock(2) locks belong to the open file: the kernel drops them when the process ends, however it
ends (SIGKILL included), so a crashed writer never leaves a stale lock behind. The file records the
holder's pid only to name it in the message a second writer gets. Readers never take the lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from kbindex.errors import LockedError, StoreError, WriteError

LOCK_NAME = "kbindex.lock"


class WriteLock:
    """Exclusive lock on a store folder; use as a context manager or acquire()/release()."""

    def __init__(self, db: Path, wait: bool = False):
        self.path = Path(db) / LOCK_NAME
        self.wait = wait
        self._fd: int | None = None

    def acquire(self) -> WriteLock:
        if self._fd is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WriteError.of(self.path, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise LockedError(
                f"another kbindex ({who}) is writing to {self.path.parent.resolve()}; "
                "wait for it to finish, or pass --wait to queue behind it"
            ) from None
        except OSError as exc:  # flock itself failed (ENOLCK: a file system without locks)
            os.close(fd)
            raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            # A disk too full for these few bytes cannot take the write that would follow: stop
            # here, before anything is touched.
            os.close(fd)  # drops the flock
            raise WriteError.of(self.path, exc) from exc
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass  # the pid left in the file only names a holder that is gone: harmless
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> WriteLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
