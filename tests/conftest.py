from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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
    """One model cache (KBINDEX_CACHE_DIR) for the whole session, for every test, every process
    they start and, under pytest-xdist, every worker: the ONNX export and the int8 calibration are
    made once per session, not once per index folder or per worker.

    With tests marked `model` selected, the default artifacts (the plain OpenVINO export and the
    static int8 model) are made first, by one child process started at the session's start by the
    first worker to get here (_DefaultModels), with every network access of that process and of
    the processes it starts refused and logged (`quantization_log`, checked by test_openvino).
    Tests marked `model` wait for it (`_default_models_ready`); the others run meanwhile."""
    from kbindex.config import ENV_CACHE_DIR

    root = _session_folder(tmp_path_factory) / "model-cache"
    root.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get(ENV_CACHE_DIR)
    os.environ[ENV_CACHE_DIR] = str(root)
    cache = SimpleNamespace(root=root, quantization_log=None, defaults=None)
    if any(item.get_closest_marker("model") for item in request.session.items):
        cache.defaults = _DefaultModels(root.parent / "default-models")
        cache.defaults.start()
        cache.quantization_log = cache.defaults.log
    yield cache
    if cache.defaults is not None:
        cache.defaults.close()
    if previous is None:
        os.environ.pop(ENV_CACHE_DIR, None)
    else:
        os.environ[ENV_CACHE_DIR] = previous


@pytest.fixture(autouse=True)
def _default_models_ready(request, model_cache):
    """A test marked `model` starts once the session's default artifacts exist."""
    if model_cache.defaults is not None and request.node.get_closest_marker("model"):
        model_cache.defaults.wait()


def _session_folder(tmp_path_factory) -> Path:
    """A folder of this test session shared by all its pytest-xdist workers (the parent of the
    workers' own base folders, which xdist names popen-gw0, popen-gw1, ...), or, without xdist,
    the session's base folder."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


# The child process that makes the default artifacts (in the cache KBINDEX_CACHE_DIR names). It
# writes its outcome last, so that the file's presence means it finished. made_before: the static
# int8 model existed before it quantized, so that the quantization it watched was not the one that
# made it (test_quantization_makes_no_network_access would then pass without checking anything).
_MAKE_DEFAULTS = """
import json, sys, traceback
from pathlib import Path

done = Path(sys.argv[1])
try:
    from kbindex.embedding import load_embedder

    load_embedder("all-MiniLM-L6-v2", "cpu", "openvino", "none").model_path()
    int8 = load_embedder("all-MiniLM-L6-v2", "cpu", "openvino", "int8")
    spec = int8.artifacts.spec_of(int8.artifacts.kind)
    made_before = int8.cache.find(spec.name, spec.key) is not None
    int8.model_path()
    answer = {"ok": True, "made_before": made_before}
except BaseException:
    answer = {"ok": False, "error": traceback.format_exc()}
part = done.with_name(done.name + ".part")
part.write_text(json.dumps(answer))
part.replace(done)
"""


class _DefaultModels:
    """The session's default artifacts, made once for all pytest-xdist workers by one child
    process, which the first worker to call start() starts (a file lock in the shared folder
    decides which); wait() blocks until that child has finished, in any worker."""

    TIMEOUT = 1800  # seconds; the export and the calibration take about 45 s on a quiet 2-core machine

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.done = folder / "done.json"
        self.output = folder / "output.txt"
        self.log = folder / "nonet" / "connections.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        from filelock import FileLock

        with FileLock(self.folder / "start.lock"):
            started = self.folder / "started"
            if started.exists():
                return  # another worker started it
            self.log.parent.mkdir(exist_ok=True)
            env, log = network_watch(self.log.parent)
            assert log == self.log
            with self.output.open("w") as output:
                self.proc = subprocess.Popen(
                    [sys.executable, "-c", _MAKE_DEFAULTS, str(self.done)], cwd=ROOT,
                    env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
            started.write_text(str(self.proc.pid))

    def wait(self) -> None:
        deadline = time.monotonic() + self.TIMEOUT
        while not self.done.exists():
            if self.proc is not None and self.proc.poll() is not None and not self.done.exists():
                pytest.fail(f"the default models' child exited {self.proc.returncode} without an "
                            f"answer:\n{self.output.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the default models were not made within {self.TIMEOUT} s:\n"
                            f"{self.output.read_text()[-4000:]}")
            time.sleep(0.2)
        answer = json.loads(self.done.read_text())
        if not answer["ok"]:
            pytest.fail(f"the default models could not be made:\n{answer['error']}")
        if answer["made_before"]:
            pytest.fail("the static int8 model was in the session's cache before the watched "
                        "quantization: something else made it, unwatched")

    def close(self) -> None:
        """Wait for the child (other workers may still need what it makes)."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=self.TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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

