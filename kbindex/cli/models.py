"""The `models` group: this machine's cache of prepared models (list, prune, prepare)."""

from __future__ import annotations

import functools
import json
import sys

import click

from kbindex.cli.common import common_options, json_option, make_embedder


@click.group("models", invoke_without_command=True)
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
    embedder = make_embedder(settings)
    if not hasattr(embedder, "model_path"):
        click.echo(f"nothing to prepare: {embedder.name} runs on PyTorch as it is")
        return
    embedder.embed(["kbindex"])  # prepares the model, and compiles it once (OpenVINO keeps the kernels)
    click.echo(f"ready: {embedder.name} ({embedder.artifact.manifest['kind']}) in {embedder.artifact.path} "
               f"({time.perf_counter() - start:.1f} s)")
