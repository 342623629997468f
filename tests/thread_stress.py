"""`python -m tests.thread_stress RUNTIME QUANTIZE CACHE [ROUNDS]`: many rounds of embed() calls
from fresh threads at once, each checked against the vector its text gets alone.

A child process of the tests (assert_survives_thread_stress in tests/test_onnx.py), so that a crash
inside a runtime (OpenVINO died with SIGSEGV this way) fails one test instead of killing the run.
Exit 0 when every vector matched; the first mismatch is raised.

OpenVINO: the crash (create_infer_request in one thread while another ran infer) did not come back
when the session was reverted to its per-thread requests (OpenVINO 2026.4.1 on 2 busy cores: 3 runs
of 20 rounds and 2 of 300 rounds of 6 threads, 2 runs of 200 rounds of 16 threads, 10 processes
whose first calls came from 12 threads at once: no crash, every vector equal to its text's alone).
So on top of the vectors, the session's compiled model is guarded after load: making an infer
request from it then fails the run, which the per-thread design does at once. One infer request
shared by every thread fails by itself ("RuntimeError: Infer Request is busy").
"""

from __future__ import annotations

import random
import sys
import threading
from pathlib import Path

import numpy as np

from kbindex.embedding import load_embedder

THREADS = 6  # callers per round: more than an OpenVINO session pools, so some wait for a request
WORDS = ("printer spooler offline disk full write-ahead log grew reset authenticator phone roaming "
         "profile electron update error 0x80070002 battery standby managed identity").split()


def main(runtime: str, quantize: str, cache: str, rounds: int = 20) -> None:
    embedder = load_embedder("all-MiniLM-L6-v2", "cpu", runtime, quantize, Path(cache))
    rng = random.Random(14)
    # Lengths from 1 to 48 words: new input shapes keep arriving while other threads infer.
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 48))) for _ in range(16)]
    alone = {t: np.array(embedder.embed([t])[0]) for t in texts}
    session = embedder.session
    if hasattr(session, "compiled"):  # OpenVINO: every request is made at load, none later
        session.compiled = _NoNewRequests(session.compiled)
    for round_ in range(rounds):
        batches = [rng.sample(texts, rng.randint(1, 3)) for _ in range(THREADS)]
        for batch, got in zip(batches, _round(embedder, batches, texts), strict=True):
            cosines = [float(np.dot(alone[t], v)) for t, v in zip(batch, got, strict=True)]
            assert min(cosines) >= 0.9999, f"round {round_}: a vector changed under concurrency {cosines}"


class _NoNewRequests:
    """A compiled model that refuses to make infer requests (every other attribute is its own)."""

    def __init__(self, compiled):
        self._compiled = compiled

    def create_infer_request(self):
        raise AssertionError("an infer request was made after load, while other threads may infer "
                             "(the crash of issue 14): requests must all be made when the model loads")

    def __getattr__(self, name):
        return getattr(self._compiled, name)


def _round(embedder, batches: list[list[str]], texts: list[str]) -> list:
    """Each batch embedded by its own new thread, all released at once."""
    results: list = [None] * len(batches)
    errors: list[BaseException] = []
    start = threading.Barrier(len(batches) + 1)

    def work(slot: int) -> None:
        start.wait()
        try:
            results[slot] = np.array(embedder.embed(batches[slot]))
        except BaseException as exc:  # raised again by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    start.wait()
    embedder.count_tokens(texts)  # as an index run does while the model embeds
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results

if __name__ == "__main__":
    main(*sys.argv[1:4], *(int(a) for a in sys.argv[4:5]))
