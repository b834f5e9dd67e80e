"""Whether the machine has had idle CPU lately (``node.machineidle``): read from a
``/proc/stat``-shaped file at most once per interval; unreadable or odd files never make the
machine busy."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from node.machineidle import (
    PROC_STAT,
    SPARE_CORES_BUSY,
    MachineIdle,
    cores_by_state,
    read_cpu_jiffies,
)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _write(path: Path, idle: int, busy: int) -> None:
    """A /proc/stat whose first line has ``idle`` jiffies idle (split over idle and iowait)
    and ``busy`` in the other states."""
    user, system = busy // 2, busy - busy // 2
    path.write_text(
        f"cpu  {user} 0 {system} {idle - idle // 4} {idle // 4} 0 0 0 0 0\n"
        "cpu0 1 2 3 4 5 6 7 8 0 0\nintr 12345\n"
    )


def test_a_machine_with_less_than_half_a_spare_core_is_busy(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    clock = _Clock()
    _write(stat, idle=1000, busy=1000)
    machine = MachineIdle(stat, interval_s=0.5, clock=clock, cores=2)
    assert not machine.busy()  # one reading only
    assert machine.idle_share is None
    assert (machine.idle_cores, machine.spare_cores) == (None, None)
    # 0.6 s later: 30 of 200 jiffies idle, 0.3 of a core of two: busy.
    _write(stat, idle=1030, busy=1170)
    clock.now += 0.6
    assert machine.busy()
    assert machine.idle_share == pytest.approx(0.15)
    assert machine.idle_cores == pytest.approx(0.3)
    assert machine.spare_cores == pytest.approx(0.3)
    # Not read again within the interval: the answer stays.
    _write(stat, idle=5000, busy=1170)
    clock.now += 0.4
    assert machine.busy()
    # Then 60 of 220 jiffies idle: 0.55 of a core, so not busy.
    _write(stat, idle=1090, busy=1330)
    clock.now += 0.2
    assert not machine.busy()
    assert machine.idle_cores == pytest.approx(0.545, abs=0.001)
    # The same share on one core is about a quarter of a core: busy.
    single = MachineIdle(stat, clock=clock, cores=1)
    _write(stat, idle=1150, busy=1490)
    clock.now += 1.0
    assert single.busy()
    assert SPARE_CORES_BUSY == 0.5


def test_the_time_of_the_nodes_own_worker_threads_counts_as_spare(tmp_path: Path) -> None:
    """A node alone on two cores: its loop takes one, its threads most of the other. Little
    of the machine is idle, but moving the threads' work onto the loop would leave their core
    idle, so the machine is not busy. Four such nodes' threads together are another matter:
    each node sees only its own threads' time."""
    stat = tmp_path / "stat"
    clock = _Clock()
    helpers = [0]
    _write(stat, idle=0, busy=0)
    machine = MachineIdle(stat, clock=clock, cores=2, helpers_ns=lambda: helpers[0])
    # Over 1 s: 10 of 200 jiffies idle (0.1 core), the node's threads ran 0.8 s.
    _write(stat, idle=10, busy=190)
    helpers[0] += 800_000_000
    clock.now += 1.0
    assert not machine.busy()
    assert machine.helper_cores == pytest.approx(0.8)
    assert machine.spare_cores == pytest.approx(0.9)
    # The same machine, this node's threads ran 0.1 s of it: busy.
    _write(stat, idle=20, busy=380)
    helpers[0] += 100_000_000
    clock.now += 1.0
    assert machine.busy()
    assert machine.spare_cores == pytest.approx(0.2)
    # A counter that went backwards counts no thread time.
    _write(stat, idle=30, busy=570)
    helpers[0] -= 500_000_000
    clock.now += 1.0
    assert machine.busy()
    assert machine.helper_cores == 0.0


@pytest.mark.parametrize(
    "content",
    [
        "",
        "intr 1 2 3\n",
        "cpu  1 2 3\n",
        "cpu  1 2 3 four 5 6 7 8 0 0\n",
        "cpu0 1 2 3 4 5 6 7 8 0 0\n",
    ],
)
def test_a_file_that_gives_no_reading_never_makes_the_machine_busy(
    tmp_path: Path, content: str
) -> None:
    stat = tmp_path / "stat"
    clock = _Clock()
    _write(stat, idle=0, busy=1000)
    machine = MachineIdle(stat, clock=clock, cores=4)
    stat.write_text(content)
    clock.now += 1.0
    assert not machine.busy()
    assert machine.idle_share is None
    # Nor does a missing file, or a counter that went backwards.
    stat.unlink()
    clock.now += 1.0
    assert not machine.busy()
    _write(stat, idle=0, busy=1000)
    clock.now += 1.0
    assert not machine.busy()  # the reading before was missing
    _write(stat, idle=0, busy=500)
    clock.now += 1.0
    assert not machine.busy()
    _write(stat, idle=0, busy=900)
    clock.now += 1.0
    assert machine.busy()  # readings again: no idle time at all


@pytest.mark.skipif(not PROC_STAT.exists(), reason="no /proc/stat here")
def test_this_machines_proc_stat_gives_a_share() -> None:
    clock = _Clock()
    machine = MachineIdle(clock=clock)
    time.sleep(0.1)  # some jiffies pass
    clock.now += 1.0
    machine.busy()
    assert machine.idle_share is not None
    assert 0.0 <= machine.idle_share <= 1.0


def test_the_machines_cores_by_state_between_two_readings(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 50 1000 10 5 5 0 7 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    before = read_cpu_jiffies(stat)
    assert before == (100, 0, 50, 1000, 10, 5, 5, 0)
    # 400 jiffies pass: 150 busy (incl. irq and softirq), 100 idle, 50 iowait, 100 stolen.
    stat.write_text("cpu  200 10 80 1100 60 10 10 100 9 0\n")
    after = read_cpu_jiffies(stat)
    assert cores_by_state(before, after, cores=2) == {
        "busy": 0.75,
        "idle": 0.5,
        "iowait": 0.25,
        "steal": 0.5,
    }
    # No reading, no time passed, or a counter that went backwards: nothing to say.
    assert cores_by_state(None, after, cores=2) == {}
    assert cores_by_state(before, None, cores=2) == {}
    assert cores_by_state(after, after, cores=2) == {}
    assert cores_by_state(after, before, cores=2) == {}
    backwards = (200, 10, 80, 1100, 60, 10, 10, 90)
    assert cores_by_state(after, backwards, cores=2) == {}
    for content in ("cpu  1 2 3\n", "cpu  1 2 3 -4 5 6 7 8\n", "intr 1 2 3 4 5 6 7 8 9\n", ""):
        stat.write_text(content)
        assert read_cpu_jiffies(stat) is None, content
    assert read_cpu_jiffies(tmp_path / "missing") is None
