"""``suanpan testnet init`` and ``suanpan testnet up``: a local multi-process testnet.

By default the testnet's genesis holds the demo consortium (``apps.demo``) and runs all four
apps; ``--load TPS`` then drives its business traffic
(``node.testnet.loadgen.DemoLoadGenerator``), and the parties' key files in ``DIR/clients/``
let a visitor act as any of them with the CLI.
``--no-demo`` gives the bare testnet (membership only, membership load).
``--observers K`` adds K nodes that follow the chain and serve the API without voting.

While ``testnet up`` runs, ``testnet add-validator``, ``remove-validator`` and ``rotate-key``
change the validator set by the banks' governance votes (``node.testnet.reconfig``): they
write ``testnet.json``, and ``testnet up`` (which re-reads it every refresh) starts the nodes
it lists and stops the ones marked retired."""

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
from node.cli.signals import terminate_unwinds
from node.client.client import ApiError, Client
from node.jsonvalue import JsonType, to_json
from node.testnet.hosts import (
    API_LISTEN_CHOICES,
    DEFAULT_API_PORT,
    DEFAULT_METRICS_PORT,
    DEFAULT_P2P_PORT,
    P2P_LISTEN_CHOICES,
    SYSTEMD_UNIT_FILE,
    hosts_layout,
    parse_hosts,
    systemd_unit,
)
from node.testnet.loadgen import DemoLoadGenerator, LoadGenerator
from node.testnet.netns import NetnsError, Topology, netns_unavailable_reason
from node.testnet.reconfig import (
    Governance,
    GovernanceError,
    add_node,
    add_validator,
    finish_rotation,
    mark_role,
    prepare_rotation,
    remove_validator,
    rotate_validator_key,
    wait_for_height,
)
from node.testnet.testnet import (
    Layout,
    Testnet,
    TestnetInfo,
    agreement_problems,
    apply_layout,
    create_testnet,
    load_testnet,
    stored_tip,
)

__all__ = ["testnet_group"]

# Nodes get this long to open their stores, connect and serve the API.
_REFRESH_S: Final = 1.0
DEFAULT_DEMO_SEED: Final = 0

_OBSERVERS_OPTION = click.option(
    "--observers",
    type=click.IntRange(0, 64),
    default=0,
    show_default=True,
    help="Also run this many observer nodes: they follow the chain and serve the client API"
    " (for regulators and auditors) without voting.",
)
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


@testnet_group.command("init", short_help="Write every node home of a local testnet.")
@click.option(
    "--validators",
    "-n",
    type=click.IntRange(1, 64),
    help="Number of validators [default: 4, or one per --hosts entry].",
)
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path))
@click.option("--chain-id", default="suanpan-testnet", show_default=True)
@_OBSERVERS_OPTION
@click.option(
    "--hosts",
    "hosts_text",
    metavar="HOST1,HOST2,...",
    help="One node per machine: node<i> runs on the i-th host (IP address or DNS name), and"
    " every node's persistent peers are the other hosts.",
)
@click.option(
    "--p2p-listen",
    type=click.Choice(P2P_LISTEN_CHOICES),
    help="With --hosts: accept peers on every address of the machine (any, the default) or"
    " only on its --hosts address (host).",
)
@click.option(
    "--api-listen",
    type=click.Choice(API_LISTEN_CHOICES),
    help="With --hosts: serve the client API and metrics on loopback (the default) or on the"
    " machine's --hosts address.",
)
@click.option(
    "--p2p-port", type=click.IntRange(1, 65535), help=f"With --hosts [default {DEFAULT_P2P_PORT}]."
)
@click.option(
    "--api-port", type=click.IntRange(1, 65535), help=f"With --hosts [default {DEFAULT_API_PORT}]."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help=f"With --hosts [default {DEFAULT_METRICS_PORT}].",
)
@_DEMO_OPTION
@_DEMO_SEED_OPTION
def testnet_init(
    validators: int | None,
    directory: Path,
    chain_id: str,
    observers: int,
    hosts_text: str | None,
    p2p_listen: str | None,
    api_listen: str | None,
    p2p_port: int | None,
    api_port: int | None,
    metrics_port: int | None,
    demo: bool,
    demo_seed: int,
) -> None:
    """Write every node home of a testnet (run each with `suanpan start --home DIR/nodeI`).

    With --hosts the homes are for separate machines: copy DIR/node<i> to the i-th host and
    start it there (docs/operators.md: "Running one node per machine")."""
    host_options = {
        "--p2p-listen": p2p_listen,
        "--api-listen": api_listen,
        "--p2p-port": p2p_port,
        "--api-port": api_port,
        "--metrics-port": metrics_port,
    }
    layout: Layout | None = None
    if hosts_text is None:
        given = [name for name, value in host_options.items() if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} only apply with --hosts")
        validators = validators or 4
    else:
        if observers:
            raise click.UsageError("--observers applies to a local testnet, not with --hosts")
        try:
            hosts = parse_hosts(hosts_text, validators=validators)
            layout = hosts_layout(
                hosts,
                p2p_listen=p2p_listen or "any",
                api_listen=api_listen or "loopback",
                p2p_port=p2p_port or DEFAULT_P2P_PORT,
                api_port=api_port or DEFAULT_API_PORT,
                metrics_port=metrics_port or DEFAULT_METRICS_PORT,
            )
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--hosts") from None
        validators = len(hosts)
    try:
        info = create_testnet(
            directory,
            validators,
            chain_id=chain_id,
            demo_seed=demo_seed if demo else None,
            layout=layout,
            observers=observers,
        )
    except (FileExistsError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    if layout is not None:
        _print_hosts_instructions(info, layout)
    else:
        click.echo(f"wrote {len(info.homes)} node homes under {directory}")
        for index, (home, address) in enumerate(zip(info.homes, info.api_addresses, strict=True)):
            role = "" if info.role(index) == "validator" else f" ({info.role(index)})"
            click.echo(f"  suanpan start --home {home}    # API http://{address}{role}")
    if info.parties:
        click.echo(f"demo parties' key files: {directory}/clients/<party>.json")


def _print_hosts_instructions(info: TestnetInfo, layout: Layout) -> None:
    unit = info.directory / SYSTEMD_UNIT_FILE
    unit.write_text(systemd_unit(), "utf-8")
    p2p_port = layout.nodes[0].p2p_listen.port
    click.echo(f"wrote {len(info.homes)} node homes under {info.directory}, one per host:")
    for home, host, addresses in zip(info.homes, info.hosts, layout.nodes, strict=True):
        click.echo(
            f"  {home.name} -> {host}: peers {addresses.p2p_listen},"
            f" API http://{addresses.rpc_listen} (on that machine)"
        )
    click.echo(
        f"copy {info.directory}/node<i> to host i (e.g. to /var/lib/suanpan/node<i>) and run"
        " `suanpan start --home /var/lib/suanpan/node<i>` there, or install the systemd unit"
        f" {unit} and `systemctl enable --now suanpan@node<i>`"
    )
    click.echo(
        f"firewall: allow TCP {p2p_port} between these hosts only; the API and metrics ports"
        " stay closed to the outside. Each home holds its node's private keys: copy it to its"
        " own machine only."
    )


def _reconcile(testnet: Testnet, clients: list[Client]) -> None:
    """Follow ``testnet.json``: start the nodes added since (``testnet add-validator``) and stop
    the ones marked retired (``testnet remove-validator``)."""
    try:
        fresh = load_testnet(testnet.info.directory)
    except (OSError, ValueError, KeyError, TypeError):
        return  # being rewritten: next refresh
    if fresh.homes[: len(testnet.info.homes)] != testnet.info.homes:
        return
    for index in testnet.adopt(fresh):
        clients.append(testnet.client(index, timeout_s=5.0))
        testnet.start(index)
    for index in range(len(fresh.homes)):
        process = testnet.processes[index]
        if fresh.role(index) == "retired" and process is not None and process.poll() is None:
            testnet.stop(index)


def _all_halted(testnet: Testnet, halted: list[int]) -> bool:
    """Every node of the testnet (but the retired ones) is among ``halted``."""
    return bool(halted) and all(
        index in halted
        for index in range(len(testnet.info.homes))
        if testnet.info.role(index) != "retired"
    )


def _agreement_problems(testnet: Testnet, clients: list[Client]) -> list[str]:
    """``agreement_problems`` of the nodes not retired: the running ones by their API, those
    that halted at their ``[consensus] halt_height`` by their stores."""
    info = testnet.info
    halted = testnet.halted()
    return agreement_problems(
        [
            info.homes[index] if index in halted else client
            for index, client in enumerate(clients)
            if info.role(index) != "retired"
        ]
    )


def _status_row(index: int, client: Client, testnet: Testnet, halted: list[int]) -> list[str]:
    process = testnet.processes[index]
    name = testnet.info.homes[index].name
    if testnet.info.role(index) == "retired":
        return [name, "[dim]retired[/dim]", "", "", "", "", "", ""]
    if index in halted:
        height = stored_tip(testnet.info.homes[index])[0]
        return [name, "[blue]halted[/blue]", str(height), "", "", "", "", ""]
    if process is None or process.poll() is not None:
        code = None if process is None else process.returncode
        return [name, f"[red]exited {code}[/red]", "", "", "", "", "", ""]
    try:
        status = client.status()
    except ApiError:
        return [name, "[yellow]starting[/yellow]", "", "", "", "", "", ""]
    state = "[cyan]syncing[/cyan]" if status.get("syncing") else "[green]up[/green]"
    if status.get("role") == "observer":
        state += " [dim](observer)[/dim]"
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


@testnet_group.command("up", short_help="Run a local testnet with a live view.")
@click.option("--validators", "-n", default=4, show_default=True, type=click.IntRange(1, 64))
@_OBSERVERS_OPTION
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    help="Testnet directory (reused when it holds one; default: a new temporary directory).",
)
@click.option("--duration", type=click.FloatRange(min=0), help="Stop after this many seconds.")
@click.option("--load", "load_rate", type=click.FloatRange(min=0), default=0, help="Target tx/s.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option(
    "--netns",
    is_flag=True,
    help="Run each node in its own Linux network namespace, joined by one veth pair per node"
    " pair (root only); the APIs stay reachable from this machine.",
)
@_DEMO_OPTION
@_DEMO_SEED_OPTION
def testnet_up(
    validators: int,
    observers: int,
    directory: Path | None,
    duration: float | None,
    load_rate: float,
    as_json: bool,
    netns: bool,
    demo: bool,
    demo_seed: int,
) -> None:
    """Run a local testnet of N validator processes with a live view; Ctrl-C stops it.

    With the demo consortium (the default), --load drives its payments, FX, receivables,
    assets and DvP traffic; the parties' key files are in DIR/clients/."""
    console = Console(stderr=as_json)
    if netns:
        reason = netns_unavailable_reason()
        if reason is not None:
            raise click.ClickException(f"--netns is not possible here: {reason}")
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="suanpan-testnet-"))
    existing: TestnetInfo | None = None
    if (directory / "testnet.json").exists():
        try:
            existing = load_testnet(directory)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise click.ClickException(
                f"{directory / 'testnet.json'} is not a testnet file: {error!r}"
            ) from None
        _check_layout(existing, netns)
        running = [i for i, address in enumerate(existing.api_addresses) if _answers(address)]
        if running:
            raise click.ClickException(
                f"node{running[0]} of {directory} is already running (its API "
                f"{existing.api_addresses[running[0]]} answers); stop that testnet first"
            )
    topology: Topology | None = None
    # SIGTERM unwinds like Ctrl-C, through the clean-up below.
    with terminate_unwinds():
        try:
            if netns:
                topology = Topology(
                    validators + observers if existing is None else len(existing.homes)
                )
                try:
                    topology.create()  # removes what it built if it fails or is interrupted
                except NetnsError as error:
                    raise click.ClickException(str(error)) from None
            try:
                layout = None if topology is None else topology.layout()
                if existing is None:
                    info = create_testnet(
                        directory,
                        validators,
                        demo_seed=demo_seed if demo else None,
                        layout=layout,
                        observers=observers,
                    )
                else:
                    info = existing if layout is None else apply_layout(existing, layout)
            except (FileExistsError, ValueError) as error:
                raise click.ClickException(str(error)) from None
            _run_testnet(info, topology, console, duration, load_rate, as_json)
        finally:
            if topology is not None:
                problems = topology.close() + topology.leftovers()
                for problem in problems:
                    console.print(f"[red]FAIL[/red] network namespace clean-up: {problem}")


def _check_layout(info: TestnetInfo, netns: bool) -> None:
    """Refuse a testnet directory ``testnet up`` cannot run as asked."""
    if info.layout == "hosts":
        raise click.ClickException(
            f"{info.directory} was written for separate hosts ({', '.join(info.hosts)}): copy"
            f" {info.directory}/node<i> to host i and run `suanpan start --home ...` there"
        )
    if netns and info.layout != "netns":
        raise click.ClickException(
            f"{info.directory} was generated without --netns; give --netns a new --dir"
        )
    if not netns and info.layout == "netns":
        raise click.ClickException(f"{info.directory} was generated with --netns; add --netns")


def _run_testnet(
    info: TestnetInfo,
    topology: Topology | None,
    console: Console,
    duration: float | None,
    load_rate: float,
    as_json: bool,
) -> None:
    """Start the nodes, show the live view until the duration or Ctrl-C, print the summary;
    exits 1 when a node died or the nodes disagree."""
    directory = info.directory
    console.print(f"testnet directory {directory} (logs: {directory}/node*/node.log)")
    if topology is not None:
        console.print(
            f"nodes in network namespaces {topology.namespace(0)}..{len(info.homes) - 1}"
            f" (e.g. `ip netns exec {topology.namespace(0)} ip address`); APIs at"
            f" {', '.join(info.api_addresses)}"
        )
    if info.parties:
        console.print(
            f"demo parties ({', '.join(party.name for party in info.parties)}): key files in"
            f" {directory}/clients/, e.g. `suanpan query payments balances --account"
            f" {directory}/clients/alice.json --node {directory}`"
        )
    prefixes = [topology.command_prefix(i) for i in range(len(info.homes))] if topology else []
    testnet = Testnet(info, prefixes)
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
                _reconcile(testnet, clients)
                halted = testnet.halted()  # read from the logs once per refresh
                rows = [_status_row(i, client, testnet, halted) for i, client in enumerate(clients)]
                live.update(_table(rows, time.monotonic() - started, load))
                if testnet.died(halted) or _all_halted(testnet, halted):
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
    info = testnet.info
    try:
        problems = _agreement_problems(testnet, clients) if not died and not startup_error else []
    except ApiError as error:
        problems = [f"cannot compare chains: {error}"]
    demo_state = _demo_state(clients[0], info) if not startup_error else {}
    for client in clients:
        client.close()
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
                f"{summary.name} (halted)" if summary.halted else summary.name,
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
            for i in range(len(info.clients))
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
        reader=info.reader_key(),
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


# ------------------------------------------------------------------ validator-set changes

# How long a reconfiguration command waits for `testnet up` to start a node, and for a change
# to take effect and the node to vote (a busy machine under load is slow).
_RECONFIGURE_TIMEOUT_S: Final = 180.0


def _running_testnet(directory: Path) -> TestnetInfo:
    try:
        info = load_testnet(directory)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise click.ClickException(f"{directory} holds no testnet: {error!r}") from None
    if not any(
        _answers(address)
        for index, address in enumerate(info.api_addresses)
        if info.role(index) == "validator"
    ):
        raise click.ClickException(
            f"no validator of {directory} answers: run `suanpan testnet up --dir {directory}`"
            " first (it starts the nodes these commands add)"
        )
    return info


def _wait_voting(info: TestnetInfo, index: int, height: int) -> dict[str, JsonType]:
    """Until node ``index`` has committed ``height`` and says it votes; its status."""
    deadline = time.monotonic() + _RECONFIGURE_TIMEOUT_S
    with Client(info.api_addresses[index], timeout_s=10.0) as client:
        while time.monotonic() < deadline:
            try:
                status = client.status()
            except ApiError:
                status = {}
            current = status.get("height")
            if isinstance(current, int) and current >= height and status.get("role") == "validator":
                return status
            time.sleep(_REFRESH_S)  # polling the node's status under a deadline
    raise click.ClickException(
        f"node{index} does not vote at height {height} after {_RECONFIGURE_TIMEOUT_S:.0f}s; see"
        f" {info.homes[index] / 'node.log'}"
    )


def _governance(info: TestnetInfo) -> Governance:
    try:
        return Governance(info, say=click.echo)
    except GovernanceError as error:
        raise click.ClickException(str(error)) from None


@testnet_group.command(
    "add-validator", short_help="Add a validator to a running testnet by the banks' votes."
)
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path))
def testnet_add_validator(directory: Path) -> None:
    """Add a validator to the running testnet of DIR by the banks' votes.

    Writes a new node home (DIR/node<N>, fresh keys), which `testnet up` starts; the banks
    admit a bank for it (bank<N>) and add its validator; the node syncs and votes from the
    height the change takes effect."""
    info = _running_testnet(directory)
    governance = _governance(info)
    try:
        info, index = add_node(info)
        click.echo(f"wrote {info.homes[index]} (API http://{info.api_addresses[index]})")
        info, decision = add_validator(info, index, governance)
    except (GovernanceError, ApiError, ValueError, OSError) as error:
        raise click.ClickException(str(error)) from None
    status = _wait_voting(info, index, decision.effective_height)
    click.echo(
        f"node{index} (bank{index}) is validator {status.get('validator_index')} from height"
        f" {decision.effective_height}; it is at height {status.get('height')}"
    )


@testnet_group.command(
    "remove-validator", short_help="Remove a validator from a running testnet by the banks' votes."
)
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path))
@click.option("--node", "index", required=True, type=click.IntRange(min=0), help="Node index.")
def testnet_remove_validator(directory: Path, index: int) -> None:
    """Remove node INDEX's validator from the running testnet of DIR by the banks' votes; once
    the removal is in force, `testnet up` stops the node (it is retired)."""
    info = _running_testnet(directory)
    if not index < len(info.homes) or info.role(index) != "validator":
        raise click.BadParameter(
            f"node{index} is not a validator of {directory}", param_hint="--node"
        )
    governance = _governance(info)
    try:
        decision = remove_validator(info, index, governance)
        others = [i for i in range(len(info.homes)) if i != index and info.role(i) == "validator"]
        with Client(info.api_addresses[others[0]], timeout_s=10.0) as client:
            wait_for_height(client, decision.effective_height, timeout_s=_RECONFIGURE_TIMEOUT_S)
        mark_role(info, index, "retired")
    except (GovernanceError, ApiError, TimeoutError, ValueError, OSError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"node{index}'s validator left the set at height {decision.effective_height};"
        " `testnet up` stops the node"
    )


@testnet_group.command(
    "rotate-key", short_help="Rotate a validator's key on a running testnet, without a restart."
)
@click.option("--dir", "directory", required=True, type=click.Path(path_type=Path))
@click.option("--node", "index", required=True, type=click.IntRange(min=0), help="Node index.")
def testnet_rotate_key(directory: Path, index: int) -> None:
    """Rotate node INDEX's validator key on the running testnet of DIR, without a restart: the
    node picks the next key up at its next block, the banks vote the rotation, and from the
    height it takes effect the node signs with the new key (the old one is then retired)."""
    info = _running_testnet(directory)
    if not index < len(info.homes) or info.role(index) != "validator":
        raise click.BadParameter(
            f"node{index} is not a validator of {directory}", param_hint="--node"
        )
    governance = _governance(info)
    try:
        key = prepare_rotation(info, index)
        click.echo(f"node{index}'s next validator key {key.public_key.hex()}")
        decision = rotate_validator_key(info, index, governance, key)
    except (GovernanceError, ApiError, ValueError, OSError) as error:
        raise click.ClickException(str(error)) from None
    status = _wait_voting(info, index, decision.effective_height)
    finish_rotation(info, index)
    click.echo(
        f"node{index} signs with its new key from height {decision.effective_height} (validator"
        f" {status.get('validator_index')}); its old key file is overwritten"
    )
