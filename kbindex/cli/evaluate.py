"""`kbindex eval`: retrieval quality on a BEIR-layout data set, or on a collection itself (--self)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from kbindex import config as cfg
from kbindex.cli.common import common_options, json_option, make_embedder


@click.command("eval")
@click.argument("dataset", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--self", "self_eval", is_flag=True,
              help="Evaluate the collection itself (--collection): its page titles and section "
                   "headings are the queries, their own pages the answers; no DATASET.")
@click.option("--collection", default=cfg.DEFAULT_COLLECTION, envvar=cfg.ENV_COLLECTION, show_default=True,
              help=f"With --self: the collection to evaluate. [env var: {cfg.ENV_COLLECTION}]")
# (common_options reads --collection into settings.collection and checks the name)
@click.option("--sample", type=click.IntRange(min=1), default=200, show_default=True,
              help="With --self: how many titles and headings to use as queries.")
@click.option("--seed", type=int, default=0, show_default=True, help="With --self: the sample's seed.")
@click.option("--split", default="test", show_default=True, help="Which qrels/<split>.tsv to score.")
@click.option("--mode", "modes", multiple=True, type=click.Choice(["hybrid", "vector", "keyword"]),
              help="Modes to evaluate (repeatable); default all three.")
@click.option("--chunk-tokens", type=int, default=cfg.DEFAULT_CHUNK_TOKENS, show_default=True,
              help="Chunk size used to index the corpus (each size gets its own collection).")
@click.option("--overlap", type=int, default=cfg.DEFAULT_OVERLAP, show_default=True,
              help="Chunk overlap used to index the corpus.")
@click.option("--field-weights", metavar="TITLE,HEADINGS,BODY", default=None,
              help="BM25 weights of the keyword index's columns (default: kbindex's own), to compare.")
@click.option("--rrf-k", type=click.IntRange(min=1), default=None,
              help="Reciprocal rank fusion constant of hybrid mode (default: kbindex's own), to compare.")
@functools.partial(common_options, collection=False)
@json_option
def evaluate(dataset, self_eval, sample, seed, split, modes, chunk_tokens, overlap, field_weights,
             rrf_k, as_json, settings):
    """Score retrieval on a BEIR-layout data set: nDCG@10, Recall@10/100, MRR@10, latency.

    DATASET is a folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv. The corpus is
    indexed once into its own collection in --db (named after the data set, model and chunk
    settings) and reused by later runs.

    With --self, no DATASET: a sample of the collection's own page titles and section headings
    are the queries, each judged by the one page it names. The query's words are in that page's
    title or headings, so the figures are an optimistic upper bound, for comparing settings.

    \b
    Example:
      kbindex eval ../shared/data/scifact --db .bench/eval-index
      kbindex eval my-kb-eval --chunk-tokens 128 --mode hybrid --json
      kbindex eval --self --collection docs
    """
    from dataclasses import replace

    from kbindex import evaluate as ev
    from kbindex.chunk import check_config
    from kbindex.errors import UsageError
    from kbindex.search import MODES, search
    from kbindex.store import Index

    if self_eval:
        if dataset is not None:
            raise UsageError("give either DATASET or --self, not both")
        return _evaluate_self(settings, settings.collection, sample, seed, modes, field_weights, rrf_k, as_json)
    if dataset is None:
        raise UsageError("give a DATASET folder (BEIR layout), or --self to evaluate a collection")
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
    tuning = {}
    if field_weights is not None:
        lexical.weights = ev.parse_weights(field_weights)
        tuning["field_weights"] = list(lexical.weights)
    if rrf_k is not None:
        tuning["rrf_k"] = rrf_k

    def searcher(queries, k, mode):
        return search(collection, embedder, queries, k=k, mode=mode, per_doc=1, lexical=lexical,
                      **({"rrf_k": rrf_k} if rrf_k else {}))

    results = ev.evaluate(data, searcher, modes or MODES)
    info = {"dataset": data.name, "split": split, "queries": len(data.queries), "collection": name,
            "model": embedder.name, "chunk_tokens": chunk_tokens, "overlap": overlap,
            "reused": reused, "chunks": collection.count(), **tuning,
            "modes": [r.as_dict() for r in results]}
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"{data.name} ({split}): {len(data.queries)} queries, {info['chunks']} chunks in "
               f"collection {name}{' (reused)' if reused else ''}"
               + "".join(f"; {key.replace('_', ' ')} {value}" for key, value in tuning.items()))
    _eval_table(info["modes"])


def _eval_table(rows) -> None:
    click.echo(f"{'mode':<8} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} {'p50 ms':>8} {'p95 ms':>8}")
    for row in rows:
        click.echo(f"{row['mode']:<8} {row['ndcg@10']:>8.4f} {row['recall@10']:>7.4f} "
                   f"{row['recall@100']:>7.4f} {row['mrr@10']:>7.4f} "
                   f"{row['latency_p50_ms']:>8.1f} {row['latency_p95_ms']:>8.1f}")


def _evaluate_self(settings, name, sample, seed, modes, field_weights, rrf_k, as_json):
    """`kbindex eval --self`: the collection's own titles and headings as judged queries."""
    from dataclasses import replace

    from kbindex import evaluate as ev
    from kbindex.search import MODES, search
    from kbindex.store import Index

    settings = replace(settings, collection=name)
    index = Index.from_settings(settings, name)
    collection = index.collection()
    lexical = index.lagging_keywords()
    data = ev.self_queries(lexical.metadata().values(), name, sample, seed)
    modes = modes or MODES
    embedder = make_embedder(settings, collection.model) if set(modes) - {"keyword"} else None
    if field_weights is not None:
        lexical.weights = ev.parse_weights(field_weights)

    def searcher(queries, k, mode):
        return search(collection, embedder, queries, k=k, mode=mode, per_doc=1, lexical=lexical,
                      **({"rrf_k": rrf_k} if rrf_k else {}))

    results = ev.evaluate(data, searcher, modes)
    info = {"collection": name, "self": True, "queries": len(data.queries), "seed": seed,
            "chunks": collection.count(), "upper_bound": True, "modes": [r.as_dict() for r in results]}
    if as_json:
        click.echo(json.dumps(info))
        return
    click.echo(f"{name} (self): {len(data.queries)} page titles and headings as queries, {info['chunks']} "
               "chunks; an optimistic upper bound (each query's words are in its own page's title or headings)")
    _eval_table(info["modes"])
