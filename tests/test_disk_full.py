"""A full disk, or one that refuses writes, on every write path: one line, exit 1, nothing lost.

The disk is real: a small tmpfs mounted for the test and filled with one big file (mounting needs
root; without it those tests are skipped, and the last tests here inject the OSError instead).
After each fault the disk is given back and the command run again: the crash-safe write order
must heal the index with nothing lost (the ledger agrees with the store, every source is there).
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.sync_helpers import assert_consistent, run, snapshot

ARTICLES = 60
WORDS = ("printer spooler offline disk full write ahead log grew reset authenticator phone roaming "
         "profile electron update error battery standby managed identity container outlook").split()


class SmallDisk:
    """A tmpfs of `size` bytes at path, filled on demand to leave a given number of bytes free."""

    def __init__(self, path: Path, size: str = "24M"):
        self.path = path
        path.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs to fill (needs root): {proc.stderr.strip()}")
        self.filler = path / "filler"

    def fill(self, leave: int) -> None:
        """Take all the free space but `leave` bytes."""
        stat = os.statvfs(self.path)
        take = stat.f_bavail * stat.f_frsize - leave
        if take > 0:
            with self.filler.open("ab") as handle:
                os.posix_fallocate(handle.fileno(), 0, (self.filler.stat().st_size if self.filler.exists()
                                                        else 0) + take)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def read_only(self, on: bool) -> None:
        subprocess.run(["mount", "-o", f"remount,{'ro' if on else 'rw'}", str(self.path)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """ARTICLES made-up Markdown articles of four sections each (about 2 MB of index)."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = random.Random(14)
    for i in range(ARTICLES):
        sections = []
        for k in range(4):
            sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))) + "."
                         for _ in range(6)]
            sections.append(f"## Section {k}\n\n" + "\n".join(sentences))
        (folder / f"article-{i:03d}.md").write_text(f"# Article {i}\n\n" + "\n\n".join(sections) + "\n")
    return folder


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory) -> tuple[Path, Path]:
    """(an index of the corpus, an export of it with vectors), made once, on the ordinary disk."""
    tmp = tmp_path_factory.mktemp("built")
    db = tmp / "db"
    code, _, err = run("index", str(corpus), "--db", str(db), "-q", "--workers", "1", tmp=tmp)
    assert code == 0, err
    export = tmp / "export.jsonl"
    code, _, err = run("export", "--with-vectors", "-o", str(export), "--db", str(db), tmp=tmp)
    assert code == 0, err
    return db, export


@pytest.fixture
def disk(tmp_path):
    small = SmallDisk(tmp_path / "disk")
    yield small
    small.unmount()


def _chunk_ids(db: Path) -> set[str]:
    return {i for ids in assert_consistent(db)["ledger"].values() for i in ids}


def _files(corpus: Path) -> set[str]:
    return {str(p) for p in corpus.iterdir()}


def assert_one_line(code: int, err: str, text: str) -> None:
    assert code == 1, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kbindex: error: ") and text in lines[0], err


@pytest.mark.parametrize("leave", [0, 128 * 1024, 1024 * 1024], ids=["full", "128K", "1M"])
def test_index_on_a_disk_that_fills_heals_on_the_next_run(disk, corpus, tmp_path, leave):
    """0: full before the run starts; 128K and 1M: it fills during the run, at different writes."""
    db = disk.path / "db"
    disk.fill(leave)
    code, _, err = run("index", str(corpus), "--db", str(db), "-q", "--workers", "1", tmp=tmp_path)
    assert_one_line(code, err, "the disk is full: cannot ")
    assert "free some space and run the command again" in err
    disk.free()
    code, _, err = run("index", str(corpus), "--db", str(db), "-q", "--workers", "1", tmp=tmp_path)
    assert code == 0, err
    assert_consistent(db, _files(corpus))
    code, out, err = run("verify", "--db", str(db), tmp=tmp_path)
    assert code == 0 and "consistent" in out, out + err


@pytest.mark.parametrize("leave", [0, 64 * 1024], ids=["full", "64K"])
@pytest.mark.parametrize("command", ["delete", "verify --repair", "import", "index"])
def test_every_write_command_on_a_full_disk_then_again(disk, built, corpus, tmp_path, command, leave):
    """Each write command fails with the one message and changes nothing; with space again, the
    same command does its work and the index is whole."""
    template, export = built
    db = disk.path / "db"
    shutil.copytree(template, db)
    gone = corpus / "article-007.md"
    args = {
        "delete": ["delete", str(gone)],
        "verify --repair": ["verify", "--repair"],
        "import": ["import", str(export), "--collection", "imported"],
        "index": ["index", str(corpus), "--rebuild", "-q", "--workers", "1"],
    }[command] + ["--db", str(db)]
    if command == "verify --repair":
        # Work for the repair to write (a consistent index needs no write but the lock file's):
        # the ledger, lost, is made again by adopting the store's chunks and their vectors.
        (db / "kbindex.sqlite").unlink()
    disk.fill(leave)
    code, _, err = run(*args, tmp=tmp_path)
    assert_one_line(code, err, "the disk is full: cannot ")
    disk.free()
    if command == "verify --repair":  # the store lost nothing; the ledger is made on the next run
        assert {i for ids in snapshot(db)["store"].values() for i in ids} == _chunk_ids(template)
    else:
        assert_consistent(db, _files(corpus))  # nothing lost, nothing half done
    code, _, err = run(*args, tmp=tmp_path)
    assert code == 0, err
    expected = _files(corpus) - ({str(gone)} if command == "delete" else set())
    assert_consistent(db, expected)
    if command == "import":
        assert_consistent(db, collection="imported")
        code, out, err = run("stats", "--collection", "imported", "--json", "--db", str(db), tmp=tmp_path)
        assert code == 0 and json.loads(out)["chunks"] == len(_chunk_ids(template)), out + err


def test_a_read_only_disk_says_it_cannot_write(disk, built, corpus, tmp_path):
    """Another OSError than ENOSPC (EROFS): "cannot write PATH: Read-only file system"."""
    template, _ = built
    db = disk.path / "db"
    shutil.copytree(template, db)
    disk.read_only(True)
    try:
        for args in (["delete", str(corpus / "article-001.md")], ["verify", "--repair"],
                     ["index", str(corpus), "-q", "--workers", "1"]):
            code, _, err = run(*args, "--db", str(db), tmp=tmp_path)
            # the lock file's EROFS, or SQLite's own words for it
            assert_one_line(code, err, "")
            assert ("cannot write " in err and "Read-only file system" in err
                    or "readonly database" in err), err
            assert "disk is full" not in err, err
    finally:
        disk.read_only(False)
    assert_consistent(db, _files(corpus))


# --- without root: the OSError injected at the os and sqlite level ---------------------------


def test_the_lock_file_on_a_full_disk_injected(kb, monkeypatch, tmp_path):
    """os.pwrite of the lock file raises ENOSPC (what a full disk gives, test above)."""
    from kbindex.store import lock

    page = tmp_path / "kb" / "a.md"
    page.parent.mkdir()
    page.write_text("# A\n\nThe printer is offline.\n")
    assert kb("index", str(page)).exit_code == 0

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(lock.os, "pwrite", full)
        for args in (["delete", str(page)], ["verify", "--repair"], ["index", str(page)]):
            out = kb(*args)
            assert out.exit_code == 1, out.output
            assert out.stderr.startswith("kbindex: error: the disk is full: cannot write ")
            assert "kbindex.lock" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert kb.json("sources")[0]["source"] == str(page)  # nothing was deleted
    assert kb("delete", str(page)).exit_code == 0
    assert kb.json("sources") == []


def test_an_oserror_no_write_path_caught_is_one_line(kb, monkeypatch, tmp_path):
    """The CLI's last line of defence: an OSError or sqlite3.Error escaping from a write path."""
    import sqlite3

    from kbindex.indexing import runner as index

    page = tmp_path / "a.md"
    page.write_text("# A\n\nThe printer is offline.\n")
    for error in (OSError(errno.EIO, "Input/output error", str(tmp_path / "x")),
                  sqlite3.OperationalError("database or disk is full")):
        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(index.Indexer, "run", fail)
        out = kb("index", str(page))
        assert out.exit_code == 1 and "Traceback" not in out.output
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        if isinstance(error, sqlite3.Error):
            assert "the disk is full" in out.stderr
        else:
            assert out.stderr == f"kbindex: error: {tmp_path / 'x'}: Input/output error\n"


def test_the_model_cache_on_a_full_disk_injected(kb, monkeypatch, tmp_path):
    """The once-per-model export writes hundreds of MB into the model cache: ENOSPC there is the
    same one line (the export is replaced by one that meets a full disk, to keep this quick)."""
    from kbindex.embedding import export

    def full(spec, target, fuse=True):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(export, "export_onnx", full)
    # An empty cache of its own: the session's, shared by every test (and every xdist worker), may
    # already hold this export, made by test_onnx, and then nothing would be exported here.
    monkeypatch.setenv("KBINDEX_CACHE_DIR", str(tmp_path / "model-cache"))
    page = tmp_path / "a.md"
    page.write_text("# A\n\nThe printer is offline.\n")
    out = kb("index", str(page), "--model", "all-MiniLM-L6-v2", "--backend", "onnx", "--quantize", "none",
             "--device", "cpu")
    assert out.exit_code == 1 and "Traceback" not in out.output
    exporting, error = out.stderr.strip().splitlines()  # the notice said before the export, then
    assert exporting.startswith("kbindex: exporting ")
    assert error.startswith("kbindex: error: the disk is full: cannot write the model cache in "), error
