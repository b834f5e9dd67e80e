"""``suanpan start --home DIR``: run one node until SIGINT/SIGTERM."""

from __future__ import annotations

from pathlib import Path

import click
import trio

from node.home import HomeError, load_home
from node.logs import configure_logging

__all__ = ["start_command"]


@click.command("start")
@click.option("--home", "home", required=True, type=click.Path(file_okay=False, path_type=Path))
def start_command(home: Path) -> None:
    """Start the node in HOME (config.toml, genesis.json, keys, data/); Ctrl-C stops it."""
    try:
        loaded = load_home(home)
    except HomeError as error:
        for problem in error.problems:
            click.echo(str(problem), err=True)
        raise click.ClickException(
            f"{len(error.problems)} problem(s) in {home}; `suanpan config check --home {home}`"
        ) from None
    configure_logging(loaded.config.log_level, loaded.config.log_format, loaded.log_path())
    from node.runtime import Node, NodeStartError

    try:
        node = Node(loaded)
    except NodeStartError as error:
        raise click.ClickException(str(error)) from None
    trio.run(node.run)
