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
