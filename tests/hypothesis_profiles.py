"""Hypothesis profiles for the whole suite, and the budgets of the app state machines.

``tests/conftest.py`` registers the profiles and loads one before any test module is imported,
so every ``@settings`` and state machine in the suite inherits it:

* ``ci`` (the default, and what CI runs): **derandomized**. Each test draws its examples from
  a generator seeded by a digest of the test's own code, so two runs of one commit draw the
  same examples and reach the same result. No example database (a failure an earlier run saved
  cannot change this run), ``print_blob`` (a failure prints ``@reproduce_failure(...)``), and
  no deadline (CI machines are slow and busy; speed is measured by benchmarks, not tests).
* ``seeded``: ``ci`` with a random generator seeded by ``--hypothesis-seed=N`` instead of the
  digest; loaded when that option is given, so the option always means something.
* ``soak`` (``SUANPAN_HYPOTHESIS_PROFILE=soak``): random examples from a session seed that is
  printed in the header and again after a failure (rerun with ``--hypothesis-seed=N``); the app
  state machines run ``soak_examples()`` examples each (``SUANPAN_SOAK_EXAMPLES``, default
  10,000). ``python -m pytest -m slow tests/test_apps_soak.py`` runs the same soak on every app
  state machine without the variable.

A failure always prints the minimal example: the falsifying steps for a state machine.
"""

from __future__ import annotations

import os
from typing import Final

from hypothesis import HealthCheck, settings

__all__ = [
    "PROFILES",
    "PROFILE_CI",
    "PROFILE_ENV",
    "PROFILE_SEEDED",
    "PROFILE_SOAK",
    "machine_settings",
    "register_profiles",
    "soak_examples",
    "soak_settings",
]

PROFILE_ENV: Final = "SUANPAN_HYPOTHESIS_PROFILE"
SOAK_EXAMPLES_ENV: Final = "SUANPAN_SOAK_EXAMPLES"
# Enough sequences that a rare interleaving (the refinancing history took 1 seed in 12 at 40
# examples) is all but certain to come up, while one machine still soaks in minutes.
SOAK_EXAMPLES_DEFAULT: Final = 10_000
PROFILE_CI: Final = "ci"
PROFILE_SEEDED: Final = "seeded"
PROFILE_SOAK: Final = "soak"
PROFILES: Final = (PROFILE_CI, PROFILE_SEEDED, PROFILE_SOAK)


def soak_examples() -> int:
    """Examples per state machine in a soak (``SUANPAN_SOAK_EXAMPLES``, default 10,000)."""
    text = os.environ.get(SOAK_EXAMPLES_ENV, "")
    if not text:
        return SOAK_EXAMPLES_DEFAULT
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{SOAK_EXAMPLES_ENV} must be a positive whole number, not {text!r}")
    return int(text)


def register_profiles() -> None:
    """Register ``ci``, ``seeded`` and ``soak`` (see the module docstring)."""
    common = {"database": None, "deadline": None, "print_blob": True}
    settings.register_profile(PROFILE_CI, derandomize=True, **common)  # type: ignore[arg-type]
    settings.register_profile(PROFILE_SEEDED, derandomize=False, **common)  # type: ignore[arg-type]
    settings.register_profile(
        PROFILE_SOAK,
        derandomize=False,
        max_examples=soak_examples(),
        **common,  # type: ignore[arg-type]
    )


def machine_settings(*, max_examples: int, step_count: int) -> settings:
    """Settings of an app state machine in the default run: ``max_examples`` sequences of up
    to ``step_count`` steps; under the ``soak`` profile, the soak's example count instead."""
    examples = (
        soak_examples() if settings.get_current_profile_name() == PROFILE_SOAK else max_examples
    )
    return settings(
        max_examples=examples,
        stateful_step_count=step_count,
        suppress_health_check=[HealthCheck.too_slow],
    )


def soak_settings(*, step_count: int) -> settings:
    """The ``soak`` profile's settings for one state machine, whatever profile is loaded (the
    ``slow`` soak tests run them in a plain ``pytest -m slow``)."""
    return settings(
        settings.get_profile(PROFILE_SOAK),
        stateful_step_count=step_count,
        suppress_health_check=[HealthCheck.too_slow],
    )
