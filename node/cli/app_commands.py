"""Every operation and query of the built-in apps, as data: one declarative table per app.

Theory of operation
-------------------
The command line (``node.cli.app``) and the Python client need to know, for each app, which
operations a client may send and which queries it may ask, with the names, types and help of
their arguments. Rather than hand-writing dozens of commands, each app gets one ``AppCommands``
table here; ``node.cli.app`` turns the tables into click commands
(``suanpan tx payments transfer --to ... --amount ...``, ``suanpan query scf lineage --id ...``).

Argument values arrive as text (command-line options) and are turned into canonical values by
``parse_arguments``: integers, public keys (64 hex digits or a key file) as 32 bytes, hashes,
lists, maps, booleans, and block times (``now``, ``+90d``, an ISO date or milliseconds). A value
that cannot be parsed raises ``ArgumentError`` naming the argument. The app itself still checks
every rule (ranges, patterns, who may do what); the table only gets the types right.

The tables must match the apps exactly; ``tests/test_app_commands.py`` checks each table
against the app's ``operations`` mapping and records which argument names the app reads for
every operation and query, so a table cannot silently drift from its app.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Final

from consensus.codec import Value
from consensus.crypto import hash_bytes
from node.jsonvalue import JsonValueError, from_json
from node.keys import KeyFileError, load_key_file

__all__ = [
    "APP_COMMANDS",
    "AppCommands",
    "ArgumentError",
    "ArgumentSpec",
    "CommandSpec",
    "Kind",
    "commands_of",
    "option_name",
    "parse_arguments",
    "parse_value",
]

_HEX_KEY: Final = re.compile(r"[0-9a-fA-F]{64}")
_RELATIVE_TIME: Final = re.compile(r"\+(\d{1,9})([smhd])")
_UNIT_MS: Final = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# A hash argument given as a file is read whole; invoices and delivery notes are documents of a
# few MiB at most, and the CLI should not hash a disk image by mistake.
_HASHED_FILE_BYTES_MAX: Final = 64 * 1024 * 1024


class Kind(Enum):
    """How an argument's text becomes a canonical value."""

    TEXT = "text"
    IDENTIFIER = "identifier"
    INTEGER = "integer"
    AMOUNT = "amount"
    BOOLEAN = "boolean"
    CHOICE = "choice"
    PUBLIC_KEY = "public_key"
    HASH = "hash"
    TIME_MS = "time_ms"
    STRINGS = "strings"
    AMOUNTS = "amounts"
    PARTY = "party"
    JSON = "json"
    IDENTITIES = "identities"


# What each kind accepts, for help texts and error messages.
_KIND_HELP: Final[Mapping[Kind, str]] = {
    Kind.TEXT: "text",
    Kind.IDENTIFIER: "identifier",
    Kind.INTEGER: "integer",
    Kind.AMOUNT: "whole number of minor units, e.g. 1250 = 12.50",
    Kind.BOOLEAN: "true or false",
    Kind.CHOICE: "one of the listed values",
    Kind.PUBLIC_KEY: "public key: 64 hex digits, or a key file",
    Kind.HASH: "32-byte hash: 64 hex digits, sha256:TEXT, or @FILE (SHA-256 of the file)",
    Kind.TIME_MS: "block time: ms, now, +N[s|m|h|d] after the latest block, or an ISO date",
    Kind.STRINGS: "comma-separated list",
    Kind.AMOUNTS: "comma-separated amounts in minor units",
    Kind.PARTY: "party details: name=...,country=... (or a JSON object)",
    Kind.JSON: 'JSON (bytes as {"$bytes": "hex"})',
    Kind.IDENTITIES: 'JSON list of {"public_key": hex or key file, "roles": [...]}',
}


@dataclass(frozen=True, slots=True)
class ArgumentSpec:
    """One argument of an operation or query.

    ``examples`` are valid sample texts (used by the drift test); several examples exercise
    arguments whose meaning depends on another (membership ``propose``). ``default`` is the
    text used when a required argument is not given (``now`` for a dry run's time).
    """

    name: str
    kind: Kind
    help: str
    required: bool = True
    choices: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    default: str | None = None

    def __post_init__(self) -> None:
        assert self.default is None or self.required, self.name
        assert re.fullmatch(r"[a-z][a-z0-9_]*", self.name), self.name
        assert (self.kind is Kind.CHOICE) == bool(self.choices), self.name

    @property
    def option(self) -> str:
        """The command-line option, e.g. ``--end-to-end-id``."""
        return option_name(self.name)

    @property
    def type_help(self) -> str:
        """What values the argument takes."""
        if self.kind is Kind.CHOICE:
            return "one of " + ", ".join(self.choices)
        return _KIND_HELP[self.kind]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One operation (a transaction) or query path of an app."""

    name: str
    help: str
    arguments: tuple[ArgumentSpec, ...] = ()

    def __post_init__(self) -> None:
        names = [argument.name for argument in self.arguments]
        assert len(names) == len(set(names)), f"{self.name}: repeated argument"

    def argument(self, name: str) -> ArgumentSpec:
        """The argument called ``name``; raises ``KeyError``."""
        for argument in self.arguments:
            if argument.name == name:
                return argument
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class AppCommands:
    """The client-facing table of one app: its operations and its queries."""

    app: str
    help: str
    operations: tuple[CommandSpec, ...]
    queries: tuple[CommandSpec, ...]

    def operation(self, name: str) -> CommandSpec:
        """The operation called ``name``; raises ``KeyError``."""
        for spec in self.operations:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def query(self, path: str) -> CommandSpec:
        """The query at ``path``; raises ``KeyError``."""
        for spec in self.queries:
            if spec.name == path:
                return spec
        raise KeyError(path)


class ArgumentError(ValueError):
    """An argument value that cannot be turned into its canonical type (names the argument)."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"argument {argument!r} ({option_name(argument)}): {message}")
        self.argument = argument
        self.message = message


def option_name(argument: str) -> str:
    """The command-line option of an argument name: ``end_to_end_id`` -> ``--end-to-end-id``."""
    return "--" + argument.replace("_", "-")


# ---------------------------------------------------------------------- parsing
Clock = Callable[[], int]


def parse_arguments(
    spec: CommandSpec,
    given: Mapping[str, str | None],
    *,
    base: Mapping[str, Value] | None = None,
    clock: Clock,
) -> dict[str, Value]:
    """The canonical argument map for ``spec`` from option texts (``None``: not given).

    ``base`` (e.g. from ``--args`` JSON) supplies values the options do not; ``clock`` returns
    the latest block time in milliseconds (called only for relative times). Raises
    ``ArgumentError`` for an unparsable value or a missing required argument.
    """
    known = {argument.name for argument in spec.arguments}
    arguments: dict[str, Value] = dict(base or {})
    for name, text in given.items():
        assert name in known, name
        if text is not None:
            arguments[name] = parse_value(spec.argument(name), text, clock)
    for argument in spec.arguments:
        if argument.default is not None and arguments.get(argument.name) is None:
            arguments[argument.name] = parse_value(argument, argument.default, clock)
        if argument.required and arguments.get(argument.name) is None:
            raise ArgumentError(argument.name, f"is required ({argument.type_help})")
    return arguments


def parse_value(argument: ArgumentSpec, text: str, clock: Clock) -> Value:
    """One argument's canonical value from its text; raises ``ArgumentError``."""
    parser = _PARSERS[argument.kind]
    try:
        return parser(argument, text.strip(), clock)
    except _Invalid as error:
        raise ArgumentError(argument.name, f"{error} (expected {argument.type_help})") from None


class _Invalid(Exception):
    """A value text that does not parse (turned into ``ArgumentError`` by ``parse_value``)."""


def _text(argument: ArgumentSpec, text: str, clock: Clock) -> Value:
    return text


def _integer(argument: ArgumentSpec, text: str, clock: Clock) -> Value:
    if not re.fullmatch(r"-?\d[\d_]*", text):
        raise _Invalid(f"{text!r} is not an integer")
    return int(text)


def _amount(argument: ArgumentSpec, text: str, clock: Clock) -> Value:
    if not re.fullmatch(r"\d[\d_]*", text):
        raise _Invalid(f"{text!r} is not a whole number of minor units")
    return int(text)


def _boolean(argument: ArgumentSpec, text: str, clock: Clock) -> Value:
    lowered = text.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise _Invalid(f"{text!r} is not true or false")


def _choice(argument: ArgumentSpec, text: str, clock: Clock) -> Value:
    if text not in argument.choices:
        raise _Invalid(f"{text!r} is not allowed")
    return text


def public_key_of(text: str) -> bytes:
    """A public key from 64 hex digits or from a key file; raises ``ValueError``."""
    if _HEX_KEY.fullmatch(text):
        return bytes.fromhex(text)
    path = Path(text).expanduser()
    if path.is_file():
        try:
            return load_key_file(path).public_key
        except KeyFileError as error:
            raise ValueError(str(error)) from None
    raise ValueError(f"{text!r} is neither 64 hex digits nor a key file")


def _public_key(argument: ArgumentSpec, text: str, clock: Clock) -> Value:
    try:
        return public_key_of(text)
    except ValueError as error:
        raise _Invalid(str(error)) from None


def _hash(argument: ArgumentSpec, text: str, clock: Clock) -> Value:
    if _HEX_KEY.fullmatch(text):
        return bytes.fromhex(text)
    if text.startswith("sha256:"):
        return hash_bytes(text[len("sha256:") :].encode("utf-8"))
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        try:
            if path.stat().st_size > _HASHED_FILE_BYTES_MAX:
                raise _Invalid(f"{path} is larger than {_HASHED_FILE_BYTES_MAX} bytes")
            return hash_bytes(path.read_bytes())
        except OSError as error:
            raise _Invalid(f"cannot read {path}: {error.strerror}") from None
    raise _Invalid(f"{text!r} is not a hash")


def _time_ms(argument: ArgumentSpec, text: str, clock: Clock) -> Value:
    if re.fullmatch(r"\d+", text):
        return int(text)
    if text == "now":
        return clock()
    relative = _RELATIVE_TIME.fullmatch(text)
    if relative is not None:
        return clock() + int(relative.group(1)) * _UNIT_MS[relative.group(2)]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _Invalid(f"{text!r} is not a time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _strings(argument: ArgumentSpec, text: str, clock: Clock) -> Value:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _amounts(argument: ArgumentSpec, text: str, clock: Clock) -> Value:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise _Invalid("the list is empty")
    return tuple(_amount(argument, item, clock) for item in items)


def _json(argument: ArgumentSpec, text: str, clock: Clock) -> Value:
    try:
        return from_json(json.loads(text), argument.name)
    except json.JSONDecodeError as error:
        raise _Invalid(f"not JSON: {error.msg} at character {error.pos}") from None
    except JsonValueError as error:
        raise _Invalid(str(error)) from None


def _party(argument: ArgumentSpec, text: str, clock: Clock) -> Value:
    if text.startswith("{"):
        value = _json(argument, text, clock)
        if not isinstance(value, dict):
            raise _Invalid("a party is a JSON object")
        return value
    details: dict[str, Value] = {}
    for item in text.split(","):
        field_name, separator, field_value = item.partition("=")
        if not separator or not field_name.strip():
            raise _Invalid(f"{item!r} is not field=value")
        details[field_name.strip()] = field_value.strip()
    return details


def _identities(argument: ArgumentSpec, text: str, clock: Clock) -> Value:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise _Invalid(f"not JSON: {error.msg} at character {error.pos}") from None
    if not isinstance(document, list):
        raise _Invalid("expected a JSON list")
    identities: list[Value] = []
    for index, entry in enumerate(document):
        if not isinstance(entry, dict) or not isinstance(entry.get("public_key"), str):
            raise _Invalid(f"item {index} needs a string public_key")
        try:
            public_key = public_key_of(entry["public_key"])
            roles = from_json(entry.get("roles", []), f"{argument.name}[{index}].roles")
        except (ValueError, JsonValueError) as error:
            raise _Invalid(f"item {index}: {error}") from None
        identities.append({"public_key": public_key, "roles": roles})
    return tuple(identities)


_PARSERS: Final[Mapping[Kind, Callable[[ArgumentSpec, str, Clock], Value]]] = {
    Kind.TEXT: _text,
    Kind.IDENTIFIER: _text,
    Kind.INTEGER: _integer,
    Kind.AMOUNT: _amount,
    Kind.BOOLEAN: _boolean,
    Kind.CHOICE: _choice,
    Kind.PUBLIC_KEY: _public_key,
    Kind.HASH: _hash,
    Kind.TIME_MS: _time_ms,
    Kind.STRINGS: _strings,
    Kind.AMOUNTS: _amounts,
    Kind.PARTY: _party,
    Kind.JSON: _json,
    Kind.IDENTITIES: _identities,
}


# ---------------------------------------------------------------------- the tables
_KEY_EXAMPLE: Final = "11" * 32
_HASH_EXAMPLE: Final = "sha256:INV-2024-001"


def _arg(
    name: str,
    kind: Kind,
    description: str,
    *,
    required: bool = True,
    choices: tuple[str, ...] = (),
    examples: tuple[str, ...] = (),
    default: str | None = None,
) -> ArgumentSpec:
    default_examples = {
        Kind.PUBLIC_KEY: (_KEY_EXAMPLE,),
        Kind.HASH: (_HASH_EXAMPLE,),
        Kind.INTEGER: ("1",),
        Kind.AMOUNT: ("1250",),
        Kind.BOOLEAN: ("true",),
        Kind.TIME_MS: ("+1d",),
        Kind.TEXT: ("example text",),
        Kind.IDENTIFIER: ("ID-1",),
    }
    return ArgumentSpec(
        name,
        kind,
        description,
        required,
        choices,
        examples or default_examples.get(kind, choices[:1]),
        default,
    )


def _optional(
    name: str,
    kind: Kind,
    description: str,
    *,
    choices: tuple[str, ...] = (),
    examples: tuple[str, ...] = (),
) -> ArgumentSpec:
    return _arg(name, kind, description, required=False, choices=choices, examples=examples)


def _currency(name: str = "currency", description: str = "ISO 4217 currency code") -> ArgumentSpec:
    return _arg(name, Kind.IDENTIFIER, description, examples=("SGD",))


def _limit(high: int) -> ArgumentSpec:
    return _optional("limit", Kind.INTEGER, f"at most this many results (1..{high})")


def _offer(what: str) -> ArgumentSpec:
    return _arg("offer", Kind.IDENTIFIER, f"{what} offer id", examples=("fx-0123456789ab",))


_RECEIVABLE: Final = _arg(
    "receivable", Kind.IDENTIFIER, "receivable id (rc-...)", examples=("rc-0123456789ab",)
)
_SYMBOL: Final = _arg("symbol", Kind.IDENTIFIER, "asset symbol", examples=("LCB-2030",))


PAYMENTS: Final = AppCommands(
    app="payments",
    help="Cross-border payments: currencies, accounts, payments, FX payment-versus-payment.",
    operations=(
        CommandSpec(
            "create_currency",
            "Register a currency whose issuer is the sender's institution (a bank).",
            (
                _currency("code"),
                _arg("digits", Kind.INTEGER, "minor-unit digits (0..4)", examples=("2",)),
                _optional("transaction_limit", Kind.AMOUNT, "cap on any single payment (0: none)"),
            ),
        ),
        CommandSpec(
            "issue",
            "Issue currency to a participating bank (the currency's issuer only).",
            (
                _currency(),
                _arg("to", Kind.PUBLIC_KEY, "receiving bank"),
                _arg("amount", Kind.AMOUNT, "amount"),
            ),
        ),
        CommandSpec(
            "redeem",
            "Redeem (destroy) currency from the issuer's own account.",
            (_currency(), _arg("amount", Kind.AMOUNT, "amount")),
        ),
        CommandSpec(
            "set_currency_limit",
            "Cap every single payment in a currency (the issuer only; 0 removes the cap).",
            (_currency(), _arg("transaction_limit", Kind.AMOUNT, "the cap (0: none)")),
        ),
        CommandSpec(
            "set_controls",
            "Freeze an account in a currency or cap its payments (issuer or the holder's bank).",
            (
                _arg("account", Kind.PUBLIC_KEY, "the account"),
                _currency(),
                _optional("frozen", Kind.BOOLEAN, "freeze (true) or unfreeze (false)"),
                _optional("transaction_limit", Kind.INTEGER, "cap on single payments (0: none)"),
                _optional("daily_limit", Kind.INTEGER, "cap on the daily outflow (0: none)"),
            ),
        ),
        CommandSpec(
            "transfer",
            "Pay another account (end-to-end id unique per sender).",
            (
                _arg("to", Kind.PUBLIC_KEY, "beneficiary"),
                _currency(),
                _arg("amount", Kind.AMOUNT, "amount"),
                _arg("end_to_end_id", Kind.IDENTIFIER, "end-to-end id, unique per sender"),
                _optional("purpose", Kind.TEXT, "purpose of the payment"),
                _optional(
                    "originator",
                    Kind.PARTY,
                    "originator details",
                    examples=("name=Alice,country=SG",),
                ),
                _optional(
                    "beneficiary",
                    Kind.PARTY,
                    "beneficiary details",
                    examples=("name=Bob,country=HK",),
                ),
                _optional("remittance", Kind.TEXT, "remittance information"),
            ),
        ),
        CommandSpec(
            "offer_fx",
            "Offer to sell one currency for another (the sell leg is escrowed until settled).",
            (
                _currency("sell_currency", "currency sold"),
                _arg("sell_amount", Kind.AMOUNT, "amount sold"),
                _currency("buy_currency", "currency bought"),
                _arg("buy_amount", Kind.AMOUNT, "amount bought"),
                _arg("expires_ms", Kind.TIME_MS, "expiry (block time)"),
                _optional("counterparty", Kind.PUBLIC_KEY, "reserve the offer for this party"),
            ),
        ),
        CommandSpec(
            "accept_fx", "Accept an FX offer: both legs settle atomically.", (_offer("FX"),)
        ),
        CommandSpec(
            "cancel_fx",
            "Cancel an FX offer (the maker); the block that passes its expiry releases it.",
            (_offer("FX"),),
        ),
    ),
    queries=(
        CommandSpec("currencies", "Every registered currency with issuer and supply."),
        CommandSpec("currency", "One currency.", (_currency("code"),)),
        CommandSpec(
            "balances",
            "Every account (currency) of a party with its balance, zero included.",
            (_arg("account", Kind.PUBLIC_KEY, "the account"),),
        ),
        CommandSpec(
            "balance",
            "One balance of an account.",
            (_arg("account", Kind.PUBLIC_KEY, "the account"), _currency()),
        ),
        CommandSpec(
            "payment",
            "A payment by id, or by sender and end-to-end id.",
            (
                _optional("id", Kind.INTEGER, "payment (movement) number"),
                _optional("sender", Kind.PUBLIC_KEY, "the paying account"),
                _optional("end_to_end_id", Kind.IDENTIFIER, "the sender's end-to-end id"),
            ),
        ),
        CommandSpec(
            "history",
            "An account's movements, newest first.",
            (
                _arg("account", Kind.PUBLIC_KEY, "the account"),
                _limit(200),
                _optional("before", Kind.INTEGER, "only movements numbered below this"),
            ),
        ),
        CommandSpec(
            "offers",
            "Open FX offers (never an expired one).",
            (
                _optional(
                    "currency", Kind.IDENTIFIER, "only offers in this currency", examples=("SGD",)
                ),
                _optional("maker", Kind.PUBLIC_KEY, "only offers of this maker"),
                _limit(500),
            ),
        ),
        CommandSpec("offer", "One FX offer.", (_arg("id", Kind.IDENTIFIER, "offer id"),)),
        CommandSpec(
            "controls",
            "Controls on an account.",
            (_arg("account", Kind.PUBLIC_KEY, "the account"),),
        ),
        CommandSpec(
            "escrow",
            "An escrow held for another app (e.g. assets DvP).",
            (
                _arg("app", Kind.IDENTIFIER, "owning app", examples=("assets",)),
                _arg("id", Kind.IDENTIFIER, "escrow id"),
            ),
        ),
    ),
)

SCF: Final = AppCommands(
    app="scf",
    help="Supply-chain finance: orders, receivables, splits, financing and repayment.",
    operations=(
        CommandSpec(
            "register_order",
            "Register a purchase order with a supplier (the sender is the buyer).",
            (
                _arg("order_id", Kind.IDENTIFIER, "order id"),
                _arg("supplier", Kind.PUBLIC_KEY, "the supplier (an enterprise)"),
                _optional("description", Kind.TEXT, "what is ordered"),
            ),
        ),
        CommandSpec(
            "record_milestone",
            "Record shipped/delivered (supplier) or accepted (buyer), in that order.",
            (
                _arg("order_id", Kind.IDENTIFIER, "order id"),
                _arg(
                    "milestone",
                    Kind.CHOICE,
                    "the milestone",
                    choices=("shipped", "delivered", "accepted"),
                ),
                _optional("document_hash", Kind.HASH, "hash of the supporting document"),
            ),
        ),
        CommandSpec(
            "issue",
            "Issue a receivable to a supplier against an invoice (the sender is the debtor).",
            (
                _arg("supplier", Kind.PUBLIC_KEY, "the supplier (an enterprise)"),
                _arg("amount", Kind.AMOUNT, "face amount"),
                _currency(),
                _arg("due_ms", Kind.TIME_MS, "due date (block time)", examples=("+90d",)),
                _arg("invoice_hash", Kind.HASH, "invoice reference hash (unique per debtor)"),
                _optional("order_id", Kind.IDENTIFIER, "the order it pays for"),
            ),
        ),
        CommandSpec("accept", "Accept a receivable issued to the sender.", (_RECEIVABLE,)),
        CommandSpec("cancel", "Cancel a receivable not yet accepted (the debtor).", (_RECEIVABLE,)),
        CommandSpec(
            "transfer",
            "Transfer all of a receivable, or part of it (a split), to another holder.",
            (
                _RECEIVABLE,
                _arg("to", Kind.PUBLIC_KEY, "new holder (enterprise or bank)"),
                _optional("amount", Kind.AMOUNT, "part to transfer (default: all)"),
            ),
        ),
        CommandSpec(
            "split",
            "Split a receivable into children held by the sender (amounts sum to the parent).",
            (
                _RECEIVABLE,
                _arg("amounts", Kind.AMOUNTS, "children's amounts", examples=("600,400",)),
            ),
        ),
        CommandSpec(
            "offer_financing",
            "Offer a receivable to a bank at an annual discount rate.",
            (
                _RECEIVABLE,
                _arg("bank", Kind.PUBLIC_KEY, "the financing bank"),
                _arg(
                    "rate_bps",
                    Kind.INTEGER,
                    "annual discount rate in basis points",
                    examples=("450",),
                ),
                _arg("expires_ms", Kind.TIME_MS, "offer expiry (block time)"),
            ),
        ),
        CommandSpec("cancel_financing", "Withdraw a financing offer (the holder).", (_RECEIVABLE,)),
        CommandSpec(
            "accept_financing",
            "Finance a receivable: the bank pays the discounted price and becomes the holder.",
            (_RECEIVABLE,),
        ),
        CommandSpec(
            "repay",
            "Repay every live part of a receivable to its holders (the debtor).",
            (_RECEIVABLE,),
        ),
        CommandSpec(
            "mark_overdue", "Mark a receivable past its due date as overdue.", (_RECEIVABLE,)
        ),
    ),
    queries=(
        CommandSpec(
            "receivable", "One receivable.", (_arg("id", Kind.IDENTIFIER, "receivable id"),)
        ),
        CommandSpec(
            "by_holder",
            "Live receivables held by a party.",
            (_arg("holder", Kind.PUBLIC_KEY, "the holder"), _limit(500)),
        ),
        CommandSpec(
            "by_debtor",
            "Live receivables owed by a debtor.",
            (_arg("debtor", Kind.PUBLIC_KEY, "the debtor"), _limit(500)),
        ),
        CommandSpec(
            "lineage",
            "A receivable's ancestors and the whole tree from its original invoice.",
            (_arg("id", Kind.IDENTIFIER, "receivable id"),),
        ),
        CommandSpec(
            "exposure",
            "Outstanding and overdue amounts per currency of a debtor.",
            (
                _arg("debtor", Kind.PUBLIC_KEY, "the debtor"),
                _optional(
                    "now_ms",
                    Kind.TIME_MS,
                    "count as overdue what is due by then",
                    examples=("now",),
                ),
            ),
        ),
        CommandSpec(
            "order",
            "One order with its milestones.",
            (_arg("order_id", Kind.IDENTIFIER, "order id"),),
        ),
    ),
)

ASSETS: Final = AppCommands(
    app="assets",
    help="Digital assets: permissioned tokens, compliance rules, delivery-versus-payment.",
    operations=(
        CommandSpec(
            "create_asset",
            "Create an asset class issued by the sender.",
            (
                _SYMBOL,
                _optional("name", Kind.TEXT, "display name"),
                _arg("decimals", Kind.INTEGER, "decimals (0..18)", examples=("0",)),
                _arg("supply_cap", Kind.AMOUNT, "supply cap in base units"),
                _optional(
                    "eligible_roles",
                    Kind.STRINGS,
                    "roles allowed to hold it",
                    examples=("bank,enterprise",),
                ),
                _optional(
                    "eligible_jurisdictions",
                    Kind.STRINGS,
                    "jurisdictions allowed to hold it",
                    examples=("SG,HK",),
                ),
                _optional("max_holders", Kind.INTEGER, "maximum number of holders (0: none)"),
                _optional("holder_cap", Kind.AMOUNT, "maximum per holder (0: none)"),
                _optional("lockup_until_ms", Kind.TIME_MS, "no transfers before this block time"),
                _optional("agent", Kind.PUBLIC_KEY, "agent for freezes and forced transfers"),
            ),
        ),
        CommandSpec(
            "mint",
            "Mint units to an eligible holder (the issuer).",
            (
                _SYMBOL,
                _arg("to", Kind.PUBLIC_KEY, "receiver"),
                _arg("amount", Kind.AMOUNT, "units"),
            ),
        ),
        CommandSpec(
            "burn",
            "Burn units from a holder (the issuer).",
            (
                _SYMBOL,
                _arg("holder", Kind.PUBLIC_KEY, "holder"),
                _arg("amount", Kind.AMOUNT, "units"),
            ),
        ),
        CommandSpec(
            "transfer",
            "Transfer units (every can_transfer rule applies).",
            (
                _SYMBOL,
                _arg("to", Kind.PUBLIC_KEY, "receiver"),
                _arg("amount", Kind.AMOUNT, "units"),
            ),
        ),
        CommandSpec(
            "freeze",
            "Freeze or unfreeze a holder's account (issuer or agent).",
            (
                _SYMBOL,
                _arg("holder", Kind.PUBLIC_KEY, "holder"),
                _arg("frozen", Kind.BOOLEAN, "true to freeze"),
            ),
        ),
        CommandSpec(
            "freeze_partial",
            "Freeze part of a holder's balance (issuer or agent).",
            (
                _SYMBOL,
                _arg("holder", Kind.PUBLIC_KEY, "holder"),
                _arg("amount", Kind.AMOUNT, "units that cannot leave"),
            ),
        ),
        CommandSpec(
            "pause",
            "Pause or resume all transfers of an asset (issuer or agent).",
            (_SYMBOL, _arg("paused", Kind.BOOLEAN, "true to pause")),
        ),
        CommandSpec(
            "force_transfer",
            "Move units between holders (the agent; recorded as forced with a reason).",
            (
                _SYMBOL,
                _arg("from", Kind.PUBLIC_KEY, "current holder"),
                _arg("to", Kind.PUBLIC_KEY, "receiver"),
                _arg("amount", Kind.AMOUNT, "units"),
                _arg("reason", Kind.TEXT, "why (lost key, court order, ...)"),
            ),
        ),
        CommandSpec(
            "offer_dvp",
            "Offer delivery-versus-payment: sell (escrow units) or buy (escrow cash).",
            (
                _SYMBOL,
                _arg("side", Kind.CHOICE, "sell or buy", choices=("sell", "buy")),
                _arg("amount", Kind.AMOUNT, "units"),
                _currency(description="currency of the cash leg"),
                _arg("price", Kind.AMOUNT, "total cash amount"),
                _arg("expires_ms", Kind.TIME_MS, "offer expiry (block time)"),
                _optional("counterparty", Kind.PUBLIC_KEY, "reserve the offer for this party"),
            ),
        ),
        CommandSpec(
            "accept_dvp",
            "Accept a DvP offer: asset and cash legs settle atomically.",
            (_offer("DvP"),),
        ),
        CommandSpec(
            "cancel_dvp",
            "Cancel a DvP offer (the maker); the block that passes its expiry releases it.",
            (_offer("DvP"),),
        ),
    ),
    queries=(
        CommandSpec("assets", "Every asset class."),
        CommandSpec("asset", "One asset class.", (_SYMBOL,)),
        CommandSpec("rules", "An asset's compliance rules.", (_SYMBOL,)),
        CommandSpec(
            "balance",
            "A holder's balance and freezes.",
            (_SYMBOL, _arg("holder", Kind.PUBLIC_KEY, "holder")),
        ),
        CommandSpec(
            "balances",
            "Every asset balance of a holder.",
            (_arg("holder", Kind.PUBLIC_KEY, "holder"),),
        ),
        CommandSpec("holders", "Holders of an asset.", (_SYMBOL, _limit(500))),
        CommandSpec(
            "can_transfer",
            "Dry run of the transfer rules (the CLI fills the receiver's roles from membership).",
            (
                _SYMBOL,
                _arg("from", Kind.PUBLIC_KEY, "sender"),
                _arg("to", Kind.PUBLIC_KEY, "receiver"),
                _arg("amount", Kind.AMOUNT, "units"),
                _arg(
                    "now_ms",
                    Kind.TIME_MS,
                    "evaluate at this block time (default: the latest block's)",
                    examples=("now",),
                    default="now",
                ),
                _optional("to_roles", Kind.STRINGS, "receiver's roles", examples=("bank",)),
                _optional(
                    "to_jurisdiction", Kind.IDENTIFIER, "receiver's jurisdiction", examples=("SG",)
                ),
            ),
        ),
        CommandSpec(
            "history",
            "Movements of an asset (or of one holder), newest first.",
            (
                _SYMBOL,
                _optional("holder", Kind.PUBLIC_KEY, "only this holder's movements"),
                _limit(500),
                _optional("before", Kind.INTEGER, "only movements numbered below this"),
            ),
        ),
        CommandSpec(
            "offers",
            "Open DvP offers (never an expired one).",
            (
                _optional("symbol", Kind.IDENTIFIER, "only this asset", examples=("LCB-2030",)),
                _limit(500),
            ),
        ),
        CommandSpec("offer", "One DvP offer.", (_arg("id", Kind.IDENTIFIER, "offer id"),)),
    ),
)

_INSTITUTION_EXAMPLE: Final = (
    '{"id": "new-bank", "name": "New Bank", "kind": "bank", "jurisdiction": "GB"}'
)
_IDENTITIES_EXAMPLE: Final = '[{"public_key": "' + "22" * 32 + '", "roles": ["bank"]}]'

MEMBERSHIP: Final = AppCommands(
    app="membership",
    help="Membership: institutions, identities, roles and bank governance.",
    operations=(
        CommandSpec(
            "onboard_enterprise",
            "Onboard an enterprise sponsored by the sender's bank.",
            (
                _arg("id", Kind.IDENTIFIER, "institution id", examples=("new-co",)),
                _arg("name", Kind.TEXT, "display name"),
                _arg("jurisdiction", Kind.IDENTIFIER, "ISO 3166 country code", examples=("SG",)),
            ),
        ),
        CommandSpec(
            "register_identity",
            "Register a key for the sender's bank or an enterprise it sponsors.",
            (
                _arg("institution", Kind.IDENTIFIER, "institution id", examples=("lion-bank",)),
                _arg(
                    "public_key", Kind.PUBLIC_KEY, "the new identity's key", examples=("33" * 32,)
                ),
                _arg("roles", Kind.STRINGS, "roles, e.g. customer", examples=("customer",)),
            ),
        ),
        CommandSpec(
            "suspend_identity",
            "Suspend an identity.",
            (_arg("public_key", Kind.PUBLIC_KEY, "the identity"),),
        ),
        CommandSpec(
            "reinstate_identity",
            "Reinstate an identity.",
            (_arg("public_key", Kind.PUBLIC_KEY, "the identity"),),
        ),
        CommandSpec(
            "suspend_enterprise",
            "Suspend an enterprise (its sponsor bank or a regulator).",
            (_arg("id", Kind.IDENTIFIER, "institution id", examples=("merlion-metals",)),),
        ),
        CommandSpec(
            "reinstate_enterprise",
            "Reinstate an enterprise.",
            (_arg("id", Kind.IDENTIFIER, "institution id", examples=("merlion-metals",)),),
        ),
        CommandSpec(
            "propose",
            "Propose admitting, suspending or reinstating a bank, regulator or auditor.",
            (
                _arg(
                    "action",
                    Kind.CHOICE,
                    "what to do",
                    choices=("admit_institution", "suspend_institution", "reinstate_institution"),
                    examples=("admit_institution", "suspend_institution"),
                ),
                _optional(
                    "institution",
                    Kind.JSON,
                    "admit: the institution",
                    examples=(_INSTITUTION_EXAMPLE,),
                ),
                _optional(
                    "identities",
                    Kind.IDENTITIES,
                    "admit: initial identities",
                    examples=(_IDENTITIES_EXAMPLE,),
                ),
                _optional(
                    "institution_id",
                    Kind.IDENTIFIER,
                    "suspend/reinstate: the institution",
                    examples=("harbour-bank",),
                ),
            ),
        ),
        CommandSpec(
            "vote",
            "Vote yes on an open proposal.",
            (_arg("proposal", Kind.IDENTIFIER, "proposal id"),),
        ),
    ),
    queries=(
        CommandSpec(
            "identity", "One identity.", (_arg("public_key", Kind.PUBLIC_KEY, "the identity"),)
        ),
        CommandSpec(
            "institution", "One institution.", (_arg("id", Kind.IDENTIFIER, "institution id"),)
        ),
        CommandSpec(
            "institutions",
            "Every institution (optionally of one kind).",
            (
                _optional(
                    "kind",
                    Kind.CHOICE,
                    "kind",
                    choices=("bank", "enterprise", "regulator", "auditor"),
                ),
            ),
        ),
        CommandSpec(
            "identities",
            "The identities of an institution.",
            (_arg("institution", Kind.IDENTIFIER, "institution id", examples=("lion-bank",)),),
        ),
        CommandSpec("proposal", "One proposal.", (_arg("id", Kind.IDENTIFIER, "proposal id"),)),
        CommandSpec("proposals", "Open proposals."),
    ),
)

APP_COMMANDS: Final[tuple[AppCommands, ...]] = (PAYMENTS, SCF, ASSETS, MEMBERSHIP)


def commands_of(app: str) -> AppCommands:
    """The table of ``app``; raises ``KeyError`` for an app without one."""
    for table in APP_COMMANDS:
        if table.app == app:
            return table
    raise KeyError(app)
