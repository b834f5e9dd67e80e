"""Run many seeds, in parallel processes or on a Dask cluster, and summarise.

Each seed's cluster shape (validators, byzantine count) is drawn from the seed unless pinned,
so a sweep covers n = 1, 4, 5, 7, 10 with 0..f byzantine validators; a seed with byzantine
validators gives them to the adversary or to fixed behaviours, also drawn from the seed unless
pinned (``adversary=True``: every seed has 1..f byzantine validators under the adversary, n in
4, 5, 7, 10). Each run is independent and deterministic; the pool or cluster only changes
where it runs, never what it does, so the same seeds give the same per-seed trace digests
(``sweep_digest`` folds them into one).

The summary adds up, over all seeds, how often each replica ``DropReason`` fired at honest
nodes and how often the adversary made each kind of move (``coverage``).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Final

from consensus.replica import DropReason
from sims.adversary import MOVES
from sims.config import DEFAULT_WORKLOAD, ConfigError, SimConfig
from sims.simulation import run_simulation

__all__ = [
    "ADVERSARY_SHAPES",
    "SHAPES",
    "SweepResult",
    "run_sweep",
    "sweep_config",
]

# Cluster sizes a sweep draws from (4 weighted: the smallest size with a byzantine validator).
SHAPES: Final = (1, 4, 4, 4, 5, 7, 10)
# With the adversary every seed needs room for at least one byzantine validator.
ADVERSARY_SHAPES: Final = (4, 4, 5, 7, 10)


def sweep_config(
    seed: int,
    *,
    validators: int | None = None,
    byzantine: int | None = None,
    blocks: int = 3,
    bug: str | None = None,
    workload: str = DEFAULT_WORKLOAD,
    adversary: bool | None = None,
    reconfigure: bool = False,
) -> SimConfig:
    """The configuration a sweep runs for ``seed`` (shape and adversary drawn from the seed
    unless pinned; ``adversary`` None draws it for seeds with byzantine validators)."""
    rng = random.Random(f"suanpan/sweep/{seed}")
    if bug is not None:
        # A planted bug brings its own byzantine validators and adversary (``bugs.py``).
        adversary = False if adversary is None else adversary
        byzantine = 0 if byzantine is None else byzantine
    shapes = ADVERSARY_SHAPES if adversary else SHAPES
    n = validators if validators is not None else rng.choice(shapes)
    f = (n - 1) // 3
    if adversary and byzantine is None:
        if f < 1:
            raise ConfigError(f"the adversary needs a byzantine validator; {n} validators have f=0")
        k = rng.randint(1, f)
    else:
        k = byzantine if byzantine is not None else rng.randint(0, f)
    use_adversary = adversary if adversary is not None else k > 0 and rng.randrange(2) == 0
    return SimConfig(
        seed=seed,
        validators=n,
        byzantine=min(k, n),
        blocks=blocks,
        bug=bug,
        workload=workload,
        adversary=bool(use_adversary) and k > 0,
        reconfigure=reconfigure,
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

    def coverage(self) -> dict[str, dict[str, int]]:
        """Drop reasons at honest nodes and adversary moves, summed over the seeds; every
        reason and every move is listed, the ones that never fired with 0."""
        drops = {str(reason): 0 for reason in DropReason}
        moves = {str(move): 0 for move in MOVES}
        for run in self.runs:
            for table, key in ((drops, "drops"), (moves, "moves")):
                counts = run.get(key, {})
                assert isinstance(counts, dict)
                for name, count in counts.items():
                    table[name] = table.get(name, 0) + int(count)
        return {"drop_reasons": drops, "moves": moves}

    def validator_changes(self) -> dict[str, int]:
        """Validator-set changes the chain decided, summed over the seeds (reconfiguration)."""
        totals = {"validator_joins": 0, "validator_leaves": 0, "key_rotations": 0}
        for run in self.runs:
            faults = run.get("faults", {})
            assert isinstance(faults, dict)
            for name in totals:
                totals[name] += int(faults.get(name, 0))
        return totals

    def sweep_digest(self) -> str:
        """SHA-256 over the seeds and their trace digests, in seed order."""
        digest = hashlib.sha256(b"suanpan/sim/sweep/v1")
        for run in sorted(self.runs, key=lambda r: int(str(r["seed"]))):
            digest.update(f"{run['seed']}:{run['trace_digest']};".encode())
        return digest.hexdigest()

    def describe(self) -> dict[str, object]:
        """The JSON summary."""
        seeds = len(self.runs)
        heights = sum(int(str(run["committed_height"])) for run in self.runs)
        failures = self.failures
        safety_failed = [
            run
            for run in failures
            if any(
                isinstance(v, dict) and v.get("check") != "liveness"
                for v in run["violations"]  # type: ignore[attr-defined]
            )
        ]
        return {
            "seeds": seeds,
            "passed": seeds - len(failures),
            "failed": len(failures),
            "safety_failed": len(safety_failed),
            "liveness_failed": sum(1 for run in self.runs if run["liveness"] == "failed"),
            "adversary_seeds": sum(1 for run in self.runs if run.get("adversary")),
            "validator_changes": self.validator_changes(),
            "committed_heights": heights,
            "receipts_ok": sum(int(str(run["receipts_ok"])) for run in self.runs),
            "receipts_rejected": sum(int(str(run["receipts_rejected"])) for run in self.runs),
            "sync_hints_checked": sum(int(str(run["sync_hints_checked"])) for run in self.runs),
            "wall_time_s": round(self.wall_time_s, 2),
            "seeds_per_minute": round(seeds * 60 / max(self.wall_time_s, 1e-9), 1),
            "coverage": self.coverage(),
            "sweep_digest": self.sweep_digest(),
            "failures": [
                {"seed": run["seed"], "command": run["command"], "violations": run["violations"]}
                for run in failures
            ],
        }


def run_one(config: SimConfig) -> dict[str, object]:
    """One seed's JSON summary (the unit of work a pool or a cluster runs)."""
    return run_simulation(config).describe()


def _run_local(todo: list[SimConfig], jobs: int) -> Iterator[dict[str, object]]:
    if jobs <= 1:
        for config in todo:
            yield run_one(config)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(run_one, todo, chunksize=4)


def run_sweep(
    configs: Iterable[SimConfig],
    *,
    jobs: int = 1,
    progress: Callable[[dict[str, object]], None] | None = None,
    scheduler: str | None = None,
) -> SweepResult:
    """Run every configuration and collect the summaries in order: in ``jobs`` local processes,
    or on the Dask cluster at ``scheduler`` (``"local"`` starts a ``LocalCluster``)."""
    started = time.perf_counter()
    todo = list(configs)
    runs: list[dict[str, object]] = []
    if scheduler is None:
        results: Iterable[dict[str, object]] = _run_local(todo, jobs)
    else:
        from sims.distributed import run_on_cluster

        results = run_on_cluster(todo, scheduler=scheduler, workers=jobs)
    for run in results:
        runs.append(run)
        if progress is not None:
            progress(run)
    return SweepResult(runs, time.perf_counter() - started)


def with_bug(configs: Iterable[SimConfig], bug: str | None) -> list[SimConfig]:
    """The same configurations with planted bug ``bug`` switched on."""
    return [replace(config, bug=bug) for config in configs]
