"""Export a collection as JSON Lines and read such a file back (streaming, constant memory).

Format: the first line is a header object, each further line one chunk:
  {"kbindex_export": 1, "collection": str, "model": str, "dimension": int, "chunks": int}
  {"id": str, "text": str, "metadata": {...}, "embedding": [float, ...]}   # embedding optional
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from kbindex.chunk import context_line
from kbindex.errors import KbindexError
from kbindex.records import Chunk
from kbindex.store.chroma import Collection

FORMAT_VERSION = 1
RESERVED = ("source", "title", "section", "position", "doc_hash", "anchor", "model")


class ImportFormatError(KbindexError):
    """The file is not a kbindex export."""

    exit_code = 1


@dataclass(frozen=True)
class ExportHeader:
    collection: str
    model: str
    dimension: int | None
    chunks: int | None


def export_jsonl(collection: Collection, out: IO[str], with_vectors: bool = False) -> int:
    """Write the header and every chunk; returns the number of chunks written."""
    header = {
        "kbindex_export": FORMAT_VERSION,
        "collection": collection.name,
        "model": collection.model,
        "dimension": collection.dimension,
        "chunks": collection.count(),
        "vectors": with_vectors,
    }
    out.write(json.dumps(header) + "\n")
    n = 0
    for match in collection.scan(include_text=True, include_vectors=with_vectors):
        row = {"id": match.id, "text": match.text, "metadata": match.metadata}
        if with_vectors:
            row["embedding"] = [round(float(x), 7) for x in match.vector]
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        n += 1
    return n


def read_export(lines: IO[str], name: str = "<stdin>") -> tuple[ExportHeader, Iterator[tuple[Chunk, list[float] | None]]]:
    """The header and an iterator of (chunk, vector or None) from an export file."""
    first = lines.readline()
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("kbindex_export") != FORMAT_VERSION:
        raise ImportFormatError(f"{name}: not a kbindex export (line 1 is not its header)")
    if not header.get("model"):
        raise ImportFormatError(f"{name}: the export header names no model")
    dimension = header.get("dimension")
    if dimension is not None and (not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 1):
        raise ImportFormatError(f"{name}: the export header's dimension is not a positive integer")

    return ExportHeader(header["collection"], header["model"], header.get("dimension"), header.get("chunks")), _rows(lines, name)


def _rows(lines: IO[str], name: str) -> Iterator[tuple[Chunk, list[float] | None]]:
    for number, line in enumerate(lines, 2):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            meta = dict(row["metadata"])
            if not isinstance(row["id"], str) or not row["id"]:
                raise ValueError("its id is not a non-empty string")
            # Chroma keeps only these as metadata values; anything else would fail mid-import.
            if not all(v is None or isinstance(v, (str, int, float, bool)) for v in meta.values()):
                raise ValueError("a metadata value is not a string, number or boolean")
            chunk = Chunk(
                id=str(row["id"]),
                source=str(meta["source"]),
                title=str(meta.get("title", "")),
                section=str(meta.get("section", "")),
                position=int(meta.get("position", 0)),
                text=str(row["text"]),
                embed_text=f"{context_line(str(meta.get('title', '')), str(meta.get('section', '')))}\n\n{row['text']}",
                doc_hash=str(meta.get("doc_hash", "")),
                anchor=meta.get("anchor"),
                metadata={k: v for k, v in meta.items() if k not in RESERVED},
            )
            vector = row.get("embedding")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ImportFormatError(f"{name}:{number}: bad chunk record: {exc}") from exc
        yield chunk, vector


@dataclass(frozen=True)
class CheckedExport:
    """An export file read through once and found sound (open_export)."""

    header: ExportHeader
    rows: Callable[[], Iterator[tuple[Chunk, list[float] | None]]]  # read the chunks again
    chunks: int  # chunk lines
    without_vector: int  # chunk lines that carry no embedding (they must be embedded)
    dimension: int | None  # of the vectors: the header's, else the first vector's


def open_export(file: IO[str], name: str = "<stdin>") -> CheckedExport:
    """Read a whole export file and check every line before anything is written, so that a bad
    line anywhere leaves the target untouched; ImportFormatError names the first bad line.

    Checks: each line is a chunk record; each embedding is a list of finite numbers, all of the
    header's `dimension` (or of the first vector's length when the header gives none). A stream
    that cannot be read twice (stdin) is copied to a temporary file on the way.
    """
    try:
        seekable = file.seekable()
    except (AttributeError, OSError, ValueError):
        seekable = False
    if seekable:
        source = file
    else:
        source = tempfile.TemporaryFile("w+", encoding="utf-8")
        shutil.copyfileobj(file, source)
        source.seek(0)
    header, rows = read_export(source, name)
    body = source.tell()  # after the header; rows are read lazily
    dimension = header.dimension
    chunks = without = 0
    for _, vector in rows:
        chunks += 1
        if vector is None:
            without += 1
            continue
        if not isinstance(vector, list) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in vector):
            raise ImportFormatError(f"{name}: chunk {chunks}: its embedding is not a list of numbers")
        if dimension is None:
            dimension = len(vector)
        if len(vector) != dimension:
            raise ImportFormatError(
                f"{name}: chunk {chunks}: its embedding has {len(vector)} dimensions, the "
                f"{'header says' if header.dimension else 'first one has'} {dimension}")

    def again() -> Iterator[tuple[Chunk, list[float] | None]]:
        source.seek(body)
        return _rows(source, name)

    return CheckedExport(header, again, chunks, without, dimension)
