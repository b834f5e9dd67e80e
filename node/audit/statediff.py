"""Which state keys differ between two nodes, and how to show state keys and values to people.

Theory of operation
-------------------
Application state is a sorted map of namespaced keys (``app || 0x00 || key``, see
``apps.state``). Two states are compared by merging their key-ordered streams, so neither is
loaded into memory: each differing key is reported once as only in A, only in B, or with
different values. ``diff_homes`` compares two node homes:

* without a height, the states the two stores hold now (each at its own committed height);
* with ``height=H``, the states as of height H, obtained by **replaying** each node's own
  stored blocks 1..H through the real apps from its own genesis (``node.audit.replay``): the store
  keeps only the latest state, not its history.

Keys are shown as ``namespace/rest`` with printable ASCII kept and every other run of bytes as
``{hex}``; values are shown as canonical values (JSON-like, bytes as hex) when they decode
canonically, else as hex.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from apps.host import GenesisError as HostGenesisError
from consensus.codec import CodecError, decode, encode
from consensus.types import Block, DecodeError
from node.audit.replay import Replay, ReplayError, load_home_genesis
from node.audit.storeview import StoreView, StoreViewError
from node.jsonvalue import to_json

__all__ = [
    "DIFFERENCES_LISTED_MAX",
    "KeyDifference",
    "StateDiff",
    "StateDiffError",
    "diff_homes",
    "diff_states",
    "namespace_of",
    "render_key",
    "render_value",
]

# Differences kept for the report; the rest are only counted (a diverged node can differ in
# millions of keys and the first few are what an operator reads).
DIFFERENCES_LISTED_MAX: Final = 1000
# Longest rendering of one value before it is cut: a report line must stay readable.
VALUE_RENDER_CHARS_MAX: Final = 400
_NAMESPACE_SEPARATOR: Final = b"\x00"
_PRINTABLE_LOW: Final = 0x20
_PRINTABLE_HIGH: Final = 0x7E
_BRACES: Final = frozenset(b"{}")
ONLY_A: Final = "only_a"
ONLY_B: Final = "only_b"
DIFFERENT: Final = "different"


class StateDiffError(Exception):
    """Two homes that cannot be compared (missing store, other chain, height out of range)."""


def namespace_of(key: bytes) -> str:
    """The app namespace of a state key (``?`` when the key has no separator)."""
    name, separator, _ = key.partition(_NAMESPACE_SEPARATOR)
    if not separator:
        return "?"
    return name.decode("ascii", "replace")


def _render_bytes(data: bytes) -> str:
    parts: list[str] = []
    binary = bytearray()
    for byte in data:
        if _PRINTABLE_LOW <= byte <= _PRINTABLE_HIGH and byte not in _BRACES:
            if binary:
                parts.append("{" + binary.hex() + "}")
                binary.clear()
            parts.append(chr(byte))
        else:
            binary.append(byte)
    if binary:
        parts.append("{" + binary.hex() + "}")
    return "".join(parts)


def render_key(key: bytes) -> str:
    """``namespace/rest`` with non-printable runs as ``{hex}``."""
    name, separator, rest = key.partition(_NAMESPACE_SEPARATOR)
    if not separator:
        return _render_bytes(key)
    return _render_bytes(name) + "/" + _render_bytes(rest)


def render_value(value: bytes | None) -> str:
    """A canonical value as compact JSON (bytes as ``{"$bytes": hex}``), else ``0x<hex>``."""
    if value is None:
        return "(absent)"
    if not value:
        return "(empty)"
    try:
        decoded = decode(value)
        canonical = encode(decoded) == value
    except CodecError:
        canonical = False
    if canonical:
        text = json.dumps(to_json(decoded), separators=(",", ":"), sort_keys=True)
    else:
        text = "0x" + value.hex()
    if len(text) > VALUE_RENDER_CHARS_MAX:
        text = text[: VALUE_RENDER_CHARS_MAX - 3] + "..."
    return text


@dataclass(frozen=True, slots=True)
class KeyDifference:
    """One key whose value differs: ``a``/``b`` are the raw values (None: absent there)."""

    key: bytes
    a: bytes | None
    b: bytes | None

    def __post_init__(self) -> None:
        assert self.a != self.b, "a difference needs two different values"

    @property
    def kind(self) -> str:
        """``only_a``, ``only_b`` or ``different``."""
        if self.b is None:
            return ONLY_A
        if self.a is None:
            return ONLY_B
        return DIFFERENT

    @property
    def namespace(self) -> str:
        """The app namespace of the key."""
        return namespace_of(self.key)

    def to_json(self) -> dict[str, object]:
        """JSON form: raw hex and readable renderings."""
        return {
            "key": render_key(self.key),
            "key_hex": self.key.hex(),
            "kind": self.kind,
            "a": render_value(self.a),
            "b": render_value(self.b),
            "a_hex": None if self.a is None else self.a.hex(),
            "b_hex": None if self.b is None else self.b.hex(),
        }


def diff_states(
    a: Iterable[tuple[bytes, bytes]], b: Iterable[tuple[bytes, bytes]]
) -> Iterator[KeyDifference]:
    """The differing keys of two key-ordered (key, value) streams, in key order."""
    left = iter(a)
    right = iter(b)
    item_a = next(left, None)
    item_b = next(right, None)
    while item_a is not None or item_b is not None:
        if item_b is None or (item_a is not None and item_a[0] < item_b[0]):
            assert item_a is not None
            yield KeyDifference(item_a[0], item_a[1], None)
            item_a = next(left, None)
        elif item_a is None or item_b[0] < item_a[0]:
            yield KeyDifference(item_b[0], None, item_b[1])
            item_b = next(right, None)
        else:
            if item_a[1] != item_b[1]:
                yield KeyDifference(item_a[0], item_a[1], item_b[1])
            item_a = next(left, None)
            item_b = next(right, None)


@dataclass(frozen=True, slots=True)
class NamespaceCounts:
    """How many keys of one namespace differ, by kind."""

    only_a: int = 0
    only_b: int = 0
    different: int = 0

    @property
    def total(self) -> int:
        """All differing keys of the namespace."""
        return self.only_a + self.only_b + self.different


@dataclass(frozen=True, slots=True)
class StateDiff:
    """The comparison of two nodes' states.

    ``source`` is ``stored`` (the states the stores hold, at heights ``height_a``/``height_b``)
    or ``replayed`` (both replayed to ``height``). ``differences`` lists the first
    ``DIFFERENCES_LISTED_MAX`` differing keys in key order; ``namespaces`` counts all of them."""

    home_a: str
    home_b: str
    source: str
    height_a: int
    height_b: int
    app_hash_a: bytes
    app_hash_b: bytes
    differences: tuple[KeyDifference, ...]
    namespaces: dict[str, NamespaceCounts] = field(default_factory=dict)
    keys_compared_a: int = 0
    keys_compared_b: int = 0
    # Replayed comparisons only: the first height whose stored blocks differ between A and B
    # (None: identical blocks), and each store's own app hash at the height.
    first_different_block: int | None = None
    stored_app_hash_a: bytes | None = None
    stored_app_hash_b: bytes | None = None

    @property
    def total(self) -> int:
        """All differing keys (listed or not)."""
        return sum(counts.total for counts in self.namespaces.values())

    @property
    def identical(self) -> bool:
        """True when no key differs."""
        return self.total == 0

    def to_json(self) -> dict[str, object]:
        """The report as one JSON object."""
        return {
            "identical": self.identical,
            "source": self.source,
            "a": {
                "home": self.home_a,
                "height": self.height_a,
                "app_hash": self.app_hash_a.hex(),
                "keys": self.keys_compared_a,
            },
            "b": {
                "home": self.home_b,
                "height": self.height_b,
                "app_hash": self.app_hash_b.hex(),
                "keys": self.keys_compared_b,
            },
            "first_different_block": self.first_different_block,
            "stored_app_hash_a": _hex_or_none(self.stored_app_hash_a),
            "stored_app_hash_b": _hex_or_none(self.stored_app_hash_b),
            "differing_keys": self.total,
            "listed": len(self.differences),
            "namespaces": {
                name: {
                    "only_a": counts.only_a,
                    "only_b": counts.only_b,
                    "different": counts.different,
                }
                for name, counts in sorted(self.namespaces.items())
            },
            "differences": [difference.to_json() for difference in self.differences],
        }

    def _replay_lines(self) -> list[str]:
        lines = [
            f"  blocks 1..{self.height_a} identical in A and B"
            if self.first_different_block is None
            else f"  blocks first differ at height {self.first_different_block}"
        ]
        for name, replayed, stored in (
            ("A", self.app_hash_a, self.stored_app_hash_a),
            ("B", self.app_hash_b, self.stored_app_hash_b),
        ):
            if stored != replayed:
                lines.append(
                    f"  {name}'s store records app hash {_hex_or_none(stored)} at height "
                    f"{self.height_a}, its replay gives {replayed.hex()}: run `suanpan audit`"
                )
        return lines

    def render(self) -> str:
        """The report as text, grouped by namespace."""
        what = (
            f"stored state (A at height {self.height_a}, B at height {self.height_b})"
            if self.source == "stored"
            else f"state replayed to height {self.height_a}"
        )
        lines = [
            f"state-diff: {what}",
            f"  A {self.home_a}  app hash {self.app_hash_a.hex()}  {self.keys_compared_a} keys",
            f"  B {self.home_b}  app hash {self.app_hash_b.hex()}  {self.keys_compared_b} keys",
        ]
        if self.source == "replayed":
            lines.extend(self._replay_lines())
        if self.identical:
            lines.append("identical: no key differs")
            return "\n".join(lines)
        by_namespace: dict[str, list[KeyDifference]] = {}
        for difference in self.differences:
            by_namespace.setdefault(difference.namespace, []).append(difference)
        marks = {ONLY_A: "-", ONLY_B: "+", DIFFERENT: "~"}
        for name, counts in sorted(self.namespaces.items()):
            lines.append(
                f"{name}: {counts.total} differing "
                f"({counts.only_a} only in A, {counts.only_b} only in B, "
                f"{counts.different} different)"
            )
            for difference in by_namespace.get(name, []):
                lines.append(f"  {marks[difference.kind]} {render_key(difference.key)}")
                if difference.a is not None:
                    lines.append(f"      A: {render_value(difference.a)}")
                if difference.b is not None:
                    lines.append(f"      B: {render_value(difference.b)}")
        if (
            self.source == "stored"
            and self.height_a == self.height_b
            and self.app_hash_a == self.app_hash_b
        ):
            lines.append(
                "note: both stores record the same app hash at the same height, so at least one "
                "stored state was changed outside block execution: run `suanpan audit`"
            )
        unlisted = self.total - len(self.differences)
        if unlisted:
            lines.append(f"... {unlisted} more differing keys not listed")
        lines.append(f"{self.total} keys differ")
        return "\n".join(lines)


def _hex_or_none(data: bytes | None) -> str | None:
    return None if data is None else data.hex()


class _Counted:
    """Counts the items of a stream as it is consumed."""

    def __init__(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        self._items = iter(items)
        self.count = 0

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        for item in self._items:
            self.count += 1
            yield item


def _summarise(
    home_a: Path,
    home_b: Path,
    source: str,
    heights: tuple[int, int],
    app_hashes: tuple[bytes, bytes],
    a: Iterable[tuple[bytes, bytes]],
    b: Iterable[tuple[bytes, bytes]],
    listed_max: int,
) -> StateDiff:
    counted_a = _Counted(a)
    counted_b = _Counted(b)
    listed: list[KeyDifference] = []
    counts: dict[str, dict[str, int]] = {}
    for difference in diff_states(counted_a, counted_b):
        if len(listed) < listed_max:
            listed.append(difference)
        per_kind = counts.setdefault(difference.namespace, {ONLY_A: 0, ONLY_B: 0, DIFFERENT: 0})
        per_kind[difference.kind] += 1
    return StateDiff(
        home_a=str(home_a),
        home_b=str(home_b),
        source=source,
        height_a=heights[0],
        height_b=heights[1],
        app_hash_a=app_hashes[0],
        app_hash_b=app_hashes[1],
        differences=tuple(listed),
        namespaces={
            name: NamespaceCounts(kinds[ONLY_A], kinds[ONLY_B], kinds[DIFFERENT])
            for name, kinds in counts.items()
        },
        keys_compared_a=counted_a.count,
        keys_compared_b=counted_b.count,
    )


def _next_block(home: Path, view: StoreView, height: int) -> Block:
    raw = view.block_bytes(height)
    if raw is None:
        raise StateDiffError(f"{home}: block {height} is missing from the store")
    try:
        return Block.decode(raw)
    except DecodeError as error:
        raise StateDiffError(
            f"{home}: block {height} does not decode: {error} (run `suanpan audit` on this home)"
        ) from None


def _replay_both(
    homes: tuple[Path, Path],
    views: tuple[StoreView, StoreView],
    height: int,
    progress: Callable[[str, int, int], None] | None,
) -> tuple[Replay, Replay, int | None, tuple[bytes | None, bytes | None]]:
    """Replay both homes to ``height`` in lockstep; also return the first height whose
    blocks differ (None: none) and each store's own app hash at ``height``."""
    replays = (Replay(load_home_genesis(homes[0])[0]), Replay(load_home_genesis(homes[1])[0]))
    first_different_block: int | None = None
    for current in range(1, height + 1):
        blocks = [_next_block(homes[i], views[i], current) for i in (0, 1)]
        if first_different_block is None and blocks[0].hash != blocks[1].hash:
            first_different_block = current
        for i in (0, 1):
            try:
                replays[i].execute(blocks[i])
            except ReplayError as error:
                raise StateDiffError(
                    f"{homes[i]}: block {current} cannot be replayed: {error}"
                ) from None
        if progress is not None:
            progress("replaying both homes", current, height)
    stored = (views[0].app_hash_at(height), views[1].app_hash_at(height))
    return replays[0], replays[1], first_different_block, stored


def diff_homes(
    home_a: Path,
    home_b: Path,
    *,
    height: int | None = None,
    listed_max: int = DIFFERENCES_LISTED_MAX,
    progress: Callable[[str, int, int], None] | None = None,
) -> StateDiff:
    """Compare the states of two node homes (stored now, or replayed to ``height``, calling
    ``progress(phase, heights done, heights)`` after each height).

    Raises ``StateDiffError`` when a store is missing, the homes belong to different chains,
    or ``height`` is beyond either store; ``node.genesis.GenesisError`` and
    ``node.apploader.AppLoadError`` pass through when replaying."""
    if home_a.resolve() == home_b.resolve():
        raise StateDiffError(f"A and B are the same home ({home_a})")
    genesis_a, data_a = load_home_genesis(home_a)
    genesis_b, data_b = load_home_genesis(home_b)
    if genesis_a.hash != genesis_b.hash:
        raise StateDiffError(
            f"the homes belong to different chains: genesis {genesis_a.hash.hex()[:16]} "
            f"({genesis_a.chain_id}) vs {genesis_b.hash.hex()[:16]} ({genesis_b.chain_id})"
        )
    try:
        view_a = StoreView(data_a)
    except StoreViewError as error:
        raise StateDiffError(f"A: {error}") from None
    try:
        view_b = StoreView(data_b)
    except StoreViewError as error:
        view_a.close()
        raise StateDiffError(f"B: {error}") from None
    with view_a, view_b:
        top_a = view_a.height
        top_b = view_b.height
        if top_a is None or top_b is None:
            raise StateDiffError("a store has no genesis state yet")
        if height is None:
            return _summarise(
                home_a,
                home_b,
                "stored",
                (top_a, top_b),
                (view_a.meta(b"app_hash") or b"", view_b.meta(b"app_hash") or b""),
                view_a.state_scan(),
                view_b.state_scan(),
                listed_max,
            )
        if not 0 <= height <= min(top_a, top_b):
            raise StateDiffError(
                f"height {height} is not in both stores (A has 0..{top_a}, B has 0..{top_b})"
            )
        try:
            replay_a, replay_b, first_different_block, stored = _replay_both(
                (home_a, home_b), (view_a, view_b), height, progress
            )
        except HostGenesisError as error:
            raise StateDiffError(f"genesis app state is rejected: {error}") from None
    diff = _summarise(
        home_a,
        home_b,
        "replayed",
        (height, height),
        (replay_a.app_hash, replay_b.app_hash),
        replay_a.backend.scan(),
        replay_b.backend.scan(),
        listed_max,
    )
    return replace(
        diff,
        first_different_block=first_different_block,
        stored_app_hash_a=stored[0],
        stored_app_hash_b=stored[1],
    )
