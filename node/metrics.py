"""Prometheus metrics of one node (its own registry, so several nodes can share a process in
tests). The runtime updates them; ``/metrics`` renders them in the exposition format."""

from __future__ import annotations

from collections import deque
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["NodeMetrics"]

# tx/s is averaged over the commits of this many recent seconds: smooth, yet current.
_RATE_WINDOW_S: Final = 10.0


class NodeMetrics:
    """Every metric the node exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.height = Gauge("suanpan_height", "Last committed block height", registry=r)
        self.view = Gauge("suanpan_view", "Current consensus view", registry=r)
        self.view_changes = Counter(
            "suanpan_view_changes", "View changes this node entered", registry=r
        )
        self.committed_transactions = Counter(
            "suanpan_committed_transactions", "Transactions in committed blocks", registry=r
        )
        self.transactions_per_second = Gauge(
            "suanpan_transactions_per_second", "Committed tx/s over the last 10 s", registry=r
        )
        self.mempool_transactions = Gauge(
            "suanpan_mempool_transactions", "Transactions waiting in the mempool", registry=r
        )
        self.mempool_bytes = Gauge("suanpan_mempool_bytes", "Bytes in the mempool", registry=r)
        self.peers = Gauge("suanpan_peers", "Connected peers", registry=r)
        self.commit_latency = Histogram(
            "suanpan_commit_latency_seconds",
            "From a transaction's admission to its block's commit (this node's view)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self.evidence = Counter("suanpan_evidence", "Equivocation evidence recorded", registry=r)
        self.dropped_gossip = Gauge(
            "suanpan_dropped_gossip", "Gossip messages shed under pressure", registry=r
        )
        self.rejected_frames = Gauge(
            "suanpan_rejected_frames", "Frames rejected from peers (decode/auth)", registry=r
        )
        self.rejected_transactions = Counter(
            "suanpan_rejected_transactions",
            "Transactions refused admission",
            ["reason"],
            registry=r,
        )
        self.dropped_messages = Counter(
            "suanpan_dropped_consensus_messages",
            "Consensus inputs the replica dropped",
            ["reason"],
            registry=r,
        )
        self._commits: deque[tuple[float, int]] = deque()
        self._rate = 0.0
        # Committed transactions since this process started (also exported as a counter).
        self.committed_total = 0

    def record_commit(self, now_s: float, height: int, transactions: int) -> None:
        """Account for one committed block at monotonic time ``now_s``."""
        self.height.set(height)
        self.committed_transactions.inc(transactions)
        self.committed_total += transactions
        self._commits.append((now_s, transactions))
        self.update_rate(now_s)

    def update_rate(self, now_s: float) -> None:
        """Recompute tx/s over the window ending at ``now_s``."""
        while self._commits and self._commits[0][0] < now_s - _RATE_WINDOW_S:
            self._commits.popleft()
        self._rate = sum(count for _, count in self._commits) / _RATE_WINDOW_S
        self.transactions_per_second.set(self._rate)

    def rate(self) -> float:
        """Current committed tx/s."""
        return self._rate

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
