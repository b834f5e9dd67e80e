"""One simulation run: a cluster of real replicas under seeded faults, checked continuously.

Theory of operation
-------------------
Everything random in a run comes from ``random.Random`` instances derived from the seed by
name (parameters, network, faults, workload, each node, each adversary), so adding a draw in
one place never shifts another's stream. The run has two phases:

1. **Faults.** Swarm-drawn fault parameters (``FaultParameters.draw``, pinned by overrides)
   drive the network (loss, duplication, delay, reordering), partitions that start and heal,
   crashes and restarts, clock skew, and the byzantine validators: each with one fixed
   behaviour, or all of them driven by the adversary (``--adversary``, ``sims/adversary.py``),
   which sees every message sent and makes a move every few milliseconds. The clients submit
   transactions throughout. The phase ends when ``blocks`` heights are committed, at the first
   terminal violation (agreement, chain, app state, durability: see ``TERMINAL_CHECKS``), or at
   a time cap. Other violations are recorded and the run goes on.
2. **Liveness.** Faults stop: partitions heal, crashed nodes restart, the links stop losing,
   duplicating and reordering (delays stay), and the adversary stops (its validators fall
   silent). A new height must commit within a bounded number of views of the highest view in
   progress, and every honest node must then reach it (through block sync if need be).
   Byzantine validators with a fixed behaviour keep misbehaving. Liveness is only promised,
   and only checked, when at most f validators are byzantine.

With ``reconfigure`` the validator set changes while the faults run: the banks' governance
votes add spare nodes as validators, remove validators and rotate their keys
(``sims/reconfiguration.py``), decided on chain exactly as on a node; the simulation follows
the canonical chain's schedule (the set of each height) and checks certificates and quorums of
every height against the set of that height.

The apps are the real ones: with the default ``demo`` workload all four (membership,
payments, scf, assets) from the demo consortium's genesis (``apps.demo.demo_consortium``,
keyed by the seed), driven by the consortium's own traffic; with ``membership``, the
membership app alone. Receipts of each height's first honest commit are counted (accepted,
and rejected by code): the apps' rules reject a few transactions normally; many rejections
mean the workload reached the apps out of order.

Safety is checked at every commit and every honest signature by ``InvariantChecker``; at the
end, every honest node's disk is checked for every acknowledged transaction.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from apps.assets import AssetsApp
from apps.base import App
from apps.demo import demo_consortium
from apps.host import AppHost
from apps.membership import MembershipApp
from apps.payments import PaymentsApp
from apps.scf import ScfApp
from apps.state import MemoryBackend
from consensus.codec import encode
from consensus.crypto import PrivateKey, hash_bytes
from consensus.messages import MessageError, NewView, Proposal, ViewChange, decode_message
from consensus.replica import ChainTip, Dropped, PlantedBug, ReplicaConfig
from consensus.types import (
    Block,
    CommitCertificate,
    Validator,
    ValidatorSchedule,
    ValidatorSet,
    Vote,
)
from sims.adversary import Adversary, AdversaryParameters
from sims.bugs import BUGS
from sims.byzantine import ByzantineDriver, Misbehaviour
from sims.checkers import InvariantChecker
from sims.config import ConfigError, SimConfig, SimResult
from sims.faults import FAULT_TICK_MS, Behaviour, FaultParameters
from sims.loop import EventLoop
from sims.network import Partition, PartitionKind, SimNetwork
from sims.node import DRIVER_BUGS, CommittedEntry, NodeEnvironment, SimNode, signed_statements
from sims.reconfiguration import (
    SPARE_NODES,
    Change,
    Reconfiguration,
    forge_with_retired_keys,
    node_key,
    with_governors,
)
from sims.workload import CLIENTS, ClientWorkload, DemoWorkload, Workload, membership_genesis

__all__ = ["CHAIN_ID", "Simulation", "run_simulation"]

CHAIN_ID: Final = "suanpan-sim"
# Simulated wall-clock time of the first event (the genesis block is 10 s older, so clock
# skew can never put a node's first proposal before genesis).
GENESIS_TIME_MS: Final = 1_700_000_000_000
# Replica timing for the simulator: the same logic as a node, with shorter timeouts so a run
# of a few seconds of simulated time covers several view changes.
SIM_REPLICA_CONFIG: Final = ReplicaConfig(
    view_timeout_base_ms=500,
    view_timeout_max_ms=8_000,
    sync_delay_ms=200,
    sync_retry_ms=500,
)
# How often clients get a chance to submit.
WORKLOAD_TICK_MS: Final = 50
# Phase 1 time cap: a clean run commits a height every few tens of ms; a heavily faulted seed
# gets this much simulated time per requested height before phase 2 starts anyway.
PHASE1_MS_PER_BLOCK: Final = 2_000
PHASE1_MS_MIN: Final = 4_000
# With reconfiguration, the fault phase lasts until this many changes were decided (or its time
# cap, extended by this per change): a run sees the set change under faults, not only once.
CHANGES_MIN: Final = 3
PHASE1_MS_PER_CHANGE: Final = 1_500
# Liveness: after faults stop, a new height must commit within this many views beyond the
# highest view in progress (a byzantine or just-restarted primary may waste a view each).
LIVENESS_EXTRA_VIEWS: Final = 3
# Slack on top of the view timeouts: sync, execution, and the last message delays.
LIVENESS_SLACK_MS: Final = 3_000
# After the new height commits, every honest node must reach it within this time.
CATCH_UP_MS: Final = 10_000


# Decoded views of messages seen by a per-view partition schedule (each is decoded once).
VIEW_CACHE_MAX: Final = 4_096


class PartitionSchedule(Protocol):
    """Which validators are twinned, and which links each view's partition cuts (Twins)."""

    @property
    def twins(self) -> tuple[int, ...]:
        """The twinned validators (their second copies are node ids n, n+1, ...)."""
        ...

    def blocked(self, view: int, source: int, destination: int) -> bool:
        """True when a message of ``view`` (at any height) from node ``source`` to node
        ``destination`` is cut."""
        ...


def message_view(data: bytes) -> int:
    """The view a consensus message belongs to, or -1 for block sync and undecodable bytes."""
    try:
        message = decode_message(data)
    except MessageError:
        return -1
    if isinstance(message, Vote | Proposal | ViewChange | NewView):
        return message.view
    return -1


def demo_apps() -> list[App]:
    """The four business apps the demo workload runs."""
    return [MembershipApp(), PaymentsApp(), ScfApp(), AssetsApp()]


def membership_apps() -> list[App]:
    """The membership app alone (the ``membership`` workload)."""
    return [MembershipApp()]


def validator_key(index: int) -> PrivateKey:
    """The deterministic key of simulated validator ``index``."""
    return PrivateKey(hash_bytes(f"suanpan/sim/validator/{index}".encode()))


@dataclass(slots=True)
class _Counters:
    crashes: int = 0
    restarts: int = 0
    partitions: int = 0
    evidence: int = 0


class Simulation:
    """Builds the cluster for ``config`` and runs it (``run``)."""

    def __init__(self, config: SimConfig, *, schedule: PartitionSchedule | None = None) -> None:
        self.config = config
        if schedule is not None and not config.twins:
            raise ConfigError("a per-view partition schedule is for twins runs")
        self.schedule = schedule
        seed = config.seed
        self.loop = EventLoop()
        bug = BUGS.get(config.bug) if config.bug is not None else None
        if config.bug is not None and bug is None:
            raise ConfigError(f"unknown planted bug {config.bug!r}")
        self.bug = bug
        n = config.validators
        byzantine = config.byzantine
        if bug is not None and bug.byzantine is not None and byzantine == 0 and n >= 4:
            byzantine = bug.byzantine
        self.byzantine = byzantine
        # A bug's adversary gives way to twins (the twins are then the byzantine validators).
        bug_adversary = bug is not None and bug.adversary and not config.twins
        use_adversary = (config.adversary or bug_adversary) and byzantine > 0
        if use_adversary and config.twins:
            raise ConfigError("the adversary and twins are separate ways to run byzantine nodes")
        self.faulty_max = (n - 1) // 3
        self.safety_claimed = byzantine <= self.faulty_max

        def stream(name: str) -> random.Random:
            return random.Random(f"suanpan/sim/{seed}/{name}")

        parameters = FaultParameters.draw(stream("parameters"), byzantine)
        if bug is not None:
            parameters = parameters.with_overrides(dict(bug.scenario))
        parameters = parameters.with_overrides(dict(config.overrides))
        behaviours = list(parameters.behaviours)
        extra = stream("behaviours")
        while len(behaviours) < byzantine:
            behaviours.append(extra.choice([b for b in Behaviour if b is not Behaviour.TWIN]))
        if config.twins:
            behaviours = [Behaviour.TWIN] * byzantine
        if use_adversary:
            behaviours = []
        self.parameters = parameters.with_overrides(
            {"behaviours": tuple(behaviours[: len(behaviours) and byzantine])}
        )
        self._fault_rng = stream("faults")
        layout = stream("layout")

        # With reconfiguration, spare nodes follow from the start and may join; validators
        # carry node keys, by which the network routes whatever index a set gives a node.
        reconfigure = config.reconfigure or (bug is not None and bug.reconfigure)
        self.reconfigure = reconfigure
        slots = n + (SPARE_NODES if reconfigure else 0)
        keys = [validator_key(i) for i in range(slots)]
        node_keys = tuple(node_key(slot) for slot in range(slots)) if reconfigure else ()
        self.validators = ValidatorSet(
            tuple(
                Validator(f"validator-{i}", keys[i].public_key, node_keys[i] if node_keys else None)
                for i in range(n)
            )
        )
        self.validator_schedule = ValidatorSchedule(self.validators)
        if schedule is not None:
            byzantine_indices = sorted(schedule.twins)
            if len(byzantine_indices) != byzantine:
                raise ConfigError("the schedule twins as many validators as are byzantine")
        elif config.twins:
            # Twins include the first primary (height 1, view 0 is validator 1 mod n).
            byzantine_indices = [(1 + j) % n for j in range(byzantine)]
        else:
            byzantine_indices = sorted(layout.sample(range(n), byzantine))
        self.byzantine_indices = byzantine_indices
        behaviour_of = (
            {}
            if use_adversary
            else dict(zip(byzantine_indices, self.parameters.behaviours, strict=True))
        )

        replica_config = SIM_REPLICA_CONFIG
        # ``bug_off``: the bug's whole scenario with the bug itself switched off (what every
        # checker must pass: the scenario alone is no violation).
        if bug is not None and bug.replica_flag is not None and not config.bug_off:
            replica_config = ReplicaConfig(
                view_timeout_base_ms=SIM_REPLICA_CONFIG.view_timeout_base_ms,
                view_timeout_max_ms=SIM_REPLICA_CONFIG.view_timeout_max_ms,
                sync_delay_ms=SIM_REPLICA_CONFIG.sync_delay_ms,
                sync_retry_ms=SIM_REPLICA_CONFIG.sync_retry_ms,
                planted_bugs=frozenset({PlantedBug[bug.replica_flag]}),
            )
        self.replica_config = replica_config

        # Genesis, computed once by the real host.
        if config.workload == "demo":
            apps = demo_apps
            consortium = demo_consortium(seed, chain_id=CHAIN_ID)
            app_genesis = consortium.app_genesis
            banks = list(dict.fromkeys(p.institution for p in consortium.with_role("bank")))
        else:
            apps = membership_apps
            app_genesis = {"membership": membership_genesis()}
            banks = [f"bank_{i}" for i in range(CLIENTS)]
        if reconfigure:
            # The registry starts from the genesis validators; each bank gets a governance key.
            app_genesis = with_governors(app_genesis, banks)
        genesis_backend = MemoryBackend()
        genesis_host = AppHost(apps(), genesis_backend, chain_id=CHAIN_ID)
        writes, genesis_app_hash = genesis_host.init_genesis(
            app_genesis, validators=self.validators if reconfigure else None
        )
        genesis_hash = hash_bytes(
            encode((b"suanpan/sim/genesis", CHAIN_ID, self.validators.hash(), genesis_app_hash))
        )
        genesis_tip = ChainTip(0, genesis_hash, genesis_app_hash, GENESIS_TIME_MS - 10_000)

        self.adversary: Adversary | None = None
        if use_adversary:
            self.adversary = Adversary(
                rng=stream("adversary"),
                parameters=AdversaryParameters.draw(
                    stream("adversary-parameters"),
                    focus=bug.moves if bug is not None and bug.adversary else None,
                ),
                keys={index: keys[index] for index in byzantine_indices},
                validators=self.validators,
                chain_id=CHAIN_ID,
                transport=self._adversary_send,
                schedule=self._adversary_later,
                clock_ms=lambda: GENESIS_TIME_MS + self.loop.now_ms,
                tip_of=self._tip_of_validator,
            )
        self.checker = InvariantChecker(
            validators=self.validators,
            chain_id=CHAIN_ID,
            genesis_hash=genesis_hash,
            genesis_app_hash=genesis_app_hash,
            validators_at=(lambda height: self.validator_schedule.at(height))
            if reconfigure
            else None,
        )
        self.network = SimNetwork(self.loop, stream("network"), self.parameters.link_faults())
        self.network.attach(self._deliver)
        if schedule is not None:
            self.network.link_filter = self._scheduled_cut
        node_count = n + (byzantine if config.twins else 0)
        self.workload: ClientWorkload
        if config.workload == "demo":
            self.workload = DemoWorkload(
                stream("workload"),
                consortium,
                seed=seed,
                node_count=node_count,
                time_offset_ms=GENESIS_TIME_MS,
            )
        else:
            self.workload = Workload(stream("workload"), CHAIN_ID)
        self.receipts_ok = 0
        self.rejections: dict[str, int] = {}
        self._canonical_entries: dict[int, CommittedEntry] = {}
        self.counters = _Counters()

        env = NodeEnvironment(
            loop=self.loop,
            chain_id=CHAIN_ID,
            apps=apps,
            validators=self.validators,
            replica_config=replica_config,
            genesis_tip=genesis_tip,
            genesis_writes=writes,
            genesis_time_ms=GENESIS_TIME_MS,
            send=self._send,
            broadcast=self._broadcast,
            on_commit=self._on_commit,
            on_signed=self._on_signed,
            on_evidence=self._on_evidence,
            on_rejected=self._on_rejected,
            driver_bug=(
                bug.name
                if bug is not None and bug.name in DRIVER_BUGS and not config.bug_off
                else None
            ),
            node_keys=node_keys,
            slot_of_node_key={key: slot for slot, key in enumerate(node_keys)},
        )
        skew_max = self.parameters.clock_skew_ms_max
        self.nodes: list[SimNode] = []
        copies: list[tuple[int, int]] = [(i, 0) for i in range(slots)]
        if config.twins:
            copies.extend((i, 1) for i in byzantine_indices)
        for node_id, (validator, copy) in enumerate(copies):
            behaviour = behaviour_of.get(validator)
            adversary: ByzantineDriver | None = None
            if self.adversary is not None and validator in byzantine_indices:
                adversary = self.adversary.agent(validator)
            elif behaviour is not None:
                adversary = Misbehaviour(
                    behaviour,
                    keys[validator],
                    validator,
                    CHAIN_ID,
                    stream(f"adversary/{validator}/{copy}"),
                )
            self.nodes.append(
                SimNode(
                    env,
                    node_id=node_id,
                    validator=validator,
                    key=keys[validator],
                    rng=stream(f"node/{node_id}"),
                    # A twin's second copy runs a few ms ahead, so the copies build
                    # different blocks from the same inputs (as two machines would).
                    skew_ms=(layout.randint(-skew_max, skew_max) if skew_max else 0)
                    + (layout.randint(1, 20) if copy else 0),
                    adversary=adversary,
                )
            )
        self._nodes_of: dict[int, list[int]] = {}
        for node in self.nodes:
            self._nodes_of.setdefault(node.validator, []).append(node.node_id)
        self.reconfiguration: Reconfiguration | None = None
        if reconfigure:
            self.reconfiguration = Reconfiguration(
                rng=stream("reconfiguration"),
                chain_id=CHAIN_ID,
                banks=banks,
                genesis=self.validators,
                slots=slots,
                byzantine=byzantine_indices,
                give_key=self._give_key,
                kinds=tuple(
                    Change(kind)
                    for kind in (bug.reconfiguration_changes if bug is not None else tuple(Change))
                ),
            )
            if bug is not None and bug.reconfiguration_interval_ms is not None:
                self.reconfiguration.interval_ms = bug.reconfiguration_interval_ms
            if bug is not None and bug.leak_retired_keys:
                for node in self.nodes:
                    if isinstance(node.adversary, Misbehaviour):
                        node.adversary.forger = self._forge_with_retired_keys
        self.honest = [node for node in self.nodes if node.honest]
        self._faults_on = True
        self._view_cache: dict[bytes, int] = {}
        self._partition_until_ms = 0
        self._down: dict[int, int] = {}  # node id -> restart time

    # -- network plumbing ----------------------------------------------------------------------

    def _send(self, source: int, destination_validator: int, data: bytes) -> None:
        self._observe(source, data)
        for destination in self._nodes_of.get(destination_validator, ()):
            if destination != source:
                self.network.send(source, destination, data, "consensus")

    def _broadcast(self, source: int, data: bytes) -> None:
        self._observe(source, data)
        for destination in range(len(self.nodes)):
            if destination != source:
                self.network.send(source, destination, data, "consensus")

    def _observe(self, source: int, data: bytes) -> None:
        """The adversary sees every message put on the network (its own included)."""
        if self.adversary is not None:
            self.adversary.observe(self.nodes[source].validator, data)

    def _adversary_send(self, validator: int, destination_validator: int, data: bytes) -> None:
        source = self._nodes_of[validator][0]
        for destination in self._nodes_of.get(destination_validator, ()):
            if destination != source:
                self.network.send(source, destination, data, "adversary")

    def _adversary_later(self, delay_ms: int, callback: Callable[[], None]) -> None:
        self.loop.call_later(delay_ms, callback)

    def _adversary_tick(self) -> None:
        adversary = self.adversary
        if adversary is None or not adversary.active:
            return
        adversary.step()
        self.loop.call_later(adversary.parameters.step_ms, self._adversary_tick)

    def _tip_of_validator(self, validator: int) -> ChainTip | None:
        node = self.nodes[self._nodes_of[validator][0]]
        return node.tip() if node.up else None

    def _deliver(self, destination: int, source: int, data: bytes) -> bool:
        node = self.nodes[destination]
        if not node.up:
            return False
        self.loop.record("m", self.loop.now_ms, destination, source, data)
        sender = self.nodes[source]
        honest_source = source if sender.honest and node.honest else None
        return node.deliver(sender.validator, data, honest_source=honest_source)

    # -- observations --------------------------------------------------------------------------

    def _on_commit(
        self, node: SimNode, entry: CommittedEntry, vouched_app_hash: bytes | None
    ) -> None:
        block = entry.block
        self.loop.record("c", self.loop.now_ms, node.node_id, block.height, block.hash)
        if not node.honest:
            return
        self.checker.on_commit(
            self.loop.now_ms,
            node.node_id,
            block,
            entry.certificate,
            entry.app_hash,
            vouched_app_hash=vouched_app_hash,
        )
        if block.height not in self._canonical_entries:
            self._canonical_entries[block.height] = entry
            if self.reconfigure:
                self._follow_schedule(node, block.height)
            self.receipts_ok += entry.receipts_ok
            for code in entry.rejection_codes:
                self.rejections[code] = self.rejections.get(code, 0) + 1
        for transaction_hash in sorted(entry.transaction_hashes):
            if self.workload.on_committed(transaction_hash):
                self.checker.on_acknowledged(transaction_hash, block.height)

    def _on_signed(self, node: SimNode, data: bytes) -> None:
        index = None if node.replica is None else node.replica.index
        for validator, kind, height, view, block_hash in signed_statements(data):
            if validator in (node.validator, index):
                self.checker.on_vote_signed(
                    self.loop.now_ms, validator, kind, height, view, block_hash
                )

    def _on_rejected(self, node: SimNode, sender: int, drop: Dropped) -> None:
        self.checker.on_rejected(self.loop.now_ms, node.node_id, sender, drop.reason, drop.detail)

    def _on_evidence(self, node: SimNode, validator: int) -> None:
        self.counters.evidence += 1
        if node.honest and validator not in self.byzantine_indices:
            self.checker.report(
                "honest_signatures",
                self.loop.now_ms,
                node.node_id,
                f"equivocation evidence reported against honest validator {validator}",
            )

    # -- faults --------------------------------------------------------------------------------

    def _fault_tick(self) -> None:
        if not self._faults_on:
            return
        rng = self._fault_rng
        params = self.parameters
        now = self.loop.now_ms
        if self.schedule is not None:
            pass  # partitions follow the per-view schedule (``_scheduled_cut``)
        elif self.config.twins:
            if now >= self._partition_until_ms:
                self._twin_partition(rng)
                self._partition_until_ms = now + rng.randint(300, 1_500)
        elif self.network.partition is not None:
            if now >= self._partition_until_ms:
                self.loop.record("heal", now)
                self.network.set_partition(None)
        elif len(self.nodes) > 1 and rng.randrange(100) < params.partition_percent:
            kind = rng.choice(params.partition_kinds)
            ids = list(range(len(self.nodes)))
            if kind is PartitionKind.ISOLATE_ONE:
                alone = rng.choice(ids)
                partition = Partition.between(kind, [alone], [i for i in ids if i != alone])
            else:
                rng.shuffle(ids)
                cut = rng.randint(1, len(ids) - 1)
                partition = Partition.between(kind, ids[:cut], ids[cut:])
            self.network.set_partition(partition)
            self.counters.partitions += 1
            self._partition_until_ms = now + rng.randint(1, params.partition_duration_ms_max)
            self.loop.record("partition", now, partition.description)
        if rng.randrange(100) < params.crash_percent:
            limit = max(1, self.faulty_max)
            candidates = [node for node in self.honest if node.up]
            if candidates and len(self._down) < limit:
                # Half the crashes hit a node that is primary right now: the crash that
                # exercises view change and re-proposal after restart.
                primaries = [node for node in candidates if node.is_primary()]
                pool = primaries if primaries and rng.randrange(2) == 0 else candidates
                node = rng.choice(pool)
                self._crash(node, now + rng.randint(1, params.restart_delay_ms_max))
        self.loop.call_later(FAULT_TICK_MS, self._fault_tick)

    def _twin_partition(self, rng: random.Random) -> None:
        """Split the cluster in two sides: each twin copy on its own side, honest split."""
        side_a: list[int] = []
        side_b: list[int] = []
        singles: list[int] = []
        for validator in range(self.validators.size):
            ids = self._nodes_of[validator]
            if len(ids) == 2:
                side_a.append(ids[0])
                side_b.append(ids[1])
            else:
                singles.append(ids[0])
        # The honest validators are dealt alternately to the two sides, in a random order.
        rng.shuffle(singles)
        first = rng.randrange(2)
        for position, node_id in enumerate(singles):
            (side_a if (position + first) % 2 == 0 else side_b).append(node_id)
        partition = Partition.between(PartitionKind.SYMMETRIC, side_a, side_b)
        self.network.set_partition(partition)
        self.counters.partitions += 1
        self.loop.record("partition", self.loop.now_ms, partition.description)

    def _crash(self, node: SimNode, restart_ms: int) -> None:
        self.loop.record("crash", self.loop.now_ms, node.node_id)
        node.crash()
        self.counters.crashes += 1
        self._down[node.node_id] = restart_ms
        self.loop.call_at(restart_ms, lambda: self._restart(node, restart_ms))

    def _restart(self, node: SimNode, restart_ms: int) -> None:
        if self._down.get(node.node_id) != restart_ms:
            return  # restarted earlier (faults stopped)
        del self._down[node.node_id]
        self.loop.record("restart", self.loop.now_ms, node.node_id)
        node.start()
        self.counters.restarts += 1
        self.checker.on_restart(self.loop.now_ms, node.node_id, node.height)

    def _workload_tick(self) -> None:
        up = [node.node_id for node in self.nodes if node.up]
        self.workload.step(self.loop.now_ms, up, self._submit)
        if self.reconfiguration is not None:
            honest_up = [node for node in self.honest if node.up and node.host is not None]
            reference = max(honest_up, key=lambda node: node.height, default=None)
            self.reconfiguration.step(
                self.loop.now_ms,
                None if reference is None else reference.host,
                [node.node_id for node in honest_up],
                self._submit,
            )
        self.loop.call_later(WORKLOAD_TICK_MS, self._workload_tick)

    # -- validator-set changes -----------------------------------------------------------------

    def _follow_schedule(self, node: SimNode, height: int) -> None:
        """The first honest commit of ``height``: the state after it decides the set of
        ``height + 2``; record it, and tell the adversary the set the chain has reached."""
        assert node.host is not None
        following = node.host.validator_set(height + 2) or self.validators
        if following != self.validator_schedule.at(height + 1):
            self.validator_schedule = self.validator_schedule.with_change(height + 2, following)
            self.loop.record("validators", self.loop.now_ms, height + 2, following.hash())
        if self.adversary is not None:
            self.adversary.reconfigure(self.validator_schedule.at(height + 1))

    def _give_key(self, slot: int, key: PrivateKey) -> None:
        """An operator hands node ``slot`` its next consensus key (a rotation is proposed)."""
        for node_id in self._nodes_of.get(slot, ()):
            self.nodes[node_id].add_key(key)

    def _forge_with_retired_keys(
        self, entries: Sequence[tuple[Block, CommitCertificate]]
    ) -> list[tuple[Block, CommitCertificate]] | None:
        """A forger holding the byzantine keys and every retired honest key (planted bug)."""
        assert self.reconfiguration is not None
        held = {validator_key(i).public_key: validator_key(i) for i in self.byzantine_indices}
        held.update((key.public_key, key) for _, key in self.reconfiguration.retired)
        return forge_with_retired_keys(entries, self.validator_schedule, held, CHAIN_ID)

    def _submit(self, node_id: int, data: bytes) -> bool:
        self.loop.record("tx", self.loop.now_ms, node_id, data)
        return self.nodes[node_id].submit(data)

    # -- the run -------------------------------------------------------------------------------

    def _scheduled_cut(self, source: int, destination: int, data: bytes) -> bool:
        """With a per-view schedule: is this message cut by its view's partition?"""
        assert self.schedule is not None
        view = self._view_cache.get(data)
        if view is None:
            view = message_view(data)
            if len(self._view_cache) >= VIEW_CACHE_MAX:
                self._view_cache.clear()
            self._view_cache[data] = view
        return view >= 0 and self.schedule.blocked(view, source, destination)

    def _stop_faults(self) -> None:
        self._faults_on = False
        if self.reconfiguration is not None:
            self.reconfiguration.active = False  # a change in flight is still seen through
        self.network.link_filter = None
        if self.adversary is not None:
            self.adversary.stop()
        self.network.set_partition(None)
        self.network.faults = self.network.faults.quiet()
        self.loop.record("quiet", self.loop.now_ms)
        for node_id in sorted(self._down):
            restart_ms = self._down[node_id]
            self._restart(self.nodes[node_id], restart_ms)

    def _honest_view_at(self, height: int) -> int:
        views = [n.view() for n in self.honest if n.up and n.height == height - 1]
        return max(views, default=0)

    def run(self) -> SimResult:
        """Run both phases and return the result."""
        started = time.perf_counter()
        loop = self.loop
        checker = self.checker
        for node in self.nodes:
            node.start()
        loop.call_later(FAULT_TICK_MS, self._fault_tick)
        loop.call_later(1, self._workload_tick)
        if self.adversary is not None:
            loop.call_later(self.adversary.parameters.step_ms, self._adversary_tick)
        target = self.config.blocks
        phase1_ms = max(PHASE1_MS_MIN, target * PHASE1_MS_PER_BLOCK)
        reconfiguration = self.reconfiguration
        if reconfiguration is not None:
            # The fault phase also lasts until the set has changed a few times.
            phase1_ms += CHANGES_MIN * (reconfiguration.interval_ms + PHASE1_MS_PER_CHANGE)

        def done() -> bool:
            changed = reconfiguration is None or reconfiguration.executed >= CHANGES_MIN
            return checker.terminal or (checker.canonical_height >= target and changed)

        loop.run(until_ms=phase1_ms, stop=done)
        liveness = "not-checked"
        if not checker.terminal:
            self._stop_faults()
            liveness = self._check_liveness()
        end_ms = loop.now_ms
        for node in self.honest:
            checker.check_acknowledged(
                end_ms,
                node.node_id,
                [(e.block.height, e.transaction_hashes) for e in node.disk.committed],
            )
        stats = self.network.statistics
        faults = {
            "messages_lost": stats.dropped_loss,
            "messages_duplicated": stats.duplicated,
            "messages_reordered": stats.reordered,
            "messages_cut_by_partition": stats.dropped_partition,
            "messages_to_down_nodes": stats.dropped_down,
            "partitions": self.counters.partitions,
            "crashes": self.counters.crashes,
            "restarts": self.counters.restarts,
            "records_lost_in_crashes": sum(n.disk.statistics.records_lost for n in self.nodes),
            "byzantine_messages": (
                self.adversary.injected
                if self.adversary is not None
                else sum(n.adversary.injected for n in self.nodes if n.adversary is not None)
            ),
            "commits_lost_in_crashes": sum(n.disk.statistics.commits_lost for n in self.nodes),
            "evidence_reported": self.counters.evidence,
        }
        if self.reconfiguration is not None:
            executed = self.reconfiguration.counts.executed
            faults["validator_joins"] = executed.get("join", 0)
            faults["validator_leaves"] = executed.get("leave", 0)
            faults["key_rotations"] = executed.get("rotate", 0)
            faults["validator_sets"] = len(self.validator_schedule.changes) + 1
        views = sum(entry.certificate.view + 1 for entry in self._canonical_entries.values())
        return SimResult(
            config=self.config,
            committed_height=checker.canonical_height,
            views=views,
            messages_sent=stats.sent,
            messages_delivered=stats.delivered,
            bytes_delivered=stats.bytes_delivered,
            faults=faults,
            parameters={
                **self.parameters.describe(),
                "byzantine_validators": list(self.byzantine_indices),
                "effective_byzantine": self.byzantine,
                **(
                    {"adversary": self.adversary.parameters.describe()}
                    if self.adversary is not None
                    else {}
                ),
            },
            checks_run=checker.checks_run,
            sync_hints_checked=checker.sync_hints_checked,
            violations=list(checker.violations),
            liveness=liveness,
            trace_digest=loop.trace_digest(),
            sim_time_ms=end_ms,
            wall_time_s=time.perf_counter() - started,
            transactions_submitted=self.workload.submitted,
            transactions_acknowledged=self.workload.acknowledged,
            receipts_ok=self.receipts_ok,
            rejections=dict(self.rejections),
            events=loop.events_run,
            safety_claimed=self.safety_claimed,
            drops=self._honest_drops(),
            moves=dict(self.adversary.moves) if self.adversary is not None else {},
        )

    def _honest_drops(self) -> dict[str, int]:
        drops: dict[str, int] = {}
        for node in self.honest:
            for reason, count in node.statistics.dropped.items():
                drops[reason] = drops.get(reason, 0) + count
        return drops

    def _check_liveness(self) -> str:
        loop = self.loop
        checker = self.checker
        wanted_height = checker.canonical_height + 1
        start_view = self._honest_view_at(wanted_height)
        bound = start_view + LIVENESS_EXTRA_VIEWS + self.byzantine
        budget = sum(self.replica_config.view_timeout_ms(v) for v in range(bound + 1))
        budget += LIVENESS_SLACK_MS
        wanted = checker.liveness_start(
            loop.now_ms, start_view=start_view, view_bound=bound, budget_ms=budget
        )
        loop.run(
            until_ms=loop.now_ms + budget,
            stop=lambda: checker.terminal or checker.canonical_height >= wanted,
        )
        if not self.safety_claimed:
            return "not-checked"
        if checker.terminal:
            return "not-checked"
        if not checker.liveness_progress(loop.now_ms):
            return "failed"
        loop.run(
            until_ms=loop.now_ms + CATCH_UP_MS,
            stop=lambda: checker.terminal or all(node.height >= wanted for node in self.honest),
        )
        heights = {node.node_id: node.height for node in self.honest}
        if not checker.liveness_catch_up(loop.now_ms, heights, CATCH_UP_MS):
            return "failed"
        return "ok"


def run_simulation(config: SimConfig, *, schedule: PartitionSchedule | None = None) -> SimResult:
    """Run one simulation to completion."""
    return Simulation(config, schedule=schedule).run()
