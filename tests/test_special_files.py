"""Special files (FIFOs, devices) named on the command line or found in a folder: never read."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kbindex.errors import SkipSource
from kbindex.files import read_file

ROOT = Path(__file__).resolve().parent.parent
GOOD = "# VPN certificates\n\nRenew the client certificate from the software centre, then sign in again.\n"


def _limited():
    # A process that read /dev/zero to the end would take all memory: stop it at 2 GiB instead.
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def run_cli(*args, timeout=120):
    """`python -m tests.fake_kbindex ARGS` in a child process, bounded in time and memory."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "tests.fake_kbindex", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=_limited)


def read_within(path: Path, seconds: float = 10.0, **kwargs):
    """read_file in a thread: the error it raised, or a failure if it is still blocked."""
    outcome = []

    def target():
        try:
            outcome.append(read_file(path, **kwargs))
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"read_file({path}) still blocked after {seconds}s"
    return outcome[0]


def test_a_fifo_is_not_read(tmp_path):
    fifo = tmp_path / "notes.md"
    os.mkfifo(fifo)
    error = read_within(fifo)
    assert isinstance(error, SkipSource) and error.kind == "not_regular"
    assert "not a regular file (a FIFO)" in str(error)


def test_a_folder_given_as_a_file_is_not_read(tmp_path):
    """Made up: a directory reached as a file path (another kind of non-regular file)."""
    error = read_within(tmp_path)
    assert isinstance(error, SkipSource) and "not a regular file (a folder)" in str(error)


def test_a_file_that_claims_no_size_is_read_up_to_the_cap():
    """Made up: /proc files claim a size of 0; the cap applies while reading, not from stat."""
    page = read_within(Path("/proc/self/status"), max_bytes=1 << 20)
    assert b"Name:" in page.body
    error = read_within(Path("/proc/self/status"), max_bytes=16)
    assert isinstance(error, SkipSource) and error.kind == "too_large"


@pytest.mark.parametrize("command", ["index", "extract"])
@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_special_file_named_on_the_command_line_fails_in_one_line(tmp_path, command, special):
    if special == "fifo":
        path = tmp_path / "pipe.md"
        os.mkfifo(path)
    else:
        path = Path(special)
    args = [command, str(path)] + (["--db", str(tmp_path / "db"), "--model", "fake:hash"]
                                   if command == "index" else [])
    out = run_cli(*args)
    assert out.returncode == 1, out.stderr
    assert "not a regular file" in out.stderr
    assert "Traceback" not in out.stderr


def test_special_files_in_a_folder_are_skipped_and_the_run_goes_on(tmp_path):
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "good.md").write_text(GOOD)
    os.mkfifo(folder / "pipe.md")
    (folder / "zero.txt").symlink_to("/dev/zero")
    out = run_cli("index", str(folder), "--db", str(tmp_path / "db"), "--model", "fake:hash", "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["indexed"] == 1 and summary["failed"] == 0
    skips = {s["source"]: s for s in summary["skips"]}
    assert set(skips) == {str(folder / "pipe.md"), str(folder / "zero.txt")}
    assert skips[str(folder / "pipe.md")]["reason"] == "not a regular file (a FIFO)"
    assert skips[str(folder / "zero.txt")]["kind"] == "outside_folder"  # a link out of the folder

    # Followed, the link reaches the device, which is reported, never read.
    out = run_cli("index", str(folder), "--db", str(tmp_path / "db"), "--model", "fake:hash", "--json",
                  "--follow-links")
    assert out.returncode == 0, out.stderr
    skips = {s["source"]: s["reason"] for s in json.loads(out.stdout)["skips"]}
    assert skips[str(folder / "zero.txt")] == "not a regular file (a character device)"
