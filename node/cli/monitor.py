"""``suanpan monitor``: real-time rules over a node's event stream, alerts as lines and metrics.

    suanpan monitor --node D --key D/node0/node_key.json --metrics-address 127.0.0.1:9464
    suanpan monitor files --testnet D --out monitoring/   # Prometheus config, alerts, dashboard

The monitor follows ``GET /events`` (blocks and app events) from the next block, feeds every
item to the rule engine (``node.monitoring.engine``) and prints each alert as a line (``--json``:
one JSON document per alert, the same shape as the engine's ``Alert.to_json``). With
``--metrics-address`` it serves Prometheus metrics: ``suanpan_monitor_alerts_total{rule}``,
``suanpan_monitor_items_total{type}`` and ``suanpan_monitor_height``. The key decides what it
sees (the read rules apply): a node key or an auditor's sees everything.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from node.cli.app import api_client, key_option, node_address, resolve_node
from node.client.client import ApiError, Client
from node.config import parse_host_port
from node.home import load_home
from node.monitoring.dashboards import (
    ALERT_RULES_FILE,
    DASHBOARD_FILE,
    render_alert_rules,
    render_dashboard,
    scrape_config,
)
from node.monitoring.engine import RULES, Monitor, MonitorRules, RulesError, load_rules
from node.testnet.testnet import load_testnet

__all__ = ["monitor_group"]


class _Metrics:
    """What the monitor exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.alerts = Counter(
            "suanpan_monitor_alerts", "Alerts raised, by rule", ["rule"], registry=self.registry
        )
        self.items = Counter(
            "suanpan_monitor_items",
            "Stream items evaluated, by type",
            ["type"],
            registry=self.registry,
        )
        self.height = Gauge(
            "suanpan_monitor_height", "Height of the last block evaluated", registry=self.registry
        )
        for rule in RULES:
            self.alerts.labels(rule=rule)


def _run(
    client: Client,
    monitor: Monitor,
    metrics: _Metrics,
    *,
    start: int | None,
    until: int | None,
    as_json: bool,
) -> None:
    opened = monitor.seed_open_offers()
    if not as_json:
        click.echo(
            f"monitoring {client.host}:{client.port} from block {start or 'next'}"
            f" ({len(monitor.rules.enabled)} rules, {opened} open FX offers tracked)"
        )
    for item in client.events(
        start=start, until=until, types=("block", "app_event"), reconnect=until is None
    ):
        metrics.items.labels(type=item.kind).inc()
        for alert in monitor.feed(item):
            metrics.alerts.labels(rule=alert.rule).inc()
            if as_json:
                click.echo(json.dumps(alert.to_json()))
            else:
                click.echo(f"ALERT {alert.rule} at height {alert.height}: {alert.message}")
        metrics.height.set(monitor.height)


@click.group(
    "monitor",
    invoke_without_command=True,
    short_help="Alert on the event stream and export metrics.",
)
@click.option("--node", "node", help="API address (host:port) or a testnet directory.")
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Rules file (TOML); default: every rule with default thresholds.",
)
@click.option(
    "--large-payment",
    "large_payment",
    type=click.IntRange(min=1),
    help="Threshold of the large_payment rule in minor units, for every currency.",
)
@click.option("--from", "start", type=click.IntRange(min=1), help="First block (replays history).")
@click.option("--until", "until", type=click.IntRange(min=1), help="Stop after this block.")
@click.option("--metrics-address", "metrics_address", help="Serve Prometheus metrics here.")
@click.option("--json", "as_json", is_flag=True, help="Print alerts as JSON lines.")
@click.pass_context
def monitor_group(
    ctx: click.Context,
    node: str | None,
    rules_path: Path | None,
    large_payment: int | None,
    start: int | None,
    until: int | None,
    metrics_address: str | None,
    as_json: bool,
    key_path: str | None,
) -> None:
    """Evaluate monitoring rules over the event stream; print alerts, export metrics."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        rules = load_rules(rules_path) if rules_path is not None else MonitorRules()
    except RulesError as error:
        raise click.BadParameter(str(error), param_hint="--rules") from None
    if large_payment is not None:
        rules = MonitorRules(
            enabled=rules.enabled,
            large_payment_thresholds={"*": large_payment},
            velocity_payments=rules.velocity_payments,
            velocity_window_s=rules.velocity_window_s,
            financier_history_min=rules.financier_history_min,
            expected_financiers=rules.expected_financiers,
        )
    address, names = resolve_node(node_address(node))
    client = api_client(address, key_path, timeout_s=60.0)
    metrics = _Metrics()
    server = None
    if metrics_address is not None:
        try:
            listen = parse_host_port(metrics_address)
            server, _ = start_http_server(listen.port, listen.host, registry=metrics.registry)
        except (ValueError, OSError) as error:
            raise click.BadParameter(str(error), param_hint="--metrics-address") from None
    monitor = Monitor(rules, client.query, names)
    try:
        _run(client, monitor, metrics, start=start, until=until, as_json=as_json)
    except ApiError as error:
        code = f" [{error.code}]" if error.code else ""
        raise click.ClickException(f"{error}{code}") from None
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
        if server is not None:
            server.shutdown()


monitor_group.params.append(key_option())


@monitor_group.command("files", short_help="Write Prometheus, alerting and Grafana files.")
@click.option(
    "--testnet",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The testnet directory whose nodes Prometheus scrapes.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write prometheus.yml, the alert rules and the Grafana dashboard.",
)
@click.option(
    "--monitor-address",
    "monitor_address",
    default="127.0.0.1:9464",
    show_default=True,
    help="Where `suanpan monitor --metrics-address` serves (scraped too).",
)
def files_command(directory: Path, out: Path, monitor_address: str) -> None:
    """Write the Prometheus configuration, alerting rules and Grafana dashboard for a testnet."""
    try:
        info = load_testnet(directory)
    except (OSError, ValueError, KeyError) as error:
        raise click.ClickException(f"{directory}: not a testnet ({error})") from None
    targets = []
    for home in info.homes:
        metrics = load_home(home).config.metrics
        if metrics.enabled and metrics.listen_address is not None:
            targets.append(str(metrics.listen_address))
    out.mkdir(parents=True, exist_ok=True)
    (out / ALERT_RULES_FILE).write_text(render_alert_rules(len(info.homes)), "utf-8")
    (out / DASHBOARD_FILE).write_text(render_dashboard(), "utf-8")
    (out / "prometheus.yml").write_text(
        scrape_config(targets, monitor_address, ALERT_RULES_FILE), "utf-8"
    )
    click.echo(
        f"wrote {out}/prometheus.yml ({len(targets)} nodes), {ALERT_RULES_FILE}, {DASHBOARD_FILE}"
    )
    click.echo(f"run: prometheus --config.file={out}/prometheus.yml")
