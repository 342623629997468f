"""Command line: parse options, call the library, format output, map errors to exit codes.

Longer than 500 lines on purpose, for now: it is the command table (option decorators, help text
and output formatting of 18 commands, each a few lines around a library call), and the `serve`
branch adds its commands here in parallel; splitting it into a `cli/` package is one move to
make after that merge, not before.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import sys
from dataclasses import fields, replace
from pathlib import Path

import click

from kbindex import __version__
from kbindex import config as cfg
from kbindex.errors import KbindexError, StoreError, WriteError, disk_full, first_line, full_disk_message


def common_options(func, collection: bool = True, timeout: bool = True):
    """--db, --collection, --model, --device, --backend, --quantize and --chroma-url, each with its
    env var, and --timeout (index has its own: it also bounds fetching, per source)."""

    def collection_option(f):
        if not collection:
            return f
        return click.option("--collection", default=cfg.DEFAULT_COLLECTION, envvar=cfg.ENV_COLLECTION,
                            show_default=True, help=f"Collection name. [env var: {cfg.ENV_COLLECTION}]")(f)

    def timeout_option(f):
        if not timeout:
            return f
        return click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
                            default=cfg.DEFAULT_TIMEOUT, show_default=True,
                            help="Seconds the Chroma server (--chroma-url) may take to connect or "
                                 "answer a request.")(f)

    @click.option("--db", type=click.Path(file_okay=False, path_type=Path), default=cfg.DEFAULT_DB,
                  envvar=cfg.ENV_DB, show_default=True,
                  help=f"Folder of the local index, its ledger and write lock. [env var: {cfg.ENV_DB}]")
    @collection_option
    @click.option("--model", default=cfg.DEFAULT_MODEL, envvar=cfg.ENV_MODEL, show_default=True,
                  help="sentence-transformers model name or folder; the default ships with "
                       f"kbindex. [env var: {cfg.ENV_MODEL}]")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]),
                  default=cfg.DEFAULT_DEVICE, envvar=cfg.ENV_DEVICE, show_default=True,
                  help=f"Where the model runs; auto picks a GPU when present. [env var: {cfg.ENV_DEVICE}]")
    @click.option("--chroma-url", metavar="URL", envvar=cfg.ENV_CHROMA_URL,
                  help="Use the Chroma server at http://HOST:PORT instead of the local store; the "
                       f"ledger and lock stay in --db. [env var: {cfg.ENV_CHROMA_URL}]")
    @click.option("--backend", type=click.Choice(["auto", "torch", "onnx", "openvino"]),
                  default=cfg.DEFAULT_BACKEND, envvar=cfg.ENV_BACKEND, show_default=True,
                  help="Embedding runtime; auto is OpenVINO on CPU (onnx, i.e. ONNX Runtime, where "
                       f"OpenVINO is missing), PyTorch on a GPU. [env var: {cfg.ENV_BACKEND}]")
    @click.option("--quantize", type=click.Choice(["auto", "none", "int8"]), default=cfg.DEFAULT_QUANTIZE,
                  envvar=cfg.ENV_QUANTIZE, show_default=True,
                  help="int8 model (faster, slightly different vectors; static on OpenVINO, dynamic "
                       "on onnx) or none; auto follows the collection, else int8 except on torch. "
                       f"[env var: {cfg.ENV_QUANTIZE}]")
    @timeout_option
    @functools.wraps(func)
    def wrapper(*args, db, model, device, chroma_url, backend, quantize, collection=cfg.DEFAULT_COLLECTION,
                **kwargs):
        if not cfg.valid_collection_name(collection):  # from the option, its env var or kbindex.toml
            from kbindex.errors import UsageError

            raise UsageError(f"invalid --collection {collection!r}: {cfg.COLLECTION_RULE}")
        settings = cfg.Settings(db=db, collection=collection, model=model, device=device,
                                chroma_url=chroma_url or None, backend=backend, quantize=quantize)
        click.get_current_context().meta[SETTINGS_KEY] = settings
        if timeout:
            settings = replace(settings, timeout=kwargs.pop("timeout"))
        return func(*args, settings=settings, **kwargs)

    return wrapper


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")(func)


def wait_option(func):
    return click.option("--wait", is_flag=True,
                        help="If another kbindex is writing to the store, wait for it instead of failing.")(func)


SETTINGS_KEY = "kbindex.settings"  # ctx.meta: the command's Settings, for the disk-full check


class KbindexGroup(click.Group):
    """Turns KbindexError into a one-line message and its exit code.

    Writing can fail anywhere (lock, ledger, keyword index, Chroma, model cache): a store error
    caused by a full disk gets the one disk-full message, and an OSError or sqlite3.Error that no
    write path turned into a KbindexError gets a one-line message too, never a traceback.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KbindexError as exc:
            message = str(exc)
            settings = ctx.meta.get(SETTINGS_KEY)
            # The free-space test is for store errors only; any other error (the model cache's,
            # say) counts as a full disk only when it, or what it was raised from, says so.
            store = isinstance(exc, StoreError) and settings is not None
            if (exc.exit_code == 1 and not getattr(exc, "full", False)
                    and disk_full(exc, settings.db if store else None,
                                  local_store=store and not settings.chroma_url)):
                what = message.split(": ", 1)[0]  # the library's "cannot ... PATH" (or "collection X at PATH")
                message = full_disk_message(what if what.startswith("cannot ") else f"cannot write {what}")
            click.echo(f"kbindex: error: {message}", err=True)
            ctx.exit(exc.exit_code)
        except (OSError, sqlite3.Error) as exc:
            if isinstance(exc, BrokenPipeError):
                raise  # stdout closed early (`kbindex query ... | head`): click exits quietly
            settings = ctx.meta.get(SETTINGS_KEY)
            path = getattr(exc, "filename", None) or (settings.db if settings else None) or "the index"
            error = WriteError.of(path, exc)
            click.echo(f"kbindex: error: {error if error.full else f'{path}: {first_line(exc)}'}", err=True)
            ctx.exit(1)
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


def _notice(message: str) -> None:
    click.echo(f"kbindex: {message}", err=True)


def _embedder(settings, recorded: str | None = None, model: str | None = None, pin: bool = True):
    """The embedder for settings (model: another model name, e.g. the one a collection records);
    with pin, an int8 model is held to the artifact the collection was built with (its index
    folder says), which --rebuild does not need."""
    from kbindex.embedding import load_embedder

    pinned = _pinned_artifact(settings, recorded) if pin else None
    embedder = load_embedder(model or settings.model, settings.device, settings.backend, settings.quantize,
                             None, recorded, fallback_dir=settings.model_fallback, pinned=pinned)
    if hasattr(embedder, "notice"):  # the once-per-machine export and quantization take a while
        embedder.notice = _notice
    return embedder


def _warmup(settings, queries):
    """A ModelWarmup for the model the index folder records for this collection (None: none)."""
    from kbindex.embedding.modelcache import recorded_artifact, scope_key
    from kbindex.warmup import ModelWarmup

    try:
        entry = recorded_artifact(settings.db, scope_key(settings.collection, settings.chroma_url))
    except Exception:  # an unreadable record: the query loads its model the usual way
        entry = None
    return ModelWarmup(entry.get("model") if entry else None, queries,
                       lambda model: _embedder(settings, model))


def _pinned_artifact(settings, recorded: str | None) -> dict | None:
    from kbindex.embedding.modelcache import recorded_artifact, scope_key

    entry = recorded_artifact(settings.db, scope_key(settings.collection, settings.chroma_url))
    return entry if entry and recorded and entry.get("model") == recorded else None


def _record_artifact(settings, embedder, rebuilt: bool) -> None:
    """Note in the index folder which prepared model the collection's vectors came from. A rebuilt
    collection whose vectors all came from the embedding cache (the model was not loaded) is held
    to no model until a run embeds with one."""
    from kbindex.embedding.modelcache import forget_collection, record_use, scope_key

    scope = scope_key(settings.collection, settings.chroma_url)
    artifact = getattr(embedder, "artifact", None)
    try:
        if artifact is not None:
            record_use(settings.db, scope, embedder.name, artifact)
        elif rebuilt:
            forget_collection(settings.db, scope)
    except OSError as exc:
        _notice(f"cannot record the model artifact in {settings.db}: {exc.strerror or exc}")


def _recorded_model(settings) -> str | None:
    """The model identity the collection records, when it exists (--quantize auto follows it)."""
    from kbindex.store import Index

    index = Index.from_settings(settings)
    if settings.quantize != "auto" or not index.exists():
        return None
    return index.collection().model


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
        click.option("--trust-lastmod", is_flag=True,
                     help="Do not request a page whose sitemap <lastmod> is not newer than the "
                          "copy indexed."),
        click.option("--user-agent", default=cfg.USER_AGENT, show_default="kbindex/VERSION (+URL)",
                     help="User-Agent header; its first word is matched against robots.txt."),
        click.option("--allow-private", is_flag=True,
                     help="Allow loopback and private addresses even when the start host is public."),
        click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'",
                     help="Send this header to the URL sources' own origins only (repeatable); "
                          "${VAR} in VALUE is read from the environment. Shown as *** everywhere."),
        click.option("--cookies", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                     help="Send the cookies of this Netscape cookies.txt file (a browser export) to "
                          "the URL sources' own origins only."),
        click.option("--render", type=click.Choice(["never", "auto", "always"]), default=None,
                     envvar="KBINDEX_RENDER",
                     help="Run pages' JavaScript in headless Chromium: auto renders app shells "
                          "(scripts, almost no text). [default: auto when Chromium is installed "
                          "(make install-browser), else never] [env var: KBINDEX_RENDER]"),
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
              help="Seconds to wait for a server (a site, or the Chroma server) to connect or send data.")
@click.option("--max-bytes", type=int, default=cfg.DEFAULT_MAX_BYTES, show_default=True,
              help="Largest page or file read, in bytes after decompression.")
@crawl_options
@click.option("--follow-links", is_flag=True,
              help="In folders, follow symbolic links that lead outside the folder (skipped and "
                   "reported otherwise).")
@click.option("--no-prune", is_flag=True,
              help="Keep the chunks of sources that are gone (deleted files, 404/410 pages).")
@click.option("--rebuild", is_flag=True,
              help="Re-embed everything into a new collection (e.g. with a new --model), then swap "
                   "it in; without SOURCE, the sources in the config file or the ledger.")
@wait_option
@click.option("--workers", type=click.IntRange(1, 64), default=None, envvar="KBINDEX_WORKERS",
              help="Processes that extract article text (1: in the indexing process). "
                   "[default: one per core, at most 8] [env var: KBINDEX_WORKERS]")
@click.option("-q", "--quiet", is_flag=True, help="No progress display; only problems and the summary.")
@click.option("-v", "--verbose", is_flag=True, help="Log each page's fate (indexed, unchanged, skipped...).")
@functools.partial(common_options, timeout=False)
@json_option
@click.pass_context
def index(ctx, sources, urls_file, dry_run, no_prune, rebuild, wait, workers, quiet, verbose,
          as_json, settings, **options):
    """Index folders, files, sites, sitemaps or feeds into the collection, keeping it in sync.

    SOURCE is a folder (searched recursively for .html .htm .md .markdown .txt .rst .pdf
    .docx), a single file, or an http(s) URL: a site is crawled from that page, a sitemap
    or RSS/Atom feed has its pages indexed. Unchanged sources are skipped, changed ones
    replaced, and sources gone from a folder or site removed. With no SOURCE, every
    source declared in kbindex.toml is indexed (--collection NAME: just that collection).

    \b
    Example:
      kbindex index data/sample-kb https://kb.example.com/
      kbindex index https://kb.example.com/sitemap.xml --max-pages 500
      kbindex index --dry-run https://kb.example.com/docs/ --depth 2
      kbindex index --rebuild --model path/to/other-model
    """
    from kbindex.indexing.project import IndexOptions, Run, plan_runs
    from kbindex.indexing.sources import read_url_list

    args = list(sources) + (read_url_list(urls_file) if urls_file is not None else [])
    if args or (rebuild and ctx.obj is None):
        runs = [Run(settings, tuple(args), IndexOptions.of(options))]
    else:
        if ctx.obj is None:
            from kbindex.errors import UsageError

            raise UsageError("give at least one SOURCE (a folder, a file or an http(s) URL), "
                             "or declare sources in kbindex.toml (see data/kbindex.example.toml)")
        explicit = {name for name in list(options) + ["collection", "model"]
                    if ctx.get_parameter_source(name) in _EXPLICIT}
        runs = plan_runs(ctx.obj, settings, IndexOptions.of(options), explicit)
    embedders: dict = {}
    total = None
    for run in runs:
        # index's --timeout (per source in kbindex.toml) bounds the Chroma client too
        run = replace(run, settings=replace(run.settings, timeout=run.options.timeout))
        recorded = _recorded_model(run.settings)
        key = (run.settings.model, recorded)
        pinned = None if rebuild else _pinned_artifact(run.settings, recorded)
        key = (*key, pinned and pinned["key"])
        embedder = embedders.get(key)
        if embedder is None:
            embedder = embedders[key] = _embedder(run.settings, recorded, pin=not rebuild)
        summary = _index_run(run, embedder, dry_run=dry_run, prune=not no_prune, rebuild=rebuild,
                             wait=wait, workers=workers, quiet=quiet, verbose=verbose, as_json=as_json)
        if not dry_run:
            _record_artifact(run.settings, embedder, rebuild)
        total = summary if total is None else total.merge(summary)
    if as_json:
        click.echo(json.dumps(total.as_dict()))
    else:
        verb = "would index" if dry_run else "indexed"
        click.echo(
            f"sources {total.sources}  {verb} {total.indexed}  unchanged {total.unchanged}  "
            f"skipped {total.skipped}  failed {total.failed}  pruned {total.pruned}  "
            f"chunks {'planned' if dry_run else 'written'} {total.chunks_added} "
            f"(embedded {total.chunks_embedded})  deleted {total.chunks_deleted}"
        )
        if total.discovered:
            by = ", ".join(f"{k} {v}" for k, v in total.as_dict()["skipped_by"].items())
            unmodified = f" ({total.not_modified} not modified)" if total.not_modified else ""
            click.echo(f"crawl: discovered {total.discovered}  fetched {total.fetched}{unmodified}"
                       + (f"  skipped: {by}" if by else ""))
    if total.failed:
        sys.exit(1)


_EXPLICIT = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)


def _index_run(run, embedder, *, dry_run, prune, rebuild, wait, workers, quiet, verbose, as_json):
    """One `index` over some sources with one set of options; returns its Summary."""
    from kbindex.chunk import check_config
    from kbindex.crawl import CrawlOptions
    from kbindex.credentials import Credentials
    from kbindex.fetch import Fetcher
    from kbindex.indexing.maintenance import rebuild as rebuild_collection
    from kbindex.indexing.runner import Indexer, Summary
    from kbindex.indexing.runner import dry_run as plan
    from kbindex.indexing.sources import parse_sources
    from kbindex.progress import Progress
    from kbindex.records import Failed, Pruned, Skipped
    from kbindex.render import Renderer, resolve_mode

    o = run.options
    settings = run.settings
    progress = Progress(live=False if (as_json or verbose) else None, quiet=quiet)
    credentials = Credentials.for_sources(run.sources, o.headers, o.cookies)
    fetcher = Fetcher(timeout=o.timeout, max_bytes=o.max_bytes, user_agent=o.user_agent,
                      retries=o.retries, delay=o.delay, allow_private=o.allow_private,
                      credentials=credentials)
    render = resolve_mode(o.render)
    renderer = Renderer(fetcher) if render != "never" else None  # the browser starts when needed
    crawl = CrawlOptions(
        scope=o.scope, include=o.include, exclude=o.exclude, depth=o.depth,
        max_pages=o.max_pages, max_time=o.max_time, robots=not o.ignore_robots,
        concurrency=o.concurrency, allow_private=o.allow_private, on_progress=progress.crawl,
        trust_lastmod=o.trust_lastmod, render=render, renderer=renderer,
    )
    parsed = parse_sources(run.sources, crawl, o.follow_links) if run.sources else None
    config = check_config(o.chunk_tokens, o.overlap, embedder.max_tokens)  # no model load

    def on_event(event):
        if credentials:  # a server may echo a secret back in an error message
            event = replace(event, **{f.name: credentials.redact(getattr(event, f.name))
                                      for f in fields(event) if isinstance(getattr(event, f.name), str)})
        progress.event(event)
        if isinstance(event, (Failed, Skipped, Pruned)) or verbose:
            progress.message(f"{event.what}: {event.source}" + (f": {event.detail}" if event.detail else ""))

    try:
        if dry_run:
            summary = Summary()
            with progress:
                for entry in plan(parsed, fetcher, embedder.count_tokens, config, summary, o.max_bytes,
                                  workers):
                    if as_json:
                        click.echo(json.dumps({"action": entry.action, "source": entry.source,
                                               "detail": entry.detail, "chunks": entry.chunks,
                                               "kind": entry.kind}))
                    else:
                        extra = f"  ({entry.chunks} chunks)" if entry.action == "index" else ""
                        click.echo(f"{entry.action:<5}  {entry.source}  {entry.detail}{extra}")
            return summary
        common = dict(fetcher=fetcher, max_bytes=o.max_bytes, prune=prune, on_event=on_event,
                      workers=workers)
        with progress:
            if rebuild:
                return rebuild_collection(settings, embedder, config, run.sources, wait=wait,
                                          crawl=crawl, follow_links=o.follow_links, **common)
            with Indexer(settings, embedder, config, wait=wait, **common) as indexer:
                indexer.open()
                return indexer.run(parsed)
    finally:
        if renderer is not None:
            renderer.close()
        fetcher.close()


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@wait_option
@common_options
@json_option
def delete(sources, wait, as_json, settings):
    """Remove SOURCE from the index: a URL or file as listed by 'kbindex sources',
    a folder (everything under it) or a URL prefix (everything starting with it).

    \b
    Example:
      kbindex delete data/sample-kb/printer-offline-windows.html
      kbindex delete https://kb.example.com/old-section/
    """
    from kbindex.indexing.runner import Indexer

    with Indexer(settings, None, wait=wait) as indexer:
        removed = indexer.delete(sources)
    summary = indexer.summary
    if as_json:
        click.echo(json.dumps({"sources": summary.pruned, "chunks_deleted": summary.chunks_deleted,
                               "deleted": removed}))
    else:
        click.echo(f"deleted {summary.pruned} sources, {summary.chunks_deleted} chunks")


@cli.command()
@click.option("--repair", is_flag=True,
              help="Fix what can be fixed: rebuild a damaged vector or keyword index from what kbindex "
                   "holds (no re-embedding), adopt chunks the ledger does not list (delete them only "
                   "when it is the collection's ledger), re-index sources with missing chunks.")
@wait_option
@common_options
@json_option
def verify(repair, wait, as_json, settings):
    """Check the store (vectors read back and searched for), the keyword index and the ledger.

    Exit 0 when consistent, 1 with a report otherwise, 75 when a write is in progress
    (--wait: wait for it, then check).

    \b
    Example:
      kbindex verify
      kbindex verify --repair
    """
    from kbindex.verify import verify as run_verify

    report = run_verify(settings, repair=repair, wait=wait,
                        embedder=lambda model: _embedder(settings, model, model))
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        for line in report.actions:
            click.echo(f"repaired: {line}")
        for line in report.problems:
            click.echo(f"problem: {line}")
        count = len(report.problems)
        state = "consistent" if report.ok else f"{count} problem{'' if count == 1 else 's'}"
        click.echo(f"{state}: {report.sources} sources, {report.chunks} chunks")
    if not report.ok:
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
    from kbindex.store import Index

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
    # keyword mode loads no model; the others load it while chromadb is imported (kbindex.warmup)
    warm = _warmup(settings, items) if mode != "keyword" else None
    collection = Index.from_settings(settings).collection()
    # --quantize auto follows what the collection holds
    embedder = None
    if mode != "keyword":
        embedder = warm.embedder(collection.model) or _embedder(settings, collection.model)
    results = search(collection, embedder, items, k=k, where=where_clause, mode=mode, per_doc=per_doc)
    from kbindex.output import render

    fmt = fmt or ("jsonl" if as_json else "table")
    out = click.get_text_stream("stdout")
    click.echo(render(list(zip(items, results)), fmt, tty=out.isatty()), nl=False, color=True)


@cli.command()
@click.option("--host", default="127.0.0.1", envvar="KBINDEX_HOST", show_default=True,
              help="Address to listen on; any but loopback needs --token. [env var: KBINDEX_HOST]")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, envvar="KBINDEX_PORT", show_default=True,
              help="Port (0: one the system picks). [env var: KBINDEX_PORT]")
@click.option("--token", envvar="KBINDEX_TOKEN", metavar="TOKEN",
              help="Require 'Authorization: Bearer TOKEN' on everything but /healthz and the page's "
                   "static files. [env var: KBINDEX_TOKEN]")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Let web pages from ORIGIN (e.g. https://intranet.example.com) call the API "
                   "(repeatable; default: none).")
@common_options
def serve(host, port, token, cors_origins, settings):
    """Serve search over HTTP: a JSON API, a web page at /, and MCP tools at /mcp.

    Read-only, and always in step with the index: a `kbindex index` run in another process is
    served within seconds after it finishes. --collection is the default collection.

    \b
    Example:
      kbindex serve
      kbindex serve --host 0.0.0.0 --token "$(openssl rand -hex 16)"
    """
    from kbindex.serve.server import check_address
    from kbindex.serve.server import serve as run_server

    check_address(host, token)  # before the model loads: a refusal is instant
    run_server(_reader(settings), host, port, token, tuple(cors_origins))


@cli.command("mcp")
@common_options
def mcp_cmd(settings):
    """Serve the MCP tools (search, get_document, get_chunk, list_collections, list_sources) over stdio.

    For desktop agents that start a process; `kbindex serve` offers the same tools at /mcp.

    \b
    Example (an MCP client's configuration):
      {"mcpServers": {"kbindex": {"command": "kbindex", "args": ["mcp", "--db", "/srv/kb/index"]}}}
    """
    from kbindex.serve.server import serve_stdio

    serve_stdio(_reader(settings))


def _reader(settings):
    """The server's read-only view of the index, with embedders loaded per collection's model."""
    from kbindex.serve.reader import Reader, with_collection

    return Reader(settings, lambda name, model: _embedder(with_collection(settings, name), model))


@cli.command("extract")
@click.argument("source")
@click.option("--timeout", type=float, default=cfg.DEFAULT_TIMEOUT, show_default=True,
              help="Seconds to wait for a server to connect or send data.")
@click.option("--max-bytes", type=int, default=cfg.DEFAULT_MAX_BYTES, show_default=True,
              help="Largest page or file read, in bytes after decompression.")
@json_option
def extract_command(source, timeout, max_bytes, as_json):
    """Show what kbindex would index from one file or URL: metadata, sections, text.

    Nothing is written. SOURCE is a file (.html .md .txt .rst .pdf .docx ...) or an
    http(s) URL.

    \b
    Example:
      kbindex extract https://kb.example.com/printer-offline.html
      kbindex extract manual.pdf --json
    """
    from kbindex.extract import document_dict
    from kbindex.fetch import Fetcher
    from kbindex.indexing.sources import read_document

    with Fetcher(timeout=timeout, max_bytes=max_bytes) as fetcher:
        doc = read_document(source, fetcher, max_bytes)
    data = document_dict(doc)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    facts = {"title": data["title"], "source": data["source"], **data["metadata"]}
    width = max(len(key) for key in facts)
    for key, value in facts.items():
        click.echo(f"{key:<{width}}  {value}")
    for section in data["sections"]:
        anchor = f"  #{section['anchor']}" if section["anchor"] else ""
        click.echo(f"\n## {section['heading'] or '(top)'}{anchor}")
        click.echo(section["text"])


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
    embedder = _embedder(settings)
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


@cli.command()
@common_options
@json_option
def stats(as_json, settings):
    """Show the collection's size, model and location.

    \b
    Example:
      kbindex stats --json
    """
    from kbindex.store import Index

    with Index.from_settings(settings) as index:
        found = index.stats()
    info = {
        "collection": found.collection,
        "documents": found.documents,
        "chunks": found.chunks,
        "model": found.model,
        "dimensions": found.dimensions,
        "store": found.store,
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
    from dataclasses import asdict

    from kbindex.store import Index

    with Index.from_settings(settings) as index:
        rows = [asdict(s) for s in index.sources()]
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
    from kbindex.indexing.transfer import export_jsonl
    from kbindex.store import Index

    collection = Index.from_settings(settings).collection()
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
    The whole file is checked before anything is written: a bad line leaves the target as it was.

    \b
    Example:
      kbindex import helpdesk.jsonl --chroma-url http://search-host:8000
    """
    from dataclasses import replace

    from kbindex.indexing.maintenance import import_chunks
    from kbindex.indexing.transfer import open_export

    export = open_export(file, getattr(file, "name", "<stdin>"))  # every line checked first
    header = export.header

    collection = settings.collection
    if ctx.get_parameter_source("collection") in (click.core.ParameterSource.DEFAULT,
                                                  click.core.ParameterSource.DEFAULT_MAP, None):
        collection = header.collection
    settings = replace(settings, collection=collection, model=header.model)
    result = import_chunks(settings, export, embedder_factory=lambda: _embedder(settings))
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
    from kbindex.store import Index

    index = Index.from_settings(settings)
    rows = []
    for name in index.collection_names():
        with index.sibling(name) as each:
            found = each.stats()
        rows.append({"collection": name, "model": found.model, "documents": found.documents,
                     "chunks": found.chunks, "last_indexed": found.last_indexed})
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(f"no collections in {index.location}")
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
    from kbindex.indexing.maintenance import delete_collection

    if not yes and not click.confirm(f"Delete collection {name!r} and all its chunks?", default=False):
        click.echo("nothing deleted", err=True)
        sys.exit(1)
    delete_collection(settings, name)
    from kbindex.embedding.modelcache import forget_collection, scope_key

    forget_collection(settings.db, scope_key(name, settings.chroma_url))  # its model may be pruned now
    click.echo(f"deleted collection {name!r}")


@cli.group("models", invoke_without_command=True)
@json_option
@click.pass_context
def models_cmd(ctx, as_json):
    """List the prepared models in this machine's model cache: model, kind, size, last used.

    The cache is $KBINDEX_CACHE_DIR, else $XDG_CACHE_HOME/kbindex/models, else
    ~/.cache/kbindex/models. "used by" counts the index folders whose collections were built with
    the artifact.

    \b
    Example:
      kbindex models
      kbindex models prepare
      kbindex models prune --yes
    """
    if ctx.invoked_subcommand is not None:
        return
    from kbindex.embedding.modelcache import cache_root, list_artifacts

    items = list_artifacts()
    if as_json:
        for item in items:
            click.echo(json.dumps(item.as_dict()))
        return
    if not items:
        click.echo(f"no prepared models in {cache_root()}")
        return
    headers = ("model", "kind", "size", "last used", "used by", "name")
    table = [headers]
    for item in items:
        used = item.as_dict()["last_used"]
        table.append((item.model, item.kind + ("" if item.valid else " (damaged)"), _size(item.size),
                      used.replace("T", " ")[:16] if used else "never", str(len(item.users)), item.name))
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    click.echo(f"{cache_root()}:")
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count / 2**10:.0f} KiB"


@models_cmd.command("prune")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def models_prune(yes):
    """Remove prepared models that no collection on this machine uses (asks first unless --yes).

    A model is in use while an index folder that recorded it (in its models.json) still exists and
    names it for one of its collections. Models loaded in the last 10 minutes are kept: a run may
    be using one it has not recorded yet. A removed model is prepared again when next needed.

    \b
    Example:
      kbindex models prune --yes
    """
    import time

    from kbindex.embedding.modelcache import cache_root, leftovers, remove, unused

    recent = time.time() - 600
    doomed = [item for item in unused() if not item.last_used or item.last_used < recent]
    stale = leftovers()
    if not doomed and not stale:
        click.echo(f"nothing to prune in {cache_root()}")
        return
    for item in doomed:
        click.echo(f"  {item.model}  {item.kind}  {_size(item.size)}  {item.name}")
    if stale:
        click.echo(f"  {len(stale)} unfinished preparation folder{'' if len(stale) == 1 else 's'}")
    total = sum(item.size for item in doomed)
    if not yes and not click.confirm(f"Remove these ({_size(total)})?", default=False):
        click.echo("nothing removed", err=True)
        sys.exit(1)
    import shutil

    for item in doomed:
        remove(item)
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    click.echo(f"removed {len(doomed)} prepared model{'' if len(doomed) == 1 else 's'} ({_size(total)})")


@models_cmd.command("prepare")
@functools.partial(common_options, collection=False)
def models_prepare(settings):
    """Prepare the model a new collection would use (ONNX export, int8 calibration), once per machine.

    `make install` runs it, so that the first `kbindex index` starts at once.

    \b
    Example:
      kbindex models prepare
      kbindex models prepare --backend onnx --quantize none
    """
    import time

    start = time.perf_counter()
    embedder = _embedder(settings)
    if not hasattr(embedder, "model_path"):
        click.echo(f"nothing to prepare: {embedder.name} runs on PyTorch as it is")
        return
    embedder.embed(["kbindex"])  # prepares the model, and compiles it once (OpenVINO keeps the kernels)
    click.echo(f"ready: {embedder.name} ({embedder.artifact.manifest['kind']}) in {embedder.artifact.path} "
               f"({time.perf_counter() - start:.1f} s)")


def main():
    cli(prog_name="kbindex")
