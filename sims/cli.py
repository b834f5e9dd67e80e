"""``suanpan sim``: run one seeded simulation, or sweep many seeds in parallel.

Registered on the ``suanpan`` command group in ``node/cli.py``.
"""

from __future__ import annotations

import json
import os
import sys

import click

from node.cli.progress import progress_bar
from sims.bugs import BUGS
from sims.config import DEFAULT_WORKLOAD, WORKLOADS, ConfigError, SimConfig, SimResult
from sims.faults import Behaviour
from sims.network import DelayDistribution, PartitionKind
from sims.simulation import run_simulation
from sims.sweep import run_sweep, sweep_config
from sims.twins import run_twins, scenario_count

__all__ = ["sim"]


def _print_result(result: SimResult) -> None:
    summary = result.describe()
    echo = click.echo
    status = "PASS" if result.ok else "FAIL"
    echo(
        f"{status}  seed {summary['seed']}  validators {summary['validators']}  "
        f"byzantine {summary['byzantine']}{'  twins' if result.config.twins else ''}"
        f"{'  adversary' if result.config.adversary else ''}"
        f"{'  bug ' + str(result.config.bug) if result.config.bug else ''}"
    )
    echo(f"  committed height   {summary['committed_height']} (target {summary['blocks_target']})")
    echo(f"  views              {summary['views']}")
    echo(
        f"  messages           {summary['messages']} sent, {summary['messages_delivered']} "
        f"delivered, {summary['bytes_delivered']} bytes"
    )
    echo(
        f"  per committed block {summary['messages_per_block']} messages, "
        f"{summary['bytes_per_block']} bytes"
    )
    faults = summary["faults"]
    assert isinstance(faults, dict)
    echo("  faults injected    " + ", ".join(f"{k} {v}" for k, v in faults.items()))
    echo(f"  fault parameters   {json.dumps(summary['parameters'], sort_keys=True)}")
    echo(
        f"  transactions       {summary['transactions_submitted']} submitted, "
        f"{summary['transactions_acknowledged']} acknowledged as committed "
        f"({summary['workload']} workload)"
    )
    rejections = summary["rejections"]
    assert isinstance(rejections, dict)
    echo(
        f"  receipts           {summary['receipts_ok']} ok, {summary['receipts_rejected']} "
        "rejected by the apps"
        + (" (" + ", ".join(f"{k} {v}" for k, v in rejections.items()) + ")" if rejections else "")
    )
    if result.moves:
        echo(
            "  adversary moves    " + ", ".join(f"{k} {v}" for k, v in sorted(result.moves.items()))
        )
    if result.drops:
        echo(
            "  honest drops       " + ", ".join(f"{k} {v}" for k, v in sorted(result.drops.items()))
        )
    echo(
        f"  checks             {summary['checks_run']} run, {len(result.violations)} violated"
        f" ({summary['sync_hints_checked']} sync hints)"
    )
    echo(f"  liveness           {summary['liveness']}")
    echo(
        f"  time               {summary['sim_time_ms']} ms simulated in "
        f"{summary['wall_time_s']} s wall ({summary['sim_to_wall_ratio']}x)"
    )
    echo(f"  trace digest       {summary['trace_digest']}")
    if not result.safety_claimed:
        echo("  safety NOT claimed: more byzantine validators than the protocol tolerates")
    for violation in result.violations:
        echo(
            f"  VIOLATION {violation.check} at {violation.time_ms} ms"
            f"{'' if violation.node is None else f' on node {violation.node}'}: "
            f"{violation.detail}"
        )
    if not result.ok:
        echo(f"  reproduce with: {result.config.command()}")


_RECONFIGURE_OPTION = click.option(
    "--reconfigure",
    is_flag=True,
    help="The validator set changes during the run by the banks' votes: spare nodes join,"
    " validators leave, keys rotate.",
)


@click.group(
    invoke_without_command=True,
    short_help="Run a deterministic fault-injection simulation.",
)
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True)
@click.option("--validators", type=int, default=4, show_default=True)
@click.option("--byzantine", type=int, default=0, show_default=True)
@click.option("--blocks", type=int, default=5, show_default=True, help="Heights to commit.")
@click.option("--bug", type=click.Choice(sorted(BUGS)), help="Switch a planted bug on.")
@click.option("--list-bugs", is_flag=True, help="List the planted bugs and exit.")
@click.option(
    "--bug-off",
    is_flag=True,
    help="Run --bug's scenario with the bug itself switched off (the checkers' control).",
)
@click.option("--twins", is_flag=True, help="Byzantine validators run as twins.")
@click.option(
    "--adversary",
    is_flag=True,
    help="The adversary drives the byzantine validators (sees all traffic, crafts any message).",
)
@_RECONFIGURE_OPTION
@click.option("--loss", type=click.IntRange(0, 30), help="Message loss percent.")
@click.option("--duplicate", type=click.IntRange(0, 50), help="Duplication percent.")
@click.option("--delay-min", type=click.IntRange(0, 10_000), help="Minimum delay (ms).")
@click.option("--delay-max", type=click.IntRange(0, 60_000), help="Maximum delay (ms).")
@click.option("--delay-distribution", type=click.Choice([d.value for d in DelayDistribution]))
@click.option("--reorder", type=click.IntRange(0, 100), help="Reordering percent.")
@click.option("--partitions", type=click.IntRange(0, 100), help="Partition chance per tick (%).")
@click.option(
    "--partition-kind",
    type=click.Choice([k.value for k in PartitionKind]),
    multiple=True,
    help="Partition shapes to draw (repeatable).",
)
@click.option("--partition-duration", type=click.IntRange(1, 600_000), help="Max length (ms).")
@click.option("--crashes", type=click.IntRange(0, 100), help="Crash chance per tick (%).")
@click.option("--restart-delay", type=click.IntRange(1, 600_000), help="Max downtime (ms).")
@click.option("--clock-skew", type=click.IntRange(0, 2_000), help="Max clock skew (ms).")
@click.option(
    "--behaviour",
    type=click.Choice([b.value for b in Behaviour if b is not Behaviour.TWIN]),
    multiple=True,
    help="Byzantine behaviour per byzantine validator (repeatable).",
)
@click.option(
    "--workload",
    type=click.Choice(WORKLOADS),
    default=DEFAULT_WORKLOAD,
    show_default=True,
    help="demo: the demo consortium's traffic over all four apps; membership: that app alone.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def sim(
    ctx: click.Context,
    seed: int,
    validators: int,
    byzantine: int,
    blocks: int,
    bug: str | None,
    list_bugs: bool,
    bug_off: bool,
    twins: bool,
    adversary: bool,
    reconfigure: bool,
    loss: int | None,
    duplicate: int | None,
    delay_min: int | None,
    delay_max: int | None,
    delay_distribution: str | None,
    reorder: int | None,
    partitions: int | None,
    partition_kind: tuple[str, ...],
    partition_duration: int | None,
    crashes: int | None,
    restart_delay: int | None,
    clock_skew: int | None,
    behaviour: tuple[str, ...],
    workload: str,
    as_json: bool,
) -> None:
    """Run one deterministic fault-injection simulation of the real replica and apps.

    The same arguments always produce the same run and the same trace digest. Fault parameters
    not given as flags are drawn from the seed. Exits 1 on any invariant violation and prints
    the command that reproduces it.
    """
    if ctx.invoked_subcommand is not None:
        return
    if list_bugs:
        for name in sorted(BUGS):
            click.echo(f"{name:28} {BUGS[name].description}")
        return
    overrides: dict[str, object] = {
        "loss_percent": loss,
        "duplicate_percent": duplicate,
        "delay_min_ms": delay_min,
        "delay_max_ms": delay_max,
        "delay_distribution": (
            DelayDistribution(delay_distribution) if delay_distribution else None
        ),
        "reorder_percent": reorder,
        "partition_percent": partitions,
        "partition_kinds": tuple(PartitionKind(k) for k in partition_kind) or None,
        "partition_duration_ms_max": partition_duration,
        "crash_percent": crashes,
        "restart_delay_ms_max": restart_delay,
        "clock_skew_ms_max": clock_skew,
        "behaviours": tuple(Behaviour(b) for b in behaviour) or None,
    }
    try:
        config = SimConfig(
            seed=seed,
            validators=validators,
            byzantine=byzantine,
            blocks=blocks,
            bug=bug,
            bug_off=bug_off,
            twins=twins,
            overrides={k: v for k, v in overrides.items() if v is not None},
            workload=workload,
            adversary=adversary,
            reconfigure=reconfigure,
        )
        result = run_simulation(config)
    except (ConfigError, ValueError) as error:
        raise click.UsageError(str(error)) from None
    if as_json:
        click.echo(json.dumps(result.describe(), sort_keys=True))
    else:
        _print_result(result)
    if not result.ok:
        sys.exit(1)


def _coverage_table(coverage: dict[str, dict[str, int]]) -> None:
    """The coverage of a sweep as two aligned columns per table."""
    for title, key in (("honest drops by reason", "drop_reasons"), ("adversary moves", "moves")):
        table = coverage[key]
        click.echo(f"  {title}:")
        for name, count in sorted(table.items(), key=lambda item: (-item[1], item[0])):
            click.echo(f"    {name:24} {count:>10}")


@sim.command("sweep", short_help="Run many seeds in parallel; exit 1 if any fails.")
@click.option("--seeds", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@click.option("--start", type=click.IntRange(0, 2**63), default=0, show_default=True)
@click.option("--jobs", type=click.IntRange(1, 256), default=None, help="Processes [cores].")
@click.option("--validators", type=int, help="Pin n (default: drawn per seed).")
@click.option("--byzantine", type=int, help="Pin the byzantine count (default: drawn, <= f).")
@click.option("--blocks", type=int, default=3, show_default=True)
@click.option("--bug", type=click.Choice(sorted(BUGS)), help="Switch a planted bug on.")
@click.option(
    "--adversary/--no-adversary",
    default=None,
    help="Every seed under the adversary (1..f byzantine, n in 4, 5, 7, 10), or none "
    "[default: drawn per seed with byzantine validators].",
)
@_RECONFIGURE_OPTION
@click.option(
    "--scheduler",
    help="Run on the Dask cluster at this address (tcp://host:8786), or 'local' for a "
    "LocalCluster of --jobs workers on this machine [default: a local process pool].",
)
@click.option(
    "--workload",
    type=click.Choice(WORKLOADS),
    default=DEFAULT_WORKLOAD,
    show_default=True,
    help="demo: the demo consortium's traffic over all four apps; membership: that app alone.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def sweep(
    seeds: int,
    start: int,
    jobs: int | None,
    validators: int | None,
    byzantine: int | None,
    blocks: int,
    bug: str | None,
    adversary: bool | None,
    reconfigure: bool,
    scheduler: str | None,
    workload: str,
    as_json: bool,
) -> None:
    """Run seeds START .. START+SEEDS-1 in parallel; exit 1 if any seed fails.

    The summary counts, over all seeds, the replica drops at honest nodes by reason and the
    adversary's moves by kind (JSON: "coverage"), and folds the per-seed trace digests into
    one "sweep_digest" (the same on a cluster as locally).
    """
    try:
        configs = [
            sweep_config(
                s,
                validators=validators,
                byzantine=byzantine,
                blocks=blocks,
                bug=bug,
                workload=workload,
                adversary=adversary,
                reconfigure=reconfigure,
            )
            for s in range(start, start + seeds)
        ]
    except ConfigError as error:
        raise click.UsageError(str(error)) from None

    done = [0]
    try:
        with progress_bar("sweep", quiet=as_json) as report_progress:

            def progress(run: dict[str, object]) -> None:
                done[0] += 1
                report_progress("seeds", done[0], len(configs))
                if not as_json and not run["ok"]:
                    click.echo(f"FAIL seed {run['seed']}: {run['command']}")

            result = run_sweep(
                configs,
                jobs=jobs or os.cpu_count() or 1,
                progress=progress,
                scheduler=scheduler,
            )
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    summary = result.describe()
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    else:
        click.echo(
            f"{summary['seeds']} seeds ({summary['adversary_seeds']} under the adversary): "
            f"{summary['passed']} passed, {summary['failed']} failed "
            f"({summary['safety_failed']} safety, {summary['liveness_failed']} liveness); "
            f"{summary['committed_heights']} heights committed; "
            f"receipts {summary['receipts_ok']} ok, {summary['receipts_rejected']} rejected; "
            f"{summary['sync_hints_checked']} sync hints checked; "
            f"{summary['wall_time_s']} s wall, {summary['seeds_per_minute']} seeds/minute"
        )
        changes = summary["validator_changes"]
        assert isinstance(changes, dict)
        if any(changes.values()):
            click.echo(
                f"  validator-set changes decided: {changes['validator_joins']} joins,"
                f" {changes['validator_leaves']} leaves, {changes['key_rotations']} key rotations"
            )
        coverage = summary["coverage"]
        assert isinstance(coverage, dict)
        _coverage_table(coverage)
        click.echo(f"  sweep digest {summary['sweep_digest']}")
        failures = summary["failures"]
        assert isinstance(failures, list)
        for failure in failures:
            click.echo(f"  reproduce: {failure['command']}")
    if result.failures:
        sys.exit(1)


@sim.command("twins", short_help="Enumerate Twins scenarios over the first views.")
@click.option(
    "--views",
    type=click.IntRange(1, 4),
    default=3,
    show_default=True,
    help="Rounds (views) whose partitions are enumerated.",
)
@click.option("--start", type=click.IntRange(0, None), default=0, show_default=True)
@click.option("--limit", type=click.IntRange(1, None), help="Scenarios to run [all].")
@click.option("--jobs", type=click.IntRange(1, 256), default=None, help="Processes [cores].")
@click.option("--bug", type=click.Choice(sorted(BUGS)), help="Switch a planted bug on.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def twins(
    views: int,
    start: int,
    limit: int | None,
    jobs: int | None,
    bug: str | None,
    as_json: bool,
) -> None:
    """Enumerate Twins scenarios: n = 4, one twinned validator, every leader and partition
    schedule over the first VIEWS views; report how many ran, how many violated, how long.

    Exits 1 if any scenario violated an invariant, and prints the command that reruns it.
    """
    if start >= scenario_count(views):
        raise click.UsageError(f"--start must be below {scenario_count(views)}")
    report = run_twins(views, start=start, limit=limit, jobs=jobs or os.cpu_count() or 1, bug=bug)
    summary = report.describe()
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    else:
        click.echo(
            f"twins, {views} views: {summary['ran']} of {summary['scenarios']} scenarios ran, "
            f"{summary['violated']} violated; {summary['wall_time_s']} s wall "
            f"({summary['scenarios_per_second']} scenarios/s)" + (f"; bug {bug}" if bug else "")
        )
        violations = summary["violations"]
        assert isinstance(violations, list)
        for violation in violations[:20]:
            click.echo(
                f"  VIOLATION scenario {violation['scenario']} ({violation['schedule']}): "
                f"{', '.join(violation['checks'])}"
            )
            click.echo(f"    reproduce: {violation['command']}")
        if len(violations) > 20:
            click.echo(f"  ... and {len(violations) - 20} more")
    if report.violated:
        sys.exit(1)
