"""``suanpan bench``: throughput and latency of a real testnet, catch-up, and the simulator's
scaling table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from node.jsonvalue import JsonType

__all__ = ["bench"]


def _rate(value: str) -> float | None:
    if value == "max":
        return None
    try:
        rate = float(value)
    except ValueError:
        raise click.BadParameter("use a number of transactions per second, or max") from None
    if not 1 <= rate <= 1_000_000:
        raise click.BadParameter("use 1..1000000 tx/s, or max")
    return rate


def _figure(value: JsonType, digits: int = 0) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


@click.group(invoke_without_command=True)
@click.option("--validators", "-n", default=4, show_default=True, type=click.IntRange(1, 16))
@click.option("--duration", default=20.0, show_default=True, type=click.FloatRange(2, 600))
@click.option("--rate", default="4000", show_default=True, help="tx/s offered, or max")
@click.option(
    "--accounts",
    default=200,
    show_default=True,
    type=click.IntRange(1, 5000),
    help="funded payment accounts per validator bank",
)
@click.option(
    "--p99-max",
    default=1000.0,
    show_default=True,
    type=click.FloatRange(1),
    help="latency bound (ms) a --rate max step must keep",
)
@click.option("--keep", type=click.Path(path_type=Path), help="keep the testnet in this directory")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.pass_context
def bench(
    context: click.Context,
    validators: int,
    duration: float,
    rate: str,
    accounts: int,
    p99_max: float,
    keep: Path | None,
    as_json: bool,
) -> None:
    """Benchmarks. Without a subcommand: committed tx/s and submit-to-commit latency of a real
    multi-process testnet under pre-signed payments, against the ed25519 ceiling."""
    if context.invoked_subcommand is not None:
        return
    from node.bench.throughput import BenchOptions, run_throughput

    options = BenchOptions(
        validators=validators,
        duration_s=duration,
        rate=_rate(rate),
        accounts_per_bank=accounts,
        p99_ms_max=p99_max,
        keep_directory=keep,
    )
    report = run_throughput(options, progress=not as_json)
    document = report.to_json()
    if as_json:
        click.echo(json.dumps(document))
        return
    _print_report(document)


def _print_report(d: dict[str, JsonType]) -> None:
    click.echo(
        f"validators {d['validators']}, workload {d['workload']},"
        f" offered {_figure(d['rate_offered'])} tx/s for {_figure(d['duration_s'])} s"
        f" (load average before: {d['load_average_before']})"
    )
    click.echo(
        f"  committed        {_figure(d['tx_per_s'], 1)} tx/s"
        f"   ({_figure(d['committed'])} of {_figure(d['submitted'])} submitted committed,"
        f" refused {d['rejected']}, transport errors {d['transport_errors']})"
    )
    click.echo(
        f"  latency ms       p50 {_figure(d['latency_ms_p50'])}  p95 {_figure(d['latency_ms_p95'])}"
        f"  p99 {_figure(d['latency_ms_p99'])}  max {_figure(d['latency_ms_max'])}"
    )
    click.echo(
        f"  blocks           {_figure(d['blocks_per_s'], 2)} /s, {_figure(d['block_size_avg'], 1)}"
        " transactions per block"
    )
    click.echo(
        f"  CPU s per node   {d['cpu_s_per_node']}  (% of one core {d['cpu_percent_per_node']})"
    )
    click.echo(f"  peak RSS MiB     {d['rss_peak_mb_per_node']}")
    click.echo(f"  submitter CPU s  {d['submitter_cpu_s']}")
    click.echo(
        f"  ed25519          {_figure(d['ed25519_verify_per_s_per_core'])} verifications/s per core"
        f" x {d['cores']} cores / {d['validators']} validators ="
        f" ceiling {_figure(d['ceiling_tx_per_s'])} tx/s"
    )
    click.echo(f"  ratio            {d['ratio']} of the ceiling")
    if d.get("agreement_problems"):
        click.echo(f"  DISAGREEMENT     {d['agreement_problems']}")
    if d.get("last_error"):
        click.echo(f"  last refusal     {d['last_error']}")
