"""The on-chain validator registry: who certifies each height, changed only by governance.

Theory of operation
-------------------
Membership keeps, in its own namespace, the validator set in force from each height on:
``vset/<height, 8 bytes big-endian>`` holds the whole ordered set (each validator's name,
consensus key, node key and operating bank) from that height. Genesis writes the entry of
height 1 from the genesis document's validators (``AppHost.init_genesis(validators=...)``);
every change executed by governance in block ``c`` writes the entry of height
``c + RECONFIGURATION_DELAY_HEIGHTS`` (c + 2). Entries are never deleted, so the set in force at
any height ``h`` is the entry with the largest height <= ``h``, and state after block ``c``
answers it for every ``h <= c + 2`` (``validator_set_at``). Being state, the schedule is covered
by the app hash: a node that installs a snapshot holds it too, and can check each set against
the ``next_validators_hash`` of the certified header before it.

A change is a governance action (``apps.membership``: a bank proposes, more than two thirds of
the active banks approve) of one of three kinds:

* ``add_validator``: a new validator (name, consensus key, node key) run by an active bank;
* ``remove_validator``: a validator leaves;
* ``rotate_validator_key``: a validator's consensus key and/or node key is replaced.

What a change may do, and why:

* **One validator per change, one change in flight.** A change is refused while another is
  scheduled but not yet in force (``validator_change_pending``). Consecutive sets then differ
  in one validator, so the validators a switch leaves untouched are a quorum of the new set
  whenever the set has at least three validators (adding to two or more): the chain stays
  live across a switch even if the joining, leaving or rotating validator is not ready.
* **At least one validator, at most ``VALIDATORS_MAX``** (``last_validator``,
  ``too_many_validators``).
* **A consensus key is used once, ever** (``validator_key_used``): a retired key may no longer
  be guarded, and must never count again. Node keys are unique within a set.
* **The operating bank must be an active bank** when a validator is added.

Safety does not depend on these limits: every height is decided by its own set under its own
fault assumption (at most f of that set byzantine, for ever), and every replica computes that
set from the same chain. The limits keep the chain live across a switch and make a retired key
worthless.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from apps.base import AppError, AppState, ReadState
from apps.schema import Arguments
from consensus.codec import Value, decode, encode
from consensus.crypto import PUBLIC_KEY_BYTES
from consensus.types import (
    RECONFIGURATION_DELAY_HEIGHTS,
    VALIDATORS_MAX,
    Validator,
    ValidatorSet,
)

__all__ = [
    "ACTION_ADD_VALIDATOR",
    "ACTION_REMOVE_VALIDATOR",
    "ACTION_ROTATE_VALIDATOR_KEY",
    "VALIDATOR_ACTIONS",
    "VALIDATOR_NAME_PATTERN",
    "execute_change",
    "parse_change",
    "scheduled_sets",
    "seed_validators",
    "validate_change",
    "validator_records_at",
    "validator_set_at",
]

ACTION_ADD_VALIDATOR: Final = "add_validator"
ACTION_REMOVE_VALIDATOR: Final = "remove_validator"
ACTION_ROTATE_VALIDATOR_KEY: Final = "rotate_validator_key"
VALIDATOR_ACTIONS: Final = (
    ACTION_ADD_VALIDATOR,
    ACTION_REMOVE_VALIDATOR,
    ACTION_ROTATE_VALIDATOR_KEY,
)
# The genesis document's validator name rule (node.genesis), so every name fits a ValidatorSet.
VALIDATOR_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# What each action is for, in refusals ("argument 'node_key' is required to add a validator").
_PURPOSES: Final = {
    ACTION_ADD_VALIDATOR: "to add a validator",
    ACTION_REMOVE_VALIDATOR: "to remove a validator",
    ACTION_ROTATE_VALIDATOR_KEY: "to rotate a validator's keys",
}

_SET: Final = b"vset/"
_KEY_USED: Final = b"vkey/"
_SET_END: Final = b"vset0"  # the first key after every "vset/..." key


def _set_key(height: int) -> bytes:
    return _SET + height.to_bytes(8, "big")


def _record(
    name: str, public_key: bytes, node_key: bytes, institution: str | None
) -> dict[str, Value]:
    return {
        "name": name,
        "public_key": public_key,
        "node_key": node_key,
        "institution": institution,
    }


def _records_of(raw: bytes) -> tuple[dict[str, Value], ...]:
    value = decode(raw)
    assert isinstance(value, tuple), "validator sets are stored as arrays"
    records = []
    for entry in value:
        assert isinstance(entry, dict), "validator records are maps"
        records.append(entry)
    return tuple(records)


def _as_set(records: tuple[dict[str, Value], ...]) -> ValidatorSet:
    members = []
    for record in records:
        name, public_key, node_key = record["name"], record["public_key"], record["node_key"]
        assert isinstance(name, str)
        assert isinstance(public_key, bytes)
        assert isinstance(node_key, bytes)
        members.append(Validator(name, public_key, node_key or None))
    return ValidatorSet(tuple(members))


def seed_validators(state: AppState, entries: tuple[Value, ...]) -> None:
    """Genesis: the set in force from height 1. ``entries``: ``{"name", "public_key",
    "node_key"}`` maps (keys as bytes), in validator order."""
    records: list[dict[str, Value]] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise AppError("bad_genesis", "each genesis validator is a map")
        name, public_key, node_key = (
            entry.get("name"),
            entry.get("public_key"),
            entry.get("node_key"),
        )
        if not (
            isinstance(name, str)
            and isinstance(public_key, bytes)
            and isinstance(node_key, bytes)
            and len(public_key) == PUBLIC_KEY_BYTES
            and len(node_key) in (0, PUBLIC_KEY_BYTES)
        ):
            raise AppError("bad_genesis", "a genesis validator needs name, public_key, node_key")
        records.append(_record(name, public_key, node_key, None))
    try:
        _as_set(tuple(records))
    except ValueError as error:
        raise AppError("bad_genesis", f"genesis validators: {error}") from None
    state.put(_set_key(1), encode(tuple(records)))
    for record in records:
        public_key = record["public_key"]
        assert isinstance(public_key, bytes)
        state.put(_KEY_USED + public_key, b"")


def _latest(state: ReadState, height: int | None = None) -> tuple[int, bytes] | None:
    """(effective height, stored set) of the entry in force at ``height`` (None: the latest
    scheduled entry), or None when the chain keeps no registry."""
    end = _SET_END if height is None else _set_key(height + 1)
    for key, raw in state.scan(_SET, end, reverse=True):
        return int.from_bytes(key[len(_SET) :], "big"), raw
    return None


def validator_records_at(
    state: ReadState, height: int | None = None
) -> tuple[int, tuple[dict[str, Value], ...]] | None:
    """The effective height and records (name, public_key, node_key, institution) of the set in
    force at ``height`` (None: the latest scheduled set); None when no registry exists."""
    latest = _latest(state, height)
    if latest is None:
        return None
    return latest[0], _records_of(latest[1])


def validator_set_at(state: ReadState, height: int) -> ValidatorSet | None:
    """The set certifying block ``height``, as state after block ``height - 2`` (or any later
    state) decides it; None when the chain keeps no validator registry (its genesis set stands)."""
    latest = _latest(state, height)
    return None if latest is None else _as_set(_records_of(latest[1]))


def scheduled_sets(state: ReadState) -> tuple[tuple[int, ValidatorSet], ...]:
    """Every (effective height, set) the registry holds, in height order."""
    return tuple(
        (int.from_bytes(key[len(_SET) :], "big"), _as_set(_records_of(raw)))
        for key, raw in state.scan(_SET, _SET_END)
    )


# -- governance --------------------------------------------------------------------------------


def parse_change(action: str, arguments: Arguments) -> dict[str, Value]:
    """The subject of a validator-change proposal from the proposal's arguments (parsed by
    membership's schema): ``validator_name`` always; ``validator_key``, ``node_key`` and
    ``institution_id`` (the operating bank) to add; ``validator_key`` and/or ``node_key`` to
    rotate."""
    arguments.require("validator_name", _PURPOSES[action])
    name = arguments.text("validator_name")
    if action == ACTION_ADD_VALIDATOR:
        for needed in ("validator_key", "node_key", "institution_id"):
            arguments.require(needed, _PURPOSES[action])
        return {
            "name": name,
            "public_key": arguments.key("validator_key"),
            "node_key": arguments.key("node_key"),
            "institution": arguments.text("institution_id"),
        }
    if action == ACTION_REMOVE_VALIDATOR:
        return {"name": name}
    assert action == ACTION_ROTATE_VALIDATOR_KEY
    public_key = arguments.optional_key("validator_key")
    node_key = arguments.optional_key("node_key")
    if public_key is None and node_key is None:
        raise AppError("bad_argument", "a rotation needs 'validator_key', 'node_key' or both")
    return {"name": name, "public_key": public_key, "node_key": node_key}


def validate_change(
    state: ReadState,
    action: str,
    subject: Mapping[str, Value],
    *,
    height: int,
    bank_active: bool,
) -> tuple[dict[str, Value], ...]:
    """The records of the set a change executing in block ``height`` would put in force, or
    ``AppError`` naming the rule it breaks. ``bank_active``: the operating bank of an added
    validator is an active bank."""
    latest = _latest(state)
    if latest is None:
        raise AppError("no_validator_registry", "this chain keeps its genesis validators")
    effective, raw = latest
    if effective > height:
        raise AppError(
            "validator_change_pending",
            f"a validator-set change takes effect at height {effective}; one change at a time",
        )
    records = list(_records_of(raw))
    names = [str(record["name"]) for record in records]
    name = str(subject["name"])
    if action == ACTION_ADD_VALIDATOR:
        if name in names:
            raise AppError("validator_exists", f"validator {name!r} already exists")
        if len(records) >= VALIDATORS_MAX:
            raise AppError("too_many_validators", f"a set holds at most {VALIDATORS_MAX}")
        if not bank_active:
            raise AppError("not_a_bank", f"validator {name!r} must be run by an active bank")
        public_key, node_key = subject["public_key"], subject["node_key"]
        assert isinstance(public_key, bytes)
        assert isinstance(node_key, bytes)
        _check_fresh_keys(state, records, public_key, node_key, replacing=None)
        institution = subject["institution"]
        assert isinstance(institution, str)
        return (*records, _record(name, public_key, node_key, institution))
    if name not in names:
        raise AppError("unknown_validator", f"no validator {name!r} in the current set")
    index = names.index(name)
    if action == ACTION_REMOVE_VALIDATOR:
        if len(records) <= 1:
            raise AppError("last_validator", "the last validator cannot be removed")
        return tuple(record for i, record in enumerate(records) if i != index)
    old = records[index]
    public_key = subject.get("public_key") or old["public_key"]
    node_key = subject.get("node_key") or old["node_key"]
    assert isinstance(public_key, bytes)
    assert isinstance(node_key, bytes)
    if public_key == old["public_key"] and node_key == old["node_key"]:
        raise AppError("no_change", f"validator {name!r} already has these keys")
    _check_fresh_keys(
        state,
        records,
        public_key if public_key != old["public_key"] else None,
        node_key if node_key != old["node_key"] else None,
        replacing=index,
    )
    records[index] = _record(name, public_key, node_key, old["institution"])  # type: ignore[arg-type]
    return tuple(records)


def _check_fresh_keys(
    state: ReadState,
    records: list[dict[str, Value]],
    public_key: bytes | None,
    node_key: bytes | None,
    *,
    replacing: int | None,
) -> None:
    if public_key is not None and state.get(_KEY_USED + public_key) is not None:
        raise AppError(
            "validator_key_used",
            f"key {public_key.hex()} was a validator key before; use a new one",
        )
    if node_key is not None and any(
        record["node_key"] == node_key for i, record in enumerate(records) if i != replacing
    ):
        raise AppError("node_key_used", f"node key {node_key.hex()} is another validator's")


def execute_change(
    state: AppState,
    action: str,
    subject: Mapping[str, Value],
    *,
    height: int,
    bank_active: bool,
) -> tuple[int, ValidatorSet]:
    """Schedule the change executed in block ``height``; returns (effective height, new set)."""
    records = validate_change(state, action, subject, height=height, bank_active=bank_active)
    effective = height + RECONFIGURATION_DELAY_HEIGHTS
    state.put(_set_key(effective), encode(tuple(records)))
    public_key = subject.get("public_key")
    if isinstance(public_key, bytes):
        state.put(_KEY_USED + public_key, b"")
    return effective, _as_set(records)
