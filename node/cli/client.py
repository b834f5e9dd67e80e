"""Client commands over the API: ``suanpan status``, ``tx send``, ``tx show``, ``block``
(``suanpan query`` and ``suanpan tx <app> <operation>`` are generated in ``node.cli.app``).
Every command takes ``--node host:port`` (default ``$SUANPAN_NODE`` or 127.0.0.1:26657) and
prints JSON."""

from __future__ import annotations

import json
from pathlib import Path

import click

from apps.transaction import TransactionError, sign_transaction
from node.cli.app import TransactionGroup, api_client, resolve_node
from node.client.client import ApiError, Client
from node.jsonvalue import JsonValueError, from_json
from node.keys import KeyFileError, load_key_file

__all__ = ["block_command", "status_command", "tx_group"]

_NODE_OPTION = click.option(
    "--node",
    "node",
    envvar="SUANPAN_NODE",
    default="127.0.0.1:26657",
    show_default=True,
    help="API address of the node (host:port), or a testnet directory (its first node).",
)


def _echo(document: object) -> None:
    click.echo(json.dumps(document, indent=2))


def _client(node: str, key_path: str | None = None) -> Client:
    node, _ = resolve_node(node)
    return api_client(node, key_path)


_KEY_OPTION = click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False),
    help="Key file that signs the request (who is asking)  [default: $SUANPAN_KEY]",
)


def _fail(error: ApiError) -> click.ClickException:
    code = f" [{error.code}]" if error.code else ""
    return click.ClickException(f"{error}{code}")


@click.command("status")
@_NODE_OPTION
def status_command(node: str) -> None:
    """Show the node's height, view, peers, mempool and validators."""
    try:
        _echo(_client(node).status())
    except ApiError as error:
        raise _fail(error) from None


@click.group("tx", cls=TransactionGroup)
def tx_group() -> None:
    """Send transactions and look them up."""


@tx_group.command("send", short_help="Sign and submit any transaction (arguments as JSON).")
@_NODE_OPTION
@click.option("--key", "key_path", required=True, type=click.Path(path_type=Path))
@click.option("--app", "app", required=True, help="App name, e.g. membership.")
@click.option("--op", "operation", required=True, help="Operation, e.g. register_identity.")
@click.option(
    "--args",
    "arguments",
    default="{}",
    help='Arguments as JSON; bytes as {"$bytes": "hex"}.',
)
@click.option("--nonce", type=click.IntRange(min=0), help="Default: asked from the node.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the commit.")
def tx_send(
    node: str,
    key_path: Path,
    app: str,
    operation: str,
    arguments: str,
    nonce: int | None,
    wait: bool,
) -> None:
    """Sign a transaction with KEY and submit it; prints its hash and outcome."""
    try:
        key = load_key_file(key_path)
    except KeyFileError as error:
        raise click.ClickException(str(error)) from None
    try:
        parsed = from_json(json.loads(arguments), "args")
    except (json.JSONDecodeError, JsonValueError) as error:
        raise click.BadParameter(str(error), param_hint="--args") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--args")
    client = _client(node, str(key_path))
    try:
        chain_id = client.chain_id()
        if nonce is None:
            nonce = client.next_nonce(key.public_key)
        try:
            transaction = sign_transaction(
                key,
                chain_id=chain_id,
                app=app,
                operation=operation,
                arguments=parsed,
                nonce=nonce,
            )
        except TransactionError as error:
            raise click.ClickException(str(error)) from None
        result = client.submit(transaction.encoded, wait=wait)
    except ApiError as error:
        raise _fail(error) from None
    _echo(result)
    if result.get("status") == "rejected" or (
        isinstance(result.get("receipt"), dict) and result["receipt"].get("status") == "rejected"  # type: ignore[union-attr]
    ):
        raise SystemExit(1)


@tx_group.command("show")
@_NODE_OPTION
@_KEY_OPTION
@click.argument("tx_hash")
def tx_show(node: str, key_path: str | None, tx_hash: str) -> None:
    """Show a transaction's status and receipt."""
    try:
        _echo(_client(node, key_path).transaction(tx_hash))
    except ApiError as error:
        raise _fail(error) from None


@click.command("block")
@_NODE_OPTION
@_KEY_OPTION
@click.argument("height", required=False)
@click.option("--hash", "block_hash", help="Look the block up by hash instead.")
@click.option(
    "--transactions", is_flag=True, help="Include the encoded transactions (node keys only)."
)
def block_command(
    node: str, key_path: str | None, height: str | None, block_hash: str | None, transactions: bool
) -> None:
    """Show block HEIGHT (default: latest) with its commit certificate."""
    if height is not None and not height.isdigit() and height != "latest":
        raise click.BadParameter("a height or 'latest'", param_hint="HEIGHT")
    number = int(height) if height is not None and height.isdigit() else None
    try:
        _echo(
            _client(node, key_path).block(number, block_hash=block_hash, transactions=transactions)
        )
    except ApiError as error:
        raise _fail(error) from None
