"""What a simulation run is asked to do (``SimConfig``) and what it reports (``SimResult``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from sims.checkers import CHECKS, Violation
from sims.faults import Behaviour
from sims.network import DelayDistribution, PartitionKind

__all__ = [
    "BLOCKS_MAX",
    "DEFAULT_WORKLOAD",
    "VALIDATORS_MAX",
    "WORKLOADS",
    "ConfigError",
    "SimConfig",
    "SimResult",
]

# A simulation is many replicas in one process; beyond a few dozen it is a benchmark, not a test.
VALIDATORS_MAX: Final = 31
# Heights per run: sweeps want many short runs; long soaks are many seeds, not one huge run.
BLOCKS_MAX: Final = 10_000
# Client workloads: the demo consortium's business traffic over all four apps (default), or
# the membership-only register_identity workload the simulator started with.
WORKLOADS: Final = ("demo", "membership")
DEFAULT_WORKLOAD: Final = "demo"

# Override names and the command-line flag that sets each (reproducing commands use these).
OVERRIDE_FLAGS: Final[Mapping[str, str]] = {
    "loss_percent": "--loss",
    "duplicate_percent": "--duplicate",
    "delay_min_ms": "--delay-min",
    "delay_max_ms": "--delay-max",
    "delay_distribution": "--delay-distribution",
    "reorder_percent": "--reorder",
    "partition_percent": "--partitions",
    "partition_kinds": "--partition-kind",
    "partition_duration_ms_max": "--partition-duration",
    "crash_percent": "--crashes",
    "restart_delay_ms_max": "--restart-delay",
    "clock_skew_ms_max": "--clock-skew",
    "behaviours": "--behaviour",
}


class ConfigError(ValueError):
    """A simulation was asked for something impossible (names the argument)."""


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One run's arguments. Fault parameters not in ``overrides`` are drawn from the seed."""

    seed: int
    validators: int = 4
    byzantine: int = 0
    blocks: int = 5
    bug: str | None = None
    twins: bool = False
    overrides: Mapping[str, object] = field(default_factory=dict)
    workload: str = DEFAULT_WORKLOAD
    # The byzantine validators are driven by the adversary (``sims/adversary.py``) instead of
    # one fixed behaviour each.
    adversary: bool = False
    # The validator set changes during the run, decided on chain by the banks' votes: joins,
    # leaves and key rotations (``sims/reconfiguration.py``).
    reconfigure: bool = False
    # Run ``bug``'s scenario (faults, byzantine validators, attack, reconfiguration) with the
    # bug itself switched off: the control that shows the checkers pass the scenario alone.
    bug_off: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**64:
            raise ConfigError("seed must be in [0, 2**64)")
        if not 1 <= self.validators <= VALIDATORS_MAX:
            raise ConfigError(f"validators must be 1..{VALIDATORS_MAX}")
        if not 0 <= self.byzantine <= self.validators:
            raise ConfigError("byzantine must be 0..validators")
        if self.twins and self.byzantine < 1:
            raise ConfigError("twins need at least one byzantine validator to duplicate")
        if self.bug_off and self.bug is None:
            raise ConfigError("--bug-off needs --bug (the scenario to run without its bug)")
        if self.reconfigure and self.twins:
            raise ConfigError("reconfiguration and twins are not run together")
        if self.adversary and self.byzantine < 1:
            raise ConfigError("the adversary needs at least one byzantine validator (--byzantine)")
        if self.adversary and self.twins:
            raise ConfigError("the adversary and twins are separate ways to run byzantine nodes")
        if not 1 <= self.blocks <= BLOCKS_MAX:
            raise ConfigError(f"blocks must be 1..{BLOCKS_MAX}")
        if self.workload not in WORKLOADS:
            raise ConfigError(f"workload must be one of {', '.join(WORKLOADS)}")
        unknown = sorted(set(self.overrides) - set(OVERRIDE_FLAGS))
        if unknown:
            raise ConfigError(f"unknown fault overrides: {', '.join(unknown)}")

    def command(self) -> str:
        """The exact ``suanpan sim`` command line that reproduces this run."""
        parts = [
            "suanpan sim",
            f"--seed {self.seed}",
            f"--validators {self.validators}",
            f"--byzantine {self.byzantine}",
            f"--blocks {self.blocks}",
        ]
        if self.twins:
            parts.append("--twins")
        if self.adversary:
            parts.append("--adversary")
        if self.reconfigure:
            parts.append("--reconfigure")
        if self.bug is not None:
            parts.append(f"--bug {self.bug}")
        if self.bug_off:
            parts.append("--bug-off")
        if self.workload != DEFAULT_WORKLOAD:
            parts.append(f"--workload {self.workload}")
        for name in sorted(self.overrides):
            value = self.overrides[name]
            flag = OVERRIDE_FLAGS[name]
            if isinstance(value, tuple):
                parts.extend(f"{flag} {_flag_value(item)}" for item in value)
            elif value is not None:
                parts.append(f"{flag} {_flag_value(value)}")
        return " ".join(parts)


def _flag_value(value: object) -> str:
    if isinstance(value, DelayDistribution | PartitionKind | Behaviour):
        return str(value.value)
    return str(value)


@dataclass(slots=True)
class SimResult:
    """Everything a run reports. ``ok`` is false on any violation."""

    config: SimConfig
    committed_height: int
    views: int
    messages_sent: int
    messages_delivered: int
    bytes_delivered: int
    faults: dict[str, int]
    parameters: dict[str, object]
    checks_run: int
    violations: list[Violation]
    liveness: str  # "ok", "failed", or "not-checked" (a run that is over-faulty by design)
    trace_digest: str
    sim_time_ms: int
    wall_time_s: float
    transactions_submitted: int
    transactions_acknowledged: int
    receipts_ok: int  # committed transactions the apps accepted (first commit of each height)
    rejections: dict[str, int]  # committed transactions the apps rejected, by code
    events: int
    safety_claimed: bool  # False when the run exceeds the fault threshold (f+1 twins)
    # Coverage: replica drops at honest nodes by reason, and adversary moves by kind.
    drops: dict[str, int] = field(default_factory=dict)
    moves: dict[str, int] = field(default_factory=dict)
    # Honest commits whose replica vouched the next block's app hash (checked: ``sync_hint``).
    sync_hints_checked: int = 0

    @property
    def ok(self) -> bool:
        """True when no invariant was violated."""
        return not self.violations

    def describe(self) -> dict[str, object]:
        """The JSON summary (one object)."""
        blocks = max(1, self.committed_height)
        return {
            "seed": self.config.seed,
            "validators": self.config.validators,
            "byzantine": self.config.byzantine,
            "twins": self.config.twins,
            "adversary": self.config.adversary,
            "reconfigure": self.config.reconfigure,
            "bug": self.config.bug,
            "blocks_target": self.config.blocks,
            "committed_height": self.committed_height,
            "views": self.views,
            "messages": self.messages_sent,
            "messages_delivered": self.messages_delivered,
            "bytes_delivered": self.bytes_delivered,
            "messages_per_block": round(self.messages_sent / blocks, 1),
            "bytes_per_block": self.bytes_delivered // blocks,
            "faults": dict(sorted(self.faults.items())),
            "parameters": self.parameters,
            "checks": list(CHECKS),
            "checks_run": self.checks_run,
            "sync_hints_checked": self.sync_hints_checked,
            "violations": [v.describe() for v in self.violations],
            "liveness": self.liveness,
            "safety_claimed": self.safety_claimed,
            "trace_digest": self.trace_digest,
            "sim_time_ms": self.sim_time_ms,
            "wall_time_s": round(self.wall_time_s, 3),
            "sim_to_wall_ratio": round(self.sim_time_ms / 1000 / max(self.wall_time_s, 1e-9), 1),
            "transactions_submitted": self.transactions_submitted,
            "transactions_acknowledged": self.transactions_acknowledged,
            "workload": self.config.workload,
            "receipts_ok": self.receipts_ok,
            "receipts_rejected": sum(self.rejections.values()),
            "rejections": dict(sorted(self.rejections.items())),
            "events": self.events,
            "drops": dict(sorted(self.drops.items())),
            "moves": dict(sorted(self.moves.items())),
            "ok": self.ok,
            "command": self.config.command(),
        }
