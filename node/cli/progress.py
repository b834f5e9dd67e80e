"""Progress bars for the long commands (audit, state-diff, sim sweep, bench catchup, a
fixed-rate bench): on a terminal only, and never with ``--json``.

A command opens ``progress_bar(description, quiet=as_json)`` and hands the ``report`` it yields
to the work, which calls ``report(phase, done, total)`` as it goes. The bar is drawn on
standard error and disappears when the work ends, so standard output carries exactly what it
carries without a terminal: the report, or the one JSON document.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = ["ProgressReport", "progress_bar"]

# report(phase, done, total): ``phase`` says what is being done ("" keeps the last one).
ProgressReport = Callable[[str, int, int], None]


def _ignore(phase: str, done: int, total: int) -> None:
    return None


@contextmanager
def progress_bar(
    description: str, *, quiet: bool, console: Console | None = None
) -> Iterator[ProgressReport]:
    """A ``report`` callback drawing a bar on ``console`` (default: standard error) when it
    is a terminal and ``quiet`` is false; otherwise one that does nothing."""
    console = console if console is not None else Console(stderr=True)
    if quiet or not console.is_terminal:
        yield _ignore
        return
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=None)

        def report(phase: str, done: int, total: int) -> None:
            label = f"{description}: {phase}" if phase else None
            progress.update(task, completed=done, total=max(total, 1), description=label)

        yield report
