"""Each planted bug is a real switch: the same story goes right without it and wrong with it."""

from __future__ import annotations

import pytest

from consensus.messages import (
    Message,
    NewView,
    PreparedCertificate,
    Proposal,
    ViewChange,
    decode_message,
    encode_message,
)
from consensus.replica import (
    Action,
    BlockExecuted,
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
from consensus.types import (
    Block,
    CertificateError,
    CommitCertificate,
    Phase,
    Vote,
    verify_certificate,
)
from tests.consensus_harness import (
    CHAIN_ID,
    GENESIS_APP_HASH,
    GENESIS_HASH,
    GENESIS_TIME_MS,
    Cluster,
    build_block,
    make_keys,
    make_validators,
    next_app_hash,
    prepared_certificate,
    proposal,
    view_change,
    vote,
)
from tests.test_consensus_byzantine import (
    commit_d_on_one_replica,
    new_view_from_forged_view_changes,
)


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


def _replica_at_height_2(bug: PlantedBug | None, index: int) -> tuple[Replica, Cluster, Block]:
    """Replica ``index`` with block P committed at height 1 (it took view 1 there: P was
    proposed by the view-1 primary and prepared and committed in view 1). Returns P."""
    cluster = Cluster(4)  # keys, validators and signing helpers only
    replica = Replica(
        config_with(bug),
        chain_id=CHAIN_ID,
        validators=cluster.validators,
        key=cluster.keys[index],
        tip=ChainTip(0, GENESIS_HASH, GENESIS_APP_HASH, GENESIS_TIME_MS),
    )
    replica.handle(Start(cluster.now_ms))
    proposer = primary_index(cluster.validators, 1, 1)
    block_p = build_block(cluster, height=1, view=1, proposer=proposer, tag=b"P")
    commits = [
        vote(cluster, Phase.COMMIT, height=1, view=1, block_hash=block_p.hash, validator=i)
        for i in (1, 2, 3)
    ]
    actions = replica.handle(SyncedBlock(block_p, CommitCertificate.from_votes(commits)))
    assert [a.block.hash for a in actions if isinstance(a, Commit)] == [block_p.hash]
    replica.handle(BlockExecuted(1, next_app_hash(GENESIS_APP_HASH, block_p)))
    cluster.nodes[0].chain.append((block_p, CommitCertificate.from_votes(commits)))
    cluster.nodes[0].app_hash = next_app_hash(GENESIS_APP_HASH, block_p)
    return replica, cluster, block_p


@pytest.mark.parametrize("bug", [None, PlantedBug.PREPARED_FROM_OTHER_HEIGHT])
def test_a_certificate_from_another_height_must_not_outrank_this_heights(
    bug: PlantedBug | None,
) -> None:
    """Height 2: replica 1 prepared and commit-voted block d in view 0 (as did validator 2,
    which may have committed it). Byzantine 0, primary of view 2, sends a new view whose own
    view change carries the genuine view-1 prepared certificate of block P from height 1: it
    outranks d's view-0 certificate, cannot be re-proposed, and with the bug lets the new view
    propose a fresh d'. Replica 1 must refuse it; with the bug it commits d'."""
    byzantine = 0
    replica, cluster, block_p = _replica_at_height_2(bug, 1)
    assert primary_index(cluster.validators, 2, 2) == byzantine
    proposer = primary_index(cluster.validators, 2, 0)
    d = build_block(cluster, height=2, view=0, proposer=proposer, tag=b"d")
    actions = replica.handle(
        PeerMessage(encode_message(proposal(cluster, d, view=0, validator=proposer)), proposer)
    )
    actions += replica.handle(ValidityVerdict(d.hash, True))
    for i in (0, 2):
        prepare = vote(cluster, Phase.PREPARE, height=2, view=0, block_hash=d.hash, validator=i)
        actions += replica.handle(PeerMessage(encode_message(prepare), i))
    sent = [decode_message(a.message) for a in actions if isinstance(a, Broadcast)]
    assert any(isinstance(m, Vote) and m.phase is Phase.COMMIT for m in sent), "commit-voted d"

    stale = prepared_certificate(cluster, block_p, view=1, signers=[1, 2, 3])
    changes = [
        view_change(cluster, byzantine, height=2, view=2, prepared=stale),
        view_change(
            cluster,
            2,
            height=2,
            view=2,
            prepared=prepared_certificate(cluster, d, view=0, signers=[0, 1, 2]),
            block=d,
        ),
        view_change(cluster, 3, height=2, view=2),
    ]
    d_prime = build_block(cluster, height=2, view=2, proposer=byzantine, tag=b"d-prime")
    new_view = NewView.create(
        cluster.keys[byzantine],
        CHAIN_ID,
        view_changes=changes,
        proposal=proposal(cluster, d_prime, view=2, validator=byzantine),
    )
    actions = replica.handle(PeerMessage(encode_message(new_view), byzantine))
    actions += replica.handle(ValidityVerdict(d_prime.hash, True))
    for phase in (Phase.PREPARE, Phase.COMMIT):
        for i in (byzantine, 3):
            message = vote(cluster, phase, height=2, view=2, block_hash=d_prime.hash, validator=i)
            actions += replica.handle(PeerMessage(encode_message(message), i))
    commits = [a.block.hash for a in actions if isinstance(a, Commit)]
    if bug is None:
        assert not commits
        problems = [a.detail for a in actions if isinstance(a, Dropped)]
        assert any("prepared certificate is for height 1, not 2" in p for p in problems)
    else:
        assert commits == [d_prime.hash], "d' committed over a d that may be committed"
