"""Export a collection as JSON Lines and read such a file back (streaming, constant memory).

Format: the first line is a header object, each further line one chunk:
  {"kbindex_export": 1, "collection": str, "model": str, "dimension": int, "chunks": int}
  {"id": str, "text": str, "metadata": {...}, "embedding": [float, ...]}   # embedding optional
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from kbindex.chunk import context_line
from kbindex.errors import KbindexError
from kbindex.records import Chunk
from kbindex.store import Collection

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

    def rows() -> Iterator[tuple[Chunk, list[float] | None]]:
        for number, line in enumerate(lines, 2):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                meta = dict(row["metadata"])
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

    return ExportHeader(header["collection"], header["model"], header.get("dimension"), header.get("chunks")), rows()
