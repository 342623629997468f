"""What an index holds: stats, sources, and the collections group (list, delete)."""

from __future__ import annotations

import json
import sys

import click

from kbindex.cli.common import common_options, json_option


@click.command()
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


@click.command()
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


@click.group("collections", invoke_without_command=True)
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
