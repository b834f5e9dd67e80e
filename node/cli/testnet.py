"""``suanpan testnet init`` and ``suanpan testnet up``: a local multi-process testnet.

By default the testnet's genesis holds the demo consortium (``apps.demo``) and runs all four
apps; ``--load TPS`` then drives its business traffic
(``node.testnet.loadgen.DemoLoadGenerator``), and the parties' key files in ``DIR/clients/``
let a visitor act as any of them with the CLI.
``--no-demo`` gives the bare testnet (membership only, membership load)."""

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

from consensus.codec import Value
from node.client.client import ApiError, Client
from node.jsonvalue import JsonType, to_json
from node.testnet.loadgen import DemoLoadGenerator, LoadGenerator
from node.testnet.testnet import (
    Testnet,
    TestnetInfo,
    agreement_problems,
    create_testnet,
    load_testnet,
)

__all__ = ["testnet_group"]

# Nodes get this long to open their stores, connect and serve the API.
_REFRESH_S: Final = 1.0
DEFAULT_DEMO_SEED: Final = 0

_DEMO_OPTION = click.option(
    "--demo/--no-demo",
    default=True,
    show_default=True,
    help="Seed the demo consortium (banks, enterprises, customers; all four apps).",
)
_DEMO_SEED_OPTION = click.option(
    "--demo-seed",
    type=click.IntRange(min=0),
    default=DEFAULT_DEMO_SEED,
    show_default=True,
    help="Seed of the demo parties' keys.",
)


@click.group("testnet")
def testnet_group() -> None:
    """Generate and run a local multi-process testnet."""


@testnet_group.command("init")
@click.option("--validators", "-n", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path))
@click.option("--chain-id", default="suanpan-testnet", show_default=True)
@_DEMO_OPTION
@_DEMO_SEED_OPTION
def testnet_init(
    validators: int, directory: Path, chain_id: str, demo: bool, demo_seed: int
) -> None:
    """Write every node home of a testnet (run each with `suanpan start --home DIR/nodeI`)."""
    try:
        info = create_testnet(
            directory, validators, chain_id=chain_id, demo_seed=demo_seed if demo else None
        )
    except (FileExistsError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {validators} node homes under {directory}")
    for home, address in zip(info.homes, info.api_addresses, strict=True):
        click.echo(f"  suanpan start --home {home}    # API http://{address}")
    if info.parties:
        click.echo(f"demo parties' key files: {directory}/clients/<party>.json")


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


def _table(
    rows: list[list[str]], elapsed_s: float, load: LoadGenerator | DemoLoadGenerator | None
) -> Table:
    caption = f"{elapsed_s:.0f}s"
    if load is not None:
        caption += f" | {load.summary_line()}"
    table = Table(title="suanpan testnet (Ctrl-C to stop)", caption=caption)
    for column in ("node", "state", "height", "view", "peers", "mempool", "tx/s", "committed"):
        table.add_column(column, justify="left" if column in ("node", "state") else "right")
    for row in rows:
        table.add_row(*row)
    return table


class _Interrupted(Exception):
    pass


def _answers(address: str) -> bool:
    """True when a node already serves ``address`` (a testnet started twice)."""
    with Client(address, timeout_s=5.0) as client:
        try:
            client.health()
        except ApiError:
            return False
    return True


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
@_DEMO_OPTION
@_DEMO_SEED_OPTION
def testnet_up(
    validators: int,
    directory: Path | None,
    duration: float | None,
    load_rate: float,
    as_json: bool,
    demo: bool,
    demo_seed: int,
) -> None:
    """Run a local testnet of N validator processes with a live view; Ctrl-C stops it.

    With the demo consortium (the default), --load drives its payments, FX, receivables,
    assets and DvP traffic; the parties' key files are in DIR/clients/."""
    console = Console(stderr=as_json)
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="suanpan-testnet-"))
    info: TestnetInfo
    if (directory / "testnet.json").exists():
        try:
            info = load_testnet(directory)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise click.ClickException(
                f"{directory / 'testnet.json'} is not a testnet file: {error!r}"
            ) from None
    else:
        try:
            info = create_testnet(directory, validators, demo_seed=demo_seed if demo else None)
        except (FileExistsError, ValueError) as error:
            raise click.ClickException(str(error)) from None
    console.print(f"testnet directory {directory} (logs: {directory}/node*/node.log)")
    if info.parties:
        console.print(
            f"demo parties ({', '.join(party.name for party in info.parties)}): key files in"
            f" {directory}/clients/, e.g. `suanpan query payments balances --account"
            f" {directory}/clients/alice.json --node {directory}`"
        )
    running = [i for i, address in enumerate(info.api_addresses) if _answers(address)]
    if running:
        raise click.ClickException(
            f"node{running[0]} of {directory} is already running (its API "
            f"{info.api_addresses[running[0]]} answers); stop that testnet first"
        )
    testnet = Testnet(info)
    clients = [testnet.client(i, timeout_s=5.0) for i in range(len(info.homes))]

    def interrupt(_signal: int, _frame: FrameType | None) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGINT, interrupt)
    previous_term = signal.signal(signal.SIGTERM, interrupt)
    load: LoadGenerator | DemoLoadGenerator | None = None
    started = time.monotonic()
    startup_error = ""
    try:
        testnet.start_all()
        testnet.wait_serving()
        if load_rate > 0:
            load = _load_generator(info, clients[0], load_rate)
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
    demo_state = _demo_state(clients[0], info) if not startup_error else {}
    summaries = testnet.summaries()
    exit_codes = testnet.stop_all()
    summaries = [
        dataclasses.replace(summary, exit_code=code)
        for summary, code in zip(summaries, exit_codes, strict=True)
    ]
    signal.signal(signal.SIGINT, previous)
    failures = [
        f"node{i} died (exit code {exit_codes[i]}); see {info.homes[i] / 'process.log'}"
        for i in died
    ] + problems
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
        document["load"] = load.to_json()
    if demo_state:
        document["demo_state"] = demo_state
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
        if load is not None:
            console.print(load.summary_line())
        if demo_state:
            console.print(_demo_state_table(demo_state))
        for failure in failures:
            console.print(f"[red]FAIL[/red] {failure}")
        if not failures:
            console.print("[green]all nodes agree[/green]")
    if failures:
        raise SystemExit(1)


def _load_generator(
    info: TestnetInfo, client: Client, load_rate: float
) -> LoadGenerator | DemoLoadGenerator:
    """Demo traffic when the genesis holds the demo consortium, else membership traffic."""
    consortium = info.consortium()
    if consortium is None:
        senders = [
            (info.client_key(i), info.institutions[i], info.api_addresses[i])
            for i in range(len(info.homes))
        ]
        return LoadGenerator(info.chain_id, senders, load_rate)
    # Resuming a chain that already has traffic: continue every party's nonces, and vary the
    # stream so it does not replay the last run's identifiers.
    nonces = DemoLoadGenerator.fetch_nonces(client, consortium)
    return DemoLoadGenerator(
        consortium,
        info.api_addresses,
        load_rate,
        nonces=nonces,
        traffic_seed=consortium.seed + sum(nonces.values()),
    )


def _demo_state(client: Client, info: TestnetInfo) -> dict[str, JsonType]:
    """What the demo apps hold now (from node 0): currency supplies, assets, open offers,
    receivables owed by the core enterprise."""
    if not info.parties:
        return {}
    try:
        currencies = client.query_app("payments", "currencies")
        assets = client.query_app("assets", "assets")
        fx_offers = client.query_app("payments", "offers")
        dvp_offers = client.query_app("assets", "offers")
        exposure = client.query_app(
            "scf", "exposure", debtor=info.party("dragon-motors").public_key
        )
    except (ApiError, KeyError):
        return {}
    return {
        "currencies": [
            {"code": _field(entry, "code"), "supply": _field(entry, "supply")}
            for entry in _items(currencies)
        ],
        "assets": [
            {
                "symbol": _field(entry, "symbol"),
                "supply": _field(entry, "supply"),
                "holders": _field(entry, "holders"),
            }
            for entry in _items(assets)
        ],
        "open_fx_offers": len(_items(fx_offers)),
        "open_dvp_offers": len(_items(dvp_offers)),
        "dragon_motors_receivables": to_json(exposure),
    }


def _items(value: Value) -> tuple[Value, ...]:
    return tuple(value) if isinstance(value, list | tuple) else ()


def _field(entry: Value, name: str) -> JsonType:
    if not isinstance(entry, dict):
        return None
    return to_json(entry.get(name))


def _demo_state_table(state: dict[str, JsonType]) -> Table:
    table = Table(title="demo state (node0)")
    table.add_column("what")
    table.add_column("value")
    for entry in _json_list(state.get("currencies")):
        if isinstance(entry, dict):
            table.add_row(f"{entry.get('code')} supply", str(entry.get("supply")))
    for entry in _json_list(state.get("assets")):
        if isinstance(entry, dict):
            table.add_row(
                f"{entry.get('symbol')} supply / holders",
                f"{entry.get('supply')} / {entry.get('holders')}",
            )
    table.add_row(
        "open FX / DvP offers", f"{state.get('open_fx_offers')} / {state.get('open_dvp_offers')}"
    )
    table.add_row("dragon-motors receivables", json.dumps(state.get("dragon_motors_receivables")))
    return table


def _json_list(value: JsonType) -> list[JsonType]:
    return value if isinstance(value, list) else []
