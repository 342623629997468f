from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from tests import fakes

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
fakes.register()

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_KB = ROOT / "data" / "sample-kb"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Loaded by every Python process started with network_watch's environment (Python imports
# sitecustomize at start-up): it logs and refuses every connection and name lookup.
_SITECUSTOMIZE = """
import os, socket
_LOG = os.environ["KBINDEX_TEST_NET_LOG"]

def _refuse(*args, **kwargs):
    with open(_LOG, "a") as handle:
        handle.write(repr(args[1:] or args) + "\\n")
    raise OSError("network access refused by the test")

socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.getaddrinfo = _refuse
"""


def network_watch(folder: Path) -> tuple[dict[str, str], Path]:
    """(environment, log): processes started with the environment log any network access there."""
    (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    log = folder / "connections.log"
    return {"PYTHONPATH": str(folder), "KBINDEX_TEST_NET_LOG": str(log)}, log


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory, request):
    """One model cache (KBINDEX_CACHE_DIR) for the whole session, for every test and every process
    they start: the ONNX export and the int8 calibration are made once per session, not once per
    index folder. With tests marked `model` selected, the default artifacts (the plain export and
    the static int8 model) are made first, the quantization with network access refused and logged
    (`quantization_log`, checked by test_openvino)."""
    from kbindex.config import ENV_CACHE_DIR

    root = tmp_path_factory.mktemp("model-cache")
    previous = os.environ.get(ENV_CACHE_DIR)
    os.environ[ENV_CACHE_DIR] = str(root)
    cache = SimpleNamespace(root=root, quantization_log=None)
    if any(item.get_closest_marker("model") for item in request.session.items):
        from kbindex.embedding import load_embedder

        load_embedder("all-MiniLM-L6-v2", "cpu", "openvino", "none").model_path()
        env, cache.quantization_log = network_watch(tmp_path_factory.mktemp("nonet"))
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            load_embedder("all-MiniLM-L6-v2", "cpu", "openvino", "int8").model_path()
    yield cache
    if previous is None:
        os.environ.pop(ENV_CACHE_DIR, None)
    else:
        os.environ[ENV_CACHE_DIR] = previous


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "index"


@pytest.fixture
def kb(db, monkeypatch):
    """Run the CLI in-process against a temp store with the fake embedder."""
    from kbindex.cli import cli

    monkeypatch.setenv("KBINDEX_DB", str(db))
    monkeypatch.setenv("KBINDEX_MODEL", "fake:hash")
    for var in ("KBINDEX_COLLECTION", "KBINDEX_DEVICE", "KBINDEX_CHROMA_URL"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()

    def run(*args, input=None):
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    run.json = lambda *args: json.loads(run(*args, "--json").stdout)
    return run


@pytest.fixture(scope="session")
def real_model():
    """The packaged all-MiniLM-L6-v2 on PyTorch (the reference backend), loaded once."""
    from kbindex.embedding import load_embedder

    embedder = load_embedder("all-MiniLM-L6-v2", "cpu", backend="torch")
    _ = embedder.dimension  # load now
    return embedder
