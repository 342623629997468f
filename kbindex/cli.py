"""Command line: parse options, call the library, format output, map errors to exit codes."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from kbindex import __version__
from kbindex import config as cfg
from kbindex.errors import KbindexError


def common_options(func, collection: bool = True):
    """--db, --collection, --model and --device, each with its environment variable."""

    def collection_option(f):
        if not collection:
            return f
        return click.option("--collection", default=cfg.DEFAULT_COLLECTION, envvar=cfg.ENV_COLLECTION,
                            show_default=True, help=f"Collection name. [env var: {cfg.ENV_COLLECTION}]")(f)

    @click.option("--db", type=click.Path(file_okay=False, path_type=Path), default=cfg.DEFAULT_DB,
                  envvar=cfg.ENV_DB, show_default=True,
                  help=f"Folder of the local index. [env var: {cfg.ENV_DB}]")
    @collection_option
    @click.option("--model", default=cfg.DEFAULT_MODEL, envvar=cfg.ENV_MODEL, show_default=True,
                  help="sentence-transformers model name or folder; the default ships with "
                       f"kbindex. [env var: {cfg.ENV_MODEL}]")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]),
                  default=cfg.DEFAULT_DEVICE, envvar=cfg.ENV_DEVICE, show_default=True,
                  help=f"Where the model runs; auto picks a GPU when present. [env var: {cfg.ENV_DEVICE}]")
    @functools.wraps(func)
    def wrapper(*args, db, model, device, collection=cfg.DEFAULT_COLLECTION, **kwargs):
        settings = cfg.Settings(db=db, collection=collection, model=model, device=device)
        return func(*args, settings=settings, **kwargs)

    return wrapper


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")(func)


class KbindexGroup(click.Group):
    """Turns KbindexError into a one-line message and its exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KbindexError as exc:
            click.echo(f"kbindex: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("kbindex: interrupted", err=True)
            ctx.exit(130)


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
    from kbindex.project import find_config, load_config

    path = find_config(config_path)
    config = load_config(path) if path else None
    ctx.obj = config
    if config is not None:
        # Config values rank below options and environment variables: click's default_map.
        ctx.default_map = {name: dict(config.defaults) for name in cli.commands}
        ctx.default_map["collections"] = {
            "delete": dict(config.defaults), **dict(config.defaults)
        }


def _embedder(settings):
    from kbindex.embed import load_embedder

    return load_embedder(settings.model, settings.device)


@cli.command()
@click.argument("sources", nargs=-1)
@click.option("--chunk-tokens", type=int, default=cfg.DEFAULT_CHUNK_TOKENS, show_default=True,
              help="Largest chunk in model tokens, context line and special tokens included.")
@click.option("--overlap", type=int, default=cfg.DEFAULT_OVERLAP, show_default=True,
              help="Tokens repeated from the end of one chunk at the start of the next.")
@click.option("--timeout", type=float, default=cfg.DEFAULT_TIMEOUT, show_default=True,
              help="Seconds to wait for a server to connect or send data.")
@click.option("--max-bytes", type=int, default=cfg.DEFAULT_MAX_BYTES, show_default=True,
              help="Largest page or file read, in bytes after decompression.")
@common_options
@json_option
def index(sources, chunk_tokens, overlap, timeout, max_bytes, as_json, settings):
    """Index folders, files or URLs into the collection.

    SOURCE is a folder (searched recursively for .html .htm .md .markdown .txt .rst),
    a single file, or an http(s) URL. Re-indexing a source replaces its chunks.

    \b
    Example:
      kbindex index data/sample-kb https://kb.example.com/article.html
    """
    from kbindex.chunk import check_config
    from kbindex.fetch import Fetcher
    from kbindex.index import Indexer, parse_sources

    parsed = parse_sources(sources)
    fetcher = Fetcher(timeout=timeout, max_bytes=max_bytes)
    indexer = Indexer(settings, _embedder(settings), fetcher=fetcher, max_bytes=max_bytes)
    indexer.check_model()
    indexer.config = check_config(chunk_tokens, overlap, indexer.embedder.max_tokens)
    indexer.open()

    def on_event(what, source, detail):
        if what in ("failed", "skipped"):
            click.echo(f"{what}: {source}: {detail}", err=True)

    indexer.on_event = on_event
    try:
        summary = indexer.run(parsed)
    finally:
        fetcher.close()
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
    else:
        click.echo(
            f"sources {summary.sources}  indexed {summary.indexed}  unchanged {summary.unchanged}  "
            f"skipped {summary.skipped}  failed {summary.failed}  "
            f"chunks written {summary.chunks_added}  deleted {summary.chunks_deleted}"
        )
    if summary.failed:
        sys.exit(1)


@cli.command()
@click.argument("text", required=False)
@click.option("-k", "k", type=int, default=5, show_default=True, help="Hits per query.")
@click.option("--mode", type=click.Choice(["hybrid", "vector", "keyword"]), default="hybrid",
              show_default=True,
              help="hybrid: keyword and semantic rankings fused; vector: semantic only; "
                   "keyword: BM25 only.")
@click.option("--per-doc", type=int, default=1, show_default=True,
              help="At most N hits from one document; 0 returns every matching chunk.")
@click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
              help="Only chunks whose metadata KEY equals VALUE (repeatable; all must match).")
@click.option("--queries", type=click.File("r"), help="File of queries, one a line ('-' is stdin).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "jsonl", "csv"]), default=None,
              help="Output format (default: table; --json means jsonl: one object per query per line).")
@common_options
@json_option
def query(text, k, mode, per_doc, where, queries, fmt, as_json, settings):
    """Search the collection for TEXT.

    \b
    Example:
      kbindex query "container app cannot find its managed identity" -k 3
      kbindex query "0x80070002" --mode keyword
      kbindex query --queries questions.txt --json --per-doc 0
    """
    from kbindex.errors import UsageError
    from kbindex.search import parse_where, search
    from kbindex.store import Store

    if queries is not None and text is not None:
        raise UsageError("give TEXT or --queries, not both")
    if queries is not None:
        items = [line.strip() for line in queries if line.strip()]
        if not items:
            raise UsageError("--queries file has no queries")
    else:
        if text is None or not text.strip():
            raise UsageError("empty query: give some text to search for")
        items = [text]
    where_clause = parse_where(where)
    collection = Store(settings.db).collection(settings.collection)
    embedder = _embedder(settings) if mode != "keyword" else None  # keyword mode loads no model
    results = search(collection, embedder, items, k=k, where=where_clause, mode=mode, per_doc=per_doc)
    from kbindex.output import render

    fmt = fmt or ("jsonl" if as_json else "table")
    out = click.get_text_stream("stdout")
    click.echo(render(list(zip(items, results)), fmt, tty=out.isatty()), nl=False, color=True)


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
    from kbindex.search import MODES, open_lexical, search
    from kbindex.store import Store

    data = ev.load_dataset(dataset, split)
    embedder = _embedder(settings)
    config = check_config(chunk_tokens, overlap, embedder.max_tokens)
    name = ev.collection_name(data.name, embedder.name, chunk_tokens, overlap)
    settings = replace(settings, collection=name)
    _, reused = ev.ensure_indexed(data, settings, embedder, config,
                                  progress=lambda line: click.echo(line, err=True))
    collection = Store(settings.db).collection(name)

    lexical = open_lexical(collection)

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


@cli.command()
@common_options
@json_option
def stats(as_json, settings):
    """Show the collection's size, model and location.

    \b
    Example:
      kbindex stats --json
    """
    from kbindex.store import Store

    store = Store(settings.db)
    collection = store.collection(settings.collection)
    sources = {m.metadata.get("source") for m in collection.scan()}
    info = {
        "collection": collection.name,
        "documents": len(sources),
        "chunks": collection.count(),
        "model": collection.model,
        "dimensions": collection.dimension,
        "store": store.location,
    }
    if as_json:
        click.echo(json.dumps(info))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            click.echo(f"{key:<{width}}  {value}")


@cli.command()
@common_options
@json_option
def sources(as_json, settings):
    """List the indexed documents: source, title, chunks, when indexed.

    \b
    Example:
      kbindex sources --json
    """
    from kbindex.store import Store

    collection = Store(settings.db).collection(settings.collection)
    docs: dict[str, dict] = {}
    for match in collection.scan():
        meta = match.metadata
        entry = docs.setdefault(
            meta.get("source", ""),
            {"source": meta.get("source", ""), "title": meta.get("title", ""), "chunks": 0,
             "indexed_at": meta.get("indexed_at")},
        )
        entry["chunks"] += 1
    rows = sorted(docs.values(), key=lambda d: d["source"])
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        click.echo(f"{row['chunks']:>5}  {row['indexed_at'] or '':<20}  {row['title']}\n       {row['source']}")


@cli.command("export")
@click.option("-o", "--output", type=click.File("w", encoding="utf-8"), default="-",
              help="File to write (default: stdout).")
@click.option("--with-vectors", is_flag=True, help="Include each chunk's embedding, so import needs no model.")
@common_options
def export_cmd(output, with_vectors, settings):
    """Write the collection's chunks with metadata as JSON Lines.

    The first line is a header naming the collection, model and dimension; each further line
    is one chunk. Streams: memory stays flat however large the collection.

    \b
    Example:
      kbindex export --with-vectors -o helpdesk.jsonl
    """
    from kbindex.store import Store
    from kbindex.transfer import export_jsonl

    collection = Store(settings.db).collection(settings.collection)
    n = export_jsonl(collection, output, with_vectors=with_vectors)
    if output is not sys.stdout and getattr(output, "name", "<stdout>") != "<stdout>":
        click.echo(f"exported {n} chunks from {collection.name!r} to {output.name}", err=True)


@cli.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@common_options
@json_option
@click.pass_context
def import_cmd(ctx, file, as_json, settings):
    """Read a `kbindex export` file into a collection.

    The collection is the one named in the file unless --collection is given. With vectors in
    the file nothing is re-embedded; without, the chunks are embedded with the file's model.

    \b
    Example:
      kbindex import helpdesk.jsonl --chroma-url http://search-host:8000
    """
    from kbindex.index import import_chunks
    from kbindex.transfer import read_export

    header, rows = read_export(file, getattr(file, "name", "<stdin>"))
    if ctx.get_parameter_source("collection") in (click.core.ParameterSource.DEFAULT, None):
        settings = cfg.Settings(db=settings.db, collection=header.collection, model=header.model,
                                device=settings.device)
    else:
        settings = cfg.Settings(db=settings.db, collection=settings.collection, model=header.model,
                                device=settings.device)
    result = import_chunks(settings, header, rows, embedder_factory=lambda: _embedder(settings))
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"imported {result['chunks']} chunks into {result['collection']!r} "
                   f"({result['embedded']} embedded, model {result['model']})")


@cli.group("collections", invoke_without_command=True)
@common_options
@json_option
@click.pass_context
def collections_cmd(ctx, as_json, settings):
    """List collections with their model, documents, chunks and last indexed time.

    \b
    Example:
      kbindex collections
      kbindex collections delete old-kb --yes
    """
    if ctx.invoked_subcommand is not None:
        return
    from kbindex.store import Store

    store = Store(settings.db)
    rows = []
    for name in store.collection_names():
        collection = store.collection(name)
        sources, last = set(), ""
        for match in collection.scan():
            sources.add(match.metadata.get("source"))
            last = max(last, str(match.metadata.get("indexed_at", "")))
        rows.append({"collection": name, "model": collection.model, "documents": len(sources),
                     "chunks": collection.count(), "last_indexed": last or None})
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(f"no collections in {store.location}")
        return
    headers = ("collection", "model", "documents", "chunks", "last_indexed")
    table = [headers] + [tuple("" if r[h] is None else str(r[h]) for h in headers) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@collections_cmd.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@common_options
def collections_delete(name, yes, settings):
    """Delete collection NAME and all its chunks (asks first unless --yes).

    \b
    Example:
      kbindex collections delete old-kb --yes
    """
    from kbindex.index import delete_collection

    if not yes and not click.confirm(f"Delete collection {name!r} and all its chunks?", default=False):
        click.echo("nothing deleted", err=True)
        sys.exit(1)
    delete_collection(settings, name)
    click.echo(f"deleted collection {name!r}")


def main():
    cli(prog_name="kbindex")
