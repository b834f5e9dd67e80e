"""The event loop's CPU outside the phases, by task (``node.looptasks``, ``[metrics]
loop_task_cpu``): a task's CPU lands under its name, what a phase measured inside its step is
not counted again, and a node reports its HTTP and peer connections under names of their own."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import trio

from node import runtime
from node.bench.throughput import NodeSample, loop_tasks_per_transaction
from node.home import load_home
from node.looptasks import SCHEDULER, LoopTaskClock
from node.phases import PhaseClock
from node.testnet.testnet import create_testnet

DEADLINE_S = 120.0
BURN_NS = 20_000_000


def _burn(ns: int) -> int:
    """Spin on this thread until it has used ``ns`` of CPU; returns what it used."""
    started = time.thread_time_ns()
    while time.thread_time_ns() - started < ns:
        pass
    return time.thread_time_ns() - started


def test_a_tasks_cpu_outside_the_phases_lands_under_its_name() -> None:
    phases = PhaseClock()
    burned: dict[str, int] = {}

    async def outside() -> None:
        burned["outside"] = _burn(BURN_NS)
        await trio.lowlevel.checkpoint()
        burned["outside"] += _burn(BURN_NS)

    async def inside() -> None:
        with phases.measure("execute"):
            burned["inside"] = _burn(BURN_NS)
        await trio.lowlevel.checkpoint()

    async def renamed() -> None:
        trio.lowlevel.current_task().name = "renamed task"
        burned["renamed"] = _burn(BURN_NS)

    async def main() -> dict[str, int]:
        clock = LoopTaskClock(lambda: phases.sections_ns)
        trio.lowlevel.add_instrument(clock)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outside, name="outside")
            nursery.start_soon(inside, name="inside")
            nursery.start_soon(renamed, name="before the rename")
        return clock.snapshot()

    totals = trio.run(main)
    # Both steps of the task, whatever else the machine runs (thread CPU, not wall time).
    assert totals["outside"] >= burned["outside"]
    # The step's CPU less the phase's section: what is left is the clock's own reads.
    assert phases.totals_ns["execute"] >= burned["inside"]
    assert 0 <= totals["inside"] < burned["inside"] // 4
    # A task that renames itself is counted under its new name from the next step.
    assert totals["renamed task"] + totals.get("before the rename", 0) >= burned["renamed"]
    assert totals[SCHEDULER] >= 0


def test_the_loops_cpu_by_task_per_committed_transaction_averages_over_the_nodes() -> None:
    def sample(committed: int, tasks: dict[str, int]) -> NodeSample:
        return NodeSample(committed, 1, {}, {}, tasks)

    before = [sample(100, {"http connection": 1_000_000, SCHEDULER: 0}), sample(0, {}), None]
    after = [
        sample(300, {"http connection": 5_000_000, "peer send": 2_000_000, SCHEDULER: 1_000_000}),
        sample(100, {}),  # measured nothing: not averaged in
        sample(50, {"http connection": 1}),
    ]
    # Node 0 alone: 4 ms, 2 ms and 1 ms over 200 transactions; largest first.
    assert list(loop_tasks_per_transaction(before, after).items()) == [
        ("http connection", 20.0),
        ("peer send", 10.0),
        (SCHEDULER, 5.0),
    ]
    assert loop_tasks_per_transaction([None], [None]) == {}


async def test_a_node_reports_its_loops_cpu_by_task_only_when_asked(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="loop-tasks-net", observers=1)
    home = load_home(info.homes[0])
    validator_home = dataclasses.replace(
        home, config=home.config.with_changes("metrics", loop_task_cpu=True)
    )
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            validator: runtime.Node = await nursery.start(runtime.Node(validator_home).run)
            observer: runtime.Node = await nursery.start(runtime.Node(load_home(info.homes[1])).run)
            await observer.wait_for_height(2, DEADLINE_S)
            # One request over the client API, answered by an HTTP connection task.
            stream = await trio.open_tcp_stream("127.0.0.1", validator.ports["rpc"])
            async with stream:
                await stream.send_all(
                    b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
                )
                while await stream.receive_some(65536):
                    pass
            tasks = validator.status()["loop_tasks_cpu_ns"]
            assert isinstance(tasks, dict)
            for name in ("http connection", "peer receive", "peer send", SCHEDULER):
                assert isinstance(tasks.get(name), int), (name, sorted(tasks))
            received = tasks["peer receive"]
            assert isinstance(received, int)
            assert received > 0
            assert any(name.endswith("Node._consensus_driver") for name in tasks)
            # Off by default.
            assert observer.status()["loop_tasks_cpu_ns"] is None
            nursery.cancel_scope.cancel()
