"""Long simulator sweeps (``slow``): run with
``.venv/bin/python -m pytest -m slow tests/test_sim_slow.py``."""

from __future__ import annotations

import pytest

from sims.bugs import BUGS
from sims.sweep import run_sweep, sweep_config

pytestmark = pytest.mark.slow


def test_two_thousand_seeds_of_eight_heights_are_safe() -> None:
    summary = run_sweep([sweep_config(seed, blocks=8) for seed in range(2_000)], jobs=2).describe()
    failures = summary["failures"]
    assert isinstance(failures, list)
    unsafe = [f for f in failures if any(v["check"] != "liveness" for v in f["violations"])]
    assert unsafe == []


@pytest.mark.parametrize("name", sorted(BUGS))
def test_each_planted_bug_is_caught_often(name: str) -> None:
    blocks = BUGS[name].blocks
    configs = [sweep_config(seed, validators=4, blocks=blocks, bug=name) for seed in range(200)]
    summary = run_sweep(configs, jobs=2).describe()
    assert int(str(summary["failed"])) >= 5, summary
