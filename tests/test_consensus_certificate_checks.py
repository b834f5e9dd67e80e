"""A synced block's certificate is checked once in a node: ``CertificateChecks`` answers a
check that passed before from memory and gives ``verify_certificate``'s answer to every other
one, and the replica shares its driver's ``CertificateChecks`` and takes the message its driver
already decoded."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.messages import decode_message, encode_block_response
from consensus.replica import (
    ChainTip,
    Commit,
    Dropped,
    DropReason,
    PeerMessage,
    Replica,
    ReplicaConfig,
    Start,
)
from consensus.types import (
    Block,
    CertificateChecks,
    CertificateError,
    CommitCertificate,
    ValidatorSet,
    verify_certificate,
)
from tests.consensus_harness import (
    CHAIN_ID,
    GENESIS_APP_HASH,
    GENESIS_HASH,
    GENESIS_TIME_MS,
    Cluster,
    count_certificate_signature_checks,
    make_keys,
    make_validators,
)


@functools.cache
def _chain() -> tuple[ValidatorSet, tuple[tuple[Block, CommitCertificate], ...]]:
    """Four validators' first three committed blocks with their certificates."""
    cluster = Cluster(4)
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(3, nodes=[0, 1, 2, 3]))
    return cluster.validators, tuple(cluster.nodes[0].chain[:3])


def _outcome(
    check: Callable[..., None],
    certificate: CommitCertificate,
    validators: ValidatorSet,
    chain_id: str,
    block_hash: bytes | None,
    height: int | None,
) -> str | None:
    """None when ``check`` passes the certificate, else its refusal."""
    try:
        check(certificate, validators, chain_id, block_hash=block_hash, height=height)
    except CertificateError as error:
        return str(error)
    return None


def test_a_check_that_passed_is_answered_from_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    validators, entries = _chain()
    block, certificate = entries[0]
    calls = count_certificate_signature_checks(monkeypatch)
    checks = CertificateChecks()
    checks.verify(certificate, validators, CHAIN_ID, block_hash=block.hash, height=block.height)
    assert calls[0] == len(certificate.signatures)
    checks.verify(certificate, validators, CHAIN_ID, block_hash=block.hash, height=block.height)
    assert calls[0] == len(certificate.signatures)
    assert checks.hits == 1


def test_a_check_that_failed_fails_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    validators, entries = _chain()
    block, certificate = entries[0]
    # The signatures cover the certificate's own view, not this one.
    forged = replace(certificate, view=certificate.view + 1)
    checks = CertificateChecks()
    for _ in range(3):
        with pytest.raises(CertificateError, match="does not verify"):
            checks.verify(forged, validators, CHAIN_ID, block_hash=block.hash, height=block.height)
    assert checks.hits == 0


def test_a_pass_answers_only_the_same_check() -> None:
    """After a pass, the same certificate against another block hash, height, chain or
    validator set gets ``verify_certificate``'s refusal, not the pass."""
    validators, entries = _chain()
    (block, certificate), (other_block, _) = entries[0], entries[1]
    others = make_validators(make_keys(8)[4:])
    checks = CertificateChecks()
    checks.verify(certificate, validators, CHAIN_ID, block_hash=block.hash, height=block.height)
    variants: list[tuple[ValidatorSet, str, bytes, int]] = [
        (validators, CHAIN_ID, other_block.hash, block.height),
        (validators, CHAIN_ID, block.hash, other_block.height),
        (validators, "another-chain", block.hash, block.height),
        (others, CHAIN_ID, block.hash, block.height),
    ]
    for known, chain_id, block_hash, height in variants:
        expected = _outcome(verify_certificate, certificate, known, chain_id, block_hash, height)
        assert expected is not None
        got = _outcome(checks.verify, certificate, known, chain_id, block_hash, height)
        assert got == expected
    assert checks.hits == 0


def test_only_the_most_recent_passes_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    validators, entries = _chain()
    checks = CertificateChecks(kept=2)
    for block, certificate in entries:
        checks.verify(certificate, validators, CHAIN_ID, block_hash=block.hash, height=block.height)
    calls = count_certificate_signature_checks(monkeypatch)
    (first, first_certificate), (last, last_certificate) = entries[0], entries[-1]
    checks.verify(last_certificate, validators, CHAIN_ID, block_hash=last.hash, height=last.height)
    assert (calls[0], checks.hits) == (0, 1)
    checks.verify(
        first_certificate, validators, CHAIN_ID, block_hash=first.hash, height=first.height
    )
    assert (calls[0], checks.hits) == (len(first_certificate.signatures), 1)
    with pytest.raises(ValueError, match="at least one"):
        CertificateChecks(kept=0)


def test_a_certificate_with_unhashable_parts_is_checked_not_kept() -> None:
    validators, entries = _chain()
    block, certificate = entries[0]
    # Lists where the decoder makes tuples: such a certificate cannot be a dictionary key.
    pairs: tuple[object, ...] = tuple([i, signature] for i, signature in certificate.signatures)
    odd = replace(certificate, signatures=pairs)  # type: ignore[arg-type]
    checks = CertificateChecks()
    for _ in range(2):
        checks.verify(odd, validators, CHAIN_ID, block_hash=block.hash, height=block.height)
    assert checks.hits == 0
    broken = replace(odd, view=odd.view + 1)
    with pytest.raises(CertificateError, match="does not verify"):
        checks.verify(broken, validators, CHAIN_ID, block_hash=block.hash, height=block.height)


@st.composite
def _altered(draw: st.DrawFn, certificate: CommitCertificate) -> CommitCertificate:
    """``certificate`` with any of its fields changed, or as it is."""
    signatures = list(certificate.signatures)
    change = draw(st.sampled_from(["none", "view", "height", "hash", "byte", "drop", "index"]))
    if change == "view":
        return replace(certificate, view=draw(st.integers(0, 5)))
    if change == "height":
        return replace(certificate, height=draw(st.integers(0, 5)))
    if change == "hash":
        return replace(certificate, block_hash=draw(st.binary(min_size=32, max_size=32)))
    if change == "byte":
        which = draw(st.integers(0, len(signatures) - 1))
        index, signature = signatures[which]
        at = draw(st.integers(0, len(signature) - 1))
        flipped = signature[:at] + bytes([signature[at] ^ draw(st.integers(1, 255))])
        signatures[which] = (index, flipped + signature[at + 1 :])
    elif change == "drop":
        del signatures[draw(st.integers(0, len(signatures) - 1))]
    elif change == "index":
        which = draw(st.integers(0, len(signatures) - 1))
        signatures[which] = (draw(st.integers(0, 6)), signatures[which][1])
    return replace(certificate, signatures=tuple(signatures))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_checks_answer_as_verify_certificate_does_before_and_after_passes(
    data: st.DataObject,
) -> None:
    """Whatever certificates were checked before (genuine or altered), each check's answer is
    ``verify_certificate``'s for the same arguments."""
    validators, entries = _chain()
    checks = CertificateChecks(kept=data.draw(st.integers(1, 4)))
    for _ in range(data.draw(st.integers(1, 6))):
        certificate = data.draw(st.sampled_from(entries))[1]
        shown = data.draw(_altered(certificate))
        expected_block = data.draw(st.sampled_from(entries))[0]
        block_hash = data.draw(st.sampled_from([expected_block.hash, None]))
        height = data.draw(st.sampled_from([expected_block.height, None]))
        expected = _outcome(verify_certificate, shown, validators, CHAIN_ID, block_hash, height)
        got = _outcome(checks.verify, shown, validators, CHAIN_ID, block_hash, height)
        assert got == expected


def _replica(validators: ValidatorSet, checks: CertificateChecks | None = None) -> Replica:
    replica = Replica(
        ReplicaConfig(),
        chain_id=CHAIN_ID,
        validators=validators,
        next_validators=validators,
        key=make_keys(4)[3],
        tip=ChainTip(0, GENESIS_HASH, GENESIS_APP_HASH, GENESIS_TIME_MS),
        certificate_checks=checks,
    )
    replica.handle(Start(GENESIS_TIME_MS))
    return replica


def test_the_replica_shares_its_drivers_certificate_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A synced block whose certificate the driver has checked through the replica's
    ``CertificateChecks`` commits without its signatures verified again; a replica with
    checks of its own verifies them."""
    validators, entries = _chain()
    block, certificate = entries[0]
    data = encode_block_response([(block, certificate)])
    shared = CertificateChecks()
    shared.verify(certificate, validators, CHAIN_ID, block_hash=block.hash, height=block.height)
    calls = count_certificate_signature_checks(monkeypatch)
    actions = _replica(validators, shared).handle(PeerMessage(data, 0))
    assert [a.block for a in actions if isinstance(a, Commit)] == [block]
    assert (calls[0], shared.hits) == (0, 1)
    actions = _replica(validators).handle(PeerMessage(data, 0))
    assert [a.block for a in actions if isinstance(a, Commit)] == [block]
    assert calls[0] == len(certificate.signatures)


def test_the_replica_takes_the_message_its_driver_decoded() -> None:
    """With ``decoded`` the replica acts on the driver's decoding and does not decode the
    bytes again (here bytes that would not decode); without it, it decodes them."""
    validators, entries = _chain()
    block, certificate = entries[0]
    decoded = decode_message(encode_block_response([(block, certificate)]))
    not_a_message = b"\xc1"
    actions = _replica(validators).handle(PeerMessage(not_a_message, 0, None, decoded))
    assert [a.block for a in actions if isinstance(a, Commit)] == [block]
    actions = _replica(validators).handle(PeerMessage(not_a_message, 0))
    assert [a.reason for a in actions if isinstance(a, Dropped)] == [DropReason.MALFORMED]
    assert not [a for a in actions if isinstance(a, Commit)]
