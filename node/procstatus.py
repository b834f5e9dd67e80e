"""Fields of a process's ``/proc/<pid>/status`` and a thread's ``schedstat`` (Linux), read
without other dependencies: the node's metrics and status, its store (its block writer
process's peak RSS) and the benchmarks read them."""

from __future__ import annotations

from pathlib import Path

__all__ = ["process_status_kib", "resident_memory_split", "run_delay_ns"]


def process_status_kib(status: Path, *names: str) -> list[int | None]:
    """The named kB fields of a ``/proc/<pid>/status`` file (None for a field not there or
    not a count of kB, and for every field when the file cannot be read)."""
    found: dict[str, int] = {}
    try:
        text = status.read_text()
    except OSError:
        return [None] * len(names)
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in names:
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
                found[name] = int(parts[0])
    return [found.get(name) for name in names]


def resident_memory_split(status: Path = Path("/proc/self/status")) -> tuple[int, int] | None:
    """This process's resident bytes: (anonymous, file-backed), from ``RssAnon`` and
    ``RssFile`` of ``status``; None where the file or the fields are missing (not Linux)."""
    anonymous, file_backed = process_status_kib(status, "RssAnon", "RssFile")
    if anonymous is None or file_backed is None:
        return None
    return anonymous * 1024, file_backed * 1024


def run_delay_ns(schedstat: Path = Path("/proc/thread-self/schedstat")) -> int | None:
    """The nanoseconds the thread of ``schedstat`` (by default the calling thread) has spent
    runnable but waiting for a CPU, the second of the file's three numbers (time on a CPU,
    time waiting on a run queue, time slices); None where the file is missing or says
    something else (not Linux, or a kernel without scheduler statistics)."""
    try:
        fields = schedstat.read_text().split()
    except OSError:
        return None
    if len(fields) != 3 or not all(field.isdigit() for field in fields):
        return None
    return int(fields[1])
