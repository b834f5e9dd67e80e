"""Properties: quorum arithmetic, certificate checks, message codec, and no forks under any
delivery order among 4 replicas."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.evidence import Evidence, EvidenceError, SignedStatement, verify_evidence
from consensus.messages import (
    BlockRequest,
    MessageError,
    NewView,
    Proposal,
    ViewChange,
    decode_message,
    encode_message,
)
from consensus.replica import ReplicaConfig
from consensus.types import (
    CertificateError,
    CommitCertificate,
    Phase,
    Vote,
    quorum_size,
    verify_certificate,
)
from tests.consensus_harness import CHAIN_ID, Cluster, make_keys, make_validators
from tests.test_consensus_scenarios import build_block

KEYS = make_keys(7)
VALIDATORS = make_validators(KEYS[:4])
BLOCK_HASH = bytes(range(32))


@given(st.integers(min_value=1, max_value=400))
def test_any_two_quorums_share_an_honest_validator_and_honest_ones_form_a_quorum(n: int) -> None:
    q = quorum_size(n)
    f = (n - 1) // 3
    assert 2 * q - n >= f + 1  # overlap of two quorums exceeds the byzantine count
    assert q <= n - f  # the honest validators alone can make progress
    if n % 3 == 1:
        assert q == 2 * f + 1


def commit_signature(signer: int, *, height: int = 1, view: int = 0) -> bytes:
    return Vote.create(
        KEYS[signer],
        CHAIN_ID,
        phase=Phase.COMMIT,
        height=height,
        view=view,
        block_hash=BLOCK_HASH,
        validator=signer,
    ).signature


@given(st.sets(st.integers(min_value=0, max_value=3), min_size=3, max_size=4))
def test_certificates_of_a_quorum_verify(signers: set[int]) -> None:
    certificate = CommitCertificate(
        1, 0, BLOCK_HASH, tuple((i, commit_signature(i)) for i in sorted(signers))
    )
    verify_certificate(certificate, VALIDATORS, CHAIN_ID, block_hash=BLOCK_HASH, height=1)


@given(
    st.sampled_from(["forged", "duplicate", "outsider", "too_few", "wrong_view", "wrong_chain"]),
    st.integers(min_value=0, max_value=3),
)
def test_certificate_verification_rejects_bad_signatures(flaw: str, victim: int) -> None:
    entries = {i: commit_signature(i) for i in range(4)}
    pairs = sorted(entries.items())
    if flaw == "forged":
        pairs[victim] = (victim, commit_signature((victim + 1) % 4))
    elif flaw == "duplicate":
        pairs = [*pairs[:2], pairs[1]]
    elif flaw == "outsider":
        pairs = [*pairs[:2], (5, commit_signature(5))]
    elif flaw == "too_few":
        pairs = pairs[:2]
    elif flaw == "wrong_view":
        pairs[victim] = (victim, commit_signature(victim, view=1))
    certificate = CommitCertificate(1, 0, BLOCK_HASH, tuple(pairs))
    chain = "other-chain" if flaw == "wrong_chain" else CHAIN_ID
    with pytest.raises(CertificateError):
        verify_certificate(certificate, VALIDATORS, chain)


@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_raises_only_message_error(data: bytes) -> None:
    with contextlib.suppress(MessageError):
        decode_message(data)


def test_every_message_kind_round_trips_and_rejects_truncation() -> None:
    cluster = Cluster(4)
    block = build_block(cluster, height=1, view=0, proposer=1, tag=b"payload")
    proposal = Proposal.create(KEYS[1], CHAIN_ID, view=0, validator=1, block=block)
    change = ViewChange.create(
        KEYS[2], CHAIN_ID, height=1, view=1, validator=2, prepared=None, prepared_block=None
    )
    new_view = NewView.create(
        KEYS[2],
        CHAIN_ID,
        view_changes=[change],
        proposal=Proposal.create(KEYS[2], CHAIN_ID, view=1, validator=2, block=block),
    )
    vote = Vote.create(
        KEYS[0], CHAIN_ID, phase=Phase.PREPARE, height=1, view=0, block_hash=block.hash, validator=0
    )
    for message in (proposal, change, new_view, vote, BlockRequest(1, 5)):
        data = encode_message(message)
        assert decode_message(data) == message
        with pytest.raises(MessageError):
            decode_message(data[:-1])
        with pytest.raises(MessageError):
            decode_message(data, bytes_max=len(data) - 1)
    assert proposal.signature_valid(VALIDATORS, CHAIN_ID)
    assert not proposal.signature_valid(VALIDATORS, "other-chain")
    assert new_view.signature_valid(VALIDATORS, CHAIN_ID)


def test_evidence_round_trips_and_verifies_offline() -> None:
    votes = [
        Vote.create(
            KEYS[3], CHAIN_ID, phase=Phase.COMMIT, height=4, view=2, block_hash=h, validator=3
        )
        for h in (bytes(32), bytes([1]) * 32)
    ]
    statements = [SignedStatement.of_vote(v) for v in votes]
    evidence = Evidence.of(statements[1], statements[0])
    assert Evidence.of(statements[0], statements[1]) == evidence
    assert Evidence.decode(evidence.encode()) == evidence
    verify_evidence(evidence, VALIDATORS, CHAIN_ID)
    with pytest.raises(EvidenceError):
        verify_evidence(evidence, VALIDATORS, "other-chain")
    with pytest.raises(EvidenceError):
        Evidence.of(statements[0], statements[0])
    with pytest.raises(EvidenceError):
        Evidence.decode(b"\x92\x01\x02")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    drop_every=st.sampled_from([0, 3, 5, 7]),
    crashed=st.sampled_from([None, 0, 1, 2, 3]),
)
def test_random_delivery_orders_never_commit_two_blocks_at_one_height(
    seed: int, drop_every: int, crashed: int | None
) -> None:
    cluster = Cluster(4, seed=seed, config=ReplicaConfig(view_timeout_base_ms=400))
    cluster.drop_every = drop_every
    if crashed is not None:
        cluster.crash(crashed)
    cluster.start()
    alive = [i for i in range(4) if i != crashed]
    cluster.run_until(lambda: cluster.all_reached(3, nodes=alive), max_ms=300_000)
    cluster.held.clear()
    cluster.assert_agreement()
