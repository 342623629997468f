"""The embedding cache is keyed by the vector identity (model + int8 artifact key), not the name.

Issue 21: two static int8 models of one model name made with another calibration version or
another quantizer give other vectors for one text; a vector cached by one is never used by the
other. Old ledgers (vectors under the bare name) are a cache miss, not an error.
"""

from __future__ import annotations

import pytest

from kbindex.chunk import ChunkConfig
from kbindex.config import Settings
from kbindex.embedding import artifact_identity, load_embedder, model_of
from kbindex.embedding import openvino as ov_runtime
from kbindex.embedding import spec as model_spec
from kbindex.embedding.base import vector_identity
from kbindex.embedding.modelcache import ArtifactSpec, ModelCache, record_use, recorded_identity
from kbindex.indexing.runner import Indexer
from kbindex.indexing.sources import parse_sources
from tests.fakes import HashEmbedder


class ArtifactEmbedder(HashEmbedder):
    """The fake embedder as if run from a prepared int8 artifact with the given key."""

    def __init__(self, key: str | None, name: str = "fake:hash#int8-static"):
        super().__init__(name)
        self.key = key

    @property
    def identity(self) -> str:
        return artifact_identity(self.name, self.key)


KEY_A = "a" * 64
KEY_B = "b" * 64


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "kb"
    root.mkdir()
    for i in range(4):
        (root / f"doc{i}.md").write_text(f"# Doc {i}\n\nThe printer number {i} is offline again.\n")
    return root


def _index(db, folder, collection: str, embedder) -> int:
    """Index folder into a new collection of db; the number of texts embedded."""
    settings = Settings(db=db, collection=collection, model=embedder.name, device="cpu")
    with Indexer(settings, embedder, ChunkConfig(64, 8), workers=1) as indexer:
        indexer.open()
        summary = indexer.run(parse_sources([str(folder)]))
    assert summary.chunks_added == 4
    return sum(len(call) for call in embedder.calls)


def test_a_vector_cached_by_one_artifact_is_not_used_by_another(tmp_path, folder):
    db = tmp_path / "db"
    assert _index(db, folder, "first", ArtifactEmbedder(KEY_A)) == 4
    # The same artifact: every vector from the cache (it survived the first run's garbage collection).
    assert _index(db, folder, "same", ArtifactEmbedder(KEY_A)) == 0
    # Another calibration or quantizer, same model name: nothing from the cache.
    assert _index(db, folder, "other", ArtifactEmbedder(KEY_B)) == 4
    assert _index(db, folder, "other-again", ArtifactEmbedder(KEY_B)) == 0


def test_vectors_cached_under_the_bare_name_are_a_miss_for_an_artifact(tmp_path, folder):
    """A ledger written before identities keyed int8 vectors by the name alone: they may come from
    any artifact, so they are embedded again (not an error), and fp32 ones stay shared."""
    db = tmp_path / "db"
    old = ArtifactEmbedder(None)  # identity == name, as every embedder had before
    assert old.identity == "fake:hash#int8-static"
    assert _index(db, folder, "old", old) == 4
    assert _index(db, folder, "new", ArtifactEmbedder(KEY_A)) == 4
    assert _index(db, folder, "fp32", HashEmbedder("fake:hash")) == 4
    assert _index(db, folder, "fp32-again", HashEmbedder("fake:hash")) == 0


def test_identity_format_round_trips():
    assert artifact_identity("org/m#int8-static", KEY_A) == "org/m#int8-static@" + "a" * 16
    assert artifact_identity("org/m#int8", KEY_A) == "org/m#int8@" + "a" * 16
    assert artifact_identity("org/m", KEY_A) == "org/m"  # fp32: the model's vectors
    assert model_of(artifact_identity("org/m#int8-static", KEY_A)) == "org/m#int8-static"
    assert model_of("org/m@home#int8") == "org/m@home#int8"  # an @ in a name is not a key
    assert vector_identity("m", None) == "m"


# --- the real embedder's identity (no model is loaded: only the folder's files are hashed) ------


def _int8_static(cache, pinned=None):
    return load_embedder("all-MiniLM-L6-v2", "cpu", "openvino", "int8", cache, pinned=pinned)


@pytest.fixture
def packaged():
    if model_spec.packaged_model_path() is None:
        pytest.skip("the packaged model is not installed")


def test_static_int8_identity_follows_the_artifact_key(tmp_path, monkeypatch, packaged):
    embedder = _int8_static(tmp_path)
    key = embedder.artifact_spec("int8-static").key
    assert embedder.identity == f"{embedder.name}@{key[:16]}"
    assert embedder.name == "sentence-transformers/all-MiniLM-L6-v2#int8-static"
    monkeypatch.setattr(ov_runtime, "CALIBRATION_VERSION", ov_runtime.CALIBRATION_VERSION + 1)
    recalibrated = _int8_static(tmp_path)
    assert recalibrated.name == embedder.name and recalibrated.identity != embedder.identity
    monkeypatch.undo()
    real = model_spec.package_version
    monkeypatch.setattr(model_spec, "package_version",
                        lambda *names: "99.0" if names == ("nncf",) else real(*names))
    requantized = _int8_static(tmp_path)
    assert requantized.identity not in (embedder.identity, recalibrated.identity)


def test_fp32_identity_is_the_name_on_every_backend(tmp_path, packaged):
    for backend in ("onnx", "openvino", "torch"):
        embedder = load_embedder("all-MiniLM-L6-v2", "cpu", backend, "none", tmp_path)
        assert embedder.identity == embedder.name == "sentence-transformers/all-MiniLM-L6-v2"


def test_the_index_folder_records_the_identity_the_vectors_are_cached_under(tmp_path, packaged):
    """A collection pinned to the artifact it was built with caches and finds its vectors under
    that artifact's identity, also where this machine would make another one; repair (which loads
    no model) reads the same identity from the index folder."""
    cache = ModelCache(tmp_path / "cache")
    embedder = _int8_static(cache.root)
    recorded = ArtifactSpec(embedder.model_id, "int8-static", {"calibration_version": 0})
    built = cache.prepare(recorded, lambda folder: (folder / "model.xml").write_text("<net/>"))
    db = tmp_path / "db"
    record_use(db, "kbindex", embedder.name, built)
    identity = recorded_identity(db, "kbindex", embedder.name)
    assert identity == f"{embedder.name}@{recorded.key[:16]}" != embedder.identity
    from kbindex.embedding.modelcache import recorded_artifact

    pinned = recorded_artifact(db, "kbindex")
    assert pinned["identity"] == identity
    assert _int8_static(cache.root, pinned=pinned).identity == identity
    # Another model's record, or none: the name, under which int8 vectors are never cached now.
    assert recorded_identity(db, "kbindex", "org/other#int8-static") == "org/other#int8-static"
    assert recorded_identity(tmp_path / "nowhere", "kbindex", embedder.name) == embedder.name
