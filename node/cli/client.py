"""Client commands over the API: ``suanpan status``, ``tx send``, ``tx show``, ``block``
(``suanpan query`` and ``suanpan tx <app> <operation>`` are generated in ``node.cli.app``).
Every command takes ``--node host:port`` (default ``$SUANPAN_NODE`` or 127.0.0.1:26657) or a
testnet directory (then public keys of its parties print by name), prints for people (rich
tables), and prints the node's JSON document with ``--json``."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from apps.transaction import TransactionError, sign_transaction
from node.cli.app import (
    Renderer,
    TransactionGroup,
    api_client,
    print_submission,
    print_value,
    refusal_document,
    rejected,
    resolve_node,
)
from node.client.client import ApiError, Client
from node.digits import decimal_value
from node.jsonvalue import JsonType, from_json
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
_JSON_OPTION = click.option(
    "--json", "as_json", is_flag=True, help="Print the node's JSON document."
)


def _echo_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2))


def _client(node: str, key_path: str | None = None) -> tuple[Client, Renderer]:
    address, names = resolve_node(node)
    return api_client(address, key_path), Renderer(names)


_KEY_OPTION = click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False),
    help="Key file that signs the request (who is asking)  [default: $SUANPAN_KEY]",
)


def _fail(error: ApiError) -> click.ClickException:
    code = f" [{error.code}]" if error.code else ""
    return click.ClickException(f"{error}{code}")


def _fetch(
    node: str,
    key_path: str | None,
    ask: Callable[[Client], dict[str, JsonType]],
    as_json: bool,
) -> tuple[dict[str, JsonType], Renderer] | None:
    """The document ``ask`` reads from the node, with the renderer that prints it for people;
    None when ``as_json`` printed it already. An API error is the command's error."""
    client, renderer = _client(node, key_path)
    try:
        document = ask(client)
    except ApiError as error:
        raise _fail(error) from None
    finally:
        client.close()
    if as_json:
        _echo_json(document)
        return None
    return document, renderer


@click.command("status")
@_NODE_OPTION
@_JSON_OPTION
def status_command(node: str, as_json: bool) -> None:
    """Show the node's height, view, peers, mempool and validators."""
    fetched = _fetch(node, None, Client.status, as_json)
    if fetched is None:
        return
    document, renderer = fetched
    console = Console()
    validators = document.get("validators")
    summary = {name: value for name, value in document.items() if name != "validators"}
    print_value(
        console,
        renderer,
        f"node {document.get('moniker', '')}".strip(),
        from_json(_floats_as_text(summary)),
    )
    if isinstance(validators, list) and validators:
        console.print(Text("validators", style="bold"))
        console.print(renderer.render(from_json(_floats_as_text(validators))))


def _floats_as_text(value: JsonType) -> JsonType:
    """``value`` with every float written as text: app values (what the renderer shows) hold
    no floats, but the node's own figures in /status do (``transactions_per_second``)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return [_floats_as_text(item) for item in value]
    if isinstance(value, dict):
        return {name: _floats_as_text(item) for name, item in value.items()}
    return value


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
@_JSON_OPTION
def tx_send(
    node: str,
    key_path: Path,
    app: str,
    operation: str,
    arguments: str,
    nonce: int | None,
    wait: bool,
    as_json: bool,
) -> None:
    """Sign a transaction with KEY and submit it; prints its hash and outcome (the app's
    arguments are not checked here: this sends anything, to any app)."""
    try:
        key = load_key_file(key_path)
    except KeyFileError as error:
        raise click.ClickException(str(error)) from None
    try:
        parsed = from_json(json.loads(arguments), "args")
    except ValueError as error:  # bad JSON, a value it cannot hold, an over-long number
        raise click.BadParameter(str(error), param_hint="--args") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--args")
    client, renderer = _client(node, str(key_path))
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
        try:
            result: dict[str, JsonType] = client.submit(transaction.encoded, wait=wait)
        except ApiError as error:
            if error.status != 422:
                raise
            error.transaction_hash = transaction.hash
            result = refusal_document(error)
    except ApiError as error:
        raise _fail(error) from None
    finally:
        client.close()
    if as_json:
        _echo_json(result)
    else:
        print_submission(Console(), renderer, f"{app}.{operation}", result)
    if rejected(result):
        raise SystemExit(1)


@tx_group.command("show")
@_NODE_OPTION
@_KEY_OPTION
@_JSON_OPTION
@click.argument("tx_hash")
def tx_show(node: str, key_path: str | None, as_json: bool, tx_hash: str) -> None:
    """Show a transaction's status and receipt."""
    fetched = _fetch(node, key_path, lambda client: client.transaction(tx_hash), as_json)
    if fetched is None:
        return
    document, renderer = fetched
    console = Console()
    print_submission(console, renderer, "transaction", document)
    if document.get("status") == "committed":
        console.print(f"  block {document.get('height')}, position {document.get('index')}")
    if "receipt_withheld" in document:
        console.print(f"  [yellow]receipt withheld[/yellow]: {document['receipt_withheld']}")


@click.command("block")
@_NODE_OPTION
@_KEY_OPTION
@_JSON_OPTION
@click.argument("height", required=False)
@click.option("--hash", "block_hash", help="Look the block up by hash instead.")
@click.option(
    "--transactions", is_flag=True, help="Include the encoded transactions (node keys only)."
)
def block_command(
    node: str,
    key_path: str | None,
    as_json: bool,
    height: str | None,
    block_hash: str | None,
    transactions: bool,
) -> None:
    """Show block HEIGHT (default: latest) with its commit certificate."""
    number = None if height is None else decimal_value(height, 20)
    if height is not None and number is None and height != "latest":
        raise click.BadParameter("a height or 'latest'", param_hint="HEIGHT")
    fetched = _fetch(
        node,
        key_path,
        lambda client: client.block(number, block_hash=block_hash, transactions=transactions),
        as_json,
    )
    if fetched is not None:
        document, renderer = fetched
        _print_block(Console(), renderer, document)


def _print_block(console: Console, renderer: Renderer, document: Mapping[str, JsonType]) -> None:
    """A block for people: its header, a line for the certificate, its transactions."""
    console.print(Text(f"block {document.get('height')}  {document.get('hash', '')}", style="bold"))
    header = document.get("header")
    if isinstance(header, dict):
        console.print(renderer.render(from_json(header)))
    certificate = document.get("certificate")
    if isinstance(certificate, dict):
        signatures = certificate.get("signatures")
        signers = (
            [str(entry[0]) for entry in signatures if isinstance(entry, list) and entry]
            if isinstance(signatures, list)
            else []
        )
        console.print(
            f"certificate: view {certificate.get('view')}, {len(signers)} signatures "
            f"(validators {', '.join(signers) or '-'})"
        )
    hashes = document.get("transaction_hashes")
    if isinstance(hashes, list):
        table = Table("#", "transaction", box=None, title=f"{len(hashes)} transactions")
        for index, item in enumerate(hashes):
            table.add_row(str(index), str(item))
        console.print(table if hashes else Text("no transactions", style="dim"))
    extra = {
        name: value
        for name, value in document.items()
        if name not in ("height", "hash", "header", "certificate", "transaction_hashes")
    }
    if extra:
        console.print(renderer.render(from_json(extra)))
