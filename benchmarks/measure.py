"""Run one command; print its wall time, peak memory and output as one JSON line.

    python -m benchmarks.measure CMD [ARG...]

Peak memory counts every process of the command: kbindex starts extraction workers and a fork
server, whose memory a single process's peak RSS would leave out. The resident sizes of the
command and all its descendants are summed every 50 ms; the figure is the largest sum, or the
command's own peak RSS (exact, from the kernel) if that is larger. A separate process, so that
the children of earlier runs do not mix in.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def tree_rss_kib(root: int) -> int:
    """Sum of the resident sizes of `root` and its descendants (Linux /proc), in KiB.

    Children are read from /proc/PID/task/TID/children, a few small files per process: scanning
    all of /proc this often would itself take CPU from the run being measured.
    """
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KIB
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return total


def main(argv: list[str]) -> None:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_kib(proc.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    own = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the command is our only child
    sys.stderr.write(err)
    print(json.dumps({"s": seconds, "rss": max(peak, own), "own": own, "rc": proc.returncode, "out": out}))


if __name__ == "__main__":
    main(sys.argv[1:])
