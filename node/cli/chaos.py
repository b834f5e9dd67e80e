"""``suanpan testnet chaos``: perturb a real testnet under load and check it.

The run itself is ``node.testnet.chaos``; this module is only its command line."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from node.cli.signals import terminate_unwinds
from node.testnet.chaos import ChaosReport, run_chaos
from node.testnet.chaos_scenario import (
    WORKLOADS,
    ScenarioError,
    builtin_scenarios,
    load_scenario,
    random_scenario,
)
from node.testnet.netns import NetnsError, netns_unavailable_reason

__all__ = ["chaos_command"]


@click.command("chaos", short_help="Run a testnet under faults and check it.")
@click.option(
    "--scenario",
    "scenario_name",
    help="A scenario TOML file, or a shipped one by name"
    f" ({', '.join(builtin_scenarios())}). Default: a schedule drawn from --seed.",
)
@click.option("--validators", "-n", type=click.IntRange(1, 64), help="Testnet size (default 4).")
@click.option("--duration", type=click.FloatRange(min=1), help="Seconds of load and faults.")
@click.option("--load", "load_tps", type=click.FloatRange(min=0), help="Target tx/s.")
@click.option(
    "--workload",
    type=click.Choice(WORKLOADS),
    help="membership registrations, or the demo consortium's traffic over all four apps"
    " (default: the scenario's, else membership).",
)
@click.option("--seed", type=int, help="Seed of the random schedule (printed when not given).")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    help="Where to generate the testnet (default: a new temporary directory, kept for its logs).",
)
@click.option(
    "--netns",
    is_flag=True,
    help="Run each node in its own Linux network namespace, one veth pair per node pair, so"
    " links can be cut, cut one way and flapped (root only; random schedules then draw link"
    " faults too).",
)
@click.option(
    "--trust-certified",
    is_flag=True,
    help="Run every node with [consensus] trust_certified_blocks: a node catching up after a"
    " fault applies blocks on their commit certificates (default: the scenario's, else off).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def chaos_command(
    scenario_name: str | None,
    validators: int | None,
    duration: float | None,
    load_tps: float | None,
    workload: str | None,
    seed: int | None,
    directory: Path | None,
    netns: bool,
    trust_certified: bool,
    as_json: bool,
) -> None:
    """Run a testnet under load, kill/pause/restart/disconnect nodes on a schedule (with
    --netns also cut and flap the links between them; and run byzantine validators), then
    check agreement, durability, acknowledged transactions and evidence. Exits 1 on any
    violation."""
    console = Console(stderr=True)
    if netns:
        reason = netns_unavailable_reason()
        if reason is not None:
            raise click.ClickException(f"--netns is not possible here: {reason}")
    try:
        if scenario_name is not None:
            scenario = load_scenario(scenario_name).with_overrides(
                validators=validators,
                duration_s=duration,
                load_tps=load_tps,
                workload=workload,
                trust_certified_blocks=True if trust_certified else None,
            )
        else:
            if seed is None:
                seed = random.SystemRandom().randrange(2**31)
            scenario = random_scenario(
                seed,
                validators=4 if validators is None else validators,
                duration_s=60.0 if duration is None else duration,
                load_tps=100.0 if load_tps is None else load_tps,
                workload="membership" if workload is None else workload,
                links=netns,
            ).with_overrides(trust_certified_blocks=trust_certified)
    except ScenarioError as error:
        raise click.ClickException(str(error)) from None
    problems = scenario.problems()
    if scenario.needs_netns and not netns:
        problems.append(
            f"scenario {scenario.name!r} cuts links between nodes (cut/flap): add --netns"
        )
    if problems:
        raise click.ClickException("; ".join(problems))
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="suanpan-chaos-"))
    elif (directory / "testnet.json").exists():
        raise click.ClickException(f"{directory} already holds a testnet; choose another --dir")
    elif directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise click.ClickException(f"{directory} is not an empty directory; choose another --dir")
    console.print(
        f"chaos scenario {scenario.name!r}"
        + (
            f" (seed {scenario.seed}; rerun with --seed {scenario.seed})"
            if scenario.seed is not None
            else ""
        )
        + f" in {directory} (logs: node*/node.log)"
    )
    # SIGTERM unwinds like Ctrl-C, so the nodes are stopped and namespaces removed.
    with terminate_unwinds():
        try:
            report = run_chaos(scenario, directory, netns=netns, progress=console.print)
        except NetnsError as error:
            raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        _print_report(Console(), report)
    if not report.ok:
        raise SystemExit(1)


def _print_report(console: Console, report: ChaosReport) -> None:
    document = report.to_json()
    table = Table(title=f"perturbations ({report.scenario.name})")
    for column in (
        "at s",
        "node",
        "kind",
        "for s",
        "height then",
        "undone at s",
        "catch up to",
        "recovery s",
    ):
        text = column in ("node", "kind")
        table.add_column(column, justify="left" if text else "right", no_wrap=text)
    for fault in report.faults:
        item = fault.perturbation
        where = f"node{item.node}"
        if item.peer is not None:
            where += ("->" if item.direction == "node_to_peer" else "<->") + f"node{item.peer}"
        table.add_row(
            f"{item.at_s:g}",
            where,
            item.kind + (f" [red]({fault.error})[/red]" if fault.error else ""),
            f"{item.duration_s:g}",
            "" if fault.applied_height is None else str(fault.applied_height),
            "" if fault.undone_at_s is None else f"{fault.undone_at_s:.1f}",
            "" if fault.target_height is None else str(fault.target_height),
            "[red]never[/red]" if fault.recovery_s is None else f"{fault.recovery_s:.1f}",
        )
    console.print(table)
    heights = ", ".join(f"node{node.index} {node.height}" for node in report.nodes)
    console.print(f"heights: {heights}; target {report.target_height}")
    if report.convergence_s is not None:
        console.print(f"converged {report.convergence_s:.1f}s after the faults stopped")
    changes = report.view_changes
    console.print(
        f"view changes: {len(changes)} block(s) committed after a view change"
        + (f" (height:view {', '.join(f'{h}:{v}' for h, v in changes[:10])})" if changes else "")
    )
    console.print(
        f"transactions: {report.acknowledged} acknowledged as committed during the run,"
        f" {document['transactions']['committed']} on chain; load {report.load}"  # type: ignore[index,call-overload]
    )
    if report.scenario.trust_certified_blocks:
        trusted = ", ".join(
            f"node{node.index} {node.transactions_trusted}" for node in report.nodes
        )
        console.print(
            f"applied on commit certificates, signatures not checked (trust_certified_blocks):"
            f" {trusted}"
        )
    byzantine = document["byzantine"]
    for entry in byzantine if isinstance(byzantine, list) else []:
        console.print(f"byzantine: {json.dumps(entry)}")
    if report.netns is not None:
        left = report.netns.get("left_behind")
        console.print(
            f"network namespaces {report.netns.get('prefix')}-node*: "
            + (f"[red]left behind: {left}[/red]" if left else "removed, with every veth")
        )
    for violation in report.violations:
        console.print(f"[red]VIOLATION[/red] {violation.check}: {violation.detail}")
    if report.ok:
        console.print(f"[green]0 violations[/green] ({report.elapsed_s:.0f}s, {report.directory})")
