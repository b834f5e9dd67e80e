"""A node's log file can be rotated while it runs: moved away and the node sent SIGHUP
(``logrotate``'s default with ``postrotate kill -HUP``), the node writes on in a new file at the
configured path, the old one ending with ``log_file_reopening`` and the new one starting with
``log_file_reopened``; truncated in place (``copytruncate``), the file takes the next records
from its start, with no hole. Without a log file (and without TLS for the API, whose
certificate SIGHUP also reloads) SIGHUP keeps its default."""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import time
from pathlib import Path

from node import runtime
from node.client.client import Client
from node.logs import LogFileHandler
from node.testnet.loadgen import register_identity_transaction
from node.testnet.testnet import Testnet, create_testnet

DEADLINE_S = 60.0


def events(path: Path) -> list[str]:
    return [json.loads(line)["event"] for line in path.read_text().splitlines()]


def wait_for(condition: functools.partial[bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {DEADLINE_S} s"
        time.sleep(0.05)


def _logged(path: Path, event: str) -> bool:
    return path.exists() and event in events(path)


def test_a_log_file_moved_away_and_sighup_go_on_in_a_new_file(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="rotation-net")
    testnet = Testnet(info)
    log = info.homes[0] / "node.log"
    rotated = log.with_name("node.log.1")
    key = info.client_key(0)
    try:
        testnet.start(0)
        testnet.wait_serving()
        process = testnet.processes[0]
        assert process is not None
        log.rename(rotated)
        process.send_signal(signal.SIGHUP)
        wait_for(functools.partial(_logged, log, "log_file_reopened"), "reopened log file")
        # The node goes on: it commits, and answers.
        with Client(info.api_addresses[0], timeout_s=60, key=key) as client:
            data = register_identity_transaction(key, info.chain_id, "bank0", 0)
            result = client.submit(data, wait=True)
            assert isinstance(result, dict)
            assert result["status"] == "committed", result
        assert process.poll() is None
        # Truncated in place: the next records land at the file's start, no hole before them.
        os.truncate(log, 0)
        process.send_signal(signal.SIGHUP)
        wait_for(functools.partial(_logged, log, "log_file_reopened"), "record after truncate")
    finally:
        codes = testnet.stop_all()
    assert codes == [0]
    before = events(rotated)
    assert "node_started" in before
    assert before[-1] == "log_file_reopening"
    assert b"\0" not in log.read_bytes()
    after = events(log)
    assert after[0] == "log_file_reopening"  # the first record after the truncation
    assert after[-1] == "node_stopped"


def test_sighup_is_watched_only_with_a_log_file_or_tls(tmp_path: Path) -> None:
    logger = logging.getLogger("suanpan")
    assert not [h for h in logger.handlers if isinstance(h, LogFileHandler)]
    everything = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    # Neither: a hang-up ends the node, as it ends any program.
    assert signal.SIGHUP not in runtime.watched_signals(tls=False)
    assert runtime.watched_signals(tls=True) == everything  # certificates to reload
    handler = LogFileHandler(tmp_path / "node.log")
    logger.addHandler(handler)
    try:
        assert runtime.watched_signals(tls=False) == everything  # a file to reopen
    finally:
        logger.removeHandler(handler)
        handler.close()
