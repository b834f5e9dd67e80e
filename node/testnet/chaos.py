"""Chaos on a real testnet: perturb node processes under load, then check nothing broke.

Theory of operation
-------------------
``run_chaos`` generates a testnet (``node.testnet.testnet.create_testnet``) whose homes carry
``[testnet] fault_hooks = true`` (and, for byzantine nodes, ``[testnet] byzantine``), starts one
process per node, waits for every API, then starts the load generator (``node.testnet.loadgen``) and
one *watcher* thread per node. Time 0 of the scenario is the start of the load.

With ``netns`` every node runs in its own Linux network namespace, one veth pair per node
pair (``node.testnet.netns.Topology``, built before the homes are written and removed in the
same ``finally`` that stops the processes), and the scenario may also act on links.

The main loop polls every ``_POLL_S`` and applies each perturbation of the scenario when its
time comes and undoes it ``duration_s`` later: ``kill`` (SIGKILL, then start), ``pause``
(SIGSTOP, then SIGCONT), ``restart`` (SIGTERM and wait for a clean exit, then start),
``disconnect`` (``POST /admin/faults/disconnect``, then ``/restore``), ``cut`` (the link
between two namespaces, both ways or one way, then healed) and ``flap`` (cut and healed in
turn on every tick where its phase changes, healed at the end). When a fault is undone it
records the highest height the other nodes (all but the node, or both ends of the link) have
reached; the node (both ends, for a link) has *recovered* when its own committed height
reaches that target, and the time it took is its recovery time. The highest height when the
fault was applied is kept too, so the report shows whether the chain kept committing while the
fault lasted.

Each watcher follows its node's ``/blocks`` long poll and remembers every block the node's API
served (hash per height) and every transaction in them: those transactions were acknowledged
as committed by a node, so they must end up on every node, and those blocks must still be
there, unchanged, at the end (a kill -9 must not lose or change a committed block).

Validator-set changes (``add-validator``, ``rotate-key``, ``rotate-node-key``) are decided by
the banks' governance keys through the API (``node.testnet.reconfig``) while the load runs; the
run blocks on each decision (a few blocks). An added node gets a watcher like the others; once
its validator is removed again and the removal is in force, its chain is read, its process
stopped and the node counted as *retired*: it is audited and checked like every node, except
that it need not reach the final height. An added node has recovered once it votes (its status
says ``validator``) at the height its validator took effect. Evidence is verified against the
validator set of its height, as the chain (node0's ``validators`` query) says.

When the schedule is over (every fault undone), the load stops and the run waits, polling
with a deadline, until every node reaches the highest height any node had then. It reads each
node's whole chain and evidence through the API, reads the byzantine injections from the
byzantine nodes' logs (``byzantine_injected`` events survive restarts), stops the processes
(each must exit 0 on SIGTERM), runs the offline audit (``node.audit.audit.audit_home``: hash links,
certificates, indexes, replay of every block) on every stopped node's store, and hands the
rest to ``node.testnet.chaos_check.check_run``. Nothing synchronises by sleeping: every wait polls a
condition under a generous deadline.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from consensus.evidence import Evidence, EvidenceError, verify_evidence
from consensus.types import Validator, ValidatorSet
from node.audit.audit import audit_home
from node.client.client import ApiError, Client
from node.config import NodeConfig, parse_config
from node.genesis import load_genesis
from node.home import CONFIG_FILE, GENESIS_FILE, write_config
from node.jsonvalue import JsonType
from node.testnet.chaos_check import (
    BlockRecord,
    CutRecord,
    EvidenceRecord,
    InjectionRecord,
    NodeObservation,
    Violation,
    check_cuts,
    check_run,
)
from node.testnet.chaos_scenario import Perturbation, Scenario
from node.testnet.loadgen import DemoLoadGenerator, LoadGenerator
from node.testnet.netns import NetnsError, Topology, netns_unavailable_reason
from node.testnet.reconfig import (
    Decision,
    Governance,
    GovernanceError,
    add_node,
    add_validator,
    finish_node_key_rotation,
    finish_rotation,
    mark_role,
    prepare_node_key_rotation,
    prepare_rotation,
    remove_validator,
    rotate_node_key,
    rotate_validator_key,
    wait_for_height,
)
from node.testnet.testnet import Testnet, TestnetInfo, create_testnet

__all__ = ["ChaosReport", "FaultOutcome", "run_chaos"]

# Nodes get this long to start (import, open LMDB, bind) before the run is abandoned.
STARTUP_TIMEOUT_S: Final = 120.0
# Main-loop polling interval: the timing resolution of perturbations and recovery times.
_POLL_S: Final = 0.1
# A watcher's long poll for the next block, and its client timeout (a paused node hangs).
_WATCH_WAIT_MS: Final = 1000
_WATCH_CLIENT_TIMEOUT_S: Final = 5.0
# A watcher retries an unreachable node this often.
_WATCH_RETRY_S: Final = 0.3
# Blocks per /blocks page (the API's own maximum).
_BLOCKS_PAGE: Final = 100
# The demo consortium's key seed when the workload is "demo" (any fixed value will do).
_DEMO_SEED: Final = 1
# Admin and final-read requests: generous, the machine is busy.
_CLIENT_TIMEOUT_S: Final = 30.0
# After the load stops, how long convergence also waits for every node's mempool to empty (a
# pending transaction is resent after 3 s, then commits in the next blocks).
_DRAIN_S: Final = 15.0


@dataclass(slots=True)
class FaultOutcome:
    """What happened to one perturbation (times in seconds after the load started)."""

    perturbation: Perturbation
    applied_at_s: float | None = None
    applied_height: int | None = None
    undone_at_s: float | None = None
    target_height: int | None = None
    recovered_at_s: float | None = None
    error: str = ""
    link_cut: bool = False  # a link fault's current state
    toggles: int = 0  # times a link fault cut or healed its link
    # A cut: each end's received-packet counter on the link when cut, and the cut's record.
    packets_at_cut: tuple[int, int] | None = None
    cut_record: CutRecord | None = None
    # A validator-set change: the governance decisions it made (apply, then undo).
    decisions: list[Decision] = field(default_factory=list)

    @property
    def recovery_s(self) -> float | None:
        """Seconds from undoing the fault until the node reached the others' height (for
        ``add-validator``: from the change until the new node voted)."""
        start = self.applied_at_s if self.perturbation.kind == "add-validator" else self.undone_at_s
        if self.recovered_at_s is None or start is None:
            return None
        return round(self.recovered_at_s - start, 2)

    def to_json(self) -> dict[str, JsonType]:
        """JSON form for the report."""
        document = self.perturbation.to_json()
        document.update(
            {
                "applied_at_s": _round(self.applied_at_s),
                "height_at_apply": self.applied_height,
                "undone_at_s": _round(self.undone_at_s),
                "target_height": self.target_height,
                "recovery_s": self.recovery_s,
                "error": self.error,
            }
        )
        if self.perturbation.kind == "flap":
            document["toggles"] = self.toggles
        if self.decisions:
            document["decisions"] = [decision.to_json() for decision in self.decisions]
        if self.cut_record is not None:
            document["packets_while_cut"] = {
                "node_to_peer": self.cut_record.node_to_peer_packets,
                "peer_to_node": self.cut_record.peer_to_node_packets,
            }
        return document


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass(slots=True)
class ChaosReport:
    """The outcome of one chaos run."""

    scenario: Scenario
    directory: Path
    faults: list[FaultOutcome]
    nodes: list[NodeObservation]
    target_height: int
    convergence_s: float | None
    view_changes: list[tuple[int, int]]
    acknowledged: int
    injections: list[InjectionRecord]
    load: dict[str, JsonType]
    violations: list[Violation]
    elapsed_s: float
    exit_codes: list[int | None] = field(default_factory=list)
    audits: dict[str, JsonType] = field(default_factory=dict)
    netns: dict[str, JsonType] | None = None  # prefix, namespaces, what was left behind
    retired: frozenset[int] = frozenset()  # added nodes whose validator was removed again

    @property
    def ok(self) -> bool:
        """True when no invariant was violated."""
        return not self.violations

    def to_json(self) -> dict[str, JsonType]:
        """The one JSON object ``--json`` prints."""
        honest_nodes = [node for node in self.nodes if node.honest]
        byzantine: list[JsonType] = []
        for item in self.scenario.byzantine:
            injected = [i for i in self.injections if i.validator == item.node]
            reported_by: list[JsonType] = [
                node.index
                for node in honest_nodes
                if any(e.validator == item.node for e in node.evidence)
            ]
            byzantine.append(
                {**item.to_json(), "injections": len(injected), "reported_by": reported_by}
            )
        return {
            "ok": self.ok,
            "scenario": self.scenario.to_json(),
            "directory": str(self.directory),
            "elapsed_s": round(self.elapsed_s, 1),
            "perturbations": [fault.to_json() for fault in self.faults],
            "target_height": self.target_height,
            "convergence_s": _round(self.convergence_s),
            "heights": {f"node{node.index}": node.height for node in self.nodes},
            "retired": [f"node{index}" for index in sorted(self.retired)],
            "common_height": min(
                (n.height for n in self.nodes if n.reachable and n.index not in self.retired),
                default=0,
            ),
            "view_changes": {
                "count": len(self.view_changes),
                "blocks": [[height, view] for height, view in self.view_changes],
            },
            "transactions": {
                "acknowledged": self.acknowledged,
                "committed": _committed(self.nodes),
            },
            "load": self.load,
            "byzantine": byzantine,
            "evidence": {
                f"node{node.index}": len(node.evidence) for node in self.nodes if node.reachable
            },
            "transactions_trusted": {
                f"node{node.index}": node.transactions_trusted
                for node in self.nodes
                if node.reachable
            },
            "exit_codes": list(self.exit_codes),
            "audit": dict(self.audits),
            "netns": self.netns,
            "violations": [violation.to_json() for violation in self.violations],
        }


def _committed(nodes: list[NodeObservation]) -> int:
    for node in nodes:
        if node.reachable:
            return sum(len(block.transaction_hashes) for block in node.blocks.values())
    return 0


# --------------------------------------------------------------------------- API documents


def _int(value: JsonType) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _str(value: JsonType) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _block_record(document: JsonType) -> BlockRecord:
    """A ``/blocks`` entry as a ``BlockRecord``; ``ValueError`` when malformed."""
    if not isinstance(document, dict):
        raise ValueError("block document is not an object")
    header = document.get("header")
    certificate = document.get("certificate")
    hashes = document.get("transaction_hashes")
    if not isinstance(header, dict) or not isinstance(certificate, dict):
        raise ValueError("block document lacks header or certificate")
    if not isinstance(hashes, list):
        raise ValueError("block document lacks transaction_hashes")
    return BlockRecord(
        height=_int(document.get("height")),
        hash=_str(document.get("hash")),
        parent_hash=_str(header.get("parent_hash")),
        app_hash=_str(header.get("app_hash")),
        view=_int(certificate.get("view")),
        transaction_hashes=tuple(_str(item) for item in hashes),
    )


# --------------------------------------------------------------------------- watchers


class _Watcher:
    """Follows one node's committed blocks through its API on a thread."""

    def __init__(self, index: int, address: str, stop: threading.Event) -> None:
        self.index = index
        self._client = Client(address, timeout_s=_WATCH_CLIENT_TIMEOUT_S)
        self._stop = stop
        self._lock = threading.Lock()
        self._height = 0
        self.served: dict[int, str] = {}
        self.acknowledged: dict[str, tuple[int, int]] = {}
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name=f"watch-node{index}", daemon=True)

    @property
    def height(self) -> int:
        """The node's committed height, as last reported."""
        with self._lock:
            return self._height

    def start(self) -> None:
        """Start following."""
        self._thread.start()

    def join(self) -> None:
        """Wait for the thread (after the stop event is set)."""
        self._thread.join(timeout=_WATCH_CLIENT_TIMEOUT_S * 3)
        self._client.close()

    def _run(self) -> None:
        next_height = 1
        while not self._stop.is_set():
            try:
                document = self._client.blocks(
                    next_height, timeout_ms=_WATCH_WAIT_MS, limit=_BLOCKS_PAGE
                )
                height = _int(document.get("height"))
                blocks = document.get("blocks")
                records = [
                    _block_record(item) for item in (blocks if isinstance(blocks, list) else [])
                ]
            except (ApiError, ValueError):
                self.errors += 1
                self._stop.wait(_WATCH_RETRY_S)
                continue
            with self._lock:
                self._height = height
                for record in records:
                    self.served[record.height] = record.hash
                    for tx_hash in record.transaction_hashes:
                        self.acknowledged.setdefault(tx_hash, (self.index, record.height))
                    next_height = max(next_height, record.height + 1)


# --------------------------------------------------------------------------- the run


class _Run:
    """One chaos run's mutable state: the testnet, its threads and the fault outcomes."""

    def __init__(
        self,
        scenario: Scenario,
        info: TestnetInfo,
        progress: Callable[[str], None],
        topology: Topology | None = None,
    ) -> None:
        self.scenario = scenario
        self.info = info
        self.progress = progress
        self.topology = topology
        prefixes = [topology.command_prefix(i) for i in range(len(info.homes))] if topology else []
        self.testnet = Testnet(info, prefixes)
        self.faults = [
            FaultOutcome(item) for item in sorted(scenario.perturbations, key=lambda p: p.at_s)
        ]
        self.paused: set[int] = set()
        self.harness_violations: list[Violation] = []
        self.stop_watching = threading.Event()
        self.watchers: list[_Watcher] = []
        self.load: LoadGenerator | DemoLoadGenerator | None = None
        self.started = time.monotonic()
        self._governance: Governance | None = None
        # Retired nodes (added, then removed again): their chain as read when they retired.
        self.retired: dict[int, NodeObservation] = {}
        # A validator that became one by an add-validator change: (fault, effective height).
        self.joining: dict[int, tuple[FaultOutcome, int]] = {}
        self._validator_sets: dict[int, ValidatorSet] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        self.progress(f"[{self.elapsed():7.1f}s] {text}")

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.testnet.start_all()
        self.testnet.wait_serving(STARTUP_TIMEOUT_S)
        self.watchers = [
            _Watcher(i, address, self.stop_watching)
            for i, address in enumerate(self.info.api_addresses)
        ]
        for watcher in self.watchers:
            watcher.start()
        consortium = self.info.consortium()
        if self.scenario.load_tps > 0 and consortium is not None:
            self.load = DemoLoadGenerator(
                consortium,
                self.info.api_addresses,
                self.scenario.load_tps,
                reader=self.info.reader_key(),
            )
            self.load.start()
        elif self.scenario.load_tps > 0:
            senders = [
                (self.info.client_key(i), self.info.institutions[i], self.info.api_addresses[i])
                for i in range(len(self.info.clients))
            ]
            self.load = LoadGenerator(self.info.chain_id, senders, self.scenario.load_tps)
            self.load.start()
        self.started = time.monotonic()
        self.say(
            f"{len(self.info.homes)} nodes up, {self.scenario.workload} load"
            f" {self.scenario.load_tps:g} tx/s,"
            f" {len(self.faults)} perturbation(s) over {self.scenario.duration_s:g}s"
        )

    def cleanup(self) -> list[int | None]:
        """Resume paused nodes, stop load and watchers, stop every process (exit codes)."""
        for index in sorted(self.paused):
            self._signal(index, signal.SIGCONT)
        self.paused.clear()
        if self.load is not None:
            self.load.stop()
            self.load = None
        self.stop_watching.set()
        for watcher in self.watchers:
            watcher.join()
        return self.testnet.stop_all()

    # ----------------------------------------------------------------- faults

    def _signal(self, index: int, number: signal.Signals) -> None:
        process = self.testnet.processes[index]
        if process is not None and process.poll() is None:
            process.send_signal(number)

    def _admin(self, index: int, action: str) -> None:
        with Client(self.info.api_addresses[index], timeout_s=_CLIENT_TIMEOUT_S) as client:
            status, body = client.request_raw("POST", f"/admin/faults/{action}", b"{}")
        if status != 200:
            raise ApiError(status, body.decode("utf-8", "replace")[:200])

    def _heights_max(self) -> int:
        return max((watcher.height for watcher in self.watchers), default=0)

    def _set_link(self, fault: FaultOutcome, cut: bool) -> None:
        """Cut or heal a link fault's link (``NetnsError`` when ``ip`` fails)."""
        item = fault.perturbation
        assert self.topology is not None, "link faults run on a netns testnet"
        assert item.peer is not None, "a link fault names its peer"
        if cut == fault.link_cut:
            return
        one_way = item.direction == "node_to_peer"
        counted = item.kind == "cut"  # a flap's short phases are not worth two reads each
        if cut:
            self.topology.cut(item.node, item.peer, one_way=one_way)
            if counted:
                fault.packets_at_cut = self._received(item.node, item.peer)
        else:
            if counted and fault.packets_at_cut is not None:
                at_node, at_peer = self._received(item.node, item.peer)
                fault.cut_record = CutRecord(
                    item.node,
                    item.peer,
                    one_way,
                    node_to_peer_packets=at_peer - fault.packets_at_cut[1],
                    peer_to_node_packets=at_node - fault.packets_at_cut[0],
                )
            self.topology.heal(item.node, item.peer)
        fault.link_cut = cut
        fault.toggles += 1

    def _received(self, node: int, peer: int) -> tuple[int, int]:
        """Packets ``node`` and ``peer`` have received on their link so far."""
        assert self.topology is not None, "link faults run on a netns testnet"
        return (
            self.topology.received_packets(node, peer),
            self.topology.received_packets(peer, node),
        )

    def flap(self, fault: FaultOutcome) -> None:
        """Bring a running flap's link to the state its phase asks for now."""
        try:
            self._set_link(fault, fault.perturbation.cut_at(self.elapsed()))
        except NetnsError as error:
            fault.error = f"could not flap: {error}"
            self.harness_violations.append(
                Violation("perturbation_failed", f"{fault.perturbation.describe()}: {error}")
            )

    # ----------------------------------------------------------------- validator-set changes

    def governance(self) -> Governance:
        if self._governance is None:
            self._governance = Governance(self.info, say=self.say)
        return self._governance

    def _adopt(self, info: TestnetInfo) -> None:
        """Run ``info`` (the testnet grown by a node, or a role changed)."""
        self.info = info
        for index in self.testnet.adopt(info):
            watcher = _Watcher(index, info.api_addresses[index], self.stop_watching)
            self.watchers.append(watcher)
            watcher.start()

    def _restart_clean(self, index: int, why: str) -> None:
        code = self.testnet.stop(index)
        if code != 0:
            self.harness_violations.append(
                Violation("unclean_stop", f"node{index} exited with code {code} on SIGTERM ({why})")
            )
        self.testnet.start(index)
        self.testnet.wait_until(
            f"node{index} serving after {why}",
            lambda: self.testnet.serving(index),
            STARTUP_TIMEOUT_S,
        )

    def _reconfigure(self, fault: FaultOutcome) -> None:
        """Apply a validator-set change (see the module doc)."""
        item = fault.perturbation
        if item.kind == "add-validator":
            info, index = add_node(self.info)
            assert index == item.node, "scenarios add nodes in order"
            self._adopt(info)
            self.testnet.start(index)
            info, decision = add_validator(self.info, index, self.governance())
            self._adopt(info)
            self.joining[index] = (fault, decision.effective_height)
        elif item.kind == "rotate-key":
            key = prepare_rotation(self.info, item.node)
            self._restart_clean(item.node, "loading its next key")
            decision = rotate_validator_key(self.info, item.node, self.governance(), key)
        else:
            node_key = prepare_node_key_rotation(self.info, item.node)
            decision = rotate_node_key(self.info, item.node, self.governance(), node_key)
        fault.decisions.append(decision)

    def _reconfigure_back(self, fault: FaultOutcome) -> None:
        """Undo (or finish) a validator-set change (see the module doc)."""
        item = fault.perturbation
        if item.kind == "add-validator":
            decision = remove_validator(self.info, item.node, self.governance())
            fault.decisions.append(decision)
            others = [i for i in range(len(self.watchers)) if i != item.node]
            with self.testnet.client(others[0], timeout_s=_CLIENT_TIMEOUT_S) as client:
                wait_for_height(client, decision.effective_height)
            self.check_recoveries()
            self.retired[item.node] = self.observe(item.node, self._validators_at, True)
            code = self.testnet.stop(item.node)
            if code != 0:
                self.harness_violations.append(
                    Violation(
                        "unclean_stop", f"node{item.node} exited with code {code} on retiring"
                    )
                )
            self._adopt(mark_role(self.info, item.node, "retired"))
            self.say(
                f"node{item.node} retired (its validator left at height"
                f" {decision.effective_height})"
            )
        elif item.kind == "rotate-key":
            effective = fault.decisions[0].effective_height
            # The retired key goes only once the node itself has passed the height the new one
            # is in force from (as `keys rotate --finish` says): a node still behind it (slow
            # to restart on a busy machine) has votes signed with the old key on its disk.
            with self.testnet.client(item.node, timeout_s=_CLIENT_TIMEOUT_S) as client:
                wait_for_height(client, effective)
            finish_rotation(self.info, item.node)
            self._restart_clean(item.node, "dropping its retired key")
            # With only its new key, the node is a validator exactly when the chain switched
            # to that key and the node signs with it.
            with self.testnet.client(item.node, timeout_s=_CLIENT_TIMEOUT_S) as client:
                wait_for_height(client, effective)
                role = client.status().get("role")
            if role != "validator":
                self.harness_violations.append(
                    Violation(
                        "reconfiguration",
                        f"node{item.node} holds only its rotated key and is {role!r}, not a"
                        f" validator, past height {effective}",
                    )
                )
        else:
            code = self.testnet.stop(item.node)
            if code != 0:
                self.harness_violations.append(
                    Violation("unclean_stop", f"node{item.node} exited with code {code} on SIGTERM")
                )
            finish_node_key_rotation(self.info, item.node)
            self.testnet.start(item.node)

    def check_joined(self) -> None:
        """An added validator has recovered once it votes at or after its first height."""
        for index, (fault, effective) in list(self.joining.items()):
            if self.watchers[index].height < effective:
                continue
            try:
                with self.testnet.client(index, timeout_s=_CLIENT_TIMEOUT_S) as client:
                    role = client.status().get("role")
            except ApiError:
                continue
            if role == "validator":
                del self.joining[index]
                fault.recovered_at_s = self.elapsed()
                self.say(f"node{index} votes from height {effective}")

    def _validators_at(self, height: int) -> ValidatorSet:
        """The validator set of ``height``, as the chain says (node0's ``validators`` query)."""
        cached = self._validator_sets.get(height)
        if cached is not None:
            return cached
        with self.testnet.client(0, timeout_s=_CLIENT_TIMEOUT_S) as client:
            answer = client.query_app("membership", "validators", height=max(1, height))
        records = answer.get("validators") if isinstance(answer, dict) else None
        members = []
        for record in records if isinstance(records, list | tuple) else ():
            if not isinstance(record, dict):
                raise ValueError("a validator record is not an object")
            name, public_key, node_key = (record.get(k) for k in ("name", "public_key", "node_key"))
            if not (
                isinstance(name, str)
                and isinstance(public_key, bytes)
                and isinstance(node_key, bytes)
            ):
                raise ValueError(f"malformed validator record {record!r}")
            members.append(Validator(name, public_key, node_key or None))
        validators = ValidatorSet(tuple(members))
        self._validator_sets[height] = validators
        return validators

    def apply(self, fault: FaultOutcome) -> None:
        item = fault.perturbation
        fault.applied_at_s = self.elapsed()
        fault.applied_height = self._heights_max()
        self.say(f"{item.describe()} for {item.duration_s:g}s")
        if item.is_reconfiguration:
            try:
                self._reconfigure(fault)
            except (GovernanceError, ApiError, TimeoutError, RuntimeError, ValueError) as error:
                fault.error = f"could not apply: {error}"
                self.harness_violations.append(
                    Violation("perturbation_failed", f"{item.describe()}: {error}")
                )
            return
        if item.is_link:
            try:
                self._set_link(fault, True)
            except NetnsError as error:
                fault.error = f"could not apply: {error}"
                self.harness_violations.append(
                    Violation("perturbation_failed", f"{item.describe()}: {error}")
                )
            return
        try:
            if item.kind == "kill":
                self.testnet.stop(item.node, kill=True)
            elif item.kind == "pause":
                self._signal(item.node, signal.SIGSTOP)
                self.paused.add(item.node)
            elif item.kind == "restart":
                code = self.testnet.stop(item.node)
                if code != 0:
                    self.harness_violations.append(
                        Violation(
                            "unclean_stop",
                            f"node{item.node} exited with code {code} on SIGTERM (restart)",
                        )
                    )
            elif item.kind == "disconnect":
                self._admin(item.node, "disconnect")
        except ApiError as error:
            fault.error = f"could not apply: {error}"
            self.harness_violations.append(
                Violation("perturbation_failed", f"{item.kind} node{item.node}: {error}")
            )

    def undo(self, fault: FaultOutcome) -> None:
        item = fault.perturbation
        others = [
            w.height
            for w in self.watchers
            if w.index not in item.nodes and w.index not in self.retired
        ]
        fault.target_height = max(others, default=0)
        fault.undone_at_s = self.elapsed()
        if item.is_reconfiguration:
            try:
                self._reconfigure_back(fault)
            except (GovernanceError, ApiError, TimeoutError, RuntimeError, ValueError) as error:
                fault.error = f"could not undo: {error}"
                self.harness_violations.append(
                    Violation("perturbation_failed", f"undo {item.describe()}: {error}")
                )
            self.say(f"undo {item.describe()}; catch up to height {fault.target_height}")
            return
        if item.is_link:
            try:
                self._set_link(fault, False)
            except NetnsError as error:
                fault.error = f"could not heal: {error}"
                self.harness_violations.append(
                    Violation("perturbation_failed", f"heal {item.describe()}: {error}")
                )
            self.say(
                f"heal {item.describe()}; both ends catch up to height {fault.target_height}"
                f" (height {fault.applied_height} when cut)"
            )
            return
        try:
            if item.kind in ("kill", "restart"):
                self.testnet.start(item.node)
            elif item.kind == "pause":
                self._signal(item.node, signal.SIGCONT)
                self.paused.discard(item.node)
            elif item.kind == "disconnect":
                self._admin(item.node, "restore")
        except ApiError as error:
            fault.error = f"could not undo: {error}"
            self.harness_violations.append(
                Violation("perturbation_failed", f"undo {item.kind} node{item.node}: {error}")
            )
        self.say(f"undo {item.kind} node{item.node}; catch up to height {fault.target_height}")

    def check_recoveries(self) -> None:
        for fault in self.faults:
            nodes = fault.perturbation.nodes
            if fault.perturbation.kind == "add-validator":
                continue  # recovered when it votes (``check_joined``)
            if (
                fault.undone_at_s is not None
                and fault.recovered_at_s is None
                and fault.target_height is not None
                and all(self.watchers[node].height >= fault.target_height for node in nodes)
            ):
                fault.recovered_at_s = self.elapsed()
                self.say(
                    f"{' and '.join(f'node{node}' for node in nodes)} caught up"
                    f" (height {fault.target_height}) in {fault.recovery_s:.1f}s"
                )

    def check_deaths(self, reported: set[int]) -> None:
        for index in self.testnet.died():
            if index not in reported:
                reported.add(index)
                process = self.testnet.processes[index]
                code = None if process is None else process.returncode
                self.harness_violations.append(
                    Violation("node_died", f"node{index} exited by itself (code {code})")
                )
                self.say(f"node{index} DIED (exit code {code})")

    def run_schedule(self) -> None:
        deaths: set[int] = set()
        pending_apply = list(self.faults)
        pending_undo: list[FaultOutcome] = []
        while True:
            now = self.elapsed()
            while pending_apply and pending_apply[0].perturbation.at_s <= now:
                fault = pending_apply.pop(0)
                self.apply(fault)
                pending_undo.append(fault)
            for fault in [f for f in pending_undo if f.perturbation.end_s <= now]:
                pending_undo.remove(fault)
                self.undo(fault)
            for fault in pending_undo:
                if fault.perturbation.kind == "flap" and not fault.error:
                    self.flap(fault)
            self.check_recoveries()
            self.check_joined()
            self.check_deaths(deaths)
            if not pending_apply and not pending_undo and now >= self.scenario.duration_s:
                return
            time.sleep(_POLL_S)  # the schedule's clock tick, not a synchronisation

    def converge(self) -> tuple[int, float | None]:
        """Stop the load; wait until every node reaches the highest height any node has. The
        target follows the chain while the last submitted transactions commit, so a node
        that lags behind blocks committed after the load stopped is waited for too; and
        while any node still holds pending transactions (for up to ``_DRAIN_S``), the chain
        is not taken as settled: a node resends its clients' pending transactions, which
        may commit after a quiet moment, and every node must hold those blocks too."""
        if self.load is not None:
            self.load.stop()
        running = [watcher for watcher in self.watchers if watcher.index not in self.retired]
        target = max(watcher.height for watcher in running)
        self.say(f"faults over; waiting for every node to reach height {target}")
        began = time.monotonic()
        deadline = began + self.scenario.convergence_timeout_s
        drain_deadline = began + _DRAIN_S
        while time.monotonic() < deadline:
            self.check_recoveries()
            if all(watcher.height >= target for watcher in running):
                highest = max(watcher.height for watcher in running)
                if highest == target and (
                    time.monotonic() >= drain_deadline or not self._pending(running)
                ):
                    elapsed = time.monotonic() - began
                    self.say(f"converged in {elapsed:.1f}s")
                    return target, elapsed
                target = highest
            time.sleep(_POLL_S)
        self.say("did not converge before the deadline")
        return target, None

    def _pending(self, running: list[_Watcher]) -> bool:
        """Whether any running node reports transactions in its mempool (or does not answer)."""
        for watcher in running:
            try:
                with Client(
                    self.info.api_addresses[watcher.index], timeout_s=_WATCH_CLIENT_TIMEOUT_S
                ) as client:
                    pending = client.status().get("mempool_transactions")
                    if not isinstance(pending, int) or pending > 0:
                        return True
            except ApiError:
                return True
        return False

    # ----------------------------------------------------------------- final reads

    def observe(
        self, index: int, validators: Callable[[int], ValidatorSet], honest: bool
    ) -> NodeObservation:
        watcher = self.watchers[index]
        try:
            with Client(self.info.api_addresses[index], timeout_s=_CLIENT_TIMEOUT_S) as client:
                status = client.status()
                height = _int(status.get("height"))
                trusted = _int(status.get("transactions_trusted", 0))
                blocks: dict[int, BlockRecord] = {}
                start = 1
                while start <= height:
                    page = client.blocks(start, limit=_BLOCKS_PAGE).get("blocks")
                    records = [
                        _block_record(item) for item in (page if isinstance(page, list) else [])
                    ]
                    if not records:
                        break
                    blocks.update((record.height, record) for record in records)
                    start = records[-1].height + 1
                evidence = tuple(
                    _evidence_record(item, validators, self.info.chain_id)
                    for item in client.evidence()
                )
        except (ApiError, ValueError) as error:
            self.say(f"cannot read node{index}: {error}")
            return NodeObservation(index, honest, False, 0, served_during_run=dict(watcher.served))
        return NodeObservation(
            index,
            honest,
            True,
            height,
            blocks,
            dict(watcher.served),
            evidence,
            transactions_trusted=trusted,
        )

    def injections(self) -> list[InjectionRecord]:
        records = []
        for item in self.scenario.byzantine:
            log_path = self.info.homes[item.node] / "node.log"
            try:
                lines = log_path.read_text("utf-8", errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                if '"byzantine_injected"' not in line:
                    continue
                try:
                    event = json.loads(line)
                    records.append(
                        InjectionRecord(
                            item.node,
                            _int(event["height"]),
                            _int(event["view"]),
                            _str(event["kind"]),
                        )
                    )
                except (ValueError, KeyError, TypeError):
                    continue
        return records


def _evidence_record(
    document: JsonType, validators: Callable[[int], ValidatorSet], chain_id: str
) -> EvidenceRecord:
    if not isinstance(document, dict):
        raise ValueError("evidence entry is not an object")
    valid = True
    try:
        evidence = Evidence.decode(bytes.fromhex(_str(document.get("encoded"))))
        verify_evidence(evidence, validators(evidence.height), chain_id)
    except (EvidenceError, ValueError):
        valid = False
    return EvidenceRecord(
        validator=_int(document.get("validator")),
        height=_int(document.get("height")),
        view=_int(document.get("view")),
        kind=_str(document.get("kind")),
        valid=valid,
    )


def _configure_byzantine(info: TestnetInfo, scenario: Scenario) -> None:
    for item in scenario.byzantine:
        home = info.homes[item.node]
        config, problems = parse_config((home / CONFIG_FILE).read_bytes())
        assert config is not None, problems  # we generated it a moment ago
        write_config(
            home,
            config.with_changes(
                "testnet",
                byzantine=item.mode,
                byzantine_from_height=item.from_height,
                byzantine_to_height=item.to_height,
            ),
        )


def run_chaos(
    scenario: Scenario,
    directory: Path,
    *,
    netns: bool = False,
    progress: Callable[[str], None] = lambda _line: None,
) -> ChaosReport:
    """Run ``scenario`` on a new testnet in ``directory`` and check it; see the module doc.
    ``netns``: every node in its own network namespace (root only; link faults need it).
    ``progress`` receives one line per event (perturbations, recoveries, convergence).
    Raises ``ValueError`` for a scenario that cannot run, ``NetnsError`` when the namespaces
    cannot be built."""
    problems = scenario.problems()
    if problems:
        raise ValueError("; ".join(problems))
    if scenario.needs_netns and not netns:
        raise ValueError(
            f"scenario {scenario.name!r} cuts links between nodes (cut/flap): that needs each"
            " node in its own network namespace (--netns)"
        )
    if netns:
        reason = netns_unavailable_reason()
        if reason is not None:
            raise NetnsError(f"--netns is not possible here: {reason}")
    began = time.monotonic()
    topology = Topology(scenario.validators) if netns else None
    if topology is not None:
        topology.create()
        progress(
            f"network namespaces {topology.namespace(0)}..{scenario.validators - 1},"
            f" {scenario.validators * (scenario.validators - 1) // 2} peer links"
        )
    try:
        return _run_chaos(scenario, directory, topology, progress, began)
    finally:
        if topology is not None:
            topology.close()


def _run_chaos(
    scenario: Scenario,
    directory: Path,
    topology: Topology | None,
    progress: Callable[[str], None],
    began: float,
) -> ChaosReport:
    base = (
        NodeConfig()
        .with_changes("testnet", fault_hooks=True)
        .with_changes("consensus", trust_certified_blocks=scenario.trust_certified_blocks)
    )
    info = create_testnet(
        directory,
        scenario.validators,
        chain_id="suanpan-chaos",
        config=base,
        demo_seed=_DEMO_SEED if scenario.workload == "demo" else None,
        layout=None if topology is None else topology.layout(),
    )
    _configure_byzantine(info, scenario)
    genesis = load_genesis(directory / GENESIS_FILE)
    run = _Run(scenario, info, progress, topology)
    target, convergence_s = 0, None
    byzantine = {item.node for item in scenario.byzantine}
    nodes: list[NodeObservation] = []
    load_document: dict[str, JsonType] = {}
    try:
        run.start()
        run.run_schedule()
        target, convergence_s = run.converge()
        if run.load is not None:
            load_document = run.load.to_json()
        run.stop_watching.set()
        for watcher in run.watchers:
            watcher.join()
        nodes = [
            run.retired[index]
            if index in run.retired
            else run.observe(index, run._validators_at, index not in byzantine)
            for index in range(len(run.info.homes))
        ]
    except (TimeoutError, RuntimeError) as error:
        run.harness_violations.append(Violation("startup", str(error)))
    finally:
        exit_codes = run.cleanup()
    netns_document: dict[str, JsonType] | None = None
    if topology is not None:
        problems = topology.close()
        left = topology.leftovers()
        netns_document = {
            "prefix": topology.prefix,
            "namespaces": list(topology.namespaces),
            "left_behind": list(left),
        }
        run.harness_violations.extend(
            Violation("netns_cleanup", problem) for problem in [*problems, *left]
        )
    for index, code in enumerate(exit_codes):
        died = any(
            v.check == "node_died" and v.detail.startswith(f"node{index} ")
            for v in run.harness_violations
        )
        if code not in (0, None) and not died:
            run.harness_violations.append(
                Violation("unclean_stop", f"node{index} exited with code {code} on SIGTERM")
            )
    acknowledged: dict[str, tuple[int, int]] = {}
    for watcher in run.watchers:
        for tx_hash, where in watcher.acknowledged.items():
            acknowledged.setdefault(tx_hash, where)
    injections = run.injections()
    violations = list(run.harness_violations)
    audits: dict[str, JsonType] = {}
    if nodes:
        run.say("auditing every node's store offline (suanpan audit)")
        for index, home in enumerate(run.info.homes):
            audit = audit_home(home)
            audits[f"node{index}"] = {
                "ok": audit.ok,
                "heights_checked": audit.heights_checked,
                "seconds": round(audit.elapsed_seconds, 2),
            }
            if audit.failure is not None:
                violations.append(Violation("audit", f"node{index}: {audit.failure}"))
    violations += check_cuts([f.cut_record for f in run.faults if f.cut_record is not None])
    if nodes:
        violations += check_run(
            nodes,
            target_height=target,
            genesis_hash=genesis.hash.hex(),
            acknowledged=acknowledged,
            injections=injections,
            retired=frozenset(run.retired),
        )
    for fault in run.faults:
        if fault.undone_at_s is not None and fault.recovered_at_s is None and not fault.error:
            violations.append(
                Violation(
                    "not_recovered",
                    f"{' or '.join(f'node{node}' for node in fault.perturbation.nodes)} never"
                    f" reached height {fault.target_height} after {fault.perturbation.describe()}"
                    " was undone",
                )
            )
    reference = next((node for node in nodes if node.reachable), None)
    view_changes = (
        [(h, b.view) for h, b in sorted(reference.blocks.items()) if b.view > 0]
        if reference is not None
        else []
    )
    return ChaosReport(
        scenario=scenario,
        directory=directory,
        faults=run.faults,
        nodes=nodes,
        target_height=target,
        convergence_s=convergence_s,
        view_changes=view_changes,
        acknowledged=len(acknowledged),
        injections=injections,
        load=load_document,
        violations=violations,
        elapsed_s=time.monotonic() - began,
        exit_codes=exit_codes,
        audits=audits,
        netns=netns_document,
        retired=frozenset(run.retired),
    )
