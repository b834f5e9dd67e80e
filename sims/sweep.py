"""Run many seeds, in parallel processes, and summarise.

Each seed's cluster shape (validators, byzantine count) is drawn from the seed unless pinned,
so a sweep covers n = 1, 4, 5, 7 with 0..f byzantine validators. Each run is independent and
deterministic; the pool only changes which process runs it, never what it does.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

from sims.config import DEFAULT_WORKLOAD, SimConfig
from sims.simulation import run_simulation

__all__ = ["SweepResult", "run_sweep", "sweep_config"]

_SHAPES = (1, 4, 4, 4, 5, 7)


def sweep_config(
    seed: int,
    *,
    validators: int | None = None,
    byzantine: int | None = None,
    blocks: int = 3,
    bug: str | None = None,
    workload: str = DEFAULT_WORKLOAD,
) -> SimConfig:
    """The configuration a sweep runs for ``seed`` (shape drawn from the seed unless pinned)."""
    rng = random.Random(f"suanpan/sweep/{seed}")
    n = validators if validators is not None else rng.choice(_SHAPES)
    f = (n - 1) // 3
    k = byzantine if byzantine is not None else rng.randint(0, f)
    return SimConfig(
        seed=seed,
        validators=n,
        byzantine=min(k, n),
        blocks=blocks,
        bug=bug,
        workload=workload,
    )


@dataclass(slots=True)
class SweepResult:
    """Summary of a sweep."""

    runs: list[dict[str, object]]
    wall_time_s: float

    @property
    def failures(self) -> list[dict[str, object]]:
        """Runs with a violation."""
        return [run for run in self.runs if not run["ok"]]

    def describe(self) -> dict[str, object]:
        """The JSON summary."""
        seeds = len(self.runs)
        heights = sum(int(str(run["committed_height"])) for run in self.runs)
        return {
            "seeds": seeds,
            "passed": seeds - len(self.failures),
            "failed": len(self.failures),
            "liveness_failed": sum(1 for run in self.runs if run["liveness"] == "failed"),
            "committed_heights": heights,
            "receipts_ok": sum(int(str(run["receipts_ok"])) for run in self.runs),
            "receipts_rejected": sum(int(str(run["receipts_rejected"])) for run in self.runs),
            "wall_time_s": round(self.wall_time_s, 2),
            "seeds_per_minute": round(seeds * 60 / max(self.wall_time_s, 1e-9), 1),
            "failures": [
                {"seed": run["seed"], "command": run["command"], "violations": run["violations"]}
                for run in self.failures
            ],
        }


def _run_one(config: SimConfig) -> dict[str, object]:
    return run_simulation(config).describe()


def run_sweep(
    configs: Iterable[SimConfig],
    *,
    jobs: int = 1,
    progress: Callable[[dict[str, object]], None] | None = None,
) -> SweepResult:
    """Run every configuration (in ``jobs`` processes) and collect the summaries in order."""
    started = time.perf_counter()
    todo = list(configs)
    runs: list[dict[str, object]] = []
    if jobs <= 1:
        for config in todo:
            run = _run_one(config)
            runs.append(run)
            if progress is not None:
                progress(run)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for run in pool.map(_run_one, todo, chunksize=4):
                runs.append(run)
                if progress is not None:
                    progress(run)
    return SweepResult(runs, time.perf_counter() - started)


def with_bug(configs: Iterable[SimConfig], bug: str | None) -> list[SimConfig]:
    """The same configurations with planted bug ``bug`` switched on."""
    return [replace(config, bug=bug) for config in configs]
