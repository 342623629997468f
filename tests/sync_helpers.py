"""Shared by the sync tests: run kbindex in a subprocess, read the ledger and the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kbindex.store.chroma import Store
from kbindex.store.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent


def spawn(*args: str, env: dict | None = None, stderr_path: Path) -> subprocess.Popen:
    """Start `kbindex ARGS` (fake embedder registered) in a new process."""
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "KBINDEX_MODEL": "fake:hash", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fake_kbindex", *args], cwd=ROOT, env=full,
        stdout=subprocess.PIPE, stderr=stderr_path.open("w"), text=True,
    )


def run(*args: str, env: dict | None = None, tmp: Path) -> tuple[int, str, str]:
    err = tmp / f"stderr-{time.monotonic_ns()}.txt"
    proc = spawn(*args, env=env, stderr_path=err)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out, err.read_text()


def wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until the file contains text (a process announcing a pause point)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process exited {proc.returncode} first:\n{path.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not seen in {path}: {path.read_text()}")


def snapshot(db: Path, collection: str = "kbindex", url: str | None = None) -> dict:
    """What the store and the ledger hold: {source: sorted chunk ids} from each side."""
    store: dict[str, list[str]] = {}
    for match in Store(db, url).collection(collection).scan():
        store.setdefault(match.metadata["source"], []).append(match.id)
    scope = f"{url.rstrip('/')}#{collection}" if url else collection
    ledger = Ledger(db, scope)
    try:
        entries = ledger.entries()
    finally:
        ledger.close()
    return {
        "store": {s: sorted(ids) for s, ids in store.items()},
        "ledger": {s: sorted(e.chunk_ids) for s, e in entries.items()},
        "clean": all(e.clean for e in entries.values()),
    }


def assert_consistent(db: Path, files: set[str] | None = None, **kw) -> dict:
    snap = snapshot(db, **kw)
    assert snap["clean"], "an entry is still dirty"
    assert snap["store"] == snap["ledger"]
    if files is not None:
        assert set(snap["ledger"]) == files
    return snap


def summary(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])
