"""End-to-end throughput and latency of a real multi-process testnet, against the machine's
signature-verification ceiling measured in the same run.

Theory of operation
-------------------
``run_throughput`` (what ``suanpan bench`` runs):

1. measures the ed25519 verification rate of one core (``consensus.crypto.verify`` on a
   transaction-sized payload, as a node calls it). Every validator verifies every transaction
   once, so a testnet of ``n`` validators on this machine can order at most
   ``cores * verifications_per_core / n`` transactions per second: the *ceiling*;
2. generates a testnet (``node.testnet.testnet``) whose genesis funds ``accounts_per_bank`` payment
   accounts per validator bank (``node.bench.workload``), and pre-signs every transfer the run
   will submit (signing is not measured);
3. starts the node processes and waits until every node serves and sees all its peers;
4. starts the open-loop submitter in its own process (``node.bench.submitter``): each node
   gets its own accounts' transfers at ``rate / n`` tx/s, batched over a persistent
   connection. Meanwhile an observer thread long-polls ``/blocks`` on node 0 and records the
   wall-clock time it sees each block committed;
5. samples each node's CPU time (``/proc/PID/stat``) at the start and the end of the
   submission window, and its peak RSS (``VmHWM``) at the end;
6. after the window, waits (bounded) for the submitted transactions to commit, then stops the
   testnet and checks the nodes agree on their chain.

Figures: ``tx_per_s`` counts the benchmark's transactions in blocks committed inside the
window, after a short warm-up, per second of that interval. Latency is, for each committed
transaction, observed commit time minus submit time (percentiles over every transaction
submitted in the window; ``uncommitted`` counts those that never committed before the drain
deadline). ``blocks_per_s`` and ``block_size_avg`` come from the same blocks, and so do
``block_size_max`` and ``round_ms_*``: the time from one block to the next by their header
timestamps (each block's primary stamps it when it proposes, so under load that is the
consensus round, the execution and the write the next proposal waited for), over consecutive
heights of the window.

Latency is given two ways. ``latency_ms_*`` counts from the submission the node admitted (for
a pushed-back transaction, its last resend). ``offer_latency_ms_*`` counts from the moment the
transaction was first offered, so a push-back's wait is in it: what a client that retries as
told sees end to end.

``--rate max`` runs steps, each on a fresh testnet from genesis (on one chain, a step would
run on the ledger the steps before it grew, and the result would depend on the path the search
took): the rate doubles while a step is *sustainable* (nothing refused for good, lost or
abandoned, committed rate at least ``SUSTAINED_FRACTION`` of the offered rate, p99 from first
offer at most ``p99_ms_max``; push-backs are allowed, since their wait counts in that p99),
then bisects between the last good and first bad rate. The report is the best sustainable
step, with every step listed. Then (unless ``overload`` is off) two more fresh testnets take
``OVERLOAD_MULTIPLES`` (2x and 4x) of that step's offered rate, and each says whether it
*holds* (``StepResult.holds_overload``): nothing refused for good, lost or failed in
transport, at least ``OVERLOAD_FRACTION`` of the best step's committed rate, and the p99 of
admitted transactions at most ``OVERLOAD_P99_MS_MAX``. Transactions pushed back and still
waiting to be resent when the window closes (``abandoned``) are what overload means there.
Their peak RSS is reported apart from the search's.

With ``split_config`` (``suanpan bench --split``) the nodes ``split_nodes`` of each testnet run
another configuration than the rest, and the report compares the two groups' CPU per committed
transaction by phase (``split_figures``): side by side in one testnet, both groups run on the
same machine at the same moment and commit the same blocks, so a change in what one node
spends shows up clearly where whole runs, taken one after another, move with the machine.

Above capacity the nodes push submissions back (429, ``retry_after_ms``); the submitter resends
them after that delay, so a step at 2x or 4x the sustainable rate shows what the chain keeps
committing under overload, and the latency of what it admitted.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from apps.merkle import tree_status
from apps.transaction import TX_TAG
from consensus.codec import decoder_status, encoder_status
from consensus.crypto import PrivateKey, hash_bytes, rule_status, verify
from node.bench.submitter import SubmitPlan, SubmitResult, start_submitter
from node.bench.workload import BENCH_CHAIN_ID, BenchAccounts, bench_accounts, sign_streams
from node.client.client import ApiError
from node.config import NodeConfig
from node.jsonvalue import JsonType
from node.machineidle import cores_by_state, read_cpu_jiffies
from node.native import native_status
from node.procstatus import process_status_kib
from node.signatures import batch_status
from node.testnet.testnet import Testnet, agreement_problems, create_testnet

__all__ = [
    "BenchOptions",
    "ProcessSampler",
    "StepResult",
    "ThroughputReport",
    "measure_verify_rate",
    "run_throughput",
    "split_figures",
]

# A step keeps up when it commits at least this share of what it offered.
SUSTAINED_FRACTION: Final = 0.95
# The first part of every window is excluded from tx_per_s: the pipeline is filling.
WARMUP_S_MAX: Final = 1.0
# After a window, submitted transactions get this long to commit before counting as lost.
DRAIN_TIMEOUT_S: Final = 20.0
# Nodes get this long to open stores, connect to every peer and serve the API.
STARTUP_TIMEOUT_S: Final = 120.0
# Each verification-rate measurement runs this long (per core).
VERIFY_MEASURE_S: Final = 1.0
# The observer's long poll (ms) and page size.
_POLL_TIMEOUT_MS: Final = 2_000
_POLL_LIMIT: Final = 100
# While the load runs, a progress report is due this often (a bar on a terminal).
_PROGRESS_S: Final = 0.5
# The rate search starts here (tx/s) and doubles; it stops after this many steps at most.
SEARCH_START_RATE: Final = 500.0
SEARCH_STEPS_MAX: Final = 8
# After a search, overload steps offer these multiples of the best sustained step's rate. One
# holds when it commits at least OVERLOAD_FRACTION of that step's committed rate with the p99
# of admitted transactions at most OVERLOAD_P99_MS_MAX.
OVERLOAD_MULTIPLES: Final = (2, 4)
OVERLOAD_FRACTION: Final = 0.9
OVERLOAD_P99_MS_MAX: Final = 2000.0


def measure_verify_rate(duration_s: float = VERIFY_MEASURE_S) -> float:
    """ed25519 verifications per second on one core (this thread), on a payload the size of a
    payments transfer, through ``consensus.crypto.verify`` as a node calls it."""
    key = PrivateKey(bytes(range(32)))
    payload = bytes(300)
    signature = key.sign(TX_TAG, "bench", payload)
    count = 0
    started = time.perf_counter()
    deadline = started + duration_s
    while True:
        for _ in range(100):
            if not verify(key.public_key, TX_TAG, "bench", payload, signature):
                raise AssertionError("a valid signature failed to verify")
        count += 100
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


class ProcessSampler:
    """CPU seconds and peak RSS of processes, read from ``/proc`` (Linux)."""

    _ticks_per_s: Final = os.sysconf("SC_CLK_TCK")

    @classmethod
    def cpu_s(cls, pid: int) -> float:
        """User plus system CPU seconds so far (NaN when the process is gone)."""
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return math.nan
        fields = text[text.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / cls._ticks_per_s

    @staticmethod
    def rss_peak_mb(pid: int) -> float:
        """Peak resident set size in MiB (NaN when the process is gone)."""
        return _status_mib(pid, "VmHWM")[0]

    @staticmethod
    def rss_split_mb(pid: int) -> tuple[float, float]:
        """Resident MiB now: anonymous (the heap: Python objects, buffers) and file-backed
        (mostly LMDB's memory map of the store, which the kernel may reclaim and which grows
        with the ledger); NaNs when the process is gone."""
        anonymous, file_backed = _status_mib(pid, "RssAnon", "RssFile")
        return anonymous, file_backed


def _status_mib(pid: int, *names: str) -> list[float]:
    """The named kB fields of ``/proc/<pid>/status`` in MiB (NaN for a field not there or a
    process that is gone)."""
    kib = process_status_kib(Path(f"/proc/{pid}/status"), *names)
    return [math.nan if value is None else value / 1024 for value in kib]


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """Arguments of one benchmark run."""

    validators: int = 4
    duration_s: float = 20.0
    rate: float | None = 800.0  # None: search the maximum sustainable rate
    accounts_per_bank: int = 200
    p99_ms_max: float = 1000.0
    config: NodeConfig = field(default_factory=NodeConfig)
    # The ``--set`` settings ``config`` carries, as given (reported with the figures).
    settings: tuple[str, ...] = ()
    keep_directory: Path | None = None
    seed: int = 0
    # After a search (rate None), run the overload steps (OVERLOAD_MULTIPLES).
    overload: bool = True
    # ``--split``: the nodes ``split_nodes`` run ``split_config`` (``config`` plus
    # ``split_settings``), the others ``config``, side by side in one testnet.
    split_config: NodeConfig | None = None
    split_settings: tuple[str, ...] = ()
    split_nodes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class _ObservedBlock:
    height: int
    seen_at: float
    hashes: tuple[str, ...]
    # The header's timestamp (ms): when its primary proposed it.
    timestamp_ms: int


class _Observer:
    """Long-polls ``/blocks`` of one node and records when each block is first seen."""

    def __init__(self, address: str, start_height: int) -> None:
        host, _, port = address.rpartition(":")
        self._host, self._port = host, int(port)
        self.next_height = start_height
        self.blocks: list[_ObservedBlock] = []
        self.commit_time: dict[str, float] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=_POLL_TIMEOUT_MS / 1000 + 10)

    def abandon(self) -> None:
        """Ask the thread to stop without waiting for its poll to end (it is a daemon)."""
        self._stop.set()

    def _run(self) -> None:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=30)
        while not self._stop.is_set():
            path = (
                f"/blocks?from={self.next_height}&limit={_POLL_LIMIT}&timeout_ms={_POLL_TIMEOUT_MS}"
            )
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                data = response.read()
                seen_at = time.time()
                document = json.loads(data)
            except (OSError, http.client.HTTPException, ValueError):
                self.errors += 1
                connection.close()
                connection = http.client.HTTPConnection(self._host, self._port, timeout=30)
                self._stop.wait(0.2)
                continue
            for block in document.get("blocks", []):
                hashes = tuple(block["transaction_hashes"])
                self.blocks.append(
                    _ObservedBlock(
                        int(block["height"]),
                        seen_at,
                        hashes,
                        int(block["header"]["timestamp_ms"]),
                    )
                )
                for tx_hash in hashes:
                    self.commit_time.setdefault(tx_hash, seen_at)
                self.next_height = int(block["height"]) + 1
        connection.close()


@dataclass(slots=True)
class StepResult:
    """One submission window's figures."""

    rate_offered: float
    duration_s: float
    submitted: int
    accepted: int
    rejected: dict[str, int]
    # Refusals the nodes asked to retry later (at capacity), resent by the submitter.
    pushed_back: int
    abandoned: int
    transport_errors: int
    committed: int
    uncommitted: int
    tx_per_s: float
    latency_ms_p50: float
    latency_ms_p95: float
    latency_ms_p99: float
    latency_ms_max: float
    # From the first offer (a push-back's wait included), over the same transactions.
    offer_latency_ms_p50: float
    offer_latency_ms_p99: float
    offer_latency_ms_max: float
    blocks: int
    blocks_per_s: float
    block_size_avg: float
    cpu_s: list[float]
    cpu_percent: list[float]
    submitter_cpu_s: float
    last_error: str
    # CPU microseconds per transaction the node committed in the window, by phase
    # (``node.phases``, plus ``other`` and ``total``), averaged over the nodes.
    phases_us_per_tx: dict[str, float] = field(default_factory=dict)
    # The same over the first and the second half of the window (the ledger grows during a
    # run, and a block's commit and execution cost grow with it); empty when the nodes did
    # not answer at the middle.
    phases_us_per_tx_by_half: tuple[dict[str, float], ...] = ()
    # The event loop's CPU outside the phases per committed transaction, by task name and
    # ``scheduler`` (``node.looptasks``), averaged over the nodes; empty unless the nodes run
    # with ``[metrics] loop_task_cpu``.
    loop_tasks_us_per_tx: dict[str, float] = field(default_factory=dict)
    # The largest block of the window, and the time between consecutive blocks
    # (``round_intervals_ms``): median, 90th percentile and longest.
    block_size_max: int = 0
    round_ms_p50: float = math.nan
    round_ms_p90: float = math.nan
    round_ms_max: float = math.nan
    # The consensus driver's waits (``node.phases.WAITS``) in the window: milliseconds per
    # block the node committed, and the mean of each (their count is in ``waits_count``),
    # averaged over the nodes.
    waits_ms_per_block: dict[str, float] = field(default_factory=dict)
    waits_ms_mean: dict[str, float] = field(default_factory=dict)
    # Each node's CPU µs per committed transaction by phase (None: a node that did not answer
    # or committed nothing in the window).
    phases_us_per_tx_of_node: list[dict[str, float] | None] = field(default_factory=list)
    # Transactions whose signatures the nodes checked at admission in the window, by where
    # (``signatures_checked`` in ``/status``: ``loop``, ``loop_machine_busy``, ``threads``),
    # summed over the nodes that answered both times.
    signatures_checked: dict[str, int] = field(default_factory=dict)
    # The whole machine's cores over the window by state (``node.machineidle.cores_by_state``:
    # busy, idle, iowait, steal); empty where ``/proc/stat`` cannot be read.
    machine_cores: dict[str, float] = field(default_factory=dict)

    def sustainable(self, p99_ms_max: float) -> bool:
        """Nothing refused for good, lost or abandoned, kept up with the offered rate, and
        p99 from first offer within the bound (push-backs only count through that wait)."""
        return (
            not self.rejected
            and not self.abandoned
            and not self.transport_errors
            and self.uncommitted == 0
            and self.tx_per_s >= SUSTAINED_FRACTION * self.rate_offered
            and self.offer_latency_ms_p99 <= p99_ms_max
        )

    def holds_overload(self, peak_tx_per_s: float) -> bool:
        """As an overload step: nothing refused for good, lost or failed in transport, at
        least ``OVERLOAD_FRACTION`` of ``peak_tx_per_s`` committed, and the p99 of admitted
        transactions within ``OVERLOAD_P99_MS_MAX`` (push-backs, and transactions still
        waiting to be resent when the window closed, are what overload is)."""
        return (
            not self.rejected
            and not self.transport_errors
            and self.uncommitted == 0
            and self.tx_per_s >= OVERLOAD_FRACTION * peak_tx_per_s
            and self.latency_ms_p99 <= OVERLOAD_P99_MS_MAX
        )

    def to_json(self) -> dict[str, JsonType]:
        """JSON form."""
        return {
            "rate_offered": self.rate_offered,
            "duration_s": self.duration_s,
            "submitted": self.submitted,
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "pushed_back": self.pushed_back,
            "abandoned": self.abandoned,
            "transport_errors": self.transport_errors,
            "committed": self.committed,
            "uncommitted": self.uncommitted,
            "tx_per_s": round(self.tx_per_s, 1),
            "latency_ms_p50": round(self.latency_ms_p50, 1),
            "latency_ms_p95": round(self.latency_ms_p95, 1),
            "latency_ms_p99": round(self.latency_ms_p99, 1),
            "latency_ms_max": round(self.latency_ms_max, 1),
            "offer_latency_ms_p50": round(self.offer_latency_ms_p50, 1),
            "offer_latency_ms_p99": round(self.offer_latency_ms_p99, 1),
            "offer_latency_ms_max": round(self.offer_latency_ms_max, 1),
            "blocks": self.blocks,
            "blocks_per_s": round(self.blocks_per_s, 2),
            "block_size_avg": round(self.block_size_avg, 1),
            "block_size_max": self.block_size_max,
            "round_ms_p50": round(self.round_ms_p50, 1),
            "round_ms_p90": round(self.round_ms_p90, 1),
            "round_ms_max": round(self.round_ms_max, 1),
            "waits_ms_per_block": {
                wait: round(value, 1) for wait, value in self.waits_ms_per_block.items()
            },
            "waits_ms_mean": {wait: round(value, 1) for wait, value in self.waits_ms_mean.items()},
            "cpu_s_per_node": [round(value, 2) for value in self.cpu_s],
            "cpu_percent_per_node": [round(value, 1) for value in self.cpu_percent],
            "submitter_cpu_s": round(self.submitter_cpu_s, 2),
            "cpu_us_per_tx_per_node": round(self.phases_us_per_tx.get("total", math.nan), 1),
            "cpu_us_per_tx_of_each_node": [
                None if node is None else round(node.get("total", math.nan), 1)
                for node in self.phases_us_per_tx_of_node
            ],
            "phases_us_per_tx": {
                phase: round(value, 1) for phase, value in self.phases_us_per_tx.items()
            },
            "phases_us_per_tx_by_half": [
                {phase: round(value, 1) for phase, value in half.items()}
                for half in self.phases_us_per_tx_by_half
            ],
            "loop_tasks_us_per_tx": {
                task: round(value, 1) for task, value in self.loop_tasks_us_per_tx.items()
            },
            "signatures_checked": dict[str, JsonType](self.signatures_checked),
            "machine_cores": {
                state: round(value, 2) for state, value in self.machine_cores.items()
            },
            "last_error": self.last_error,
        }


@dataclass(slots=True)
class ThroughputReport:
    """Everything ``suanpan bench`` prints."""

    options: BenchOptions
    verify_per_s_per_core: float
    cores: int
    load_average: tuple[float, float, float]
    steps: list[StepResult]
    best: StepResult
    rss_peak_mb: list[float]
    # Each node's block writer process's peak RSS (NaN: blocks written in the node's own).
    writer_rss_peak_mb: list[float]
    # The largest anonymous part of the RSS seen while the load ran (sampled every
    # _PROGRESS_S), and the file-backed part when the nodes stopped.
    rss_anonymous_peak_mb: list[float]
    rss_file_mb: list[float]
    agreement_problems: list[str]
    directory: str
    # After a search: the overload steps (2x and 4x the best step's offered rate) and each
    # node's largest peak RSS over them.
    overload: list[StepResult] = field(default_factory=list)
    overload_rss_peak_mb: list[float] = field(default_factory=list)

    @property
    def ceiling_tx_per_s(self) -> float:
        """(cores x verifications per second per core) / validators."""
        return self.cores * self.verify_per_s_per_core / self.options.validators

    def to_json(self) -> dict[str, JsonType]:
        """One JSON object; the main figures are the best (or only) step's."""
        best = self.best.to_json()
        document: dict[str, JsonType] = {
            "validators": self.options.validators,
            "workload": "payments.transfer (pre-signed, ed25519)",
            "rate": "max" if self.options.rate is None else self.options.rate,
            "block_interval_ms": self.options.config.consensus.block_interval_ms,
            "proposal_transactions_max": self.options.config.block.proposal_transactions_max,
            "settings": list(self.options.settings),
            "admission_budget_ms": self.options.config.mempool.admission_budget_ms,
            **best,
            "ed25519_verify_per_s_per_core": round(self.verify_per_s_per_core),
            "cores": self.cores,
            "ceiling_tx_per_s": round(self.ceiling_tx_per_s, 1),
            "ratio": round(self.best.tx_per_s / self.ceiling_tx_per_s, 3),
            "rss_peak_mb_per_node": [round(value, 1) for value in self.rss_peak_mb],
            "writer_rss_peak_mb_per_node": [
                None if math.isnan(value) else round(value, 1) for value in self.writer_rss_peak_mb
            ],
            "rss_anonymous_peak_mb_per_node": [
                round(value, 1) for value in self.rss_anonymous_peak_mb
            ],
            "rss_file_mb_per_node": [round(value, 1) for value in self.rss_file_mb],
            "load_average_before": list(self.load_average),
            "machine": (
                f"{platform.machine()} {self.cores} cores, Python {platform.python_version()}"
            ),
            "agreement_problems": list(self.agreement_problems),
            "native_modules": dict[str, JsonType](native_status()),
            "signature_batch": batch_status(),
            "signature_rule": rule_status(),
            "merkle_tree": tree_status(),
            "codec_encoder": encoder_status(),
            "codec_decoder": decoder_status(),
        }
        if len(self.steps) > 1:
            document["steps"] = [step.to_json() for step in self.steps]
        if self.overload:
            held = [step.holds_overload(self.best.tx_per_s) for step in self.overload]
            document["overload_steps"] = [
                {
                    **step.to_json(),
                    "multiple": round(step.rate_offered / self.best.rate_offered, 2),
                    "share_of_best": round(step.tx_per_s / self.best.tx_per_s, 3),
                    "holds": holds,
                }
                for step, holds in zip(self.overload, held, strict=True)
            ]
            document["overload_holds"] = all(held)
            document["overload_rss_peak_mb_per_node"] = [
                round(value, 1) for value in self.overload_rss_peak_mb
            ]
        if self.options.split_config is not None:
            document["split"] = split_figures(
                self.best.phases_us_per_tx_of_node,
                self.options.split_nodes,
                self.options.split_settings,
            )
        if self.directory:
            document["directory"] = self.directory
        return document


def _mean_phases(nodes: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each phase over ``nodes`` (a phase one lacks counts as 0 there)."""
    phases = dict.fromkeys(phase for node in nodes for phase in node)
    return {phase: statistics.fmean(node.get(phase, 0.0) for node in nodes) for phase in phases}


def split_figures(
    of_node: Sequence[Mapping[str, float] | None],
    nodes_with: Sequence[int],
    settings: Sequence[str],
) -> dict[str, JsonType]:
    """A split run's comparison: the CPU µs per committed transaction by phase averaged over
    the nodes that ran with ``settings`` (``nodes_with``) and over the others, and how much more
    (negative: less) the first group spent in all, in per cent of the second's. Nodes that did
    not answer are left out; with a group empty the difference is None."""
    chosen = set(nodes_with)
    with_settings = [node for i, node in enumerate(of_node) if node is not None and i in chosen]
    without = [node for i, node in enumerate(of_node) if node is not None and i not in chosen]
    document: dict[str, JsonType] = {
        "settings": list(settings),
        "nodes_with": list[JsonType](sorted(chosen)),
        "with_us_per_tx": None,
        "without_us_per_tx": None,
        "difference_percent": None,
    }
    if not with_settings or not without:
        return document
    mean_with, mean_without = _mean_phases(with_settings), _mean_phases(without)
    document["with_us_per_tx"] = {phase: round(value, 1) for phase, value in mean_with.items()}
    document["without_us_per_tx"] = {
        phase: round(value, 1) for phase, value in mean_without.items()
    }
    base = mean_without.get("total", 0.0)
    if base > 0 and "total" in mean_with:
        document["difference_percent"] = round(100 * (mean_with["total"] - base) / base, 2)
    return document


@dataclass(frozen=True, slots=True)
class NodeSample:
    """What one node's ``/status`` said at one moment: transactions committed, height, CPU
    nanoseconds by phase, and the consensus driver's waits (``waits``: count and ns)."""

    committed: int
    height: int
    cpu_ns: dict[str, int]
    waits: dict[str, tuple[int, int]]
    # ``loop_tasks_cpu_ns`` (empty when the node does not measure it).
    loop_tasks_ns: dict[str, int] = field(default_factory=dict)
    # ``signatures_checked``: transactions checked at admission, by where.
    signatures_checked: dict[str, int] = field(default_factory=dict)


def _us_per_transaction(
    before: Sequence[NodeSample | None],
    after: Sequence[NodeSample | None],
    counters: Callable[[NodeSample], Mapping[str, int]],
) -> list[dict[str, float] | None]:
    """Node by node: for one that answered both times, committed something in between and
    has ``counters`` (cumulative nanoseconds by name) in both samples, their growth in µs per
    transaction it committed; None for any other."""
    per_node: list[dict[str, float] | None] = []
    for first, last in zip(before, after, strict=True):
        if first is None or last is None or last.committed <= first.committed:
            per_node.append(None)
            continue
        earlier, later = counters(first), counters(last)
        if not earlier or not later:
            per_node.append(None)
            continue
        committed = last.committed - first.committed
        per_node.append(
            {name: (ns - earlier.get(name, 0)) / 1000 / committed for name, ns in later.items()}
        )
    return per_node


def _phases_per_transaction(
    before: Sequence[NodeSample | None], after: Sequence[NodeSample | None]
) -> dict[str, float]:
    """CPU µs per committed transaction by phase, averaged over the nodes that answered
    both times and committed something in between."""
    per_node = [
        node
        for node in _us_per_transaction(before, after, lambda sample: sample.cpu_ns)
        if node is not None
    ]
    if not per_node:
        return {}
    return {phase: statistics.fmean(node[phase] for node in per_node) for phase in per_node[0]}


def loop_tasks_per_transaction(
    before: Sequence[NodeSample | None], after: Sequence[NodeSample | None]
) -> dict[str, float]:
    """The event loop's CPU µs per committed transaction outside the phases, by task name,
    averaged over the nodes that measured it, answered both times and committed something in
    between (a task a node did not run counts as 0 there); largest first."""
    per_node = [
        node
        for node in _us_per_transaction(before, after, lambda sample: sample.loop_tasks_ns)
        if node is not None
    ]
    tasks = {task for node in per_node for task in node}
    means = {task: statistics.fmean(node.get(task, 0.0) for node in per_node) for task in tasks}
    return dict(sorted(means.items(), key=lambda item: (-item[1], item[0])))


def waits_between(
    before: Sequence[NodeSample | None], after: Sequence[NodeSample | None]
) -> tuple[dict[str, float], dict[str, float]]:
    """The driver's waits between two samples of each node: (milliseconds per block the
    node committed, mean milliseconds of one wait), by wait, averaged over the nodes that
    answered both times and committed a block in between (a wait that never happened
    counts 0 in the mean)."""
    per_block: list[dict[str, float]] = []
    means: list[dict[str, float]] = []
    for first, last in zip(before, after, strict=True):
        if first is None or last is None or last.height <= first.height:
            continue
        blocks = last.height - first.height
        node_per_block: dict[str, float] = {}
        node_means: dict[str, float] = {}
        for wait, (count, ns) in last.waits.items():
            count_before, ns_before = first.waits.get(wait, (0, 0))
            waited_ms = (ns - ns_before) / 1e6
            node_per_block[wait] = waited_ms / blocks
            node_means[wait] = waited_ms / (count - count_before) if count > count_before else 0.0
        per_block.append(node_per_block)
        means.append(node_means)
    if not per_block:
        return {}, {}
    return (
        {wait: statistics.fmean(node[wait] for node in per_block) for wait in per_block[0]},
        {wait: statistics.fmean(node[wait] for node in means) for wait in means[0]},
    )


def signatures_checked_between(
    before: Sequence[NodeSample | None], after: Sequence[NodeSample | None]
) -> dict[str, int]:
    """Transactions whose signatures the nodes checked at admission between two samples, by
    where, summed over the nodes that answered both times."""
    checked: dict[str, int] = {}
    for first, last in zip(before, after, strict=True):
        if first is None or last is None:
            continue
        for where, count in last.signatures_checked.items():
            checked[where] = checked.get(where, 0) + count - first.signatures_checked.get(where, 0)
    return checked


def round_intervals_ms(blocks: Sequence[tuple[int, int]]) -> list[float]:
    """The time from each block to the next, by their header timestamps, for the blocks of
    ``blocks`` ((height, timestamp ms), in any order) whose next height is there too."""
    stamped = dict(blocks)
    return [
        float(stamped[height + 1] - timestamp)
        for height, timestamp in sorted(stamped.items())
        if height + 1 in stamped
    ]


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


class _Run:
    """One testnet with its accounts, streams and observer."""

    def __init__(self, options: BenchOptions, directory: Path) -> None:
        self.options = options
        self.directory = directory
        self.accounts: BenchAccounts = bench_accounts(
            options.validators, options.accounts_per_bank, options.seed
        )
        self.info = create_testnet(
            directory,
            options.validators,
            chain_id=BENCH_CHAIN_ID,
            apps=("membership", "payments"),
            app_state=self.accounts.app_state(),
            config=options.config,
            node_configs=(
                None
                if options.split_config is None
                else dict.fromkeys(options.split_nodes, options.split_config)
            ),
        )
        self.testnet = Testnet(self.info)
        self.stepped = False
        self.observer: _Observer | None = None
        self.anonymous_peak_mb = [math.nan] * options.validators
        # Each node's block writer process (``[store] writer_process``), if it has one.
        self.writer_pids: list[int | None] = [None] * options.validators

    def cpu_s(self) -> list[float]:
        """Each node's CPU seconds so far, its block writer process's included."""
        return [
            ProcessSampler.cpu_s(pid) + (0.0 if writer is None else ProcessSampler.cpu_s(writer))
            for pid, writer in zip(self.pids(), self.writer_pids, strict=True)
        ]

    def sample_memory(self) -> list[float]:
        """Each node's file-backed RSS now (MiB), keeping the peak of its anonymous part."""
        file_backed = []
        for index, pid in enumerate(self.pids()):
            anonymous, file_mb = ProcessSampler.rss_split_mb(pid)
            peak = self.anonymous_peak_mb[index]
            if math.isnan(peak) or anonymous > peak:
                self.anonymous_peak_mb[index] = anonymous
            file_backed.append(file_mb)
        return file_backed

    def start(self) -> None:
        self.testnet.start_all()
        n = self.options.validators

        def ready() -> bool:
            for index in range(n):
                try:
                    with self.testnet.client(index, timeout_s=2.0) as client:
                        if int(str(client.status().get("peers", 0))) < n - 1:
                            return False
                except ApiError:
                    return False
            return True

        self.testnet.wait_until("every node serving and connected", ready, STARTUP_TIMEOUT_S)
        for index in range(n):
            with self.testnet.client(index) as client:
                pid = client.status().get("block_writer_pid")
            self.writer_pids[index] = pid if isinstance(pid, int) else None
        with self.testnet.client(0) as client:
            height = int(str(client.status().get("height", 0)))
        self.observer = _Observer(self.info.api_addresses[0], height + 1)
        self.observer.start()

    def pids(self) -> list[int]:
        return [process.pid if process is not None else -1 for process in self.testnet.processes]

    def step(
        self,
        rate: float,
        duration_s: float,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> StepResult:
        """Submit at ``rate`` for ``duration_s``; wait for the drain; compute the figures.
        ``progress(phase, seconds done, seconds)`` is told while the load runs. A testnet runs
        one step: the streams start at every account's genesis nonce."""
        if self.stepped:
            raise RuntimeError("a bench testnet runs one step; start a fresh one for the next")
        self.stepped = True
        assert self.observer is not None
        n = self.options.validators
        per_node = rate / n
        rounds = max(1, math.ceil(per_node * duration_s / self.options.accounts_per_bank))
        streams = sign_streams(
            self.accounts,
            self.info.chain_id,
            rounds,
            processes=os.cpu_count() or 1,
        )
        plans = [
            SubmitPlan(self.info.api_addresses[bank], streams[bank], per_node) for bank in range(n)
        ]
        hashes = [[hash_bytes(data).hex() for data in stream] for stream in streams]
        start_at = time.time() + 1.5  # the submitter process imports and connects first
        submitter = start_submitter(plans, start_at, duration_s)
        time.sleep(max(0.0, start_at - time.time()))
        cpu_before = self.cpu_s()
        jiffies_before = read_cpu_jiffies()
        phases_before = self._phase_samples()
        middle_at = start_at + duration_s / 2
        phases_middle: list[NodeSample | None] | None = None
        while (left_s := start_at + duration_s - time.time()) > 0:
            if progress is not None:
                progress(f"offering {rate:.0f} tx/s", int(duration_s - left_s), int(duration_s))
            self.sample_memory()
            if phases_middle is None and time.time() >= middle_at:
                phases_middle = self._phase_samples()
            wait_s = min(left_s, _PROGRESS_S)
            if phases_middle is None:
                wait_s = max(0.0, min(wait_s, middle_at - time.time()))
            time.sleep(wait_s)
        cpu_after = self.cpu_s()
        jiffies_after = read_cpu_jiffies()
        phases_after = self._phase_samples()
        end_at = time.time()
        results, submitter_cpu = submitter.result(timeout_s=duration_s + 120)
        window = end_at - start_at
        figures = self._figures(
            rate,
            duration_s,
            start_at,
            window,
            hashes,
            results,
            submitter_cpu,
            [after - before for before, after in zip(cpu_before, cpu_after, strict=True)],
        )
        figures.phases_us_per_tx = _phases_per_transaction(phases_before, phases_after)
        figures.phases_us_per_tx_of_node = _us_per_transaction(
            phases_before, phases_after, lambda sample: sample.cpu_ns
        )
        figures.loop_tasks_us_per_tx = loop_tasks_per_transaction(phases_before, phases_after)
        figures.signatures_checked = signatures_checked_between(phases_before, phases_after)
        figures.machine_cores = cores_by_state(jiffies_before, jiffies_after, os.cpu_count() or 1)
        figures.waits_ms_per_block, figures.waits_ms_mean = waits_between(
            phases_before, phases_after
        )
        if phases_middle is not None:
            halves = (
                _phases_per_transaction(phases_before, phases_middle),
                _phases_per_transaction(phases_middle, phases_after),
            )
            if all(halves):
                figures.phases_us_per_tx_by_half = halves
        return figures

    def _phase_samples(self) -> list[NodeSample | None]:
        """Each node's ``NodeSample`` (``/status``); None for a node that did not answer."""
        samples: list[NodeSample | None] = []
        for index in range(self.options.validators):
            try:
                with self.testnet.client(index, timeout_s=5.0) as client:
                    status = client.status()
            except ApiError:
                samples.append(None)
                continue
            cpu = status.get("cpu_ns")
            committed = status.get("transactions_committed")
            height = status.get("height")
            waits = status.get("waits")
            if (
                not isinstance(cpu, dict)
                or not isinstance(committed, int)
                or not isinstance(height, int)
            ):
                samples.append(None)
                continue
            waited: dict[str, tuple[int, int]] = {}
            if isinstance(waits, dict):
                for wait, entry in waits.items():
                    if isinstance(entry, dict):
                        count, ns = entry.get("count"), entry.get("ns")
                        if isinstance(count, int) and isinstance(ns, int):
                            waited[str(wait)] = (count, ns)
            tasks = status.get("loop_tasks_cpu_ns")
            checked = status.get("signatures_checked")
            samples.append(
                NodeSample(
                    committed,
                    height,
                    {str(k): int(v) for k, v in cpu.items() if isinstance(v, int)},
                    waited,
                    {str(k): v for k, v in tasks.items() if isinstance(v, int)}
                    if isinstance(tasks, dict)
                    else {},
                    {str(k): v for k, v in checked.items() if isinstance(v, int)}
                    if isinstance(checked, dict)
                    else {},
                )
            )
        return samples

    def _figures(
        self,
        rate: float,
        duration_s: float,
        start_at: float,
        window: float,
        hashes: list[list[str]],
        results: list[SubmitResult],
        submitter_cpu: float,
        cpu: list[float],
    ) -> StepResult:
        assert self.observer is not None
        submitted: list[tuple[str, float, float]] = []
        rejected: Counter[str] = Counter()
        accepted = transport_errors = pushed_back = abandoned = 0
        last_error = ""
        for stream_hashes, result in zip(hashes, results, strict=True):
            for tx_hash, at, offered_at in zip(
                stream_hashes, result.submit_times, result.offer_times, strict=False
            ):
                if not math.isnan(at):
                    submitted.append((tx_hash, at, offered_at))
            rejected.update(result.rejected)
            accepted += result.accepted
            transport_errors += result.transport_errors
            pushed_back += result.pushed_back
            abandoned += result.abandoned
            last_error = result.last_error or last_error
        deadline = time.time() + DRAIN_TIMEOUT_S
        commit_time = self.observer.commit_time
        expected = accepted
        while time.time() < deadline:
            if sum(1 for tx_hash, _, _ in submitted if tx_hash in commit_time) >= expected:
                break
            time.sleep(0.25)
        latencies = sorted(
            (commit_time[tx_hash] - at) * 1000
            for tx_hash, at, _ in submitted
            if tx_hash in commit_time
        )
        offer_latencies = sorted(
            (commit_time[tx_hash] - offered_at) * 1000
            for tx_hash, _, offered_at in submitted
            if tx_hash in commit_time
        )
        ours = {tx_hash for tx_hash, _, _ in submitted}
        warmup = min(WARMUP_S_MAX, window / 5)
        in_window = [
            block
            for block in self.observer.blocks
            if start_at + warmup <= block.seen_at <= start_at + window
        ]
        counted = sum(sum(1 for h in block.hashes if h in ours) for block in in_window)
        rounds = sorted(
            round_intervals_ms([(block.height, block.timestamp_ms) for block in in_window])
        )
        measured_s = window - warmup
        return StepResult(
            rate_offered=rate,
            duration_s=duration_s,
            submitted=len(submitted),
            accepted=accepted,
            rejected=dict(rejected),
            pushed_back=pushed_back,
            abandoned=abandoned,
            transport_errors=transport_errors,
            committed=len(latencies),
            uncommitted=accepted - len(latencies),
            tx_per_s=counted / measured_s,
            latency_ms_p50=_percentile(latencies, 0.50),
            latency_ms_p95=_percentile(latencies, 0.95),
            latency_ms_p99=_percentile(latencies, 0.99),
            latency_ms_max=latencies[-1] if latencies else math.nan,
            offer_latency_ms_p50=_percentile(offer_latencies, 0.50),
            offer_latency_ms_p99=_percentile(offer_latencies, 0.99),
            offer_latency_ms_max=offer_latencies[-1] if offer_latencies else math.nan,
            blocks=len(in_window),
            blocks_per_s=len(in_window) / measured_s,
            block_size_avg=statistics.fmean([len(b.hashes) for b in in_window])
            if in_window
            else 0.0,
            block_size_max=max((len(b.hashes) for b in in_window), default=0),
            round_ms_p50=_percentile(rounds, 0.50),
            round_ms_p90=_percentile(rounds, 0.90),
            round_ms_max=rounds[-1] if rounds else math.nan,
            cpu_s=cpu,
            cpu_percent=[100 * value / window for value in cpu],
            submitter_cpu_s=submitter_cpu,
            last_error=last_error,
        )

    def stop(self) -> tuple[list[float], list[float], list[float], list[str]]:
        """Stop everything; returns the nodes' peak RSS, their block writer processes' (NaN:
        none), their file-backed RSS at the end and any chain disagreement (the anonymous
        peaks are in ``anonymous_peak_mb``)."""
        if self.observer is not None:
            self.observer.stop()
        rss = [ProcessSampler.rss_peak_mb(pid) for pid in self.pids()]
        writer_rss = [
            math.nan if pid is None else ProcessSampler.rss_peak_mb(pid) for pid in self.writer_pids
        ]
        file_backed = self.sample_memory()
        problems: list[str] = []
        try:
            clients = [self.testnet.client(i) for i in range(self.options.validators)]
            problems = agreement_problems(clients)
            for client in clients:
                client.close()
        except ApiError as error:
            problems = [f"could not compare chains: {error}"]
        self.testnet.stop_all()
        return rss, writer_rss, file_backed, problems

    def abandon(self) -> None:
        """Stop the nodes without reading anything from them (the run is not reported)."""
        if self.observer is not None:
            self.observer.abandon()
        self.testnet.stop_all()


def run_throughput(
    options: BenchOptions,
    progress: bool = False,
    report: Callable[[str, int, int], None] | None = None,
) -> ThroughputReport:
    """Run the benchmark (see the module docstring). ``progress`` prints each step of a
    search; ``report(phase, done, total)`` follows a fixed-rate run's load."""
    load = os.getloadavg()
    verify_rate = measure_verify_rate()
    cores = os.cpu_count() or 1
    temporary = options.keep_directory is None
    directory = (
        Path(tempfile.mkdtemp(prefix="suanpan-bench-")) if temporary else options.keep_directory
    )
    assert directory is not None
    ends = searched = _RunEnds(options.validators)
    overloaded = _RunEnds(options.validators)
    steps: list[StepResult] = []
    overload: list[StepResult] = []

    def fresh_run(name: str) -> _Run:
        """A new testnet from genesis, started; ``ends`` stops it."""
        run = _Run(options, directory / name)
        ends.running = run
        run.start()
        return run

    def stop_run() -> None:
        run = ends.running
        if run is not None:
            ends.running = None
            rss, writer_rss, file_backed, problems = run.stop()
            # A search names the step whose testnet disagreed.
            label = "" if options.rate is not None else f"{run.directory.name}: "
            ends.add(
                rss, writer_rss, run.anonymous_peak_mb, file_backed, [label + p for p in problems]
            )
            if temporary:
                shutil.rmtree(run.directory, ignore_errors=True)

    try:
        if options.rate is not None:
            run = fresh_run("testnet")
            steps.append(run.step(options.rate, options.duration_s, report))
        else:
            steps = _search(fresh_run, stop_run, options, progress)
        good = [step for step in steps if step.sustainable(options.p99_ms_max)]
        best = max(good or steps, key=lambda step: step.tx_per_s)
        if options.rate is None and options.overload and good:
            ends = overloaded  # fresh_run and stop_run keep these steps' figures apart
            overload = _overload(fresh_run, stop_run, options, best, progress)
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM) or failed: no report comes, so the nodes are stopped
        # at once, without waiting on them for figures or a comparison of their chains.
        abandoned, ends.running = ends.running, None
        if abandoned is not None:
            abandoned.abandon()
        raise
    finally:
        stop_run()
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)
    return ThroughputReport(
        options,
        verify_rate,
        cores,
        load,
        steps,
        best,
        searched.rss_peak_mb,
        searched.writer_rss_peak_mb,
        searched.anonymous_peak_mb,
        searched.file_mb,
        searched.problems + overloaded.problems,
        "" if temporary else str(directory),
        overload,
        overloaded.rss_peak_mb if overload else [],
    )


class _RunEnds:
    """What the testnets of a benchmark left when they stopped: per node, the largest peak RSS,
    anonymous peak and file-backed RSS of any of them; every chain disagreement."""

    def __init__(self, validators: int) -> None:
        self.running: _Run | None = None
        self.rss_peak_mb = [math.nan] * validators
        self.writer_rss_peak_mb = [math.nan] * validators
        self.anonymous_peak_mb = [math.nan] * validators
        self.file_mb = [math.nan] * validators
        self.problems: list[str] = []

    def add(
        self,
        rss: list[float],
        writer_rss: list[float],
        anonymous: list[float],
        file_backed: list[float],
        problems: list[str],
    ) -> None:
        """One testnet stopped: its figures per node and its disagreements."""
        self.problems.extend(problems)
        self.rss_peak_mb = _largest(self.rss_peak_mb, rss)
        self.writer_rss_peak_mb = _largest(self.writer_rss_peak_mb, writer_rss)
        self.anonymous_peak_mb = _largest(self.anonymous_peak_mb, anonymous)
        self.file_mb = _largest(self.file_mb, file_backed)


def _largest(kept: list[float], new: list[float]) -> list[float]:
    """Element by element, the larger of two lists of figures (NaN: not measured)."""
    return [
        b if math.isnan(a) or (not math.isnan(b) and b > a) else a
        for a, b in zip(kept, new, strict=True)
    ]


def _step_alone(
    fresh_run: Callable[[str], _Run],
    stop_run: Callable[[], None],
    name: str,
    rate: float,
    options: BenchOptions,
) -> StepResult:
    """One step at ``rate`` on a fresh testnet called ``name``, stopped after it (a step that
    raises leaves its testnet to ``run_throughput``, which stops it without reading it)."""
    step = fresh_run(name).step(rate, options.duration_s)
    stop_run()
    return step


def _search(
    fresh_run: Callable[[str], _Run],
    stop_run: Callable[[], None],
    options: BenchOptions,
    progress: bool,
) -> list[StepResult]:
    steps: list[StepResult] = []
    good: float | None = None
    bad: float | None = None
    rate = SEARCH_START_RATE
    while len(steps) < SEARCH_STEPS_MAX:
        step = _step_alone(fresh_run, stop_run, f"testnet-step{len(steps) + 1}", rate, options)
        steps.append(step)
        ok = step.sustainable(options.p99_ms_max)
        if progress:
            verdict = "sustained" if ok else "not sustained"
            print(
                f"  step {rate:8.0f} tx/s offered: {step.tx_per_s:8.1f} committed/s,"
                f" p99 from offer {step.offer_latency_ms_p99:7.0f} ms,"
                f" pushed back {step.pushed_back}, refused {sum(step.rejected.values())}:"
                f" {verdict}",
                flush=True,
            )
        if ok:
            good = rate
        else:
            bad = rate
        if bad is None:
            rate *= 2
        elif good is None:
            rate /= 2
            if rate < 50:
                break
        elif bad / good <= 1.2:
            break
        else:
            rate = (good + bad) / 2
    return steps


def _overload(
    fresh_run: Callable[[str], _Run],
    stop_run: Callable[[], None],
    options: BenchOptions,
    peak: StepResult,
    progress: bool,
) -> list[StepResult]:
    """The overload steps: ``OVERLOAD_MULTIPLES`` of ``peak``'s offered rate, each on a fresh
    testnet."""
    steps: list[StepResult] = []
    for multiple in OVERLOAD_MULTIPLES:
        rate = peak.rate_offered * multiple
        step = _step_alone(fresh_run, stop_run, f"testnet-overload-{multiple}x", rate, options)
        steps.append(step)
        if progress:
            verdict = "holds" if step.holds_overload(peak.tx_per_s) else "does not hold"
            print(
                f"  overload {multiple}x {rate:8.0f} tx/s offered: {step.tx_per_s:8.1f}"
                f" committed/s ({step.tx_per_s / peak.tx_per_s:.0%} of the best step),"
                f" p99 of admitted {step.latency_ms_p99:7.0f} ms,"
                f" pushed back {step.pushed_back}, refused {sum(step.rejected.values())}:"
                f" {verdict}",
                flush=True,
            )
    return steps
