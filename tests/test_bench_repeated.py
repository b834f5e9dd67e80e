"""Repeated and alternated benchmark runs: the order of the runs, the medians, and the CLI that
runs them (against a stand-in testnet whose speed depends on its configuration, and once
against real ones)."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from node.bench.repeated import MEDIAN_FIGURES, pairs_ahead, run_order, summarise
from node.bench.throughput import BenchOptions, StepResult
from node.cli.bench import bench
from node.jsonvalue import JsonType
from tests.test_bench import _FakeTestnet, _step


def test_runs_of_one_configuration_and_alternated_pairs() -> None:
    assert run_order(3, False) == ["a", "a", "a"]
    assert run_order(1, True) == ["a", "b"]
    assert run_order(3, True) == ["a", "b", "b", "a", "a", "b"]
    with pytest.raises(ValueError, match="at least one run"):
        run_order(0, True)


@given(runs=st.integers(1, 60))
def test_each_pair_holds_both_configurations_in_the_order_opposite_to_the_last(
    runs: int,
) -> None:
    order = run_order(runs, True)
    assert len(order) == 2 * runs
    pairs = [tuple(order[index : index + 2]) for index in range(0, len(order), 2)]
    assert all(set(pair) == {"a", "b"} for pair in pairs)
    assert all(first != second for first, second in itertools.pairwise(pairs))
    # Over any whole number of pairs of pairs, each configuration runs first as often.
    assert order[::2].count("a") - order[::2].count("b") in (0, 1)


def _document(**figures: JsonType) -> dict[str, JsonType]:
    document: dict[str, JsonType] = {
        "rate_offered": 1000.0,
        "tx_per_s": 900.0,
        "latency_ms_p99": 500.0,
        "offer_latency_ms_p99": 600.0,
        "pushed_back": 0,
        "block_size_avg": 200.0,
        "cpu_us_per_tx_per_node": 300.0,
        "ratio": 0.1,
        "rss_peak_mb_per_node": [100.0, 120.0],
        "load_average_before": [1.5, 1.0, 0.5],
        "agreement_problems": [],
    }
    document.update(figures)
    return document


def test_a_summary_gives_each_figures_median_and_range() -> None:
    documents = [
        _document(tx_per_s=900.0, pushed_back=10, rss_peak_mb_per_node=[100.0, 130.0]),
        _document(tx_per_s=700.0, pushed_back=0, load_average_before=[3.25, 1.0, 1.0]),
        _document(tx_per_s=1000.0, pushed_back=40, agreement_problems=["node 1 at height 3"]),
    ]
    summary = summarise(documents)
    assert summary["runs"] == 3
    assert summary["tx_per_s"] == 900.0
    assert summary["pushed_back"] == 10.0
    assert summary["latency_ms_p99"] == 500.0
    ranges = cast(dict[str, JsonType], summary["range"])
    assert ranges["tx_per_s"] == [700.0, 1000.0]
    assert ranges["pushed_back"] == [0.0, 40.0]
    # Each run's largest node, then the median of those.
    assert summary["rss_peak_mb"] == 120.0
    assert summary["load_average_before"] == [1.5, 3.25, 1.5]
    assert summary["agreement_problems"] == 1
    assert "overload_held" not in summary
    # An even count takes the mean of the middle two.
    assert summarise(documents[:2])["tx_per_s"] == 800.0


def test_a_figure_missing_or_not_a_number_stays_out_of_its_median() -> None:
    documents = [
        _document(cpu_us_per_tx_per_node=math.nan, ratio=None),
        _document(cpu_us_per_tx_per_node=250.0),
        _document(overload_holds=True),
        _document(overload_holds=False, pushed_back=True),
    ]
    del documents[1]["ratio"]
    summary = summarise(documents)
    assert summary["cpu_us_per_tx_per_node"] == 300.0  # median of 250, 300, 300
    assert summary["ratio"] == 0.1
    assert summary["pushed_back"] == 0.0  # a boolean is not a count
    assert summary["overload_held"] == 1
    empty = summarise([_document(tx_per_s=math.nan)])
    assert empty["tx_per_s"] is None
    assert cast(dict[str, JsonType], empty["range"])["tx_per_s"] is None
    assert set(MEDIAN_FIGURES) <= set(summary)


def test_pairs_ahead_counts_the_pairs_the_second_configuration_won() -> None:
    order = run_order(3, True)
    documents = [_document(tx_per_s=value) for value in (900.0, 950.0, 800.0, 850.0, 900.0, 900.0)]
    # Pair 1: b 950 > a 900; pair 2: b 800 < a 850; pair 3: b 900 = a 900.
    assert pairs_ahead(order, documents) == 1
    assert pairs_ahead(order, documents, "latency_ms_p99") == 0
    with pytest.raises(ValueError, match="one document per run"):
        pairs_ahead(order, documents[:-1])
    with pytest.raises(ValueError, match="alternate"):
        pairs_ahead(["a", "a"], documents[:2])


class _TunedTestnet(_FakeTestnet):
    """A stand-in testnet that commits 90 % of what is offered with one verifying thread and
    80 % with the default two."""

    def __init__(self, options: BenchOptions, directory: Path) -> None:
        super().__init__(options, directory)
        self.share = 0.9 if options.config.mempool.verify_workers == 1 else 0.8
        self.settings = options.settings

    def step(self, rate: float, duration_s: float, report: object = None) -> StepResult:
        self.rate = rate
        _TunedTestnet.started.append(f"step {rate:.0f} {' '.join(self.settings)}")
        return _step(rate_offered=rate, tx_per_s=rate * self.share)


def test_alternated_runs_measure_each_configuration_in_turn_and_report_the_medians(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("node.bench.throughput._Run", _TunedTestnet)
    monkeypatch.setattr("node.bench.throughput.measure_verify_rate", lambda: 20_000.0)
    _TunedTestnet.started = []
    arguments = ["--rate", "500", "--duration", "2", "--runs", "3"]
    result = CliRunner().invoke(bench, [*arguments, "--versus", "mempool.verify_workers=1"])
    assert result.exit_code == 0, result.output
    steps = [name for name in _TunedTestnet.started if name.startswith("step")]
    assert steps == [
        "step 500 ",
        "step 500 mempool.verify_workers=1",
        "step 500 mempool.verify_workers=1",
        "step 500 ",
        "step 500 ",
        "step 500 mempool.verify_workers=1",
    ]
    lines = result.output.splitlines()
    assert lines[0].startswith("run 1/6 (a: defaults): 400.0 tx/s at 500 offered")
    assert lines[1].startswith("run 2/6 (b: mempool.verify_workers=1): 450.0 tx/s")
    assert any(line.startswith("median of 3 (a: defaults): 400.0 tx/s") for line in lines)
    assert any(
        line.startswith("median of 3 (b: mempool.verify_workers=1): 450.0") for line in lines
    )
    assert lines[-1] == "b committed more than a in 3 pairs of 3"
    # The same as one JSON object, with every run's document.
    _TunedTestnet.started = []
    result = CliRunner().invoke(
        bench, [*arguments, "--versus", "mempool.verify_workers=1", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["order"] == ["a", "b", "b", "a", "a", "b"]
    assert document["a"]["settings"] == []
    assert document["b"]["settings"] == ["mempool.verify_workers=1"]
    assert document["a"]["median"]["tx_per_s"] == 400.0
    assert document["b"]["median"]["tx_per_s"] == 450.0
    assert [run["tx_per_s"] for run in document["b"]["runs"]] == [450.0] * 3
    assert document["pairs"] == 3
    assert document["pairs_b_committed_more"] == 3
    # Repeated without a second configuration: the runs and their medians.
    result = CliRunner().invoke(bench, [*arguments, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["order"] == ["a", "a", "a"]
    assert document["a"]["median"]["runs"] == 3
    assert "b" not in document
    assert "pairs" not in document


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--versus", "mempool.verify_workers=0"], "--versus"),
        (["--versus", "nothing"], "not section.key=value"),
        (["--runs", "0"], "0 is not in the range 1<=x<=50"),
        (["--runs", "2", "--keep", "kept"], "keeps one run's testnet"),
        (["--versus", "mempool.verify_workers=1", "--keep", "kept"], "keeps one run's testnet"),
    ],
)
def test_bad_repetition_arguments_are_refused_naming_the_problem(
    arguments: list[str], message: str
) -> None:
    result = CliRunner().invoke(bench, ["--rate", "100", *arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_alternated_runs_on_real_testnets(tmp_path: Path) -> None:
    """One pair on real 4-process testnets (2 s each): each configuration's nodes ran with
    its settings, and both agreed."""
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "node", "bench", "--duration", "2", "--rate", "50"),
            *("--versus", "mempool.verify_workers=1", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    document = json.loads(completed.stdout.strip().splitlines()[-1])
    assert document["order"] == ["a", "b"]
    for label, settings in (("a", []), ("b", ["mempool.verify_workers=1"])):
        (run,) = document[label]["runs"]
        assert run["settings"] == settings
        assert run["committed"] > 0
        assert run["agreement_problems"] == []
        assert document[label]["median"]["tx_per_s"] == run["tx_per_s"]
    assert document["pairs_b_committed_more"] in (0, 1)


def test_repeated_searches_count_the_runs_whose_overload_steps_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stand-in sustains 1,000 tx/s; its 4x overload step breaks the latency bound, so no
    run's overload steps hold."""
    monkeypatch.setattr("node.bench.throughput._Run", _FakeTestnet)
    monkeypatch.setattr("node.bench.throughput.measure_verify_rate", lambda: 20_000.0)
    _FakeTestnet.started = []
    result = CliRunner().invoke(bench, ["--rate", "max", "--runs", "2", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    median = document["a"]["median"]
    assert median["rate_offered"] == 1000.0
    assert median["tx_per_s"] == 1000.0
    assert median["overload_held"] == 0
    assert [run["overload_holds"] for run in document["a"]["runs"]] == [False, False]
    result = CliRunner().invoke(bench, ["--rate", "max", "--runs", "2"])
    assert result.exit_code == 0, result.output
    assert "  overload held    in 0 runs of 2" in result.output.splitlines()


class _FailingTestnet(_TunedTestnet):
    """A stand-in whose third step fails (or is interrupted, as Ctrl-C or SIGTERM would)."""

    steps = 0
    failure: BaseException = RuntimeError("node 2 did not start")

    def step(self, rate: float, duration_s: float, report: object = None) -> StepResult:
        _FailingTestnet.steps += 1
        if _FailingTestnet.steps == 3:
            raise _FailingTestnet.failure
        return super().step(rate, duration_s, report)


@pytest.mark.parametrize(
    ("failure", "reason"),
    [(RuntimeError("node 2 did not start"), "node 2 did not start"), (KeyboardInterrupt(), "")],
)
def test_a_series_that_stops_still_reports_the_runs_it_completed(
    monkeypatch: pytest.MonkeyPatch, failure: BaseException, reason: str
) -> None:
    monkeypatch.setattr("node.bench.throughput._Run", _FailingTestnet)
    monkeypatch.setattr("node.bench.throughput.measure_verify_rate", lambda: 20_000.0)
    arguments = ["--rate", "500", "--duration", "2", "--runs", "3"]
    versus = ["--versus", "mempool.verify_workers=1"]
    _FailingTestnet.failure = failure
    _FailingTestnet.steps = 0
    result = CliRunner().invoke(bench, [*arguments, *versus, "--json"])
    assert result.exit_code == 1
    document = json.loads(result.stdout.splitlines()[0])
    assert document["order"] == ["a", "b"]
    assert document["incomplete"].startswith("2 of 6 runs completed: ")
    assert reason in document["incomplete"]
    assert document["a"]["median"]["tx_per_s"] == 400.0
    assert document["b"]["median"]["tx_per_s"] == 450.0
    assert (document["pairs"], document["pairs_b_committed_more"]) == (1, 1)
    # In text, after the runs that ended.
    _FailingTestnet.steps = 0
    result = CliRunner().invoke(bench, [*arguments, *versus])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("run 1/6 (a: defaults): 400.0 tx/s")
    assert lines[2].startswith("INCOMPLETE       2 of 6 runs completed")
    assert any(
        line.startswith("median of 1 (b: mempool.verify_workers=1): 450.0") for line in lines
    )
    assert "b committed more than a in 1 pairs of 1" in lines
