"""Load the query model while the store opens: the two halves of a cold `kbindex query`.

A fresh `kbindex query` process spends most of its time in two independent jobs: importing
chromadb and opening the collection (about 1.2 s on a 2-core machine, almost all of it chromadb's
own import), and loading the embedding model and embedding the query (about 0.7 s: importing the
runtime, compiling the model from its blob cache, the first inference). Done one after the other
they add up; `ModelWarmup` starts the second in a thread before the first, which overlaps them
because the runtime's compile and inference release the GIL.

Which model to load is read from the index folder's record of the prepared artifact its
collection was built with (`<db>/models.json`, kbindex.embedding.modelcache), so the store need not be open
yet. Where there is no record (a folder indexed by an older kbindex, or with a model that needs no
prepared artifact), or it names another model than the collection says, nothing was started or
the warm model is dropped, and the query loads its model after opening the store, as before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from kbindex.normalize import normalize_text


class ModelWarmup:
    """Embedder for a model, loaded and used on `queries` in a background thread.

    make(model) -> Embedder loads the embedder for a recorded model identity (the name the
    collection records, e.g. "sentence-transformers/all-MiniLM-L6-v2#int8-static").
    """

    def __init__(self, model: str | None, queries: Sequence[str], make: Callable[[str], object]):
        self.model = model
        self._embedder = None
        self._vectors: dict[str, list[float]] = {}
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if not model:
            return
        try:
            self._embedder = make(model)  # loads lazily: nothing heavy happens here
            # Imports stay in this thread (see OnnxEmbedder.import_runtime): the worker thread
            # then runs what releases the GIL, hashing the model file, compiling it, inferring.
            self._embedder.import_runtime()
        except Exception:
            # A runtime that cannot say what it imports, or one that fails here: the query loads
            # its model after opening the store, and reports a failure from there as it always did.
            self._embedder = None
            self.model = None
            return
        # The texts search() will embed: it normalizes queries as the indexed text was.
        texts = list(dict.fromkeys(normalize_text(q) for q in queries))
        self._thread = threading.Thread(target=self._run, args=(texts,), name="kbindex-warmup",
                                        daemon=True)
        self._thread.start()

    def _run(self, texts: list[str]) -> None:
        try:
            self._vectors = dict(zip(texts, self._embedder.embed(texts)))
        except BaseException as exc:  # re-raised in the caller's thread by embedder()
            self._error = exc

    def embedder(self, model: str | None):
        """The warm embedder when it is for `model` (the collection's recorded identity), wrapped
        so that the query vectors already made are not made again; None when nothing was warmed
        for that model (the caller loads one itself). Raises what loading the model raised."""
        if self._thread is None or model != self.model:
            return None
        self._thread.join()
        if self._error is not None:
            raise self._error
        return _Prepared(self._embedder, self._vectors)


class _Prepared:
    """An embedder that answers from vectors made ahead, and asks the real one for the rest."""

    def __init__(self, embedder, vectors: dict[str, list[float]]):
        self._embedder = embedder
        self._vectors = vectors

    def __getattr__(self, name):
        return getattr(self._embedder, name)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            self._vectors.update(zip(missing, self._embedder.embed(missing)))
        return [self._vectors[t] for t in texts]
