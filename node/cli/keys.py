"""``suanpan keys``: generate and inspect ed25519 key files."""

from __future__ import annotations

from pathlib import Path

import click

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
