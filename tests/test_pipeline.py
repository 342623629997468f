"""embed_ahead: order, real overlap, bounded memory, errors and early stop."""

from __future__ import annotations

import threading

import pytest

from kbindex.pipeline import embed_ahead
from tests.fakes import HashEmbedder


def _batches(n, log=None):
    for i in range(n):
        if log is not None:
            log.append(("produced", i))
        yield i, [f"text {i} a", f"text {i} b"]


def test_results_come_back_in_order_with_the_right_vectors():
    embedder = HashEmbedder()
    out = list(embed_ahead(_batches(7), embedder.embed, depth=2))
    assert [p for p, _ in out] == list(range(7))
    for payload, vectors in out:
        assert vectors == embedder.embed([f"text {payload} a", f"text {payload} b"])


def test_next_batch_is_prepared_while_the_current_one_is_embedded():
    produced_second = threading.Event()

    def slow_embed(texts):
        if texts[0].startswith("text 0"):
            # Embedding of batch 0 finishes only once the caller has produced batch 1.
            assert produced_second.wait(timeout=10), "no overlap: batch 1 was not prepared meanwhile"
        return [[1.0] for _ in texts]

    def batches():
        for i in range(3):
            if i == 1:
                produced_second.set()
            yield i, [f"text {i}"]

    assert [p for p, _ in embed_ahead(batches(), slow_embed, depth=2)] == [0, 1, 2]


def test_memory_stays_bounded():
    release = threading.Event()
    log = []

    def gated_embed(texts):
        release.wait(timeout=10)
        log.append(("embedded", texts[0]))
        return [[0.0] for _ in texts]

    gen = embed_ahead(_batches(50, log), gated_embed, depth=2)
    timer = threading.Timer(0.5, release.set)
    timer.start()
    first = next(gen)
    # Before anything was embedded, the producer could get at most depth + 2 batches ahead:
    # depth queued, one in the model, one it is blocked on submitting.
    produced_before = [e for e in log[:log.index(("embedded", "text 0 a"))] if e[0] == "produced"]
    assert len(produced_before) <= 2 + 2
    assert first[0] == 0
    assert [p for p, _ in gen] == list(range(1, 50))
    timer.join()


def test_an_embedding_error_surfaces_at_its_batch():
    def failing(texts):
        if texts[0].startswith("text 3"):
            raise RuntimeError("model broke")
        return [[0.0] for _ in texts]

    seen = []
    with pytest.raises(RuntimeError, match="model broke"):
        for payload, _ in embed_ahead(_batches(6), failing, depth=2):
            seen.append(payload)
    assert seen == [0, 1, 2]


def test_stopping_early_ends_the_background_thread():
    before = {t.ident for t in threading.enumerate()}
    gen = embed_ahead(_batches(100), HashEmbedder().embed, depth=3)
    assert next(gen)[0] == 0
    gen.close()
    assert not [t for t in threading.enumerate() if t.name == "kbindex-embed" and t.ident not in before]


def test_depth_must_be_positive():
    with pytest.raises(ValueError):
        next(embed_ahead(_batches(1), HashEmbedder().embed, depth=0))
