"""SIGTERM to a command that starts nodes stops them: the command unwinds as on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from node.cli.signals import terminate_unwinds
from tests.process_fixtures import processes_naming

START_S = 180.0
STOP_S = 60.0


def test_sigterm_unwinds_like_ctrl_c_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    unwound = False
    try:
        with terminate_unwinds():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
    except KeyboardInterrupt:
        unwound = True
    assert unwound
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_to_a_benchmark_stops_the_nodes_it_started(tmp_path: Path) -> None:
    directory = tmp_path / "net"
    marker = f"{directory}/"
    errors = (tmp_path / "bench.err").open("wb")
    bench = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node",
            "bench",
            "--validators",
            "1",
            "--duration",
            "120",
            "--rate",
            "20",
            "--keep",
            str(directory),
            "--json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=errors,
    )
    errors.close()
    try:
        deadline = time.monotonic() + START_S
        while not processes_naming(marker):
            assert bench.poll() is None, "the benchmark ended before it started a node"
            assert time.monotonic() < deadline, "no node started"
            time.sleep(0.2)
        time.sleep(1.0)
        bench.send_signal(signal.SIGTERM)
        try:
            bench.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the benchmark did not stop: {_what_it_said(tmp_path)}") from None
        deadline = time.monotonic() + STOP_S
        while processes_naming(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_naming(marker) == []
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for pid in processes_naming(marker):
            os.kill(pid, signal.SIGKILL)


def _what_it_said(tmp_path: Path) -> str:
    """The end of the benchmark's standard error and of each node's logs."""
    paths = sorted([tmp_path / "bench.err", *tmp_path.glob("net/*/*/*.log")])
    return "\n".join(
        f"--- {path.relative_to(tmp_path)}:\n{path.read_text(errors='replace')[-3000:]}"
        for path in paths
    )
