"""The OpenVINO backend: fp32 vectors interchangeable with PyTorch's, static int8 close to them and
the same in any batch, made once per model without any network access, and failures reported."""

from __future__ import annotations

import numpy as np
import pytest

from kbindex import embed, ovbackend
from kbindex.embed import OnnxEmbedder, load_embedder
from kbindex.errors import ModelError
from tests.conftest import network_watch
from tests.test_onnx import MIXED, _sample_texts, assert_survives_thread_stress, assert_thread_safe

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture(scope="module")
def fp32(cache):
    embedder = load_embedder("all-MiniLM-L6-v2", "cpu", "openvino", "none", cache)
    assert isinstance(embedder, OnnxEmbedder) and embedder.runtime == "openvino"
    return embedder


@pytest.fixture(scope="module")
def quantizing(fp32, tmp_path_factory):
    """The static int8 model, quantized with every process's network access refused and logged."""
    fp32.model_path()  # the plain export first: this fixture watches the quantization only
    env, log = network_watch(tmp_path_factory.mktemp("nonet"))
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        embedder = load_embedder("all-MiniLM-L6-v2", "cpu", "openvino", "int8", fp32.cache_dir)
        path = embedder.model_path()
    return embedder, path, log


@pytest.fixture(scope="module")
def int8(quantizing):
    return quantizing[0]


def test_fp32_vectors_are_interchangeable_with_pytorch(fp32, real_model):
    texts = _sample_texts()
    reference = np.array(real_model.embed(texts))
    vectors = np.array(fp32.embed(texts))
    cosines = (reference * vectors).sum(axis=1)
    assert cosines.min() >= 0.9999, [(t[:40], c) for t, c in zip(texts, cosines, strict=True) if c < 0.9999]
    assert fp32.name == real_model.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert fp32.count_tokens(texts) == real_model.count_tokens(texts)


def test_quantization_makes_no_network_access(quantizing):
    _, path, log = quantizing
    assert path.exists() and path.with_suffix(".bin").exists()
    assert not log.exists(), log.read_text()


def test_static_int8_is_close_to_fp32_but_its_own_kind(int8, fp32):
    texts = _sample_texts()
    full = np.array(fp32.embed(texts))
    quantized = np.array(int8.embed(texts))
    cosines = (full * quantized).sum(axis=1)
    assert cosines.mean() > 0.99
    articles = cosines[len(MIXED):]  # MIXED has degenerate texts: "" is 0.90, "x" 0.975
    assert len(articles) >= 10 and articles.min() > 0.98
    assert cosines.min() < 0.99999  # really the quantized model, not the fp32 one again
    assert np.allclose(np.linalg.norm(quantized, axis=1), 1.0, atol=1e-5)
    assert int8.name == "sentence-transformers/all-MiniLM-L6-v2#int8-static"
    assert int8.model_path().with_suffix(".bin").stat().st_size < fp32.model_path().stat().st_size / 3


def test_static_int8_vectors_do_not_depend_on_the_batch(int8):
    """Activation scales are fixed at calibration: a text gets one vector, alone or in any batch
    (dynamic int8 moves it: minimum cosine 0.994 in docs/benchmarks.md)."""
    texts = _sample_texts()[:24]
    together = np.array(int8.embed(texts))
    alone = np.array([int8.embed([t])[0] for t in texts])
    cosines = (together * alone).sum(axis=1)
    assert cosines.min() >= 0.9999


def test_embed_is_thread_safe(int8):
    assert_thread_safe(int8)  # four callers share the session's pool of infer requests


def test_concurrent_calls_from_fresh_threads_survive_many_rounds(int8):
    """Each round's threads are new, more than the pool holds, with new input shapes: no request
    is made after load (making one while another thread inferred crashed with SIGSEGV)."""
    assert int8.session.requests >= ovbackend.REQUESTS
    assert_survives_thread_stress(int8)


def test_models_are_cached_and_reused(int8, cache, monkeypatch):
    vector = int8.embed(["same text"])

    def never(*args, **kwargs):
        raise AssertionError("made again although the cache holds it")

    monkeypatch.setattr(embed, "export_onnx", never)
    monkeypatch.setattr(ovbackend, "quantize_static", never)
    again = load_embedder("all-MiniLM-L6-v2", "cpu", "auto", "auto", cache)
    assert again.name == int8.name
    assert np.allclose(again.embed(["same text"]), vector, atol=1e-6)


def test_a_model_whose_int8_vectors_drift_is_refused(fp32, tmp_path, monkeypatch):
    """The child's guard, run in this process with a bar no quantization can pass."""
    monkeypatch.setattr(ovbackend, "MIN_COSINE", 1.01)
    target = tmp_path / ovbackend.IR_NAME
    with pytest.raises(SystemExit, match=r"drift too far from fp32 .*mean cosine 0\.9.*use --quantize none"):
        ovbackend._quantize_main(str(fp32.model_path()), str(target), str(fp32.spec.folder))
    assert not target.exists()


def test_a_failed_quantization_is_reported_and_leaves_nothing(tmp_path, fp32):
    broken = tmp_path / "plain.onnx"
    broken.write_bytes(b"not a model")
    target = tmp_path / ovbackend.IR_NAME
    with pytest.raises(ModelError, match="cannot quantize .* to static int8: "):
        ovbackend.quantize_static(broken, target, fp32.spec.folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.onnx"]


def test_cli_says_when_it_makes_a_model_and_is_silent_once_cached(int8, tmp_path, monkeypatch):
    """The once-per-model work takes tens of seconds: the CLI says so on stderr before it starts.
    (The quantization itself is replaced by a copy of the one already made, to keep this quick.)"""
    import shutil

    from click.testing import CliRunner

    from kbindex.cli import cli
    from tests.conftest import SAMPLE_KB

    made = int8.model_path()
    db = tmp_path / "index"
    folder = db / "onnx" / made.parent.name
    folder.mkdir(parents=True)
    shutil.copy(made.parent / "plain.onnx", folder / "plain.onnx")
    calls = []

    def copy_quantized(source, target, model_folder):
        calls.append(target)
        shutil.copy(made.with_suffix(".bin"), target.with_suffix(".bin"))
        shutil.copy(made, target)

    monkeypatch.setattr(ovbackend, "quantize_static", copy_quantized)
    page = str(SAMPLE_KB / "printer-offline-windows.html")
    first = CliRunner().invoke(cli, ["index", page, "--db", str(db), "--device", "cpu", "--json"])
    assert first.exit_code == 0, first.output
    assert calls == [folder / ovbackend.IR_NAME]
    assert "kbindex: quantizing sentence-transformers/all-MiniLM-L6-v2 to static int8" in first.stderr
    assert "exporting" not in first.stderr  # plain.onnx was there
    again = CliRunner().invoke(cli, ["query", "printer offline", "--db", str(db), "--device", "cpu", "--json"])
    assert again.exit_code == 0, again.output
    assert "kbindex:" not in again.stderr and len(calls) == 1
