"""SIGTERM for the commands that start processes: it unwinds like Ctrl-C.

Python's default for SIGTERM ends the process at once, skipping ``finally`` blocks, so an
orchestrator stopped by ``kill`` or a service manager would leave the nodes it started
running (they run in sessions of their own, out of reach of the terminal's Ctrl-C).
``terminate_unwinds`` turns SIGTERM into ``KeyboardInterrupt`` while a command runs, so
its clean-up stops them and removes what it made."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["terminate_unwinds"]


@contextmanager
def terminate_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` (in the main thread); the
    previous handler comes back after it."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signal: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt
