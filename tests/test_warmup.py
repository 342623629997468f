"""kbindex.warmup: the query model loaded in a thread while the store opens."""

from __future__ import annotations

import threading

import pytest

from kbindex.errors import ModelError
from kbindex.warmup import ModelWarmup
from tests.fakes import HashEmbedder


class ThreadedFake(HashEmbedder):
    """A fake that, like OnnxEmbedder, can import its runtime up front; records where it ran."""

    def __init__(self, name="fake:warm", fail: Exception | None = None):
        super().__init__(name)
        self.imported_in: list[str] = []
        self.embedded_in: list[str] = []
        self.fail = fail

    def import_runtime(self):
        self.imported_in.append(threading.current_thread().name)

    def embed(self, texts):
        self.embedded_in.append(threading.current_thread().name)
        if self.fail:
            raise self.fail
        return super().embed(texts)


def test_imports_here_embeds_the_normalized_queries_in_the_thread_and_not_again():
    made = []
    warm = ModelWarmup("fake:warm", ["ｆｕｌｌ width query", "other"],
                       lambda model: made.append(ThreadedFake(model)) or made[-1])
    embedder = warm.embedder("fake:warm")
    fake = made[0]
    assert fake.imported_in == [threading.current_thread().name]
    assert fake.embedded_in == ["kbindex-warmup"]
    # search() embeds the NFKC-normalized query (kbindex.normalize): it is answered from the warm-up
    assert embedder.embed(["full width query"]) == HashEmbedder().embed(["full width query"])
    assert fake.calls == [["full width query", "other"]]
    # a text not embedded ahead goes to the model, once
    assert embedder.embed(["new", "other"]) == HashEmbedder().embed(["new", "other"])
    assert fake.calls[-1] == ["new"]
    assert embedder.name == "fake:warm"


def test_another_model_than_the_collection_records_is_not_used():
    warm = ModelWarmup("fake:warm", ["q"], ThreadedFake)
    assert warm.embedder("fake:other") is None


def test_no_record_or_no_import_hook_starts_nothing():
    assert ModelWarmup(None, ["q"], ThreadedFake).embedder(None) is None
    plain = ModelWarmup("fake:hash", ["q"], HashEmbedder)  # no import_runtime: loaded the usual way
    assert plain.embedder("fake:hash") is None


def test_a_failure_in_the_thread_is_raised_where_the_embedder_is_asked_for():
    warm = ModelWarmup("fake:warm", ["q"], lambda m: ThreadedFake(m, fail=ModelError("no model file")))
    with pytest.raises(ModelError, match="no model file"):
        warm.embedder("fake:warm")
