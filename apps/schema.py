"""Operation, query and call schemas: an app declares its arguments once, as data.

Theory of operation
-------------------
Next to the code that executes them, an app states every operation a client may send, every
query it may ask and every call another app may make inside a transaction::

    schema = AppSchema(
        help="Cross-border payments: currencies, accounts, payments, FX.",
        operations=(
            Operation(
                "transfer",
                roles=frozenset({ROLE_BANK, ROLE_CUSTOMER}),
                help="Pay another account.",
                arguments=(
                    Argument("to", PublicKey(), "beneficiary"),
                    Argument("amount", Amount(), "amount in minor units"),
                    Argument("purpose", Text(), "purpose", required=False, default=""),
                ),
            ),
        ),
        queries=(Query("balance", help="One balance.", arguments=(...)),),
    )

An ``Argument`` is a name, a type (``Text``, ``Identifier``, ``Integer``, ``Amount``,
``TimeMs``, ``Boolean``, ``Choice``, ``PublicKey``, ``Hash``, ``Strings``, ``Amounts``,
``Party``, ``Record``, ``Records``), a help text, and whether it is required or what the app
sees when it is absent. Everything else is derived from the declaration:

* **parsing**: ``Operation.parse(values)`` (and ``Query.parse``, ``Call.parse``) is the only
  way an app turns a client's canonical argument map into typed values (``Arguments``), or
  refuses it with ``AppError("bad_argument", ...)`` naming the argument and what it expects.
  ``DispatchingApp`` does it before any of the app's own code runs;
* the **role table** the host authorises senders with (``App.operations``);
* in ``node/``: the command line (``suanpan tx APP OP --help``, ``suanpan query APP PATH``),
  client-side validation in the Python client, and the OpenAPI description of the HTTP API.

Parsing rules: an argument is *absent* when it is missing or null; a required argument that is
absent is refused, an optional one takes its ``default`` (None unless declared). Arguments are
checked in declaration order and the first failure wins. Names the schema does not declare are
ignored (they are part of the signed transaction, but no app reads them). Parsing is pure: no
clock, no I/O, no floats; the same map always gives the same values or the same refusal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Final, cast

from mypy_extensions import mypyc_attr

from apps.base import ROLES, App, AppError, ReadState, TxContext
from consensus.codec import Value, utf8_size

if TYPE_CHECKING:
    from apps.access import ReadRules

__all__ = [
    "AMOUNT_MAX",
    "ID_PATTERN",
    "PARTY_FIELDS_MAX",
    "PUBLIC_KEY_BYTES",
    "TEXT_BYTES_MAX",
    "TIME_MS_MAX",
    "Amount",
    "Amounts",
    "AppSchema",
    "Argument",
    "ArgumentType",
    "Arguments",
    "Boolean",
    "Call",
    "Choice",
    "DispatchingApp",
    "Hash",
    "Identifier",
    "Integer",
    "Operation",
    "Party",
    "PublicKey",
    "Query",
    "Record",
    "Records",
    "Strings",
    "Text",
    "TimeMs",
    "Uncopyable",
    "parse_arguments",
    "read_rule_problems",
    "unshared_value",
]

# Largest amount in minor units: what a signed 64-bit integer holds (codec and every bank core).
AMOUNT_MAX: Final = 2**63 - 1
# Block times are milliseconds since the epoch; 2**62 is far beyond any real date and keeps
# sums of a time and a duration inside the codec's integers.
TIME_MS_MAX: Final = 2**62
# Identifiers a client may choose (end-to-end ids, symbols, order ids): no "/" so they are safe
# key segments; 64 characters covers ISO 20022 end-to-end ids (35) with room to spare.
ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}")
# Free-text fields (purpose, names, addresses) are short payment-message fields, not documents.
TEXT_BYTES_MAX: Final = 280
PUBLIC_KEY_BYTES: Final = 32
HASH_BYTES: Final = 32
# Originator/beneficiary maps carry the handful of ISO 20022 party fields; 16 is plenty.
PARTY_FIELDS_MAX: Final = 16
_NAME: Final = re.compile(r"[a-z][a-z0-9_]*")
# Defaults that are no map (so ``Argument.absent`` returns them as they are, without asking
# the ``Mapping`` ABC).
_IMMUTABLE_DEFAULTS: Final = frozenset({str, bytes, int, bool, tuple})
_HEX_64: Final = re.compile(r"[0-9a-fA-F]{64}")
# How many matched strings an ``Identifier`` remembers (unique ids come and go; names recur).
_MATCHED_MAX: Final = 1024
# How many admission checks' parses an operation keeps for the executions that follow them
# (``Operation.keep``): more than a node holds between a transaction's check and its block.
KEPT_PARSES_MAX: Final = 4096


def _refuse(name: str, expected: str) -> AppError:
    return AppError("bad_argument", f"argument {name!r} {expected}")


def _is_integer(value: Value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------- argument types
class ArgumentType:
    """What values an argument takes. ``parse`` checks one present (non-null) value and returns
    it in the type the app reads, sharing no map or list with it (maps and lists come back
    new, so an app may change what it was given); ``describe`` says what is accepted, in
    words. Every type overrides both (a plain base, not an ``ABC``: mypyc cannot compile
    dataclasses over one)."""

    def parse(self, name: str, value: Value) -> Value:
        """The typed value; raise ``AppError("bad_argument", ...)`` naming ``name``."""
        raise NotImplementedError(f"{type(self).__name__}.parse")

    def describe(self) -> str:
        """What the type accepts, e.g. ``"an integer in [0, 4]"``."""
        raise NotImplementedError(f"{type(self).__name__}.describe")


@dataclass(frozen=True)
class Text(ArgumentType):
    """A string of at most ``bytes_max`` UTF-8 bytes (None: bounded only by the transaction's
    size) and, with ``characters``, a length in characters in that range."""

    bytes_max: int | None = TEXT_BYTES_MAX
    characters: tuple[int, int] | None = None

    def parse(self, name: str, value: Value) -> Value:
        if not isinstance(value, str):
            raise _refuse(name, f"must be {self.describe()}")
        if self.bytes_max is not None and utf8_size(value) > self.bytes_max:
            raise _refuse(name, f"must be {self.describe()}")
        if self.characters is not None and not (
            self.characters[0] <= len(value) <= self.characters[1]
        ):
            raise _refuse(name, f"must be {self.describe()}")
        return value

    def describe(self) -> str:
        if self.characters is not None:
            return f"text of {self.characters[0]}..{self.characters[1]} characters"
        if self.bytes_max is None:
            return "text"
        return f"text of at most {self.bytes_max} bytes"


@dataclass(frozen=True)
class Identifier(ArgumentType):
    """A string matching ``pattern`` in full (default ``ID_PATTERN``: safe as a state key
    segment); ``description`` names the format for people (``"an ISO 4217 code like 'USD'"``)."""

    pattern: re.Pattern[str] = ID_PATTERN
    description: str = ""
    # Strings the pattern matched in full (currency codes recur in every payment; a set
    # lookup costs a fraction of a match). Only exact ``str`` values, bounded: emptied when
    # full. It changes speed, never a result.
    _matched: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    def parse(self, name: str, value: Value) -> Value:
        if not isinstance(value, str) or not self.matches(value):
            raise _refuse(name, f"must be {self.describe()}")
        return value

    def matches(self, text: str) -> bool:
        """Whether the pattern matches all of ``text``."""
        exact = type(text) is str
        if exact and text in self._matched:
            return True
        if self.pattern.fullmatch(text) is None:
            return False
        if exact:
            matched = self._matched
            if len(matched) >= _MATCHED_MAX:
                matched.clear()
            matched.add(text)
        return True

    def describe(self) -> str:
        return self.description or f"an identifier matching {self.pattern.pattern}"


@dataclass(frozen=True)
class Integer(ArgumentType):
    """An integer in ``[low, high]`` (never a bool)."""

    low: int
    high: int

    def __post_init__(self) -> None:
        assert self.low <= self.high, (self.low, self.high)

    def parse(self, name: str, value: Value) -> Value:
        if not _is_integer(value) or not self.low <= value <= self.high:  # type: ignore[operator]
            raise _refuse(name, f"must be {self.describe()}")
        return value

    def describe(self) -> str:
        return f"an integer in [{self.low}, {self.high}]"


@dataclass(frozen=True)
class TimeMs(Integer):
    """A block time in milliseconds since the epoch, in ``[0, TIME_MS_MAX]``."""

    low: int = 0
    high: int = TIME_MS_MAX


@dataclass(frozen=True)
class Amount(ArgumentType):
    """An amount in minor units: positive, or non-negative with ``allow_zero``; at most
    ``AMOUNT_MAX``."""

    allow_zero: bool = False

    @property
    def low(self) -> int:
        """The smallest amount accepted."""
        return 0 if self.allow_zero else 1

    def parse(self, name: str, value: Value) -> Value:
        if not _is_integer(value) or not self.low <= value <= AMOUNT_MAX:  # type: ignore[operator]
            raise _refuse(name, f"must be {self.describe()}")
        return value

    def describe(self) -> str:
        sign = "a non-negative" if self.allow_zero else "a positive"
        return f"{sign} whole number of minor units, at most {AMOUNT_MAX}"


@dataclass(frozen=True)
class Boolean(ArgumentType):
    """True or false."""

    def parse(self, name: str, value: Value) -> Value:
        if not isinstance(value, bool):
            raise _refuse(name, f"must be {self.describe()}")
        return value

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Choice(ArgumentType):
    """One of ``options`` (strings)."""

    options: tuple[str, ...]

    def __post_init__(self) -> None:
        assert self.options, "a choice needs options"
        assert len(set(self.options)) == len(self.options), self.options

    def parse(self, name: str, value: Value) -> Value:
        if not isinstance(value, str) or value not in self.options:
            raise _refuse(name, f"must be {self.describe()}")
        return value

    def describe(self) -> str:
        return f"one of {list(self.options)}"


@dataclass(frozen=True)
class PublicKey(ArgumentType):
    """A 32-byte ed25519 public key, as bytes or (with ``hex``, for JSON clients) 64 hex
    digits; the app always reads bytes."""

    hex: bool = True

    def parse(self, name: str, value: Value) -> Value:
        if isinstance(value, bytes) and len(value) == PUBLIC_KEY_BYTES:
            return value
        if self.hex and isinstance(value, str) and _HEX_64.fullmatch(value):
            return bytes.fromhex(value)
        raise _refuse(name, f"must be {self.describe()}")

    def describe(self) -> str:
        if self.hex:
            return "a public key (32 bytes or 64 hex digits)"
        return "a public key (32 bytes)"


@dataclass(frozen=True)
class Hash(ArgumentType):
    """A 32-byte hash (a document or invoice reference), as bytes or 64 hex digits."""

    def parse(self, name: str, value: Value) -> Value:
        if isinstance(value, bytes) and len(value) == HASH_BYTES:
            return value
        if isinstance(value, str) and _HEX_64.fullmatch(value):
            return bytes.fromhex(value)
        raise _refuse(name, f"must be {self.describe()}")

    def describe(self) -> str:
        return "a 32-byte hash"


@dataclass(frozen=True)
class Strings(ArgumentType):
    """A list of strings, each matching ``pattern`` (None: any string), with
    ``items_min``..``items_max`` items (None: bounded only by the transaction's size); the app
    reads them distinct and sorted."""

    pattern: re.Pattern[str] | None = None
    items_max: int | None = None
    items_min: int = 0

    def parse(self, name: str, value: Value) -> Value:
        if not isinstance(value, (list, tuple)) or not self._count_ok(len(value)):
            raise _refuse(name, f"must be {self._count_words()}")
        items: set[str] = set()
        for item in value:
            if not isinstance(item, str) or (
                self.pattern is not None and not self.pattern.fullmatch(item)
            ):
                raise _refuse(name, f"items must be {self._item_words()}")
            items.add(item)
        return tuple(sorted(items))

    def _count_ok(self, count: int) -> bool:
        return count >= self.items_min and (self.items_max is None or count <= self.items_max)

    def _count_words(self) -> str:
        if self.items_max is None:
            return "a list" if self.items_min == 0 else f"a list of at least {self.items_min} items"
        if self.items_min == 0:
            return f"a list of at most {self.items_max} items"
        return f"a list of {self.items_min}..{self.items_max} items"

    def _item_words(self) -> str:
        return "strings" if self.pattern is None else f"strings matching {self.pattern.pattern}"

    def describe(self) -> str:
        return f"{self._count_words()} of {self._item_words()}"


@dataclass(frozen=True)
class Amounts(ArgumentType):
    """A list of ``items_min``..``items_max`` positive amounts, in the order given."""

    items_max: int
    items_min: int = 2

    def parse(self, name: str, value: Value) -> Value:
        if not isinstance(value, (list, tuple)) or not (
            self.items_min <= len(value) <= self.items_max
        ):
            raise _refuse(name, f"must be a list of {self.items_min}..{self.items_max} amounts")
        for item in value:
            if not _is_integer(item) or not 1 <= item <= AMOUNT_MAX:  # type: ignore[operator]
                raise _refuse(name, "items must be positive amounts")
        return tuple(value)

    def describe(self) -> str:
        return f"a list of {self.items_min}..{self.items_max} positive amounts in minor units"


# The names of party fields (``name``, ``bic``, ``country``...): identifiers.
_FIELD_NAME: Final = Identifier()


@dataclass(frozen=True)
class Party(ArgumentType):
    """Originator or beneficiary details: a map of at most ``PARTY_FIELDS_MAX`` fields, each an
    identifier naming short text (name, account, address, bic, country, ...)."""

    def parse(self, name: str, value: Value) -> Value:
        # (``type(...) is dict`` first: the ABC check costs more than the rest of a field.)
        if not (type(value) is dict or isinstance(value, Mapping)) or len(value) > PARTY_FIELDS_MAX:
            raise _refuse(name, f"must be a map of at most {PARTY_FIELDS_MAX} text fields")
        # Walked as a dict (compiled, ``items()`` of a value typed as a union is a method
        # call, and its pairs come through Python's iterator).
        fields = cast("dict[object, object]", value if type(value) is dict else dict(value))
        details: dict[str, Value] = {}
        for field_name, field_value in fields.items():
            if (
                not isinstance(field_name, str)
                or not _FIELD_NAME.matches(field_name)
                or not isinstance(field_value, str)
                or utf8_size(field_value) > TEXT_BYTES_MAX
            ):
                raise _refuse(
                    name, f"fields must be identifier -> text (<= {TEXT_BYTES_MAX} bytes)"
                )
            details[field_name] = field_value
        return details

    def describe(self) -> str:
        return f"a map of at most {PARTY_FIELDS_MAX} fields, identifier -> text"


@dataclass(frozen=True)
class Record(ArgumentType):
    """A map with string keys whose ``fields`` are arguments in their own right (checked in
    order, named ``outer.field`` in refusals); the app reads a map of the parsed fields."""

    fields: tuple[Argument, ...]

    def __post_init__(self) -> None:
        _check_names(self.fields, "record")

    def parse(self, name: str, value: Value) -> Value:
        if not (type(value) is dict or isinstance(value, Mapping)) or not all(
            isinstance(key, str) for key in value
        ):
            raise _refuse(name, "must be a map with string keys")
        return _parse_fields(self.fields, value, f"{name}.")  # type: ignore[arg-type]

    def describe(self) -> str:
        return "a map of " + ", ".join(argument.name for argument in self.fields)


@dataclass(frozen=True)
class Records(ArgumentType):
    """A list of at most ``items_max`` maps, each shaped like ``Record(fields)``."""

    fields: tuple[Argument, ...]
    items_max: int

    def __post_init__(self) -> None:
        _check_names(self.fields, "records")

    def parse(self, name: str, value: Value) -> Value:
        if not isinstance(value, (list, tuple)) or len(value) > self.items_max:
            raise _refuse(name, f"must be a list of at most {self.items_max} items")
        record = Record(self.fields)
        return tuple(record.parse(f"{name}[{index}]", item) for index, item in enumerate(value))

    def describe(self) -> str:
        fields = ", ".join(argument.name for argument in self.fields)
        return f"a list of at most {self.items_max} maps of {fields}"


# ---------------------------------------------------------------------- arguments
@dataclass(frozen=True)
class Argument:
    """One argument: its ``name`` (lowercase words joined by ``_``), its ``type``, a ``help``
    text for people, and whether it is ``required``. An optional argument that is absent reads
    as ``default`` (None unless given). ``client_default`` is text a client fills in when a
    required argument is not given (``"now"``: the latest block's time); the app never sees it.
    """

    name: str
    type: ArgumentType
    help: str
    required: bool = True
    default: Value = None
    client_default: str | None = None

    def __post_init__(self) -> None:
        assert _NAME.fullmatch(self.name), self.name
        assert self.help, f"argument {self.name!r} needs a help text"
        assert self.required or self.client_default is None, self.name
        assert not self.required or self.default is None, self.name

    def absent(self) -> Value:
        """What the app reads when the argument is not given (a fresh copy of a map default)."""
        default = self.default
        if default is None or type(default) in _IMMUTABLE_DEFAULTS:
            return default
        return dict(default) if isinstance(default, Mapping) else default


def _check_names(arguments: tuple[Argument, ...], what: str) -> None:
    names = [argument.name for argument in arguments]
    assert len(names) == len(set(names)), f"{what}: an argument is declared twice: {names}"


def _parse_fields(
    declared: tuple[Argument, ...], values: Mapping[str, Value], prefix: str = ""
) -> dict[str, Value]:
    parsed: dict[str, Value] = {}
    # Decoded arguments are a dict: its own lookup, compiled, is a C call where a Mapping's
    # ``get`` is a method call through Python.
    given: dict[str, Value] = values if isinstance(values, dict) else dict(values)
    for argument in declared:
        value = given.get(argument.name)
        if value is None:
            if argument.required:
                raise _refuse(prefix + argument.name, "is required")
            parsed[argument.name] = argument.absent()
        else:
            parsed[argument.name] = argument.type.parse(prefix + argument.name, value)
    return parsed


def parse_arguments(declared: tuple[Argument, ...], values: Mapping[str, Value]) -> Arguments:
    """``values`` checked against ``declared`` (module docstring: parsing rules)."""
    if not (type(values) is dict or isinstance(values, Mapping)):
        raise AppError("bad_argument", "arguments must be a map")
    return Arguments(_parse_fields(declared, values))


class Arguments:
    """Parsed arguments, read with the accessor of their Python type. Reading a name the
    schema does not declare, or with the wrong accessor, is a bug in the app (it asserts)."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Value]) -> None:
        self._values = values

    def __repr__(self) -> str:
        return f"Arguments({self._values!r})"

    def as_dict(self) -> dict[str, Value]:
        """Every declared argument (absent optional ones as their default)."""
        return {name: self._read(name) for name in self._values}

    def _read(self, name: str) -> Value:
        """The value of ``name`` as the accessors that may hand out a map or a list read it."""
        return self._values[name]

    def has(self, name: str) -> bool:
        """True when ``name`` has a value (given, or an optional argument with a default)."""
        return self._values[name] is not None

    def value(self, name: str) -> Value:
        """The value of ``name`` as parsed."""
        return self._read(name)

    def text(self, name: str) -> str:
        """A string argument (text, identifier, choice) that always has a value."""
        value = self._values[name]
        assert isinstance(value, str), (name, value)
        return value

    def optional_text(self, name: str) -> str | None:
        """A string argument, or None when absent."""
        value = self._values[name]
        assert value is None or isinstance(value, str), (name, value)
        return value

    def integer(self, name: str) -> int:
        """An integer argument (integer, amount, time) that always has a value."""
        value = self._values[name]
        assert _is_integer(value), (name, value)
        return value  # type: ignore[return-value]

    def optional_integer(self, name: str) -> int | None:
        """An integer argument, or None when absent."""
        value = self._values[name]
        assert value is None or _is_integer(value), (name, value)
        return value  # type: ignore[return-value]

    def key(self, name: str) -> bytes:
        """A bytes argument (public key, hash) that always has a value."""
        value = self._values[name]
        assert isinstance(value, bytes), (name, value)
        return value

    def optional_key(self, name: str) -> bytes | None:
        """A bytes argument, or None when absent."""
        value = self._values[name]
        assert value is None or isinstance(value, bytes), (name, value)
        return value

    def flag(self, name: str) -> bool:
        """A boolean argument that always has a value."""
        value = self._values[name]
        assert isinstance(value, bool), (name, value)
        return value

    def optional_flag(self, name: str) -> bool | None:
        """A boolean argument, or None when absent."""
        value = self._values[name]
        assert value is None or isinstance(value, bool), (name, value)
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        """A list of strings (empty when absent)."""
        value = self._read(name)
        if value is None:
            return ()
        assert isinstance(value, tuple), (name, value)
        return value  # type: ignore[return-value]

    def integers(self, name: str) -> tuple[int, ...]:
        """A list of integers."""
        value = self._read(name)
        assert isinstance(value, tuple), (name, value)
        return value  # type: ignore[return-value]

    def map(self, name: str) -> dict[str, Value]:
        """A map argument (party, record) that always has a value."""
        value = self._read(name)
        assert isinstance(value, dict), (name, value)
        return value

    def optional_map(self, name: str) -> dict[str, Value] | None:
        """A map argument, or None when absent."""
        value = self._read(name)
        assert value is None or isinstance(value, dict), (name, value)
        return value

    def maps(self, name: str) -> tuple[dict[str, Value], ...]:
        """A list of maps (records); empty when absent."""
        value = self._read(name)
        if value is None:
            return ()
        assert isinstance(value, tuple), (name, value)
        return value  # type: ignore[return-value]

    def require(self, name: str, why: str) -> Value:
        """The value of an optional argument that ``why`` makes necessary; refuses its absence
        as ``bad_argument`` (``"argument 'institution' is required to admit_institution"``)."""
        value = self._read(name)
        if value is None:
            raise _refuse(name, f"is required {why}")
        return value


class Uncopyable(ValueError):
    """A value holds a container other than a dict, list or tuple (``unshared_value``)."""


def _scalar(value: object) -> bool:
    """True for a value an app cannot change: text, bytes, a number, a bool or None."""
    kind = type(value)
    return kind is str or kind is int or kind is bytes or kind is bool or value is None


def unshared_value(value: object) -> object:
    """``value`` with every dict and list in it new, and every tuple that holds one (the same
    scalars): what an app may change without reaching ``value``. ``Uncopyable`` when it holds
    a container of another type (decoded values never do). (Typed ``object``: compiled,
    reading a ``Value`` out of a map checks it against every type of the union.)"""
    kind = type(value)
    if kind is dict:
        copied = dict(cast("dict[object, object]", value))
        for item in copied.values():
            if not _scalar(item):
                return {name: unshared_value(item) for name, item in copied.items()}
        return copied
    if kind is list or kind is tuple:
        items: list[object] = []
        changed = kind is list
        for item in cast("list[object] | tuple[object, ...]", value):
            if not _scalar(item):
                item = unshared_value(item)
                changed = True
            items.append(item)
        if kind is list:
            return items
        return tuple(items) if changed else value
    if _scalar(value):
        return value
    raise Uncopyable(kind.__name__)


class _CheckedArguments(Arguments):
    """A parse handed to an admission check while the parse itself is kept for the execution
    (``Operation.keep``): it reads the same values, but every map, list or tuple it hands out
    is a copy, so nothing the check does to them reaches the kept parse. ``leaked`` is set when
    it handed out a value it could not copy (that parse is then not kept)."""

    __slots__ = ("leaked",)

    def __init__(self, values: dict[str, Value]) -> None:
        super().__init__(values)
        self.leaked = False

    def _read(self, name: str) -> Value:
        value = self._values[name]
        if _scalar(value):
            return value
        try:
            return cast("Value", unshared_value(value))
        except Uncopyable:
            self.leaked = True
            return value


# ---------------------------------------------------------------------- operations and queries
@dataclass(frozen=True)
class Operation:
    """An operation a client sends in a transaction: the membership ``roles`` allowed to send
    it, its ``arguments`` and a one-sentence ``help``.

    It keeps the parses of the admission checks that passed (``keep``), by transaction hash,
    for the execution that follows on the same node (``take_kept``): the parse of the very
    arguments object the check was handed, whose maps and lists no code has been handed (the
    check read it through copies: ``_CheckedArguments``). Parsing is pure, so this changes
    speed, never a result."""

    name: str
    roles: frozenset[str]
    help: str
    arguments: tuple[Argument, ...] = ()
    # transaction hash -> (the arguments parsed, their parse), oldest first.
    _kept: dict[bytes, tuple[Mapping[str, Value], Arguments]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        assert _NAME.fullmatch(self.name), self.name
        assert self.roles, f"operation {self.name!r} names no role that may send it"
        assert self.roles <= ROLES, f"{self.name}: unknown roles {sorted(self.roles - ROLES)}"
        _check_names(self.arguments, self.name)

    def parse(self, values: Mapping[str, Value]) -> Arguments:
        """The typed arguments, or ``AppError("bad_argument", ...)``."""
        return parse_arguments(self.arguments, values)

    def keep(self, transaction_hash: bytes, values: Mapping[str, Value], parsed: Arguments) -> None:
        """Keep ``parsed``, the parse of ``values`` whose maps and lists no code has been
        handed, for the execution of transaction ``transaction_hash`` (at most
        ``KEPT_PARSES_MAX``: the oldest goes first)."""
        kept = self._kept
        if transaction_hash not in kept and len(kept) >= KEPT_PARSES_MAX:
            del kept[next(iter(kept))]
        kept[transaction_hash] = (values, parsed)

    def take_kept(self, transaction_hash: bytes, values: Mapping[str, Value]) -> Arguments | None:
        """The parse kept for transaction ``transaction_hash`` if it is one of this very
        ``values`` object, else None; either way it is kept no longer."""
        entry = self._kept.pop(transaction_hash, None)
        if entry is None or entry[0] is not values:
            return None
        return entry[1]


@dataclass(frozen=True)
class Query:
    """A read-only question at ``name`` (the query path), its ``arguments`` and ``help``."""

    name: str
    help: str
    arguments: tuple[Argument, ...] = ()

    def __post_init__(self) -> None:
        assert _NAME.fullmatch(self.name), self.name
        _check_names(self.arguments, self.name)

    def parse(self, values: Mapping[str, Value]) -> Arguments:
        """The typed arguments, or ``AppError("bad_argument", ...)``."""
        return parse_arguments(self.arguments, values)


@dataclass(frozen=True)
class Call:
    """An operation another app invokes inside the same transaction (``ctx.call``); not
    reachable by clients directly."""

    name: str
    help: str
    arguments: tuple[Argument, ...] = ()

    def __post_init__(self) -> None:
        assert _NAME.fullmatch(self.name), self.name
        _check_names(self.arguments, self.name)

    def parse(self, values: Mapping[str, Value]) -> Arguments:
        """The typed arguments, or ``AppError("bad_argument", ...)``."""
        return parse_arguments(self.arguments, values)


@dataclass(frozen=True)
class AppSchema:
    """Everything an app offers, as data: one-line ``help`` about the app, its client
    ``operations`` and ``queries``, and the ``calls`` other apps may make."""

    help: str
    operations: tuple[Operation, ...]
    queries: tuple[Query, ...] = ()
    calls: tuple[Call, ...] = ()
    _operations: dict[str, Operation] = field(init=False, repr=False, compare=False)
    _queries: dict[str, Query] = field(init=False, repr=False, compare=False)
    _calls: dict[str, Call] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for what, items in (
            ("operation", self.operations),
            ("query", self.queries),
            ("call", self.calls),
        ):
            names = [item.name for item in items]
            assert len(names) == len(set(names)), f"a {what} is declared twice: {names}"
        object.__setattr__(self, "_operations", {op.name: op for op in self.operations})
        object.__setattr__(self, "_queries", {query.name: query for query in self.queries})
        object.__setattr__(self, "_calls", {call.name: call for call in self.calls})

    def roles(self) -> dict[str, frozenset[str]]:
        """Operation name -> the roles allowed to send it (``App.operations``)."""
        return {operation.name: operation.roles for operation in self.operations}

    def operation(self, name: str) -> Operation | None:
        """The operation called ``name``, or None."""
        return self._operations.get(name)

    def query(self, path: str) -> Query | None:
        """The query at ``path``, or None."""
        return self._queries.get(path)

    def call(self, name: str) -> Call | None:
        """The call called ``name``, or None."""
        return self._calls.get(name)


def read_rule_problems(schema: AppSchema, rules: ReadRules) -> list[str]:
    """Where an app's read rules and its schema disagree: a rule for a query the schema does
    not declare, or a rule whose ``accounts``/``institutions`` (or a lookup) name an argument
    the query does not have. Empty when they agree (the app loader refuses an app otherwise)."""
    problems: list[str] = []
    for path, rule in sorted(rules.queries.items()):
        query = schema.query(path)
        if query is None:
            problems.append(f"read rule for query {path!r}, which the schema does not declare")
            continue
        declared = {argument.name for argument in query.arguments}
        # The rule and the rule of what a proof of the answer carries besides it.
        for part in (rule, *(part for part in (rule.proof, rule.closed) if part is not None)):
            named = set(part.accounts) | set(part.institutions) | set(part.keyed_by)
            named.update(source for lookup in part.lookups for _, source in lookup.arguments)
            problems.extend(
                f"read rule for query {path!r} names argument {name!r}, which it does not have"
                for name in sorted(named - declared)
            )
            for lookup in part.lookups:
                target = schema.query(lookup.path)
                if target is None:
                    problems.append(
                        f"read rule for query {path!r} looks up unknown {lookup.path!r}"
                    )
    return problems


# ---------------------------------------------------------------------- dispatch
@mypyc_attr(allow_interpreted_subclasses=True)
class DispatchingApp(App):
    """An app driven by its ``schema``: arguments are parsed before any of its code runs.

    * operation ``op`` is the method ``_op(ctx, arguments, execute)``: ``check`` runs it with
      ``execute=False`` (it may look at state and must return before writing), ``apply`` with
      ``execute=True``;
    * query ``path`` is answered by ``answer(state, path, arguments)``;
    * call ``op`` from app ``caller`` is the method ``_call_op(ctx, caller, arguments)``.

    Unknown names are refused (``unknown_operation``, ``unknown_query``, ``not_callable``).

    Its ``check`` and ``apply`` read the arguments only to parse them, and parsing builds new
    maps and tuples (``ArgumentType.parse``), so the host hands them the transaction's own
    (``App.arguments_left_intact``). A check that passes leaves its parse with the operation
    (``Operation.keep``; the method read it through copies of its maps and lists), and the
    execution of the same transaction's arguments on this node takes it instead of parsing
    them again.
    """

    arguments_left_intact: ClassVar[bool] = True

    def check(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> None:
        """Admission: the operation exists and its arguments are well formed (and whatever
        the operation's method checks before it returns when not executing)."""
        self._dispatch(ctx, operation, arguments, execute=False)

    def apply(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> Value:
        """Execute a client operation for ``ctx.sender``."""
        return self._dispatch(ctx, operation, arguments, execute=True)

    def _dispatch(
        self, ctx: TxContext, operation: str, arguments: Mapping[str, Value], *, execute: bool
    ) -> Value:
        declared = self.schema.operation(operation) if self.schema is not None else None
        if declared is None:
            raise AppError("unknown_operation", f"{self.name} has no operation {operation!r}")
        result: Value
        if execute:
            # The parse of this transaction's admission check on this node, when it was of
            # these very arguments: equal to parsing them now (``Operation``).
            parsed = declared.take_kept(ctx.transaction_hash, arguments)
            if parsed is None:
                parsed = declared.parse(arguments)
            result = getattr(self, "_" + operation)(ctx, parsed, True)
            return result
        parsed = declared.parse(arguments)
        handler = getattr(self, "_" + operation)
        if not self.arguments_left_intact:
            # The host hands each call its own copy: no execution is handed these again.
            result = handler(ctx, parsed, False)
            return result
        given = _CheckedArguments(parsed._values)
        result = handler(ctx, given, False)
        if not given.leaked:
            declared.keep(ctx.transaction_hash, arguments, parsed)
        return result

    def query(self, state: ReadState, path: str, arguments: Mapping[str, Value]) -> Value:
        """Parse the arguments of query ``path`` and ``answer`` it."""
        declared = self.schema.query(path) if self.schema is not None else None
        if declared is None:
            raise AppError("unknown_query", f"{self.name} has no query {path!r}")
        return self.answer(state, path, declared.parse(arguments))

    def answer(self, state: ReadState, path: str, arguments: Arguments) -> Value:
        """Answer query ``path`` (declared in the schema) with parsed ``arguments``."""
        raise AppError("unknown_query", f"{self.name} has no query {path!r}")

    def call(
        self, ctx: TxContext, caller: str, operation: str, arguments: Mapping[str, Value]
    ) -> Value:
        """Parse the arguments of call ``operation`` and run ``_call_<operation>``."""
        declared = self.schema.call(operation) if self.schema is not None else None
        if declared is None:
            if self.schema is None or not self.schema.calls:
                return super().call(ctx, caller, operation, arguments)
            raise AppError("not_callable", f"{self.name} offers no call {operation!r}")
        handler = getattr(self, "_call_" + operation)
        result: Value = handler(ctx, caller, declared.parse(arguments))
        return result
