"""The suite lets SIGINT reach the processes its tests start, even when it runs as a
background job (started with SIGINT ignored)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import restore_interrupts

# A child that reports how SIGINT is handled in a process it starts.
_GRANDCHILD_REPORT = textwrap.dedent(
    """
    import signal, subprocess, sys
    {setup}
    report = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    print(subprocess.run([sys.executable, "-c", report], capture_output=True, text=True).stdout)
    """
)


def _grandchild_handles_sigint(setup: str) -> bool:
    child = subprocess.run(
        [sys.executable, "-c", _GRANDCHILD_REPORT.format(setup=setup)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
        # Started as a shell's background job is: SIGINT ignored from the start.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert child.returncode == 0, child.stderr
    return child.stdout.strip() == "True"


def test_a_process_started_with_sigint_ignored_passes_the_ignore_on() -> None:
    assert not _grandchild_handles_sigint("")


def test_restore_interrupts_lets_the_processes_it_starts_take_sigint() -> None:
    setup = "from tests.conftest import restore_interrupts; restore_interrupts()"
    assert _grandchild_handles_sigint(setup)


def test_restore_interrupts_leaves_a_handler_alone() -> None:
    def handler(signum: int, frame: object) -> None:
        del signum, frame

    previous = signal.signal(signal.SIGINT, handler)
    try:
        restore_interrupts()
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)
