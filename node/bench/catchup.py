"""Catch-up: how fast a validator that was down syncs the blocks it missed.

``run_catchup`` generates a benchmark testnet (``node.bench.workload`` accounts), starts it,
stops the last validator, and lets the others commit ``blocks`` more heights under a light
payments load (short block intervals so the backlog builds quickly). It then stops the load,
waits until the live nodes' height is stable, restarts the stopped validator and times, from the
moment its node logs ``node_started`` (process start-up and store opening excluded, reported
separately), until it logs the commit of the others' height. Both instants come from the
restarted node's own log: its API answers late while it applies blocks, so waiting for the API
would count most of the sync as start-up. Every synced block is verified (its commit
certificate's 2f+1 signatures and its chain links, by the replica) and applied (executed
through the app host and committed to LMDB) before the next one counts: the figures are
verified-and-applied blocks per second and the transactions per second inside them. The
syncing node checks every transaction's signature too, unless the run sets ``[consensus]
trust_certified_blocks`` (``trust_certified``): it then applies each block on its
certificate, and ``transactions_trusted`` says how many transactions it did not check.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NamedTuple

from node.bench.submitter import SubmitPlan, start_submitter
from node.bench.throughput import ProcessSampler
from node.bench.workload import (
    BENCH_CHAIN_ID,
    CATCHUP_ACCOUNTS_PER_BANK,
    bench_accounts,
    sign_streams,
)
from node.client.client import ApiError
from node.config import NodeConfig, with_settings
from node.jsonvalue import JsonType
from node.phases import WAITS
from node.testnet.testnet import Testnet, create_testnet

__all__ = ["CatchupReport", "catchup_config", "run_catchup", "sync_window"]

# Load while the backlog builds: enough for non-empty blocks, light on a busy machine.
LOAD_TX_PER_S: Final = 200.0
STARTUP_TIMEOUT_S: Final = 120.0
# Building the backlog and syncing it are bounded (a stuck run fails loudly).
PHASE_TIMEOUT_S: Final = 900.0
_POLL_S: Final = 0.1
# How often the syncing node's height is asked for: the times come from its log, so this only
# decides how soon the run ends; every request is work for the node being measured.
_SYNC_POLL_S: Final = 1.0
# Log events of a node asking a peer for blocks.
_REQUEST_EVENTS: Final = frozenset({"block_sync_probed", "block_sync_requested"})


def catchup_config(*, trust_certified: bool = False) -> NodeConfig:
    """Short block intervals so the live validators build a backlog quickly; with
    ``trust_certified``, ``[consensus] trust_certified_blocks`` (it matters only to the node
    that syncs: the others validate every block they vote for)."""
    return NodeConfig().with_changes(
        "consensus",
        block_interval_ms=20,
        empty_block_interval_ms=20,
        trust_certified_blocks=trust_certified,
    )


@dataclass(frozen=True, slots=True)
class CatchupReport:
    """What the catch-up run measured."""

    validators: int
    blocks_synced: int
    transactions_synced: int
    startup_s: float
    sync_s: float
    # Of ``sync_s``: until the node asked a peer for the first blocks (until then it had not
    # heard that the others were ahead: with the restarted node the primary of the live
    # height, they are waiting out a view change), and from then until the top was applied.
    detect_s: float
    apply_s: float
    # The syncing node's process CPU (every thread) from its ``node_started`` until it held the
    # top, in total and by phase (``node.phases``, as ``cpu_ns`` in ``/status``).
    cpu_ns: Mapping[str, int] = field(default_factory=dict)
    # Of that, its event loop thread's (``loop_cpu_ns`` in ``/status``).
    loop_cpu_ns: int = 0
    # Over the same time, how long its event loop thread was runnable but waited for a CPU
    # (``loop_cpu_wait_ns`` in ``/status``; None where the kernel does not say).
    loop_cpu_wait_ns: int | None = None
    # The syncing node's memory once it held the top, in MiB: its peak RSS since it started
    # (``VmHWM``), and its anonymous (heap) and file-backed (LMDB's map of the store) parts
    # then; NaN where ``/proc`` does not say.
    rss_peak_mb: float = math.nan
    # Its block writer process's peak RSS (``[store] writer_process``; NaN: none).
    writer_rss_peak_mb: float = math.nan
    rss_anonymous_mb: float = math.nan
    rss_file_mb: float = math.nan
    # Whether the syncing node ran with ``[consensus] trust_certified_blocks``, and how many
    # of the synced transactions it applied without checking their signatures.
    trust_certified: bool = False
    transactions_trusted: int = 0
    # The synced blocks whose Merkle tree update it made once per group, and the groups
    # (``tree_groups`` in ``/status``; ``[consensus] sync_tree_blocks``).
    tree_group_blocks: int = 0
    tree_groups: int = 0
    # ``--set`` settings every node ran with, as given.
    settings: tuple[str, ...] = ()
    # The syncing node's consensus driver's waits since it started (``node.phases.WAITS``,
    # ``waits`` in ``/status``), in seconds of wall time: while syncing, for signatures still
    # being checked ahead (``signatures_ahead``) and for the block writer to make room in its
    # queue (``write_queue_full``); the rest of the loop's idle time it waited for blocks.
    waits_s: Mapping[str, float] = field(default_factory=dict)
    # The syncing node's event loop CPU outside the phases, by task, since its event loop
    # started (``loop_tasks_cpu_ns`` in ``/status``; empty unless ``[metrics] loop_task_cpu``).
    loop_tasks_ns: Mapping[str, int] = field(default_factory=dict)

    @property
    def blocks_per_s(self) -> float:
        """Verified and applied blocks per second."""
        return self.blocks_synced / self.sync_s if self.sync_s > 0 else 0.0

    @property
    def transactions_per_s(self) -> float:
        """Transactions applied per second while syncing."""
        return self.transactions_synced / self.sync_s if self.sync_s > 0 else 0.0

    @property
    def transactions_per_s_applying(self) -> float:
        """Transactions applied per second from the first block request on."""
        return self.transactions_synced / self.apply_s if self.apply_s > 0 else 0.0

    @property
    def cpu_us_per_tx(self) -> float:
        """The syncing node's CPU microseconds (every thread) per transaction applied."""
        total = self.cpu_ns.get("total", 0)
        return total / 1000 / self.transactions_synced if self.transactions_synced else 0.0

    @property
    def cores(self) -> float:
        """The syncing node's CPU time over the sync's wall time: how many cores it kept busy."""
        total = self.cpu_ns.get("total", 0)
        return total / 1e9 / self.sync_s if self.sync_s > 0 else 0.0

    @property
    def loop_busy(self) -> float:
        """The share of the sync's wall time the event loop thread was on a CPU. The loop
        executes the blocks; below 1 it waited (for the GIL held by a worker thread, for
        signatures, or for the next blocks to arrive)."""
        return self.loop_cpu_ns / 1e9 / self.sync_s if self.sync_s > 0 else 0.0

    @property
    def loop_cpu_wait(self) -> float | None:
        """The share of the sync's wall time the event loop thread was runnable but waited
        for a CPU (other threads and processes held the cores); None where not measured. What
        is left of the sync beside ``loop_busy`` and this, the loop slept: on its waits
        (``waits_s``) or for the GIL."""
        if self.loop_cpu_wait_ns is None or self.sync_s <= 0:
            return None
        return self.loop_cpu_wait_ns / 1e9 / self.sync_s

    def to_json(self) -> dict[str, JsonType]:
        """JSON form."""
        per_tx: dict[str, JsonType] = {
            phase: round(ns / 1000 / self.transactions_synced, 1)
            for phase, ns in self.cpu_ns.items()
            if phase != "total" and self.transactions_synced
        }
        return {
            "validators": self.validators,
            "blocks_synced": self.blocks_synced,
            "transactions_synced": self.transactions_synced,
            "startup_s": round(self.startup_s, 2),
            "sync_s": round(self.sync_s, 2),
            "blocks_per_s": round(self.blocks_per_s, 1),
            "transactions_per_s": round(self.transactions_per_s, 1),
            "detect_s": round(self.detect_s, 2),
            "apply_s": round(self.apply_s, 2),
            "transactions_per_s_applying": round(self.transactions_per_s_applying, 1),
            "cpu_us_per_tx": round(self.cpu_us_per_tx, 1),
            "phases_us_per_tx": per_tx,
            "cores": round(self.cores, 2),
            "loop_busy": round(self.loop_busy, 2),
            "loop_cpu_wait": None if self.loop_cpu_wait is None else round(self.loop_cpu_wait, 2),
            "rss_peak_mb": _mib(self.rss_peak_mb),
            "writer_rss_peak_mb": _mib(self.writer_rss_peak_mb),
            "rss_anonymous_mb": _mib(self.rss_anonymous_mb),
            "rss_file_mb": _mib(self.rss_file_mb),
            "trust_certified_blocks": self.trust_certified,
            "settings": list(self.settings),
            "transactions_trusted": self.transactions_trusted,
            "tree_group_blocks": self.tree_group_blocks,
            "tree_groups": self.tree_groups,
            "waits_s": {wait: round(value, 2) for wait, value in self.waits_s.items()},
            "loop_tasks_us_per_tx": {
                task: round(ns / 1000 / self.transactions_synced, 1)
                for task, ns in sorted(self.loop_tasks_ns.items(), key=lambda item: -item[1])
                if self.transactions_synced
            },
        }


def _mib(value: float) -> JsonType:
    """MiB to one decimal for JSON; None for NaN (not measured)."""
    return None if math.isnan(value) else round(value, 1)


def _height(testnet: Testnet, index: int) -> int:
    """The node's committed height; -1 while it does not answer (busy applying a batch)."""
    try:
        with testnet.client(index, timeout_s=30.0) as client:
            return int(str(client.status().get("height", 0)))
    except ApiError:
        return -1


def run_catchup(
    blocks: int,
    validators: int = 4,
    keep_directory: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    *,
    trust_certified: bool = False,
    settings: tuple[str, ...] = (),
) -> CatchupReport:
    """Run the catch-up benchmark (see the module docstring); ``progress(phase, done, total)``
    is told how far each phase is (blocks of the backlog built, then synced). ``settings``
    (``section.key=value``, ``node.config.with_settings``) apply to every node after the
    benchmark's own; ``ConfigError`` names a bad one before anything starts."""
    config = with_settings(catchup_config(trust_certified=trust_certified), settings)
    trust_certified = config.consensus.trust_certified_blocks
    report = progress if progress is not None else _no_progress
    if validators < 4:
        raise ValueError("catch-up needs at least 4 validators (3 keep committing without one)")
    temporary = keep_directory is None
    directory = Path(tempfile.mkdtemp(prefix="suanpan-catchup-")) if temporary else keep_directory
    assert directory is not None
    accounts = bench_accounts(validators, CATCHUP_ACCOUNTS_PER_BANK)
    info = create_testnet(
        directory / "testnet",
        validators,
        chain_id=BENCH_CHAIN_ID,
        apps=("membership", "payments"),
        app_state=accounts.app_state(),
        config=config,
    )
    testnet = Testnet(info)
    lagging = validators - 1
    live = range(lagging)
    try:
        report("starting the testnet", 0, 1)
        testnet.start_all()
        testnet.wait_until(
            "every node serving", lambda: _all_serving(testnet, validators), STARTUP_TIMEOUT_S
        )
        testnet.stop(lagging)
        behind = _height(testnet, 0)
        # Enough load to last until the backlog is built (the submitter is stopped then).
        duration_s = PHASE_TIMEOUT_S
        per_node = LOAD_TX_PER_S / len(live)
        rounds = max(1, int(per_node * 120 / CATCHUP_ACCOUNTS_PER_BANK))
        streams = sign_streams(accounts, info.chain_id, rounds, processes=os.cpu_count() or 1)
        plans = [SubmitPlan(info.api_addresses[i], streams[i], per_node) for i in live]
        submitter = start_submitter(plans, time.time() + 1.0, duration_s)
        target = behind + blocks

        def backlog_built() -> bool:
            height = _height(testnet, 0)
            report("building the backlog", max(0, height - behind), blocks)
            return height >= target

        try:
            testnet.wait_until(
                f"the live validators reaching height {target}",
                backlog_built,
                PHASE_TIMEOUT_S,
                poll_s=0.5,
            )
        finally:
            submitter.stop()
        top = _settled_height(testnet, live)
        transactions = 0
        with testnet.client(0) as client:
            for height in range(behind + 1, top + 1):
                header = client.block(height).get("header")
                if isinstance(header, dict):
                    transactions += int(str(header.get("transaction_count", 0)))
        lagging_height = _stored_height(testnet, lagging)
        report("restarting the lagging validator", 0, 1)
        started = time.time()
        testnet.start(lagging)
        testnet.wait_until(
            "the restarted validator serving",
            lambda: testnet.serving(lagging, timeout_s=2.0),
            STARTUP_TIMEOUT_S,
            poll_s=_POLL_S,
        )

        def synced_up() -> bool:
            height = _height(testnet, lagging)
            report("syncing", max(0, height - lagging_height), top - lagging_height)
            return height >= top

        testnet.wait_until(
            f"the restarted validator reaching height {top}",
            synced_up,
            PHASE_TIMEOUT_S,
            poll_s=_SYNC_POLL_S,
        )
        figures = _status_figures(testnet, lagging)
        process = testnet.processes[lagging]
        pid = process.pid if process is not None else -1
        rss_peak_mb = ProcessSampler.rss_peak_mb(pid)
        # The node's figure covers a process still running (its peak as of the status) and
        # one started for the sync that has ended.
        writer_rss_peak_mb = (
            math.nan
            if figures.writer_rss_peak_bytes is None
            else figures.writer_rss_peak_bytes / 2**20
        )
        rss_anonymous_mb, rss_file_mb = ProcessSampler.rss_split_mb(pid)
        log = testnet.info.homes[lagging] / "node.log"
        serving, requested, synced = sync_window(log, started, top)
        start_cpu_ns, start_loop_cpu_ns, start_loop_wait_ns = started_figures(
            log, started, "cpu_ns", "loop_cpu_ns", "loop_cpu_wait_ns"
        )
        return CatchupReport(
            validators=validators,
            blocks_synced=top - lagging_height,
            transactions_synced=transactions,
            startup_s=serving - started,
            sync_s=synced - serving,
            detect_s=requested - serving,
            apply_s=synced - requested,
            cpu_ns=without_start_up(figures.cpu_ns, start_cpu_ns),
            loop_cpu_ns=figures.loop_cpu_ns - start_loop_cpu_ns,
            loop_cpu_wait_ns=None
            if figures.loop_cpu_wait_ns is None
            else figures.loop_cpu_wait_ns - start_loop_wait_ns,
            rss_peak_mb=rss_peak_mb,
            writer_rss_peak_mb=writer_rss_peak_mb,
            rss_anonymous_mb=rss_anonymous_mb,
            rss_file_mb=rss_file_mb,
            trust_certified=trust_certified,
            transactions_trusted=figures.transactions_trusted,
            tree_group_blocks=figures.tree_group_blocks,
            tree_groups=figures.tree_groups,
            settings=settings,
            waits_s=figures.waits_s,
            loop_tasks_ns=figures.loop_tasks_ns,
        )
    finally:
        testnet.stop_all()
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)


def without_start_up(cpu_ns: Mapping[str, int], start_up_ns: int) -> dict[str, int]:
    """A node's ``cpu_ns`` (``/status``) without its start-up: the phases count from zero in
    a new process, and its start-up (imports, opening the store: what it had used when it
    logged ``node_started``) is in ``total`` and so in ``other``, what no phase covers."""
    document = dict(cpu_ns)
    for key in ("total", "other"):
        if key in document:
            document[key] -= start_up_ns
    return document


class _StatusFigures(NamedTuple):
    """What ``/status`` says of a node so far: its process CPU nanoseconds in total and by
    phase (its block writer process's included), its event loop thread's and that thread's
    wait for a CPU (None: not measured), the transactions it
    applied on their block's certificate, the blocks and groups of its grouped Merkle tree
    updates, the largest peak RSS of its block writer processes (None: none ran) and its
    consensus driver's waits in seconds, and its event loop's CPU outside the phases by task
    (empty: not measured)."""

    cpu_ns: dict[str, int]
    loop_cpu_ns: int
    loop_cpu_wait_ns: int | None
    transactions_trusted: int
    tree_group_blocks: int
    tree_groups: int
    writer_rss_peak_bytes: int | None
    waits_s: dict[str, float]
    loop_tasks_ns: dict[str, int]


def _status_figures(testnet: Testnet, index: int) -> _StatusFigures:
    """Node ``index``'s ``_StatusFigures``."""
    with testnet.client(index, timeout_s=30.0) as client:
        status = client.status()
    document = status.get("cpu_ns")
    loop = status.get("loop_cpu_ns")
    loop_wait = status.get("loop_cpu_wait_ns")
    trusted = status.get("transactions_trusted")
    writer_rss = status.get("block_writer_rss_peak_bytes")
    tasks = status.get("loop_tasks_cpu_ns")
    groups = status.get("tree_groups")
    group_counts = (
        {str(name): count for name, count in groups.items() if isinstance(count, int)}
        if isinstance(groups, dict)
        else {}
    )
    phases = (
        {str(phase): int(str(ns)) for phase, ns in document.items()}
        if isinstance(document, dict)
        else {}
    )
    return _StatusFigures(
        phases,
        loop if isinstance(loop, int) else 0,
        loop_wait if isinstance(loop_wait, int) else None,
        trusted if isinstance(trusted, int) else 0,
        group_counts.get("blocks", 0),
        group_counts.get("groups", 0),
        writer_rss if isinstance(writer_rss, int) else None,
        waits_seconds(status.get("waits")),
        {str(task): ns for task, ns in tasks.items() if isinstance(ns, int)}
        if isinstance(tasks, dict)
        else {},
    )


def waits_seconds(document: JsonType) -> dict[str, float]:
    """``/status``'s ``waits`` (each ``{"count", "ns"}``) as seconds by wait; the waits it
    does not give are 0."""
    waits = dict.fromkeys(WAITS, 0.0)
    if isinstance(document, dict):
        for wait in WAITS:
            entry = document.get(wait)
            ns = entry.get("ns") if isinstance(entry, dict) else None
            if isinstance(ns, int):
                waits[wait] = ns / 1e9
    return waits


def _no_progress(phase: str, done: int, total: int) -> None:
    return None


def _all_serving(testnet: Testnet, validators: int) -> bool:
    return all(testnet.serving(index, timeout_s=2.0) for index in range(validators))


def _settled_height(testnet: Testnet, live: range) -> int:
    """The height every live validator has reached (they keep adding empty blocks)."""
    return min(_height(testnet, index) for index in live)


def sync_window(log: Path, since: float, top: int) -> tuple[float, float, float]:
    """When the restarted node logged ``node_started`` (after ``since``, wall clock), its
    first request for blocks (its start-up probe or the replica's request) and the commit of
    height ``top``, from its node ``log``."""
    started: float | None = None
    requested: float | None = None
    synced: float | None = None
    for at, record in _log_records(log):
        event = record.get("event")
        if _is_restart(at, record, since):
            started, requested, synced = at, None, None
        elif event in _REQUEST_EVENTS and started is not None and requested is None:
            requested = at
        elif (
            event == "block_committed"
            and started is not None
            and synced is None
            and record.get("height") == top
        ):
            synced = at
    if started is None or synced is None:
        raise RuntimeError(f"{log} does not show the restart and the commit of height {top}")
    if requested is None or requested > synced:
        raise RuntimeError(f"{log} does not show the restarted node asking for blocks")
    return started, requested, synced


def started_figures(log: Path, since: float, *keys: str) -> list[int]:
    """What the node had used when it logged its last ``node_started`` after ``since`` (wall
    clock), from one read of its node ``log``, for each of ``keys``: CPU nanoseconds of the
    process (``cpu_ns``) or of its event loop thread (``loop_cpu_ns``), or the nanoseconds that
    thread had waited for a CPU (``loop_cpu_wait_ns``); 0 for a key that record does not give
    (and for all of them without such a record)."""
    started: dict[str, JsonType] = {}
    for at, record in _log_records(log):
        if _is_restart(at, record, since):
            started = record
    figures: list[int] = []
    for key in keys:
        value = started.get(key)
        figures.append(value if isinstance(value, int) else 0)
    return figures


def _log_records(log: Path) -> Iterator[tuple[float, dict[str, JsonType]]]:
    """The node ``log``'s JSON records that carry a time, with that time (other lines are
    skipped)."""
    for line in log.read_text("utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("ts"), int | float):
            yield float(record["ts"]), record


def _is_restart(at: float, record: Mapping[str, JsonType], since: float) -> bool:
    """Whether ``record`` is the node's ``node_started`` of a start after ``since`` (with a
    second's slack between the benchmark's clock reading and the node's)."""
    return record.get("event") == "node_started" and at >= since - 1.0


def _stored_height(testnet: Testnet, index: int) -> int:
    """The stopped validator's height, from its node log's last committed block."""
    log = testnet.info.homes[index] / "node.log"
    height = 0
    for line in log.read_text("utf-8").splitlines():
        if '"event":"block_committed"' in line:
            marker = '"height":'
            start = line.index(marker) + len(marker)
            end = start
            while end < len(line) and line[end].isdigit():
                end += 1
            height = int(line[start:end])
    return height
