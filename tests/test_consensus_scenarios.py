"""Consensus scenarios, told as stories and run through the in-test harness."""

from __future__ import annotations

from typing import Any

import pytest

from consensus.crypto import hash_bytes
from consensus.evidence import StatementKind, verify_evidence
from consensus.messages import NewView, Proposal, encode_block_response, encode_message
from consensus.replica import (
    Action,
    BlockExecuted,
    ChainTip,
    Commit,
    Dropped,
    DropReason,
    PeerMessage,
    Replica,
    ReplicaConfig,
    RequestBlocks,
    Start,
    SyncedBlock,
    Tick,
    primary_index,
)
from consensus.types import Block, CommitCertificate, Phase, Vote
from tests.consensus_harness import (
    CHAIN_ID,
    GENESIS_APP_HASH,
    GENESIS_HASH,
    GENESIS_TIME_MS,
    Cluster,
    Node,
    next_app_hash,
    proposal,
    vote,
)


def build_block(cluster: Cluster, *, height: int, view: int, proposer: int, tag: bytes) -> Block:
    """A block for ``height`` on top of the first replica's chain (as a byzantine would build)."""
    node = cluster.nodes[0]
    parent = node.chain[height - 2][0].hash if height > 1 else GENESIS_HASH
    app_hash = node.app_hash if height > 1 else GENESIS_APP_HASH
    parent_time = node.chain[height - 2][0].header.timestamp_ms if height > 1 else GENESIS_TIME_MS
    return Block.build(
        chain_id=CHAIN_ID,
        height=height,
        view=view,
        parent_hash=parent,
        app_hash=app_hash,
        next_validators_hash=cluster.validators.hash(),
        proposer=proposer,
        timestamp_ms=max(cluster.now_ms, parent_time + 1),
        transactions=(tag,),
    )


def fresh_replica(cluster: Cluster, config: ReplicaConfig | None = None) -> Replica:
    """A replica of validator 3 of ``cluster``'s genesis set, started at genesis (its chain
    is built by the cluster's replicas, which the tests hand to it)."""
    replica = Replica(
        config or ReplicaConfig(),
        chain_id=CHAIN_ID,
        validators=cluster.validators,
        next_validators=cluster.validators,
        key=cluster.keys[3],
        tip=ChainTip(0, GENESIS_HASH, GENESIS_APP_HASH, GENESIS_TIME_MS),
    )
    replica.handle(Start(GENESIS_TIME_MS))
    return replica


def commit_votes(cluster: Cluster, block: Block) -> list[Vote]:
    """Validators 0-2's commit votes for ``block`` in its own view (a quorum of four)."""
    return [
        vote(
            cluster,
            Phase.COMMIT,
            height=block.height,
            view=block.header.view,
            block_hash=block.hash,
            validator=i,
        )
        for i in range(3)
    ]


@pytest.mark.parametrize("n", [1, 4, 7])
def test_validators_commit_ten_heights_in_order(n: int) -> None:
    cluster = Cluster(n)
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(10))
    cluster.assert_agreement()
    chain = cluster.nodes[0].chain
    app_hash = GENESIS_APP_HASH
    parent = GENESIS_HASH
    for block, _ in chain[:10]:
        # Each block carries its parent's hash and the state after its parent.
        assert block.header.parent_hash == parent
        assert block.header.app_hash == app_hash
        parent = block.hash
        from tests.consensus_harness import next_app_hash

        app_hash = next_app_hash(app_hash, block)
    timestamps = [block.header.timestamp_ms for block, _ in chain]
    assert timestamps == sorted(set(timestamps)), "timestamps strictly increase"
    # The primary rotates with the height, and with no faults every block commits in view 0.
    assert [b.header.proposer for b, _ in chain[:n]] == [(h + 1) % n for h in range(n)]
    assert all(certificate.view == 0 for _, certificate in chain)


def test_primary_crashes_the_others_change_view_and_commit() -> None:
    cluster = Cluster(4)
    crashed = primary_index(cluster.validators, 1, 0)
    cluster.crash(crashed)
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(3))
    cluster.assert_agreement()
    first_block, certificate = cluster.nodes[(crashed + 1) % 4].chain[0]
    # Height 1 needed a view change; its block came from the primary of view 1.
    assert certificate.view == 1
    assert first_block.header.proposer == primary_index(cluster.validators, 1, 1)
    # The crashed validator restarts and catches up by block sync.
    cluster.restart(crashed)
    cluster.run_until(lambda: cluster.all_reached(5, nodes=[0, 1, 2, 3]))
    cluster.assert_agreement()


def test_equivocating_primary_commits_nothing_conflicting_and_is_reported() -> None:
    cluster = Cluster(4)
    byzantine = primary_index(cluster.validators, 1, 0)
    honest = [i for i in range(4) if i != byzantine]
    cluster.crash(byzantine)  # its replica is replaced by hand-made messages
    cluster.start()
    key = cluster.keys[byzantine]
    block_a = build_block(cluster, height=1, view=0, proposer=byzantine, tag=b"A")
    block_b = build_block(cluster, height=1, view=0, proposer=byzantine, tag=b"B")
    proposal_a = Proposal.create(key, CHAIN_ID, view=0, validator=byzantine, block=block_a)
    proposal_b = Proposal.create(key, CHAIN_ID, view=0, validator=byzantine, block=block_b)
    # A goes to the first honest replica, then B to everyone (so the first one sees both).
    cluster.feed(honest[0], PeerMessage(encode_message(proposal_a), byzantine))
    for index in honest:
        cluster.feed(index, PeerMessage(encode_message(proposal_b), byzantine))
    # The byzantine validator also prepares and commits both blocks, to everyone.
    for block in (block_a, block_b):
        for phase in (Phase.PREPARE, Phase.COMMIT):
            vote = Vote.create(
                key,
                CHAIN_ID,
                phase=phase,
                height=1,
                view=0,
                block_hash=block.hash,
                validator=byzantine,
            )
            for index in honest:
                cluster.feed(index, PeerMessage(encode_message(vote), byzantine))
    cluster.run_until(lambda: cluster.all_reached(3, nodes=honest))
    cluster.assert_agreement()
    reporter = cluster.nodes[honest[0]]
    proposal_evidence = [e for e in reporter.evidence if e.kind is StatementKind.PROPOSAL]
    assert len(proposal_evidence) == 1, "the double proposal is reported exactly once"
    for node in cluster.nodes:
        for evidence in node.evidence:
            assert evidence.validator == byzantine
            verify_evidence(evidence, cluster.validators, CHAIN_ID)
    # Re-delivering the conflicting proposal does not report it again.
    cluster.feed(honest[0], PeerMessage(encode_message(proposal_a), byzantine))
    assert len([e for e in reporter.evidence if e.kind is StatementKind.PROPOSAL]) == 1


def test_replica_restored_mid_height_does_not_vote_twice() -> None:
    cluster = Cluster(4)
    primary = primary_index(cluster.validators, 1, 0)
    victim = (primary + 1) % 4
    # Hold every message between replicas: the victim alone sees the proposal.
    cluster.deliver_filter = lambda sender, receiver, message: False
    cluster.start()
    cluster.tick()  # the primary gets its payload and broadcasts its proposal
    held_proposal = next(
        data
        for sender, receiver, data in cluster.held + cluster.queue
        if sender == primary and receiver == victim
    )
    cluster.held.clear()
    cluster.queue.clear()
    cluster.feed(victim, PeerMessage(held_proposal, primary))
    prepares = [m for m in cluster.nodes[victim].sent if isinstance(m, Vote)]
    assert [v.phase for v in prepares] == [Phase.PREPARE]
    first_vote = prepares[0]

    # Crash and restore from the persisted state; a byzantine primary now offers another block.
    cluster.crash(victim)
    cluster.nodes[victim].sent.clear()
    cluster.restart(victim)
    resent = [m for m in cluster.nodes[victim].sent if isinstance(m, Vote)]
    assert resent == [first_vote], "the restored replica re-sends the very same vote"
    other = build_block(cluster, height=1, view=0, proposer=primary, tag=b"other")
    forged = Proposal.create(
        cluster.keys[primary], CHAIN_ID, view=0, validator=primary, block=other
    )
    cluster.nodes[victim].sent.clear()
    cluster.feed(victim, PeerMessage(encode_message(forged), primary))  # validated as well
    assert not [m for m in cluster.nodes[victim].sent if isinstance(m, Vote)], (
        "no second prepare in (height 1, view 0, prepare)"
    )


def test_duplicated_and_reordered_messages_change_nothing() -> None:
    cluster = Cluster(4, seed=7)
    seen: set[tuple[int, int, bytes]] = set()

    def duplicate(sender: int, receiver: int, message: object) -> bool:
        # Every message is delivered twice: once now, once later in random order.
        key = (sender, receiver, encode_message(message))  # type: ignore[arg-type]
        if key not in seen:
            seen.add(key)
            cluster.queue.append(key)
        return True

    cluster.deliver_filter = duplicate
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(6))
    cluster.assert_agreement()
    reasons = {d.reason for node in cluster.nodes for d in node.dropped}
    assert DropReason.DUPLICATE in reasons


def test_invalid_block_is_never_prepared_and_the_next_view_commits() -> None:
    config = ReplicaConfig()
    bad = primary_index(Cluster(4).validators, 1, 0)
    cluster = Cluster(
        4,
        config=config,
        invalid_blocks=lambda block: block.height == 1 and block.header.proposer == bad,
    )
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(2))
    cluster.assert_agreement()
    assert cluster.nodes[0].chain[0][0].header.proposer != bad


def test_malformed_and_forged_input_is_dropped_without_changing_state() -> None:
    cluster = Cluster(4)
    cluster.start()
    replica = cluster.nodes[0].replica
    before = replica.status()
    garbage = [b"", b"\xc1", b"\x93\x01\x02\x03", b"\x91\x09", b"\x92\x02\xc0"]
    for data in garbage:
        actions = replica.handle(PeerMessage(data, 1))
        assert [type(a).__name__ for a in actions] == ["Dropped"]
    # A proposal signed by the wrong validator, and one far in the future.
    primary = primary_index(cluster.validators, 1, 0)
    block = build_block(cluster, height=1, view=0, proposer=primary, tag=b"x")
    wrong_signer = Proposal.create(
        cluster.keys[2], CHAIN_ID, view=0, validator=primary, block=block
    )
    actions = replica.handle(PeerMessage(encode_message(wrong_signer), primary))
    assert [a.reason for a in actions] == [DropReason.BAD_SIGNATURE]  # type: ignore[union-attr]
    late = Block.build(
        chain_id=CHAIN_ID,
        height=1,
        view=0,
        parent_hash=GENESIS_HASH,
        app_hash=GENESIS_APP_HASH,
        next_validators_hash=cluster.validators.hash(),
        proposer=primary,
        timestamp_ms=cluster.now_ms + 3_600_000,
        transactions=(),
    )
    future = Proposal.create(cluster.keys[primary], CHAIN_ID, view=0, validator=primary, block=late)
    actions = replica.handle(PeerMessage(encode_message(future), primary))
    assert [a.reason for a in actions] == [DropReason.INVALID_PROPOSAL]  # type: ignore[union-attr]
    assert replica.status() == before


def test_new_view_must_re_propose_the_prepared_block() -> None:
    """A new primary that proposes a fresh block despite a prepared certificate is refused."""
    cluster = Cluster(4)
    primary_1 = primary_index(cluster.validators, 1, 1)
    # Commits never arrive in view 0, so height 1 prepares everywhere but cannot commit.
    cluster.deliver_filter = lambda s, r, m: (
        not (isinstance(m, Vote) and m.phase is Phase.COMMIT and m.view == 0)
    )
    cluster.start()
    cluster.run_until(lambda: all(n.replica.status().view >= 1 for n in cluster.nodes))
    cluster.deliver_filter = None
    cluster.run_until(lambda: cluster.all_reached(2))
    cluster.assert_agreement()
    first, certificate = cluster.nodes[0].chain[0]
    assert certificate.view >= 1
    assert first.header.view == 0, "the block prepared in view 0 was re-proposed, not replaced"
    new_views = [m for m in cluster.nodes[primary_1].sent if isinstance(m, NewView)]
    assert new_views
    assert new_views[0].proposal.block.hash == first.hash


def test_far_behind_replica_fetches_batch_after_batch_without_waiting_the_retry() -> None:
    # Batches of 8 blocks and a one-minute retry: a laggard 30 heights behind needs four
    # batches, and must ask for each as soon as the previous one is applied.
    config = ReplicaConfig(sync_blocks_max=8, sync_retry_ms=60_000)
    cluster = RequestRecorder(4, config=config)
    laggard = 3
    cluster.crash(laggard)
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(30, nodes=[0, 1, 2]))
    cluster.restart(laggard)
    cluster.run_until(lambda: cluster.all_reached(32), max_ms=30_000)
    cluster.assert_agreement()
    requests = cluster.requests[laggard]
    # Each next batch is asked for while less than half of the answered one is left to apply,
    # so it arrives before that runs out: never beyond what a replica keeps (8 heights above
    # its own), and never a block twice.
    ahead = [(applied, first) for applied, first, _ in requests if first > applied + 1]
    assert ahead, requests
    assert all(first <= applied + 1 + 4 for applied, first in ahead), requests
    assert all(last <= applied + 8 for applied, _, last in requests), requests
    asked = [height for _, first, last in requests for height in range(first, last + 1)]
    assert len(asked) == len(set(asked)), requests
    assert not [d for d in cluster.nodes[laggard].dropped if d.reason is DropReason.DUPLICATE]
    # More than half of the 30 synced blocks came with the certified next block's app hash
    # (the harness checks each against the state the block leaves: the first of each answer
    # gets none); the nodes that never fell behind got none.
    assert cluster.nodes[laggard].hints > 15
    assert [cluster.nodes[i].hints for i in range(3)] == [0, 0, 0]


def test_a_sync_hint_needs_the_next_block_held_linked_and_certified_by_its_set() -> None:
    """``Commit.next_app_hash`` comes only from a held block of the next height that links
    to the committed block and whose certificate its own height's set verified."""
    cluster = Cluster(4)
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(3, nodes=[0, 1, 2, 3]))
    chain = cluster.nodes[0].chain
    (first, first_cert), (second, second_cert), (third, third_cert) = chain[:3]

    def fresh() -> Replica:
        return fresh_replica(cluster)

    def commits(replica: Replica, *entries: tuple[Block, CommitCertificate]) -> list[Commit]:
        data = encode_block_response(list(entries))
        return [a for a in replica.handle(PeerMessage(data, 0)) if isinstance(a, Commit)]

    # Applied as it arrives: nothing held after it yet.
    assert [c.next_app_hash for c in commits(fresh(), (first, first_cert))] == [None]
    # Block 2 arrives held (block 1 first applies with no hint: it is the first of the answer)
    # and block 1's successor is in hand once block 2 is: feed 2 before 1.
    replica = fresh()
    assert commits(replica, (second, second_cert)) == []
    (commit,) = commits(replica, (first, first_cert))
    assert commit.next_app_hash == second.header.app_hash
    # A held block two heights on does not count.
    replica = fresh()
    assert commits(replica, (third, third_cert)) == []
    (commit,) = commits(replica, (first, first_cert))
    assert commit.next_app_hash is None
    # A block of the next height, certified by the set, that names another parent is held
    # but gives no hint.
    forged = Block.build(
        chain_id=CHAIN_ID,
        height=2,
        view=0,
        parent_hash=hash_bytes(b"another parent"),
        app_hash=hash_bytes(b"another state"),
        next_validators_hash=second.header.next_validators_hash,
        proposer=1,
        timestamp_ms=second.header.timestamp_ms,
        transactions=(),
    )
    forged_cert = CommitCertificate.from_votes(commit_votes(cluster, forged))
    assert forged.header.parent_hash != first.hash
    replica = fresh()
    assert commits(replica, (forged, forged_cert)) == []
    (commit,) = commits(replica, (first, first_cert))
    assert commit.next_app_hash is None


class RequestRecorder(Cluster):
    """Records each node's block requests: (its committed height then, from, to)."""

    def __init__(self, n: int, **kwargs: Any) -> None:
        super().__init__(n, **kwargs)
        self.requests: dict[int, list[tuple[int, int, int]]] = {i: [] for i in range(n)}

    def _perform(self, node: Node, action: Action) -> None:
        if isinstance(action, RequestBlocks):
            self.requests[node.index].append(
                (len(node.chain), action.from_height, action.to_height)
            )
        super()._perform(node, action)


def test_consensus_deciding_a_synced_height_first_ends_the_hold_and_the_request() -> None:
    """A synced block held for a height that consensus then decides (the buffered proposal
    and commit quorum of that height replayed as it opens) is dropped with the height: the
    replica holds synced blocks only above its committed height. The request for blocks up
    to that height is answered too, so a replica still behind asks again at once, not after
    ``sync_retry_ms``."""
    cluster = Cluster(4)
    validators = cluster.validators
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(3, nodes=[0, 1, 2, 3]))
    (first, first_cert), (second, second_cert), (third, _) = cluster.nodes[0].chain[:3]
    replica = fresh_replica(cluster)

    def requests(actions: list[Action]) -> list[tuple[int, int]]:
        return [(a.from_height, a.to_height) for a in actions if isinstance(a, RequestBlocks)]

    early: list[Proposal | Vote] = [
        proposal(cluster, second, view=second.header.view, validator=second.header.proposer)
    ]
    early += commit_votes(cluster, second) + commit_votes(cluster, third)
    for message in early:
        replica.handle(PeerMessage(encode_message(message), message.validator))
    # Three validators are seen committing height 3: ask for blocks 1 and 2 (and again after
    # the retry interval).
    assert requests(replica.handle(Tick(GENESIS_TIME_MS + 500))) == [(1, 2)]
    retry_ms = ReplicaConfig().sync_retry_ms
    assert requests(replica.handle(Tick(GENESIS_TIME_MS + 500 + retry_ms))) == [(1, 2)]
    assert not [
        a for a in replica.handle(SyncedBlock(second, second_cert)) if isinstance(a, Commit)
    ]
    assert replica.synced_blocks_waiting == 1
    (commit,) = [a for a in replica.handle(SyncedBlock(first, first_cert)) if isinstance(a, Commit)]
    assert commit.block.hash == first.hash
    executed = BlockExecuted(1, next_app_hash(GENESIS_APP_HASH, first), validators)
    decided = [a for a in replica.handle(executed) if isinstance(a, Commit)]
    # Height 2 is decided by its replayed proposal and commits, not by the held synced block.
    assert [c.block.hash for c in decided] == [second.hash]
    assert decided[0].next_app_hash is None
    assert replica.status().height == 3
    assert replica.synced_blocks_waiting == 0
    # Still behind (height 3 is committed elsewhere): the next request goes out with height 3.
    app_hash = next_app_hash(next_app_hash(GENESIS_APP_HASH, first), second)
    assert requests(replica.handle(BlockExecuted(2, app_hash, validators))) == [(3, 3)]


def _quiet_chain(config: ReplicaConfig) -> tuple[Replica, Cluster]:
    """A fresh replica (validator 3) at height 1 that has heard nothing from a cluster whose
    chain is at height 20 and quiet: nothing tells it that anyone is ahead."""
    cluster = Cluster(4, config=config)
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(20, nodes=[0, 1, 2, 3]))
    return fresh_replica(cluster, config), cluster


def _apply_synced(
    replica: Replica, cluster: Cluster, actions: list[Action], app_hash: bytes
) -> tuple[list[tuple[int, int, int]], bytes]:
    """Execute every block the replica commits, as a driver would, until it commits none;
    returns its requests for blocks as (block applied with it, from, to) and the app hash."""
    asked: list[tuple[int, int, int]] = []
    while True:
        commits = [a for a in actions if isinstance(a, Commit)]
        applied = commits[0].block.height if commits else 0
        asked += [
            (applied, a.from_height, a.to_height) for a in actions if isinstance(a, RequestBlocks)
        ]
        if not commits:
            return asked, app_hash
        (commit,) = commits
        app_hash = next_app_hash(app_hash, commit.block)
        actions = replica.handle(BlockExecuted(commit.block.height, app_hash, cluster.validators))


def _hear_height_twenty(replica: Replica, cluster: Cluster) -> list[Action]:
    """Hand the replica three validators' commit votes for the cluster's height 20; returns
    the actions they led to."""
    actions: list[Action] = []
    for commit in commit_votes(cluster, cluster.nodes[0].chain[19][0]):
        actions += replica.handle(PeerMessage(encode_message(commit), commit.validator))
    return actions


def _behind_twenty_heights(config: ReplicaConfig) -> tuple[Replica, Cluster]:
    """A fresh replica (validator 3) at height 1 that has heard three validators committing
    height 20 of the cluster's chain (too far ahead to do anything with their votes but note
    where they are)."""
    replica, cluster = _quiet_chain(config)
    actions = _hear_height_twenty(replica, cluster)
    assert not [a for a in actions if not isinstance(a, Dropped)]
    return replica, cluster


def test_an_answer_the_replica_did_not_ask_for_is_followed_like_its_own() -> None:
    """The driver's start-up request for blocks is not the replica's, so its answer arrives
    unasked. The replica follows it as it follows an answer to its own request: once it is
    all held and less than half of it is left to apply, it asks for the blocks after it,
    without waiting for a tick to see it is behind."""
    replica, cluster = _behind_twenty_heights(ReplicaConfig(sync_blocks_max=8))
    answer = encode_block_response(cluster.nodes[0].chain[:8])
    actions = replica.handle(PeerMessage(answer, 0))
    asked, _ = _apply_synced(replica, cluster, actions, GENESIS_APP_HASH)
    assert replica.status().height == 9
    # Asked for blocks 9-12 (up to 8 above its height) as block 5 was applied, with blocks
    # 6-8 still held: no tick in between.
    assert asked, "no request while the answer was applied"
    assert asked[0] == (5, 9, 12), asked


def test_a_full_unasked_answer_is_followed_open_ended_until_an_answer_stops_short() -> None:
    """On a quiet chain the replica learns that its peers are ahead only from their next
    signed message. An unasked answer (the driver's start-up request) of as many blocks as a
    request may ask for suggests the peer's chain goes on, so the replica asks for the blocks
    after it at once, open-ended, and again after each open-ended answer that reaches its
    end; an answer that stops short shows where the peer's chain ends, and the sync goes on
    from there as far as validators are seen."""
    replica, cluster = _quiet_chain(ReplicaConfig(sync_blocks_max=8))
    chain = cluster.nodes[0].chain
    actions = replica.handle(PeerMessage(encode_block_response(chain[:8]), 0))
    asked, app_hash = _apply_synced(replica, cluster, actions, GENESIS_APP_HASH)
    # Blocks 9-12 (up to 8 above its height) asked for as block 5 was applied.
    assert asked == [(5, 9, 12)], asked
    assert replica.status().height == 9
    # The answer reaches the end of the open-ended request: the next one goes out as the
    # answer is applied.
    actions = replica.handle(PeerMessage(encode_block_response(chain[8:12]), 0))
    asked, app_hash = _apply_synced(replica, cluster, actions, app_hash)
    assert asked, "no open-ended request after an answer that reached its end"
    assert asked[0][1] == 13, asked
    (_, from_height, to_height) = asked[-1]
    assert replica.status().height == 13
    # Its answer stops short of the request's end: the request counts as answered to there.
    # With three validators now seen at height 20, the blocks after the short answer are
    # asked for while it is applied, with no tick.
    _hear_height_twenty(replica, cluster)
    short = chain[from_height - 1 : from_height + 1]
    assert from_height + 1 < to_height
    actions = replica.handle(PeerMessage(encode_block_response(short), 0))
    asked, app_hash = _apply_synced(replica, cluster, actions, app_hash)
    assert [entry[1] for entry in asked] == [from_height + 2], asked
    assert replica.status().height == from_height + 2


def test_a_short_answer_whose_certificate_fails_does_not_end_the_open_ended_request() -> None:
    """Only a certified answer says where a peer's chain ends: a short answer whose block
    carries another height's certificate is dropped and leaves the open-ended request as it
    was, so the real answer that follows is followed open-ended again."""
    replica, cluster = _quiet_chain(ReplicaConfig(sync_blocks_max=8))
    chain = cluster.nodes[0].chain
    actions = replica.handle(PeerMessage(encode_block_response(chain[:8]), 0))
    asked, app_hash = _apply_synced(replica, cluster, actions, GENESIS_APP_HASH)
    assert asked == [(5, 9, 12)], asked
    forged = encode_block_response([(chain[8][0], chain[7][1])])
    dropped = [a for a in replica.handle(PeerMessage(forged, 0)) if isinstance(a, Dropped)]
    assert [d.reason for d in dropped] == [DropReason.INVALID_CERTIFICATE], dropped
    actions = replica.handle(PeerMessage(encode_block_response(chain[8:12]), 0))
    asked, _ = _apply_synced(replica, cluster, actions, app_hash)
    assert asked, "no open-ended request after an answer that reached its end"
    assert asked[0][1] == 13, asked


def test_an_unasked_answer_short_of_a_full_request_is_followed_only_as_far_as_seen() -> None:
    """An unasked answer of fewer blocks than a request may ask for is all the peer had (or
    could send): with nobody seen beyond it, the replica asks for nothing more."""
    replica, cluster = _quiet_chain(ReplicaConfig(sync_blocks_max=8))
    chain = cluster.nodes[0].chain
    actions = replica.handle(PeerMessage(encode_block_response(chain[:7]), 0))
    asked, _ = _apply_synced(replica, cluster, actions, GENESIS_APP_HASH)
    assert asked == []
    assert replica.status().height == 8


def test_an_unanswered_open_ended_request_does_not_hold_back_the_next() -> None:
    """An open-ended request may go unanswered (the peer's chain ended where its last answer
    did). Once validators are seen ahead, the request for their blocks goes out at once, not
    ``sync_retry_ms`` after the open-ended one."""
    config = ReplicaConfig(sync_blocks_max=8)
    replica, cluster = _quiet_chain(config)
    chain = cluster.nodes[0].chain
    actions = replica.handle(PeerMessage(encode_block_response(chain[:8]), 0))
    asked, _ = _apply_synced(replica, cluster, actions, GENESIS_APP_HASH)
    assert asked == [(5, 9, 12)]
    # No answer. Three validators are seen committing height 20.
    _hear_height_twenty(replica, cluster)
    actions = replica.handle(Tick(GENESIS_TIME_MS + 10))
    requested = [(a.from_height, a.to_height) for a in actions if isinstance(a, RequestBlocks)]
    assert requested == [(9, 16)], requested


def test_an_unasked_answer_with_a_gap_is_not_followed() -> None:
    """A peer sends, unasked, a certified block above the replica's next height (a gap
    before it) while the replica executes a block. Followed, it would have the replica ask
    for the blocks after it as the next height opens, and its request for the gap would then
    wait ``sync_retry_ms``; ignored, the replica asks for the blocks from its height at the
    next tick."""
    replica, cluster = _behind_twenty_heights(ReplicaConfig(sync_blocks_max=8))
    chain, validators = cluster.nodes[0].chain, cluster.validators
    (commit,) = [a for a in replica.handle(SyncedBlock(*chain[0])) if isinstance(a, Commit)]
    beyond = encode_block_response(chain[4:5])  # block 5, while the next height is 2
    actions = replica.handle(PeerMessage(beyond, 0))
    app_hash = next_app_hash(GENESIS_APP_HASH, commit.block)
    actions += replica.handle(BlockExecuted(1, app_hash, validators))
    actions += replica.handle(Tick(GENESIS_TIME_MS + 10))
    asked = [(a.from_height, a.to_height) for a in actions if isinstance(a, RequestBlocks)]
    assert asked == [(2, 9)]
