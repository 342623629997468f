"""The part of `verify` that reads the store in a child process (see verify._in_child).

A damaged HNSW file can crash the process that loads it (a segmentation fault inside Chroma's
native code); verify runs these reads in a child so that a crash becomes a finding. The child
reads one JSON request on stdin and writes one JSON answer on stdout. It imports only the store
and the ledger: each child's start is part of what a check and a repair cost.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from kbindex.embedding.modelcache import recorded_identity
from kbindex.errors import KbindexError, StoreError
from kbindex.store.chroma import Store, probe
from kbindex.store.ledger import Ledger


def main() -> None:
    """One task, a JSON answer on stdout.

    Request: {"task": "probe" | "rows", "db", "url", "timeout" (seconds), "collection", "scope"}, plus "written" for a
    probe of a collection just written (store.probe) and "out", a file path, for "rows".
    Answer: {"ok": true, "probe": store.Probe as a dict} or {"ok": true, "rows": count}, or
    {"ok": false, "error": message}.
    """
    request = json.loads(sys.stdin.read())
    try:
        store = Store(Path(request["db"]), request["url"], request["timeout"])
        collection = store.collection(request["collection"])
        if request["task"] == "probe":
            expected = cache_lookup(Path(request["db"]), request["scope"], collection.model)
            written = request.get("written")
            result = probe(collection, expected,
                           written=None if written is None else {i: tuple(v) for i, v in written.items()})
            answer = {"ok": True, "probe": asdict(result)}
        else:  # "rows": every chunk's text and metadata, one JSON object a line, into a file
            n = 0
            with open(request["out"], "w", encoding="utf-8") as out:
                for match in collection.scan(include_text=True):
                    out.write(json.dumps({"id": match.id, "text": match.text, "metadata": match.metadata}) + "\n")
                    n += 1
            answer = {"ok": True, "rows": n}
    except KbindexError as exc:
        answer = {"ok": False, "error": str(exc)}
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()


def cache_lookup(db: Path, scope: str, model: str | None) -> Callable[[Sequence[str]], dict]:
    """ids -> their vectors in the embedding cache, where the ledger knows their text's hash."""
    ledger = Ledger(db, scope)
    try:
        hashes = ledger.text_hashes() if ledger.exists() else {}
    except (StoreError, sqlite3.Error):
        hashes = {}

    def expected(ids):
        wanted = {i: hashes[i] for i in ids if i in hashes}
        if not wanted or model is None:
            return {}
        try:
            cached = ledger.cached_vectors(recorded_identity(db, scope, model), wanted.values())
        except (StoreError, sqlite3.Error):
            return {}
        return {i: cached[h] for i, h in wanted.items() if h in cached}

    return expected
