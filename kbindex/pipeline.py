"""Overlap embedding with the work that prepares it: a background embedding thread, bounded queues.

An index run spends most of its time in the model. onnxruntime (and torch) release the GIL while
they compute, so a second thread can fetch, extract and chunk the next documents meanwhile. Two
bounded queues keep memory flat: the caller blocks once `depth` batches wait to be embedded, and
finished batches are handed back in the order they were submitted.

    for payload, vectors in embed_ahead(batches(), embedder.embed):
        write(payload, vectors)        # the store is written from the caller's thread only
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

P = TypeVar("P")
Vectors = list[list[float]]

_STOP = object()


def embed_ahead(
    batches: Iterable[tuple[P, Sequence[str]]],
    embed: Callable[[Sequence[str]], Vectors],
    depth: int = 2,
) -> Iterator[tuple[P, Vectors]]:
    """Yield (payload, vectors) for each (payload, texts) batch, in order.

    The batches iterable is consumed in the caller's thread (that is where fetching, extraction and
    chunking happen) while a background thread embeds earlier batches. At most `depth` batches wait
    for the model and at most `depth` finished ones wait for the caller. An exception from embed()
    is raised here, at the batch it belongs to; closing the generator early stops the thread.
    """
    if depth < 1:
        raise ValueError("depth must be at least 1")
    todo: queue.Queue = queue.Queue(maxsize=depth)
    done: queue.Queue = queue.Queue()
    cancelled = threading.Event()

    def worker() -> None:
        while True:
            item = todo.get()
            if item is _STOP or cancelled.is_set():
                return
            payload, texts = item
            try:
                done.put((payload, embed(texts), None))
            except BaseException as exc:  # handed to the caller's thread, raised there
                done.put((payload, None, exc))

    thread = threading.Thread(target=worker, name="kbindex-embed", daemon=True)
    thread.start()
    in_flight = 0

    def take() -> tuple[P, Vectors]:
        nonlocal in_flight
        payload, vectors, error = done.get()
        in_flight -= 1
        if error is not None:
            raise error
        return payload, vectors

    try:
        for payload, texts in batches:
            todo.put((payload, list(texts)))  # blocks while `depth` batches are waiting
            in_flight += 1
            while in_flight > depth or (in_flight and not done.empty()):
                yield take()
        while in_flight:
            yield take()
    finally:
        cancelled.set()
        while True:  # make room for the stop marker without blocking on a full queue
            try:
                todo.put_nowait(_STOP)
                break
            except queue.Full:
                try:
                    todo.get_nowait()
                except queue.Empty:
                    pass
        thread.join()
