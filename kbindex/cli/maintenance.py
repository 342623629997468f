"""Commands that change or check an index as a whole: delete, verify, export, import."""

from __future__ import annotations

import json
import sys

import click

from kbindex.cli.common import common_options, json_option, make_embedder, wait_option


@click.command()
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


@click.command()
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
                        embedder=lambda model: make_embedder(settings, model, model))
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


@click.command("export")
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


@click.command("import")
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
    result = import_chunks(settings, export, embedder_factory=lambda: make_embedder(settings))
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"imported {result['chunks']} chunks into {result['collection']!r} "
                   f"({result['embedded']} embedded, model {result['model']})")
