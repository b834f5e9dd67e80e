"""The event stream and the monitor on one running validator with the demo consortium.

Scenario: alice pays bob; lion-bank pays alice a planted large amount; lion-bank freezes bob's
SGD account; alice pays three times in a row; harbour-bank offers FX that expires unaccepted
(and the chain releases it).
Then: alice's stream of her payments has exactly hers; bob may not filter on alice (403 with
the rule); an unsigned stream carries blocks but no account's events; a stream resumes after
an item id; the monitor replaying the blocks raises the large-payment alert at the height the
payment committed (within one block), the freeze and the velocity alerts, and no expired-offer
alert (the offer was released);
the chain's release of the offer is an end-of-block event on the maker's stream;
``suanpan events`` and ``suanpan monitor`` print the same, and ``suanpan monitor`` following the
chain live alerts on a large payment planted after it started, at that payment's height. Also:
``/healthz`` (and ``HEAD``), ``/status`` (version, last block time) and ``/metrics`` (process
collectors, counters).
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import trio
from click.testing import CliRunner

from node import runtime
from node.audit.audit import audit_home
from node.cli import main
from node.client.client import ApiError, Client, StreamEvent
from node.home import load_home, write_config
from node.keys import load_key_file
from node.monitoring.engine import Monitor, MonitorRules
from node.testnet.testnet import create_testnet

DEADLINE_S = 120.0
LARGE = 2_000_000_00  # 2,000,000.00 SGD: above the default 1,000,000.00 threshold
T = TypeVar("T")


def first_alert(process: subprocess.Popen[bytes], rule: str) -> dict[str, object]:
    """The first alert of ``rule`` a running ``suanpan monitor --json`` prints (its other lines
    are skipped); fails if the monitor exits or prints none within the deadline."""
    assert process.stdout is not None
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if not ready:
            assert process.poll() is None, process.communicate(timeout=30)
            continue
        line = process.stdout.readline()
        assert line, f"the monitor exited: {process.communicate(timeout=30)}"
        alert = json.loads(line)
        assert isinstance(alert, dict)
        if alert.get("rule") == rule:
            return alert
    raise AssertionError(f"no {rule} alert within {DEADLINE_S} s")


async def call(function: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(function)


def collect(client: Client, **filters: object) -> list[StreamEvent]:
    return list(client.events(reconnect=False, **filters))  # type: ignore[arg-type]


async def wait_for(condition: Callable[[], bool]) -> None:
    with trio.fail_after(DEADLINE_S):
        while not await call(condition):  # noqa: ASYNC110 - polls another process's answer
            await trio.sleep(0.1)


async def test_events_are_scoped_resumable_and_the_monitor_catches_the_planted_payment(
    tmp_path: Path,
) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="events-net", demo_seed=3)
    address = info.api_addresses[0]
    keys = {party.name: party for party in info.parties}
    keys_of = {name: load_key_file(party.key_file) for name, party in keys.items()}
    clients = {name: Client(address, timeout_s=60, key=key) for name, key in keys_of.items()}
    reader = Client(address, timeout_s=60, key=info.reader_key())
    anonymous = Client(address, timeout_s=60)
    alice, bob = keys["alice"].public_key, keys["bob"].public_key

    def pay(sender: str, to: bytes, amount: int, e2e: str) -> int:
        document = clients[sender].send(
            "payments",
            "transfer",
            {"to": to, "currency": "SGD", "amount": amount, "end_to_end_id": e2e},
            keys_of[sender],
            wait=True,
            timeout_ms=90_000,
        )
        assert document["status"] == "committed", document
        assert isinstance(document["receipt"], dict)
        assert document["receipt"]["status"] == "ok", document
        height = document["height"]
        assert isinstance(height, int)
        return height

    with trio.fail_after(DEADLINE_S * 3):
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.Node(load_home(info.homes[0])).run)
            # Following alice's payments from the next block, before she pays.
            next_height = await call(lambda: int(str(reader.status()["height"]))) + 1
            live: list[StreamEvent] = []

            def first_live_payment() -> None:
                stream = clients["alice"].events(
                    start=next_height, app="payments", account=alice, reconnect=False
                )
                try:
                    for item in stream:
                        if item.kind == "app_event":
                            live.append(item)
                            return
                finally:
                    stream.close()

            nursery.start_soon(functools.partial(trio.to_thread.run_sync, first_live_payment))
            first = await call(lambda: pay("alice", bob, 1250, "E2E-A1"))
            await wait_for(lambda: bool(live))
            assert live[0].data["kind"] == "payment"
            assert live[0].data["height"] == first
            large_height = await call(lambda: pay("lion-bank", alice, LARGE, "BIG-1"))
            freeze = await call(
                lambda: clients["lion-bank"].send(
                    "payments",
                    "set_controls",
                    {"account": bob, "currency": "SGD", "frozen": True},
                    keys_of["lion-bank"],
                    wait=True,
                )
            )
            assert isinstance(freeze["receipt"], dict)
            assert freeze["receipt"]["status"] == "ok"
            for index in range(3):
                await call(
                    functools.partial(pay, "alice", keys["chen"].public_key, 10, f"V-{index}")
                )
            expires_ms = await call(reader.latest_block_time_ms) + 1500
            offer = await call(
                lambda: clients["harbour-bank"].send(
                    "payments",
                    "offer_fx",
                    {
                        "sell_currency": "HKD",
                        "sell_amount": 58_000,
                        "buy_currency": "SGD",
                        "buy_amount": 10_000,
                        "expires_ms": expires_ms,
                    },
                    keys_of["harbour-bank"],
                    wait=True,
                )
            )
            assert isinstance(offer["receipt"], dict)
            assert offer["receipt"]["status"] == "ok"
            await wait_for(lambda: reader.latest_block_time_ms() > expires_ms)
            top = await call(lambda: int(str(reader.status()["height"])))

            # Alice's payments, as alice sees them: hers only, in order.
            mine = await call(
                lambda: collect(
                    clients["alice"],
                    start=1,
                    until=top,
                    app="payments",
                    kinds=("payment",),
                    account=alice,
                )
            )
            events = [item for item in mine if item.kind == "app_event"]
            assert [item.data["height"] for item in events][:2] == [first, large_height]
            assert len(events) == 5  # to bob, from lion-bank, three to chen
            assert all(alice.hex() in json.dumps(item.data["attributes"]) for item in events)
            assert mine[0].kind == "scope"
            assert mine[-1].kind == "end"

            # Bob may not follow alice's account: refused up front, naming the rule.
            with pytest.raises(ApiError) as refused:
                await call(lambda: collect(clients["bob"], start=1, until=top, account=alice))
            assert refused.value.status == 403
            assert refused.value.rule.startswith("/events?account: an account's data")

            # Unsigned: blocks, and no account's receipts or events.
            public = await call(lambda: collect(anonymous, start=1, until=top))
            kinds = {item.kind for item in public}
            assert "block" in kinds
            assert not any(
                item.kind == "receipt"
                or (
                    item.kind == "app_event"
                    and item.data["app"] == "payments"
                    and item.data["kind"] == "payment"
                )
                for item in public
            )

            # Resumable: after an item id, the stream goes on with the next item.
            everything = await call(lambda: collect(reader, start=1, until=top))
            numbered = [item for item in everything if item.id]
            middle = numbered[len(numbered) // 2]
            resumed = await call(lambda: collect(reader, after=middle.id, until=top))
            resumed_ids = [item.id for item in resumed if item.id]
            assert resumed_ids == [item.id for item in numbered[len(numbered) // 2 + 1 :]]

            # The monitor over the same blocks, as a node (it reads everything).
            rules = MonitorRules(velocity_payments=3, velocity_window_s=3600)
            monitor = Monitor(rules, reader.query)
            alerts = await call(
                lambda: [alert for item in everything for alert in monitor.feed(item)]
            )
            by_rule = {alert.rule: alert for alert in alerts}
            assert by_rule["large_payment"].height == large_height  # within one block
            assert by_rule["large_payment"].details["amount"] == LARGE
            assert sum(alert.rule == "large_payment" for alert in alerts) == 1
            assert by_rule["account_frozen"].details["account"] == bob.hex()
            assert by_rule["velocity"].details["from"] == alice.hex()
            # The chain released the expired offer itself (the block that passed its expiry
            # returned the escrow), so the rule watching for a locked one stays silent.
            assert isinstance(offer["receipt"]["result"], dict)
            offer_id = str(offer["receipt"]["result"]["offer"])
            released = await call(lambda: reader.query("payments", "offer", {"id": offer_id}))
            assert isinstance(released, dict)
            assert released["status"] == "expired"
            assert "fx_expired_locked" not in by_rule

            # The release itself is on the stream: an end-of-block event (no transaction, no
            # sender) that the maker reads and an unrelated customer does not.
            def releases(client: Client) -> list[tuple[object, object, object]]:
                items = collect(client, start=1, until=top, app="payments", kinds=("fx_cancelled",))
                found: list[tuple[object, object, object]] = []
                for item in items:
                    if item.kind != "app_event":
                        continue
                    attributes = item.data["attributes"]
                    assert isinstance(attributes, dict)
                    found.append(
                        (item.data["end_block"], attributes["offer"], attributes["status"])
                    )
                return found

            assert await call(lambda: releases(clients["harbour-bank"])) == [
                (True, offer_id, "expired")
            ]
            assert await call(lambda: releases(reader)) == [(True, offer_id, "expired")]
            assert await call(lambda: releases(clients["bob"])) == []

            # The same through the command line.
            runner = CliRunner()
            printed = await call(
                lambda: runner.invoke(
                    main,
                    [
                        *("events", "--node", str(info.directory), "--app", "payments"),
                        *("--from", "1", "--account", str(keys["alice"].key_file)),
                        *("--key", str(keys["alice"].key_file)),
                    ],
                )
            )
            assert printed.exit_code == 0, printed.output
            assert printed.output.count("payments.payment") == 5
            assert "from=lion-bank" in printed.output  # party names with a testnet --node
            alerted = await call(
                lambda: runner.invoke(
                    main,
                    [
                        *("monitor", "--node", address, "--from", "1", "--until", str(top)),
                        *("--key", str(info.homes[0] / "node_key.json"), "--json"),
                    ],
                )
            )
            assert alerted.exit_code == 0, alerted.output
            printed_rules = [json.loads(line)["rule"] for line in alerted.output.splitlines()]
            assert "large_payment" in printed_rules
            assert "account_frozen" in printed_rules

            # Live: `suanpan monitor` following the chain (no --until) alerts on a large payment
            # planted after it started, at the payment's own height.
            follow_from = await call(lambda: int(str(reader.status()["height"]))) + 1

            def follow_and_plant() -> tuple[int, dict[str, object]]:
                follower = subprocess.Popen(
                    [
                        *(sys.executable, "-m", "node", "monitor", "--node", address),
                        *("--json", "--from", str(follow_from)),
                        *("--key", str(info.homes[0] / "node_key.json")),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
                try:
                    planted = pay("lion-bank", alice, LARGE, "BIG-2")
                    return planted, first_alert(follower, "large_payment")
                finally:
                    follower.kill()
                    follower.communicate(timeout=30)

            planted, alert = await call(follow_and_plant)
            assert alert["height"] == planted

            # Receipts, nonces and block bodies follow the same rules.
            hashes = {}
            for item in everything:
                if item.kind == "receipt" and item.data["operation"] == "transfer":
                    hashes[int(str(item.data["height"]))] = str(item.data["hash"])
            to_bob = hashes[first]
            for name in ("alice", "bob", "lion-bank", "regulator"):
                document = await call(functools.partial(clients[name].transaction, to_bob))
                assert document["status"] == "committed", name
            for name in ("chen", "pearl-bank"):
                with pytest.raises(ApiError) as denied:
                    await call(functools.partial(clients[name].transaction, to_bob))
                assert denied.value.status == 403
                assert denied.value.rule.startswith("receipt: a transaction's receipt")
            with pytest.raises(ApiError) as denied:
                await call(functools.partial(anonymous.transaction, to_bob))
            assert denied.value.status == 403
            assert await call(functools.partial(clients["alice"].next_nonce, alice)) == 4
            with pytest.raises(ApiError) as denied:
                await call(functools.partial(clients["bob"].next_nonce, alice))
            assert denied.value.status == 403
            with pytest.raises(ApiError) as denied:
                await call(functools.partial(clients["alice"].block, first, transactions=True))
            assert denied.value.rule.startswith("block transaction bodies")
            body = await call(functools.partial(reader.block, first, transactions=True))
            assert body["transactions"]

            # Health, status and metrics.
            health = await call(reader.health)
            assert health["ok"] is True
            assert health["problems"] == []
            status = await call(reader.status)
            assert status["version"]
            assert isinstance(status["last_block_time_ms"], int)
            metrics = await call(reader.metrics)
            for name in (
                "process_open_fds",
                "process_resident_memory_bytes",
                "process_cpu_seconds_total",
                "suanpan_dropped_gossip_total",
                "suanpan_rejected_frames_total",
                "suanpan_handshake_failures_total",
                "suanpan_api_responses_total",
                "suanpan_api_reads_denied_total",
            ):
                assert name in metrics, name
            assert "# TYPE suanpan_dropped_gossip_total counter" in metrics
            nursery.cancel_scope.cancel()
    for client in (*clients.values(), reader, anonymous):
        client.close()
    # The offline audit replays every block, the offer's release included, and finds the
    # stored end-of-block events equal to what the apps produce again.
    report = audit_home(info.homes[0])
    assert report.ok, report.failure


async def test_healthz_says_503_with_the_reason_when_the_node_is_isolated_and_stale(
    tmp_path: Path,
) -> None:
    info = create_testnet(tmp_path / "net", 2, chain_id="lonely-net")
    home = load_home(info.homes[0])
    config = home.config.with_changes("rpc", healthz_block_age_ms_max=1000)
    write_config(info.homes[0], config)
    host, _, port = info.api_addresses[0].rpartition(":")
    client = Client(info.api_addresses[0], timeout_s=30)

    def problems() -> list[str]:
        status, body = client.request_raw("GET", "/healthz")
        document = json.loads(body)
        return [str(problem) for problem in document["problems"]] if status == 503 else []

    def head() -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request("HEAD", "/healthz")
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.Node(load_home(info.homes[0])).run)
            await wait_for(lambda: any("stale" in problem for problem in problems()))
            reasons = await call(problems)
            assert any(reason.startswith("isolated: no peer connected") for reason in reasons)
            status, body = await call(head)
            assert status == 503
            assert body == b""
            nursery.cancel_scope.cancel()
    client.close()
