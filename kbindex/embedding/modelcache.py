"""The per-machine cache of prepared model artifacts: ONNX exports, int8 models, OpenVINO kernels.

Preparing a model for a CPU runtime (the ONNX export, the NNCF static-int8 calibration) takes about
30 s on 2 cores. It is done once per machine, not once per index folder: artifacts live in
`$KBINDEX_CACHE_DIR`, else `$XDG_CACHE_HOME/kbindex/models`, else `~/.cache/kbindex/models`.

Layout of the cache folder:

    <name>/                 one artifact: its files, manifest.json (written last), kernels/
                            (OpenVINO's compiled-kernel cache, not part of the manifest)
    .locks/<name>.lock      flock(2) of the process preparing <name>
    .tmp-<name>-<pid>-*/    an artifact being prepared (renamed to <name> when complete)
    index-folders.json      the index folders that recorded an artifact (see `kbindex models prune`)
    weights-hashes.json     sha256 of model files, remembered by (path, size, mtime)

<name> is `<model>--<kind>--<first 16 hex digits of the key>`; the key is the sha256 of every input
that changes the artifact's output (ArtifactSpec.inputs). Each index folder records, per
collection, the artifact it was built with (`<db>/models.json`); that file and the list of index
folders are how `kbindex models prune` knows what the collections on this machine use.

Safety: an artifact is prepared in a temporary folder under an exclusive flock (the kernel drops it
when its holder dies, SIGKILL included) and published by one rename(2), so two processes preparing
it at once make it once, and a killed one leaves only a temporary folder that the next preparer
removes. On every load the files are checked against the manifest's sizes and sha256 digests; an
artifact that fails is moved aside and prepared again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kbindex.config import ENV_CACHE_DIR
from kbindex.embedding.base import artifact_identity
from kbindex.errors import ModelError

MANIFEST = "manifest.json"
KERNELS = "kernels"  # OpenVINO's CACHE_DIR for this artifact
LAST_USED = ".last-used"  # its mtime is when the artifact was last loaded
MANIFEST_FORMAT = 1
INDEX_RECORD = "models.json"  # in an index folder: the artifact each collection was built with
_INDEX_FOLDERS = "index-folders.json"


def cache_root() -> Path:
    """The machine's artifact cache folder (not created here)."""
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "kbindex" / "models"


@dataclass(frozen=True)
class ArtifactSpec:
    """What an artifact is made from: the model identity, its kind, and every input that changes
    its output (model file digests, recipe versions, quantizer and runtime versions)."""

    model: str
    kind: str
    inputs: dict = field(hash=False, compare=False)

    @property
    def key(self) -> str:
        """sha256 (hex) of the kind and inputs: equal keys, interchangeable artifacts."""
        text = json.dumps({"kind": self.kind, "inputs": self.inputs}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def name(self) -> str:
        """Folder name in the cache: readable, and unique through the key."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.model.rstrip("/").rsplit("/", 1)[-1]).strip("-.")
        return f"{slug or 'model'}--{self.kind}--{self.key[:16]}"


@dataclass(frozen=True)
class Artifact:
    """A complete, verified artifact folder."""

    path: Path
    manifest: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def key(self) -> str:
        return self.manifest["key"]

    def file(self, name: str) -> Path:
        return self.path / name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify(folder: Path, key: str | None = None) -> Artifact | None:
    """The artifact in folder when its manifest is readable (and names key, when given) and every
    file it lists has the recorded size and sha256; None otherwise (missing, half-made, damaged).

    Every file is hashed (about 30 ms for the 23 MB static int8 model): cheap next to compiling
    the model, and it also catches a file changed after the artifact was made.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != MANIFEST_FORMAT or (key is not None and manifest.get("key") != key):
            return None
        for name, facts in manifest["files"].items():
            path = folder / name
            if path.stat().st_size != facts["size"] or _sha256(path) != facts["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return Artifact(folder, manifest)


def _writable(root: Path) -> str | None:
    """None when artifacts can be made in root, else why not (one line)."""
    try:
        (root / ".locks").mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".probe-")
        probe.close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


class ModelCache:
    """Artifacts looked up in the machine cache, then in a fallback folder (the CLI's <--db>/models);
    made in the first of the two that can be written.

    Args:
        root: the cache folder (default: cache_root()).
        fallback: where to look and make artifacts when root cannot be written; None: nowhere.
        notice: told one-line messages for the user (the CLI prints them on stderr).
    """

    def __init__(self, root: Path | None = None, fallback: Path | None = None,
                 notice: Callable[[str], None] | None = None):
        self.root = Path(root) if root is not None else cache_root()
        self.fallback = Path(fallback) if fallback is not None else None
        self.notice = notice
        self._write_root: Path | None = None

    def roots(self) -> list[Path]:
        return [self.root] + ([self.fallback] if self.fallback is not None else [])

    def find(self, name: str, key: str | None = None) -> Artifact | None:
        """The verified artifact called name (with this key, when given), in root or the fallback."""
        for root in self.roots():
            if (root / name).is_dir():
                found = verify(root / name, key)
                if found is not None:
                    return found
        return None

    def writable_root(self) -> Path:
        """root when it can be written; else the fallback, after a one-line notice."""
        if self._write_root is None:
            why = _writable(self.root)
            if why is None:
                self._write_root = self.root
            elif self.fallback is None or _writable(self.fallback) is not None:
                raise ModelError(f"cannot write the model cache {self.root} ({why}): set "
                                 f"{ENV_CACHE_DIR} to a folder that can be written")
            else:
                self._say(f"the model cache {self.root} cannot be written ({why}); using {self.fallback}")
                self._write_root = self.fallback
        return self._write_root

    def prepare(self, spec: ArtifactSpec, build: Callable[[Path], None],
                announce: str | None = None) -> Artifact:
        """The artifact for spec: found, or made once by build(folder), which writes its files there.

        Concurrent callers (threads or processes) wait for the one that makes it. announce is said
        (through notice) just before the build starts, and only if it does; "{cache}" in it becomes
        the folder it is made in.

        Raises:
            ModelError: the cache cannot be written, or build failed (its message is kept).
        """
        found = self.find(spec.name, spec.key)
        if found is not None:
            return found
        root = self.writable_root()
        with _Flock(root / ".locks" / f"{spec.name}.lock", on_wait=lambda: self._say(
                f"waiting for another kbindex that is preparing {spec.model} ({spec.kind})")):
            found = self.find(spec.name, spec.key)  # made by the process we waited for
            if found is not None:
                return found
            final = root / spec.name
            for stale in root.glob(f".tmp-{spec.name}-*"):
                shutil.rmtree(stale, ignore_errors=True)  # left by a killed preparer: we hold its lock
            if final.exists():  # damaged or half-made by an older kbindex: aside, then away
                aside = root / f".tmp-{spec.name}-damaged-{os.getpid()}"
                os.rename(final, aside)
                shutil.rmtree(aside, ignore_errors=True)
            work = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{spec.name}-{os.getpid()}-"))
            try:
                if announce:
                    self._say(announce.replace("{cache}", str(root)))
                build(work)
                files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
                         for p in sorted(work.iterdir()) if p.is_file()}
                manifest = {"format": MANIFEST_FORMAT, "model": spec.model, "kind": spec.kind,
                            "key": spec.key, "inputs": spec.inputs, "files": files,
                            "created": _now()}
                write_atomic(work / MANIFEST, json.dumps(manifest, indent=1).encode())
                os.chmod(work, 0o777 & ~_umask())  # mkdtemp makes it private; the cache is shared
                os.rename(work, final)  # atomic: the artifact appears whole or not at all
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
        made = verify(final, spec.key)
        if made is None:
            raise ModelError(f"the model artifact {final} does not verify right after it was made")
        return made

    def _say(self, message: str) -> None:
        if self.notice is not None:
            self.notice(message)


def touch(artifact: Artifact) -> None:
    """Mark the artifact used now (for `kbindex models`); nothing in a read-only cache."""
    stamp = artifact.path / LAST_USED
    try:
        stamp.touch()
        os.utime(stamp)
    except OSError:
        pass


class _Flock:
    """An exclusive flock(2) on a lock file, waited for (on_wait is called once if it must wait)."""

    def __init__(self, path: Path, on_wait: Callable[[], None] | None = None):
        self.path = path
        self.on_wait = on_wait
        self.fd: int | None = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if self.on_wait is not None:
                self.on_wait()
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing drops the flock


def _held(path: Path) -> bool:
    """True when another process holds the flock on path."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file whole or not at all (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the cache is as shared as --db
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- which index folders use which artifacts ------------------------------------------------------


def scope_key(collection: str, chroma_url: str | None = None) -> str:
    """How an index folder's record names a collection: its name, with the server URL if any."""
    return f"{chroma_url.rstrip('/')}#{collection}" if chroma_url else collection


def recorded_artifact(db: Path, scope: str) -> dict | None:
    """{"model", "identity", "artifact", "key", "inputs", "used"} that <db>/models.json records for
    scope, if any ("identity" is missing in records older than it)."""
    entry = _read_json(Path(db) / INDEX_RECORD).get("collections", {}).get(scope)
    return entry if isinstance(entry, dict) and entry.get("key") else None


def recorded_identity(db: Path, scope: str, model: str) -> str:
    """The vector identity (the embedding cache's key, embedding/base.py) of the vectors that the
    collection scope holds, made by the model identity `model`: from the artifact its index folder
    records, else model itself (fp32, PyTorch, or nothing recorded: an int8 collection then finds
    no cached vector, and repair embeds again rather than trusting vectors of unknown origin)."""
    entry = recorded_artifact(db, scope)
    if entry is None or entry.get("model") != model:
        return model
    return artifact_identity(model, entry["key"])


def record_use(db: Path, scope: str, model: str, artifact: Artifact, root: Path | None = None) -> None:
    """Record in <db>/models.json that the collection scope holds vectors made with artifact, and
    add db to the cache's list of index folders (best effort: a read-only cache is not an error)."""
    db = Path(db)
    db.mkdir(parents=True, exist_ok=True)
    with _Flock(db / ".models.lock"):  # two runs into other collections of one folder at once
        _record(db, scope, model, artifact)
    home = artifact.path.parent if root is None else Path(root)
    try:
        with _Flock(home / ".locks" / "index-folders.lock"):
            known = _read_json(home / _INDEX_FOLDERS)
            folders = known.setdefault("folders", {})
            folders[str(db.resolve())] = _now()
            write_atomic(home / _INDEX_FOLDERS, json.dumps(known, indent=1, sort_keys=True).encode())
    except OSError:
        pass


def _record(db: Path, scope: str, model: str, artifact: Artifact) -> None:
    record = _read_json(db / INDEX_RECORD)
    collections = record.setdefault("collections", {})
    collections[scope] = {"model": model, "identity": artifact_identity(model, artifact.key),
                          "artifact": artifact.name, "key": artifact.key,
                          "inputs": artifact.manifest.get("inputs"), "used": _now()}
    record["format"] = 1
    write_atomic(db / INDEX_RECORD, json.dumps(record, indent=1, sort_keys=True).encode())


def forget_collection(db: Path, scope: str) -> None:
    """Drop scope from <db>/models.json (its collection was deleted)."""
    path = Path(db) / INDEX_RECORD
    if not path.exists():
        return
    with _Flock(Path(db) / ".models.lock"):
        record = _read_json(path)
        if scope in record.get("collections", {}):
            del record["collections"][scope]
            write_atomic(path, json.dumps(record, indent=1, sort_keys=True).encode())


@dataclass(frozen=True)
class CachedArtifact:
    """One artifact folder of the cache, as `kbindex models` lists it."""

    name: str
    path: Path
    model: str
    kind: str
    size: int  # bytes, the kernel cache included
    last_used: float | None  # POSIX time
    valid: bool
    users: tuple[str, ...]  # index folders whose collections use it

    def as_dict(self) -> dict:
        used = (datetime.fromtimestamp(self.last_used, UTC).isoformat(timespec="seconds")
                if self.last_used else None)
        return {"name": self.name, "model": self.model, "kind": self.kind, "size": self.size,
                "last_used": used, "valid": self.valid, "path": str(self.path), "used_by": list(self.users)}


def _users(root: Path) -> dict[str, list[str]]:
    """Artifact name -> index folders (that still exist) whose models.json names it."""
    users: dict[str, list[str]] = {}
    for folder in _read_json(root / _INDEX_FOLDERS).get("folders", {}):
        record = _read_json(Path(folder) / INDEX_RECORD)
        for entry in record.get("collections", {}).values():
            if isinstance(entry, dict) and entry.get("artifact"):
                users.setdefault(entry["artifact"], [])
                if folder not in users[entry["artifact"]]:
                    users[entry["artifact"]].append(folder)
    return users


def _size(path: Path) -> int:
    total = 0
    for item in path.rglob("*"):
        try:
            if item.is_file():
                total += item.stat().st_size
        except OSError:
            pass
    return total


def list_artifacts(root: Path | None = None) -> list[CachedArtifact]:
    """Every artifact folder in the cache (damaged ones too, valid=False), by name."""
    root = Path(root) if root is not None else cache_root()
    if not root.is_dir():
        return []
    users = _users(root)
    found = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        artifact = verify(path)
        manifest = artifact.manifest if artifact else _read_json(path / MANIFEST)
        stamp = path / LAST_USED
        last = stamp.stat().st_mtime if stamp.exists() else (path.stat().st_mtime if artifact else None)
        found.append(CachedArtifact(
            name=path.name, path=path, model=str(manifest.get("model", "?")),
            kind=str(manifest.get("kind", "?")), size=_size(path), last_used=last,
            valid=artifact is not None, users=tuple(users.get(path.name, ())),
        ))
    return found


def unused(root: Path | None = None) -> Iterator[CachedArtifact]:
    """Artifacts no collection on this machine uses (damaged ones included), and nobody is making."""
    root = Path(root) if root is not None else cache_root()
    for item in list_artifacts(root):
        if not item.users and not _held(root / ".locks" / f"{item.name}.lock"):
            yield item


def remove(item: CachedArtifact) -> None:
    """Delete an artifact folder: renamed aside first, so no reader sees it half-deleted."""
    aside = item.path.with_name(f".tmp-{item.name}-pruned-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(item.path, aside)
    shutil.rmtree(aside, ignore_errors=True)


def leftovers(root: Path | None = None) -> list[Path]:
    """Temporary folders of preparations that were killed (their lock is free)."""
    root = Path(root) if root is not None else cache_root()
    if not root.is_dir():
        return []
    found = []
    for path in root.glob(".tmp-*"):
        name = re.sub(r"-(\d+)-[^-]*$", "", path.name[len(".tmp-"):])
        if not _held(root / ".locks" / f"{name}.lock"):
            found.append(path)
    return found
