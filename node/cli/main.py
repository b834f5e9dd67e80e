"""The ``suanpan`` command line: one entry point for everything a user does."""

from __future__ import annotations

import click

from node.termination import release_termination


class _Main(click.Group):
    """The root group: a path the user named that the system refuses (a name too long, a file
    where a directory must be, no permission) is the command's error, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except OSError as error:
            if error.filename is None:
                raise
            raise click.ClickException(f"{error.filename}: {error.strerror}") from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="suanpan")
@click.pass_context
def main(context: click.Context) -> None:
    """Suanpan: a permissioned BFT ledger for a consortium of banks."""
    # The entry point holds SIGTERM while the process starts (node.termination). A node's
    # start takes it over itself; every other command gets the handler from before back now.
    if context.invoked_subcommand != "start":
        release_termination()


# Subcommands live next to the code they drive; they are registered here, in help order.
from node.cli.app import query_group  # noqa: E402
from node.cli.audit import audit_command, debug_group  # noqa: E402
from node.cli.backup import backup_command, restore_command  # noqa: E402
from node.cli.client import block_command, status_command, tx_group  # noqa: E402
from node.cli.events import events_command  # noqa: E402
from node.cli.keys import keys_group  # noqa: E402
from node.cli.openapi import openapi_command  # noqa: E402
from node.cli.operator import config_group, genesis_group, init_command  # noqa: E402
from node.cli.start import start_command  # noqa: E402
from node.cli.testnet import testnet_group  # noqa: E402
from sims.cli import sim  # noqa: E402

for command in (
    keys_group,
    init_command,
    genesis_group,
    config_group,
    start_command,
    testnet_group,
    status_command,
    tx_group,
    query_group,
    block_command,
    events_command,
    openapi_command,
    audit_command,
    backup_command,
    restore_command,
    debug_group,
    sim,
):
    main.add_command(command)

from network.cli import bench_gossip  # noqa: E402
from node.cli.bench import bench  # noqa: E402
from node.cli.chaos import chaos_command  # noqa: E402
from node.cli.monitor import monitor_group  # noqa: E402

testnet_group.add_command(chaos_command)
bench.add_command(bench_gossip, name="gossip")
main.add_command(bench)
main.add_command(monitor_group)
