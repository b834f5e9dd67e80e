"""``suanpan keys``: generate and inspect ed25519 key files."""

from __future__ import annotations

from pathlib import Path

import click

from node.home import promote_next_key, write_next_key
from node.keys import KeyFileError, address_of, generate_private_key, load_key_file, save_key_file

__all__ = ["keys_group"]


@click.group("keys")
def keys_group() -> None:
    """Generate and inspect ed25519 key files."""


@keys_group.command("new")
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


@keys_group.command("show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keys_show(path: Path) -> None:
    """Print the public key and address of the key file at PATH."""
    try:
        key = load_key_file(path)
    except KeyFileError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"public_key {key.public_key.hex()}")
    click.echo(f"address    {address_of(key.public_key)}")


@keys_group.command(
    "rotate", short_help="Rotate a node's validator or node key around the governance vote."
)
@click.option("--home", "home", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--node-key",
    is_flag=True,
    help="Rotate the node (p2p) key instead of the validator (consensus) key.",
)
@click.option(
    "--finish",
    is_flag=True,
    help="The rotation is in force on chain: the next key replaces the current one.",
)
def keys_rotate(home: Path, node_key: bool, finish: bool) -> None:
    """Rotate a node's validator or node key in two steps around the governance vote.

    Without --finish: write the next key (validator_key.next.json, or node_key.next.json) and
    print it for the banks' `rotate_validator_key` proposal. A running node picks a next
    validator key up at its next block and signs with it from the height the chain puts it
    in force. With --finish, once that height has passed: the next key replaces the current
    one, which is overwritten (a retired key must never sign again). A rotated node key is
    used from the node's next start: restart it once the rotation is decided.
    """
    try:
        key = (
            promote_next_key(home, node_key=node_key)
            if finish
            else write_next_key(home, node_key=node_key)
        )
    except KeyFileError as error:
        raise click.ClickException(str(error)) from None
    kind = "node key" if node_key else "validator key"
    option = "--node-key" if node_key else "--validator-key"
    if finish:
        click.echo(f"{kind} of {home} is now {key.public_key.hex()}")
        if node_key:
            click.echo(f"restart the node: suanpan start --home {home}")
        return
    click.echo(f"next {kind} {key.public_key.hex()}")
    click.echo(
        "next: a bank proposes it and the others vote, e.g. suanpan tx membership propose"
        f" --action rotate_validator_key --validator-name NAME {option} {key.public_key.hex()}"
        " --key BANK_KEY_FILE --node NODE"
    )
    click.echo(
        f"then, once it is in force: suanpan keys rotate --home {home}"
        f"{' --node-key' if node_key else ''} --finish"
    )
