"""Gossip throughput benchmark: 4 node processes on loopback, one gossips, three receive.

Run ``python -m network.bench`` (or ``suanpan bench gossip``). The parent process signs the
transactions once, starts one OS process per node (each a full ``Network`` on 127.0.0.1 with
its own identity, handshake and AEAD links, in a full mesh), waits until every node has
connected to every other, tells node 0 to gossip everything as fast as its peers absorb it,
and collects from each receiver the time its last new transaction arrived.

Printed per run: transactions/s delivered to each receiver (unique transactions handed to the
node, measured from the origin's first gossip call to that receiver's last delivery), frames/s
received per receiver, and each process's peak RSS. The summary is the median over runs.

The transactions are ~200-byte payloads signed with ed25519 over canonical bytes under their
own domain tag: the shape and cost of ``apps.transaction`` transactions, built here from
``consensus`` primitives because ``network/`` may not import ``apps`` (tests/test_layering.py).
Receivers do **not** verify signatures: that is the node's job (at ~50 us per ed25519 verify
in PyNaCl it would cost about one core per 20,000 tx/s on its own).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio
import trio.lowlevel

from consensus.codec import Value, encode
from consensus.crypto import PrivateKey
from network.limits import NetworkLimits
from network.network import InboundTransactions, Network, NetworkConfig, PeerAddress

__all__ = ["BenchResult", "main", "run_benchmark", "signed_payloads"]

CHAIN_ID: Final = "suanpan-bench"
GENESIS_HASH: Final = hashlib.sha256(b"suanpan-bench genesis").digest()
PAYLOAD_TAG: Final = b"suanpan/bench-tx/v1"
NODES: Final = 4
_LENGTH: Final = struct.Struct(">I")
# The origin hands the network this many transactions per call, and waits while any peer's
# gossip backlog is above _BACKLOG_BYTES: nothing is shed, and a transaction waits at most a
# few frames behind others (a deep backlog would only add latency, and make receivers fetch
# relayed copies before the origin's own push arrives).
_GOSSIP_CHUNK: Final = 1000
_BACKLOG_BYTES: Final = 512 * 1024
# A receiver that has seen nothing new for this long reports what it has.
_RECEIVER_IDLE_SECONDS: Final = 10.0


def node_key(index: int) -> PrivateKey:
    """The deterministic identity of bench node ``index``."""
    return PrivateKey(hashlib.sha256(b"suanpan-bench node %d" % index).digest())


def signed_payloads(count: int) -> list[bytes]:
    """``count`` distinct ~200-byte signed transfer payloads from one sender."""
    sender = PrivateKey(hashlib.sha256(b"suanpan-bench sender").digest())
    payloads = []
    for nonce in range(count):
        arguments: dict[str, Value] = {"amount": 1000 + nonce, "currency": "EUR", "to": bytes(32)}
        body: tuple[Value, ...] = (
            1,
            CHAIN_ID,
            "payments",
            "transfer",
            arguments,
            sender.public_key,
            nonce,
        )
        signature = sender.sign(PAYLOAD_TAG, CHAIN_ID, encode(body))
        payloads.append(encode((*body, signature)))
    return payloads


def _write_payloads(path: Path, payloads: Sequence[bytes]) -> None:
    with path.open("wb") as file:
        for payload in payloads:
            file.write(_LENGTH.pack(len(payload)) + payload)


def _read_payloads(path: Path) -> list[bytes]:
    data = path.read_bytes()
    payloads = []
    position = 0
    while position < len(data):
        (length,) = _LENGTH.unpack_from(data, position)
        payloads.append(data[position + 4 : position + 4 + length])
        position += 4 + length
    return payloads


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _emit(record: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- one node process


async def _worker(index: int, ports: list[int], payload_path: Path, count: int) -> None:
    config = NetworkConfig(
        chain_id=CHAIN_ID,
        genesis_hash=GENESIS_HASH,
        identity=node_key(index),
        listen_port=ports[index],
        persistent_peers=tuple(
            PeerAddress(node_key(other).public_key, "127.0.0.1", ports[other])
            for other in range(index)
        ),
        allowlist=frozenset(node_key(other).public_key for other in range(NODES)),
        limits=NetworkLimits(dial_backoff_base_seconds=0.05, dial_backoff_max_seconds=0.5),
    )
    network = Network(config)
    payloads = _read_payloads(payload_path) if index == 0 else []
    async with trio.open_nursery() as nursery:
        await nursery.start(network.run)
        with trio.fail_after(60):
            await network.wait_peers_connected(
                node_key(other).public_key for other in range(NODES) if other != index
            )
        _emit({"ready": index})
        if index == 0:
            await trio.wrap_file(sys.stdin).readline()  # "go"
            started = time.monotonic()
            await _gossip_all(network, payloads)
            sent = network.statistics()
            _emit(
                {
                    "origin": index,
                    "started": started,
                    "gossip_seconds": time.monotonic() - started,
                    "frames_sent": sent.frames_sent,
                    "shed": sent.transactions_shed_outbound,
                    "peak_rss_mib": _peak_rss_mib(),
                }
            )
            await trio.sleep_forever()
        await _receive_all(network, index, count)
        nursery.cancel_scope.cancel()


async def _gossip_all(network: Network, payloads: list[bytes]) -> None:
    high_water = _BACKLOG_BYTES
    for start in range(0, len(payloads), _GOSSIP_CHUNK):
        await network.wait_gossip_backlog_below(high_water)
        network.gossip_transactions(payloads[start : start + _GOSSIP_CHUNK])
        await trio.lowlevel.checkpoint()


async def _receive_all(network: Network, index: int, count: int) -> None:
    delivered = 0
    last = first = 0.0
    batch: InboundTransactions
    while delivered < count:
        with trio.move_on_after(_RECEIVER_IDLE_SECONDS) as idle:
            batch = await network.transactions.receive()
        if idle.cancelled_caught:
            break
        if not delivered:
            first = time.monotonic()
        delivered += len(batch.transactions)
        last = time.monotonic()
    stats = network.statistics()
    _emit(
        {
            "receiver": index,
            "delivered": delivered,
            "first": first,
            "last": last,
            "frames_received": stats.frames_received,
            "transactions_received": stats.transactions_received,
            "duplicates": stats.transactions_duplicate,
            "shed": stats.transactions_shed_inbound + stats.transactions_shed_outbound,
            "peak_rss_mib": _peak_rss_mib(),
        }
    )


# ---------------------------------------------------------------- the parent


@dataclass(frozen=True, slots=True)
class BenchResult:
    """One run: per-receiver delivery rate and frame rate, and per-process peak RSS."""

    transactions: int
    delivered: tuple[int, ...]
    transactions_per_second: tuple[float, ...]
    frames_per_second: tuple[float, ...]
    duplicates: tuple[int, ...]
    shed: int
    peak_rss_mib: tuple[float, ...]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def run_benchmark(payload_path: Path, count: int, timeout_seconds: float = 300.0) -> BenchResult:
    """One run with fresh node processes; raises ``RuntimeError`` if a node fails."""
    ports = _free_ports(NODES)
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "network.bench",
                "--worker",
                str(index),
                "--ports",
                ",".join(map(str, ports)),
                "--payloads",
                str(payload_path),
                "--transactions",
                str(count),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
        )
        for index in range(NODES)
    ]
    try:
        deadline = time.monotonic() + timeout_seconds
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line or "ready" not in json.loads(line):
                raise RuntimeError(f"bench node did not start: {line!r}")
        origin = processes[0]
        assert origin.stdin is not None
        origin.stdin.write("go\n")
        origin.stdin.flush()
        receivers = []
        for process in processes[1:]:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise RuntimeError("a receiver ended without reporting")
            receivers.append(json.loads(line))
        assert origin.stdout is not None
        sent = json.loads(origin.stdout.readline())
    finally:
        for process in processes:
            process.kill()
            process.wait()
    started = float(sent["started"])
    rates = []
    frame_rates = []
    for record in receivers:
        seconds = max(float(record["last"]) - started, 1e-9)
        rates.append(int(record["delivered"]) / seconds)
        frame_rates.append(int(record["frames_received"]) / seconds)
    return BenchResult(
        transactions=count,
        delivered=tuple(int(record["delivered"]) for record in receivers),
        transactions_per_second=tuple(rates),
        frames_per_second=tuple(frame_rates),
        duplicates=tuple(int(record["duplicates"]) for record in receivers),
        shed=int(sent["shed"]) + sum(int(record["shed"]) for record in receivers),
        peak_rss_mib=(
            float(sent["peak_rss_mib"]),
            *(float(record["peak_rss_mib"]) for record in receivers),
        ),
    )


def benchmark(count: int, runs: int, echo: Callable[[str], object] = print) -> list[BenchResult]:
    """Sign ``count`` payloads once, then ``runs`` runs; prints each run and the medians."""
    say = echo
    say(f"signing {count} transactions (~200 bytes, ed25519) ...")
    payloads = signed_payloads(count)
    size = sum(map(len, payloads)) / len(payloads)
    results = []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "payloads.bin"
        _write_payloads(path, payloads)
        for run in range(1, runs + 1):
            result = run_benchmark(path, count)
            results.append(result)
            rates = " ".join(f"{rate:,.0f}" for rate in result.transactions_per_second)
            frame_rates = " ".join(f"{rate:,.0f}" for rate in result.frames_per_second)
            rss = " ".join(f"{mib:.0f}" for mib in result.peak_rss_mib)
            say(
                f"run {run}: tx/s per receiver [{rates}]  frames/s [{frame_rates}]  "
                f"delivered {list(result.delivered)}  duplicates {list(result.duplicates)}  "
                f"shed {result.shed}  peak RSS MiB [{rss}]"
            )
    per_receiver = [
        statistics.median(result.transactions_per_second[receiver] for result in results)
        for receiver in range(NODES - 1)
    ]
    frames = [
        statistics.median(result.frames_per_second[receiver] for result in results)
        for receiver in range(NODES - 1)
    ]
    peak = max(max(result.peak_rss_mib) for result in results)
    say(
        f"median of {runs} runs, {count} tx of {size:.0f} B, {NODES} processes: "
        f"tx/s delivered per receiver {[round(rate) for rate in per_receiver]}, "
        f"frames/s received per receiver {[round(rate) for rate in frames]}, "
        f"max peak RSS {peak:.0f} MiB"
    )
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (also the node-process entry point with ``--worker``)."""
    parser = argparse.ArgumentParser(prog="python -m network.bench", description=__doc__)
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--payloads", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.worker is not None:
        # Workers are killed mid-stream at the end of a run; their peers' warnings are noise.
        logging.getLogger("suanpan.network").setLevel(logging.ERROR)
        ports = [int(port) for port in arguments.ports.split(",")]
        trio.run(_worker, arguments.worker, ports, arguments.payloads, arguments.transactions)
        return
    benchmark(arguments.transactions, arguments.runs)


if __name__ == "__main__":
    main()
