"""A real `kbindex serve` process on 127.0.0.1 (port 0: the OS picks), with the fake embedder."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_READY = re.compile(r"serving (http://\S+?)/ ")


def env() -> dict[str, str]:
    out = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    for var in ("KBINDEX_COLLECTION", "KBINDEX_CHROMA_URL", "KBINDEX_TOKEN", "KBINDEX_HOST", "KBINDEX_PORT"):
        out.pop(var, None)
    return out


def kbindex(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """The CLI in a process of its own, with the fake embedder."""
    return subprocess.run([sys.executable, "-m", "tests.fake_kbindex", *args], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=120, **kwargs)


class Served:
    """`kbindex serve ARGS` running; .url is its base URL, .log what it wrote to stderr."""

    def __init__(self, db: Path, *args: str):
        self.command = [sys.executable, "-m", "tests.fake_kbindex", "serve", "--port", "0", "--db", str(db),
                        "--model", "fake:hash", *args]
        self.lines: list[str] = []
        self.url: str | None = None
        self.returncode: int | None = None

    def __enter__(self) -> Served:
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=env(), stderr=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, text=True)
        ready = threading.Event()

        def read():
            for line in self.process.stderr:
                self.lines.append(line)
                found = _READY.search(line)
                if found and self.url is None:
                    self.url = found.group(1)
                    ready.set()
            ready.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not ready.wait(120) or self.url is None:
            self.stop()
            raise AssertionError(f"kbindex serve did not start:\n{self.log}")
        return self

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.returncode = self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.returncode = self.process.wait()
        self.reader.join(5)
        return self.returncode

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for(check, timeout: float, step: float = 0.1):
    """check()'s first truthy value within timeout seconds (None when there was none)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)
