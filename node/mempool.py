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

After a block commits, ``update`` removes its transactions and rechecks what the block may
have changed: a transaction whose nonce was used by another (stale), or that the host now
refuses, is evicted together with that sender's later transactions (they could only fail on
their nonce). The evictions are returned so the node can tell clients.

The recheck costs what the block touched, not what the pool holds. Admission records each
transaction's *read set* (``AppHost.check_transaction_reads``: every committed key and range
its check read). Given the block's write set, ``update`` rechecks

* the nonce order of every sender the block touched: senders of the block's transactions that
  this pool held, and senders whose nonce the block wrote (``nonce_senders``). One read per
  sender: the queue is contiguous from its first nonce, so comparing the first pending nonce
  with the new committed one decides for all of them;
* the full check of every transaction whose read set the block wrote into: a membership
  suspension or an institution's status change (authorisation reads them), anything an app's
  ``check`` read, and the last block's record when the check looked at ``ctx.block``.

That gives exactly the evictions a recheck of the whole pool gives: a check is a deterministic
function of the transaction, its expected nonce and what it reads (``apps.base``), a block
changes a sender's nonce only by including one of its transactions, and a transaction's
expected nonce changes only when its sender's queue does. (``update`` without a write set
rechecks the whole pool that way, and a test compares both.) Nor does correctness rest on the
recheck at all: every block re-runs every gate and the app's rules for every transaction it
carries (``AppHost.execute_block``), and a check may always be less strict than ``apply``. A
pending transaction that has become invalid costs at most a rejected receipt in a block (or,
for a stale nonce, a refusal at execution), never a wrong state.

The mempool is plain Python (no trio, no threads): the node drives it from its event loop,
the simulator from its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from apps.host import TransactionRejected
from apps.reads import ReadSet
from apps.transaction import Transaction, TransactionError

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

    def check_transaction_reads(
        self, tx: Transaction, *, expected_nonce: int | None = None
    ) -> ReadSet:
        """Raise ``TransactionRejected`` when ``tx`` may not be admitted; otherwise return what
        the check read of committed state (never the sender's nonce)."""
        ...

    def next_nonce(self, sender: bytes) -> int:
        """The sender's next nonce in committed state."""
        ...

    def nonce_senders(self, written_keys: Sequence[bytes]) -> list[bytes]:
        """The senders whose next nonce a block's write set (sorted keys) changes."""
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
    # Work done: committed-nonce reads plus admission checks run again.
    checks: int = 0


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
        # When each sender's current queue began (the recheck visits senders in pool order).
        self._sender_order: dict[bytes, int] = {}
        self._arrivals = itertools.count()
        # Each pending transaction's read set, and who read each key / scanned some range.
        self._reads: dict[bytes, ReadSet] = {}
        self._readers: dict[bytes, set[bytes]] = {}
        self._range_readers: dict[bytes, ReadSet] = {}

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
            reads = self._checker.check_transaction_reads(tx, expected_nonce=expected)
        except TransactionRejected as rejection:
            raise MempoolRejected(rejection.code, rejection.message) from None
        self._by_hash[tx.hash] = tx
        if not queue:
            self._by_sender[tx.sender] = queue
            self._sender_order[tx.sender] = next(self._arrivals)
        queue.append(tx)
        self._bytes += size
        self._register_reads(tx.hash, reads)

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

    def update(
        self,
        committed_hashes: Iterable[bytes],
        written_keys: Sequence[bytes] | None = None,
    ) -> MempoolUpdate:
        """Drop a committed block's transactions (by hash: ``Block.transaction_hashes``) and
        recheck what the block changed (see the module docstring). ``written_keys`` is the
        block's write set's keys in ascending order; without it, the whole pool is
        rechecked."""
        committed = 0
        touched: set[bytes] = set()
        for tx_hash in committed_hashes:
            tx = self._by_hash.get(tx_hash)
            if tx is not None:
                touched.add(tx.sender)
                self._remove(tx.hash)
                committed += 1
        stale: set[bytes]
        if written_keys is None:
            touched.update(self._by_sender)
            stale = set(self._by_hash)
        else:
            touched.update(self._checker.nonce_senders(written_keys))
            stale = set()
            readers = self._readers
            for written in written_keys:
                found = readers.get(written)
                if found:
                    stale.update(found)
            for tx_hash, reads in self._range_readers.items():
                if reads.written_by(written_keys):
                    stale.add(tx_hash)
            touched.update(self._by_hash[tx_hash].sender for tx_hash in stale)
        order = self._sender_order
        senders = sorted((sender for sender in touched if sender in order), key=order.__getitem__)
        evicted: list[tuple[bytes, str]] = []
        checks = 0
        for sender in senders:
            checks += self._recheck_sender(sender, stale, evicted)
        return MempoolUpdate(committed, tuple(evicted), checks)

    def _recheck_sender(
        self, sender: bytes, stale: set[bytes], evicted: list[tuple[bytes, str]]
    ) -> int:
        """Recheck one sender's queue (its nonce order; the full check of its ``stale``
        transactions); returns the work done."""
        queue = self._by_sender[sender]
        expected = self._checker.next_nonce(sender)
        checks = 1
        # The queue is contiguous from its first nonce (admission keeps it so): comparing the
        # first nonce with the committed next one decides the nonce order of all of them.
        first = queue[0].nonce
        if first != expected:
            self._evict(queue, 0, CODE_STALE_NONCE if first < expected else CODE_NONCE_GAP, evicted)
            return checks
        for position, tx in enumerate(queue):
            if tx.hash not in stale:
                continue
            checks += 1
            try:
                reads = self._checker.check_transaction_reads(
                    tx, expected_nonce=expected + position
                )
            except TransactionRejected as rejection:
                self._evict(queue, position, rejection.code, evicted)
                break
            self._unregister_reads(tx.hash)
            self._register_reads(tx.hash, reads)
        return checks

    def _evict(
        self, queue: list[Transaction], position: int, reason: str, out: list[tuple[bytes, str]]
    ) -> None:
        """Evict ``queue[position]`` for ``reason`` and the sender's later transactions (they
        could only fail on their nonce)."""
        dropped = queue[position:]
        out.extend(
            (tx.hash, reason if index == 0 else CODE_NONCE_GAP) for index, tx in enumerate(dropped)
        )
        for tx in dropped:
            self._remove(tx.hash)

    def _register_reads(self, tx_hash: bytes, reads: ReadSet) -> None:
        self._reads[tx_hash] = reads
        readers = self._readers
        for key in reads.keys:
            found = readers.get(key)
            if found is None:
                readers[key] = {tx_hash}
            else:
                found.add(tx_hash)
        if reads.ranges:
            self._range_readers[tx_hash] = reads

    def _unregister_reads(self, tx_hash: bytes) -> None:
        reads = self._reads.pop(tx_hash, None)
        if reads is None:
            return
        readers = self._readers
        for key in reads.keys:
            found = readers.get(key)
            if found is not None:
                found.discard(tx_hash)
                if not found:
                    del readers[key]
        self._range_readers.pop(tx_hash, None)

    def _remove(self, tx_hash: bytes) -> bool:
        tx = self._by_hash.pop(tx_hash, None)
        if tx is None:
            return False
        self._bytes -= len(tx.encoded)
        self._unregister_reads(tx_hash)
        queue = self._by_sender[tx.sender]
        del queue[next(i for i, pending in enumerate(queue) if pending is tx)]
        if not queue:
            del self._by_sender[tx.sender]
            del self._sender_order[tx.sender]
        return True
