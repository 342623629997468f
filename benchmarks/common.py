"""Helpers shared by the benchmarks: timing, child-process memory, where the shared data lives."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
WORK = ROOT / ".bench"  # scratch space, git-ignored
KBINDEX = [sys.executable, "-m", "kbindex"]
# The benchmarks' own per-machine model cache (KBINDEX_CACHE_DIR of every kbindex they start), so a
# figure never depends on what the user's ~/.cache holds; benchmarks that time the first
# preparation pass an empty one.
MODEL_CACHE = WORK / "model-cache"


def run_kbindex(*args: str, env: dict | None = None) -> tuple[float, float, str]:
    """Run kbindex in a fresh process; return (seconds, peak memory in MiB, stdout).

    Peak memory is that of all its processes together (the extraction workers included), as
    benchmarks/measure.py measures it.
    """
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "KBINDEX_CACHE_DIR": str(MODEL_CACHE), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.measure", *KBINDEX, *args],
                          capture_output=True, text=True, env=full_env, cwd=ROOT)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"kbindex {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    if data["rc"] not in (0,):
        raise RuntimeError(f"kbindex {' '.join(args)} exited {data['rc']}:\n{proc.stderr[-2000:]}")
    return data["s"], data["rss"] / 1024, data["out"]


def self_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
