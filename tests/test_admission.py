"""Admission control's arithmetic: the limit follows commits, proposals carry a bounded
multiple of it, and clients pushed back together are told to return at different times."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.admission import (
    ARRIVALS_KEPT_MAX,
    PROPOSAL_LIMITS,
    RETRY_AFTER_MS_MAX,
    RETRY_AFTER_MS_MIN,
    RETRY_JITTER,
    SPAN_MIN_S,
    WINDOW_S,
    AdmissionControl,
    AdmissionLimits,
    ProposalArrivals,
)


def test_the_limit_follows_what_commits_and_proposals_carry_a_bounded_multiple() -> None:
    control = AdmissionControl(AdmissionLimits(budget_ms=750, transactions_min=250))
    assert control.limit(0.0) == 250  # idle chain: the floor
    for second in range(3):
        control.observe_commit(float(second), 1000)
    # 3,000 committed over the 3 s window: 1,000/s, so 750 ms of it.
    assert control.limit(2.5) == 750
    assert control.proposal_limit(2.5) == PROPOSAL_LIMITS * 750
    # Once the commits age out of the window the limit falls back to the floor.
    assert control.limit(2.0 + WINDOW_S + 0.1) == 250


def _paced_rate(limits: AdmissionLimits, committed: int) -> float:
    """The rate a wait is counted at after one commit of ``committed``: the window's, at least
    the floor's worth per budget."""
    return max(committed / WINDOW_S, limits.transactions_min * 1000 / limits.budget_ms)


def _spread_bounds(wait_ms: float) -> tuple[float, float]:
    """The least and most ``retry_after_ms`` for a wait of ``wait_ms``, spread and clamped."""
    low = max(RETRY_AFTER_MS_MIN, min(RETRY_AFTER_MS_MAX, int(wait_ms * (1 - RETRY_JITTER))))
    high = max(RETRY_AFTER_MS_MIN, min(RETRY_AFTER_MS_MAX, wait_ms * (1 + RETRY_JITTER) + 1))
    return low, high


@given(
    pending=st.integers(0, 100_000),
    committed=st.integers(0, 100_000),
    seed=st.integers(0, 2**32 - 1),
)
def test_retry_after_is_spread_around_the_time_to_commit_what_is_pending(
    pending: int, committed: int, seed: int
) -> None:
    limits = AdmissionLimits(budget_ms=750, transactions_min=250)
    control = AdmissionControl(limits, jitter=random.Random(seed))
    control.observe_commit(0.0, committed)
    wait_ms = pending * 1000 / _paced_rate(limits, committed)
    retry_ms = control.retry_after_ms(0.0, pending)
    low, high = _spread_bounds(wait_ms)
    assert low <= retry_ms <= high


def test_clients_pushed_back_together_do_not_all_return_at_once() -> None:
    control = AdmissionControl(AdmissionLimits(), jitter=random.Random(7))
    control.observe_commit(0.0, 3000)
    waits = {control.retry_after_ms(0.0, 2000) for _ in range(50)}
    assert len(waits) > 25
    assert max(waits) - min(waits) > 1000  # spread over a good part of the 2 s wait


def test_idle_seconds_before_a_surge_do_not_dilute_the_rate() -> None:
    """A chain that made empty blocks for a while and then commits 2,000 tx/s: a second into
    the surge the limit is budget x 2,000/s, not a third of it (the window's idle seconds
    counted as if the chain had been committing)."""
    limits = AdmissionLimits(budget_ms=350, transactions_min=250)
    control = AdmissionControl(limits)
    now = 0.0
    for _ in range(5):  # idle: an empty block a second
        now += 1.0
        control.observe_commit(now, 0)
    for _ in range(4):  # a block of 500 every 250 ms
        now += 0.25
        control.observe_commit(now, 500)
    assert control.rate(now) == 2000.0
    assert control.limit(now) == 700
    # Counted over the whole window, as if idle seconds were committing seconds, it would be
    # 2,000 / 3 s: below the floor.
    assert int(2000 / WINDOW_S * limits.budget_ms / 1000) < limits.transactions_min
    # When the surge stops the rate falls as the seconds pass (2,000 over the 3 s since the
    # commit before the surge's first block), and once its blocks leave the window, the floor.
    for _ in range(2):
        now += 1.0
        control.observe_commit(now, 0)
    assert control.rate(now) == 2000 / WINDOW_S
    assert control.limit(now + WINDOW_S) == limits.transactions_min


def test_under_steady_load_the_rate_is_the_whole_windows() -> None:
    """Blocks one after another with no idle spell: the rate is what the window committed
    over the whole window, whenever it is read."""
    control = AdmissionControl(AdmissionLimits())
    commits: list[tuple[float, int]] = []
    for index in range(1, 40):
        at = index * 0.3
        control.observe_commit(at, 100 + index)
        commits.append((at, 100 + index))
        for now in (at, at + 0.1, at + 0.29):
            if now < WINDOW_S + 0.3:
                continue  # the window reaches back before the first commit
            in_window = sum(count for time, count in commits if time >= now - WINDOW_S)
            assert control.rate(now) == in_window / WINDOW_S


def test_blocks_committed_in_quick_succession_count_at_least_the_minimum_span() -> None:
    """A node catching up commits many blocks a few milliseconds apart: their intervals do not
    stand for the chain's capacity; the rate is counted over at least SPAN_MIN_S."""
    control = AdmissionControl(AdmissionLimits(budget_ms=350, transactions_min=250))
    control.observe_commit(0.0, 0)
    for index in range(1, 11):
        control.observe_commit(index * 0.01, 100)
    assert control.rate(0.1) == 1000 / SPAN_MIN_S
    assert control.limit(0.1) == 350


@given(
    commits=st.lists(st.tuples(st.floats(0.0, 2.0), st.integers(0, 5000)), min_size=1, max_size=40),
    later=st.floats(0.0, 5.0),
)
def test_the_rate_lies_between_the_whole_window_and_the_minimum_span(
    commits: list[tuple[float, int]], later: float
) -> None:
    """Whatever the commits, the rate is at least what the window committed over all of it,
    and at most what it committed over ``SPAN_MIN_S``; transactions out of the window are not
    in it."""
    control = AdmissionControl(AdmissionLimits())
    now = 0.0
    history: list[tuple[float, int]] = []
    for gap, transactions in commits:
        now += gap
        control.observe_commit(now, transactions)
        history.append((now, transactions))
    now += later
    in_window = sum(count for at, count in history if at >= now - WINDOW_S)
    rate = control.rate(now)
    assert in_window / WINDOW_S - 1e-6 <= rate <= in_window / SPAN_MIN_S + 1e-6
    if in_window == 0:
        assert rate == 0.0


@given(
    refused=st.integers(1, 100_000),
    committed=st.integers(0, 100_000),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_client_refused_over_the_limit_waits_at_most_about_a_budget(
    refused: int, committed: int, seed: int
) -> None:
    """The time to move on what was refused, spread ±50 %, but never more than the budget's
    worth: the next proposal makes room, and a client waiting longer leaves the pool dry."""
    limits = AdmissionLimits(budget_ms=350, transactions_min=250)
    control = AdmissionControl(limits, jitter=random.Random(seed))
    control.observe_commit(0.0, committed)
    rate = _paced_rate(limits, committed)
    wait_ms = min(refused * 1000 / rate, limits.budget_ms)
    retry_ms = control.room_retry_after_ms(0.0, refused)
    low, high = _spread_bounds(wait_ms)
    assert low <= retry_ms <= high
    # The same refusal told to wait for the time to move all of it on can be far longer.
    if refused * 1000 / rate > 4 * limits.budget_ms:
        assert control.retry_after_ms(0.0, refused) > high


def _commit_steadily(
    control: AdmissionControl, *, every_s: float, transactions: int, busy_s: float
) -> float:
    """20 blocks of ``transactions``, one every ``every_s``, each committed ``busy_s`` after
    its proposal reached the node; returns the time of the last commit."""
    now = 0.0
    for _ in range(20):
        now += every_s
        control.observe_commit(now, transactions, busy_s)
    return now


def test_a_chain_with_time_to_spare_admits_by_its_pace() -> None:
    """Blocks of 500 every 250 ms that each commit 125 ms after their proposal: 2,000 tx/s
    committed, but the chain moves 4,000 tx/s while it works, so the limit is the budget's
    worth of that, not of what the clients happened to offer."""
    control = AdmissionControl(AdmissionLimits(budget_ms=250, transactions_min=100))
    now = _commit_steadily(control, every_s=0.25, transactions=500, busy_s=0.125)
    assert control.rate(now) == pytest.approx(2000.0, rel=0.1)
    assert control.pace(now) == pytest.approx(4000.0)
    assert control.limit(now) == 1000
    assert control.proposal_limit(now) == PROPOSAL_LIMITS * 1000


@pytest.mark.parametrize("seed", range(20))
def test_a_client_is_told_to_wait_at_the_rate_the_limit_counts(seed: int) -> None:
    """Below capacity the pace is above the committed rate, and the limit is the budget of
    it: a refused client waits the time the chain moves its transactions on at that pace,
    not at what the clients happened to offer (which would keep it out twice as long)."""
    limits = AdmissionLimits(budget_ms=250, transactions_min=100)
    control = AdmissionControl(limits, jitter=random.Random(seed))
    now = _commit_steadily(control, every_s=0.25, transactions=500, busy_s=0.125)
    assert control.pace(now) == pytest.approx(4000.0)
    assert control.rate(now) == pytest.approx(2000.0, rel=0.1)
    # 400 refused: 100 ms at the pace (200 at the committed rate), spread +-50 %.
    low, high = _spread_bounds(400 * 1000 / 4000.0)
    assert low <= control.room_retry_after_ms(now, 400) <= high
    # 2,000 pending: 500 ms at the pace (about 1 s at the committed rate).
    low, high = _spread_bounds(2000 * 1000 / 4000.0)
    assert low <= control.retry_after_ms(now, 2000) <= high


def test_at_capacity_the_pace_is_the_committed_rate() -> None:
    """Rounds back to back: each block's time from proposal to commit is its whole round, and
    the limit is about what the committed rate alone gives (which counts the window's blocks
    over the window, so one block more or less than the pace)."""
    control = AdmissionControl(AdmissionLimits(budget_ms=250, transactions_min=100))
    now = _commit_steadily(control, every_s=0.4, transactions=1200, busy_s=0.4)
    assert control.pace(now) == pytest.approx(3000.0)
    assert control.rate(now) == pytest.approx(3000.0, rel=0.1)
    by_rate = int(control.rate(now) * 0.25)
    assert by_rate <= control.limit(now) <= by_rate * 1.1


def test_blocks_not_seen_proposed_count_in_the_committed_rate_only() -> None:
    """Synced blocks (no time from a proposal) and times that are not positive leave the pace
    to the blocks the node saw proposed; with none, it is 0 and the limit is the rate's."""
    control = AdmissionControl(AdmissionLimits(budget_ms=250, transactions_min=100))
    for index in range(1, 11):
        control.observe_commit(index * 0.3, 600, None if index % 2 else 0.0)
    assert control.pace(3.0) == 0.0
    assert control.limit(3.0) == int(control.rate(3.0) * 0.25)
    control.observe_commit(3.3, 300, 0.05)
    control.observe_commit(3.6, 500, -1.0)  # a clock that went backwards: not counted
    assert control.pace(3.6) == pytest.approx(300 / 0.05)
    assert control.limit(3.6) == 1500


def test_the_pace_follows_a_surge_from_its_first_block() -> None:
    """An idle chain whose first busy block carried the floor's 250 in 100 ms: the committed
    rate (250 over the minimum span of 1 s) would allow 62 waiting, under the floor, so a
    client offering 2,000 tx/s would be pushed back for seconds while the limit grew by a
    quarter a second; the pace allows 625 at once. Once the block leaves the window, the
    floor again."""
    limits = AdmissionLimits(budget_ms=250, transactions_min=250)
    control = AdmissionControl(limits)
    for second in range(1, 6):
        control.observe_commit(float(second), 0, 0.01)
    control.observe_commit(5.2, 250, 0.1)
    assert int(control.rate(5.2) * limits.budget_ms / 1000) < limits.transactions_min
    assert control.limit(5.2) == 625
    assert control.limit(5.2 + WINDOW_S + 0.1) == limits.transactions_min


@given(
    commits=st.lists(
        st.tuples(
            st.floats(0.0, 2.0),
            st.integers(0, 5000),
            st.one_of(st.none(), st.floats(-1.0, 3.0)),
        ),
        min_size=1,
        max_size=40,
    ),
    later=st.floats(0.0, 5.0),
)
def test_the_pace_is_the_windows_seen_blocks_over_their_time(
    commits: list[tuple[float, int, float | None]], later: float
) -> None:
    """Whatever the commits: the pace is the window's blocks with a positive time from
    proposal to commit, their transactions over the sum of those times; the limit is the
    budget's worth of the larger of the pace and the committed rate, within the bounds."""
    limits = AdmissionLimits()
    control = AdmissionControl(limits)
    now = 0.0
    history: list[tuple[float, int, float | None]] = []
    for gap, transactions, busy in commits:
        now += gap
        control.observe_commit(now, transactions, busy)
        history.append((now, transactions, busy))
    now += later
    seen = [
        (count, busy)
        for at, count, busy in history
        if at >= now - WINDOW_S and count and busy is not None and busy > 0
    ]
    busy_total = sum(busy for _, busy in seen)
    expected = sum(count for count, _ in seen) / busy_total if busy_total else 0.0
    pace = control.pace(now)
    assert pace == pytest.approx(expected)
    budgeted = int(max(control.rate(now), pace) * limits.budget_ms / 1000)
    assert control.limit(now) == max(
        limits.transactions_min, min(budgeted, limits.transactions_max)
    )


def test_a_blocks_time_counts_from_its_proposals_first_arrival_to_its_commit() -> None:
    """A re-proposal of the same height (a later view) does not restart the clock; a height
    committed without its proposal seen (block sync) has no time."""
    arrivals = ProposalArrivals()
    arrivals.seen(5, 10.0, committed_height=4)
    arrivals.seen(5, 12.5, committed_height=4)  # the next view's proposal for height 5
    assert arrivals.committed(5, 13.0) == pytest.approx(3.0)
    assert arrivals.committed(6, 14.0) is None
    assert len(arrivals) == 0


def test_proposals_at_or_below_the_last_commit_are_not_kept() -> None:
    arrivals = ProposalArrivals()
    arrivals.seen(4, 1.0, committed_height=4)
    arrivals.seen(3, 1.0, committed_height=4)
    assert arrivals.heights() == []


def test_a_commit_drops_the_lower_heights_a_node_took_from_block_sync() -> None:
    """Proposals seen for heights 7, 8 and 10; 7 and 8 came by block sync (no time), then 9 and
    10 by consensus: 10's commit leaves nothing of the lower heights, and 11 stays."""
    arrivals = ProposalArrivals()
    for height in (7, 8, 10, 11):
        arrivals.seen(height, float(height), committed_height=6)
    assert arrivals.committed(9, 20.0) is None
    assert arrivals.heights() == [10, 11]
    assert arrivals.committed(10, 20.0) == pytest.approx(10.0)
    assert arrivals.heights() == [11]


def test_a_flood_of_proposals_ahead_keeps_a_bounded_record() -> None:
    """A primary that proposes many heights ahead cannot grow the record past its bound; the
    heights kept are the first seen, and room comes back as they commit."""
    arrivals = ProposalArrivals()
    for height in range(1, 1000):
        arrivals.seen(height, 0.0, committed_height=0)
    assert len(arrivals) == ARRIVALS_KEPT_MAX
    assert arrivals.heights() == list(range(1, ARRIVALS_KEPT_MAX + 1))
    assert arrivals.committed(1, 1.0) == pytest.approx(1.0)
    arrivals.seen(500, 1.0, committed_height=1)
    assert arrivals.heights()[-1] == 500
    assert len(arrivals) == ARRIVALS_KEPT_MAX
