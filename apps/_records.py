"""Shared plumbing for the business apps: state records, ordered keys, argument parsing.

State layout
------------
Every app keeps its records as canonical-encoded values (``consensus.codec``) under keys built
by ``key(...)``: ASCII segments joined by ``/``. Segments are identifiers from
``ID_PATTERN`` (which excludes ``/``), public keys in lowercase hex (fixed width) or
integers as 16 hex digits (fixed width, so numeric order is key order). A prefix scan over
``prefix(...)`` therefore visits exactly one collection, in a stable, meaningful order.

Expiry
------
Offers and proposals that lapse by block time (or height) are indexed under
``expiry/<at>/<item id>`` (``schedule_expiry``). The app's ``end_block`` takes what is due
(``take_expired``: ``at <= now``, in key order, so oldest first and then by id, at most
``EXPIRY_SWEEP_MAX`` per block) and closes it. This stays deterministic because ``now`` is the
block's agreed time (or height) and the index is scanned in key order; the bound keeps a
block's extra work small. When more fell due than one block takes, ``expiry_behind`` holds the
time the sweep has reached, and ``expired_in_backlog`` lets queries report the items still
waiting as expired.

Arguments
---------
Client arguments arrive as a canonical map; ``Arguments`` turns them into typed values or
raises ``AppError("bad_argument", ...)`` naming the argument and what was expected. Public
keys may be given as 32 bytes or as 64 lowercase/uppercase hex characters (JSON clients).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from itertools import islice
from typing import Final

from apps.base import App, AppError, AppState, ReadState, TxContext
from consensus.codec import CodecError, Limits, Value, decode, encode

__all__ = [
    "AMOUNT_MAX",
    "EXPIRY_SWEEP_MAX",
    "ID_PATTERN",
    "STATE_LIMITS",
    "TEXT_BYTES_MAX",
    "Arguments",
    "Identity",
    "active_identity",
    "as_arguments",
    "as_int",
    "as_map",
    "expired_in_backlog",
    "get_int",
    "get_record",
    "hex_key",
    "identity_of",
    "institution_of",
    "key",
    "key_from_hex",
    "last_segment",
    "prefix",
    "put_int",
    "put_record",
    "scan_end",
    "scan_records",
    "schedule_expiry",
    "take_expired",
    "unschedule_expiry",
]

# Largest amount in minor units: what a signed 64-bit integer holds (codec and every bank core).
AMOUNT_MAX: Final = 2**63 - 1
# Identifiers a client may choose (end-to-end ids, symbols, order ids): no "/" so they are safe
# key segments; 64 characters covers ISO 20022 end-to-end ids (35) with room to spare.
ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}")
# Free-text fields (purpose, names, addresses) are short payment-message fields, not documents.
TEXT_BYTES_MAX: Final = 280
# State records are small; the bound catches a bug that would bloat state, not a real record.
STATE_LIMITS: Final = Limits(total_bytes_max=1024 * 1024, depth_max=8)
PUBLIC_KEY_BYTES: Final = 32
# Expired items one app closes at the end of one block: bounds the work a block adds beyond its
# transactions (each close is a handful of writes); a larger backlog drains over later blocks.
EXPIRY_SWEEP_MAX: Final = 128
_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")


def key(*segments: str | bytes | int) -> bytes:
    """A state key from segments: ``str`` as is, ``bytes`` as lowercase hex, ``int`` as 16 hex
    digits (so integer order is key order)."""
    parts: list[str] = []
    for segment in segments:
        kind = type(segment)
        # Exact types first (most segments are names and keys), then subclasses.
        if kind is str:
            assert "/" not in segment, segment  # type: ignore[operator]
            parts.append(segment)  # type: ignore[arg-type]
        elif kind is bytes:
            parts.append(segment.hex())  # type: ignore[union-attr]
        elif isinstance(segment, str):
            assert "/" not in segment, segment
            parts.append(segment)
        elif isinstance(segment, bytes):
            parts.append(segment.hex())
        elif isinstance(segment, bool):
            raise TypeError("a key segment cannot be a bool")
        elif isinstance(segment, int):
            assert 0 <= segment < 2**64, segment
            parts.append(f"{segment:016x}")
        else:
            raise TypeError(f"a key segment cannot be a {type(segment).__name__}")
    return "/".join(parts).encode("ascii")


def prefix(*segments: str | bytes | int) -> bytes:
    """The scan prefix for every key that starts with ``segments``."""
    return key(*segments) + b"/"


def scan_end(start: bytes) -> bytes:
    """The first key after every key beginning with ``start`` (for a prefix ``.../``, ``...0``)."""
    assert start.endswith(b"/"), start
    return start[:-1] + b"0"


def get_record(state: ReadState, record_key: bytes) -> dict[str, Value] | None:
    """The map stored at ``record_key``, or None."""
    data = state.get(record_key)
    if data is None:
        return None
    value = decode(data, STATE_LIMITS)
    assert isinstance(value, dict), record_key
    return value


def put_record(state: AppState, record_key: bytes, record: Mapping[str, Value]) -> None:
    """Store ``record`` canonically at ``record_key``."""
    state.put(record_key, encode(dict(record), STATE_LIMITS))


def get_int(state: ReadState, record_key: bytes) -> int:
    """An integer counter or balance; 0 when absent."""
    data = state.get(record_key)
    if data is None:
        return 0
    return as_int(decode(data, STATE_LIMITS))


def put_int(state: AppState, record_key: bytes, value: int) -> None:
    """Store an integer; a zero is stored as absence so scans list only non-zero entries."""
    if value == 0:
        state.delete(record_key)
    else:
        state.put(record_key, encode(value, STATE_LIMITS))


def scan_records(
    state: ReadState, start: bytes, *, reverse: bool = False
) -> Iterator[tuple[bytes, Value]]:
    """(key, decoded value) for every key under the prefix ``start`` (ending in ``/``)."""
    for record_key, data in state.scan(start, scan_end(start), reverse=reverse):
        yield record_key, decode(data, STATE_LIMITS)


def last_segment(record_key: bytes) -> str:
    """The final ``/``-separated segment of a key."""
    return record_key.rsplit(b"/", 1)[-1].decode("ascii")


def schedule_expiry(state: AppState, at: int, item: str) -> None:
    """Index ``item`` to be closed by the first block whose time (or height) reaches ``at``."""
    state.put(key("expiry", at, item), b"")


def unschedule_expiry(state: AppState, at: int, item: str) -> None:
    """Remove ``item`` from the expiry index (it closed before it expired)."""
    state.delete(key("expiry", at, item))


def take_expired(state: AppState, now: int) -> tuple[tuple[int, str], ...]:
    """The (at, item) pairs due by ``now`` (``at <= now``), oldest first, at most
    ``EXPIRY_SWEEP_MAX``; they leave the index, and the caller closes them. Records whether
    items are left over for the next block (``expired_in_backlog``)."""
    start = prefix("expiry")
    due = list(islice(state.scan(start, key("expiry", now + 1)), EXPIRY_SWEEP_MAX + 1))
    taken: list[tuple[int, str]] = []
    for record_key, _ in due[:EXPIRY_SWEEP_MAX]:
        _, at, item = record_key.decode("ascii").split("/")
        taken.append((int(at, 16), item))
        state.delete(record_key)
    behind = key("expiry_behind")
    if len(due) > EXPIRY_SWEEP_MAX:
        state.put(behind, encode(now, STATE_LIMITS))  # (put_int would drop a 0)
    elif state.get(behind) is not None:
        state.delete(behind)
    return tuple(taken)


def expired_in_backlog(state: ReadState, at: int) -> bool:
    """True when an item due at ``at`` has expired but is still waiting in the sweep's backlog
    (its record does not say so yet): queries report it as expired."""
    behind = state.get(key("expiry_behind"))
    return behind is not None and at <= as_int(decode(behind, STATE_LIMITS))


def hex_key(public_key: bytes) -> str:
    """A public key as lowercase hex (how results name accounts)."""
    return public_key.hex()


def key_from_hex(text: str) -> bytes:
    """The public key a key segment names."""
    return bytes.fromhex(text)


def as_int(value: Value) -> int:
    """Assert that a stored value is an integer (amounts, times, counters)."""
    assert isinstance(value, int), value
    assert not isinstance(value, bool), value
    return value


def as_arguments(value: object, what: str) -> Arguments:
    """``Arguments`` over a nested map (a genesis entry); ``bad_genesis`` when it is not one."""
    if not isinstance(value, Mapping) or not all(isinstance(name, str) for name in value):
        raise AppError("bad_genesis", f"{what} must be a map with string keys")
    return Arguments(value)


def as_map(value: Value) -> dict[str, Value]:
    """Assert that a decoded value is a string-keyed map (records always are)."""
    assert isinstance(value, dict), value
    return value


class Arguments:
    """Typed access to an operation's arguments; every failure is ``bad_argument``."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Value]) -> None:
        if not isinstance(values, Mapping):
            raise AppError("bad_argument", "arguments must be a map")
        self._values = values

    def _get(self, name: str, required: bool) -> Value:
        if name not in self._values or self._values[name] is None:
            if required:
                raise AppError("bad_argument", f"argument {name!r} is required")
            return None
        return self._values[name]

    def has(self, name: str) -> bool:
        """True when ``name`` was given (and is not null)."""
        return self._values.get(name) is not None

    def amount(self, name: str, *, allow_zero: bool = False) -> int:
        """A positive integer amount in minor units (or non-negative with ``allow_zero``)."""
        value = self._get(name, True)
        low = 0 if allow_zero else 1
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= AMOUNT_MAX:
            raise AppError(
                "bad_argument",
                f"argument {name!r} must be an integer amount in minor units in "
                f"[{low}, {AMOUNT_MAX}]",
            )
        return value

    def integer(self, name: str, low: int, high: int, default: int | None = None) -> int:
        """An integer in ``[low, high]``; ``default`` when absent (required when None)."""
        value = self._get(name, default is None)
        if value is None:
            assert default is not None
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise AppError(
                "bad_argument", f"argument {name!r} must be an integer in [{low}, {high}]"
            )
        return value

    def optional_integer(self, name: str, low: int, high: int) -> int | None:
        """An integer in ``[low, high]``, or None when absent."""
        if not self.has(name):
            return None
        return self.integer(name, low, high)

    def identifier(self, name: str, default: str | None = None) -> str:
        """A client-chosen identifier matching ``ID_PATTERN``."""
        value = self._get(name, default is None)
        if value is None:
            assert default is not None
            return default
        if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
            raise AppError(
                "bad_argument",
                f"argument {name!r} must be an identifier matching {ID_PATTERN.pattern}",
            )
        return value

    def choice(self, name: str, options: tuple[str, ...], default: str | None = None) -> str:
        """One of ``options``."""
        value = self._get(name, default is None)
        if value is None:
            assert default is not None
            return default
        if value not in options:
            raise AppError("bad_argument", f"argument {name!r} must be one of {list(options)}")
        assert isinstance(value, str)
        return value

    def text(self, name: str, default: str | None = None) -> str:
        """Free text of at most ``TEXT_BYTES_MAX`` UTF-8 bytes."""
        value = self._get(name, default is None)
        if value is None:
            assert default is not None
            return default
        if not isinstance(value, str) or len(value.encode("utf-8")) > TEXT_BYTES_MAX:
            raise AppError(
                "bad_argument", f"argument {name!r} must be text of at most {TEXT_BYTES_MAX} bytes"
            )
        return value

    def public_key(self, name: str) -> bytes:
        """A 32-byte public key, given as bytes or 64 hex characters."""
        value = self._get(name, True)
        if isinstance(value, bytes) and len(value) == PUBLIC_KEY_BYTES:
            return value
        if isinstance(value, str) and _HEX.fullmatch(value):
            return bytes.fromhex(value)
        raise AppError(
            "bad_argument", f"argument {name!r} must be a public key (32 bytes or 64 hex digits)"
        )

    def optional_public_key(self, name: str) -> bytes | None:
        """A public key, or None when absent."""
        return self.public_key(name) if self.has(name) else None

    def digest(self, name: str) -> bytes:
        """A 32-byte hash (document or invoice reference), as bytes or 64 hex characters."""
        value = self._get(name, True)
        if isinstance(value, bytes) and len(value) == 32:
            return value
        if isinstance(value, str) and _HEX.fullmatch(value):
            return bytes.fromhex(value)
        raise AppError("bad_argument", f"argument {name!r} must be a 32-byte hash")

    def boolean(self, name: str, default: bool | None = None) -> bool:
        """A boolean."""
        value = self._get(name, default is None)
        if value is None:
            assert default is not None
            return default
        if not isinstance(value, bool):
            raise AppError("bad_argument", f"argument {name!r} must be true or false")
        return value

    def string_list(self, name: str, pattern: re.Pattern[str], items_max: int) -> tuple[str, ...]:
        """A list of distinct strings matching ``pattern``, sorted; empty when absent."""
        value = self._get(name, False)
        if value is None:
            return ()
        if not isinstance(value, list | tuple) or len(value) > items_max:
            raise AppError(
                "bad_argument", f"argument {name!r} must be a list of at most {items_max} items"
            )
        items: set[str] = set()
        for item in value:
            if not isinstance(item, str) or not pattern.fullmatch(item):
                raise AppError(
                    "bad_argument", f"argument {name!r} items must match {pattern.pattern}"
                )
            items.add(item)
        return tuple(sorted(items))

    def amount_list(self, name: str, items_max: int) -> tuple[int, ...]:
        """A list of 2..``items_max`` positive amounts."""
        value = self._get(name, True)
        if not isinstance(value, list | tuple) or not 2 <= len(value) <= items_max:
            raise AppError(
                "bad_argument", f"argument {name!r} must be a list of 2..{items_max} amounts"
            )
        amounts: list[int] = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= AMOUNT_MAX:
                raise AppError("bad_argument", f"argument {name!r} items must be positive amounts")
            amounts.append(item)
        return tuple(amounts)

    def party(self, name: str) -> dict[str, Value]:
        """Originator/beneficiary details: a map of short text fields (name, account, address,
        bic, country, ...); an empty map when absent."""
        value = self._get(name, False)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or len(value) > PARTY_FIELDS_MAX:
            raise AppError(
                "bad_argument",
                f"argument {name!r} must be a map of at most {PARTY_FIELDS_MAX} text fields",
            )
        details: dict[str, Value] = {}
        for field_name, field_value in value.items():
            if (
                not isinstance(field_name, str)
                or not ID_PATTERN.fullmatch(field_name)
                or not isinstance(field_value, str)
                or len(field_value.encode("utf-8")) > TEXT_BYTES_MAX
            ):
                raise AppError(
                    "bad_argument",
                    f"argument {name!r} fields must be identifier -> text (<= {TEXT_BYTES_MAX} "
                    "bytes)",
                )
            details[field_name] = field_value
        return details


# Originator/beneficiary maps carry the handful of ISO 20022 party fields; 16 is plenty.
PARTY_FIELDS_MAX: Final = 16


class Identity:
    """What membership says about one public key (the ``identity`` query's answer)."""

    __slots__ = ("institution", "jurisdiction", "public_key", "roles", "status")

    def __init__(self, public_key: bytes, answer: Mapping[str, Value]) -> None:
        self.public_key = public_key
        institution = answer.get("institution")
        jurisdiction = answer.get("jurisdiction")
        roles = answer.get("roles")
        status = answer.get("status")
        self.institution = institution if isinstance(institution, str) else ""
        self.jurisdiction = jurisdiction if isinstance(jurisdiction, str) else ""
        listed = roles if isinstance(roles, list | tuple) else ()
        self.roles: frozenset[str] = frozenset(role for role in listed if isinstance(role, str))
        self.status = status if isinstance(status, str) else ""

    @property
    def active(self) -> bool:
        """True when membership lists the identity as active."""
        return self.status == "active"


def identity_of(ctx: TxContext, public_key: bytes) -> Identity | None:
    """Membership's record of ``public_key``, or None when it is not a member."""
    answer = ctx.query("membership", "identity", {"public_key": public_key})
    if answer is None:
        return None
    if not isinstance(answer, Mapping):
        raise AppError("membership", "membership answered the identity query with a non-map")
    return Identity(public_key, answer)  # type: ignore[arg-type]


def active_identity(ctx: TxContext, public_key: bytes, who: str) -> Identity:
    """Membership's record of ``public_key``; ``AppError`` unless it is an active member."""
    identity = identity_of(ctx, public_key)
    if identity is None:
        raise AppError("unknown_party", f"{who} {public_key.hex()[:16]}… is not a member")
    if not identity.active:
        raise AppError("inactive_party", f"{who} {public_key.hex()[:16]}… is not active")
    return identity


def institution_of(ctx: TxContext, institution_id: str) -> Mapping[str, Value] | None:
    """Membership's record of an institution, or None."""
    answer = ctx.query("membership", "institution", {"id": institution_id})
    if answer is None:
        return None
    if not isinstance(answer, Mapping):
        raise AppError("membership", "membership answered the institution query with a non-map")
    return answer  # type: ignore[return-value]


def decode_state(data: bytes) -> Value:
    """Decode a state value (for callers that scan raw pairs)."""
    try:
        return decode(data, STATE_LIMITS)
    except CodecError as error:  # pragma: no cover - state is only ever written by encode
        raise AssertionError(f"corrupt state value: {error}") from None


Handler = Callable[[TxContext, Arguments, bool], Value]


class DispatchingApp(App):
    """An app whose client operation ``op`` is the method ``_op(ctx, arguments, execute)``.

    ``check`` runs the method with ``execute=False`` (it parses and validates the arguments,
    then returns before touching state); ``apply`` runs it with ``execute=True``.
    """

    def check(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> None:
        """Stateless admission: the operation exists and its arguments are well formed."""
        self._dispatch(ctx, operation, arguments, execute=False)

    def apply(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> Value:
        """Execute a client operation for ``ctx.sender``."""
        return self._dispatch(ctx, operation, arguments, execute=True)

    def _dispatch(
        self, ctx: TxContext, operation: str, arguments: Mapping[str, Value], *, execute: bool
    ) -> Value:
        if operation not in self.operations:
            raise AppError("unknown_operation", f"{self.name} has no operation {operation!r}")
        handler: Handler = getattr(self, "_" + operation)
        return handler(ctx, Arguments(arguments), execute)
