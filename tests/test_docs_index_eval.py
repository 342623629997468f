"""benchmarks/docs_index_eval.py on a made-up Sphinx manual: back-of-book index entries become
queries, the pages they link to (anchors stripped) become the judgements, every page goes into the
corpus with its headings, and the dev/test split is fixed by the seed; `kbindex eval` reads it."""

import json

import pytest

from benchmarks.docs_index_eval import build, index_entries
from kbindex.evaluate import load_dataset

GENINDEX = """<html><body><div class="body">
<table style="width: 100%" class="indextable genindextable"><tr><td><ul>
  <li><a href="library/logging.html#logging.basicConfig">basicConfig() (in module logging)</a></li>
  <li>
    ! (exclamation)
    <ul>
      <li><a href="library/cmd.html#index-0">in a command interpreter</a></li>
      <li><a href="library/glob.html#index-2">in glob-style wildcards</a>, <a href="library/fnmatch.html#index-1">[1]</a></li>
    </ul></li>
  <li><a href="library/socket.html#socket.settimeout">settimeout() (socket method)</a></li>
  <li><a href="library/missing.html#x">only on a page that is not there</a></li>
  <li><a href="https://peps.python.org/pep-0008/">PEP 8</a></li>
  <li><a href="tutorial/index.html#tut">tutorial</a></li>
  <li><a href="library/cmd.html">Cmd (class in cmd)</a>, <a href="library/cmd.html#cmd.Cmd">[1]</a></li>
</ul></td></tr></table></div></body></html>
"""


def _page(title, sections):
    body = "".join(f"<section><h2>{h}</h2><p>{t}</p></section>" for h, t in sections)
    return (f"<html><head><title>{title}</title></head><body><div class='body' role='main'>"
            f"<section><h1>{title}</h1><p>The {title} page of the manual, about {title.lower()}.</p>"
            f"{body}</section></div></body></html>")


PAGES = {
    "library/logging.html": _page("logging", [("Configuring handlers", "basicConfig sets up a handler "
                                                                       "on the root logger for quick use.")]),
    "library/cmd.html": _page("cmd", [("Cmd objects", "A line-oriented command interpreter; lines "
                                                      "starting with an exclamation mark run the shell.")]),
    "library/glob.html": _page("glob", [("Patterns", "Unix style pathname pattern expansion with "
                                                     "wildcards such as an exclamation mark in brackets.")]),
    "library/fnmatch.html": _page("fnmatch", [("Matching", "Unix filename pattern matching with shell-style wildcards.")]),
    "library/socket.html": _page("socket", [("Socket timeouts", "settimeout sets a timeout on blocking "
                                                                "socket operations, in seconds.")]),
    "tutorial/index.html": _page("tutorial", [("Start", "An informal introduction.")]),
    "faq/general.html": _page("General FAQ", [("Why Python", "A distractor page nobody links to.")]),
}


@pytest.fixture
def manual(tmp_path):
    root = tmp_path / "html"
    for name, html in {**PAGES, "genindex-all.html": GENINDEX, "search.html": "<p>search</p>"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(html, encoding="utf-8")
    return root


def test_index_entries_join_sub_entries_and_strip_anchors(manual):
    entries = index_entries(manual)
    assert entries["basicConfig() (in module logging)"] == {"library/logging.html"}
    assert entries["! (exclamation) in a command interpreter"] == {"library/cmd.html"}
    # more links of one entry ("[1]") are more relevant pages, not words of the query
    assert entries["! (exclamation) in glob-style wildcards"] == {"library/glob.html", "library/fnmatch.html"}
    assert entries["Cmd (class in cmd)"] == {"library/cmd.html"}
    assert "PEP 8" not in entries  # a link out of the manual judges no page of it
    assert "! (exclamation)" not in entries  # a heading of sub-entries links nowhere itself


def test_build_writes_a_beir_set_split_by_the_seed(manual, tmp_path):
    summary = build(manual, tmp_path / "out", queries=100, seed=7)
    # "tutorial/index.html" is a navigation page name (index.html): not a document, so its entry
    # and the entry of the missing page are not usable
    assert summary["documents"] == 6 and summary["dev_queries"] + summary["test_queries"] == 5
    corpus = {json.loads(line)["_id"]: json.loads(line)
              for line in (tmp_path / "out" / "corpus.jsonl").read_text().splitlines()}
    assert "faq/general.html" in corpus and "search.html" not in corpus and "genindex-all.html" not in corpus
    socket = corpus["library/socket.html"]
    assert socket["title"] == "socket" and "settimeout" in socket["text"]
    assert ["Socket timeouts"] in [s["heading_path"] for s in socket["sections"]]
    dev, test = load_dataset(tmp_path / "out", "dev"), load_dataset(tmp_path / "out", "test")
    assert not set(dev.queries.values()) & set(test.queries.values())
    assert len(dev.queries) + len(test.queries) == 5
    every = {**dev.queries, **test.queries}
    qrels = {**dev.qrels, **test.qrels}
    by_text = {text: set(qrels[q]) for q, text in every.items()}
    assert by_text["settimeout() (socket method)"] == {"library/socket.html"}
    # the same seed gives the same split; the sections reach the indexed documents
    again = build(manual, tmp_path / "again", queries=100, seed=7)
    assert again == {**summary, "out": str(tmp_path / "again")}
    assert load_dataset(tmp_path / "again", "dev").queries == dev.queries
    doc = next(d for d in dev.documents() if d.source.endswith("/library/socket.html"))
    assert ("Socket timeouts",) in [s.heading_path for s in doc.sections]


def test_kbindex_eval_runs_on_the_built_set(manual, tmp_path, kb):
    build(manual, tmp_path / "pydoc", queries=100, seed=7)
    for split in ("dev", "test"):
        out = kb.json("eval", str(tmp_path / "pydoc"), "--split", split, "--field-weights", "4,2,1",
                      "--rrf-k", "20")
        assert out["split"] == split and out["field_weights"] == [4.0, 2.0, 1.0] and out["rrf_k"] == 20
        assert {m["mode"] for m in out["modes"]} == {"hybrid", "vector", "keyword"}
        assert all(0 <= m["mrr@10"] <= 1 for m in out["modes"])
        # every query shares words with its page, and ids with slashes ("library/socket.html")
        # are matched whole
        keyword = next(m for m in out["modes"] if m["mode"] == "keyword")
        assert keyword["recall@100"] == 1.0


@pytest.mark.parametrize("weights", ["1,2", "a,b,c", "-1,1,1", "0,0,0"])
def test_eval_refuses_bad_field_weights(manual, tmp_path, kb, weights):
    build(manual, tmp_path / "pydoc", queries=100, seed=7)
    out = kb("eval", str(tmp_path / "pydoc"), "--split", "dev", "--field-weights", weights)
    assert out.exit_code == 2 and "--field-weights" in out.stderr and "Traceback" not in out.output
