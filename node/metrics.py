"""Prometheus metrics of one node (its own registry, so several nodes can share a process in
tests). The runtime updates them; ``/metrics`` renders them in the exposition format.

Three kinds of source: metrics the runtime sets as things happen (height, commits, latency);
**running totals** other parts keep themselves (the network's dropped gossip, rejected frames
and handshake failures, the API's refusals), read at each scrape by a collector and exported
as counters (``_total``), never as gauges, so ``rate()`` works on them; and the standard
**process** collectors (CPU seconds, resident memory, open file descriptors, start time),
with the resident memory split into its anonymous part (the heap) and its file-backed part
(mostly LMDB's map of the store, page cache the kernel may reclaim), read from
``/proc/self/status`` at each scrape where there is one. The store's **disk** (its file's size,
and the free and total bytes of the filesystem that holds it) is read at each scrape too, so an
alert can fire well before a full disk stops the node."""

from __future__ import annotations

import bisect
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from node.procstatus import resident_memory_split

__all__ = ["BatchedHistogram", "NodeMetrics", "RunningTotal"]

# tx/s is averaged over the commits of this many recent seconds: smooth, yet current.
_RATE_WINDOW_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class RunningTotal:
    """One running total kept elsewhere: exported as counter ``name`` (``_total`` is added),
    with one sample per label value (``label`` names the label; "" for a single sample)."""

    name: str
    help: str
    values: Mapping[str, float]
    label: str = ""


TotalsProvider = Callable[[], Iterable[RunningTotal]]


class _TotalsCollector(Collector):
    """Exports the running totals of every registered provider at each scrape."""

    def __init__(self) -> None:
        self.providers: list[TotalsProvider] = []

    def describe(self) -> Iterable[CounterMetricFamily]:
        """Nothing up front: the names come from the providers, registered later."""
        return ()

    def collect(self) -> Iterator[CounterMetricFamily]:
        for provider in self.providers:
            for total in provider():
                family = CounterMetricFamily(
                    total.name, total.help, labels=[total.label] if total.label else None
                )
                for label, value in sorted(total.values.items()):
                    family.add_metric([label] if total.label else [], value)
                yield family


class _MemoryCollector(Collector):
    """Exports the resident memory's anonymous and file-backed parts at each scrape."""

    def describe(self) -> Iterable[GaugeMetricFamily]:
        """Nothing up front: on a system without the split there is nothing to export."""
        return ()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        split = resident_memory_split()
        if split is None:
            return
        anonymous, file_backed = split
        yield GaugeMetricFamily(
            "suanpan_memory_anonymous_bytes",
            "Resident anonymous memory: the heap",
            value=anonymous,
        )
        yield GaugeMetricFamily(
            "suanpan_memory_file_bytes",
            "Resident file-backed memory, mostly LMDB's map of the store (reclaimable cache)",
            value=file_backed,
        )


class _StoreDiskCollector(Collector):
    """Exports the store file's size and its filesystem's free and total bytes at each scrape
    (a ``statvfs`` and a ``stat``: microseconds). What cannot be read is left out."""

    def __init__(self, directory: Path, file_name: str) -> None:
        self.directory = directory
        self.file_name = file_name

    def describe(self) -> Iterable[GaugeMetricFamily]:
        """Nothing up front: what cannot be read at a scrape is not exported."""
        return ()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            disk = os.statvfs(self.directory)
        except OSError:
            pass
        else:
            yield GaugeMetricFamily(
                "suanpan_store_disk_free_bytes",
                "Bytes free to the node on the filesystem that holds its store",
                value=disk.f_bavail * disk.f_frsize,
            )
            yield GaugeMetricFamily(
                "suanpan_store_disk_size_bytes",
                "Size of the filesystem that holds the node's store",
                value=disk.f_blocks * disk.f_frsize,
            )
        try:
            size = (self.directory / self.file_name).stat().st_size
        except OSError:
            return
        yield GaugeMetricFamily(
            "suanpan_store_file_bytes", "Size of the store's LMDB data file", value=size
        )


class BatchedHistogram(Collector):
    """A histogram (``name``, cumulative ``buckets`` with ``+Inf`` added, ``_count`` and
    ``_sum``) that takes a block's observations in one call (``observe_many``): one lock and
    one binary search per value, where ``prometheus_client.Histogram.observe`` takes two locks
    and walks the bounds for each. A value equal to a bound counts in that bound's bucket, as
    there."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        bounds = sorted(float(bound) for bound in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.name = name
        self.documentation = documentation
        self._bounds = tuple(bounds)
        # The bounds as the ``le`` labels name them (``0.05``, ``1.0``, ``+Inf``).
        self._labels = tuple(floatToGoString(bound) for bound in bounds)  # type: ignore[no-untyped-call]
        self._counts = [0] * len(bounds)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.observe_many((value,))

    def observe_many(self, values: Iterable[float]) -> None:
        """Count every value of ``values``."""
        bounds = self._bounds
        counts = self._counts
        find = bisect.bisect_left
        with self._lock:
            for value in values:
                counts[find(bounds, value)] += 1
                self._sum += value

    def describe(self) -> Iterable[HistogramMetricFamily]:
        return self.collect()

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        cumulative: list[tuple[str, float]] = []
        running = 0
        for label, count in zip(self._labels, counts, strict=True):
            running += count
            cumulative.append((label, running))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], cumulative, total)
        yield family


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
        self.tree_blocks_held = Gauge(
            "suanpan_tree_blocks_held",
            "Blocks whose Merkle tree records are held in memory until the tree is next written",
            registry=r,
        )
        self.tree_records_held = Gauge(
            "suanpan_tree_records_held", "Merkle tree records held in memory", registry=r
        )
        self.commit_latency = BatchedHistogram(
            "suanpan_commit_latency_seconds",
            "From a transaction's admission to its block's commit (this node's view)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )
        r.register(self.commit_latency)
        self.evidence = Counter("suanpan_evidence", "Equivocation evidence recorded", registry=r)
        self.api_certificate_expiry = Gauge(
            "suanpan_api_tls_certificate_expiry_timestamp_seconds",
            "When the API's TLS certificate stops being valid (0 without TLS)",
            registry=r,
        )
        self.store_damaged = Gauge(
            "suanpan_store_damaged",
            "1 once a client request's read met damage in the node's store (its log says where)",
            registry=r,
        )
        self.last_block_time = Gauge(
            "suanpan_last_block_timestamp_seconds",
            "Timestamp of the last committed block (its header's time)",
            registry=r,
        )
        self._totals = _TotalsCollector()
        r.register(self._totals)
        ProcessCollector(registry=r)
        r.register(_MemoryCollector())
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

    def watch_store_disk(self, directory: Path, file_name: str = "data.mdb") -> None:
        """Export the store file's size and its filesystem's free and total bytes at every
        scrape (``directory``: the store's)."""
        self.registry.register(_StoreDiskCollector(directory, file_name))

    def add_totals(self, provider: TotalsProvider) -> None:
        """Export the running totals ``provider`` returns at every scrape, as counters."""
        self._totals.providers.append(provider)

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
