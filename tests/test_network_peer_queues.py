"""A peer's send queues: announcements and gossip wait for a frame to ride with (gossip also for
more to fill its own), at most their linger."""

from __future__ import annotations

import math

import pytest
import trio

from network.limits import NetworkLimits
from network.messages import decode_message
from network.peer import PeerQueues

LIMITS = NetworkLimits(announce_linger_seconds=0.05, gossip_linger_seconds=0.03)
AT_ONCE = NetworkLimits(announce_linger_seconds=0.05, gossip_linger_seconds=0.0)


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


def test_announcements_ride_with_gossip_sent_at_once_and_clear_forgets_them() -> None:
    queues = PeerQueues.create(AT_ONCE)
    queues.push_announce([b"\x01" * 32], now=10.0)
    waiting = queues.wakeup = trio.Event()
    queues.push_gossip([b"tx" * 60], 120, now=10.0)
    assert waiting.is_set()
    assert queues.due(10.0)  # the gossip is due, and the announcement goes with it
    frames, transactions = queues.take()
    assert (_kinds(frames), transactions) == (["Announce", "Gossip"], 1)
    assert (queues.announce_due_at, queues.gossip_due_at) == (math.inf, math.inf)
    assert not queues.due(10.06)
    queues.push_announce([b"\x02" * 32], now=11.0)
    queues.push_gossip([b"tx" * 60], 120, now=11.0)
    queues.clear()
    assert (queues.announce, queues.announce_due_at) == ([], math.inf)
    assert (list(queues.gossip), queues.gossip_bytes, queues.gossip_due_at) == ([], 0, math.inf)
    assert not queues.due(12.0)


def test_gossip_waits_its_linger_for_more_and_goes_in_one_frame() -> None:
    queues = PeerQueues.create(LIMITS)
    waiting = queues.wakeup = trio.Event()
    assert queues.push_gossip([b"a" * 200], 200, now=10.0)
    assert queues.push_gossip([b"b" * 200, b"c" * 200], 400, now=10.02)  # the oldest decides
    assert not waiting.is_set()
    assert queues.gossip_due_at == queues.due_at() == 10.03
    assert not queues.due(10.029)
    assert queues.due(10.03)
    frames, transactions = queues.take()
    assert (_kinds(frames), transactions) == (["Gossip"], 3)
    assert (queues.gossip_due_at, queues.due_at()) == (math.inf, math.inf)
    assert not queues.due(20.0)


def test_gossip_rides_with_a_consensus_frame_before_its_linger() -> None:
    queues = PeerQueues.create(LIMITS)
    queues.push_gossip([b"a" * 200], 200, now=10.0)
    waiting = queues.wakeup = trio.Event()
    assert queues.push_priority(b"\x00consensus")
    assert waiting.is_set()
    assert queues.due(10.001)
    frames, transactions = queues.take()
    assert (len(frames), transactions) == (2, 1)
    assert _kinds(frames[1:]) == ["Gossip"]
    assert queues.gossip_due_at == math.inf


def test_a_batch_worth_of_gossip_and_a_fetched_transaction_go_at_once() -> None:
    queues = PeerQueues.create(LIMITS)
    waiting = queues.wakeup = trio.Event()
    size = LIMITS.transaction_batch_bytes // 2
    queues.push_gossip([b"a" * size], size, now=10.0)
    assert not waiting.is_set()
    queues.push_gossip([b"b" * size], size, now=10.001)  # now a whole batch's worth
    assert waiting.is_set()
    assert queues.due(10.001)
    frames, transactions = queues.take()
    assert (_kinds(frames), transactions) == (["Gossip"], 2)
    assert queues.gossip_due_at == math.inf

    fetched = PeerQueues.create(LIMITS)
    waiting = fetched.wakeup = trio.Event()
    fetched.push_gossip([b"c" * 200], 200, now=10.0, linger=False)
    assert waiting.is_set()
    assert fetched.due(10.0)


def test_gossip_linger_must_be_between_zero_and_one_second() -> None:
    for bad in (-0.001, 1.5, math.nan):
        with pytest.raises(ValueError, match="gossip_linger_seconds"):
            NetworkLimits(gossip_linger_seconds=bad)
    assert NetworkLimits(gossip_linger_seconds=0.0).gossip_linger_seconds == 0.0
