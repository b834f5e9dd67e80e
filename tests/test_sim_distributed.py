"""Sweeps on a Dask cluster give the same per-seed results as the local process pool.

Runs a LocalCluster in this process (threads, loopback only), so it needs no other machine;
skipped with a reason when dask[distributed] is not installed (the test extra installs it).
"""

from __future__ import annotations

import importlib.util

import pytest

from sims.sweep import SweepResult, run_sweep, sweep_config

# Checked without importing it: importing dask.distributed at collection would set up its
# logging and thread pools inside every other test's process.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None,
    reason="dask[distributed] is not installed (pip install -e '.[test]')",
)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_cluster_sweep_matches_a_local_sweep_seed_for_seed() -> None:
    configs = [sweep_config(seed, blocks=2) for seed in range(6)]
    configs += [sweep_config(seed, blocks=2, adversary=True) for seed in range(6, 9)]
    local = run_sweep(configs, jobs=1)
    from sims.distributed import run_on_cluster

    remote_runs = list(run_on_cluster(configs, scheduler="local", workers=2, processes=False))
    assert [run["seed"] for run in remote_runs] == [c.seed for c in configs]
    assert [run["trace_digest"] for run in remote_runs] == [
        run["trace_digest"] for run in local.runs
    ]
    assert SweepResult(remote_runs, 0.0).sweep_digest() == local.sweep_digest()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_suanpan_sim_sweep_scheduler_local_runs_worker_processes_on_loopback() -> None:
    """The command-line path: ``--scheduler local`` starts worker processes on 127.0.0.1."""
    configs = [sweep_config(seed, blocks=2) for seed in range(8)]
    local = run_sweep(configs, jobs=1)
    clustered = run_sweep(configs, scheduler="local", jobs=2)
    assert clustered.sweep_digest() == local.sweep_digest()
