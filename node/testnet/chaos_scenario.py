"""Chaos scenarios: which nodes to perturb, how and when, from a TOML file or drawn from a seed.

A scenario file (see ``node/testnet/scenarios/*.toml`` for shipped examples)::

    name = "kill-and-pause"      # shown in the report
    validators = 4               # testnet size (1..64)
    duration_s = 24              # load + perturbation phase; every fault is undone by then
    load_tps = 50                # load generator target (0 = no load)
    workload = "membership"      # membership (one app) | demo (all four apps, demo consortium)
    convergence_timeout_s = 120  # after the faults, how long the nodes get to agree
    trust_certified_blocks = false  # every node's [consensus] trust_certified_blocks

    [[perturbation]]
    at_s = 4                     # seconds after the load starts
    node = 1                     # node index (node1)
    kind = "kill"                # kill | pause | restart | disconnect | cut | flap
    duration_s = 5               # down / stopped / cut off this long, then undone

    [[perturbation]]             # link faults need --netns (one namespace per node)
    at_s = 10
    node = 0
    peer = 2                     # the other end of the link
    kind = "cut"
    direction = "node_to_peer"   # both (default) | node_to_peer: only node0's packets dropped
    duration_s = 5

    [[perturbation]]             # validator-set changes, decided by the banks' votes
    at_s = 6
    node = 4                     # add-validator: the new node's index (validators, then on)
    kind = "add-validator"       # add-validator | rotate-key | rotate-node-key
    duration_s = 12              # then the validator is removed again

    [[byzantine]]
    node = 3
    mode = "double_vote"         # double_vote | equivocate (as primary)
    from_height = 3              # active heights, inclusive
    to_height = 1000000

Kinds: ``kill`` is SIGKILL, then a restart after ``duration_s``; ``pause`` is SIGSTOP, then
SIGCONT; ``restart`` is SIGTERM (a clean stop), then a start; ``disconnect`` cuts every peer
link of the node through its testnet-only fault hook (``/admin/faults``), then restores them.
Link kinds act on the network between two nodes in their own namespaces
(``node.testnet.netns``), so they need ``--netns``: ``cut`` cuts the link between ``node`` and
``peer`` (both directions, or with ``direction = "node_to_peer"`` only what ``node`` sends),
then heals it; ``flap`` cuts and heals it in turn, ``period_s`` per cycle (half cut, half
whole), and leaves it whole at the end. One fault per node and one per link at a time.
A byzantine node runs from the start with the misbehaviour configured in its home.

Reconfiguration kinds change the validator set by governance (``node.testnet.reconfig``), one
at a time: ``add-validator`` writes a new node home (index ``node``: the first is
``validators``, the next ``validators + 1``...), starts it, has the banks admit a bank for it
and add its validator; after ``duration_s`` the validator is removed and the node retired.
``rotate-key`` gives validator ``node`` a next key (restarting it so it holds both), has the
banks rotate its key, and after ``duration_s`` makes the new key its only one (another clean
restart). ``rotate-node-key`` has the banks rotate the node's p2p key; after ``duration_s`` the
node restarts with the new key file (until then the chain's allowlists refuse its old key).

``parse_scenario`` validates everything up front and raises ``ScenarioError`` listing every
problem; ``random_scenario`` draws a schedule from a seed (the same seed, the same schedule).
"""

from __future__ import annotations

import itertools
import random
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Final

from node.jsonvalue import JsonType

__all__ = [
    "BYZANTINE_MODES",
    "DIRECTIONS",
    "LINK_KINDS",
    "NODE_KINDS",
    "PERTURBATION_KINDS",
    "RECONFIGURATION_KINDS",
    "WORKLOADS",
    "ByzantineNode",
    "Perturbation",
    "Scenario",
    "ScenarioError",
    "builtin_scenarios",
    "load_scenario",
    "parse_scenario",
    "random_scenario",
]

# Faults of one node process, and faults of the link between two nodes (need --netns).
NODE_KINDS: Final = ("kill", "pause", "restart", "disconnect")
LINK_KINDS: Final = ("cut", "flap")
# Validator-set changes decided on chain (one at a time, never overlapping each other).
RECONFIGURATION_KINDS: Final = ("add-validator", "rotate-key", "rotate-node-key")
PERTURBATION_KINDS: Final = NODE_KINDS + LINK_KINDS + RECONFIGURATION_KINDS
# both: nothing crosses the link; node_to_peer: what the node sends to the peer is dropped.
DIRECTIONS: Final = ("both", "node_to_peer")
# A flap cycle: half cut, half whole. Shorter than the main loop's 0.1 s tick cannot be honoured.
FLAP_PERIOD_S: Final = 2.0
FLAP_PERIOD_S_MIN: Final = 0.4
# The load: membership registrations (``node.testnet.loadgen.LoadGenerator``) or the demo
# consortium's payments, FX, receivables and assets traffic (``DemoLoadGenerator``, all four apps).
WORKLOADS: Final = ("membership", "demo")
BYZANTINE_MODES: Final = ("double_vote", "equivocate")
# A scenario file is a few KiB; refuse anything absurd before parsing it.
SCENARIO_BYTES_MAX: Final = 256 * 1024
# Bounds that keep a run finite and a file's mistakes visible.
VALIDATORS_MAX: Final = 64
DURATION_S_MAX: Final = 24 * 3600.0
PERTURBATIONS_MAX: Final = 10_000
LOAD_TPS_MAX: Final = 100_000.0
# Random schedules: pause between faults and how long each lasts (seconds).
_RANDOM_GAP_S: Final = (1.5, 4.0)
_RANDOM_FAULT_S: Final = (2.0, 6.0)
# Byzantine behaviour in a random schedule starts after the first blocks and never ends.
_RANDOM_BYZANTINE_FROM: Final = 3
_HEIGHT_MAX: Final = 2**63 - 1


class ScenarioError(ValueError):
    """A scenario is malformed; ``problems`` names every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Perturbation:
    """One fault: ``kind`` on node ``node`` (a link kind: on its link with ``peer``) from
    ``at_s`` for ``duration_s`` seconds. ``direction`` and ``period_s`` (a flap's cycle)
    apply to link kinds only."""

    at_s: float
    node: int
    kind: str
    duration_s: float
    peer: int | None = None
    direction: str = "both"
    period_s: float = 0.0

    @property
    def end_s(self) -> float:
        """When the fault is undone (seconds after the load started)."""
        return self.at_s + self.duration_s

    @property
    def is_link(self) -> bool:
        """True for a fault of the link between two nodes (``cut``, ``flap``)."""
        return self.kind in LINK_KINDS

    @property
    def is_reconfiguration(self) -> bool:
        """True for a validator-set change (``add-validator``, ``rotate-key``...)."""
        return self.kind in RECONFIGURATION_KINDS

    @property
    def nodes(self) -> tuple[int, ...]:
        """The nodes the fault touches: its node, and a link fault's peer."""
        return (self.node,) if self.peer is None else (self.node, self.peer)

    def cut_at(self, at_s: float) -> bool:
        """For a link fault: whether the link is cut ``at_s`` seconds after the load started
        (a flap is cut in the first half of each cycle; everything is whole after ``end_s``)."""
        if not self.is_link or not self.at_s <= at_s < self.end_s:
            return False
        if self.kind == "cut":
            return True
        return (at_s - self.at_s) % self.period_s < self.period_s / 2

    def describe(self) -> str:
        """A short text for progress lines: ``kill node1``, ``cut node0->node2``."""
        if self.peer is None:
            return f"{self.kind} node{self.node}"
        arrow = "->" if self.direction == "node_to_peer" else "<->"
        return f"{self.kind} node{self.node}{arrow}node{self.peer}"

    def to_json(self) -> dict[str, JsonType]:
        """JSON form (the report, ``--json``)."""
        document: dict[str, JsonType] = {
            "at_s": self.at_s,
            "node": self.node,
            "kind": self.kind,
            "duration_s": self.duration_s,
        }
        if self.is_link:
            document["peer"] = self.peer
            document["direction"] = self.direction
        if self.kind == "flap":
            document["period_s"] = self.period_s
        return document


@dataclass(frozen=True, slots=True)
class ByzantineNode:
    """A validator started with a byzantine ``mode`` active in [from_height, to_height]."""

    node: int
    mode: str
    from_height: int
    to_height: int

    def to_json(self) -> dict[str, JsonType]:
        """JSON form (the report, ``--json``)."""
        return {
            "node": self.node,
            "mode": self.mode,
            "from_height": self.from_height,
            "to_height": self.to_height,
        }


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole chaos run: testnet size, load, faults and byzantine nodes."""

    name: str
    validators: int
    duration_s: float
    load_tps: float
    perturbations: tuple[Perturbation, ...] = ()
    byzantine: tuple[ByzantineNode, ...] = ()
    convergence_timeout_s: float = 120.0
    seed: int | None = None
    workload: str = "membership"
    # Every node's ``[consensus] trust_certified_blocks``: a node catching up after a fault
    # applies blocks on their commit certificates.
    trust_certified_blocks: bool = False

    @property
    def needs_netns(self) -> bool:
        """True when a perturbation acts on a link (each node must be in its own namespace)."""
        return any(item.is_link for item in self.perturbations)

    @property
    def added_nodes(self) -> int:
        """How many nodes ``add-validator`` perturbations add to the testnet."""
        return sum(1 for item in self.perturbations if item.kind == "add-validator")

    def problems(self) -> list[str]:
        """Everything wrong with this scenario (empty when it can run)."""
        problems = []
        if not 1 <= self.validators <= VALIDATORS_MAX:
            problems.append(f"validators must be 1..{VALIDATORS_MAX}")
        if not 0 < self.duration_s <= DURATION_S_MAX:
            problems.append(f"duration_s must be in (0, {DURATION_S_MAX:.0f}]")
        if not 0 <= self.load_tps <= LOAD_TPS_MAX:
            problems.append(f"load_tps must be in [0, {LOAD_TPS_MAX:.0f}]")
        if self.workload not in WORKLOADS:
            problems.append(f"workload {self.workload!r} is not one of {WORKLOADS}")
        if not 0 < self.convergence_timeout_s <= DURATION_S_MAX:
            problems.append("convergence_timeout_s must be positive")
        if len(self.perturbations) > PERTURBATIONS_MAX:
            problems.append(f"at most {PERTURBATIONS_MAX} perturbations")
        added = self.validators
        for number, item in enumerate(sorted(self.perturbations, key=lambda p: p.at_s), 1):
            where = f"perturbation {number}"
            if item.kind == "add-validator":
                if item.node != added:
                    problems.append(
                        f"{where}: add-validator adds node {added} (the next index), not"
                        f" {item.node}"
                    )
                added += 1
            elif not 0 <= item.node < self.validators:
                problems.append(f"{where}: node {item.node} is not in 0..{self.validators - 1}")
            if item.kind not in PERTURBATION_KINDS:
                problems.append(f"{where}: kind {item.kind!r} is not one of {PERTURBATION_KINDS}")
            if item.at_s < 0 or item.duration_s < 0:
                problems.append(f"{where}: at_s and duration_s must be >= 0")
            if item.end_s > self.duration_s:
                problems.append(
                    f"{where}: ends at {item.end_s:g}s, after duration_s {self.duration_s:g}"
                    " (every fault must be undone before the convergence check)"
                )
            problems.extend(f"{where}: {problem}" for problem in self._link_problems(item))
        changes = sorted(
            (item for item in self.perturbations if item.is_reconfiguration), key=lambda p: p.at_s
        )
        for first, second in itertools.pairwise(changes):
            if second.at_s < first.end_s:
                problems.append(
                    f"validator-set changes at {first.at_s:g}s and {second.at_s:g}s overlap"
                    " (the chain takes one change at a time)"
                )
        by_target: dict[tuple[int, ...], list[Perturbation]] = {}
        for item in self.perturbations:
            target = tuple(sorted(item.nodes)) if item.is_link else (item.node,)
            by_target.setdefault(target, []).append(item)
        for target, items in sorted(by_target.items()):
            items.sort(key=lambda p: p.at_s)
            what = f"node {target[0]}" if len(target) == 1 else f"link {target[0]}-{target[1]}"
            unit = "node" if len(target) == 1 else "link"
            for first, second in itertools.pairwise(items):
                if second.at_s < first.end_s:
                    problems.append(
                        f"{what}: perturbations at {first.at_s:g}s and {second.at_s:g}s"
                        f" overlap (one fault per {unit} at a time)"
                    )
        seen: set[int] = set()
        for byzantine in self.byzantine:
            where = f"byzantine node {byzantine.node}"
            if not 0 <= byzantine.node < self.validators:
                problems.append(f"{where}: not in 0..{self.validators - 1}")
            if byzantine.node in seen:
                problems.append(f"{where}: listed twice")
            seen.add(byzantine.node)
            if byzantine.mode not in BYZANTINE_MODES:
                problems.append(f"{where}: mode {byzantine.mode!r} is not one of {BYZANTINE_MODES}")
            if not 0 <= byzantine.from_height <= byzantine.to_height <= _HEIGHT_MAX:
                problems.append(f"{where}: need 0 <= from_height <= to_height")
        faulty_max = (self.validators - 1) // 3
        if len(self.byzantine) > faulty_max:
            problems.append(
                f"{len(self.byzantine)} byzantine validators, but {self.validators} validators"
                f" tolerate at most {faulty_max}"
            )
        return problems

    def _link_problems(self, item: Perturbation) -> list[str]:
        if not item.is_link:
            extras = [
                name
                for name, present in (
                    ("peer", item.peer is not None),
                    ("direction", item.direction != "both"),
                    ("period_s", item.period_s != 0),
                )
                if present
            ]
            if not extras:
                return []
            verb = "applies" if len(extras) == 1 else "apply"
            return [f"{', '.join(extras)} {verb} only to link faults ({', '.join(LINK_KINDS)})"]
        problems = []
        if item.peer is None:
            problems.append(f"{item.kind} needs peer (the other end of the link)")
        elif not 0 <= item.peer < self.validators:
            problems.append(f"peer {item.peer} is not in 0..{self.validators - 1}")
        elif item.peer == item.node:
            problems.append(f"peer {item.peer} is the node itself; a link joins two nodes")
        if item.direction not in DIRECTIONS:
            problems.append(f"direction {item.direction!r} is not one of {DIRECTIONS}")
        if item.kind == "flap" and not FLAP_PERIOD_S_MIN <= item.period_s <= DURATION_S_MAX:
            problems.append(f"period_s must be at least {FLAP_PERIOD_S_MIN:g}")
        if item.kind == "cut" and item.period_s != 0:
            problems.append("period_s only applies to flap")
        return problems

    def with_overrides(
        self,
        *,
        validators: int | None = None,
        duration_s: float | None = None,
        load_tps: float | None = None,
        workload: str | None = None,
        trust_certified_blocks: bool | None = None,
    ) -> Scenario:
        """A copy with command-line overrides applied (validated again by the caller)."""
        return replace(
            self,
            validators=self.validators if validators is None else validators,
            duration_s=self.duration_s if duration_s is None else duration_s,
            load_tps=self.load_tps if load_tps is None else load_tps,
            workload=self.workload if workload is None else workload,
            trust_certified_blocks=(
                self.trust_certified_blocks
                if trust_certified_blocks is None
                else trust_certified_blocks
            ),
        )

    def to_json(self) -> dict[str, JsonType]:
        """JSON form (the report, ``--json``)."""
        return {
            "name": self.name,
            "validators": self.validators,
            "duration_s": self.duration_s,
            "load_tps": self.load_tps,
            "workload": self.workload,
            "trust_certified_blocks": self.trust_certified_blocks,
            "convergence_timeout_s": self.convergence_timeout_s,
            "seed": self.seed,
            "perturbations": [item.to_json() for item in self.perturbations],
            "byzantine": [item.to_json() for item in self.byzantine],
        }


def _number(
    table: dict[str, object], key: str, default: float | None, problems: list[str]
) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{key} must be a number" if key in table else f"{key} is missing")
        return 0.0
    return float(value)


def _integer(table: dict[str, object], key: str, default: int | None, problems: list[str]) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{key} must be an integer" if key in table else f"{key} is missing")
        return 0
    return value


def _unknown(table: dict[str, object], known: set[str], where: str, problems: list[str]) -> None:
    names = ", ".join(sorted(known))
    problems.extend(
        f"{where}: unknown key {key!r} (known: {names})" for key in sorted(set(table) - known)
    )


def _tables(document: dict[str, object], key: str, problems: list[str]) -> list[dict[str, object]]:
    value = document.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        problems.append(f"{key} must be written as [[{key}]] tables")
        return []
    return value


def parse_scenario(text: str, source: str = "scenario") -> Scenario:
    """Parse and validate scenario TOML; raise ``ScenarioError`` naming every problem."""
    if len(text.encode("utf-8")) > SCENARIO_BYTES_MAX:
        raise ScenarioError(source, [f"larger than {SCENARIO_BYTES_MAX} bytes"])
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(source, [f"not valid TOML: {error}"]) from None
    problems: list[str] = []
    _unknown(
        document,
        {
            "name",
            "validators",
            "duration_s",
            "load_tps",
            "workload",
            "convergence_timeout_s",
            "trust_certified_blocks",
            "perturbation",
            "byzantine",
        },
        "top level",
        problems,
    )
    workload = document.get("workload", "membership")
    if not isinstance(workload, str):
        problems.append("workload must be a string")
        workload = ""
    trust = document.get("trust_certified_blocks", False)
    if not isinstance(trust, bool):
        problems.append("trust_certified_blocks must be true or false")
        trust = False
    name = document.get("name", Path(source).stem)
    if not isinstance(name, str):
        problems.append("name must be a string")
        name = source
    perturbations = []
    for number, table in enumerate(_tables(document, "perturbation", problems), 1):
        where = f"perturbation {number}"
        local: list[str] = []
        _unknown(
            table,
            {"at_s", "node", "kind", "duration_s", "peer", "direction", "period_s"},
            where,
            local,
        )
        kind = table.get("kind")
        if not isinstance(kind, str):
            local.append("kind must be a string")
            kind = ""
        direction = table.get("direction", "both")
        if not isinstance(direction, str):
            local.append("direction must be a string")
            direction = "both"
        item = Perturbation(
            _number(table, "at_s", None, local),
            _integer(table, "node", None, local),
            kind,
            _number(table, "duration_s", None, local),
            peer=_integer(table, "peer", None, local) if "peer" in table else None,
            direction=direction,
            period_s=_number(table, "period_s", FLAP_PERIOD_S if kind == "flap" else 0.0, local),
        )
        problems.extend(f"{where}: {p}" if not p.startswith(where) else p for p in local)
        perturbations.append(item)
    byzantine = []
    for table in _tables(document, "byzantine", problems):
        local = []
        _unknown(table, {"node", "mode", "from_height", "to_height"}, "byzantine", local)
        mode = table.get("mode")
        if not isinstance(mode, str):
            local.append("mode must be a string")
            mode = ""
        byzantine.append(
            ByzantineNode(
                _integer(table, "node", None, local),
                mode,
                _integer(table, "from_height", 1, local),
                _integer(table, "to_height", _HEIGHT_MAX, local),
            )
        )
        problems.extend(f"byzantine: {p}" if not p.startswith("byzantine") else p for p in local)
    scenario = Scenario(
        name=name,
        validators=_integer(document, "validators", 4, problems),
        duration_s=_number(document, "duration_s", None, problems),
        load_tps=_number(document, "load_tps", 0, problems),
        perturbations=tuple(perturbations),
        byzantine=tuple(byzantine),
        convergence_timeout_s=_number(document, "convergence_timeout_s", 120, problems),
        workload=workload,
        trust_certified_blocks=trust,
    )
    if not problems:
        problems = scenario.problems()
    if problems:
        raise ScenarioError(source, problems)
    return scenario


def builtin_scenarios() -> dict[str, str]:
    """The shipped example scenarios (``node/testnet/scenarios/*.toml``): name -> TOML text."""
    folder = resources.files("node.testnet") / "scenarios"
    return {
        entry.name.removesuffix(".toml"): entry.read_text("utf-8")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".toml")
    }


def load_scenario(name_or_path: str) -> Scenario:
    """A scenario from a file path, or a shipped one by name (``kill-and-pause``)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ScenarioError(name_or_path, [f"cannot read: {error.strerror}"]) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ScenarioError(name_or_path, ["not UTF-8 text"]) from None
        return parse_scenario(text, name_or_path)
    shipped = builtin_scenarios()
    if name_or_path not in shipped:
        raise ScenarioError(
            name_or_path,
            [f"no such file, and not a shipped scenario ({', '.join(shipped)})"],
        )
    return parse_scenario(shipped[name_or_path], name_or_path)


def random_scenario(
    seed: int,
    *,
    validators: int = 4,
    duration_s: float = 60.0,
    load_tps: float = 100.0,
    byzantine: bool = True,
    workload: str = "membership",
    links: bool = False,
) -> Scenario:
    """A schedule drawn from ``seed``: one fault at a time, each on a random node, of a random
    kind and length, with pauses between; with ``byzantine`` and at least 4 validators, half
    the seeds also make one validator a double voter or an equivocating primary. With
    ``links`` (a netns testnet) the kinds include link cuts and flaps, between the node and a
    random other node, in a random direction."""
    rng = random.Random(seed)
    byzantine_nodes: tuple[ByzantineNode, ...] = ()
    if byzantine and (validators - 1) // 3 >= 1 and rng.random() < 0.5:
        byzantine_nodes = (
            ByzantineNode(
                rng.randrange(validators),
                rng.choice(BYZANTINE_MODES),
                _RANDOM_BYZANTINE_FROM,
                _HEIGHT_MAX,
            ),
        )
    kinds = NODE_KINDS + LINK_KINDS if links and validators > 1 else NODE_KINDS
    perturbations = []
    at_s = rng.uniform(*_RANDOM_GAP_S)
    while True:
        length = round(rng.uniform(*_RANDOM_FAULT_S), 1)
        if at_s + length > duration_s - 1:
            break
        node, kind = rng.randrange(validators), rng.choice(kinds)
        item = Perturbation(round(at_s, 1), node, kind, length)
        if kind in LINK_KINDS:
            item = replace(
                item,
                peer=rng.choice([other for other in range(validators) if other != node]),
                direction=rng.choice(DIRECTIONS),
                period_s=FLAP_PERIOD_S if kind == "flap" else 0.0,
            )
        perturbations.append(item)
        at_s = round(at_s + length + rng.uniform(*_RANDOM_GAP_S), 1)
    scenario = Scenario(
        name=f"random-{seed}",
        validators=validators,
        duration_s=duration_s,
        load_tps=load_tps,
        perturbations=tuple(perturbations),
        byzantine=byzantine_nodes,
        seed=seed,
        workload=workload,
    )
    problems = scenario.problems()
    if problems:
        raise ScenarioError(scenario.name, problems)
    return scenario
