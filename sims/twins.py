"""Twins: small-scope enumeration of leader and partition schedules (after DiemBFT's Twins).

Theory of operation
-------------------
Twins tests a BFT protocol against byzantine behaviour without writing any: a byzantine
validator is run as two honest copies with the same key (its *twins*), and the network is
partitioned so that each copy talks to different honest replicas; the copies then equivocate
naturally, each following the protocol on what it sees. Instead of drawing schedules at random,
every schedule in a small scope is run.

The scope here: n = 4 validators, one of them twinned (5 nodes: the four validators and the
twin's second copy), and the first ``views`` views of every height (a round is a view; views
restart at 0 at each height, so round r is view r at whichever height the chain has reached).
For each round the schedule picks one of 9 network shapes: fully connected, or the twin's two
copies on opposite sides with each of the 3 honest validators on one side or the other (2^3).
Messages are cut by the shape of *their* view, so a round's partition holds exactly as long
as the protocol is in that view; views from ``views`` on are connected, and so is block sync.

The leader schedule is the protocol's own (the primary of (height, view) is (height + view)
mod n; a replica cannot be told otherwise without changing it), so it is enumerated through
the choice of which validator is twinned: that fixes the rounds in which the twin leads at
each height, both copies proposing (different blocks: the second copy's clock runs a few ms
ahead). Scenarios: 4 twins x 9^views schedules (2,916 for 3 views, 26,244 for 4), each a full
simulation run with the same calm network, checked by every checker, liveness included
(partitions lift when faults stop).

``enumerate_scenarios`` lists them in a fixed order, so a scenario is named by its index and
``suanpan sim twins --views V --start I --limit 1`` reproduces it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Final

from sims.config import SimConfig
from sims.simulation import run_simulation

__all__ = [
    "SHAPES_PER_ROUND",
    "TWINS_VALIDATORS",
    "TwinsReport",
    "TwinsScenario",
    "enumerate_scenarios",
    "run_twins",
    "scenario_count",
]

TWINS_VALIDATORS: Final = 4
# Connected, or the twin's copies apart with each honest validator on one side: 1 + 2^3.
SHAPES_PER_ROUND: Final = 1 + 2 ** (TWINS_VALIDATORS - 1)
# Rounds enumerated: small scope, as the Twins paper argues, finds the bugs that matter.
VIEWS_MIN: Final = 1
VIEWS_MAX: Final = 4
# Heights per scenario: enough for a partitioned height and a connected one after it.
TWINS_BLOCKS: Final = 2
# Every scenario runs the same calm network: the schedule is the only variable.
TWINS_SEED: Final = 0
TWINS_OVERRIDES: Final = {
    "loss_percent": 0,
    "duplicate_percent": 0,
    "reorder_percent": 0,
    "partition_percent": 0,
    "crash_percent": 0,
    "clock_skew_ms_max": 0,
}


@dataclass(frozen=True, slots=True)
class TwinsScenario:
    """One schedule: the twinned validator and, per round, the network shape (0: connected;
    1..8: ``shape - 1`` is a bit mask over the honest validators in index order, bit set =
    on the second copy's side)."""

    index: int
    twin: int
    shapes: tuple[int, ...]

    @property
    def twins(self) -> tuple[int, ...]:
        """The twinned validators (one)."""
        return (self.twin,)

    def sides(self, round_: int) -> tuple[frozenset[int], frozenset[int]] | None:
        """Node ids on the first copy's side and on the second copy's side in ``round_``, or
        None when that round is connected."""
        if round_ >= len(self.shapes) or self.shapes[round_] == 0:
            return None
        mask = self.shapes[round_] - 1
        honest = [v for v in range(TWINS_VALIDATORS) if v != self.twin]
        first = {self.twin}
        second = {TWINS_VALIDATORS}  # the second copy's node id
        for bit, validator in enumerate(honest):
            (second if mask >> bit & 1 else first).add(validator)
        return frozenset(first), frozenset(second)

    def blocked(self, view: int, source: int, destination: int) -> bool:
        """True when ``view``'s partition cuts the link source -> destination."""
        sides = self.sides(view)
        if sides is None:
            return False
        first, _ = sides
        return (source in first) != (destination in first)

    def describe(self) -> str:
        """Human-readable schedule, e.g. ``twin 2: v0 [0 1 2]|[4 3], v1 connected``."""
        parts = []
        for round_ in range(len(self.shapes)):
            sides = self.sides(round_)
            if sides is None:
                parts.append(f"v{round_} connected")
            else:
                first, second = (" ".join(str(n) for n in sorted(side)) for side in sides)
                parts.append(f"v{round_} [{first}]|[{second}]")
        return f"twin {self.twin}: " + ", ".join(parts)


def scenario_count(views: int) -> int:
    """How many scenarios ``views`` rounds give."""
    return TWINS_VALIDATORS * int(SHAPES_PER_ROUND**views)


def scenario(views: int, index: int) -> TwinsScenario:
    """Scenario ``index`` of the enumeration for ``views`` rounds."""
    if not VIEWS_MIN <= views <= VIEWS_MAX:
        raise ValueError(f"views must be {VIEWS_MIN}..{VIEWS_MAX}")
    if not 0 <= index < scenario_count(views):
        raise ValueError(f"scenario index must be 0..{scenario_count(views) - 1}")
    per_twin = int(SHAPES_PER_ROUND**views)
    twin, rest = divmod(index, per_twin)
    shapes = []
    for _ in range(views):
        rest, shape = divmod(rest, SHAPES_PER_ROUND)
        shapes.append(shape)
    return TwinsScenario(index, twin, tuple(shapes))


def enumerate_scenarios(
    views: int, *, start: int = 0, limit: int | None = None
) -> Iterator[TwinsScenario]:
    """Scenarios ``start``, ``start + 1``, ... (all of them, or ``limit``)."""
    end = scenario_count(views) if limit is None else min(scenario_count(views), start + limit)
    for index in range(start, end):
        yield scenario(views, index)


def twins_config(bug: str | None = None) -> SimConfig:
    """The run every scenario shares (the schedule is passed beside it)."""
    return SimConfig(
        seed=TWINS_SEED,
        validators=TWINS_VALIDATORS,
        byzantine=1,
        blocks=TWINS_BLOCKS,
        twins=True,
        bug=bug,
        overrides=TWINS_OVERRIDES,
    )


def run_scenario(views: int, index: int, bug: str | None = None) -> dict[str, object]:
    """Run one scenario; its summary (as ``SimResult.describe``) plus the schedule."""
    chosen = scenario(views, index)
    summary = run_simulation(twins_config(bug), schedule=chosen).describe()
    summary["scenario"] = index
    summary["schedule"] = chosen.describe()
    summary["command"] = f"suanpan sim twins --views {views} --start {index} --limit 1" + (
        f" --bug {bug}" if bug else ""
    )
    return summary


def _run_packed(job: tuple[int, int, str | None]) -> dict[str, object]:
    return run_scenario(*job)


@dataclass(slots=True)
class TwinsReport:
    """What an enumeration found."""

    views: int
    scenarios: int
    ran: int
    violated: list[dict[str, object]]
    wall_time_s: float
    bug: str | None

    def describe(self) -> dict[str, object]:
        """The JSON summary."""
        return {
            "views": self.views,
            "scenarios": self.scenarios,
            "ran": self.ran,
            "violated": len(self.violated),
            "bug": self.bug,
            "wall_time_s": round(self.wall_time_s, 2),
            "scenarios_per_second": round(self.ran / max(self.wall_time_s, 1e-9), 1),
            "violations": [
                {
                    "scenario": run["scenario"],
                    "schedule": run["schedule"],
                    "command": run["command"],
                    "checks": sorted(
                        {str(v["check"]) for v in run["violations"]}  # type: ignore[attr-defined]
                    ),
                }
                for run in self.violated
            ],
        }


def run_twins(
    views: int = 3,
    *,
    start: int = 0,
    limit: int | None = None,
    jobs: int = 1,
    bug: str | None = None,
    progress: Callable[[dict[str, object]], None] | None = None,
) -> TwinsReport:
    """Run the enumeration (or the slice ``start``, ``limit``) in ``jobs`` processes."""
    started = time.perf_counter()
    chosen: Sequence[TwinsScenario] = list(enumerate_scenarios(views, start=start, limit=limit))
    work = [(views, s.index, bug) for s in chosen]
    violated: list[dict[str, object]] = []
    ran = 0

    def collect(run: dict[str, object]) -> None:
        nonlocal ran
        ran += 1
        if not run["ok"]:
            violated.append(run)
        if progress is not None:
            progress(run)

    if jobs <= 1:
        for job in work:
            collect(_run_packed(job))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for run in pool.map(_run_packed, work, chunksize=16):
                collect(run)
    return TwinsReport(
        views=views,
        scenarios=scenario_count(views),
        ran=ran,
        violated=violated,
        wall_time_s=time.perf_counter() - started,
        bug=bug,
    )
