"""A thread's wait for a CPU, from its ``schedstat`` (``node.procstatus.run_delay_ns``)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from node.procstatus import run_delay_ns


def test_the_second_number_of_schedstat_is_the_wait(tmp_path: Path) -> None:
    schedstat = tmp_path / "schedstat"
    schedstat.write_text("123456789 4242 17\n")
    assert run_delay_ns(schedstat) == 4242


@pytest.mark.parametrize("text", ["", "1 2\n", "1 2 3 4\n", "1 -2 3\n", "a b c\n"])
def test_anything_else_is_not_a_figure(tmp_path: Path, text: str) -> None:
    schedstat = tmp_path / "schedstat"
    schedstat.write_text(text)
    assert run_delay_ns(schedstat) is None


def test_a_missing_file_is_not_a_figure(tmp_path: Path) -> None:
    assert run_delay_ns(tmp_path / "nowhere") is None


@pytest.mark.skipif(run_delay_ns() is None, reason="the kernel keeps no scheduler statistics")
def test_threads_that_outnumber_the_cores_show_their_wait() -> None:
    """Two more busy threads than cores (hashing large buffers releases the GIL, so they run
    in parallel): they take turns on the cores, and each one's own file (the default path is
    the calling thread's) counts its time on the run queue."""
    count = (os.cpu_count() or 1) + 2
    start = threading.Barrier(count)
    waits: list[int] = []
    data = bytes(1 << 20)

    def hash_for_a_while() -> None:
        start.wait()
        before = run_delay_ns()
        until = time.monotonic() + 0.5
        while time.monotonic() < until:
            hashlib.sha256(data).digest()
        after = run_delay_ns()
        assert before is not None
        assert after is not None
        waits.append(after - before)

    threads = [threading.Thread(target=hash_for_a_while) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(waits) == count
    assert sum(waits) > 0
