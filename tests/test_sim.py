"""The simulator running the real replica and apps: clean runs, faults, byzantine nodes, twins,
determinism, and the command line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from node.cli import main
from sims.config import SimConfig, SimResult
from sims.faults import Behaviour
from sims.simulation import run_simulation
from sims.sweep import run_sweep, sweep_config


def safety_violations(result: SimResult) -> list[object]:
    """Every violation except liveness."""
    return [v for v in result.violations if v.check != "liveness"]


CALM = {
    "loss_percent": 0,
    "duplicate_percent": 0,
    "reorder_percent": 0,
    "partition_percent": 0,
    "crash_percent": 0,
    "clock_skew_ms_max": 0,
}


def test_four_honest_validators_commit_and_acknowledge_transactions() -> None:
    result = run_simulation(SimConfig(seed=1, validators=4, blocks=5, overrides=CALM))
    assert result.ok, result.violations
    assert result.committed_height >= 5
    assert result.liveness == "ok"
    assert result.transactions_acknowledged > 0
    assert result.views >= result.committed_height


@pytest.mark.parametrize("validators", [1, 4, 7])
def test_cluster_sizes_survive_their_seeds_faults(validators: int) -> None:
    result = run_simulation(SimConfig(seed=11, validators=validators, blocks=3))
    assert result.ok, result.violations
    assert result.liveness == "ok"


def test_same_arguments_give_the_same_trace_and_a_different_seed_does_not() -> None:
    digests = []
    for seed in (3, 4, 5):
        config = sweep_config(seed, blocks=3)
        first = run_simulation(config).describe()
        second = run_simulation(config).describe()
        for volatile in ("wall_time_s", "sim_to_wall_ratio"):
            first.pop(volatile)
            second.pop(volatile)
        assert first == second
        digests.append(first["trace_digest"])
    assert len(set(digests)) == 3


@pytest.mark.parametrize("behaviour", [b for b in Behaviour if b is not Behaviour.TWIN])
def test_one_byzantine_validator_cannot_break_safety_or_liveness(behaviour: Behaviour) -> None:
    for seed in range(3):
        config = SimConfig(
            seed=seed,
            validators=4,
            byzantine=1,
            blocks=3,
            overrides={"behaviours": (behaviour,)},
        )
        result = run_simulation(config)
        assert not safety_violations(result), (config.command(), result.violations)
        if behaviour is not Behaviour.FORGE_SYNC:
            assert result.faults["byzantine_messages"] > 0 or behaviour is Behaviour.SILENT


def test_f_twins_never_fork() -> None:
    for seed in range(6):
        for validators in (4, 7):
            faulty = (validators - 1) // 3
            config = SimConfig(
                seed=seed, validators=validators, byzantine=faulty, blocks=4, twins=True
            )
            result = run_simulation(config)
            assert result.safety_claimed
            assert result.ok, (config.command(), result.violations)


def test_f_plus_one_twins_fork_and_the_checker_says_so() -> None:
    """Positive control: a network with more byzantine validators than it tolerates forks, the
    agreement checker reports it, and the simulator does not claim safety."""
    forks = 0
    for seed in range(10):
        config = SimConfig(seed=seed, validators=4, byzantine=2, blocks=4, twins=True)
        result = run_simulation(config)
        assert not result.safety_claimed
        if any(v.check == "agreement" for v in result.violations):
            forks += 1
    assert forks >= 1


@pytest.fixture(scope="module")
def default_sweep() -> dict[str, object]:
    """200 seeds, shapes and fault mixes drawn per seed, 3 heights each, byzantine validators
    with fixed behaviours (the adversary has its own sweep in test_sim_adversary.py)."""
    configs = [sweep_config(seed, blocks=3, adversary=False) for seed in range(200)]
    return run_sweep(configs, jobs=2).describe()


def test_default_sweep_of_200_seeds_is_safe(default_sweep: dict[str, object]) -> None:
    failures = default_sweep["failures"]
    assert isinstance(failures, list)
    unsafe = [
        failure
        for failure in failures
        if any(v["check"] != "liveness" for v in failure["violations"])
    ]
    assert unsafe == []
    assert int(str(default_sweep["committed_heights"])) >= 400


def test_default_sweep_of_200_seeds_is_live(default_sweep: dict[str, object]) -> None:
    assert default_sweep["failed"] == 0, default_sweep["failures"]


def test_cli_prints_json_with_the_promised_fields() -> None:
    runner = CliRunner()
    outcome = runner.invoke(main, ["sim", "--seed", "2", "--blocks", "2", "--json"])
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads(outcome.output)
    for key in (
        "seed",
        "validators",
        "byzantine",
        "committed_height",
        "views",
        "violations",
        "liveness",
        "trace_digest",
        "messages_per_block",
        "bytes_per_block",
        "sim_to_wall_ratio",
    ):
        assert key in summary
    assert summary["violations"] == []
    assert summary["liveness"] == "ok"


def test_cli_fails_on_a_planted_bug_and_prints_the_reproducing_command() -> None:
    runner = CliRunner()
    outcome = runner.invoke(main, ["sim", "--seed", "0", "--bug", "wrong-quorum"])
    assert outcome.exit_code == 1, outcome.output
    assert "VIOLATION" in outcome.output
    assert "reproduce with: suanpan sim --seed 0" in outcome.output
    assert "--bug wrong-quorum" in outcome.output
    listing = runner.invoke(main, ["sim", "--list-bugs"])
    assert listing.exit_code == 0
    assert "vote-before-persist" in listing.output
    assert len(listing.output.strip().splitlines()) >= 9


def test_cli_flags_pin_fault_parameters_and_appear_in_the_command() -> None:
    config = SimConfig(seed=5, overrides={"loss_percent": 30, "behaviours": (Behaviour.SILENT,)})
    assert "--loss 30" in config.command()
    assert "--behaviour silent" in config.command()
    runner = CliRunner()
    outcome = runner.invoke(main, ["sim", "--seed", "5", "--loss", "30", "--blocks", "2", "--json"])
    assert outcome.exit_code == 0, outcome.output
    assert json.loads(outcome.output)["parameters"]["loss_percent"] == 30


def test_cli_sweep_summarises_with_coverage() -> None:
    runner = CliRunner()
    outcome = runner.invoke(
        main,
        ["sim", "sweep", "--seeds", "4", "--jobs", "1", "--blocks", "2", "--adversary", "--json"],
    )
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads(outcome.output)
    assert summary["seeds"] == 4
    assert summary["failed"] == 0
    assert summary["adversary_seeds"] == 4
    coverage = summary["coverage"]
    assert set(coverage) == {"drop_reasons", "moves"}
    assert "invalid_new_view" in coverage["drop_reasons"]
    assert sum(coverage["moves"].values()) > 0
    assert len(summary["sweep_digest"]) == 64
    text = runner.invoke(
        main, ["sim", "sweep", "--seeds", "2", "--jobs", "1", "--blocks", "2", "--adversary"]
    )
    assert text.exit_code == 0, text.output
    assert "honest drops by reason:" in text.output
    assert "adversary moves:" in text.output
    assert "sweep digest" in text.output


def test_cli_twins_reports_ran_violated_and_time() -> None:
    outcome = CliRunner().invoke(
        main, ["sim", "twins", "--views", "1", "--limit", "3", "--jobs", "1", "--json"]
    )
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads(outcome.output)
    assert summary["ran"] == 3
    assert summary["violated"] == 0
    assert summary["scenarios"] == 36
    assert "wall_time_s" in summary


def test_cli_sim_runs_the_adversary_and_lists_its_moves() -> None:
    outcome = CliRunner().invoke(
        main, ["sim", "--seed", "4", "--byzantine", "1", "--blocks", "2", "--adversary"]
    )
    assert outcome.exit_code == 0, outcome.output
    assert "adversary moves" in outcome.output
    assert "honest drops" in outcome.output


def test_trace_digest_does_not_depend_on_the_process_hash_seed() -> None:
    """No unordered iteration reaches the trace: two processes with different hash seeds agree."""
    import os
    import subprocess
    import sys

    digests = set()
    for hash_seed in ("1", "2"):
        completed = subprocess.run(
            [
                sys.executable,
                "-c",
                "from node.cli import main; main()",
                "sim",
                "--seed",
                "41",
                "--validators",
                "7",
                "--byzantine",
                "2",
                "--blocks",
                "3",
                "--adversary",
                "--json",
            ],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert completed.returncode in (0, 1), completed.stderr
        digests.add(json.loads(completed.stdout)["trace_digest"])
    assert len(digests) == 1


def test_demo_workload_runs_the_business_apps_in_order_and_counts_receipts() -> None:
    result = run_simulation(SimConfig(seed=1, validators=4, blocks=20, overrides=CALM))
    assert result.ok, result.violations
    summary = result.describe()
    assert summary["workload"] == "demo"
    assert result.receipts_ok >= 10
    # Each sender in nonce order, cross-sender steps windowed: the apps reject nothing here.
    assert summary["receipts_rejected"] == 0, summary["rejections"]
    assert result.transactions_acknowledged == result.receipts_ok


def test_membership_workload_stays_available_and_is_named_in_the_command() -> None:
    config = SimConfig(seed=1, validators=4, blocks=5, overrides=CALM, workload="membership")
    result = run_simulation(config)
    assert result.ok, result.violations
    assert result.transactions_acknowledged > 0
    assert "--workload membership" in config.command()
    assert "--workload" not in SimConfig(seed=1).command()
    demo = run_simulation(SimConfig(seed=1, validators=4, blocks=5, overrides=CALM))
    assert demo.trace_digest != result.trace_digest
