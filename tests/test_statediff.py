"""`suanpan debug state-diff`: exactly the differing keys, grouped by app, and nothing else."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lmdb
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from consensus.codec import encode
from node.audit.statediff import KeyDifference, diff_homes, diff_states, render_key, render_value
from node.cli import main
from tests.audit_fixtures import HEIGHTS, BuiltChain, build_home, corrupt, extend_home


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> BuiltChain:
    return build_home(tmp_path_factory.mktemp("template"))


@pytest.fixture
def homes(template: BuiltChain, tmp_path: Path) -> tuple[Path, Path]:
    """Two private copies of one node home (two nodes that agree)."""
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(template.home, a)
    shutil.copytree(template.home, b)
    return a, b


def payments_keys(template: BuiltChain, count: int) -> list[bytes]:
    """``count`` payments keys present in the final state."""
    present: dict[bytes, bytes | None] = {}
    for height in range(1, HEIGHTS + 1):
        present.update(template.writes(height))
    keys = [k for k, v in sorted(present.items()) if k.startswith(b"payments\x00") and v]
    assert len(keys) >= count
    return keys[:count]


def test_identical_stores_have_no_differences(homes: tuple[Path, Path]) -> None:
    diff = diff_homes(*homes)
    assert diff.identical
    assert diff.differences == ()
    assert diff.source == "stored"
    assert (diff.height_a, diff.height_b) == (HEIGHTS, HEIGHTS)
    assert diff.keys_compared_a == diff.keys_compared_b > 0
    result = CliRunner().invoke(
        main, ["debug", "state-diff", "--home", str(homes[0]), "--home", str(homes[1])]
    )
    assert result.exit_code == 0, result.output
    assert "identical: no key differs" in result.output


def test_lists_exactly_the_changed_keys(template: BuiltChain, homes: tuple[Path, Path]) -> None:
    a, b = homes
    changed, deleted = payments_keys(template, 2)
    added = b"membership\x00zz-extra"
    corrupt(b, "state", lambda txn, db: txn.put(changed, encode(123_456), db=db))
    corrupt(b, "state", lambda txn, db: txn.delete(deleted, db=db))
    corrupt(b, "state", lambda txn, db: txn.put(added, encode({"x": 1}), db=db))

    diff = diff_homes(a, b)
    assert not diff.identical
    assert diff.total == 3
    assert {(d.key, d.kind) for d in diff.differences} == {
        (changed, "different"),
        (deleted, "only_a"),
        (added, "only_b"),
    }
    by_key = {d.key: d for d in diff.differences}
    assert by_key[changed].b == encode(123_456)
    assert by_key[added].a is None
    assert set(diff.namespaces) == {"payments", "membership"}
    assert diff.namespaces["payments"].total == 2
    assert diff.namespaces["membership"].only_b == 1

    runner = CliRunner()
    args = ["debug", "state-diff", "--home", str(a), "--home", str(b)]
    text = runner.invoke(main, args)
    assert text.exit_code == 1, text.output
    assert "payments: 2 differing (1 only in A, 0 only in B, 1 different)" in text.output
    assert "membership: 1 differing (0 only in A, 1 only in B, 0 different)" in text.output
    assert f"~ {render_key(changed)}" in text.output
    assert "B: 123456" in text.output
    assert "+ membership/zz-extra" in text.output
    assert '      B: {"x":1}' in text.output

    document = json.loads(runner.invoke(main, [*args, "--json"]).output)
    assert document["identical"] is False
    assert document["differing_keys"] == 3
    assert sorted(d["key_hex"] for d in document["differences"]) == sorted(
        key.hex() for key in (changed, deleted, added)
    )


def test_limit_lists_fewer_but_counts_all(template: BuiltChain, homes: tuple[Path, Path]) -> None:
    a, b = homes
    doomed = payments_keys(template, 3)

    def delete_all(txn: lmdb.Transaction, db: lmdb._Database) -> None:
        for key in doomed:
            txn.delete(key, db=db)

    corrupt(b, "state", delete_all)
    diff = diff_homes(a, b, listed_max=1)
    assert diff.total == 3
    assert len(diff.differences) == 1
    assert "... 2 more differing keys not listed" in diff.render()


def test_height_replays_both_nodes_blocks(homes: tuple[Path, Path]) -> None:
    """B committed two more (empty) blocks: the stored states differ only in the host's
    last-block record; replayed to a common height they are identical."""
    a, b = homes
    extend_home(b, 2)
    stored = diff_homes(a, b)
    assert (stored.height_a, stored.height_b) == (HEIGHTS, HEIGHTS + 2)
    assert [render_key(d.key) for d in stored.differences] == ["_host/last_block"]

    for height in (0, 5, HEIGHTS):
        replayed = diff_homes(a, b, height=height)
        assert replayed.source == "replayed"
        assert replayed.identical, replayed.render()
        assert replayed.app_hash_a == replayed.app_hash_b
        assert replayed.first_different_block is None
        assert replayed.stored_app_hash_a == replayed.app_hash_a

    result = CliRunner().invoke(
        main,
        ["debug", "state-diff", "--home", str(a), "--home", str(b), "--height", str(HEIGHTS + 1)],
    )
    assert result.exit_code == 2
    assert f"height {HEIGHTS + 1} is not in both stores" in result.output


def test_height_finds_where_two_forks_part(homes: tuple[Path, Path]) -> None:
    """A and B each commit two more blocks that differ only in their timestamps."""
    a, b = homes
    extend_home(a, 2)
    extend_home(b, 2, skew_ms=5)
    diff = diff_homes(a, b, height=HEIGHTS + 2)
    assert diff.first_different_block == HEIGHTS + 1
    assert [render_key(d.key) for d in diff.differences] == ["_host/last_block"]
    assert f"blocks first differ at height {HEIGHTS + 1}" in diff.render()
    assert diff.to_json()["first_different_block"] == HEIGHTS + 1
    assert diff_homes(a, b, height=HEIGHTS).identical


def test_height_ignores_a_damaged_state_entry(
    template: BuiltChain, homes: tuple[Path, Path]
) -> None:
    """Replay rebuilds state from blocks, so a corrupted stored entry shows only without
    --height: that is how an operator tells a damaged store from a divergent execution."""
    a, b = homes
    (key,) = payments_keys(template, 1)
    corrupt(b, "state", lambda txn, db: txn.put(key, encode(1), db=db))
    stored = diff_homes(a, b)
    assert [d.key for d in stored.differences] == [key]
    assert "run `suanpan audit`" in stored.render()  # equal app hashes, different state
    assert diff_homes(a, b, height=HEIGHTS).identical


def test_homes_of_different_chains_are_refused(homes: tuple[Path, Path], tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "genesis.json").write_text(
        (homes[0] / "genesis.json").read_text().replace("suanpan-demo", "other-chain")
    )
    result = CliRunner().invoke(
        main, ["debug", "state-diff", "--home", str(homes[0]), "--home", str(other)]
    )
    assert result.exit_code == 2
    assert "different chains" in result.output


def test_needs_two_different_homes(homes: tuple[Path, Path]) -> None:
    result = CliRunner().invoke(main, ["debug", "state-diff", "--home", str(homes[0])])
    assert result.exit_code == 2
    assert "exactly two" in result.output
    same = ["debug", "state-diff", "--home", str(homes[0]), "--home", str(homes[0])]
    result = CliRunner().invoke(main, same)
    assert result.exit_code == 2
    assert "same home" in result.output


def test_rendering() -> None:
    assert render_key(b"membership\x00ident/" + bytes([0xAB, 0x01])) == "membership/ident/{ab01}"
    assert render_key(b"nokey") == "nokey"
    assert render_value(encode({"a": b"\x01"})) == '{"a":{"$bytes":"01"}}'
    assert render_value(b"") == "(empty)"
    assert render_value(b"\xc1") == "0xc1"
    assert render_value(None) == "(absent)"


entries = st.dictionaries(st.binary(max_size=4), st.binary(max_size=3), max_size=12)


@given(entries, entries)
def test_diff_states_matches_a_dictionary_comparison(
    a: dict[bytes, bytes], b: dict[bytes, bytes]
) -> None:
    differences = list(diff_states(sorted(a.items()), sorted(b.items())))
    expected = [
        KeyDifference(key, a.get(key), b.get(key))
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]
    assert differences == expected


def test_height_reports_a_store_whose_app_hash_differs_from_its_replay(
    homes: tuple[Path, Path],
) -> None:
    a, b = homes
    corrupt(b, "app_hashes", lambda txn, db: txn.put((5).to_bytes(8, "big"), bytes(32), db=db))
    diff = diff_homes(a, b, height=5)
    assert diff.identical
    assert diff.stored_app_hash_b == bytes(32)
    assert f"B's store records app hash {bytes(32).hex()} at height 5" in diff.render()
