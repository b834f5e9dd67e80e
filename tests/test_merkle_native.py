"""The Merkle tree's update in C (``apps/_merkletree.c``) against the Python update: the same
records and roots for any tree and write set, the same refusals, and the checks that keep a
wrong or missing extension out."""

from __future__ import annotations

import hashlib
import importlib
import logging
import random
import sys
from collections.abc import Callable
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps import merkle, nativetree
from apps.merkle import ROOT_KEY, MemoryTree, TreeReader, TreeUpdate, update_native, update_python
from apps.nativetree import NativeUpdate

Writes = list[tuple[bytes, bytes | None]]


def _native() -> NativeUpdate:
    loaded = nativetree.load()
    assert loaded.update is not None, loaded.status
    return loaded.update


def _both(reader: TreeReader, writes: Writes) -> TreeUpdate:
    """Both updates of ``writes``, which must agree; the Python one is returned."""
    expected = update_python(reader, writes)
    got = update_native(_native(), reader, writes)
    assert got.root == expected.root
    assert got.records == expected.records
    assert got.changed == expected.changed
    return expected


def test_the_installed_build_runs_the_native_update() -> None:
    assert merkle.tree_status() == "native"
    assert merkle._native_update() is not None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=6), max_size=300, unique=True),
    st.lists(
        st.dictionaries(
            st.binary(min_size=1, max_size=6), st.none() | st.binary(max_size=40), max_size=120
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_native_and_python_updates_agree(
    start: list[bytes], batches: list[dict[bytes, bytes | None]]
) -> None:
    tree = MemoryTree()
    tree.apply(_both(tree, [(key, key) for key in start]))
    for batch in batches:
        # Keys already in the tree are changed or deleted as often as new ones are added.
        deletes = [(key, None) for key in start[: len(batch)] if key not in batch]
        writes: Writes = [*batch.items(), *deletes]
        tree.apply(_both(tree, writes))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=4), max_size=200, unique=True),
    st.dictionaries(
        st.binary(min_size=1, max_size=4), st.none() | st.binary(max_size=20), max_size=150
    ),
    st.randoms(use_true_random=False),
)
def test_either_update_gives_the_same_result_for_writes_in_any_order(
    start: list[bytes], batch: dict[bytes, bytes | None], shuffler: random.Random
) -> None:
    # A syncing node hands the tree a group of blocks' merged writes unsorted.
    tree = MemoryTree()
    tree.apply(_both(tree, [(key, key) for key in start]))
    in_order = sorted(batch.items())
    shuffled = list(in_order)
    shuffler.shuffle(shuffled)
    expected = _both(tree, in_order)
    for writes in (shuffled, list(reversed(in_order))):
        got = _both(tree, writes)
        assert (got.root, got.records, got.changed) == (
            expected.root,
            expected.records,
            expected.changed,
        )


def test_agree_on_a_tree_several_levels_deep_down_to_empty() -> None:
    tree = MemoryTree()
    keys = [b"account %d" % number for number in range(6000)]
    for low in range(0, 6000, 1500):
        tree.apply(_both(tree, [(key, b"v" + key) for key in keys[low : low + 1500]]))
    assert max(key[0] for key in tree.records if key != ROOT_KEY) >= 3
    for step in (7, 3, 2):
        tree.apply(_both(tree, [(key, None if n % step else b"x") for n, key in enumerate(keys)]))
    # One change at a time walks the single-write descent.
    for key in keys[:50]:
        tree.apply(_both(tree, [(key, b"one")]))
        tree.apply(_both(tree, [(key + b"!", None)]))
    tree.apply(_both(tree, [(key, None) for key in keys]))
    tree.apply(_both(tree, [(key + b"!", None) for key in keys[:50]]))
    assert tree.records == {}
    assert tree.root == merkle.EMPTY_ROOT


def test_no_writes_leave_the_root() -> None:
    tree = MemoryTree()
    tree.apply(_both(tree, [(b"a", b"1"), (b"b", b"2")]))
    result = _both(tree, [])
    assert result.records == ()
    assert result.root == tree.root


def _errors(call: Callable[[], object]) -> tuple[type[BaseException], str]:
    with pytest.raises((AssertionError, ValueError, TypeError)) as error:
        call()
    return error.type, str(error.value)


def test_a_key_written_twice_is_refused_by_both() -> None:
    tree = MemoryTree()
    writes: Writes = [(b"k", b"1"), (b"j", None), (b"k", None)]
    python = _errors(lambda: update_python(tree, writes))
    native = _errors(lambda: update_native(_native(), tree, writes))
    assert python == native == (ValueError, "a write set changes one key twice")


def _tree_of(count: int) -> MemoryTree:
    tree = MemoryTree()
    tree.apply(update_python(tree, [(b"%d" % n, b"v") for n in range(count)]))
    return tree


def test_a_missing_node_is_named_by_both() -> None:
    tree = _tree_of(500)
    node = next(key for key in tree.records if key != ROOT_KEY and key[0] == 1)
    del tree.records[node]
    writes = [(b"%d" % n, b"new") for n in range(500)]
    python = _errors(lambda: update_python(tree, writes))
    native = _errors(lambda: update_native(_native(), tree, writes))
    assert python == native == (AssertionError, f"tree node {node.hex()} is missing")


@pytest.mark.parametrize(
    "damage",
    [
        lambda record: record[:3],  # shorter than its header
        lambda record: record[:-1],  # a slot cut short
        lambda record: record + b"\x00" * 32,  # more than its bitmaps say
        lambda record: b"\x00\x00\x80\x00" + record[4:],  # a leaf where no slot is
    ],
)
def test_a_malformed_stored_node_is_refused(damage: Callable[[bytes], bytes]) -> None:
    tree = _tree_of(50)
    tree.records[b"\x00"] = damage(tree.records[b"\x00"])
    error = _errors(lambda: update_native(_native(), tree, [(b"1", b"x"), (b"2", b"y")]))
    assert error == (AssertionError, "a stored tree node is malformed")


def test_a_malformed_root_slot_is_refused() -> None:
    tree = _tree_of(5)
    tree.records[ROOT_KEY] = b"\x01" * 31
    error = _errors(lambda: update_native(_native(), tree, [(b"1", b"x")]))
    assert error == (AssertionError, "the stored root slot is malformed")


class _Strange:
    def tree_node(self, key: bytes) -> bytes | None:
        return ROOT_KEY * 32 if key == ROOT_KEY else "a record"  # type: ignore[return-value]


def test_a_reader_answering_other_than_bytes_is_refused() -> None:
    error = _errors(lambda: update_native(_native(), _Strange(), [(b"1", b"x"), (b"2", b"y")]))
    assert error == (TypeError, "tree_node returned str, not bytes or None")


@pytest.mark.parametrize(
    ("write", "message"),
    [
        ((b"k",), "update: write 1 is not a (key, value) pair"),
        ((b"k", "v"), "update: write 1 is not bytes and bytes or None"),
        (("k", b"v"), "update: write 1 is not bytes and bytes or None"),
    ],
)
def test_malformed_writes_are_refused(write: tuple[object, ...], message: str) -> None:
    writes = [(b"a", b"1"), write]
    error = _errors(lambda: update_native(_native(), MemoryTree(), writes))  # type: ignore[arg-type]
    assert error == (TypeError, message)


def test_configure_refuses_a_null_address() -> None:
    native = importlib.import_module("apps._merkletree")
    with pytest.raises(ValueError, match="an address is null"):
        native.configure(0, 1, 2)


def test_an_update_that_differs_from_pythons_is_not_used() -> None:
    native = _native()
    Answer = tuple[bytes | None, dict[bytes, bytes | None], list[tuple[bytes, bytes | None]]]

    def wrong_root(read: nativetree.TreeRead, root: bytes | None, writes: Writes) -> Answer:
        slot, out, ordered = native(read, root, writes)
        return (None if slot is None else bytes([slot[0] ^ 1]) + slot[1:]), out, ordered

    def one_record_less(read: nativetree.TreeRead, root: bytes | None, writes: Writes) -> Answer:
        slot, out, ordered = native(read, root, writes)
        if ordered:
            out.pop(ordered.pop(0)[0])
        return slot, out, ordered

    def out_of_order(read: nativetree.TreeRead, root: bytes | None, writes: Writes) -> Answer:
        slot, out, ordered = native(read, root, writes)
        return slot, out, ordered[::-1]

    def refuses(read: nativetree.TreeRead, root: bytes | None, writes: Writes) -> Answer:
        raise AssertionError("no")

    assert merkle._same_as_python(native)
    for wrong in (wrong_root, one_record_less, out_of_order, refuses):
        assert not merkle._same_as_python(wrong)


def test_the_records_come_sorted_by_key_without_the_root_slot() -> None:
    native = _native()
    tree = MemoryTree()
    writes: Writes = [(b"key %d" % number, b"value") for number in range(3000)]
    slot, out, ordered = native(tree.tree_node, None, writes)
    keys = [key for key, _ in ordered]
    assert keys == sorted(out)
    assert len(keys) == len(set(keys)) > 100
    assert ROOT_KEY not in out
    assert slot is not None
    assert [out[key] for key in keys] == [value for _, value in ordered]
    assert len({key[0] for key in keys}) >= 3  # records of several depths


def test_pure_python_on_purpose(monkeypatch: pytest.MonkeyPatch) -> None:
    # The node's import guard refuses the extension (a fresh import: not the one loaded).
    monkeypatch.setenv("SUANPAN_PURE_PYTHON", "1")
    monkeypatch.delitem(sys.modules, "apps._merkletree")
    loaded = nativetree.load()
    assert (loaded.update, loaded.status) == (None, "python (SUANPAN_PURE_PYTHON=1)")


def test_without_the_extension_python_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def missing(name: str, package: str | None = None) -> ModuleType:
        if name == "apps._merkletree":
            raise ModuleNotFoundError(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", missing)
    loaded = nativetree.load()
    assert (loaded.update, loaded.status) == (None, "python (apps._merkletree is not built)")


def test_without_opensslss_functions_python_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nativetree, "_SYMBOLS", ("SHA256_Init", "no_such_function", "SHA256_Final"))
    loaded = nativetree.load()
    assert loaded.update is None
    assert loaded.status.startswith("python (OpenSSL's SHA-256 functions were not found: ")
    assert "no_such_function" in loaded.status


def test_a_hash_that_differs_from_hashlib_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    class _Other:
        @staticmethod
        def sha256(data: bytes) -> hashlib._Hash:
            return hashlib.sha256(b"other" + data)

    monkeypatch.setattr(nativetree, "hashlib", _Other)
    loaded = nativetree.load()
    assert (loaded.update, loaded.status) == (
        None,
        "python (OpenSSL's SHA-256 through the extension differs from hashlib)",
    )
    # The real hash is configured again for the tests that follow.
    monkeypatch.undo()
    assert nativetree.load().update is not None


def test_the_extensions_hash_is_hashlibs() -> None:
    native = importlib.import_module("apps._merkletree")
    _native()
    for size in (0, 1, 55, 56, 63, 64, 65, 1000):
        data = bytes(range(256)) * 4
        assert native.digest(data[:size]) == hashlib.sha256(data[:size]).digest()


def test_a_stored_path_deeper_than_a_key_hash_is_refused() -> None:
    # A damaged store whose nodes hold a node's hash on the key's path at every depth: the
    # walk would go past the key hash's 64 nibbles.
    key = b"deep"
    digest = merkle.key_hash(key)
    tree = MemoryTree()
    for depth in range(merkle.DEPTH_MAX):
        bitmap = 0x8000 >> merkle.nibble(digest, depth)
        header = bytes((bitmap >> 8, bitmap & 0xFF, 0, 0))
        tree.records[merkle.node_key(digest, depth)] = header + bytes(32)
    tree.records[ROOT_KEY] = bytes(32)
    error = _errors(lambda: update_native(_native(), tree, [(key, b"v")]))
    assert error == (AssertionError, "a stored tree path is deeper than a key hash")
    # The Python update fails there too (reading the 65th nibble).
    with pytest.raises(IndexError):
        update_python(tree, [(key, b"v")])


def test_a_node_says_why_the_tree_runs_in_python(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from node.native import merkle_tree_status

    with caplog.at_level(logging.WARNING, logger="suanpan.native"):
        assert merkle_tree_status() == "native"
    assert not [r for r in caplog.records if r.msg == "merkle_tree_native_unavailable"]
    monkeypatch.setattr(merkle, "tree_status", lambda: "python (apps._merkletree is not built)")
    with caplog.at_level(logging.WARNING, logger="suanpan.native"):
        assert merkle_tree_status() == "python (apps._merkletree is not built)"
    [record] = [r for r in caplog.records if r.msg == "merkle_tree_native_unavailable"]
    assert record.status == "python (apps._merkletree is not built)"  # type: ignore[attr-defined]
