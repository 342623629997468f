"""Probe, not part of `make bench`: would OpenVINO reach issue 6's throughput targets?

    .venv/bin/pip install --target .bench/ovpkg --no-deps openvino==2026.4.1 \
        openvino-telemetry nncf==3.4.0 ninja pydot pyparsing tabulate networkx narwhals \
        cloudpickle psutil
    HF_HUB_OFFLINE=1 PYTHONPATH=.bench/ovpkg .venv/bin/python -m benchmarks.probe_openvino

Side by side, on the same 400 SciFact abstracts and 2 cores: sentence-transformers on PyTorch,
kbindex's ONNX Runtime fp32 and int8 paths, and the plain ONNX export run by OpenVINO in fp32 and
after NNCF's post-training static int8 quantization. The calibration texts are the sample KB's
sections (data/sample-kb), not SciFact: what kbindex could ship. Then SciFact nDCG@10 (whole
corpus, 300 test queries) for the OpenVINO int8 model, next to ONNX Runtime fp32.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_embed import load_scifact, ndcg_at_10, retrieve
from benchmarks.common import ROOT

ROUNDS = 3


def main() -> None:
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        sys.exit(f"skipped: {exc} (see the install line at the top of this file)")
    import numpy as np
    from sentence_transformers import SentenceTransformer

    import kbindex.embed as E
    from kbindex.extract import extract
    from kbindex.files import read_file

    corpus, queries, qrels, _ = load_scifact()
    texts = list(corpus.values())[:400]
    spec = E.read_spec(E.model_folder(E.resolve_model("all-MiniLM-L6-v2")[1]))
    work = Path(tempfile.mkdtemp(prefix="kbindex-ov-"))
    # The plain torch.onnx export (OpenVINO does not read onnxruntime's fused contrib ops).
    plain = work / "plain.onnx"
    fuse = E._fuse
    E._fuse = lambda *args: False
    try:
        E.export_onnx(spec, plain)
    finally:
        E._fuse = fuse
    fp32 = E.OnnxEmbedder("m", spec, work / "cache", "none")
    int8 = E.OnnxEmbedder("m", spec, work / "cache", "int8")
    ref = fp32.embed_array(texts)
    int8.embed_array(texts[:8])

    core = ov.Core()
    model = core.read_model(str(plain))
    names = [i.get_any_name() for i in model.inputs]
    _, encoder = fp32._tokenizers()
    calibration = []
    for path in sorted((ROOT / "data" / "sample-kb").iterdir()):
        doc = extract(read_file(path))
        for section in doc.sections:
            e = encoder.encode(section.text)
            feeds = {"input_ids": [e.ids], "attention_mask": [e.attention_mask], "token_type_ids": [e.type_ids]}
            calibration.append({k: np.array(v, dtype=np.int64) for k, v in feeds.items() if k in names})
    start = time.perf_counter()
    quantized = nncf.quantize(model, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(calibration))
    quantize_s = time.perf_counter() - start

    def openvino_embedder(ov_model):
        compiled = core.compile_model(ov_model, "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": E.available_cores()})
        request = compiled.create_infer_request()

        class Session:  # kbindex's tokenization, batching and pooling; OpenVINO runs the graph
            def run(self, _outputs, feeds):
                return [request.infer(feeds)[0]]

        embedder = E.OnnxEmbedder("m", spec, work / "cache", "none")
        embedder._session = Session()
        embedder._input_names = names
        return embedder

    ov32 = openvino_embedder(model)
    ov8 = openvino_embedder(quantized)
    st = SentenceTransformer(str(E.packaged_model_path()), device="cpu")
    paths = {
        "torch": lambda: st.encode(texts, batch_size=32, normalize_embeddings=True),
        "onnxruntime fp32": lambda: fp32.embed_array(texts),
        "onnxruntime int8": lambda: int8.embed_array(texts),
        "openvino fp32": lambda: ov32.embed_array(texts),
        "openvino int8 (nncf)": lambda: ov8.embed_array(texts),
    }
    for run in paths.values():
        run()
    best = {name: float("inf") for name in paths}
    for _ in range(ROUNDS):
        for name, run in paths.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"throughput on {len(texts)} SciFact abstracts (best of {ROUNDS} interleaved rounds, "
          f"{E.available_cores()} cores); nncf calibration: {len(calibration)} sample-KB sections, "
          f"{quantize_s:.1f} s")
    for name, seconds in best.items():
        rate = len(texts) / seconds
        print(f"  {name:<22} {rate:6.1f} chunks/s  ratio vs torch {best['torch'] / seconds:.2f}x")
    for name, embedder in (("openvino fp32", ov32), ("openvino int8 (nncf)", ov8)):
        cos = (embedder.embed_array(texts[:200]) * ref[:200]).sum(axis=1)
        print(f"cosine to onnxruntime fp32 on 200 abstracts, {name}: mean {cos.mean():.4f} min {cos.min():.4f}")
    n32 = ndcg_at_10(retrieve(fp32, corpus, queries), qrels)
    n8 = ndcg_at_10(retrieve(ov8, corpus, queries), qrels)
    print(f"SciFact nDCG@10 ({len(corpus)} docs, {len(qrels)} queries): onnxruntime fp32 {n32:.4f}, "
          f"openvino int8 (nncf) {n8:.4f}, loss {n32 - n8:+.4f}")


if __name__ == "__main__":
    main()
