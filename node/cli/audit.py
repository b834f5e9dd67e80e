"""``suanpan audit`` and ``suanpan debug state-diff``: offline checks of node homes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from node.apploader import AppLoadError
from node.audit.audit import ITEM_HOME, audit_home
from node.audit.statediff import DIFFERENCES_LISTED_MAX, StateDiffError, diff_homes
from node.cli.progress import progress_bar
from node.genesis import GenesisError

__all__ = ["audit_command", "debug_group"]

# Exit codes: 0 all good, 1 the check found a problem, 2 the home could not be read at all.
EXIT_FAILED = 1
EXIT_UNREADABLE = 2

_HOME = click.Path(file_okay=False, path_type=Path)


@click.command("audit", short_help="Verify a node's stored chain and state offline.")
@click.option("--home", "home", type=_HOME, required=True, help="The node home to audit.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def audit_command(home: Path, as_json: bool) -> None:
    """Verify a node's stored chain and state offline, from genesis.json and data/ alone.

    Checks hash links, commit certificates, block bodies, the transaction index, evidence, and
    replays every block through the apps comparing app hashes, receipts and the final state.
    Names the first height and item that fails; exit code 1 on a failure, 2 when the home
    cannot be read."""
    with progress_bar("audit", quiet=as_json) as report_progress:
        report = audit_home(home, progress=report_progress)
    if as_json:
        click.echo(json.dumps(report.to_json(), sort_keys=True))
    else:
        click.echo(report.render())
    if report.failure is not None:
        sys.exit(EXIT_UNREADABLE if report.failure.item == ITEM_HOME else EXIT_FAILED)


@click.group("debug")
def debug_group() -> None:
    """Tools for operators investigating a node."""


@debug_group.command("state-diff", short_help="List state keys that differ between two nodes.")
@click.option(
    "--home",
    "homes",
    type=_HOME,
    multiple=True,
    required=True,
    help="A node home; give exactly two (A then B).",
)
@click.option(
    "--height",
    type=click.IntRange(min=0),
    default=None,
    help="Compare the states as of this height, by replaying each node's stored blocks "
    "(default: the states the stores hold now).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=DIFFERENCES_LISTED_MAX,
    show_default=True,
    help="List at most this many differing keys (all are counted).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def state_diff_command(
    homes: tuple[Path, ...], height: int | None, limit: int, as_json: bool
) -> None:
    """List the state keys whose values differ between two nodes, grouped by app.

    Exit code 0 when the states are identical, 1 when keys differ, 2 on an error."""
    if len(homes) != 2:
        raise click.UsageError("give exactly two --home options (A and B)")
    try:
        with progress_bar("state-diff", quiet=as_json) as report_progress:
            diff = diff_homes(
                homes[0], homes[1], height=height, listed_max=limit, progress=report_progress
            )
    except (StateDiffError, GenesisError, AppLoadError) as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(EXIT_UNREADABLE)
    if as_json:
        click.echo(json.dumps(diff.to_json(), sort_keys=True))
    else:
        click.echo(diff.render())
    if not diff.identical:
        sys.exit(EXIT_FAILED)
