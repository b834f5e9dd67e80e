"""``[consensus] halt_height``: validators given the same height all stop after that block
(exit 0, the block and its Merkle tree in the store, nothing past it), refuse to start again
until the key is raised or removed, and go on from there once it is; a node that joins by
state sync from a snapshot past it installs the snapshot and stops.

Real node processes on loopback (the first test) and a real joining node in this process (the
second); every wait polls with a generous deadline, never a fixed sleep."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Final

import pytest
import trio
from click.testing import CliRunner

from node import runtime
from node.audit.storeview import StoreView
from node.cli import main
from node.config import NodeConfig, halt_height_warning, parse_config, render_config
from node.home import load_home
from node.store import Store
from node.testnet.testnet import Testnet, agreement_problems, create_testnet, halt_event
from tests.node_fixtures import (
    NEVER_MS,
    answer_block_request,
    registrations_chain,
    with_consensus,
)
from tests.test_peer_fuzz import joining_node

HALT: Final = 4
RAISED: Final = HALT + 3
# A halt height with room for demo traffic before it.
LOADED_HALT: Final = 20
# Blocks of a lone validator's chain handed to a node catching up in one answer.
SYNCED_BLOCKS: Final = 20
# Deadlines for a 2-core machine shared with other test runs; typical times are far shorter.
DEADLINE_S: Final = 180.0
# How long the last validator gets to halt after a quorum did: it may have missed the votes
# of the halt height's block, and then nobody serves it that block (it is stopped instead).
STRAGGLER_S: Final = 30.0
# How long a node that must refuse to start may take to do so.
REFUSAL_S: Final = 60.0


def test_halt_height_is_a_height_or_zero() -> None:
    config, problems = parse_config(render_config(NodeConfig()).encode())
    assert problems == []
    assert config is not None
    assert config.consensus.halt_height == 0
    assert "halt_height = 0" in render_config(NodeConfig())
    assert halt_height_warning(NodeConfig()) is None
    # Set, config check, the start's log and /status say so: a key left over from an upgrade
    # would stop the node.
    warned = halt_height_warning(NodeConfig().with_changes("consensus", halt_height=120))
    assert warned == (
        "[consensus] halt_height = 120: the node stops after committing block 120 and will not"
        " start past it; remove the key once the upgrade it was set for is done"
    )
    for value, named in (
        ("-1", "outside 0.."),
        ('"4"', "is not an integer"),
        ("true", "True is not an integer"),
    ):
        text = render_config(NodeConfig()).replace("halt_height = 0", f"halt_height = {value}")
        _, problems = parse_config(text.encode())
        assert [(p.key, named in p.problem) for p in problems] == [
            ("[consensus] halt_height", True)
        ], problems


def _exited(testnet: Testnet) -> set[int]:
    return {
        index
        for index, process in enumerate(testnet.processes)
        if process is not None and process.poll() is not None
    }


def _wait_for_exits(testnet: Testnet, count: int, timeout_s: float) -> set[int]:
    """The nodes that exited by themselves, once at least ``count`` did or the time is up."""
    deadline = time.monotonic() + timeout_s
    while len(_exited(testnet)) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return _exited(testnet)


def _events(home: Path) -> list[dict[str, object]]:
    lines = (home / "node.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _stored(home: Path, chain_id: str, genesis_hash: bytes) -> tuple[int, bytes, bytes, bool]:
    """A stopped node's height, last block hash, app hash, and whether its Merkle tree was
    written up to that height (read before opening the store brings a lagging tree up)."""
    with StoreView(home / "data") as view:
        tree_current = view.meta(b"tree_height") is None
    with Store(home / "data", chain_id=chain_id, genesis_hash=genesis_hash) as store:
        return store.height, store.last_block_hash, store.app_hash, tree_current


def _halt_together(testnet: Testnet, height: int) -> None:
    """Start every node; a quorum (and normally all four) must stop by itself after block
    ``height``, each with exit 0, the halt logged and said on stderr, and none past it."""
    marks = [
        len(_events(home)) if (home / "node.log").exists() else 0 for home in testnet.info.homes
    ]
    testnet.start_all()
    _wait_for_exits(testnet, 3, DEADLINE_S)
    by_themselves = _wait_for_exits(testnet, 4, STRAGGLER_S)
    codes = testnet.stop_all()
    assert len(by_themselves) >= 3, (by_themselves, codes)
    homes = testnet.info.homes
    genesis = load_home(homes[0]).genesis
    stored = [_stored(home, genesis.chain_id, genesis.hash) for home in homes]
    for index in by_themselves:
        assert codes[index] == 0, (index, (homes[index] / "process.log").read_text()[-2000:])
        assert stored[index][0] == height, (index, stored[index])
        # The tree was written with the last block: nothing for a restart to recover.
        assert stored[index][3], (index, stored[index])
        events = _events(homes[index])[marks[index] :]
        names = [str(event["event"]) for event in events]
        assert names[-1] == "node_stopped", names[-6:]
        halt = names.index("halt_height_reached")
        assert (events[halt]["height"], events[halt]["halt_height"]) == (height, height)
        assert events[halt]["consensus_sent"] is True  # its last votes were written first
        # The halt height's block was the last committed; nothing after the halt but the stop.
        committed = [event["height"] for event in events if event["event"] == "block_committed"]
        assert committed[-1] == height, committed
        assert set(names[halt + 1 : -1]) <= {"peer_disconnected"}, names[halt:]
        said = (homes[index] / "process.log").read_text()
        assert f"the node halted at height {height} ([consensus] halt_height" in said
    # One chain: every node at most at the halt height, and the halted ones on the same block.
    assert all(entry[0] <= height for entry in stored), stored
    assert len({stored[index][1:3] for index in by_themselves}) == 1, stored


def _set_halt_height(home: Path, old: int, new: int) -> None:
    path = home / "config.toml"
    text = path.read_text()
    assert text.count(f"halt_height = {old}\n") == 1
    path.write_text(text.replace(f"halt_height = {old}\n", f"halt_height = {new}\n"))


def test_validators_halt_after_the_same_block_refuse_to_pass_it_and_go_on_when_it_is_raised(
    tmp_path: Path,
) -> None:
    config = NodeConfig().with_changes("consensus", halt_height=HALT)
    # One node writes its blocks and tree in a block writer process: its halt waits for that.
    writer = config.with_changes("store", writer_process=True)
    info = create_testnet(
        tmp_path / "net", 4, chain_id="halt-net", config=config, node_configs={1: writer}
    )
    testnet = Testnet(info)
    try:
        _halt_together(testnet, HALT)

        # Started again with the key unchanged, a halted node refuses, naming both heights.
        home = info.homes[0]
        before = (home / "process.log").read_text()
        testnet.start(0)
        _wait_for_exits(testnet, 4, REFUSAL_S)
        process = testnet.processes[0]
        assert process is not None
        assert process.poll() == 1
        said = (home / "process.log").read_text()[len(before) :]
        assert f"the store is at height {HALT}, at or past [consensus] halt_height {HALT}" in said
        assert "Traceback" not in said
        genesis = load_home(home).genesis
        assert _stored(home, genesis.chain_id, genesis.hash)[0] == HALT

        # Raised, the chain goes on from there, and halts together again.
        for node_home in info.homes:
            _set_halt_height(node_home, HALT, RAISED)
        _halt_together(testnet, RAISED)
    finally:
        testnet.stop_all()


@pytest.mark.trio
async def test_a_node_joining_from_a_snapshot_past_its_halt_height_installs_it_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "_STATE_SYNC_RETRY_SECONDS", 0.05)
    async with joining_node(tmp_path, halt_height=1) as joining:
        joining.server.honest = True
        joining.server.queued.set()
        node = joining.node
        with trio.fail_after(DEADLINE_S):
            while node.halted_at is None:  # noqa: ASYNC110
                await trio.sleep(0.05)
        installed = node.state_synced_from
        assert installed is not None
        assert installed >= 1
        assert node.halted_at == installed == node.written_height
        assert joining.errors == []


@pytest.mark.trio
async def test_a_halt_height_is_said_by_config_check_the_start_and_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="halt-said")
    path = info.homes[0]
    _set_halt_height(path, 0, 1000)
    checked = CliRunner().invoke(main, ["config", "check", "--home", str(path)])
    assert checked.exit_code == 0, checked.output
    said = halt_height_warning(NodeConfig().with_changes("consensus", halt_height=1000))
    assert said is not None
    assert f"warning: {said}" in checked.output
    caplog.set_level(logging.WARNING, logger="suanpan.node")
    async with trio.open_nursery() as nursery:
        node = await nursery.start(runtime.Node(load_home(path)).run)
        status = node.status()
        nursery.cancel_scope.cancel()
    assert status["halt_height"] == 1000
    assert status["warnings"] == [said]
    logged = [record for record in caplog.records if record.msg == "halt_height_set"]
    assert [(r.__dict__["halt_height"], r.__dict__["warning"]) for r in logged] == [(1000, said)]


@pytest.mark.trio
async def test_a_node_catching_up_stops_at_its_halt_height_inside_a_synced_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Blocks 1..top handed in one answer: the node applies them in groups of up to 8 with
    one Merkle tree update each (``sync_tree_blocks``), and still commits exactly up to its
    halt height, in the middle of a group, with the state and tree of that height."""
    caplog.set_level(logging.WARNING, logger="suanpan.node")
    info = create_testnet(tmp_path / "net", 1, chain_id="halt-sync", observers=1)
    source = with_consensus(load_home(info.homes[0]), block_ms=20)
    with trio.fail_after(DEADLINE_S):
        entries, _ = await registrations_chain(
            source, info.client_key(0), SYNCED_BLOCKS, deadline_s=DEADLINE_S, block_every=1
        )
    top = entries[-1][0].height
    halt = top // 2 + 1
    assert halt % 8 not in (0, 1)  # not at a group's edge
    follower = load_home(info.homes[1])
    home = with_consensus(follower, block_ms=NEVER_MS, halt_height=halt)
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(home).run)
            await answer_block_request(node, entries)
    # The node ended by itself (the nursery waited for it): at the halt height exactly.
    assert node.halted_at == halt
    # Its halt says how many transactions it committed (``testnet up`` shows the count).
    carried = sum(len(block.transactions) for block, _ in entries[:halt])
    assert carried > 0
    halts = [r for r in caplog.records if r.getMessage() == "halt_height_reached"]
    assert [getattr(r, "transactions_committed", None) for r in halts] == [carried]
    assert node.tree_group_blocks > 0  # the blocks before it were applied in groups
    with StoreView(home.data_dir) as view:
        assert view.meta(b"tree_height") is None  # the tree is the halt height's
    genesis = home.genesis
    with Store(home.data_dir, chain_id=genesis.chain_id, genesis_hash=genesis.hash) as store:
        assert store.height == halt
        assert store.last_block_hash == entries[halt - 1][0].hash
        # The state after the halt height's block: what the next certified header names.
        assert store.app_hash == entries[halt][0].header.app_hash


def test_testnet_up_shows_a_halt_and_ends_when_every_node_halted(tmp_path: Path) -> None:
    """A local testnet rehearsing an upgrade's stop under demo traffic: ``testnet up`` on homes
    given a halt height ends by itself once every node halted (a halt is not a death), and its
    summary reads the halted nodes' stores, compares their blocks and gives the transactions
    each committed (from its halt's log event)."""
    config = NodeConfig().with_changes("consensus", halt_height=LOADED_HALT)
    info = create_testnet(tmp_path / "net", 4, chain_id="halt-up", config=config, demo_seed=0)
    started = time.monotonic()
    result = CliRunner().invoke(
        main,
        [
            *("testnet", "up", "--dir", str(info.directory)),
            *("--load", "100", "--duration", "90", "--json"),
        ],
    )
    assert result.exit_code == 0, result.output[-3000:]
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["agree"] is True
    assert summary["failures"] == []
    nodes = summary["nodes"]
    halted = [node for node in nodes if node["halted"]]
    assert len(halted) >= 3, nodes  # a quorum at least (one may have missed the last votes)
    assert {(node["height"], node["exit_code"]) for node in halted} == {(LOADED_HALT, 0)}
    assert len({node["last_block_hash"] for node in halted}) == 1
    # Each started from genesis and committed the same blocks: the same count, not none.
    counts = {node["transactions_committed"] for node in halted}
    assert len(counts) == 1, nodes
    assert counts != {0}, nodes
    if len(halted) == len(nodes):
        assert time.monotonic() - started < 90  # it ended by itself, not at the duration


def test_a_halt_counts_only_after_the_last_start(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    assert halt_event(log) is None  # no log yet
    lines = [
        '{"event":"node_started","height":0}',
        '{"event":"halt_height_reached","height":4,"transactions_committed":7}',
        "not json",
        '["halt_height_reached"]',
    ]
    log.write_text("\n".join(lines) + "\n")
    assert halt_event(log) == {
        "event": "halt_height_reached",
        "height": 4,
        "transactions_committed": 7,
    }
    log.write_text("\n".join([*lines, '{"event":"node_started","height":4}']) + "\n")
    assert halt_event(log) is None  # started again since: whatever stops it now is no halt


@pytest.mark.trio
async def test_stopped_nodes_are_compared_by_their_stores(tmp_path: Path) -> None:
    """``agreement_problems`` of stopped homes (how ``testnet up`` compares halted nodes):
    two homes of one chain agree; a home of another chain is named."""
    homes: list[Path] = []
    for name in ("one", "other"):
        info = create_testnet(tmp_path / name, 1, chain_id=f"stored-{name}")
        home = with_consensus(load_home(info.homes[0]), block_ms=20)
        with trio.fail_after(DEADLINE_S):
            await registrations_chain(home, info.client_key(0), 3, deadline_s=DEADLINE_S)
        homes.append(info.homes[0])
    copy = tmp_path / "copy"
    shutil.copytree(homes[0], copy)
    assert agreement_problems([homes[0], copy]) == []
    problems = agreement_problems([homes[0], homes[1]])
    assert problems[0].startswith("node1 has a different block at height "), problems
