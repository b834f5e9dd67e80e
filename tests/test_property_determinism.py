"""Two runs of one commit draw the same property-test examples: the cross-app state machine,
run under the default (``ci``) profile in two fresh processes with different hash seeds,
executes exactly the same blocks (every block's app hash is folded into one digest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
# Runs the machine for a few sequences and prints a digest of every block it executed.
_SCRIPT = """
import hashlib
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test
from apps.host import AppHost
from tests.hypothesis_profiles import PROFILE_CI, register_profiles

register_profiles()
settings.load_profile(PROFILE_CI)
from tests.test_apps_cross_invariants import CrossAppMachine

digest = hashlib.sha256()
execute_block = AppHost.execute_block

def recording(self, *arguments, **options):
    result = execute_block(self, *arguments, **options)
    digest.update(result.app_hash)
    return result

AppHost.execute_block = recording
machine_settings = CrossAppMachine.TestCase.settings
run_state_machine_as_test(CrossAppMachine, settings=settings(machine_settings, max_examples=6))
print(digest.hexdigest())
"""


def _digest(hash_seed: str) -> str:
    environment = {**os.environ, "PYTHONHASHSEED": hash_seed}
    environment.pop("SUANPAN_HYPOTHESIS_PROFILE", None)
    completed = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip()


def test_the_default_profile_draws_the_same_examples_in_every_run() -> None:
    first, second = _digest("1"), _digest("2")
    assert len(first) == 64
    assert first == second
