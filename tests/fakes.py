"""A fast deterministic embedder for tests: hashed bag of words, unit length."""

from __future__ import annotations

import hashlib
import math
import re

from kbindex.embedding import register_embedder

_WORD = re.compile(r"\w+")


class HashEmbedder:
    """Similar texts (shared words) get similar vectors; no model, no torch."""

    dimension = 64
    max_tokens = 256

    def __init__(self, name: str = "fake:hash", device: str = "cpu"):
        self.name = name
        self.calls: list[list[str]] = []

    @property
    def identity(self) -> str:
        """The embedding cache's key: no artifact, so the name (as PyTorch's embedder)."""
        return self.name

    def count_tokens(self, texts):
        # one token per word or punctuation mark, plus [CLS] and [SEP]
        return [len(re.findall(r"\w+|[^\w\s]", t)) + 2 for t in texts]

    def embed(self, texts):
        self.calls.append(list(texts))
        out = []
        for text in texts:
            vec = [0.0] * self.dimension
            for word in _WORD.findall(text.lower()):
                h = int(hashlib.md5(word.encode()).hexdigest(), 16)
                vec[h % self.dimension] += 1.0 if (h >> 8) % 2 else -1.0
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            out.append([v / norm for v in vec])
        return out


def register() -> None:
    register_embedder("fake", lambda name, device: HashEmbedder(name, device))
