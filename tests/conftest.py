"""Suite-wide pytest configuration: which hypothesis profile runs, and with which seed.

The profile is chosen before any test module is imported (``pytest_configure``), so every
hypothesis test in the suite inherits it (``tests/hypothesis_profiles.py`` describes them):
``--hypothesis-profile`` if given, else ``$SUANPAN_HYPOTHESIS_PROFILE``, else ``ci``
(derandomized: the same commit always draws the same examples). ``--hypothesis-seed=N`` turns
``ci`` into ``seeded`` so the seed is honoured.

Tests that are not derandomized (the ``soak`` profile, the ``slow`` soak tests) draw from one
session seed: the one given, or a fresh one printed in the report header and again after a
failure, so any soak failure can be rerun exactly.
"""

from __future__ import annotations

import os
import secrets
import signal

import pytest
from hypothesis import settings

import node  # noqa: F401  (installs node.native's import guard before tests import apps)
from tests.hypothesis_profiles import (
    PROFILE_CI,
    PROFILE_ENV,
    PROFILE_SEEDED,
    PROFILES,
    register_profiles,
)

# Set in pytest_configure: the loaded profile and the session seed.
_SESSION: dict[str, str] = {}


def restore_interrupts() -> None:
    """Let SIGINT interrupt this process and the processes the tests start.

    A shell starts a background job (``python -m pytest &``) with SIGINT ignored, and its
    children inherit that, so the tests that press Ctrl-C on a testnet or a topology builder
    (``send_signal(SIGINT)``) would wait for an interrupt that never comes. A handled signal
    is reset to the default in a child at exec, so handling it here is enough."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(tryfirst=True)  # before hypothesis' own plugin reads --hypothesis-seed
def pytest_configure(config: pytest.Config) -> None:
    """Load the hypothesis profile and fix the session seed; let SIGINT through to the
    processes the tests start."""
    restore_interrupts()
    register_profiles()
    profile = config.getoption("hypothesis_profile") or os.environ.get(PROFILE_ENV) or PROFILE_CI
    if profile not in PROFILES:
        raise pytest.UsageError(
            f"hypothesis profile {profile!r} is not one of {list(PROFILES)} (set by "
            f"--hypothesis-profile or ${PROFILE_ENV})"
        )
    seed = config.getoption("hypothesis_seed")
    if seed is not None and profile == PROFILE_CI:
        profile = PROFILE_SEEDED
    settings.load_profile(profile)
    if seed is None:
        seed = str(secrets.randbelow(2**32))
        config.option.hypothesis_seed = seed  # hypothesis' plugin makes it the global seed
    _SESSION["seed"] = str(seed)
    _SESSION["profile"] = profile


def pytest_report_header(config: pytest.Config) -> str:
    """Name the profile and the session seed."""
    derandomized = settings().derandomize  # the loaded profile's
    return (
        f"suanpan hypothesis profile {_SESSION['profile']!r} "
        f"({'derandomized' if derandomized else 'random'}); session seed {_SESSION['seed']} "
        "for tests that are not derandomized (rerun with --hypothesis-seed=N)"
    )


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """After a failure, repeat how to rerun with the same seed."""
    if exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        return
    profile = _SESSION["profile"]
    # The slow soak tests draw from the session seed whatever the profile.
    soak_selected = "slow" in (config.option.markexpr or "").replace("not slow", "")
    if profile == PROFILE_CI and not soak_selected:
        return  # every test that ran was derandomized: the seed changes nothing
    variable = "" if profile in (PROFILE_CI, PROFILE_SEEDED) else f"{PROFILE_ENV}={profile} "
    terminalreporter.write_line(
        f"hypothesis session seed {_SESSION['seed']} (profile {profile!r}): rerun with "
        f"{variable}python -m pytest {'-m slow ' if soak_selected else ''}<the failing test> "
        f"--hypothesis-seed={_SESSION['seed']}"
    )
