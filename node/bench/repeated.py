"""Repeated and alternated benchmark runs: the medians of each configuration's figures.

Theory of operation
-------------------
One run of ``suanpan bench`` moves with the machine: on a small virtual machine the same build
commits a tenth more or less from one run to the next, and a whole hour can run at half speed.
A figure worth quoting is the median of several runs, and a comparison of two configurations
is worth making only between runs taken side by side. ``suanpan bench --runs N`` measures N
times, each run on fresh testnets as a single run does; with ``--versus SECTION.KEY=VALUE``
it measures a second configuration (the first one's settings plus these) as many times,
alternating so that a drift of the machine's speed weighs on both alike: a, b, b, a, a, b, ...
(each pair in the order opposite to the one before). The report gives every run's figures,
each configuration's medians (``summarise``), and in how many pairs the second one committed
more (``pairs_ahead``).

With ``--split SECTION.KEY=VALUE`` both configurations of a pair run one testnet each in which
half the validators have the setting: the first half in one run, the second half in the other,
so that whatever a node's place gives it (the first primary, its clients' share) weighs on both
groups alike. ``split_summary`` averages each pair's two differences (the CPU per committed
transaction of the nodes with the setting against those without, in per cent and by phase) and
gives their medians over the pairs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Final

from node.jsonvalue import JsonType

__all__ = [
    "MEDIAN_FIGURES",
    "pairs_ahead",
    "run_order",
    "split_summary",
    "summarise",
]

# The figures whose median a summary gives (each run's best step's, for a search).
MEDIAN_FIGURES: Final = (
    "rate_offered",
    "tx_per_s",
    "latency_ms_p99",
    "offer_latency_ms_p99",
    "pushed_back",
    "block_size_avg",
    "cpu_us_per_tx_per_node",
    "ratio",
)


def run_order(runs: int, compared: bool) -> list[str]:
    """The configurations to run, in order: ``runs`` times "a", or with a second configuration
    ``runs`` pairs alternating a, b, b, a, a, b, ..."""
    if runs < 1:
        raise ValueError("at least one run")
    if not compared:
        return ["a"] * runs
    order: list[str] = []
    for pair in range(runs):
        order.extend(("a", "b") if pair % 2 == 0 else ("b", "a"))
    return order


def _number(value: JsonType) -> float | None:
    """``value`` as a float, or None when it is not a number (a boolean, or NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def summarise(documents: Sequence[Mapping[str, JsonType]]) -> dict[str, JsonType]:
    """The medians of ``MEDIAN_FIGURES`` over the runs' JSON documents (a figure a run lacks
    or reports as not a number is left out of its median), each figure's range, the median of
    each run's largest peak RSS, the load averages before the runs, and how many runs'
    overload steps held (when they ran)."""
    summary: dict[str, JsonType] = {"runs": len(documents)}
    ranges: dict[str, JsonType] = {}
    for figure in MEDIAN_FIGURES:
        values = [
            number
            for document in documents
            if (number := _number(document.get(figure))) is not None
        ]
        summary[figure] = _median(values)
        ranges[figure] = [min(values), max(values)] if values else None
    summary["range"] = ranges
    peaks: list[float] = []
    for document in documents:
        per_node = document.get("rss_peak_mb_per_node")
        if isinstance(per_node, list):
            numbers = [number for item in per_node if (number := _number(item)) is not None]
            if numbers:
                peaks.append(max(numbers))
    summary["rss_peak_mb"] = _median(peaks)
    loads: list[JsonType] = []
    for document in documents:
        load = document.get("load_average_before")
        loads.append(load[0] if isinstance(load, list) and load else None)
    summary["load_average_before"] = loads
    held = [document["overload_holds"] for document in documents if "overload_holds" in document]
    if held:
        summary["overload_held"] = sum(1 for item in held if item is True)
    summary["agreement_problems"] = sum(
        1 for document in documents if document.get("agreement_problems")
    )
    return summary


def pairs_ahead(
    order: Sequence[str], documents: Sequence[Mapping[str, JsonType]], figure: str = "tx_per_s"
) -> int:
    """In how many of the alternated pairs (``run_order``) the second configuration's
    ``figure`` exceeded the first's: run 2k and 2k + 1 form pair k."""
    if len(order) != len(documents):
        raise ValueError("one document per run")
    ahead = 0
    for start in range(0, len(order) - 1, 2):
        pair = {order[start]: documents[start], order[start + 1]: documents[start + 1]}
        if set(pair) != {"a", "b"}:
            raise ValueError("runs do not alternate in pairs")
        first = _number(pair["a"].get(figure))
        second = _number(pair["b"].get(figure))
        if first is not None and second is not None and second > first:
            ahead += 1
    return ahead


def _split_of(
    document: Mapping[str, JsonType],
) -> tuple[frozenset[int], float | None, dict[str, float]]:
    """A split run's nodes with the setting, its difference in per cent, and the difference
    by phase (µs per transaction, with minus without)."""
    split = document.get("split")
    if not isinstance(split, dict):
        raise ValueError("a run without a split")
    nodes = split.get("nodes_with")
    chosen = frozenset(
        node for node in (nodes if isinstance(nodes, list) else []) if isinstance(node, int)
    )
    with_phases, without_phases = split.get("with_us_per_tx"), split.get("without_us_per_tx")
    by_phase: dict[str, float] = {}
    if isinstance(with_phases, dict) and isinstance(without_phases, dict):
        for phase, value in with_phases.items():
            first, second = _number(value), _number(without_phases.get(phase))
            if first is not None and second is not None:
                by_phase[phase] = first - second
    return chosen, _number(split.get("difference_percent")), by_phase


def split_summary(documents: Sequence[Mapping[str, JsonType]]) -> dict[str, JsonType]:
    """Over the whole pairs of split runs (run 2k and 2k + 1, the halves swapped): each pair's
    mean difference in per cent of the CPU per committed transaction (the nodes with the
    setting against those without; negative: they spent less), the median of those, in how
    many pairs the nodes with the setting spent less, and the median by phase of each pair's
    mean difference in µs per transaction. A pair a run of which could not compare its groups
    is left out (``pairs_compared`` counts the others)."""
    differences: list[float] = []
    by_phase: dict[str, list[float]] = {}
    pairs = len(documents) // 2
    for start in range(0, 2 * pairs, 2):
        first, second = _split_of(documents[start]), _split_of(documents[start + 1])
        if first[0] & second[0] or not first[0] or not second[0]:
            raise ValueError("a pair's runs must give the setting to different nodes")
        if first[1] is None or second[1] is None:
            continue
        differences.append((first[1] + second[1]) / 2)
        for phase in first[2].keys() & second[2].keys():
            by_phase.setdefault(phase, []).append((first[2][phase] + second[2][phase]) / 2)
    return {
        "pairs": pairs,
        "pairs_compared": len(differences),
        "difference_percent_of_pair": [round(value, 2) + 0.0 for value in differences],
        "median_difference_percent": _median(differences),
        "pairs_with_less_cpu": sum(1 for value in differences if value < 0),
        "median_difference_us_per_tx": {
            phase: round(statistics.median(values), 1) + 0.0  # never -0.0
            for phase, values in sorted(by_phase.items())
            if len(values) == len(differences)
        },
    }
