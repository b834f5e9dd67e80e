"""Equivocation evidence: two conflicting signed statements from one validator.

An honest validator signs at most one block hash per (height, view, kind), where the kind is
proposal, prepare or commit; the replica persists its votes before sending them so even a crash
cannot make it sign twice. Two valid signatures by the same validator on different block hashes
for the same (height, view, kind) are therefore proof of misbehaviour that anyone holding the
validator set can check offline with ``verify_evidence``: an auditor, an operator, a later
governance process. Only the signed parts of the messages are kept (a ``SignedStatement``),
which is all the proof needs, so evidence stays small even when the proposals carried big blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from consensus.codec import CodecError, Limits, Value, decode, encode
from consensus.crypto import HASH_BYTES, SIGNATURE_BYTES, verify
from consensus.messages import PROPOSAL_TAG, Proposal
from consensus.types import DecodeError, Phase, ValidatorSet, Vote

__all__ = [
    "Evidence",
    "EvidenceError",
    "SignedStatement",
    "StatementKind",
    "verify_evidence",
]

# Evidence is two statements of a few hundred bytes; 4 KiB leaves room and bounds decoding.
_EVIDENCE_LIMITS: Final = Limits(
    total_bytes_max=4096,
    depth_max=4,
    str_bytes_max=64,
    bytes_max=128,
    array_len_max=8,
    map_len_max=1,
)


class EvidenceError(ValueError):
    """Evidence that does not prove equivocation (or bytes that are not evidence)."""


class StatementKind(IntEnum):
    """What a signed statement is: the signature domain it was made under."""

    PROPOSAL = 0
    PREPARE = 1
    COMMIT = 2

    @property
    def tag(self) -> bytes:
        """The signature domain tag of this kind of statement."""
        if self is StatementKind.PROPOSAL:
            return PROPOSAL_TAG
        return Phase(int(self)).tag


@dataclass(frozen=True, slots=True)
class SignedStatement:
    """One signed claim: validator ``validator`` backs ``block_hash`` at (height, view, kind)."""

    kind: StatementKind
    height: int
    view: int
    block_hash: bytes
    validator: int
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.kind, StatementKind):
            raise EvidenceError("statement kind must be a StatementKind")
        for name in ("height", "view", "validator"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63):
                raise EvidenceError(f"statement {name} must be a non-negative integer")
        if not (isinstance(self.block_hash, bytes) and len(self.block_hash) == HASH_BYTES):
            raise EvidenceError("statement block_hash must be 32 bytes")
        if not (isinstance(self.signature, bytes) and len(self.signature) == SIGNATURE_BYTES):
            raise EvidenceError("statement signature must be 64 bytes")

    @classmethod
    def of_vote(cls, vote: Vote) -> SignedStatement:
        """The signed statement a prepare or commit vote makes."""
        return cls(
            StatementKind(int(vote.phase)),
            vote.height,
            vote.view,
            vote.block_hash,
            vote.validator,
            vote.signature,
        )

    @classmethod
    def of_proposal(cls, proposal: Proposal) -> SignedStatement:
        """The signed statement a proposal makes."""
        return cls(
            StatementKind.PROPOSAL,
            proposal.height,
            proposal.view,
            proposal.block.hash,
            proposal.validator,
            proposal.signature,
        )

    def signature_valid(self, validators: ValidatorSet, chain_id: str) -> bool:
        """True when ``validator`` exists and made this statement on ``chain_id``."""
        if self.validator >= validators.size:
            return False
        payload = encode((self.height, self.view, self.block_hash))
        return verify(
            validators.public_key(self.validator), self.kind.tag, chain_id, payload, self.signature
        )

    def fields(self) -> tuple[Value, ...]:
        """Canonical field tuple."""
        return (
            int(self.kind),
            self.height,
            self.view,
            self.block_hash,
            self.validator,
            self.signature,
        )

    @classmethod
    def from_fields(cls, value: Value) -> SignedStatement:
        """Build from decoded fields, raising ``EvidenceError`` when malformed."""
        if not (isinstance(value, tuple) and len(value) == 6):
            raise EvidenceError("statement: expected 6 fields")
        kind, height, view, block_hash, validator, signature = value
        if isinstance(kind, bool) or kind not in (0, 1, 2):
            raise EvidenceError("statement kind must be 0, 1 or 2")
        assert isinstance(kind, int)
        return cls(StatementKind(kind), height, view, block_hash, validator, signature)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Evidence:
    """Two statements by one validator for the same (height, view, kind) on different blocks.

    The pair is stored in canonical order (smaller block hash first), so the same equivocation
    always yields equal ``Evidence`` and equal bytes, whichever message arrived first.
    """

    first: SignedStatement
    second: SignedStatement

    def __post_init__(self) -> None:
        a, b = self.first, self.second
        if (a.kind, a.height, a.view, a.validator) != (b.kind, b.height, b.view, b.validator):
            raise EvidenceError("statements are not from one validator at one height/view/kind")
        if a.block_hash == b.block_hash:
            raise EvidenceError("statements do not conflict (same block hash)")
        if a.block_hash > b.block_hash:
            raise EvidenceError("statements must be in canonical order; use Evidence.of")

    @classmethod
    def of(cls, one: SignedStatement, other: SignedStatement) -> Evidence:
        """Evidence from two conflicting statements in either order."""
        if one.block_hash > other.block_hash:
            one, other = other, one
        return cls(one, other)

    @property
    def validator(self) -> int:
        """The index of the validator that equivocated."""
        return self.first.validator

    @property
    def height(self) -> int:
        """The height of the equivocation."""
        return self.first.height

    @property
    def view(self) -> int:
        """The view of the equivocation."""
        return self.first.view

    @property
    def kind(self) -> StatementKind:
        """Which kind of message was equivocated."""
        return self.first.kind

    def encode(self) -> bytes:
        """Canonical bytes."""
        return encode((self.first.fields(), self.second.fields()), _EVIDENCE_LIMITS)

    @classmethod
    def decode(cls, data: bytes) -> Evidence:
        """Parse evidence; raises ``EvidenceError`` for malformed bytes (signatures not checked)."""
        try:
            value = decode(data, _EVIDENCE_LIMITS)
        except CodecError as error:
            raise EvidenceError(f"evidence: {error}") from None
        if not (isinstance(value, tuple) and len(value) == 2):
            raise EvidenceError("evidence: expected two statements")
        try:
            return cls(SignedStatement.from_fields(value[0]), SignedStatement.from_fields(value[1]))
        except DecodeError as error:  # pragma: no cover - statements raise EvidenceError
            raise EvidenceError(str(error)) from None


def verify_evidence(evidence: Evidence, validators: ValidatorSet, chain_id: str) -> None:
    """Check offline that ``evidence`` proves equivocation on ``chain_id``; raise
    ``EvidenceError`` naming why not. The structural rules are enforced by ``Evidence`` itself;
    this checks that both signatures are the accused validator's."""
    if evidence.validator >= validators.size:
        raise EvidenceError(f"validator {evidence.validator} is not in the validator set")
    for statement in (evidence.first, evidence.second):
        if not statement.signature_valid(validators, chain_id):
            raise EvidenceError(
                f"{statement.kind.name.lower()} signature of validator "
                f"{statement.validator} does not verify"
            )
