"""Blocks, votes, validator sets and commit certificates: the values consensus agrees on.

These are frozen, slotted dataclasses that validate themselves on construction (h11-style), so
a value that exists is well formed. Each has a canonical ``encode`` and a ``decode`` that
raises ``DecodeError`` naming the problem for any malformed input.

A block at height ``h`` commits to:

* its parent (``parent_hash``: the hash of block ``h-1``, or the genesis hash for ``h = 1``);
* the application state *before* it (``app_hash``: the state after block ``h-1``), so a node
  whose state diverged cannot agree on the next block;
* the validator set of the *next* height (``next_validators_hash``: ``ValidatorSet.hash`` of
  the set that certifies block ``h+1``), so the chain itself says who may certify each block:
  block 1 is certified by the genesis validators, and block ``h+1`` by the set block ``h``
  names. A set decided on chain (``apps.membership``) in block ``c`` is in force from height
  ``c + 2`` (``RECONFIGURATION_DELAY_HEIGHTS``): block ``c + 1`` is proposed after ``c`` is
  executed, so every replica can compute and check the hash it must carry;
* its transactions (``transactions_root``: a Merkle root over the transaction hashes).

The block hash is SHA-256 of the encoded header. A ``CommitCertificate`` is a quorum of signed
commit votes for one (height, view, block hash); ``verify_certificate`` checks one against a
validator set on its own, so block sync, audit and light clients need nothing else but the
set in force at the certificate's height (``ValidatorSchedule.at``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, TypeAlias

from consensus.codec import CodecError, Limits, Value, decode, encode
from consensus.crypto import (
    HASH_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    PrivateKey,
    hash_bytes,
    verify,
)

__all__ = [
    "BLOCK_LIMITS",
    "EMPTY_ROOT",
    "RECONFIGURATION_DELAY_HEIGHTS",
    "Block",
    "BlockHeader",
    "CertificateChecks",
    "CertificateError",
    "CommitCertificate",
    "DecodeError",
    "Phase",
    "Validator",
    "ValidatorSchedule",
    "ValidatorSet",
    "Vote",
    "merkle_root",
    "quorum_size",
    "verify_certificate",
]

# Hard upper bound on one encoded block; consensus parameters in genesis set lower limits.
BLOCK_BYTES_MAX: Final = 16 * 1024 * 1024
BLOCK_LIMITS: Final = Limits(
    total_bytes_max=BLOCK_BYTES_MAX,
    depth_max=8,
    str_bytes_max=256,
    bytes_max=64 * 1024,
    array_len_max=100_000,
    map_len_max=16,
)
# Certificates and votes are small: a few hundred validators at most.
_SMALL_LIMITS: Final = Limits(
    total_bytes_max=256 * 1024,
    depth_max=6,
    str_bytes_max=256,
    bytes_max=1024,
    array_len_max=1024,
    map_len_max=16,
)
VALIDATORS_MAX: Final = 512
EMPTY_ROOT: Final = hash_bytes(b"suanpan/empty")
# A validator-set change executed in block c is in force from height c + 2: block c + 1 is
# built after c is executed, so its header can name (and every replica can check) the set of
# c + 2, and every replica switches at that same block.
RECONFIGURATION_DELAY_HEIGHTS: Final = 2
# How many certificates a ``CertificateChecks`` remembers as valid: block sync's lookahead
# checks up to 256 blocks before the replica checks them again.
CERTIFICATE_CHECKS_KEPT: Final = 1024
# What a ``CertificateChecks`` pass is remembered under: the certificate, the validator set's
# hash, the chain and the expected block hash and height (every argument of the check).
_CheckKey: TypeAlias = tuple["CommitCertificate", bytes, str, bytes | None, int | None]
_VALIDATOR_SET_TAG: Final = b"suanpan/validator-set/v1"


class DecodeError(ValueError):
    """Bytes that do not describe a well-formed consensus value."""


class CertificateError(ValueError):
    """A commit certificate that does not prove its block was committed."""


def quorum_size(validator_count: int) -> int:
    """The smallest q with 2q - n > f, where f = (n-1)//3. Equals 2f+1 when n = 3f+1.

    Any two quorums then intersect in more than f validators, so in at least one honest one.
    """
    if validator_count < 1:
        raise ValueError("a validator set needs at least one validator")
    faulty = (validator_count - 1) // 3
    return (validator_count + faulty) // 2 + 1


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Binary Merkle root (RFC 6962 style: 0x00 leaf prefix, 0x01 node prefix)."""
    if not leaves:
        return EMPTY_ROOT
    level = [hash_bytes(b"\x00" + leaf) for leaf in leaves]
    while len(level) > 1:
        paired = [
            hash_bytes(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise DecodeError(message)


def _hash_field(value: object, name: str) -> bytes:
    _require(isinstance(value, bytes) and len(value) == HASH_BYTES, f"{name} must be 32 bytes")
    assert isinstance(value, bytes)
    return value


def _uint_field(value: object, name: str) -> int:
    _require(
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63,
        f"{name} must be a non-negative integer",
    )
    assert isinstance(value, int)
    return value


def _decode_tuple(data: bytes, limits: Limits, length: int, what: str) -> tuple[Value, ...]:
    try:
        value = decode(data, limits)
    except CodecError as error:
        raise DecodeError(f"{what}: {error}") from None
    _require(isinstance(value, tuple) and len(value) == length, f"{what}: expected {length} fields")
    assert isinstance(value, tuple)
    return value


@dataclass(frozen=True, slots=True)
class Validator:
    """One voting member: a display name, its ed25519 consensus key and, where the chain
    records one, the ed25519 key its node authenticates links with (``node_key``), which
    drivers use to reach it and to decide who may connect."""

    name: str
    public_key: bytes
    node_key: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not 1 <= len(self.name) <= 64:
            raise ValueError("validator name must be 1..64 characters")
        if not isinstance(self.public_key, bytes) or len(self.public_key) != PUBLIC_KEY_BYTES:
            raise ValueError("validator public key must be 32 bytes")
        if self.node_key is not None and (
            not isinstance(self.node_key, bytes) or len(self.node_key) != PUBLIC_KEY_BYTES
        ):
            raise ValueError("validator node key must be 32 bytes")

    def fields(self) -> tuple[Value, ...]:
        """Canonical field tuple (no node key: empty bytes)."""
        return (self.name, self.public_key, b"" if self.node_key is None else self.node_key)


@dataclass(frozen=True, slots=True)
class ValidatorSet:
    """The ordered validators of one height. Order fixes indices and the primary rotation.

    ``hash()`` commits to every field of every validator in order (names, consensus keys,
    node keys): it is what a block header's ``next_validators_hash`` names."""

    validators: tuple[Validator, ...]
    _index: dict[bytes, int] = field(init=False, repr=False, compare=False)
    _hash: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.validators) <= VALIDATORS_MAX:
            raise ValueError(f"a validator set has 1..{VALIDATORS_MAX} validators")
        if not all(isinstance(validator, Validator) for validator in self.validators):
            raise ValueError("a validator set holds Validator values")
        index = {validator.public_key: i for i, validator in enumerate(self.validators)}
        if len(index) != len(self.validators):
            raise ValueError("validator public keys must be distinct")
        object.__setattr__(self, "_index", index)
        encoded = encode((_VALIDATOR_SET_TAG, tuple(v.fields() for v in self.validators)))
        object.__setattr__(self, "_hash", hash_bytes(encoded))

    @property
    def size(self) -> int:
        """n, the number of validators."""
        return len(self.validators)

    @property
    def faulty_max(self) -> int:
        """f, the number of byzantine validators tolerated."""
        return (self.size - 1) // 3

    @property
    def quorum(self) -> int:
        """Votes needed for a prepare or commit quorum."""
        return quorum_size(self.size)

    def index_of(self, public_key: bytes) -> int | None:
        """The validator index of ``public_key``, or None when it is not a validator."""
        return self._index.get(public_key)

    def primary(self, view: int) -> int:
        """Index of the primary (proposer) of ``view`` at any height: view mod n."""
        return view % self.size

    def public_key(self, index: int) -> bytes:
        """The public key of validator ``index``."""
        return self.validators[index].public_key

    def node_keys(self) -> tuple[bytes, ...]:
        """The node keys the validators have, in validator order (those without are left out)."""
        return tuple(v.node_key for v in self.validators if v.node_key is not None)

    def hash(self) -> bytes:
        """Commitment to the ordered set (every field of every validator)."""
        return self._hash

    def fields(self) -> tuple[Value, ...]:
        """Canonical field tuple: one (name, public key, node key or empty) per validator."""
        return tuple(v.fields() for v in self.validators)

    def encode(self) -> bytes:
        """Canonical bytes."""
        return encode(self.fields(), _SMALL_LIMITS)

    @classmethod
    def from_fields(cls, value: Value) -> ValidatorSet:
        """Build from a decoded field tuple, raising ``DecodeError`` when malformed."""
        _require(isinstance(value, tuple), "validator set: expected an array")
        assert isinstance(value, tuple)
        members: list[Validator] = []
        for entry in value:
            _require(
                isinstance(entry, tuple)
                and len(entry) == 3
                and isinstance(entry[0], str)
                and isinstance(entry[1], bytes)
                and isinstance(entry[2], bytes),
                "validator must be (name, public key, node key)",
            )
            assert isinstance(entry, tuple)
            name, public_key, node_key = entry
            assert isinstance(name, str)
            assert isinstance(public_key, bytes)
            assert isinstance(node_key, bytes)
            try:
                members.append(Validator(name, public_key, node_key or None))
            except ValueError as error:
                raise DecodeError(f"validator set: {error}") from None
        try:
            return cls(tuple(members))
        except ValueError as error:
            raise DecodeError(f"validator set: {error}") from None

    @classmethod
    def decode(cls, data: bytes) -> ValidatorSet:
        """Parse a validator set; raises ``DecodeError`` when malformed."""
        try:
            value = decode(data, _SMALL_LIMITS)
        except CodecError as error:
            raise DecodeError(f"validator set: {error}") from None
        return cls.from_fields(value)


@dataclass(frozen=True, slots=True)
class ValidatorSchedule:
    """The validator set in force at every height: ``genesis`` from height 1, then each entry
    of ``changes`` (effective height -> set) from its height on.

    This is the "validator set at height h" everything that checks certificates asks for:
    ``verify_certificate`` of height ``h`` must use ``at(h)``, never the set of another height.
    A schedule is only as complete as what its holder has seen: a change decided in block c is
    known once c is executed, so ``at(h)`` is final for ``h <= executed height + 2``."""

    genesis: ValidatorSet
    changes: tuple[tuple[int, ValidatorSet], ...] = ()

    def __post_init__(self) -> None:
        heights = [height for height, _ in self.changes]
        if heights != sorted(set(heights)) or any(height < 2 for height in heights):
            raise ValueError("schedule changes need distinct, increasing heights from 2")

    def at(self, height: int) -> ValidatorSet:
        """The set that certifies block ``height`` (height >= 1)."""
        current = self.genesis
        for effective, validators in self.changes:
            if effective > height:
                break
            current = validators
        return current

    def with_change(self, effective_height: int, validators: ValidatorSet) -> ValidatorSchedule:
        """This schedule with ``validators`` in force from ``effective_height`` (replacing a
        change recorded for that height, and dropping any recorded for later heights)."""
        if effective_height < 2:
            raise ValueError("a change takes effect at height 2 or later")
        earlier = ValidatorSchedule(
            self.genesis, tuple((h, v) for h, v in self.changes if h < effective_height)
        )
        if validators == earlier.at(effective_height - 1):
            return earlier
        return ValidatorSchedule(self.genesis, (*earlier.changes, (effective_height, validators)))


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """What a block hash commits to."""

    chain_id: str
    height: int
    view: int
    parent_hash: bytes
    app_hash: bytes
    next_validators_hash: bytes
    proposer: int
    timestamp_ms: int
    transactions_root: bytes
    transaction_count: int

    def __post_init__(self) -> None:
        if not isinstance(self.chain_id, str) or not 1 <= len(self.chain_id) <= 64:
            raise DecodeError("chain_id must be 1..64 characters")
        _uint_field(self.height, "height")
        _require(self.height >= 1, "height must be at least 1")
        _uint_field(self.view, "view")
        _hash_field(self.parent_hash, "parent_hash")
        _hash_field(self.app_hash, "app_hash")
        _hash_field(self.next_validators_hash, "next_validators_hash")
        _uint_field(self.proposer, "proposer")
        _uint_field(self.timestamp_ms, "timestamp_ms")
        _hash_field(self.transactions_root, "transactions_root")
        _uint_field(self.transaction_count, "transaction_count")

    def fields(self) -> tuple[Value, ...]:
        """Canonical field tuple."""
        return (
            self.chain_id,
            self.height,
            self.view,
            self.parent_hash,
            self.app_hash,
            self.next_validators_hash,
            self.proposer,
            self.timestamp_ms,
            self.transactions_root,
            self.transaction_count,
        )

    def encode(self) -> bytes:
        """Canonical bytes."""
        return encode(self.fields(), _SMALL_LIMITS)

    def hash(self) -> bytes:
        """The block hash."""
        return hash_bytes(self.encode())

    @classmethod
    def from_fields(cls, value: Value) -> BlockHeader:
        """Build from a decoded field tuple, raising ``DecodeError`` when malformed."""
        _require(isinstance(value, tuple) and len(value) == 10, "header: expected 10 fields")
        assert isinstance(value, tuple)
        chain_id, height, view, parent, app, next_validators, proposer, timestamp, root, count = (
            value
        )
        _require(isinstance(chain_id, str), "header chain_id must be a string")
        assert isinstance(chain_id, str)
        return cls(
            chain_id,
            _uint_field(height, "height"),
            _uint_field(view, "view"),
            _hash_field(parent, "parent_hash"),
            _hash_field(app, "app_hash"),
            _hash_field(next_validators, "next_validators_hash"),
            _uint_field(proposer, "proposer"),
            _uint_field(timestamp, "timestamp_ms"),
            _hash_field(root, "transactions_root"),
            _uint_field(count, "transaction_count"),
        )


@dataclass(frozen=True, slots=True)
class Block:
    """A header and the encoded transactions it orders."""

    header: BlockHeader
    transactions: tuple[bytes, ...]
    hash: bytes = field(init=False, repr=False, compare=False)
    # SHA-256 of each transaction, once computed (``transaction_hashes``).
    _transaction_hashes: tuple[bytes, ...] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        _require(
            all(isinstance(tx, bytes) for tx in self.transactions),
            "transactions must be bytes",
        )
        _require(
            len(self.transactions) == self.header.transaction_count,
            "transaction_count does not match the body",
        )
        object.__setattr__(self, "hash", self.header.hash())

    @property
    def height(self) -> int:
        """The block's height."""
        return self.header.height

    def transaction_hashes(self) -> tuple[bytes, ...]:
        """SHA-256 of each transaction, in order (the leaves of the transactions root, and
        each transaction's hash everywhere else): computed once per block object."""
        hashes = self._transaction_hashes
        if hashes is None:
            hashes = tuple([hash_bytes(tx) for tx in self.transactions])
            object.__setattr__(self, "_transaction_hashes", hashes)
        return hashes

    def body_matches_header(self) -> bool:
        """True when the transactions hash to the header's root (checked on receipt)."""
        return self.header.transactions_root == merkle_root(self.transaction_hashes())

    def encode(self) -> bytes:
        """Canonical bytes of header and body."""
        return encode((self.header.fields(), self.transactions), BLOCK_LIMITS)

    @classmethod
    def decode(cls, data: bytes) -> Block:
        """Parse a block; raises ``DecodeError`` when malformed or when the body does not
        match the header's transactions root."""
        header_fields, transactions = _decode_tuple(data, BLOCK_LIMITS, 2, "block")
        header = BlockHeader.from_fields(header_fields)
        _require(isinstance(transactions, tuple), "block transactions must be an array")
        assert isinstance(transactions, tuple)
        block = cls(header, tuple(transactions))  # type: ignore[arg-type]
        _require(block.body_matches_header(), "block body does not match transactions_root")
        return block

    @classmethod
    def build(
        cls,
        *,
        chain_id: str,
        height: int,
        view: int,
        parent_hash: bytes,
        app_hash: bytes,
        next_validators_hash: bytes,
        proposer: int,
        timestamp_ms: int,
        transactions: Sequence[bytes],
    ) -> Block:
        """Assemble a block, computing its transactions root."""
        body = tuple(transactions)
        hashes = tuple([hash_bytes(tx) for tx in body])
        header = BlockHeader(
            chain_id=chain_id,
            height=height,
            view=view,
            parent_hash=parent_hash,
            app_hash=app_hash,
            next_validators_hash=next_validators_hash,
            proposer=proposer,
            timestamp_ms=timestamp_ms,
            transactions_root=merkle_root(hashes),
            transaction_count=len(transactions),
        )
        block = cls(header, body)
        object.__setattr__(block, "_transaction_hashes", hashes)
        return block

    def rival(
        self,
        *,
        timestamp_ms: int | None = None,
        transactions: Sequence[bytes] = (),
        chain_id: str | None = None,
        height: int | None = None,
        view: int | None = None,
    ) -> Block:
        """A block built from this one's header with another body (``transactions``) and the
        fields given changed; by default for the same slot (chain, height, view, parent, app
        hash, next set, proposer): what an equivocating proposer or a forged block response
        offers in this block's place."""
        header = self.header
        return Block.build(
            chain_id=header.chain_id if chain_id is None else chain_id,
            height=header.height if height is None else height,
            view=header.view if view is None else view,
            parent_hash=header.parent_hash,
            app_hash=header.app_hash,
            next_validators_hash=header.next_validators_hash,
            proposer=header.proposer,
            timestamp_ms=header.timestamp_ms if timestamp_ms is None else timestamp_ms,
            transactions=transactions,
        )


class Phase(IntEnum):
    """The two voting phases of a height."""

    PREPARE = 1
    COMMIT = 2

    @property
    def tag(self) -> bytes:
        """Signature domain tag for votes of this phase."""
        return b"suanpan/prepare/v1" if self is Phase.PREPARE else b"suanpan/commit/v1"


@dataclass(frozen=True, slots=True)
class Vote:
    """A validator's signed prepare or commit for one block at (height, view)."""

    phase: Phase
    height: int
    view: int
    block_hash: bytes
    validator: int
    signature: bytes

    def __post_init__(self) -> None:
        _require(isinstance(self.phase, Phase), "phase must be PREPARE or COMMIT")
        _uint_field(self.height, "height")
        _uint_field(self.view, "view")
        _hash_field(self.block_hash, "block_hash")
        _uint_field(self.validator, "validator")
        _require(
            isinstance(self.signature, bytes) and len(self.signature) == SIGNATURE_BYTES,
            "signature must be 64 bytes",
        )

    @staticmethod
    def signed_payload(height: int, view: int, block_hash: bytes) -> bytes:
        """The canonical bytes a vote signature covers (the phase is in the domain tag)."""
        return encode((height, view, block_hash))

    @classmethod
    def create(
        cls,
        key: PrivateKey,
        chain_id: str,
        *,
        phase: Phase,
        height: int,
        view: int,
        block_hash: bytes,
        validator: int,
    ) -> Vote:
        """Sign a vote with ``key`` (the key of validator ``validator``)."""
        signature = key.sign(phase.tag, chain_id, cls.signed_payload(height, view, block_hash))
        return cls(phase, height, view, block_hash, validator, signature)

    def signature_valid(self, validators: ValidatorSet, chain_id: str) -> bool:
        """True when ``validator`` exists and signed this vote on ``chain_id``."""
        if self.validator >= validators.size:
            return False
        return verify(
            validators.public_key(self.validator),
            self.phase.tag,
            chain_id,
            self.signed_payload(self.height, self.view, self.block_hash),
            self.signature,
        )

    def fields(self) -> tuple[Value, ...]:
        """Canonical field tuple."""
        return (
            int(self.phase),
            self.height,
            self.view,
            self.block_hash,
            self.validator,
            self.signature,
        )

    def encode(self) -> bytes:
        """Canonical bytes."""
        return encode(self.fields(), _SMALL_LIMITS)

    @classmethod
    def from_fields(cls, value: Value) -> Vote:
        """Build from a decoded field tuple, raising ``DecodeError`` when malformed."""
        _require(isinstance(value, tuple) and len(value) == 6, "vote: expected 6 fields")
        assert isinstance(value, tuple)
        phase, height, view, block_hash, validator, signature = value
        _require(phase in (Phase.PREPARE, Phase.COMMIT), "vote phase must be 1 or 2")
        _require(isinstance(signature, bytes), "vote signature must be bytes")
        assert isinstance(phase, int)
        assert isinstance(signature, bytes)
        return cls(
            Phase(phase),
            _uint_field(height, "height"),
            _uint_field(view, "view"),
            _hash_field(block_hash, "block_hash"),
            _uint_field(validator, "validator"),
            signature,
        )

    @classmethod
    def decode(cls, data: bytes) -> Vote:
        """Parse a vote; raises ``DecodeError`` when malformed (signature not checked)."""
        try:
            value = decode(data, _SMALL_LIMITS)
        except CodecError as error:
            raise DecodeError(f"vote: {error}") from None
        return cls.from_fields(value)


@dataclass(frozen=True, slots=True)
class CommitCertificate:
    """A quorum of commit signatures for one block: proof that it is final.

    ``signatures`` holds (validator index, signature) pairs in increasing index order.
    """

    height: int
    view: int
    block_hash: bytes
    signatures: tuple[tuple[int, bytes], ...]

    def __post_init__(self) -> None:
        _uint_field(self.height, "height")
        _uint_field(self.view, "view")
        _hash_field(self.block_hash, "block_hash")
        _require(isinstance(self.signatures, tuple), "signatures must be a tuple")

    @classmethod
    def from_votes(cls, votes: Sequence[Vote]) -> CommitCertificate:
        """Assemble a certificate from commit votes for one (height, view, block)."""
        assert votes, "a certificate needs votes"
        first = votes[0]
        assert all(
            (v.phase, v.height, v.view, v.block_hash)
            == (Phase.COMMIT, first.height, first.view, first.block_hash)
            for v in votes
        ), "certificate votes must agree"
        by_index = {vote.validator: vote.signature for vote in votes}
        return cls(first.height, first.view, first.block_hash, tuple(sorted(by_index.items())))

    def fields(self) -> tuple[Value, ...]:
        """Canonical field tuple."""
        return (
            self.height,
            self.view,
            self.block_hash,
            tuple((index, signature) for index, signature in self.signatures),
        )

    def encode(self) -> bytes:
        """Canonical bytes."""
        return encode(self.fields(), _SMALL_LIMITS)

    @classmethod
    def from_fields(cls, value: Value) -> CommitCertificate:
        """Build from a decoded field tuple, raising ``DecodeError`` when malformed."""
        _require(isinstance(value, tuple) and len(value) == 4, "certificate: expected 4 fields")
        assert isinstance(value, tuple)
        height, view, block_hash, signatures = value
        _require(isinstance(signatures, tuple), "certificate signatures must be an array")
        assert isinstance(signatures, tuple)
        pairs: list[tuple[int, bytes]] = []
        for pair in signatures:
            _require(
                isinstance(pair, tuple)
                and len(pair) == 2
                and isinstance(pair[1], bytes)
                and len(pair[1]) == SIGNATURE_BYTES,
                "certificate entry must be (index, 64-byte signature)",
            )
            assert isinstance(pair, tuple)
            assert isinstance(pair[1], bytes)
            pairs.append((_uint_field(pair[0], "validator index"), pair[1]))
        return cls(
            _uint_field(height, "height"),
            _uint_field(view, "view"),
            _hash_field(block_hash, "block_hash"),
            tuple(pairs),
        )

    @classmethod
    def decode(cls, data: bytes) -> CommitCertificate:
        """Parse a certificate; raises ``DecodeError`` when malformed (not verified)."""
        try:
            value = decode(data, _SMALL_LIMITS)
        except CodecError as error:
            raise DecodeError(f"certificate: {error}") from None
        return cls.from_fields(value)


def verify_certificate(
    certificate: CommitCertificate,
    validators: ValidatorSet,
    chain_id: str,
    *,
    block_hash: bytes | None = None,
    height: int | None = None,
) -> None:
    """Check that ``certificate`` proves a commit; raise ``CertificateError`` naming why not.

    Requires a quorum of *distinct* validators, indices in strictly increasing order, every
    signature a valid commit signature over (height, view, block hash) on ``chain_id``, and,
    when given, the expected block hash and height.
    """
    if block_hash is not None and certificate.block_hash != block_hash:
        raise CertificateError("certificate is for a different block hash")
    if height is not None and certificate.height != height:
        raise CertificateError(f"certificate is for height {certificate.height}, not {height}")
    previous = -1
    for index, _ in certificate.signatures:
        if index <= previous:
            raise CertificateError("signer indices must be distinct and increasing")
        if index >= validators.size:
            raise CertificateError(f"signer index {index} is not a validator")
        previous = index
    if len(certificate.signatures) < validators.quorum:
        raise CertificateError(
            f"{len(certificate.signatures)} signatures, quorum is {validators.quorum}"
        )
    payload = Vote.signed_payload(certificate.height, certificate.view, certificate.block_hash)
    for index, signature in certificate.signatures:
        if not verify(validators.public_key(index), Phase.COMMIT.tag, chain_id, payload, signature):
            raise CertificateError(f"signature of validator {index} does not verify")


class CertificateChecks:
    """``verify_certificate`` that remembers the checks that passed.

    A block from block sync has its certificate checked twice in a node: once before its
    transactions' signatures are verified ahead, once by the replica. Both checks go through
    one ``CertificateChecks``, so the second finds the first's answer instead of verifying
    the quorum's signatures again. The check is a pure function of the certificate, the
    validator set, the chain and the expected block hash and height, so an answer found here
    is the answer ``verify_certificate`` gives; only passes are kept (a failure raises every
    time), the ``kept`` most recent of them.
    """

    __slots__ = ("_kept", "_passed", "hits")

    def __init__(self, kept: int = CERTIFICATE_CHECKS_KEPT) -> None:
        if kept < 1:
            raise ValueError("a CertificateChecks keeps at least one pass")
        self._kept = kept
        self._passed: dict[_CheckKey, None] = {}
        self.hits = 0

    def verify(
        self,
        certificate: CommitCertificate,
        validators: ValidatorSet,
        chain_id: str,
        *,
        block_hash: bytes | None = None,
        height: int | None = None,
    ) -> None:
        """``verify_certificate(certificate, validators, chain_id, block_hash=...,
        height=...)``, answered from memory when the same check passed before."""
        passed = self._passed
        key: _CheckKey | None = (certificate, validators.hash(), chain_id, block_hash, height)
        try:
            if key in passed:
                self.hits += 1
                return
        except TypeError:  # a certificate built with unhashable parts: checked, not kept
            key = None
        verify_certificate(certificate, validators, chain_id, block_hash=block_hash, height=height)
        if key is not None:
            passed[key] = None
            if len(passed) > self._kept:
                del passed[next(iter(passed))]
