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

from node.bench.repeated import MEDIAN_FIGURES, pairs_ahead, run_order, split_summary, summarise
from node.bench.throughput import BenchOptions, StepResult, _Run, split_figures
from node.cli.bench import bench
from node.config import NodeConfig, with_settings
from node.home import load_home
from node.jsonvalue import JsonType
from node.testnet.testnet import create_testnet
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
    assert "split_nodes" not in document["a"]
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
    _FailingTestnet.abandoned.clear()
    result = CliRunner().invoke(bench, [*arguments, *versus, "--json"])
    assert result.exit_code == 1
    # The run that failed stopped its nodes without reading them; the two before were read.
    assert _FailingTestnet.abandoned == ["testnet"]
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


def _split_document(
    nodes_with: list[int], with_total: float, without_total: float
) -> dict[str, JsonType]:
    """A split run's document: the groups' totals and one phase (verify: a tenth of each)."""
    return _document(
        split={
            "settings": ["mempool.verify_inline_max=100000"],
            "nodes_with": list[JsonType](nodes_with),
            "with_us_per_tx": {"total": with_total, "verify": with_total / 10},
            "without_us_per_tx": {"total": without_total, "verify": without_total / 10},
            "difference_percent": 100 * (with_total - without_total) / without_total,
        }
    )


def test_split_figures_compare_the_nodes_with_the_setting_against_the_others() -> None:
    of_node: list[dict[str, float] | None] = [
        {"total": 200.0, "verify": 50.0},
        {"total": 220.0, "verify": 60.0, "other": 10.0},
        {"total": 300.0, "verify": 40.0},
        None,  # did not answer: left out of its group
    ]
    figures = split_figures(of_node, [3, 0, 1], ["a.b=1"])
    assert figures["settings"] == ["a.b=1"]
    assert figures["nodes_with"] == [0, 1, 3]
    # A phase one node lacks counts as 0 there.
    assert figures["with_us_per_tx"] == {"total": 210.0, "verify": 55.0, "other": 5.0}
    assert figures["without_us_per_tx"] == {"total": 300.0, "verify": 40.0}
    assert figures["difference_percent"] == -30.0
    # A group with no node that answered cannot be compared.
    empty = split_figures([{"total": 1.0}, None], [1], [])
    assert (empty["with_us_per_tx"], empty["difference_percent"]) == (None, None)


def test_a_split_series_averages_each_pair_and_gives_the_medians() -> None:
    documents = [
        _split_document([0, 1], 190.0, 200.0),  # -5 %
        _split_document([2, 3], 220.0, 200.0),  # +10 %: pair 1 +2.5 %
        _split_document([2, 3], 180.0, 200.0),  # -10 %
        _split_document([0, 1], 190.0, 200.0),  # -5 %: pair 2 -7.5 %
        _split_document([0, 1], 200.0, 250.0),  # -20 %
        _split_document([2, 3], 200.0, 200.0),  # 0 %: pair 3 -10 %
        _split_document([0, 1], 100.0, 200.0),  # a run of no whole pair: left out
    ]
    summary = split_summary(documents)
    assert summary["pairs"] == 3
    assert summary["pairs_compared"] == 3
    assert summary["difference_percent_of_pair"] == [2.5, -7.5, -10.0]
    assert summary["median_difference_percent"] == -7.5
    assert summary["pairs_with_less_cpu"] == 2
    # Pairs' mean µs differences: total +5, -15, -30; verify +0.5, -1.5, -3.
    assert summary["median_difference_us_per_tx"] == {"total": -15.0, "verify": -1.5}


def test_a_split_pair_must_swap_the_halves_and_skips_runs_it_cannot_compare() -> None:
    with pytest.raises(ValueError, match="different nodes"):
        split_summary([_split_document([0, 1], 1.0, 2.0), _split_document([1, 2], 1.0, 2.0)])
    with pytest.raises(ValueError, match="without a split"):
        split_summary([_document(), _split_document([0], 1.0, 2.0)])
    uncompared = _split_document([2, 3], 1.0, 2.0)
    uncompared["split"] = {"nodes_with": [2, 3]}
    summary = split_summary([_split_document([0, 1], 1.0, 2.0), uncompared])
    assert (summary["pairs"], summary["pairs_compared"]) == (1, 0)
    assert summary["median_difference_percent"] is None
    assert summary["median_difference_us_per_tx"] == {}


class _SplitTestnet(_FakeTestnet):
    """A stand-in testnet whose nodes with the split setting spend 180 CPU µs per transaction
    and the others 200, except node 0 (the first primary), which spends 40 more."""

    def __init__(self, options: BenchOptions, directory: Path) -> None:
        super().__init__(options, directory)
        self.options = options

    def step(self, rate: float, duration_s: float, report: object = None) -> StepResult:
        self.rate = rate
        _SplitTestnet.started.append(f"step {rate:.0f} {self.options.split_nodes}")
        of_node: list[dict[str, float] | None] = []
        for node in range(self.options.validators):
            total = 180.0 if node in self.options.split_nodes else 200.0
            total += 40.0 if node == 0 else 0.0
            of_node.append({"total": total, "verify": 50.0})
        return _step(rate_offered=rate, tx_per_s=rate, phases_us_per_tx_of_node=of_node)


def test_split_runs_give_the_setting_to_alternate_halves_and_report_the_pairs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("node.bench.throughput._Run", _SplitTestnet)
    monkeypatch.setattr("node.bench.throughput.measure_verify_rate", lambda: 20_000.0)
    _SplitTestnet.started = []
    arguments = ["--rate", "500", "--runs", "2", "--split", "mempool.verify_inline_max=100000"]
    result = CliRunner().invoke(bench, [*arguments, "--json"])
    assert result.exit_code == 0, result.output
    steps = [name for name in _SplitTestnet.started if name.startswith("step")]
    assert steps == ["step 500 (0, 1)", "step 500 (2, 3)", "step 500 (2, 3)", "step 500 (0, 1)"]
    document = json.loads(result.output)
    assert document["order"] == ["a", "b", "b", "a"]
    assert "pairs_b_committed_more" not in document
    assert (document["a"]["split_nodes"], document["b"]["split_nodes"]) == ([0, 1], [2, 3])
    first = document["a"]["runs"][0]["split"]
    assert first["settings"] == ["mempool.verify_inline_max=100000"]
    assert first["nodes_with"] == [0, 1]
    # Nodes 0 and 1 (200 on average, node 0's 40 included) against 2 and 3 (200).
    assert first["difference_percent"] == 0.0
    second = document["b"]["runs"][0]["split"]
    assert second["with_us_per_tx"]["total"] == 180.0
    assert second["without_us_per_tx"]["total"] == 220.0
    # Each pair: (0 % + (180 - 220) / 220) / 2 and, in µs, (0 - 40) / 2: the setting's 20
    # µs, with node 0's extra weighing on both halves alike.
    summary = document["split"]
    assert summary["pairs"] == 2
    assert summary["difference_percent_of_pair"] == [-9.09, -9.09]
    assert summary["pairs_with_less_cpu"] == 2
    assert summary["median_difference_us_per_tx"] == {"total": -20.0, "verify": 0.0}
    # In text: each run's comparison, then the medians over the pairs.
    result = CliRunner().invoke(bench, arguments)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(
        "run 1/4 (a: nodes 0, 1 with mempool.verify_inline_max=100000): 500.0 tx/s"
    )
    assert lines[0].endswith("; with the setting 200.0 CPU µs per tx, without 200.0 (+0.00 %)")
    assert lines[1].endswith("; with the setting 180.0 CPU µs per tx, without 220.0 (-18.18 %)")
    assert (
        "split (mempool.verify_inline_max=100000): the nodes with it spent -9.09 % CPU per tx"
        " (median of 2 pairs; less in 2)"
    ) in lines
    assert "  per pair         -9.09 %, -9.09 %" in lines
    assert "  by phase µs/tx   total -20.00, verify +0.00" in lines


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--split", "mempool.verify_workers=0"], "--split"),
        (["--split", "nothing"], "not section.key=value"),
        (["--split", "a.b=1", "--versus", "mempool.verify_workers=1"], "--split or --versus"),
        (["--split", "mempool.verify_workers=1", "--keep", "kept"], "keeps one run's testnet"),
        (["--split", "mempool.verify_workers=1", "--validators", "1"], "at least 2 validators"),
    ],
)
def test_bad_split_arguments_are_refused_naming_the_problem(
    arguments: list[str], message: str
) -> None:
    result = CliRunner().invoke(bench, ["--rate", "100", *arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output
    result = CliRunner().invoke(bench, ["--rate", "max", "--split", "mempool.verify_workers=1"])
    assert result.exit_code == 2, result.output
    assert "a split compares the halves at one rate: give --rate R" in result.output


def test_a_split_testnet_gives_the_setting_to_the_chosen_nodes_only(tmp_path: Path) -> None:
    config = NodeConfig()
    options = BenchOptions(
        split_config=with_settings(config, ("mempool.verify_inline_max=100000",)),
        split_settings=("mempool.verify_inline_max=100000",),
        split_nodes=(1, 3),
    )
    run = _Run(options, tmp_path / "testnet")
    inline = [load_home(home).config.mempool.verify_inline_max for home in run.info.homes]
    assert inline == [8, 100_000, 8, 100_000]
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        create_testnet(tmp_path / "other", 4, node_configs={4: config})


def test_split_runs_on_real_testnets(tmp_path: Path) -> None:
    """One pair on real 4-process testnets (2 s each): every node reports its own CPU by
    phase, and the halves are compared."""
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "node", "bench", "--duration", "2", "--rate", "50"),
            *("--split", "mempool.verify_inline_max=100000", "--json"),
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
    for label, nodes in (("a", [0, 1]), ("b", [2, 3])):
        (run,) = document[label]["runs"]
        assert run["agreement_problems"] == []
        assert run["split"]["nodes_with"] == nodes
        assert all(figure > 0 for figure in run["cpu_us_per_tx_of_each_node"])
        assert run["split"]["with_us_per_tx"]["total"] > 0
        assert isinstance(run["split"]["difference_percent"], float)
    assert document["split"]["pairs_compared"] == 1
