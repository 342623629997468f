"""Which embedder runs a model: the backend choice (PyTorch, ONNX Runtime, OpenVINO), the
quantization a collection holds, and the registry of other embedders by name prefix.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path

from kbindex.embedding.base import INT8_KINDS, Embedder, split_identity
from kbindex.embedding.onnx import OnnxEmbedder
from kbindex.embedding.spec import model_folder, read_spec, resolve_model
from kbindex.embedding.torch import SentenceTransformerEmbedder
from kbindex.errors import ModelError, UsageError

BACKENDS = ("auto", "torch", "onnx", "openvino")
QUANTIZE = ("auto", "none", "int8")


# Embedders other than sentence-transformers register a factory under a name prefix
# ("prefix:rest"); tests register a fast deterministic one this way.
_FACTORIES: dict[str, Callable[[str, str], Embedder]] = {}


def register_embedder(prefix: str, factory: Callable[[str, str], Embedder]) -> None:
    """Make models named "prefix:..." load through factory(name, device)."""
    _FACTORIES[prefix] = factory


def load_embedder(
    name: str,
    device: str = "auto",
    backend: str = "auto",
    quantize: str = "auto",
    cache_dir: Path | None = None,
    recorded: str | None = None,
    fallback_dir: Path | None = None,
    pinned: dict | None = None,
) -> Embedder:
    """The embedder for a model name or path (loaded lazily on first use).

    Args:
        backend: "torch", "onnx" (onnxruntime), "openvino", or "auto": on CPU OpenVINO where it is
            installed, else onnxruntime; PyTorch when a GPU is present.
        quantize: "none", "int8", or "auto": what the existing collection holds, else int8 on
            OpenVINO and onnxruntime and none on PyTorch. int8 is static (calibrated) on OpenVINO
            and dynamic on onnxruntime; the vectors differ, so the model identity recorded in the
            collection names the kind ("model#int8-static", "model#int8") and a collection is only
            ever extended or queried with the kind it holds.
        cache_dir: the model cache where prepared models are kept (default: the machine's,
            modelcache.cache_root()).
        recorded: the model identity recorded in the collection, when it exists.
        fallback_dir: where models are prepared when cache_dir cannot be written (the CLI uses
            <--db>/models).
        pinned: the artifact the collection was built with, as its index folder records it
            (modelcache.recorded_artifact); an int8 model other than this one is refused.
    """
    prefix, sep, _ = name.partition(":")
    if sep and prefix in _FACTORIES:
        return _FACTORIES[prefix](name, device)
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}: use {', '.join(BACKENDS)}")
    if quantize not in QUANTIZE:
        raise UsageError(f"unknown quantization {quantize!r}: use {', '.join(QUANTIZE)}")
    automatic = quantize == "auto"
    # An identity read back from a collection ("model#int8-static") loads as what it names.
    name, kind = split_identity(name)
    held = recorded_kind(recorded, name)
    if kind is None and held in INT8_KINDS and quantize in ("auto", "int8"):
        kind = held
    elif held == "none" and automatic:
        quantize = "none"
    if kind is not None:
        runtime = INT8_KINDS[kind]
        if backend not in ("auto", runtime):
            raise UsageError(f"this collection holds {kind} vectors, which only the {runtime} backend "
                             f"makes: use --backend {runtime} (or auto)")
        backend, quantize = runtime, "int8"
    if quantize == "auto":  # a new collection: the fastest kind the runtime has
        quantize = "none" if pick_backend(backend, device) == "torch" else "int8"
    chosen = pick_backend(backend, device, quantize)
    if chosen == "torch":
        return SentenceTransformerEmbedder(name, device)
    fallback = backend == "auto" and kind is None and (quantize == "none" or (automatic and held is None))
    identity, load_from = resolve_model(name)
    folder = model_folder(load_from)
    if folder is None:
        if fallback:
            return SentenceTransformerEmbedder(name, device)  # it reports the missing model
        raise ModelError(f"cannot find embedding model {name!r} locally for the {chosen} backend")
    try:
        spec = read_spec(folder)
    except ModelError:
        if fallback:
            return SentenceTransformerEmbedder(name, device)
        raise
    return OnnxEmbedder(identity, spec, cache_dir, quantize, runtime=chosen, fallback_dir=fallback_dir,
                        pinned=pinned)


def recorded_kind(recorded: str | None, name: str) -> str | None:
    """"none", "int8" or "int8-static" as the collection records it for this model; None when there
    is no collection or it holds another model."""
    if not recorded:
        return None
    base, kind = split_identity(recorded)
    return (kind or "none") if base == resolve_model(name)[0] else None


def gpu_present() -> bool:
    """A GPU that PyTorch could use, detected without importing torch (that alone takes seconds)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    nvidia = Path("/proc/driver/nvidia/gpus")
    if nvidia.is_dir() and any(nvidia.iterdir()):
        return True
    return platform.system() == "Darwin" and platform.machine() == "arm64"  # Apple silicon: MPS


def pick_backend(backend: str, device: str, quantize: str = "none") -> str:
    """Resolve --backend auto: on CPU OpenVINO (onnxruntime where OpenVINO is not installed),
    PyTorch on a GPU; int8 exists only on OpenVINO and onnxruntime."""
    if backend == "torch":
        if quantize == "int8":
            raise UsageError(f"--quantize {quantize} needs --backend openvino, onnx or auto")
        return "torch"
    if backend in ("onnx", "openvino"):
        return backend
    if quantize != "int8" and (device in ("cuda", "mps") or (device == "auto" and gpu_present())):
        return "torch"
    from kbindex.embedding import openvino

    return "openvino" if openvino.available() else "onnx"
