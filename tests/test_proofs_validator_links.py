"""Proofs across validator-set changes: a client that trusts only the genesis set reaches the set
that certifies a proof through the proof's validator links, and a node cannot invent, move or
hide a change.

The chain is real: the consensus harness runs four replicas whose set rotates three of its four
keys at height 4, so no certificate from height 4 on verifies against the genesis set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from apps.merkle import ProofError
from apps.proofs import QueryProof, ValidatorLink, certifying_validators, verify_query_proof
from consensus.crypto import PrivateKey, hash_bytes
from consensus.types import Block, CommitCertificate, Validator, ValidatorSet
from tests.consensus_harness import CHAIN_ID, Cluster, make_keys, make_validators

CHANGE_HEIGHT = 4
ROTATED = (0, 1, 2)


def rotated(index: int) -> PrivateKey:
    return PrivateKey(hash_bytes(f"proof-rotated-{index}".encode()))


def rotate(validators: ValidatorSet) -> ValidatorSet:
    members = list(validators.validators)
    for index in ROTATED:
        members[index] = dataclasses.replace(members[index], public_key=rotated(index).public_key)
    return ValidatorSet(tuple(members))


@pytest.fixture(scope="module")
def chain() -> list[tuple[Block, CommitCertificate]]:
    cluster = Cluster(
        4,
        standby={index: [rotated(index)] for index in ROTATED},
        schedule=lambda genesis: genesis.with_change(CHANGE_HEIGHT, rotate(genesis.genesis)),
    )
    cluster.start()
    cluster.run_until(lambda: cluster.all_reached(8))
    cluster.assert_agreement()
    return cluster.nodes[0].chain


def genesis_set() -> ValidatorSet:
    return make_validators(make_keys(4))


def link_at(chain: list[tuple[Block, CommitCertificate]], effective: int) -> ValidatorLink:
    block, certificate = chain[effective - 2]  # block effective - 1
    return ValidatorLink(effective, rotate(genesis_set()), block.header, certificate)


def proof_at(
    chain: list[tuple[Block, CommitCertificate]],
    block_height: int,
    links: tuple[ValidatorLink, ...],
) -> QueryProof:
    block, certificate = chain[block_height - 1]
    return QueryProof(block_height - 1, block.header, certificate, (), links)


def test_the_links_lead_from_genesis_to_the_set_that_certifies(
    chain: list[tuple[Block, CommitCertificate]],
) -> None:
    proof = proof_at(chain, 7, (link_at(chain, CHANGE_HEIGHT),))
    assert certifying_validators(proof, genesis_set(), CHAIN_ID) == rotate(genesis_set())
    assert verify_query_proof(proof, genesis_set(), CHAIN_ID) == {}
    again = QueryProof.decode(proof.encode())
    assert again == proof
    assert verify_query_proof(again, genesis_set(), CHAIN_ID) == {}
    # Before the change no link is needed, and a proof of then carries none.
    early = proof_at(chain, 3, ())
    assert certifying_validators(early, genesis_set(), CHAIN_ID) == genesis_set()


def _hide(proof: QueryProof) -> QueryProof:
    return dataclasses.replace(proof, links=())


def _other_set(proof: QueryProof) -> QueryProof:
    own = [PrivateKey(hash_bytes(f"attacker-{i}".encode())) for i in range(4)]
    forged = ValidatorSet(tuple(Validator(f"a{i}", key.public_key) for i, key in enumerate(own)))
    return dataclasses.replace(
        proof, links=(dataclasses.replace(proof.links[0], validators=forged),)
    )


def _moved(proof: QueryProof) -> QueryProof:
    return dataclasses.replace(
        proof, links=(dataclasses.replace(proof.links[0], effective=CHANGE_HEIGHT + 1),)
    )


def _wrong_certificate(
    chain: list[tuple[Block, CommitCertificate]],
) -> Callable[[QueryProof], QueryProof]:
    def change(proof: QueryProof) -> QueryProof:
        other = chain[0][1]  # block 1's certificate under block 3's header
        return dataclasses.replace(
            proof, links=(dataclasses.replace(proof.links[0], certificate=other),)
        )

    return change


def _short_certificate(proof: QueryProof) -> QueryProof:
    certificate = proof.links[0].certificate
    short = dataclasses.replace(certificate, signatures=certificate.signatures[:1])
    return dataclasses.replace(
        proof, links=(dataclasses.replace(proof.links[0], certificate=short),)
    )


def _twice(proof: QueryProof) -> QueryProof:
    return dataclasses.replace(proof, links=(proof.links[0], proof.links[0]))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hidden change", "certificate of block 7"),
        ("another set", "does not name the validator set"),
        ("moved change", "does not carry block 4"),
        ("certificate of another block", "certificate of block 3"),
        ("certificate without a quorum", "certificate of block 3"),
        ("the same change twice", "increasing height order"),
    ],
)
def test_a_node_cannot_invent_move_or_hide_a_change(
    chain: list[tuple[Block, CommitCertificate]], name: str, expected: str
) -> None:
    tampers: dict[str, Callable[[QueryProof], QueryProof]] = {
        "hidden change": _hide,
        "another set": _other_set,
        "moved change": _moved,
        "certificate of another block": _wrong_certificate(chain),
        "certificate without a quorum": _short_certificate,
        "the same change twice": _twice,
    }
    honest = proof_at(chain, 7, (link_at(chain, CHANGE_HEIGHT),))
    verify_query_proof(honest, genesis_set(), CHAIN_ID)
    tampered = tampers[name](honest)
    with pytest.raises(ProofError, match=expected):
        verify_query_proof(tampered, genesis_set(), CHAIN_ID)
    with pytest.raises(ProofError, match=expected):
        verify_query_proof(QueryProof.decode(tampered.encode()), genesis_set(), CHAIN_ID)


def test_a_change_after_the_certified_block_is_refused(
    chain: list[tuple[Block, CommitCertificate]],
) -> None:
    proof = proof_at(chain, 3, (link_at(chain, CHANGE_HEIGHT),))
    with pytest.raises(ProofError, match="after the certified block 3"):
        verify_query_proof(proof, genesis_set(), CHAIN_ID)


def test_malformed_links_are_named() -> None:
    with pytest.raises(ProofError, match="effective height must be an integer from 2"):
        ValidatorLink.from_fields((1, (), (), ()))
    with pytest.raises(ProofError, match="a validator link is"):
        ValidatorLink.from_fields((4, ()))
