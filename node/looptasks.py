"""The event loop's CPU outside every phase, by task: what ``other`` is made of.

Theory of operation
-------------------
``node.phases`` charges thread CPU to the phases of a transaction's life; what no phase covers
is ``other``. Most of ``other`` is the event loop's own thread: the tasks' steps outside any
phase (HTTP parsing, reading and writing sockets, timers, the hand-offs to and from worker
threads) and trio's scheduler between the steps. ``LoopTaskClock`` is a trio instrument that
reads the loop thread's CPU clock before and after every task step, subtracts what the phases
measured on that thread during the step, and adds the rest to the task's name. The loop's CPU
outside every step is the ``scheduler``.

Tasks are grouped by ``trio`` task name: the function a task runs, unless the code renamed it
(the HTTP server's connections are ``http connection``, a peer connection's receiving side
``peer receive`` and its sending side ``peer send``). Each step costs two clock readings and
two calls into Python (a few microseconds), thousands of times a second, so the clock is off
unless ``[metrics] loop_task_cpu`` is on; it is a diagnostic, not a production counter. An
instrument sees every task of its ``trio.run``: with several nodes in one process (in-process
test networks) each node's clock counts all of them, and only its own phases are subtracted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

__all__ = ["SCHEDULER", "LoopTaskClock"]

# The name under which the loop's CPU between task steps is reported.
SCHEDULER = "scheduler"

_thread_time_ns = time.thread_time_ns


class LoopTaskClock(trio.abc.Instrument):
    """Thread CPU nanoseconds of the event loop outside every phase, by task name.

    ``measured_ns`` returns the CPU the phases have measured on the loop thread so far (it
    only grows); the clock must be added on the loop thread (``trio.lowlevel.add_instrument``
    from a task), and ``snapshot`` read there too."""

    def __init__(self, measured_ns: Callable[[], int]) -> None:
        self._measured_ns = measured_ns
        self._totals_ns: dict[str, int] = {}
        self._started_ns = _thread_time_ns()
        self._steps_ns = 0
        # The clock is added from inside a task's step: that step counts from now.
        self._step_started_ns = self._started_ns
        self._step_measured_ns = measured_ns()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._step_measured_ns = self._measured_ns()
        self._step_started_ns = _thread_time_ns()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        step_ns = _thread_time_ns() - self._step_started_ns
        self._steps_ns += step_ns
        outside_ns = step_ns - (self._measured_ns() - self._step_measured_ns)
        totals = self._totals_ns
        totals[task.name] = totals.get(task.name, 0) + outside_ns

    def snapshot(self) -> dict[str, int]:
        """Every task name's CPU outside the phases so far, and the ``scheduler``'s (the
        loop thread's CPU outside every task step), in nanoseconds."""
        document = dict(self._totals_ns)
        loop_ns = _thread_time_ns() - self._started_ns
        document[SCHEDULER] = loop_ns - self._steps_ns
        return document
