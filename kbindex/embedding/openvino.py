"""The OpenVINO runtime for the exported model: fp32, and static int8 calibrated with NNCF.

OpenVINO reads the plain `torch.onnx` export (not onnxruntime's fused graph, whose contrib ops it
does not know). In fp32 its vectors are those of PyTorch (cosine >= 0.9999, tested), and it runs
the model faster than onnxruntime does (docs/benchmarks.md).

Static int8: NNCF's post-training quantization (transformer preset: SmoothQuant, bias correction,
activation ranges measured once) calibrated on `calibration.jsonl`, the chunks kbindex embeds for
its sample KB. Activation scales are fixed, so unlike dynamic int8 a text gets the same vector in
any batch. Speed, and SciFact nDCG@10 against fp32: docs/benchmarks.md. The quantization runs once
per model, in a child process, because NNCF draws progress bars on stdout.

Offline: `import openvino` sends a usage event to Google Analytics (openvino.tools.ovc does, on
every import, unless a consent file in the home folder says no) and NNCF sends more. Both fall back
to a no-op stub when `openvino_telemetry` cannot be imported, so kbindex makes it unimportable
before it imports either (tests check that no connection is attempted).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
from pathlib import Path

from kbindex.errors import ModelError

CALIBRATION = Path(__file__).with_name("calibration.jsonl")
CALIBRATION_VERSION = 1  # bump with calibration.jsonl or the recipe: the cached model is rebuilt
IR_NAME = f"model-int8-static-c{CALIBRATION_VERSION}.xml"  # its weights: the same name, .bin
REQUESTS = 2  # the least number of infer requests a session pools (see OpenVinoSession)
MIN_COSINE = 0.98  # mean cosine to fp32 on the calibration texts below which int8 is refused


def available() -> bool:
    """OpenVINO and NNCF importable (checked without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))


def import_openvino():
    """openvino, imported with its usage telemetry off (see the module's docstring)."""
    sys.modules.setdefault("openvino_telemetry", None)  # None in sys.modules: ImportError
    import openvino

    return openvino


def require() -> None:
    if not available():
        raise ModelError("the openvino backend needs the openvino and nncf packages "
                         "(pip install openvino nncf), or use --backend onnx")


class OpenVinoSession:
    """A compiled model with what onnx.OnnxEmbedder asks of a runtime: input names and run(feeds)."""

    def __init__(self, path: Path, threads: int, blob_cache: Path | None = None):
        core = import_openvino().Core()
        if blob_cache is not None:
            try:  # compiled blobs: a later process compiles in about a quarter of the time
                blob_cache.mkdir(parents=True, exist_ok=True)
                if os.access(blob_cache, os.W_OK):
                    core.set_property({"CACHE_DIR": str(blob_cache)})
            except OSError:
                pass
        try:
            model = core.read_model(str(path))
            # f32 explicitly: on CPUs with AMX (bf16) or on ARM (f16) OpenVINO would otherwise run
            # in lower precision, and fp32 vectors would no longer match PyTorch's.
            # Public for the thread-stress test, which checks that no infer request is made from it
            # after load (see below).
            self.compiled = core.compile_model(model, "CPU", {
                "INFERENCE_PRECISION_HINT": "f32",
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": int(threads),
            })
        except Exception as exc:
            raise ModelError(f"cannot load {path} in OpenVINO (delete it to make it again): "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        self.input_names = [i.get_any_name() for i in model.inputs]
        # Thread safety by construction: a fixed pool of infer requests, all made here, before any
        # inference runs. An infer request serves one call at a time, and making one while another
        # thread ran infer() crashed the process (SIGSEGV in create_infer_request, seen in the test
        # suite when each thread made its own). A call borrows a request and gives it back; callers
        # beyond the pool wait for one. More requests than the plugin's optimal number would only
        # queue on its streams (one under the LATENCY hint), so the pool is that size, at least 2
        # so that one caller's tokenizing and pooling overlap another's inference.
        try:
            size = max(REQUESTS, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            self._idle: queue.SimpleQueue = queue.SimpleQueue()
            for _ in range(size):
                self._idle.put(self.compiled.create_infer_request())
        except Exception as exc:
            raise ModelError(f"cannot make inference requests for {path} in OpenVINO: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        self.requests = size

    def run(self, feeds: dict):
        """Token embeddings (batch, tokens, hidden) for feeds; safe from any number of threads."""
        request = self._idle.get()  # blocks while every request is busy
        try:
            # infer() copies its outputs (share_outputs=False): they stay valid after the request
            # goes back to the pool and serves another call.
            return request.infer(feeds)[0]
        finally:
            self._idle.put(request)


def calibration_texts() -> list[str]:
    with CALIBRATION.open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


def quantize_static(source: Path, target: Path, model_folder: Path) -> None:
    """Make the static int8 model (target, an OpenVINO .xml with its .bin) from the plain export."""
    work = target.with_name(f".{target.stem}.{os.getpid()}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "kbindex.embedding.openvino", str(source), str(work / target.name),
             str(model_folder)],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )
        made = work / target.name
        if proc.returncode != 0 or not made.exists():
            lines = [line for line in (proc.stderr or "").splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit {proc.returncode}"
            raise ModelError(f"cannot quantize {source} to static int8: {reason}")
        os.replace(made.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(made, target)  # last: a reader takes the .xml as the sign that both are there
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _quantize_main(source: str, target: str, folder: str) -> None:
    """The child process of quantize_static."""
    import numpy as np

    ov = import_openvino()

    from kbindex.embedding.spec import pool, read_spec
    from kbindex.embedding.spec import tokenizer as model_tokenizer

    spec = read_spec(Path(folder))
    tokenizer = model_tokenizer(spec)
    texts = calibration_texts()
    if spec.do_lower_case:
        texts = [t.lower() for t in texts]
    core = ov.Core()
    model = core.read_model(source)
    names = [i.get_any_name() for i in model.inputs]
    samples = []
    for encoded in tokenizer.encode_batch(texts, add_special_tokens=True):
        fields = {"input_ids": encoded.ids, "attention_mask": encoded.attention_mask,
                  "token_type_ids": encoded.type_ids}
        samples.append({n: np.array([fields[n]], dtype=np.int64) for n in names})

    import nncf

    nncf.set_log_level(logging.ERROR)
    quantized = nncf.quantize(model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(samples))

    def vectors(ov_model):
        compiled = core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        rows = []
        for feeds in samples:
            tokens = compiled(feeds)[0]
            row = pool(tokens, feeds["attention_mask"], spec.pooling)[0]
            rows.append(row / max(float(np.linalg.norm(row)), 1e-12))
        return np.array(rows)

    cosine = float((vectors(model) * vectors(quantized)).sum(axis=1).mean())
    if cosine < MIN_COSINE:
        sys.exit(f"int8 vectors drift too far from fp32 for this model (mean cosine {cosine:.4f} on "
                 f"the calibration texts, below {MIN_COSINE}): use --quantize none")
    ov.save_model(quantized, target, compress_to_fp16=False)


if __name__ == "__main__":
    _quantize_main(*sys.argv[1:4])
