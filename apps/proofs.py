"""Proven query answers: an app query, the state values it read, and Merkle proofs of them.

Theory of operation
-------------------
An app's ``query`` is a pure function of the state it reads. A node answering with a proof
runs the query over a ``ReadRecorder`` that remembers every key the query read (present or
absent), and sends the answer with a ``QueryProof``: those keys with their values, a Merkle
proof of each (``apps.merkle``) against the app hash of the state it read, and the header and
commit certificate of the block that carries that app hash (the app hash after height h is in
block h+1's header, which certificate h+1 signs).

A client trusts only the genesis validator set. When the set has changed since genesis, the
proof carries a ``ValidatorLink`` per change: the new set, and the header and certificate of
the block before it takes effect, which names the new set's hash as its next validators.
``verify_query_proof`` walks them from genesis (each link certified by the set in force at its
height, as state sync does), so the node can neither invent, move nor hide a change: a hidden
change leaves a certificate that the stale set does not verify, unless a quorum of the stale
set signs it (the chain's fault assumption: at most f of each set's validators byzantine, after
they leave too). It then checks the answer's
certificate against the set in force at its height, that the header is the certified block and
belongs to the claimed height, and every key's proof against the header's app hash. The client
then runs the query itself, with its own copy of the app, over ``ProvenReads`` (the proven
values, nothing else): a node that lied about a value, left a read out or changed the answer is
caught, since the client's answer comes from proven values alone. A read the proof does not
cover is refused even when the query's own code catches the error and answers anyway:
``ProvenReads`` remembers it, and the client checks once the query has ended.

Only queries that read single keys can be proven: the tree is ordered by key hash, so it can
prove a key's value or its absence but not that a range scan missed nothing. A query that scans
raises ``ProofUnsupported`` on the node (and the same on the client).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from apps.merkle import PROOF_LIMITS, Proof, ProofError, verify
from consensus.codec import CodecError, Limits, Value, decode, encode
from consensus.types import (
    BlockHeader,
    CertificateError,
    CommitCertificate,
    DecodeError,
    ValidatorSchedule,
    ValidatorSet,
    verify_certificate,
)

__all__ = [
    "PROVEN_READS_MAX",
    "VALIDATOR_LINKS_MAX",
    "ProofUnsupported",
    "ProvenReads",
    "QueryProof",
    "ReadRecorder",
    "ValidatorLink",
    "certifying_validators",
    "verify_query_proof",
]

# Keys one proven query may read: a proof per key, so this bounds the answer's size (64 proofs
# of at most ~64 KiB each); the single-key queries worth proving read one to a handful.
PROVEN_READS_MAX: Final = 64
# Validator-set changes one proof may walk from genesis: one can take effect at most every two
# heights, so this covers years of governance; past it the node answers ``not_provable``.
VALIDATOR_LINKS_MAX: Final = 1024
# How much of a key a refusal shows: a hostile node's keys may be long, its messages stay short.
_KEY_SHOWN_BYTES: Final = 64
# A proven answer is one HTTP response: 16 MiB at most; one value is an app record (the apps
# bound them to 1 MiB) and one key's proof is at most ``PROOF_LIMITS``.
_QUERY_PROOF_LIMITS: Final = Limits(
    total_bytes_max=16 * 1024 * 1024,
    depth_max=8,
    str_bytes_max=256,
    bytes_max=max(1024 * 1024, PROOF_LIMITS.total_bytes_max),
    array_len_max=1024,
    map_len_max=16,
)


class ProofUnsupported(Exception):
    """The query cannot be proven (it scans a range, or reads too many keys)."""


class _Getter(Protocol):
    """What ``ReadRecorder`` reads from."""

    def get(self, key: bytes) -> bytes | None:
        """The value at ``key``."""
        ...


_Refusal = TypeVar("_Refusal", ProofError, ProofUnsupported)


class _RefusingReads:
    """What ``ReadRecorder`` and ``ProvenReads`` share: scans and tree reads are refused, and
    the first refusal is kept in ``refused`` (a query's own code may catch it and answer
    anyway; the caller checks once the query has ended)."""

    def __init__(self) -> None:
        self.refused: ProofError | ProofUnsupported | None = None

    def scan(
        self, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Refused: a range cannot be proven complete."""
        raise self._refuse(
            ProofUnsupported(
                "the query reads a range of keys; proofs cover queries that read single keys"
            )
        )

    def tree_node(self, key: bytes) -> bytes | None:
        """Not available: queries never read the tree."""
        raise self._refuse(ProofUnsupported("a query does not read the Merkle tree"))

    def _refuse(self, error: _Refusal) -> _Refusal:
        """``error``, kept in ``refused`` when it is the first."""
        if self.refused is None:
            self.refused = error
        return error


class ReadRecorder(_RefusingReads):
    """A read-only state over ``state`` (anything with ``get``) that records every key read
    and its value; scans raise ``ProofUnsupported``. Used by a node answering with a proof.

    As on the client (``ProvenReads``), the query's own code may catch a refusal and answer
    anyway, an answer the client would refuse: the first refusal is kept in ``refused``, and
    ``recorded_query`` makes the query unprovable whenever it met one."""

    def __init__(self, state: _Getter) -> None:
        super().__init__()
        self._state = state
        self.reads: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        """The value at ``key`` (recorded)."""
        if key in self.reads:
            return self.reads[key]
        if len(self.reads) >= PROVEN_READS_MAX:
            raise self._refuse(
                ProofUnsupported(f"the query reads more than {PROVEN_READS_MAX} keys")
            )
        value = self.reads[key] = self._state.get(key)
        return value


def recorded_query(
    query: Callable[[ReadRecorder], Value], state: _Getter
) -> tuple[Value, dict[bytes, bytes | None]]:
    """``query`` run over a ``ReadRecorder`` of ``state``: its answer and the keys it read
    with their values; ``ProofUnsupported`` when it met a refusal, however it ended (it may
    have caught it and answered, or failed in another way)."""
    recorder = ReadRecorder(state)
    try:
        result = query(recorder)
    except Exception:
        if recorder.refused is not None:
            raise recorder.refused from None
        raise
    if recorder.refused is not None:
        raise recorder.refused
    return result, recorder.reads


class ProvenReads(_RefusingReads):
    """A read-only state holding only proven values; reading any other key raises
    ``ProofError`` (the node left a read out of its proof), and scanning raises
    ``ProofUnsupported``. Used by a verifying client.

    The query's own code may catch that error (an app that catches ``ValueError`` catches a
    ``ProofError`` too) and answer from a state the proof does not show, which is what a node
    that left the read out would answer: so the first refusal is also kept in ``refused``, and
    the client refuses an answer whose query met one, however the query ended."""

    def __init__(self, values: Mapping[bytes, bytes | None]) -> None:
        super().__init__()
        self._values = dict(values)

    def get(self, key: bytes) -> bytes | None:
        """The proven value at ``key``."""
        if key not in self._values:
            raise self._refuse(
                ProofError(f"the answer reads key {_shown(key)}, which the proof does not cover")
            )
        return self._values[key]


@dataclass(frozen=True, slots=True)
class ValidatorLink:
    """One validator-set change on the way from genesis: ``validators`` are in force from
    ``effective``; ``header`` is block ``effective - 1``, which names their hash as its next
    validators, and ``certificate`` is its commit certificate (by the set in force then)."""

    effective: int
    validators: ValidatorSet
    header: BlockHeader
    certificate: CommitCertificate

    def fields(self) -> Value:
        """The encodable form."""
        return (
            self.effective,
            self.validators.fields(),
            self.header.fields(),
            self.certificate.fields(),
        )

    @classmethod
    def from_fields(cls, value: Value) -> ValidatorLink:
        """Parse; ``ProofError`` naming the problem when malformed."""
        if not (isinstance(value, tuple) and len(value) == 4):
            raise ProofError("a validator link is (effective height, set, header, certificate)")
        effective, validators, header, certificate = value
        if not isinstance(effective, int) or isinstance(effective, bool) or effective < 2:
            raise ProofError("a validator link's effective height must be an integer from 2")
        try:
            return cls(
                effective,
                ValidatorSet.from_fields(validators),
                BlockHeader.from_fields(header),
                CommitCertificate.from_fields(certificate),
            )
        except DecodeError as error:
            raise ProofError(f"validator link at {effective}: {error}") from None


@dataclass(frozen=True, slots=True)
class QueryProof:
    """The state a query read, proven: ``reads`` are (key, value or None, proof) as of the
    state after ``height``, whose app hash ``header`` (block height + 1) carries and
    ``certificate`` certifies; ``links`` are the validator-set changes in force by then."""

    height: int
    header: BlockHeader
    certificate: CommitCertificate
    reads: tuple[tuple[bytes, bytes | None, Proof], ...]
    links: tuple[ValidatorLink, ...] = ()

    def encode(self) -> bytes:
        """Canonical bytes."""
        value: Value = (
            self.height,
            self.header.fields(),
            self.certificate.fields(),
            tuple((key, value, proof.encode()) for key, value, proof in self.reads),
            tuple(link.fields() for link in self.links),
        )
        return encode(value, _QUERY_PROOF_LIMITS)

    @classmethod
    def decode(cls, data: bytes) -> QueryProof:
        """Parse; ``ProofError`` naming the problem when malformed."""
        try:
            value = decode(data, _QUERY_PROOF_LIMITS)
        except CodecError as error:
            raise ProofError(f"query proof does not decode: {error}") from None
        if not (isinstance(value, tuple) and len(value) == 5):
            raise ProofError("a query proof is (height, header, certificate, reads, links)")
        height, header_fields, certificate_fields, raw_reads, raw_links = value
        if not isinstance(height, int) or isinstance(height, bool) or height < 0:
            raise ProofError("a query proof's height must be a non-negative integer")
        try:
            header = BlockHeader.from_fields(header_fields)
            certificate = CommitCertificate.from_fields(certificate_fields)
        except DecodeError as error:
            raise ProofError(f"query proof's block: {error}") from None
        if not isinstance(raw_reads, tuple) or len(raw_reads) > PROVEN_READS_MAX:
            raise ProofError(f"a query proof holds at most {PROVEN_READS_MAX} reads")
        reads: list[tuple[bytes, bytes | None, Proof]] = []
        for raw in raw_reads:
            if not (
                isinstance(raw, tuple)
                and len(raw) == 3
                and isinstance(raw[0], bytes)
                and (raw[1] is None or isinstance(raw[1], bytes))
                and isinstance(raw[2], bytes)
            ):
                raise ProofError("a proven read is (key, value or nil, proof)")
            key, read_value, proof = raw
            assert isinstance(key, bytes)
            assert isinstance(proof, bytes)
            assert read_value is None or isinstance(read_value, bytes)
            reads.append((key, read_value, Proof.decode(proof)))
        if not isinstance(raw_links, tuple) or len(raw_links) > VALIDATOR_LINKS_MAX:
            raise ProofError(f"a query proof holds at most {VALIDATOR_LINKS_MAX} validator links")
        links = tuple(ValidatorLink.from_fields(raw) for raw in raw_links)
        return cls(height, header, certificate, tuple(reads), links)


def certifying_validators(
    proof: QueryProof, genesis_validators: ValidatorSet, chain_id: str
) -> ValidatorSet:
    """The validator set in force at the proof's certified block, reached from
    ``genesis_validators`` through the proof's links, each checked: increasing heights up to
    the certified block, the link block of this chain and height, certified by the set in force
    at its height, and naming the new set's hash. Raises ``ProofError`` naming the first
    failure."""
    top = proof.header.height
    schedule = ValidatorSchedule(genesis_validators)
    previous = 1
    for link in proof.links:
        effective = link.effective
        if effective <= previous:
            raise ProofError("validator links must come in increasing height order, from 2")
        if effective > top:
            raise ProofError(
                f"a validator link takes effect at {effective}, after the certified block {top}"
            )
        header = link.header
        if header.chain_id != chain_id or header.height != effective - 1:
            raise ProofError(
                f"the validator link at {effective} does not carry block {effective - 1} of"
                f" chain {chain_id!r}"
            )
        try:
            verify_certificate(
                link.certificate,
                schedule.at(effective - 1),
                chain_id,
                block_hash=header.hash(),
                height=header.height,
            )
        except CertificateError as error:
            raise ProofError(
                f"certificate of block {header.height} (validator change at {effective}): {error}"
            ) from None
        if header.next_validators_hash != link.validators.hash():
            raise ProofError(
                f"block {header.height} does not name the validator set said to take effect at"
                f" {effective}"
            )
        schedule = schedule.with_change(effective, link.validators)
        previous = effective
    return schedule.at(top)


def verify_query_proof(
    proof: QueryProof, genesis_validators: ValidatorSet, chain_id: str
) -> dict[bytes, bytes | None]:
    """The proven (key -> value or None) map of ``proof``, once its certificate verifies on
    ``chain_id`` against the set in force at its block (``certifying_validators``, from
    ``genesis_validators``), its header is the certified block at ``height + 1``, and every
    read's Merkle proof verifies against that header's app hash. Raises ``ProofError`` naming
    the first check that fails."""
    header = proof.header
    if header.chain_id != chain_id:
        raise ProofError(f"the certifying block is for chain {header.chain_id!r}, not {chain_id!r}")
    if header.height != proof.height + 1:
        raise ProofError(
            f"the state after height {proof.height} is certified by block {proof.height + 1}, "
            f"not by block {header.height}"
        )
    validators = certifying_validators(proof, genesis_validators, chain_id)
    try:
        verify_certificate(
            proof.certificate,
            validators,
            chain_id,
            block_hash=header.hash(),
            height=header.height,
        )
    except CertificateError as error:
        raise ProofError(f"certificate of block {header.height}: {error}") from None
    values: dict[bytes, bytes | None] = {}
    for key, value, key_proof in proof.reads:
        if key in values:
            raise ProofError(f"key {_shown(key)} is proven twice")
        try:
            verify(header.app_hash, key, value, key_proof)
        except ProofError as error:
            raise ProofError(f"key {_shown(key)}: {error}") from None
        values[key] = value
    return values


def _shown(key: bytes) -> str:
    """``key`` for a message: its first ``_KEY_SHOWN_BYTES`` bytes, and its length if longer."""
    if len(key) <= _KEY_SHOWN_BYTES:
        return repr(key)
    return f"{key[:_KEY_SHOWN_BYTES]!r}... ({len(key)} bytes)"
