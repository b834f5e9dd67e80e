"""Validator-set changes in the simulator: joins, leaves and key rotations decided on chain by
the banks' votes, during runs with loss, crashes, partitions and byzantine validators (fixed
behaviours or the adversary). Agreement, validity (each certificate against the set of its
height), liveness and every other check must hold; the planted bug that checks a synced
certificate against the set known on arrival forks a node, and the same scenario without it
passes. The 500-seed sweep is under ``slow`` (``tests/test_sim_slow.py`` style)."""

from __future__ import annotations

import pytest

from sims.config import SimConfig
from sims.simulation import Simulation, run_simulation
from sims.sweep import run_sweep, sweep_config

# Seeds in the default run: each decides at least three changes under its faults.
SEEDS = range(10)


def test_a_sweep_with_reconfiguration_holds_every_invariant() -> None:
    configs = [sweep_config(seed, reconfigure=True) for seed in SEEDS]
    result = run_sweep(configs, jobs=1)
    assert [run for run in result.runs if not run["ok"]] == []
    changes = result.validator_changes()
    assert changes["validator_joins"] > 0, changes
    assert changes["validator_leaves"] > 0, changes
    assert changes["key_rotations"] > 0, changes
    assert all(run["liveness"] in ("ok", "not-checked") for run in result.runs)
    assert any(run["adversary"] for run in result.runs), "some seeds run the adversary"


@pytest.mark.parametrize(("validators", "byzantine"), [(4, 1), (7, 2)])
def test_the_adversary_attacks_while_the_set_changes(validators: int, byzantine: int) -> None:
    for seed in range(2):
        config = SimConfig(
            seed=seed,
            validators=validators,
            byzantine=byzantine,
            blocks=3,
            adversary=True,
            reconfigure=True,
        )
        result = run_simulation(config)
        assert result.ok, (config.command(), result.violations)
        assert result.liveness == "ok", config.command()
        decided = sum(
            result.faults[k] for k in ("validator_joins", "validator_leaves", "key_rotations")
        )
        # Heavy faults may leave a change undecided when the fault phase ends; one at least.
        assert decided >= 1, (config.command(), result.faults)


def test_every_height_is_judged_by_its_own_set() -> None:
    """The run's schedule has several sets, and the canonical chain's certificates from after
    a change do not verify against the genesis set (so the checker really uses each height's)."""
    simulation = Simulation(SimConfig(seed=3, reconfigure=True, blocks=3))
    result = simulation.run()
    assert result.ok, result.violations
    schedule = simulation.validator_schedule
    assert len(schedule.changes) >= 3
    genesis = schedule.genesis
    moved = [
        entry
        for height, entry in simulation._canonical_entries.items()
        if schedule.at(height) != genesis
    ]
    assert moved
    from consensus.types import CertificateError, verify_certificate

    refused = 0
    for entry in moved:
        try:
            verify_certificate(
                entry.certificate,
                genesis,
                "suanpan-sim",
                block_hash=entry.block.hash,
                height=entry.block.height,
            )
        except CertificateError:
            refused += 1
    assert refused > 0


def test_reconfiguration_runs_are_reproducible() -> None:
    config = SimConfig(seed=5, reconfigure=True, blocks=3, byzantine=1, adversary=True)
    assert run_simulation(config).trace_digest == run_simulation(config).trace_digest


def test_the_planted_bug_forks_a_syncing_node_and_the_scenario_alone_does_not() -> None:
    config = SimConfig(seed=1, validators=4, blocks=40, bug="sync-against-current-set")
    caught = run_simulation(config)
    checks = {violation.check for violation in caught.violations}
    assert "agreement" in checks, caught.violations
    assert "validity" in checks
    control = run_simulation(
        SimConfig(seed=1, validators=4, blocks=40, bug="sync-against-current-set", bug_off=True)
    )
    assert control.ok, control.violations
    assert control.faults["key_rotations"] >= 3


@pytest.mark.slow
def test_five_hundred_seeds_with_reconfiguration_show_no_violation() -> None:
    configs = [sweep_config(seed, reconfigure=True) for seed in range(500)]
    result = run_sweep(configs, jobs=2)
    failures = [run["command"] for run in result.runs if not run["ok"]]
    assert failures == []


def test_a_validator_ranked_before_others_leaves_and_they_move_down_one_index() -> None:
    """A leave picks any honest validator ranked after every byzantine one, so the honest
    validators after it change index mid-run; every check still holds."""
    shifted = []
    for seed in range(40):
        simulation = Simulation(SimConfig(seed=seed, reconfigure=True, blocks=3))
        result = simulation.run()
        assert result.ok, (result.config.command(), result.violations)
        assert simulation.reconfiguration is not None
        if simulation.reconfiguration.counts.shifting_leaves:
            shifted.append(seed)
        if len(shifted) == 2:
            break
    assert len(shifted) == 2, "some seeds remove a validator ranked before others"
