"""Finding the processes a test started indirectly (an orchestrator's nodes start in sessions
of their own, so a killed orchestrator can leave them running)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["processes_naming"]


def processes_naming(mark: str) -> list[int]:
    """The processes (other than this one) whose command line contains ``mark``."""
    wanted = mark.encode()
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if wanted in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids
