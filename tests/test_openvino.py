"""The OpenVINO backend: fp32 vectors interchangeable with PyTorch's, static int8 close to them and
the same in any batch, made once per model without any network access, and failures reported."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kbindex.embedding import export, load_embedder
from kbindex.embedding import openvino as ov_runtime
from kbindex.embedding import spec as model_spec
from kbindex.embedding.onnx import OnnxEmbedder
from kbindex.errors import ModelError
from tests.conftest import SAMPLE_KB
from tests.test_onnx import MIXED, _sample_texts, assert_survives_thread_stress, assert_thread_safe

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def cache(model_cache):
    return model_cache.root  # the session's, where conftest made the default models first


@pytest.fixture(scope="module")
def fp32(cache):
    embedder = load_embedder("all-MiniLM-L6-v2", "cpu", "openvino", "none", cache)
    assert isinstance(embedder, OnnxEmbedder) and embedder.runtime == "openvino"
    return embedder


@pytest.fixture(scope="module")
def quantizing(fp32, model_cache):
    """The static int8 model, which conftest quantized with every process's network access refused
    and logged, before any other test could make it."""
    embedder = load_embedder("all-MiniLM-L6-v2", "cpu", "openvino", "int8", fp32.cache_dir)
    return embedder, embedder.model_path(), model_cache.quantization_log


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
    assert log is not None and log.parent.exists()
    assert not log.exists(), log.read_text()


def test_static_int8_is_close_to_fp32_but_its_own_kind(int8, fp32):
    texts = _sample_texts()
    full = np.array(fp32.embed(texts))
    quantized = np.array(int8.embed(texts))
    cosines = (full * quantized).sum(axis=1)
    # MIXED has degenerate texts ("" is 0.90, "x" 0.975) that weigh on the whole mean: 0.992 with
    # SciFact's 40 abstracts, 0.988 with the sample KB's 10 pages (where ../shared/data is absent).
    # The quantization's own guard (ov_runtime.MIN_COSINE, 0.98) holds for the whole set, and the
    # article texts must be close one by one.
    assert cosines.mean() > ov_runtime.MIN_COSINE
    articles = cosines[len(MIXED):]
    assert len(articles) >= 10 and articles.min() > 0.98 and articles.mean() > 0.99
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
    """Each round's threads are new, more than the pool holds, with new input shapes; every vector
    equals the one its text gets alone, and no request is made after load (making one while another
    thread inferred crashed with SIGSEGV). Checked against the two designs before the pool: one
    request per thread fails the no-new-request guard, one request for all threads fails with
    "Infer Request is busy" (the SIGSEGV itself did not come back on OpenVINO 2026.4.1)."""
    assert int8.session.requests >= ov_runtime.REQUESTS
    assert_survives_thread_stress(int8)


def test_models_are_cached_and_reused(int8, cache, monkeypatch):
    vector = int8.embed(["same text"])

    def never(*args, **kwargs):
        raise AssertionError("made again although the cache holds it")

    monkeypatch.setattr(export, "export_onnx", never)
    monkeypatch.setattr(ov_runtime, "quantize_static", never)
    again = load_embedder("all-MiniLM-L6-v2", "cpu", "auto", "auto", cache)
    assert again.name == int8.name
    assert np.allclose(again.embed(["same text"]), vector, atol=1e-6)


def test_a_model_whose_int8_vectors_drift_is_refused(fp32, tmp_path, monkeypatch):
    """The child's guard, run in this process with a bar no quantization can pass (calibrated on
    12 of the texts: the guard is what is tested, and the whole set took 3 minutes under load)."""
    monkeypatch.setattr(ov_runtime, "MIN_COSINE", 1.01)
    texts = ov_runtime.calibration_texts()[:12]
    monkeypatch.setattr(ov_runtime, "calibration_texts", lambda: texts)
    target = tmp_path / ov_runtime.IR_NAME
    with pytest.raises(SystemExit, match=r"drift too far from fp32 .*mean cosine 0\.9.*use --quantize none"):
        ov_runtime._quantize_main(str(fp32.model_path()), str(target), str(fp32.spec.folder))
    assert not target.exists()


def test_a_failed_quantization_is_reported_and_leaves_nothing(tmp_path, fp32):
    broken = tmp_path / "plain.onnx"
    broken.write_bytes(b"not a model")
    target = tmp_path / ov_runtime.IR_NAME
    with pytest.raises(ModelError, match="cannot quantize .* to static int8: "):
        ov_runtime.quantize_static(broken, target, fp32.spec.folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.onnx"]


@pytest.fixture
def fresh_cache(int8, fp32, tmp_path, monkeypatch):
    """An empty model cache of this test's own holding only the plain export, with the static int8
    quantization replaced by a copy of the one the session made (to keep the tests quick).
    Returns (cache folder, the targets quantize_static was called with)."""
    import shutil

    root = tmp_path / "cache"
    monkeypatch.setenv("KBINDEX_CACHE_DIR", str(root))
    root.mkdir()
    source = fp32.model_path().parent
    shutil.copytree(source, root / source.name, ignore=shutil.ignore_patterns("kernels", ".last-used"))
    made = int8.model_path()
    calls = []

    def copy_quantized(source, target, model_folder):
        calls.append(target)
        shutil.copy(made.with_suffix(".bin"), target.with_suffix(".bin"))
        shutil.copy(made, target)

    monkeypatch.setattr(ov_runtime, "quantize_static", copy_quantized)
    return root, calls


def _cli(*args):
    from click.testing import CliRunner

    from kbindex.cli import cli

    return CliRunner().invoke(cli, [*args, "--device", "cpu"], catch_exceptions=False)


PAGE = str(SAMPLE_KB / "printer-offline-windows.html")


def test_cli_says_when_it_makes_a_model_and_a_second_index_folder_starts_at_once(fresh_cache, tmp_path):
    """The once-per-machine work takes tens of seconds: the CLI says so on stderr before it starts,
    and a second index folder (or a query) uses what the first made, silently."""
    root, calls = fresh_cache
    first = _cli("index", PAGE, "--db", str(tmp_path / "first"), "--json")
    assert first.exit_code == 0, first.output
    assert len(calls) == 1 and calls[0].parent.parent == root and calls[0].parent.name.startswith(".tmp-")
    assert "kbindex: quantizing sentence-transformers/all-MiniLM-L6-v2 to static int8" in first.stderr
    assert "exporting" not in first.stderr  # the plain export was there
    for db in ("first", "second"):
        again = _cli("index", PAGE, "--db", str(tmp_path / db), "--json")
        assert again.exit_code == 0, again.output
        assert "kbindex:" not in again.stderr and len(calls) == 1
        query = _cli("query", "printer offline", "--db", str(tmp_path / db), "--json")
        assert query.exit_code == 0, query.output
        assert "kbindex:" not in query.stderr and len(calls) == 1
    assert not (tmp_path / "first" / "models").exists() and not (tmp_path / "first" / "onnx").exists()
    record = json.loads((tmp_path / "second" / "models.json").read_text())["collections"]["kbindex"]
    assert record["model"] == "sentence-transformers/all-MiniLM-L6-v2#int8-static"
    assert (root / record["artifact"] / "model.xml").exists()
    assert record["inputs"]["nncf"] == model_spec.package_version("nncf")
    # The embedding cache holds the vectors under the identity the index folder records.
    assert record["identity"] == f"{record['model']}@{record['key'][:16]}"
    import sqlite3

    ledger = sqlite3.connect(tmp_path / "second" / "kbindex.sqlite")
    assert {m for (m,) in ledger.execute("SELECT DISTINCT model FROM embeddings")} == {record["identity"]}
    ledger.close()


def test_a_damaged_model_in_the_cache_is_made_again(fresh_cache, tmp_path):
    root, calls = fresh_cache
    assert _cli("index", PAGE, "--db", str(tmp_path / "db")).exit_code == 0
    (made,) = root.glob("*--int8-static--*/model.bin")
    with made.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\0" * 64)
    out = _cli("query", "printer offline", "--db", str(tmp_path / "db"), "--json")
    assert out.exit_code == 0, out.output
    assert len(calls) == 2 and "quantizing" in out.stderr


def test_an_unwritable_cache_falls_back_to_the_index_folder(fresh_cache, tmp_path, monkeypatch):
    import shutil

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("KBINDEX_CACHE_DIR", str(blocker / "models"))
    db = tmp_path / "db"
    shutil.copytree(fresh_cache[0], db / "models")  # the plain export only: no export here
    out = _cli("index", PAGE, "--db", str(db), "--json")
    assert out.exit_code == 0, out.output
    notices = [line for line in out.stderr.splitlines() if "cannot be written" in line]
    assert notices == [f"kbindex: the model cache {blocker / 'models'} cannot be written "
                       f"(Not a directory); using {db / 'models'}"]
    assert list((db / "models").glob("*--int8-static--*/model.xml"))
    again = _cli("query", "printer offline", "--db", str(db), "--json")
    assert again.exit_code == 0 and "kbindex:" not in again.stderr


def test_a_collection_keeps_the_int8_model_it_was_built_with(fresh_cache, tmp_path, monkeypatch):
    """Another NNCF makes other int8 vectors: the collection goes on with the model it was built
    with while the cache has it, and is refused (not mixed) when it does not."""
    import shutil

    root, calls = fresh_cache
    db = str(tmp_path / "db")
    assert _cli("index", PAGE, "--db", db).exit_code == 0
    built = json.loads((tmp_path / "db" / "models.json").read_text())["collections"]["kbindex"]
    real = model_spec.package_version
    monkeypatch.setattr(model_spec, "package_version",
                        lambda *names: "99.0" if names == ("nncf",) else real(*names))
    ok = _cli("query", "printer offline", "--db", db, "--json")
    assert ok.exit_code == 0, ok.output
    assert len(calls) == 1  # the recorded model, not a new one
    shutil.rmtree(root / built["artifact"])
    refused = _cli("query", "printer offline", "--db", db)
    assert refused.exit_code == 1
    assert f"built with the model artifact {built['artifact']}" in refused.stderr
    assert f"it was made with nncf {built['inputs']['nncf']}, this machine has 99.0:" in refused.stderr
    assert "--rebuild" in refused.stderr and "Traceback" not in refused.stderr
    assert len(calls) == 1
    # A new collection in the same folder is made with this machine's model (another page: the
    # embedding cache would give this one its vectors without the model).
    other = _cli("index", str(SAMPLE_KB / "postgresql-wal-disk-full.md"), "--db", db, "--collection", "other")
    assert other.exit_code == 0, other.output
    assert len(calls) == 2
    # --rebuild takes the refused collection to this machine's model (its vectors here come from
    # the embedding cache, without loading the model: the old record must not outlive it).
    rebuilt = _cli("index", PAGE, "--db", db, "--rebuild")
    assert rebuilt.exit_code == 0, rebuilt.output
    ok = _cli("query", "printer offline", "--db", db)
    assert ok.exit_code == 0, ok.output
    assert len(calls) == 2


def test_models_prepare_makes_the_default_model_once(fresh_cache):
    root, calls = fresh_cache
    out = _cli("models", "prepare")
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith("ready: sentence-transformers/all-MiniLM-L6-v2#int8-static (int8-static) in ")
    assert "quantizing" in out.stderr and len(calls) == 1
    assert list(root.glob("*--int8-static--*/kernels/*"))  # compiled once, kept for later processes
    again = _cli("models", "prepare")
    assert again.exit_code == 0 and "kbindex:" not in again.stderr and len(calls) == 1
