"""Chunking speed against an earlier revision's chunker, same documents, same tokenizer, one run.

    python -m benchmarks.chunk_compare [REVISION] [--docs N] [--rounds R]

The documents are the article benchmark's pages (extracted once, outside the timing) plus the
chunk-window case; the baseline is kbindex/chunk.py as of REVISION (default 9460aed, before the
context line was budgeted in tokens), loaded from git. Rounds alternate baseline and current so
that a load change on the machine hits both; the ratio is of the medians.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.common import ROOT, SHARED_DATA


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("revision", nargs="?", default="9460aed")
    parser.add_argument("--docs", type=int, default=185)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tokenizers import Tokenizer

    from kbindex import chunk as current
    from kbindex.embedding import packaged_model_path
    from kbindex.extract import extract
    from kbindex.records import Page

    source = subprocess.run(["git", "show", f"{args.revision}:kbindex/chunk.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location("chunk_baseline", handle.name)
    baseline = importlib.util.module_from_spec(spec)
    sys.modules["chunk_baseline"] = baseline  # dataclasses look their module up
    spec.loader.exec_module(baseline)

    tok = Tokenizer.from_file(str(packaged_model_path() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()

    def count(texts):
        return [len(e.ids) for e in tok.encode_batch(list(texts))]

    docs = []
    for path in sorted((SHARED_DATA / "article-extraction" / "html").glob("*.html.gz"))[: args.docs]:
        docs.append(extract(Page(source=str(path), body=gzip.decompress(path.read_bytes()),
                                 content_type="text/html")))
    case = ROOT / "tests" / "fixtures" / "cases" / "chunk-window" / "vpn-notice.md"
    docs.append(extract(Page(source=str(case), body=case.read_bytes())))

    times: dict[str, list[float]] = {"baseline": [], "current": []}
    for _ in range(args.rounds):
        for name, module in (("baseline", baseline), ("current", current)):
            config = module.check_config(256, 32, 256)
            began = time.perf_counter()
            chunks = [c for d in docs for c in module.chunk_document(d, count, config)]
            times[name].append(time.perf_counter() - began)
            over = sum(n > 256 for n in count([c.embed_text for c in chunks]))
            print(f"{name:8s} {len(docs)} docs {len(chunks)} chunks {times[name][-1]:.2f} s, "
                  f"{over} embedded texts over 256 tokens", flush=True)
    ratio = statistics.median(times["current"]) / statistics.median(times["baseline"])
    print(f"current / baseline (median of {args.rounds}): {ratio:.2f}")


if __name__ == "__main__":
    main()
