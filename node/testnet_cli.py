"""``suanpan testnet init`` and ``suanpan testnet up``: a local multi-process testnet."""

from __future__ import annotations

import dataclasses
import json
import signal
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Final

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from node.client import ApiError, Client
from node.jsonvalue import JsonType
from node.loadgen import LoadGenerator
from node.testnet import Testnet, TestnetInfo, agreement_problems, create_testnet, load_testnet

__all__ = ["testnet_group"]

# Nodes get this long to open their stores, connect and serve the API.
_STARTUP_TIMEOUT_S: Final = 120.0
_REFRESH_S: Final = 1.0


@click.group("testnet")
def testnet_group() -> None:
    """Generate and run a local multi-process testnet."""


@testnet_group.command("init")
@click.option("--validators", "-n", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path))
@click.option("--chain-id", default="suanpan-testnet", show_default=True)
def testnet_init(validators: int, directory: Path, chain_id: str) -> None:
    """Write every node home of a testnet (run each with `suanpan start --home DIR/nodeI`)."""
    try:
        info = create_testnet(directory, validators, chain_id=chain_id)
    except (FileExistsError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {validators} node homes under {directory}")
    for home, address in zip(info.homes, info.api_addresses, strict=True):
        click.echo(f"  suanpan start --home {home}    # API http://{address}")


def _status_row(index: int, client: Client, testnet: Testnet) -> list[str]:
    process = testnet.processes[index]
    name = testnet.info.homes[index].name
    if process is None or process.poll() is not None:
        code = None if process is None else process.returncode
        return [name, f"[red]exited {code}[/red]", "", "", "", "", "", ""]
    try:
        status = client.status()
    except ApiError:
        return [name, "[yellow]starting[/yellow]", "", "", "", "", "", ""]
    state = "[cyan]syncing[/cyan]" if status.get("syncing") else "[green]up[/green]"
    return [
        name,
        state,
        str(status.get("height", "")),
        str(status.get("view", "")),
        str(status.get("peers", "")),
        str(status.get("mempool_transactions", "")),
        f"{_number(status.get('transactions_per_second')):.0f}",
        str(status.get("transactions_committed", "")),
    ]


def _number(value: JsonType) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _table(rows: list[list[str]], elapsed_s: float, load: LoadGenerator | None) -> Table:
    caption = f"{elapsed_s:.0f}s"
    if load is not None:
        statistics = load.statistics
        caption += (
            f" | load: {statistics.accepted} accepted, {statistics.rejected} rejected,"
            f" {statistics.backoffs} backoffs"
        )
        if statistics.last_error:
            caption += f" | last: {statistics.last_error[:60]}"
    table = Table(title="suanpan testnet (Ctrl-C to stop)", caption=caption)
    for column in ("node", "state", "height", "view", "peers", "mempool", "tx/s", "committed"):
        table.add_column(column, justify="left" if column in ("node", "state") else "right")
    for row in rows:
        table.add_row(*row)
    return table


class _Interrupted(Exception):
    pass


def _wait_for_api(testnet: Testnet, clients: list[Client]) -> None:
    def all_up() -> bool:
        for client in clients:
            try:
                client.health()
            except ApiError:
                return False
        return True

    testnet.wait_until("every node's API", all_up, _STARTUP_TIMEOUT_S, poll_s=0.3)


@testnet_group.command("up")
@click.option("--validators", "-n", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    help="Testnet directory (reused when it holds one; default: a new temporary directory).",
)
@click.option("--duration", type=click.FloatRange(min=0), help="Stop after this many seconds.")
@click.option("--load", "load_rate", type=click.FloatRange(min=0), default=0, help="Target tx/s.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def testnet_up(
    validators: int,
    directory: Path | None,
    duration: float | None,
    load_rate: float,
    as_json: bool,
) -> None:
    """Run a local testnet of N validator processes with a live view; Ctrl-C stops it."""
    console = Console(stderr=as_json)
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="suanpan-testnet-"))
    info: TestnetInfo
    if (directory / "testnet.json").exists():
        info = load_testnet(directory)
    else:
        info = create_testnet(directory, validators)
    console.print(f"testnet directory {directory} (logs: {directory}/node*/node.log)")
    testnet = Testnet(info)
    clients = [testnet.client(i, timeout_s=5.0) for i in range(len(info.homes))]

    def interrupt(_signal: int, _frame: FrameType | None) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGINT, interrupt)
    previous_term = signal.signal(signal.SIGTERM, interrupt)
    load: LoadGenerator | None = None
    started = time.monotonic()
    startup_error = ""
    try:
        testnet.start_all()
        _wait_for_api(testnet, clients)
        if load_rate > 0:
            senders = [
                (info.client_key(i), info.institutions[i], info.api_addresses[i])
                for i in range(len(info.homes))
            ]
            load = LoadGenerator(info.chain_id, senders, load_rate)
            load.start()
        started = time.monotonic()
        with Live(console=console, refresh_per_second=4, transient=as_json) as live:
            while duration is None or time.monotonic() - started < duration:
                rows = [_status_row(i, client, testnet) for i, client in enumerate(clients)]
                live.update(_table(rows, time.monotonic() - started, load))
                if testnet.died():
                    break
                time.sleep(_REFRESH_S)
    except _Interrupted:
        pass
    except (TimeoutError, RuntimeError) as error:
        startup_error = str(error)
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish the summary even on a second Ctrl-C
    if load is not None:
        load.stop()
    died = testnet.died()
    try:
        problems = agreement_problems(clients) if not died and not startup_error else []
    except ApiError as error:
        problems = [f"cannot compare chains: {error}"]
    summaries = testnet.summaries()
    exit_codes = testnet.stop_all()
    summaries = [
        dataclasses.replace(summary, exit_code=code)
        for summary, code in zip(summaries, exit_codes, strict=True)
    ]
    signal.signal(signal.SIGINT, previous)
    failures = [f"node{i} died (exit code {exit_codes[i]})" for i in died] + problems
    failures += [
        f"node{i} exited with code {code} on stop"
        for i, code in enumerate(exit_codes)
        if i not in died and code not in (0, None)
    ]
    if startup_error:
        failures.insert(0, startup_error)
    document: dict[str, JsonType] = {
        "directory": str(directory),
        "chain_id": info.chain_id,
        "duration_s": round(time.monotonic() - started, 1),
        "nodes": [summary.to_json() for summary in summaries],
        "agree": not problems,
        "failures": list(failures),
    }
    if load is not None:
        document["load"] = {
            "target_tps": load_rate,
            "accepted": load.statistics.accepted,
            "rejected": load.statistics.rejected,
            "backoffs": load.statistics.backoffs,
        }
    if as_json:
        click.echo(json.dumps(document))
    else:
        table = Table(title="summary")
        for column in ("node", "height", "last block hash", "app hash", "tx committed"):
            table.add_column(column)
        for summary in summaries:
            table.add_row(
                summary.name,
                str(summary.height),
                summary.block_hash[:16],
                summary.app_hash[:16],
                str(summary.transactions_committed),
            )
        console.print(table)
        for failure in failures:
            console.print(f"[red]FAIL[/red] {failure}")
        if not failures:
            console.print("[green]all nodes agree[/green]")
    if failures:
        raise SystemExit(1)
