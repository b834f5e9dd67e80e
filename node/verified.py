"""Transactions whose signature this node has verified, so each is verified once per node.

A transaction is verified when it is admitted (API or gossip) or, if a block brings it first,
when the block is validated; admission, validation and the commit all look here (and in the
mempool) before verifying again.

The cache is keyed by the transaction's *whole encoded bytes*: a dictionary lookup compares
the full bytes, so an entry answers only for exactly the bytes that were verified, and those
bytes contain everything the signature covers (chain id, app, operation, arguments, sender,
nonce) and the signature itself. Never key it by the signature alone, by the sender and
signature, or by a hash of part of the message: a transplanted signature (a genuine signature
on a different body, or presented for another signer) would then be taken as verified. A test
shows a transplanted signature refused after the genuine transaction was cached.

Bounded (least recently added entries go first); committed transactions are dropped at once.
Only the event loop touches it (worker threads return verdicts, the loop records them).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from apps.transaction import Transaction

__all__ = ["VERIFIED_ENTRIES_MAX", "VerifiedTransactions"]

# About three full mempools' worth of in-flight transactions from blocks and gossip; the
# entries share their bytes with the mempool's, so this bounds extra memory to a few MiB.
VERIFIED_ENTRIES_MAX: Final = 65_536


class VerifiedTransactions:
    """Decoded transactions with a verified signature, keyed by their encoded bytes."""

    __slots__ = ("_entries", "entries_max")

    def __init__(self, entries_max: int = VERIFIED_ENTRIES_MAX) -> None:
        if entries_max < 1:
            raise ValueError("the verified-transaction cache needs room for one entry")
        self.entries_max = entries_max
        self._entries: OrderedDict[bytes, Transaction] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, encoded: bytes) -> Transaction | None:
        """The verified transaction whose encoding is exactly ``encoded``, or None."""
        return self._entries.get(encoded)

    def add(self, transaction: Transaction) -> None:
        """Record that ``transaction``'s signature verified (the caller checked it)."""
        entries = self._entries
        entries[transaction.encoded] = transaction
        while len(entries) > self.entries_max:
            entries.popitem(last=False)

    def discard(self, encoded: bytes) -> None:
        """Forget ``encoded`` (committed: it will be refused as a duplicate anyway)."""
        self._entries.pop(encoded, None)
