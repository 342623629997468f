"""Walking a folder safely and reading files as Pages.

PDF and DOCX files are read as bytes like any other; kbindex.extract turns them into text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from stat import S_ISBLK, S_ISCHR, S_ISDIR, S_ISFIFO, S_ISREG, S_ISSOCK

from kbindex.config import DEFAULT_MAX_BYTES, FOLDER_EXTENSIONS
from kbindex.errors import SkipSource, SourceError, UnreadableFolder
from kbindex.records import Page


def walk(folder: Path, extensions: tuple[str, ...] = FOLDER_EXTENSIONS,
         follow_links: bool = False) -> Iterator[Path | SourceError]:
    """Files under folder with a known extension, or the problem that replaced them.

    Top-down, each folder's files (sorted by name) before its subfolders; hidden entries are
    skipped. Yields:

    - a Path per file, named under `folder` (a link inside the folder to a file inside it: by
      its target's path, so the file is read once);
    - UnreadableFolder for a folder that cannot be listed (permission denied, I/O error): what it
      holds is unknown, so the caller must not take its files as gone;
    - a Path for a FIFO or a device with a known extension too, so that read_file reports it as
      skipped rather than it vanishing silently (a dangling link is not yielded);
    - SkipSource(kind="outside_folder") for a symbolic link that resolves outside `folder`,
      unless `follow_links`; then the link is read under its own path (a linked folder is walked,
      each real folder once, so a link loop cannot trap the walk).

    Written over os.scandir rather than os.walk, whose followlinks is all or nothing and whose
    onerror cannot tell which subtree was lost.
    """
    top = Path(os.path.realpath(folder))
    yield from _walk(Path(folder), top, extensions, follow_links, {top})


def _walk(path: Path, top: Path, extensions: tuple[str, ...], follow_links: bool,
          walked: set[Path]) -> Iterator[Path | SourceError]:
    try:
        with os.scandir(path) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        yield _unreadable(path, exc)
        return
    folders: list[Path] = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        item = Path(entry.path)
        try:
            is_link = entry.is_symlink()
            is_dir = entry.is_dir()  # follows a link
        except OSError as exc:
            # Unknown whether it is a file or a folder: either way it is not taken as gone.
            if item.suffix.lower() in extensions:
                yield SourceError(str(item), exc.strerror or str(exc), kind="os_error")
            else:
                yield _unreadable(item, exc)
            continue
        if not is_dir and item.suffix.lower() not in extensions:
            continue  # another type: nothing to read
        # A FIFO or a device with a known extension is yielded like a file: read_file reports it.
        if is_link:
            try:
                target = item.resolve(strict=True)
            except (OSError, RuntimeError):
                continue  # the link broke meanwhile, or loops
            if not target.is_relative_to(top):
                if not follow_links:
                    what = "folder" if is_dir else "file"
                    yield SkipSource(str(item), f"symbolic link to the {what} {target}, outside the "
                                     "folder: not followed (--follow-links follows it)",
                                     kind="outside_folder")
                    continue
                if is_dir:
                    if target not in walked:
                        walked.add(target)
                        folders.append(item)
                    continue
                yield item  # read through the link, named under the folder
                continue
            if is_dir:
                continue  # a folder inside the folder: walked under its own name
            yield target
        elif is_dir:
            real = Path(os.path.realpath(item))  # reached before through a followed link?
            if real not in walked:
                walked.add(real)
                folders.append(item)
        else:
            yield item
    for sub in folders:
        yield from _walk(sub, top, extensions, follow_links, walked)


def _unreadable(path: Path, exc: OSError) -> UnreadableFolder:
    kind = "permission" if isinstance(exc, PermissionError) else "os_error"
    return UnreadableFolder(str(path), f"cannot read this folder ({exc.strerror or exc}): nothing "
                            "under it is pruned", kind=kind)


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
