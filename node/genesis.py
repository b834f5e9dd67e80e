"""The genesis document: what every node of one chain must agree on before block 1.

``genesis.json`` (shaped like CometBFT's) holds the chain id, the genesis time, the consensus
parameters, the ordered validators (name, consensus public key, node public key), the enabled
apps and each app's genesis state. The **genesis hash** is SHA-256 of the canonical encoding of
the whole document (parsed JSON converted to a canonical value, so whitespace and key order in
the file do not matter). Peers compare genesis hashes in the handshake; block 1's parent is the
genesis hash.

``parse_genesis`` reports *every* problem it finds (``GenesisProblem`` with the key path and a
fix), so an operator assembling a genesis from several banks fixes everything in one pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from consensus.codec import CodecError, Value, encode
from consensus.crypto import PUBLIC_KEY_BYTES, hash_bytes
from consensus.types import VALIDATORS_MAX, Validator, ValidatorSet
from node.jsonvalue import JsonValueError, from_json, to_json

__all__ = [
    "CHAIN_ID_PATTERN",
    "GENESIS_BYTES_MAX",
    "ConsensusParams",
    "Genesis",
    "GenesisError",
    "GenesisProblem",
    "GenesisValidator",
    "genesis_document",
    "load_genesis",
    "parse_genesis",
    "save_genesis",
]

# A genesis with hundreds of validators and seeded institutions is well under 1 MiB; 16 MiB
# leaves room for large app seeds without letting a wrong file exhaust memory.
GENESIS_BYTES_MAX: Final = 16 * 1024 * 1024
CHAIN_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
VALIDATOR_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TOP_KEYS: Final = (
    "chain_id",
    "genesis_time",
    "consensus_params",
    "validators",
    "apps",
    "app_state",
)
_VALIDATOR_KEYS: Final = ("name", "public_key", "node_key")
# The ``problem(key, what, fix)`` callback the section parsers report into.
_ProblemSink = Callable[[str, str, str], None]


@dataclass(frozen=True, slots=True)
class ConsensusParams:
    """Rules every validator must share (they decide block validity)."""

    # Transactions in one block: bounds apply time per block.
    block_transactions_max: int = 5000
    # Encoded bytes of one block: bounds proposal messages and storage per height.
    block_bytes_max: int = 4 * 1024 * 1024
    # How far a proposal's timestamp may run ahead of a replica's clock.
    timestamp_skew_ms_max: int = 10_000

    def to_json(self) -> dict[str, int]:
        """JSON form."""
        return {
            "block_transactions_max": self.block_transactions_max,
            "block_bytes_max": self.block_bytes_max,
            "timestamp_skew_ms_max": self.timestamp_skew_ms_max,
        }


_PARAM_RANGES: Final = {
    "block_transactions_max": (1, 100_000),
    "block_bytes_max": (1024, 16 * 1024 * 1024),
    "timestamp_skew_ms_max": (100, 3_600_000),
}


@dataclass(frozen=True, slots=True)
class GenesisValidator:
    """One founding validator: display name, consensus key and p2p node key."""

    name: str
    public_key: bytes
    node_key: bytes

    def to_json(self) -> dict[str, str]:
        """JSON form (keys as hex)."""
        return {
            "name": self.name,
            "public_key": self.public_key.hex(),
            "node_key": self.node_key.hex(),
        }


@dataclass(frozen=True, slots=True)
class Genesis:
    """A parsed, validated genesis document."""

    chain_id: str
    genesis_time_ms: int
    consensus_params: ConsensusParams
    validators: tuple[GenesisValidator, ...]
    apps: tuple[str, ...]
    app_state: Mapping[str, Value]
    hash: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", hash_bytes(encode(from_json(genesis_document(self)))))

    @property
    def validator_set(self) -> ValidatorSet:
        """The consensus validator set, in genesis order."""
        return ValidatorSet(
            tuple(Validator(v.name, v.public_key, v.node_key) for v in self.validators)
        )

    @property
    def genesis_time(self) -> str:
        """RFC 3339 UTC form of the genesis time."""
        return _format_time(self.genesis_time_ms)


class GenesisError(ValueError):
    """A genesis file that cannot be used; carries every problem found."""

    def __init__(self, problems: list[GenesisProblem]) -> None:
        super().__init__("; ".join(str(problem) for problem in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class GenesisProblem:
    """One problem in a genesis document: the key path, what is wrong and how to fix it."""

    key: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}: {self.problem} (fix: {self.fix})"


def _format_time(time_ms: int) -> str:
    moment = datetime.fromtimestamp(time_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{time_ms % 1000:03d}Z"


def genesis_document(genesis: Genesis) -> dict[str, object]:
    """The JSON document for ``genesis`` (what ``save_genesis`` writes)."""
    return {
        "chain_id": genesis.chain_id,
        "genesis_time": _format_time(genesis.genesis_time_ms),
        "consensus_params": genesis.consensus_params.to_json(),
        "validators": [validator.to_json() for validator in genesis.validators],
        "apps": list(genesis.apps),
        "app_state": {name: to_json(value) for name, value in genesis.app_state.items()},
    }


def save_genesis(path: Path, genesis: Genesis) -> None:
    """Write ``genesis`` as indented JSON (atomically: temp file then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(genesis_document(genesis), indent=2) + "\n", "utf-8")
    temporary.replace(path)


def load_genesis(path: Path) -> Genesis:
    """Read and validate a genesis file; raise ``GenesisError`` listing every problem."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise GenesisError(
            [GenesisProblem("(file)", f"{path} does not exist", "run `suanpan genesis init`")]
        ) from None
    except OSError as error:
        raise GenesisError(
            [GenesisProblem("(file)", f"cannot read {path}: {error.strerror}", "check permissions")]
        ) from None
    genesis, problems = parse_genesis(raw)
    if genesis is None:
        raise GenesisError(problems)
    return genesis


def parse_genesis(raw: bytes) -> tuple[Genesis | None, list[GenesisProblem]]:
    """Parse genesis bytes; return the genesis (None if any problem) and every problem found."""
    problems: list[GenesisProblem] = []

    def problem(key: str, what: str, fix: str) -> None:
        problems.append(GenesisProblem(key, what, fix))

    if len(raw) > GENESIS_BYTES_MAX:
        problem("(file)", f"{len(raw)} bytes, limit {GENESIS_BYTES_MAX}", "use a smaller genesis")
        return None, problems
    try:
        document = json.loads(raw.decode("utf-8"))
    except RecursionError:
        problem("(file)", "not valid JSON: nested too deeply", "fix the JSON syntax")
        return None, problems
    except ValueError as error:
        # UnicodeDecodeError, JSONDecodeError, and an integer too long for int() (4300 digits).
        problem("(file)", f"not valid JSON: {error}", "fix the JSON syntax")
        return None, problems
    if not isinstance(document, dict):
        problem("(file)", "expected a JSON object", "start from `suanpan genesis init`")
        return None, problems
    for key in document:
        if key not in _TOP_KEYS:
            problem(key, "unknown key", f"remove it; known keys: {', '.join(_TOP_KEYS)}")

    chain_id = document.get("chain_id")
    if not isinstance(chain_id, str) or not CHAIN_ID_PATTERN.fullmatch(chain_id):
        problem(
            "chain_id",
            f"{chain_id!r} is not a chain id",
            "use 1..64 letters, digits, '.', '_' or '-', e.g. \"suanpan-1\"",
        )
    genesis_time_ms = _parse_time(document.get("genesis_time"), problem)
    params = _parse_params(document.get("consensus_params"), problem)
    validators = _parse_validators(document.get("validators"), problem)
    apps = _parse_apps(document.get("apps"), problem)
    app_state = _parse_app_state(document.get("app_state"), apps, problem)

    if problems:
        return None, problems
    assert isinstance(chain_id, str)
    assert genesis_time_ms is not None
    assert params is not None
    assert validators is not None
    assert apps is not None
    assert app_state is not None
    try:
        genesis = Genesis(chain_id, genesis_time_ms, params, validators, apps, app_state)
    except CodecError as error:
        problem("app_state", f"not encodable: {error}", "simplify the app state")
        return None, problems
    return genesis, problems


def _parse_time(value: object, problem: _ProblemSink) -> int | None:
    fix = 'use RFC 3339 UTC, e.g. "2025-01-01T00:00:00Z"'
    if not isinstance(value, str):
        problem("genesis_time", "missing or not a string", fix)
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        problem("genesis_time", f"{value!r} is not an RFC 3339 time", fix)
        return None
    if moment.tzinfo is None:
        problem("genesis_time", "has no time zone", fix)
        return None
    time_ms = int(moment.timestamp() * 1000)
    if time_ms < 0:
        problem("genesis_time", "is before 1970", fix)
        return None
    try:
        _format_time(time_ms)  # the genesis document holds it in UTC: year 9999 at most
    except (ValueError, OverflowError, OSError):
        problem("genesis_time", f"{value!r} is after year 9999 in UTC", fix)
        return None
    return time_ms


def _parse_params(value: object, problem: _ProblemSink) -> ConsensusParams | None:
    if value is None:
        return ConsensusParams()
    if not isinstance(value, dict):
        problem("consensus_params", "must be an object", "see `suanpan genesis init` output")
        return None
    ok = True
    numbers: dict[str, int] = {}
    for key, item in value.items():
        if key not in _PARAM_RANGES:
            problem(
                f"consensus_params.{key}",
                "unknown key",
                f"remove it; known keys: {', '.join(_PARAM_RANGES)}",
            )
            ok = False
            continue
        low, high = _PARAM_RANGES[key]
        if isinstance(item, bool) or not isinstance(item, int) or not low <= item <= high:
            problem(f"consensus_params.{key}", f"{item!r} out of range", f"use {low}..{high}")
            ok = False
            continue
        numbers[key] = item
    return ConsensusParams(**numbers) if ok else None


def _parse_key(value: object, key: str, problem: _ProblemSink) -> bytes | None:
    fix = "use the 64-hex-digit public key printed by `suanpan keys show`"
    if not isinstance(value, str):
        problem(key, "missing or not a string", fix)
        return None
    try:
        data = bytes.fromhex(value)
    except ValueError:
        problem(key, "not hex", fix)
        return None
    if len(data) != PUBLIC_KEY_BYTES:
        problem(key, f"{len(data)} bytes, expected {PUBLIC_KEY_BYTES}", fix)
        return None
    return data


def _parse_validators(value: object, problem: _ProblemSink) -> tuple[GenesisValidator, ...] | None:
    if not isinstance(value, list) or not value:
        problem(
            "validators", "missing or empty", "add validators with `suanpan genesis add-validator`"
        )
        return None
    if len(value) > VALIDATORS_MAX:
        problem("validators", f"{len(value)} validators, limit {VALIDATORS_MAX}", "remove some")
        return None
    result: list[GenesisValidator] = []
    names: set[str] = set()
    keys: set[bytes] = set()
    node_keys: set[bytes] = set()
    ok = True
    for i, entry in enumerate(value):
        where = f"validators[{i}]"
        if not isinstance(entry, dict):
            problem(where, "must be an object", 'use {"name", "public_key", "node_key"}')
            ok = False
            continue
        for key in entry:
            if key not in _VALIDATOR_KEYS:
                problem(f"{where}.{key}", "unknown key", f"remove it; known: {_VALIDATOR_KEYS}")
                ok = False
        name = entry.get("name")
        if not isinstance(name, str) or not VALIDATOR_NAME_PATTERN.fullmatch(name):
            problem(f"{where}.name", f"{name!r} is not a name", "use 1..64 letters/digits/._-")
            ok = False
        elif name in names:
            problem(f"{where}.name", f"duplicate name {name!r}", "give each validator its own name")
            ok = False
        else:
            names.add(name)
        public_key = _parse_key(entry.get("public_key"), f"{where}.public_key", problem)
        node_key = _parse_key(entry.get("node_key"), f"{where}.node_key", problem)
        if public_key is not None and public_key in keys:
            problem(f"{where}.public_key", "duplicate validator key", "each bank has its own key")
            ok = False
        if node_key is not None and node_key in node_keys:
            problem(f"{where}.node_key", "duplicate node key", "each node has its own node key")
            ok = False
        if public_key is None or node_key is None or not isinstance(name, str):
            ok = False
            continue
        keys.add(public_key)
        node_keys.add(node_key)
        result.append(GenesisValidator(name, public_key, node_key))
    return tuple(result) if ok else None


def _parse_apps(value: object, problem: _ProblemSink) -> tuple[str, ...] | None:
    if value is None:
        return ("membership",)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problem("apps", "must be a list of app names", 'e.g. ["membership", "payments"]')
        return None
    if "membership" not in value:
        problem("apps", "membership is not enabled", 'add "membership": it permissions the chain')
        return None
    if len(set(value)) != len(value):
        problem("apps", "an app is listed twice", "list each app once")
        return None
    return tuple(value)


def _parse_app_state(
    value: object, apps: tuple[str, ...] | None, problem: _ProblemSink
) -> dict[str, Value] | None:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problem("app_state", "must be an object keyed by app name", '{"membership": {...}}')
        return None
    result: dict[str, Value] = {}
    ok = True
    for name, state in value.items():
        if apps is not None and name not in apps:
            problem(f"app_state.{name}", "state for an app that is not enabled", "add it to apps")
            ok = False
            continue
        try:
            result[name] = from_json(state, f"app_state.{name}")
        except JsonValueError as error:
            problem(f"app_state.{name}", str(error), "use integers, strings and {$bytes: hex}")
            ok = False
    return result if ok else None
