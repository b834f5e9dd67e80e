"""``suanpan tx <app> <operation>`` and ``suanpan query <app> <path>``, generated from the
schema every installed app declares (``apps.schema``).

Every app installed under the ``suanpan.apps`` entry point group (the built-in ones and a
bank's own plugins alike) gets a ``suanpan tx APP`` and a ``suanpan query APP`` group, built
when first needed. Every operation becomes a command whose options are the operation's
arguments (``suanpan tx payments transfer --to KEY --currency SGD --amount 1250
--end-to-end-id E2E-1 --key alice.json``); every query path becomes one too (``suanpan query
scf lineage --id rc-...``). Option texts become canonical values and are checked by the app's
own schema (``node.cli.arguments``), so a bad value is reported naming the option before
anything is sent. ``--args JSON`` supplies arguments as JSON instead (options win):
``suanpan query membership institutions --args '{"kind": "bank"}'``; an app without a schema
is queried generically (``suanpan query myapp mypath --args ...``), and ``suanpan tx send``
still sends anything. An argument whose name is one of the commands' own options (``key``,
``node``, ...) gets the option ``--arg-NAME``.

``--node`` takes ``host:port`` or a testnet directory (its first node); with a testnet
directory, public keys of the testnet's parties are shown by name. Results print readably
(rich tables); ``--json`` prints one JSON document for machines. A transaction that commits
with a rejected receipt, or is refused admission, exits with status 1.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import click
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from apps.schema import AppSchema, Argument, Operation, Query
from apps.transaction import TransactionError
from consensus.codec import Value
from node.apploader import AppLoadError, app_classes
from node.cli.arguments import ArgumentError, metavar, option_name, parse_options, type_help
from node.client.client import (
    ApiError,
    ArgumentsRefused,
    Client,
    ProofRefused,
    ProvenAnswer,
    tls_context,
)
from node.genesis import Genesis, GenesisError, load_genesis
from node.home import GENESIS_FILE
from node.jsonvalue import JsonType, from_json, to_json
from node.keys import KeyFileError, load_key_file

__all__ = [
    "Renderer",
    "TransactionGroup",
    "api_client",
    "installed_schemas",
    "key_option",
    "node_address",
    "not_a_node",
    "print_submission",
    "print_value",
    "query_group",
    "refusal_document",
    "rejected",
    "resolve_node",
]

DEFAULT_NODE: Final = "127.0.0.1:26657"
_TESTNET_FILE: Final = "testnet.json"
_HEX_KEY: Final = re.compile(r"[0-9a-f]{64}")
# A list of records with more fields than this prints as one block per record, not a table.
_COLUMNS_MAX: Final = 6
# Options every generated command has; an app argument may not reuse their names.
_RESERVED: Final = frozenset(
    {"node", "key", "nonce", "wait", "args", "json", "timeout_ms", "prove", "genesis"}
)


# ---------------------------------------------------------------------- node and names
def resolve_node(text: str) -> tuple[str, dict[bytes, str]]:
    """The API address for ``--node`` (``host:port``, or a testnet directory: its first node)
    and the party names known there (public key -> name; empty for a plain address)."""
    directory = Path(text).expanduser()
    try:
        is_testnet = (directory / _TESTNET_FILE).is_file()
    except OSError:  # e.g. a name too long to be a path: then it is no testnet directory
        is_testnet = False
    if not is_testnet:
        return text, {}
    try:
        document = json.loads((directory / _TESTNET_FILE).read_text("utf-8"))
        address = str(document["nodes"][0]["api"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise click.BadParameter(
            f"{directory / _TESTNET_FILE} is not a testnet file: {error}", param_hint="--node"
        ) from None
    names: dict[bytes, str] = {}
    demo = document.get("demo") or {}
    for party in demo.get("parties", ()):
        try:
            names[bytes.fromhex(party["public_key"])] = str(party["name"])
        except (KeyError, ValueError, TypeError):
            continue
    return address, names


def api_client(address: str, key_path: str | None = None, *, timeout_s: float = 30.0) -> Client:
    """A client of ``address`` signing with the key file ``key_path`` (None: ``$SUANPAN_KEY``,
    else unsigned), over TLS for ``https://`` addresses or when ``$SUANPAN_TLS_CA`` is set
    (``$SUANPAN_TLS_CERT``/``$SUANPAN_TLS_KEY``: a client certificate for mutual TLS)."""
    key_path = key_path or os.environ.get("SUANPAN_KEY") or None
    key = None
    if key_path is not None:
        try:
            key = load_key_file(Path(key_path).expanduser())
        except KeyFileError as error:
            raise click.ClickException(str(error)) from None
    tls = None
    ca = os.environ.get("SUANPAN_TLS_CA")
    certificate = os.environ.get("SUANPAN_TLS_CERT")
    if ca or certificate:
        try:
            tls = tls_context(
                Path(ca) if ca else None,
                Path(certificate) if certificate else None,
                Path(os.environ["SUANPAN_TLS_KEY"]) if os.environ.get("SUANPAN_TLS_KEY") else None,
            )
        except (OSError, ssl.SSLError) as error:
            raise click.ClickException(f"TLS files from $SUANPAN_TLS_*: {error}") from None
    try:
        return Client(address, key=key, tls=tls, timeout_s=timeout_s)
    except ValueError:
        raise click.BadParameter(not_a_node(address), param_hint="--node") from None


def _client(address: str, key_path: str | None = None) -> Client:
    return api_client(address, key_path)


def key_option() -> click.Option:
    """``--key FILE``: the key that signs API requests (who is asking)."""
    return click.Option(
        ["--key", "key_path"],
        type=click.Path(dir_okay=False),
        help="Key file that signs the request (who is asking; the read rules decide what it"
        " may see)  [default: $SUANPAN_KEY, else unsigned]",
    )


def not_a_node(text: str) -> str:
    """Why ``--node TEXT`` names no node (shared by every client command)."""
    if Path(text).expanduser().is_dir():
        return f"{text!r} is a directory without {_TESTNET_FILE}; give host:port or a testnet dir"
    return f"{text!r} is neither host:port nor a testnet directory"


def _fail(error: ApiError) -> click.ClickException:
    code = f" [{error.code}]" if error.code else ""
    return click.ClickException(f"{error}{code}")


def _genesis_for_proofs(given: str | None, node: str) -> Genesis:
    """The genesis a proof is checked against: ``--genesis``, else the testnet directory's
    (when ``--node`` names one), else ``$SUANPAN_GENESIS``. It is the only thing trusted, so
    it is never asked from the node."""
    path: Path | None = None
    if given:
        path = Path(given).expanduser()
    else:
        directory = Path(node).expanduser()
        if (directory / _TESTNET_FILE).is_file():
            try:
                document = json.loads((directory / _TESTNET_FILE).read_text("utf-8"))
                path = directory / str(document["nodes"][0]["home"]) / GENESIS_FILE
            except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
                raise click.BadParameter(
                    f"{directory / _TESTNET_FILE} is not a testnet file: {error}",
                    param_hint="--node",
                ) from None
        elif os.environ.get("SUANPAN_GENESIS"):
            path = Path(os.environ["SUANPAN_GENESIS"]).expanduser()
    if path is None:
        raise click.UsageError(
            "--prove checks the answer against the chain's genesis validators: give --genesis "
            "GENESIS.json (or --node TESTNET_DIR, or set $SUANPAN_GENESIS)"
        )
    try:
        return load_genesis(path)
    except GenesisError as error:
        raise click.BadParameter(f"{path}: {error}", param_hint="--genesis") from None


def _proven_query(
    client: Client, app: str, path: str, arguments: dict[str, Value], genesis: Genesis
) -> ProvenAnswer:
    try:
        return client.query_proven(app, path, arguments, genesis)
    except ProofRefused as error:
        raise click.ClickException(f"REFUSED: {error}") from None


def _proof_line(answer: ProvenAnswer) -> str:
    return (
        f"proof verified against block {answer.block} "
        f"(certificate {answer.signatures} of {answer.validators}), state after height "
        f"{answer.height}"
    )


def _proof_json(answer: ProvenAnswer) -> dict[str, JsonType]:
    return {
        "verified": True,
        "height": answer.height,
        "block": answer.block,
        "app_hash": answer.app_hash.hex(),
        "signatures": answer.signatures,
        "validators": answer.validators,
        "keys": answer.keys,
    }


# ---------------------------------------------------------------------- rendering
class Renderer:
    """Turns result values into rich renderables; 32-byte keys of known parties get names."""

    def __init__(self, names: Mapping[bytes, str]) -> None:
        self.names = names

    def scalar(self, value: Value) -> Text:
        if value is None:
            return Text("-", style="dim")
        if isinstance(value, bool):
            return Text("yes" if value else "no", style="green" if value else "red")
        if isinstance(value, bytes):
            name = self.names.get(value)
            if name is not None:
                return Text(name, style="bold magenta")
            return Text(value.hex(), style="cyan")
        if isinstance(value, str) and _HEX_KEY.fullmatch(value):
            # Some records name accounts by their hex key (asset holders).
            name = self.names.get(bytes.fromhex(value))
            if name is not None:
                return Text(name, style="bold magenta")
        return Text(str(value))

    def render(self, value: Value) -> RenderableType:
        if _is_tree(value):
            assert isinstance(value, Mapping)
            return self._tree(value, None)
        if isinstance(value, Mapping):
            if not value:
                return Text("(empty)", style="dim")
            table = Table(show_header=False, box=None, pad_edge=False)
            table.add_column(style="bold")
            table.add_column()
            for name, item in value.items():
                label = self.scalar(name) if isinstance(name, bytes) else Text(str(name))
                rendered = self.render(item)
                if isinstance(name, str) and name.endswith("_ms") and isinstance(item, int):
                    rendered = Text(f"{item} ({_utc(item)})")
                table.add_row(label, rendered)
            return table
        if isinstance(value, list | tuple):
            if not value:
                return Text("(none)", style="dim")
            if all(not isinstance(item, Mapping | list | tuple) for item in value):
                return Text(", ").join(self.scalar(item) for item in value)
            if all(isinstance(item, Mapping) for item in value):
                return self._rows(value)
            table = Table(show_header=False, box=None)
            for item in value:
                table.add_row(self.render(item))
            return table
        return self.scalar(value)

    def _tree(self, node: Mapping[str, Value] | Mapping[bytes, Value], parent: Tree | None) -> Tree:
        """A receivable lineage (records with ``id`` and ``children``) as a tree."""
        fields = {_label(name): field for name, field in node.items()}
        label = Text(str(fields.get("id")), style="bold")
        for name, field in fields.items():
            if name not in ("id", "children", "parent") and field is not None:
                label.append(f"  {name}=")
                label.append(
                    self.scalar(field)
                    if not isinstance(field, Mapping | list | tuple)
                    else Text(json.dumps(to_json(field)))
                )
        branch = Tree(label) if parent is None else parent.add(label)
        children = fields.get("children")
        for child in children if isinstance(children, tuple | list) else ():
            assert isinstance(child, Mapping)
            self._tree(child, branch)
        return branch

    def _rows(self, items: Sequence[Value]) -> RenderableType:
        rows: list[dict[str, Value]] = []
        columns: list[str] = []
        for item in items:
            assert isinstance(item, Mapping)
            row = {_label(name): field for name, field in item.items()}
            columns.extend(name for name in row if name not in columns)
            rows.append(row)
        nested = any(
            isinstance(field, Mapping | list | tuple) for row in rows for field in row.values()
        )
        if len(columns) > _COLUMNS_MAX or nested:
            # Wide or nested records read better one below the other, field by field.
            blocks = Table(show_header=False, box=None, pad_edge=False)
            for number, row in enumerate(rows, start=1):
                blocks.add_row(Text(f"#{number}", style="bold dim"))
                blocks.add_row(self.render(row))
            return blocks
        table = Table(show_lines=False)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(self.render(row.get(column)) for column in columns))
        return table


def _is_tree(value: Value) -> bool:
    """A record with an ``id`` and a list of child records (a lineage tree node)."""
    if not isinstance(value, Mapping) or "id" not in value or "children" not in value:
        return False
    children = value["children"]  # type: ignore[index]
    return isinstance(children, tuple | list) and all(_is_tree(child) for child in children)


def _utc(time_ms: int) -> str:
    """A block time as a readable UTC moment."""
    try:
        moment = datetime.fromtimestamp(time_ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return "?"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _label(name: str | bytes) -> str:
    return name.hex() if isinstance(name, bytes) else name


def print_value(console: Console, renderer: Renderer, title: str, value: Value) -> None:
    """``value`` under a bold ``title``; ``(nothing found)`` for None."""
    console.print(Text(title, style="bold"))
    if value is None:
        # The app answers None for an id it does not know (a receivable, offer, payment).
        console.print(Text("(nothing found)", style="dim"))
        return
    console.print(renderer.render(value))


def print_submission(
    console: Console, renderer: Renderer, label: str, document: Mapping[str, JsonType]
) -> None:
    """A transaction's document (``POST /tx`` or ``GET /tx/{hash}``) for people: committed
    with its result and events, rejected with the code and reason, or still pending."""
    status = str(document.get("status", ""))
    tx_hash = str(document.get("hash", ""))
    receipt = document.get("receipt")
    if status == "committed" and isinstance(receipt, dict):
        ok = receipt.get("status") == "ok"
        mark = "[green]committed[/green]" if ok else "[red]rejected[/red]"
        console.print(
            f"{mark} {label} at height {document.get('height')}  tx {tx_hash}", soft_wrap=True
        )
        if not ok:
            console.print(f"  [red]{receipt.get('code')}[/red]: {receipt.get('message')}")
            return
        result = from_json(receipt.get("result"))
        if result is not None:
            console.print(renderer.render(result))
        events = receipt.get("events")
        for event in events if isinstance(events, list) else ():
            if not isinstance(event, dict):
                continue
            attributes = from_json(event.get("attributes"))
            line = Text(f"  event {event.get('app')}.{event.get('kind')} ", style="dim")
            if isinstance(attributes, Mapping):
                for name, item in attributes.items():
                    line.append(f"{_label(name)}=")
                    line.append(
                        renderer.scalar(item)
                        if not isinstance(item, Mapping | list | tuple)
                        else Text(json.dumps(to_json(item)))
                    )
                    line.append(" ")
            console.print(line)
        return
    if status == "rejected":
        reason = document.get("error", document.get("reason", ""))
        console.print(
            f"[red]rejected[/red] {label}  tx {tx_hash or '(not computed)'}", soft_wrap=True
        )
        console.print(f"  [red]{document.get('code', '') or 'refused'}[/red]: {reason}")
        return
    console.print(f"[yellow]{status or 'submitted'}[/yellow] {label}  tx {tx_hash}", soft_wrap=True)
    console.print(f"  follow it with: suanpan tx show {tx_hash}", soft_wrap=True)


def refusal_document(error: ApiError) -> dict[str, JsonType]:
    """The document of a submission admission refused (HTTP 422), with the transaction's hash
    as the client computed it."""
    document: dict[str, JsonType] = {
        "status": "rejected",
        "code": error.code,
        "error": error.message,
    }
    if error.transaction_hash is not None:
        document["hash"] = error.transaction_hash.hex()
    return document


def rejected(document: Mapping[str, JsonType]) -> bool:
    """True when a submission was refused, or committed with a rejected receipt."""
    return _rejected(document)


def _rejected(document: Mapping[str, JsonType]) -> bool:
    receipt = document.get("receipt")
    return document.get("status") == "rejected" or (
        isinstance(receipt, dict) and receipt.get("status") == "rejected"
    )


# ---------------------------------------------------------------------- arguments
def _json_arguments(text: str | None) -> dict[str, Value]:
    if text is None:
        return {}
    try:
        parsed = from_json(json.loads(text), "args")
    except ValueError as error:  # bad JSON, a value it cannot hold, an over-long number
        raise click.BadParameter(str(error), param_hint="--args") from None
    if not isinstance(parsed, dict) or not all(isinstance(name, str) for name in parsed):
        raise click.BadParameter("must be a JSON object", param_hint="--args")
    return {str(name): value for name, value in parsed.items()}


def _clock(client: Client) -> Callable[[], int]:
    """The latest block time (for relative times), asked once; the local clock before the
    first block."""
    cache: list[int] = []

    def now_ms() -> int:
        if not cache:
            try:
                cache.append(client.latest_block_time_ms())
            except ApiError as error:
                if error.status != 404:
                    raise _fail(error) from None
                cache.append(int(time.time() * 1000))
        return cache[0]

    return now_ms


def _parse(
    declared: tuple[Argument, ...],
    options: Mapping[str, str | None],
    args_json: str | None,
    client: Client,
) -> dict[str, Value]:
    try:
        return parse_options(
            declared, options, base=_json_arguments(args_json), clock=_clock(client)
        )
    except ArgumentError as error:
        raise click.BadParameter(
            error.message, param_hint=f"'{error.argument}' ({_option(error.argument)})"
        ) from None


def _receiver_facts(client: Client, arguments: dict[str, Value]) -> str:
    """For the ``can_transfer`` dry run: the receiver's roles and jurisdiction from membership
    (queries see one app's state, so the client supplies them). Returns a note for the user."""
    if "to_roles" in arguments or "to_jurisdiction" in arguments:
        return ""
    identity = client.query_app("membership", "identity", public_key=arguments["to"])
    if not isinstance(identity, Mapping):
        return "the receiver is not a member: identity rules were not evaluated"
    facts = {_label(name): field for name, field in identity.items()}
    arguments["to_roles"] = facts.get("roles", ())
    arguments["to_jurisdiction"] = facts.get("jurisdiction", "")
    return ""


# App queries whose arguments the client completes from other apps before asking.
_QUERY_COMPLETIONS: Final[Mapping[tuple[str, str], Callable[[Client, dict[str, Value]], str]]] = {
    ("assets", "can_transfer"): _receiver_facts,
}


# ---------------------------------------------------------------------- command builders
_NODE_HELP: Final = (
    "API address (host:port) or a testnet directory (its first node)"
    f"  [default: $SUANPAN_NODE or {DEFAULT_NODE}]"
)
# ``suanpan query --node X app path`` (the option before the app) is kept working: the group
# stores it here and a command without its own ``--node`` uses it.
_NODE_META: Final = "suanpan.node"


def _node_option() -> click.Option:
    return click.Option(["--node", "node"], help=_NODE_HELP)


def node_address(given: object) -> str:
    """The command's ``--node``, else the group's, else ``$SUANPAN_NODE``, else the default."""
    if isinstance(given, str) and given:
        return given
    inherited = click.get_current_context().meta.get(_NODE_META)
    if isinstance(inherited, str) and inherited:
        return inherited
    return os.environ.get("SUANPAN_NODE") or DEFAULT_NODE


def _remember_node(ctx: click.Context, _: click.Parameter, value: str | None) -> str | None:
    if value:
        ctx.meta[_NODE_META] = value
    return value


def _option(name: str) -> str:
    """The option of argument ``name`` (``--arg-NAME`` when it is one of the commands' own)."""
    return option_name(f"arg_{name}" if name in _RESERVED else name)


def _argument_options(declared: tuple[Argument, ...]) -> list[click.Option]:
    options = []
    for argument in declared:
        required = argument.required and argument.client_default is None
        default = (
            f" [default: {argument.client_default}]" if argument.client_default is not None else ""
        )
        options.append(
            click.Option(
                [_option(argument.name), f"a_{argument.name}"],
                metavar=metavar(argument.type),
                help=f"{argument.help} [{type_help(argument.type)}]"
                + (" (required)" if required else default),
            )
        )
    return options


def _collect(declared: tuple[Argument, ...], params: Mapping[str, object]) -> dict[str, str | None]:
    collected: dict[str, str | None] = {}
    for argument in declared:
        value = params.get(f"a_{argument.name}")
        collected[argument.name] = value if isinstance(value, str) else None
    return collected


def _transaction_command(app: str, spec: Operation) -> click.Command:
    label = f"{app}.{spec.name}"

    def run(**params: object) -> None:
        address, names = resolve_node(node_address(params["node"]))
        as_json = bool(params["as_json"])
        console = Console()
        try:
            key = load_key_file(Path(str(params["key_path"])))
        except KeyFileError as error:
            raise click.ClickException(str(error)) from None
        client = _client(address, str(params["key_path"]))
        nonce = params["nonce"]
        try:
            arguments = _parse(
                spec.arguments, _collect(spec.arguments, params), _opt_str(params["args"]), client
            )
            document = client.send(
                app,
                spec.name,
                arguments,
                key,
                nonce=nonce if isinstance(nonce, int) else None,
                wait=bool(params["wait"]),
                timeout_ms=int(str(params["timeout_ms"])),
            )
        except TransactionError as error:
            raise click.ClickException(str(error)) from None
        except ApiError as error:
            if error.status != 422:
                raise _fail(error) from None
            document = refusal_document(error)
        finally:
            client.close()
        if as_json:
            click.echo(json.dumps(document))
        else:
            print_submission(console, Renderer(names), label, document)
        if _rejected(document):
            raise SystemExit(1)

    params: list[click.Parameter] = [
        *_argument_options(spec.arguments),
        click.Option(
            ["--key", "key_path"],
            required=True,
            type=click.Path(dir_okay=False),
            help="Key file of the sender (signs the transaction).",
        ),
        _node_option(),
        click.Option(
            ["--nonce"],
            type=click.IntRange(min=0),
            help="Default: the next one, asked from the node.",
        ),
        click.Option(
            ["--wait/--no-wait"], default=True, show_default=True, help="Wait for the commit."
        ),
        click.Option(
            ["--timeout-ms", "timeout_ms"],
            type=click.IntRange(min=0),
            default=30_000,
            show_default=True,
            help="How long --wait waits.",
        ),
        click.Option(["--args", "args"], help="More arguments as a JSON object (options win)."),
        click.Option(["--json", "as_json"], is_flag=True, help="Print the node's JSON document."),
    ]
    return click.Command(
        spec.name, callback=run, params=params, help=spec.help, short_help=spec.help
    )


def _query_command(app: str, spec: Query) -> click.Command:
    def run(**params: object) -> None:
        node = node_address(params["node"])
        address, names = resolve_node(node)
        genesis = (
            _genesis_for_proofs(_opt_str(params["genesis"]), node) if params["prove"] else None
        )
        client = _client(address, _opt_str(params["key_path"]))
        answer: ProvenAnswer | None = None
        try:
            arguments = _parse(
                spec.arguments, _collect(spec.arguments, params), _opt_str(params["args"]), client
            )
            completion = _QUERY_COMPLETIONS.get((app, spec.name))
            note = completion(client, arguments) if completion is not None else ""
            if genesis is not None:
                answer = _proven_query(client, app, spec.name, arguments, genesis)
                result = answer.result
            else:
                result = client.query(app, spec.name, arguments)
        except ApiError as error:
            raise _fail(error) from None
        finally:
            client.close()
        if bool(params["as_json"]):
            document: dict[str, JsonType] = {"result": to_json(result)}
            if answer is not None:
                document["proof"] = _proof_json(answer)
            click.echo(json.dumps(document))
            return
        console = Console()
        print_value(console, Renderer(names), f"{app} {spec.name}", result)
        if note:
            console.print(f"[yellow]note[/yellow]: {note}")
        if answer is not None:
            console.print(f"[green]{_proof_line(answer)}[/green]")

    params: list[click.Parameter] = [
        *_argument_options(spec.arguments),
        key_option(),
        _node_option(),
        click.Option(["--args", "args"], help="More arguments as a JSON object (options win)."),
        click.Option(["--json", "as_json"], is_flag=True, help="Print the result as JSON."),
        *_prove_options(),
    ]
    return click.Command(
        spec.name, callback=run, params=params, help=spec.help, short_help=spec.help
    )


def _prove_options() -> list[click.Parameter]:
    return [
        click.Option(
            ["--prove", "prove"],
            is_flag=True,
            help=(
                "Answer on the latest certified state with Merkle proofs, checked here against "
                "its commit certificate by the validator set reached from genesis (queries that "
                "read single keys)."
            ),
        ),
        click.Option(
            ["--genesis", "genesis"],
            help=(
                "genesis.json to check --prove against [default: the --node testnet's, or "
                "$SUANPAN_GENESIS]"
            ),
        ),
    ]


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


class _AppGroup(click.Group):
    """A group whose commands may also be named with hyphens (``offer-fx`` = ``offer_fx``)."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or super().get_command(
            ctx, cmd_name.replace("-", "_")
        )


def installed_schemas() -> dict[str, AppSchema | AppLoadError]:
    """The schema of every installed app that declares one (an app that does not load maps to
    the error saying why), by name; read once per process."""
    return dict(_installed_schemas())


def _installed_schemas() -> tuple[tuple[str, AppSchema | AppLoadError], ...]:
    if not _SCHEMAS:
        found: list[tuple[str, AppSchema | AppLoadError]] = []
        for name, loaded in app_classes().items():
            if isinstance(loaded, AppLoadError):
                found.append((name, loaded))
            elif loaded.schema is not None:
                found.append((name, loaded.schema))
        _SCHEMAS.append(tuple(found))
    return _SCHEMAS[0]


_SCHEMAS: list[tuple[tuple[str, AppSchema | AppLoadError], ...]] = []


def _broken_app_command(name: str, error: AppLoadError) -> click.Command:
    def run() -> None:
        raise click.ClickException(str(error))

    return click.Command(
        name,
        callback=run,
        help=f"App {name!r} is installed but does not load: {error}",
        short_help="Installed, but does not load (run it to see why).",
    )


class _InstalledAppsGroup(click.Group):
    """A group whose subcommands also include one group per installed app (``build``), made
    when the group first lists or looks up its commands."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._app_commands: dict[str, click.Command] | None = None

    def build(self, app: str, schema: AppSchema) -> click.Command:
        """The group of ``app``'s commands."""
        raise NotImplementedError

    def _apps(self) -> dict[str, click.Command]:
        if self._app_commands is None:
            self._app_commands = {}
            for name, schema in installed_schemas().items():
                if name in self.commands:
                    continue  # a built-in command of the same name wins
                self._app_commands[name] = (
                    _broken_app_command(name, schema)
                    if isinstance(schema, AppLoadError)
                    else self.build(name, schema)
                )
        return self._app_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._apps()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or self._apps().get(cmd_name)


class TransactionGroup(_InstalledAppsGroup):
    """``suanpan tx``: its own commands plus one ``suanpan tx APP`` group per installed app,
    one command per operation its schema declares."""

    def build(self, app: str, schema: AppSchema) -> click.Command:
        group = _AppGroup(app, help=f"{schema.help} (transactions)", short_help=schema.help)
        for spec in schema.operations:
            group.add_command(_transaction_command(app, spec))
        return group


class _AppQueryGroup(_AppGroup):
    """An app's query commands; a path missing from its schema is still asked generically
    (``--args JSON``), so a newer node's queries stay reachable."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and self.name is not None:
            return _generic_query_command(self.name, path=cmd_name)
        return command


def _generic_query_command(app: str, path: str | None = None) -> click.Command:
    """``suanpan query APP PATH --args JSON`` for an app without a schema, or for one
    ``path`` its schema does not declare."""

    def run(
        node: str | None,
        args: str | None,
        as_json: bool,
        key_path: str | None,
        prove: bool,
        genesis: str | None,
        path: str = path or "",
    ) -> None:
        node_text = node_address(node)
        address, names = resolve_node(node_text)
        trusted = _genesis_for_proofs(genesis, node_text) if prove else None
        client = _client(address, key_path)
        answer: ProvenAnswer | None = None
        try:
            if trusted is not None:
                answer = _proven_query(client, app, path, _json_arguments(args), trusted)
                result = answer.result
            else:
                result = client.query(app, path, _json_arguments(args))
        except ApiError as error:
            raise _fail(error) from None
        except ArgumentsRefused as error:  # e.g. a path the app's schema does not have
            raise click.ClickException(str(error)) from None
        finally:
            client.close()
        if as_json:
            document: dict[str, JsonType] = {"result": to_json(result)}
            if answer is not None:
                document["proof"] = _proof_json(answer)
            click.echo(json.dumps(document))
        else:
            console = Console()
            print_value(console, Renderer(names), f"{app} {path}", result)
            if answer is not None:
                console.print(f"[green]{_proof_line(answer)}[/green]")

    arguments: list[click.Parameter] = [] if path is not None else [click.Argument(["path"])]
    return click.Command(
        app if path is None else path,
        callback=run,
        params=[
            *arguments,
            key_option(),
            _node_option(),
            click.Option(["--args", "args"], default="{}", help="Arguments as JSON."),
            click.Option(["--json", "as_json"], is_flag=True, help="Print the result as JSON."),
            *_prove_options(),
        ],
        help=f"Ask app {app!r} the read-only question PATH (arguments as JSON).",
    )


class _QueryGroup(_InstalledAppsGroup):
    """``suanpan query``: one group per installed app with a schema, and any other app
    generically."""

    def build(self, app: str, schema: AppSchema) -> click.Command:
        sub = _AppQueryGroup(app, help=f"{schema.help} (queries)", short_help=schema.help)
        for spec in schema.queries:
            sub.add_command(_query_command(app, spec))
        return sub

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name.replace("_", "").replace("-", "").isalnum():
            return _generic_query_command(cmd_name)
        return command


def _build_query_group() -> click.Group:
    group = _QueryGroup(
        "query",
        params=[
            click.Option(
                ["--node", "node"],
                expose_value=False,
                callback=_remember_node,
                help="API address for the query (or give --node after the path).",
            )
        ],
        help=(
            "Ask an app a read-only question, e.g. `suanpan query payments balances --account "
            "KEY`. Every installed app with a schema has its queries here, with their arguments "
            "as options; any other app: `suanpan query APP PATH --args JSON`."
        ),
        short_help="Ask an app a read-only question.",
    )
    return group


query_group: Final = _build_query_group()
