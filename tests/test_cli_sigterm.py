"""SIGTERM to a command that starts nodes stops them: the command unwinds as on Ctrl-C. A node
asked to stop at any moment of its start stops cleanly (the hold of ``node.termination``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from node.cli.signals import terminate_unwinds
from node.termination import (
    hand_over_termination,
    hold_termination,
    release_termination,
    take_held_termination,
    termination_blocked,
)
from node.testnet.testnet import Testnet, create_testnet
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


# ------------------------------------------------------------------ the hold while a process starts


class _Recorder:
    """A SIGTERM handler that counts what reaches it."""

    def __init__(self) -> None:
        self.received = 0

    def __call__(self, _signal: int, _frame: FrameType | None) -> None:
        self.received += 1


def _handler_now() -> object:
    return signal.getsignal(signal.SIGTERM)


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    """A recording SIGTERM handler in place (the handler a hold replaces); the test's
    original handler and an ended hold afterwards."""
    original = signal.getsignal(signal.SIGTERM)
    handler = _Recorder()
    signal.signal(signal.SIGTERM, handler)
    try:
        yield handler
    finally:
        take_held_termination()  # a test that failed half-way: nothing of it reaches the next
        release_termination()
        signal.signal(signal.SIGTERM, original)


def test_a_held_sigterm_is_noted_then_taken_by_the_caller(recorder: _Recorder) -> None:
    hold_termination()
    assert not take_held_termination()  # nothing came yet: the hold goes on
    signal.raise_signal(signal.SIGTERM)
    assert recorder.received == 0
    assert take_held_termination()
    assert _handler_now() is recorder  # the handler from before is back
    assert not take_held_termination()
    release_termination()  # no hold any more: nothing is delivered
    assert recorder.received == 0


def test_release_delivers_a_held_sigterm_to_the_handler_from_before(recorder: _Recorder) -> None:
    hold_termination()
    signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGTERM)
    assert recorder.received == 0
    release_termination()
    assert recorder.received == 1  # held is held: two became one stop request
    assert _handler_now() is recorder
    signal.raise_signal(signal.SIGTERM)
    assert recorder.received == 2


def test_release_without_a_sigterm_delivers_nothing(recorder: _Recorder) -> None:
    hold_termination()
    release_termination()
    assert recorder.received == 0
    assert _handler_now() is recorder


def test_hand_over_delivers_a_held_sigterm_to_the_new_handler(recorder: _Recorder) -> None:
    hold_termination()
    signal.raise_signal(signal.SIGTERM)
    own = _Recorder()
    signal.signal(signal.SIGTERM, own)  # the node's own handling, as trio's receiver installs it
    hand_over_termination()
    assert (own.received, recorder.received) == (1, 0)
    assert _handler_now() is own  # the new handler stays
    release_termination()  # the hold is over: nothing more, and the handler is not touched
    assert (own.received, recorder.received) == (1, 0)
    assert _handler_now() is own


def test_hand_over_without_a_sigterm_delivers_nothing(recorder: _Recorder) -> None:
    hold_termination()
    own = _Recorder()
    signal.signal(signal.SIGTERM, own)
    hand_over_termination()
    assert (own.received, recorder.received) == (0, 0)


_PRINT_MASK = "import signal; print(signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, []))"


def test_a_process_started_inside_termination_blocked_begins_with_sigterm_blocked() -> None:
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with termination_blocked():
        inside = subprocess.run([sys.executable, "-c", _PRINT_MASK], capture_output=True)
    outside = subprocess.run([sys.executable, "-c", _PRINT_MASK], capture_output=True)
    assert (inside.stdout, outside.stdout) == (b"True\n", b"False\n")
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before  # the caller's mask is back


# The moments after its start at which a node is asked to stop: before the interpreter runs
# anything, while the command line imports, while the store opens, and later.
STOP_DELAYS_S = (0.0, 0.02, 0.1, 0.3, 0.6, 1.0)


def test_a_node_asked_to_stop_at_any_moment_of_its_start_stops_cleanly(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="early-stop")
    testnet = Testnet(info)
    log = info.homes[0] / "node.log"
    try:
        for delay in STOP_DELAYS_S:
            lines_before = len(log.read_text().splitlines()) if log.exists() else 0
            testnet.start(0)
            time.sleep(delay)  # the moment of the stop, not a wait for a condition
            code = testnet.stop(0)
            events = [
                json.loads(line)["event"] for line in log.read_text().splitlines()[lines_before:]
            ]
            assert code == 0, (delay, code, (info.homes[0] / "process.log").read_text()[-2000:])
            # Stopped before it opened anything, or stopped as a running node does.
            assert events[-1] in ("start_cancelled", "node_stopped"), (delay, events)
            if delay == 0.0:
                # Sent before the interpreter ran: held, then taken before the store opened.
                assert events == ["start_cancelled"], events
        # The store is whole: the node starts, serves and stops as ever.
        testnet.start(0)
        testnet.wait_serving()
        assert testnet.stop(0) == 0
    finally:
        testnet.stop_all()


def test_a_sigterm_to_another_command_while_it_loads_ends_it_as_before() -> None:
    # Started with SIGTERM blocked and signalled at once: the entry point's hold notes it,
    # and once the command is known (not `start`) it is delivered with the default action.
    with termination_blocked():
        process = subprocess.Popen(
            [sys.executable, "-m", "node", "openapi"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    process.send_signal(signal.SIGTERM)
    output, errors = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGTERM, errors[-2000:]
    assert output == b""  # ended before the command ran


_HELD_THEN_RUN = """
import os, signal, sys
from pathlib import Path
import trio
from node.home import load_home
from node.logs import configure_logging
from node.runtime import Node
from node.termination import hold_termination
hold_termination()
os.kill(os.getpid(), signal.SIGTERM)  # held: the process goes on
home = load_home(Path(sys.argv[1]))
configure_logging(home.config.log_level, home.config.log_format, home.log_path())
node = Node(home)
trio.run(node.run)  # the node's receiver takes the held SIGTERM over and stops the node
print("stopped at", node.written_height)
"""


def test_a_sigterm_held_before_the_node_runs_stops_it_once_its_handling_is_in_place(
    tmp_path: Path,
) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="held-stop")
    home = info.homes[0]
    ran = subprocess.run(
        [sys.executable, "-c", _HELD_THEN_RUN, str(home)],
        capture_output=True,
        timeout=60,  # a node that never got the signal would run on
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.startswith(b"stopped at "), ran.stdout
    events = [json.loads(line)["event"] for line in (home / "node.log").read_text().splitlines()]
    # Handed over (not taken before the start): the node started, got the signal, stopped.
    assert events[-3:] == ["node_started", "signal_received", "node_stopped"], events[-6:]
