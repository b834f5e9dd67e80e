"""The execution benchmark runs end to end on a small workload: every phase is timed, the
in-memory and LMDB runs agree on the fingerprint, and every transaction is accepted."""

from __future__ import annotations

import pytest

from node.bench.execution import PHASES, prepare_workload, run_benchmark


@pytest.mark.parametrize("mix", ["demo", "payments"])
def test_small_benchmark_runs_and_backends_agree(mix: str) -> None:
    workload = prepare_workload(mix, transactions=60, block_size=25)
    assert [len(block) for block in workload.blocks] == [25, 25, 10]
    result = run_benchmark(workload, runs=1)
    assert result.accepted == 60
    assert set(result.microseconds_per_tx) == set(PHASES)
    assert all(value >= 0 for value in result.cpu_microseconds_per_tx.values())
    assert len(result.fingerprint) == 64
    # Same transactions, same results: a second run reproduces the fingerprint.
    assert run_benchmark(workload, runs=1).fingerprint == result.fingerprint


def test_unknown_mix_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown mix"):
        prepare_workload("lottery", transactions=1, block_size=1)
