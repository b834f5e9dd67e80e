"""Byzantine stories at the Replica's interface: one faulty validator (n = 4) crafts view
changes and new views by hand, and the honest replicas must neither fork nor lose liveness."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import consensus.replica as replica_module
from consensus.crypto import SIGNATURE_BYTES
from consensus.evidence import SignedStatement
from consensus.messages import (
    Message,
    NewView,
    PreparedCertificate,
    Proposal,
    ViewChange,
    encode_message,
)
from consensus.replica import (
    Dropped,
    DropReason,
    PeerMessage,
    ReplicaConfig,
    ReportEvidence,
    ServeBlocks,
    primary_index,
)
from consensus.types import Block, Phase, ValidatorSet, Vote
from tests.consensus_harness import (
    CHAIN_ID,
    Cluster,
    build_block,
    node_key,
    prepared_certificate,
    proposal,
    view_change,
    vote,
)

# n = 4 at height 1: the primary of view 0 is 1 and the primary of view 1 is 2.
BYZANTINE = 2
HONEST = [0, 1, 3]


def drops(cluster: Cluster, index: int, reason: DropReason) -> list[str]:
    return [d.detail for d in cluster.nodes[index].dropped if d.reason is reason]


def forged_view_change(genuine: ViewChange, claimed: int) -> ViewChange:
    """A view change claiming to come from ``claimed`` that carries ``genuine``'s signature."""
    return ViewChange(
        genuine.height, genuine.view, claimed, genuine.prepared, None, genuine.signature
    )


def commit_d_on_one_replica(cluster: Cluster) -> Block:
    """View 0 of height 1: the honest primary 1 proposes d; the byzantine validator prepares
    and commits d; replica 0 collects three commits and decides d, replica 1 is prepared and
    commit-voted but never hears the other commits, replica 3 hears nothing at all."""
    assert primary_index(cluster.validators, 1, 0) == 1
    assert primary_index(cluster.validators, 1, 1) == BYZANTINE
    cluster.crash(BYZANTINE)  # its replica is replaced by hand-made messages

    def deliver(sender: int, receiver: int, message: Message) -> bool:
        if 3 in (sender, receiver):
            return False
        return not (isinstance(message, Vote) and message.phase is Phase.COMMIT and receiver == 1)

    cluster.deliver_filter = deliver
    cluster.start()
    cluster.tick()  # the primary's payload arrives; it proposes d
    d = next(m for m in cluster.nodes[1].sent if isinstance(m, Proposal)).block
    for phase in (Phase.PREPARE, Phase.COMMIT):
        cluster.inject(
            BYZANTINE,
            [0, 1],
            vote(cluster, phase, height=1, view=0, block_hash=d.hash, validator=BYZANTINE),
        )
    cluster.run_until(lambda: cluster.all_reached(1, nodes=[0]))
    assert cluster.nodes[0].chain[0][0].hash == d.hash
    assert not cluster.nodes[1].chain
    committed_vote = [
        m for m in cluster.nodes[1].sent if isinstance(m, Vote) and m.phase is Phase.COMMIT
    ]
    assert [v.block_hash for v in committed_vote] == [d.hash], "replica 1 commit-voted d"
    return d


def new_view_from_forged_view_changes(cluster: Cluster, *, cached_signature: bool) -> Block:
    """After ``commit_d_on_one_replica``: replica 0 is cut off, and B, primary of view 1, sends
    replicas 1 and 3 a new view proposing a fresh block d' whose view changes claim to come
    from 0 and 3 and say "nothing prepared". With ``cached_signature`` B first sends its one
    genuine view change and the forged ones carry its signature; otherwise they carry zeros.
    B also prepares and commits d'. Returns d' after 20 s of traffic between 1 and 3."""
    cluster.deliver_filter = lambda sender, receiver, message: {sender, receiver} <= {1, 3}
    genuine = view_change(cluster, BYZANTINE, height=1, view=1)
    if cached_signature:
        cluster.inject(BYZANTINE, [1, 3], genuine)
        forged = [forged_view_change(genuine, claimed) for claimed in (0, 3)]
    else:
        forged = [
            ViewChange(1, 1, claimed, None, None, bytes(SIGNATURE_BYTES)) for claimed in (0, 3)
        ]
    d_prime = build_block(cluster, height=1, view=1, proposer=BYZANTINE, tag=b"d-prime")
    new_view = NewView.create(
        cluster.keys[BYZANTINE],
        CHAIN_ID,
        view_changes=[*forged, genuine],
        proposal=proposal(cluster, d_prime, view=1, validator=BYZANTINE),
    )
    cluster.inject(BYZANTINE, [1, 3], new_view)
    for phase in (Phase.PREPARE, Phase.COMMIT):
        cluster.inject(
            BYZANTINE,
            [1, 3],
            vote(cluster, phase, height=1, view=1, block_hash=d_prime.hash, validator=BYZANTINE),
        )
    cluster.run_for(20_000)
    return d_prime


def test_forged_view_changes_carrying_a_cached_signature_cannot_fork_the_chain() -> None:
    """B sends its one genuine view change (its signature is now verified and remembered),
    then a new view whose other view changes claim to come from honest validators, say
    "nothing prepared", and carry B's signature. Replica 1 prepared and commit-voted d, which
    replica 0 committed: it must refuse the new view, or d' commits at the same height."""
    cluster = Cluster(4)
    d = commit_d_on_one_replica(cluster)
    d_prime = new_view_from_forged_view_changes(cluster, cached_signature=True)
    for index in (1, 3):
        assert any(
            "signature" in detail for detail in drops(cluster, index, DropReason.INVALID_NEW_VIEW)
        )
        assert not any(
            isinstance(m, Vote) and m.block_hash == d_prime.hash for m in cluster.nodes[index].sent
        ), f"replica {index} voted for d'"
    # The network heals: everyone ends with d at height 1.
    cluster.deliver_filter = None
    cluster.release_held()
    cluster.run_until(lambda: cluster.all_reached(2, nodes=HONEST))
    cluster.assert_agreement()
    assert cluster.nodes[3].chain[0][0].hash == d.hash


def test_forged_view_changes_cannot_force_honest_replicas_out_of_an_honest_primarys_view() -> None:
    """Censorship: B tells every honest replica that it and another honest validator want view
    1 (whose primary is B), forging the second view change with its own signature. f+1 = 2
    validators ahead would make a replica join; the forged one must not count, so the honest
    primary's block commits in view 0."""
    cluster = Cluster(4)
    cluster.crash(BYZANTINE)
    cluster.start()
    genuine = view_change(cluster, BYZANTINE, height=1, view=1)
    for index in HONEST:
        claimed = 3 if index == 0 else 0
        cluster.inject(BYZANTINE, [index], genuine, forged_view_change(genuine, claimed))
        status = cluster.nodes[index].replica.status()
        assert (status.view, status.view_active) == (0, True), f"replica {index} left view 0"
        assert drops(cluster, index, DropReason.INVALID_VIEW_CHANGE)
    cluster.run_until(lambda: cluster.all_reached(1, nodes=HONEST))
    cluster.assert_agreement()
    block, certificate = cluster.nodes[0].chain[0]
    assert (block.header.proposer, certificate.view) == (1, 0)


def test_a_garbled_certificate_does_not_poison_an_honest_new_view() -> None:
    """Byzantine B (0) prepared d in view 0 like replicas 1 and 2; commits are lost and
    replica 3 hears nothing, so height 1 moves to view 1, whose primary is 2. B sends 2 a
    genuinely signed view change whose certificate for d has one prepare signature replaced.
    Replica 2 proved a certificate for (view 0, d) itself; it must still check B's, or it puts
    it in its new view and replica 3, which never saw d prepared, refuses the whole new view."""
    byzantine = 0
    cluster = Cluster(4)
    assert primary_index(cluster.validators, 1, 1) == 2
    cluster.crash(byzantine)

    def view_zero(sender: int, receiver: int, message: Message) -> bool:
        if receiver == 3:
            return False
        return not (isinstance(message, Vote) and message.phase is Phase.COMMIT)

    cluster.deliver_filter = view_zero
    cluster.start()
    cluster.tick()
    d = next(m for m in cluster.nodes[1].sent if isinstance(m, Proposal)).block
    prepare = vote(cluster, Phase.PREPARE, height=1, view=0, block_hash=d.hash, validator=byzantine)
    cluster.inject(byzantine, [1, 2], prepare)
    cluster.run_until(lambda: cluster.nodes[2].replica.status().view == 1)
    cluster.held.clear()  # view 0 is over; what 3 missed stays missed

    def view_one(sender: int, receiver: int, message: Message) -> bool:
        # 3 sees no certificate for d except through the new view.
        if receiver == 3 and isinstance(message, ViewChange) and message.prepared is not None:
            return False
        return not (isinstance(message, Vote) and message.view == 0)

    cluster.deliver_filter = view_one
    genuine = prepared_certificate(cluster, d, view=0, signers=[0, 1, 2])
    other = vote(cluster, Phase.PREPARE, height=1, view=0, block_hash=d.hash, validator=3)
    garbled = PreparedCertificate(
        1, 0, d.hash, ((0, genuine.signatures[0][1]), (1, other.signature), genuine.signatures[2])
    )
    change = view_change(cluster, byzantine, height=1, view=1, prepared=garbled, block=d)
    cluster.inject(byzantine, [2], change)
    assert drops(cluster, 2, DropReason.INVALID_VIEW_CHANGE), "the primary checks B's certificate"
    cluster.run_until(lambda: cluster.all_reached(1, nodes=[1, 2, 3]), max_ms=30_000)
    cluster.assert_agreement()
    for index in (1, 3):
        assert not drops(cluster, index, DropReason.INVALID_NEW_VIEW)
    block, certificate = cluster.nodes[3].chain[0]
    assert (block.hash, certificate.view) == (d.hash, 1), "d re-proposed and committed in view 1"


def test_a_certified_view_change_arriving_while_the_new_primary_waits_for_its_payload() -> None:
    """No fault but timing. Only replica 0 prepares d in view 0. Replica 2, primary of view 1,
    holds view changes from 1, 2 and 3 (none prepared), decides on a fresh block and asks its
    driver for a payload; 0's view change with d's certificate arrives during the wait. The
    new view must still be consistent with the decision it was built on, or every replica
    refuses it and view 1 is lost."""
    cluster = Cluster(4)
    primary = primary_index(cluster.validators, 1, 1)

    def view_zero(sender: int, receiver: int, message: Message) -> bool:
        if isinstance(message, Vote) and message.phase is Phase.PREPARE and receiver != 0:
            return False
        return not (isinstance(message, ViewChange) and sender == 0 and receiver == primary)

    cluster.deliver_filter = view_zero
    cluster.start()

    def asked_for_payload() -> bool:
        return any(index == primary and view == 1 for index, _, view, _ in cluster.pending_payloads)

    cluster.run_until(asked_for_payload)
    certified = [(s, r, data) for s, r, data in cluster.held if s == 0 and r == primary]
    assert certified, "0's view change to the primary was held"
    cluster.held = [item for item in cluster.held if item not in certified]
    for sender, _, data in certified:
        cluster.feed(primary, PeerMessage(data, sender))
    cluster.deliver_filter = None
    cluster.run_until(lambda: cluster.all_reached(1))
    cluster.assert_agreement()
    for node in cluster.nodes:
        assert not drops(cluster, node.index, DropReason.INVALID_NEW_VIEW)
    assert cluster.nodes[0].chain[0][1].view == 1, "height 1 commits in view 1"


def test_views_resynchronise_after_a_partition_with_one_validator_crashed() -> None:
    """No forged message at all. Validator 0 is down. At height 1 the three commit votes reach
    only replica 1, which decides; then 1 is cut off from 2 and 3 for ten minutes (messages
    delayed, not lost). 1, alone at height 2, times out; 2 and 3 time out at height 1. When
    the network heals, 2 and 3 decide height 1 from the late votes and start height 2 in view
    0. Replica 1 must not have run ahead so far that the views never meet again: the chain
    commits again after the network heals."""
    cluster = Cluster(4)
    cluster.crash(0)

    def commits_reach_only_1(sender: int, receiver: int, message: Message) -> bool:
        return not (isinstance(message, Vote) and message.phase is Phase.COMMIT and receiver != 1)

    cluster.deliver_filter = commits_reach_only_1
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(1, nodes=[1]))
    assert cluster.heights()[2:] == [0, 0]
    cluster.deliver_filter = lambda sender, receiver, message: 1 not in (sender, receiver)
    cluster.run_for(600_000, step_ms=250)
    assert cluster.heights() == [0, 1, 0, 0]
    cluster.deliver_filter = None
    cluster.release_held()
    cluster.run_until(
        lambda: cluster.all_reached(3, nodes=[1, 2, 3]), max_ms=1_200_000, step_ms=250
    )
    cluster.assert_agreement()


def test_a_flood_of_future_messages_stays_within_the_per_validator_byte_bound() -> None:
    """Byzantine B floods an honest replica with distinct, validly signed proposals for the
    next heights, each carrying a quarter-MiB block. Buffered, they would cost 64 x 256 KiB;
    the replica keeps at most ``buffer_bytes_per_validator_max`` of them per validator, and
    an honest validator's future message still finds room."""
    config = ReplicaConfig(block_bytes_max=512 * 1024, buffer_bytes_per_validator_max=1536 * 1024)
    cluster = Cluster(4, config=config)
    cluster.start()
    replica = cluster.nodes[0].replica
    accepted_bytes = 0
    for k in range(64):
        block = Block.build(
            chain_id=CHAIN_ID,
            height=2 + k % 4,
            view=0,
            parent_hash=bytes(32),
            app_hash=bytes(32),
            next_validators_hash=cluster.validators.hash(),
            proposer=BYZANTINE,
            timestamp_ms=cluster.now_ms + k,
            transactions=(k.to_bytes(4, "big") + bytes(64 * 1024 - 4),) * 4,
        )
        data = encode_message(proposal(cluster, block, view=0, validator=BYZANTINE))
        actions = replica.handle(PeerMessage(data, BYZANTINE))
        if not any(isinstance(a, Dropped) for a in actions):
            accepted_bytes += len(data)
    bound = config.buffer_bytes_per_validator_max
    assert accepted_bytes <= bound
    assert replica.status().buffered_bytes == accepted_bytes
    honest = vote(cluster, Phase.PREPARE, height=2, view=0, block_hash=bytes(32), validator=1)
    actions = replica.handle(PeerMessage(encode_message(honest), 1))
    assert not any(isinstance(a, Dropped) for a in actions)
    assert replica.status().buffered_bytes == accepted_bytes + len(encode_message(honest))


def test_a_replayed_old_view_change_gets_its_signer_no_blocks() -> None:
    """Validator 3's view change at height 1, replayed (by anyone) once the chain is at height
    4, is stale: it asks for nothing. A view change at the height we last decided is a
    replica that missed that decision: it gets that one block, at most once per retry
    interval."""
    cluster = Cluster(4)
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(3))
    replica = cluster.nodes[0].replica
    tip = replica.status().committed_height
    old = encode_message(view_change(cluster, 3, height=1, view=1))
    actions = replica.handle(PeerMessage(old, 2))
    assert not any(isinstance(a, ServeBlocks) for a in actions)
    assert [a.reason for a in actions if isinstance(a, Dropped)] == [DropReason.STALE]
    missed = encode_message(view_change(cluster, 3, height=tip, view=1))
    served = [a for a in replica.handle(PeerMessage(missed, 2)) if isinstance(a, ServeBlocks)]
    assert served == [ServeBlocks(3, tip, tip, node_key(3))]
    again = [a for a in replica.handle(PeerMessage(missed, 2)) if isinstance(a, ServeBlocks)]
    assert not again, "at most one answer per retry interval"


def test_a_byzantine_primary_cannot_grow_the_signature_cache_without_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Byzantine 0, primary of view 3, re-sends its new view again and again, each time with
    a view change of its own that it signed afresh over a made-up certificate. Each signature
    is genuine and gets verified; the cache of verified signatures stays bounded (memory is
    not observable from outside, so this looks at the cache itself, with a small bound)."""
    monkeypatch.setattr(replica_module, "_VERIFIED_ENTRIES_MAX", 8)
    byzantine = 0
    cluster = Cluster(4)
    assert primary_index(cluster.validators, 1, 3) == byzantine
    cluster.start()
    target = cluster.nodes[1].replica
    block = build_block(cluster, height=1, view=3, proposer=byzantine, tag=b"b")
    own = proposal(cluster, block, view=3, validator=byzantine)
    honest = [view_change(cluster, i, height=1, view=3) for i in (1, 2)]
    for k in range(20):
        made_up = PreparedCertificate(1, 0, k.to_bytes(32, "big"), ())
        change = view_change(cluster, byzantine, height=1, view=3, prepared=made_up)
        new_view = NewView.create(
            cluster.keys[byzantine], CHAIN_ID, view_changes=[change, *honest], proposal=own
        )
        actions = target.handle(PeerMessage(encode_message(new_view), byzantine))
        assert [a.reason for a in actions if isinstance(a, Dropped)] == [
            DropReason.INVALID_NEW_VIEW
        ]
    assert len(target._round.verified_view_changes) <= 8


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    crashed=st.integers(min_value=0, max_value=3),
    lucky_offset=st.integers(min_value=1, max_value=3),
    partition_ms=st.integers(min_value=0, max_value=1_200_000),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_any_partition_of_the_lone_decider_heals(
    crashed: int, lucky_offset: int, partition_ms: int, seed: int
) -> None:
    """The resynchronisation story with any crashed validator, any replica deciding alone,
    any partition length up to twenty minutes and any delivery order: after the network
    heals, the three live replicas commit two more heights."""
    lucky = (crashed + lucky_offset) % 4
    alive = [i for i in range(4) if i != crashed]
    cluster = Cluster(4, seed=seed)
    cluster.crash(crashed)

    def commits_reach_only_lucky(sender: int, receiver: int, message: Message) -> bool:
        return not (
            isinstance(message, Vote) and message.phase is Phase.COMMIT and receiver != lucky
        )

    cluster.deliver_filter = commits_reach_only_lucky
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(1, nodes=[lucky]), max_ms=600_000)
    cluster.deliver_filter = lambda sender, receiver, message: lucky not in (sender, receiver)
    cluster.run_for(partition_ms, step_ms=250)
    cluster.deliver_filter = None
    cluster.release_held()
    top = max(cluster.heights())
    cluster.run_until(
        lambda: cluster.all_reached(top + 2, nodes=alive), max_ms=600_000, step_ms=250
    )
    cluster.assert_agreement()


def test_an_equivocator_cannot_make_the_replica_check_signatures_without_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Byzantine 2 signs prepare votes for many blocks at one height and view. The first two
    are checked and reported as evidence; every later one would be dropped whatever its
    signature, so none is checked (counted at the statements' signature check) and the
    evidence is reported once."""
    cluster = Cluster(4)
    cluster.start()
    target = cluster.nodes[0].replica
    checked: list[bytes] = []
    signature_valid = SignedStatement.signature_valid

    def counting(self: SignedStatement, validators: ValidatorSet, chain_id: str) -> bool:
        checked.append(self.block_hash)
        return signature_valid(self, validators, chain_id)

    monkeypatch.setattr(SignedStatement, "signature_valid", counting)
    reported = []
    for k in range(50):
        forged = vote(
            cluster,
            Phase.PREPARE,
            height=1,
            view=0,
            block_hash=k.to_bytes(32, "big"),
            validator=BYZANTINE,
        )
        actions = target.handle(PeerMessage(encode_message(forged), BYZANTINE))
        reported += [a for a in actions if isinstance(a, ReportEvidence)]
    assert checked == [(0).to_bytes(32, "big"), (1).to_bytes(32, "big")]
    assert len(reported) == 1
    # Another validator's statements are checked as before.
    honest = vote(cluster, Phase.PREPARE, height=1, view=0, block_hash=b"\x07" * 32, validator=3)
    target.handle(PeerMessage(encode_message(honest), 3))
    assert checked[-1] == b"\x07" * 32
