"""Walking a folder safely and reading files as Pages.

PDF and DOCX files are read as bytes like any other; kbindex.extract turns them into text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from stat import S_ISBLK, S_ISCHR, S_ISDIR, S_ISFIFO, S_ISREG, S_ISSOCK

from kbindex.config import DEFAULT_MAX_BYTES, FOLDER_EXTENSIONS
from kbindex.errors import SkipSource, SourceError
from kbindex.records import Page


def walk(folder: Path, extensions: tuple[str, ...] = FOLDER_EXTENSIONS) -> Iterator[Path]:
    """Files under folder with a known extension, sorted, skipping hidden entries.

    Symbolic links to folders are not followed, so a link loop cannot trap the walk. A FIFO or a
    device with a known extension is yielded too, so that read_file reports it as skipped rather
    than it vanishing silently; a broken symbolic link is not.
    """
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            if path.suffix.lower() in extensions and path.exists() and not path.is_dir():
                yield path.resolve()


def read_file(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Page:
    """A file's bytes as a Page; raises SourceError when it cannot be read.

    Only regular files are read, as the open file descriptor says (a check of the path before
    opening could be raced): a FIFO would block the run until a writer came, a device such as
    /dev/zero never ends. The file is opened without blocking (a FIFO opens at once that way),
    and at most max_bytes + 1 bytes are read whatever size it claims (files in /proc claim 0).

    Raises:
        SkipSource: not a regular file (kind "not_regular"), too large ("too_large"), empty.
        SourceError: it cannot be opened or read ("permission", "os_error").
    """
    source = str(path)
    try:
        # Checked before opening too, so that a device is never even opened (opening some has
        # effects), and again on the descriptor, which is what is read.
        _check_regular(source, os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "rb", buffering=0) as handle:
            stat = os.fstat(handle.fileno())
            _check_regular(source, stat.st_mode)
            if stat.st_size > max_bytes:
                raise SkipSource(source, f"file larger than {max_bytes} bytes", kind="too_large")
            body = _read_capped(handle, max_bytes)
            if body is None:
                raise SkipSource(source, f"file larger than {max_bytes} bytes", kind="too_large")
    except PermissionError as exc:
        raise SourceError(source, "permission denied", kind="permission") from exc
    except OSError as exc:
        raise SourceError(source, exc.strerror or str(exc), kind="os_error") from exc
    if not body.strip():
        raise SkipSource(source, "empty file", kind="empty")
    return Page(source=source, body=body, size=stat.st_size, mtime=stat.st_mtime)


def _read_capped(handle, max_bytes: int) -> bytes | None:
    """Up to max_bytes from the file; None when there is more."""
    chunks = []
    left = max_bytes + 1
    while left > 0:
        block = handle.read(min(left, 1 << 20))
        if not block:
            break
        chunks.append(block)
        left -= len(block)
    body = b"".join(chunks)
    return None if len(body) > max_bytes else body


def _check_regular(source: str, mode: int) -> None:
    if not S_ISREG(mode):
        raise SkipSource(source, f"not a regular file ({_file_kind(mode)})", kind="not_regular")


def _file_kind(mode: int) -> str:
    for test, name in ((S_ISFIFO, "a FIFO"), (S_ISCHR, "a character device"), (S_ISBLK, "a block device"),
                       (S_ISSOCK, "a socket"), (S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "a special file"
