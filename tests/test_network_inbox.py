"""``network.inbox.FairInbox``: consensus messages taken from the peers in turn, so a peer
that floods its queue cannot make another peer's messages wait behind its own."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from network.inbox import FairInbox


async def test_a_quiet_peers_message_waits_behind_one_of_the_floods() -> None:
    inbox = FairInbox[str](per_peer_max=512, total_max=4096)
    for number in range(500):
        await inbox.put("flooder", f"flood {number}")
    await inbox.put("quiet", "vote")
    taken = [await inbox.receive(), await inbox.receive()]
    assert taken == ["flood 0", "vote"]
    # The flooder's messages then keep their order.
    assert [await inbox.receive() for _ in range(3)] == ["flood 1", "flood 2", "flood 3"]


async def test_a_full_peer_waits_alone() -> None:
    inbox = FairInbox[int](per_peer_max=4, total_max=100)
    for number in range(4):
        await inbox.put("a", number)
    with trio.testing.assert_checkpoints(), trio.move_on_after(1) as waited:
        await inbox.put("a", 4)  # a's queue is full: this waits
    assert waited.cancelled_caught
    with trio.move_on_after(1) as other:
        await inbox.put("b", 100)  # b's is not
    assert not other.cancelled_caught
    assert inbox.waiting("a") == 4
    assert inbox.waiting("b") == 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(inbox.put, "a", 4)
        await trio.testing.wait_all_tasks_blocked()
        assert inbox.waiting("a") == 4
        assert await inbox.receive() == 0  # room for a's waiting message
    assert inbox.waiting("a") == 4
    assert len(inbox) == 5


async def test_when_the_inbox_is_full_peers_get_room_in_the_order_they_came() -> None:
    inbox = FairInbox[str](per_peer_max=8, total_max=8)
    for number in range(8):
        await inbox.put("flooder", f"flood {number}")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(inbox.put, "quiet", "vote")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(inbox.put, "flooder", "flood 8")
        await trio.testing.wait_all_tasks_blocked()
        assert len(inbox) == 8
        assert await inbox.receive() == "flood 0"  # room: the quiet peer came first
        await trio.testing.wait_all_tasks_blocked()
        assert inbox.waiting("quiet") == 1
        assert inbox.waiting("flooder") == 7  # flood 8 still waits for room
        # The flooder's turn was due before the vote came; then the vote's.
        assert await inbox.receive() == "flood 1"
        assert await inbox.receive() == "vote"
        await trio.testing.wait_all_tasks_blocked()
        assert inbox.waiting("flooder") == 7  # flood 8 took the room "flood 1" left
    assert len(inbox) == 7


def test_bounds_must_make_sense() -> None:
    with pytest.raises(ValueError, match="per_peer_max"):
        FairInbox[int](per_peer_max=0, total_max=1)
    with pytest.raises(ValueError, match="per_peer_max"):
        FairInbox[int](per_peer_max=5, total_max=4)


_STEPS = st.lists(
    st.one_of(st.tuples(st.just("put"), st.integers(0, 3)), st.tuples(st.just("take"))),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(steps=_STEPS, per_peer=st.integers(1, 6), spare=st.integers(0, 10))
def test_every_message_once_in_its_peers_order_and_peers_in_turn(
    steps: list[tuple[str, int] | tuple[str]], per_peer: int, spare: int
) -> None:
    """A model: puts that fit the bounds (those that would wait are left out), takes when
    anything waits. Every message comes out once, each peer's in the order put, and between
    two messages of one peer that had more waiting, at most one of each other peer."""
    total = per_peer + spare

    async def run() -> None:
        inbox = FairInbox[tuple[int, int]](per_peer, total)
        waiting = dict.fromkeys(range(4), 0)
        put_count = dict.fromkeys(range(4), 0)
        taken: list[tuple[int, int]] = []
        since: dict[int, dict[int, int]] = {}  # sender -> other senders' takes since its last
        for step in steps:
            if step[0] == "put":
                sender = step[1]  # type: ignore[misc]
                if waiting[sender] >= per_peer or sum(waiting.values()) >= total:
                    continue
                await inbox.put(sender, (sender, put_count[sender]))
                put_count[sender] += 1
                waiting[sender] += 1
                since.setdefault(sender, {})
            elif sum(waiting.values()):
                sender, number = await inbox.receive()
                taken.append((sender, number))
                waiting[sender] -= 1
                for other, counts in since.items():
                    if other != sender and waiting[other]:
                        counts[sender] = counts.get(sender, 0) + 1
                        assert counts[sender] <= 1, (other, sender, taken)
                since[sender] = {}
        for sender in range(4):
            mine = [number for who, number in taken if who == sender]
            assert mine == list(range(len(mine)))
            assert len(mine) + waiting[sender] == put_count[sender]
        assert len(inbox) == sum(waiting.values())

    trio.run(run)


async def test_a_put_cancelled_while_it_waits_leaves_nothing_behind() -> None:
    inbox = FairInbox[str](per_peer_max=1, total_max=1)
    await inbox.put("a", "first")
    with trio.move_on_after(0.01) as waited:
        await inbox.put("b", "never")
    assert waited.cancelled_caught
    assert await inbox.receive() == "first"
    assert len(inbox) == 0
    await inbox.put("c", "next")
    assert await inbox.receive() == "next"
