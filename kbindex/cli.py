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
    """--db, --collection, --model and --device, each with its environment variable."""

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
    @functools.wraps(func)
    def wrapper(*args, db, collection, model, device, **kwargs):
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
def cli():
    """Index a knowledge base into Chroma and search it.

    \b
    Example:
      kbindex index data/sample-kb
      kbindex query "my chat app will not start with roaming profiles"
    """


def _embedder(settings):
    from kbindex.embed import load_embedder

    return load_embedder(settings.model, settings.device)


def crawl_options(func):
    """Options of `index` that shape crawling URL sources."""
    options = [
        click.option("--urls", "urls_file", type=click.File("r"), metavar="FILE",
                     help="More URL sources, one a line ('-' is stdin; # starts a comment)."),
        click.option("--scope", type=click.Choice(["path", "host"]), default="path", show_default=True,
                     help="Crawl under the start URL's folder (path) or the whole host."),
        click.option("--include", multiple=True, metavar="REGEX",
                     help="Only fetch URLs matching one of these (repeatable)."),
        click.option("--exclude", multiple=True, metavar="REGEX",
                     help="Never fetch URLs matching any of these (repeatable)."),
        click.option("--depth", type=click.IntRange(min=0), default=None,
                     help="Follow links at most N steps from the start page.  [default: no limit]"),
        click.option("--max-pages", type=click.IntRange(min=1), default=cfg.DEFAULT_MAX_PAGES,
                     show_default=True, help="Page requests per URL source."),
        click.option("--max-time", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Seconds of crawling per URL source.  [default: no limit]"),
        click.option("--delay", type=click.FloatRange(min=0), default=cfg.DEFAULT_DELAY,
                     show_default=True, help="Seconds between requests to one host."),
        click.option("--concurrency", type=click.IntRange(1, 32), default=cfg.DEFAULT_CONCURRENCY,
                     show_default=True, help="Requests in flight at once (all hosts)."),
        click.option("--retries", type=click.IntRange(0, 10), default=cfg.DEFAULT_RETRIES,
                     show_default=True,
                     help="Retries after a timeout, connection error, 429 or 5xx (exponential backoff)."),
        click.option("--ignore-robots", is_flag=True, help="Do not read or obey robots.txt."),
        click.option("--user-agent", default=cfg.USER_AGENT, show_default="kbindex/VERSION (+URL)",
                     help="User-Agent header; its first word is matched against robots.txt."),
        click.option("--allow-private", is_flag=True,
                     help="Allow loopback and private addresses even when the start host is public."),
        click.option("--dry-run", is_flag=True,
                     help="Fetch, extract and chunk, list what would be indexed; write nothing."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


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
@crawl_options
@common_options
@json_option
def index(sources, chunk_tokens, overlap, timeout, max_bytes, urls_file, scope, include, exclude, depth,
          max_pages, max_time, delay, concurrency, retries, ignore_robots, user_agent, allow_private,
          dry_run, as_json, settings):
    """Index folders, files, sites, sitemaps or feeds into the collection.

    SOURCE is a folder (searched recursively for .html .htm .md .markdown .txt .rst),
    a single file, or an http(s) URL: a site is crawled from that page, a sitemap or
    RSS/Atom feed has its pages indexed. Re-indexing a source replaces its chunks.

    \b
    Example:
      kbindex index data/sample-kb https://kb.example.com/
      kbindex index https://kb.example.com/sitemap.xml --max-pages 500
      kbindex index --dry-run https://kb.example.com/docs/ --depth 2
    """
    from kbindex.chunk import check_config
    from kbindex.crawl import CrawlOptions
    from kbindex.fetch import Fetcher
    from kbindex.index import Indexer, Summary, parse_sources, read_url_list
    from kbindex.index import dry_run as plan
    from kbindex.progress import Progress

    sources = list(sources) + (read_url_list(urls_file) if urls_file is not None else [])
    progress = Progress(live=None if not as_json else False)
    options = CrawlOptions(
        scope=scope, include=include, exclude=exclude, depth=depth, max_pages=max_pages,
        max_time=max_time, robots=not ignore_robots, concurrency=concurrency,
        allow_private=allow_private, on_progress=progress.crawl,
    )
    parsed = parse_sources(sources, options)
    fetcher = Fetcher(timeout=timeout, max_bytes=max_bytes, user_agent=user_agent, retries=retries,
                      delay=delay, allow_private=allow_private)
    embedder = _embedder(settings)
    try:
        if dry_run:
            summary = Summary()
            config = check_config(chunk_tokens, overlap, embedder.max_tokens)
            with progress:
                for entry in plan(parsed, fetcher, embedder.count_tokens, config, summary, max_bytes):
                    if as_json:
                        click.echo(json.dumps({"action": entry.action, "source": entry.source,
                                               "detail": entry.detail, "chunks": entry.chunks,
                                               "kind": entry.kind}))
                    else:
                        extra = f"  ({entry.chunks} chunks)" if entry.action == "index" else ""
                        click.echo(f"{entry.action:<5}  {entry.source}  {entry.detail}{extra}")
        else:
            indexer = Indexer(settings, embedder, fetcher=fetcher, max_bytes=max_bytes)
            indexer.check_model()
            indexer.config = check_config(chunk_tokens, overlap, indexer.embedder.max_tokens)
            indexer.open()

            def on_event(what, source, detail):
                progress.event(what, source, detail)
                if what in ("failed", "skipped"):
                    progress.message(f"{what}: {source}: {detail}")

            indexer.on_event = on_event
            with progress:
                summary = indexer.run(parsed)
    finally:
        fetcher.close()
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
    else:
        verb = "would index" if dry_run else "indexed"
        click.echo(
            f"sources {summary.sources}  {verb} {summary.indexed}  unchanged {summary.unchanged}  "
            f"skipped {summary.skipped}  failed {summary.failed}  "
            f"chunks {'planned' if dry_run else 'written'} {summary.chunks_added}  "
            f"deleted {summary.chunks_deleted}"
        )
        if summary.discovered:
            by = ", ".join(f"{k} {v}" for k, v in summary.as_dict()["skipped_by"].items())
            click.echo(f"crawl: discovered {summary.discovered}  fetched {summary.fetched}"
                       + (f"  skipped: {by}" if by else ""))
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
    results = search(collection, _embedder(settings), items, k=k, where=where_clause)
    for q, hits in zip(items, results):
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
