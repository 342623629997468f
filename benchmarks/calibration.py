"""Write kbindex/embedding/calibration.jsonl: the texts the static int8 model is calibrated on.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.calibration

They are the chunks kbindex embeds for the sample KB (data/sample-kb, default chunking, the packaged
model's tokenizer): KB prose, headings, commands, error codes, code. Changing the file changes the
int8-static model, so it is bumped with kbindex.embedding.openvino.CALIBRATION_VERSION.
"""

from __future__ import annotations

import json

from benchmarks.common import ROOT
from kbindex import config as cfg
from kbindex.chunk import check_config, chunk_document
from kbindex.embedding import load_embedder
from kbindex.extract import extract
from kbindex.files import read_file


def main() -> None:
    embedder = load_embedder("all-MiniLM-L6-v2", "cpu", "onnx", "none")
    chunking = check_config(cfg.DEFAULT_CHUNK_TOKENS, cfg.DEFAULT_OVERLAP, embedder.max_tokens)
    texts = []
    for path in sorted((ROOT / "data" / "sample-kb").iterdir()):
        doc = extract(read_file(path))
        texts.extend(c.embed_text for c in chunk_document(doc, embedder.count_tokens, chunking))
    target = ROOT / "kbindex" / "embedding" / "calibration.jsonl"
    with target.open("w", encoding="utf-8") as handle:
        for text in texts:
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    print(f"{len(texts)} texts -> {target}")


if __name__ == "__main__":
    main()
