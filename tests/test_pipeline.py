"""EmbedAhead and the pipelined index run: order, real overlap, bounded memory, errors, stopping."""

from __future__ import annotations

import threading
import time

import pytest

from kbindex.pipeline import EmbedAhead
from tests.fakes import HashEmbedder


def _texts(i: int) -> list[str]:
    return [f"text {i} a", f"text {i} b"]


def _run(ahead: EmbedAhead, n: int) -> list:
    out = []
    for i in range(n):
        out += ahead.submit(i, _texts(i))
    return out + ahead.drain()


def test_results_come_back_in_order_with_the_right_vectors():
    embedder = HashEmbedder()
    with EmbedAhead(embedder.embed, depth=2) as ahead:
        out = _run(ahead, 7)
    assert [p for p, _ in out] == list(range(7))
    for payload, vectors in out:
        assert vectors == HashEmbedder().embed(_texts(payload))


def test_the_next_batch_is_prepared_while_the_current_one_is_embedded():
    second_submitted = threading.Event()

    def slow_embed(texts):
        if texts[0].startswith("text 0"):
            # Batch 0 finishes only once the caller, not blocked by it, has submitted batch 1.
            assert second_submitted.wait(timeout=10), "no overlap: batch 1 waited for batch 0"
        return [[1.0] for _ in texts]

    with EmbedAhead(slow_embed, depth=1) as ahead:
        assert ahead.submit(0, _texts(0)) == []
        second_submitted.set()
        first = ahead.submit(1, _texts(1))  # more than depth waiting: hands back batch 0
        rest = ahead.drain()
    assert [p for p, _ in first + rest] == [0, 1]


def test_submit_blocks_once_depth_batches_wait():
    release = threading.Event()
    embedded = []

    def gated_embed(texts):
        release.wait(timeout=10)
        embedded.append(texts[0])
        return [[0.0] for _ in texts]

    with EmbedAhead(gated_embed, depth=2) as ahead:
        assert ahead.submit(0, _texts(0)) == []
        assert ahead.submit(1, _texts(1)) == []
        timer = threading.Timer(0.3, release.set)
        timer.start()
        # A third batch is more than depth: submit waits until batch 0 is embedded.
        handed = ahead.submit(2, _texts(2))
        assert embedded and embedded[0] == "text 0 a"
        assert handed[0][0] == 0
        out = handed + ahead.drain()
        timer.join()
    assert [p for p, _ in out] == [0, 1, 2]


def test_an_embedding_error_surfaces_at_its_batch():
    def failing(texts):
        if texts[0].startswith("text 3"):
            raise RuntimeError("model broke")
        return [[0.0] for _ in texts]

    seen = []
    with EmbedAhead(failing, depth=1) as ahead, pytest.raises(RuntimeError, match="model broke"):
        for i in range(6):
            seen += [p for p, _ in ahead.submit(i, _texts(i))]
        seen += [p for p, _ in ahead.drain()]
    assert seen == [0, 1, 2]


def test_an_empty_batch_needs_no_model():
    def refuse(texts):
        raise AssertionError("embed called for an empty batch")

    with EmbedAhead(refuse) as ahead:
        assert ahead.submit("cached", []) + ahead.drain() == [("cached", [])]


def test_close_stops_the_background_thread():
    before = {t.ident for t in threading.enumerate()}
    ahead = EmbedAhead(HashEmbedder().embed, depth=3)
    ahead.submit(0, _texts(0))
    ahead.close()
    assert not [t for t in threading.enumerate()
                if t.name.startswith("kbindex-embed") and t.ident not in before]


def test_depth_must_be_positive():
    with pytest.raises(ValueError):
        EmbedAhead(HashEmbedder().embed, depth=0)


# -- the index run ------------------------------------------------------------------------------


class _GatedEmbedder(HashEmbedder):
    """Its first embed() returns only once the indexing thread has chunked more documents."""

    def __init__(self, name: str = "gate:hash", device: str = "cpu"):
        super().__init__(name, device)
        self.counted = 0  # count_tokens calls: the indexing thread chunking a document
        self.counted_at_first_embed: int | None = None
        self.overlapped = threading.Event()
        self.chunked_meanwhile = False  # the answer: did chunking go on during the first embed()?

    def count_tokens(self, texts):
        self.counted += 1
        if self.counted_at_first_embed is not None and self.counted > self.counted_at_first_embed:
            self.overlapped.set()
        return super().count_tokens(texts)

    def embed(self, texts):
        if self.counted_at_first_embed is None:
            self.counted_at_first_embed = self.counted
            self.chunked_meanwhile = self.overlapped.wait(timeout=5)
        return super().embed(texts)


def _folder(tmp_path, docs: dict[str, str]):
    folder = tmp_path / "kb"
    folder.mkdir()
    for name, text in docs.items():
        (folder / name).write_text(text)
    return folder


def _indexer(tmp_path, embedder, monkeypatch, batch: int):
    from kbindex.chunk import check_config
    from kbindex.config import Settings
    from kbindex.indexing import runner as index_module

    monkeypatch.setattr("kbindex.indexing.writer.EMBED_BATCH", batch)
    settings = Settings(db=tmp_path / "db", collection="kbindex", model=embedder.name, device="cpu")
    return index_module.Indexer(settings, embedder, check_config(64, 8, embedder.max_tokens))


def test_documents_are_chunked_while_a_batch_is_embedded(tmp_path, monkeypatch):
    from kbindex.indexing.sources import parse_sources
    from tests.sync_helpers import assert_consistent

    folder = _folder(tmp_path, {f"doc{i}.md": f"# Doc {i}\n\nWord{i} text for document {i}." for i in range(6)})
    embedder = _GatedEmbedder()
    with _indexer(tmp_path, embedder, monkeypatch, batch=1) as indexer:
        summary = indexer.run(parse_sources([str(folder)]))
    assert embedder.chunked_meanwhile, "the first batch was embedded before any other document was chunked"
    assert summary.indexed == 6 and summary.chunks_added == 6
    assert_consistent(tmp_path / "db", {str(p) for p in folder.iterdir()})


def test_a_text_in_two_batches_in_flight_is_embedded_once(tmp_path, monkeypatch):
    from kbindex.indexing.sources import parse_sources
    from kbindex.store.chroma import Store

    # Same title and text in two files, so the same chunk text (context line included); a third
    # word keeps the two documents from being duplicates of each other.
    shared = "# Shared title\n\nThe very same paragraph in both files.\n\n"
    folder = _folder(tmp_path, {"a.md": shared + "## Alpha\n\n" + "alpha " * 60,
                                "b.md": shared + "## Beta\n\n" + "beta " * 60})
    class Slow(HashEmbedder):  # so that the first batch is still in the model when the second comes
        def embed(self, texts):
            time.sleep(0.3)
            return super().embed(texts)

    embedder = Slow()
    with _indexer(tmp_path, embedder, monkeypatch, batch=1) as indexer:
        summary = indexer.run(parse_sources([str(folder)]))
    embedded = [t for call in embedder.calls for t in call]
    assert len(embedded) == len(set(embedded)), "a text was embedded twice"
    assert summary.chunks_added == len(embedded) + 1 and summary.chunks_embedded == len(embedded)
    rows = list(Store(tmp_path / "db").collection("kbindex").scan(include_text=True))
    assert len(rows) == summary.chunks_added
    same = [r for r in rows if "very same paragraph" in r.text]
    assert len(same) == 2 and {r.metadata["source"] for r in same} == {
        str(folder / "a.md"), str(folder / "b.md")}


def test_an_embedding_error_writes_nothing_of_its_batch(tmp_path, monkeypatch):
    from kbindex.indexing.sources import parse_sources
    from tests.sync_helpers import snapshot

    class Failing(HashEmbedder):
        def embed(self, texts):
            if any("doc3" in t.lower() for t in texts):
                raise RuntimeError("model broke")
            return super().embed(texts)

    folder = _folder(tmp_path, {f"doc{i}.md": f"# Doc{i}\n\nText of doc{i}." for i in range(6)})
    with _indexer(tmp_path, Failing("fake:hash"), monkeypatch, batch=1) as indexer:
        with pytest.raises(RuntimeError, match="model broke"):
            indexer.run(parse_sources([str(folder)]))
    state = snapshot(tmp_path / "db")
    assert state["store"] == state["ledger"] and state["clean"]
    assert str(folder / "doc3.md") not in state["store"]
