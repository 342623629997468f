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


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "index"


@pytest.fixture
def kb(db, monkeypatch):
    """Run the CLI in-process against a temp store with the fake embedder."""
    from kbindex.cli import cli

    monkeypatch.setenv("KBINDEX_DB", str(db))
    monkeypatch.setenv("KBINDEX_MODEL", "fake:hash")
    for var in ("KBINDEX_COLLECTION", "KBINDEX_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()

    def run(*args, input=None):
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    run.json = lambda *args: json.loads(run(*args, "--json").stdout)
    return run
