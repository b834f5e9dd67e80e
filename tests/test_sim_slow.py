"""Long simulator sweeps (``slow``): run with
``.venv/bin/python -m pytest -m slow tests/test_sim_slow.py``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from node.cli import main
from sims.bugs import BUGS
from sims.sweep import run_sweep, sweep_config
from tests.test_sim_bugs import NOT_YET_FORKED

pytestmark = pytest.mark.slow


def test_two_thousand_seeds_of_eight_heights_are_safe() -> None:
    summary = run_sweep([sweep_config(seed, blocks=8) for seed in range(2_000)], jobs=2).describe()
    failures = summary["failures"]
    assert isinstance(failures, list)
    unsafe = [f for f in failures if any(v["check"] != "liveness" for v in f["violations"])]
    assert unsafe == []


def test_a_thousand_adversary_seeds_are_safe_and_live() -> None:
    configs = [sweep_config(seed, blocks=3, adversary=True) for seed in range(1_000)]
    summary = run_sweep(configs, jobs=2).describe()
    assert summary["failed"] == 0, summary["failures"]


def test_the_ten_thousand_seed_soak() -> None:
    outcome = CliRunner().invoke(
        main, ["sim", "sweep", "--seeds", "10000", "--jobs", "2", "--json"]
    )
    summary = json.loads(outcome.output)
    assert summary["failed"] == 0, summary["failures"]
    assert outcome.exit_code == 0


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(
                strict=True, reason="no adversary move forks the chain with this bug yet"
            ),
        )
        if name in NOT_YET_FORKED
        else name
        for name in sorted(BUGS)
    ],
)
def test_each_planted_bug_is_caught_by_its_checks_within_200_seeds(name: str) -> None:
    bug = BUGS[name]
    configs = [sweep_config(seed, validators=4, blocks=bug.blocks, bug=name) for seed in range(200)]
    runs = run_sweep(configs, jobs=2).runs
    caught = [
        run
        for run in runs
        if {v["check"] for v in run["violations"]} & set(bug.caught_by)  # type: ignore[attr-defined]
    ]
    assert caught, f"{name}: no seed of 200 caught by {bug.caught_by}"
