"""Command line: parse options, call the library, format output, map errors to exit codes.

The group and `main` live here; each module of this package holds a few commands (common.py the
options and helpers they share) and imports only click and config at import time, so that
`kbindex --help` stays instant: the library is imported inside each command. `eval` stays in this
file for now because it is being changed on another branch; it moves to its own module after that
merge.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from kbindex import __version__
from kbindex import config as cfg
from kbindex.cli import index as index_commands
from kbindex.cli import info, maintenance, models, query, serve
from kbindex.cli.common import KbindexGroup, common_options, json_option, make_embedder


@click.group(cls=KbindexGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kbindex")
@click.option("--config", "config_path", envvar="KBINDEX_CONFIG", metavar="FILE",
              help="Project config file (default: ./kbindex.toml when present). [env var: KBINDEX_CONFIG]")
@click.pass_context
def cli(ctx, config_path):
    """Index a knowledge base into Chroma and search it.

    \b
    Example:
      kbindex index data/sample-kb
      kbindex query "my chat app will not start with roaming profiles"
    """
    from kbindex.indexing.project import find_config, load_config

    path = find_config(config_path)
    config = load_config(path) if path else None
    ctx.obj = config
    if config is not None:
        # Config values rank below options and environment variables: click's default_map.
        ctx.default_map = {name: dict(config.defaults) for name in cli.commands}
        ctx.default_map["collections"] = {
            "delete": dict(config.defaults), **dict(config.defaults)
        }
        ctx.default_map["models"] = {"prepare": dict(config.defaults)}


for _command in (index_commands.index, index_commands.extract_command, maintenance.delete, maintenance.verify,
                 maintenance.export_cmd, maintenance.import_cmd, query.query, serve.serve, serve.mcp_cmd,
                 info.stats, info.sources, info.collections_cmd, models.models_cmd):
    cli.add_command(_command)


@cli.command("eval")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", default="test", show_default=True, help="Which qrels/<split>.tsv to score.")
@click.option("--mode", "modes", multiple=True, type=click.Choice(["hybrid", "vector", "keyword"]),
              help="Modes to evaluate (repeatable); default all three.")
@click.option("--chunk-tokens", type=int, default=cfg.DEFAULT_CHUNK_TOKENS, show_default=True,
              help="Chunk size used to index the corpus (each size gets its own collection).")
@click.option("--overlap", type=int, default=cfg.DEFAULT_OVERLAP, show_default=True,
              help="Chunk overlap used to index the corpus.")
@functools.partial(common_options, collection=False)
@json_option
def evaluate(dataset, split, modes, chunk_tokens, overlap, as_json, settings):
    """Score retrieval on a BEIR-layout data set: nDCG@10, Recall@10/100, MRR@10, latency.

    DATASET is a folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv. The corpus is
    indexed once into its own collection in --db (named after the data set, model and chunk
    settings) and reused by later runs.

    \b
    Example:
      kbindex eval ../shared/data/scifact --db .bench/eval-index
      kbindex eval my-kb-eval --chunk-tokens 128 --mode hybrid --json
    """
    from dataclasses import replace

    from kbindex import evaluate as ev
    from kbindex.chunk import check_config
    from kbindex.search import MODES, search
    from kbindex.store import Index

    data = ev.load_dataset(dataset, split)
    embedder = make_embedder(settings)
    config = check_config(chunk_tokens, overlap, embedder.max_tokens)
    name = ev.collection_name(data.name, embedder.name, chunk_tokens, overlap)
    settings = replace(settings, collection=name)
    _, reused = ev.ensure_indexed(data, settings, embedder, config,
                                  progress=lambda line: click.echo(line, err=True))
    index = Index.from_settings(settings, name)
    collection = index.collection()
    lexical = index.lagging_keywords()

    def searcher(queries, k, mode):
        return search(collection, embedder, queries, k=k, mode=mode, per_doc=1, lexical=lexical)

    results = ev.evaluate(data, searcher, modes or MODES)
    info = {"dataset": data.name, "split": split, "queries": len(data.queries), "collection": name,
            "model": embedder.name, "chunk_tokens": chunk_tokens, "overlap": overlap,
            "reused": reused, "chunks": collection.count(), "modes": [r.as_dict() for r in results]}
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"{data.name} ({split}): {len(data.queries)} queries, {info['chunks']} chunks in "
               f"collection {name}{' (reused)' if reused else ''}")
    click.echo(f"{'mode':<8} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} {'p50 ms':>8} {'p95 ms':>8}")
    for row in info["modes"]:
        click.echo(f"{row['mode']:<8} {row['ndcg@10']:>8.4f} {row['recall@10']:>7.4f} "
                   f"{row['recall@100']:>7.4f} {row['mrr@10']:>7.4f} "
                   f"{row['latency_p50_ms']:>8.1f} {row['latency_p95_ms']:>8.1f}")


def main():
    cli(prog_name="kbindex")
