"""The Prometheus alerting rules and the Grafana dashboard for a Suanpan network, as data.

The files shipped next to this module (``prometheus-alerts.yml``, ``grafana-dashboard.json``)
are rendered from the data here (``render_alert_rules``, ``render_dashboard``; a test checks
they match, and that every metric an expression names is one a node or ``suanpan monitor``
exports). The alert rules file is JSON, which is YAML: Prometheus reads it as it is.
``scrape_config`` writes the Prometheus configuration for a local testnet's nodes and monitor.

Thresholds suit the 4-validator testnet (``suanpan testnet up --validators 4``): three peers
each, a block at least every second, a 20,000-transaction mempool.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from node.jsonvalue import JsonType

__all__ = [
    "ALERT_RULES_FILE",
    "DASHBOARD_FILE",
    "alert_rules",
    "dashboard",
    "render_alert_rules",
    "render_dashboard",
    "scrape_config",
    "shipped",
]

ALERT_RULES_FILE: Final = "prometheus-alerts.yml"
DASHBOARD_FILE: Final = "grafana-dashboard.json"
NODE_JOB: Final = "suanpan"
MONITOR_JOB: Final = "suanpan-monitor"
_HEADER: Final = "# Suanpan alerting rules. JSON is YAML: Prometheus reads this file as it is.\n"


def _rule(
    name: str, expression: str, duration: str, severity: str, summary: str
) -> dict[str, JsonType]:
    return {
        "alert": name,
        "expr": expression,
        "for": duration,
        "labels": {"severity": severity},
        "annotations": {"summary": summary},
    }


def alert_rules(validators: int = 4) -> dict[str, JsonType]:
    """The alerting rules for a network of ``validators`` nodes."""
    peers = validators - 1
    nodes: list[JsonType] = [
        _rule(
            "SuanpanNodeDown",
            f'up{{job="{NODE_JOB}"}} == 0',
            "1m",
            "critical",
            "{{ $labels.instance }} does not answer /metrics",
        ),
        _rule(
            "SuanpanNodeStale",
            "time() - suanpan_last_block_timestamp_seconds > 30",
            "1m",
            "critical",
            "{{ $labels.instance }} committed no block for 30 s (its /healthz says why)",
        ),
        _rule(
            "SuanpanNodeBehind",
            "scalar(max(suanpan_height)) - suanpan_height > 10",
            "2m",
            "warning",
            "{{ $labels.instance }} is more than 10 blocks behind the highest node",
        ),
        _rule(
            "SuanpanPeersMissing",
            f"suanpan_peers < {peers}",
            "2m",
            "warning",
            f"{{{{ $labels.instance }}}} is connected to fewer than {peers} peers",
        ),
        _rule(
            "SuanpanViewChanges",
            "increase(suanpan_view_changes_total[5m]) > 5",
            "0m",
            "warning",
            "{{ $labels.instance }} entered more than 5 view changes in 5 minutes",
        ),
        _rule(
            "SuanpanEvidence",
            "increase(suanpan_evidence_total[10m]) > 0",
            "0m",
            "critical",
            "a validator signed conflicting votes (see /evidence on {{ $labels.instance }})",
        ),
        _rule(
            "SuanpanDiskFilling",
            "suanpan_store_disk_free_bytes / suanpan_store_disk_size_bytes < 0.1",
            "5m",
            "warning",
            "the disk that holds the store of {{ $labels.instance }} has less than 10 % free"
            " (a full disk stops the node)",
        ),
        _rule(
            "SuanpanDiskNearlyFull",
            "suanpan_store_disk_free_bytes < 1073741824",
            "1m",
            "critical",
            "the disk that holds the store of {{ $labels.instance }} has less than 1 GiB free:"
            " a Merkle tree write takes megabytes at once, and a full disk stops the node",
        ),
        _rule(
            "SuanpanApiCertificateExpiring",
            "suanpan_api_tls_certificate_expiry_timestamp_seconds > 0"
            " and suanpan_api_tls_certificate_expiry_timestamp_seconds - time() < 14 * 86400",
            "1h",
            "warning",
            "the API certificate of {{ $labels.instance }} expires within 14 days: renew it"
            " (replace the files, then SIGHUP the node)",
        ),
        _rule(
            "SuanpanStoreDamaged",
            "suanpan_store_damaged == 1",
            "0m",
            "critical",
            "a read met damage in the store of {{ $labels.instance }} (log event store_damaged):"
            " restore it from a backup or give the node a fresh store",
        ),
        _rule(
            "SuanpanMempoolNearlyFull",
            "suanpan_mempool_transactions > 16000",
            "1m",
            "warning",
            "{{ $labels.instance }} holds over 80 % of its mempool",
        ),
        _rule(
            "SuanpanVoteWritesSlow",
            'rate(suanpan_consensus_wait_seconds_total{wait="vote_persist"}[5m])'
            ' / rate(suanpan_consensus_waits_total{wait="vote_persist"}[5m]) > 0.1',
            "5m",
            "warning",
            "{{ $labels.instance }} takes over 100 ms on average to write and sync a vote "
            "(a slow or failing disk slows every round it votes in)",
        ),
        _rule(
            "SuanpanHandshakeFailures",
            "sum by (instance) (rate(suanpan_handshake_failures_total[5m])) > 1",
            "5m",
            "warning",
            "{{ $labels.instance }} refuses more than one peer handshake a second",
        ),
        _rule(
            "SuanpanApiRefusals",
            "sum by (instance) (rate(suanpan_api_refused_total[5m])) > 10",
            "5m",
            "warning",
            "{{ $labels.instance }} refuses API clients over their limits (a client floods it)",
        ),
        _rule(
            "SuanpanApiAuthenticationFailures",
            "sum by (instance) (rate(suanpan_api_authentication_failures_total[5m])) > 1",
            "5m",
            "warning",
            "{{ $labels.instance }} refuses signed requests (bad signatures, replays, clocks)",
        ),
        _rule(
            "SuanpanApiReadsDenied",
            "rate(suanpan_api_reads_denied_total[5m]) > 1",
            "5m",
            "warning",
            "{{ $labels.instance }} denies reads its rules forbid: someone is probing",
        ),
        _rule(
            "SuanpanFileDescriptors",
            "process_open_fds / process_max_fds > 0.8",
            "5m",
            "warning",
            "{{ $labels.instance }} uses over 80 % of its file descriptors",
        ),
    ]
    monitor: list[JsonType] = [
        _rule(
            "SuanpanMonitorAlert",
            "increase(suanpan_monitor_alerts_total[5m]) > 0",
            "0m",
            "warning",
            "suanpan monitor raised {{ $labels.rule }} alerts (see its output)",
        ),
        _rule(
            "SuanpanMonitorDown",
            f'up{{job="{MONITOR_JOB}"}} == 0',
            "2m",
            "warning",
            "suanpan monitor does not answer /metrics",
        ),
    ]
    return {
        "groups": [
            {"name": "suanpan-nodes", "rules": nodes},
            {"name": "suanpan-monitor", "rules": monitor},
        ]
    }


def _panel(
    title: str, expressions: Sequence[tuple[str, str]], x: int, y: int, unit: str = "short"
) -> dict[str, JsonType]:
    return {
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": 12, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"expr": expression, "legendFormat": legend, "refId": chr(ord("A") + index)}
            for index, (expression, legend) in enumerate(expressions)
        ],
    }


def dashboard() -> dict[str, JsonType]:
    """The Grafana dashboard: chain progress, throughput, peers, API and monitor alerts."""
    node = "{{instance}}"
    panels: list[JsonType] = [
        _panel("Height", [("suanpan_height", node)], 0, 0),
        _panel(
            "Committed transactions per second",
            [("rate(suanpan_committed_transactions_total[1m])", node)],
            12,
            0,
            "ops",
        ),
        _panel(
            "Seconds since the last block",
            [("time() - suanpan_last_block_timestamp_seconds", node)],
            0,
            8,
            "s",
        ),
        _panel(
            "Commit latency (p50, p95)",
            [
                (
                    "histogram_quantile(0.5, rate(suanpan_commit_latency_seconds_bucket[1m]))",
                    f"p50 {node}",
                ),
                (
                    "histogram_quantile(0.95, rate(suanpan_commit_latency_seconds_bucket[1m]))",
                    f"p95 {node}",
                ),
            ],
            12,
            8,
            "s",
        ),
        _panel("Peers", [("suanpan_peers", node)], 0, 16),
        _panel(
            "View and view changes",
            [
                ("suanpan_view", f"view {node}"),
                ("increase(suanpan_view_changes_total[5m])", f"changes {node}"),
            ],
            12,
            16,
        ),
        _panel("Mempool transactions", [("suanpan_mempool_transactions", node)], 0, 24),
        _panel(
            "Peer handshakes refused per second",
            [
                (
                    "sum by (instance, reason) (rate(suanpan_handshake_failures_total[5m]))",
                    "{{reason}}",
                )
            ],
            12,
            24,
            "ops",
        ),
        _panel(
            "API responses per second",
            [("sum by (status) (rate(suanpan_api_responses_total[1m]))", "{{status}}")],
            0,
            32,
            "ops",
        ),
        _panel(
            "API refusals, auth failures, denied reads",
            [
                ("sum by (reason) (rate(suanpan_api_refused_total[5m]))", "refused {{reason}}"),
                (
                    "sum by (reason) (rate(suanpan_api_authentication_failures_total[5m]))",
                    "auth {{reason}}",
                ),
                ("sum(rate(suanpan_api_reads_denied_total[5m]))", "denied reads"),
            ],
            12,
            32,
            "ops",
        ),
        _panel(
            "CPU and memory",
            [
                ("rate(process_cpu_seconds_total[1m])", f"cpu {node}"),
                ("process_resident_memory_bytes / 2^30", f"RSS GiB {node}"),
                ("suanpan_memory_anonymous_bytes / 2^30", f"heap GiB {node}"),
            ],
            0,
            40,
        ),
        _panel("Open file descriptors", [("process_open_fds", node)], 12, 40),
        _panel(
            "Monitor alerts (5 min)",
            [("increase(suanpan_monitor_alerts_total[5m])", "{{rule}}")],
            0,
            48,
        ),
        _panel("Monitor height", [("suanpan_monitor_height", "monitor")], 12, 48),
        _panel(
            "Store file and free disk (GiB)",
            [
                ("suanpan_store_file_bytes / 2^30", f"store {node}"),
                ("suanpan_store_disk_free_bytes / 2^30", f"free {node}"),
            ],
            0,
            56,
        ),
    ]
    return {
        "title": "Suanpan testnet",
        "uid": "suanpan-testnet",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "5s",
        "time": {"from": "now-30m", "to": "now"},
        "tags": ["suanpan"],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                }
            ]
        },
        "panels": panels,
    }


def render_alert_rules(validators: int = 4) -> str:
    """The text of ``prometheus-alerts.yml``."""
    return _HEADER + json.dumps(alert_rules(validators), indent=2) + "\n"


def render_dashboard() -> str:
    """The text of ``grafana-dashboard.json``."""
    return json.dumps(dashboard(), indent=2) + "\n"


def shipped(name: str) -> Path:
    """The path of a shipped file (``ALERT_RULES_FILE`` or ``DASHBOARD_FILE``)."""
    return Path(__file__).resolve().parent / name


def scrape_config(
    node_addresses: Sequence[str], monitor_address: str | None, rules_file: str
) -> str:
    """A Prometheus configuration scraping the nodes (and the monitor) every 5 s."""
    jobs: list[JsonType] = [
        {
            "job_name": NODE_JOB,
            "static_configs": [{"targets": list(node_addresses)}],
        }
    ]
    if monitor_address is not None:
        jobs.append({"job_name": MONITOR_JOB, "static_configs": [{"targets": [monitor_address]}]})
    document: dict[str, JsonType] = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [rules_file],
        "scrape_configs": jobs,
    }
    return (
        "# Prometheus configuration for a Suanpan testnet (JSON is YAML).\n"
        + json.dumps(document, indent=2)
        + "\n"
    )
