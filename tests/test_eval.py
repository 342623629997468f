"""Retrieval metrics on hand-computed examples, BEIR loading, and `kbindex eval` end to end."""

import json
import math

import pytest

from kbindex.evaluate import (
    collection_name,
    load_dataset,
    mrr_at,
    ndcg_at,
    percentile,
    recall_at,
    score_run,
)
from kbindex.store.chroma import check_name

LOG2_3 = math.log2(3)


@pytest.mark.parametrize("ranked,relevant,k,expected", [
    # DCG = 1/log2(3) + 1/log2(4); ideal = 1 + 1/log2(3)
    (["a", "b", "c"], {"b": 1, "c": 1}, 10, (1 / LOG2_3 + 0.5) / (1 + 1 / LOG2_3)),
    (["b", "c", "a"], {"b": 1, "c": 1}, 10, 1.0),
    # graded: DCG = 1 + 2/log2(3); ideal puts the grade-2 document first: 2 + 1/log2(3)
    (["b", "a"], {"a": 2, "b": 1}, 10, (1 + 2 / LOG2_3) / (2 + 1 / LOG2_3)),
    # cut at k=1: only "x" counts; ideal@1 = 1
    (["x", "a"], {"a": 1}, 1, 0.0),
    # three relevant, one retrieved at rank 1: 1 / (1 + 1/log2(3) + 1/2)
    (["a"], {"a": 1, "b": 1, "c": 1}, 10, 1 / (1 + 1 / LOG2_3 + 0.5)),
    ([], {"a": 1}, 10, 0.0),
    # a judged document with grade 0 is not relevant
    (["z", "a"], {"a": 1, "z": 0}, 10, 1 / LOG2_3),
])
def test_ndcg(ranked, relevant, k, expected):
    assert ndcg_at(ranked, relevant, k) == pytest.approx(expected)


def test_recall_and_mrr():
    relevant = {"a": 1, "b": 1, "c": 1, "d": 0}
    ranked = ["x", "b", "d", "y", "a"]
    assert recall_at(ranked, relevant, 2) == pytest.approx(1 / 3)
    assert recall_at(ranked, relevant, 10) == pytest.approx(2 / 3)
    assert mrr_at(ranked, relevant, 10) == pytest.approx(1 / 2)
    assert mrr_at(ranked, relevant, 1) == 0.0
    assert mrr_at(["d", "x", "y", "c"], relevant, 10) == pytest.approx(1 / 4)


def test_score_run_averages_over_judged_queries_and_counts_missing_as_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}  # q3 has nothing relevant: not counted
    run = {"q1": ["a"], "q3": ["c"]}  # q2 missing from the run
    scores = score_run(run, qrels)
    assert scores == {"ndcg@10": 0.5, "recall@10": 0.5, "recall@100": 0.5, "mrr@10": 0.5}


def test_percentile_interpolates():
    assert percentile([10, 20, 30, 40], 50) == 25
    assert percentile([5], 95) == 5
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 95) == pytest.approx(10.5)


CORPUS = [
    {"_id": "d1", "title": "Printer offline", "text": "The spooler service stops and the printer shows offline."},
    {"_id": "d2", "title": "WAL growth", "text": "Raise max_wal_size when checkpoints occur too often."},
    {"_id": "d3", "title": "Update error", "text": "Windows Update fails with 0x80070002 when files are missing."},
    {"_id": "d4", "title": "Identity", "text": "Set AZURE_CLIENT_ID for the user-assigned identity."},
    {"_id": "d5", "title": "Battery", "text": "Modern standby drains the laptop battery overnight."},
]
QUERIES = [
    {"_id": "q1", "text": "spooler printer offline"},
    {"_id": "q2", "text": "max_wal_size checkpoints"},
    {"_id": "q3", "text": "0x80070002"},
    {"_id": "q4", "text": "unjudged query"},
]


@pytest.fixture
def beir(tmp_path):
    root = tmp_path / "tiny-set"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in CORPUS))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\nq3\td5\t0\n")
    return root


def test_load_dataset_keeps_judged_queries(beir):
    data = load_dataset(beir)
    assert data.name == "tiny-set"
    assert data.queries == {"q1": "spooler printer offline", "q2": "max_wal_size checkpoints", "q3": "0x80070002"}
    assert data.qrels["q3"] == {"d3": 1, "d5": 0}
    docs = list(data.documents())
    assert [d.source for d in docs] == [f"beir:tiny-set/d{i}" for i in range(1, 6)]
    assert docs[0].title == "Printer offline" and "spooler" in docs[0].text


def test_collection_name_is_valid_and_depends_on_model_and_chunking():
    a = collection_name("scifact", "sentence-transformers/all-MiniLM-L6-v2", 256, 32)
    check_name(a)
    assert a.startswith("eval-scifact-all-minilm-l6-v2-")
    assert a != collection_name("scifact", "sentence-transformers/all-MiniLM-L6-v2", 128, 32)
    assert a != collection_name("scifact", "/models/all-MiniLM-L6-v2", 256, 32)


def test_eval_indexes_once_then_reuses(kb, beir, db):
    first = kb.json("eval", str(beir))
    assert first["queries"] == 3 and first["reused"] is False and first["chunks"] == 5
    modes = {m["mode"]: m for m in first["modes"]}
    assert set(modes) == {"hybrid", "vector", "keyword"}
    # Each query shares rare words with exactly its relevant document: BM25 ranks it first.
    assert modes["keyword"]["ndcg@10"] == 1.0 and modes["keyword"]["mrr@10"] == 1.0
    for m in modes.values():
        assert 0 <= m["ndcg@10"] <= 1 and m["recall@100"] == 1.0  # 5 documents: all retrieved
        assert m["latency_p50_ms"] > 0 and m["latency_p95_ms"] >= m["latency_p50_ms"]
    again = kb.json("eval", str(beir), "--mode", "keyword")
    assert again["reused"] is True and [m["mode"] for m in again["modes"]] == ["keyword"]
    assert again["modes"][0]["ndcg@10"] == 1.0
    other = kb.json("eval", str(beir), "--chunk-tokens", "64", "--overlap", "8", "--mode", "vector")
    assert other["reused"] is False and other["collection"] != first["collection"]


def test_eval_human_output(kb, beir):
    out = kb("eval", str(beir), "--mode", "hybrid")
    assert out.exit_code == 0
    assert "tiny-set (test): 3 queries" in out.stdout and "nDCG@10" in out.stdout
    assert "indexing 5 documents" in out.stderr


@pytest.mark.parametrize("remove,message", [
    ("corpus.jsonl", "corpus.jsonl is missing"),
    ("qrels/test.tsv", "test.tsv is missing"),
])
def test_eval_refuses_a_folder_that_is_not_beir(kb, beir, remove, message):
    (beir / remove).unlink()
    out = kb("eval", str(beir))
    assert out.exit_code == 2 and message in out.stderr and "Traceback" not in out.output


def test_eval_unknown_split(kb, beir):
    out = kb("eval", str(beir), "--split", "dev")
    assert out.exit_code == 2 and "dev.tsv is missing" in out.stderr


def test_corpus_sections_are_indexed_with_their_heading_paths(tmp_path):
    root = tmp_path / "sectioned"
    (root / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": "s1", "title": "socket", "text": "flat text",
         "sections": [{"heading_path": [], "text": "Intro."},
                      {"heading_path": ["Socket objects", "Timeouts"], "anchor": "t", "text": "settimeout"}]},
        # malformed or empty sections: the entry's text is indexed as before
        {"_id": "s2", "title": "glob", "text": "Pathname expansion.", "sections": "not a list"},
        {"_id": "s3", "title": "cmd", "text": "Interpreters.", "sections": [{"heading_path": ["X"], "text": " "}]},
    ]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "timeouts"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\ts1\t1\n")
    docs = {d.source.rsplit("/", 1)[-1]: d for d in load_dataset(root).documents()}
    assert [(s.heading_path, s.text, s.anchor) for s in docs["s1"].sections] == [
        ((), "Intro.", None), (("Socket objects", "Timeouts"), "settimeout", "t")]
    assert [(s.heading_path, s.text) for s in docs["s2"].sections] == [((), "Pathname expansion.")]
    assert [(s.heading_path, s.text) for s in docs["s3"].sections] == [((), "Interpreters.")]


# -- eval --self ---------------------------------------------------------------------------------


def test_self_queries_use_titles_and_last_headings_that_name_one_page():
    from kbindex.evaluate import self_queries

    metas = [
        {"source": "/kb/a.md", "title": "Printer offline", "section": "Fixes > Restart the spooler"},
        {"source": "/kb/a.md", "title": "Printer offline", "section": "Overview"},
        {"source": "/kb/b.md", "title": "WAL growth", "section": "Overview"},  # shared: names no page
        {"source": "/kb/b.md", "title": "WAL growth", "section": ""},
        {"source": "/kb/c.md", "title": "42", "section": "x"},  # no words, too short
    ]
    data = self_queries(metas, "kbx", sample=10, seed=1)
    pairs = {(data.queries[q], next(iter(data.qrels[q]))) for q in data.queries}
    assert pairs == {("Printer offline", "/kb/a.md"), ("Restart the spooler", "/kb/a.md"),
                     ("WAL growth", "/kb/b.md")}
    assert self_queries(metas, "kbx", sample=2, seed=1) == self_queries(metas, "kbx", sample=2, seed=1)
    assert len(self_queries(metas, "kbx", sample=2, seed=1).queries) == 2


def test_eval_self_scores_the_collection_itself(kb, tmp_path):
    from tests.conftest import SAMPLE_KB

    assert kb("index", str(SAMPLE_KB)).exit_code == 0
    out = kb.json("eval", "--self", "--sample", "20")
    assert out["self"] is True and out["upper_bound"] is True and 0 < out["queries"] <= 20
    modes = {m["mode"]: m for m in out["modes"]}
    assert set(modes) == {"hybrid", "vector", "keyword"}
    # each query is a title or heading of its page, which the keyword index holds
    assert modes["keyword"]["recall@100"] == 1.0 and modes["keyword"]["mrr@10"] > 0.5
    human = kb("eval", "--self", "--mode", "keyword")
    assert human.exit_code == 0 and "optimistic upper bound" in human.stdout


@pytest.mark.parametrize("args,message", [
    (["--self", "--collection", "nothing-here"], "no index at"),
    (["--self", "--sample", "5", "tests"], "not both"),
    ([], "give a DATASET"),
])
def test_eval_self_usage_errors(kb, args, message):
    out = kb("eval", *args)
    assert out.exit_code in (1, 2) and message in out.stderr and "Traceback" not in out.output


def test_corpus_ids_with_slashes_are_kept_whole():
    from kbindex.evaluate import doc_id

    assert doc_id("beir:python-manual/library/os.path.html") == "library/os.path.html"
    assert doc_id("beir:scifact/4983") == "4983"
    assert doc_id("/kb/a.md") == "/kb/a.md"  # not from a data set: the source itself
