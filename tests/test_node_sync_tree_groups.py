"""``[consensus] sync_tree_blocks``: a node catching up executes a synced block whose successor
it holds, certified, without updating its Merkle tree, takes the app hash that successor
commits to as the block's, and updates the tree once for a group of such blocks, checking the
root against the group's last app hash. The store it leaves is the one block-by-block
execution leaves; a state that differs from the certified chain stops the node at the group's
end with none of the group written."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from apps.host import BlockResult
from consensus.crypto import PrivateKey
from consensus.types import Block, CommitCertificate
from node import runtime
from node.audit.audit import audit_home
from node.config import parse_config
from node.home import Home, load_home
from node.jsonvalue import JsonType
from node.store import Store
from node.testnet.testnet import create_testnet
from tests.node_fixtures import (
    NEVER_MS,
    answer_block_request,
    certified_by_lone_validator,
    forged_registration,
    next_block,
    registrations_chain,
    with_consensus,
)

DEADLINE_S = 120.0
REGISTRATIONS = 20

Entries = list[tuple[Block, CommitCertificate]]


def _configured(home: Home, *, block_ms: int, tree_blocks: int = 8) -> Home:
    return with_consensus(home, block_ms=block_ms, sync_tree_blocks=tree_blocks)


async def _chain(source_dir: Path, key: PrivateKey) -> tuple[Entries, bytes]:
    """The lone validator's chain of ``REGISTRATIONS`` registrations, one block each."""
    home = _configured(load_home(source_dir), block_ms=20)
    with trio.fail_after(DEADLINE_S):
        return await registrations_chain(
            home, key, REGISTRATIONS, deadline_s=DEADLINE_S, block_every=1
        )


@dataclass
class _Synced:
    """What a node did while it applied an answer to its request for blocks."""

    status: dict[str, JsonType]
    # ``syncing`` after each block executed, by height.
    syncing: dict[int, bool] = field(default_factory=dict)
    # Each write of executed blocks: its last height, whether the tree was left for a
    # transaction of its own (``defer_tree``), and whether it wrote the tree (none held after).
    writes: list[tuple[int, bool, bool]] = field(default_factory=list)
    # Transactions of the held tree records alone begun while the node synced.
    tree_writes_syncing: int = 0


async def _sync(
    home_dir: Path, entries: Entries, monkeypatch: pytest.MonkeyPatch, *, tree_blocks: int
) -> _Synced:
    """Start the node of ``home_dir``, hand it ``entries`` as one answer to its request for
    blocks, and return its status once it applied them all, with what it did meanwhile."""
    home = _configured(load_home(home_dir), block_ms=NEVER_MS, tree_blocks=tree_blocks)
    top = entries[-1][0].height
    synced = _Synced({})
    follow_sync = runtime.Node._follow_sync
    commit_blocks = Store.commit_blocks
    write_held_tree = Store.write_held_tree
    node: runtime.Node | None = None

    def executed(self: runtime.Node, height: int, successor_held: bool) -> None:
        follow_sync(self, height, successor_held)
        synced.syncing[height] = self.syncing

    def commit(
        self: Store,
        batch: Sequence[tuple[Block, CommitCertificate, BlockResult]],
        *,
        defer_tree: bool = False,
    ) -> None:
        commit_blocks(self, batch, defer_tree=defer_tree)
        synced.writes.append((batch[-1][0].height, defer_tree, self.tree_held() == (0, 0)))

    def tree_alone(self: Store) -> int:
        assert node is not None
        synced.tree_writes_syncing += node.syncing
        return write_held_tree(self)

    monkeypatch.setattr(runtime.Node, "_follow_sync", executed)
    monkeypatch.setattr(Store, "commit_blocks", commit)
    monkeypatch.setattr(Store, "write_held_tree", tree_alone)
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(home).run)
            await answer_block_request(node, entries)
            await node.wait_for_height(top, timeout_s=DEADLINE_S)
            synced.status = node.status()
            nursery.cancel_scope.cancel()
    monkeypatch.undo()
    return synced


def _stored_app_hashes(home_dir: Path, top: int) -> list[bytes | None]:
    home = load_home(home_dir)
    genesis = home.genesis
    with Store(home.data_dir, chain_id=genesis.chain_id, genesis_hash=genesis.hash) as store:
        return [store.app_hash_at(height) for height in range(1, top + 1)]


async def test_grouped_tree_updates_leave_the_store_block_by_block_execution_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="tree-groups", observers=1)
    grouped_dir, single_dir = tmp_path / "grouped", tmp_path / "single"
    shutil.copytree(info.homes[1], grouped_dir)
    shutil.copytree(info.homes[1], single_dir)
    entries, app_hash = await _chain(Path(info.homes[0]), info.client_key(0))
    top = entries[-1][0].height
    assert top >= REGISTRATIONS

    synced = await _sync(grouped_dir, entries, monkeypatch, tree_blocks=8)
    grouped = synced.status
    single = (await _sync(single_dir, entries, monkeypatch, tree_blocks=1)).status
    # Syncing (``/status``, the health check's "behind") from the first block executed with
    # the next one in hand (the first block was applied before the rest arrived) until the
    # last one asked for; meanwhile the tree, when due, went in the blocks' own write
    # transaction, and never in one of its own.
    assert {height: syncing for height, syncing in synced.syncing.items() if height > 1} == {
        height: height < top for height in range(2, top + 1)
    }
    assert synced.tree_writes_syncing == 0
    assert {defer for last, defer, _ in synced.writes if 1 < last < top} == {False}
    assert any(tree for last, _, tree in synced.writes if 1 < last < top)
    # Every block but the first (applied as it arrived, before the rest of the answer) and
    # the last had its successor in hand: those were grouped, eight at most per group.
    groups = grouped["tree_groups"]
    assert isinstance(groups, dict)
    blocks, count = int(str(groups["blocks"])), int(str(groups["groups"]))
    assert blocks == top - 2
    assert blocks <= 8 * count < blocks + 8
    assert single["tree_groups"] == {"groups": 0, "blocks": 0}
    assert grouped["app_hash"] == single["app_hash"] == app_hash.hex()

    # The same app hash at every height, each the one the next certified header names (and
    # the source's state at the top); opening the store checks its tree against the last.
    hashes = _stored_app_hashes(grouped_dir, top)
    assert hashes == _stored_app_hashes(single_dir, top)
    assert hashes[:-1] == [block.header.app_hash for block, _ in entries[1:]]
    assert hashes[-1] == app_hash
    # The audit replays every block and compares each state's root with the stored app hash.
    report = audit_home(grouped_dir)
    assert report.ok, report.failure


async def test_a_state_that_differs_from_the_certified_chain_stops_the_node_unwritten(
    tmp_path: Path,
) -> None:
    """A lone validator (a quorum of one: colluders) certifies a block whose forged
    transaction it applied, and the block after it. A node that checks signatures refuses the
    forgery, so its state after that block is not the one the next header names: the group
    holding the block stops the node, naming the block, with the group unwritten."""
    info = create_testnet(tmp_path / "net", 1, chain_id="tree-groups", observers=1)
    checking_dir = tmp_path / "checking"
    shutil.copytree(info.homes[1], checking_dir)
    source = load_home(Path(info.homes[0]))
    key = info.client_key(0)
    entries, app_hash = await _chain(Path(info.homes[0]), key)
    forged = forged_registration(key, info.chain_id, REGISTRATIONS)
    forged_block = next_block(entries[-1][0], app_hash, (forged,))
    # The colluders' state after the forged block: the forgery registered (any other hash
    # than the checking node's will do; it is what their next header names).
    colluders_state = bytes(32)
    following = next_block(forged_block, colluders_state)
    chain = [*entries, certified_by_lone_validator(source.validator_key, forged_block)]
    chain.append(certified_by_lone_validator(source.validator_key, following))
    bad = forged_block.height

    home = _configured(load_home(checking_dir), block_ms=NEVER_MS)
    with pytest.raises(BaseException) as caught:  # noqa: PT011 - a nursery's group wraps it
        await _run_until_stopped(home, chain)
    stopped = runtime.stopped_error(caught.value)
    assert stopped is not None, caught.value
    message = str(stopped)
    assert f"after block {bad} has app hash" in message
    assert colluders_state.hex()[:16] in message
    # The blocks before the group are written; the group is not (the forged block among them).
    written = _stored_app_hashes(checking_dir, bad)
    first_unwritten = written.index(None) + 1
    assert bad - 8 < first_unwritten <= bad
    assert None not in written[: first_unwritten - 1]
    assert f"blocks {first_unwritten}-{bad} were not written" in message
    report = audit_home(checking_dir)
    assert report.ok, report.failure


async def _run_until_stopped(home: Home, chain: Entries) -> None:
    """Run the node of ``home`` with ``chain`` as the answer to its request for blocks, until
    it stops (the test's deadline fails it otherwise)."""
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(home).run)
            await answer_block_request(node, chain)
            await trio.sleep_forever()


def test_the_option_is_a_count_of_blocks() -> None:
    config, problems = parse_config(b"[consensus]\nsync_tree_blocks = 1\n")
    assert not problems
    assert config is not None
    assert config.consensus.sync_tree_blocks == 1
    config, problems = parse_config(b"")
    assert config is not None
    assert config.consensus.sync_tree_blocks == 8
    for wrong in (b"0", b"65", b'"8"'):
        config, problems = parse_config(b"[consensus]\nsync_tree_blocks = " + wrong + b"\n")
        assert config is None
        assert [problem.key for problem in problems] == ["[consensus] sync_tree_blocks"]
