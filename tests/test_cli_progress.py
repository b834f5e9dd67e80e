"""Long commands show a progress bar on a terminal, and nothing extra with ``--json`` or when
standard error is not a terminal; the work behind them reports how far it got."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from node.audit.audit import audit_home
from node.audit.statediff import diff_homes
from node.cli import main
from node.cli.progress import progress_bar
from tests.audit_fixtures import HEIGHTS, BuiltChain, build_home

# rich treats standard error as a terminal with this set (as under a real terminal).
TERMINAL = {"TTY_COMPATIBLE": "1", "COLUMNS": "100"}
NOT_A_TERMINAL = {"TTY_COMPATIBLE": "0"}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> BuiltChain:
    return build_home(tmp_path_factory.mktemp("chain"))


def test_a_bar_is_drawn_on_a_terminal_only() -> None:
    for terminal, quiet, drawn in ((True, False, True), (True, True, False), (False, False, False)):
        out = io.StringIO()
        console = Console(file=out, force_terminal=terminal, width=100)
        with progress_bar("audit", quiet=quiet, console=console) as report:
            report("checking blocks", 3, 12)
        assert ("audit: checking blocks" in out.getvalue()) == drawn, (terminal, quiet)


def test_audit_and_state_diff_report_every_height(chain: BuiltChain, tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    assert audit_home(chain.home, progress=lambda *step: seen.append(step)).ok
    assert seen[-1] == ("checking blocks", HEIGHTS, HEIGHTS)
    assert [done for _, done, _ in seen] == list(range(1, HEIGHTS + 1))
    other = tmp_path / "other"
    shutil.copytree(chain.home, other)
    seen.clear()
    diff_homes(chain.home, other, height=HEIGHTS, progress=lambda *step: seen.append(step))
    assert seen == [("replaying both homes", h, HEIGHTS) for h in range(1, HEIGHTS + 1)]


@pytest.mark.parametrize(
    ("environment", "as_json", "bar"),
    [(TERMINAL, False, True), (TERMINAL, True, False), (NOT_A_TERMINAL, False, False)],
)
def test_audit_shows_a_bar_only_on_a_terminal_without_json(
    chain: BuiltChain, environment: dict[str, str], as_json: bool, bar: bool
) -> None:
    arguments = ["audit", "--home", str(chain.home), *(["--json"] if as_json else [])]
    result = CliRunner().invoke(main, arguments, env=environment)
    assert result.exit_code == 0, result.output
    assert ("audit: checking blocks" in result.stderr) == bar
    if as_json:
        assert json.loads(result.stdout)["ok"] is True


def test_sweep_counts_its_seeds_on_a_terminal() -> None:
    arguments = ["sim", "sweep", "--seeds", "2", "--blocks", "1", "--jobs", "1", "--no-adversary"]
    shown = CliRunner().invoke(main, arguments, env=TERMINAL)
    assert shown.exit_code == 0, shown.output
    assert "sweep: seeds" in shown.stderr
    quiet = CliRunner().invoke(main, [*arguments, "--json"], env=TERMINAL)
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""
    assert json.loads(quiet.stdout)["seeds"] == 2
