"""The in-memory disk model: what survives a crash.

Theory of operation
-------------------
Each node has one ``SimDisk`` with two files, each written through a page cache:

* the replica's write-ahead log (``Persist`` records), appended in order;
* the chain: each committed block with its certificate and the application state changes it
  made, appended together (one LMDB write transaction in the real node).

A write lands in the page cache: the running node sees it at once (``chain``), but it is
*durable* only after the driver syncs that file (``sync_records``, ``sync_chain``: the
``fsync`` of the real node). ``crash`` throws away everything written since the file's last
sync, exactly like a power cut, and counts what was lost.

A correct driver syncs the log after each ``Persist`` and before the sends that follow it,
and syncs the chain as soon as a block is committed, inside the same event, so no crash can
fall in between. The planted driver bugs delay one of those syncs (``vote-before-persist``:
the log; ``commit-without-fsync``: the chain), leaving the write to the operating system's
writeback some time later; a crash in that window loses it.
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
    commits_lost: int = 0
    syncs: int = 0
    crashes: int = 0


@dataclass(slots=True)
class SimDisk(Generic[Record, Committed]):
    """One node's storage: a write-ahead record log and the committed chain, each with the
    durable part (``records``, ``committed``) and the part written since the last sync."""

    records: list[Record] = field(default_factory=list)
    committed: list[Committed] = field(default_factory=list)
    unsynced_records: list[Record] = field(default_factory=list)
    unsynced_commits: list[Committed] = field(default_factory=list)
    statistics: DiskStatistics = field(default_factory=DiskStatistics)

    @property
    def chain(self) -> list[Committed]:
        """The chain as the running node reads it: durable entries, then unsynced ones."""
        if not self.unsynced_commits:
            return self.committed
        return self.committed + self.unsynced_commits

    @property
    def latest_record(self) -> Record | None:
        """The last record written (synced or not), as the running node would read it."""
        if self.unsynced_records:
            return self.unsynced_records[-1]
        return self.records[-1] if self.records else None

    def write_record(self, record: Record) -> None:
        """Append ``record`` to the log's page cache (durable after ``sync_records``)."""
        self.unsynced_records.append(record)
        self.statistics.records_written += 1

    def sync_records(self) -> None:
        """fsync the log: every record written so far is durable, in order."""
        self.statistics.syncs += 1
        if self.unsynced_records:
            self.records.extend(self.unsynced_records)
            self.unsynced_records.clear()

    def write_commit(self, entry: Committed) -> None:
        """Append one committed height (block, certificate and state changes together) to the
        chain's page cache (durable after ``sync_chain``)."""
        self.unsynced_commits.append(entry)
        self.statistics.commits_written += 1

    def sync_chain(self) -> None:
        """fsync the chain: every committed height written so far is durable, in order."""
        self.statistics.syncs += 1
        if self.unsynced_commits:
            self.committed.extend(self.unsynced_commits)
            self.unsynced_commits.clear()

    def crash(self) -> None:
        """Power cut: everything written since its file's last sync is gone."""
        self.statistics.crashes += 1
        self.statistics.records_lost += len(self.unsynced_records)
        self.statistics.commits_lost += len(self.unsynced_commits)
        self.unsynced_records.clear()
        self.unsynced_commits.clear()
