"""Command line: parse options, call the library, format output, map errors to exit codes.

The group and `main` live here; each module of this package holds a few commands (common.py the
options and helpers they share) and imports only click and config at import time, so that
`kbindex --help` stays instant: the library is imported inside each command.
"""

from __future__ import annotations

import click

from kbindex import __version__
from kbindex.cli import evaluate, info, maintenance, models, query, serve
from kbindex.cli import index as index_commands
from kbindex.cli.common import KbindexGroup


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


for _command in (index_commands.index, index_commands.extract_command, maintenance.delete, maintenance.verify,
                 maintenance.export_cmd, maintenance.import_cmd, query.query, serve.serve, serve.mcp_cmd,
                 evaluate.evaluate, info.stats, info.sources, info.collections_cmd, models.models_cmd):
    cli.add_command(_command)


def main():
    cli(prog_name="kbindex")
