"""The application plugin interface: what an app implements and what the host gives it.

An app is a deterministic state machine behind a narrow interface (in the spirit of ABCI):

* ``genesis(state, config)``: initialise the app's state from its section of genesis;
* ``check(ctx, operation, arguments)``: mempool admission against current committed state
  (cheap, read-only; raise ``AppError`` to reject);
* ``apply(ctx, operation, arguments)``: execute in a block, reading and writing through
  ``ctx.state``, emitting events, and returning a result value;
* ``call(ctx, caller, operation, arguments)``: an operation invoked by *another app* inside
  the same transaction (cross-app atomic composition: DvP, PvP, receivable financing);
* ``query(state, path, arguments)``: answer a read-only question;
* ``read_rules``: who may read each query's answers and each event (``apps.access``): data the
  node enforces for queries, receipts and the event stream;
* ``end_block(ctx)`` (optional): deterministic housekeeping after the block's last transaction,
  such as releasing the escrow of offers that expired by this block's time.

Determinism rules for app authors
---------------------------------
Every honest node applies the same blocks and must reach the same app hash, so an app must be
a pure function of (state, transaction, block context):

1. No clock: use ``ctx.block.time_ms`` (the block's agreed timestamp), never ``time``.
2. No randomness: derive identifiers from the transaction hash, the sender and nonce.
3. No floating point: amounts are integers in minor units; rates are integer ratios with an
   explicit rounding rule.
4. No I/O: no files, sockets, environment variables, or logging that changes behaviour.
5. No iteration over unordered containers where the order can reach state or results:
   iterate ``ctx.state.scan(...)`` (key order) or ``sorted(...)``.
6. All state goes through ``ctx.state``: module globals and caches must not influence results.
7. Reject with ``AppError`` (a stable code and a message): the host discards every write the
   transaction made, in every app it touched, and records the rejection as the receipt.
8. Time-driven work (expiry) happens in ``end_block``, which sees only the block's context and
   the state: scan the work due by ``ctx.block.time_ms`` (or height) in key order, and bound
   how much one block does (a backlog drains over the next blocks).

A layering test enforces that ``apps/`` never imports trio, lmdb, socket, time, random,
threading, ``network`` or ``node``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final, Protocol

from apps.access import ReadRules
from apps.event import Event
from consensus.codec import Value

if TYPE_CHECKING:
    from apps.schema import AppSchema

__all__ = [
    "ANY_ROLE",
    "ROLES",
    "ROLE_AUDITOR",
    "ROLE_BANK",
    "ROLE_CUSTOMER",
    "ROLE_ENTERPRISE",
    "ROLE_REGULATOR",
    "App",
    "AppError",
    "AppState",
    "BlockContext",
    "Event",
    "ReadState",
    "TxContext",
]


class AppError(Exception):
    """A rule rejected an operation. ``code`` is stable (for clients and tests); ``message``
    explains it to a person, naming the rule."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class BlockContext:
    """The agreed facts of the block being applied."""

    height: int
    time_ms: int
    proposer: bytes
    chain_id: str


class ReadState(Protocol):
    """Read-only view of one app's namespace, in key order."""

    def get(self, key: bytes) -> bytes | None:
        """The value at ``key``, or None."""
        ...

    def scan(
        self, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs with ``start <= key < end`` in key order (or reverse)."""
        ...


class AppState(ReadState, Protocol):
    """Read-write view of one app's namespace. Reads see this block's earlier writes."""

    def put(self, key: bytes, value: bytes) -> None:
        """Set ``key`` to ``value``."""
        ...

    def delete(self, key: bytes) -> None:
        """Remove ``key`` (no error when absent)."""
        ...


class TxContext(Protocol):
    """What the host gives an app while it applies (or checks) one transaction."""

    @property
    def block(self) -> BlockContext:
        """The block being built or applied (for ``check``: the next block's expected context)."""
        ...

    @property
    def sender(self) -> bytes:
        """Public key of the transaction's signer (already authorised by membership); empty
        in ``end_block``, which no one signed (so nothing there can debit an account)."""
        ...

    @property
    def transaction_hash(self) -> bytes:
        """Hash of the transaction: a deterministic source of unique identifiers. In
        ``end_block`` it is the block's end-of-block hash (unique per chain and height)."""
        ...

    @property
    def state(self) -> AppState:
        """This app's namespace."""
        ...

    def emit(self, kind: str, attributes: Mapping[str, Value]) -> None:
        """Record an event from this app."""
        ...

    def call(self, app: str, operation: str, arguments: Mapping[str, Value]) -> Value:
        """Run ``app``'s ``call`` operation inside this transaction (all-or-nothing)."""
        ...

    def query(self, app: str, path: str, arguments: Mapping[str, Value]) -> Value:
        """Ask ``app`` a read-only question against this transaction's view of state."""
        ...


# Membership roles an identity can hold (granted by the membership app). Apps name the roles
# allowed to send each operation in ``App.operations``.
ROLE_BANK: Final = "bank"
ROLE_ENTERPRISE: Final = "enterprise"
ROLE_CUSTOMER: Final = "customer"
ROLE_REGULATOR: Final = "regulator"
ROLE_AUDITOR: Final = "auditor"
ROLES: Final = frozenset({ROLE_BANK, ROLE_ENTERPRISE, ROLE_CUSTOMER, ROLE_REGULATOR, ROLE_AUDITOR})
ANY_ROLE: Final = ROLES


class App(ABC):
    """Base class for application plugins, registered under the ``suanpan.apps`` entry point
    group (``name = "package.module:AppClass"``). Instances hold no state of their own.

    ``schema`` (``apps.schema.AppSchema``) declares every operation, query and call with its
    arguments, once, as data: the app's argument parsing, the command line, the Python
    client's checks and the API description are derived from it (``apps.schema.DispatchingApp``
    dispatches on it). ``operations`` maps every operation a client may send to the membership
    roles allowed to send it; an app with a ``schema`` gets it derived from the schema (an app
    without one declares it by hand and gets no argument checks, CLI options or API schema).
    The host rejects an unknown operation, and a sender that is not an active identity holding
    one of those roles, before ``check`` or ``apply`` runs; finer rules (is this bank the
    issuer of this currency?) are the app's own.

    Membership answers two queries other apps use through ``ctx.query("membership", ...)``:

    * ``"identity", {"public_key": bytes}`` -> ``{"public_key", "institution", "roles"
      (tuple of str), "status" ("active" | "suspended"), "jurisdiction"}`` or ``None``;
    * ``"institution", {"id": str}`` -> ``{"id", "name", "kind", "jurisdiction", "status",
      "sponsor" (the onboarding bank of an enterprise, else None)}``
      or ``None``.
    """

    name: ClassVar[str]
    schema: ClassVar[AppSchema | None] = None
    operations: ClassVar[Mapping[str, frozenset[str]]]
    # Who may read each query path and event kind (``apps.access``). A path or event kind
    # without a rule is readable by nodes only, so an app that declares nothing is private.
    read_rules: ClassVar[ReadRules] = ReadRules()
    # True when ``check`` and ``apply`` neither change the arguments they are handed nor keep
    # any map or list of them (they read them only to build values of their own, as parsing
    # through the schema does): the host then hands them the transaction's decoded arguments
    # as they are. Otherwise (the default) each call gets a copy of every map and list in them,
    # so nothing one check or execution does to them reaches the next. A subclass that
    # overrides ``check`` or ``apply`` is handed copies unless it declares this again.
    arguments_left_intact: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if (
            "check" in cls.__dict__ or "apply" in cls.__dict__
        ) and "arguments_left_intact" not in cls.__dict__:
            cls.arguments_left_intact = False
        schema = cls.__dict__.get("schema")
        if schema is not None:
            if "operations" in cls.__dict__:
                raise TypeError(
                    f"{cls.__name__} declares a schema: its roles come from there, not from "
                    "`operations`"
                )
            cls.operations = schema.roles()

    @abstractmethod
    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        """Initialise from this app's genesis section; raise ``AppError`` when it is invalid."""

    @abstractmethod
    def check(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> None:
        """Admission check against committed state; raise ``AppError`` to reject.

        Must not write. May be less strict than ``apply`` (the block may change state first),
        never stricter.
        """

    @abstractmethod
    def apply(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> Value:
        """Execute ``operation`` for ``ctx.sender``; raise ``AppError`` to reject."""

    def call(
        self, ctx: TxContext, caller: str, operation: str, arguments: Mapping[str, Value]
    ) -> Value:
        """Execute an operation requested by app ``caller`` in the same transaction.

        Apps that offer operations to other apps override this; the default refuses.
        """
        raise AppError("not_callable", f"app {self.name!r} offers no operation {operation!r}")

    @abstractmethod
    def query(self, state: ReadState, path: str, arguments: Mapping[str, Value]) -> Value:
        """Answer a read-only question; raise ``AppError`` for an unknown path or bad input."""

    def end_block(self, ctx: TxContext) -> None:
        """Housekeeping after the block's last transaction (every block, in app-name order).

        ``ctx.sender`` is empty and ``ctx.transaction_hash`` is the block's end-of-block hash.
        Writes and events are kept unless it raises; then the host discards this app's
        end-of-block writes and records an ``end_block_fault`` event (the block still
        commits). The default does nothing.
        """
        return None
