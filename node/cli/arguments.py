"""Command-line texts of app arguments, read as the app's schema declares them.

Theory of operation
-------------------
An app declares every argument once (``apps.schema``): its name, type and help. The command
line derives everything else from the argument's *type*: the option name (``end_to_end_id``
-> ``--end-to-end-id``), the metavar and the help line of ``--help``, and how the option's text
becomes a canonical value:

========================== ==============================================================
type                       text accepted
========================== ==============================================================
Text, Identifier, Choice   the text itself
Integer                    an integer (``_`` separators allowed)
Amount                     a whole number of minor units (``1250`` = 12.50)
TimeMs                     milliseconds, ``now``, ``+N[s|m|h|d]`` after the latest block, or
                           an ISO date
Boolean                    true/false, yes/no, 1/0, on/off
PublicKey                  64 hex digits, or a key file (its public key)
Hash                       64 hex digits, ``sha256:TEXT``, or ``@FILE`` (SHA-256 of the file)
Strings, Amounts           comma-separated items
Party                      ``name=...,country=...`` or a JSON object
Record, Records, others    JSON (bytes as ``{"$bytes": hex}``; public keys inside records may
                           be hex or key files)
========================== ==============================================================

Then the value is checked by the schema itself (``ArgumentType.parse``), so the command line
refuses exactly what the app would refuse, naming the option, before anything is sent. The
value sent is the one read from the text (never the schema's normalised form), so the same
arguments always encode to the same canonical bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from apps.base import AppError
from apps.schema import (
    Amount,
    Amounts,
    Argument,
    ArgumentType,
    Boolean,
    Choice,
    Hash,
    Identifier,
    Integer,
    Party,
    PublicKey,
    Record,
    Records,
    Strings,
    Text,
    TimeMs,
)
from consensus.codec import Value
from consensus.crypto import hash_bytes
from node.jsonvalue import JsonValueError, from_json
from node.keys import KeyFileError, load_key_file

__all__ = [
    "ArgumentError",
    "Clock",
    "metavar",
    "option_name",
    "parse_options",
    "parse_text",
    "public_key_of",
    "type_help",
]

_HEX_KEY: Final = re.compile(r"[0-9a-fA-F]{64}")
_INTEGER: Final = re.compile(r"-?\d[\d_]*")
_RELATIVE_TIME: Final = re.compile(r"\+(\d{1,9})([smhd])")
_UNIT_MS: Final = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# A hash argument given as a file is read whole; invoices and delivery notes are documents of a
# few MiB at most, and the CLI should not hash a disk image by mistake.
_HASHED_FILE_BYTES_MAX: Final = 64 * 1024 * 1024

Clock = Callable[[], int]


class ArgumentError(ValueError):
    """An argument text that cannot become a value its app accepts (names the argument)."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"argument {argument!r} ({option_name(argument)}): {message}")
        self.argument = argument
        self.message = message


class _Invalid(Exception):
    """A text that does not parse (turned into ``ArgumentError`` by ``parse_text``)."""


def option_name(argument: str) -> str:
    """The command-line option of an argument name: ``end_to_end_id`` -> ``--end-to-end-id``."""
    return "--" + argument.replace("_", "-")


def type_help(argument_type: ArgumentType) -> str:
    """What text the option takes, for ``--help`` and error messages."""
    match argument_type:
        case TimeMs():
            return "block time: ms, now, +N[s|m|h|d] after the latest block, or an ISO date"
        case Amount():
            sign = "positive" if argument_type.low else "non-negative"
            return f"{sign} whole number of minor units, e.g. 1250 = 12.50"
        case PublicKey():
            return "public key: 64 hex digits, or a key file"
        case Hash():
            return "32-byte hash: 64 hex digits, sha256:TEXT, or @FILE (SHA-256 of the file)"
        case Strings():
            return "comma-separated list: " + argument_type.describe()
        case Amounts():
            return "comma-separated amounts in minor units: " + argument_type.describe()
        case Party():
            return "party details: name=...,country=... (or a JSON object)"
        case Choice():
            return "one of " + ", ".join(argument_type.options)
        case Records() | Record():
            return f"JSON: {argument_type.describe()} (public keys as hex or key files)"
        case Text() | Identifier() | Integer() | Boolean():
            return argument_type.describe()
    return f'JSON (bytes as {{"$bytes": "hex"}}): {argument_type.describe()}'


def metavar(argument_type: ArgumentType) -> str:
    """The option's metavar in ``--help``."""
    match argument_type:
        case TimeMs():
            return "TIME"
        case Amount():
            return "AMOUNT"
        case Integer():
            return "INT"
        case PublicKey():
            return "KEY"
        case Hash():
            return "HASH"
        case Boolean():
            return "BOOL"
        case Strings():
            return "A,B,..."
        case Amounts():
            return "N,N,..."
        case Party():
            return "K=V,..."
        case Choice():
            return "[" + "|".join(argument_type.options) + "]"
        case Identifier():
            return "ID"
        case Text():
            return "TEXT"
    return "JSON"


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


def parse_text(argument: Argument, text: str, clock: Clock) -> Value:
    """The value of ``argument`` from its option text, checked by the app's schema; raises
    ``ArgumentError`` naming the argument. ``clock`` returns the latest block time in
    milliseconds (called only for relative times)."""
    try:
        value = _read(argument.type, text.strip(), clock)
    except _Invalid as error:
        raise ArgumentError(
            argument.name, f"{error} (expected {type_help(argument.type)})"
        ) from None
    check(argument, value)
    return value


def check(argument: Argument, value: Value) -> None:
    """Refuse ``value`` as the app would (its schema's parse), as ``ArgumentError``."""
    try:
        argument.type.parse(argument.name, value)
    except AppError as error:
        message = error.message.removeprefix(f"argument {argument.name!r} ")
        raise ArgumentError(argument.name, message) from None


def parse_options(
    declared: tuple[Argument, ...],
    given: Mapping[str, str | None],
    *,
    base: Mapping[str, Value] | None = None,
    clock: Clock,
) -> dict[str, Value]:
    """The argument map for an operation or query from option texts (``None``: not given).

    ``base`` (e.g. from ``--args`` JSON) supplies values the options do not; arguments the
    schema does not declare pass through unchecked. A required argument with a
    ``client_default`` gets it; a missing required one, or a value the schema refuses, raises
    ``ArgumentError``."""
    by_name = {argument.name: argument for argument in declared}
    arguments: dict[str, Value] = dict(base or {})
    for name, value in arguments.items():
        if name in by_name and value is not None:
            check(by_name[name], value)
    for name, text in given.items():
        assert name in by_name, name
        if text is not None:
            arguments[name] = parse_text(by_name[name], text, clock)
    for argument in declared:
        if argument.client_default is not None and arguments.get(argument.name) is None:
            arguments[argument.name] = parse_text(argument, argument.client_default, clock)
        if argument.required and arguments.get(argument.name) is None:
            raise ArgumentError(argument.name, f"is required ({type_help(argument.type)})")
    return arguments


# ---------------------------------------------------------------------- text readers
def _read(argument_type: ArgumentType, text: str, clock: Clock) -> Value:
    match argument_type:
        case TimeMs():
            return _time_ms(text, clock)
        case Amount():
            return _amount(text, argument_type)
        case Integer():
            if not _INTEGER.fullmatch(text):
                raise _Invalid(f"{text!r} is not an integer")
            return int(text)
        case Boolean():
            return _boolean(text)
        case PublicKey():
            try:
                return public_key_of(text)
            except ValueError as error:
                raise _Invalid(str(error)) from None
        case Hash():
            return _hash(text)
        case Strings():
            return tuple(item.strip() for item in text.split(",") if item.strip())
        case Amounts():
            items = [item.strip() for item in text.split(",") if item.strip()]
            if not items:
                raise _Invalid("the list is empty")
            return tuple(_amount(item, Amount()) for item in items)
        case Party():
            return _party(text)
        case Choice():
            if text not in argument_type.options:
                raise _Invalid(f"{text!r} is not allowed")
            return text
        case Record():
            return _with_keys(_json(text), argument_type.fields)
        case Records():
            value = _json(text)
            if not isinstance(value, tuple):
                raise _Invalid("expected a JSON list")
            return tuple(_with_keys(item, argument_type.fields) for item in value)
        case Text() | Identifier():
            return text
    return _json(text)


def _amount(text: str, argument_type: Amount) -> Value:
    if not _INTEGER.fullmatch(text):
        raise _Invalid(f"{text!r} is not a whole number of minor units")
    amount = int(text)
    if amount < argument_type.low:
        raise _Invalid(f"{text!r} must be {'positive' if argument_type.low else 'non-negative'}")
    return amount


def _boolean(text: str) -> Value:
    lowered = text.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise _Invalid(f"{text!r} is not true or false")


def _hash(text: str) -> Value:
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


def _time_ms(text: str, clock: Clock) -> Value:
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


def _json(text: str) -> Value:
    try:
        return from_json(json.loads(text))
    except json.JSONDecodeError as error:
        raise _Invalid(f"not JSON: {error.msg} at character {error.pos}") from None
    except (JsonValueError, ValueError) as error:  # e.g. a number of over 4,300 digits
        raise _Invalid(str(error)) from None


def _party(text: str) -> Value:
    if text.startswith("{"):
        value = _json(text)
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


def _with_keys(value: Value, fields: tuple[Argument, ...]) -> Value:
    """A JSON record whose public-key fields may be hex or key files, as bytes."""
    if not isinstance(value, dict):
        return value  # the schema refuses it, naming the argument
    record: dict[str, Value] = {str(name): item for name, item in value.items()}
    for argument in fields:
        item = record.get(argument.name)
        if isinstance(argument.type, PublicKey) and isinstance(item, str):
            try:
                record[argument.name] = public_key_of(item)
            except ValueError as error:
                raise _Invalid(f"{argument.name}: {error}") from None
    return record
