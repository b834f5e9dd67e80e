"""The page check of ``node.audit.lmdbcheck`` passes every healthy file LMDB writes.

``tests/test_damaged_store.py`` shows the check finding damage; a check that refuses a healthy
store would make ``suanpan audit``, ``backup`` and ``restore`` refuse a node's good store, so
here LMDB itself writes files the check must pass: random puts and deletes in several
databases, values from empty to several pages, transactions committed while a reader holds an
old snapshot (so freed pages pile up in long free-page lists), and LMDB's own copies.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import lmdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.audit.lmdbcheck import check_lmdb_file

_NAMES = (b"state", b"tree", b"receipts")
_OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(_NAMES),
        st.integers(0, 400),  # key number
        st.one_of(st.none(), st.integers(0, 300), st.integers(1_000, 20_000)),  # None: delete
    ),
    max_size=60,
)


def _key(number: int) -> bytes:
    # Keys of varied lengths and spread over the key space, as hashes and prefixed ids are.
    return hashlib.sha256(number.to_bytes(4, "big")).digest()[: 4 + number % 29]


def _open(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), map_size=1 << 30, max_dbs=len(_NAMES), readahead=False)


def _copies_pass(env: lmdb.Environment, directory: Path) -> None:
    for compact in (False, True):
        copy = directory / f"copy-{compact}"
        copy.mkdir()
        env.copy(str(copy), compact=compact)
        assert check_lmdb_file(copy / "data.mdb") is None, compact


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(transactions=st.lists(_OPERATIONS, min_size=1, max_size=12), hold=st.integers(0, 12))
def test_files_lmdb_writes_pass(
    tmp_path_factory: object, transactions: list[list[tuple[bytes, int, int | None]]], hold: int
) -> None:
    directory = Path(str(tmp_path_factory.mktemp("env")))  # type: ignore[attr-defined]
    env = _open(directory)
    databases = {name: env.open_db(name) for name in _NAMES}
    reader: lmdb.Transaction | None = None
    try:
        for number, operations in enumerate(transactions):
            if number == hold:
                reader = env.begin()  # an old snapshot: pages freed after it are kept
            with env.begin(write=True) as txn:
                for name, key_number, size in operations:
                    key = _key(key_number)
                    if size is None:
                        txn.delete(key, db=databases[name])
                    else:
                        txn.put(key, bytes([key_number % 251]) * size, db=databases[name])
            assert check_lmdb_file(directory / "data.mdb") is None, number
        if reader is not None:
            reader.abort()
            reader = None
        _copies_pass(env, directory)
    finally:
        if reader is not None:
            reader.abort()
        env.close()


def test_a_large_file_with_long_free_page_lists_passes(tmp_path: Path) -> None:
    """Many pages freed while a reader holds an old snapshot: the free-page lists grow past a
    page and are stored as large values (once taken for damage)."""
    env = _open(tmp_path)
    state = env.open_db(b"state")
    try:
        with env.begin(write=True) as txn:
            for number in range(20_000):
                txn.put(_key(number) + b"/a", b"v" * 120, db=state)
        reader = env.begin()
        try:
            for round_ in range(4):
                with env.begin(write=True) as txn:
                    for number in range(round_, 20_000, 2):
                        txn.put(_key(number) + b"/a", b"w" * (100 + round_), db=state)
                    for number in range(round_, 20_000, 7):
                        txn.delete(_key(number) + b"/a", db=state)
        finally:
            reader.abort()
        with env.begin(write=True) as txn:
            txn.put(b"last", b"x", db=state)
        assert check_lmdb_file(tmp_path / "data.mdb") is None
        _copies_pass(env, tmp_path)
    finally:
        env.close()


def test_a_small_value_written_over_a_large_one_may_keep_its_pages(tmp_path: Path) -> None:
    """LMDB writes a value over a larger one in the larger one's overflow pages when they are
    enough: a value may span more pages than it needs (once taken for damage)."""
    env = _open(tmp_path)
    state = env.open_db(b"state")
    try:
        for sizes in ((9_000,), (3_000,), (9_000, 3_000), (10,)):
            with env.begin(write=True) as txn:
                for size in sizes:  # several: over the value this transaction wrote
                    txn.put(b"key", b"v" * size, db=state)
            assert check_lmdb_file(tmp_path / "data.mdb") is None, sizes
        _copies_pass(env, tmp_path)
    finally:
        env.close()
