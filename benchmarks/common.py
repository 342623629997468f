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


def run_kbindex(*args: str, env: dict | None = None) -> tuple[float, float, str]:
    """Run kbindex in a fresh process; return (seconds, peak RSS in MiB of that process, stdout)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    # time + max RSS of this one child, measured by a wrapper process so that children of
    # earlier runs do not mix in (RUSAGE_CHILDREN keeps the maximum over all of them).
    wrapper = (
        "import resource,subprocess,sys,time,json;t=time.perf_counter();"
        "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
        "d=time.perf_counter()-t;r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
        "sys.stderr.write(p.stderr);print(json.dumps({'s':d,'rss':r,'rc':p.returncode,'out':p.stdout}))"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper, *KBINDEX, *args], capture_output=True,
                          text=True, env=full_env, cwd=ROOT)
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
