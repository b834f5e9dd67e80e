"""CPU time of one node, by phase of a transaction's life: cheap enough to leave on.

Theory of operation
-------------------
Each phase is a counter of thread CPU nanoseconds (``time.thread_time_ns``). Code charges a
phase around a *synchronous* section (``with phases.measure("execute"): ...``): no ``await``
inside, because other tasks run on the same thread while a task waits and their CPU would be
charged to the wrong phase. Work on worker threads (signature checks, the LMDB commit) measures
its own thread's CPU time there and the event loop adds it (``add``). The network layer keeps
its own counters (decryption, framing, dispatch, by traffic kind); the node folds them in when
it reports.

A measurement costs two ``thread_time_ns`` calls (about a microsecond); the runtime measures
per batch, per block or per message, never per transaction, so the accounting stays on in
production. What no phase covers (the trio scheduler, HTTP parsing, metrics, logging, the
interpreter's own bookkeeping) is ``other``: the process's CPU time minus every phase.
``node.looptasks`` splits the event loop's part of it by task (a diagnostic, off by default).

The phases (``PHASES``):

=============  ====================================================================
intake         API request bodies (JSON/hex or msgpack) and transaction decoding
verify         ed25519 checks of transactions (worker threads)
admission      the mempool's stateful admission check, duplicate and refusal bookkeeping
gossip_out     handing admitted transactions to peers, sealing gossip frames
gossip_in      receiving gossip frames, announcements, fetches; decoding gossiped txs
proposal       reaping the mempool for a proposal
execute        decoding a block's transactions, executing blocks (validation, commit)
commit         the LMDB write transaction with fsync, and the bookkeeping around it (the
               state view's and the pending writes' record of the executed block)
recheck        the mempool's recheck after a commit
consensus      the replica (votes, certificates, block sync) and consensus frames
=============  ====================================================================
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Final

__all__ = ["PHASES", "WAITS", "PhaseClock", "WaitClock", "thread_cpu_ns"]

PHASES: Final = (
    "intake",
    "verify",
    "admission",
    "gossip_out",
    "gossip_in",
    "proposal",
    "execute",
    "commit",
    "recheck",
    "consensus",
)

_thread_time_ns = time.thread_time_ns


class _Section:
    """One running measurement (a context manager; reusable, not re-entrant)."""

    __slots__ = ("_clock", "_phase", "_started_ns")

    def __init__(self, clock: PhaseClock, phase: str) -> None:
        self._clock = clock
        self._phase = phase
        self._started_ns = 0

    def __enter__(self) -> None:
        self._started_ns = _thread_time_ns()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        elapsed_ns = _thread_time_ns() - self._started_ns
        clock = self._clock
        clock.totals_ns[self._phase] += elapsed_ns
        clock.sections_ns += elapsed_ns


class PhaseClock:
    """Cumulative thread CPU nanoseconds per phase of one node."""

    __slots__ = ("_sections", "sections_ns", "totals_ns")

    def __init__(self) -> None:
        self.totals_ns: dict[str, int] = dict.fromkeys(PHASES, 0)
        # Of those, what ``measure`` sections took (the thread they ran on; ``add`` excluded).
        self.sections_ns = 0
        self._sections = {phase: _Section(self, phase) for phase in PHASES}

    def measure(self, phase: str) -> _Section:
        """A context manager charging the thread CPU time of a synchronous section to
        ``phase`` (no ``await`` inside: see the module docstring)."""
        return self._sections[phase]

    def add(self, phase: str, cpu_ns: int) -> None:
        """Charge ``cpu_ns`` measured elsewhere (a worker thread) to ``phase``."""
        self.totals_ns[phase] += cpu_ns

    def snapshot(self) -> dict[str, int]:
        """Every phase's total so far (nanoseconds)."""
        return dict(self.totals_ns)


# What the consensus driver waits for on a round's path, in wall time (``WaitClock``):
# the block writer, before it builds a proposal, validates a block, or lets anything else
# depending on a block leave the node (a vote, a broadcast, a persisted vote); each persisted
# vote's own write (a worker thread, its own LMDB environment and fsync); and, before it
# executes a committed block, the signatures of its transactions still being checked ahead
# (block sync), and room in the queue of executed blocks the block writer has not written;
# and, while the node syncs blocks, for its next input with nothing to do (blocks to arrive).
WAITS: Final = (
    "write_before_proposal",
    "write_before_validation",
    "write_before_send",
    "vote_persist",
    "signatures_ahead",
    "write_queue_full",
    "sync_idle",
)


class WaitClock:
    """Cumulative wall-clock waits of the consensus driver (``WAITS``): how many, and their
    nanoseconds. Both only grow, so two readings subtract to a window's."""

    __slots__ = ("counts", "totals_ns")

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(WAITS, 0)
        self.totals_ns: dict[str, int] = dict.fromkeys(WAITS, 0)

    def add(self, wait: str, wall_ns: int) -> None:
        """One wait of ``wall_ns`` nanoseconds for ``wait``."""
        self.counts[wait] += 1
        self.totals_ns[wait] += wall_ns

    @contextmanager
    def measure(self, wait: str) -> Iterator[None]:
        """A context manager adding one wait for ``wait``: the wall time its block takes (it
        may ``await``). A block that raises (the node stopping) adds nothing."""
        started_ns = time.monotonic_ns()
        yield
        self.add(wait, time.monotonic_ns() - started_ns)


def thread_cpu_ns() -> int:
    """The calling thread's CPU time so far (for worker threads measuring themselves)."""
    return _thread_time_ns()
