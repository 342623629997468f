"""The per-machine model cache: made once under concurrency, never used half-made, verified on
load, a fallback when it cannot be written, and `kbindex models` / `kbindex models prune`.

These use small made-up artifacts (a builder that writes a few files); test_openvino checks the
same cache with the real export and calibration."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from kbindex.cli import cli
from kbindex.embedding import modelcache
from kbindex.embedding.modelcache import ArtifactSpec, ModelCache
from kbindex.errors import ModelError
from tests.conftest import ROOT

SPEC = ArtifactSpec("org/tiny-model", "int8-static", {"weights_sha256": "ab" * 32, "nncf": "3.4.0"})


def writer(text: str = "weights", log: list | None = None):
    """A builder that writes model.bin and model.xml, and notes each call in log."""

    def build(folder: Path) -> None:
        if log is not None:
            log.append(folder)
        (folder / "model.bin").write_text(text * 1000)
        (folder / "model.xml").write_text(f"<net>{text}</net>")

    return build


def test_key_and_name_follow_every_input():
    other = ArtifactSpec(SPEC.model, SPEC.kind, {**SPEC.inputs, "nncf": "3.5.0"})
    assert other.key != SPEC.key
    assert ArtifactSpec(SPEC.model, "int8", SPEC.inputs).key != SPEC.key
    assert ArtifactSpec(SPEC.model, SPEC.kind, dict(reversed(list(SPEC.inputs.items())))).key == SPEC.key
    assert SPEC.name == f"tiny-model--int8-static--{SPEC.key[:16]}"
    assert ArtifactSpec("/home/me/my models/x y/", "fp32", {}).name.startswith("x-y--fp32--")


def test_made_once_then_found(tmp_path):
    calls: list = []
    notices: list = []
    cache = ModelCache(tmp_path / "cache", notice=notices.append)
    made = cache.prepare(SPEC, writer(log=calls), announce="making it in {cache}")
    assert made.path == tmp_path / "cache" / SPEC.name
    assert (made.file("model.xml")).read_text() == "<net>weights</net>"
    assert set(made.manifest["files"]) == {"model.bin", "model.xml"}
    assert notices == [f"making it in {tmp_path / 'cache'}"]
    again = ModelCache(tmp_path / "cache", notice=notices.append).prepare(SPEC, writer(log=calls), "again")
    assert again.path == made.path and len(calls) == 1 and len(notices) == 1
    assert not list((tmp_path / "cache").glob(".tmp-*"))


@pytest.mark.parametrize("damage", ["truncate", "edit", "drop-file", "no-manifest", "bad-manifest",
                                    "other-key"])
def test_a_damaged_artifact_is_not_used_but_made_again(tmp_path, damage):
    calls: list = []
    cache = ModelCache(tmp_path)
    folder = cache.prepare(SPEC, writer(log=calls)).path
    manifest = folder / modelcache.MANIFEST
    if damage == "truncate":
        with (folder / "model.bin").open("r+b") as handle:
            handle.truncate(10)
    elif damage == "edit":  # same size, other bytes
        (folder / "model.xml").write_text("<net>weightz</net>")
    elif damage == "drop-file":
        (folder / "model.bin").unlink()
    elif damage == "no-manifest":  # as a preparation killed by an older kbindex could leave it
        manifest.unlink()
    elif damage == "bad-manifest":
        manifest.write_text(manifest.read_text()[:40])
    else:
        data = json.loads(manifest.read_text())
        manifest.write_text(json.dumps({**data, "key": "0" * 64}))
    assert modelcache.verify(folder, SPEC.key) is None
    assert cache.find(SPEC.name, SPEC.key) is None
    made = cache.prepare(SPEC, writer(log=calls))
    assert len(calls) == 2 and made.path == folder
    assert modelcache.verify(folder, SPEC.key) is not None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


# A process that prepares SPEC with a builder that waits, at a rendezvous, until every other
# process says it is waiting for the lock: they really ran at the same time.
_CONCURRENT = """
import sys, time
from pathlib import Path
from kbindex.embedding.modelcache import ArtifactSpec, ModelCache
root, count_file, others = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
waiting = root.parent / "waiting"
waiting.mkdir(exist_ok=True)
spec = ArtifactSpec("org/tiny-model", "int8-static", {"weights_sha256": "ab" * 32, "nncf": "3.4.0"})

def notice(message):
    (waiting / str(__import__("os").getpid())).write_text(message)

def build(folder):
    with count_file.open("a") as handle:
        handle.write("built\\n")
    deadline = time.monotonic() + 60
    while len(list(waiting.iterdir())) < others and time.monotonic() < deadline:
        time.sleep(0.05)
    (folder / "model.bin").write_bytes(b"w" * 100_000)

print(ModelCache(root, notice=notice).prepare(spec, build).path)
"""


def test_processes_preparing_at_once_make_it_once(tmp_path):
    root, count = tmp_path / "cache", tmp_path / "count"
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT, str(root), str(count), "2"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    assert count.read_text() == "built\n"
    assert {out.strip() for out, _ in outs} == {str(root / SPEC.name)}
    waited = [p.read_text() for p in (tmp_path / "waiting").iterdir()]
    assert len(waited) == 2 and all("waiting for another kbindex" in w for w in waited)


_KILLED = """
import os, sys, time
from pathlib import Path
from kbindex.embedding.modelcache import ArtifactSpec, ModelCache
root, ready = Path(sys.argv[1]), Path(sys.argv[2])
spec = ArtifactSpec("org/tiny-model", "int8-static", {"weights_sha256": "ab" * 32, "nncf": "3.4.0"})

def build(folder):
    (folder / "model.xml").write_text("<net>weights</net>")
    with (folder / "model.bin").open("w") as handle:
        handle.write("weights" * 10)  # a tenth of it
        handle.flush()
        ready.write_text("half written")
        time.sleep(600)

ModelCache(root).prepare(spec, build)
"""


def test_a_preparation_killed_midway_leaves_nothing_that_is_used(tmp_path):
    root, ready = tmp_path / "cache", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(root), str(ready)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ready.exists()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (root / SPEC.name).exists()
    assert modelcache.leftovers(root) == list(root.glob(".tmp-*")) and len(modelcache.leftovers(root)) == 1
    cache = ModelCache(root)
    assert cache.find(SPEC.name, SPEC.key) is None
    calls: list = []
    made = cache.prepare(SPEC, writer(log=calls))
    assert len(calls) == 1 and made.file("model.bin").read_text() == "weights" * 1000
    assert not list(root.glob(".tmp-*"))  # the killed one's folder is gone with it


def test_a_cache_that_cannot_be_written_falls_back_with_one_notice(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    notices: list = []
    cache = ModelCache(blocker / "models", fallback=tmp_path / "index" / "models", notice=notices.append)
    made = cache.prepare(SPEC, writer())
    assert made.path == tmp_path / "index" / "models" / SPEC.name
    assert cache.prepare(ArtifactSpec("org/tiny-model", "fp32", {}), writer()).path.parent == made.path.parent
    assert len(notices) == 1
    assert notices[0].startswith(f"the model cache {blocker / 'models'} cannot be written (")
    assert notices[0].endswith(f"; using {tmp_path / 'index' / 'models'}")
    # Found there next time, without a notice (nothing is made).
    again: list = []
    calls: list = []
    assert ModelCache(blocker / "models", tmp_path / "index" / "models", again.append).prepare(
        SPEC, writer(log=calls)).path == made.path
    assert again == [] and calls == []
    with pytest.raises(ModelError, match="cannot write the model cache .*KBINDEX_CACHE_DIR"):
        ModelCache(blocker / "models").prepare(ArtifactSpec("org/other", "fp32", {}), writer())


def test_a_read_only_cache_is_read_and_falls_back_only_to_make_a_model(tmp_path, monkeypatch):
    """As root can write into any folder, "read-only" is what the write check reports here."""
    root = tmp_path / "cache"
    made = ModelCache(root).prepare(SPEC, writer())
    checked = modelcache._writable
    monkeypatch.setattr(modelcache, "_writable",
                        lambda folder: "Read-only file system" if folder == root else checked(folder))
    notices: list = []
    cache = ModelCache(root, tmp_path / "db" / "models", notices.append)
    assert cache.prepare(SPEC, writer()).path == made.path and notices == []
    other = cache.prepare(ArtifactSpec("org/other", "fp32", {}), writer())
    assert other.path.parent == tmp_path / "db" / "models"
    assert notices == [f"the model cache {root} cannot be written (Read-only file system); "
                       f"using {tmp_path / 'db' / 'models'}"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_read_only_folder_is_read_and_falls_back_only_to_make(tmp_path):
    root = tmp_path / "cache"
    made = ModelCache(root).prepare(SPEC, writer())
    root.chmod(0o555)
    try:
        notices: list = []
        cache = ModelCache(root, tmp_path / "db" / "models", notices.append)
        assert cache.prepare(SPEC, writer()).path == made.path and notices == []
        other = cache.prepare(ArtifactSpec("org/other", "fp32", {}), writer())
        assert other.path.parent == tmp_path / "db" / "models" and len(notices) == 1
    finally:
        root.chmod(0o755)


# --- `kbindex models` and `kbindex models prune` ---------------------------------------------


@pytest.fixture
def models(tmp_path, monkeypatch):
    """Three artifacts in a cache of their own; one used by an index folder's collection."""
    root = tmp_path / "cache"
    monkeypatch.setenv("KBINDEX_CACHE_DIR", str(root))
    cache = ModelCache(root)
    used = cache.prepare(SPEC, writer("used"))
    spare = cache.prepare(ArtifactSpec("org/tiny-model", "fp32", {"weights_sha256": "ab" * 32}), writer("fp"))
    other = cache.prepare(ArtifactSpec("org/other-model", "int8", {}), writer("other"))
    db = tmp_path / "index"
    db.mkdir()
    modelcache.record_use(db, "kbindex", "org/tiny-model#int8-static", used)
    old = time.time() - 3600  # loaded an hour ago: not protected as possibly in use
    for artifact in (used, spare, other):
        modelcache.touch(artifact)
        os.utime(artifact.path / modelcache.LAST_USED, (old, old))
    runner = CliRunner()

    def run(*args, input=None):
        return runner.invoke(cli, ["models", *args], input=input, catch_exceptions=False)

    run.root, run.db, run.used, run.spare, run.other = root, db, used, spare, other
    return run


def test_models_lists_model_kind_size_last_used_and_users(models):
    out = models()
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == f"{models.root}:"
    assert lines[1].split() == ["model", "kind", "size", "last", "used", "used", "by", "name"]
    rows = {line.split()[-1]: line.split() for line in lines[2:]}
    assert rows[models.used.name][:2] == ["org/tiny-model", "int8-static"]
    assert rows[models.used.name][-2] == "1" and rows[models.spare.name][-2] == "0"
    listed = [json.loads(line) for line in models("--json").stdout.splitlines()]
    by_name = {item["name"]: item for item in listed}
    assert by_name[models.used.name]["used_by"] == [str(models.db.resolve())]
    assert by_name[models.other.name]["kind"] == "int8" and by_name[models.other.name]["valid"] is True
    assert by_name[models.spare.name]["size"] >= 2000 and by_name[models.spare.name]["last_used"]


def test_prune_asks_first_and_keeps_what_a_collection_uses(models):
    refused = models("prune", input="n\n")
    assert refused.exit_code == 1 and "Remove these" in refused.stdout
    assert models.spare.path.exists() and models.other.path.exists()
    out = models("prune", "--yes")
    assert out.exit_code == 0, out.output
    assert "removed 2 prepared models" in out.stdout
    assert models.used.path.exists()
    assert not models.spare.path.exists() and not models.other.path.exists()
    assert models("prune", "--yes").stdout.startswith("nothing to prune")


def test_prune_removes_what_only_gone_or_changed_index_folders_used(models, tmp_path):
    # The collection was deleted: its record goes, and so may its model.
    modelcache.forget_collection(models.db, "kbindex")
    assert models.used.name in models("prune", "--yes").stdout
    assert not models.used.path.exists()
    # An index folder that no longer exists keeps nothing.
    again = ModelCache(models.root).prepare(SPEC, writer("used"))
    gone = tmp_path / "gone-index"
    gone.mkdir()
    modelcache.record_use(gone, "kbindex", "org/tiny-model#int8-static", again)
    modelcache.touch(again)
    os.utime(again.path / modelcache.LAST_USED, (0, 0))
    assert models("--json").stdout.count(str(gone.resolve())) == 1
    shutil.rmtree(gone)
    assert models("prune", "--yes").exit_code == 0 and not again.path.exists()


def test_prune_keeps_a_model_loaded_minutes_ago_and_one_being_made(models):
    modelcache.touch(models.spare)  # a run may be using it without having recorded it yet
    with modelcache._Flock(models.root / ".locks" / f"{models.other.name}.lock"):
        out = models("prune", "--yes")
    assert out.exit_code == 0
    assert models.spare.path.exists() and models.other.path.exists()


def test_prune_clears_a_killed_preparation(models):
    stale = models.root / f".tmp-{SPEC.name}-12345-abcd"
    stale.mkdir()
    (stale / "model.bin").write_text("half")
    out = models("prune", "--yes")
    assert "1 unfinished preparation folder" in out.stdout
    assert not stale.exists()


def test_models_on_an_empty_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("KBINDEX_CACHE_DIR", str(tmp_path / "none"))
    out = CliRunner().invoke(cli, ["models"], catch_exceptions=False)
    assert out.exit_code == 0 and out.stdout == f"no prepared models in {tmp_path / 'none'}\n"
    assert CliRunner().invoke(cli, ["models", "prune"]).stdout.startswith("nothing to prune")


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("KBINDEX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert modelcache.cache_root() == tmp_path / "xdg" / "kbindex" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert modelcache.cache_root() == tmp_path / "home" / ".cache" / "kbindex" / "models"
    monkeypatch.setenv("KBINDEX_CACHE_DIR", str(tmp_path / "mine"))
    assert modelcache.cache_root() == tmp_path / "mine"


def test_package_version_reads_the_installed_metadata():
    from importlib.metadata import version

    from kbindex.embedding.spec import package_version

    assert package_version("click") == version("click")
    assert package_version("onnxruntime", "onnxruntime", "onnxruntime-gpu") == version("onnxruntime")
    assert package_version("no_such_module_here") == ""


def test_deleting_a_collection_lets_its_model_be_pruned(kb, db, tmp_path):
    from tests.conftest import SAMPLE_KB

    assert kb("index", str(SAMPLE_KB / "printer-offline-windows.html")).exit_code == 0
    assert kb("index", str(SAMPLE_KB / "printer-offline-windows.html"), "--collection", "other").exit_code == 0
    made = ModelCache(tmp_path / "cache").prepare(SPEC, writer())
    for name in ("kbindex", "other"):
        modelcache.record_use(db, name, "org/tiny-model#int8-static", made)
    assert kb("collections", "delete", "kbindex", "--yes").exit_code == 0
    record = json.loads((db / modelcache.INDEX_RECORD).read_text())["collections"]
    assert list(record) == ["other"]
