"""`kbindex serve` over HTTP on SciFact with the default model: latency, concurrency, writes, memory.

Baseline measured in the same run: a cold `kbindex query` (a fresh process, the way the CLI is
used today). Figures: one client's hybrid p50/p99 end to end; 8 concurrent clients for
KBINDEX_BENCH_SERVE_SECONDS (default 60 s, the issue's length) with errors, throughput and p99;
the same load while `kbindex index` writes 500 new documents into the served collection (errors,
and seconds from the run's end until they are found); the server's RSS.

The served index is a copy of the SciFact eval collection (bench_search's), so that the 500 new
documents never reach the collection other benchmarks reuse.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time

from benchmarks.common import MODEL_CACHE, ROOT, SHARED_DATA, WORK, Timer, run_kbindex

NAME = "serve"
SCIFACT = SHARED_DATA / "scifact"
EVAL_DB = WORK / "eval-index"
SERVE_DB = WORK / "serve-index"
NEW_DOCS = WORK / "serve-new-docs"
CLIENTS = 8
SECONDS = float(os.environ.get("KBINDEX_BENCH_SERVE_SECONDS", "60"))
WRITES = 500  # new documents written while the server is under load


def run() -> list[str]:
    if not (SCIFACT / "corpus.jsonl").exists():
        return [f"skipped: SciFact not found at {SCIFACT}"]
    import httpx

    from kbindex.chunk import check_config
    from kbindex.config import Settings
    from kbindex.embedding import load_embedder
    from kbindex.evaluate import collection_name, ensure_indexed, load_dataset, percentile

    data = load_dataset(SCIFACT)
    embedder = load_embedder("all-MiniLM-L6-v2", "cpu", cache_dir=MODEL_CACHE)
    name = collection_name(data.name, embedder.name, 256, 32)
    settings = Settings(db=EVAL_DB, collection=name, model="all-MiniLM-L6-v2", device="cpu")
    with Timer() as indexing:
        _, reused = ensure_indexed(data, settings, embedder, check_config(256, 32, embedder.max_tokens))
    lines = [f"SciFact eval collection {name}: " + ("reused" if reused else f"indexed in {indexing.seconds:.0f} s"),
             f"machine load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)"]
    shutil.rmtree(SERVE_DB, ignore_errors=True)
    shutil.copytree(EVAL_DB, SERVE_DB)
    queries = list(data.queries.values())

    cold, _, _ = run_kbindex("query", queries[0], "--db", str(SERVE_DB), "--collection", name, "--json")
    lines.append(f"baseline: cold `kbindex query` (fresh process, hybrid) {cold * 1000:.0f} ms")

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KBINDEX_CACHE_DIR": str(MODEL_CACHE)}
    server = subprocess.Popen([sys.executable, "-m", "kbindex", "serve", "--port", "0", "--db", str(SERVE_DB),
                               "--collection", name], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    url, log = None, []
    for line in server.stderr:
        log.append(line)
        if found := re.search(r"serving (http://\S+?)/ ", line):
            url = found.group(1)
            break
    if url is None:
        raise RuntimeError("kbindex serve did not start:\n" + "".join(log))
    threading.Thread(target=lambda: [log.append(x) for x in server.stderr], daemon=True).start()
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            for q in queries[:20]:  # warm-up: the first queries compile kernels and fill caches
                client.get("/api/search", params={"q": q, "k": 10})
            times = []
            for q in queries:
                start = time.perf_counter()
                response = client.get("/api/search", params={"q": q, "k": 10})
                times.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, response.text
        p50, p99 = percentile(times, 50), percentile(times, 99)
        lines.append(f"one client, hybrid -k 10 over HTTP, {len(times)} queries: p50 {p50:.1f} ms, "
                     f"p99 {p99:.1f} ms; cold CLI / served p50: {cold * 1000 / p50:.0f}x")

        lines.append(_load(url, queries, SECONDS, f"{CLIENTS} clients for {SECONDS:.0f} s"))

        folder = NEW_DOCS
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for i in range(WRITES):
            (folder / f"new-{i:03d}.md").write_text(
                f"# Served while written {i}\n\nThe zqxbench{i} finding: {queries[i % len(queries)]} "
                f"was measured again in cohort {i}.\n")
        result: dict = {}

        def write():
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "kbindex", "index", str(folder), "--db", str(SERVE_DB),
                                   "--collection", name, "-q"], cwd=ROOT, env=env, capture_output=True, text=True)
            result.update(rc=done.returncode, seconds=time.perf_counter() - start, end=time.monotonic(),
                          err=done.stderr[-500:])

        writer = threading.Thread(target=write)
        writer.start()
        load_line = _load(url, queries, None, f"{CLIENTS} clients while `kbindex index` writes {WRITES} documents",
                          until=writer)
        if result.get("rc") != 0:
            raise RuntimeError(f"the index run failed: {result.get('err')}")
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                hits = client.get("/api/search", params={"q": f"zqxbench{WRITES - 1}", "k": 1,
                                                         "mode": "keyword"}).json()["hits"]
                vector = client.get("/api/search", params={"q": f"Served while written {WRITES - 1} zqxbench",
                                                           "k": 5, "mode": "vector"}).json()["hits"]
                if hits and any("new-" in h["source"] for h in vector):
                    break
                if time.monotonic() - result["end"] > 60:
                    break
                time.sleep(0.1)
        visible = time.monotonic() - result["end"]
        lines.append(f"{load_line}; index run {result['seconds']:.0f} s; new documents found "
                     f"{visible:.1f} s after it ended")
        rss = _rss_mib(server.pid)
        lines.append(f"server RSS (default model, SciFact served): {rss[0]:.0f} MiB now, {rss[1]:.0f} MiB peak")
    finally:
        server.terminate()
        server.wait(60)
    lines.append(f"server exit status after SIGTERM: {server.returncode}")
    lines.append(f"machine load average at end: {os.getloadavg()[0]:.1f}")
    return lines


def _load(url: str, queries: list[str], seconds: float | None, label: str, until=None) -> str:
    """CLIENTS threads, each its own connection, querying until `seconds` pass or `until` ends."""
    import httpx

    from kbindex.evaluate import percentile

    times: list[float] = []
    errors: list[str] = []
    stop = threading.Event()

    def client(offset: int):
        with httpx.Client(base_url=url, timeout=30) as http:
            i = offset
            while not stop.is_set():
                q = queries[i % len(queries)]
                i += CLIENTS
                start = time.perf_counter()
                try:
                    response = http.get("/api/search", params={"q": q, "k": 10})
                    if response.status_code != 200:
                        errors.append(f"{response.status_code} {response.text[:100]}")
                        continue
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                times.append((time.perf_counter() - start) * 1000)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    if until is not None:
        until.join()
    else:
        time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return (f"{label}: {len(times)} queries, {len(errors)} errors, {len(times) / elapsed:.1f} queries/s, "
            f"p50 {percentile(times, 50):.1f} ms, p99 {percentile(times, 99):.1f} ms"
            + (f" (first error: {errors[0]})" if errors else ""))


def _rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB, from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.split()[0] if value.split() else "0"
    return int(fields.get("VmRSS", 0)) / 1024, int(fields.get("VmHWM", 0)) / 1024
