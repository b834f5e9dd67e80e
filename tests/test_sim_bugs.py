"""Planted bugs: each must be caught by the checkers within a bounded number of seeds.

This is what proves the checkers can fail. The seed bound is generous for a busy machine;
``suanpan sim sweep --bug NAME`` shows how quickly each one is caught.
"""

from __future__ import annotations

import pytest

from sims.bugs import BUGS
from sims.config import SimConfig
from sims.simulation import run_simulation

# Seeds tried per bug before the test gives up (most bugs fall on the first few).
SEEDS_MAX = 60


@pytest.mark.parametrize("name", sorted(BUGS))
def test_planted_bug_is_caught(name: str) -> None:
    bug = BUGS[name]
    for seed in range(SEEDS_MAX):
        result = run_simulation(SimConfig(seed=seed, validators=4, blocks=bug.blocks, bug=name))
        if result.violations:
            checks = {violation.check for violation in result.violations}
            assert checks & set(bug.caught_by), (seed, result.violations)
            return
    pytest.fail(f"planted bug {name} survived {SEEDS_MAX} seeds")


def test_without_the_bug_the_same_seeds_pass() -> None:
    """The bug scenarios themselves (faults, byzantine node) are not what the checkers flag."""
    for name in sorted(BUGS):
        bug = BUGS[name]
        for seed in range(2):
            config = SimConfig(
                seed=seed,
                validators=4,
                byzantine=bug.byzantine or 0,
                blocks=bug.blocks,
                overrides=dict(bug.scenario),
            )
            result = run_simulation(config)
            unsafe = [v for v in result.violations if v.check != "liveness"]
            assert not unsafe, (name, config.command(), result.violations)
