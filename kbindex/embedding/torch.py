"""The PyTorch runtime: a sentence-transformers model, run by sentence-transformers itself.

The default on a GPU, and the reference the exported graphs are checked against. torch and
sentence-transformers are imported on first use only (they take seconds to import).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from kbindex.embedding.spec import resolve_model
from kbindex.errors import ModelError, UsageError


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
        self._counter = None

    @property
    def identity(self) -> str:
        """The embedding cache's key: the name (fp32 vectors carry no artifact key, base.py)."""
        return self.name

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
        get_dim = (getattr(self.model, "get_embedding_dimension", None)
                   or self.model.get_sentence_embedding_dimension)
        return int(get_dim())

    @property
    def max_tokens(self) -> int:
        if self._model is None:
            # Read it from the model folder when possible: loading the model (and torch) only to
            # learn this number would cost seconds on runs that embed nothing.
            try:
                config = json.loads((Path(self._load_from) / "sentence_bert_config.json").read_text())
                return int(config["max_seq_length"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return int(self.model.max_seq_length)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        if self._counter is None:
            # A copy of its own: encode() sets truncation on the model's tokenizer, and a Rust
            # tokenizer used from two threads at once (embedding runs in a background thread)
            # fails with "Already borrowed".
            import copy

            self._counter = copy.deepcopy(self.model.tokenizer)
        encoded = self._counter(
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
