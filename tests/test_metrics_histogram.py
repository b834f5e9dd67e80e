"""The commit-latency histogram takes a block's observations in one call
(``BatchedHistogram.observe_many``) and exports what ``prometheus_client.Histogram`` would
for the same values: the same buckets (a value equal to a bound counts in it), count and sum."""

from __future__ import annotations

import math
from collections.abc import Iterable

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from node.metrics import BatchedHistogram, NodeMetrics

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
# Values on and around the bounds, and anywhere else.
VALUES = st.lists(
    st.sampled_from([*BUCKETS, 0.0, 0.049999, 0.050001, 29.99, 30.01, 1e6])
    | st.floats(min_value=0, max_value=100, allow_nan=False),
    max_size=40,
)


def _samples(registry: CollectorRegistry, name: str) -> dict[str, float]:
    """Every ``_bucket``, ``_count`` and ``_sum`` sample of histogram ``name``."""
    samples: dict[str, float] = {}
    for metric in registry.collect():
        if metric.name != name:
            continue
        for sample in metric.samples:
            if sample.name.endswith(("_bucket", "_count", "_sum")):
                samples[sample.name + str(sorted(sample.labels.items()))] = sample.value
    return samples


def _batched(values: list[float], batches: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    histogram = BatchedHistogram("latency_seconds", "latency", BUCKETS)
    registry.register(histogram)
    size = max(1, math.ceil(len(values) / batches))
    for start in range(0, len(values), size):
        histogram.observe_many(values[start : start + size])
    return registry


def _one_by_one(values: list[float]) -> CollectorRegistry:
    registry = CollectorRegistry()
    histogram = Histogram("latency_seconds", "latency", buckets=BUCKETS, registry=registry)
    for value in values:
        histogram.observe(value)
    return registry


@given(values=VALUES, batches=st.integers(1, 4))
def test_batched_observations_export_what_one_by_one_observations_do(
    values: list[float], batches: int
) -> None:
    batched = _samples(_batched(values, batches), "latency_seconds")
    expected = _samples(_one_by_one(values), "latency_seconds")
    assert batched.keys() == expected.keys()
    for name, value in expected.items():
        assert math.isclose(batched[name], value, rel_tol=1e-9, abs_tol=1e-9), name


def test_the_comparison_is_seen_failing_on_a_bound_counted_in_the_next_bucket() -> None:
    class Misplaced(BatchedHistogram):
        def observe_many(self, values: Iterable[float]) -> None:  # a bound one bucket up
            super().observe_many(value + 1e-9 for value in values)

    registry = CollectorRegistry()
    histogram = Misplaced("latency_seconds", "latency", BUCKETS)
    registry.register(histogram)
    histogram.observe_many([0.5])
    assert _samples(registry, "latency_seconds") != _samples(_one_by_one([0.5]), "latency_seconds")


def test_the_node_exports_commit_latency_with_its_buckets() -> None:
    metrics = NodeMetrics()
    metrics.commit_latency.observe_many([0.05, 0.3, 45.0])
    metrics.commit_latency.observe(1.0)
    text = metrics.render().decode()
    assert 'suanpan_commit_latency_seconds_bucket{le="0.05"} 1.0' in text
    assert 'suanpan_commit_latency_seconds_bucket{le="0.5"} 2.0' in text
    assert 'suanpan_commit_latency_seconds_bucket{le="30.0"} 3.0' in text
    assert 'suanpan_commit_latency_seconds_bucket{le="+Inf"} 4.0' in text
    assert "suanpan_commit_latency_seconds_count 4.0" in text
    assert "suanpan_commit_latency_seconds_sum 46.35" in text
    assert "# TYPE suanpan_commit_latency_seconds histogram" in text
    assert "suanpan_commit_latency_seconds_created" not in text
