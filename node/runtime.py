"""The node runtime: one trio nursery per node wiring network, consensus, mempool, apps, API.

Theory of operation
-------------------
``Node.run`` opens the LMDB store (initialising genesis state on first start), builds the app
host over it, restores the ``Replica`` from its persisted state (or creates it on the store's
chain tip), and starts, under one nursery:

* the **network** (``network.Network``): encrypted links to the genesis validators' node keys;
* the **consensus driver**: the only task that touches the replica. It takes inputs from one
  bounded channel (peer messages, ticks, proposal payloads, validity verdicts), calls
  ``Replica.handle`` and performs the returned actions *in order*. ``Persist`` is written to
  LMDB (durable; the driver awaits the write on a worker thread, so the loop serves other
  tasks during the fsync) before the driver performs any later action, so a vote is on disk
  before any ``Send``/``Broadcast`` can carry it out: persist before send. ``Commit``
  executes the block through the app host, queues its write (block, certificate, receipts
  and state in one LMDB transaction) for the **block writer**, and feeds ``BlockExecuted``
  straight back in. The block writer writes queued blocks in order on a worker thread, all
  that queued up in one transaction and fsync; the next block executes meanwhile over the
  store's state with the unwritten blocks' writes on top (``UnwrittenStateBackend``). Before
  any other action (a send or broadcast, a persisted vote, serving blocks, evidence) the
  driver waits until the store holds every executed block, so the node never acts on a block
  a crash could lose; while synced blocks wait to be applied, building the next proposal and
  validating the next block start at once (their results come back as inputs, and the
  broadcast or vote that follows waits); the API reports the height the store holds;
* a **ticker** feeding ``Tick(now_ms)`` every ``[consensus] tick_ms``; at most one tick
  waits for a busy driver, stamped with the time the driver takes it;
* **transaction intake**: API submissions and gossip batches are decoded on the loop, their
  signatures verified on worker threads (``trio.to_thread`` behind a ``CapacityLimiter`` of
  ``[mempool] verify_workers``: the signature rule's C module releases the GIL, so both cores
  work), then admitted to the mempool (the app host's ``check``) and gossiped. ``POST /txs``
  and gossip arrive in batches, and the gossip pump coalesces the batches already waiting, so
  one signature batch and one thread hop serve many transactions;
* **proposals**: the primary reaps the mempool after ``[consensus] block_interval_ms`` and,
  once the replica has sent the proposal, executes it itself while the others validate it
  (``_pre_execute``), so its commit only writes; every node caches the execution of a block
  it validated under the block's hash and parent height and reuses it at commit;
* **block sync** is the replica's: when it sees f+1 validators ahead it emits
  ``RequestBlocks``; blocks arrive as a ``BlockResponse`` message whose certificates the
  replica verifies before it emits ``Commit``; the node then joins consensus at the new tip.
  Meanwhile the node verifies the synced blocks' transaction signatures on worker threads
  ahead of their execution (``_prefetch_signatures``), so a block's execution on the loop,
  the next blocks' signatures and the previous blocks' write use both cores. With
  ``[consensus] trust_certified_blocks`` it does not: a block it commits without having
  validated it is applied on the strength of its commit certificate (a quorum of 2f+1
  includes at least f+1 honest validators, each of which checked every signature before it
  voted), and its transactions' signatures are not checked again (``transactions_trusted``
  in the status);
* **snapshots** (``node.snapshots``): after every ``[statesync] snapshot_interval``-th
  height the state is exported on a worker thread from one long read transaction opened right
  after that height's commit, and peers' state sync requests are answered from the snapshots
  on disk over the p2p request/response channel;
* **state sync** (``node.statesync``): a node whose store holds no block yet and has
  ``[statesync] enabled`` first installs the peers' latest certified snapshot (the network
  and the API run meanwhile; submissions are refused as ``state_sync``), then starts
  consensus at that height and block-syncs the rest;
* the **client API** and the **metrics** endpoint (``node.http``).

Validator sets: the set in force at each height is what the chain decided
(``AppHost.validator_set``: the membership registry, seeded from the genesis validators and
changed by governance two heights after the deciding block). After each commit the driver
feeds the replica the set of the height after next (``BlockExecuted.next_validators``), and
the network allowlist follows the node keys of the sets of the next two heights (plus
``[p2p] observers`` and the persistent peers), so a validator added on chain may connect as
soon as the change is decided and a removed one is let go once its last height passed.
Consensus messages are broadcast to every connected peer: validators and observers.

Roles: a node signs at a height with whichever of its consensus keys (``validator_key.json``,
and ``validator_key.next.json`` during a key rotation) is in that height's set. With none it
is an **observer**: it follows the chain through the validators' messages and block sync,
serves the client API, and never votes; the same node starts voting, without a restart, at
the height governance adds its key, and stops when it is removed.

SIGINT/SIGTERM cancel the nursery; the store is closed on the way out. A restart restores the
replica's persisted state, so a validator never signs a second, different vote for a
(height, view, phase) it already voted in, even after ``kill -9``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import math
import signal
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Final, Protocol, TypeVar, cast

import trio

from apps.access import ReadRules
from apps.base import BlockContext
from apps.host import EVENT_END_BLOCK_FAULT, AppHost, BlockResult, Receipt, end_block_hash
from apps.host import GenesisError as HostGenesisError
from apps.merkle import prove
from apps.proofs import (
    VALIDATOR_LINKS_MAX,
    ProofUnsupported,
    QueryProof,
    ValidatorLink,
    recorded_query,
)
from apps.state import Write
from apps.transaction import Transaction, TransactionError
from consensus.codec import Value
from consensus.crypto import key_cache_info, rule_status
from consensus.evidence import Evidence, EvidenceError
from consensus.messages import (
    BlockRequest,
    BlockResponse,
    Message,
    MessageError,
    MessageKind,
    decode_message,
    encode_block_response,
    encode_message,
)
from consensus.replica import (
    Action,
    BlockExecuted,
    Broadcast,
    ChainTip,
    Commit,
    Dropped,
    Input,
    PeerMessage,
    Persist,
    ProposalPayload,
    Replica,
    ReplicaConfig,
    ReportEvidence,
    RequestBlocks,
    RequestProposal,
    RestoreError,
    Send,
    ServeBlocks,
    Start,
    Tick,
    ValidateBlock,
    ValidityVerdict,
    primary_index,
)
from consensus.types import (
    Block,
    CertificateChecks,
    CertificateError,
    CommitCertificate,
    ValidatorSet,
)
from network.network import (
    InboundMessage,
    InboundTransactions,
    Network,
    NetworkConfig,
    NetworkStatistics,
)
from network.network import PeerAddress as NetworkPeer
from node.admission import AdmissionControl, AdmissionLimits, ProposalArrivals
from node.api import CommittedTransaction, Health, QueryError, SubmitOutcome
from node.apiserver import ApiServer
from node.apploader import AppLoadError, load_apps
from node.config import halt_height_warning
from node.events import StreamBlock, StreamBlockCache, stream_transaction
from node.heap import HeapTrimmer
from node.home import CONFIG_FILE, NEXT_VALIDATOR_KEY_FILE, Home
from node.http import Handler, HttpLimits, Request, Response, serve_http
from node.jsonvalue import JsonType, to_json
from node.keys import KeyFileError, load_key_file
from node.logs import log_file_handler, reopen_log_file
from node.looptasks import LoopTaskClock
from node.machineidle import MachineIdle
from node.mempool import (
    CODE_FULL,
    CODE_NONCE_GAP,
    CODE_SENDER_FULL,
    Mempool,
    MempoolLimits,
    MempoolRejected,
)
from node.metrics import NodeMetrics, RunningTotal
from node.native import (
    codec_decoder_status,
    codec_encoder_status,
    merkle_tree_status,
    native_status,
)
from node.openapi import openapi_document
from node.phases import PHASES, PhaseClock, WaitClock, thread_cpu_ns
from node.procstatus import run_delay_ns
from node.servebudget import ServeBudget
from node.signatures import batch_status, verify_transactions
from node.snapshots import SnapshotDirectory, SnapshotError, SnapshotServer, export_snapshot
from node.statesync import (
    NoSnapshotOffered,
    StateSync,
    StateSyncError,
    StateSyncLimits,
    StateSyncWriteError,
)
from node.store import (
    CertifiedView,
    StateReader,
    Store,
    StoreDamagedError,
    StoreError,
    is_disk_full,
)
from node.termination import hand_over_termination
from node.tls import TlsError
from node.unwritten import UnwrittenStateBackend
from node.verified import VerifiedTransactions

__all__ = [
    "CONSENSUS_KIND",
    "FaultHooks",
    "FaultHooksFactory",
    "Node",
    "NodeStartError",
    "NodeStoppedError",
    "raised_in",
    "stopped_error",
    "watched_signals",
]

log = logging.getLogger("suanpan.node")

# The network message kind carrying consensus wire messages (the network knows only bytes).
CONSENSUS_KIND: Final = 1
# Inputs waiting for the consensus driver; peers' messages block (backpressure) beyond this.
_INPUTS_MAX: Final = 1024
# Recently refused transactions remembered for status queries (bounded memory).
_REJECTED_REMEMBERED: Final = 10_000
# Gossiped transactions admitted in one go (one signature batch on a worker thread): large
# enough to amortise the thread hop, small enough not to hold the event loop for long.
_ADMIT_BATCH_MAX: Final = 2048
# Below this, the gossip pump waits _GOSSIP_LINGER_S for more before admitting (fewer, larger
# batches); a few ms against a block round of 100 ms or more.
_ADMIT_BATCH_MIN: Final = 64
_GOSSIP_LINGER_S: Final = 0.003
# A transaction refused because its sender's earlier one in the same batch was refused.
CODE_BEHIND_REFUSED: Final = "behind_refused"
# Refusals that leave the sender's nonce sequence whole (the nonce is pending or committed
# already), so the sender's later transactions in the batch are judged on their own.
_NONCE_TAKEN_CODES: Final = frozenset({"duplicate", "nonce_in_use", "stale_nonce"})
# Gossiped transactions refused for a passing reason (this node's pool or the sender's share
# of it was full, an earlier nonce had not arrived yet, a snapshot was installing): the
# network forgets it saw them, so the origin's resend is taken.
_GOSSIP_RETAKE_CODES: Final = frozenset({CODE_FULL, CODE_SENDER_FULL, CODE_NONCE_GAP, "state_sync"})
# A transaction this node's clients submitted that is still pending after _RESEND_AFTER_S is
# sent to every connected peer again (peers that connected later, or dropped it), then again
# after as long as it has waited (doubling), at most every _RESEND_INTERVAL_MAX_S; at most
# _RESEND_BATCH_MAX of them each second.
_RESEND_AFTER_S: Final = 3.0
_RESEND_INTERVAL_MAX_S: Final = 60.0
_RESEND_BATCH_MAX: Final = 2048
# At start, how long to wait for a first peer to ask for the blocks after ours.
_PROBE_WAIT_S: Final = 60.0
# How long after the start-up request its answer's signatures are verified ahead like those of
# a request the replica made (a peer with no later block answers nothing).
_PROBE_ANSWER_S: Final = 30.0
# Synced blocks verified ahead of their commit at most (a few block responses' worth; the
# verified cache holds their transactions).
_PREFETCH_BLOCKS_MAX: Final = 256
# Executed blocks whose store write may lag behind (the next block executes over them while a
# worker thread writes them); each holds its write set and tree records, ~1-2 MiB at 120
# payments, so this bounds the extra memory to a few tens of MiB. Also the most blocks written
# in one write transaction (one fsync).
_UNWRITTEN_BLOCKS_MAX: Final = 16
# The same while a node with the block writer process (``[store] writer_process``) syncs
# blocks: each write there takes longer from request to answer (the worker thread, the pipe,
# the process's turn at a core), so 16 blocks filled up while the process wrote; twice as many
# did not, and each write then takes more blocks.
_UNWRITTEN_BLOCKS_MAX_WRITER_PROCESS: Final = 32
# Synced blocks a node holds, waiting to be applied, that make it start a block writer process
# for the rest of the sync (``[store] sync_writer_process``): a shorter sync ends before the
# process (about 0.15 s of a core to load its code) would pay for itself.
_SYNC_WRITER_PROCESS_BLOCKS: Final = 32
# How long the block writer process a node starts with waits for a long sync to take over
# before it ends.
_SYNC_WRITER_PROCESS_IDLE_S: Final = 60.0
# How long a node stays out of sync before the block writer process started for the sync
# stops: between two answers of a long sync the node briefly holds no synced block.
_SYNC_WRITER_PROCESS_LINGER_S: Final = 2.0
# Blocks whose tree records the store holds before writing them, while such a node syncs:
# fewer tree writes, the largest a node makes.
_TREE_FLUSH_BLOCKS_WRITER_PROCESS: Final = 16
# How long a synced block whose certificate the latest known validator set does not confirm
# waits for the blocks before it to execute (its own set is known then) before the lookahead
# gives up on it (the replica judges it anyway); bounds what a stalled chain keeps waiting.
_PREFETCH_WAIT_S: Final = 10.0
# The lookahead checks synced blocks in groups of 1, 2, 4, ... up to this many: a group's
# certificates on the loop, then one batch for its signatures on the verifying threads. Each
# step of the lookahead waits for the loop, which executes a block between two turns; one block
# per step would only keep pace with execution, never get ahead of it.
_PREFETCH_GROUP_MAX: Final = 8
# Groups whose signatures the verifying threads check at once: the next group's certificates
# are checked and its transactions decoded while the threads still check the one before, so
# the lookahead is not held to one round trip between the loop and the threads per group.
_PREFETCH_GROUPS_AT_ONCE: Final = 2
# Validated blocks whose execution results are kept for their commit (a few views' worth).
_VALIDATED_CACHE_MAX: Final = 8
# The last committed blocks (with their certificates) kept decoded for the API's and block
# sync's reads: followers of ``/blocks`` and peers a few blocks behind ask for the newest ones,
# which would otherwise be read, decoded and their transactions hashed again for each ask. At
# most ``proposal_transactions_max`` transactions each (a few MiB in all at the default).
_RECENT_BLOCKS_MAX: Final = 8
# Validator sets of recent heights kept decoded: a few views' worth of heights around the tip.
_VALIDATOR_SETS_CACHED: Final = 64
# The window of ``[p2p] block_serve_bytes_per_peer_per_s``: one second, as the name says.
_BLOCK_SERVE_WINDOW_MS: Final = 1000
# Room for the certificate and framing of one stored block in a sync answer (up to 512
# signatures of 72 bytes would be more, but answers are trimmed exactly; this only stops
# reading blocks from the store once the answer is surely full).
_BLOCK_ENTRY_OVERHEAD_BYTES: Final = 128
_EMPTY_BLOCK_RESPONSE: Final = encode_block_response([])
# A failed state sync is tried again after this long (peers may have come up, or lied).
_STATE_SYNC_RETRY_SECONDS: Final = 5.0
# How long a node halting at ``[consensus] halt_height`` waits for its last consensus frames
# to be written to its peers (``_halt``).
_HALT_SEND_SECONDS: Final = 2.0


def _software_version() -> str:
    try:
        return importlib.metadata.version("suanpan")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


SOFTWARE_VERSION: Final = _software_version()


def _now_ms() -> int:
    return int(time.time() * 1000)


class NodeStartError(Exception):
    """The node cannot start; the message says why and what to do about it."""


class NodeStoppedError(Exception):
    """The node stopped because it can no longer write its blocks (a full disk, a block writer
    process that died) or because its state after synced blocks differs from the state their
    certificates vouch for; the message says why. What it wrote before is in its store."""


_RaisedT = TypeVar("_RaisedT", bound=BaseException)


def raised_in(error: BaseException, kind: type[_RaisedT]) -> _RaisedT | None:
    """The first ``kind`` in ``error`` (alone or in an exception group, as a nursery raises
    it, however nested), if any."""
    if isinstance(error, kind):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = raised_in(inner, kind)
            if found is not None:
                return found
    return None


def stopped_error(error: BaseException) -> NodeStoppedError | None:
    """The ``NodeStoppedError`` in ``error`` (``raised_in``), if any."""
    return raised_in(error, NodeStoppedError)


class FaultHooks(Protocol):
    """Fault injection installed into a testnet node (``[testnet] fault_hooks``).

    The daemon only calls these two points; the implementation lives with the testnet tools
    (``node.testnet.faults``), which the daemon never imports: ``suanpan start`` passes a
    factory in when the home asks for hooks.
    """

    def wrap(self, handler: Handler) -> Handler:
        """The client API handler with the hooks' admin endpoints in front of it."""
        ...

    def after_broadcast(self, payload: bytes) -> None:
        """Called after the node broadcast one of its replica's consensus messages."""
        ...


FaultHooksFactory = Callable[["Node"], FaultHooks]


@dataclass(frozen=True, slots=True)
class _Validated:
    """A block we executed while validating it, reusable at commit if the tip is unchanged."""

    parent_height: int
    result: BlockResult


class Node:
    """One Suanpan node. ``await Node(home).run()`` serves until cancelled or signalled."""

    def __init__(self, home: Home, *, fault_hooks: FaultHooksFactory | None = None) -> None:
        """``fault_hooks`` builds the testnet fault hooks for a home whose config enables them
        (``[testnet] fault_hooks``); such a home refuses to start without it."""
        try:
            self._open(home, fault_hooks)
        except BaseException as error:
            # The store (and its block writer process) close with the node that failed to start.
            store: Store | None = getattr(self, "store", None)
            if store is not None:
                store.close()
            if isinstance(error, NodeStartError):
                raise
            if isinstance(
                error, StoreError | AppLoadError | HostGenesisError | RestoreError | TlsError
            ):
                raise NodeStartError(f"{type(error).__name__}: {error}") from error
            raise

    def _open(self, home: Home, fault_hooks: FaultHooksFactory | None) -> None:
        self.home = home
        self.config = home.config
        self.genesis = home.genesis
        self.chain_id = home.genesis.chain_id
        self.metrics = NodeMetrics()
        self.phases = PhaseClock()
        # The event loop's CPU outside the phases by task (``[metrics] loop_task_cpu``).
        self.loop_tasks: LoopTaskClock | None = None
        self.waits = WaitClock()
        # Hands the C allocator's free pages back after block writes (node.heap).
        self.heap = HeapTrimmer()
        self.store = Store(home.data_dir, chain_id=self.chain_id, genesis_hash=self.genesis.hash)
        self.metrics.watch_store_disk(home.data_dir)
        # Executed blocks that may wait for the block writer (``_set_syncing``).
        self._unwritten_max = _UNWRITTEN_BLOCKS_MAX
        self._tree_flush_blocks = self.store.tree_flush_blocks
        self._apps = load_apps(self.genesis.apps)
        if not self.store.initialised:
            genesis_host = AppHost(self._apps, self.store.state_backend(), chain_id=self.chain_id)
            writes, app_hash = genesis_host.init_genesis(
                self.genesis.app_state, validators=self.genesis.validator_set
            )
            self.store.init_genesis(writes, app_hash)
        # What to warn of ``[consensus] halt_height`` while it is set (start, ``/status``).
        self._halt_warning = halt_height_warning(self.config)
        if self._halt_reached(self.store.height):
            raise NodeStartError(
                f"the store is at height {self.store.height}, at or past [consensus] halt_height"
                f" {self.config.consensus.halt_height}: the node halted there; to go on, remove"
                f" halt_height from {CONFIG_FILE} (or set it above {self.store.height}) and start"
                " it again"
            )
        if self.config.store.writer_process:
            self.store.start_writer_process()
            log.info("block_writer_process_started", extra={"pid": self.store.writer_process_pid})
        statesync = self.config.statesync
        pending = self.store.state_sync_pending
        if pending is not None and not statesync.enabled:
            raise NodeStartError(
                f"a state sync to height {pending} was interrupted, so data/ holds a partial "
                "state: set [statesync] enabled = true to finish it (or remove data/)"
            )
        # A store with no block yet (fresh, or an interrupted sync) joins from a snapshot.
        self.state_syncing = statesync.enabled and self.store.height == 0
        # The height the node stopped at for ``[consensus] halt_height`` (``_halt``).
        self.halted_at: int | None = None
        self.snapshots = SnapshotDirectory(home.snapshots_dir, self.chain_id)
        self.snapshots.remove_partial()
        self._snapshot_server = SnapshotServer(
            self.snapshots, self.store, serve_bytes_per_second=statesync.serve_bytes_per_second
        )
        self._snapshot_running = False
        self.admission = AdmissionControl(
            AdmissionLimits(
                budget_ms=self.config.mempool.admission_budget_ms,
                transactions_min=self.config.mempool.admission_transactions_min,
                transactions_max=self.config.mempool.transactions_max,
            )
        )
        self._open_execution()
        # Final sets by height (a set of height h never changes once h <= executed + 2).
        self._validator_sets: OrderedDict[int, ValidatorSet] = OrderedDict()
        params = self.genesis.consensus_params
        self.replica_config = ReplicaConfig(
            view_timeout_base_ms=self.config.consensus.view_timeout_ms,
            timestamp_drift_max_ms=params.timestamp_skew_ms_max,
            block_bytes_max=params.block_bytes_max,
            block_transactions_max=params.block_transactions_max,
            # Two messages carrying a full block (and votes) per validator, as the default.
            buffer_bytes_per_validator_max=2 * params.block_bytes_max + 1024 * 1024,
        )
        self._serve_budget = ServeBudget(
            bytes_per_window=self.config.p2p.block_serve_bytes_per_peer_per_s,
            window_ms=_BLOCK_SERVE_WINDOW_MS,
        )
        # Synced blocks' certificates, checked before their signatures are verified ahead and
        # again by the replica: the replica's check finds the first one's pass.
        self._certificate_checks = CertificateChecks()
        self.replica = self._make_replica()
        # The next validator key of a rotation: loaded at start, or by the first block after
        # the file appears (``_pick_up_next_key``).
        self._next_key_loaded = home.next_validator_key is not None
        self._next_key_problem = ""
        self._index_of_node_key: dict[bytes, int] = {}
        self._index_set: ValidatorSet | None = None
        self._tip_timestamp_ms = self._chain_tip().timestamp_ms
        self.network = Network(
            NetworkConfig(
                chain_id=self.chain_id,
                genesis_hash=self.genesis.hash,
                identity=home.node_key,
                listen_host=self.config.p2p.listen_address.host,
                listen_port=self.config.p2p.listen_address.port,
                persistent_peers=tuple(
                    NetworkPeer(peer.node_key, peer.address.host, peer.address.port)
                    for peer in self.config.p2p.persistent_peers
                ),
                allowlist=self._allowlist(),
            ),
            request_handler=self._snapshot_server.handle,
        )
        # Fault injection (``[testnet] fault_hooks``): never present in operator homes.
        self.testnet_hooks: FaultHooks | None = None
        if self.config.testnet.fault_hooks:
            if fault_hooks is None:
                raise NodeStartError(
                    "config.toml enables [testnet] fault_hooks but no fault hooks were given;"
                    " start the node with `suanpan start`"
                )
            self.testnet_hooks = fault_hooks(self)
        self._inputs_send, self._inputs = trio.open_memory_channel[Input](_INPUTS_MAX)
        # A tick is queued for the driver and not taken yet (``_ticker``).
        self._tick_waiting = False
        self._verify_limiter = trio.CapacityLimiter(self.config.mempool.verify_workers)
        # Whether a core is left over for this node's worker threads (``_verify``).
        self.machine_idle = MachineIdle(helpers_ns=self._helpers_cpu_ns)
        # Transactions whose signatures ``_verify`` checked, by where (``signatures_checked``
        # in the status): on the loop as a small batch, on the loop as a batch of up to
        # ``verify_inline_busy_max`` while the machine was busy, on a verifying thread.
        self.signatures_checked: dict[str, int] = dict.fromkeys(
            ("loop", "loop_machine_busy", "threads"), 0
        )
        # Signatures verified by this node, by whole encoded bytes (see ``node.verified``).
        self._verified = VerifiedTransactions()
        self._new_block = trio.Event()
        # Set (and replaced) whenever the host moves on to the state after another block.
        self._block_executed = trio.Event()
        self._transaction_arrived = trio.Event()
        self._rejected: OrderedDict[bytes, tuple[str, str]] = OrderedDict()
        self._admitted_at: dict[bytes, float] = {}
        # This node's clients' pending transactions: when each is next sent again to peers.
        self._resend_due: dict[bytes, float] = {}
        # Execution results of validated blocks, keyed by block hash (which commits to the
        # header and, through the transactions root, every transaction byte) and checked
        # against the parent height at use. No signature is cached here.
        self._validated: OrderedDict[bytes, _Validated] = OrderedDict()
        self._recent_blocks: OrderedDict[int, tuple[Block, CommitCertificate]] = OrderedDict()
        # Synced blocks whose signatures are being verified ahead of their commit.
        self._verifying: dict[bytes, trio.Event] = {}
        # Executed blocks waiting for (or in) their store write, oldest first; the block
        # writer takes them in order (``_write_blocks``).
        self._unwritten: deque[tuple[Block, CommitCertificate, BlockResult]] = deque()
        self._unwritten_added = trio.Event()
        self._blocks_written = trio.Event()
        # The transactions of those blocks (hash -> how many unwritten blocks hold it): they
        # have left the mempool but are not in the store yet, and stay ``pending`` until the
        # write, so a waiting client is not told its transaction is unknown.
        self._unwritten_transactions: dict[bytes, int] = {}
        # Synced blocks executed without updating the Merkle tree (each one's app hash the
        # one the certified block after it commits to), oldest first, not yet queued for
        # writing: ``_close_tree_group`` updates the tree once for all of them and checks the
        # root (``[consensus] sync_tree_blocks``).
        self._tree_group: list[tuple[Block, CommitCertificate, BlockResult]] = []
        # Heights of grouped blocks other than a group's last: a write batch never ends at
        # one, so no reader sees a committed height whose tree records are still to come.
        self._tree_group_inner: set[int] = set()
        # Set when a tree group closes (a validation or pre-execution waits for that).
        self._tree_group_closed = trio.Event()
        # Groups closed and the blocks in them (``tree_groups`` in the status).
        self.tree_groups = 0
        self.tree_group_blocks = 0
        self._proposal_pending = False
        # The proposal being decided: its height, its transaction count, and when this node
        # first saw it (trio clock). Proposals are paced from it, and admission does not
        # count its transactions as waiting.
        self._deciding = _Deciding(0, 0, -math.inf)
        # When this node first saw each height's proposal, until that height commits (trio
        # clock): admission's pace counts a block's time from then to its commit.
        self._arrivals = ProposalArrivals()
        # Gossiped transactions being verified and admitted (they wait, like the pool's).
        self._gossip_admitting = 0
        self.blocks_executed = 0
        # Which hot paths run compiled (node.native), for the logs and /status.
        self._native = native_status()
        self._signature_batch = batch_status()
        self._signature_rule = rule_status()
        self._merkle_tree = merkle_tree_status()
        self._codec_encoder = codec_encoder_status()
        self._codec_decoder = codec_decoder_status()
        self._nursery: trio.Nursery | None = None
        self.syncing = False
        # Whether a block writer process started for this sync writes its blocks
        # (``[store] sync_writer_process``).
        self._sync_writer_wanted = False
        # When (trio clock) the node last stopped syncing (None: syncing, or never synced).
        self._sync_ended_at: float | None = None
        # The highest height the replica asked peers for (block sync): answers up to it get
        # their signatures verified ahead; ``syncing`` holds until every block up to it has
        # executed.
        self._blocks_asked_to = 0
        # Until when (trio clock) the answer to the start-up request for blocks is expected.
        self._probe_answer_by: float | None = None
        # Transactions of synced blocks whose signatures were verified on worker threads
        # before their block executed (``transactions_verified_ahead`` in the status).
        self.transactions_verified_ahead = 0
        # Transactions of blocks this node committed without validating them, applied on the
        # strength of the block's commit certificate (``[consensus] trust_certified_blocks``).
        self.transactions_trusted = 0
        self.state_synced_from: int | None = None
        # The last damage a client request's read met in the store (``store_damaged``).
        self._store_damage: str | None = None
        self._last_view = (0, 0)
        self.ports: dict[str, int] = {}
        self._stream_blocks = StreamBlockCache(self._load_stream_block)
        self.api = ApiServer(
            self,
            home=home.path,
            config=self.config,
            chain_id=self.chain_id,
            # This node and the nodes allowed to connect (validators of the next two heights
            # and observers), as of the committed height: a validator added on chain reads
            # everything from the height its set is known, without a restart.
            node_keys=lambda: self._allowlist() | {self.home.node_key.public_key},
            # Through the node, not a bound method of today's host: a state sync reopens it.
            query=lambda app, path, arguments: self.host.query(app, path, arguments),
            rules_of=self._read_rules,
            openapi=openapi_document(
                ((app.name, app.schema) for app in self._apps if app.schema is not None),
                version=SOFTWARE_VERSION,
            ),
        )
        self.metrics.add_totals(self._network_totals)
        self.metrics.add_totals(self.api.totals)
        # Read at each scrape: the server's figure after its start or its last reload.
        self.metrics.api_certificate_expiry.set_function(
            lambda: self.api.certificate_expires_s or 0
        )

    # ------------------------------------------------------------------ construction

    def _open_execution(self) -> None:
        """The app host and the mempool over the store's committed state (again after a state
        sync replaced it)."""
        # Executed blocks not written yet are read through this (see ``_commit``).
        self._state = UnwrittenStateBackend(self.store.state_backend())
        self.host = AppHost(
            self._apps,
            self._state,
            chain_id=self.chain_id,
            height=self.store.height,
            app_hash=self.store.app_hash,
        )
        # The height, block hash and app hash the store holds (the host is ahead while blocks
        # wait to be written): what the API reports as committed. Set together once a write has
        # landed, so ``/status`` never pairs one block's height with the next one's hash.
        self.written_height = self.store.height
        self.written_block_hash = self.store.last_block_hash
        self.written_app_hash = self.store.app_hash
        self.mempool = Mempool(
            self.host,
            MempoolLimits(
                transactions_max=self.config.mempool.transactions_max,
                bytes_max=self.config.mempool.bytes_max,
            ),
        )

    @property
    def validator_node_keys(self) -> tuple[bytes, ...]:
        """The node (p2p) keys of the validators of the height being decided, in order."""
        return self.replica.validators.node_keys()

    @property
    def index(self) -> int | None:
        """This node's validator index at the height being decided (None: it only follows)."""
        return self.replica.index

    def validators_at(self, height: int) -> ValidatorSet:
        """The validator set in force at ``height`` (final for ``height <= executed + 2``):
        what the chain's registry decides, or the genesis set on a chain without one."""
        cached = self._validator_sets.get(height)
        if cached is not None:
            return cached
        final = self.host.height + 2
        if height > final:
            # The state after block c schedules changes effective at c + 2 at the latest, so
            # it answers every later height as it answers c + 2 (cached, not a registry scan
            # per look-ahead certificate in block sync).
            return self.validators_at(final)
        validators = self.host.validator_set(height) or self.genesis.validator_set
        self._validator_sets[height] = validators
        while len(self._validator_sets) > _VALIDATOR_SETS_CACHED:
            self._validator_sets.popitem(last=False)
        return validators

    def _allowlist(self) -> frozenset[bytes]:
        """Who may connect: the validators of the next two heights and configured observers."""
        height = self.host.height
        keys = {
            *self.validators_at(height + 1).node_keys(),
            *self.validators_at(height + 2).node_keys(),
            *self.config.p2p.observers,
        }
        keys.discard(self.home.node_key.public_key)
        return frozenset(keys)

    def _chain_tip(self) -> ChainTip:
        height = self.store.height
        block = self.store.block(height) if height else None
        timestamp_ms = block.header.timestamp_ms if block else self.genesis.genesis_time_ms
        return ChainTip(height, self.store.last_block_hash, self.store.app_hash, timestamp_ms)

    def _make_replica(self) -> Replica:
        """The replica at the store's tip: it votes at the heights whose sets hold one of our
        keys and follows the chain at the others (an observer)."""
        state = self.store.load_replica_state()
        tip = self._chain_tip()
        validators = self.validators_at(tip.height + 1)
        next_validators = self.validators_at(tip.height + 2)
        standby = () if self.home.next_validator_key is None else (self.home.next_validator_key,)
        if state is None:
            return Replica(
                self.replica_config,
                chain_id=self.chain_id,
                validators=validators,
                next_validators=next_validators,
                key=self.home.validator_key,
                standby_keys=standby,
                tip=tip,
                certificate_checks=self._certificate_checks,
            )
        return Replica.restore(
            self.replica_config,
            chain_id=self.chain_id,
            validators=validators,
            next_validators=next_validators,
            key=self.home.validator_key,
            standby_keys=standby,
            tip=tip,
            state=state,
            certificate_checks=self._certificate_checks,
        )

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled or SIGINT/SIGTERM (SIGHUP reopens the log file and reloads the
        API's certificate: ``watched_signals``); closes the store on the way out."""
        if self.config.metrics.loop_task_cpu:
            self.loop_tasks = LoopTaskClock(
                lambda: self.phases.sections_ns + self.network.phase_cpu_ns()
            )
            trio.lowlevel.add_instrument(self.loop_tasks)
        try:
            # Signals first: a SIGTERM from here on stops the node cleanly, and one the entry
            # point held while the process started (node.termination) is delivered now.
            with trio.open_signal_receiver(
                *watched_signals(tls=self.api.tls is not None)
            ) as signals:
                hand_over_termination()
                await self._serve(signals, task_status)
        finally:
            if self.loop_tasks is not None:
                trio.lowlevel.remove_instrument(self.loop_tasks)
            self.store.close()
            log.info("node_stopped", extra={"height": self.written_height})

    async def _serve(self, signals: AsyncIterator[int], task_status: trio.TaskStatus[Node]) -> None:
        """Start the listeners, report started, then run the node's tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.ports["p2p"] = await nursery.start(self.network.run)
            handler: Handler = self.api.handler(phases=self.phases)
            if self.testnet_hooks is not None:
                handler = self.testnet_hooks.wrap(handler)
            self.ports["rpc"] = await nursery.start(self.api.serve, handler)
            metrics = self.config.metrics
            if metrics.enabled and metrics.listen_address is not None:
                self.ports["metrics"] = await nursery.start(
                    serve_http,
                    self._metrics_only,
                    metrics.listen_address.host,
                    metrics.listen_address.port,
                    HttpLimits(body_bytes_max=1024, connections_max=16),
                )
            nursery.start_soon(self._signals, signals, nursery.cancel_scope)
            log.info(
                "node_started",
                extra={
                    "moniker": self.config.moniker,
                    "validator": self.index,
                    "role": "validator" if self.index is not None else "observer",
                    "height": self.store.height,
                    "state_sync": self.state_syncing,
                    "native_modules": self._native,
                    "signature_batch": self._signature_batch,
                    "signature_rule": self._signature_rule,
                    "merkle_tree": self._merkle_tree,
                    "codec_encoder": self._codec_encoder,
                    "codec_decoder": self._codec_decoder,
                    # The process CPU its start-up took (imports, opening the store), and
                    # the event loop thread's share of it.
                    "cpu_ns": time.process_time_ns() + self.store.writer_process_cpu_ns,
                    "loop_cpu_ns": thread_cpu_ns(),
                    "loop_cpu_wait_ns": run_delay_ns(),
                    **{f"{name}_port": port for name, port in self.ports.items()},
                },
            )
            task_status.started(self)
            if self._halt_warning is not None:
                log.warning(
                    "halt_height_set",
                    extra={
                        "halt_height": self.config.consensus.halt_height,
                        "warning": self._halt_warning,
                    },
                )
            if self.state_syncing:
                await self._state_sync()
                if self._halt_reached(self.store.height):
                    # A snapshot at or past the halt height: nothing more is committed.
                    await self._halt()
                    return
            if self._sync_writer_enabled:
                nursery.start_soon(self._sync_writer_at_start)
            nursery.start_soon(self._write_blocks)
            nursery.start_soon(self._consensus_driver)
            nursery.start_soon(self._ticker)
            nursery.start_soon(self._message_pump)
            nursery.start_soon(self._gossip_pump)
            nursery.start_soon(self._resender)
            nursery.start_soon(self._probe_for_blocks)

    async def _state_sync(self) -> None:
        """Install the peers' latest certified snapshot, retrying until one installs; then
        reopen the host, mempool and replica at its height. Peers' consensus messages and
        gossip are discarded meanwhile (they are about heights this node cannot judge yet)."""
        statesync = self.config.statesync
        limits = StateSyncLimits(
            peers_min=statesync.peers_min,
            chunk_requests_max=statesync.chunk_requests_max,
            request_timeout_seconds=statesync.request_timeout_ms / 1000,
        )
        async with trio.open_nursery() as drains:
            drains.start_soon(self._discard, self.network.messages)
            drains.start_soon(self._discard_transactions)
            while True:
                sync = StateSync(
                    request=self.network.request,
                    peers=lambda: [peer.public_key for peer in self.network.peers()],
                    store=self.store,
                    snapshots=self.snapshots,
                    # Genesis's: state sync walks the validator-set changes from there.
                    validators=self.genesis.validator_set,
                    chain_id=self.chain_id,
                    limits=limits,
                )
                try:
                    result = await sync.run()
                    break
                except NoSnapshotOffered as error:
                    if self.store.state_sync_pending is None:
                        # A young chain has no snapshot yet: join from genesis by block sync.
                        log.info("statesync_skipped", extra={"reason": str(error)})
                        self.state_syncing = False
                        drains.cancel_scope.cancel()
                        return
                    log.warning("statesync_failed", extra={"error": str(error)[:500]})
                    await trio.sleep(_STATE_SYNC_RETRY_SECONDS)
                except StateSyncWriteError as error:
                    raise _state_sync_write_failed(error) from error
                except StoreDamagedError:
                    raise  # the node stops (``store_damaged``)
                except (StateSyncError, StoreError, SnapshotError) as error:
                    log.warning("statesync_failed", extra={"error": str(error)[:500]})
                    await trio.sleep(_STATE_SYNC_RETRY_SECONDS)
            drains.cancel_scope.cancel()
        self._open_execution()
        self._validator_sets.clear()
        self.replica = self._make_replica()
        self.network.set_allowlist(self._allowlist())
        self._tip_timestamp_ms = self._chain_tip().timestamp_ms
        self.state_synced_from = result.height
        self.state_syncing = False
        self._new_block.set()
        self._new_block = trio.Event()

    @staticmethod
    async def _discard(inbox: AsyncIterable[object]) -> None:
        async for _ in inbox:
            pass

    async def _discard_transactions(self) -> None:
        """Drop gossip while a snapshot installs, forgetting it was seen (resends are taken)."""
        batch: InboundTransactions
        async for batch in self.network.transactions:
            self.network.forget_transactions(batch.transactions)

    async def _signals(self, signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
        async for number in signals:
            if number == signal.SIGHUP:
                # A rotation moved the log file, or the API's certificate was renewed
                # (``watched_signals``): write to a new file, serve the new certificate.
                reopen_log_file()
                self.api.reload_tls()
                continue
            log.info("signal_received", extra={"signal": signal.Signals(number).name})
            scope.cancel()
            return

    async def _metrics_only(self, request: Request) -> Response:
        if request.path == "/metrics":
            return Response(200, self.metrics_bytes(), "text/plain; version=0.0.4; charset=utf-8")
        return Response(404, b'{"error":"only /metrics is served here"}\n')

    # ------------------------------------------------------------------ consensus driver

    async def _ticker(self) -> None:
        """Tell the replica the time every ``tick_ms``. At most one tick waits for the driver:
        while it is busy (a synced batch executes for seconds) ticks are not queued up, and the
        one that waits is stamped when the driver takes it (``_next_input``), so the replica
        never replays seconds of stale clock readings (each of which could start a timeout or
        another block request as if that much time had passed since its last action)."""
        interval = self.config.consensus.tick_ms / 1000
        while True:
            await trio.sleep(interval)
            if self._tick_waiting:
                continue
            self._tick_waiting = True
            await self._inputs_send.send(Tick(_now_ms()))

    async def _next_input(self) -> Input:
        """The driver's next input; a tick carries the time it is taken at."""
        event = await self._inputs.receive()
        if isinstance(event, Tick):
            self._tick_waiting = False
            return Tick(_now_ms())
        return event

    async def _message_pump(self) -> None:
        message: InboundMessage
        async for message in self.network.messages:
            if message.kind != CONSENSUS_KIND:
                log.debug("unknown_message_kind", extra={"kind": message.kind})
                continue
            decoded = None
            if _is_block_response(message.payload):
                decoded = self._prefetch_signatures(message.payload)
            # The validator index is filled in by the driver, against the set it is deciding.
            await self._inputs_send.send(PeerMessage(message.payload, None, message.peer, decoded))

    def _prefetch_signatures(self, payload: bytes) -> Message | None:
        """Blocks arriving by sync: verify their transactions' signatures on worker threads,
        block after block, while the loop executes and commits the blocks before them (the
        commit of a block waits for its own verification; ``node.verified`` keeps the
        results). Only blocks this node asked for (up to the highest height the replica asked
        for, or any answer to the start-up request while it is expected), only above its
        height, and only behind a valid commit certificate: a peer cannot make the node verify
        transactions it would not have to apply anyway. Nothing is trusted here: the replica
        checks every block again, and a signature that fails is simply not cached, so
        execution checks it again. With ``[consensus] trust_certified_blocks`` there is
        nothing to verify ahead: the commit applies the block on its certificate.

        Returns the message when it decoded one, for the replica to take instead of decoding
        the same bytes again (and its blocks then cache their transaction hashes once)."""
        if self.config.consensus.trust_certified_blocks:
            return None
        answer_by = self._probe_answer_by
        if answer_by is not None and trio.current_time() > answer_by:
            self._probe_answer_by = answer_by = None  # overdue
        executed = self.host.height
        asked_to = self._blocks_asked_to if answer_by is None else None
        if asked_to is not None and asked_to <= executed:
            return None
        with self.phases.measure("consensus"):
            try:
                response = decode_message(payload, bytes_max=self.network.limits.message_bytes_max)
            except MessageError:
                return None  # the replica reports it
            if not isinstance(response, BlockResponse):
                return response
            self._probe_answer_by = None
            room = _PREFETCH_BLOCKS_MAX - len(self._verifying)
            entries = [
                (block, certificate)
                for block, certificate in response.entries
                if executed < block.height
                and (asked_to is None or block.height <= asked_to)
                and block.hash not in self._verifying
            ][: max(room, 0)]
            for block, _ in entries:
                self._verifying[block.hash] = trio.Event()
        if entries:
            assert self._nursery is not None
            self._nursery.start_soon(self._verify_synced, entries)
        return response

    async def _verify_synced(self, entries: list[tuple[Block, CommitCertificate]]) -> None:
        try:
            async with trio.open_nursery() as ahead:
                await self._verify_synced_groups(entries, ahead)
        finally:
            for block, _ in entries:
                event = self._verifying.pop(block.hash, None)
                if event is not None:
                    event.set()

    async def _verify_synced_groups(
        self, entries: list[tuple[Block, CommitCertificate]], ahead: trio.Nursery
    ) -> None:
        """``_verify_synced``'s groups: each group's certificates are checked here, in order,
        and its signatures verified in ``ahead``, with up to ``_PREFETCH_GROUPS_AT_ONCE``
        groups' verifications under way at once."""
        slots = trio.Semaphore(_PREFETCH_GROUPS_AT_ONCE)

        async def verify(blocks: list[Block]) -> None:
            if blocks:
                await slots.acquire()
                ahead.start_soon(verified_then_release, blocks)

        async def verified_then_release(blocks: list[Block]) -> None:
            try:
                await self._verify_ahead(blocks)
            finally:
                slots.release()

        position = 0
        size = 1
        while position < len(entries):
            indexed = [
                (index, entries[index])
                for index in range(position, min(position + size, len(entries)))
                if entries[index][0].height > self.host.height  # else executed meanwhile
            ]
            group = [entry for _, entry in indexed]
            position += size
            size = min(2 * size, _PREFETCH_GROUP_MAX)
            if not group:
                continue
            verdicts = await self._certify_all(group)
            passed = 0
            while passed < len(group) and verdicts[passed]:
                passed += 1
            await verify([block for block, _ in group[:passed]])
            if passed == len(group):
                continue
            # Above ``executed + 2`` the set of its height is not final yet: this was the
            # latest set known. Once the blocks before it are executed, its own set is, and
            # the block is checked against that.
            block, certificate = group[passed]
            with trio.move_on_after(_PREFETCH_WAIT_S):
                while block.height > self.host.height + 2:
                    await self._block_executed.wait()
            if (
                block.height > self.host.height + 2
                or not (await self._certify_all([(block, certificate)]))[0]
            ):
                break  # the replica drops it; the blocks after it cannot follow
            await verify([block])
            # The rest of the group was checked against a set that was not final for
            # this block's successors either: they start again, one group at a time.
            position = indexed[passed][0] + 1
            size = 1

    async def _certify_all(self, entries: list[tuple[Block, CommitCertificate]]) -> list[bool]:
        """For each of ``entries``, whether its certificate certifies its block by the
        validator set this node knows for the block's height (final up to ``executed + 2``,
        the latest scheduled set above). Checked here, on the loop's thread: a group's
        certificates hold a few dozen signatures at most, and a worker thread checking them
        one call at a time must win the GIL back from the busy loop after each one,
        which held each group of the lookahead back by 0.03-0.17 s
        (docs/performance.md, Catch-up)."""
        validators = [self.validators_at(block.height) for block, _ in entries]
        with self.phases.measure("consensus"):
            verdicts = _certificates_valid(
                entries, validators, self.chain_id, self._certificate_checks
            )
        await trio.lowlevel.checkpoint()
        return verdicts

    async def _verify_ahead(self, blocks: list[Block]) -> None:
        """Verify the signatures of ``blocks``' transactions (certified blocks above the
        executed height) into the verified cache, then release their commits."""
        if not blocks:
            return
        with self.phases.measure("execute"):
            # Decoded here, not on the worker threads: decoding is Python, holds the GIL, and
            # would only contend with the loop's execution for it.
            candidates: list[Transaction] = []
            for block in blocks:
                for data, tx_hash in zip(
                    block.transactions, block.transaction_hashes(), strict=True
                ):
                    if self._verified_transaction(data, tx_hash) is not None:
                        continue
                    try:
                        candidates.append(
                            Transaction.decode(data, chain_id=self.chain_id, check_signature=False)
                        )
                    except TransactionError:
                        continue
        for transaction in await self._verify_in_parallel(candidates):
            self._verified.add(transaction)
            self.transactions_verified_ahead += 1
        for block in blocks:
            event = self._verifying.pop(block.hash, None)
            if event is not None:
                event.set()

    async def _verify_in_parallel(self, candidates: list[Transaction]) -> list[Transaction]:
        """The transactions among ``candidates`` whose signature verifies, checked in
        ``[mempool] verify_workers`` slices at once."""
        workers = max(1, self.config.mempool.verify_workers)
        step = max(1, -(-len(candidates) // workers))
        results: list[tuple[list[Transaction], list[bool]]] = []

        async def verify(chunk: list[Transaction]) -> None:
            verdicts, cpu_ns = await trio.to_thread.run_sync(
                _verify_all, chunk, limiter=self._verify_limiter
            )
            self.phases.add("verify", cpu_ns)
            results.append((chunk, verdicts))

        async with trio.open_nursery() as nursery:
            for start in range(0, len(candidates), step):
                nursery.start_soon(verify, candidates[start : start + step])
        return [
            transaction
            for chunk, verdicts in results
            for transaction, verdict in zip(chunk, verdicts, strict=True)
            if verdict
        ]

    async def _consensus_driver(self) -> None:
        pending: deque[Input] = deque([Start(_now_ms())])
        while True:
            consensus = self.phases.measure("consensus")
            while pending:
                event = pending.popleft()
                if isinstance(event, PeerMessage) and event.peer is not None:
                    event = PeerMessage(
                        event.data, self._sender_index(event.peer), event.peer, event.decoded
                    )
                with consensus:
                    actions = self.replica.handle(event)
                for action in actions:
                    if isinstance(action, Commit):
                        # Executes the block and hands its store write to the block writer
                        # (a worker thread): the next synced block executes meanwhile. Every
                        # commit awaits at least a checkpoint, so a synced batch of blocks
                        # never holds the loop.
                        pending.append(
                            await self._commit(
                                action.block, action.certificate, action.next_app_hash
                            )
                        )
                        if self._halt_reached(action.block.height):
                            # Nothing the replica does at the next height leaves the node.
                            await self._halt()
                            return
                        continue
                    if self._tree_group and not isinstance(
                        action, Dropped | RequestBlocks | RequestProposal | ValidateBlock
                    ):
                        # What follows depends on the blocks (a block's validation or
                        # pre-execution waits for the group to end: ``_tree_group_ended``).
                        await self._end_tree_group()
                    if (
                        self._unwritten
                        and not isinstance(action, Dropped | RequestBlocks)
                        and not (
                            self.replica.synced_blocks_waiting
                            and isinstance(action, RequestProposal | ValidateBlock)
                        )
                    ):
                        # Nothing leaves the node, is persisted or is decided on top of a block
                        # until the store holds it: a crash never loses a block this node has
                        # acted on (only executed blocks that it syncs again). While synced
                        # blocks wait to be applied, building a proposal and validating a
                        # block start at once, over the executed state, while the blocks before
                        # are written: they only feed an input back, and what follows from it
                        # (the proposal's broadcast, a vote) is an action that waits here. (A
                        # syncing validator is primary every few heights; waiting here stalled
                        # the sync on each of them. At the tip the proposal waits for the
                        # write: it then also takes the transactions that arrived meanwhile,
                        # which keeps latency down under overload.) How long each kind waits
                        # is in the status (``waits``).
                        with self.waits.measure(_write_wait(action)):
                            await self._write_all()
                    if isinstance(action, Persist):
                        # Durable before the driver performs any later action (persist before
                        # send), but its fsync waits on a worker thread: gossip, admission and
                        # the API keep running meanwhile. The vote record has an LMDB
                        # environment of its own, so it never waits for the block writer.
                        with self.waits.measure("vote_persist"):
                            try:
                                cpu_ns = await trio.to_thread.run_sync(
                                    _persist_measured, self.store, action.state
                                )
                            except StoreError as error:
                                # The vote it records is never sent: the node stops here.
                                raise _persist_failed(error) from error
                        self.phases.add("consensus", cpu_ns)
                        continue
                    with consensus:
                        follow_up = self._perform(action)
                    if follow_up is not None:
                        pending.append(follow_up)
                if isinstance(event, ProposalPayload):
                    self._proposal_seen(event.height, len(event.transactions))
                    self._start_pre_execution(event)
            await self._end_tree_group()
            self._update_status_metrics()
            idle = self.waits.measure("sync_idle") if self.syncing else contextlib.nullcontext()
            with idle:
                pending.append(await self._next_input())

    def _pick_up_next_key(self) -> None:
        """Load ``validator_key.next.json`` if it appeared since we started (a key rotation in
        progress): the replica signs with it from the height the chain puts it in force."""
        path = self.home.path / NEXT_VALIDATOR_KEY_FILE
        if self._next_key_loaded or not path.exists():
            return
        try:
            key = load_key_file(path)
        except KeyFileError as error:
            if str(error) != self._next_key_problem:
                self._next_key_problem = str(error)
                log.warning("next_validator_key_unreadable", extra={"error": str(error)})
            return
        self._next_key_loaded = True
        if self.replica.add_standby_key(key):
            log.info("next_validator_key_loaded", extra={"public_key": key.public_key.hex()})

    def _sender_index(self, peer: bytes) -> int | None:
        """``peer``'s index in the validator set the replica is deciding with, if any."""
        validators = self.replica.validators
        if validators is not self._index_set:
            self._index_set = validators
            self._index_of_node_key = {
                v.node_key: i for i, v in enumerate(validators.validators) if v.node_key
            }
        return self._index_of_node_key.get(peer)

    def _node_key_of(self, index: int) -> bytes | None:
        """The node key of validator ``index`` of the set the replica is deciding with."""
        validators = self.replica.validators.validators
        return validators[index].node_key if 0 <= index < len(validators) else None

    def _perform(self, action: Action) -> Input | None:
        """Perform one action other than ``Commit`` and ``Persist`` (the driver awaits those);
        returns an input to feed back immediately, if any."""
        assert not isinstance(action, Commit | Persist), "the driver awaits commits and persists"
        if isinstance(action, Send):
            peer = self._node_key_of(action.to)
            if peer is not None:
                self.network.send(peer, CONSENSUS_KIND, action.message)
        elif isinstance(action, Broadcast):
            # Every connected peer follows the chain: validators of this height and the next,
            # and observers (the allowlist admits no one else).
            self.network.broadcast(CONSENSUS_KIND, action.message)
            if self.testnet_hooks is not None:
                self.testnet_hooks.after_broadcast(action.message)
        elif isinstance(action, RequestProposal):
            self._start_proposal(action)
        elif isinstance(action, ValidateBlock):
            self._proposal_seen(action.block.height, len(action.block.transactions))
            assert self._nursery is not None
            self._nursery.start_soon(self._validate, action.block)
        elif isinstance(action, ReportEvidence):
            try:
                self.store.add_evidence(action.evidence.height, action.evidence.encode())
            except StoreError as error:
                raise _evidence_write_failed(action.evidence.height, error) from error
            self.metrics.evidence.inc()
            log.warning("evidence_reported", extra={"evidence": repr(action.evidence)[:200]})
        elif isinstance(action, RequestBlocks):
            self._set_syncing(True)
            self._blocks_asked_to = max(self._blocks_asked_to, action.to_height)
            candidates = list(action.peer_keys) or [
                key for key in (self._node_key_of(i) for i in action.peers) if key is not None
            ]
            connected = {peer.public_key for peer in self.network.peers()}
            reachable = [key for key in candidates if key in connected] or candidates
            if reachable:
                self.network.send(reachable[0], CONSENSUS_KIND, action.message)
                log.info(
                    "block_sync_requested",
                    extra={
                        "from": action.from_height,
                        "to": action.to_height,
                        "peer": reachable[0].hex()[:16],
                    },
                )
        elif isinstance(action, ServeBlocks):
            self._serve_blocks(action)
        elif isinstance(action, Dropped):
            self.metrics.dropped_messages.labels(reason=str(action.reason)).inc()
            log.debug(
                "input_dropped", extra={"reason": str(action.reason), "detail": action.detail}
            )
        return None

    def _serve_blocks(self, action: ServeBlocks) -> None:
        """Answer a block-sync request within the peer's ``ServeBudget``: as many blocks as
        fit in what it may still receive this second, or nothing (it asks again later)."""
        peer = action.peer
        if peer is None and action.to is not None:
            peer = self._node_key_of(action.to)
        if peer is None:
            return
        now_ms = int(time.monotonic() * 1000)
        bytes_max = min(
            self.network.limits.message_bytes_max,
            self._serve_budget.available(peer, now_ms),
        )
        top = min(action.to_height, self.store.height)
        entries = []
        estimate_bytes = 0
        for height in range(action.from_height, top + 1):
            if estimate_bytes > bytes_max:
                break
            raw = self.store.block_bytes(height)
            stored = self._load_block(height)
            if raw is None or stored is None:
                break
            entries.append(stored)
            estimate_bytes += len(raw) + _BLOCK_ENTRY_OVERHEAD_BYTES
        data = encode_block_response(entries, bytes_max=bytes_max)
        if entries and data == _EMPTY_BLOCK_RESPONSE:
            self.metrics.dropped_messages.labels(reason="serve_budget").inc()
            log.info(
                "block_serve_deferred",
                extra={
                    "peer": peer.hex()[:16],
                    "from": action.from_height,
                    "bytes_max": bytes_max,
                },
            )
            return
        self._serve_budget.spend(peer, now_ms, len(data))
        self.network.send(peer, CONSENSUS_KIND, data)

    # ------------------------------------------------------------------ proposals

    def _start_proposal(self, action: RequestProposal) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._propose, action)

    def _proposal_seen(self, height: int, transactions: int) -> None:
        """A proposal for ``height`` reached this node (its own, or to validate)."""
        if height != self._deciding.height:
            self._deciding = _Deciding(height, transactions, trio.current_time())
            self._arrivals.seen(height, self._deciding.seen_at_s, self.written_height)
        else:
            self._deciding = _Deciding(height, transactions, self._deciding.seen_at_s)

    def _in_flight(self) -> int:
        """Transactions of the proposal being decided on top of the committed tip (they are
        in the pool until their block commits, but no longer wait for a proposal)."""
        deciding = self._deciding
        return deciding.transactions if deciding.height == self.host.height + 1 else 0

    async def _propose(self, action: RequestProposal) -> None:
        """Reap the pool into a proposal for ``action``'s height. Blocks start at most once
        per ``block_interval_ms``, counted from when the previous proposal was seen: a round
        that took longer than the interval already gathered transactions for that long, so
        under load the next proposal goes out as soon as the previous block commits."""
        consensus = self.config.consensus
        previous_s = self._deciding.seen_at_s
        await trio.sleep_until(previous_s + consensus.block_interval_ms / 1000)
        if not len(self.mempool) and consensus.empty_block_interval_ms:
            # Nothing to order: wait for a transaction, at most the empty-block interval.
            with trio.move_on_at(previous_s + consensus.empty_block_interval_ms / 1000):
                while not len(self.mempool):
                    await self._transaction_arrived.wait()
        with self.phases.measure("proposal"):
            transactions = self.mempool.reap(
                transactions_max=min(
                    action.transactions_max,
                    self.config.block.proposal_transactions_max,
                    self.admission.proposal_limit(time.monotonic()),
                ),
                bytes_max=min(action.transaction_bytes_max, self.config.block.proposal_bytes_max),
            )
        await self._inputs_send.send(
            ProposalPayload(action.height, action.view, tuple(transactions), _now_ms())
        )

    # ------------------------------------------------------------------ validation and commit

    async def _validate(self, block: Block) -> None:
        known = await self._verify_block_transactions(block)
        verdict: ValidityVerdict
        if known is None:
            verdict = ValidityVerdict(block.hash, False, "a transaction fails its stateless checks")
        elif self.host.height != block.height - 1:
            verdict = ValidityVerdict(block.hash, False, "not on top of the executed tip")
        else:
            await self._tree_group_ended()
            with self.phases.measure("execute"):
                result = self._execute_over_tip(block, known)
                self._remember_execution(block.hash, result)
            verdict = ValidityVerdict(block.hash, True)
        await self._inputs_send.send(verdict)

    def _remember_execution(self, block_hash: bytes, result: BlockResult) -> None:
        self._validated[block_hash] = _Validated(self.host.height, result)
        while len(self._validated) > _VALIDATED_CACHE_MAX:
            self._validated.popitem(last=False)

    def _start_pre_execution(self, payload: ProposalPayload) -> None:
        if payload.transactions and self.host.height == payload.height - 1:
            assert self._nursery is not None
            self._nursery.start_soon(self._pre_execute, payload)

    async def _pre_execute(self, payload: ProposalPayload) -> None:
        """The primary executes its own proposal while the others validate it, instead of
        after the commit certificate arrives (its commit then only writes). The block is
        rebuilt exactly as the replica builds it from the payload; the result is cached under
        that block's hash and parent height, so a block that differs (a re-proposal in a later
        view) or a moved tip simply misses the cache and executes at commit."""
        # The proposal was queued for the peers before this task was started; one checkpoint
        # lets the network's send loops (already runnable) write it before we hold the loop.
        await trio.lowlevel.checkpoint()
        await self._tree_group_ended()
        if self.host.height != payload.height - 1:
            return
        with self.phases.measure("execute"):
            self._pre_execute_now(payload)

    def _pre_execute_now(self, payload: ProposalPayload) -> None:
        next_validators = self.replica.next_validators
        proposer = self.replica.index
        if next_validators is None or proposer is None:
            return
        block = Block.build(
            chain_id=self.chain_id,
            height=payload.height,
            view=payload.view,
            parent_hash=self.store.last_block_hash,
            app_hash=self.host.app_hash,
            next_validators_hash=next_validators.hash(),
            proposer=proposer,
            timestamp_ms=max(payload.timestamp_ms, self._tip_timestamp_ms + 1),
            transactions=payload.transactions,
        )
        if block.hash in self._validated:
            return
        result = self._execute_over_tip(block, self.mempool.known())
        self._remember_execution(block.hash, result)

    def _execute_over_tip(self, block: Block, known: Mapping[bytes, Transaction]) -> BlockResult:
        """Execute a block proposed on top of the executed tip (to validate or pre-execute
        it): its tree update reads the tip's tree, so no tree group may be open."""
        assert not self._tree_group, "a tree group ends before a block executes over the tip"
        return self._execute_block(self._block_context(block), block, known=known)

    async def _tree_group_ended(self) -> None:
        """Until no tree group is open (the driver ends one before it waits for input)."""
        while self._tree_group:
            await self._tree_group_closed.wait()

    async def _verify_block_transactions(self, block: Block) -> dict[bytes, Transaction] | None:
        """Decode and verify every transaction (signatures on worker threads); None if any
        fails. Transactions in the mempool, or whose bytes this node verified before, are not
        verified again."""
        known: dict[bytes, Transaction] = {}
        to_verify: list[Transaction] = []
        with self.phases.measure("execute"):
            for data, tx_hash in zip(block.transactions, block.transaction_hashes(), strict=True):
                # Verified before: pending in the mempool (keyed by the hash of the whole
                # encoded transaction, and compared byte for byte) or in the verified cache
                # (keyed by the whole encoded transaction).
                cached = self._verified_transaction(data, tx_hash)
                if cached is not None:
                    known[cached.hash] = cached
                    continue
                try:
                    transaction = Transaction.decode(
                        data, chain_id=self.chain_id, check_signature=False
                    )
                except TransactionError:
                    return None
                to_verify.append(transaction)
        if to_verify:
            results = await self._verify(to_verify)
            if not all(results):
                return None
            for transaction in to_verify:
                known[transaction.hash] = transaction
                self._verified.add(transaction)
        return known

    def _verified_transaction(self, data: bytes, tx_hash: bytes) -> Transaction | None:
        """The decoded transaction with exactly the bytes ``data`` (whose hash is ``tx_hash``)
        whose signature this node verified (pending in the mempool, or in the verified cache),
        or None."""
        pending = self.mempool.get(tx_hash)
        if pending is not None and pending.encoded == data:
            return pending
        return self._verified.get(data)

    def _known_for(self, block: Block) -> dict[bytes, Transaction]:
        """The verified transactions among ``block``'s, by hash (``execute_block``'s
        ``known``: the host compares the whole bytes again)."""
        known: dict[bytes, Transaction] = {}
        for data, tx_hash in zip(block.transactions, block.transaction_hashes(), strict=True):
            verified = self._verified_transaction(data, tx_hash)
            if verified is not None:
                known[verified.hash] = verified
        return known

    def _execute_block(
        self,
        context: BlockContext,
        block: Block,
        *,
        known: Mapping[bytes, Transaction],
        vouched_app_hash: bytes | None = None,
    ) -> BlockResult:
        """``AppHost.execute_block`` of ``block``'s transactions, counted (``blocks_executed``
        in the status: a node executes each committed block once, when it validates or
        proposes it)."""
        self.blocks_executed += 1
        return self.host.execute_block(
            context,
            block.transactions,
            known=known,
            hashes=block.transaction_hashes(),
            vouched_app_hash=vouched_app_hash,
        )

    def _block_context(self, block: Block) -> BlockContext:
        validators = self.validators_at(block.height)
        index = block.header.proposer
        proposer = validators.public_key(index) if index < validators.size else bytes(32)
        return BlockContext(block.height, block.header.timestamp_ms, proposer, self.chain_id)

    async def _commit(
        self, block: Block, certificate: CommitCertificate, next_app_hash: bytes | None = None
    ) -> Input:
        """Execute (or reuse the cached execution of) ``block`` and queue its store write.

        A synced block whose successor is certified (``next_app_hash``: the app hash that
        successor commits to) joins a tree group instead (``[consensus] sync_tree_blocks``):
        it executes without updating the Merkle tree, reports that app hash, and waits with
        the group's other blocks until ``_close_tree_group`` updates the tree once for all
        of them (after the group's last block, or before anything that reads the tree or
        depends on the blocks), checks the root against the last one's app hash, and queues
        them for writing together.

        The block writer (``_write_blocks``) writes queued blocks in order on a worker thread,
        several in one LMDB write transaction and fsync when they queue up (block sync); the
        next block executes meanwhile, reading the state through ``UnwrittenStateBackend``
        (the store's state with the unwritten blocks' writes on top). The driver performs no
        action that depends on a block (a send or broadcast, a persisted vote, served blocks,
        evidence) before ``_write_all``, so the store holds every block this node acts on;
        while synced blocks wait, a proposal is built and a block validated meanwhile, but their
        broadcast or vote leaves the node after the write. Nothing else writes to the store:
        every write (replica state, evidence, blocks) comes from the driver, or from the block
        writer while the driver awaits it, except the block writer's write of the Merkle tree's
        held records, which nothing the driver does depends on (LMDB's one writer at a time
        orders it with the driver's evidence; the replica's state has an environment of its
        own, so a vote never waits for it). The API, gossip and admission keep running and
        read committed state through LMDB's MVCC snapshots."""
        cached = self._validated.pop(block.hash, None)
        grouped = (
            next_app_hash is not None
            and self.config.consensus.sync_tree_blocks > 1
            and (cached is None or cached.parent_height != self.host.height)
        )
        if not grouped:
            await self._end_tree_group()  # this block's tree update reads the group's tree
        if cached is not None and cached.parent_height == self.host.height:
            result = cached.result
        else:
            verifying = self._verifying.get(block.hash)
            if verifying is not None:
                with self.waits.measure("signatures_ahead"):
                    await verifying.wait()
            with self.phases.measure("execute"):
                known = self._known_for(block)
                if self.config.consensus.trust_certified_blocks:
                    self.transactions_trusted += _trust_certified(block, known, self.chain_id)
                result = self._execute_block(
                    self._block_context(block),
                    block,
                    known=known,
                    vouched_app_hash=next_app_hash if grouped else None,
                )
        if len(self._unwritten) >= self._unwritten_max:
            with self.waits.measure("write_queue_full"):
                while len(self._unwritten) >= self._unwritten_max:
                    await self._blocks_written.wait()
        with self.phases.measure("commit"):
            self._state.add(block.height, result.writes, result.tree, result.write_map)
            if grouped:
                self._tree_group.append((block, certificate, result))
            else:
                self._unwritten.append((block, certificate, result))
                self._unwritten_added.set()
            unwritten_transactions = self._unwritten_transactions
            for receipt in result.receipts:
                tx_hash = receipt.transaction_hash
                unwritten_transactions[tx_hash] = unwritten_transactions.get(tx_hash, 0) + 1
            self._after_execution(block, result)
            self._follow_sync(block.height, next_app_hash is not None)
        if grouped and (
            len(self._tree_group) >= self.config.consensus.sync_tree_blocks
            or self._snapshot_height(block.height)
        ):
            await self._end_tree_group()
        with self.phases.measure("recheck"):
            update = self.mempool.update(
                block.transaction_hashes(), [written for written, _ in result.writes]
            )
            for tx_hash, reason in update.evicted:
                self._remember_rejection(tx_hash, "evicted", reason)
                self._admitted_at.pop(tx_hash, None)
        # One checkpoint per block, as when the driver awaited each block's write.
        await trio.lowlevel.checkpoint()
        # The set the state after this block puts in force two heights on.
        return BlockExecuted(block.height, result.app_hash, self.validators_at(block.height + 2))

    def _close_tree_group(self) -> NodeStoppedError | None:
        """Update the Merkle tree once for the grouped blocks' merged writes (the tree is a
        function of the state's entries alone), check that its root is the app hash of the
        group's last block (the one its certified successor commits to), give that block the
        records and queue the group for writing as one batch.

        A different root means this node's state differs from what a quorum of validators
        certified: the error to stop with is returned (``_diverged``, naming the first block
        whose state differs), and none of the group is queued for writing."""
        group = self._tree_group
        block, certificate, result = group[-1]
        with self.phases.measure("execute"):
            tree = self.host.tree_update(_merged_writes(group))
        if tree.root != result.app_hash:
            return self._diverged(group)
        with self.phases.measure("commit"):
            self._state.complete_tree(block.height, tree)
            group[-1] = (block, certificate, replace(result, tree=tree))
            self._tree_group_inner.update(entry[0].height for entry in group[:-1])
            self._unwritten.extend(group)
            self._unwritten_added.set()
        self.tree_groups += 1
        self.tree_group_blocks += len(group)
        self._tree_group = []
        self._tree_group_closed.set()
        self._tree_group_closed = trio.Event()
        return None

    async def _end_tree_group(self) -> None:
        """Close the open tree group, if any (``_close_tree_group``). If the state diverged,
        the node stops: once the blocks queued before the group are written (they were
        checked), with ``NodeStoppedError``; the group's blocks are not written, and the
        executed state past them is never used again."""
        if not self._tree_group:
            return
        stopped = self._close_tree_group()
        if stopped is not None:
            while self._unwritten:
                await self._blocks_written.wait()
            raise stopped

    def _diverged(
        self, group: list[tuple[Block, CommitCertificate, BlockResult]]
    ) -> NodeStoppedError:
        """The node's state after ``group`` differs from the certified chain's: find the first
        block whose own tree root is not its certified app hash (the tree after each block is
        the group's start with the writes up to it merged), log it and say so."""
        first, last = group[0][0].height, group[-1][0].height
        height, root, certified = last, b"", b""
        for count in range(1, len(group) + 1):
            block, _, result = group[count - 1]
            # The last block's root is the group's (the tree depends on the state alone).
            height = block.height
            root = self.host.tree_update(_merged_writes(group[:count])).root
            certified = result.app_hash
            if root != certified:
                break
        log.critical(
            "state_diverged",
            extra={
                "height": height,
                "app_hash": root.hex(),
                "certified_app_hash": certified.hex(),
                "not_written_from": first,
                "not_written_to": last,
            },
        )
        return NodeStoppedError(
            f"the state after block {height} has app hash {root.hex()[:16]}, but the certified "
            f"chain says {certified.hex()[:16]}: this node executes blocks differently from the "
            f"validators that certified them; blocks {first}-{last} were not written (the "
            f"store stays at height {first - 1})"
        )

    def _snapshot_height(self, height: int) -> bool:
        """Whether the node exports a state snapshot at ``height``."""
        interval = self.config.statesync.snapshot_interval
        return bool(interval) and height % interval == 0

    def _halt_reached(self, height: int) -> bool:
        """Whether a store at ``height`` has reached ``[consensus] halt_height`` (never with
        the key at 0)."""
        return 0 < self.config.consensus.halt_height <= height

    async def _halt(self) -> None:
        """Stop the node at ``[consensus] halt_height``: once the store holds every block
        committed (and the Merkle tree records held for them), end the node's tasks; the node
        exits as after SIGTERM, and refuses to start again until the key is raised or
        removed."""
        await self._write_all()
        await self._write_held_tree()
        # The votes this node sent last reach the validators still deciding the halt height's
        # block (each stops once it commits it; one that missed them would wait for a block
        # nobody serves until the nodes start again).
        sent = await self.network.wait_consensus_sent(_HALT_SEND_SECONDS)
        self.halted_at = self.written_height
        log.warning(
            "halt_height_reached",
            extra={
                "height": self.written_height,
                "halt_height": self.config.consensus.halt_height,
                "consensus_sent": sent,
                # As ``/status`` counts them (since the start): its API is gone from here on.
                "transactions_committed": self.metrics.committed_total,
            },
        )
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    async def _write_all(self) -> None:
        """Until the store holds every executed block."""
        await self._end_tree_group()
        while self._unwritten:
            await self._blocks_written.wait()

    async def _write_blocks(self) -> None:
        """The block writer: writes the executed blocks in order, as many as are queued (up to
        ``_unwritten_max``, and a snapshot height always last) in one write
        transaction on a worker thread; then does what follows each block's commit, and
        writes the Merkle tree's held records when they are due, in a transaction of their
        own, after what waited on the blocks has gone on."""
        while True:
            if self._sync_writer_wanted and (
                self.store.writer_process_pid is None or self._sync_writer_done()
            ):
                await self._switch_writer()
            if not self._unwritten:
                self._unwritten_added = trio.Event()
                await self._unwritten_added.wait()
                continue
            batch = self._write_batch()
            try:
                commit_ns = await trio.to_thread.run_sync(
                    _write_measured,
                    # At the tip the tree waits for a transaction of its own, after what
                    # waits on the blocks; while syncing only the sync waits on a write, and
                    # the tree, when due, goes in this one (one fsync and, with the writer
                    # process, one request instead of two).
                    functools.partial(self.store.commit_blocks, batch, defer_tree=not self.syncing),
                    self.heap,
                )
            except StoreError as error:
                raise _write_failed(batch[0][0].height, batch[-1][0].height, error) from error
            self.phases.add("commit", commit_ns + self.store.take_writer_cpu_ns())
            with self.phases.measure("commit"):
                unwritten_transactions = self._unwritten_transactions
                for block, certificate, result in batch:
                    self._unwritten.popleft()
                    self._tree_group_inner.discard(block.height)
                    self._state.written(block.height)
                    for receipt in result.receipts:
                        tx_hash = receipt.transaction_hash
                        left = unwritten_transactions.pop(tx_hash) - 1
                        if left:
                            unwritten_transactions[tx_hash] = left
                    self._after_write(block, certificate, result)
            self._blocks_written.set()
            self._blocks_written = trio.Event()
            # The tree, when due, in a transaction of its own once what waited on the blocks
            # (votes, proposals, answers) has gone on: its records are the largest write and
            # nothing waits on them (``Store.write_held_tree``).
            if self.store.tree_write_due():
                await self._write_held_tree()

    async def _write_held_tree(self) -> None:
        """Write the Merkle tree records the store holds, in a write transaction of their own
        on a worker thread (``Store.write_held_tree``), counted as commit CPU."""
        try:
            tree_ns = await trio.to_thread.run_sync(
                _write_measured, self.store.write_held_tree, self.heap
            )
        except StoreError as error:
            raise _write_failed(None, self.written_height, error) from error
        self.phases.add("commit", tree_ns + self.store.take_writer_cpu_ns())

    def _write_batch(self) -> list[tuple[Block, CommitCertificate, BlockResult]]:
        """The next blocks to write in one transaction: the snapshot's export must open its
        read transaction right after its height is written, so a snapshot height ends it."""
        batch: list[tuple[Block, CommitCertificate, BlockResult]] = []
        for entry in self._unwritten:
            batch.append(entry)
            height = entry[0].height
            if height in self._tree_group_inner:
                continue  # a tree group is written whole (its last block holds its records)
            if len(batch) >= self._unwritten_max or self._snapshot_height(height):
                break
        return batch

    def _after_execution(self, block: Block, result: BlockResult) -> None:
        """The host, caches and validator sets move on to the state after ``block``."""
        self.host.committed(block.height, result.app_hash, result.writes)
        for event in result.block_events:
            if event.kind == EVENT_END_BLOCK_FAULT:
                # An app's end-of-block work failed (a bug in the app): the block committed
                # without it, and the same work is tried again at the next block.
                attributes = event.attributes
                log.error(
                    "end_block_fault",
                    extra={
                        "height": block.height,
                        "app": attributes.get("app"),
                        "code": attributes.get("code"),
                        "detail": attributes.get("message"),
                    },
                )
        for data in block.transactions:
            self._verified.discard(data)
        self._tip_timestamp_ms = block.header.timestamp_ms
        self._validated.clear()
        next_validators = self.validators_at(block.height + 2)
        if next_validators != self.validators_at(block.height + 1):
            log.info(
                "validator_set_scheduled",
                extra={
                    "effective_height": block.height + 2,
                    "validators": next_validators.size,
                    "hash": next_validators.hash().hex()[:16],
                },
            )
        self.network.set_allowlist(self._allowlist())
        self._pick_up_next_key()
        self._block_executed.set()
        self._block_executed = trio.Event()

    def _follow_sync(self, height: int, successor_held: bool) -> None:
        """Block ``height`` executed: the node syncs while the replica holds the synced block
        after it (which vouched for its app hash), and until every block it asked for has
        executed. The replica asks for the next answer while one is applied, and its height
        moves with each block: it says nothing of how far the peers are."""
        if successor_held:
            if not self.syncing:
                self._set_syncing(True)
            if (
                not self._sync_writer_wanted
                and self.replica.synced_blocks_waiting >= _SYNC_WRITER_PROCESS_BLOCKS
            ):
                self._start_sync_writer()
        elif self.syncing and height >= self._blocks_asked_to:
            self._set_syncing(False)

    @property
    def _sync_writer_enabled(self) -> bool:
        """Whether a long sync's writes go to a block writer process of their own (not when
        one writes for the node's whole run)."""
        store = self.config.store
        return store.sync_writer_process and not store.writer_process

    def _start_sync_writer(self) -> None:
        """A long sync: the block writer hands its writes to a block writer process before
        its next write."""
        if self._sync_writer_enabled and self._spawn_sync_writer():
            self._sync_writer_wanted = True
            self._unwritten_added.set()

    def _spawn_sync_writer(self) -> bool:
        """Start a block writer process that waits to take over (on this thread, which lives
        as long as the store: the child dies with the thread that started it); False (logged)
        when it cannot start."""
        try:
            self.store.spawn_writer_process()
        except StoreError as error:
            log.warning("block_writer_process_unavailable", extra={"error": str(error)})
            return False
        return True

    async def _sync_writer_at_start(self) -> None:
        """Start a block writer process with the node (a restarted node is most often behind:
        the process loads its code while the node looks for its peers); it ends if no long
        sync began within ``_SYNC_WRITER_PROCESS_IDLE_S`` (its memory is the node's to spend
        otherwise)."""
        if not self._spawn_sync_writer():
            return
        await trio.sleep(_SYNC_WRITER_PROCESS_IDLE_S)
        if not self._sync_writer_wanted:
            await trio.to_thread.run_sync(self.store.discard_spawned_writer)

    def _set_syncing(self, syncing: bool) -> None:
        """The node starts or stops block sync. With the block writer process, a sync queues
        more executed blocks for writing and holds the tree's records for more blocks
        (nothing waits on those writes but the sync itself); at the tip the writes stay
        small, so a round never waits on a large one. A block writer process started for the
        sync stops once the node has been out of sync for ``_SYNC_WRITER_PROCESS_LINGER_S``
        (the block writer stops it, between two writes)."""
        now = trio.current_time()
        if syncing:
            self._sync_ended_at = None
        elif self.syncing:
            self._sync_ended_at = now
            if self._sync_writer_wanted and self._nursery is not None:
                self._nursery.start_soon(self._wake_writer_at, now + _SYNC_WRITER_PROCESS_LINGER_S)
        self.syncing = syncing
        self._writer_settings()

    async def _wake_writer_at(self, deadline: float) -> None:
        """Wake the block writer at ``deadline`` (to stop a sync's writer process on time
        when no block comes to write)."""
        await trio.sleep_until(deadline)
        self._unwritten_added.set()

    def _sync_writer_done(self) -> bool:
        """Whether the block writer process started for a sync is due to stop."""
        ended_at = self._sync_ended_at
        return (
            self._sync_writer_wanted
            and ended_at is not None
            and trio.current_time() - ended_at >= _SYNC_WRITER_PROCESS_LINGER_S
        )

    def _writer_settings(self) -> None:
        """The write queue's length and the tree's write interval for a sync with the block
        writer process, else the node's own."""
        longer = self.syncing and self.store.writer_process_pid is not None
        self._unwritten_max = (
            _UNWRITTEN_BLOCKS_MAX_WRITER_PROCESS if longer else _UNWRITTEN_BLOCKS_MAX
        )
        self.store.tree_flush_blocks = (
            _TREE_FLUSH_BLOCKS_WRITER_PROCESS if longer else self._tree_flush_blocks
        )

    async def _switch_writer(self) -> None:
        """Between two writes: hand the writes to the block writer process started for a
        sync, or take them back once the sync is over. A process that cannot open the store
        leaves the writes on the thread (logged)."""
        if self._sync_writer_done():
            self._sync_writer_wanted = False
            pid = self.store.writer_process_pid
            await trio.to_thread.run_sync(self.store.stop_writer_process)
            if pid is not None:
                log.info("block_writer_process_stopped", extra={"pid": pid})
        elif self._sync_writer_wanted and self.store.writer_process_pid is None:
            # Spawned on this thread (nothing to do when one waits), attached on a worker's.
            spawned = self._spawn_sync_writer()
            self._sync_writer_wanted = spawned and await self._attach_sync_writer()
        self._writer_settings()

    async def _attach_sync_writer(self) -> bool:
        """Hand the writes to the spawned block writer process; False (logged) when it
        cannot take them."""
        try:
            await trio.to_thread.run_sync(self.store.attach_writer_process)
        except StoreError as error:
            log.warning("block_writer_process_unavailable", extra={"error": str(error)})
            return False
        log.info(
            "block_writer_process_started",
            extra={"pid": self.store.writer_process_pid, "for": "sync"},
        )
        return True

    def _after_write(
        self, block: Block, certificate: CommitCertificate, result: BlockResult
    ) -> None:
        """The store holds ``block``: count it, keep it for readers, tell the waiters, log the
        commit."""
        self.written_height = block.height
        self.written_block_hash = block.hash
        recent = self._recent_blocks
        recent[block.height] = (block, certificate)
        while len(recent) > _RECENT_BLOCKS_MAX:
            recent.popitem(last=False)
        self.written_app_hash = result.app_hash
        self._maybe_snapshot(block.height)
        now = time.monotonic()
        admitted_at = self._admitted_at
        admitted = [admitted_at.pop(receipt.transaction_hash, None) for receipt in result.receipts]
        self.metrics.commit_latency.observe_many([now - at for at in admitted if at is not None])
        self.metrics.record_commit(now, block.height, len(block.transactions))
        busy = self._arrivals.committed(block.height, trio.current_time())
        self.admission.observe_commit(now, len(block.transactions), busy)
        self.metrics.last_block_time.set(block.header.timestamp_ms / 1000)
        self._new_block.set()
        self._new_block = trio.Event()
        log.info(
            "block_committed",
            extra={
                "height": block.height,
                "view": certificate.view,
                "hash": block.hash.hex()[:16],
                "transactions": len(block.transactions),
                "app_hash": result.app_hash.hex()[:16],
            },
        )

    def _maybe_snapshot(self, height: int) -> None:
        """Every ``snapshot_interval`` heights, export the state just committed. The read
        transaction is opened here, before the driver can commit the next height, so the
        export sees exactly this height however long it runs."""
        interval = self.config.statesync.snapshot_interval
        if not interval or height % interval or self._snapshot_running:
            return
        reader = self.store.open_state_reader()
        self._snapshot_running = True
        assert self._nursery is not None
        self._nursery.start_soon(self._export_snapshot, reader)

    async def _export_snapshot(self, reader: StateReader) -> None:
        started = time.monotonic()
        # A worker thread cannot be cancelled: when the node stops, the watcher tells the
        # export to give up, so the node does not wait for a whole export on its way out.
        cancel = threading.Event()

        async def watch() -> None:
            try:
                await trio.sleep_forever()
            finally:
                cancel.set()

        failure: Exception | None = None
        try:
            async with trio.open_nursery() as watcher:
                watcher.start_soon(watch)
                try:
                    manifest = await trio.to_thread.run_sync(
                        partial(
                            export_snapshot,
                            reader,
                            self.snapshots.path,
                            self.chain_id,
                            cancel=cancel,
                        )
                    )
                except (SnapshotError, OSError) as error:
                    failure = error
                watcher.cancel_scope.cancel()
        finally:
            reader.close()
            self._snapshot_running = False
        if failure is not None:
            log.warning("snapshot_failed", extra={"height": reader.height, "error": str(failure)})
            return
        removed = self.snapshots.retain(self.config.statesync.snapshot_retention)
        log.info(
            "snapshot_taken",
            extra={
                "height": manifest.height,
                "entries": manifest.entries,
                "chunks": len(manifest.chunks),
                "bytes": manifest.size_bytes,
                "seconds": round(time.monotonic() - started, 3),
                "removed": removed,
            },
        )

    def _load_block(self, height: int) -> tuple[Block, CommitCertificate] | None:
        recent = self._recent_blocks.get(height)
        if recent is not None:
            return recent
        block = self.store.block(height)
        certificate = self.store.certificate(height)
        if block is None or certificate is None:
            return None
        return block, certificate

    def _update_status_metrics(self) -> None:
        status = self.replica.status()
        if status.view > 0 and (status.height, status.view) != self._last_view:
            self.metrics.view_changes.inc()
        self._last_view = (status.height, status.view)
        self.metrics.view.set(status.view)
        self.metrics.mempool_transactions.set(len(self.mempool))
        self.metrics.mempool_bytes.set(self.mempool.size_bytes)

    # ------------------------------------------------------------------ transaction intake

    async def _gossip_pump(self) -> None:
        batch: InboundTransactions
        async for batch in self.network.transactions:
            raw = list(batch.transactions)
            # Coalesce the batches that arrived meanwhile (one per peer frame): one signature
            # batch and one worker-thread hop for all of them instead of one each. A small
            # batch waits a moment for more: every batch has a fixed cost (a thread hop is
            # about one signature check's worth of CPU), and a few ms are nothing next to a
            # block's round.
            self._coalesce(raw)
            if len(raw) < _ADMIT_BATCH_MIN:
                await trio.sleep(_GOSSIP_LINGER_S)
                self._coalesce(raw)
            # Peers' admissions count as waiting while they are verified here, so this node's
            # clients do not fill the room they already took.
            self._gossip_admitting = len(raw)
            try:
                outcomes = await self._admit_many(raw, source="gossip_in")
            finally:
                self._gossip_admitting = 0
            retake = passing_refusals(raw, outcomes)
            if retake:
                self.network.forget_transactions(retake)

    async def _probe_for_blocks(self) -> None:
        """At start, ask the first peer that connects for the blocks after ours.

        The replica asks for blocks once it sees f + 1 validators ahead, which it learns from
        their messages; a chain waiting on this node (it is the primary of the height the
        others are at) is silent until their view change times out. The answer is a block
        response like any other: every certificate and block is verified by the replica. A
        peer with no later block answers nothing."""
        with trio.move_on_after(_PROBE_WAIT_S):
            peer = await self.network.wait_any_peer_connected()
            height = self.store.height
            window = self.replica_config.sync_blocks_max
            message = encode_message(BlockRequest(height + 1, height + window))
            self._probe_answer_by = trio.current_time() + _PROBE_ANSWER_S
            self.network.send(peer, CONSENSUS_KIND, message)
            log.info(
                "block_sync_probed",
                extra={"from": height + 1, "to": height + window, "peer": peer.hex()[:16]},
            )

    async def _resender(self) -> None:
        """Send this node's clients' long-pending transactions to the peers again.

        Gossip goes out once, at admission, to the peers connected then; a peer that connected
        later, or shed or dropped the transaction, would otherwise never see it, and a
        transaction only this node holds waits for this node's turn to propose (forever on an
        observer)."""
        due = self._resend_due
        while True:
            await trio.sleep(1.0)
            now = time.monotonic()
            resend: list[bytes] = []
            for tx_hash, when in list(due.items()):
                transaction = self.mempool.get(tx_hash)
                if transaction is None:
                    del due[tx_hash]
                elif when <= now and len(resend) < _RESEND_BATCH_MAX:
                    resend.append(transaction.encoded)
                    waited = now - self._admitted_at.get(tx_hash, now)
                    due[tx_hash] = now + min(_RESEND_INTERVAL_MAX_S, max(_RESEND_AFTER_S, waited))
            if resend:
                with self.phases.measure("gossip_out"):
                    self.network.resend_transactions(resend, linger=self.machine_idle.busy())
                log.debug("transactions_resent", extra={"transactions": len(resend)})

    def _coalesce(self, raw: list[bytes]) -> None:
        while len(raw) < _ADMIT_BATCH_MAX:
            try:
                raw.extend(self.network.transactions.receive_nowait().transactions)
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    async def _verify(self, transactions: list[Transaction]) -> list[bool]:
        """Signature verdicts for ``transactions``: on a worker thread (the check releases the
        GIL), except for at most ``[mempool] verify_inline_max`` at once, checked here: a
        thread hop costs about as much CPU as one verification. While the machine has had
        less than half a core to spare beside this loop (``node.machineidle``: several nodes on
        one machine under load), batches of up to ``verify_inline_busy_max`` are checked here
        too: the thread would add little parallelism, and the hand-off costs CPU."""
        size = len(transactions)
        mempool = self.config.mempool
        if size <= mempool.verify_inline_max:
            where = "loop"
        elif size <= mempool.verify_inline_busy_max and self.machine_idle.busy():
            where = "loop_machine_busy"
        else:
            where = "threads"
        self.signatures_checked[where] += size
        if where != "threads":
            with self.phases.measure("verify"):
                verdicts, _ = _verify_all(transactions)
            return verdicts
        verdicts, cpu_ns = await trio.to_thread.run_sync(
            _verify_all, transactions, limiter=self._verify_limiter
        )
        self.phases.add("verify", cpu_ns)
        return verdicts

    async def _admit_many(self, raw: Sequence[bytes], *, source: str) -> list[SubmitOutcome]:
        """Decode (charged to ``source``: ``intake`` or ``gossip_in``), verify, admit, gossip.

        Client submissions (``intake``) beyond the admission limit (``node.admission``) are
        refused first, before any work is spent on them."""
        if self.state_syncing:
            retry_after_ms = self.admission.retry_after_ms(time.monotonic(), len(raw))
            refusal = SubmitOutcome(
                None,
                False,
                "state_sync",
                "the node is installing a state snapshot",
                True,
                retry_after_ms,
            )
            return [refusal] * len(raw)
        decoded: list[Transaction | SubmitOutcome] = []
        refused_early: list[SubmitOutcome] = []
        with self.phases.measure(source):
            if source == "intake":
                raw, refused_early = self._refuse_over_limit(raw)
            for data in raw:
                try:
                    decoded.append(
                        Transaction.decode(data, chain_id=self.chain_id, check_signature=False)
                    )
                except TransactionError as error:
                    decoded.append(SubmitOutcome(None, False, error.reason, str(error)))
            # Verify each transaction once per node: not again when the same bytes were
            # verified before (``node.verified``), nor when the mempool holds the hash (admission
            # refuses it as a duplicate anyway).
            positions = [
                position
                for position, item in enumerate(decoded)
                if isinstance(item, Transaction)
                and item.hash not in self.mempool
                and self._verified.get(item.encoded) is None
            ]
            candidates = [cast(Transaction, decoded[position]) for position in positions]
        valid = [True] * len(decoded)
        if candidates:
            verdicts = await self._verify(candidates)
            for position, transaction, verdict in zip(positions, candidates, verdicts, strict=True):
                valid[position] = verdict
                if verdict:
                    self._verified.add(transaction)
        with self.phases.measure("admission"):
            outcomes, admitted = self._admit_decoded(decoded, valid)
            outcomes.extend(refused_early)
        if admitted:
            with self.phases.measure("gossip_out"):
                # While the machine is busy (several nodes on its cores under load), gossip
                # waits up to ``gossip_linger_seconds`` to fill its frames: each frame costs
                # every receiver a wake-up, a decode, a signature batch and an admission pass,
                # and the CPU is what limits the chain. With a core to spare it goes at once.
                self.network.gossip_transactions(
                    [item.encoded for item in admitted], linger=self.machine_idle.busy()
                )
            if source == "intake":
                resend_at = time.monotonic() + _RESEND_AFTER_S
                due = self._resend_due
                for item in admitted:
                    due[item.hash] = resend_at
            self._transaction_arrived.set()
            self._transaction_arrived = trio.Event()
        return outcomes

    def _refuse_over_limit(
        self, raw: Sequence[bytes]
    ) -> tuple[Sequence[bytes], list[SubmitOutcome]]:
        """Split a client batch into what fits under the admission limit and refusals for the
        rest (``full``, retry after the time the chain needs to make room for them)."""
        now = time.monotonic()
        pending = max(0, len(self.mempool) + self._gossip_admitting - self._in_flight())
        room = self.admission.limit(now) - pending
        if room >= len(raw):
            return raw, []
        # Room for the refused part comes once that many of what is pending have moved on,
        # or at the latest with the next proposal (about a budget).
        retry_after_ms = self.admission.room_retry_after_ms(now, len(raw) - room)
        room = max(room, 0)
        message = (
            f"the node is at capacity ({pending} transactions pending); retry after"
            f" {retry_after_ms} ms"
        )
        # One refusal for the whole tail, without hashing it: the API names the tail once to a
        # client that asks for msgpack, and computes the hashes only for a JSON answer.
        refusal = SubmitOutcome(None, False, CODE_FULL, message, True, retry_after_ms)
        refused = [refusal] * (len(raw) - room)
        self.metrics.rejected_transactions.labels(reason=CODE_FULL).inc(len(refused))
        return raw[:room], refused

    def _admit_decoded(
        self, decoded: Sequence[Transaction | SubmitOutcome], valid: Sequence[bool]
    ) -> tuple[list[SubmitOutcome], list[Transaction]]:
        outcomes: list[SubmitOutcome] = []
        admitted: list[Transaction] = []
        # Senders with a refused transaction in this batch, and that refusal: their later
        # transactions here cannot be admitted (their nonces would skip the refused one).
        refused: dict[bytes, tuple[int, SubmitOutcome]] = {}
        # Which of the batch are committed already: one read of the index for all of them.
        committed = self.store.committed_among(
            [
                item.hash
                for item, verified in zip(decoded, valid, strict=True)
                if verified and isinstance(item, Transaction)
            ]
        )
        # The mempool's checks read committed state: one read transaction for the batch.
        with self._state.reading():
            for item, verified in zip(decoded, valid, strict=True):
                if isinstance(item, SubmitOutcome):
                    outcomes.append(item)
                    self.metrics.rejected_transactions.labels(reason=item.code).inc()
                    continue
                earlier = refused.get(item.sender)
                if earlier is not None:
                    outcome = _behind_refused(item, *earlier)
                elif not verified:
                    outcome = SubmitOutcome(
                        item.hash, False, "signature", "signature does not verify"
                    )
                else:
                    outcome = self._admit(item, item.hash in committed)
                if outcome.accepted:
                    admitted.append(item)
                else:
                    self.metrics.rejected_transactions.labels(reason=outcome.code).inc()
                    self._remember_rejection(item.hash, outcome.code, outcome.message)
                    if earlier is None and outcome.code not in _NONCE_TAKEN_CODES:
                        refused[item.sender] = (item.nonce, outcome)
                outcomes.append(outcome)
        self.metrics.mempool_transactions.set(len(self.mempool))
        self.metrics.mempool_bytes.set(self.mempool.size_bytes)
        return outcomes, admitted

    def _admit(self, transaction: Transaction, committed: bool) -> SubmitOutcome:
        """Admit one verified transaction (``committed``: the index holds it already)."""
        if committed:
            return SubmitOutcome(transaction.hash, False, "duplicate", "already committed")
        if transaction.hash in self._unwritten_transactions:
            return SubmitOutcome(
                transaction.hash, False, "duplicate", "already in a committed block being written"
            )
        try:
            self.mempool.add(transaction)
        except MempoolRejected as error:
            if error.code != CODE_FULL:
                return SubmitOutcome(transaction.hash, False, error.code, error.message)
            retry_after_ms = self.admission.retry_after_ms(time.monotonic(), len(self.mempool))
            return SubmitOutcome(
                transaction.hash, False, error.code, error.message, True, retry_after_ms
            )
        self._admitted_at[transaction.hash] = time.monotonic()
        self._rejected.pop(transaction.hash, None)
        return SubmitOutcome(transaction.hash, True)

    def _remember_rejection(self, tx_hash: bytes, code: str, message: str) -> None:
        self._rejected[tx_hash] = (code, message)
        while len(self._rejected) > _REJECTED_REMEMBERED:
            self._rejected.popitem(last=False)

    # ------------------------------------------------------------------ ApiBackend

    def height(self) -> int:
        """Last committed height (the store holds it)."""
        return self.written_height

    async def submit(self, data: bytes) -> SubmitOutcome:
        """API submission: stateless checks, signature off the loop, mempool admission."""
        return (await self._admit_many([data], source="intake"))[0]

    async def submit_many(self, transactions: list[bytes]) -> list[SubmitOutcome]:
        """API batch submission: one signature batch on the worker threads for all of them."""
        return await self._admit_many(transactions, source="intake")

    def transaction(self, tx_hash: bytes) -> dict[str, JsonType] | None:
        """Status document: committed (with receipt), pending, or rejected (with reason)."""
        location = self.store.transaction_location(tx_hash)
        if location is not None:
            receipt = self.store.receipt(location.height, location.index)
            return {
                "hash": tx_hash.hex(),
                "status": "committed",
                "height": location.height,
                "index": location.index,
                "receipt": None if receipt is None else _receipt_json(receipt),
            }
        if tx_hash in self.mempool or tx_hash in self._unwritten_transactions:
            # Executed but not yet written counts as pending: committed means durable.
            return {"hash": tx_hash.hex(), "status": "pending"}
        rejected = self._rejected.get(tx_hash)
        if rejected is not None:
            return {
                "hash": tx_hash.hex(),
                "status": "rejected",
                "code": rejected[0],
                "error": rejected[1],
            }
        return None

    async def wait_transaction(self, tx_hash: bytes, timeout_s: float) -> None:
        """Until the transaction leaves ``pending`` or the timeout."""
        with trio.move_on_after(timeout_s):
            while True:
                document = self.transaction(tx_hash)
                if document is None or document["status"] != "pending":
                    return
                await self._new_block.wait()

    def block(self, height: int, *, transactions: bool) -> dict[str, JsonType] | None:
        """A committed block with its certificate (and receipts' events)."""
        stored = self._load_block(height)
        if stored is None:
            return None
        block, certificate = stored
        return _block_json(block, certificate, transactions)

    def block_height_of(self, block_hash: bytes) -> int | None:
        """Height of a committed block by hash."""
        return self.store.height_of(block_hash)

    async def wait_for_height(self, height: int, timeout_s: float) -> None:
        """Until ``height`` is committed or the timeout."""
        with trio.move_on_after(timeout_s):
            while self.written_height < height:
                await self._new_block.wait()

    def query(self, app: str, path: str, arguments: Value) -> Value:
        """App query on committed state."""
        from apps.base import AppError

        if not isinstance(arguments, dict) or not all(isinstance(k, str) for k in arguments):
            raise QueryError("bad_argument", "arguments must be an object with string keys")
        try:
            return self.host.query(app, path, arguments)
        except AppError as error:
            raise QueryError(error.code, error.message) from None

    def query_proven(self, app: str, path: str, arguments: Value) -> tuple[Value, QueryProof]:
        """App query on the latest certified state (after height h-1), with a proof of every
        key it read (``apps.proofs``)."""
        from apps.base import AppError

        if not isinstance(arguments, dict) or not all(isinstance(k, str) for k in arguments):
            raise QueryError("bad_argument", "arguments must be an object with string keys")

        def work(view: CertifiedView) -> tuple[Value, QueryProof]:
            result, read = recorded_query(
                lambda recorder: self.host.query(app, path, arguments, state=recorder), view.state
            )
            reads = tuple(
                (key, value, prove(view.tree, key)) for key, value in sorted(read.items())
            )
            return result, QueryProof(view.height, view.block.header, view.certificate, reads)

        try:
            answer = self.store.read_certified(work)
        except AppError as error:
            raise QueryError(error.code, error.message) from None
        except ProofUnsupported as error:
            raise QueryError("not_provable", str(error)) from None
        if answer is None:
            raise QueryError(
                "not_certified",
                "no certified state yet: proofs need one block committed since this node "
                "started from genesis, a snapshot or a backup",
            )
        result, proof = answer
        return result, replace(proof, links=self._validator_links(proof.header.height))

    def _validator_links(self, top: int) -> tuple[ValidatorLink, ...]:
        """The validator-set changes in force by height ``top``, each with the certified block
        before it, for a client that trusts only the genesis set (``apps.proofs``)."""
        links: list[ValidatorLink] = []
        for effective, validators in self.store.validator_schedule():
            if effective < 2 or effective > top:
                continue
            if len(links) == VALIDATOR_LINKS_MAX:
                raise QueryError(
                    "not_provable",
                    f"more than {VALIDATOR_LINKS_MAX} validator-set changes since genesis",
                )
            raw_block = self.store.block_bytes(effective - 1)
            certificate = self.store.certificate(effective - 1)
            if raw_block is None or certificate is None:
                raise QueryError(
                    "not_provable",
                    f"the validator set changed at height {effective} and this node holds no"
                    f" block {effective - 1} to show it (its history starts at height"
                    f" {self.store.base_height + 1}): ask a node that holds the whole chain",
                )
            links.append(
                ValidatorLink(effective, validators, Block.decode(raw_block).header, certificate)
            )
        return tuple(links)

    def evidence(self) -> list[JsonType]:
        """Stored equivocation evidence."""
        documents: list[JsonType] = []
        for height, data in self.store.evidence():
            try:
                evidence = Evidence.decode(data)
            except EvidenceError:
                continue
            documents.append(
                {
                    "height": height,
                    "view": evidence.view,
                    "kind": evidence.kind.name.lower(),
                    "validator": evidence.validator,
                    "validator_name": _validator_name(
                        self.validators_at(max(1, evidence.height)), evidence.validator
                    ),
                    "block_hashes": [
                        evidence.first.block_hash.hex(),
                        evidence.second.block_hash.hex(),
                    ],
                    "encoded": data.hex(),
                }
            )
        return documents

    def next_nonce(self, sender: bytes) -> int:
        """Next nonce for ``sender``, counting its pending transactions."""
        return self.mempool.pending_nonce(sender)

    def metrics_bytes(self) -> bytes:
        """Prometheus exposition (network gauges refreshed first)."""
        self.metrics.peers.set(len(self.network.peers()))
        tree_blocks, tree_records = self.store.tree_held()
        self.metrics.tree_blocks_held.set(tree_blocks)
        self.metrics.tree_records_held.set(tree_records)
        self.metrics.update_rate(time.monotonic())
        return self.metrics.render()

    def _network_totals(self) -> list[RunningTotal]:
        statistics = self.network.statistics()
        return [
            RunningTotal(
                "suanpan_dropped_gossip",
                "Gossiped transactions shed under pressure",
                {
                    "outbound": statistics.transactions_shed_outbound,
                    "inbound": statistics.transactions_shed_inbound,
                },
                "direction",
            ),
            RunningTotal(
                "suanpan_rejected_frames",
                "Peer connections closed for bad frames (decode, authentication)",
                dict(statistics.connection_errors) or {"none": 0},
                "reason",
            ),
            RunningTotal(
                "suanpan_handshake_failures",
                "Peer handshakes refused, by reason",
                dict(statistics.handshake_failures) or {"none": 0},
                "reason",
            ),
            RunningTotal(
                "suanpan_handshake_log_suppressed",
                "Handshake failure log lines suppressed by the log rate limit",
                {"": statistics.handshake_logs_suppressed},
            ),
            RunningTotal(
                "suanpan_inbound_rejected",
                "Inbound peer connections refused by inbound_connections_max",
                {"": statistics.inbound_rejected},
            ),
            RunningTotal(
                "suanpan_synced_transactions",
                "Transactions of blocks committed without this node's own validation: their "
                "signatures verified ahead of the block, or trusted on the block's commit "
                "certificate ([consensus] trust_certified_blocks)",
                {
                    "verified_ahead": self.transactions_verified_ahead,
                    "trusted": self.transactions_trusted,
                },
                "signatures",
            ),
            RunningTotal(
                "suanpan_signatures_checked",
                "Transactions whose signatures were checked at admission, by where: on the "
                "event loop (a small batch, or a batch while the machine had no idle core) "
                "or on a verifying thread",
                dict(self.signatures_checked),
                "where",
            ),
            RunningTotal(
                "suanpan_consensus_waits",
                "Waits of the consensus driver, by what it waited for",
                dict(self.waits.counts),
                "wait",
            ),
            RunningTotal(
                "suanpan_consensus_wait_seconds",
                "Wall time the consensus driver waited, by what it waited for (the block "
                "writer before a proposal, a validation or a send; a vote's own write)",
                {wait: ns / 1e9 for wait, ns in self.waits.totals_ns.items()},
                "wait",
            ),
        ]

    def _read_rules(self, app: str) -> ReadRules | None:
        if app not in self.host.app_names:
            return None
        return self.host.app(app).read_rules

    # ------------------------------------------------------------------ access and events

    def committed_transaction(self, tx_hash: bytes) -> CommittedTransaction | None:
        """Sender, app and receipt events of a committed transaction (for the read rules)."""
        location = self.store.transaction_location(tx_hash)
        if location is None:
            return None
        cached = self._stream_blocks.peek(location.height)
        if cached is not None and location.index < len(cached.transactions):
            found = cached.transactions[location.index]
        else:
            # One transaction and its receipt, not the whole block's (a receipt look-up must
            # not decode thousands of transactions).
            block = self.store.block(location.height)
            receipt = self.store.receipt(location.height, location.index)
            if block is None or receipt is None or location.index >= len(block.transactions):
                return None
            raw = block.transactions[location.index]
            found = stream_transaction(raw, location.index, receipt, self.chain_id)
        return CommittedTransaction(found.sender, found.app, found.receipt.events)

    def stream_block(self, height: int) -> StreamBlock | None:
        """The committed block at ``height`` with its receipts (``node.events``)."""
        return self._stream_blocks.get(height)

    def _load_stream_block(self, height: int) -> StreamBlock | None:
        block = self.store.block(height) if 1 <= height <= self.store.height else None
        if block is None:
            return None
        transactions = []
        for index, raw in enumerate(block.transactions):
            receipt = self.store.receipt(height, index)
            if receipt is None:
                return None
            transactions.append(stream_transaction(raw, index, receipt, self.chain_id))
        header = block.header
        return StreamBlock(
            height,
            block.hash,
            header.timestamp_ms,
            header.proposer,
            tuple(transactions),
            self.store.block_events(height),
            end_block_hash(self.chain_id, height),
        )

    def health(self) -> Health:
        """Whether this node is current: recent blocks, connected to a quorum, not behind."""
        problems: list[str] = []
        validators = self.replica.validators
        voting = self.index is not None
        others = validators.size - (1 if voting else 0)
        quorum = validators.quorum
        connected = {peer.public_key for peer in self.network.peers()}
        reached = len(connected & set(validators.node_keys()))
        if others and reached == 0:
            problems.append(f"isolated: no peer connected (of {others} other validators)")
        elif voting and reached + 1 < quorum:
            # An observer needs one honest validator to follow the chain, not a quorum.
            problems.append(
                f"no quorum: connected to {reached} of {others} other validators; committing"
                f" needs {quorum} of {validators.size}"
            )
        if self.syncing:
            problems.append(
                f"behind: catching up from height {self.written_height} (peers are ahead)"
            )
        age_ms = max(0, _now_ms() - self._tip_timestamp_ms)
        age_max_ms = self.config.rpc.healthz_block_age_ms_max
        expect_blocks = self.config.consensus.create_empty_blocks or len(self.mempool) > 0
        if expect_blocks and age_ms > age_max_ms:
            waiting = f" while {len(self.mempool)} transactions wait" if len(self.mempool) else ""
            problems.append(
                f"stale: no block committed for {age_ms // 1000} s{waiting} (limit"
                f" {age_max_ms // 1000} s, [rpc] healthz_block_age_ms_max)"
            )
        if self._store_damage is not None:
            problems.append(
                "store_damaged: a read met damage in this node's store (log event "
                "store_damaged); restore it from a backup or give the node a fresh store"
            )
        return Health(self.written_height, tuple(problems), age_ms)

    def store_damaged(self, error: StoreDamagedError) -> None:
        """A client request's read met damage in the store. The node serves on (the damage may
        lie only under what that request read; a node task that meets it stops the node), and
        ``/healthz`` and the ``suanpan_store_damaged`` gauge report it from now on; each new
        message is logged once."""
        message = str(error)
        if message != self._store_damage:
            log.critical("store_damaged", extra={"met_by": "api", "error": message})
        self._store_damage = message
        self.metrics.store_damaged.set(1)

    def status(self) -> dict[str, JsonType]:
        """The node status document."""
        replica = self.replica.status()
        statistics = self.network.statistics()
        now_s = time.monotonic()
        self.metrics.update_rate(now_s)
        validators = self.replica.validators
        tree_blocks, tree_records = self.store.tree_held()
        spare_cores = self.machine_idle.spare_cores
        return {
            "moniker": self.config.moniker,
            "chain_id": self.chain_id,
            "genesis_hash": self.genesis.hash.hex(),
            "role": "validator" if replica.voting else "observer",
            "validator_index": self.index,
            "height": self.written_height,
            # What /healthz names (empty while the node is current), so `suanpan status` says it.
            "problems": list(self.health().problems),
            "last_block_hash": self.written_block_hash.hex(),
            "app_hash": self.written_app_hash.hex(),
            "consensus_height": replica.height,
            "view": replica.view,
            "primary": primary_index(validators, replica.height, replica.view),
            "syncing": self.syncing,
            "state_sync": self._state_sync_status(),
            "peers": len(self.network.peers()),
            "peer_keys": [peer.public_key.hex() for peer in self.network.peers()],
            "validators": [
                {
                    "index": i,
                    "name": v.name,
                    "public_key": v.public_key.hex(),
                    "node_key": "" if v.node_key is None else v.node_key.hex(),
                }
                for i, v in enumerate(validators.validators)
            ],
            "validators_hash": validators.hash().hex(),
            "mempool_transactions": len(self.mempool),
            "mempool_bytes": self.mempool.size_bytes,
            "admission_limit": self.admission.limit(now_s),
            "admission_rate": round(self.admission.rate(now_s), 1),
            "admission_pace": round(self.admission.pace(now_s), 1),
            "version": SOFTWARE_VERSION,
            # ``[consensus] halt_height``: the node stops after committing it (0: never).
            "halt_height": self.config.consensus.halt_height,
            "native_modules": dict(self._native),
            "signature_batch": self._signature_batch,
            "signature_rule": self._signature_rule,
            "signature_keys_kept": _key_cache_json(),
            "merkle_tree": self._merkle_tree,
            "codec_encoder": self._codec_encoder,
            "codec_decoder": self._codec_decoder,
            "last_block_time_ms": self._tip_timestamp_ms,
            "last_block_age_ms": max(0, _now_ms() - self._tip_timestamp_ms),
            "api_access": self.config.rpc.access,
            "transactions_committed": self.metrics.committed_total,
            "blocks_executed": self.blocks_executed,
            "tree_held": {"blocks": tree_blocks, "records": tree_records},
            "tree_groups": {"groups": self.tree_groups, "blocks": self.tree_group_blocks},
            # The block writer process's pid (None: blocks are written on a thread here).
            "block_writer_pid": self.store.writer_process_pid,
            # The largest peak RSS of its block writer processes so far (null: none ran).
            "block_writer_rss_peak_bytes": self.store.writer_process_rss_peak_bytes or None,
            "transactions_verified_ahead": self.transactions_verified_ahead,
            "transactions_trusted": self.transactions_trusted,
            "signatures_checked": dict[str, JsonType](self.signatures_checked),
            # The machine's idle cores plus the cores this node's worker threads used, over
            # the last reading (``node.machineidle``; None: none yet).
            "machine_spare_cores": None if spare_cores is None else round(spare_cores, 2),
            "transactions_per_second": round(self.metrics.rate(), 1),
            "cpu_ns": self.cpu_ns(statistics),
            "waits": {
                wait: {"count": count, "ns": self.waits.totals_ns[wait]}
                for wait, count in self.waits.counts.items()
            },
            # The event loop thread's CPU so far (this answer is made on that thread), and the
            # time it was runnable but waited for a CPU (None where the kernel does not say).
            "loop_cpu_ns": thread_cpu_ns(),
            "loop_cpu_wait_ns": run_delay_ns(),
            # Of it, outside the phases, by task, and between task steps (``scheduler``); only
            # with ``[metrics] loop_task_cpu``.
            "loop_tasks_cpu_ns": None
            if self.loop_tasks is None
            else dict[str, JsonType](self.loop_tasks.snapshot()),
            "handshake_failures": dict(statistics.handshake_failures),
            "warnings": [*self._warnings(statistics.handshake_failures), *self.api.warnings()],
        }

    def _helpers_cpu_ns(self) -> int:
        """CPU nanoseconds so far of the node's work off its event loop thread: its worker
        threads and its block writer process (asked on the loop's thread)."""
        return time.process_time_ns() + self.store.writer_process_cpu_ns - thread_cpu_ns()

    def cpu_ns(self, statistics: NetworkStatistics | None = None) -> dict[str, JsonType]:
        """Process CPU nanoseconds so far: ``total`` (every thread, and the block writer
        process's), each phase
        (``node.phases``; the network's own counters folded into gossip and consensus), and
        ``other`` (what no phase covers)."""
        if statistics is None:
            statistics = self.network.statistics()
        phases = self.phases.snapshot()
        phases["gossip_in"] += statistics.cpu_ns_gossip_in
        phases["gossip_out"] += statistics.cpu_ns_gossip_out
        phases["consensus"] += statistics.cpu_ns_messages_in + statistics.cpu_ns_messages_out
        # The block writer process's CPU counts as the node's (its requests' in ``commit``).
        total = time.process_time_ns() + self.store.writer_process_cpu_ns
        document: dict[str, JsonType] = {"total": total}
        document.update({phase: phases[phase] for phase in PHASES})
        document["other"] = total - sum(phases.values())
        return document

    def _state_sync_status(self) -> dict[str, JsonType]:
        return {
            "syncing": self.state_syncing,
            "synced_from": self.state_synced_from,
            "base_height": self.store.base_height,
            "snapshots": [offer.height for offer in self.snapshots.offers()],
        }

    def _warnings(self, handshake_failures: Mapping[str, int]) -> list[JsonType]:
        """Plain-language problems an operator must fix (the node cannot fix them itself)."""
        warnings: list[JsonType] = []
        if handshake_failures.get("genesis_mismatch"):
            warnings.append(
                "a peer runs a different genesis (handshakes refused as genesis_mismatch): compare"
                f" `suanpan genesis validate` hashes; ours is {self.genesis.hash.hex()}"
            )
        if handshake_failures.get("chain_id_mismatch"):
            warnings.append(f"a peer runs another chain id; ours is {self.chain_id!r}")
        if self._halt_warning is not None:
            warnings.append(self._halt_warning)
        return warnings


@dataclass(frozen=True, slots=True)
class _Deciding:
    height: int
    transactions: int
    seen_at_s: float


def _merged_writes(
    group: Sequence[tuple[Block, CommitCertificate, BlockResult]],
) -> list[Write]:
    """The writes of ``group``'s blocks for the tree's update: distinct keys, a later block's
    write of a key replacing an earlier one's, in no particular order (not a ``WriteSet``:
    the update orders the changes by their keys' hashes itself, so sorting them by key here
    would be work thrown away)."""
    merged: dict[bytes, bytes | None] = {}
    for _, _, result in group:
        merged.update(result.writes if result.write_map is None else result.write_map)
    return list(merged.items())


def _validator_name(validators: ValidatorSet, index: int) -> str:
    return validators.validators[index].name if 0 <= index < validators.size else ""


def _is_block_response(payload: bytes) -> bool:
    """True when consensus wire bytes hold a ``BlockResponse`` (a msgpack array whose first
    element is its kind), judged from the first bytes only."""
    if not payload:
        return False
    first = payload[0]
    if 0x90 <= first <= 0x9F:
        offset = 1
    elif first == 0xDC:
        offset = 3
    elif first == 0xDD:
        offset = 5
    else:
        return False
    return len(payload) > offset and payload[offset] == MessageKind.BLOCK_RESPONSE


def _behind_refused(transaction: Transaction, nonce: int, refusal: SubmitOutcome) -> SubmitOutcome:
    """The outcome of a transaction whose sender's earlier one (``nonce``) in the same batch
    was refused: resubmit from that nonce (after ``retry_after_ms`` when it may be retried)."""
    return SubmitOutcome(
        transaction.hash,
        False,
        CODE_BEHIND_REFUSED,
        f"the sender's transaction with nonce {nonce} in this batch was refused"
        f" ({refusal.code}); resubmit from nonce {nonce}",
        refusal.retry,
        refusal.retry_after_ms,
    )


def _trust_certified(block: Block, known: dict[bytes, Transaction], chain_id: str) -> int:
    """Add to ``known`` the transactions of ``block`` (a block the replica holds a commit
    certificate for) that it lacks, decoded without checking their signatures; returns how
    many. A quorum of 2f+1 commit signatures includes at least f+1 honest validators, and an
    honest validator votes for a block only once every signature in it verified, so with at
    most f faulty validators these signatures are valid. Bytes that do not decode are left
    out: the host decodes them again and rejects them, as any node does."""
    trusted = 0
    for data, tx_hash in zip(block.transactions, block.transaction_hashes(), strict=True):
        if tx_hash in known:
            continue
        try:
            transaction = Transaction.decode(data, chain_id=chain_id, check_signature=False)
        except TransactionError:
            continue
        known[tx_hash] = transaction
        trusted += 1
    return trusted


def _key_cache_json() -> JsonType:
    """``consensus.crypto.key_cache_info`` for ``/status``: null on the portable rule."""
    info = key_cache_info()
    return None if info is None else dict[str, JsonType](info)


def _verify_all(transactions: Sequence[Transaction]) -> tuple[list[bool], int]:
    """Runs on a worker thread (or the loop's, for small batches): the checks release the GIL,
    once for the whole batch with ``node.signatures``' native batch. Returns the verdicts and
    the thread CPU nanoseconds they took."""
    started_ns = thread_cpu_ns()
    verdicts = verify_transactions(transactions)
    return verdicts, thread_cpu_ns() - started_ns


def _certificates_valid(
    entries: Sequence[tuple[Block, CommitCertificate]],
    validators: Sequence[ValidatorSet],
    chain_id: str,
    checks: CertificateChecks,
) -> list[bool]:
    """Whether each entry's certificate certifies its block by the matching set of
    ``validators`` (checked through ``checks``, which the replica shares)."""
    verdicts: list[bool] = []
    for (block, certificate), known in zip(entries, validators, strict=True):
        try:
            checks.verify(certificate, known, chain_id, block_hash=block.hash, height=block.height)
        except CertificateError:
            verdicts.append(False)
        else:
            verdicts.append(True)
    return verdicts


def _write_wait(action: Action) -> str:
    """The ``WAITS`` entry of the driver's wait for the block writer before ``action``."""
    if isinstance(action, RequestProposal):
        return "write_before_proposal"
    if isinstance(action, ValidateBlock):
        return "write_before_validation"
    return "write_before_send"


def _persist_measured(store: Store, state: bytes) -> int:
    """Runs on a worker thread: the replica's durable state; returns its thread CPU time."""
    started_ns = thread_cpu_ns()
    store.save_replica_state(state)
    return thread_cpu_ns() - started_ns


def passing_refusals(raw: Sequence[bytes], outcomes: Sequence[SubmitOutcome]) -> list[bytes]:
    """The gossiped transactions of ``raw`` refused for a passing reason (a full pool, a nonce
    gap, a retry-after), which the network is to forget it saw so that a resend is taken."""
    return [
        data
        for data, outcome in zip(raw, outcomes, strict=True)
        if not outcome.accepted and (outcome.retry or outcome.code in _GOSSIP_RETAKE_CODES)
    ]


def watched_signals(*, tls: bool) -> tuple[signal.Signals, ...]:
    """The signals a running node acts on: SIGINT and SIGTERM stop it; with a log file or an
    API over TLS (``tls``), SIGHUP reopens the log file (``node.logs.reopen_log_file``, for
    ``logrotate``) and loads the API's certificate files again
    (``ApiServer.reload_tls``). With neither, SIGHUP keeps its default (a terminal's hang-up
    ends the node)."""
    if log_file_handler() is None and not tls:
        return (signal.SIGINT, signal.SIGTERM)
    return (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _write_failed(first: int | None, last: int, error: StoreError) -> NodeStoppedError:
    """A block writer's failed write: blocks ``first`` to ``last`` (None: the tree records
    held at height ``last``) were not written."""
    what = "tree records held" if first is None else "blocks"
    heights = f"at height {last}" if first is None else f"{first}-{last}"
    return _store_stopped(
        "block_write_failed",
        f"the {what} {heights}",
        error,
        ", with every block before them written",
        what=what,
        from_height=first,
        to_height=last,
    )


def _persist_failed(error: StoreError) -> NodeStoppedError:
    """A vote record that could not be written: the vote it records is not sent (persist
    before send)."""
    return _store_stopped(
        "vote_persist_failed", "the vote record", error, " without sending the vote"
    )


def _evidence_write_failed(height: int, error: StoreError) -> NodeStoppedError:
    """Evidence that could not be stored (evidence is not to be lost; the peer's conflicting
    votes stay with the other validators)."""
    return _store_stopped(
        "evidence_write_failed",
        f"equivocation evidence of height {height}",
        error,
        "",
        height=height,
    )


def _state_sync_write_failed(error: StateSyncWriteError) -> NodeStoppedError:
    """A write of state sync this node's disk refused: fetching the snapshot again would meet
    the same disk (and cost the peers a whole snapshot each time), so the node stops; started
    again, it starts the sync over."""
    cause = error.error
    log.critical(
        "statesync_write_failed",
        extra={"what": error.what, "disk_full": is_disk_full(cause), "error": str(cause)},
    )
    return NodeStoppedError(
        f"{error}; the node stopped (fix the cause and start it again: the sync starts over)"
    )


def _store_stopped(
    event: str, written: str, error: StoreError, stopped: str, **fields: object
) -> NodeStoppedError:
    """Log ``event`` (with ``fields``, whether the disk is full, and the error) for a write of
    ``written`` the store could not make, and say so for the node to stop; ``stopped`` says
    what holds after the stop."""
    log.critical(
        event,
        extra={**fields, "disk_full": is_disk_full(error), "error": str(error)},
    )
    return NodeStoppedError(
        f"the store could not write {written}: {error}; the node stopped{stopped} (fix the cause "
        "and start it again)"
    )


def _write_measured(write: Callable[[], object], heap: HeapTrimmer) -> int:
    """Runs on a worker thread: one of the block writer's LMDB write transactions (the
    blocks', or the tree's held records), then the release of the allocator's free memory
    when due (``node.heap``); returns the thread CPU nanoseconds of both."""
    started_ns = thread_cpu_ns()
    write()
    heap.after_write()
    return thread_cpu_ns() - started_ns


def _receipt_json(receipt: Receipt) -> dict[str, JsonType]:
    return {
        "status": receipt.status,
        "code": receipt.code,
        "message": receipt.message,
        "result": to_json(receipt.result),
        "events": [
            {"app": event.app, "kind": event.kind, "attributes": to_json(dict(event.attributes))}
            for event in receipt.events
        ],
    }


def _block_json(
    block: Block, certificate: CommitCertificate, transactions: bool
) -> dict[str, JsonType]:
    header = block.header
    document: dict[str, JsonType] = {
        "height": block.height,
        "hash": block.hash.hex(),
        "header": {
            "chain_id": header.chain_id,
            "height": header.height,
            "view": header.view,
            "parent_hash": header.parent_hash.hex(),
            "app_hash": header.app_hash.hex(),
            "next_validators_hash": header.next_validators_hash.hex(),
            "proposer": header.proposer,
            "timestamp_ms": header.timestamp_ms,
            "transactions_root": header.transactions_root.hex(),
            "transaction_count": header.transaction_count,
        },
        "transaction_hashes": [tx_hash.hex() for tx_hash in block.transaction_hashes()],
        "certificate": {
            "height": certificate.height,
            "view": certificate.view,
            "block_hash": certificate.block_hash.hex(),
            "signatures": [[index, signature.hex()] for index, signature in certificate.signatures],
        },
    }
    if transactions:
        document["transactions"] = [tx.hex() for tx in block.transactions]
    return document
