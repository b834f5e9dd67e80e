"""The Merkle state commitment (``apps.merkle``): the tree depends only on the state, every
proof of a random state verifies, and any altered value, key, sibling or root is refused."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    Proof,
    ProofError,
    ProofLevel,
    build,
    key_hash,
    leaf_of,
    prove,
    root_from_slots,
    slot_of_leaves,
    update,
    verify,
)
from apps.state import MemoryBackend

# Short keys collide in their first nibbles often, so paths share nodes and compress.
KEYS = st.binary(min_size=1, max_size=3)
VALUES = st.binary(max_size=8)
STATES = st.dictionaries(KEYS, VALUES, max_size=60)
# A history: write sets (None deletes) applied one after the other.
HISTORIES = st.lists(st.dictionaries(KEYS, st.none() | VALUES, max_size=25), max_size=8)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def tree_of(state: dict[bytes, bytes]) -> MemoryTree:
    tree = MemoryTree()
    built = build(leaf_of(key, value) for key, value in state.items())
    assert built.changed == dict(built.records)
    tree.apply(built)
    return tree


def write_and_compare(
    tree: MemoryTree, state: dict[bytes, bytes], writes: Iterable[tuple[bytes, bytes | None]]
) -> None:
    """Apply ``writes`` (None deletes) to ``state``, then check that ``tree`` (already
    updated with them) is the tree built from the state alone."""
    for key, value in writes:
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    rebuilt = tree_of(state)
    assert tree.root == rebuilt.root
    assert tree.records == rebuilt.records


@SETTINGS
@given(HISTORIES)
def test_the_tree_depends_only_on_the_state_not_on_the_writes_that_made_it(
    history: list[dict[bytes, bytes | None]],
) -> None:
    tree = MemoryTree()
    state: dict[bytes, bytes] = {}
    for writes in history:
        changes = update(tree, sorted(writes.items()))
        # The map of the changed records is the records themselves, in another shape.
        assert changes.changed == dict(changes.records)
        assert len(changes.changed) == len(changes.records)
        tree.apply(changes)
        write_and_compare(tree, state, writes.items())
    assert (tree.root == EMPTY_ROOT) == (not state)


@SETTINGS
@given(STATES, st.lists(st.tuples(KEYS, st.none() | VALUES), max_size=30))
def test_one_write_at_a_time_gives_the_tree_built_from_the_state(
    state: dict[bytes, bytes], writes: list[tuple[bytes, bytes | None]]
) -> None:
    # A lone write below a stored node takes the single-path splice: a new leaf in an empty
    # slot, one beside another leaf (a new node), an update in place, a delete that empties
    # or collapses a node, a delete of a key that is not there.
    tree = tree_of(state)
    state = dict(state)
    for key, value in writes:
        tree.apply(update(tree, [(key, value)]))
        write_and_compare(tree, state, [(key, value)])


@SETTINGS
@given(STATES, st.lists(KEYS, max_size=10))
def test_every_proof_verifies_and_every_alteration_is_refused(
    state: dict[bytes, bytes], others: list[bytes]
) -> None:
    tree = tree_of(state)
    root = tree.root
    for key in [*state, *others]:
        value = state.get(key)
        proof = Proof.decode(prove(tree, key).encode())
        verify(root, key, value, proof)

        # A wrong value, a claimed absence of a present key or presence of an absent one.
        with pytest.raises(ProofError):
            verify(root, key, (value or b"") + b"!", proof)
        with pytest.raises(ProofError):
            verify(root, key, None if value is not None else b"", proof)
        # Another key with this key's proof (unless both are absent behind the same slot).
        other = key + b"\x00"
        if state.get(other) != value or value is not None:
            with pytest.raises(ProofError):
                verify(root, other, value, proof)
        # Another root.
        with pytest.raises(ProofError):
            verify(bytes(a ^ 1 for a in root[:1]) + root[1:], key, value, proof)
        # Every bit of every sibling, bitmap and terminal.
        for altered in alterations(proof):
            with pytest.raises(ProofError):
                verify(root, key, value, altered)


def alterations(proof: Proof) -> list[Proof]:
    """Proofs that differ from ``proof`` in one place: a sibling byte, a bitmap bit, the
    terminal leaf, a missing or added level."""
    changed: list[Proof] = []
    levels = list(proof.levels)
    for index, level in enumerate(levels):
        variants = [
            dataclasses.replace(level, bitmap=level.bitmap ^ 0x0100),
            dataclasses.replace(level, leafmap=level.leafmap ^ (level.bitmap & -level.bitmap)),
        ]
        if level.siblings:
            flipped = bytes((level.siblings[0] ^ 0x80,)) + level.siblings[1:]
            variants.append(dataclasses.replace(level, siblings=flipped))
            variants.append(dataclasses.replace(level, siblings=level.siblings[:-1]))
        changed.extend(
            Proof((*levels[:index], variant, *levels[index + 1 :]), proof.terminal)
            for variant in variants
            if variant != level
        )
    if proof.terminal is not None:
        terminal = proof.terminal
        changed.append(Proof(proof.levels, terminal[:-1] + bytes((terminal[-1] ^ 1,))))
        changed.append(Proof(proof.levels, None))
    else:
        changed.append(Proof(proof.levels, bytes(64)))
    if levels:
        changed.append(Proof(tuple(levels[1:]), proof.terminal))
        changed.append(Proof(tuple(levels[:-1]), proof.terminal))
    changed.append(Proof((ProofLevel(0xFFFF, 0, bytes(32 * 15)), *levels), proof.terminal))
    return changed


@SETTINGS
@given(STATES, st.integers(min_value=0, max_value=3))
def test_a_state_split_into_chunks_by_prefix_rebuilds_the_same_tree(
    state: dict[bytes, bytes], depth: int
) -> None:
    groups: dict[int, list[bytes]] = {}
    for key, value in state.items():
        prefix = int.from_bytes(key_hash(key), "big") >> (256 - 4 * depth) if depth else 0
        groups.setdefault(prefix, []).append(leaf_of(key, value))
    records: dict[bytes, bytes] = {}
    slots = []
    for prefix in sorted(groups):
        slot, chunk_records = slot_of_leaves(depth, sorted(groups[prefix]))
        assert slot is not None
        slots.append((prefix, slot))
        records.update(chunk_records)
    root, upper = root_from_slots(depth, slots)
    records.update(upper)
    whole = tree_of(state)
    assert root == whole.root
    assert records == whole.records


def test_chunk_slots_out_of_order_or_malformed_are_refused() -> None:
    leaf = leaf_of(b"k", b"v")
    with pytest.raises(ValueError, match="order"):
        root_from_slots(1, [(3, leaf), (2, leaf)])
    with pytest.raises(ValueError, match="beyond"):
        root_from_slots(1, [(16, leaf)])
    with pytest.raises(ValueError, match="bytes"):
        root_from_slots(1, [(1, b"short")])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_as_a_proof_fails_only_with_proof_error(data: bytes) -> None:
    try:
        proof = Proof.decode(data)
    except ProofError:
        return
    with pytest.raises(ProofError):
        verify(b"\x07" * 32, b"key", b"value", proof)


def test_the_memory_backend_keeps_its_tree_in_step_with_its_state() -> None:
    backend = MemoryBackend([(b"a", b"1"), (b"b", b"2")])
    assert backend.app_hash == tree_of({b"a": b"1", b"b": b"2"}).root
    backend.apply(((b"a", None), (b"c", b"3")))
    assert backend.app_hash == tree_of({b"b": b"2", b"c": b"3"}).root
    backend.apply(((b"b", None), (b"c", None)))
    assert backend.app_hash == EMPTY_ROOT


@SETTINGS
@given(
    STATES,
    st.lists(KEYS, max_size=20),
    KEYS,
    st.none() | VALUES,
    st.none() | VALUES,
)
def test_a_write_set_that_changes_one_key_twice_is_refused(
    state: dict[bytes, bytes],
    others: list[bytes],
    twice: bytes,
    first: bytes | None,
    second: bytes | None,
) -> None:
    # Written and deleted, deleted twice or written twice: refused alike.
    tree = tree_of(state)
    writes = [(key, b"x") for key in dict.fromkeys(others) if key != twice]
    middle = len(writes) // 2
    with pytest.raises(ValueError, match="changes one key twice"):
        update(tree, [*writes[:middle], (twice, first), (twice, second), *writes[middle:]])
    # The same writes with the key once are applied.
    once = [*writes[:middle], (twice, second), *writes[middle:]]
    after = {**state, **{key: value for key, value in once if value is not None}}
    if second is None:
        after.pop(twice, None)
    assert update(tree, once).root == tree_of(after).root


def test_a_nodes_bitmaps_are_counted_as_int_bit_count_counts_them() -> None:
    """The update counts a node's slots with a byte table (compiled, a table lookup is C and
    ``int.bit_count`` a call through Python): every 16-bit map must count the same."""
    from apps.merkle import _bit_count

    assert [_bit_count(bits) for bits in range(1 << 16)] == [
        bits.bit_count() for bits in range(1 << 16)
    ]
