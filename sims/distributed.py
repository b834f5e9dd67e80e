"""Sweeps on a Dask distributed cluster: the same seeds, the same runs, on many machines.

Theory of operation
-------------------
A sweep is a list of independent ``SimConfig`` values, and ``sweep.run_one`` turns one into its
JSON summary with nothing but the config as input, so any worker can run any seed and the
result is the same (the trace digest proves it). ``run_on_cluster`` connects a Dask
``Client`` to a scheduler (``tcp://host:8786``), or starts a ``LocalCluster`` on this machine
(``"local"``: processes bound to loopback), submits one task per seed and yields the summaries
in seed order as they complete in any order. Workers need this package installed (the same
version), nothing else.

Dask is optional: it is imported here only, and a clear error says how to install it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

from sims.config import ConfigError, SimConfig

__all__ = ["LOCAL_SCHEDULER", "run_on_cluster"]

# The scheduler address that means "start a LocalCluster here".
LOCAL_SCHEDULER: Final = "local"
# Tasks in flight per worker thread: enough to keep workers busy, few enough that a
# 10,000-seed sweep does not hold every summary twice.
TASKS_PER_THREAD: Final = 8


def run_on_cluster(
    configs: Sequence[SimConfig],
    *,
    scheduler: str,
    workers: int = 2,
    processes: bool = True,
) -> Iterator[dict[str, object]]:
    """Run ``configs`` on the Dask cluster at ``scheduler`` (or a ``LocalCluster`` of
    ``workers`` single-threaded workers for ``"local"``) and yield the summaries in order."""
    try:
        from dask.distributed import Client, Future, LocalCluster
    except ImportError:
        raise ConfigError("--scheduler needs Dask: pip install 'dask[distributed]'") from None
    from sims.sweep import run_one

    cluster: LocalCluster | None = None
    if scheduler == LOCAL_SCHEDULER:
        # Worker processes listen on loopback only; threads in this process talk in-process.
        where = {"host": "127.0.0.1"} if processes else {}
        cluster = LocalCluster(
            n_workers=max(1, workers),
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
            **where,
        )
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        threads = max(1, sum(client.nthreads().values()))
        window = threads * TASKS_PER_THREAD
        pending: list[Future[dict[str, object]]] = []
        submitted = 0
        for _ in range(len(configs)):
            while submitted < len(configs) and len(pending) < window:
                pending.append(client.submit(run_one, configs[submitted], pure=False))
                submitted += 1
            summary: dict[str, object] = pending.pop(0).result()
            yield summary
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
