from __future__ import annotations

import json
import os
from pathlib import Path

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
    from kbindex.embed import load_embedder

    embedder = load_embedder("all-MiniLM-L6-v2", "cpu", backend="torch")
    _ = embedder.dimension  # load now
    return embedder
