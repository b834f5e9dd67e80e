"""``suanpan bench``: throughput and latency of a real testnet, catch-up, and the simulator's
scaling table."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

import click

from node.cli.progress import progress_bar
from node.cli.signals import terminate_unwinds
from node.jsonvalue import JsonType

if TYPE_CHECKING:
    from node.bench.throughput import BenchOptions

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
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def _echo_figures(
    figures: JsonType, label: str, digits: int, caption: str, shown: int | None = None
) -> None:
    """One report line: ``label``, then each of ``figures``' names with its value (the first
    ``shown`` of them), then ``caption``; nothing when ``figures`` is not a non-empty map."""
    if not isinstance(figures, dict) or not figures:
        return
    values = ", ".join(
        f"{name} {_figure(value, digits)}" for name, value in list(figures.items())[:shown]
    )
    click.echo(f"  {label:<17}{values}  ({caption})")


@click.group(invoke_without_command=True)
@click.option("--validators", "-n", default=4, show_default=True, type=click.IntRange(1, 16))
@click.option("--duration", default=20.0, show_default=True, type=click.FloatRange(2, 600))
@click.option("--rate", default="800", show_default=True, help="tx/s offered, or max")
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
@click.option(
    "--overload/--no-overload",
    default=None,
    help="after a --rate max search, offer 2x and 4x the best sustained rate, each on a fresh"
    " testnet, and say whether each holds 90 % of it with p99 of admitted <= 2 s"
    " (default: on)",
)
@click.option(
    "--block-interval",
    default=None,
    type=click.IntRange(0, 10_000),
    help="[consensus] block_interval_ms of every node (default: the node default)",
)
@click.option(
    "--block-max",
    default=None,
    type=click.IntRange(1, 5000),
    help="[block] proposal_transactions_max of every node (default: the node default)",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="a config.toml key for every node, e.g. mempool.admission_budget_ms=300 (repeatable)",
)
@click.option(
    "--runs",
    default=1,
    show_default=True,
    type=click.IntRange(1, 50),
    help="measure this many times (each on fresh testnets) and report the medians",
)
@click.option(
    "--versus",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="also measure with this config.toml key on top of --set, alternating with the runs"
    " without it (a, b, b, a, ...; repeatable)",
)
@click.option(
    "--split",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="give this config.toml key to half the validators of each testnet (the halves swap"
    " from run to run) and compare the two halves' CPU per transaction by phase; --runs N"
    " gives N pairs (repeatable; needs a fixed --rate)",
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
    overload: bool | None,
    block_interval: int | None,
    block_max: int | None,
    settings: tuple[str, ...],
    runs: int,
    versus: tuple[str, ...],
    split: tuple[str, ...],
    keep: Path | None,
    as_json: bool,
) -> None:
    """Benchmarks. Without a subcommand: committed tx/s and submit-to-commit latency of a real
    multi-process testnet under pre-signed payments, against the ed25519 ceiling. With
    --runs, --versus or --split: every run's figures and each configuration's medians."""
    if context.invoked_subcommand is not None:
        return
    from node.bench.throughput import BenchOptions, run_throughput
    from node.config import ConfigError, NodeConfig, with_settings

    config = NodeConfig()
    if block_interval is not None:
        config = config.with_changes("consensus", block_interval_ms=block_interval)
    if block_max is not None:
        config = config.with_changes("block", proposal_transactions_max=block_max)
    try:
        config = with_settings(config, settings)
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="--set") from None
    if overload is not None and rate != "max":
        raise click.BadParameter(
            "overload steps follow a search: use it with --rate max",
            param_hint="--overload/--no-overload",
        )
    versus_config: NodeConfig | None = None
    if versus:
        try:
            versus_config = with_settings(config, versus)
        except ConfigError as error:
            raise click.BadParameter(str(error), param_hint="--versus") from None
    split_config: NodeConfig | None = None
    if split:
        if versus:
            raise click.BadParameter(
                "compare one way at a time: --split or --versus", param_hint="--split"
            )
        if rate == "max":
            raise click.BadParameter(
                "a split compares the halves at one rate: give --rate R", param_hint="--split"
            )
        if validators < 2:
            raise click.BadParameter(
                "a split needs at least 2 validators (--validators)", param_hint="--split"
            )
        try:
            split_config = with_settings(config, split)
        except ConfigError as error:
            raise click.BadParameter(str(error), param_hint="--split") from None
    repeated = runs > 1 or versus_config is not None or split_config is not None
    if keep is not None and repeated:
        raise click.BadParameter(
            "it keeps one run's testnet: use it without --runs, --versus and --split",
            param_hint="--keep",
        )
    options = BenchOptions(
        config=config,
        settings=settings,
        validators=validators,
        duration_s=duration,
        rate=_rate(rate),
        accounts_per_bank=accounts,
        p99_ms_max=p99_max,
        keep_directory=keep,
        overload=overload is not False,
    )
    if split_config is not None:
        # Pair by pair, the first half of the validators has the setting in one run and the
        # second half in the other.
        half = validators // 2
        halves = (tuple(range(half)), tuple(range(half, validators)))
        first, second = (
            dataclasses.replace(
                options, split_config=split_config, split_settings=split, split_nodes=nodes
            )
            for nodes in halves
        )
        _run_repeated(first, second, runs, as_json)
        return
    if repeated:
        compared = None
        if versus_config is not None:
            compared = dataclasses.replace(
                options, config=versus_config, settings=(*settings, *versus)
            )
        _run_repeated(options, compared, runs, as_json)
        return
    # SIGTERM unwinds like Ctrl-C, so the testnet's nodes are stopped.
    with (
        terminate_unwinds(),
        progress_bar("bench", quiet=as_json or options.rate is None) as report_progress,
    ):
        report = run_throughput(options, progress=not as_json, report=report_progress)
    document = report.to_json()
    if as_json:
        click.echo(json.dumps(document))
        return
    _print_report(document)


def _run_repeated(
    options: BenchOptions, compared: BenchOptions | None, runs: int, as_json: bool
) -> None:
    """``runs`` measurements of ``options`` (alternating with as many of ``compared``), each
    run's figures as it ends, then the medians (``node.bench.repeated``). A run that fails, or
    Ctrl-C / SIGTERM, ends the series: the runs that completed are still reported (marked
    ``incomplete``) before the error goes on."""
    from node.bench.repeated import pairs_ahead, run_order, split_summary, summarise
    from node.bench.throughput import run_throughput

    configurations = {"a": options} if compared is None else {"a": options, "b": compared}
    order = run_order(runs, compared is not None)
    documents: list[dict[str, JsonType]] = []
    stopped: BaseException | None = None
    try:
        with terminate_unwinds():
            for index, label in enumerate(order, 1):
                chosen = configurations[label]
                with progress_bar(
                    f"run {index}/{len(order)}", quiet=as_json or chosen.rate is None
                ) as report_progress:
                    report = run_throughput(chosen, progress=not as_json, report=report_progress)
                document = report.to_json()
                documents.append(document)
                if not as_json:
                    click.echo(
                        f"run {index}/{len(order)} ({_label(label, chosen)}): {_line(document)}"
                        + _split_line(document)
                    )
    except (Exception, KeyboardInterrupt) as error:
        stopped = error
    done = order[: len(documents)]
    ran: dict[str, list[dict[str, JsonType]]] = {label: [] for label in configurations}
    for label, document in zip(done, documents, strict=True):
        ran[label].append(document)
    medians = {label: summarise(ran[label]) for label in configurations}
    result: dict[str, JsonType] = {"order": list[JsonType](done)}
    if stopped is not None:
        reason = "interrupted" if isinstance(stopped, KeyboardInterrupt) else repr(stopped)
        result["incomplete"] = f"{len(documents)} of {len(order)} runs completed: {reason}"
    for label, chosen in configurations.items():
        entry: dict[str, JsonType] = {
            "settings": list(chosen.settings),
            "median": medians[label],
            "runs": list[JsonType](ran[label]),
        }
        if chosen.split_config is not None:
            # Which validators had the split's setting in this configuration's runs.
            entry["split_nodes"] = list[JsonType](chosen.split_nodes)
        result[label] = entry
    split = options.split_config is not None
    # Only whole pairs compare.
    paired = len(done) - len(done) % 2
    if split:
        result["split"] = split_summary(documents[:paired])
    elif compared is not None:
        result["pairs"] = paired // 2
        result["pairs_b_committed_more"] = pairs_ahead(done[:paired], documents[:paired])
    if as_json:
        click.echo(json.dumps(result))
    else:
        if stopped is not None:
            click.echo(f"INCOMPLETE       {result['incomplete']}")
        for label, chosen in configurations.items():
            count = len(ran[label])
            if count:
                _print_median(f"median of {count} ({_label(label, chosen)})", medians[label], count)
        summary = result.get("split")
        if isinstance(summary, dict):
            _print_split(options.split_settings, summary)
        elif compared is not None:
            click.echo(
                f"b committed more than a in {result['pairs_b_committed_more']} pairs of"
                f" {result['pairs']}"
            )
    if stopped is not None:
        raise stopped


def _print_median(title: str, median: Mapping[str, JsonType], runs: int) -> None:
    click.echo(f"{title}: {_line(median)}")
    ranges = median.get("range")
    if isinstance(ranges, dict):
        spans = []
        for name, figure, digits in _RANGES:
            span = ranges.get(figure)
            if isinstance(span, list) and len(span) == 2:
                spans.append(f"{name} {_figure(span[0], digits)}-{_figure(span[1], digits)}")
        click.echo("  ranges           " + "; ".join(spans))
    click.echo(
        f"  peak RSS MiB     {_figure(median.get('rss_peak_mb'), 1)} (median of each run's"
        " largest node)"
    )
    if "overload_held" in median:
        click.echo(f"  overload held    in {median['overload_held']} runs of {runs}")
    loads = median.get("load_average_before")
    if isinstance(loads, list):
        click.echo("  load before      " + ", ".join(_figure(load, 2) for load in loads))


# How many of the event loop's tasks (``loop_tasks_us_per_tx``) a report names; the JSON has all.
_TASKS_SHOWN: Final = 6
# The ranges a repeated run prints: (name, figure, digits).
_RANGES: Final = (
    ("tx/s", "tx_per_s", 1),
    ("p99 of admitted ms", "latency_ms_p99", 0),
    ("from first offer ms", "offer_latency_ms_p99", 0),
    ("pushed back", "pushed_back", 0),
    ("CPU µs per tx", "cpu_us_per_tx_per_node", 1),
)


def _label(label: str, options: BenchOptions) -> str:
    if options.split_config is not None:
        nodes = ", ".join(str(node) for node in options.split_nodes)
        return f"{label}: nodes {nodes} with {' '.join(options.split_settings)}"
    return f"{label}: {' '.join(options.settings) or 'defaults'}"


def _split_line(document: Mapping[str, JsonType]) -> str:
    """A split run's comparison of its two groups, to follow its line (empty for another)."""
    split = document.get("split")
    if not isinstance(split, dict):
        return ""
    with_phases, without_phases = split.get("with_us_per_tx"), split.get("without_us_per_tx")
    if not isinstance(with_phases, dict) or not isinstance(without_phases, dict):
        return "; the halves could not be compared"
    return (
        f"; with the setting {_figure(with_phases.get('total'), 1)} CPU µs per tx,"
        f" without {_figure(without_phases.get('total'), 1)}"
        f" ({_signed(split.get('difference_percent'))} %)"
    )


def _signed(value: JsonType) -> str:
    return f"{value:+.2f}" if isinstance(value, int | float) else "-"


def _print_split(settings: tuple[str, ...], summary: Mapping[str, JsonType]) -> None:
    """The medians over the pairs of a split series."""
    click.echo(
        f"split ({' '.join(settings)}): the nodes with it spent"
        f" {_signed(summary.get('median_difference_percent'))} % CPU per tx (median of"
        f" {summary.get('pairs_compared')} pairs; less in {summary.get('pairs_with_less_cpu')})"
    )
    per_pair = summary.get("difference_percent_of_pair")
    if isinstance(per_pair, list):
        click.echo("  per pair         " + ", ".join(f"{_signed(value)} %" for value in per_pair))
    by_phase = summary.get("median_difference_us_per_tx")
    if isinstance(by_phase, dict) and by_phase:
        click.echo(
            "  by phase µs/tx   "
            + ", ".join(f"{phase} {_signed(value)}" for phase, value in by_phase.items())
        )


def _line(d: Mapping[str, JsonType]) -> str:
    """One run's (or a median's) main figures on a line."""
    return (
        f"{_figure(d.get('tx_per_s'), 1)} tx/s at {_figure(d.get('rate_offered'))} offered,"
        f" p99 of admitted {_figure(d.get('latency_ms_p99'))} ms,"
        f" from first offer {_figure(d.get('offer_latency_ms_p99'))} ms,"
        f" pushed back {_figure(d.get('pushed_back'))},"
        f" {_figure(d.get('cpu_us_per_tx_per_node'), 1)} CPU µs per tx per node,"
        f" ratio {_figure(d.get('ratio'), 3)}"
    )


def _print_report(d: dict[str, JsonType]) -> None:
    click.echo(
        f"validators {d['validators']}, workload {d['workload']},"
        f" offered {_figure(d['rate_offered'])} tx/s for {_figure(d['duration_s'])} s"
        f" (load average before: {d['load_average_before']})"
    )
    click.echo(f"  native modules   {d['native_modules']}")
    if d["settings"]:
        click.echo(f"  settings         {d['settings']} (every node)")
    click.echo(
        f"  committed        {_figure(d['tx_per_s'], 1)} tx/s"
        f"   ({_figure(d['committed'])} of {_figure(d['submitted'])} submitted committed,"
        f" refused {d['rejected']}, pushed back {d['pushed_back']} (resent),"
        f" abandoned {d['abandoned']}, transport errors {d['transport_errors']})"
    )
    click.echo(
        f"  latency ms       p50 {_figure(d['latency_ms_p50'])}  p95 {_figure(d['latency_ms_p95'])}"
        f"  p99 {_figure(d['latency_ms_p99'])}  max {_figure(d['latency_ms_max'])}"
        " (from the admitted submission)"
    )
    click.echo(
        f"  from first offer p50 {_figure(d['offer_latency_ms_p50'])}"
        f"  p99 {_figure(d['offer_latency_ms_p99'])}  max {_figure(d['offer_latency_ms_max'])}"
        " (a push-back's wait included)"
    )
    click.echo(
        f"  blocks           {_figure(d['blocks_per_s'], 2)} /s, {_figure(d['block_size_avg'], 1)}"
        f" transactions per block (largest {_figure(d['block_size_max'])})"
    )
    click.echo(
        f"  round ms         p50 {_figure(d['round_ms_p50'])}"
        f"  p90 {_figure(d['round_ms_p90'])}  max {_figure(d['round_ms_max'])}"
        " (from one block's proposal to the next)"
    )
    per_block, means = d.get("waits_ms_per_block"), d.get("waits_ms_mean")
    if isinstance(per_block, dict) and per_block and isinstance(means, dict):
        click.echo(
            "  driver waits     ms per block (mean of one): "
            + ", ".join(
                f"{wait} {_figure(value, 1)} ({_figure(means.get(wait), 1)})"
                for wait, value in per_block.items()
            )
        )
    click.echo(
        f"  CPU s per node   {d['cpu_s_per_node']}  (% of one core {d['cpu_percent_per_node']})"
    )
    _echo_figures(
        d.get("phases_us_per_tx"), "CPU µs per tx", 1, "per node, per committed transaction"
    )
    _echo_figures(
        d.get("loop_tasks_us_per_tx"),
        "other by task",
        1,
        "the event loop outside the phases, largest first: [metrics] loop_task_cpu",
        shown=_TASKS_SHOWN,
    )
    _echo_figures(
        d.get("signatures_checked"),
        "signatures",
        0,
        "transactions checked at admission, by where, all nodes",
    )
    _echo_figures(
        d.get("machine_cores"),
        "machine cores",
        2,
        "the whole machine over the window: steal is time the hypervisor gave others",
    )
    halves = d.get("phases_us_per_tx_by_half")
    if (
        isinstance(halves, list)
        and len(halves) == 2
        and isinstance(first := halves[0], dict)
        and isinstance(second := halves[1], dict)
    ):
        click.echo(
            "  by half          "
            + ", ".join(
                f"{phase} {_figure(first[phase], 1)} -> {_figure(second[phase], 1)}"
                for phase in ("total", "execute", "commit")
                if phase in first and phase in second
            )
            + "  (first -> second half of the window: the ledger grows)"
        )
    click.echo(f"  peak RSS MiB     {d['rss_peak_mb_per_node']}")
    click.echo(
        f"    anonymous      {d.get('rss_anonymous_peak_mb_per_node')} at most;"
        f" file-backed {d.get('rss_file_mb_per_node')} at the end (LMDB's map: the ledger)"
    )
    writers = d.get("writer_rss_peak_mb_per_node")
    if isinstance(writers, list) and any(value is not None for value in writers):
        click.echo(f"    block writer   {writers} (each node's process of its own, beside it)")
    click.echo(f"  submitter CPU s  {d['submitter_cpu_s']}")
    click.echo(
        f"  ed25519          {_figure(d['ed25519_verify_per_s_per_core'])} verifications/s per core"
        f" x {d['cores']} cores / {d['validators']} validators ="
        f" ceiling {_figure(d['ceiling_tx_per_s'])} tx/s"
    )
    click.echo(f"  ratio            {d['ratio']} of the ceiling")
    overload = d.get("overload_steps")
    if isinstance(overload, list):
        for step in overload:
            if isinstance(step, dict):
                click.echo(
                    f"  overload {step['multiple']}x      {_figure(step['rate_offered'])} offered:"
                    f" {_figure(step['tx_per_s'], 1)} tx/s ({step['share_of_best']} of the best"
                    f" step), p99 of admitted {_figure(step['latency_ms_p99'])} ms,"
                    f" pushed back {step['pushed_back']}, refused {step['rejected']}:"
                    f" {'holds' if step['holds'] else 'DOES NOT HOLD'}"
                )
        click.echo(f"    peak RSS MiB   {d.get('overload_rss_peak_mb_per_node')}")
    if d.get("agreement_problems"):
        click.echo(f"  DISAGREEMENT     {d['agreement_problems']}")
    if d.get("last_error"):
        click.echo(f"  last refusal     {d['last_error']}")


@bench.command("scaling", short_help="Messages and bytes per block by validator count.")
@click.option(
    "--validators",
    "counts",
    default="4,7,10,16,31",
    show_default=True,
    help="comma-separated validator counts (each 1..31)",
)
@click.option("--blocks", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--seed", default=1, show_default=True, type=click.IntRange(0, 2**63))
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def scaling_command(counts: str, blocks: int, seed: int, as_json: bool) -> None:
    """Messages and bytes per committed block for several validator counts (simulator, faults
    off)."""
    from node.bench.scaling import scaling_table
    from sims.config import ConfigError

    try:
        validator_counts = tuple(int(part) for part in counts.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(
            "use comma-separated integers", param_hint="--validators"
        ) from None
    try:
        rows = scaling_table(validator_counts, blocks=blocks, seed=seed)
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="--validators") from None
    if as_json:
        click.echo(json.dumps({"blocks": blocks, "rows": [row.to_json() for row in rows]}))
        return
    click.echo(
        f"{'validators':>10} {'messages/block':>15} {'expected':>9} {'bytes/block':>12}"
        f" {'bytes/validator':>16}  ok"
    )
    for row in rows:
        click.echo(
            f"{row.validators:>10} {row.messages_per_block:>15,.1f}"
            f" {row.expected_messages_per_block:>9,} {row.bytes_per_block:>12,}"
            f" {row.bytes_per_validator_per_block:>16,}  {'yes' if row.ok else 'NO'}"
        )


@bench.command("catchup", short_help="Catch-up speed of a restarted validator.")
@click.option("--blocks", default=300, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--validators", "-n", default=4, show_default=True, type=click.IntRange(4, 16))
@click.option("--keep", type=click.Path(path_type=Path), help="keep the testnet in this directory")
@click.option(
    "--trust-certified",
    is_flag=True,
    help="run the nodes with [consensus] trust_certified_blocks: the syncing node applies"
    " each block on its commit certificate, without checking its transactions' signatures",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="a config.toml key for every node, e.g. mempool.verify_workers=1 (repeatable)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def catchup_command(
    blocks: int,
    validators: int,
    keep: Path | None,
    trust_certified: bool,
    settings: tuple[str, ...],
    as_json: bool,
) -> None:
    """A validator restarted BLOCKS behind syncs them: verified and applied blocks/s."""
    from node.bench.catchup import run_catchup
    from node.config import ConfigError

    # ``run_catchup`` refuses a bad setting before anything starts.
    with terminate_unwinds(), progress_bar("catchup", quiet=as_json) as report_progress:
        try:
            report = run_catchup(
                blocks,
                validators,
                keep,
                progress=report_progress,
                trust_certified=trust_certified,
                settings=settings,
            )
        except ConfigError as error:
            raise click.BadParameter(str(error), param_hint="--set") from None
    document = report.to_json()
    if as_json:
        click.echo(json.dumps(document))
        return
    click.echo(
        f"synced {document['blocks_synced']} blocks ({document['transactions_synced']}"
        f" transactions) in {document['sync_s']} s after a {document['startup_s']} s start-up:"
        f" {document['blocks_per_s']} blocks/s verified and applied,"
        f" {document['transactions_per_s']} tx/s; from its first block request"
        f" ({document['detect_s']} s in): {document['transactions_per_s_applying']} tx/s;"
        f" the syncing node used {document['cpu_us_per_tx']} CPU us per transaction"
        f" ({document['cores']} cores busy; its event loop on a CPU {document['loop_busy']}"
        " of the time"
        + (
            ""
            if document.get("loop_cpu_wait") is None
            else f", waiting for one {document['loop_cpu_wait']}"
        )
        + f"); its peak RSS {document['rss_peak_mb']} MiB"
        + (
            ""
            if document.get("writer_rss_peak_mb") is None
            else f", its block writer process's {document['writer_rss_peak_mb']} MiB"
        )
    )
    click.echo(
        f"Merkle tree: updated once per group for {document['tree_group_blocks']} of the synced"
        f" blocks, in {document['tree_groups']} groups ([consensus] sync_tree_blocks)"
    )
    if trust_certified:
        click.echo(
            f"signatures: {document['transactions_trusted']} transactions applied on their"
            " block's commit certificate, not checked again ([consensus] trust_certified_blocks)"
        )


@bench.command("signatures", short_help="Costs of a signature check, alone and in batches.")
@click.option("--signatures", default=1024, show_default=True, type=click.IntRange(1, 10**6))
@click.option(
    "--keys",
    default=None,
    type=click.IntRange(1, 10**6),
    help="sign with this many keys in turn  [default: one key per signature]",
)
@click.option("--message-bytes", default=250, show_default=True, type=click.IntRange(0, 10**6))
@click.option(
    "--batch",
    "batch_sizes",
    multiple=True,
    type=click.IntRange(1, 10**6),
    help="a batch size to measure (repeatable)  [default: 16, 64, 128, 256, 512]",
)
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def signatures_command(
    signatures: int,
    keys: int | None,
    message_bytes: int,
    batch_sizes: tuple[int, ...],
    repeats: int,
    as_json: bool,
) -> None:
    """CPU µs per signature checked by the ledger's rule one at a time, by libsodium's
    crypto_sign_open (for comparison), and in batches of each size (medians of REPEATS): with
    every key new to the rule's table of decoded keys, and with every key known."""
    from node.bench.signatures import run_signature_bench

    sizes = batch_sizes or tuple(size for size in (16, 64, 128, 256, 512) if size <= signatures)
    try:
        report = run_signature_bench(
            signatures=signatures,
            keys=keys,
            message_bytes=message_bytes,
            batch_sizes=sizes,
            repeats=repeats,
        )
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    document = report.to_json()
    if as_json:
        click.echo(json.dumps(document))
        return
    click.echo(
        f"{signatures:,} signatures of {message_bytes} bytes by {report.keys:,} keys;"
        f" rule {report.signature_rule}, batch {report.signature_batch}"
    )
    click.echo("  us per signature     new keys  known keys")
    click.echo(f"  single (the rule)   {report.single_us:9.1f} {report.single_known_us:11.1f}")
    click.echo(f"  libsodium           {report.libsodium_us:9.1f}")
    for size, us in report.batch_us.items():
        click.echo(f"  batch of {size:<10} {us:9.1f} {report.batch_known_us[size]:11.1f}")


@bench.command("http", short_help="CPU per request of the client API's HTTP server.")
@click.option("--requests", default=5_000, show_default=True, type=click.IntRange(1, 10**7))
@click.option(
    "--body-bytes",
    default=5_000,
    show_default=True,
    type=click.IntRange(0, 10**6),
    help="each request's body (15 of the benchmark's payments are about 5,000 bytes)",
)
@click.option("--answer-bytes", default=40, show_default=True, type=click.IntRange(0, 10**6))
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def http_command(
    requests: int, body_bytes: int, answer_bytes: int, repeats: int, as_json: bool
) -> None:
    """The server's CPU µs per request (medians of REPEATS rounds): a server of the client API
    with a handler that only answers, in this process, and a client in another that sends
    REQUESTS POSTs of BODY_BYTES one after another on one keep-alive connection."""
    from node.bench.httpserver import run_http_bench

    report = run_http_bench(
        requests=requests, body_bytes=body_bytes, answer_bytes=answer_bytes, repeats=repeats
    )
    if as_json:
        click.echo(json.dumps(report.to_json()))
        return
    click.echo(
        f"{requests:,} requests of {body_bytes:,} bytes, answers of {answer_bytes:,} bytes,"
        f" {repeats} rounds (medians)"
    )
    click.echo(f"  server CPU per request  {report.cpu_us_per_request:8.1f} us")
    click.echo(f"  requests per second     {report.requests_per_s:8.1f}")


@bench.command("merkle", short_help="Costs of the Merkle state commitment.")
@click.option("--accounts", default=100_000, show_default=True, type=click.IntRange(10, 10**7))
@click.option("--writes", default=5_000, show_default=True, type=click.IntRange(1, 10**6))
@click.option("--blocks", default=5, show_default=True, type=click.IntRange(1, 1000))
@click.option("--designs", is_flag=True, help="also apply the blocks to the rejected designs")
@click.option(
    "--layouts",
    is_flag=True,
    help="also write the blocks' tree records to LMDB in other storage layouts (needs"
    " --blocks 16 or more)",
)
@click.option(
    "--python-update",
    is_flag=True,
    help="apply the blocks with the Python update even where the C one is loaded (to compare)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def merkle_command(
    accounts: int,
    writes: int,
    blocks: int,
    designs: bool,
    layouts: bool,
    python_update: bool,
    as_json: bool,
) -> None:
    """The Merkle state commitment's costs: app hash of ACCOUNTS accounts from scratch, per
    block and per write (memory and LMDB), proof size and verify time (CPU time)."""
    from node.bench.merkle import run_merkle_bench

    try:
        report = run_merkle_bench(
            accounts=accounts,
            writes=writes,
            blocks=blocks,
            designs=designs,
            layouts=layouts,
            python_update=python_update,
        )
    except ValueError as error:
        if not layouts:
            raise
        # Refused before any work: too few blocks to compare layouts over whole cycles.
        raise click.BadParameter(str(error), param_hint="--blocks") from None
    document = report.to_json()
    if as_json:
        click.echo(json.dumps(document))
        return
    click.echo(
        f"state of {accounts:,} accounts ({report.keys:,} keys), blocks of {writes:,} writes"
    )
    click.echo(f"  app hash from scratch   {report.build_s:.2f} s")
    click.echo(f"  tree update             {report.merkle_tree}")
    click.echo(
        f"  per block (memory)      {report.memory_ms_per_block:.1f} ms"
        f" = {report.memory_us_per_write:.1f} us per write;"
        f" {report.records_per_block:,.0f} records, {report.record_bytes_per_block:,.0f} bytes"
    )
    click.echo(
        f"  per block (LMDB)        {report.lmdb_execute_ms_per_block:.1f} ms to hash"
        f" ({report.lmdb_us_per_write:.1f} us per write),"
        f" {report.lmdb_commit_ms_per_block:.1f} ms to commit with the undo records"
    )
    click.echo(
        f"  proofs                  {report.proof_bytes_median:,} bytes median"
        f" ({report.proof_bytes_max:,} max), verified in {report.verify_us_median:.0f} us"
    )
    for name, row in report.designs.items():
        click.echo(
            f"  {name:<22}  {row['us_per_write']:>6.1f} us/write {row['ms_per_block']:>8.1f}"
            f" ms/block {row['records_per_block']:>8,.0f} records {row['proof_bytes']:>7,.0f}"
            " proof bytes"
        )
    for name, row in report.layouts.items():
        click.echo(
            f"  {name:<52}  {row['cpu_ms_per_block']:>7.1f} CPU ms/block"
            f" {row['wall_ms_per_block']:>7.1f} ms wall {row['kib_written_per_block']:>8,.0f}"
            f" KiB written {row['file_mib']:>7,.1f} MiB file"
            f" {row['moved_per_block']:>7,.0f} moved"
        )


@bench.command("statesync", short_help="Snapshot export and state sync speed.")
@click.option("--keys", default=1_000_000, show_default=True, type=click.IntRange(1, 10**8))
@click.option("--value-bytes", default=100, show_default=True, type=click.IntRange(0, 65536))
@click.option("--chunk-requests", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def statesync_command(keys: int, value_bytes: int, chunk_requests: int, as_json: bool) -> None:
    """Snapshot export and state sync of KEYS state entries over loopback (wall time)."""
    from node.bench.statesync import run_statesync_bench

    report = run_statesync_bench(keys=keys, value_bytes=value_bytes, chunk_requests=chunk_requests)
    if as_json:
        click.echo(json.dumps(report.to_json()))
        return
    click.echo(
        f"{keys:,} keys of {value_bytes} bytes (source built in {report.source_build_s} s)\n"
        f"  snapshot export   {report.snapshot_export_s} s (CPU {report.snapshot_export_cpu_s} s),"
        f" {report.snapshot_bytes:,} bytes in {report.snapshot_chunks} chunks\n"
        f"  state sync        {report.sync_s} s (CPU {report.sync_cpu_s} s) ="
        f" {report.keys_per_s:,.0f} keys/s, {report.megabytes_per_s} MB/s"
        f" (store {report.store_bytes:,} bytes)"
    )
