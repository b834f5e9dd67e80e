"""Validator-set changes in the replica: joins, leaves, key rotations and observers, as stories.

Each story runs the real ``Replica`` in the deterministic harness with a validator schedule
(``Cluster(schedule=...)``): the set in force at each height, as the chain would decide it, fed
to every replica through ``BlockExecuted(next_validators=...)``. Certificates of height h must
verify against the set of h, and only against it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.crypto import PrivateKey, hash_bytes
from consensus.messages import BlockResponse, Proposal, encode_message
from consensus.replica import (
    BlockExecuted,
    ChainTip,
    Commit,
    Dropped,
    DropReason,
    Input,
    PeerMessage,
    PlantedBug,
    Replica,
    ReplicaConfig,
    RequestBlocks,
    RestoreError,
    Start,
    Tick,
)
from consensus.types import (
    Block,
    CertificateError,
    CommitCertificate,
    Phase,
    Validator,
    ValidatorSchedule,
    ValidatorSet,
    Vote,
    verify_certificate,
)
from tests.consensus_harness import (
    CHAIN_ID,
    GENESIS_APP_HASH,
    GENESIS_HASH,
    GENESIS_TIME_MS,
    Cluster,
    make_keys,
    make_validators,
    next_app_hash,
    node_key,
)


def rotated_key(node: int) -> PrivateKey:
    """The key node ``node`` rotates to."""
    return PrivateKey(hash_bytes(f"rotated-{node}".encode()))


def with_key(validators: ValidatorSet, index: int, key: PrivateKey) -> ValidatorSet:
    """``validators`` with validator ``index``'s consensus key replaced."""
    members = list(validators.validators)
    members[index] = replace(members[index], public_key=key.public_key)
    return ValidatorSet(tuple(members))


def without(validators: ValidatorSet, index: int) -> ValidatorSet:
    """``validators`` without validator ``index`` (later ones move down one index)."""
    return ValidatorSet(tuple(v for i, v in enumerate(validators.validators) if i != index))


def with_node(validators: ValidatorSet, node: int) -> ValidatorSet:
    """``validators`` plus harness node ``node``'s genesis key at the end."""
    key = make_keys(node + 1)[node]
    added = Validator(f"v{node}", key.public_key, node_key(node))
    return ValidatorSet((*validators.validators, added))


def signed_heights(cluster: Cluster, node: int, phase: Phase) -> set[int]:
    """Heights at which ``node`` sent a vote of ``phase``."""
    return {
        message.height
        for message in cluster.nodes[node].sent
        if isinstance(message, Vote) and message.phase is phase
    }


def assert_chains_match(cluster: Cluster, height: int) -> None:
    cluster.assert_agreement()
    hashes = {tuple(block.hash for block, _ in node.chain[:height]) for node in cluster.nodes}
    assert len(hashes) == 1


def test_a_fifth_validator_joins_at_its_height_and_votes_from_there() -> None:
    """Four validators; node 4 follows as an observer. The chain decides (here: the schedule
    says) that the set of height 5 has five validators: node 4 votes from height 5, never
    before, and every certificate verifies against its own height's set only."""
    five = with_node(make_validators(make_keys(4)), 4)
    cluster = Cluster(4, observers=1, schedule=lambda genesis: genesis.with_change(5, five))
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(10))
    assert_chains_match(cluster, 10)
    commits = signed_heights(cluster, 4, Phase.COMMIT)
    assert commits, "the new validator votes once it is in the set"
    assert min(commits) >= 5
    with_newcomer = [
        (block, certificate)
        for block, certificate in cluster.nodes[0].chain[4:]
        if any(signer == 4 for signer, _ in certificate.signatures)
    ]
    assert with_newcomer, "some certificate from height 5 carries the new validator's commit"
    block, certificate = with_newcomer[0]
    verify_certificate(certificate, five, CHAIN_ID, block_hash=block.hash, height=block.height)
    with pytest.raises(CertificateError):
        verify_certificate(
            certificate, cluster.validators, CHAIN_ID, block_hash=block.hash, height=block.height
        )
    # The header of height 4 announced the five; the header of height 3 still the four.
    assert cluster.nodes[0].chain[3][0].header.next_validators_hash == five.hash()
    assert cluster.nodes[0].chain[2][0].header.next_validators_hash == cluster.validators.hash()


def test_a_removed_validator_stops_voting_and_keeps_following() -> None:
    """Validator 3 leaves at height 4: it signs nothing from height 4 on, yet commits every
    block as an observer; the three others carry on (n = 3, quorum 2)."""
    cluster = Cluster(
        4, schedule=lambda genesis: genesis.with_change(4, without(genesis.genesis, 3))
    )
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(9))
    assert_chains_match(cluster, 9)
    assert signed_heights(cluster, 3, Phase.PREPARE) <= {1, 2, 3}
    assert cluster.nodes[3].replica.index is None
    assert not cluster.nodes[3].replica.status().voting


def test_a_rotated_key_takes_over_at_its_height_without_a_restart() -> None:
    """Node 2 holds its next key as a standby key. From height 4 the chain's set carries the new
    key: node 2 signs with it there and with the old key before; old-key signatures of height
    4 or later would not verify."""
    new_key = rotated_key(2)
    cluster = Cluster(
        4,
        standby={2: [new_key]},
        schedule=lambda genesis: genesis.with_change(4, with_key(genesis.genesis, 2, new_key)),
    )
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(8))
    assert_chains_match(cluster, 8)
    votes = [m for m in cluster.nodes[2].sent if isinstance(m, Vote)]
    old_set, new_set = cluster.schedule.at(3), cluster.schedule.at(4)
    for message in votes:
        validators = new_set if message.height >= 4 else old_set
        assert message.signature_valid(validators, CHAIN_ID), message
    assert any(message.height >= 4 for message in votes)


def test_a_proposal_naming_another_next_validator_set_is_refused() -> None:
    """The header commits to the next height's set; a primary that names another (say, one
    that leaves out a validator it dislikes) gets no prepare."""
    cluster = Cluster(4)
    cluster.start()
    replica = cluster.nodes[0].replica
    block = Block.build(
        chain_id=CHAIN_ID,
        height=1,
        view=0,
        parent_hash=GENESIS_HASH,
        app_hash=GENESIS_APP_HASH,
        next_validators_hash=without(cluster.validators, 3).hash(),
        proposer=1,
        timestamp_ms=cluster.now_ms,
        transactions=(),
    )
    message = Proposal.create(cluster.keys[1], CHAIN_ID, view=0, validator=1, block=block)
    actions = replica.handle(PeerMessage(encode_message(message), 1))
    dropped = [a for a in actions if isinstance(a, Dropped)]
    assert [a.reason for a in dropped] == [DropReason.INVALID_PROPOSAL]
    assert "next_validators_hash" in dropped[0].detail


def test_an_observer_follows_the_chain_and_never_signs() -> None:
    """A node whose key is in no set commits every block from the validators' votes and
    never sends a signed message."""
    cluster = Cluster(4, observers=1)
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(6))
    assert_chains_match(cluster, 6)
    assert cluster.nodes[4].sent == []
    assert cluster.nodes[4].persisted is None


def test_a_node_away_across_every_key_rotation_catches_up_by_block_sync() -> None:
    """Node 3 is down while all three other validators rotate their keys, one at a time: when
    it returns, no key it knows still signs, yet the (unverifiable to it) messages of the
    others tell it it is behind, and it syncs, verifying each block against its own set."""
    keys = {i: rotated_key(i) for i in range(3)}

    def schedule(genesis: ValidatorSchedule) -> ValidatorSchedule:
        current = genesis.genesis
        for step, index in enumerate(range(3)):
            current = with_key(current, index, keys[index])
            genesis = genesis.with_change(4 + 2 * step, current)
        return genesis

    cluster = Cluster(4, standby={i: [keys[i]] for i in range(3)}, schedule=schedule)
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(2))
    cluster.crash(3)
    cluster.run_until(lambda: cluster.all_reached(12, nodes=[0, 1, 2]))
    cluster.restart(3)
    cluster.run_until(lambda: cluster.all_reached(14))
    assert_chains_match(cluster, 14)


def test_certificates_are_checked_against_the_set_of_their_own_height() -> None:
    """The set changes at height 3 (validator 0's key rotates). A certificate for height 3
    signed by the old set's keys is refused by block sync, even though it verifies against the
    set the replica knew when it arrived; with the planted bug it is committed: the fork the
    bug lets a holder of retired keys make."""
    assert forged_sync(ReplicaConfig()) is None
    bug = frozenset({PlantedBug.SYNC_CERTIFICATE_AGAINST_CURRENT_SET})
    assert forged_sync(ReplicaConfig(planted_bugs=bug)) is not None


def forged_sync(config: ReplicaConfig) -> Block | None:
    """A fresh replica (validator 3, at height 1) is offered blocks 1 and 2 as committed, and a
    block 3 certified by the old keys of validators 0, 1 and 2. Returns block 3 if it was
    committed (it is not the chain's block 3, which the new set certified)."""
    keys = make_keys(4)
    genesis = make_validators(keys)
    new_key = rotated_key(0)
    schedule = ValidatorSchedule(genesis).with_change(3, with_key(genesis, 0, new_key))
    replica = Replica(
        config,
        chain_id=CHAIN_ID,
        validators=schedule.at(1),
        next_validators=schedule.at(2),
        key=keys[3],
        tip=ChainTip(0, GENESIS_HASH, GENESIS_APP_HASH, 1_000),
    )
    replica.handle(Start(2_000))
    # Blocks 1 and 2 carry genuine signatures of the set in force; block 3 the old keys.
    entries = certified_blocks(
        schedule, range(1, 4), lambda height: [keys[0], keys[1], keys[2]], forged=frozenset({3})
    )
    committed: list[Block] = []
    pending: list[Input] = [PeerMessage(encode_message(BlockResponse(tuple(entries))), 0)]
    app = GENESIS_APP_HASH
    while pending:
        for action in replica.handle(pending.pop(0)):
            if isinstance(action, Commit):
                committed.append(action.block)
                app = next_app_hash(app, action.block)
                height = action.block.height
                pending.append(BlockExecuted(height, app, schedule.at(height + 2)))
    assert [block.height for block in committed[:2]] == [1, 2]
    return committed[2] if len(committed) == 3 else None


def certified_blocks(
    schedule: ValidatorSchedule,
    heights: range,
    signers_at: Callable[[int], list[PrivateKey]],
    *,
    forged: frozenset[int] = frozenset(),
) -> list[tuple[Block, CommitCertificate]]:
    """A chain from genesis over ``heights`` (from 1), each block naming the next set of
    ``schedule`` and certified by commit votes of ``signers_at(height)`` (validators 0, 1, ...);
    the blocks at heights in ``forged`` carry other transactions than the chain's."""
    entries: list[tuple[Block, CommitCertificate]] = []
    parent, app_hash, time_ms = GENESIS_HASH, GENESIS_APP_HASH, 1_000
    for height in heights:
        time_ms += 10
        block = Block.build(
            chain_id=CHAIN_ID,
            height=height,
            view=0,
            parent_hash=parent,
            app_hash=app_hash,
            next_validators_hash=schedule.at(height + 1).hash(),
            proposer=height % 4,
            timestamp_ms=time_ms,
            transactions=(b"forged" if height in forged else b"real",),
        )
        votes = [
            Vote.create(
                key,
                CHAIN_ID,
                phase=Phase.COMMIT,
                height=height,
                view=0,
                block_hash=block.hash,
                validator=index,
            )
            for index, key in enumerate(signers_at(height))
        ]
        entries.append((block, CommitCertificate.from_votes(votes)))
        parent, app_hash = block.hash, next_app_hash(app_hash, block)
    return entries


def test_a_cut_sync_batch_is_not_extended_into_heights_whose_set_is_unknown() -> None:
    """Validator 3 of 4 (batches of 8) sees the others at height 20 and asks for blocks 1-8.
    The set changes at 5 (validator 0's key rotates), so blocks 5 and 6 of the answer cannot be
    checked yet and the batch is cut to 4. While 1-4 are applied it does not ask for the blocks
    after them (the set of 5 is known only once 3 is executed); once they are, it asks for 5
    on, and applies them against their own set."""
    keys = make_keys(4)
    genesis = make_validators(keys)
    new_key = rotated_key(0)
    schedule = ValidatorSchedule(genesis).with_change(5, with_key(genesis, 0, new_key))
    replica = Replica(
        ReplicaConfig(sync_blocks_max=8, sync_retry_ms=60_000),
        chain_id=CHAIN_ID,
        validators=schedule.at(1),
        next_validators=schedule.at(2),
        key=keys[3],
        tip=ChainTip(0, GENESIS_HASH, GENESIS_APP_HASH, 1_000),
    )
    chain = certified_blocks(
        schedule,
        range(1, 9),
        lambda height: [new_key if height >= 5 else keys[0], keys[1], keys[2]],
    )
    now_ms = 2_000
    pending: list[Input] = [Start(now_ms)]
    for index in range(3):
        vote = Vote.create(
            keys[index],
            CHAIN_ID,
            phase=Phase.COMMIT,
            height=20,
            view=0,
            block_hash=bytes(32),
            validator=index,
        )
        pending.append(PeerMessage(encode_message(vote), index))
    pending.append(Tick(now_ms + 1))
    committed = 0
    app = GENESIS_APP_HASH
    requests: list[tuple[int, int, int]] = []
    unknown: list[Dropped] = []

    def run() -> None:
        nonlocal committed, app
        while pending:
            for action in replica.handle(pending.pop(0)):
                if isinstance(action, RequestBlocks):
                    requests.append((committed, action.from_height, action.to_height))
                elif isinstance(action, Dropped) and action.reason is DropReason.VALIDATORS_UNKNOWN:
                    unknown.append(action)
                elif isinstance(action, Commit):
                    committed += 1
                    app = next_app_hash(app, action.block)
                    height = action.block.height
                    pending.append(BlockExecuted(height, app, schedule.at(height + 2)))

    run()
    assert requests == [(0, 1, 8)]
    pending.append(PeerMessage(encode_message(BlockResponse(tuple(chain[:6]))), 0))
    run()
    assert committed == 4
    assert len(unknown) == 2, unknown
    assert requests == [(0, 1, 8)], "asked for blocks whose set it could not know yet"
    pending.append(Tick(now_ms + 2))
    run()
    assert requests[1:] == [(4, 5, 12)]
    pending.append(PeerMessage(encode_message(BlockResponse(tuple(chain[4:]))), 1))
    run()
    assert committed == 8
    # Every request asked only from a height whose set was known (its parent's parent executed).
    assert all(first <= done + 2 for done, first, _ in requests)


# -- property: any schedule of one-at-a-time changes, under any delivery order and faults ------

CHANGES = ("join", "leave", "rotate")


def draw_schedule(genesis: ValidatorSchedule, plan: list[tuple[str, int]]) -> ValidatorSchedule:
    """Apply ``plan`` (change kind, choice) one change every two heights from height 3, as
    membership allows: one validator at a time, never below one validator. Joining nodes are
    the observers 4 and 5; rotations use each node's rotated key."""
    current = genesis.genesis
    schedule = genesis
    joined = 4
    for step, (kind, choice) in enumerate(plan):
        height = 3 + 2 * step
        if kind == "join" and joined <= 5:
            current = with_node(current, joined)
            joined += 1
        elif kind == "leave" and current.size > 1:
            current = without(current, choice % current.size)
        elif kind == "rotate":
            index = choice % current.size
            node = int(current.validators[index].name[1:])
            if current.public_key(index) != rotated_key(node).public_key:
                current = with_key(current, index, rotated_key(node))
        schedule = schedule.with_change(height, current)
    return schedule


@settings(max_examples=10, deadline=None)
@given(
    plan=st.lists(
        st.tuples(st.sampled_from(CHANGES), st.integers(min_value=0, max_value=7)),
        min_size=1,
        max_size=4,
    ),
    seed=st.integers(min_value=0, max_value=2**32),
    drop_every=st.sampled_from([0, 7, 13]),
    crash=st.one_of(st.none(), st.integers(min_value=0, max_value=5)),
)
def test_no_fork_and_progress_under_any_change_schedule(
    plan: list[tuple[str, int]], seed: int, drop_every: int, crash: int | None
) -> None:
    """Four genesis validators and two observers that may join; validators leave and rotate
    keys one at a time, every two heights. Messages are delivered in a random order, some are
    lost, one node may be down for a while. Every node commits the same blocks, every
    certificate verifies against its own height's set, and the chain reaches height 12."""
    cluster = Cluster(
        4,
        observers=2,
        seed=seed,
        standby={node: [rotated_key(node)] for node in range(6)},
        schedule=lambda genesis: draw_schedule(genesis, plan),
    )
    cluster.drop_every = drop_every
    cluster.start()
    if crash is not None:
        cluster.run_until(lambda: cluster.all_reached(2), max_ms=600_000)
        cluster.crash(crash)
        cluster.run_for(3_000)
        cluster.restart(crash)
    cluster.run_until(lambda: cluster.all_reached(12), max_ms=900_000)
    assert_chains_match(cluster, 12)


def test_restore_after_rotation_ignores_old_state_signed_with_the_retired_key() -> None:
    """A node rotated its key and caught up past the rotation without signing anything: its
    last persisted state is from before, signed with the key it no longer holds. That state is
    obsolete and must not stop the node from starting; state it would still act on must be its
    own."""
    cluster = Cluster(4)
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(3))
    node = cluster.nodes[0]
    assert node.persisted is not None
    successor = rotated_key(0)
    tip = node.tip()
    restored = Replica.restore(
        cluster.config,
        chain_id=CHAIN_ID,
        validators=cluster.validators,
        key=successor,
        tip=replace(tip, height=tip.height + 10),
        state=node.persisted,
    )
    assert restored.status().height == tip.height + 11
    with pytest.raises(RestoreError, match="key this replica does not hold"):
        Replica.restore(
            cluster.config,
            chain_id=CHAIN_ID,
            validators=cluster.validators,
            key=successor,
            tip=ChainTip(0, GENESIS_HASH, GENESIS_APP_HASH, GENESIS_TIME_MS),
            state=node.persisted,
        )
