"""The consensus wire messages and their one canonical encoding.

Every message a replica sends is one of the frozen, slotted dataclasses below, and travels as
``encode_message(message)``: a msgpack array ``(kind, fields...)``. ``decode_message`` is the
single way back; for *any* byte string it either returns a well-formed message or raises
``MessageError`` naming the problem (size, encoding, field shape). Decoding checks structure
only; signatures are checked by the replica against the validator set (``signature_valid``),
because only it knows which keys count.

Signatures and their domain tags (see ``consensus.crypto.signing_bytes``; the chain id is always
part of the signed bytes):

=================  =========================  ==============================================
message            tag                        signed payload (canonical msgpack)
=================  =========================  ==============================================
``Proposal``       ``suanpan/proposal/v1``    ``(height, view, block_hash)``
prepare ``Vote``   ``suanpan/prepare/v1``     ``(height, view, block_hash)``
commit ``Vote``    ``suanpan/commit/v1``      ``(height, view, block_hash)``
``ViewChange``     ``suanpan/view-change/v1`` ``(height, view, prepared_view, prepared_hash)``
``NewView``        ``suanpan/new-view/v1``    ``(height, view, block_hash, signer indices)``
=================  =========================  ==============================================

``BlockRequest`` and ``BlockResponse`` carry no signature on purpose: a request asks for public
data, and every block in a response is proven by its own ``CommitCertificate``, which the
receiver verifies; a signature by the responder would add nothing a byzantine responder could
not also produce.

A proposal's ``view`` is the view it is proposed in; the block header's ``view`` is the view the
block was first built in. They differ exactly when a new primary re-proposes a block that was
prepared in an earlier view (the block hash, and so every vote for it, stays the same).

The constructors (``Proposal.create``, ``ViewChange.create``, ``NewView.create``,
``Vote.create``) sign whatever they are given, so a simulator can build byzantine messages
(double votes, equivocating proposals) with the same code honest replicas use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, TypeAlias

from consensus.codec import CodecError, Limits, Value, decode, encode
from consensus.crypto import HASH_BYTES, SIGNATURE_BYTES, PrivateKey, verify
from consensus.types import (
    Block,
    BlockHeader,
    CommitCertificate,
    DecodeError,
    Phase,
    ValidatorSet,
    Vote,
)

__all__ = [
    "MESSAGE_BYTES_MAX",
    "NEW_VIEW_TAG",
    "PROPOSAL_TAG",
    "VIEW_CHANGE_TAG",
    "BlockRequest",
    "BlockResponse",
    "Message",
    "MessageError",
    "MessageKind",
    "NewView",
    "PreparedCertificate",
    "Proposal",
    "ViewChange",
    "block_from_fields",
    "decode_message",
    "encode_block_response",
    "encode_message",
]

PROPOSAL_TAG: Final = b"suanpan/proposal/v1"
VIEW_CHANGE_TAG: Final = b"suanpan/view-change/v1"
NEW_VIEW_TAG: Final = b"suanpan/new-view/v1"

# One message carries at most one full block (a proposal, a view change, a new view) or a batch
# of synced blocks; 16 MiB is the hard block bound in consensus.types plus room for votes.
MESSAGE_BYTES_MAX: Final = 16 * 1024 * 1024 + 256 * 1024
# Certificates and view-change sets: at most one entry per validator (types.VALIDATORS_MAX).
_SIGNERS_MAX: Final = 512
# Blocks in one sync response: bounded so one response is a bounded amount of verify work.
BLOCKS_PER_RESPONSE_MAX: Final = 256

_MESSAGE_LIMITS: Final = Limits(
    total_bytes_max=MESSAGE_BYTES_MAX,
    # kind > new-view > view-change > block > header > fields: 8 levels at most.
    depth_max=10,
    str_bytes_max=256,
    # One encoded transaction is the largest bytes value (types.BLOCK_LIMITS uses the same).
    bytes_max=64 * 1024,
    # Transactions in one block (types.BLOCK_LIMITS uses the same).
    array_len_max=100_000,
    map_len_max=16,
)


class MessageError(DecodeError):
    """Bytes that are not a well-formed consensus message; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class MessageKind(IntEnum):
    """The first element of every encoded message."""

    PROPOSAL = 1
    PREPARE = 2
    COMMIT = 3
    VIEW_CHANGE = 4
    NEW_VIEW = 5
    BLOCK_REQUEST = 6
    BLOCK_RESPONSE = 7


def _uint(value: object, name: str) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63):
        raise MessageError("field", f"{name} must be a non-negative integer")
    return value


def _hash(value: object, name: str) -> bytes:
    if not (isinstance(value, bytes) and len(value) == HASH_BYTES):
        raise MessageError("field", f"{name} must be 32 bytes")
    return value


def _signature(value: object, name: str = "signature") -> bytes:
    if not (isinstance(value, bytes) and len(value) == SIGNATURE_BYTES):
        raise MessageError("field", f"{name} must be 64 bytes")
    return value


def _tuple(value: object, name: str, length: int | None = None) -> tuple[Value, ...]:
    if not isinstance(value, tuple) or (length is not None and len(value) != length):
        expected = "an array" if length is None else f"an array of {length}"
        raise MessageError("field", f"{name} must be {expected}")
    return value


def _check_signers(signatures: Sequence[tuple[int, bytes]], what: str) -> None:
    """Signer indices strictly increasing (so distinct) and within the global bound."""
    if len(signatures) > _SIGNERS_MAX:
        raise MessageError("field", f"{what}: more than {_SIGNERS_MAX} signatures")
    previous = -1
    for index, _ in signatures:
        if index <= previous:
            raise MessageError("field", f"{what}: signer indices must be strictly increasing")
        previous = index


def _block_fields(block: Block) -> tuple[Value, ...]:
    return (block.header.fields(), block.transactions)


def block_from_fields(value: Value) -> Block:
    """A block from its decoded (header fields, transactions) value; ``MessageError`` if bad."""
    header_fields, transactions = _tuple(value, "block", 2)
    try:
        header = BlockHeader.from_fields(header_fields)
        txs = _tuple(transactions, "block transactions")
        if not all(isinstance(tx, bytes) for tx in txs):
            raise MessageError("field", "block transactions must be bytes")
        block = Block(header, txs)  # type: ignore[arg-type]
    except MessageError:
        raise
    except DecodeError as error:
        raise MessageError("block", str(error)) from None
    if not block.body_matches_header():
        raise MessageError("block", "block body does not match transactions_root")
    return block


def _signed_payload(height: int, view: int, block_hash: bytes) -> bytes:
    return encode((height, view, block_hash))


@dataclass(frozen=True, slots=True)
class Proposal:
    """A primary's signed proposal (pre-prepare) of ``block`` at (block height, ``view``).

    ``validator`` is the signer, which a replica accepts only when it is the primary of
    (height, view). In a new view the block may be a re-proposal built in an earlier view.
    """

    view: int
    validator: int
    block: Block
    signature: bytes

    def __post_init__(self) -> None:
        _uint(self.view, "view")
        _uint(self.validator, "validator")
        if not isinstance(self.block, Block):
            raise MessageError("field", "proposal block must be a Block")
        _signature(self.signature)

    @property
    def height(self) -> int:
        """The block's height."""
        return self.block.height

    @property
    def block_hash(self) -> bytes:
        """The proposed block's hash."""
        return self.block.hash

    @classmethod
    def create(
        cls, key: PrivateKey, chain_id: str, *, view: int, validator: int, block: Block
    ) -> Proposal:
        """Sign a proposal of ``block`` in ``view`` with ``key`` (validator ``validator``'s)."""
        payload = _signed_payload(block.height, view, block.hash)
        return cls(view, validator, block, key.sign(PROPOSAL_TAG, chain_id, payload))

    def signature_valid(self, validators: ValidatorSet, chain_id: str) -> bool:
        """True when ``validator`` exists and signed this proposal on ``chain_id``."""
        if self.validator >= validators.size:
            return False
        payload = _signed_payload(self.height, self.view, self.block.hash)
        return verify(
            validators.public_key(self.validator), PROPOSAL_TAG, chain_id, payload, self.signature
        )

    def fields(self) -> tuple[Value, ...]:
        """Canonical field tuple (without the kind)."""
        return (self.view, self.validator, _block_fields(self.block), self.signature)

    @classmethod
    def from_fields(cls, value: Value) -> Proposal:
        """Build from decoded fields, raising ``MessageError`` when malformed."""
        view, validator, block, signature = _tuple(value, "proposal", 4)
        return cls(
            _uint(view, "view"),
            _uint(validator, "validator"),
            block_from_fields(block),
            _signature(signature),
        )


@dataclass(frozen=True, slots=True)
class PreparedCertificate:
    """A quorum of prepare signatures for (height, view, block hash): the block was prepared.

    ``signatures`` holds (validator index, prepare signature) pairs in increasing index order.
    """

    height: int
    view: int
    block_hash: bytes
    signatures: tuple[tuple[int, bytes], ...]

    def __post_init__(self) -> None:
        _uint(self.height, "height")
        _uint(self.view, "view")
        _hash(self.block_hash, "block_hash")
        if not isinstance(self.signatures, tuple):
            raise MessageError("field", "prepared certificate signatures must be a tuple")
        for pair in self.signatures:
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise MessageError("field", "prepared certificate entry must be (index, sig)")
            _uint(pair[0], "signer index")
            _signature(pair[1])
        _check_signers(self.signatures, "prepared certificate")

    def verify(self, validators: ValidatorSet, chain_id: str, quorum: int) -> str | None:
        """None when at least ``quorum`` distinct validators signed this prepare; else why not."""
        if len(self.signatures) < quorum:
            return f"{len(self.signatures)} prepare signatures, quorum is {quorum}"
        payload = _signed_payload(self.height, self.view, self.block_hash)
        for index, signature in self.signatures:
            if index >= validators.size:
                return f"signer {index} is not a validator"
            if not verify(
                validators.public_key(index), Phase.PREPARE.tag, chain_id, payload, signature
            ):
                return f"prepare signature of validator {index} does not verify"
        return None

    def fields(self) -> tuple[Value, ...]:
        """Canonical field tuple."""
        return (self.height, self.view, self.block_hash, tuple(self.signatures))

    @classmethod
    def from_fields(cls, value: Value) -> PreparedCertificate:
        """Build from decoded fields, raising ``MessageError`` when malformed."""
        height, view, block_hash, signatures = _tuple(value, "prepared certificate", 4)
        pairs: list[tuple[int, bytes]] = []
        for pair in _tuple(signatures, "prepared certificate signatures"):
            index, signature = _tuple(pair, "prepared certificate entry", 2)
            pairs.append((_uint(index, "signer index"), _signature(signature)))
        return cls(
            _uint(height, "height"),
            _uint(view, "view"),
            _hash(block_hash, "block_hash"),
            tuple(pairs),
        )


@dataclass(frozen=True, slots=True)
class ViewChange:
    """Validator ``validator`` asks to move height ``height`` to ``view``.

    It carries the sender's highest prepared certificate at this height (None when it never
    prepared) and, when sent directly, the prepared block itself so the new primary can
    re-propose it. Inside a ``NewView`` the block is stripped (``prepared_block`` None): the
    certificate's hash is what binds, and the new view's proposal carries the block once.
    """

    height: int
    view: int
    validator: int
    prepared: PreparedCertificate | None
    prepared_block: Block | None
    signature: bytes

    def __post_init__(self) -> None:
        _uint(self.height, "height")
        _uint(self.view, "view")
        _uint(self.validator, "validator")
        _signature(self.signature)
        if self.prepared is None:
            if self.prepared_block is not None:
                raise MessageError("field", "view change has a prepared block but no certificate")
            return
        # A certificate for another height is well-formed but wrong: the replica refuses it
        # (INVALID_VIEW_CHANGE), which is where that rule is checked and tested.
        if self.prepared.view >= self.view:
            raise MessageError("field", "prepared certificate must be from an earlier view")
        if self.prepared_block is not None and self.prepared_block.hash != self.prepared.block_hash:
            raise MessageError("field", "prepared block does not match its certificate")

    @staticmethod
    def signed_payload(height: int, view: int, prepared: PreparedCertificate | None) -> bytes:
        """The canonical bytes a view-change signature covers."""
        if prepared is None:
            return encode((height, view, None, None))
        return encode((height, view, prepared.view, prepared.block_hash))

    @classmethod
    def create(
        cls,
        key: PrivateKey,
        chain_id: str,
        *,
        height: int,
        view: int,
        validator: int,
        prepared: PreparedCertificate | None,
        prepared_block: Block | None,
    ) -> ViewChange:
        """Sign a view change with ``key`` (validator ``validator``'s)."""
        payload = cls.signed_payload(height, view, prepared)
        signature = key.sign(VIEW_CHANGE_TAG, chain_id, payload)
        return cls(height, view, validator, prepared, prepared_block, signature)

    def signature_valid(self, validators: ValidatorSet, chain_id: str) -> bool:
        """True when ``validator`` exists and signed this view change (certificate not checked)."""
        if self.validator >= validators.size:
            return False
        return verify(
            validators.public_key(self.validator),
            VIEW_CHANGE_TAG,
            chain_id,
            self.signed_payload(self.height, self.view, self.prepared),
            self.signature,
        )

    def without_block(self) -> ViewChange:
        """The same signed view change without the prepared block (for a ``NewView``)."""
        if self.prepared_block is None:
            return self
        return ViewChange(
            self.height, self.view, self.validator, self.prepared, None, self.signature
        )

    def fields(self) -> tuple[Value, ...]:
        """Canonical field tuple (without the kind)."""
        return (
            self.height,
            self.view,
            self.validator,
            None if self.prepared is None else self.prepared.fields(),
            None if self.prepared_block is None else _block_fields(self.prepared_block),
            self.signature,
        )

    @classmethod
    def from_fields(cls, value: Value) -> ViewChange:
        """Build from decoded fields, raising ``MessageError`` when malformed."""
        height, view, validator, prepared, block, signature = _tuple(value, "view change", 6)
        return cls(
            _uint(height, "height"),
            _uint(view, "view"),
            _uint(validator, "validator"),
            None if prepared is None else PreparedCertificate.from_fields(prepared),
            None if block is None else block_from_fields(block),
            _signature(signature),
        )


@dataclass(frozen=True, slots=True)
class NewView:
    """The new primary's announcement of ``view``: a quorum of view changes and its proposal.

    The proposal must re-propose the block of the highest prepared certificate among
    ``view_changes`` when there is one, and may be a fresh block otherwise; every replica checks
    this itself from the signed view changes.
    """

    height: int
    view: int
    validator: int
    view_changes: tuple[ViewChange, ...]
    proposal: Proposal
    signature: bytes

    def __post_init__(self) -> None:
        _uint(self.height, "height")
        _uint(self.view, "view")
        _uint(self.validator, "validator")
        _signature(self.signature)
        if not isinstance(self.view_changes, tuple) or len(self.view_changes) > _SIGNERS_MAX:
            raise MessageError("field", "new view needs a bounded tuple of view changes")
        previous = -1
        for change in self.view_changes:
            if not isinstance(change, ViewChange):
                raise MessageError("field", "new view entries must be view changes")
            if (change.height, change.view) != (self.height, self.view):
                raise MessageError("field", "view change in new view is for another height/view")
            if change.validator <= previous:
                raise MessageError("field", "view change senders must be strictly increasing")
            if change.prepared_block is not None:
                raise MessageError("field", "view changes inside a new view carry no block")
            previous = change.validator
        if not isinstance(self.proposal, Proposal):
            raise MessageError("field", "new view proposal must be a Proposal")
        if (self.proposal.height, self.proposal.view) != (self.height, self.view):
            raise MessageError("field", "new view proposal is for another height/view")
        if self.proposal.validator != self.validator:
            raise MessageError("field", "new view proposal is signed by someone else")

    @staticmethod
    def signed_payload(
        height: int, view: int, block_hash: bytes, view_changes: Sequence[ViewChange]
    ) -> bytes:
        """The canonical bytes a new-view signature covers."""
        return encode((height, view, block_hash, tuple(c.validator for c in view_changes)))

    @classmethod
    def create(
        cls,
        key: PrivateKey,
        chain_id: str,
        *,
        view_changes: Sequence[ViewChange],
        proposal: Proposal,
    ) -> NewView:
        """Sign a new view for ``proposal``'s (height, view); view changes sorted, stripped."""
        changes = tuple(
            sorted((c.without_block() for c in view_changes), key=lambda c: c.validator)
        )
        payload = cls.signed_payload(proposal.height, proposal.view, proposal.block.hash, changes)
        signature = key.sign(NEW_VIEW_TAG, chain_id, payload)
        return cls(proposal.height, proposal.view, proposal.validator, changes, proposal, signature)

    def signature_valid(self, validators: ValidatorSet, chain_id: str) -> bool:
        """True when ``validator`` signed this new view (its contents are checked separately)."""
        if self.validator >= validators.size:
            return False
        payload = self.signed_payload(
            self.height, self.view, self.proposal.block.hash, self.view_changes
        )
        return verify(
            validators.public_key(self.validator), NEW_VIEW_TAG, chain_id, payload, self.signature
        )

    def fields(self) -> tuple[Value, ...]:
        """Canonical field tuple (without the kind)."""
        return (
            self.height,
            self.view,
            self.validator,
            tuple(change.fields() for change in self.view_changes),
            self.proposal.fields(),
            self.signature,
        )

    @classmethod
    def from_fields(cls, value: Value) -> NewView:
        """Build from decoded fields, raising ``MessageError`` when malformed."""
        height, view, validator, changes, proposal, signature = _tuple(value, "new view", 6)
        return cls(
            _uint(height, "height"),
            _uint(view, "view"),
            _uint(validator, "validator"),
            tuple(ViewChange.from_fields(c) for c in _tuple(changes, "view changes")),
            Proposal.from_fields(proposal),
            _signature(signature),
        )


@dataclass(frozen=True, slots=True)
class BlockRequest:
    """Ask a peer for committed blocks ``from_height..to_height`` (inclusive) with certificates."""

    from_height: int
    to_height: int

    def __post_init__(self) -> None:
        _uint(self.from_height, "from_height")
        _uint(self.to_height, "to_height")
        if not 1 <= self.from_height <= self.to_height:
            raise MessageError("field", "block request needs 1 <= from_height <= to_height")

    def fields(self) -> tuple[Value, ...]:
        """Canonical field tuple (without the kind)."""
        return (self.from_height, self.to_height)

    @classmethod
    def from_fields(cls, value: Value) -> BlockRequest:
        """Build from decoded fields, raising ``MessageError`` when malformed."""
        from_height, to_height = _tuple(value, "block request", 2)
        return cls(_uint(from_height, "from_height"), _uint(to_height, "to_height"))


@dataclass(frozen=True, slots=True)
class BlockResponse:
    """Committed blocks, consecutive and in increasing height, each with its certificate."""

    entries: tuple[tuple[Block, CommitCertificate], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.entries, tuple) or len(self.entries) > BLOCKS_PER_RESPONSE_MAX:
            raise MessageError(
                "field", f"a response holds at most {BLOCKS_PER_RESPONSE_MAX} blocks"
            )
        previous: int | None = None
        for entry in self.entries:
            if not (
                isinstance(entry, tuple)
                and len(entry) == 2
                and isinstance(entry[0], Block)
                and isinstance(entry[1], CommitCertificate)
            ):
                raise MessageError("field", "response entries are (Block, CommitCertificate)")
            if previous is not None and entry[0].height != previous + 1:
                raise MessageError("field", "response blocks must be consecutive")
            previous = entry[0].height

    def fields(self) -> tuple[Value, ...]:
        """Canonical field tuple (without the kind)."""
        return tuple((_block_fields(block), cert.fields()) for block, cert in self.entries)

    @classmethod
    def from_fields(cls, value: Value) -> BlockResponse:
        """Build from decoded fields, raising ``MessageError`` when malformed."""
        entries: list[tuple[Block, CommitCertificate]] = []
        for entry in _tuple(value, "block response"):
            block, certificate = _tuple(entry, "block response entry", 2)
            try:
                cert = CommitCertificate.from_fields(certificate)
            except DecodeError as error:
                raise MessageError("certificate", str(error)) from None
            _check_signers(cert.signatures, "commit certificate")
            entries.append((block_from_fields(block), cert))
        return cls(tuple(entries))


Message: TypeAlias = Proposal | Vote | ViewChange | NewView | BlockRequest | BlockResponse


def encode_message(message: Message) -> bytes:
    """The canonical wire bytes of ``message``; raises ``MessageError`` when it is too large."""
    kind: MessageKind
    fields: tuple[Value, ...]
    if isinstance(message, Vote):
        kind = MessageKind.PREPARE if message.phase is Phase.PREPARE else MessageKind.COMMIT
        fields = message.fields()[1:]
    else:
        kind = _KIND_OF[type(message)]
        fields = message.fields()
    try:
        return encode((int(kind), *fields), _MESSAGE_LIMITS)
    except CodecError as error:
        raise MessageError(error.reason, error.detail) from None


def decode_message(data: bytes, *, bytes_max: int = MESSAGE_BYTES_MAX) -> Message:
    """Parse wire bytes into a message, or raise ``MessageError``; nothing else ever escapes.

    ``bytes_max`` (at most ``MESSAGE_BYTES_MAX``) lets a caller apply a tighter size bound.
    Signatures are not checked here.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageError("not_bytes", f"expected bytes, got {type(data).__name__}")
    if len(data) > min(bytes_max, MESSAGE_BYTES_MAX):
        raise MessageError(
            "too_large", f"{len(data)} bytes, limit {min(bytes_max, MESSAGE_BYTES_MAX)}"
        )
    try:
        value = decode(bytes(data), _MESSAGE_LIMITS)
    except CodecError as error:
        raise MessageError(error.reason, error.detail) from None
    if not isinstance(value, tuple) or not value:
        raise MessageError("shape", "a message is a non-empty array")
    kind_value, *rest = value
    if (
        isinstance(kind_value, bool)
        or not isinstance(kind_value, int)
        or kind_value not in _DECODERS
    ):
        raise MessageError("kind", f"unknown message kind {kind_value!r}")
    try:
        return _DECODERS[kind_value](tuple(rest))
    except MessageError:
        raise
    except DecodeError as error:
        raise MessageError("field", str(error)) from None


def encode_block_response(
    entries: Sequence[tuple[Block, CommitCertificate]], *, bytes_max: int = MESSAGE_BYTES_MAX
) -> bytes:
    """Encode the longest prefix of ``entries`` whose ``BlockResponse`` fits in ``bytes_max``.

    Helper for drivers answering a ``ServeBlocks`` action: it never produces a message a peer
    would reject for size. At least one entry is always included when ``entries`` is non-empty
    and it fits on its own; an empty response is returned otherwise.
    """
    limit = min(bytes_max, MESSAGE_BYTES_MAX)
    chosen = list(entries[:BLOCKS_PER_RESPONSE_MAX])
    while chosen:
        try:
            data = encode_message(BlockResponse(tuple(chosen)))
        except MessageError:
            data = b""
        if data and len(data) <= limit:
            return data
        chosen.pop()
    return encode_message(BlockResponse(()))


_KIND_OF: Final[dict[type, MessageKind]] = {
    Proposal: MessageKind.PROPOSAL,
    ViewChange: MessageKind.VIEW_CHANGE,
    NewView: MessageKind.NEW_VIEW,
    BlockRequest: MessageKind.BLOCK_REQUEST,
    BlockResponse: MessageKind.BLOCK_RESPONSE,
}

_DECODERS: Final[dict[int, Callable[[tuple[Value, ...]], Message]]] = {
    int(MessageKind.PROPOSAL): Proposal.from_fields,
    int(MessageKind.PREPARE): lambda fields: Vote.from_fields((int(Phase.PREPARE), *fields)),
    int(MessageKind.COMMIT): lambda fields: Vote.from_fields((int(Phase.COMMIT), *fields)),
    int(MessageKind.VIEW_CHANGE): ViewChange.from_fields,
    int(MessageKind.NEW_VIEW): NewView.from_fields,
    int(MessageKind.BLOCK_REQUEST): BlockRequest.from_fields,
    int(MessageKind.BLOCK_RESPONSE): BlockResponse.from_fields,
}
