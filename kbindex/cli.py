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


def common_options(func):
    """--db, --collection, --model, --device, --backend, --quantize, each with its environment variable."""

    @click.option("--db", type=click.Path(file_okay=False, path_type=Path), default=cfg.DEFAULT_DB,
                  envvar=cfg.ENV_DB, show_default=True,
                  help=f"Folder of the local index. [env var: {cfg.ENV_DB}]")
    @click.option("--collection", default=cfg.DEFAULT_COLLECTION, envvar=cfg.ENV_COLLECTION,
                  show_default=True, help=f"Collection name. [env var: {cfg.ENV_COLLECTION}]")
    @click.option("--model", default=cfg.DEFAULT_MODEL, envvar=cfg.ENV_MODEL, show_default=True,
                  help="sentence-transformers model name or folder; the default ships with "
                       f"kbindex. [env var: {cfg.ENV_MODEL}]")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]),
                  default=cfg.DEFAULT_DEVICE, envvar=cfg.ENV_DEVICE, show_default=True,
                  help=f"Where the model runs; auto picks a GPU when present. [env var: {cfg.ENV_DEVICE}]")
    @click.option("--backend", type=click.Choice(["auto", "torch", "onnx"]), default=cfg.DEFAULT_BACKEND,
                  envvar=cfg.ENV_BACKEND, show_default=True,
                  help="Embedding runtime; auto is ONNX Runtime on CPU, PyTorch on a GPU. "
                       f"[env var: {cfg.ENV_BACKEND}]")
    @click.option("--quantize", type=click.Choice(["auto", "none", "int8"]), default=cfg.DEFAULT_QUANTIZE,
                  envvar=cfg.ENV_QUANTIZE, show_default=True,
                  help="int8 ONNX model (faster, slightly different vectors) or none; auto follows the "
                       f"collection, else int8 on ONNX. [env var: {cfg.ENV_QUANTIZE}]")
    @functools.wraps(func)
    def wrapper(*args, db, collection, model, device, backend, quantize, **kwargs):
        settings = cfg.Settings(db=db, collection=collection, model=model, device=device,
                                backend=backend, quantize=quantize)
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
def cli():
    """Index a knowledge base into Chroma and search it.

    \b
    Example:
      kbindex index data/sample-kb
      kbindex query "my chat app will not start with roaming profiles"
    """


def _embedder(settings, recorded: str | None = None):
    from kbindex.embed import load_embedder

    return load_embedder(settings.model, settings.device, settings.backend, settings.quantize,
                         settings.onnx_cache, recorded)


def _recorded_model(settings) -> str | None:
    """The model identity the collection records, when it exists (--quantize auto follows it)."""
    from kbindex.store import Store

    store = Store(settings.db)
    if settings.quantize != "auto" or settings.collection not in store.collection_names():
        return None
    return store.collection(settings.collection).model


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
    indexer = Indexer(settings, _embedder(settings, _recorded_model(settings)), fetcher=fetcher,
                      max_bytes=max_bytes)
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
@click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
              help="Only chunks whose metadata KEY equals VALUE (repeatable; all must match).")
@click.option("--queries", type=click.File("r"), help="File of queries, one a line ('-' is stdin).")
@common_options
@json_option
def query(text, k, where, queries, as_json, settings):
    """Search the collection for TEXT.

    \b
    Example:
      kbindex query "container app cannot find its managed identity" -k 3
      kbindex query --queries questions.txt --json
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
    results = search(collection, _embedder(settings, collection.model), items, k=k, where=where_clause)
    for q, hits in zip(items, results, strict=True):
        if as_json:
            click.echo(json.dumps({"query": q, "hits": [_hit_json(h) for h in hits]}))
        else:
            _print_hits(q, hits, many=len(items) > 1)


def _hit_json(hit) -> dict:
    return {
        "rank": hit.rank,
        "score": hit.score,
        "id": hit.id,
        "source": hit.source,
        "title": hit.title,
        "section": hit.section,
        "text": hit.text,
        "anchor": hit.anchor,
    }


def _print_hits(q, hits, many: bool) -> None:
    if many:
        click.echo(f"# {q}")
    if not hits:
        click.echo("no hits")
    for hit in hits:
        where = f" > {hit.section}" if hit.section else ""
        click.echo(f"{hit.rank:>2}. {hit.score:.3f}  {hit.title}{where}")
        click.echo(f"    {hit.source}")
        snippet = " ".join(hit.text.split())
        click.echo(f"    {snippet[:240]}{'…' if len(snippet) > 240 else ''}")
    if many:
        click.echo()


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


def main():
    cli(prog_name="kbindex")
