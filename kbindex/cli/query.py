"""`query`: search the collection from the command line."""

from __future__ import annotations

import click

from kbindex.cli.common import common_options, json_option, make_embedder, model_warmup


@click.command()
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
    warm = model_warmup(settings, items) if mode != "keyword" else None
    collection = Index.from_settings(settings).collection()
    # --quantize auto follows what the collection holds
    embedder = None
    if mode != "keyword":
        embedder = warm.embedder(collection.model) or make_embedder(settings, collection.model)
    results = search(collection, embedder, items, k=k, where=where_clause, mode=mode, per_doc=per_doc)
    from kbindex.output import render

    fmt = fmt or ("jsonl" if as_json else "table")
    out = click.get_text_stream("stdout")
    click.echo(render(list(zip(items, results)), fmt, tty=out.isatty()), nl=False, color=True)
