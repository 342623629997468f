"""Preparing a model for the CPU runtimes, once per machine: the ONNX export, dynamic int8 (ONNX
Runtime), static int8 (OpenVINO, openvino.quantize_static), each an artifact of the model cache
(modelcache.py) keyed by every input that changes its output.

ModelArtifacts decides which artifact a (model, runtime, quantization) needs, its key, and finds
or makes it (the int8 ones from the fp32 export); OnnxEmbedder only asks it for the model file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kbindex.embedding import spec as model_spec
from kbindex.embedding.modelcache import Artifact, ArtifactSpec, ModelCache, touch
from kbindex.embedding.spec import ModelSpec
from kbindex.errors import ModelError

ONNX_EXPORT_VERSION = 2  # bump when the export recipe changes, so old caches are not reused

# Artifact kinds in the model cache, and the file each one's model is in.
ARTIFACT_FILES = {"fp32": "model.onnx",  # the plain torch.onnx graph: OpenVINO reads it
                  "fp32-fused": "model.onnx",  # onnxruntime's fused graph
                  "int8": "model.onnx",  # dynamic int8 (onnxruntime), from fp32-fused
                  "int8-static": "model.xml"}  # static int8 (OpenVINO IR), calibrated from fp32
INT8_ARTIFACTS = ("int8", "int8-static")


def artifact_kind(runtime: str, quantize: str) -> str:
    """The artifact kind a runtime ("onnx", "openvino") runs for quantize ("none", "int8")."""
    if quantize == "none":
        return "fp32-fused" if runtime == "onnx" else "fp32"
    return "int8" if runtime == "onnx" else "int8-static"


class ModelArtifacts:
    """The prepared model one embedder runs: which artifact, its key, found or made once.

    Args:
        model_id: the model identity ("sentence-transformers/all-MiniLM-L6-v2").
        spec: the model folder as read by spec.read_spec.
        kind: one of ARTIFACT_FILES.
        cache: where artifacts are found and made.
        pinned: the artifact the collection was built with, as its index folder records it
            (modelcache.recorded_artifact); an int8 artifact other than this one is refused.
    """

    def __init__(self, model_id: str, spec: ModelSpec, kind: str, cache: ModelCache,
                 pinned: dict | None = None):
        self.model_id = model_id
        self.spec = spec
        self.kind = kind
        self.cache = cache
        self.pinned = pinned
        self._specs: dict[str, ArtifactSpec] = {}

    def spec_of(self, kind: str) -> ArtifactSpec:
        """The model cache's key for one kind of artifact of this model: every input that can
        change its output.

        fp32 exports carry no runtime version: each is checked against PyTorch (cosine >= 0.9999)
        before it is kept, so its vectors are PyTorch's whatever made it. int8 ones do: the
        quantizer's version (onnxruntime for dynamic int8, NNCF and OpenVINO for static int8) and
        the calibration texts change the vectors.
        """
        if kind not in self._specs:
            inputs = {"weights_sha256": model_spec.weights_hash(self.spec, self._memo_dir()),
                      "configs_sha256": model_spec.configs_hash(self.spec),
                      "export_version": ONNX_EXPORT_VERSION}
            if kind == "int8":
                inputs["onnxruntime"] = model_spec.package_version(
                    "onnxruntime", "onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")
            elif kind == "int8-static":
                from kbindex.embedding import openvino

                inputs.update(calibration_version=openvino.CALIBRATION_VERSION,
                              calibration_sha256=hashlib.sha256(openvino.CALIBRATION.read_bytes()).hexdigest(),
                              nncf=model_spec.package_version("nncf"),
                              openvino=model_spec.package_version("openvino"))
            self._specs[kind] = ArtifactSpec(self.model_id, kind, inputs)
        return self._specs[kind]

    def _pinned_key(self, spec: ArtifactSpec) -> str | None:
        """The recorded int8 artifact's key where it differs from what this machine would make."""
        key = (self.pinned or {}).get("key")
        return key if key and key != spec.key and self.kind in INT8_ARTIFACTS else None

    def key(self) -> str:
        """The key of the artifact the vectors come from (the pinned one, where it differs), known
        without preparing it: the embedding cache is keyed by it before the model is loaded."""
        spec = self.spec_of(self.kind)
        return self._pinned_key(spec) or spec.key

    def _memo_dir(self) -> Path:
        """Where the weights' hash is remembered: the cache when it can be written."""
        for root in self.cache.roots():
            if os.access(root, os.W_OK):
                return root
        return self.cache.root

    def prepare(self) -> Artifact:
        """The artifact for this kind, made on first use (and marked used).

        onnxruntime: fp32-fused (the fused graph) and int8 (dynamic) made from it. OpenVINO: fp32
        (the unfused graph) and int8-static made from it.

        Raises:
            ModelError: it cannot be made, or the collection was built with another int8 model
                that this machine neither has nor makes (pinned).
        """
        spec = self.spec_of(self.kind)
        pinned = self.pinned
        if self._pinned_key(spec) is not None:
            found = self.cache.find(str(pinned.get("artifact", "")), pinned["key"])
            if found is None:
                raise ModelError(
                    f"this collection was built with the model artifact {pinned.get('artifact')}, which "
                    f"the model cache ({self.cache.root}) does not hold, and this machine would make "
                    f"{spec.name} instead{_differences(pinned.get('inputs'), spec.inputs)}: the vectors "
                    "would differ, so re-embed the collection with --rebuild")
            artifact = found
        else:
            artifact = self._prepare(self.kind, spec)
        touch(artifact)
        return artifact

    def _prepare(self, kind: str, spec: ArtifactSpec) -> Artifact:
        runtime = "onnx" if kind in ("fp32-fused", "int8") else "openvino"
        if kind in ("fp32", "fp32-fused"):
            return self.cache.prepare(
                spec, lambda folder: export_onnx(self.spec, folder / "model.onnx", fuse=kind == "fp32-fused"),
                announce=f"exporting {self.model_id} to ONNX for {runtime}, once per machine "
                         "(cached in {cache})")
        found = self.cache.find(spec.name, spec.key)
        if found is not None:  # made: its source is not needed
            return found
        source_kind = "fp32-fused" if kind == "int8" else "fp32"
        source = self._prepare(source_kind, self.spec_of(source_kind)).file("model.onnx")
        if kind == "int8":
            return self.cache.prepare(spec, lambda folder: quantize_int8(source, folder / "model.onnx"),
                                      announce=f"quantizing {self.model_id} to dynamic int8, once")
        from kbindex.embedding import openvino

        def calibrate(folder: Path) -> None:
            openvino.quantize_static(source, folder / openvino.IR_NAME, self.spec.folder)
            # One fixed name in the cache (the calibration version is in the key).
            os.replace(folder / openvino.IR_NAME, folder / "model.xml")
            os.replace((folder / openvino.IR_NAME).with_suffix(".bin"), folder / "model.bin")

        return self.cache.prepare(
            spec, calibrate, announce=f"quantizing {self.model_id} to static int8 (calibration with NNCF), once")


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
    counter = model_spec.tokenizer(spec)
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
