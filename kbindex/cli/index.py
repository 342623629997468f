"""`index` (with its crawl options) and `extract`: what kbindex reads from sources."""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import fields, replace

import click

from kbindex import config as cfg
from kbindex.cli.common import (
    common_options,
    json_option,
    make_embedder,
    pinned_artifact,
    record_artifact,
    recorded_model,
    wait_option,
)


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


@click.command()
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
        recorded = recorded_model(run.settings)
        key = (run.settings.model, recorded)
        pinned = None if rebuild else pinned_artifact(run.settings, recorded)
        key = (*key, pinned and pinned["key"])
        embedder = embedders.get(key)
        if embedder is None:
            embedder = embedders[key] = make_embedder(run.settings, recorded, pin=not rebuild)
        summary = _index_run(run, embedder, dry_run=dry_run, prune=not no_prune, rebuild=rebuild,
                             wait=wait, workers=workers, quiet=quiet, verbose=verbose, as_json=as_json)
        if not dry_run:
            record_artifact(run.settings, embedder, rebuild)
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
    from kbindex.indexing.plan import dry_run as plan
    from kbindex.indexing.runner import Indexer
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
            def print_plan(entry):
                if as_json:
                    click.echo(json.dumps({"action": entry.action, "source": entry.source,
                                           "detail": entry.detail, "chunks": entry.chunks,
                                           "kind": entry.kind}))
                else:
                    extra = f"  ({entry.chunks} chunks)" if entry.action == "index" else ""
                    click.echo(f"{entry.action:<5}  {entry.source}  {entry.detail}{extra}")

            with progress:
                return plan(settings, embedder, config, parsed, fetcher, print_plan, o.max_bytes, workers)
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


@click.command("extract")
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
