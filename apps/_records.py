"""Shared plumbing for the business apps: state records, ordered keys, expiry, membership.

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
Client arguments are declared and parsed by each app's schema (``apps.schema``); genesis
entries are parsed the same way (``genesis_entry``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Final, cast

from apps.base import AppError, AppState, ReadState, TxContext
from apps.schema import (
    AMOUNT_MAX,
    ID_PATTERN,
    TEXT_BYTES_MAX,
    Argument,
    Arguments,
    parse_arguments,
)
from apps.state import NamespacedState
from consensus.codec import SMALL_INT_MAX, CodecError, Limits, Value, decode, encode

__all__ = [
    "AMOUNT_MAX",
    "EXPIRY_SWEEP_MAX",
    "ID_PATTERN",
    "STATE_LIMITS",
    "TEXT_BYTES_MAX",
    "Identity",
    "active_identity",
    "as_int",
    "as_map",
    "expired_in_backlog",
    "genesis_entry",
    "get_int",
    "get_record",
    "hex_key",
    "identity_of",
    "institution_of",
    "key",
    "key_from_hex",
    "last_segment",
    "numbered_key",
    "prefix",
    "put_int",
    "put_record",
    "read_value",
    "require_active",
    "scan_end",
    "scan_records",
    "schedule_expiry",
    "take_expired",
    "unschedule_expiry",
    "write_value",
]

# State records are small; the bound catches a bug that would bloat state, not a real record.
STATE_LIMITS: Final = Limits(total_bytes_max=1024 * 1024, depth_max=8)
# Expired items one app closes at the end of one block: bounds the work a block adds beyond its
# transactions (each close is a handful of writes); a larger backlog drains over later blocks.
EXPIRY_SWEEP_MAX: Final = 128


# Keys built from names and public keys only, memoised: an app builds the same few keys
# (balances, controls, currencies) many times per block. Only segment tuples of exact ``str``
# and ``bytes`` are remembered, so a lookup can never match a tuple it does not equal in type
# too (``(1,)`` equals ``(True,)`` and ``(1.0,)``, but no tuple with an ``int`` is stored).
# Bounded: emptied when full; the memo changes speed, never a key.
_KEYS: dict[tuple[object, ...], bytes] = {}
_KEYS_MAX: Final = 16_384


def key(*segments: str | bytes | int) -> bytes:
    """A state key from segments: ``str`` as is, ``bytes`` as lowercase hex, ``int`` as 16 hex
    digits (so integer order is key order)."""
    try:
        cached = _KEYS.get(segments)
    except TypeError:  # an unhashable segment: the build below refuses it
        cached = None
    if cached is not None:
        return cached
    built = _build_key(segments)
    for segment in segments:
        kind = type(segment)
        if kind is not str and kind is not bytes:
            return built  # a number or a subclass: built each time, never memoised
    if len(_KEYS) >= _KEYS_MAX:
        _KEYS.clear()
    _KEYS[segments] = built
    return built


def _build_key(segments: tuple[str | bytes | int, ...]) -> bytes:
    parts: list[str] = []
    for segment in segments:
        kind = type(segment)
        # Exact types first (most segments are names and keys), then subclasses.
        if kind is str:
            assert "/" not in segment, segment  # type: ignore[operator]
            parts.append(segment)  # type: ignore[arg-type]
        elif kind is bytes:
            parts.append(segment.hex())  # type: ignore[union-attr]
        elif type(segment) is int:
            # (Compiled, a number below 2**62 compares in C: tested first.)
            assert 0 <= segment <= SMALL_INT_MAX or 0 <= segment < 2**64, segment
            # 16 lowercase hex digits, as f"{segment:016x}" writes them, in half the time.
            parts.append(segment.to_bytes(8, "big").hex())
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


def numbered_key(collection: bytes, number: int) -> bytes:
    """``key(*segments, number)`` for ``collection = prefix(*segments)``: the number's 16 hex
    digits appended, without building the other segments again (a key with a number is never
    memoised, and most keys built per transaction end in one)."""
    assert collection.endswith(b"/"), collection
    assert 0 <= number < 2**64, number
    return collection + number.to_bytes(8, "big").hex().encode("ascii")


def scan_end(start: bytes) -> bytes:
    """The first key after every key beginning with ``start`` (for a prefix ``.../``, ``...0``)."""
    assert start.endswith(b"/"), start
    return start[:-1] + b"0"


# Decoded records by their bytes: reference records (a currency, an asset class) are read by
# every transaction that uses them, and decoding checks every byte. Only maps of scalars are
# kept, and every caller gets a map of its own, so a caller that changes its copy changes
# nothing else; equal bytes always decode to equal maps, so the memo changes speed, never a
# value. Bounded: emptied when full.
_RECORDS: dict[bytes, dict[str, Value]] = {}
_RECORDS_MAX: Final = 4096
_RECORD_BYTES_MAX: Final = 1024
_SCALAR_TYPES: Final = frozenset({str, bytes, int, bool, type(None)})


def read_value(state: ReadState, record_key: bytes) -> bytes | None:
    """``state.get(record_key)``, called directly when ``state`` is the host's
    ``NamespacedState``: compiled, a call through the ``ReadState`` protocol goes through
    Python's method call."""
    if isinstance(state, NamespacedState):
        return state.get(record_key)
    return state.get(record_key)


def write_value(state: AppState, record_key: bytes, data: bytes) -> None:
    """``state.put(record_key, data)``, called directly as ``read_value`` calls ``get``."""
    if isinstance(state, NamespacedState):
        state.put(record_key, data)
    else:
        state.put(record_key, data)


def get_record(state: ReadState, record_key: bytes) -> dict[str, Value] | None:
    """The map stored at ``record_key``, or None."""
    data = read_value(state, record_key)
    if data is None:
        return None
    memo = type(data) is bytes and len(data) <= _RECORD_BYTES_MAX
    if memo:
        cached = _RECORDS.get(data)
        if cached is not None:
            return dict(cached)
    value = decode(data, STATE_LIMITS)
    assert isinstance(value, dict), record_key
    if memo and _SCALAR_TYPES.issuperset(map(type, value.values())):
        if len(_RECORDS) >= _RECORDS_MAX:
            _RECORDS.clear()
        _RECORDS[data] = dict(value)
    return value


def put_record(state: AppState, record_key: bytes, record: Mapping[str, Value]) -> None:
    """Store ``record`` canonically at ``record_key``."""
    # A dict is encoded as it is (encoding never changes its value); another mapping as a copy.
    write_value(
        state, record_key, encode(record if type(record) is dict else dict(record), STATE_LIMITS)
    )


def get_int(state: ReadState, record_key: bytes) -> int:
    """An integer counter or balance; 0 when absent."""
    data = read_value(state, record_key)
    if data is None:
        return 0
    return as_int(decode(data, STATE_LIMITS))


def put_int(state: AppState, record_key: bytes, value: int) -> None:
    """Store an integer; a zero is stored as absence so scans list only non-zero entries."""
    if value == 0:
        state.delete(record_key)
    else:
        write_value(state, record_key, encode(value, STATE_LIMITS))


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


def take_expired_offers(state: AppState, now: int, kind: str) -> Iterator[dict[str, Value]]:
    """The open offers (records under ``key(kind, id)``) due by ``now``, as ``take_expired``
    takes them from the index; the caller releases each. The index holds open offers only:
    settling or cancelling an offer removes its entry."""
    for _, offer_id in take_expired(state, now):
        offer = get_record(state, key(kind, offer_id))
        assert offer is not None, offer_id
        assert offer["status"] == "open", offer_id
        yield offer


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


def genesis_entry(declared: tuple[Argument, ...], value: object, what: str) -> Arguments:
    """One entry of a genesis list parsed like arguments (``apps.schema``); ``bad_genesis``
    when it is not a map."""
    if not isinstance(value, Mapping) or not all(isinstance(name, str) for name in value):
        raise AppError("bad_genesis", f"{what} must be a map with string keys")
    return parse_arguments(declared, value)


def as_map(value: Value) -> dict[str, Value]:
    """Assert that a decoded value is a string-keyed map (records always are)."""
    assert isinstance(value, dict), value
    return value


class Identity:
    """What membership says about one public key (the ``identity`` query's answer), and
    whether its institution is active."""

    __slots__ = (
        "institution",
        "institution_active",
        "jurisdiction",
        "public_key",
        "roles",
        "status",
    )

    def __init__(
        self, public_key: bytes, answer: Mapping[str, Value], institution_active: bool
    ) -> None:
        self.public_key = public_key
        # A dict (as membership answers) is read with dict lookups; compiled, ``get`` on a
        # ``Mapping`` is a method call through Python.
        fields: dict[str, Value] = answer if type(answer) is dict else dict(answer)
        institution = fields.get("institution")
        jurisdiction = fields.get("jurisdiction")
        roles = fields.get("roles")
        status = fields.get("status")
        self.institution = institution if isinstance(institution, str) else ""
        self.jurisdiction = jurisdiction if isinstance(jurisdiction, str) else ""
        listed = roles if isinstance(roles, (list, tuple)) else ()
        self.roles: frozenset[str] = frozenset(role for role in listed if isinstance(role, str))
        self.status = status if isinstance(status, str) else ""
        self.institution_active = institution_active

    @property
    def active(self) -> bool:
        """True when membership lists the identity, and its institution, as active (as the
        host requires of a sender)."""
        return self.status == "active" and self.institution_active


def identity_of(ctx: TxContext, public_key: bytes) -> Identity | None:
    """Membership's record of ``public_key``, or None when it is not a member."""
    answer = ctx.query("membership", "identity", {"public_key": public_key})
    if answer is None:
        return None
    if not (type(answer) is dict or isinstance(answer, Mapping)):
        raise AppError("membership", "membership answered the identity query with a non-map")
    fields = cast("Mapping[str, Value]", answer)
    return Identity(public_key, fields, _institution_active(ctx, fields))


def active_identity(ctx: TxContext, public_key: bytes, who: str) -> Identity:
    """Membership's record of ``public_key``; ``AppError`` unless it is an active member of an
    active institution."""
    answer = _member_answer(ctx, public_key, who)
    if not _active_member(ctx, answer):
        raise _not_active(public_key, who)
    return Identity(public_key, answer, True)


def require_active(ctx: TxContext, public_key: bytes, who: str) -> None:
    """``active_identity`` for a caller that needs only the check: the same refusals in the
    same order, without building the ``Identity``."""
    if not _active_member(ctx, _member_answer(ctx, public_key, who)):
        raise _not_active(public_key, who)


def _active_member(ctx: TxContext, answer: Mapping[str, Value]) -> bool:
    """Whether membership's ``identity`` answer is of an active identity of an active
    institution."""
    return answer.get("status") == "active" and _institution_active(ctx, answer)


def _institution_active(ctx: TxContext, answer: Mapping[str, Value]) -> bool:
    """Whether the institution of an identity (membership's ``identity`` answer) is active: an
    identity of a suspended institution may no more receive than send."""
    institution = ctx.query("membership", "institution", {"id": answer.get("institution")})
    if not (type(institution) is dict or isinstance(institution, Mapping)):
        return False
    return cast("Mapping[str, Value]", institution).get("status") == "active"


def _member_answer(ctx: TxContext, public_key: bytes, who: str) -> Mapping[str, Value]:
    """Membership's answer for ``public_key`` (``identity_of``'s), refused as
    ``unknown_party`` when it is not a member."""
    answer = ctx.query("membership", "identity", {"public_key": public_key})
    if answer is None:
        raise AppError("unknown_party", f"{who} {public_key.hex()[:16]}… is not a member")
    if not (type(answer) is dict or isinstance(answer, Mapping)):
        raise AppError("membership", "membership answered the identity query with a non-map")
    return cast("Mapping[str, Value]", answer)


def _not_active(public_key: bytes, who: str) -> AppError:
    return AppError("inactive_party", f"{who} {public_key.hex()[:16]}… is not active")


def institution_of(ctx: TxContext, institution_id: str) -> Mapping[str, Value] | None:
    """Membership's record of an institution, or None."""
    answer = ctx.query("membership", "institution", {"id": institution_id})
    if answer is None:
        return None
    if not (type(answer) is dict or isinstance(answer, Mapping)):
        raise AppError("membership", "membership answered the institution query with a non-map")
    return answer  # type: ignore[return-value]


def decode_state(data: bytes) -> Value:
    """Decode a state value (for callers that scan raw pairs)."""
    try:
        return decode(data, STATE_LIMITS)
    except CodecError as error:  # pragma: no cover - state is only ever written by encode
        raise AssertionError(f"corrupt state value: {error}") from None
