"""Overlap embedding with the work that prepares it: one background embedding thread, bounded.

An index run spends most of its time in the model. onnxruntime (and torch) release the GIL while
they compute, so while one batch is embedded the indexing thread fetches, extracts and chunks the
next documents, and writes the batch embedded before. The indexing thread pushes batches in and
gets finished ones back, in the order it submitted them; it blocks once more than `depth` batches
are waiting, so memory stays flat:

    ahead = EmbedAhead(embedder.embed)
    for batch in batches:                       # prepared in this thread
        for payload, vectors in ahead.submit(batch, texts):
            write(payload, vectors)             # the store is written from this thread only
    for payload, vectors in ahead.drain():
        write(payload, vectors)
    ahead.close()
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

P = TypeVar("P")
Vectors = list[list[float]]


class EmbedAhead(Generic[P]):
    """Embeds submitted batches in one background thread and hands them back in order.

    submit() queues a batch and returns the earlier batches that are finished: those whose
    embedding is done, and, oldest first, as many as it must wait for to keep at most `depth`
    batches queued or in the model. An exception from embed() is raised by the submit() or drain()
    that hands back its batch. close() discards what was not handed back and stops the thread.
    """

    def __init__(self, embed: Callable[[Sequence[str]], Vectors], depth: int = 1):
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._embed = embed
        self.depth = depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kbindex-embed")
        self._waiting: deque[tuple[P, Future]] = deque()

    def submit(self, payload: P, texts: Sequence[str]) -> list[tuple[P, Vectors]]:
        self._waiting.append((payload, self._pool.submit(self._run, list(texts))))
        done = []
        while self._waiting and (len(self._waiting) > self.depth or self._waiting[0][1].done()):
            done.append(self._take())
        return done

    def drain(self) -> list[tuple[P, Vectors]]:
        """Every batch still waiting, in order (blocks until all are embedded)."""
        return [self._take() for _ in range(len(self._waiting))]

    def close(self) -> None:
        for _, future in self._waiting:
            future.cancel()
        self._waiting.clear()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> EmbedAhead[P]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, texts: list[str]) -> Vectors:
        return self._embed(texts) if texts else []

    def _take(self) -> tuple[P, Vectors]:
        payload, future = self._waiting.popleft()
        return payload, future.result()
