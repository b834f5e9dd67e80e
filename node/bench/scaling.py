"""How consensus traffic grows with the number of validators, from the deterministic simulator.

``scaling_table`` runs ``sims.simulation.run_simulation`` (the real ``Replica`` and apps over a
simulated network) for each validator count with every fault off (no loss, duplication,
reordering, partitions, crashes, clock skew or byzantine behaviour; a fixed 1-5 ms link delay)
and reports messages and bytes per committed block. In the normal case a height costs one
proposal to the ``n - 1`` others, then a prepare and a commit from every validator to every
other: ``(n - 1) + 2 n (n - 1)`` messages, which the table shows next to the measured count.
Bytes include the blocks' transactions (the simulator's own small workload).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from node.jsonvalue import JsonType
from sims.config import SimConfig
from sims.network import DelayDistribution
from sims.simulation import run_simulation

__all__ = ["DEFAULT_VALIDATOR_COUNTS", "ScalingRow", "expected_messages", "scaling_table"]

DEFAULT_VALIDATOR_COUNTS: Final = (4, 7, 10, 16, 31)
# Every fault family off; the link delay is the only thing left and it is small and fixed.
FAULTS_OFF: Final[dict[str, object]] = {
    "loss_percent": 0,
    "duplicate_percent": 0,
    "reorder_percent": 0,
    "partition_percent": 0,
    "crash_percent": 0,
    "clock_skew_ms_max": 0,
    "delay_min_ms": 1,
    "delay_max_ms": 5,
    "delay_distribution": next(iter(DelayDistribution)),
    "behaviours": (),
}


def expected_messages(validators: int) -> int:
    """Normal-case messages per height: proposal, then all-to-all prepare and commit."""
    return (validators - 1) + 2 * validators * (validators - 1)


@dataclass(frozen=True, slots=True)
class ScalingRow:
    """One validator count's figures."""

    validators: int
    committed_blocks: int
    views: int
    messages_per_block: float
    expected_messages_per_block: int
    bytes_per_block: int
    bytes_per_validator_per_block: int
    ok: bool
    command: str

    def to_json(self) -> dict[str, JsonType]:
        """JSON form."""
        return {
            "validators": self.validators,
            "committed_blocks": self.committed_blocks,
            "views": self.views,
            "messages_per_block": self.messages_per_block,
            "expected_messages_per_block": self.expected_messages_per_block,
            "bytes_per_block": self.bytes_per_block,
            "bytes_per_validator_per_block": self.bytes_per_validator_per_block,
            "ok": self.ok,
            "command": self.command,
        }


def scaling_table(
    validator_counts: tuple[int, ...] = DEFAULT_VALIDATOR_COUNTS, *, blocks: int = 20, seed: int = 1
) -> list[ScalingRow]:
    """Simulate ``blocks`` heights for each validator count, faults off."""
    rows = []
    for validators in validator_counts:
        config = SimConfig(seed=seed, validators=validators, blocks=blocks, overrides=FAULTS_OFF)
        result = run_simulation(config)
        summary = result.describe()
        bytes_per_block = int(str(summary["bytes_per_block"]))
        rows.append(
            ScalingRow(
                validators=validators,
                committed_blocks=result.committed_height,
                views=result.views,
                messages_per_block=float(str(summary["messages_per_block"])),
                expected_messages_per_block=expected_messages(validators),
                bytes_per_block=bytes_per_block,
                bytes_per_validator_per_block=bytes_per_block // validators,
                ok=result.ok and result.liveness == "ok",
                command=config.command(),
            )
        )
    return rows
