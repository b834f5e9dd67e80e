"""Admission control's arithmetic: the limit follows commits, proposals carry a bounded
multiple of it, clients pushed back together are told to return at different times, and
sustained overload shrinks the budget until refusals become rare."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.admission import (
    OVERLOAD_BUDGET_SHARE,
    OVERLOAD_ENTER_SHARE,
    OVERLOAD_LEAVE_SHARE,
    PROPOSAL_LIMITS,
    RETRY_AFTER_MS_MAX,
    RETRY_AFTER_MS_MIN,
    RETRY_JITTER,
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
    rate = max(committed / WINDOW_S, limits.transactions_min * 1000 / limits.budget_ms)
    wait_ms = pending * 1000 / rate
    retry_ms = control.retry_after_ms(0.0, pending)
    low = max(RETRY_AFTER_MS_MIN, min(RETRY_AFTER_MS_MAX, int(wait_ms * (1 - RETRY_JITTER))))
    high = max(RETRY_AFTER_MS_MIN, min(RETRY_AFTER_MS_MAX, wait_ms * (1 + RETRY_JITTER) + 1))
    assert low <= retry_ms <= high


def test_clients_pushed_back_together_do_not_all_return_at_once() -> None:
    control = AdmissionControl(AdmissionLimits(), jitter=random.Random(7))
    control.observe_commit(0.0, 3000)
    waits = {control.retry_after_ms(0.0, 2000) for _ in range(50)}
    assert len(waits) > 25
    assert max(waits) - min(waits) > 1000  # spread over a good part of the 2 s wait


def overloaded(control: AdmissionControl) -> bool:
    """The control's state, read through a call (each read is a fresh one to the checker)."""
    return control.overloaded


def test_sustained_overload_shrinks_the_budget_until_refusals_become_rare() -> None:
    control = AdmissionControl(AdmissionLimits(budget_ms=400, transactions_min=10))
    for second in range(3):
        control.observe_commit(float(second), 1000)
    assert control.limit(2.5) == 400
    # Near capacity: one batch in ten refused in part (5 % of the offers): not overloaded.
    for tick in range(30):
        control.observe_offer(2.0 + tick * 0.1, 100, 50 if tick % 10 == 0 else 0)
    assert not overloaded(control)
    assert control.limit(2.5) == 400
    # Most of every batch refused for a while: overloaded, the budget is 3/4.
    for tick in range(20):
        control.observe_offer(5.0 + tick * 0.1, 100, 80)
    assert overloaded(control)
    assert control.budget_ms() == 400 * OVERLOAD_BUDGET_SHARE
    for second in range(3, 7):
        control.observe_commit(float(second), 1000)
    assert control.limit(6.5) == int(1000 * 400 * OVERLOAD_BUDGET_SHARE / 1000)
    assert control.proposal_limit(6.5) == PROPOSAL_LIMITS * control.limit(6.5)
    # Overload is judged against the configured budget's limit, which stays as it was.
    assert control.full_limit(6.5) == 400
    # Refusals falling to 20 % of the window's offers keep it (hysteresis)...
    for tick in range(40):
        control.observe_offer(7.0 + tick * 0.1, 100, 20)
    assert overloaded(control)
    # ...and under 15 % end it.
    for tick in range(40):
        control.observe_offer(11.0 + tick * 0.1, 100, 5)
    assert not overloaded(control)
    assert control.budget_ms() == 400


@given(
    offers=st.lists(
        st.tuples(st.floats(0.0, 0.5), st.integers(0, 500), st.floats(0.0, 1.0)), max_size=200
    )
)
def test_the_overload_state_follows_the_refused_share_of_the_window(
    offers: list[tuple[float, int, float]],
) -> None:
    control = AdmissionControl(AdmissionLimits())
    now = 0.0
    window: list[tuple[float, int, int]] = []
    for step, offered, share in offers:
        now += step
        refused = int(offered * share)
        control.observe_offer(now, offered, refused)
        window = [entry for entry in window if entry[0] >= now - WINDOW_S]
        window.append((now, offered, refused))
        total = sum(entry[1] for entry in window)
        if total:
            refused_share = sum(entry[2] for entry in window) / total
            if refused_share >= OVERLOAD_ENTER_SHARE:
                assert control.overloaded
            if refused_share < OVERLOAD_LEAVE_SHARE:
                assert not control.overloaded
        expected = AdmissionLimits().budget_ms * (
            OVERLOAD_BUDGET_SHARE if control.overloaded else 1.0
        )
        assert control.budget_ms() == expected


def test_an_offer_refusing_more_than_it_offered_is_refused() -> None:
    control = AdmissionControl(AdmissionLimits())
    with pytest.raises(ValueError, match="refused 3 of 2"):
        control.observe_offer(0.0, 2, 3)
