"""Every ``DropReason`` fires: one story per reason, each asserting the ``Dropped`` action.

A replica drops what is malformed, forged, stale, too early, superfluous or wrong and says why
(``Dropped(reason, detail)``: logs and metrics). The last test checks that this module covers
every reason the replica has.
"""

from __future__ import annotations

import sys

from consensus.crypto import PrivateKey, hash_bytes
from consensus.messages import (
    BlockResponse,
    NewView,
    encode_message,
)
from consensus.replica import (
    Action,
    Broadcast,
    Dropped,
    DropReason,
    PeerMessage,
    Replica,
    ReplicaConfig,
    SyncedBlock,
    Tick,
    ValidityVerdict,
    primary_index,
)
from consensus.types import Block, CommitCertificate, Phase, Vote
from tests.consensus_harness import (
    CHAIN_ID,
    GENESIS_APP_HASH,
    GENESIS_HASH,
    Cluster,
    build_block,
    prepared_certificate,
    proposal,
    view_change,
    vote,
)

PRIMARY = 1  # of height 1, view 0, with n = 4


def started(config: ReplicaConfig | None = None) -> tuple[Replica, Cluster]:
    """Four validators at height 1; the replica under test is validator 0."""
    cluster = Cluster(4, config=config)
    assert primary_index(cluster.validators, 1, 0) == PRIMARY
    cluster.start()
    return cluster.nodes[0].replica, cluster


def reasons(actions: list[Action]) -> list[DropReason]:
    return [action.reason for action in actions if isinstance(action, Dropped)]


def deliver(replica: Replica, message: object, sender: int) -> list[Action]:
    data = message if isinstance(message, bytes) else encode_message(message)  # type: ignore[arg-type]
    return replica.handle(PeerMessage(data, sender))


def certificate(cluster: Cluster, block: Block, *, signers: list[int]) -> CommitCertificate:
    commits = [
        vote(cluster, Phase.COMMIT, height=block.height, view=0, block_hash=block.hash, validator=i)
        for i in signers
    ]
    return CommitCertificate.from_votes(commits)


def test_malformed_bytes_from_a_peer_are_dropped() -> None:
    replica, _ = started()
    assert reasons(deliver(replica, b"\x93\x01\x02", 2)) == [DropReason.MALFORMED]


def test_a_certified_block_of_another_chain_offered_by_block_sync() -> None:
    replica, cluster = started()
    foreign = Block.build(
        chain_id="another-chain",
        height=1,
        view=0,
        parent_hash=GENESIS_HASH,
        app_hash=GENESIS_APP_HASH,
        next_validators_hash=cluster.validators.hash(),
        proposer=PRIMARY,
        timestamp_ms=cluster.now_ms,
        transactions=(),
    )
    response = BlockResponse(((foreign, certificate(cluster, foreign, signers=[1, 2, 3])),))
    assert reasons(deliver(replica, response, 2)) == [DropReason.WRONG_CHAIN]


def test_a_vote_signed_by_an_index_beyond_the_validator_set() -> None:
    replica, _ = started()
    outsider = Cluster(8)
    forged = vote(outsider, Phase.PREPARE, height=1, view=0, block_hash=bytes(32), validator=7)
    assert reasons(deliver(replica, forged, 3)) == [DropReason.NOT_VALIDATOR]


def test_a_prepare_signed_with_another_validators_key() -> None:
    replica, cluster = started()
    genuine = vote(cluster, Phase.PREPARE, height=1, view=0, block_hash=bytes(32), validator=2)
    forged = Vote(Phase.PREPARE, 1, 0, bytes(32), 3, genuine.signature)
    assert reasons(deliver(replica, forged, 3)) == [DropReason.BAD_SIGNATURE]


def test_a_prepare_for_a_view_the_replica_has_left() -> None:
    replica, cluster = started()
    replica.handle(Tick(cluster.now_ms + ReplicaConfig().view_timeout_ms(0)))
    assert replica.status().view == 1
    late = vote(cluster, Phase.PREPARE, height=1, view=0, block_hash=bytes(32), validator=2)
    assert reasons(deliver(replica, late, 2)) == [DropReason.STALE]


def test_a_proposal_for_a_height_beyond_the_buffered_window() -> None:
    replica, cluster = started()
    far = ReplicaConfig().future_heights_max + 2
    block = Block.build(
        chain_id=CHAIN_ID,
        height=far,
        view=0,
        parent_hash=bytes(32),
        app_hash=bytes(32),
        next_validators_hash=cluster.validators.hash(),
        proposer=2,
        timestamp_ms=cluster.now_ms,
        transactions=(),
    )
    message = proposal(cluster, block, view=0, validator=2)
    assert reasons(deliver(replica, message, 2)) == [DropReason.TOO_FAR_AHEAD]


def test_a_validator_flooding_future_messages_past_its_buffer() -> None:
    config = ReplicaConfig(future_messages_per_validator_max=4)
    replica, cluster = started(config)
    actions: list[Action] = []
    for view in range(5):
        future = vote(
            cluster, Phase.PREPARE, height=2, view=view, block_hash=bytes(32), validator=2
        )
        actions += deliver(replica, future, 2)
    assert reasons(actions) == [DropReason.BUFFER_FULL]
    honest = vote(cluster, Phase.PREPARE, height=2, view=0, block_hash=bytes(32), validator=3)
    assert reasons(deliver(replica, honest, 3)) == [], "another validator's room is its own"


def test_the_same_prepare_delivered_twice() -> None:
    replica, cluster = started()
    prepare = vote(cluster, Phase.PREPARE, height=1, view=0, block_hash=bytes(32), validator=2)
    assert reasons(deliver(replica, prepare, 2)) == []
    assert reasons(deliver(replica, prepare, 2)) == [DropReason.DUPLICATE]


def test_a_proposal_signed_by_a_validator_that_is_not_the_primary() -> None:
    replica, cluster = started()
    block = build_block(cluster, height=1, view=0, proposer=2, tag=b"usurper")
    message = proposal(cluster, block, view=0, validator=2)
    assert reasons(deliver(replica, message, 2)) == [DropReason.NOT_PRIMARY]


def test_a_proposal_whose_block_does_not_extend_our_chain() -> None:
    replica, cluster = started()
    block = Block.build(
        chain_id=CHAIN_ID,
        height=1,
        view=0,
        parent_hash=bytes(32),
        app_hash=GENESIS_APP_HASH,
        next_validators_hash=cluster.validators.hash(),
        proposer=PRIMARY,
        timestamp_ms=cluster.now_ms,
        transactions=(),
    )
    message = proposal(cluster, block, view=0, validator=PRIMARY)
    assert reasons(deliver(replica, message, PRIMARY)) == [DropReason.INVALID_PROPOSAL]


def test_a_view_change_with_a_certificate_from_another_height() -> None:
    replica, cluster = started()
    other = Block.build(
        chain_id=CHAIN_ID,
        height=3,
        view=0,
        parent_hash=bytes(32),
        app_hash=bytes(32),
        next_validators_hash=cluster.validators.hash(),
        proposer=3,
        timestamp_ms=cluster.now_ms,
        transactions=(),
    )
    stale = prepared_certificate(cluster, other, view=0, signers=[1, 2, 3])
    change = view_change(cluster, 2, height=1, view=1, prepared=stale, block=other)
    assert reasons(deliver(replica, change, 2)) == [DropReason.INVALID_VIEW_CHANGE]


def test_a_new_view_that_proposes_afresh_over_a_prepared_block() -> None:
    replica, cluster = started()
    new_primary = primary_index(cluster.validators, 1, 1)
    prepared_block = build_block(cluster, height=1, view=0, proposer=PRIMARY, tag=b"prepared")
    certified = prepared_certificate(cluster, prepared_block, view=0, signers=[0, 1, 3])
    changes = [
        view_change(cluster, 1, height=1, view=1, prepared=certified, block=prepared_block),
        view_change(cluster, 2, height=1, view=1),
        view_change(cluster, 3, height=1, view=1),
    ]
    fresh = build_block(cluster, height=1, view=1, proposer=new_primary, tag=b"fresh")
    new_view = NewView.create(
        cluster.keys[new_primary],
        CHAIN_ID,
        view_changes=changes,
        proposal=proposal(cluster, fresh, view=1, validator=new_primary),
    )
    assert reasons(deliver(replica, new_view, new_primary)) == [DropReason.INVALID_NEW_VIEW]


def test_a_synced_block_certified_by_too_few_validators() -> None:
    replica, cluster = started()
    block = build_block(cluster, height=1, view=0, proposer=PRIMARY, tag=b"thin")
    thin = certificate(cluster, block, signers=[1, 2])
    assert reasons(replica.handle(SyncedBlock(block, thin))) == [DropReason.INVALID_CERTIFICATE]


def test_a_proposal_whose_transactions_the_driver_refuses() -> None:
    replica, cluster = started()
    block = build_block(cluster, height=1, view=0, proposer=PRIMARY, tag=b"overdraft")
    deliver(replica, proposal(cluster, block, view=0, validator=PRIMARY), PRIMARY)
    verdict = ValidityVerdict(block.hash, False, "payment exceeds balance")
    actions = replica.handle(verdict)
    assert reasons(actions) == [DropReason.INVALID_BLOCK]
    assert not any(isinstance(a, Broadcast) for a in actions), "and no prepare is sent"


def test_a_certified_block_whose_app_hash_differs_from_our_state() -> None:
    """Our application state diverged from the quorum's (a bug or a corrupted disk): the
    certified block does not extend our state, and we refuse to commit it."""
    replica, cluster = started()
    block = Block.build(
        chain_id=CHAIN_ID,
        height=1,
        view=0,
        parent_hash=GENESIS_HASH,
        app_hash=bytes(32),
        next_validators_hash=cluster.validators.hash(),
        proposer=PRIMARY,
        timestamp_ms=cluster.now_ms,
        transactions=(),
    )
    certified = certificate(cluster, block, signers=[1, 2, 3])
    assert reasons(replica.handle(SyncedBlock(block, certified))) == [DropReason.STATE_DIVERGED]


def test_a_vote_from_a_height_whose_set_is_not_known_yet() -> None:
    """At height 1 the replica knows the sets of heights 1 and 2. A prepare for height 3 by a
    key the set of height 2 does not hold may come from a validator re-keyed at 3: early,
    not wrong (and a hint that we may be behind)."""
    replica, _ = started()
    newcomer = PrivateKey(hash_bytes(b"a key of height 3"))
    vote = Vote.create(
        newcomer,
        CHAIN_ID,
        phase=Phase.PREPARE,
        height=3,
        view=0,
        block_hash=bytes(32),
        validator=2,
    )
    assert reasons(deliver(replica, vote, 2)) == [DropReason.VALIDATORS_UNKNOWN]


def test_a_validity_verdict_for_a_block_nobody_asked_about() -> None:
    replica, _ = started()
    assert reasons(replica.handle(ValidityVerdict(bytes(32), True))) == [DropReason.UNEXPECTED]


def test_every_drop_reason_has_a_story_here() -> None:
    expected = {
        DropReason.MALFORMED: "test_malformed_bytes_from_a_peer_are_dropped",
        DropReason.WRONG_CHAIN: "test_a_certified_block_of_another_chain_offered_by_block_sync",
        DropReason.NOT_VALIDATOR: "test_a_vote_signed_by_an_index_beyond_the_validator_set",
        DropReason.BAD_SIGNATURE: "test_a_prepare_signed_with_another_validators_key",
        DropReason.STALE: "test_a_prepare_for_a_view_the_replica_has_left",
        DropReason.TOO_FAR_AHEAD: "test_a_proposal_for_a_height_beyond_the_buffered_window",
        DropReason.VALIDATORS_UNKNOWN: "test_a_vote_from_a_height_whose_set_is_not_known_yet",
        DropReason.BUFFER_FULL: "test_a_validator_flooding_future_messages_past_its_buffer",
        DropReason.DUPLICATE: "test_the_same_prepare_delivered_twice",
        DropReason.NOT_PRIMARY: "test_a_proposal_signed_by_a_validator_that_is_not_the_primary",
        DropReason.INVALID_PROPOSAL: "test_a_proposal_whose_block_does_not_extend_our_chain",
        DropReason.INVALID_VIEW_CHANGE: "test_a_view_change_with_a_certificate_from_another_height",
        DropReason.INVALID_NEW_VIEW: "test_a_new_view_that_proposes_afresh_over_a_prepared_block",
        DropReason.INVALID_CERTIFICATE: "test_a_synced_block_certified_by_too_few_validators",
        DropReason.INVALID_BLOCK: "test_a_proposal_whose_transactions_the_driver_refuses",
        DropReason.STATE_DIVERGED: "test_a_certified_block_whose_app_hash_differs_from_our_state",
        DropReason.UNEXPECTED: "test_a_validity_verdict_for_a_block_nobody_asked_about",
    }
    assert set(expected) == set(DropReason), "a new DropReason needs its story here"
    module = sys.modules[__name__]
    assert all(callable(getattr(module, name, None)) for name in expected.values())
