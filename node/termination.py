"""SIGTERM held while the ``suanpan`` process starts, so a node asked to stop early stops
cleanly.

Python's default for SIGTERM ends the process at once. A node asked to stop while it is still
starting (importing the command line, opening its store, binding its ports: most of a second
on a quiet machine, seconds on a busy one) must stop as cleanly as a running one: exit 0 with
its store closed, not die of the signal. So the entry point (``node.__main__.run``) holds
SIGTERM from its first moment (``hold_termination``): one that arrives is noted, not acted on.
Once the command is known, every command but ``start`` gets back the handler from before
(``release_termination``), and a SIGTERM held meanwhile is delivered then, so it does what it
would have done. ``start`` asks whether one came before it opens anything
(``take_held_termination``: then it exits 0 at once), and hands a held one over to the node's
own handling once that is in place (``hand_over_termination``, called by ``Node.run``).

What comes before the entry point (the interpreter starting, tens of milliseconds on a quiet
machine) is closed by the process that starts the node: a process started inside
``termination_blocked`` begins with SIGTERM blocked (the signal mask is inherited through fork
and exec), so a SIGTERM sent meanwhile waits in the kernel; ``hold_termination`` unblocks it
once its handler is in place, and it is then held like any other. The testnet starts its nodes
this way.

This module imports nothing of the project: the entry point loads it before anything else."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = [
    "hand_over_termination",
    "hold_termination",
    "release_termination",
    "take_held_termination",
    "termination_blocked",
]

_Handler = Callable[[int, FrameType | None], object] | int | None


class _Hold:
    """The process's SIGTERM hold: the handler it replaced, and whether a SIGTERM came."""

    def __init__(self) -> None:
        self.previous: _Handler = None
        self.active = False
        self.held = False

    def note(self, _signal: int, _frame: FrameType | None) -> None:
        self.held = True


_HOLD = _Hold()


def hold_termination() -> None:
    """From now until ``release_termination`` or ``hand_over_termination``, a SIGTERM is
    noted and not acted on. Main thread only (it sets a signal handler)."""
    if _HOLD.active:
        return
    _HOLD.held = False
    _HOLD.previous = signal.signal(signal.SIGTERM, _HOLD.note)
    _HOLD.active = True
    # Started inside ``termination_blocked``: a SIGTERM that waited in the kernel is noted now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def take_held_termination() -> bool:
    """True when a SIGTERM arrived during a hold still active: the hold ends (the handler
    from before it is back) and that SIGTERM is the caller's to act on. False otherwise, and
    the hold goes on."""
    if not (_HOLD.active and _HOLD.held):
        return False
    _end_hold(restore=True)
    return True


def release_termination() -> None:
    """End the hold: the handler from before it is back, and a SIGTERM that arrived during it
    is delivered now (by default ending the process, as it would have). No-op without an
    active hold."""
    if _end_hold(restore=True):
        signal.raise_signal(signal.SIGTERM)


def hand_over_termination() -> None:
    """End the hold once the caller's own SIGTERM handling is installed (that handler stays):
    a SIGTERM that arrived during the hold is delivered to it now. No-op without an active
    hold. A SIGTERM noted after this (when the caller's handling is gone again and the hold's
    handler is back) is not acted on: the caller is already stopping."""
    if _end_hold(restore=False):
        signal.raise_signal(signal.SIGTERM)


def _end_hold(*, restore: bool) -> bool:
    """End an active hold (``restore``: put the handler from before it back); returns whether
    a SIGTERM arrived during it. False, and nothing done, without an active hold."""
    if not _HOLD.active:
        return False
    _HOLD.active = False
    if restore:
        signal.signal(signal.SIGTERM, _HOLD.previous)
    held, _HOLD.held = _HOLD.held, False
    return held


@contextmanager
def termination_blocked() -> Iterator[None]:
    """SIGTERM blocked in the calling thread within the block, so a process started in it
    begins with SIGTERM blocked (for the entry point to unblock once it holds it). A SIGTERM
    sent to this process meanwhile is taken by another thread, or waits until the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
