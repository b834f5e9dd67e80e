"""The chaos checker: what must hold after a chaos run, as a pure function of what was observed.

``check_run`` takes, per node, the chain it serves at the end (block hash, parent hash, app
hash, commit view and transaction hashes per height), the blocks its API served *during* the
run, its equivocation evidence, plus the byzantine injections and the height every node had
to reach. It returns every ``Violation``; an empty list means the run was clean. It does no
I/O, so a test can feed it fabricated, divergent observations and see it fail (the positive
control), and the orchestrator (``node.testnet.chaos``) only gathers data.

Checks (the ``check`` name of a violation):

``unreachable``            a node's final state could not be read through its API
``convergence``            a node did not reach the target height once the faults stopped
                           (a *retired* node, whose validator governance removed, need not)
``chain_links``            a node's chain has a gap, or a block whose parent hash is not the
                           previous block's hash (the genesis hash for height 1)
``agreement``              two nodes hold different blocks or app hashes at a common height
``durability``             a block a node's API served during the run is gone or different
                           at the end (a committed block lost across kill -9 / restart)
``acknowledged_missing``   a transaction some node reported committed during the run is not
                           in every node's final chain
``duplicate_transaction``  a transaction hash occurs twice in one chain
``honest_accused``         evidence names a validator that was not configured byzantine
``evidence_invalid``       evidence whose two signatures do not verify as a real conflict
``evidence_unexplained``   evidence against a byzantine validator for a (height, view, kind)
                           it never injected a conflict at
``evidence_missing``       an honest node holds no evidence against a byzantine validator
                           that did inject conflicting statements

``check_cuts`` checks the harness itself on a netns testnet, from the packet counters of each
cut link (``cut_leaked``): while a link was cut, no packet crossed it in a cut direction.
Without it a cut that silently did nothing would pass every other check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from node.jsonvalue import JsonType

__all__ = [
    "BlockRecord",
    "CutRecord",
    "EvidenceRecord",
    "InjectionRecord",
    "NodeObservation",
    "Violation",
    "check_cuts",
    "check_run",
]

# One broken invariant can repeat at every height; report the first few of each per node pair.
_REPEATS_REPORTED_MAX: Final = 5


@dataclass(frozen=True, slots=True)
class BlockRecord:
    """One committed block as a node's API serves it."""

    height: int
    hash: str
    parent_hash: str
    app_hash: str  # state after the previous block (the header field)
    view: int  # the view its commit certificate was gathered in (> 0: a view change)
    transaction_hashes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    """One piece of equivocation evidence a node recorded."""

    validator: int
    height: int
    view: int
    kind: str  # "proposal", "prepare" or "commit"
    valid: bool  # both signatures verify and the statements really conflict


@dataclass(frozen=True, slots=True)
class InjectionRecord:
    """A conflicting statement a byzantine validator signed and sent on purpose."""

    validator: int
    height: int
    view: int
    kind: str


@dataclass(frozen=True, slots=True)
class CutRecord:
    """A link cut and what crossed it meanwhile: packets ``peer`` received from ``node`` and
    ``node`` from ``peer`` between the cut and the heal. ``one_way``: only ``node`` to
    ``peer`` was cut."""

    node: int
    peer: int
    one_way: bool
    node_to_peer_packets: int
    peer_to_node_packets: int


@dataclass(frozen=True, slots=True)
class NodeObservation:
    """Everything observed of one node."""

    index: int
    honest: bool
    reachable: bool
    height: int
    blocks: Mapping[int, BlockRecord] = field(default_factory=dict)
    served_during_run: Mapping[int, str] = field(default_factory=dict)
    evidence: tuple[EvidenceRecord, ...] = ()
    # Transactions it applied on their block's commit certificate without checking their
    # signatures (``transactions_trusted`` in its status: ``trust_certified_blocks``).
    transactions_trusted: int = 0


@dataclass(frozen=True, slots=True)
class Violation:
    """A broken invariant: which check, and what exactly."""

    check: str
    detail: str

    def to_json(self) -> dict[str, JsonType]:
        """JSON form for the report."""
        return {"check": self.check, "detail": self.detail}


def check_run(
    nodes: Sequence[NodeObservation],
    *,
    target_height: int,
    genesis_hash: str,
    acknowledged: Mapping[str, tuple[int, int]],
    injections: Sequence[InjectionRecord],
    retired: frozenset[int] = frozenset(),
) -> list[Violation]:
    """Every violation in one run. ``acknowledged``: transaction hash -> (node, height) where a
    node's API first reported it committed; ``injections``: every conflict a byzantine validator
    sent; ``target_height``: the height every node had to reach after the faults stopped;
    ``retired``: nodes that left the validator set during the run (read when they left: their
    chains must agree with everyone's, but they need not reach the target or hold every
    transaction acknowledged after they left)."""
    violations: list[Violation] = []
    readable = [node for node in nodes if node.reachable]
    for node in nodes:
        if not node.reachable:
            violations.append(Violation("unreachable", f"node{node.index}: final state unreadable"))
        elif node.height < target_height and node.index not in retired:
            violations.append(
                Violation(
                    "convergence",
                    f"node{node.index} is at height {node.height}, below the target"
                    f" {target_height} every node had to reach after the faults stopped",
                )
            )
    for node in readable:
        violations.extend(_chain_links(node, genesis_hash))
        violations.extend(_durability(node))
        violations.extend(_duplicates(node))
    violations.extend(_agreement(readable))
    violations.extend(_acknowledged([n for n in readable if n.index not in retired], acknowledged))
    violations.extend(_evidence(readable, injections))
    return violations


def _chain_links(node: NodeObservation, genesis_hash: str) -> list[Violation]:
    problems = []
    for height in range(1, node.height + 1):
        block = node.blocks.get(height)
        if block is None:
            problems.append(f"node{node.index} has no block at height {height}")
            continue
        previous = node.blocks.get(height - 1)
        expected = genesis_hash if height == 1 else (previous.hash if previous else None)
        if expected is not None and block.parent_hash != expected:
            problems.append(
                f"node{node.index} block {height} has parent {block.parent_hash[:16]}, expected"
                f" {expected[:16]}"
            )
    return [Violation("chain_links", detail) for detail in problems[:_REPEATS_REPORTED_MAX]]


def _durability(node: NodeObservation) -> list[Violation]:
    problems = []
    for height, block_hash in sorted(node.served_during_run.items()):
        final = node.blocks.get(height)
        if final is None:
            problems.append(
                f"node{node.index} served block {height} ({block_hash[:16]}) during the run but"
                f" no longer has it (final height {node.height}): a committed block was lost"
            )
        elif final.hash != block_hash:
            problems.append(
                f"node{node.index} served block {height} as {block_hash[:16]} during the run and"
                f" as {final.hash[:16]} at the end: a committed block changed"
            )
    return [Violation("durability", detail) for detail in problems[:_REPEATS_REPORTED_MAX]]


def _duplicates(node: NodeObservation) -> list[Violation]:
    where: dict[str, int] = {}
    problems = []
    for height in sorted(node.blocks):
        for tx_hash in node.blocks[height].transaction_hashes:
            if tx_hash in where:
                problems.append(
                    f"node{node.index}: transaction {tx_hash[:16]} committed at heights"
                    f" {where[tx_hash]} and {height}"
                )
            where.setdefault(tx_hash, height)
    return [
        Violation("duplicate_transaction", detail) for detail in problems[:_REPEATS_REPORTED_MAX]
    ]


def _agreement(nodes: Sequence[NodeObservation]) -> list[Violation]:
    if len(nodes) < 2:
        return []
    # The longest chain is the reference; each node is compared with it on the heights both
    # hold (a retired node stopped early, and must not shorten everyone's comparison).
    reference = max(nodes, key=lambda node: (node.height, -node.index))
    violations: list[Violation] = []
    for other in nodes:
        if other is reference:
            continue
        problems = []
        common = min(reference.height, other.height)
        for height in range(1, common + 1):
            ours, theirs = reference.blocks.get(height), other.blocks.get(height)
            if ours is None or theirs is None:
                continue  # reported as a chain gap
            if ours.hash != theirs.hash:
                problems.append(
                    f"node{reference.index} and node{other.index} committed different blocks at"
                    f" height {height} ({ours.hash[:16]} vs {theirs.hash[:16]})"
                )
            if ours.app_hash != theirs.app_hash:
                problems.append(
                    f"node{reference.index} and node{other.index} have different app hashes"
                    f" after height {height - 1} ({ours.app_hash[:16]} vs {theirs.app_hash[:16]})"
                )
        violations.extend(
            Violation("agreement", detail) for detail in problems[:_REPEATS_REPORTED_MAX]
        )
    return violations


def _acknowledged(
    nodes: Sequence[NodeObservation], acknowledged: Mapping[str, tuple[int, int]]
) -> list[Violation]:
    violations = []
    for node in nodes:
        present = {
            tx_hash for block in node.blocks.values() for tx_hash in block.transaction_hashes
        }
        missing = sorted(set(acknowledged) - present)
        if missing:
            examples = ", ".join(
                f"{tx_hash[:16]} (committed on node{acknowledged[tx_hash][0]} at height"
                f" {acknowledged[tx_hash][1]})"
                for tx_hash in missing[:3]
            )
            violations.append(
                Violation(
                    "acknowledged_missing",
                    f"node{node.index} lacks {len(missing)} transaction(s) acknowledged as"
                    f" committed during the run, e.g. {examples}",
                )
            )
    return violations


def _evidence(
    nodes: Sequence[NodeObservation], injections: Sequence[InjectionRecord]
) -> list[Violation]:
    violations = []
    byzantine = {node.index for node in nodes if not node.honest}
    injected = {(item.validator, item.height, item.view, item.kind) for item in injections}
    for node in nodes:
        for evidence in node.evidence:
            where = (
                f"node{node.index} holds evidence against validator {evidence.validator}"
                f" ({evidence.kind} at height {evidence.height}, view {evidence.view})"
            )
            if not evidence.valid:
                violations.append(Violation("evidence_invalid", f"{where} that does not verify"))
            if evidence.validator not in byzantine:
                violations.append(Violation("honest_accused", f"{where}, an honest validator"))
            elif (
                evidence.validator,
                evidence.height,
                evidence.view,
                evidence.kind,
            ) not in injected:
                violations.append(
                    Violation("evidence_unexplained", f"{where}, where it injected nothing")
                )
    for validator in sorted({item.validator for item in injections}):
        count = sum(1 for item in injections if item.validator == validator)
        violations.extend(
            Violation(
                "evidence_missing",
                f"honest node{node.index} recorded no evidence against byzantine"
                f" validator {validator}, which injected {count} conflicting statement(s)",
            )
            for node in nodes
            if node.honest and not any(e.validator == validator for e in node.evidence)
        )
    return violations


def check_cuts(cuts: Sequence[CutRecord]) -> list[Violation]:
    """A ``cut_leaked`` violation for every cut direction some packet still crossed."""
    violations: list[Violation] = []
    for cut in cuts:
        crossed = [(cut.node, cut.peer, cut.node_to_peer_packets)]
        if not cut.one_way:
            crossed.append((cut.peer, cut.node, cut.peer_to_node_packets))
        violations.extend(
            Violation(
                "cut_leaked",
                f"{packets} packet(s) went from node{sender} to node{receiver} while that"
                " direction of their link was cut",
            )
            for sender, receiver, packets in crossed
            if packets
        )
    return violations
