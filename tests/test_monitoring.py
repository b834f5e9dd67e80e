"""The monitor's rules on hand-made streams, its rules file, and the shipped Prometheus
alerting rules and Grafana dashboard: they are what the data renders, they parse, and every
metric they name is one a running node or the monitor exports."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner
from prometheus_client import generate_latest

from consensus.codec import Value
from node import runtime
from node.cli import main
from node.cli.monitor import _Metrics
from node.client.client import Client, StreamEvent
from node.home import load_home
from node.jsonvalue import JsonType, to_json
from node.monitoring.dashboards import (
    ALERT_RULES_FILE,
    DASHBOARD_FILE,
    alert_rules,
    dashboard,
    render_alert_rules,
    render_dashboard,
    shipped,
)
from node.monitoring.engine import Monitor, MonitorRules, RulesError, load_rules
from node.testnet.testnet import create_testnet

DEBTOR = b"\xd0" * 32
BANK_A, BANK_B = b"\xa0" * 32, b"\xb0" * 32
ALICE, BOB = b"\x01" * 32, b"\x02" * 32


def event(
    app: str, kind: str, attributes: Mapping[str, Value], height: int, time_ms: int
) -> StreamEvent:
    data: dict[str, JsonType] = {
        "height": height,
        "time_ms": time_ms,
        "app": app,
        "kind": kind,
        "attributes": to_json(dict(attributes)),
        "hash": "00" * 32,
    }
    return StreamEvent("app_event", f"{height}-1", data)


def receivables(app: str, path: str, arguments: Mapping[str, Value]) -> Value:
    assert (app, path) == ("scf", "receivable")
    return {"id": arguments["id"], "debtor": DEBTOR, "holder": BANK_A}


def financed(monitor: Monitor, bank: bytes, height: int) -> list[str]:
    item = event("scf", "receivable_financed", {"id": f"rc-{height}", "bank": bank}, height, 0)
    return [alert.rule for alert in monitor.feed(item)]


def test_a_bank_new_to_a_debtor_is_unusual_once_the_debtor_has_history() -> None:
    monitor = Monitor(MonitorRules(financier_history_min=3), receivables)
    assert [financed(monitor, BANK_A, height) for height in (1, 2, 3)] == [[], [], []]
    assert financed(monitor, BANK_B, 4) == ["unusual_financier"]
    assert financed(monitor, BANK_B, 5) == []  # no longer new


def test_expected_financiers_flag_any_other_bank_at_once() -> None:
    rules = MonitorRules(expected_financiers={DEBTOR: frozenset({BANK_A})})
    monitor = Monitor(rules, receivables)
    assert financed(monitor, BANK_A, 1) == []
    assert financed(monitor, BANK_B, 2) == ["unusual_financier"]


def payment(source: bytes, amount: int, time_ms: int, height: int = 1) -> StreamEvent:
    attributes: dict[str, Value] = {
        "from": source,
        "to": BOB,
        "currency": "SGD",
        "amount": amount,
        "payment": height,
    }
    return event("payments", "payment", attributes, height, time_ms)


def no_queries(app: str, path: str, arguments: Mapping[str, Value]) -> Value:
    raise AssertionError(f"unexpected query {app}.{path}")


def test_velocity_alerts_once_per_burst_in_block_time() -> None:
    monitor = Monitor(MonitorRules(velocity_payments=3, velocity_window_s=10), no_queries)
    rules = [
        [alert.rule for alert in monitor.feed(payment(ALICE, 1, time_ms))]
        for time_ms in (0, 1000, 2000, 3000, 30_000, 31_000, 32_000)
    ]
    assert rules == [[], [], ["velocity"], [], [], [], ["velocity"]]


def test_large_payment_thresholds_per_currency_and_default() -> None:
    rules = MonitorRules(large_payment_thresholds={"SGD": 500, "*": 10})
    monitor = Monitor(rules, no_queries)
    assert monitor.feed(payment(ALICE, 499, 0)) == []
    [alert] = monitor.feed(payment(ALICE, 500, 0, height=7))
    assert (alert.rule, alert.height, alert.details["threshold"]) == ("large_payment", 7, 500)


def test_an_expired_offer_still_open_alerts_and_a_settled_one_does_not() -> None:
    offers: dict[str, dict[str, Value]] = {
        "fx-open": {
            "id": "fx-open",
            "maker": ALICE,
            "status": "open",
            "expires_ms": 5000,
            "sell_amount": 58_000,
            "sell_currency": "HKD",
        },
        "fx-taken": {
            "id": "fx-taken",
            "maker": BOB,
            "status": "open",
            "expires_ms": 5000,
            "sell_amount": 1,
            "sell_currency": "HKD",
        },
    }

    def query(app: str, path: str, arguments: Mapping[str, Value]) -> Value:
        if path == "offers":
            return tuple(offers.values())
        return offers.get(str(arguments["id"]))

    monitor = Monitor(MonitorRules(), query)
    assert monitor.seed_open_offers() == 2
    monitor.feed(event("payments", "fx_settled", {"offer": "fx-taken"}, 2, 4000))
    offers["fx-taken"]["status"] = "settled"
    block = StreamEvent("block", "3-0", {"height": 3, "time_ms": 4999})
    assert monitor.feed(block) == []
    [alert] = monitor.feed(StreamEvent("block", "4-0", {"height": 4, "time_ms": 5000}))
    assert alert.rule == "fx_expired_locked"
    assert alert.details["offer"] == "fx-open"
    assert monitor.feed(StreamEvent("block", "5-0", {"height": 5, "time_ms": 9000})) == []


def test_rules_files_are_checked_key_by_key(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        'enabled = ["large_payment", "velocity"]\nvelocity_payments = 5\n'
        '[large_payment_thresholds]\nSGD = 100\n"*" = 1000\n'
        f'[expected_financiers]\n"{DEBTOR.hex()}" = ["{BANK_A.hex()}"]\n'
    )
    rules = load_rules(path)
    assert rules.enabled == frozenset({"large_payment", "velocity"})
    assert rules.large_payment_thresholds == {"SGD": 100, "*": 1000}
    assert rules.expected_financiers == {DEBTOR: frozenset({BANK_A})}
    for text, problem in (
        ("velocity_payment = 5\n", "unknown key"),
        ("velocity_payments = 0\n", "velocity_payments must be a positive integer"),
        ('enabled = ["everything"]\n', "enabled must list rules"),
        ("[large_payment_thresholds]\nSGD = -1\n", "large_payment_thresholds.SGD"),
        ('[expected_financiers]\n"ab" = ["cd"]\n', "not a 64-hex-digit public key"),
    ):
        path.write_text(text)
        with pytest.raises(RulesError, match=problem):
            load_rules(path)


# --------------------------------------------------------------------------- shipped files


def test_the_shipped_files_are_the_rendered_data_and_parse() -> None:
    rules_text = shipped(ALERT_RULES_FILE).read_text("utf-8")
    assert rules_text == render_alert_rules(), "regenerate with node.monitoring.dashboards"
    assert shipped(DASHBOARD_FILE).read_text("utf-8") == render_dashboard()
    body = "".join(line for line in rules_text.splitlines(True) if not line.startswith("#"))
    parsed = json.loads(body)
    assert parsed == alert_rules()
    for group in parsed["groups"]:
        for rule in group["rules"]:
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert rule["expr"].count("(") == rule["expr"].count(")"), rule
    document = json.loads(shipped(DASHBOARD_FILE).read_text("utf-8"))
    assert document["uid"] == "suanpan-testnet"
    assert len({panel["title"] for panel in document["panels"]}) == len(document["panels"])
    for panel in document["panels"]:
        assert panel["targets"], panel["title"]


def expressions() -> list[str]:
    """Every PromQL expression of the rules and the dashboard (through JSON: plain data)."""
    rules = json.loads(json.dumps(alert_rules()))
    board = json.loads(json.dumps(dashboard()))
    found = [str(rule["expr"]) for group in rules["groups"] for rule in group["rules"]]
    found += [str(target["expr"]) for panel in board["panels"] for target in panel["targets"]]
    return found


def sample_names(exposition: str) -> set[str]:
    """Names of the samples, and of the declared families (a labelled counter nothing has
    counted yet has no sample, but it is exported)."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


async def test_every_metric_the_rules_and_dashboard_name_is_exported(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="metrics-net")
    client = Client(info.api_addresses[0], timeout_s=30)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.Node(load_home(info.homes[0])).run)
            exposition = await trio.to_thread.run_sync(client.metrics)
            nursery.cancel_scope.cancel()
    client.close()
    exported = sample_names(exposition)
    exported |= sample_names(generate_latest(_Metrics().registry).decode())
    named = {
        name
        for expression in expressions()
        for name in re.findall(r"\b(?:suanpan|process)_[a-z_]+\b", expression)
    }
    assert named, "no metric named"
    missing = sorted(name for name in named if name not in exported)
    assert not missing, f"not exported: {missing}"


def test_monitor_files_writes_a_scrape_config_for_the_testnet(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 4, chain_id="files-net")
    out = tmp_path / "monitoring"
    result = CliRunner().invoke(
        main, ["monitor", "files", "--testnet", str(info.directory), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    config = json.loads(
        "".join(
            line
            for line in (out / "prometheus.yml").read_text().splitlines(True)
            if not line.startswith("#")
        )
    )
    [nodes, monitor] = config["scrape_configs"]
    assert len(nodes["static_configs"][0]["targets"]) == 4
    assert monitor["static_configs"][0]["targets"] == ["127.0.0.1:9464"]
    assert config["rule_files"] == [ALERT_RULES_FILE]
    assert (out / ALERT_RULES_FILE).read_text() == render_alert_rules(4)
    assert (out / DASHBOARD_FILE).read_text() == render_dashboard()
