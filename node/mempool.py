"""The mempool: admitted transactions waiting for a block, bounded, in a deterministic order.

Theory of operation
-------------------
Admission has two halves so the expensive one can run elsewhere:

1. stateless: ``Transaction.decode(data, chain_id=...)`` (sizes, fields, signature). The node
   runs it in a worker thread pool; ``add_encoded`` does it inline for the simulator and tests.
2. stateful, in ``add(tx)``: not already pending (``duplicate``); the nonce is the sender's
   next one, counting the sender's pending transactions (``stale_nonce`` below the committed
   next nonce, ``nonce_in_use`` for a pending nonce, ``nonce_gap`` above the next one; nonces
   are strictly sequential, see ``apps.host``); room left (``full``, an explicit rejection the
   client sees, never a silent drop); then the host's ``check_transaction`` (membership
   authorisation and the app's own check), against committed state.

Every rejection is a ``MempoolRejected`` with a stable ``code``.

Because a sender's transaction is admitted only when its nonce follows the sender's last
pending one, arrival order is nonce order for every sender. ``reap`` walks the pool in arrival
order and takes transactions up to the block limits (count and bytes); when one does not fit,
the rest of that sender's transactions are skipped too, so a proposal never has a nonce gap.
The same sequence of calls always yields the same proposal.

After a block commits, ``update`` removes its transactions and rechecks the rest against the
new state (through ``committed_checker()``, which reads each sender's identity and nonce once
per pass instead of once per pending transaction): a transaction whose nonce was used by
another (stale), or that the host now refuses, is evicted together with that sender's later
transactions (they could only fail on their nonce). The evictions are returned so the node
can tell clients.

The mempool is plain Python (no trio, no threads): the node drives it from its event loop,
the simulator from its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from apps.host import TransactionRejected
from apps.transaction import Transaction, TransactionError
from consensus.crypto import hash_bytes

__all__ = [
    "Mempool",
    "MempoolLimits",
    "MempoolRejected",
    "MempoolUpdate",
    "TransactionChecker",
]

CODE_FULL: Final = "full"
CODE_DUPLICATE: Final = "duplicate"
CODE_STALE_NONCE: Final = "stale_nonce"
CODE_NONCE_IN_USE: Final = "nonce_in_use"
CODE_NONCE_GAP: Final = "nonce_gap"
CODE_SENDER_FULL: Final = "sender_full"
CODE_INVALID_TRANSACTION: Final = "invalid_transaction"


class TransactionChecker(Protocol):
    """What the mempool needs from the app host (``apps.host.AppHost`` implements it)."""

    @property
    def chain_id(self) -> str:
        """The chain served."""
        ...

    def check_transaction(self, tx: Transaction, *, expected_nonce: int | None = None) -> None:
        """Raise ``TransactionRejected`` when ``tx`` may not be admitted."""
        ...

    def next_nonce(self, sender: bytes) -> int:
        """The sender's next nonce in committed state."""
        ...

    def committed_checker(self) -> TransactionChecker:
        """A checker with the same answers for one pass over the unchanged committed state
        (it may memoise what every transaction of the pass reads)."""
        ...


@dataclass(frozen=True, slots=True)
class MempoolLimits:
    """Bounds on what the pool holds."""

    # About ten full blocks of small payments: enough to ride out a slow view change.
    transactions_max: int = 20_000
    # Bounds memory whatever the transaction sizes (at most 32 KiB each).
    bytes_max: int = 64 * 1024 * 1024
    # One client cannot fill the pool; a bank's batch job stays well within it.
    per_sender_max: int = 1_000

    def __post_init__(self) -> None:
        if min(self.transactions_max, self.bytes_max, self.per_sender_max) < 1:
            raise ValueError("mempool limits must be positive")


class MempoolRejected(Exception):
    """A transaction was not admitted: ``code`` is stable, ``message`` explains it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class MempoolUpdate:
    """What ``update`` did: transactions removed as committed, and evictions with reasons."""

    committed: int
    evicted: tuple[tuple[bytes, str], ...]


class Mempool:
    """Admitted transactions in arrival (and per-sender nonce) order."""

    def __init__(self, checker: TransactionChecker, limits: MempoolLimits | None = None) -> None:
        self._checker = checker
        self.limits = limits or MempoolLimits()
        # Insertion order is arrival order; removal keeps the order of the rest.
        # Also the node's cache of verified transactions (``known()``): only transactions whose
        # signature was verified are admitted, and the key is the SHA-256 of the whole encoded
        # transaction, signature included, so a hit is these exact signed bytes.
        self._by_hash: dict[bytes, Transaction] = {}
        self._by_sender: dict[bytes, list[Transaction]] = {}
        self._bytes = 0

    # -- inspection ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_hash)

    def __contains__(self, tx_hash: object) -> bool:
        return tx_hash in self._by_hash

    @property
    def size_bytes(self) -> int:
        """Total encoded bytes held."""
        return self._bytes

    def get(self, tx_hash: bytes) -> Transaction | None:
        """The pending transaction with ``tx_hash``, or None."""
        return self._by_hash.get(tx_hash)

    def known(self) -> Mapping[bytes, Transaction]:
        """Pending transactions by hash, all signature-checked: pass to
        ``AppHost.execute_block(..., known=...)`` to skip verifying them again."""
        return self._by_hash

    def pending_nonce(self, sender: bytes) -> int:
        """The nonce the sender's next transaction must carry, counting pending ones."""
        queue = self._by_sender.get(sender)
        if queue:
            return queue[-1].nonce + 1
        return self._checker.next_nonce(sender)

    def statistics(self) -> dict[str, int]:
        """Counts for metrics."""
        return {
            "transactions": len(self._by_hash),
            "bytes": self._bytes,
            "senders": len(self._by_sender),
        }

    # -- admission ----------------------------------------------------------------------------

    def add_encoded(self, data: bytes) -> Transaction:
        """Decode (with the signature check) and admit; raise ``MempoolRejected``."""
        try:
            tx = Transaction.decode(data, chain_id=self._checker.chain_id)
        except TransactionError as error:
            raise MempoolRejected(CODE_INVALID_TRANSACTION, str(error)) from None
        self.add(tx)
        return tx

    def add(self, tx: Transaction) -> None:
        """Admit ``tx``, which passed the stateless checks (decoded, signature verified);
        raise ``MempoolRejected`` naming the reason otherwise."""
        if tx.hash in self._by_hash:
            raise MempoolRejected(CODE_DUPLICATE, f"transaction {tx.hash.hex()} is pending")
        queue = self._by_sender.get(tx.sender, [])
        committed_next = self._checker.next_nonce(tx.sender)
        if tx.nonce < committed_next:
            raise MempoolRejected(
                CODE_STALE_NONCE, f"nonce {tx.nonce} already used; next is {committed_next}"
            )
        expected = queue[-1].nonce + 1 if queue else committed_next
        if tx.nonce < expected:
            raise MempoolRejected(
                CODE_NONCE_IN_USE, f"a pending transaction of this sender has nonce {tx.nonce}"
            )
        if tx.nonce > expected:
            raise MempoolRejected(
                CODE_NONCE_GAP, f"nonce {tx.nonce} skips ahead; the next nonce is {expected}"
            )
        size = len(tx.encoded)
        if len(self._by_hash) >= self.limits.transactions_max:
            raise MempoolRejected(
                CODE_FULL, f"mempool holds {self.limits.transactions_max} transactions"
            )
        if self._bytes + size > self.limits.bytes_max:
            raise MempoolRejected(CODE_FULL, f"mempool holds {self.limits.bytes_max} bytes")
        if len(queue) >= self.limits.per_sender_max:
            raise MempoolRejected(
                CODE_SENDER_FULL,
                f"sender has {self.limits.per_sender_max} pending transactions already",
            )
        try:
            self._checker.check_transaction(tx, expected_nonce=expected)
        except TransactionRejected as rejection:
            raise MempoolRejected(rejection.code, rejection.message) from None
        self._by_hash[tx.hash] = tx
        self._by_sender.setdefault(tx.sender, []).append(tx)
        self._bytes += size

    # -- proposals ----------------------------------------------------------------------------

    def reap(self, *, transactions_max: int, bytes_max: int) -> list[bytes]:
        """Encoded transactions for a proposal, in arrival order, at most ``transactions_max``
        of them and ``bytes_max`` bytes in total, without a nonce gap for any sender."""
        taken: list[bytes] = []
        total = 0
        skipped_senders: set[bytes] = set()
        for tx in self._by_hash.values():
            if len(taken) >= transactions_max:
                break
            if tx.sender in skipped_senders:
                continue
            size = len(tx.encoded)
            if total + size > bytes_max:
                skipped_senders.add(tx.sender)
                continue
            taken.append(tx.encoded)
            total += size
        return taken

    # -- after a commit -----------------------------------------------------------------------

    def update(self, committed_transactions: Iterable[bytes]) -> MempoolUpdate:
        """Drop a committed block's transactions (encoded, as in the block) and recheck the
        rest against the new committed state."""
        committed = 0
        for raw in committed_transactions:
            if self._remove(hash_bytes(raw)):
                committed += 1
        evicted: list[tuple[bytes, str]] = []
        # One pass over one committed state: a checker that reads the per-sender and
        # per-block facts once instead of once per pending transaction (same answers).
        checker = self._checker.committed_checker()
        for sender in list(self._by_sender):
            evicted.extend(self._recheck_sender(sender, checker))
        return MempoolUpdate(committed, tuple(evicted))

    def _recheck_sender(
        self, sender: bytes, checker: TransactionChecker
    ) -> list[tuple[bytes, str]]:
        queue = self._by_sender[sender]
        expected = checker.next_nonce(sender)
        evicted: list[tuple[bytes, str]] = []
        for position, tx in enumerate(queue):
            reason: str | None = None
            if tx.nonce < expected:
                reason = CODE_STALE_NONCE
            elif tx.nonce > expected:
                reason = CODE_NONCE_GAP
            else:
                try:
                    checker.check_transaction(tx, expected_nonce=expected)
                except TransactionRejected as rejection:
                    reason = rejection.code
            if reason is not None:
                # This one fails; the sender's later ones would fail on their nonce.
                evicted.extend(
                    (dropped.hash, reason if dropped is tx else CODE_NONCE_GAP)
                    for dropped in queue[position:]
                )
                for dropped in list(queue[position:]):
                    self._remove(dropped.hash)
                break
            expected += 1
        return evicted

    def _remove(self, tx_hash: bytes) -> bool:
        tx = self._by_hash.pop(tx_hash, None)
        if tx is None:
            return False
        self._bytes -= len(tx.encoded)
        queue = self._by_sender[tx.sender]
        del queue[next(i for i, pending in enumerate(queue) if pending is tx)]
        if not queue:
            del self._by_sender[tx.sender]
        return True
