"""Per-peer state that outlives any one connection: send queues and counters.

Send policy (explicit, per peer):

* **Priority lane** (consensus messages, requests, responses): a FIFO of frame plaintexts,
  bounded by ``consensus_queue_frames_max``. Nothing in it is ever dropped silently: if it
  overflows, the connection is closed with reason ``send_queue_overflow`` (logged and counted),
  and the caller learns the message was not queued. Consensus recovers through view change
  and block sync; a peer that cannot keep up gets a clean reconnect instead of a hole.
* **Announce lane** (hashes of relayed transactions): bounded by
  ``announce_queue_hashes_max``; when full, new hashes are shed and counted. Announcements do
  not wake the sender: they ride with the next write to the peer, or the network's flusher
  wakes the sender once the oldest has waited ``announce_linger_seconds``
  (``announce_due_at``).
* **Gossip lane** (full transactions): chunks of transactions, bounded by
  ``gossip_queue_bytes_max``. When full, new gossip for that peer is shed (tail drop) and
  counted in ``transactions_shed``. Gossip is best effort; clients resubmit. Gossip the
  caller lets linger waits for more to fill its frame: it wakes the sender only once a batch's
  worth
  (``transaction_batch_bytes``) is queued; otherwise it rides with the next write to the peer,
  or the network's flusher wakes the sender once the oldest has waited
  ``gossip_linger_seconds`` (``gossip_due_at``). A fetched transaction (someone asked for it)
  goes at once.

The sender drains the priority lane first, then announcements, then fills gossip frames of
about ``transaction_batch_bytes`` each, and writes everything it took with one ``send_all``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from network.limits import NetworkLimits
from network.messages import encode_announce, encode_gossip

__all__ = ["PeerQueues"]

# One ``send_all`` carries at most about this many plaintext bytes: large enough to amortise
# the syscall, small enough that a burst of consensus frames is not held behind it for long.
SEND_BATCH_BYTES = 512 * 1024


@dataclass(slots=True)
class PeerQueues:
    """The two outgoing lanes of one peer and the event that wakes its sender."""

    limits: NetworkLimits
    priority: deque[bytes]
    gossip: deque[Sequence[bytes]]
    announce: list[bytes]
    gossip_bytes: int = 0
    transactions_shed: int = 0
    wakeup: trio.Event | None = None
    # When the oldest pending announcement is to be sent on its own (inf: none pending).
    announce_due_at: float = math.inf
    # When the oldest pending gossip is to be sent without a full frame (inf: none pending).
    gossip_due_at: float = math.inf

    @classmethod
    def create(cls, limits: NetworkLimits) -> PeerQueues:
        """Empty queues."""
        return cls(limits=limits, priority=deque(), gossip=deque(), announce=[])

    def wake(self) -> None:
        """Wake the sender (it writes whatever is ``due``)."""
        if self.wakeup is not None:
            self.wakeup.set()

    def push_priority(self, plaintext: bytes) -> bool:
        """Queue a priority frame; False means the lane is full (the caller must close)."""
        if len(self.priority) >= self.limits.consensus_queue_frames_max:
            return False
        self.priority.append(plaintext)
        self.wake()
        return True

    def push_gossip(
        self, transactions: Sequence[bytes], size_bytes: int, now: float, *, linger: bool = True
    ) -> bool:
        """Queue transactions for this peer (``now``: the trio clock); False (and counted as
        shed) if over the bound. They wait up to ``gossip_linger_seconds`` for more unless
        ``linger`` is False or a batch's worth is queued (see the module docstring)."""
        if self.gossip_bytes + size_bytes > self.limits.gossip_queue_bytes_max:
            self.transactions_shed += len(transactions)
            return False
        self.gossip.append(transactions)
        self.gossip_bytes += size_bytes
        due_at = now + self.limits.gossip_linger_seconds if linger else now
        self.gossip_due_at = min(self.gossip_due_at, due_at)
        if self.gossip_due_at <= now or self.gossip_bytes >= self.limits.transaction_batch_bytes:
            self.wake()
        return True

    def push_announce(self, hashes: Sequence[bytes], now: float) -> bool:
        """Queue hashes to announce (``now``: the trio clock); False (and counted as shed) if
        over the bound. The sender is not woken: see the module docstring."""
        if len(self.announce) + len(hashes) > self.limits.announce_queue_hashes_max:
            self.transactions_shed += len(hashes)
            return False
        if not self.announce:
            self.announce_due_at = now + self.limits.announce_linger_seconds
        self.announce.extend(hashes)
        return True

    def due(self, now: float) -> bool:
        """Whether the sender has something to write at ``now``: a priority frame, a batch's
        worth of gossip, or gossip or announcements that waited their linger."""
        return (
            bool(self.priority)
            or now >= self.due_at()
            or self.gossip_bytes >= self.limits.transaction_batch_bytes
        )

    def due_at(self) -> float:
        """When the oldest gossip or announcement is to be sent without another frame to
        ride with (inf: none pending)."""
        return min(self.announce_due_at, self.gossip_due_at)

    def clear(self) -> tuple[int, int]:
        """Drop everything (the connection ended); returns (priority frames, transactions)."""
        frames = len(self.priority)
        transactions = sum(len(chunk) for chunk in self.gossip)
        self.priority.clear()
        self.announce.clear()
        self.announce_due_at = math.inf
        self.gossip.clear()
        self.gossip_bytes = 0
        self.gossip_due_at = math.inf
        return frames, transactions

    def take(self) -> tuple[list[bytes], int]:
        """Frame plaintexts for one write (priority first), and how many transactions."""
        frames: list[bytes] = []
        budget = SEND_BATCH_BYTES
        while self.priority and budget > 0:
            frame = self.priority.popleft()
            frames.append(frame)
            budget -= len(frame)
        if self.announce and budget > 0:
            step = self.limits.announce_hashes_max
            hashes, self.announce = self.announce, []
            self.announce_due_at = math.inf
            for start in range(0, len(hashes), step):
                frame = encode_announce(hashes[start : start + step])
                frames.append(frame)
                budget -= len(frame)
        transaction_count = 0
        batch_bytes_max = self.limits.transaction_batch_bytes
        batch_count_max = self.limits.transaction_batch_count_max
        while self.gossip and budget > 0:
            batch: list[bytes] = []
            size = 0
            while self.gossip and size < batch_bytes_max and len(batch) < batch_count_max:
                chunk = self.gossip[0]
                taken = 0
                for transaction in chunk:
                    if size and size + len(transaction) > batch_bytes_max:
                        break
                    if len(batch) + taken >= batch_count_max:
                        break
                    size += len(transaction)
                    taken += 1
                if taken == len(chunk):
                    self.gossip.popleft()
                    batch.extend(chunk)
                else:
                    batch.extend(chunk[:taken])
                    self.gossip[0] = chunk[taken:]
                    break
            self.gossip_bytes -= size
            transaction_count += len(batch)
            frames.append(encode_gossip(batch))
            budget -= size
        if not self.gossip:
            self.gossip_due_at = math.inf
        return frames, transaction_count
