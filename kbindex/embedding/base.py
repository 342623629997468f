"""The Embedder protocol, and the two identities of the vectors an embedder makes.

- `name`, the model identity a collection records: the model, and for int8 its kind
  ("model", "model#int8", "model#int8-static"). A collection is only ever extended or queried
  with the name it records, so it never mixes kinds of vectors.
- `identity`, the key of the embedding cache (the ledger's vectors by text hash): the name, plus,
  for int8 kinds, the key of the prepared model artifact (modelcache.ArtifactSpec.key: the weights'
  hash, the artifact kind, the calibration version, the quantizer's and runtime's versions), as
  "model#int8-static@<16 hex digits>". Two static int8 models made with another calibration or
  another NNCF give other vectors for one text; the identity keeps the cache from handing one's
  vectors to the other. fp32 vectors carry no artifact key: every fp32 export is checked against
  PyTorch (cosine >= 0.9999) before it is kept, so they are the model's vectors whatever made them,
  and the PyTorch and ONNX backends share them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

# Identity suffix of each int8 kind -> the backend that makes those vectors. fp32 vectors are the
# same on every backend and carry no suffix.
INT8_KINDS = {"int8": "onnx", "int8-static": "openvino"}

KEY_DIGITS = 16  # hex digits of the artifact key in an identity, as in the artifact's folder name
_ARTIFACT_SUFFIX = re.compile(rf"@[0-9a-f]{{{KEY_DIGITS}}}$")


class Embedder(Protocol):
    """What the pipeline needs from an embedding model."""

    name: str  # the model identity recorded in the collection (see the module's docstring)
    identity: str  # the embedding cache's key: name, plus the artifact key for int8 kinds
    dimension: int
    max_tokens: int  # longest input, special tokens included, that the model reads whole

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts as the model's tokenizer sees them, special tokens included."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length vectors, one per text."""


def split_identity(name: str) -> tuple[str, str | None]:
    """("model", "int8-static") for "model#int8-static"; (name, None) for an fp32 identity."""
    base, sep, suffix = name.rpartition("#")
    if sep and suffix in INT8_KINDS:
        return base, suffix
    return name, None


def identity_suffix(runtime: str, quantize: str) -> str:
    """"#int8" or "#int8-static" for the int8 kind a runtime makes; "" for fp32."""
    if quantize == "none":
        return ""
    return "#" + next(kind for kind, maker in INT8_KINDS.items() if maker == runtime)


def vector_identity(name: str, artifact_key: str | None) -> str:
    """The embedding cache's key for vectors of the model identity `name` made with the artifact
    whose key (sha256 hex) is artifact_key; name alone when there is none (fp32, PyTorch)."""
    return f"{name}@{artifact_key[:KEY_DIGITS]}" if artifact_key else name


def artifact_identity(name: str, artifact_key: str | None) -> str:
    """The vector identity of model identity `name` run from the artifact with artifact_key: the
    key counts for int8 kinds only (fp32 vectors are the model's whatever made them)."""
    return vector_identity(name, artifact_key if split_identity(name)[1] is not None else None)


def model_of(identity: str) -> str:
    """The model identity (the name a collection records) that a vector identity belongs to."""
    return _ARTIFACT_SUFFIX.sub("", identity)
