"""Overlap the stages of an index run: embedding in a background thread, extraction in processes.

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

Extraction (trafilatura's analysis of a page's HTML) is pure Python and holds the GIL, so threads
cannot spread it over cores: ExtractAhead runs it in worker processes, with the same push-style,
ordered, bounded interface.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Generic, TypeVar

from kbindex.errors import SourceError

P = TypeVar("P")
R = TypeVar("R")
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
        """Queue `texts` for embedding; returns the (payload, vectors) pairs finished by now, in
        submission order, one vector per text. Blocks while more than `depth` batches wait."""
        self._waiting.append((payload, self._pool.submit(self._run, list(texts))))
        done = []
        while self._waiting and (len(self._waiting) > self.depth or self._waiting[0][1].done()):
            done.append(self._take())
        return done

    def drain(self) -> list[tuple[P, Vectors]]:
        """Every batch still waiting, in order (blocks until all are embedded)."""
        return [self._take() for _ in range(len(self._waiting))]

    def close(self) -> None:
        """Cancel what waits and stop the thread (after the batch being embedded)."""
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


# Pages extracted in the indexing process before the worker pool is started: a run of a few pages
# never pays for starting processes (about half a second each, to import trafilatura).
INLINE_PAGES = 4
MAX_WORKERS = 8  # each worker holds its own trafilatura and lxml: 2 workers and the fork server add ~110 MiB
# Imported once by the fork server, so that each worker starts with them loaded.
PRELOAD = ["kbindex.extract", "trafilatura", "htmldate", "justext", "lxml.html"]


def default_workers() -> int:
    """One extraction process per core available to us, at most MAX_WORKERS."""
    from kbindex.embedding.spec import available_cores

    return max(1, min(MAX_WORKERS, available_cores()))


@dataclass(slots=True)
class _Job:
    payload: object
    page: object  # None once there is nothing (more) to run for it
    future: Future | None = None
    pool: object = None  # the pool the future belongs to
    result: object = None


class ExtractAhead(Generic[P, R]):
    """Runs `work(page)` in worker processes; hands the results back in submission order.

    submit(payload, page) queues a page (None: nothing to run, the payload just keeps its place in
    the order) and returns the earlier payloads whose turn has come, each with its result: all
    finished ones at the head of the queue, and as many as it must wait for to keep at most
    `depth` queued. With `workers` 1, or for the first `inline` pages, work runs here, in this
    process. `work` must be a module-level function (it is pickled by name), and so must be its
    argument and result.

    A worker that dies (a crash in a C library, the kernel's out-of-memory killer) breaks the whole
    pool; the pool is started again and the page at the head of the queue is retried alone: if
    it breaks that pool too, its result is a SourceError of kind "crash" and the run goes on.
    """

    def __init__(self, work: Callable[[object], R], workers: int, depth: int | None = None,
                 inline: int = INLINE_PAGES):
        self._work = work
        self.workers = max(1, workers)
        self.depth = depth or 4 * self.workers
        self._inline = inline
        self._pool = None
        self._waiting: deque[_Job] = deque()
        self.restarts = 0  # pools started again after a worker died

    @property
    def started(self) -> bool:
        """Whether the worker processes were started (pages beyond the first few inline)."""
        return self._pool is not None

    def submit(self, payload: P, page) -> list[tuple[P, R | None]]:
        """Queue `page` for `work` (None: nothing to do, the payload just keeps its place);
        returns the (payload, result) pairs finished by now, in submission order, the result None
        for a None page. Blocks while more than `depth` pages wait."""
        if page is None:
            job = _Job(payload, None)
        elif self.workers == 1 or (self._pool is None and self._inline > 0):
            self._inline -= 1
            job = _Job(payload, None, result=self._work(page))
        else:
            if self._pool is None:
                self._pool = self._start()
            job = _Job(payload, page, self._submit(page), self._pool)
        self._waiting.append(job)
        done = []
        while self._waiting and (len(self._waiting) > self.depth or _ready(self._waiting[0])):
            done.append(self._take())
        return done

    def drain(self) -> list[tuple[P, R | None]]:
        """Every payload still queued, in order (blocks until their pages are done)."""
        return [self._take() for _ in range(len(self._waiting))]

    def close(self) -> None:
        """Stop the workers; what was not handed back is discarded."""
        pending = bool(self._waiting)
        for job in self._waiting:
            if job.future is not None:
                job.future.cancel()
        self._waiting.clear()
        if self._pool is not None:
            # After an interruption, do not wait for pages in progress (the workers end once done).
            self._pool.shutdown(wait=not pending, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> ExtractAhead[P, R]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # Not fork: this process runs threads (HTTP fetches, the model) that a fork would copy
        # mid-flight. The fork server starts clean, imports PRELOAD once, then forks each worker.
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            context.set_forkserver_preload(PRELOAD)
        pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_worker_setup,
                                   initargs=(os.getpid(),))
        # Start every worker now, from this thread. The executor starts one per submit() until it
        # has them all; a worker killed while another was being started could leave the new one
        # out of the executor's clean-up, and its exit would then wait for that worker forever.
        for _ in range(self.workers):
            pool.submit(_nothing)
        return pool

    def _restart(self) -> None:
        self.restarts += 1
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._start()

    def _submit(self, page) -> Future:
        """The page's future; one that fails with BrokenProcessPool if the pool broke already."""
        try:
            return self._pool.submit(self._work, page)
        except BrokenProcessPool as exc:  # a page submitted before this one killed a worker
            future: Future = Future()
            future.set_exception(exc)
            return future

    def _take(self) -> tuple[P, R | None]:
        job = self._waiting.popleft()
        if job.future is None:
            return job.payload, job.result
        try:
            return job.payload, job.future.result()
        except BrokenProcessPool:
            pass
        # Retry this page alone in a new pool, so that a page that kills its worker is found out
        # without failing the pages that happened to be in the pool with it.
        self._restart()
        try:
            result = self._submit(job.page).result()
        except BrokenProcessPool:
            self._restart()
            result = SourceError(job.page.source, "extraction crashed its worker process", kind="crash")
        for other in self._waiting:  # pages queued in the broken pool go to the new one
            if other.future is not None and other.pool is not self._pool and not _succeeded(other.future):
                other.future, other.pool = self._submit(other.page), self._pool
        return job.payload, result


def _ready(job: _Job) -> bool:
    return job.future is None or job.future.done()


def _succeeded(future: Future) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _nothing() -> None:
    pass


def _worker_setup(indexer: int) -> None:
    """In each worker: leave Ctrl-C to the indexing process; end when that process is gone.

    Ctrl-C reaches the whole process group, and the indexing process stops the workers itself.
    A worker waits for pages on a pipe that it holds both ends of, so it would never notice that
    the indexing process died (kill -9, the out-of-memory killer), and the fork server lives as
    long as a worker does: a thread watches the indexing process and ends the worker with it.
    """
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(indexer,), daemon=True, name="kbindex-watch").start()


def _exit_with(pid: int) -> None:
    import select
    import time

    try:
        handle = os.pidfd_open(pid)  # Linux 5.3+: readable once the process has exited
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):
        handle = None
    if handle is not None:
        select.select([handle], [], [])
    else:
        while True:
            time.sleep(1)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
    os._exit(0)
