"""The benchmarks run end to end and report their fields. Speed is never asserted here: the
benchmarks print figures; a busy machine must not fail the suite."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import ClassVar, cast

import lmdb
import pytest
from click.testing import CliRunner

import node.bench.merkle as merkle_bench
from apps.host import AppHost
from apps.merkle import MemoryTree, build, leaf_of, update
from apps.state import MemoryBackend
from apps.transaction import Transaction
from node.apploader import load_apps
from node.bench.merkle import run_merkle_bench
from node.bench.scaling import expected_messages
from node.bench.throughput import (
    OVERLOAD_MULTIPLES,
    BenchOptions,
    NodeSample,
    ProcessSampler,
    StepResult,
    ThroughputReport,
    _Run,
    _RunEnds,
    _search,
    round_intervals_ms,
    run_throughput,
    signatures_checked_between,
    waits_between,
)
from node.bench.workload import bench_accounts, sign_streams
from node.cli.bench import _print_report, bench
from node.config import parse_config
from node.jsonvalue import from_json
from node.phases import WAITS

REQUIRED_FIELDS = (
    "tx_per_s",
    "latency_ms_p50",
    "latency_ms_p95",
    "latency_ms_p99",
    "offer_latency_ms_p50",
    "offer_latency_ms_p99",
    "ceiling_tx_per_s",
    "ratio",
    "blocks_per_s",
    "block_size_avg",
    "block_size_max",
    "round_ms_p50",
    "round_ms_p90",
    "round_ms_max",
    "waits_ms_per_block",
    "waits_ms_mean",
    "cpu_s_per_node",
    "rss_peak_mb_per_node",
    "rss_anonymous_peak_mb_per_node",
    "rss_file_mb_per_node",
    "ed25519_verify_per_s_per_core",
    "phases_us_per_tx_by_half",
    "signatures_checked",
    "machine_cores",
)


def test_bench_workload_streams_keep_each_senders_nonces_in_order() -> None:
    accounts = bench_accounts(banks=2, accounts_per_bank=3)
    streams = sign_streams(accounts, "suanpan-bench", 2, first_nonces=[[0, 5, 1], [0, 0, 0]])
    assert [len(stream) for stream in streams] == [6, 6]
    nonces: dict[bytes, list[int]] = {}
    for data in streams[0]:
        transaction = Transaction.decode(data, chain_id="suanpan-bench")
        assert transaction.sender in accounts.public_keys[0]
        nonces.setdefault(transaction.sender, []).append(transaction.nonce)
    assert sorted(nonces.values()) == [[0, 1], [1, 2], [5, 6]]


def test_bench_genesis_funds_every_account_and_a_transfer_applies() -> None:
    accounts = bench_accounts(banks=2, accounts_per_bank=2)
    backend = MemoryBackend()
    host = AppHost(load_apps(("membership", "payments")), backend, chain_id="c")
    writes, app_hash = host.init_genesis(
        {name: from_json(value) for name, value in accounts.app_state().items()}
    )
    backend.apply(writes)
    host.committed(0, app_hash)
    data = sign_streams(accounts, "c", 1)[0][0]
    transaction = Transaction.decode(data, chain_id="c")
    host.check_transaction(transaction)  # raises when the sender is unfunded or unauthorised


def test_bench_smoke_reports_every_field(tmp_path: Path) -> None:
    # A real 4-process testnet for 5 s at 100 tx/s, in its own interpreter (the submitter is a
    # spawned process). Only the presence of the figures and some progress are checked.
    kept = tmp_path / "testnet"
    setting = "mempool.verify_workers=1"
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "node", "bench", "--duration", "5", "--rate", "100"),
            *("--set", setting, "--keep", str(kept), "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    document = json.loads(completed.stdout.strip().splitlines()[-1])
    for name in REQUIRED_FIELDS:
        assert name in document, name
    assert document["tx_per_s"] > 0
    assert document["committed"] > 0
    assert document["ceiling_tx_per_s"] > 0
    assert len(document["cpu_s_per_node"]) == 4
    assert document["agreement_problems"] == []
    # Every node ran with the --set setting, and the report says so.
    assert document["settings"] == [setting]
    for index in range(4):
        config, problems = parse_config(
            (kept / "testnet" / f"node{index}" / "config.toml").read_bytes()
        )
        assert config is not None, problems
        assert config.mempool.verify_workers == 1
    # A transaction is first offered no later than it is admitted.
    assert document["offer_latency_ms_p99"] >= document["latency_ms_p99"]
    # Rounds from the blocks' header timestamps (a primary proposes at most every 200 ms).
    assert 0 < document["round_ms_p50"] <= document["round_ms_p90"] <= document["round_ms_max"]
    assert document["block_size_max"] >= document["block_size_avg"]
    # Every node votes at every height, and each vote is persisted before it is sent.
    assert set(document["waits_ms_per_block"]) == set(WAITS) == set(document["waits_ms_mean"])
    assert document["waits_ms_mean"]["vote_persist"] > 0
    # The nodes say where they checked the signatures of the transactions they admitted.
    checked = document["signatures_checked"]
    assert set(checked) == {"loop", "loop_machine_busy", "threads"}
    assert sum(checked.values()) > 0
    # The whole machine's cores over the window add up to its cores.
    machine = document["machine_cores"]
    assert set(machine) == {"busy", "idle", "iowait", "steal"}
    assert sum(machine.values()) == pytest.approx(os.cpu_count(), abs=0.05)
    assert machine["busy"] > 0
    # The RSS splits into the heap, sampled while the load ran, and LMDB's map.
    for peak, anonymous, file_backed in zip(
        document["rss_peak_mb_per_node"],
        document["rss_anonymous_peak_mb_per_node"],
        document["rss_file_mb_per_node"],
        strict=True,
    ):
        assert 0 < anonymous < peak
        assert 0 < file_backed < peak


def test_waits_between_two_samples_are_per_block_and_per_wait_over_the_nodes() -> None:
    def sample(height: int, count: int, ns: int) -> NodeSample:
        return NodeSample(0, height, {}, {"vote_persist": (count, ns), "write": (0, 0)})

    before = [sample(10, 4, 1_000_000), sample(10, 0, 0), None, sample(7, 0, 0)]
    after = [sample(12, 8, 9_000_000), sample(14, 2, 2_000_000), sample(20, 9, 9), sample(7, 1, 5)]
    per_block, means = waits_between(before, after)
    # Node 0: 8 ms over 2 blocks and 4 waits; node 1: 2 ms over 4 blocks and 2 waits; node 2
    # did not answer before, node 3 committed nothing.
    assert per_block == {"vote_persist": (4.0 + 0.5) / 2, "write": 0.0}
    assert means == {"vote_persist": (2.0 + 1.0) / 2, "write": 0.0}
    assert waits_between([None], [None]) == ({}, {})


def test_signatures_checked_between_two_samples_are_summed_over_the_nodes() -> None:
    def sample(loop: int, threads: int) -> NodeSample:
        return NodeSample(0, 1, {}, {}, {}, {"loop": loop, "threads": threads})

    before = [sample(10, 100), None, sample(0, 0), sample(5, 5)]
    after = [sample(15, 300), sample(99, 99), None, sample(5, 6)]
    # Node 0: 5 and 200; node 1 and 2 did not answer both times; node 3: 0 and 1.
    assert signatures_checked_between(before, after) == {"loop": 5, "threads": 201}
    # A node whose status has no counts (an older node) adds nothing.
    old = NodeSample(0, 1, {}, {})
    assert signatures_checked_between([old], [old]) == {}


def test_process_sampler_splits_the_rss_of_a_live_process_and_not_of_a_gone_one() -> None:
    heap = bytearray(64 * 1024 * 1024)  # 64 MiB of anonymous memory, touched
    heap[::4096] = b"x" * len(heap[::4096])
    anonymous, file_backed = ProcessSampler.rss_split_mb(os.getpid())
    assert anonymous >= 64
    assert file_backed > 0  # the interpreter's own mapped code at least
    assert anonymous + file_backed <= ProcessSampler.rss_peak_mb(os.getpid()) + 1
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(math.isnan(value) for value in ProcessSampler.rss_split_mb(int(gone.stdout)))
    del heap


def _step(**changes: object) -> StepResult:
    figures: dict[str, object] = {
        "rate_offered": 1000.0,
        "duration_s": 20.0,
        "submitted": 20_000,
        "accepted": 20_000,
        "rejected": {},
        "pushed_back": 0,
        "abandoned": 0,
        "transport_errors": 0,
        "committed": 20_000,
        "uncommitted": 0,
        "tx_per_s": 990.0,
        "latency_ms_p50": 300.0,
        "latency_ms_p95": 500.0,
        "latency_ms_p99": 600.0,
        "latency_ms_max": 700.0,
        "offer_latency_ms_p50": 300.0,
        "offer_latency_ms_p99": 600.0,
        "offer_latency_ms_max": 700.0,
        "blocks": 100,
        "blocks_per_s": 5.0,
        "block_size_avg": 200.0,
        "cpu_s": [1.0],
        "cpu_percent": [5.0],
        "submitter_cpu_s": 1.0,
        "last_error": "",
    }
    figures.update(changes)
    return StepResult(**figures)  # type: ignore[arg-type]


def test_round_intervals_come_from_consecutive_heights_only() -> None:
    # (height, header timestamp ms), in the order the observer saw them; height 6 is
    # missing, so neither 5 -> 6 nor 6 -> 7 is an interval.
    blocks = [(4, 1_000), (3, 700), (5, 1_450), (7, 2_900), (8, 3_000)]
    assert round_intervals_ms(blocks) == [300.0, 450.0, 100.0]
    assert round_intervals_ms([(9, 5)]) == []
    assert round_intervals_ms([]) == []


def test_a_step_is_sustained_only_when_every_client_got_in_within_the_bound() -> None:
    assert _step().sustainable(1000.0)
    # Push-backs are allowed when their wait keeps the p99 from first offer in bound...
    assert _step(pushed_back=400, offer_latency_ms_p99=950.0).sustainable(1000.0)
    # ...and not when it does not, even if the admitted submissions were fast.
    assert not _step(pushed_back=400, offer_latency_ms_p99=1_400.0).sustainable(1000.0)
    assert not _step(abandoned=1).sustainable(1000.0)
    assert not _step(rejected={"nonce_gap": 1}).sustainable(1000.0)
    assert not _step(uncommitted=1).sustainable(1000.0)
    assert not _step(transport_errors=1).sustainable(1000.0)
    assert not _step(tx_per_s=900.0).sustainable(1000.0)


class _FakeRun:
    """A testnet stand-in whose chain sustains up to 1,000 tx/s."""

    def __init__(self, name: str, events: list[tuple[str, ...]], fail_at: float | None) -> None:
        self.name = name
        self.events = events
        self.fail_at = fail_at

    def step(self, rate: float, duration_s: float) -> StepResult:
        self.events.append(("step", self.name, str(rate)))
        if rate == self.fail_at:
            raise RuntimeError("the testnet broke")
        return _step(rate_offered=rate, tx_per_s=rate if rate <= 1000 else 0.8 * rate)


def _search_with_fakes(fail_at: float | None = None) -> tuple[list[float], list[tuple[str, ...]]]:
    events: list[tuple[str, ...]] = []

    def fresh(name: str) -> _Run:
        events.append(("start", name))
        return cast(_Run, _FakeRun(name, events, fail_at))

    def stop() -> None:
        events.append(("stop",))

    steps = _search(fresh, stop, BenchOptions(rate=None), progress=False)
    return [step.rate_offered for step in steps], events


def test_the_search_runs_each_step_on_a_fresh_testnet_and_stops_it() -> None:
    rates, events = _search_with_fakes()
    assert rates == [500.0, 1000.0, 2000.0, 1500.0, 1250.0, 1125.0]
    expected: list[tuple[str, ...]] = []
    for number, rate in enumerate(rates, start=1):
        name = f"testnet-step{number}"
        expected += [("start", name), ("step", name, str(rate)), ("stop",)]
    assert events == expected
    # A step that fails still stops its testnet.
    with pytest.raises(RuntimeError, match="broke"):
        _search_with_fakes(fail_at=1000.0)


def test_a_bench_testnet_refuses_a_second_step() -> None:
    # Its streams start at the genesis nonces: a second step would resend taken nonces.
    run = object.__new__(_Run)
    run.stepped = True
    with pytest.raises(RuntimeError, match="runs one step"):
        run.step(1000.0, 20.0)


def test_run_ends_keep_each_nodes_largest_figures_and_every_disagreement() -> None:
    ends = _RunEnds(2)
    assert all(math.isnan(value) for value in ends.rss_peak_mb)
    ends.add([200.0, math.nan], [math.nan, 40.0], [100.0, 90.0], [50.0, 60.0], [])
    ends.add([150.0, 210.0], [math.nan, 45.0], [120.0, math.nan], [80.0, 40.0], ["node 1 differs"])
    assert ends.rss_peak_mb == [200.0, 210.0]
    assert math.isnan(ends.writer_rss_peak_mb[0])
    assert ends.writer_rss_peak_mb[1] == 45.0
    assert ends.anonymous_peak_mb == [120.0, 90.0]
    assert ends.file_mb == [80.0, 60.0]
    assert ends.problems == ["node 1 differs"]


def test_bench_scaling_counts_pbft_messages_for_small_validator_sets() -> None:
    result = CliRunner().invoke(
        bench, ["scaling", "--validators", "1,4,7", "--blocks", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    assert [row["validators"] for row in rows] == [1, 4, 7]
    for row in rows:
        assert row["ok"]
        assert row["committed_blocks"] >= 5
        # Faults off: exactly the normal-case message pattern, every height.
        assert row["messages_per_block"] == row["expected_messages_per_block"]
        assert row["bytes_per_block"] > 0 or row["validators"] == 1
    assert expected_messages(4) == 27


def test_bench_rejects_a_bad_rate() -> None:
    result = CliRunner().invoke(bench, ["--rate", "fast"])
    assert result.exit_code != 0
    assert "transactions per second" in result.output


def test_a_step_reports_its_phases_by_half_and_the_report_prints_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = {"total": 300.04, "execute": 100.0, "commit": 40.0}
    second = {"total": 330.0, "execute": 104.0, "commit": 61.26}
    tasks = {f"task {index}": 10.0 - index for index in range(8)}
    step = _step(
        phases_us_per_tx=first,
        phases_us_per_tx_by_half=(first, second),
        loop_tasks_us_per_tx=tasks,
        signatures_checked={"loop": 120, "loop_machine_busy": 14_000, "threads": 2_500},
        machine_cores={"busy": 1.204, "idle": 0.5, "iowait": 0.05, "steal": 0.246},
    )
    assert step.to_json()["phases_us_per_tx_by_half"] == [
        {"total": 300.0, "execute": 100.0, "commit": 40.0},
        {"total": 330.0, "execute": 104.0, "commit": 61.3},
    ]
    assert _step().to_json()["phases_us_per_tx_by_half"] == []
    report = ThroughputReport(
        options=BenchOptions(),
        verify_per_s_per_core=16_000.0,
        cores=2,
        load_average=(0.1, 0.2, 0.3),
        steps=[step],
        best=step,
        rss_peak_mb=[200.0],
        writer_rss_peak_mb=[41.5],
        rss_anonymous_peak_mb=[120.0],
        rss_file_mb=[80.0],
        agreement_problems=[],
        directory="",
    )
    _print_report(report.to_json())
    printed = capsys.readouterr().out
    assert "by half" in printed
    assert "anonymous      [120.0] at most; file-backed [80.0] at the end" in printed
    assert "block writer   [41.5] (each node's process of its own, beside it)" in printed
    assert "total 300.0 -> 330.0, execute 100.0 -> 104.0, commit 40.0 -> 61.3" in printed
    # The six largest of the loop's tasks, when the nodes measured them.
    assert (
        "other by task    task 0 10.0, task 1 9.0, task 2 8.0, task 3 7.0, task 4 6.0," in printed
    )
    assert "task 5 5.0  (the event loop" in printed
    assert "task 6" not in printed
    assert (
        "signatures       loop 120, loop_machine_busy 14,000, threads 2,500  (transactions"
        in printed
    )
    assert "machine cores    busy 1.20, idle 0.50, iowait 0.05, steal 0.25  (the whole" in printed


def test_bench_merkle_layouts_each_hold_the_tree_they_were_given() -> None:
    report = run_merkle_bench(accounts=300, writes=60, blocks=16, layouts=True)
    assert len(report.layouts) == 8
    for name, row in report.layouts.items():
        if "compacted" not in name:
            assert row["moved_per_block"] == 0
        assert row["cpu_ms_per_block"] > 0
        assert row["file_mib"] > 0
        assert row["kib_written_per_block"] > 0
    assert report.to_json()["layouts"] == report.layouts
    with pytest.raises(ValueError, match="at least 16 blocks"):
        run_merkle_bench(accounts=300, writes=60, blocks=15, layouts=True)
    # The check fires: a layout whose store lost one record is refused, not measured.
    final = {b"\x01a": b"one", b"\x01b": b"two"}
    version = (1).to_bytes(8, "big")
    with pytest.raises(RuntimeError, match="does not hold the tree's records"):
        merkle_bench._check_layout("path", "path", 1, {b"\x01a": b"one"}, final)
    with pytest.raises(RuntimeError, match="does not hold the tree's records"):
        merkle_bench._check_layout("never", "version", 0, {version + b"\x01a": b"one"}, final)
    twice = {version + key: record for key, record in final.items()}
    twice[bytes(8) + b"\x01a"] = b"old"
    with pytest.raises(RuntimeError, match="stored under two versions"):
        merkle_bench._check_layout("every", "version", 8, twice, final)
    for compacted in ("version log", "segments"):
        with pytest.raises(RuntimeError, match="does not hold the tree's records"):
            merkle_bench._check_layout(
                compacted, compacted, 8, twice | {version + b"\x01b": b"2"}, final
            )


def test_compacted_layouts_remove_replaced_records_and_keep_the_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compacted layouts remove the oldest heights' records once the store holds more
    replaced records than live ones, moving the live ones on: the store ends with the tree's
    records and at most as many replaced ones as live ones besides the last write's."""
    rng = random.Random(3)
    items = merkle_bench._state(300, rng)
    keys = [key for key, _ in items]
    blocks = merkle_bench._blocks(keys, 20, 40, rng)
    full = build(leaf_of(key, value) for key, value in items)
    tree = MemoryTree()
    tree.apply(full)
    updates = []
    for block in blocks:
        tree_update = update(tree, block)
        tree.apply(tree_update)
        updates.append(tree_update)
    for keyed_by in ("version log", "segments"):
        env = lmdb.open(
            str(tmp_path / keyed_by.replace(" ", "-")),
            map_size=1 << 30,
            max_dbs=merkle_bench._LAYOUT_DATABASES_MAX,
            lock=False,
        )
        try:
            _, _, _, moved, stored = merkle_bench._write_layout(env, keyed_by, 8, full, updates)
        finally:
            env.close()
        merkle_bench._check_layout(keyed_by, keyed_by, 8, stored, tree.records)
        assert sum(moved) > 0  # live records of the compacted heights went on
        heights = {int.from_bytes(key[:8], "big") for key in stored}
        assert 0 not in heights  # the genesis load was compacted away
        last_write = max(heights)
        at_last = sum(1 for key in stored if int.from_bytes(key[:8], "big") == last_write)
        assert len(stored) - at_last <= 2 * len(tree.records)
    # A database per write never runs out of databases: with room for three, the oldest
    # heights are compacted to make room, and the store still holds the tree.
    monkeypatch.setattr(merkle_bench, "_LAYOUT_DATABASES_MAX", 3)
    env = lmdb.open(str(tmp_path / "few"), map_size=1 << 30, max_dbs=3, lock=False)
    try:
        _, _, _, _, stored = merkle_bench._write_layout(env, "segments", 8, full, updates)
    finally:
        env.close()
    merkle_bench._check_layout("segments", "segments", 8, stored, tree.records)
    assert len({key[:8] for key in stored}) <= 3


def test_an_overload_step_holds_only_near_the_peak_with_admitted_transactions_in_time() -> None:
    overloaded = {
        "rate_offered": 3000.0,
        "tx_per_s": 1400.0,
        "pushed_back": 90_000,
        "abandoned": 3000,  # still waiting to be resent when the window closed: allowed
        "latency_ms_p99": 1900.0,
        "offer_latency_ms_p99": 6000.0,  # a push-back's wait: not what overload bounds
    }
    assert _step(**overloaded).holds_overload(1500.0)
    assert not _step(**{**overloaded, "tx_per_s": 1340.0}).holds_overload(1500.0)  # < 90 %
    assert not _step(**{**overloaded, "latency_ms_p99": 2100.0}).holds_overload(1500.0)
    assert not _step(**{**overloaded, "rejected": {"nonce_gap": 1}}).holds_overload(1500.0)
    assert not _step(**{**overloaded, "uncommitted": 1}).holds_overload(1500.0)
    assert not _step(**{**overloaded, "transport_errors": 1}).holds_overload(1500.0)


class _FakeTestnet:
    """A testnet stand-in for ``run_throughput``: sustains up to 1,000 tx/s and commits 950
    tx/s above it; each testnet's nodes peak at 100 MiB plus their offered rate / 100."""

    started: ClassVar[list[str]] = []
    # Testnets stopped without being read, after their step raised.
    abandoned: ClassVar[list[str]] = []

    def __init__(self, options: BenchOptions, directory: Path) -> None:
        self.directory = directory
        self.rate = 0.0
        self.anonymous_peak_mb = [50.0] * options.validators
        self.validators = options.validators

    def start(self) -> None:
        _FakeTestnet.started.append(self.directory.name)

    def step(self, rate: float, duration_s: float, report: object = None) -> StepResult:
        self.rate = rate
        if rate <= 1000:
            return _step(rate_offered=rate, tx_per_s=rate)
        return _step(
            rate_offered=rate,
            tx_per_s=950.0,
            pushed_back=int(rate * 10),
            latency_ms_p99=1500.0 if rate < 4000 else 2500.0,
            offer_latency_ms_p99=5000.0,
        )

    def stop(self) -> tuple[list[float], list[float], list[float], list[str]]:
        rss = [100.0 + self.rate / 100] * self.validators
        return rss, [math.nan] * self.validators, [10.0] * self.validators, []

    def abandon(self) -> None:
        _FakeTestnet.abandoned.append(self.directory.name)


def test_a_search_ends_with_overload_steps_at_2x_and_4x_the_best_step(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("node.bench.throughput._Run", _FakeTestnet)
    monkeypatch.setattr("node.bench.throughput.measure_verify_rate", lambda: 20_000.0)
    _FakeTestnet.started = []
    report = run_throughput(BenchOptions(rate=None, validators=4))
    assert report.best.rate_offered == 1000.0
    assert [step.rate_offered for step in report.overload] == [
        1000.0 * multiple for multiple in OVERLOAD_MULTIPLES
    ]
    # Each on a testnet of its own, after the search's.
    assert _FakeTestnet.started[-2:] == ["testnet-overload-2x", "testnet-overload-4x"]
    document = report.to_json()
    steps = cast(list[dict[str, object]], document["overload_steps"])
    assert [step["multiple"] for step in steps] == [2.0, 4.0]
    assert [step["share_of_best"] for step in steps] == [0.95, 0.95]
    # 2x keeps its admitted p99 at 1.5 s; 4x's 2.5 s breaks the bound.
    assert [step["holds"] for step in steps] == [True, False]
    assert document["overload_holds"] is False
    # The search's memory and the overload steps' are reported apart.
    assert document["rss_peak_mb_per_node"] == [120.0] * 4  # the 2,000 tx/s step
    assert document["overload_rss_peak_mb_per_node"] == [140.0] * 4
    _print_report(document)
    printed = {
        line.split()[1]: line
        for line in capsys.readouterr().out.splitlines()
        if line.strip().startswith("overload")
    }
    assert printed["2.0x"].endswith(": holds")
    assert printed["4.0x"].endswith(": DOES NOT HOLD")


def test_a_search_without_overload_steps_reports_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("node.bench.throughput._Run", _FakeTestnet)
    monkeypatch.setattr("node.bench.throughput.measure_verify_rate", lambda: 20_000.0)
    _FakeTestnet.started = []
    report = run_throughput(BenchOptions(rate=None, validators=4, overload=False))
    assert report.overload == []
    assert not any(name.startswith("testnet-overload") for name in _FakeTestnet.started)
    assert "overload_steps" not in report.to_json()


def test_overload_steps_are_refused_without_a_search() -> None:
    result = CliRunner().invoke(bench, ["--rate", "1000", "--no-overload"])
    assert result.exit_code == 2
    assert "overload steps follow a search: use it with --rate max" in result.output


def test_bench_merkle_runs_either_update_and_says_which() -> None:
    native = run_merkle_bench(accounts=300, writes=60, blocks=2)
    python = run_merkle_bench(accounts=300, writes=60, blocks=2, python_update=True)
    assert native.merkle_tree == "native"
    assert python.merkle_tree == "python (--python-update)"
    # The same blocks give the same records either way.
    assert (python.records_per_block, python.record_bytes_per_block) == (
        native.records_per_block,
        native.record_bytes_per_block,
    )
    assert python.to_json()["merkle_tree"] == "python (--python-update)"
