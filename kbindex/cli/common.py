"""What the commands share: the common options, the group that maps errors to exit codes, and
loading the embedder a collection needs."""

from __future__ import annotations

import functools
import sqlite3
from dataclasses import replace
from pathlib import Path

import click

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


def notice(message: str) -> None:
    click.echo(f"kbindex: {message}", err=True)


def make_embedder(settings, recorded: str | None = None, model: str | None = None, pin: bool = True):
    """The embedder for settings (model: another model name, e.g. the one a collection records);
    with pin, an int8 model is held to the artifact the collection was built with (its index
    folder says), which --rebuild does not need."""
    from kbindex.embedding import load_embedder

    pinned = pinned_artifact(settings, recorded) if pin else None
    embedder = load_embedder(model or settings.model, settings.device, settings.backend, settings.quantize,
                             None, recorded, fallback_dir=settings.model_fallback, pinned=pinned)
    if hasattr(embedder, "notice"):  # the once-per-machine export and quantization take a while
        embedder.notice = notice
    return embedder


def model_warmup(settings, queries):
    """A ModelWarmup for the model the index folder records for this collection (None: none)."""
    from kbindex.embedding.modelcache import recorded_artifact, scope_key
    from kbindex.warmup import ModelWarmup

    try:
        entry = recorded_artifact(settings.db, scope_key(settings.collection, settings.chroma_url))
    except Exception:  # an unreadable record: the query loads its model the usual way
        entry = None
    return ModelWarmup(entry.get("model") if entry else None, queries,
                       lambda model: make_embedder(settings, model))


def pinned_artifact(settings, recorded: str | None) -> dict | None:
    from kbindex.embedding.modelcache import recorded_artifact, scope_key

    entry = recorded_artifact(settings.db, scope_key(settings.collection, settings.chroma_url))
    return entry if entry and recorded and entry.get("model") == recorded else None


def record_artifact(settings, embedder, rebuilt: bool) -> None:
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
        notice(f"cannot record the model artifact in {settings.db}: {exc.strerror or exc}")


def recorded_model(settings) -> str | None:
    """The model identity the collection records, when it exists (--quantize auto follows it)."""
    from kbindex.store import Index

    index = Index.from_settings(settings)
    if settings.quantize != "auto" or not index.exists():
        return None
    return index.collection().model
