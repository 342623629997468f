"""A second retrieval-quality data set from a real manual: Debian's python3.11-doc, in BEIR layout.

Queries are the entries of the manual's own general index (genindex*.html), the relevant documents
of a query are the pages its entry links to (anchors stripped), and the corpus is every page of the
manual (the pages that entries link to, plus all others as distractors). The queries are split
into dev (for tuning) and test (for reporting) with a fixed seed, so that settings chosen on dev
are never judged on the queries they were chosen on.

    python -m benchmarks.docs_index_eval                       # fetch, build .bench/pydoc/python-manual
    python -m benchmarks.docs_index_eval --deb FILE.deb --out DIR --queries 1000 --seed 18
    kbindex eval .bench/pydoc/python-manual --split dev --db .bench/eval-pydoc

The .deb is fetched with `apt-get download python3.11-doc` into the git-ignored .bench/ folder and
never committed. Pages are read with kbindex's own extractor (the one `kbindex index` uses), so
titles, heading paths and section texts are what a user's index of this manual would hold;
corpus.jsonl carries them in an extra `sections` field that kbindex's BEIR reader uses and other
BEIR readers ignore (`title` and `text` stay standard).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urldefrag

from lxml import html as lxml_html

from benchmarks.common import WORK
from kbindex.errors import SkipSource
from kbindex.extract import extract
from kbindex.records import Page

PACKAGE = "python3.11-doc"
HTML_ROOT = "usr/share/doc/python3.11/html"
DEFAULT_QUERIES = 1000  # sampled index entries, half dev and half test
DEFAULT_SEED = 18
# Pages that are indexes or navigation, not documents a query should find.
NOT_DOCUMENTS = re.compile(r"^(genindex.*|py-modindex|search|contents|index|glossary-index)\.html$")
SKIP_FOLDERS = {"_sources", "_static", "_images", "_downloads"}


def fetch_deb(folder: Path) -> Path:
    """The package's .deb in folder, downloaded with apt-get when absent."""
    folder.mkdir(parents=True, exist_ok=True)
    found = sorted(folder.glob(f"{PACKAGE}_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", PACKAGE], cwd=folder, check=True)
        found = sorted(folder.glob(f"{PACKAGE}_*.deb"))
    if not found:
        raise SystemExit(f"apt-get download {PACKAGE} left no .deb in {folder}")
    return found[-1]


def unpack(deb: Path, folder: Path) -> Path:
    """The manual's html folder, unpacked from the .deb with dpkg-deb once."""
    root = folder / "root"
    html_dir = root / HTML_ROOT
    if not html_dir.is_dir():
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return html_dir


def _own_text(li) -> str:
    """An index entry's own words: its text without its sub-entries' list, whitespace collapsed."""
    parts = [li.text or ""]
    for child in li:
        if child.tag == "ul":
            break
        parts.append(child.text_content())
        parts.append(child.tail or "")
    text = " ".join("".join(parts).split())
    return re.sub(r"(,\s*\[\d+\])+$", "", text).strip(" ,")  # ", [1], [2]": more links, not words


def _page_of(href: str, index_file: Path, html_dir: Path) -> str | None:
    """The corpus id of a link: the page path relative to the manual's root, anchor stripped."""
    target, _ = urldefrag(href)
    if not target or "://" in target:
        return None
    path = PurePosixPath(index_file.relative_to(html_dir).parent, unquote(target))
    return str(PurePosixPath(*[p for p in path.parts if p != "."]))


def index_entries(html_dir: Path) -> dict[str, set[str]]:
    """Query text -> pages it links to, from genindex-all.html or else the per-letter pages.

    A sub-entry's query is its parent's words and its own ("! (exclamation) in a command
    interpreter"): that is how a reader of a back-of-book index reads it.
    """
    files = [html_dir / "genindex-all.html"]
    if not files[0].is_file():
        files = sorted(html_dir.glob("genindex*.html"))
    entries: dict[str, set[str]] = {}
    for file in files:
        tree = lxml_html.fromstring(file.read_bytes())
        for table in tree.xpath('//table[contains(@class, "genindextable")]'):
            for li in table.xpath(".//li"):
                own = _own_text(li)
                parent = li.getparent().getparent()
                if parent is not None and parent.tag == "li":
                    own = f"{_own_text(parent)} {own}".strip()
                links = [a.get("href", "") for a in li if a.tag == "a"]
                pages = {p for p in (_page_of(h, file, html_dir) for h in links) if p}
                if own and pages:
                    entries.setdefault(own, set()).update(pages)
    return entries


def corpus_pages(html_dir: Path) -> list[Path]:
    return sorted(
        p for p in html_dir.rglob("*.html")
        if not SKIP_FOLDERS.intersection(p.relative_to(html_dir).parts) and not NOT_DOCUMENTS.match(p.name)
    )


def build(html_dir: Path, out: Path, queries: int = DEFAULT_QUERIES, seed: int = DEFAULT_SEED) -> dict:
    """Write corpus.jsonl, queries.jsonl, qrels/dev.tsv and qrels/test.tsv into out; a summary."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    docs: dict[str, dict] = {}
    for path in corpus_pages(html_dir):
        doc_id = str(path.relative_to(html_dir).as_posix())
        try:
            doc = extract(Page(source=doc_id, body=path.read_bytes(), content_type="text/html; charset=utf-8"))
        except SkipSource:
            continue
        docs[doc_id] = {
            "_id": doc_id, "title": doc.title, "text": doc.text,
            "sections": [{"heading_path": list(s.heading_path), "anchor": s.anchor, "text": s.text}
                         for s in doc.sections],
        }
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for entry in docs.values():
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    # Only entries whose every linked page is in the corpus: a judgement on a missing page could
    # never be met. Sorted before sampling so the seed alone fixes the sample.
    usable = sorted((q, sorted(pages)) for q, pages in index_entries(html_dir).items()
                    if all(p in docs for p in pages))
    rng = random.Random(seed)
    sample = rng.sample(usable, min(queries, len(usable)))
    half = len(sample) // 2
    splits = {"dev": sample[:half], "test": sample[half:]}
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for split, rows in splits.items():
            for n, (text, _) in enumerate(rows):
                f.write(json.dumps({"_id": f"{split}-{n}", "text": text}, ensure_ascii=False) + "\n")
    for split, rows in splits.items():
        with (out / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for n, (_, pages) in enumerate(rows):
                for page in pages:
                    f.write(f"{split}-{n}\t{page}\t1\n")
    linked = {p for _, pages in sample for p in pages}
    return {"documents": len(docs), "linked_documents": len(linked), "distractors": len(docs) - len(linked),
            "index_entries": len(usable), "dev_queries": len(splits["dev"]),
            "test_queries": len(splits["test"]), "seed": seed, "out": str(out)}


def keyword_sweep(dataset: Path, weights: list[tuple[float, float, float]], splits=("dev",),
                  db: Path | None = None) -> list[dict]:
    """Keyword-mode MRR@10 / Recall@10 for each column-weights variant, without embedding.

    Chunks the corpus exactly as `kbindex eval` indexes it (the default model's tokenizer and chunk
    settings) into a keyword index alone, so that weights can be compared in minutes; keyword mode
    reads only that index, so its figures equal `kbindex eval --mode keyword --field-weights W`.
    """
    from kbindex import config as cfg
    from kbindex import evaluate as ev
    from kbindex.chunk import check_config, chunk_document
    from kbindex.embedding import load_embedder
    from kbindex.search import search
    from kbindex.store.lexical import LexicalIndex

    embedder = load_embedder(cfg.DEFAULT_MODEL, cfg.DEFAULT_DEVICE, cfg.DEFAULT_BACKEND, cfg.DEFAULT_QUANTIZE)
    config = check_config(cfg.DEFAULT_CHUNK_TOKENS, cfg.DEFAULT_OVERLAP, embedder.max_tokens)
    data = ev.load_dataset(dataset, splits[0])
    db = db or dataset.parent / "keyword-only"
    lexical = LexicalIndex.open(db, "keyword-only")
    if lexical.count() == 0:
        for doc in data.documents():
            lexical.upsert(chunk_document(doc, embedder.count_tokens, config), embedder.name)

    class _NoVectors:  # keyword mode never reads the vector store; search() only names it
        name = "keyword-only"
        store = None

        def count(self):
            return lexical.count()

    rows = []
    for split in splits:
        data = ev.load_dataset(dataset, split)
        for w in weights:
            lexical.weights = w

            def searcher(queries, k, mode):
                return search(_NoVectors(), None, queries, k=k, mode=mode, per_doc=1, lexical=lexical)

            result = ev.evaluate(data, searcher, ["keyword"])[0].as_dict()
            rows.append({"split": split, "weights": list(w), **result})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deb", type=Path, help=f"the {PACKAGE} .deb (default: apt-get download it)")
    parser.add_argument("--work", type=Path, default=WORK / "pydoc", help="scratch folder (git-ignored)")
    parser.add_argument("--out", type=Path, help="data set folder (default: WORK/python-manual)")
    parser.add_argument("--queries", type=int, default=DEFAULT_QUERIES)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--sweep", nargs="+", metavar="T,H,B",
                        help="after building, compare keyword-mode column weights on --split")
    parser.add_argument("--split", nargs="+", default=["dev"], help="splits for --sweep")
    args = parser.parse_args(argv)
    deb = args.deb or fetch_deb(args.work)
    html_dir = unpack(deb, args.work)
    out = args.out or args.work / "python-manual"
    if not (out / "corpus.jsonl").is_file() or not args.sweep:
        print(json.dumps(build(html_dir, out, args.queries, args.seed)))
    if args.sweep:
        from kbindex.evaluate import parse_weights

        keyword_sweep(out, [parse_weights(w) for w in args.sweep], tuple(args.split))
    return 0


if __name__ == "__main__":
    sys.exit(main())
