"""The ``suanpan`` command line: one entry point for everything a user does."""

from __future__ import annotations

from pathlib import Path

import click

from node.keys import KeyFileError, address_of, generate_private_key, load_key_file, save_key_file


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="suanpan")
def main() -> None:
    """Suanpan: a permissioned BFT ledger for a consortium of banks."""


@main.group()
def keys() -> None:
    """Generate and inspect ed25519 key files."""


@keys.command("new")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace an existing key file.")
def keys_new(path: Path, overwrite: bool) -> None:
    """Write a fresh key to PATH (mode 0600) and print its public key."""
    try:
        key = generate_private_key()
        save_key_file(path, key, overwrite=overwrite)
    except KeyFileError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"public_key {key.public_key.hex()}")
    click.echo(f"address    {address_of(key.public_key)}")


@keys.command("show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keys_show(path: Path) -> None:
    """Print the public key and address of the key file at PATH."""
    try:
        key = load_key_file(path)
    except KeyFileError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"public_key {key.public_key.hex()}")
    click.echo(f"address    {address_of(key.public_key)}")


# Subcommands live next to the code they drive; they are registered here, in help order.
from node.app_cli import app_transaction_groups, query_group  # noqa: E402
from node.audit_cli import audit_command, debug_group  # noqa: E402
from node.client_cli import block_command, status_command, tx_group  # noqa: E402
from node.operator_cli import config_group, genesis_group, init_command  # noqa: E402
from node.start_cli import start_command  # noqa: E402
from node.testnet_cli import testnet_group  # noqa: E402
from sims.cli import sim  # noqa: E402

for command in (
    init_command,
    genesis_group,
    config_group,
    start_command,
    testnet_group,
    status_command,
    tx_group,
    query_group,
    block_command,
    audit_command,
    debug_group,
    sim,
):
    main.add_command(command)
for app_group in app_transaction_groups():
    tx_group.add_command(app_group)

from network.cli import bench_gossip  # noqa: E402
from node.bench.cli import bench  # noqa: E402
from node.chaos_cli import chaos_command  # noqa: E402

testnet_group.add_command(chaos_command)
bench.add_command(bench_gossip, name="gossip")
main.add_command(bench)
