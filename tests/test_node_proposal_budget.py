"""The proposal time budget: a node caps its proposals at what recent blocks ordered in a
share of the view timeout (commit-to-commit time per transaction). Commit times are passed in
explicitly, so nothing here depends on the machine's speed."""

from __future__ import annotations

from pathlib import Path

from node import runtime
from node.home import load_home
from node.testnet import create_testnet


def test_proposal_budget_follows_the_measured_block_time(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="budget-net")
    node = runtime.Node(load_home(info.homes[0]))
    try:
        configured = node.config.block.proposal_transactions_max
        budget_s = node.config.consensus.view_timeout_ms / 1000 * runtime._PROPOSAL_TIME_SHARE
        big = runtime._BLOCK_SAMPLE_MIN_TRANSACTIONS * 5

        # Nothing measured yet: only the configured limit applies.
        assert node._proposal_budget() == configured
        # Idle, then a busy block after a long wait: the wait is not taken for its cost.
        node._measure_block_time(100.0, 0)
        node._measure_block_time(160.0, big)
        assert node._proposal_budget() == configured
        # Steady load: consecutive busy blocks, each taking the whole budget for 700 tx.
        per_tx = budget_s / 700
        node._measure_block_time(160.0 + big * per_tx, big)
        assert abs(node._proposal_budget() - 700) <= 1  # float division
        # Blocks get slower (the machine is loaded): the budget shrinks towards the new speed.
        now = 160.0 + big * per_tx
        for _ in range(40):
            now += big * per_tx * 2
            node._measure_block_time(now, big)
        assert abs(node._proposal_budget() - 350) <= 1
        # A very slow chain still proposes the floor, never an empty block for lack of time.
        for _ in range(40):
            now += big * budget_s
            node._measure_block_time(now, big)
        assert node._proposal_budget() == runtime._PROPOSAL_BUDGET_FLOOR
    finally:
        node.store.close()
