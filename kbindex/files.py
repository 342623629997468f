"""Walking a folder safely and reading files as Pages.

PDF and DOCX files are read as bytes like any other; kbindex.extract turns them into text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from kbindex.config import DEFAULT_MAX_BYTES, FOLDER_EXTENSIONS
from kbindex.errors import SkipSource, SourceError
from kbindex.records import Page


def walk(folder: Path, extensions: tuple[str, ...] = FOLDER_EXTENSIONS) -> Iterator[Path]:
    """Files under folder with a known extension, sorted, skipping hidden entries.

    Symbolic links to folders are not followed, so a link loop cannot trap the walk.
    """
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            if path.suffix.lower() in extensions and path.is_file():
                yield path.resolve()


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
