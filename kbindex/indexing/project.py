"""The project config file, kbindex.toml: defaults and the collections with their sources.

Precedence is command line > environment variable > config file > built-in default; the config
file's values reach click as its `default_map`, which click ranks exactly so.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from kbindex.config import COLLECTION_RULE, Settings, valid_collection_name
from kbindex.errors import ConfigError

CONFIG_NAME = "kbindex.toml"

# Settings allowed under [defaults]: the options common to every command.
DEFAULT_KEYS: dict[str, type | tuple] = {
    "db": str, "collection": str, "model": str, "device": str, "backend": str,
    "chroma_url": str,
}
# Options a source (and, as defaults for its sources, a collection) may set for `kbindex index`.
SOURCE_KEYS: dict[str, type | tuple] = {
    "chunk_tokens": int, "overlap": int, "timeout": (int, float), "max_bytes": int,
    "scope": str, "include": list, "exclude": list, "depth": int, "max_pages": int,
    "max_time": (int, float), "delay": (int, float), "concurrency": int,
    "ignore_robots": bool, "allow_private": bool, "user_agent": str, "retries": int,
    "trust_lastmod": bool, "follow_links": bool,
    # credentials (values may be "${ENV_VAR}") and JavaScript rendering: kbindex.credentials, render
    "headers": (dict, list), "cookies": str, "render": str,
}
COLLECTION_KEYS = {"model": str, "sources": list, **SOURCE_KEYS}


@dataclass(frozen=True)
class SourceConfig:
    """One declared source: a folder/file path or a URL, with its own options."""

    value: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CollectionConfig:
    name: str
    model: str | None
    options: dict  # defaults for this collection's sources
    sources: tuple[SourceConfig, ...]


@dataclass(frozen=True)
class ProjectConfig:
    path: Path
    defaults: dict
    collections: dict[str, CollectionConfig]

    def collection(self, name: str) -> CollectionConfig:
        if name not in self.collections:
            known = ", ".join(self.collections) or "none"
            raise ConfigError(f"{self.path}: no collection {name!r} declared (declared: {known})")
        return self.collections[name]


def find_config(explicit: str | None, cwd: Path | None = None) -> Path | None:
    """The config file given with --config, else ./kbindex.toml when present."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file not found: {explicit}")
        return path
    candidate = (cwd or Path.cwd()) / CONFIG_NAME
    return candidate if candidate.is_file() else None


def load_config(path: Path) -> ProjectConfig:
    """Parse and validate a kbindex.toml; errors name the file, line and key."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        where = f"{path}:{line.group(1)}" if line else str(path)
        raise ConfigError(f"{where}: invalid TOML: {exc}") from exc
    lines = _Lines(path, text)
    unknown = set(data) - {"defaults", "collections"}
    if unknown:
        key = sorted(unknown)[0]
        raise lines.error(key, key, "unknown section or key (expected [defaults] or [collections.NAME])")
    defaults = _check_table(data.get("defaults", {}), DEFAULT_KEYS, "defaults", lines)
    collections = {}
    raw_collections = data.get("collections", {})
    if not isinstance(raw_collections, dict):
        raise lines.error("collections", "collections", "must be a table of collections")
    for name, raw in raw_collections.items():
        where = f"collections.{name}"
        if not valid_collection_name(name):
            raise lines.error(name, where, f"invalid collection name: {COLLECTION_RULE}")
        if not isinstance(raw, dict):
            raise lines.error(name, where, "must be a table")
        table = _check_table(raw, COLLECTION_KEYS, where, lines)
        sources = []
        for i, item in enumerate(table.pop("sources", [])):
            swhere = f"{where}.sources[{i}]"
            if isinstance(item, str):
                sources.append(SourceConfig(item))
                continue
            if not isinstance(item, dict):
                raise lines.error("sources", swhere, "must be a string or a table with path or url")
            item = dict(item)
            value = item.pop("path", None) or item.pop("url", None)
            if not isinstance(value, str) or not value:
                raise lines.error("sources", swhere, "needs a 'path' or a 'url'")
            options = _check_table(item, SOURCE_KEYS, swhere, lines)
            sources.append(SourceConfig(value, options))
        model = table.pop("model", None)
        collections[name] = CollectionConfig(name, model, table, tuple(sources))
    return ProjectConfig(path, defaults, collections)


def _check_table(table: dict, allowed: dict, where: str, lines: _Lines) -> dict:
    if not isinstance(table, dict):
        raise lines.error(where.rsplit(".", 1)[-1], where, "must be a table")
    for key, value in table.items():
        if key not in allowed:
            raise lines.error(key, f"{where}.{key}", f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        expected = allowed[key]
        types = expected if isinstance(expected, tuple) else (expected,)
        if isinstance(value, bool) and bool not in types:
            ok = False
        else:
            ok = isinstance(value, types)
        if ok and expected is list and not all(isinstance(v, (str, dict)) for v in value):
            ok = False
        if not ok:
            names = " or ".join(t.__name__.replace("str", "string").replace("int", "integer") for t in types)
            raise lines.error(key, f"{where}.{key}", f"must be a {names}, got {value!r}")
    return dict(table)


class _Lines:
    """Finds the line of a key, for error messages (tomllib reports no positions)."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, key: str, where: str) -> int | None:
        # Prefer a line inside the table named by `where`'s prefix; fall back to the first mention.
        table = where.rsplit(".", 1)[0] if "." in where else ""
        table = re.sub(r"\[\d+\]", "", table)
        k = re.escape(key)
        pattern = re.compile(rf"(^|[\s{{,])(\"{k}\"|{k})\s*=|^\s*\[+\s*[\w.\"-]*\b{k}\b[\w.\"-]*\s*\]+")
        current = ""
        first = None
        for n, line in enumerate(self.lines, 1):
            header = re.match(r"^\s*\[+\s*([^\]]+?)\s*\]+", line)
            if header:
                current = header.group(1).replace('"', "")
            if pattern.search(line):
                if first is None:
                    first = n
                if not table or current == table or current.startswith(table) or table.startswith(current):
                    return n
        return first

    def error(self, key: str, where: str, message: str) -> ConfigError:
        line = self.line_of(key, where)
        prefix = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{prefix}: {where}: {message}")


@dataclass(frozen=True)
class IndexOptions:
    """The `index` options a source may set (SOURCE_KEYS), as the command or the config gives them.

    Units: timeout, max_time and delay in seconds; max_bytes in bytes; chunk_tokens and overlap
    in model tokens.
    """

    chunk_tokens: int
    overlap: int
    timeout: float
    max_bytes: int
    scope: str  # "path" | "host"
    include: tuple[str, ...]  # regular expressions
    exclude: tuple[str, ...]
    depth: int | None
    max_pages: int | None
    max_time: float | None
    delay: float
    concurrency: int
    ignore_robots: bool
    allow_private: bool
    user_agent: str | None
    retries: int
    trust_lastmod: bool
    follow_links: bool
    # credentials as given ("Name: value" strings, or a table/list from kbindex.toml; values may
    # say "${ENV_VAR}": kbindex.credentials) and the --render mode (None: kbindex.render decides)
    headers: tuple[str, ...] | dict | list = ()
    cookies: str | None = None
    render: str | None = None

    @classmethod
    def of(cls, values: dict) -> IndexOptions:
        """From option values by name (the command's keyword arguments); TypeError when one is
        missing or unknown."""
        return cls(**{k: tuple(v) if k in ("include", "exclude") else v for k, v in values.items()})

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Run:
    """Sources indexed together into one collection with one set of `index` options."""

    settings: Settings
    sources: tuple[str, ...]
    options: IndexOptions


def plan_runs(config: ProjectConfig, settings: Settings, options: IndexOptions,
              explicit: set[str]) -> list[Run]:
    """The runs that index what the config declares.

    options are the `index` command's option values; explicit names those given on the command
    line or by environment variable, which beat the config's source and collection options.
    Every declared collection is indexed unless the collection was chosen explicitly.
    """
    if "collection" in explicit:
        chosen = [config.collection(settings.collection)]
    else:
        chosen = list(config.collections.values())
    runs: list[Run] = []
    for collection in chosen:
        if not collection.sources:
            raise ConfigError(f"{config.path}: collections.{collection.name} declares no sources")
        model = settings.model if "model" in explicit else (collection.model or settings.model)
        target = replace(settings, collection=collection.name, model=model)
        given = options.as_dict()
        for source in collection.sources:
            merged = dict(given)
            for key in given:
                if key in explicit:
                    continue
                if key in source.options:
                    merged[key] = source.options[key]
                elif key in collection.options:
                    merged[key] = collection.options[key]
            value = source.value
            if "://" not in value and not Path(value).is_absolute():
                value = str((config.path.parent / value).resolve())  # relative to the config file
            merged = IndexOptions.of(merged)
            same = next((r for r in runs if r.settings == target and r.options == merged), None)
            if same is not None:
                runs[runs.index(same)] = Run(target, same.sources + (value,), merged)
            else:
                runs.append(Run(target, (value,), merged))
    return runs
