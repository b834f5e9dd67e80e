"""A living consortium on real node processes: the validator set changes under load.

Four validators under load; the banks vote a fifth bank's node in as a validator and out again
(4 -> 5 -> 4), then rotate node1's consensus key and node2's node key. Every node must agree,
the added node must vote from the height its validator took effect, and every store, the
retired node's included, must pass the offline audit, which checks each certificate against
the validator set of its own height. Every wait polls under a deadline: a slow machine makes
the run slower, never red.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from node.testnet.chaos import ChaosReport, run_chaos
from node.testnet.chaos_scenario import (
    Perturbation,
    Scenario,
    ScenarioError,
    load_scenario,
    parse_scenario,
)
from tests.test_chaos import explain


def check_reconfigured(report: ChaosReport, *, validators: int) -> None:
    assert report.ok, explain(report)
    added = validators  # the first node an add-validator writes
    assert report.retired == frozenset({added})
    kinds = {fault.perturbation.kind: fault for fault in report.faults}
    joined = kinds["add-validator"]
    # Its validator was added by governance (after its bank was admitted), then removed.
    assert len(joined.decisions) == 2, explain(report)
    added_at = joined.decisions[0].effective_height
    removed_at = joined.decisions[1].effective_height
    assert added_at < removed_at
    assert joined.recovery_s is not None, "the added node voted"
    retired = next(node for node in report.nodes if node.index == added)
    assert retired.height >= added_at  # it followed the chain while it was a validator
    rotated = kinds["rotate-key"]
    assert rotated.decisions, explain(report)
    assert rotated.recovery_s is not None, explain(report)
    assert not [v for v in report.violations if v.check == "reconfiguration"]
    # Every node, the retired one too, agrees; every store passes the audit across the changes.
    assert sorted(report.audits) == [f"node{i}" for i in range(validators + 1)]
    for name, audit in report.audits.items():
        assert isinstance(audit, dict)
        assert audit["ok"] is True, (name, explain(report))
    heights = {node.index: node.height for node in report.nodes}
    assert all(heights[i] >= report.target_height for i in range(validators))
    assert report.exit_codes == [0] * (validators + 1)


def test_four_validators_grow_to_five_and_back_and_rotate_keys_under_load(tmp_path: Path) -> None:
    scenario = Scenario(
        name="reconfigure-short",
        validators=4,
        duration_s=22,
        load_tps=30,
        perturbations=(
            Perturbation(at_s=1, node=4, kind="add-validator", duration_s=8),
            Perturbation(at_s=10, node=1, kind="rotate-key", duration_s=5),
            Perturbation(at_s=16, node=2, kind="rotate-node-key", duration_s=4),
        ),
    )
    lines: list[str] = []
    report = run_chaos(scenario, tmp_path / "net", progress=lines.append)
    check_reconfigured(report, validators=4)
    assert any("node4 votes from height" in line for line in lines), lines
    assert any("node4 retired" in line for line in lines), lines


@pytest.mark.slow
def test_the_shipped_reconfigure_scenario(tmp_path: Path) -> None:
    report = run_chaos(load_scenario("reconfigure"), tmp_path / "net")
    check_reconfigured(report, validators=4)


def test_reconfiguration_scenarios_are_checked_up_front() -> None:
    text = """
        validators = 4
        duration_s = 30
        [[perturbation]]
        at_s = 1
        node = 5
        kind = "add-validator"
        duration_s = 10
        [[perturbation]]
        at_s = 5
        node = 1
        kind = "rotate-key"
        duration_s = 3
    """
    with pytest.raises(ScenarioError) as refused:
        parse_scenario(text)
    problems = " ".join(refused.value.problems)
    assert "adds node 4 (the next index), not 5" in problems
    assert "validator-set changes at 1s and 5s overlap" in problems
    scenario = load_scenario("reconfigure")
    assert scenario.added_nodes == 1
    assert all(item.is_reconfiguration for item in scenario.perturbations)
