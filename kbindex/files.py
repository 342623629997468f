"""Walking a folder safely and reading files as Pages.

PDF and DOCX files are read as bytes like any other; kbindex.extract turns them into text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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
            is_file = not is_dir and entry.is_file()
        except OSError as exc:
            # Unknown whether it is a file or a folder: either way it is not taken as gone.
            if item.suffix.lower() in extensions:
                yield SourceError(str(item), exc.strerror or str(exc), kind="os_error")
            else:
                yield _unreadable(item, exc)
            continue
        if not (is_dir or (is_file and item.suffix.lower() in extensions)):
            continue  # another type, or a dangling link: nothing to read
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
    """A file's bytes as a Page; raises SourceError when it cannot be read."""
    source = str(path)
    try:
        stat = path.stat()
        if stat.st_size > max_bytes:
            raise SkipSource(source, f"file larger than {max_bytes} bytes", kind="too_large")
        body = path.read_bytes()
    except PermissionError as exc:
        raise SourceError(source, "permission denied", kind="permission") from exc
    except OSError as exc:
        raise SourceError(source, exc.strerror or str(exc), kind="os_error") from exc
    if not body.strip():
        raise SkipSource(source, "empty file", kind="empty")
    return Page(source=source, body=body, size=stat.st_size, mtime=stat.st_mtime)
