"""Admission control's arithmetic: the limit follows commits, proposals carry a bounded
multiple of it, and clients pushed back together are told to return at different times."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from node.admission import (
    PROPOSAL_LIMITS,
    RETRY_AFTER_MS_MAX,
    RETRY_AFTER_MS_MIN,
    RETRY_JITTER,
    SPAN_MIN_S,
    WINDOW_S,
    AdmissionControl,
    AdmissionLimits,
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
