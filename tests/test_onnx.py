"""The ONNX Runtime backend: same vectors and token counts as sentence-transformers, int8, the
export cache, backend choice, and a query that never imports torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from kbindex.cli import cli
from kbindex.embedding import export, load_embedder, loader, pick_backend
from kbindex.embedding import spec as model_spec
from kbindex.embedding.onnx import OnnxEmbedder
from kbindex.embedding.spec import pool
from kbindex.embedding.torch import SentenceTransformerEmbedder
from kbindex.errors import ModelError, UsageError
from tests.conftest import ROOT, SAMPLE_KB, SHARED_DATA, network_watch

LONG = " ".join(
    f"Sentence {i} says the write-ahead log grew until the disk was full and the server stopped."
    for i in range(60)
)  # about 1,100 tokens: far past the 256-token window, so truncation must agree too

MIXED = [
    "my desktop chat app will not open for users with roaming profiles",
    "x",
    "",
    "   leading and trailing spaces   ",
    "Ünïcödé café naïve — 北京 東京 😀, ﬁ ligatures, ½ ① ＡＢＣ",
    "tabs\tand\nnewlines\n\nand paragraphs",
    "def main():\n    return {'key': [1, 2, 3]}  # code",
    "https://kb.example.com/articles/reset-mfa?utm_source=x&id=42",
    LONG,
    "word " * 300,
]


def _sample_texts() -> list[str]:
    """MIXED plus real article sections (SciFact abstracts when the shared data is there)."""
    corpus = SHARED_DATA / "scifact" / "corpus.jsonl"
    texts = list(MIXED)
    if corpus.exists():
        with corpus.open(encoding="utf-8") as handle:
            for line, _ in zip(handle, range(40), strict=False):
                doc = json.loads(line)
                texts.append(f"{doc['title']}\n\n{doc['text']}")
    else:
        texts += [p.read_text(encoding="utf-8")[:3000] for p in sorted(SAMPLE_KB.iterdir())]
    return texts


@pytest.fixture(scope="module")
def onnx_cache(model_cache):
    return model_cache.root  # the session's: the export is made once per test session


@pytest.fixture(scope="module")
def onnx_model(onnx_cache):
    embedder = load_embedder("all-MiniLM-L6-v2", "cpu", "onnx", "none", onnx_cache)
    assert isinstance(embedder, OnnxEmbedder)
    return embedder


@pytest.fixture(scope="module")
def int8_model(onnx_cache):
    return load_embedder("all-MiniLM-L6-v2", "cpu", "onnx", "int8", onnx_cache)


# --- vectors and token counts -------------------------------------------------------------------


@pytest.mark.model
def test_onnx_vectors_match_sentence_transformers(onnx_model, real_model):
    assert isinstance(real_model, SentenceTransformerEmbedder)  # the reference must be PyTorch
    texts = _sample_texts()
    reference = np.array(real_model.embed(texts))
    vectors = np.array(onnx_model.embed(texts))
    assert vectors.shape == reference.shape == (len(texts), 384)
    cosines = (reference * vectors).sum(axis=1)
    assert cosines.min() >= 0.9999, [(t[:40], c) for t, c in zip(texts, cosines, strict=True) if c < 0.9999]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.model
def test_onnx_same_identity_window_and_size_as_torch(onnx_model, real_model):
    assert onnx_model.name == real_model.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert onnx_model.max_tokens == real_model.max_tokens == 256
    assert onnx_model.dimension == real_model.dimension == 384


@pytest.mark.model
def test_token_counts_match_without_truncation_or_padding(onnx_model, real_model):
    texts = _sample_texts()
    counts = onnx_model.count_tokens(texts)
    assert counts == real_model.count_tokens(texts)
    # tokenizer.json of all-MiniLM-L6-v2 truncates and pads to 128: counting must do neither.
    assert counts[MIXED.index("x")] == 3
    assert counts[MIXED.index(LONG)] > 1000


@pytest.mark.model
def test_batch_order_and_size_do_not_change_vectors(onnx_model):
    texts = _sample_texts()[:12]
    together = np.array(onnx_model.embed(texts))
    one_by_one = np.array([onnx_model.embed([t])[0] for t in reversed(texts)][::-1])
    assert np.allclose(together, one_by_one, atol=1e-5)


def assert_thread_safe(embedder) -> None:
    """Four threads embed at once while the main thread counts tokens, as a pipeline does."""
    texts = _sample_texts()[:16]
    expected = np.array(embedder.embed(texts))
    results: list = [None] * 4

    def work(slot):
        results[slot] = np.array(embedder.embed(texts))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    embedder.count_tokens(texts)
    for t in threads:
        t.join()
    for got in results:
        assert np.allclose(got, expected, atol=1e-5)


def assert_survives_thread_stress(embedder) -> None:
    """Many rounds of concurrent calls from fresh threads (tests/thread_stress.py), in a child
    process: a crash in the runtime fails this test instead of killing the test run."""
    import signal
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "tests.thread_stress", embedder.runtime, embedder.quantize,
         str(embedder.cache_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
           else f"exit {proc.returncode}")
    assert proc.returncode == 0, f"{how}\n{proc.stderr[-3000:]}"


@pytest.mark.model
def test_embed_is_thread_safe(onnx_model):
    assert_thread_safe(onnx_model)


@pytest.mark.model
def test_concurrent_calls_from_fresh_threads_survive_many_rounds(onnx_model):
    """ONNX Runtime's InferenceSession.run is documented thread-safe: one session serves all."""
    assert_survives_thread_stress(onnx_model)


@pytest.mark.model
def test_int8_is_close_but_distinct_and_has_its_own_identity(int8_model, onnx_model):
    texts = _sample_texts()
    full = np.array(onnx_model.embed(texts))
    quantized = np.array(int8_model.embed(texts))
    cosines = (full * quantized).sum(axis=1)
    assert cosines.mean() > 0.97
    assert cosines.min() < 0.99999  # really another model, not the fp32 file again
    assert np.allclose(np.linalg.norm(quantized, axis=1), 1.0, atol=1e-5)
    assert int8_model.name == "sentence-transformers/all-MiniLM-L6-v2#int8"
    assert int8_model.model_path().stat().st_size < onnx_model.model_path().stat().st_size / 3


# --- the export cache ---------------------------------------------------------------------------


@pytest.mark.model
def test_export_is_cached_and_reused(onnx_model, onnx_cache, monkeypatch):
    onnx_model.embed(["warm up"])
    files = sorted(onnx_cache.glob("*--fp32-fused--*/model.onnx"))
    assert len(files) == 1
    assert files[0] == onnx_model.model_path() == onnx_model.artifact.file("model.onnx")
    inputs = onnx_model.artifact.manifest["inputs"]
    assert inputs["weights_sha256"] == model_spec.weights_hash(onnx_model.spec, onnx_cache)
    assert files[0].parent.name.endswith(onnx_model.artifact_spec("fp32-fused").key[:16])
    before = files[0].stat().st_mtime_ns

    def no_export(*args):
        raise AssertionError("exported again although the cache holds the model")

    monkeypatch.setattr(export, "export_onnx", no_export)
    again = load_embedder("all-MiniLM-L6-v2", "cpu", "onnx", "none", onnx_cache)
    assert np.allclose(again.embed(["same text"]), onnx_model.embed(["same text"]), atol=1e-6)
    assert files[0].stat().st_mtime_ns == before


def test_weights_hash_follows_the_file_contents(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"first weights")
    spec = model_spec.ModelSpec(folder, ("mean",), 128, 8, False, (weights,))
    cache = tmp_path / "cache"
    first = model_spec.weights_hash(spec, cache)
    assert first == model_spec.weights_hash(spec, cache)  # remembered
    assert json.loads((cache / "weights-hashes.json").read_text())
    weights.write_bytes(b"other weights, other size")
    assert model_spec.weights_hash(spec, cache) != first


# --- configs, pooling and backend choice (no model needed) ---------------------------------------


def _model_folder(tmp_path, modules, pooling=None, st_config=None):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": p, "type": f"sentence_transformers.models.{t}"}
         for i, (t, p) in enumerate(modules)]))
    (folder / "config.json").write_text(json.dumps({"hidden_size": 16, "max_position_embeddings": 512}))
    (folder / "tokenizer.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"w")
    if pooling is not None:
        (folder / "1_Pooling").mkdir()
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    if st_config is not None:
        (folder / "sentence_bert_config.json").write_text(json.dumps(st_config))
    return folder


def test_read_spec_takes_pooling_and_window_from_the_configs(tmp_path):
    folder = _model_folder(
        tmp_path, [("Transformer", ""), ("Pooling", "1_Pooling"), ("Normalize", "2_Normalize")],
        {"word_embedding_dimension": 16, "pooling_mode_cls_token": True, "pooling_mode_max_tokens": True},
        {"max_seq_length": 200, "do_lower_case": True},
    )
    spec = model_spec.read_spec(folder)
    assert spec.pooling == ("cls", "max")
    assert spec.dimension == 32
    assert spec.max_tokens == 200
    assert spec.do_lower_case is True


@pytest.mark.parametrize("modules,pooling", [
    ([("Transformer", ""), ("Pooling", "1_Pooling"), ("Dense", "2_Dense")], {"pooling_mode_mean_tokens": True}),
    ([("Transformer", ""), ("Pooling", "1_Pooling")], {"pooling_mode": "weightedmean"}),
    ([("Transformer", ""), ("Pooling", "1_Pooling")], {"pooling_mode": "lasttoken"}),
])
def test_layouts_onnx_cannot_reproduce_fall_back_to_torch_on_auto(tmp_path, modules, pooling):
    folder = _model_folder(tmp_path, modules, pooling)
    with pytest.raises(ModelError):
        model_spec.read_spec(folder)
    assert isinstance(load_embedder(str(folder), "cpu", "auto"), SentenceTransformerEmbedder)
    with pytest.raises(ModelError):
        load_embedder(str(folder), "cpu", "onnx")


def test_pool_modes():
    tokens = np.array([[[1.0, 2.0], [3.0, -4.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])  # the third position is padding
    assert pool(tokens, mask, ["mean"]).tolist() == [[2.0, -1.0]]
    assert pool(tokens, mask, ["max"]).tolist() == [[3.0, 2.0]]
    assert pool(tokens, mask, ["cls"]).tolist() == [[1.0, 2.0]]
    assert np.allclose(pool(tokens, mask, ["mean_sqrt_len_tokens"]), [[4 / 2 ** 0.5, -2 / 2 ** 0.5]])
    assert pool(tokens, mask, ["cls", "mean"]).shape == (1, 4)


@pytest.mark.parametrize("backend,device,quantize,gpu,expected", [
    ("auto", "auto", "none", False, "openvino"),
    ("auto", "auto", "none", True, "torch"),
    ("auto", "cpu", "none", True, "openvino"),
    ("auto", "cuda", "none", False, "torch"),
    ("auto", "auto", "int8", True, "openvino"),
    ("torch", "cpu", "none", False, "torch"),
    ("onnx", "cuda", "none", True, "onnx"),
    ("onnx", "auto", "int8", False, "onnx"),
    ("openvino", "auto", "none", True, "openvino"),
])
def test_pick_backend(monkeypatch, backend, device, quantize, gpu, expected):
    monkeypatch.setattr(loader, "gpu_present", lambda: gpu)
    assert pick_backend(backend, device, quantize) == expected


def test_auto_uses_onnxruntime_where_openvino_is_missing(monkeypatch, tmp_path):
    from kbindex.embedding import openvino

    monkeypatch.setattr(loader, "gpu_present", lambda: False)
    monkeypatch.setattr(openvino, "available", lambda: False)
    assert pick_backend("auto", "auto", "int8") == "onnx"
    embedder = load_embedder("all-MiniLM-L6-v2", cache_dir=tmp_path)
    assert (embedder.runtime, embedder.name) == ("onnx", "sentence-transformers/all-MiniLM-L6-v2#int8")
    # A collection of static int8 vectors cannot be served without OpenVINO: said, not guessed.
    with pytest.raises(ModelError, match="needs the openvino and nncf packages"):
        load_embedder("sentence-transformers/all-MiniLM-L6-v2#int8-static", cache_dir=tmp_path)


def test_int8_needs_a_quantizing_backend():
    with pytest.raises(UsageError, match="--quantize int8 needs --backend openvino, onnx or auto"):
        pick_backend("torch", "cpu", "int8")


@pytest.mark.parametrize("identity,runtime", [
    ("sentence-transformers/all-MiniLM-L6-v2#int8", "onnx"),
    ("sentence-transformers/all-MiniLM-L6-v2#int8-static", "openvino"),
])
def test_int8_identity_loads_as_what_it_names(tmp_path, identity, runtime):
    embedder = load_embedder(identity, "cpu", cache_dir=tmp_path)
    assert isinstance(embedder, OnnxEmbedder)
    assert (embedder.quantize, embedder.runtime, embedder.name) == ("int8", runtime, identity)
    other = "onnx" if runtime == "openvino" else "openvino"
    with pytest.raises(UsageError, match=f"only the {runtime} backend makes: use --backend {runtime}"):
        load_embedder(identity, "cpu", other, cache_dir=tmp_path)


def test_default_is_the_openvino_static_int8_fast_path(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "gpu_present", lambda: False)
    embedder = load_embedder("all-MiniLM-L6-v2", cache_dir=tmp_path)
    assert isinstance(embedder, OnnxEmbedder)
    assert (embedder.quantize, embedder.runtime) == ("int8", "openvino")
    assert embedder.name == "sentence-transformers/all-MiniLM-L6-v2#int8-static"


@pytest.mark.parametrize("recorded,quantize,expected", [
    ("sentence-transformers/all-MiniLM-L6-v2", "auto", ("none", "openvino")),  # fp32 stays fp32
    ("sentence-transformers/all-MiniLM-L6-v2#int8", "auto", ("int8", "onnx")),  # dynamic stays dynamic
    ("sentence-transformers/all-MiniLM-L6-v2#int8", "int8", ("int8", "onnx")),
    ("sentence-transformers/all-MiniLM-L6-v2#int8-static", "auto", ("int8", "openvino")),
    ("some/other-model", "auto", ("int8", "openvino")),  # another model's: refused later
    (None, "auto", ("int8", "openvino")),
])
def test_quantize_auto_follows_the_collection(tmp_path, monkeypatch, recorded, quantize, expected):
    monkeypatch.setattr(loader, "gpu_present", lambda: False)
    embedder = load_embedder("all-MiniLM-L6-v2", "cpu", "auto", quantize, tmp_path, recorded)
    assert (embedder.quantize, embedder.runtime) == expected


def test_quantize_auto_on_a_gpu_is_torch_fp32(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "gpu_present", lambda: True)
    assert isinstance(load_embedder("all-MiniLM-L6-v2", cache_dir=tmp_path), SentenceTransformerEmbedder)


# --- through the CLI --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One index folder for the CLI tests (the models come from the session's model cache); each
    test uses its own collection."""
    db = tmp_path_factory.mktemp("cli") / "index"
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, [*args, "--db", str(db), "--device", "cpu"], catch_exceptions=False)

    run.db = db
    return run


FILES = sorted(str(p) for p in SAMPLE_KB.iterdir())


@pytest.mark.model
def test_torch_and_onnx_vectors_share_a_collection(store):
    half = len(FILES) // 2
    assert store("index", *FILES[:half], "--collection", "mixed", "--backend", "torch").exit_code == 0
    assert store("index", *FILES[half:], "--collection", "mixed", "--backend", "onnx").exit_code == 0
    question = "got a new phone and need to set up two-factor sign-in again"
    ranked = {}
    for backend in ("torch", "onnx"):
        out = store("query", question, "-k", "5", "--collection", "mixed", "--backend", backend, "--json")
        assert out.exit_code == 0, out.output
        ranked[backend] = json.loads(out.stdout)["hits"]
    assert [h["id"] for h in ranked["torch"]] == [h["id"] for h in ranked["onnx"]]
    assert np.allclose([h["score"] for h in ranked["torch"]], [h["score"] for h in ranked["onnx"]], atol=1e-4)
    assert ranked["onnx"][0]["source"].endswith("reset-mfa-authenticator-new-phone.md")


@pytest.mark.model
def test_int8_collection_refuses_fp32_vectors_and_queries(store):
    files = FILES[:3]
    out = store("index", *files, "--collection", "int8-only", "--quantize", "int8")
    assert out.exit_code == 0, out.output
    stats = json.loads(store("stats", "--collection", "int8-only", "--json").stdout)
    assert stats["model"] == "sentence-transformers/all-MiniLM-L6-v2#int8-static"
    refused = store("index", *files, "--collection", "int8-only", "--quantize", "none")
    assert refused.exit_code == 1
    assert "holds int8-static vectors" in refused.stderr and "--rebuild" in refused.stderr
    refused = store("query", "roaming profiles", "--collection", "int8-only", "--quantize", "none")
    assert refused.exit_code == 1
    assert "holds int8-static vectors" in refused.stderr
    # The default (--quantize auto) follows what the collection holds.
    ok = store("query", "roaming profiles", "--collection", "int8-only", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["hits"][0]["source"].endswith("electron-app-roaming-profiles.html")
    assert store("index", *files, "--collection", "int8-only", "--json").exit_code == 0


@pytest.mark.model
def test_dynamic_int8_collection_keeps_onnxruntime_until_rebuilt(store):
    """A collection made before OpenVINO was the default (dynamic int8) stays what it is."""
    files = FILES[:3]
    made = store("index", *files[:2], "--collection", "dynamic", "--backend", "onnx", "--quantize", "int8")
    assert made.exit_code == 0, made.output
    assert store("index", *files, "--collection", "dynamic").exit_code == 0  # defaults follow it
    stats = json.loads(store("stats", "--collection", "dynamic", "--json").stdout)
    assert (stats["model"], stats["documents"]) == ("sentence-transformers/all-MiniLM-L6-v2#int8", 3)
    ok = store("query", "my chat app does not start with roaming profiles", "--collection", "dynamic", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["hits"][0]["source"].endswith("electron-app-roaming-profiles.html")
    refused = store("query", "roaming profiles", "--collection", "dynamic", "--backend", "openvino")
    assert refused.exit_code == 2 and "use --backend onnx" in refused.stderr
    # Re-embedding it with the current default turns it into a static int8 collection.
    rebuilt = store("index", *files, "--collection", "dynamic", "--rebuild", "--quantize", "int8")
    assert rebuilt.exit_code == 0, rebuilt.output
    stats = json.loads(store("stats", "--collection", "dynamic", "--json").stdout)
    assert (stats["model"], stats["documents"]) == ("sentence-transformers/all-MiniLM-L6-v2#int8-static", 3)


@pytest.mark.model
def test_fp32_collection_stays_fp32_under_the_int8_default(store):
    assert store("index", *FILES[:2], "--collection", "fp32-only", "--quantize", "none").exit_code == 0
    assert store("index", *FILES[2:4], "--collection", "fp32-only").exit_code == 0
    stats = json.loads(store("stats", "--collection", "fp32-only", "--json").stdout)
    assert stats["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert stats["documents"] == 4


def test_cli_rejects_int8_on_torch(tmp_path):
    out = CliRunner().invoke(cli, ["index", str(SAMPLE_KB), "--db", str(tmp_path / "i"),
                                   "--backend", "torch", "--quantize", "int8"])
    assert out.exit_code == 2
    assert "--quantize int8 needs --backend openvino, onnx or auto" in out.stderr


@pytest.mark.model
def test_default_query_imports_no_torch_and_opens_no_connection(store, tmp_path):
    """The default backend (OpenVINO): no torch, no NNCF, and none of OpenVINO's telemetry."""
    assert store("index", *FILES[:2], "--collection", "notorch").exit_code == 0
    watch, log = network_watch(tmp_path)
    # A fresh interpreter runs the query and reports which heavy stacks got imported.
    runner = (
        "import json, sys\n"
        "from kbindex.cli import cli\n"
        "cli(sys.argv[1:], prog_name='kbindex', standalone_mode=False)\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules}\n"
        "               & {'torch', 'sentence_transformers', 'transformers', 'nncf'})\n"
        "print('HEAVY=' + json.dumps(heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", runner, "query", "roaming profiles", "-k", "1", "--json",
         "--db", str(store.db), "--collection", "notorch", "--backend", "auto", "--device", "cpu"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **watch},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert json.loads(lines[0])["hits"]
    assert lines[-1] == "HEAVY=[]"
    assert not log.exists(), log.read_text()


def test_weights_hash_works_where_the_cache_cannot_be_written(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    spec = model_spec.ModelSpec(tmp_path, ("mean",), 128, 8, False, (weights,))
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    import hashlib

    assert model_spec.weights_hash(spec, blocked / "cache") == hashlib.sha256(b"weights").hexdigest()


@pytest.mark.model
def test_torch_backend_counts_tokens_while_it_embeds(real_model):
    """The index run counts tokens (chunking) while a background thread embeds."""
    texts = _sample_texts()[:16]
    expected_vectors = np.array(real_model.embed(texts))
    expected_counts = real_model.count_tokens(texts)
    errors: list = []
    vectors: list = []

    def embed():
        try:
            for _ in range(3):
                vectors.append(np.array(real_model.embed(texts)))
        except Exception as exc:  # "Already borrowed" from a shared Rust tokenizer
            errors.append(exc)

    thread = threading.Thread(target=embed)
    thread.start()
    counts = [real_model.count_tokens(texts) for _ in range(50)]
    thread.join()
    assert not errors
    assert all(c == expected_counts for c in counts)
    assert all(np.allclose(v, expected_vectors, atol=1e-5) for v in vectors)
