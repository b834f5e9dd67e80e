"""Benchmarks of the node's hot paths (run as modules, e.g. ``python -m node.bench.execution``)."""
