"""The simulator's own parts: event loop, network model, disk model, swarm parameters."""

from __future__ import annotations

import random

import pytest

from sims.disk import SimDisk
from sims.faults import Behaviour, FaultParameters
from sims.loop import EventLoop, EventLoopError
from sims.network import DelayDistribution, LinkFaults, Partition, PartitionKind, SimNetwork


def test_events_run_in_time_order_and_ties_in_insertion_order() -> None:
    loop = EventLoop()
    seen: list[str] = []
    loop.call_at(20, lambda: seen.append("late"))
    loop.call_at(10, lambda: seen.append("first"))
    loop.call_at(10, lambda: seen.append("second"))
    loop.run(until_ms=100)
    assert seen == ["first", "second", "late"]
    assert loop.now_ms == 100


def test_scheduling_in_the_past_is_refused() -> None:
    loop = EventLoop()
    loop.run(until_ms=50)
    with pytest.raises(EventLoopError, match="before now"):
        loop.call_at(10, lambda: None)


def test_cancelled_event_does_not_run() -> None:
    loop = EventLoop()
    seen: list[int] = []
    entry = loop.call_later(5, lambda: seen.append(1))
    loop.cancel(entry)
    loop.run(until_ms=10)
    assert seen == []


def test_trace_digest_depends_on_every_recorded_part() -> None:
    a, b, c = EventLoop(), EventLoop(), EventLoop()
    for loop in (a, b):
        loop.record("deliver", 1, b"abc")
    c.record("deliver", 1, b"abd")
    assert a.trace_digest() == b.trace_digest() != c.trace_digest()


def _network_run(seed: int, faults: LinkFaults) -> tuple[list[tuple[int, int, int, bytes]], int]:
    loop = EventLoop()
    network = SimNetwork(loop, random.Random(seed), faults)
    got: list[tuple[int, int, int, bytes]] = []

    def handler(destination: int, source: int, payload: bytes) -> bool:
        got.append((loop.now_ms, destination, source, payload))
        return True

    network.attach(handler)
    for i in range(200):
        network.send(i % 4, (i + 1) % 4, i.to_bytes(2, "big"), "test")
    loop.run(until_ms=10_000)
    return got, network.statistics.dropped_loss


def test_network_is_deterministic_for_a_seed_and_applies_loss_and_duplication() -> None:
    faults = LinkFaults(
        loss_percent=30,
        duplicate_percent=50,
        delay_min_ms=1,
        delay_max_ms=50,
        distribution=DelayDistribution.EXPONENTIAL,
        reorder_percent=20,
    )
    first, lost = _network_run(7, faults)
    again, _ = _network_run(7, faults)
    other, _ = _network_run(8, faults)
    assert first == again
    assert first != other
    assert 20 <= lost <= 100  # 30% of 200, loosely
    payloads = [p for *_, p in first]
    assert len(payloads) > len(set(payloads))  # some duplicates
    order = [int.from_bytes(p, "big") for p in payloads]
    assert order != sorted(order)  # reordered


def test_partition_blocks_links_in_the_right_directions() -> None:
    symmetric = Partition.between(PartitionKind.SYMMETRIC, [0, 1], [2, 3])
    assert (0, 2) in symmetric.blocked
    assert (2, 0) in symmetric.blocked
    assert (0, 1) not in symmetric.blocked
    one_way = Partition.between(PartitionKind.ASYMMETRIC, [0], [1, 2, 3])
    assert (0, 1) in one_way.blocked
    assert (1, 0) not in one_way.blocked


def test_messages_in_flight_when_a_partition_starts_are_lost() -> None:
    loop = EventLoop()
    network = SimNetwork(loop, random.Random(1), LinkFaults(delay_min_ms=10, delay_max_ms=10))
    got: list[bytes] = []

    def handler(destination: int, source: int, payload: bytes) -> bool:
        got.append(payload)
        return True

    network.attach(handler)
    network.send(0, 1, b"x", "test")
    network.set_partition(Partition.between(PartitionKind.ISOLATE_ONE, [0], [1]))
    loop.run(until_ms=100)
    assert got == []
    assert network.statistics.dropped_partition == 1


def test_crash_loses_exactly_what_was_written_since_each_files_last_sync() -> None:
    disk: SimDisk[str, int] = SimDisk()
    disk.write_record("vote-1")
    disk.sync_records()
    disk.write_record("vote-2")
    disk.write_commit(1)
    disk.sync_chain()
    disk.write_commit(2)
    # The running node reads its own unsynced writes.
    assert disk.latest_record == "vote-2"
    assert disk.chain == [1, 2]
    disk.crash()
    assert disk.records == ["vote-1"]
    assert disk.committed == [1]
    assert disk.chain == [1]
    assert disk.latest_record == "vote-1"
    assert disk.statistics.records_lost == 1
    assert disk.statistics.commits_lost == 1
    disk.write_record("vote-3")
    disk.sync_records()
    disk.crash()
    assert disk.records == ["vote-1", "vote-3"]


def test_swarm_parameters_are_drawn_from_the_seed_and_can_be_pinned() -> None:
    drawn = [FaultParameters.draw(random.Random(seed), 1) for seed in range(50)]
    assert drawn[3] == FaultParameters.draw(random.Random(3), 1)
    assert any(p.loss_percent == 0 for p in drawn)
    assert any(p.loss_percent > 0 for p in drawn)
    assert all(0 <= p.loss_percent <= 30 and 0 <= p.duplicate_percent <= 50 for p in drawn)
    assert all(len(p.behaviours) == 1 and p.behaviours[0] is not Behaviour.TWIN for p in drawn)
    pinned = drawn[0].with_overrides({"loss_percent": 17, "crash_percent": None})
    assert pinned.loss_percent == 17
    assert pinned.crash_percent == drawn[0].crash_percent
    with pytest.raises(ValueError, match="loss"):
        drawn[0].with_overrides({"loss_percent": 31})
