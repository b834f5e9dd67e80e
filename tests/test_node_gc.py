"""The node process's garbage-collector settings (``node.cli.start.tune_garbage_collector``)."""

from __future__ import annotations

import json
import subprocess
import sys

from node.cli.start import GC_THRESHOLDS

_PROBE = """
import gc, json, logging
logging.basicConfig(level=logging.INFO, format="%(message)s")
before = gc.get_threshold()
from node.cli.start import tune_garbage_collector
tune_garbage_collector()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_tuning_raises_the_thresholds_and_freezes_start_up_objects() -> None:
    # In a process of its own: the settings are process-wide and must not leak into pytest's.
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert tuple(figures["before"]) != GC_THRESHOLDS
    assert tuple(figures["after"]) == GC_THRESHOLDS
    # Everything the imports made is in the permanent generation: thousands of objects.
    assert figures["frozen"] > 1_000
    assert "garbage_collector_tuned" in done.stderr
