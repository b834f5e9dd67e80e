"""The catch-up benchmark reads its instants from the restarted node's log."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.bench.catchup import (
    CatchupReport,
    run_catchup,
    started_figures,
    sync_window,
    waits_seconds,
    without_start_up,
)
from node.cli import main
from node.config import ConfigError
from node.phases import WAITS


def write_log(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records) + "not json\n")
    return path


def test_sync_window_takes_the_restart_its_first_request_and_the_top_commit(
    tmp_path: Path,
) -> None:
    log = write_log(
        tmp_path / "node.log",
        [
            # The first run of the node, before the restart: ignored.
            {"ts": 10.0, "event": "node_started", "cpu_ns": 7_000_000},
            {"ts": 11.0, "event": "block_sync_requested", "from": 1, "to": 64},
            {"ts": 12.0, "event": "block_committed", "height": 9},
            # The restart.
            {
                "ts": 100.0,
                "event": "node_started",
                "cpu_ns": 900_000_000,
                "loop_cpu_ns": 800_000_000,
                "loop_cpu_wait_ns": 40_000_000,
            },
            {"ts": 100.2, "event": "peer_connected"},
            {"ts": 100.3, "event": "block_sync_probed", "from": 6, "to": 69},
            {"ts": 100.9, "event": "block_sync_requested", "from": 6, "to": 69},
            {"ts": 101.5, "event": "block_committed", "height": 8},
            {"ts": 102.0, "event": "block_sync_requested", "from": 70, "to": 80},
            {"ts": 103.0, "event": "block_committed", "height": 9},
            {"ts": 104.0, "event": "block_committed", "height": 10},
        ],
    )
    assert sync_window(log, since=99.5, top=9) == (100.0, 100.3, 103.0)
    report = CatchupReport(4, 3, 600, 0.5, 3.0, 0.9, 2.1)
    document = report.to_json()
    assert document["transactions_per_s"] == 200.0
    assert document["transactions_per_s_applying"] == round(600 / 2.1, 1)
    # The restarted process's start-up CPU, not the first run's.
    assert started_figures(log, 99.5, "cpu_ns") == [900_000_000]
    assert started_figures(log, 200.0, "cpu_ns") == [0]
    assert started_figures(log, 99.5, "loop_cpu_ns") == [800_000_000]
    # Of two starts after ``since``, the later one counts.
    assert started_figures(log, 9.5, "loop_cpu_ns") == [800_000_000]
    assert started_figures(log, 9.5, "cpu_ns") == [900_000_000]
    assert started_figures(log, 99.5, "loop_cpu_wait_ns") == [40_000_000]
    # 0.6 s of CPU over 3 s of sync for 600 transactions: 1,000 us each, 0.2 cores.
    report = CatchupReport(
        4,
        3,
        600,
        0.5,
        3.0,
        0.9,
        2.1,
        cpu_ns={"total": 600_000_000, "execute": 300_000_000},
        loop_cpu_ns=1_500_000_000,
    )
    document = report.to_json()
    assert document["cpu_us_per_tx"] == 1000.0
    assert document["phases_us_per_tx"] == {"execute": 500.0}
    assert document["cores"] == 0.2
    # The loop was on a CPU for 1.5 s of the 3 s sync.
    assert document["loop_busy"] == 0.5
    # Its wait for a CPU: null where the kernel did not say, else its share of the sync.
    assert document["loop_cpu_wait"] is None
    assert replace(report, loop_cpu_wait_ns=600_000_000).to_json()["loop_cpu_wait"] == 0.2
    # Memory not measured is null, not a made-up number.
    assert document["rss_peak_mb"] is None
    # Signatures checked unless the run trusted certificates, and then how many were not.
    assert (document["trust_certified_blocks"], document["transactions_trusted"]) == (False, 0)
    trusting = replace(report, trust_certified=True, transactions_trusted=600).to_json()
    assert (trusting["trust_certified_blocks"], trusting["transactions_trusted"]) == (True, 600)
    document = replace(
        report, rss_peak_mb=201.26, rss_anonymous_mb=99.94, rss_file_mb=80.0
    ).to_json()
    assert (document["rss_peak_mb"], document["rss_anonymous_mb"], document["rss_file_mb"]) == (
        201.3,
        99.9,
        80.0,
    )


def test_sync_window_names_a_log_without_the_restart_or_a_request(tmp_path: Path) -> None:
    no_request = write_log(
        tmp_path / "a.log",
        [
            {"ts": 100.0, "event": "node_started"},
            {"ts": 101.0, "event": "block_committed", "height": 5},
        ],
    )
    with pytest.raises(RuntimeError, match="asking for blocks"):
        sync_window(no_request, since=99.0, top=5)
    with pytest.raises(RuntimeError, match="commit of height 6"):
        sync_window(no_request, since=99.0, top=6)


def test_the_start_up_leaves_the_total_and_other_so_the_phases_add_up_to_the_total() -> None:
    # 0.5 s of start-up before node_started: in the process's total, and in "other" (no phase
    # ran yet); the phases count from zero.
    status = {"total": 2_000_000_000, "execute": 900_000_000, "verify": 300_000_000}
    status["other"] = status["total"] - 1_200_000_000
    synced = without_start_up(status, 500_000_000)
    assert synced == {
        "total": 1_500_000_000,
        "execute": 900_000_000,
        "verify": 300_000_000,
        "other": 300_000_000,
    }
    assert synced["total"] == sum(value for key, value in synced.items() if key != "total")


def test_a_bad_setting_is_refused_before_any_node_starts(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    with pytest.raises(ConfigError, match=r"\[consensus\] view_timeout_ms"):
        run_catchup(5, keep_directory=kept, settings=("consensus.view_timeout_ms=-1",))
    assert not kept.exists()
    result = CliRunner().invoke(
        main, ["bench", "catchup", "--set", "mempool.verify_workers=0", "--keep", str(kept)]
    )
    assert result.exit_code == 2
    assert "[mempool] verify_workers: 0 is outside 1..64" in result.output
    assert not kept.exists()


def test_the_syncing_nodes_waits_are_read_from_its_status_in_seconds() -> None:
    waits = waits_seconds(
        {
            "write_queue_full": {"count": 3, "ns": 1_250_000_000},
            "signatures_ahead": {"count": 1, "ns": 40_000_000},
            "vote_persist": {"count": 2, "ns": "many"},  # not a count of ns: not read
            "not_a_wait": {"count": 1, "ns": 5},
        }
    )
    assert set(waits) == set(WAITS)
    assert waits["write_queue_full"] == 1.25
    assert waits["signatures_ahead"] == 0.04
    assert waits["vote_persist"] == 0.0
    # A status without waits (an older node) reads as none.
    assert waits_seconds(None) == dict.fromkeys(WAITS, 0.0)
    report = CatchupReport(4, 3, 600, 0.5, 3.0, 0.9, 2.1, waits_s=waits)
    document = report.to_json()
    assert document["waits_s"] == {wait: round(value, 2) for wait, value in waits.items()}


def test_the_loop_tasks_outside_the_phases_are_reported_per_transaction_largest_first() -> None:
    tasks = {"scheduler": 1_500_000, "peer receive": 3_000_000, "http connection": 600_000}
    report = CatchupReport(4, 3, 600, 0.5, 3.0, 0.9, 2.1, loop_tasks_ns=tasks)
    document = report.to_json()
    assert document["loop_tasks_us_per_tx"] == {
        "peer receive": 5.0,
        "scheduler": 2.5,
        "http connection": 1.0,
    }
    assert list(document["loop_tasks_us_per_tx"]) == [
        "peer receive",
        "scheduler",
        "http connection",
    ]
    # A node that does not measure them ([metrics] loop_task_cpu off) reports none.
    assert CatchupReport(4, 3, 600, 0.5, 3.0, 0.9, 2.1).to_json()["loop_tasks_us_per_tx"] == {}
