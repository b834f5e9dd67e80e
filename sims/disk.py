"""The in-memory disk model: what survives a crash.

Theory of operation
-------------------
Each node has one ``SimDisk``. It holds two durable things:

* the replica's write-ahead records (``Persist`` actions), appended to a log in order;
* the committed chain: each block with its certificate, and the application state after it,
  written together as one atomic step (the LMDB write transaction of the real node).

A correct driver writes a record durably *before* it performs the sends that follow the
``Persist`` action. The planted bug ``vote-before-persist`` instead queues the record as
*pending* and makes it durable only at a later event; ``crash`` throws pending records away,
exactly like a power cut before ``fsync`` returns. Committed blocks are always durable at
once: the simulated node commits its chain the way the real store does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["DiskStatistics", "SimDisk"]

Record = TypeVar("Record")
Committed = TypeVar("Committed")


@dataclass(slots=True)
class DiskStatistics:
    """Counters for one disk."""

    records_written: int = 0
    records_lost: int = 0
    commits_written: int = 0
    crashes: int = 0


@dataclass(slots=True)
class SimDisk(Generic[Record, Committed]):
    """One node's durable storage: a write-ahead record log and the committed chain."""

    records: list[Record] = field(default_factory=list)
    pending: list[Record] = field(default_factory=list)
    committed: list[Committed] = field(default_factory=list)
    statistics: DiskStatistics = field(default_factory=DiskStatistics)

    def write(self, record: Record) -> None:
        """Append ``record`` durably (the write returns after the fsync)."""
        self.flush()
        self.records.append(record)
        self.statistics.records_written += 1

    def write_later(self, record: Record) -> None:
        """Queue ``record``; it is durable only after ``flush`` (the planted-bug path)."""
        self.pending.append(record)

    def flush(self) -> None:
        """Make every pending record durable, in order."""
        if self.pending:
            self.records.extend(self.pending)
            self.statistics.records_written += len(self.pending)
            self.pending.clear()

    def commit(self, entry: Committed) -> None:
        """Durably append one committed height (block, certificate and state together)."""
        self.committed.append(entry)
        self.statistics.commits_written += 1

    def crash(self) -> None:
        """Power cut: everything not yet durable is gone."""
        self.statistics.crashes += 1
        self.statistics.records_lost += len(self.pending)
        self.pending.clear()
