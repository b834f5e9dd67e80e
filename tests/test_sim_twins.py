"""Twins: every leader and partition schedule of a small scope (n = 4, one twinned validator).

The default run takes a slice of the 3-view enumeration and a positive control (a planted bug
the enumeration must find); the whole enumeration is ``slow`` (``suanpan sim twins``).
"""

from __future__ import annotations

import pytest

from sims.twins import (
    SHAPES_PER_ROUND,
    enumerate_scenarios,
    run_scenario,
    run_twins,
    scenario,
    scenario_count,
)


def test_the_enumeration_is_complete_and_named_by_index() -> None:
    assert SHAPES_PER_ROUND == 9
    assert scenario_count(3) == 4 * 9**3 == 2_916
    assert scenario_count(4) == 26_244
    all_views = list(enumerate_scenarios(2))
    assert len(all_views) == scenario_count(2)
    assert len({(s.twin, s.shapes) for s in all_views}) == len(all_views)
    assert {s.twin for s in all_views} == {0, 1, 2, 3}
    assert scenario(2, 17) == all_views[17]


def test_a_round_cuts_exactly_the_links_between_its_two_sides() -> None:
    chosen = scenario(1, 9 * 2 + 4)  # twin 2; round 0: honest 0 and 1 with the first copy
    first, second = chosen.sides(0) or (frozenset(), frozenset())
    assert 2 in first
    assert 4 in second
    assert first | second == {0, 1, 2, 3, 4}
    for a in first:
        for b in second:
            assert chosen.blocked(0, a, b)
            assert chosen.blocked(0, b, a)
    assert not chosen.blocked(1, 0, 4)  # views beyond the schedule are connected
    assert scenario(1, 9 * 2).sides(0) is None  # shape 0: connected


def test_a_slice_of_the_three_view_enumeration_is_safe_and_live() -> None:
    report = run_twins(3, start=0, limit=24, jobs=2)
    summary = report.describe()
    assert summary["ran"] == 24
    assert summary["violated"] == 0, summary["violations"]


def test_the_enumeration_finds_a_planted_bug() -> None:
    """Positive control: with quorums one vote short, a twin whose copies lead on both sides
    of a partition forks the chain in the first scenario that splits the honest replicas."""
    result = run_scenario(3, 2, bug="wrong-quorum")
    assert "agreement" in {v["check"] for v in result["violations"]}  # type: ignore[attr-defined]
    assert "--bug wrong-quorum" in str(result["command"])


@pytest.mark.slow
def test_the_whole_three_view_enumeration_is_safe_and_live() -> None:
    report = run_twins(3, jobs=2)
    summary = report.describe()
    assert summary["ran"] == scenario_count(3)
    assert summary["violated"] == 0, summary["violations"]
