"""The application host: authorises, orders and executes transactions over the apps.

Theory of operation
-------------------
``AppHost`` runs the enabled apps (``apps.base.App``) over committed state read through a
``StateBackend``. It is pure: it never writes the backend. Executing a block returns a
``BlockResult`` (receipts, the sorted write set, the new app hash); the caller persists the
write set atomically with the block and then tells the host with ``committed(height,
app_hash)``. The same host therefore runs on a node (LMDB backend, ``node.store``) and in the
simulator (``apps.state.MemoryBackend``).

Every transaction in a block goes through the same gates, in this order; a failure yields a
rejected receipt and *no* state change at all:

1. decode: the stateless checks of ``Transaction.decode`` (including the signature, unless the
   caller passes the already verified ``Transaction`` in ``known``);
2. routing: the app is enabled and ``operation`` is one of its ``operations``;
3. authorisation: the sender is an identity in membership with status ``active``, its
   institution is ``active``, and it holds one of the roles ``App.operations[operation]`` lists;
4. nonce: ``nonce`` equals the sender's next expected nonce.

Nonces are **strictly sequential** per sender, starting at 0. Once a transaction has passed the
gates its nonce is consumed, *whether or not the app accepts it*: an included transaction can
never be replayed, and a client's next transaction does not depend on the fate of the last. The
mempool therefore keeps each sender's transactions in nonce order without gaps.

5. execution: the app's ``apply`` runs inside a savepoint; every nested ``ctx.call`` into
   another app runs inside its own savepoint, so a rejection anywhere discards every write and
   event of the transaction, in every app it touched (a caller that catches a nested
   ``AppError`` keeps its own writes but none of the callee's). ``AppError`` becomes a rejected
   receipt with the app's code; any other exception from app code is a bug in the app, and is
   recorded deterministically as ``app_fault`` with the exception's type name.

After the last transaction the host runs every app's ``end_block`` (in app-name order, each in
its own savepoint, with no sender and the block's ``end_block_hash`` as transaction hash): the
apps release what expired by the block's time there. It reads only the block's context and
the state, so every node does the same work; its events go to ``BlockResult.block_events``
(kept in memory, not stored: the records it writes are the durable trail). A failing
``end_block`` loses its own writes only and becomes an ``end_block_fault`` event (the node logs
it); the same work is tried again, from the state it left, at the next block. Then the host
writes the block's height and time under its own namespace (so ``check`` contexts know the time
of the chain) and applies the block's write set to the state's Merkle tree
(``apps.state.app_hash_of``): the new root is the app hash, and the tree records to store travel
with the write set in the ``BlockResult``.

``check_transaction`` runs gates 2-4 and the app's ``check`` against committed state (writes
``check`` makes go to a throwaway savepoint) and raises ``TransactionRejected``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final, NamedTuple, Protocol, cast

from apps.base import App, AppError, BlockContext, Event, ReadState
from apps.merkle import TreeUpdate
from apps.proofs import ProofUnsupported
from apps.reads import ReadSet, RecordingBackend
from apps.schema import unshared_value
from apps.state import (
    GENESIS_PREVIOUS_APP_HASH,
    HOST_NAMESPACE,
    NamespacedState,
    StateBackend,
    StateOverlay,
    Write,
    WriteSet,
    app_hash_of,
    namespace_prefix,
    reading,
)
from apps.transaction import Transaction, TransactionError
from apps.validators import scheduled_sets, validator_set_at
from consensus.codec import CodecError, Limits, Value, decode, encode
from consensus.crypto import hash_bytes
from consensus.types import ValidatorSet

__all__ = [
    "CALL_DEPTH_MAX",
    "EVENT_END_BLOCK_FAULT",
    "MEMBERSHIP_APP",
    "RECEIPT_LIMITS",
    "STATUS_OK",
    "STATUS_REJECTED",
    "AppHost",
    "BlockResult",
    "CommittedChecker",
    "GenesisError",
    "GenesisResult",
    "Receipt",
    "TransactionRejected",
    "end_block_hash",
    "end_block_record",
    "stored_end_block_events",
]

MEMBERSHIP_APP: Final = "membership"
STATUS_OK: Final = "ok"
STATUS_REJECTED: Final = "rejected"
# Cross-app calls nest (a DvP calls assets and payments); 8 levels is far beyond any real
# composition and stops an accidental recursion long before Python's own limit.
CALL_DEPTH_MAX: Final = 8
# A receipt carries the app's result and events; 1 MiB bounds what one transaction can make a
# node store, while leaving room for large query-like results.
RECEIPT_LIMITS: Final = Limits(
    total_bytes_max=1024 * 1024,
    depth_max=16,
    str_bytes_max=64 * 1024,
    bytes_max=256 * 1024,
    array_len_max=10_000,
    map_len_max=1024,
)

# Rejection codes the host itself produces (apps add their own AppError codes).
CODE_INVALID_TRANSACTION: Final = "invalid_transaction"
CODE_UNKNOWN_APP: Final = "unknown_app"
CODE_UNKNOWN_OPERATION: Final = "unknown_operation"
CODE_UNKNOWN_SENDER: Final = "unknown_sender"
CODE_SENDER_SUSPENDED: Final = "sender_suspended"
CODE_NOT_AUTHORISED: Final = "not_authorised"
CODE_STALE_NONCE: Final = "stale_nonce"
CODE_BAD_NONCE: Final = "bad_nonce"
CODE_APP_FAULT: Final = "app_fault"
CODE_BAD_RESULT: Final = "bad_result"
CODE_CALL_DEPTH: Final = "call_depth"
# The event the host records when an app's end_block fails (its writes are discarded).
EVENT_END_BLOCK_FAULT: Final = "end_block_fault"
END_BLOCK_TAG: Final = "suanpan/end-block/v1"

_HOST_PREFIX: Final = HOST_NAMESPACE.encode("ascii") + b"\x00"
_NONCE_PREFIX: Final = _HOST_PREFIX + b"nonce/"
_NONCE_END: Final = _HOST_PREFIX + b"nonce0"  # the first key after every nonce key
_LAST_BLOCK_KEY: Final = _HOST_PREFIX + b"last_block"
_MEMBERSHIP_PREFIX: Final = namespace_prefix(MEMBERSHIP_APP)
# Placeholder of a check's block context until the app looks at it (``_Execution.block_source``).
_UNBUILT_BLOCK: Final = BlockContext(height=0, time_ms=0, proposer=b"", chain_id="")
# The membership queries a block may answer from its memo, with their one argument.
_MEMO_ARGUMENTS: Final[dict[str, tuple[str, type[object]]]] = {
    "identity": ("public_key", bytes),
    "institution": ("id", str),
}
# Value types an answer may hold to be memoised (immutable, so a shallow copy is a full copy).
_IMMUTABLE_TYPES: Final = frozenset({str, bytes, int, bool, type(None)})


class TransactionRejected(Exception):
    """A transaction the host refuses: ``code`` is stable, ``message`` names the rule."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class GenesisError(ValueError):
    """The app sections of genesis are invalid (unknown app, or an app rejected its config)."""


class Receipt:
    """The outcome of one transaction in a block.

    ``status`` is ``"ok"`` (``result`` and ``events`` from the app) or ``"rejected"``
    (``code``/``message`` say why; no events, ``result`` None). ``transaction_hash`` is SHA-256
    of the transaction bytes as they appear in the block.

    A value: its fields are ``Final`` (never assigned after ``__init__``), and two receipts
    are equal when their fields are. It is a plain class rather than a frozen dataclass
    because one is built for every transaction: compiled, building it is a C call, where a
    frozen dataclass's generated ``__init__`` runs as Python and sets each field through
    ``object.__setattr__`` (about 40 times the cost).
    """

    __slots__ = (
        "_encoded",
        "code",
        "events",
        "index",
        "message",
        "result",
        "status",
        "transaction_hash",
    )

    def __init__(
        self,
        transaction_hash: bytes,
        index: int,
        status: str,
        code: str = "",
        message: str = "",
        result: Value = None,
        events: tuple[Event, ...] = (),
    ) -> None:
        self.transaction_hash: Final = transaction_hash
        self.index: Final = index
        self.status: Final = status
        self.code: Final = code
        self.message: Final = message
        self.result: Final = result
        self.events: Final = events
        # The canonical bytes, once computed (the host encodes every receipt to check it is
        # storable; the store then writes these bytes instead of encoding again).
        self._encoded: bytes | None = None

    def __eq__(self, other: object) -> bool:
        if type(other) is not Receipt:
            return NotImplemented
        return self.fields() == other.fields()

    def __hash__(self) -> int:
        return hash(self.fields())

    def __repr__(self) -> str:
        return (
            f"Receipt(transaction_hash={self.transaction_hash!r}, index={self.index!r}, "
            f"status={self.status!r}, code={self.code!r}, message={self.message!r}, "
            f"result={self.result!r}, events={self.events!r})"
        )

    @property
    def ok(self) -> bool:
        """True when the transaction was applied."""
        return self.status == STATUS_OK

    def fields(self) -> tuple[Value, ...]:
        """Canonical field tuple."""
        return (
            self.transaction_hash,
            self.index,
            self.status,
            self.code,
            self.message,
            self.result,
            tuple((event.app, event.kind, dict(event.attributes)) for event in self.events),
        )

    def encode(self) -> bytes:
        """Canonical bytes (raises ``CodecError`` when the result or events are not encodable)."""
        encoded = self._encoded
        if encoded is None:
            encoded = encode(self.fields(), RECEIPT_LIMITS)
            self._encoded = encoded
        return encoded

    @classmethod
    def decode(cls, data: bytes) -> Receipt:
        """Parse stored receipt bytes; raises ``CodecError`` when malformed."""
        value = decode(data, RECEIPT_LIMITS)
        if not isinstance(value, tuple) or len(value) != 7:
            raise CodecError("shape", "a receipt is an array of 7 fields")
        tx_hash, index, status, code, message, result, events = value
        if not (
            isinstance(tx_hash, bytes)
            and isinstance(index, int)
            and isinstance(status, str)
            and isinstance(code, str)
            and isinstance(message, str)
            and isinstance(events, tuple)
        ):
            raise CodecError("shape", "receipt fields have the wrong types")
        parsed: list[Event] = []
        for event in events:
            if not (
                isinstance(event, tuple)
                and len(event) == 3
                and isinstance(event[0], str)
                and isinstance(event[1], str)
                and isinstance(event[2], dict)
            ):
                raise CodecError("shape", "receipt event must be (app, kind, attributes)")
            parsed.append(Event(event[0], event[1], event[2]))
        return cls(tx_hash, index, status, code, message, result, tuple(parsed))


@dataclass(frozen=True, slots=True)
class BlockResult:
    """What executing a block produced: receipts in block order, the sorted write set (full
    namespaced keys; None deletes), the app hash of the state after the block, the Merkle
    tree records that go with the write set (``tree.root`` is ``app_hash``), and the events of
    the apps' ``end_block`` work (expiries released; not stored with the block).
    ``write_map`` is the write set as a map, for readers that look writes up (shared with the
    execution that made it: never modify it); None when the result was put together without
    one."""

    height: int
    receipts: tuple[Receipt, ...]
    writes: WriteSet
    app_hash: bytes
    tree: TreeUpdate
    block_events: tuple[Event, ...] = ()
    write_map: dict[bytes, bytes | None] | None = None


def end_block_hash(chain_id: str, height: int) -> bytes:
    """The ``transaction_hash`` apps see in ``end_block`` of block ``height``: unique per chain
    and height, and never the hash of a transaction (it hashes a tagged tuple, not a
    transaction's bytes)."""
    return hash_bytes(encode((END_BLOCK_TAG, chain_id, height)))


class GenesisResult(NamedTuple):
    """The genesis write set and the app hash of the genesis state (height 0); unpacks as
    ``writes, app_hash = host.init_genesis(...)``."""

    writes: WriteSet
    app_hash: bytes


class _MembershipAnswers:
    """One block's memo of membership's ``identity`` and ``institution`` answers.

    The host asks membership who the sender is for every transaction, and apps ask again about
    the other parties. An answer depends only on what is visible in the membership namespace
    (membership's ``query`` reads its own view, and apps are deterministic), so it may be
    reused while nothing there has changed: the block's overlay counts every write under the
    membership prefix and every rollback (``StateOverlay.watched_changes``), and an entry is
    used only while that count equals the one it was recorded at. Only answers made of
    immutable values (or None) are kept, and every caller gets a map of its own. Until the
    block first changes the membership namespace, answers come from the host's memo of
    answers on committed state (``_CommittedAnswers``), which lasts across blocks.
    """

    __slots__ = ("_answers", "_committed", "_membership", "_overlay", "_view")

    def __init__(
        self,
        membership: App,
        overlay: StateOverlay,
        committed: _CommittedAnswers | None = None,
    ) -> None:
        self._membership = membership
        self._overlay = overlay
        self._view = NamespacedState(overlay, MEMBERSHIP_APP, writable=False)
        self._answers: dict[tuple[str, Value], tuple[int, Value]] = {}
        self._committed = committed

    def committed_authorisations(self) -> set[tuple[bytes, str, str]] | None:
        """The host's memo of (sender, app, operation) authorised on committed state
        (``_CommittedAnswers.authorised``) while the block has not changed membership state,
        when the host keeps one; else None."""
        if self._overlay.watched_changes or self._committed is None:
            return None
        return self._committed.authorised

    def query(self, path: str, arguments: Mapping[str, Value]) -> Value:
        """What ``membership.query(path, arguments)`` answers on the block's overlay now."""
        memo_key = _memo_key(path, arguments)
        if memo_key is None:
            return self._membership.query(self._view, path, arguments)
        changes = self._overlay.watched_changes
        # Until the block first changes the membership namespace, the overlay reads there as
        # the committed state it is over, and the host's memo of committed answers holds
        # across blocks until a commit writes there. It keeps only immutable answers, so a
        # copy of a kept one needs no entry in this block's memo as well (an answer it does
        # not keep, one that read a range, this block's memo still keeps).
        committed = self._committed if not changes else None
        if committed is not None:
            kept = committed.kept(memo_key)
            if kept is not None:
                return _copy_answer(kept[0])
        entry = self._answers.get(memo_key)
        if entry is not None and entry[0] == changes:
            return _copy_answer(entry[1])
        if committed is not None:
            answer = committed.answer(path, arguments, None)
        else:
            answer = self._membership.query(self._view, path, arguments)
        if not _immutable_answer(answer):
            return answer
        self._answers[memo_key] = (changes, answer)
        return _copy_answer(answer)


class _Answers(Protocol):
    """Something that answers membership queries (a memo, or a recording memo)."""

    def query(self, path: str, arguments: Mapping[str, Value]) -> Value:
        """What ``membership.query(path, arguments)`` answers."""
        ...


class _CommittedAnswers:
    """Membership's ``identity`` and ``institution`` answers on the *committed* state, kept
    across admission checks and blocks' executions until a commit writes under the membership
    prefix
    (``AppHost.committed`` drops them then, and whenever it is not told what was written).
    Each entry keeps the keys its answer read, so a check that records its read set
    (``check_transaction_reads``) records them on a hit too. Bounded: emptied when full.

    ``authorised`` holds the (sender, app, operation) triples a block's execution found
    authorised (``AppHost._authorise``: the sender an active identity of an active
    institution, holding a role the operation allows) while the block had not changed
    membership state. That outcome depends only on membership's committed state and the
    apps' fixed operation table, so it holds until the same commit that drops the answers;
    a block's execution then authorises a repeat sender with one lookup instead of two
    answers copied and compared. ``checked`` holds the same for admission checks, with the
    keys the two answers read (what a check that records its read set records on a hit)."""

    __slots__ = ("_backend", "_entries", "_membership", "authorised", "checked")

    # Entries kept at most (one per sender and per institution seen): bounds memory under
    # any number of distinct senders.
    ENTRIES_MAX: Final = 100_000

    def __init__(self, membership: App, backend: StateBackend) -> None:
        self._membership = membership
        self._backend = backend
        self._entries: dict[tuple[str, Value], tuple[Value, frozenset[bytes]]] = {}
        self.authorised: set[tuple[bytes, str, str]] = set()
        self.checked: dict[tuple[bytes, str, str], frozenset[bytes]] = {}

    def clear(self) -> None:
        """Forget every answer and authorisation (membership state changed, or may have)."""
        self._entries.clear()
        self.authorised.clear()
        self.checked.clear()

    def for_check(self, recorder: RecordingBackend | None) -> _RecordingAnswers:
        """Answers for one check, adding what each answer read to ``recorder``."""
        return _RecordingAnswers(self, recorder)

    def kept(self, memo_key: tuple[str, Value]) -> tuple[Value, frozenset[bytes]] | None:
        """The entry kept for ``memo_key`` (its answer, the keys it read), or None."""
        return self._entries.get(memo_key)

    def answer(
        self, path: str, arguments: Mapping[str, Value], recorder: RecordingBackend | None
    ) -> Value:
        """``membership.query`` on committed state, memoised (see the class docstring)."""
        memo_key = _memo_key(path, arguments)
        entry = None if memo_key is None else self._entries.get(memo_key)
        if entry is not None:
            if recorder is not None:
                recorder.keys.update(entry[1])
            return _copy_answer(entry[0])
        reads = RecordingBackend(self._backend)
        answer = self._membership.query(
            NamespacedState(reads, MEMBERSHIP_APP, writable=False), path, arguments
        )
        if recorder is not None:
            recorder.keys.update(reads.keys)
            recorder.ranges.extend(reads.ranges)
        if memo_key is None or reads.ranges or not _immutable_answer(answer):
            return answer
        if len(self._entries) >= self.ENTRIES_MAX:
            self._entries.clear()
        self._entries[memo_key] = (answer, frozenset(reads.keys))
        return _copy_answer(answer)


class _RecordingAnswers:
    """``_CommittedAnswers`` for one check, recording reads into that check's recorder."""

    __slots__ = ("_memo", "_recorder")

    def __init__(self, memo: _CommittedAnswers, recorder: RecordingBackend | None) -> None:
        self._memo = memo
        self._recorder = recorder

    def query(self, path: str, arguments: Mapping[str, Value]) -> Value:
        """The memo's answer; the keys it read go to the check's read set."""
        return self._memo.answer(path, arguments, self._recorder)

    def found_authorised(self, authorisation: tuple[bytes, str, str]) -> bool:
        """Whether an earlier check found ``authorisation`` (sender, app, operation) authorised
        on the committed state as it still is; if so, what that found it from goes to this
        check's read set."""
        reads = self._memo.checked.get(authorisation)
        if reads is None:
            return False
        if self._recorder is not None:
            self._recorder.keys.update(reads)
        return True

    def keep_authorised(
        self, authorisation: tuple[bytes, str, str], sender: bytes, institution: Value
    ) -> None:
        """Keep ``authorisation``, just found from the answers on ``sender``'s identity and
        its ``institution``, with the keys those read: only when the memo keeps both answers
        (it does not keep one that read a range of keys)."""
        memo = self._memo
        identity_key = _memo_key("identity", {"public_key": sender})
        institution_key = _memo_key("institution", {"id": institution})
        identity = None if identity_key is None else memo.kept(identity_key)
        found = None if institution_key is None else memo.kept(institution_key)
        if identity is None or found is None:
            return
        if len(memo.checked) >= _CommittedAnswers.ENTRIES_MAX:
            memo.checked.clear()
        memo.checked[authorisation] = identity[1] | found[1]


def _memo_key(path: str, arguments: Mapping[str, Value]) -> tuple[str, Value] | None:
    expected = _MEMO_ARGUMENTS.get(path)
    if expected is None or len(arguments) != 1:
        return None
    name, kind = expected
    value = arguments.get(name)
    if type(value) is not kind:
        return None
    return (path, value)


def _immutable_answer(answer: Value) -> bool:
    if answer is None:
        return True
    if type(answer) is not dict:
        return False
    for key, value in answer.items():
        if type(key) is not str:
            return False
        if type(value) is tuple:
            if not all(type(item) in _IMMUTABLE_TYPES for item in value):
                return False
        elif type(value) not in _IMMUTABLE_TYPES:
            return False
    return True


def _copy_answer(answer: Value) -> Value:
    return None if answer is None else dict(cast(dict[str, Value], answer))


class _Execution:
    """Mutable bookkeeping of one transaction (or one check) in progress. (A plain class, not
    a dataclass: one is built per transaction, and compiled its ``__init__`` is a C call.)"""

    __slots__ = (
        "answers",
        "block",
        "block_source",
        "depth",
        "events",
        "overlay",
        "sender",
        "transaction_hash",
    )

    def __init__(
        self,
        overlay: StateOverlay,
        block: BlockContext,
        sender: bytes,
        transaction_hash: bytes,
        *,
        answers: _MembershipAnswers | None = None,
    ) -> None:
        self.overlay = overlay
        self.block = block
        self.sender = sender
        self.transaction_hash = transaction_hash
        self.events: list[Event] = []
        self.depth = 0
        # The block's membership memo (None while checking a transaction for the mempool).
        self.answers = answers
        # Checks read the last block's record only when the app looks at ``ctx.block``: this
        # builds ``block`` on first use (then it is set to None).
        self.block_source: Callable[[], BlockContext] | None = None


class _Context:
    """The ``TxContext`` one app sees while it handles one transaction."""

    __slots__ = ("_app", "_execution", "_host", "_state")

    def __init__(self, host: AppHost, execution: _Execution, app: str) -> None:
        self._host = host
        self._execution = execution
        self._app = app
        self._state = NamespacedState(execution.overlay, app, writable=True)

    @property
    def block(self) -> BlockContext:
        execution = self._execution
        if execution.block_source is not None:
            execution.block = execution.block_source()
            execution.block_source = None
        return execution.block

    @property
    def sender(self) -> bytes:
        return self._execution.sender

    @property
    def transaction_hash(self) -> bytes:
        return self._execution.transaction_hash

    @property
    def state(self) -> NamespacedState:
        return self._state

    def emit(self, kind: str, attributes: Mapping[str, Value]) -> None:
        if not isinstance(kind, str) or not kind:
            raise AppError("bad_event", "an event kind is a non-empty string")
        self._execution.events.append(Event(self._app, kind, dict(attributes)))

    def call(self, app: str, operation: str, arguments: Mapping[str, Value]) -> Value:
        return self._host._nested_call(self._execution, self._app, app, operation, arguments)

    def query(self, app: str, path: str, arguments: Mapping[str, Value]) -> Value:
        answers = self._execution.answers
        if answers is not None and app == MEMBERSHIP_APP:
            return answers.query(path, arguments)
        target = self._host._app(app)
        view = NamespacedState(self._execution.overlay, app, writable=False)
        return target.query(view, path, arguments)


class AppHost:
    """Runs ``apps`` over ``backend``. ``height``/``app_hash`` describe the committed state the
    backend holds (0 and ``GENESIS_PREVIOUS_APP_HASH`` before genesis). The membership app
    must be among ``apps``: it is what authorises senders."""

    # Blocks reuse membership answers while membership state is unchanged (tests turn it off
    # to compare both paths).
    _memoise_membership: bool = True

    def __init__(
        self,
        apps: Sequence[App],
        backend: StateBackend,
        *,
        chain_id: str,
        height: int = 0,
        app_hash: bytes = GENESIS_PREVIOUS_APP_HASH,
    ) -> None:
        by_name: dict[str, App] = {}
        for app in apps:
            if app.name in by_name:
                raise ValueError(f"app {app.name!r} is enabled twice")
            if app.name == HOST_NAMESPACE:
                raise ValueError(f"app name {app.name!r} is reserved")
            by_name[app.name] = app
        if MEMBERSHIP_APP not in by_name:
            raise ValueError("the membership app must be enabled: it authorises every sender")
        self._apps = dict(sorted(by_name.items()))
        # Apps handed the transaction's decoded arguments without a copy first.
        self._arguments_intact = frozenset(
            name for name, app in by_name.items() if app.arguments_left_intact
        )
        self._backend = backend
        self.chain_id = chain_id
        self.height = height
        self.app_hash = app_hash
        self._committed_answers = _CommittedAnswers(by_name[MEMBERSHIP_APP], backend)

    @property
    def app_names(self) -> tuple[str, ...]:
        """Enabled apps, sorted."""
        return tuple(self._apps)

    def app(self, name: str) -> App:
        """The enabled app called ``name``; raises ``KeyError``."""
        return self._apps[name]

    # -- genesis ---------------------------------------------------------------------------

    def init_genesis(
        self, app_genesis: Mapping[str, Value], *, validators: ValidatorSet | None = None
    ) -> GenesisResult:
        """Run every app's ``genesis`` (in name order) with its section of ``app_genesis``
        (an empty map when absent) over the backend; return the write set and app hash.
        Raises ``GenesisError`` for a section naming no enabled app or a rejected config.

        ``validators`` (the genesis document's validators) starts the on-chain validator
        registry that governance changes (``apps.validators``); without it the chain keeps its
        genesis validators for ever."""
        unknown = sorted(set(app_genesis) - set(self._apps))
        if unknown:
            raise GenesisError(f"genesis has sections for apps that are not enabled: {unknown}")
        overlay = StateOverlay(self._backend)
        for name, app in self._apps.items():
            section = _string_map(app_genesis.get(name, {}))
            if section is None:
                raise GenesisError(f"genesis section of {name!r} must be a map with string keys")
            if name == MEMBERSHIP_APP and validators is not None:
                if "validators" in section:
                    raise GenesisError(
                        "the membership genesis lists no validators: they come from the"
                        " genesis validators"
                    )
                section = {
                    **section,
                    "validators": tuple(
                        {
                            "name": v.name,
                            "public_key": v.public_key,
                            "node_key": v.node_key or b"",
                        }
                        for v in validators.validators
                    ),
                }
            try:
                app.genesis(NamespacedState(overlay, name, writable=True), section)
            except AppError as error:
                raise GenesisError(f"app {name!r} rejected its genesis: {error}") from None
        writes = overlay.writes()
        return GenesisResult(writes, app_hash_of(self._backend, writes).root)

    def committed(self, height: int, app_hash: bytes, writes: WriteSet | None = None) -> None:
        """Record that the backend now holds the state after ``height`` (0: genesis).
        ``writes``, the block's write set, lets the host keep what it memoised about
        committed state the block did not change (without it, nothing is kept)."""
        assert height in (self.height, self.height + 1), "heights are committed in order"
        self.height = height
        self.app_hash = app_hash
        if writes is None or _touches(writes, _MEMBERSHIP_PREFIX):
            self._committed_answers.clear()

    # -- nonces and authorisation ------------------------------------------------------------

    def next_nonce(self, sender: bytes) -> int:
        """The nonce ``sender``'s next transaction must carry (committed state)."""
        return _read_nonce(self._backend, sender)

    def nonce_senders(self, written_keys: Sequence[bytes]) -> list[bytes]:
        """The senders whose next nonce a write set changes (``written_keys`` ascending):
        exactly the senders of the transactions that passed the gates in that block."""
        low = bisect.bisect_left(written_keys, _NONCE_PREFIX)
        high = bisect.bisect_left(written_keys, _NONCE_END, low)
        size = len(_NONCE_PREFIX)
        return [key[size:] for key in written_keys[low:high]]

    def last_block_time_ms(self) -> int:
        """The timestamp of the last committed block (0 before the first block)."""
        return _read_last_block(self._backend)[1]

    # -- validators --------------------------------------------------------------------------

    def validator_set(self, height: int) -> ValidatorSet | None:
        """The validator set that certifies block ``height``, as committed state decides it:
        final for ``height <= self.height + 2`` (a change executed in block c is in force from
        c + 2). None when the chain keeps no validator registry (its genesis set stands)."""
        assert height >= 1
        view = NamespacedState(self._backend, MEMBERSHIP_APP, writable=False)
        return validator_set_at(view, height)

    def validator_schedule(self) -> tuple[tuple[int, ValidatorSet], ...]:
        """Every (effective height, set) in the committed registry, in height order."""
        view = NamespacedState(self._backend, MEMBERSHIP_APP, writable=False)
        return scheduled_sets(view)

    def _authorise(
        self,
        state: StateOverlay | StateBackend,
        tx: Transaction,
        answers: _Answers | None = None,
    ) -> App:
        app = self._apps.get(tx.app)
        if app is None:
            raise TransactionRejected(CODE_UNKNOWN_APP, f"no app {tx.app!r} on this chain")
        roles_allowed = app.operations.get(tx.operation)
        if roles_allowed is None:
            raise TransactionRejected(
                CODE_UNKNOWN_OPERATION, f"app {tx.app!r} has no operation {tx.operation!r}"
            )
        # Authorised before on committed state, which this block has not changed in the
        # membership namespace (``_CommittedAnswers.authorised``).
        authorised = (
            answers.committed_authorisations() if isinstance(answers, _MembershipAnswers) else None
        )
        authorisation = (tx.sender, tx.app, tx.operation)
        if authorised is not None and authorisation in authorised:
            return app
        recording = answers if isinstance(answers, _RecordingAnswers) else None
        if recording is not None and recording.found_authorised(authorisation):
            return app
        query: Callable[[str, Mapping[str, Value]], Value]
        if answers is None:
            membership = self._apps[MEMBERSHIP_APP]
            view = NamespacedState(state, MEMBERSHIP_APP, writable=False)
            query = partial(membership.query, view)
        else:
            query = answers.query
        identity = _string_map(query("identity", {"public_key": tx.sender}))
        if identity is None:
            raise TransactionRejected(
                CODE_UNKNOWN_SENDER, f"sender {tx.sender.hex()} is not a registered identity"
            )
        if identity.get("status") != "active":
            raise TransactionRejected(
                CODE_SENDER_SUSPENDED, f"identity {tx.sender.hex()} is suspended"
            )
        institution = _string_map(query("institution", {"id": identity.get("institution")}))
        if institution is None or institution.get("status") != "active":
            raise TransactionRejected(
                CODE_SENDER_SUSPENDED,
                f"institution {identity.get('institution')!r} of the sender is not active",
            )
        roles = identity.get("roles")
        held = frozenset(roles) if isinstance(roles, (tuple, list)) else frozenset()
        if not held & roles_allowed:
            raise TransactionRejected(
                CODE_NOT_AUTHORISED,
                f"{tx.app}.{tx.operation} needs one of the roles {sorted(roles_allowed)}, "
                f"sender holds {sorted(str(role) for role in held)}",
            )
        if authorised is not None:
            if len(authorised) >= _CommittedAnswers.ENTRIES_MAX:
                authorised.clear()
            authorised.add(authorisation)
        if recording is not None:
            recording.keep_authorised(authorisation, tx.sender, identity.get("institution"))
        return app

    @staticmethod
    def _check_nonce(tx: Transaction, expected: int) -> None:
        if tx.nonce < expected:
            raise TransactionRejected(
                CODE_STALE_NONCE, f"nonce {tx.nonce} already used; next is {expected}"
            )
        if tx.nonce != expected:
            raise TransactionRejected(
                CODE_BAD_NONCE, f"nonce {tx.nonce} is not the next one ({expected})"
            )

    # -- mempool admission -------------------------------------------------------------------

    def check_transaction(self, tx: Transaction, *, expected_nonce: int | None = None) -> None:
        """Admission check against committed state; raises ``TransactionRejected``.

        ``tx`` has passed the stateless checks (decode and signature). ``expected_nonce`` lets
        the mempool admit a sender's later transactions while earlier ones are pending: it
        must be at least the committed next nonce (the default)."""
        answers = self._committed_answers.for_check(None)
        self._check_transaction(self._backend, tx, expected_nonce, answers, self.next_nonce, None)

    def check_transaction_reads(
        self, tx: Transaction, *, expected_nonce: int | None = None
    ) -> ReadSet:
        """``check_transaction``, returning what it read of the committed state (``apps.reads``):
        every key and scanned range, the last block's record only if the app looked at
        ``ctx.block``, and never the sender's nonce (a block changes it only by including one
        of the sender's transactions). While no block writes into the read set, the same check
        gives the same answer. Raises ``TransactionRejected`` like ``check_transaction``."""
        recorder = RecordingBackend(self._backend)
        answers = self._committed_answers.for_check(recorder)
        self._check_transaction(recorder, tx, expected_nonce, answers, self.next_nonce, None)
        return recorder.read_set()

    def committed_checker(self) -> CommittedChecker:
        """A checker over the committed state *as it is now*, for one pass over many
        transactions (the mempool's recheck after a commit): it answers exactly as
        ``check_transaction`` and ``next_nonce`` do, but reads once what every transaction
        of the pass would read again (the sender's identity and institution, its nonce, the
        last block). Valid only while the committed state does not change: use it within one
        synchronous pass and drop it."""
        return CommittedChecker(self)

    def _check_transaction(
        self,
        state: StateBackend,
        tx: Transaction,
        expected_nonce: int | None,
        answers: _Answers | None,
        next_nonce: Callable[[bytes], int],
        last_block: tuple[int, int] | None,
    ) -> None:
        """The admission check over ``state`` (the committed state, or a recorder over it)."""
        if tx.chain_id != self.chain_id:
            raise TransactionRejected(
                CODE_INVALID_TRANSACTION, f"transaction is for chain {tx.chain_id!r}"
            )
        app = self._authorise(state, tx, answers)
        committed = next_nonce(tx.sender)
        if tx.nonce < committed:
            self._check_nonce(tx, committed)
        self._check_nonce(tx, committed if expected_nonce is None else expected_nonce)

        def next_block() -> BlockContext:
            height, time_ms = _read_last_block(state) if last_block is None else last_block
            return BlockContext(
                height=height + 1, time_ms=time_ms, proposer=b"", chain_id=self.chain_id
            )

        overlay = StateOverlay(state)
        overlay.savepoint()  # a misbehaving check cannot write anything that survives
        execution = _Execution(overlay, _UNBUILT_BLOCK, tx.sender, tx.hash)
        execution.block_source = next_block
        try:
            # The transaction may be executed later from these very values: the check gets
            # its own copy of the arguments, unless the app leaves them intact.
            arguments = self._arguments_for(tx)
            app.check(_Context(self, execution, tx.app), tx.operation, arguments)
        except AppError as error:
            raise TransactionRejected(error.code, error.message) from None
        except Exception as error:
            raise TransactionRejected(
                CODE_APP_FAULT, f"app {tx.app!r} failed: {type(error).__name__}"
            ) from None

    # -- block execution ---------------------------------------------------------------------

    def execute_block(
        self,
        block: BlockContext,
        transactions: Sequence[bytes],
        *,
        known: Mapping[bytes, Transaction] | None = None,
        hashes: Sequence[bytes] | None = None,
        vouched_app_hash: bytes | None = None,
    ) -> BlockResult:
        """Execute a block's transactions in order over committed state (the host's current
        height + 1). Pure: returns receipts, write set and app hash; changes nothing.

        ``known`` maps transaction hashes to transactions whose signatures the caller already
        verified (the mempool's), so their signatures are not checked twice. ``hashes`` are the
        transactions' hashes (SHA-256 of each, in order; ``Block.transaction_hashes``), which
        the host otherwise computes.

        ``vouched_app_hash``: the caller vouches that the state after the block has this app
        hash (a certified later header says so) and will compute the tree of a later state
        over this block's writes (``tree_update``): the Merkle tree is not updated, and the
        result carries that app hash with a tree update of no records."""
        assert block.height == self.height + 1, (
            f"block {block.height} does not follow committed height {self.height}"
        )
        assert hashes is None or len(hashes) == len(transactions), "one hash per transaction"
        assert block.chain_id == self.chain_id, "block for another chain"
        with reading(self._backend):
            overlay = StateOverlay(self._backend, watch=_MEMBERSHIP_PREFIX)
            answers = (
                _MembershipAnswers(self._apps[MEMBERSHIP_APP], overlay, self._committed_answers)
                if self._memoise_membership
                else None
            )
            receipts = tuple(
                self._execute_one(
                    overlay,
                    block,
                    index,
                    raw,
                    hash_bytes(raw) if hashes is None else hashes[index],
                    known,
                    answers,
                )
                for index, raw in enumerate(transactions)
            )
            block_events = self._end_block(overlay, block, answers)
            overlay.put(_LAST_BLOCK_KEY, encode((block.height, block.time_ms)))
            writes = overlay.writes()
            tree = (
                app_hash_of(self._backend, writes)
                if vouched_app_hash is None
                else TreeUpdate(vouched_app_hash, (), {})
            )
        return BlockResult(
            block.height, receipts, writes, tree.root, tree, block_events, overlay.write_map()
        )

    def tree_update(self, writes: Iterable[Write]) -> TreeUpdate:
        """The Merkle tree update of ``writes`` (distinct keys, in any order) over the tree the
        host's backend holds, which blocks executed with ``vouched_app_hash`` left as it was:
        given the writes of all of them merged, the tree of the state after the last (the
        tree is a function of the state's entries alone), computed once."""
        with reading(self._backend):
            return app_hash_of(self._backend, writes)

    def _end_block(
        self, overlay: StateOverlay, block: BlockContext, answers: _MembershipAnswers | None
    ) -> tuple[Event, ...]:
        """Every app's ``end_block``, in name order, each in its own savepoint."""
        events: list[Event] = []
        transaction_hash = end_block_hash(block.chain_id, block.height)
        for name, app in self._apps.items():
            if type(app).end_block is App.end_block:
                continue  # nothing to do: skip the savepoint
            execution = _Execution(overlay, block, b"", transaction_hash, answers=answers)
            overlay.savepoint()
            try:
                app.end_block(_Context(self, execution, name))
            except AppError as error:
                overlay.rollback()
                events.append(_end_block_fault(name, error.code, error.message))
                continue
            except Exception as error:
                overlay.rollback()
                events.append(
                    _end_block_fault(name, CODE_APP_FAULT, f"failed: {type(error).__name__}")
                )
                continue
            assert execution.depth == 0
            if execution.events and not _storable((*events, *execution.events)):
                # The node stores a block's end-of-block events like a receipt: an app whose
                # events would not fit loses its end-of-block work, as if it had failed.
                overlay.rollback()
                message = "end-of-block events do not fit a record"
                events.append(_end_block_fault(name, CODE_APP_FAULT, message))
                continue
            overlay.release()
            events.extend(execution.events)
        return tuple(events)

    def _execute_one(
        self,
        overlay: StateOverlay,
        block: BlockContext,
        index: int,
        raw: bytes,
        tx_hash: bytes,
        known: Mapping[bytes, Transaction] | None,
        answers: _MembershipAnswers | None = None,
    ) -> Receipt:
        arguments: Mapping[str, Value]
        # The fast path is keyed by the whole encoded transaction (its hash, and the bytes
        # compared), which is everything the signature covers and the signature itself.
        known_tx = None if known is None else known.get(tx_hash)
        if known_tx is not None and known_tx.encoded != raw:
            known_tx = None
        if known_tx is not None and known_tx.chain_id == self.chain_id:
            # Decoded from exactly these bytes (and verified) by the caller: the same values
            # every node decodes from the block. The app gets its own copy of the arguments
            # (unless it leaves them intact), so nothing an execution does to them reaches the
            # next one.
            tx = known_tx
            arguments = self._arguments_for(tx)
        else:
            try:
                # Decode the block's own bytes, so every node hands apps identical values
                # (tuples, not whatever a local caller built); only the signature check is
                # skipped for transactions the caller already verified.
                tx = Transaction.decode(
                    raw, chain_id=self.chain_id, check_signature=known_tx is None
                )
            except TransactionError as invalid:
                # (not ``error``: compiled, a name keeps the type of its first exception)
                return Receipt(
                    tx_hash, index, STATUS_REJECTED, CODE_INVALID_TRANSACTION, str(invalid)
                )
            arguments = tx.arguments
        try:
            app = self._authorise(overlay, tx, answers)
            self._check_nonce(tx, _read_nonce(overlay, tx.sender))
        except TransactionRejected as rejection:
            return Receipt(tx_hash, index, STATUS_REJECTED, rejection.code, rejection.message)
        overlay.put(_nonce_key(tx.sender), encode(tx.nonce + 1))
        execution = _Execution(overlay, block, tx.sender, tx_hash, answers=answers)
        overlay.savepoint()
        try:
            result = app.apply(_Context(self, execution, tx.app), tx.operation, arguments)
            receipt = Receipt(
                tx_hash, index, STATUS_OK, result=result, events=tuple(execution.events)
            )
            receipt.encode()  # the result and events must be storable values
        except AppError as error:
            overlay.rollback()
            return Receipt(tx_hash, index, STATUS_REJECTED, error.code, error.message)
        except CodecError as error:
            overlay.rollback()
            return Receipt(
                tx_hash, index, STATUS_REJECTED, CODE_BAD_RESULT, f"result or events: {error}"
            )
        except Exception as error:
            overlay.rollback()
            return Receipt(
                tx_hash,
                index,
                STATUS_REJECTED,
                CODE_APP_FAULT,
                f"app {tx.app!r} failed: {type(error).__name__}",
            )
        assert execution.depth == 0
        assert overlay.depth == 1
        overlay.release()
        return receipt

    def _arguments_for(self, tx: Transaction) -> Mapping[str, Value]:
        """What the app of ``tx`` is handed: the decoded arguments themselves when it leaves
        them intact (``App.arguments_left_intact``), else a copy of every map and list."""
        if tx.app in self._arguments_intact:
            return tx.arguments
        return _fresh_copy(tx.arguments)

    def _nested_call(
        self,
        execution: _Execution,
        caller: str,
        app_name: str,
        operation: str,
        arguments: Mapping[str, Value],
    ) -> Value:
        target = self._apps.get(app_name)
        if target is None:
            raise AppError(CODE_UNKNOWN_APP, f"no app {app_name!r} to call")
        if execution.depth >= CALL_DEPTH_MAX:
            raise AppError(CODE_CALL_DEPTH, f"cross-app calls nest deeper than {CALL_DEPTH_MAX}")
        overlay = execution.overlay
        events_before = len(execution.events)
        overlay.savepoint()
        execution.depth += 1
        try:
            result = target.call(_Context(self, execution, app_name), caller, operation, arguments)
        except BaseException:
            overlay.rollback()
            del execution.events[events_before:]
            raise
        finally:
            execution.depth -= 1
        overlay.release()
        return result

    def _app(self, name: str) -> App:
        app = self._apps.get(name)
        if app is None:
            raise AppError(CODE_UNKNOWN_APP, f"no app {name!r} on this chain")
        return app

    # -- queries -----------------------------------------------------------------------------

    def query(
        self,
        app: str,
        path: str,
        arguments: Mapping[str, Value],
        *,
        state: StateBackend | None = None,
    ) -> Value:
        """Answer ``app``'s query ``path`` on committed state (or on ``state``, e.g. an older
        version being proven); raises ``AppError`` for an unknown app or path, bad arguments,
        or (as ``app_fault``) a failing app."""
        target = self._app(app)
        view: ReadState = NamespacedState(
            self._backend if state is None else state, app, writable=False
        )
        try:
            return target.query(view, path, arguments)
        except (AppError, ProofUnsupported):
            raise
        except Exception as error:
            raise AppError(CODE_APP_FAULT, f"query failed: {type(error).__name__}") from None


def end_block_record(chain_id: str, height: int, index: int, events: tuple[Event, ...]) -> Receipt:
    """The record a node stores for block ``height``'s end-of-block events: a receipt under the
    ``end_block_hash`` the apps saw, numbered after the block's ``index`` transactions."""
    return Receipt(end_block_hash(chain_id, height), index, STATUS_OK, events=events)


def stored_end_block_events(chain_id: str, transactions: int, result: BlockResult) -> bytes | None:
    """The bytes a node stores for the end-of-block events of the block ``result`` executed
    (``end_block_record``; ``transactions``: how many the block holds), or None when it has
    none (nothing is stored)."""
    if not result.block_events:
        return None
    record = end_block_record(chain_id, result.height, transactions, result.block_events)
    return record.encode()


def _storable(events: tuple[Event, ...]) -> bool:
    try:
        end_block_record("", 0, 0, events).encode()
    except CodecError:
        return False
    return True


def _end_block_fault(app: str, code: str, message: str) -> Event:
    return Event(
        HOST_NAMESPACE, EVENT_END_BLOCK_FAULT, {"app": app, "code": code, "message": message}
    )


def _string_map(value: Value) -> Mapping[str, Value] | None:
    if (type(value) is dict or isinstance(value, Mapping)) and all(
        isinstance(key, str) for key in value
    ):
        return cast(Mapping[str, Value], value)
    return None


def _nonce_key(sender: bytes) -> bytes:
    return _NONCE_PREFIX + sender


class CommittedChecker:
    """``AppHost.committed_checker()``: ``check_transaction`` and ``next_nonce`` over one
    unchanging committed state, with the per-sender and per-block reads memoised (membership
    answers through the same ``_MembershipAnswers`` memo a block uses, over an overlay that is
    never written, so its entries never go stale while the committed state stands)."""

    __slots__ = ("_answers", "_host", "_last_block", "_nonces", "chain_id")

    def __init__(self, host: AppHost) -> None:
        self._host = host
        self.chain_id = host.chain_id
        overlay = StateOverlay(host._backend, watch=_MEMBERSHIP_PREFIX)
        self._answers = _MembershipAnswers(host._apps[MEMBERSHIP_APP], overlay)
        self._nonces: dict[bytes, int] = {}
        self._last_block: tuple[int, int] | None = None

    def next_nonce(self, sender: bytes) -> int:
        """The committed next nonce of ``sender`` (read once per sender)."""
        nonce = self._nonces.get(sender)
        if nonce is None:
            nonce = self._nonces[sender] = self._host.next_nonce(sender)
        return nonce

    def committed_checker(self) -> CommittedChecker:
        """This checker (it already is one over an unchanging committed state)."""
        return self

    def check_transaction(self, tx: Transaction, *, expected_nonce: int | None = None) -> None:
        """As ``AppHost.check_transaction`` on the committed state this checker was made on."""
        if self._last_block is None:
            self._last_block = _read_last_block(self._host._backend)
        host = self._host
        host._check_transaction(
            host._backend, tx, expected_nonce, self._answers, self.next_nonce, self._last_block
        )


def _fresh_copy(arguments: Mapping[str, Value]) -> dict[str, Value]:
    """A copy of decoded arguments sharing nothing mutable with them (maps are copied at
    every depth; tuples, strings, bytes and numbers are immutable and shared)."""
    return {
        name: value if type(value) in _IMMUTABLE_TYPES else cast("Value", unshared_value(value))
        for name, value in arguments.items()
    }


def _touches(writes: WriteSet, prefix: bytes) -> bool:
    """True when the sorted write set has a key starting with ``prefix``."""
    position = bisect.bisect_left(writes, (prefix,))
    return position < len(writes) and writes[position][0].startswith(prefix)


def _read_nonce(state: StateOverlay | StateBackend, sender: bytes) -> int:
    raw = state.get(_nonce_key(sender))
    if raw is None:
        return 0
    value = decode(raw)
    assert isinstance(value, int)
    return value


def _read_last_block(state: StateOverlay | StateBackend) -> tuple[int, int]:
    raw = state.get(_LAST_BLOCK_KEY)
    if raw is None:
        return 0, 0
    value = decode(raw)
    assert isinstance(value, tuple)
    height, time_ms = value
    assert isinstance(height, int)
    assert isinstance(time_ms, int)
    return height, time_ms
