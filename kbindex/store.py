"""The only module importing chromadb: one Collection class with a small verb set."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kbindex.config import COLLECTION_RULE, DEFAULT_TIMEOUT, valid_collection_name
from kbindex.errors import CollectionError, KbindexError, ModelMismatchError, StoreError, UsageError
from kbindex.records import Chunk

MODEL_KEY = "kbindex_model"
DIMENSION_KEY = "kbindex_dimension"
PAGE = 1000  # rows per get() when scanning a collection


@dataclass(frozen=True)
class Match:
    """A stored chunk returned by a similarity query or a lookup."""

    id: str
    distance: float
    text: str
    metadata: dict
    vector: list[float] | None = None


def _chroma_settings():
    from chromadb.config import Settings

    # Telemetry would try to reach the internet; kbindex never does.
    return Settings(anonymized_telemetry=False, allow_reset=False)


class Store:
    """A Chroma client: an embedded store in a folder, or a Chroma server when url is given.

    In server mode the folder still holds what is local to the indexing machine: the ledger and
    the write lock.
    """

    def __init__(self, db: Path, url: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        """timeout: seconds a Chroma server may take to accept a connection or to answer."""
        self.db = Path(db)
        self.url = url.rstrip("/") if url else None
        self.timeout = timeout
        self._server = parse_url(self.url) if self.url else None  # a bad URL is a usage error now
        self._client = None
        self._batch: int | None = None

    @property
    def location(self) -> str:
        return self.url or str(self.db.resolve())

    def exists(self) -> bool:
        if self.url:
            return True  # a server always has a store; collection() says when one is missing
        return (self.db / "chroma.sqlite3").exists()

    @property
    def client(self):
        if self._client is None:
            try:
                import chromadb

                if self._server:
                    self._client = _http_client(*self._server, self.timeout)
                else:
                    self.db.mkdir(parents=True, exist_ok=True)
                    self._client = chromadb.PersistentClient(path=str(self.db), settings=_chroma_settings())
            except Exception as exc:
                raise StoreError(f"cannot open the index at {self.location}: {_reason(exc)}") from exc
        return self._client

    def delete_collection(self, name: str) -> None:
        try:
            self.client.delete_collection(name)
        except Exception as exc:
            raise StoreError(f"cannot delete collection {name!r}: {_reason(exc)}") from exc

    def rename_collection(self, name: str, new_name: str) -> None:
        check_name(new_name)
        try:
            self.client.get_collection(name, embedding_function=None).modify(name=new_name)
        except Exception as exc:
            raise StoreError(f"cannot rename collection {name!r}: {_reason(exc)}") from exc

    def max_batch_size(self) -> int:
        if self._batch is None:
            try:
                self._batch = int(self.client.get_max_batch_size())
            except Exception as exc:
                raise StoreError(f"cannot use the index at {self.location}: {_reason(exc)}") from exc
        return self._batch

    def collection(self, name: str) -> Collection:
        """An existing collection; CollectionError when there is none."""
        check_name(name)
        if not self.exists():
            raise CollectionError(
                f"no index at {self.location}: run 'kbindex index SOURCE' first"
            )
        from chromadb.errors import NotFoundError

        try:
            raw = self.client.get_collection(name, embedding_function=None)
        except NotFoundError:
            raise CollectionError(
                f"no collection {name!r} in {self.location}: run 'kbindex index SOURCE' first"
                + self._others(name)
            ) from None
        except Exception as exc:
            raise StoreError(f"cannot open collection {name!r} at {self.location}: {_reason(exc)}") from exc
        return Collection(raw, self)

    def create(self, name: str, model: str, dimension: int) -> Collection:
        """The collection, created for this model when missing; refuses another model's."""
        check_name(name)
        try:
            raw = self.client.get_or_create_collection(
                name,
                metadata={"hnsw:space": "cosine", MODEL_KEY: model, DIMENSION_KEY: dimension},
                embedding_function=None,
            )
        except Exception as exc:
            raise StoreError(f"cannot create collection {name!r} at {self.location}: {_reason(exc)}") from exc
        collection = Collection(raw, self)
        collection.check_model(model, dimension)
        return collection

    def collection_names(self) -> list[str]:
        if not self.exists():
            return []
        try:
            listed = self.client.list_collections()
        except Exception as exc:
            raise StoreError(f"cannot list collections at {self.location}: {_reason(exc)}") from exc
        return sorted(c if isinstance(c, str) else c.name for c in listed)

    def _others(self, name: str) -> str:
        others = [n for n in self.collection_names() if n != name]
        return f" (collections here: {', '.join(others)})" if others else ""


SETUP_REQUESTS = 3  # what chromadb's HttpClient asks while it is made: identity, tenant, database


def _http_client(host: str, port: int, ssl: bool, timeout: float):
    """chromadb's HttpClient, whose requests wait at most `timeout` seconds for the server.

    chromadb (1.5) makes its httpx session with timeout=None and no setting reaches it
    (chroma-core/chroma#5805), so a server that accepts connections and never answers would hang
    every command. The client sends its first requests (identity, tenant, database) while it is
    made: that runs in a thread given `timeout` for each of them (a thread still waiting then is
    left to the process's exit, as a daemon). Every later request runs on the sessions, given the
    timeout for connecting, reading and writing once the client exists.
    """
    # chromadb.api.fastapi and httpcore are what making the client imports: imported here, before
    # the clock below starts (about a second on a busy machine, which a short --timeout would
    # count against the server).
    import chromadb
    import chromadb.api.fastapi  # noqa: F401
    import httpcore  # noqa: F401
    import httpx

    made: dict = {}

    def make() -> None:
        try:
            made["client"] = chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=_chroma_settings())
        except BaseException as exc:  # raised again in the calling thread
            made["error"] = exc

    maker = threading.Thread(target=make, name="kbindex-chroma-connect", daemon=True)
    maker.start()
    maker.join(timeout * SETUP_REQUESTS)
    if maker.is_alive():
        raise ServerTimeout(timeout * SETUP_REQUESTS)
    if "error" in made:
        raise made["error"]
    client = made["client"]
    # The client's session and its admin client's (each its own httpx.Client): private names of
    # chromadb, checked by tests/test_server.py against a server that stops answering mid-run.
    for holder in (client, getattr(client, "_admin_client", None)):
        session = getattr(getattr(holder, "_server", None), "_session", None)
        if isinstance(session, httpx.Client):
            session.timeout = httpx.Timeout(timeout)
    return client


class ServerTimeout(TimeoutError):
    """The Chroma server accepted no connection, or did not answer, within the timeout."""

    def __init__(self, timeout: float):
        super().__init__(f"no answer within {timeout:g} s")


def parse_url(url: str) -> tuple[str, int, bool]:
    """(host, port, ssl) of an http(s)://HOST[:PORT] Chroma server URL."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--chroma-url must look like http://HOST:PORT, got {url!r}")
    ssl = parts.scheme == "https"
    return parts.hostname, parts.port or (443 if ssl else 8000), ssl


def _reason(exc: Exception) -> str:
    """One line for an exception from chromadb (whose messages can span many lines)."""
    if isinstance(exc, KbindexError):  # already one line for the user (a client that failed)
        return str(exc)
    text = str(exc).strip().splitlines()
    reason = text[0] if text else ""
    name = type(exc).__name__
    if "timeout" in name.lower():  # httpx's ConnectTimeout, ReadTimeout...; ServerTimeout
        return (f"cannot reach the Chroma server ({reason or name}; "
                "raise --timeout if it is only slow)")
    if "connect" in (name + reason).lower():
        return f"cannot reach the Chroma server ({reason or name})"
    return f"{name}: {reason}" if reason else name


def check_name(name: str) -> None:
    if not valid_collection_name(name):
        raise CollectionError(f"invalid collection name {name!r}: {COLLECTION_RULE}")


class Collection:
    """A Chroma collection holding kbindex chunks."""

    class DoesNotExist(CollectionError):
        """The collection does not exist."""

    def __init__(self, raw, store: Store):
        self._raw = raw
        self.store = store

    @property
    def name(self) -> str:
        return self._raw.name

    @property
    def model(self) -> str | None:
        return (self._raw.metadata or {}).get(MODEL_KEY)

    @property
    def dimension(self) -> int | None:
        value = (self._raw.metadata or {}).get(DIMENSION_KEY)
        return int(value) if value is not None else None

    def check_model(self, model: str, dimension: int | None = None) -> None:
        """Refuse to mix vectors of two models in one collection."""
        if self.model is not None and self.model != model:
            held, _, held_kind = self.model.partition("#")
            base, _, kind = model.partition("#")
            if held == base:  # the same model, quantized another way (identities: embed.py)
                raise ModelMismatchError(
                    f"collection {self.name!r} holds {held_kind or 'fp32'} vectors of {held}, and this "
                    f"run makes {kind or 'fp32'} ones: leave --quantize and --backend on auto to use "
                    "what it holds, or re-embed it with 'kbindex index --rebuild'"
                )
            raise ModelMismatchError(
                f"collection {self.name!r} was built with model {self.model!r}, not {model!r}: "
                f"use --model {self.model}, or another --collection"
            )
        if dimension is not None and self.dimension is not None and self.dimension != dimension:
            raise ModelMismatchError(
                f"collection {self.name!r} holds {self.dimension}-dimensional vectors; "
                f"model {model!r} makes {dimension}-dimensional ones"
            )

    def count(self) -> int:
        return self._raw.count()

    def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]], model: str) -> None:
        """Write chunks and their vectors in batches the client accepts."""
        size = self.store.max_batch_size()
        for start in range(0, len(chunks), size):
            part = chunks[start:start + size]
            metadatas = [chunk_metadata(c, model) for c in part]
            # Chroma's upsert merges metadata into what a chunk had: a key the page no longer
            # has (an author removed, say) must be set to None to be dropped.
            old = self._call(self._raw.get, ids=[c.id for c in part], include=["metadatas"])
            previous = dict(zip(old["ids"], old["metadatas"]))
            for chunk, meta in zip(part, metadatas):
                for key in (previous.get(chunk.id) or {}):
                    meta.setdefault(key, None)
            self._call(
                self._raw.upsert,
                ids=[c.id for c in part],
                embeddings=[list(v) for v in vectors[start:start + size]],
                documents=[c.text for c in part],
                metadatas=metadatas,
            )

    def delete(self, ids: Sequence[str]) -> None:
        size = self.store.max_batch_size()
        ids = list(ids)
        for start in range(0, len(ids), size):
            self._call(self._raw.delete, ids=ids[start:start + size])

    def get(self, *, where: dict | None = None, ids: Sequence[str] | None = None,
            include_text: bool = False) -> list[Match]:
        include = ["metadatas", "documents"] if include_text else ["metadatas"]
        result = self._call(self._raw.get, where=where, ids=list(ids) if ids else None, include=include)
        docs = result.get("documents") or [None] * len(result["ids"])
        return [
            Match(i, 0.0, d or "", m or {})
            for i, d, m in zip(result["ids"], docs, result["metadatas"], strict=True)
        ]

    def for_source(self, source: str) -> list[Match]:
        return self.get(where={"source": source})

    def scan(self, include_text: bool = False, include_vectors: bool = False) -> Iterator[Match]:
        """Every chunk, a page at a time (constant memory)."""
        include = ["metadatas"] + (["documents"] if include_text else [])
        include += ["embeddings"] if include_vectors else []
        offset = 0
        while True:
            result = self._call(self._raw.get, include=include, limit=PAGE, offset=offset)
            if not result["ids"]:
                return
            n = len(result["ids"])
            docs = result.get("documents") or [None] * n
            vectors = result.get("embeddings")
            vectors = [None] * n if vectors is None else vectors
            for i, d, m, v in zip(result["ids"], docs, result["metadatas"], vectors):
                yield Match(i, 0.0, d or "", m or {}, None if v is None else [float(x) for x in v])
            offset += n

    def vector_length(self) -> int | None:
        """Length of one stored vector (None when empty): the dimension actually stored."""
        result = self._call(self._raw.get, include=["embeddings"], limit=1)
        embeddings = result.get("embeddings")
        if embeddings is None or len(embeddings) == 0:
            return None
        return len(embeddings[0])

    def similar(self, vectors: Sequence[Sequence[float]], k: int, where: dict | None = None,
                include_text: bool = True) -> list[list[Match]]:
        """The k nearest chunks to each query vector (cosine distance).

        include_text=False returns ids and distances only (text "" and metadata {}): reading
        documents and metadata is most of the cost of a deep query.
        """
        k = max(1, min(k, self.count()))
        include = ["metadatas", "documents", "distances"] if include_text else ["distances"]
        result = self._call(
            self._raw.query,
            query_embeddings=[list(v) for v in vectors],
            n_results=k,
            where=where,
            include=include,
        )
        out = []
        for n, (ids, dists) in enumerate(zip(result["ids"], result["distances"])):
            docs = result["documents"][n] if include_text else [""] * len(ids)
            metas = result["metadatas"][n] if include_text else [{}] * len(ids)
            out.append([Match(i, float(d), t or "", m or {}) for i, d, t, m in zip(ids, dists, docs, metas)])
        return out

    def _call(self, method, **kwargs):
        try:
            return method(**kwargs)
        except Exception as exc:
            raise StoreError(f"collection {self.name!r} at {self.store.location}: {_reason(exc)}") from exc


def chunk_metadata(chunk: Chunk, model: str) -> dict:
    """Chroma metadata of a chunk (Chroma stores no None values)."""
    meta: dict = {k: v for k, v in chunk.metadata.items() if v not in (None, "")}
    meta.update(
        source=chunk.source,
        title=chunk.title,
        section=chunk.section,
        position=chunk.position,
        doc_hash=chunk.doc_hash,
        model=model,
    )
    if chunk.anchor:
        meta["anchor"] = chunk.anchor
    return meta
