"""Each planted bug is a real switch: the same story goes right without it and wrong with it."""

from __future__ import annotations

import pytest

from consensus.messages import (
    Message,
    NewView,
    PreparedCertificate,
    Proposal,
    ViewChange,
    encode_message,
)
from consensus.replica import (
    Action,
    Broadcast,
    ChainTip,
    Commit,
    Dropped,
    DropReason,
    PeerMessage,
    PlantedBug,
    Replica,
    ReplicaConfig,
    Start,
    SyncedBlock,
    Tick,
    ValidityVerdict,
    primary_index,
)
from consensus.types import CertificateError, CommitCertificate, Phase, Vote, verify_certificate
from tests.consensus_harness import (
    CHAIN_ID,
    GENESIS_APP_HASH,
    GENESIS_HASH,
    GENESIS_TIME_MS,
    Cluster,
    make_keys,
    make_validators,
)
from tests.test_consensus_byzantine import (
    commit_d_on_one_replica,
    new_view_from_forged_view_changes,
)
from tests.test_consensus_scenarios import build_block


def config_with(bug: PlantedBug | None) -> ReplicaConfig:
    return ReplicaConfig(planted_bugs=frozenset() if bug is None else frozenset({bug}))


def first_blocks(cluster: Cluster, nodes: list[int]) -> set[bytes]:
    return {cluster.nodes[i].chain[0][0].hash for i in nodes if cluster.nodes[i].chain}


@pytest.mark.parametrize("bug", [None, PlantedBug.WRONG_QUORUM])
def test_wrong_quorum_lets_an_equivocating_primary_fork_the_chain(bug: PlantedBug | None) -> None:
    cluster = Cluster(4, config=config_with(bug))
    byzantine = primary_index(cluster.validators, 1, 0)
    honest = [i for i in range(4) if i != byzantine]
    cluster.crash(byzantine)
    cluster.start()
    key = cluster.keys[byzantine]
    # Block A (with the byzantine's votes) to one honest replica, block B to the other two.
    for block_tag, receivers in ((b"A", honest[:1]), (b"B", honest[1:])):
        block = build_block(cluster, height=1, view=0, proposer=byzantine, tag=block_tag)
        messages: list[Message] = [
            Proposal.create(key, CHAIN_ID, view=0, validator=byzantine, block=block)
        ]
        messages += [
            Vote.create(
                key,
                CHAIN_ID,
                phase=phase,
                height=1,
                view=0,
                block_hash=block.hash,
                validator=byzantine,
            )
            for phase in (Phase.PREPARE, Phase.COMMIT)
        ]
        for receiver in receivers:
            for message in messages:
                cluster.feed(receiver, PeerMessage(encode_message(message), byzantine))
    cluster.run_until(lambda: cluster.all_reached(1, nodes=honest))
    if bug is None:
        assert len(first_blocks(cluster, honest)) == 1
        cluster.assert_agreement()
    else:
        assert len(first_blocks(cluster, honest)) == 2, "two blocks committed at height 1"


@pytest.mark.parametrize("bug", [None, PlantedBug.NEW_VIEW_IGNORES_PREPARED])
def test_new_view_ignoring_prepared_blocks_loses_a_committed_block(
    bug: PlantedBug | None,
) -> None:
    cluster = Cluster(4, config=config_with(bug))
    lucky = 0

    # View-0 commits reach only replica 0: it commits, then is cut off; the others must
    # view-change without it.
    def deliver(sender: int, receiver: int, message: Message) -> bool:
        if lucky in (sender, receiver) and cluster.nodes[lucky].chain:
            return False
        late_commit = isinstance(message, Vote) and message.phase is Phase.COMMIT
        return not (late_commit and message.view == 0 and receiver != lucky)  # type: ignore[union-attr]

    cluster.deliver_filter = deliver
    cluster.start()
    others = [1, 2, 3]
    cluster.run_until(lambda: cluster.all_reached(1, nodes=others))
    blocks = first_blocks(cluster, [lucky, *others])
    if bug is None:
        assert len(blocks) == 1
        cluster.assert_agreement()
    else:
        assert len(blocks) == 2, "the block committed at replica 0 was replaced"


def _single_replica(bug: PlantedBug | None) -> tuple[Replica, Cluster]:
    cluster = Cluster(4)  # only for its keys, validators and block builder
    replica = Replica(
        config_with(bug),
        chain_id=CHAIN_ID,
        validators=cluster.validators,
        key=cluster.keys[0],
        tip=ChainTip(0, GENESIS_HASH, GENESIS_APP_HASH, GENESIS_TIME_MS),
    )
    replica.handle(Start(cluster.now_ms))
    return replica, cluster


def _vote(cluster: Cluster, phase: Phase, view: int, block_hash: bytes, validator: int) -> Vote:
    return Vote.create(
        cluster.keys[validator],
        CHAIN_ID,
        phase=phase,
        height=1,
        view=view,
        block_hash=block_hash,
        validator=validator,
    )


@pytest.mark.parametrize("bug", [None, PlantedBug.NO_VIEW_CHECK_ON_VOTES])
def test_votes_from_an_old_view_must_not_count_in_the_new_one(bug: PlantedBug | None) -> None:
    replica, cluster = _single_replica(bug)
    primary_0 = primary_index(cluster.validators, 1, 0)
    primary_1 = primary_index(cluster.validators, 1, 1)
    block = build_block(cluster, height=1, view=0, proposer=primary_0, tag=b"A")
    # View 0: replica 0 gets the proposal and prepares; nothing else arrives; it times out.
    proposal = Proposal.create(
        cluster.keys[primary_0], CHAIN_ID, view=0, validator=primary_0, block=block
    )
    replica.handle(PeerMessage(encode_message(proposal), primary_0))
    replica.handle(ValidityVerdict(block.hash, True))
    replica.handle(Tick(cluster.now_ms + ReplicaConfig().view_timeout_ms(0)))
    # View 1: the new primary re-proposes A, justified by 1..3's prepared certificates.
    signatures = tuple(
        (i, _vote(cluster, Phase.PREPARE, 0, block.hash, i).signature) for i in (1, 2, 3)
    )
    certificate = PreparedCertificate(1, 0, block.hash, signatures)
    changes = [
        ViewChange.create(
            cluster.keys[i],
            CHAIN_ID,
            height=1,
            view=1,
            validator=i,
            prepared=certificate,
            prepared_block=block,
        )
        for i in (1, 2, 3)
    ]
    reproposal = Proposal.create(
        cluster.keys[primary_1], CHAIN_ID, view=1, validator=primary_1, block=block
    )
    new_view = NewView.create(
        cluster.keys[primary_1], CHAIN_ID, view_changes=changes, proposal=reproposal
    )
    replica.handle(PeerMessage(encode_message(new_view), primary_1))
    status = replica.status()
    assert (status.view, status.view_active) == (1, True), "the new view was accepted"
    # Late view-0 prepares and commits from validators 1 and 2 arrive.
    actions: list[Action] = []
    for phase in (Phase.PREPARE, Phase.COMMIT):
        for validator in (1, 2):
            vote = _vote(cluster, phase, 0, block.hash, validator)
            actions += replica.handle(PeerMessage(encode_message(vote), validator))
    commits = [a for a in actions if isinstance(a, Commit)]
    if bug is None:
        assert not commits, "two view-1 commits are no quorum"
        assert any(isinstance(a, Dropped) and a.reason is DropReason.STALE for a in actions)
    else:
        assert len(commits) == 1
        with pytest.raises(CertificateError):
            verify_certificate(commits[0].certificate, cluster.validators, CHAIN_ID)


@pytest.mark.parametrize("bug", [None, PlantedBug.SYNC_WITHOUT_CERTIFICATE])
def test_synced_blocks_need_a_valid_certificate(bug: PlantedBug | None) -> None:
    replica, cluster = _single_replica(bug)
    block = build_block(cluster, height=1, view=0, proposer=1, tag=b"forged")
    # Signed by three keys that are not validators.
    strangers = make_keys(7)[4:]
    assert make_validators(strangers) != cluster.validators
    forged = CommitCertificate(
        1,
        0,
        block.hash,
        tuple(
            (i + 1, _vote(Cluster(7), Phase.COMMIT, 0, block.hash, i + 4).signature)
            for i in range(3)
        ),
    )
    actions = replica.handle(SyncedBlock(block, forged))
    commits = [a for a in actions if isinstance(a, Commit)]
    if bug is None:
        assert not commits
        assert [a.reason for a in actions if isinstance(a, Dropped)] == [
            DropReason.INVALID_CERTIFICATE
        ]
    else:
        assert [c.block.hash for c in commits] == [block.hash]
    assert not any(isinstance(a, Broadcast) for a in actions)


@pytest.mark.parametrize(
    ("bug", "cached_signature"),
    [
        (None, True),
        (None, False),
        (PlantedBug.SIGNATURE_CACHE_IGNORES_SIGNER, True),
        (PlantedBug.NEW_VIEW_UNCHECKED_SIGNATURES, False),
    ],
)
def test_forged_view_changes_in_a_new_view_fork_the_chain_only_with_the_bug(
    bug: PlantedBug | None, cached_signature: bool
) -> None:
    """Replica 0 committed d; the byzantine primary of view 1 gets replicas 1 and 3 to accept
    a fresh d' through view changes it forged (with its own cached signature, or with none)."""
    cluster = Cluster(4, config=config_with(bug))
    d = commit_d_on_one_replica(cluster)
    d_prime = new_view_from_forged_view_changes(cluster, cached_signature=cached_signature)
    decided = {cluster.nodes[i].chain[0][0].hash for i in (1, 3) if cluster.nodes[i].chain}
    if bug is None:
        assert decided <= {d.hash}
        cluster.deliver_filter = None
        cluster.release_held()
        cluster.run_until(lambda: cluster.all_reached(1, nodes=[0, 1, 3]))
        cluster.assert_agreement()
    else:
        assert decided == {d_prime.hash}, "d' committed on 1 and 3 while 0 committed d"
