"""The parts of `suanpan testnet chaos` that need no node processes: the checker (and a
positive control showing it fails on divergent data), scenarios, the byzantine driver, the
fault-hook endpoints, the network's peer blocking and the `[testnet]` config section."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from consensus.crypto import PrivateKey, hash_bytes
from consensus.evidence import Evidence, SignedStatement, verify_evidence
from consensus.messages import Proposal, decode_message, encode_message
from consensus.types import Block, Phase, Validator, ValidatorSet, Vote
from network import Network
from node.cli import main
from node.config import NodeConfig, TestnetConfig, parse_config, render_config
from node.http import Request, Response, json_response
from node.testnet.byzantine import Byzantine
from node.testnet.chaos import run_chaos
from node.testnet.chaos_check import (
    BlockRecord,
    CutRecord,
    EvidenceRecord,
    InjectionRecord,
    NodeObservation,
    Violation,
    check_cuts,
    check_run,
)
from node.testnet.chaos_scenario import (
    LINK_KINDS,
    NODE_KINDS,
    Perturbation,
    ScenarioError,
    builtin_scenarios,
    load_scenario,
    parse_scenario,
    random_scenario,
)
from node.testnet.faults import TestnetHooks
from tests.test_network_mesh import KEYS, config_for, mesh, wait_for

CHAIN = "chaos-test"
GENESIS = "00" * 32
VALIDATOR_KEYS = [PrivateKey(bytes([i + 40]) * 32) for i in range(4)]
VALIDATORS = ValidatorSet(
    tuple(Validator(f"bank{i}", key.public_key) for i, key in enumerate(VALIDATOR_KEYS))
)


# ------------------------------------------------------------------------------------ checker


def chain(length: int, *, salt: str = "", txs_per_block: int = 2) -> dict[int, BlockRecord]:
    """A well-linked fabricated chain; ``salt`` changes every hash (another fork)."""
    blocks = {}
    parent = GENESIS
    for height in range(1, length + 1):
        block_hash = hash_bytes(f"{salt}block{height}".encode()).hex()
        blocks[height] = BlockRecord(
            height,
            block_hash,
            parent,
            hash_bytes(f"{salt}state{height - 1}".encode()).hex(),
            0,
            tuple(hash_bytes(f"{salt}tx{height}.{i}".encode()).hex() for i in range(txs_per_block)),
        )
        parent = block_hash
    return blocks


def observation(index: int, blocks: dict[int, BlockRecord], **changes: object) -> NodeObservation:
    node = NodeObservation(
        index,
        True,
        True,
        max(blocks, default=0),
        blocks,
        {h: b.hash for h, b in blocks.items() if h <= 5},
    )
    return replace(node, **changes)  # type: ignore[arg-type]


def acknowledged(blocks: dict[int, BlockRecord]) -> dict[str, tuple[int, int]]:
    return {tx: (0, h) for h, b in blocks.items() for tx in b.transaction_hashes}


def checks(violations: Sequence[Violation]) -> set[str]:
    return {v.check for v in violations}


def test_checker_passes_four_identical_chains() -> None:
    blocks = chain(10)
    nodes = [observation(i, blocks) for i in range(4)]
    assert (
        check_run(
            nodes,
            target_height=10,
            genesis_hash=GENESIS,
            acknowledged=acknowledged(blocks),
            injections=[],
        )
        == []
    )


def test_positive_control_checker_reports_a_fork_and_a_diverged_app_hash() -> None:
    blocks = chain(10)
    forked = dict(blocks)
    # node2 committed another block 7 (and so another chain from there).
    forked.update({h: b for h, b in chain(10, salt="fork").items() if h >= 7})
    forked[7] = replace(forked[7], parent_hash=blocks[6].hash)
    diverged = dict(blocks)
    diverged[4] = replace(blocks[4], app_hash="ff" * 32)
    nodes = [
        observation(0, blocks),
        observation(1, blocks),
        observation(2, forked, served_during_run={}),
        observation(3, diverged, served_during_run={}),
    ]
    violations = check_run(
        nodes, target_height=10, genesis_hash=GENESIS, acknowledged={}, injections=[]
    )
    details = [v.detail for v in violations if v.check == "agreement"]
    assert any("different blocks at height 7" in d and "node2" in d for d in details), details
    assert any("different app hashes after height 3" in d and "node3" in d for d in details)
    assert checks(violations) == {"agreement"}


def test_positive_control_checker_reports_lost_blocks_missing_transactions_and_lag() -> None:
    blocks = chain(10)
    short = {h: b for h, b in blocks.items() if h <= 3}  # lost blocks 4..10 across a restart
    unlinked = dict(blocks)
    unlinked[5] = replace(blocks[5], parent_hash="ab" * 32)
    duplicated = dict(blocks)
    duplicated[9] = replace(blocks[9], transaction_hashes=blocks[2].transaction_hashes)
    nodes = [
        observation(0, blocks),
        observation(1, short, served_during_run={h: b.hash for h, b in blocks.items()}),
        observation(2, unlinked),
        observation(3, duplicated, reachable=False),
    ]
    violations = check_run(
        nodes,
        target_height=10,
        genesis_hash=GENESIS,
        acknowledged=acknowledged(blocks),
        injections=[],
    )
    assert checks(violations) == {
        "convergence",
        "durability",
        "acknowledged_missing",
        "chain_links",
        "unreachable",
    }
    (lost,) = [v.detail for v in violations if v.check == "acknowledged_missing"]
    assert lost.startswith("node1 lacks 14 transaction(s)")
    nodes[3] = replace(nodes[3], reachable=True)
    again = check_run(
        nodes[3:], target_height=10, genesis_hash=GENESIS, acknowledged={}, injections=[]
    )
    assert checks(again) == {"duplicate_transaction"}


def test_positive_control_checker_reports_evidence_problems() -> None:
    blocks = chain(6)
    injections = [InjectionRecord(3, 4, 0, "prepare"), InjectionRecord(3, 5, 0, "commit")]
    good = EvidenceRecord(3, 4, 0, "prepare", True)
    nodes = [
        observation(0, blocks, evidence=(good,)),
        observation(1, blocks, evidence=(good, EvidenceRecord(2, 5, 0, "commit", True))),
        observation(2, blocks, evidence=()),  # never reported the byzantine validator
        observation(3, blocks, honest=False, evidence=(EvidenceRecord(3, 6, 1, "commit", False),)),
    ]
    violations = check_run(
        nodes, target_height=6, genesis_hash=GENESIS, acknowledged={}, injections=injections
    )
    assert checks(violations) == {
        "honest_accused",
        "evidence_missing",
        "evidence_invalid",
        "evidence_unexplained",
    }
    (missing,) = [v.detail for v in violations if v.check == "evidence_missing"]
    assert "node2" in missing
    assert "2 conflicting statement(s)" in missing
    # With node2 reporting too and nobody else accused, the same run is clean.
    nodes[1] = replace(nodes[1], evidence=(good,))
    nodes[2] = replace(nodes[2], evidence=(EvidenceRecord(3, 5, 0, "commit", True),))
    nodes[3] = replace(nodes[3], evidence=())
    assert (
        check_run(
            nodes, target_height=6, genesis_hash=GENESIS, acknowledged={}, injections=injections
        )
        == []
    )


# ------------------------------------------------------------------------------------ scenarios


def test_shipped_scenarios_parse_and_are_valid() -> None:
    shipped = builtin_scenarios()
    assert {"kill-and-pause", "byzantine-double-vote", "everything"} <= set(shipped)
    for name in shipped:
        scenario = load_scenario(name)
        assert scenario.problems() == []
    everything = load_scenario("everything")
    assert {p.kind for p in everything.perturbations} == set(NODE_KINDS)
    assert [b.mode for b in everything.byzantine] == ["equivocate"]


def test_a_bad_scenario_file_names_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'validators = 4\nduration_s = 10\ncolour = "red"\n'
        '[[perturbation]]\nat_s = 1\nnode = 7\nkind = "explode"\nduration_s = 2\n'
        '[[perturbation]]\nat_s = 8\nnode = 1\nkind = "kill"\nduration_s = 5\n'
        '[[perturbation]]\nat_s = 8.5\nnode = 1\nkind = "pause"\nduration_s = 1\n'
        '[[byzantine]]\nnode = 0\nmode = "double_vote"\n'
        '[[byzantine]]\nnode = 1\nmode = "lie"\n'
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(str(path))
    assert caught.value.problems[0].startswith("top level: unknown key 'colour'")
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(path.read_text().replace('colour = "red"\n', ""), "bad.toml")
    text = "\n".join(caught.value.problems)
    for expected in (
        "perturbation 1: node 7 is not in 0..3",
        "perturbation 1: kind 'explode'",
        "perturbation 2: ends at 13s, after duration_s 10",
        "node 1: perturbations at 8s and 8.5s overlap",
        "byzantine node 1: mode 'lie'",
        "2 byzantine validators, but 4 validators tolerate at most 1",
    ):
        assert expected in text, text
    assert parse_scenario('duration_s = 5\nworkload = "demo"').workload == "demo"
    trusting = parse_scenario("duration_s = 5\ntrust_certified_blocks = true")
    assert trusting.trust_certified_blocks is True
    assert trusting.to_json()["trust_certified_blocks"] is True
    assert parse_scenario("duration_s = 5").trust_certified_blocks is False
    assert trusting.with_overrides(trust_certified_blocks=False).trust_certified_blocks is False
    assert trusting.with_overrides().trust_certified_blocks is True
    with pytest.raises(ScenarioError, match="trust_certified_blocks must be true or false"):
        parse_scenario('duration_s = 5\ntrust_certified_blocks = "yes"')
    for bad in (
        "validators = [",
        "duration_s = 'long'",
        "[[perturbation]]\nat_s = 1",
        'duration_s = 5\nworkload = "chess"',
    ):
        with pytest.raises(ScenarioError):
            parse_scenario(bad)
    with pytest.raises(ScenarioError, match="not a shipped scenario"):
        load_scenario("no-such-scenario")


def test_random_schedules_are_reproducible_valid_and_varied() -> None:
    first = random_scenario(7, duration_s=90)
    assert first == random_scenario(7, duration_s=90)
    assert first.problems() == []
    kinds: set[str] = set()
    modes: set[str] = set()
    for seed in range(40):
        scenario = random_scenario(seed, duration_s=60)
        assert scenario.problems() == []
        assert scenario.perturbations
        ordered = sorted(scenario.perturbations, key=lambda p: p.at_s)
        assert all(a.end_s < b.at_s for a, b in itertools.pairwise(ordered))
        kinds |= {p.kind for p in scenario.perturbations}
        modes |= {b.mode for b in scenario.byzantine}
    assert kinds == set(NODE_KINDS)
    assert modes == {"double_vote", "equivocate"}
    assert random_scenario(3, validators=3).byzantine == ()  # 3 validators tolerate none


def test_link_faults_parse_and_every_problem_is_named() -> None:
    text = (
        "validators = 4\nduration_s = 20\n"
        '[[perturbation]]\nat_s = 1\nnode = 0\npeer = 2\nkind = "cut"\nduration_s = 4\n'
        '[[perturbation]]\nat_s = 2\nnode = 1\npeer = 3\nkind = "cut"\nduration_s = 4\n'
        'direction = "node_to_peer"\n'
        '[[perturbation]]\nat_s = 8\nnode = 2\npeer = 0\nkind = "flap"\nduration_s = 5\n'
        '[[perturbation]]\nat_s = 9\nnode = 1\npeer = 3\nkind = "flap"\nduration_s = 5\n'
        "period_s = 1\n"
    )
    scenario = parse_scenario(text)
    assert scenario.needs_netns
    cut, one_way, flap, fast_flap = scenario.perturbations
    assert (cut.peer, cut.direction, cut.period_s) == (2, "both", 0.0)
    assert one_way.direction == "node_to_peer"
    assert one_way.describe() == "cut node1->node3"
    assert flap.period_s == 2.0  # the default cycle
    assert fast_flap.period_s == 1.0
    # A flap is cut in the first half of each cycle and whole after its end.
    assert [fast_flap.cut_at(t) for t in (8.9, 9.0, 9.4, 9.5, 9.9, 10.0, 13.6, 14.0)] == [
        False,
        True,
        True,
        False,
        False,
        True,
        False,
        False,
    ]
    assert [cut.cut_at(t) for t in (0.9, 1.0, 4.9, 5.0)] == [False, True, True, False]
    assert cut.to_json() == {
        "at_s": 1.0,
        "node": 0,
        "kind": "cut",
        "duration_s": 4.0,
        "peer": 2,
        "direction": "both",
    }
    assert flap.to_json()["period_s"] == 2.0
    assert not parse_scenario("duration_s = 5").needs_netns
    bad = (
        "validators = 4\nduration_s = 30\n"
        '[[perturbation]]\nat_s = 1\nnode = 0\nkind = "cut"\nduration_s = 2\n'
        '[[perturbation]]\nat_s = 4\nnode = 1\npeer = 1\nkind = "flap"\nduration_s = 2\n'
        "period_s = 0.1\n"
        '[[perturbation]]\nat_s = 7\nnode = 1\npeer = 9\nkind = "cut"\nduration_s = 2\n'
        'direction = "sideways"\n'
        '[[perturbation]]\nat_s = 10\nnode = 2\npeer = 1\nkind = "kill"\nduration_s = 2\n'
        '[[perturbation]]\nat_s = 13\nnode = 2\npeer = 3\nkind = "cut"\nduration_s = 5\n'
        "period_s = 1\n"
        '[[perturbation]]\nat_s = 14\nnode = 3\npeer = 2\nkind = "flap"\nduration_s = 2\n'
        '[[perturbation]]\nat_s = 14\nnode = 3\npeer = 0\nkind = "cut"\nduration_s = 2\n'
    )
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(bad)
    problems = "\n".join(caught.value.problems)
    for expected in (
        "perturbation 1: cut needs peer (the other end of the link)",
        "perturbation 2: peer 1 is the node itself",
        "perturbation 2: period_s must be at least 0.4",
        "perturbation 3: peer 9 is not in 0..3",
        "perturbation 3: direction 'sideways' is not one of ('both', 'node_to_peer')",
        "perturbation 4: peer applies only to link faults (cut, flap)",
        "perturbation 5: period_s only applies to flap",
        "link 2-3: perturbations at 13s and 14s overlap (one fault per link at a time)",
    ):
        assert expected in problems, problems
    # Faults on different links of one node may overlap; so may a link fault and a node fault.
    assert "link 0-3" not in problems
    assert len(caught.value.problems) == 8


def test_random_schedules_with_links_draw_link_faults_reproducibly() -> None:
    assert random_scenario(5, links=False) == random_scenario(5)  # links off: as before
    assert random_scenario(5, links=True) == random_scenario(5, links=True)
    kinds: set[str] = set()
    directions: set[str] = set()
    for seed in range(40):
        scenario = random_scenario(seed, duration_s=60, links=True)
        assert scenario.problems() == []
        for item in scenario.perturbations:
            kinds.add(item.kind)
            if item.is_link:
                assert item.peer is not None
                assert item.peer != item.node
                directions.add(item.direction)
    assert kinds == set(NODE_KINDS) | set(LINK_KINDS)
    assert directions == {"both", "node_to_peer"}
    assert not any(p.is_link for p in random_scenario(5, validators=1, links=True).perturbations)


def test_cut_checker_passes_sealed_cuts_and_reports_leaks() -> None:
    sealed = [CutRecord(0, 1, False, 0, 0), CutRecord(2, 3, True, 0, 40)]
    assert check_cuts(sealed) == []
    leaks = check_cuts([CutRecord(0, 1, False, 0, 3), CutRecord(2, 3, True, 7, 40)])
    assert [violation.check for violation in leaks] == ["cut_leaked", "cut_leaked"]
    assert "3 packet(s) went from node1 to node0" in leaks[0].detail
    assert "7 packet(s) went from node2 to node3" in leaks[1].detail


def test_link_faults_are_refused_without_netns_before_anything_starts(tmp_path: Path) -> None:
    scenario = parse_scenario(
        'duration_s = 9\n[[perturbation]]\nat_s = 1\nnode = 0\npeer = 1\nkind = "cut"\n'
        "duration_s = 2\n"
    )
    with pytest.raises(ValueError, match="needs each node in its own network namespace"):
        run_chaos(scenario, tmp_path / "net")
    assert not (tmp_path / "net").exists()
    path = tmp_path / "links.toml"
    path.write_text(
        'duration_s = 9\n[[perturbation]]\nat_s = 1\nnode = 0\npeer = 1\nkind = "flap"\n'
        "duration_s = 2\n"
    )
    result = CliRunner().invoke(
        main, ["testnet", "chaos", "--scenario", str(path), "--dir", str(tmp_path / "net")]
    )
    assert result.exit_code == 1
    assert "cuts links between nodes (cut/flap): add --netns" in result.output
    assert not (tmp_path / "net").exists()


def test_perturbation_json_round_trip_fields() -> None:
    item = Perturbation(1.5, 2, "pause", 3.0)
    assert item.end_s == 4.5
    assert item.to_json() == {"at_s": 1.5, "node": 2, "kind": "pause", "duration_s": 3.0}


# ------------------------------------------------------------------------------------ config


def test_testnet_section_is_never_rendered_for_operators_and_byzantine_needs_fault_hooks() -> None:
    operator = render_config(NodeConfig(moniker="bank"))
    assert "[testnet]" not in operator
    testnet = NodeConfig().with_changes("testnet", fault_hooks=True, byzantine="double_vote")
    text = render_config(testnet)
    assert "[testnet]" in text
    parsed, problems = parse_config(text.encode())
    assert problems == []
    assert parsed == testnet
    refused, problems = parse_config(b'[testnet]\nbyzantine = "double_vote"\n')
    assert refused is None
    assert [p.key for p in problems] == ["[testnet] byzantine"]
    _, problems = parse_config(b'[testnet]\nbyzantine = "lie"\n')
    assert problems[0].key == "[testnet] byzantine"
    _, problems = parse_config(
        b'[testnet]\nfault_hooks = true\nbyzantine = "equivocate"\n'
        b"byzantine_from_height = 9\nbyzantine_to_height = 3\n"
    )
    assert [p.key for p in problems] == ["[testnet] byzantine_to_height"]


# ------------------------------------------------------------------------------------ byzantine


def byzantine(mode: str, sent: list[bytes], *, validator: int = 3) -> Byzantine:
    config = TestnetConfig(
        fault_hooks=True, byzantine=mode, byzantine_from_height=2, byzantine_to_height=5
    )
    return Byzantine(
        config,
        key=VALIDATOR_KEYS[validator],
        chain_id=CHAIN,
        validator=validator,
        broadcast=sent.append,
    )


def test_double_voter_signs_a_conflicting_vote_that_is_valid_evidence() -> None:
    sent: list[bytes] = []
    driver = byzantine("double_vote", sent)
    for height in (1, 3, 6):
        for phase in Phase:
            vote = Vote.create(
                VALIDATOR_KEYS[3],
                CHAIN,
                phase=phase,
                height=height,
                view=1,
                block_hash=hash_bytes(b"block %d" % height),
                validator=3,
            )
            driver.after_broadcast(encode_message(vote))
            if height == 3:
                (conflict_bytes,) = sent
                sent.clear()
                conflict = decode_message(conflict_bytes)
                assert isinstance(conflict, Vote)
                assert (conflict.phase, conflict.height, conflict.view) == (phase, 3, 1)
                assert conflict.block_hash != vote.block_hash
                evidence = Evidence.of(
                    SignedStatement.of_vote(vote), SignedStatement.of_vote(conflict)
                )
                verify_evidence(evidence, VALIDATORS, CHAIN)
            else:
                assert sent == []  # outside the configured heights: honest
    assert [(i.height, i.kind) for i in driver.injections] == [(3, "prepare"), (3, "commit")]
    assert driver.to_json()["mode"] == "double_vote"


def test_equivocating_primary_signs_a_second_block_that_is_valid_evidence() -> None:
    sent: list[bytes] = []
    driver = byzantine("equivocate", sent, validator=0)
    block = Block.build(
        chain_id=CHAIN,
        height=4,
        view=0,
        parent_hash=bytes(32),
        app_hash=bytes(32),
        next_validators_hash=bytes(32),
        proposer=0,
        timestamp_ms=1_000,
        transactions=(b"tx",),
    )
    proposal = Proposal.create(VALIDATOR_KEYS[0], CHAIN, view=0, validator=0, block=block)
    vote = Vote.create(
        VALIDATOR_KEYS[0],
        CHAIN,
        phase=Phase.PREPARE,
        height=4,
        view=0,
        block_hash=block.hash,
        validator=0,
    )
    driver.after_broadcast(encode_message(vote))  # an equivocator votes honestly
    assert sent == []
    driver.after_broadcast(encode_message(proposal))
    (other_bytes,) = sent
    other = decode_message(other_bytes)
    assert isinstance(other, Proposal)
    assert (other.height, other.view) == (4, 0)
    assert other.block_hash != block.hash
    assert other.block.header.parent_hash == block.header.parent_hash
    evidence = Evidence.of(
        SignedStatement.of_proposal(proposal), SignedStatement.of_proposal(other)
    )
    verify_evidence(evidence, VALIDATORS, CHAIN)
    driver.after_broadcast(b"\x00garbage")  # never raises on bytes it cannot decode
    assert len(sent) == 1


# ------------------------------------------------------------------------------------ fault hooks


async def test_fault_hook_endpoints_block_and_restore_peers() -> None:
    network = Network(config_for(0))
    node_keys = [KEYS[i].public_key for i in range(4)]
    hooks = TestnetHooks(
        TestnetConfig(fault_hooks=True),
        network=network,
        node_keys=node_keys,
        validator=0,
        validator_key=VALIDATOR_KEYS[0],
        chain_id=CHAIN,
        consensus_kind=1,
    )

    async def api(request: Request) -> Response:
        return json_response(200, {"api": request.path})

    handler = hooks.wrap(api)

    async def call(method: str, path: str, body: bytes = b"") -> tuple[int, object]:
        response = await handler(Request(method, path, {}, {}, body))
        return response.status, json.loads(response.body)

    assert await call("GET", "/status") == (200, {"api": "/status"})
    assert await call("GET", "/admin/faults") == (
        200,
        {"blocked_peers": [], "byzantine": None},
    )
    status, document = await call("POST", "/admin/faults/disconnect", b"{}")
    assert status == 200
    assert document["blocked_peers"] == sorted(k.hex() for k in node_keys[1:])  # type: ignore[index]
    one = node_keys[2].hex()
    status, document = await call(
        "POST", "/admin/faults/disconnect", json.dumps({"peers": [one]}).encode()
    )
    assert (status, document["blocked_peers"]) == (200, [one])  # type: ignore[index]
    for body in (
        b"[1]",
        b"{not json",
        b'{"peers": "x"}',
        b'{"peers": ["zz"]}',
        b'{"other": 1}',
        json.dumps({"peers": [node_keys[0].hex()]}).encode(),
    ):
        status, _ = await call("POST", "/admin/faults/disconnect", body)
        assert status == 400, body
    assert (await call("GET", "/admin/faults/disconnect"))[0] == 405
    assert (await call("POST", "/admin/faults"))[0] == 405
    assert (await call("POST", "/admin/faults/explode"))[0] == 404
    status, document = await call("POST", "/admin/faults/restore")
    assert (status, document["blocked_peers"]) == (200, [])  # type: ignore[index]


async def test_blocked_peers_are_cut_off_until_unblocked() -> None:
    async with mesh(3) as (_, nodes):
        others = [KEYS[1].public_key, KEYS[2].public_key]
        nodes[0].network.set_blocked_peers(others)
        await wait_for(lambda: nodes[0].network.statistics().peers_connected == 0)
        # The others keep redialling and are refused while blocked.
        refused = nodes[0].network.statistics().handshake_failures
        await wait_for(
            lambda: (
                nodes[0].network.statistics().handshake_failures.get("unknown_peer", 0)
                > refused.get("unknown_peer", 0) + 2
            )
        )
        assert nodes[0].network.statistics().peers_connected == 0
        # node1 and node2 stay linked (node1 may briefly count a dial that node0 then refuses).
        assert KEYS[2].public_key in {peer.public_key for peer in nodes[1].network.peers()}
        nodes[0].network.set_blocked_peers(())
        with trio.fail_after(30):
            await nodes[0].network.wait_peers_connected(others)
