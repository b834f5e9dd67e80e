"""``suanpan events``: committed blocks, receipts and app events from a node's event stream.

    suanpan events --follow --app payments --account D/clients/alice.json \\
        --key D/clients/alice.json --node D

prints alice's payments as they commit (one line each; ``--json`` prints the stream items as
JSON lines). Without ``--follow`` it prints the events of the blocks already committed (from
``--from``, default the last ten blocks) and exits. The node's read rules decide what the
``--key`` sees; an ``--account`` the key may not read is refused with the rule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import click

from node.cli.app import api_client, key_option, node_address, resolve_node
from node.cli.arguments import public_key_of
from node.client.client import ApiError, StreamEvent
from node.jsonvalue import from_json

__all__ = ["events_command", "format_item"]

# Without --follow and --from, show this many recent blocks.
_RECENT_BLOCKS = 10


def _short(value: object, names: Mapping[bytes, str]) -> str:
    if isinstance(value, bytes):
        return names.get(value, value.hex()[:16])
    if isinstance(value, str) and len(value) == 64:
        try:
            return names.get(bytes.fromhex(value), value[:16])
        except ValueError:
            return value
    if isinstance(value, list | tuple):
        return "[" + ",".join(_short(item, names) for item in value) + "]"
    if isinstance(value, Mapping):
        return json.dumps({str(k): str(v) for k, v in value.items()})
    return str(value)


def format_item(item: StreamEvent, names: Mapping[bytes, str]) -> str:
    """One readable line for a stream item (party keys shown by name when known)."""
    data = item.data
    height = data.get("height")
    if item.kind == "block":
        block_hash = str(data.get("hash", ""))[:16]
        return f"{height:>7} block {data.get('transactions')} tx  hash {block_hash}"
    if item.kind == "app_event":
        attributes = from_json(data.get("attributes"))
        fields = ""
        if isinstance(attributes, Mapping):
            fields = " ".join(
                f"{_short(name, names)}={_short(value, names)}"
                for name, value in attributes.items()
            )
        return f"{height:>7} {data.get('app')}.{data.get('kind')} {fields}"
    if item.kind == "receipt":
        sender = _short(str(data.get("sender", "")), names)
        outcome = data.get("status")
        if outcome != "ok":
            outcome = f"{outcome} {data.get('code')}: {data.get('message')}"
        return (
            f"{height:>7} receipt {data.get('app')}.{data.get('operation')} by {sender}: {outcome}"
        )
    return f"{item.kind}: {json.dumps(data)}"


@click.command("events", short_help="Print committed blocks, receipts and app events.")
@click.option("--node", "node", help="API address (host:port) or a testnet directory.")
@click.option("--follow", is_flag=True, help="Keep printing new blocks' events as they commit.")
@click.option("--from", "start", type=click.IntRange(min=1), help="First block height.")
@click.option("--after", "after", help="Resume after this item id (HEIGHT-NUMBER).")
@click.option("--app", "app", help="Only this app's events (e.g. payments).")
@click.option("--kind", "kinds", multiple=True, help="Only these event kinds (repeatable).")
@click.option("--account", "account", help="Only items concerning this account (key file or hex).")
@click.option(
    "--types",
    "types",
    default="app_event",
    show_default=True,
    help="Item types: any of block,receipt,app_event (comma-separated).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the stream items as JSON lines.")
@click.pass_context
def events_command(
    ctx: click.Context,
    node: str | None,
    follow: bool,
    start: int | None,
    after: str | None,
    app: str | None,
    kinds: tuple[str, ...],
    account: str | None,
    types: str,
    as_json: bool,
    key_path: str | None,
) -> None:
    """Print committed blocks, receipts and app events (scoped by the read rules)."""
    address, names = resolve_node(node_address(node))
    client = api_client(address, key_path, timeout_s=60.0)
    account_key = None
    if account is not None:
        try:
            account_key = public_key_of(account)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--account") from None
    try:
        until = None
        if not follow:
            height = client.status().get("height")
            until = height if isinstance(height, int) else 0
            if start is None and after is None:
                start = max(1, until - _RECENT_BLOCKS + 1)
        items = client.events(
            start=start,
            after=after,
            until=until,
            app=app,
            kinds=kinds,
            account=account_key,
            types=tuple(part.strip() for part in types.split(",") if part.strip()),
            reconnect=follow,
        )
        for item in items:
            if item.kind in ("end", "scope") and not as_json:
                continue
            if as_json:
                click.echo(json.dumps({"type": item.kind, "id": item.id, "data": item.data}))
            else:
                click.echo(format_item(item, names))
    except ApiError as error:
        code = f" [{error.code}]" if error.code else ""
        raise click.ClickException(f"{error}{code}") from None
    except KeyboardInterrupt:
        ctx.exit(0)
    finally:
        client.close()


events_command.params.append(key_option())
