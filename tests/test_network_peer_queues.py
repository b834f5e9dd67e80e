"""A peer's send queues: announcements wait for a frame to ride with, at most their linger."""

from __future__ import annotations

import math

import trio

from network.limits import NetworkLimits
from network.messages import decode_message
from network.peer import PeerQueues

LIMITS = NetworkLimits(announce_linger_seconds=0.05)


def _kinds(frames: list[bytes]) -> list[str]:
    return [type(decode_message(frame, LIMITS)).__name__ for frame in frames]


def test_announcements_alone_are_due_only_after_their_linger_and_never_wake_the_sender() -> None:
    queues = PeerQueues.create(LIMITS)
    waiting = queues.wakeup = trio.Event()
    assert not queues.due(0.0)
    assert queues.push_announce([b"\x01" * 32], now=10.0)
    assert queues.push_announce([b"\x02" * 32], now=10.04)  # the oldest sets the deadline
    assert not waiting.is_set()
    assert queues.announce_due_at == 10.05
    assert not queues.due(10.049)
    assert queues.due(10.05)
    frames, transactions = queues.take()
    assert (_kinds(frames), transactions) == (["Announce"], 0)
    assert queues.announce_due_at == math.inf
    assert not queues.due(20.0)


def test_announcements_ride_with_gossip_at_once_and_clear_forgets_them() -> None:
    queues = PeerQueues.create(LIMITS)
    queues.push_announce([b"\x01" * 32], now=10.0)
    waiting = queues.wakeup = trio.Event()
    queues.push_gossip([b"tx" * 60], 120)
    assert waiting.is_set()
    assert queues.due(10.0)  # the gossip is due, and the announcement goes with it
    frames, transactions = queues.take()
    assert (_kinds(frames), transactions) == (["Announce", "Gossip"], 1)
    assert not queues.due(10.06)
    queues.push_announce([b"\x02" * 32], now=11.0)
    queues.clear()
    assert (queues.announce, queues.announce_due_at) == ([], math.inf)
    assert not queues.due(12.0)
