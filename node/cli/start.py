"""``suanpan start --home DIR``: run one node until SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import errno
import faulthandler
import gc
import logging
import socket
import sys
from pathlib import Path
from typing import Final

import click
import trio

from node.config import HostPort, NodeConfig
from node.home import CONFIG_FILE, HomeError, load_home
from node.logs import configure_logging
from node.store import StoreDamagedError
from node.termination import take_held_termination

__all__ = [
    "GC_THRESHOLDS",
    "listen_address_problems",
    "report_fatal_signals",
    "start_command",
    "tune_garbage_collector",
]

log = logging.getLogger("suanpan.node")

# The cyclic garbage collector's thresholds for a running node. A collection of the youngest
# generation runs when the tracked objects allocated and not yet freed exceed the first figure.
# Executing a block allocates and frees thousands of containers per transaction; almost all are
# freed by reference counting, but the count passes Python's default of 700 many times per
# block, and each pass walked every young object still in use. Only objects kept alive (or
# garbage cycles, which nothing here makes in bulk) raise the count past 50,000, so collections
# become rare and their work bounded: at most that many objects wait for one.
GC_THRESHOLDS: Final = (50_000, 20, 100)


def _listeners(config: NodeConfig) -> list[tuple[str, HostPort]]:
    listeners = [("p2p", config.p2p.listen_address), ("rpc", config.rpc.listen_address)]
    if config.metrics.enabled and config.metrics.listen_address is not None:
        listeners.append(("metrics", config.metrics.listen_address))
    return listeners


def listen_address_problems(config: NodeConfig) -> list[str]:
    """Every configured listen address this process cannot bind now (another node already
    running, a port taken by something else, a host that is not a local address), one line
    each naming the config key; port 0 (any free port) is skipped."""
    problems: list[str] = []
    for section, address in _listeners(config):
        if address.port == 0:
            continue
        where = f"{CONFIG_FILE}: [{section}] listen_address {address}"
        try:
            infos = socket.getaddrinfo(
                address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except socket.gaierror as error:
            problems.append(f"{where}: cannot resolve {address.host!r}: {error.strerror}")
            continue
        family, kind, protocol, _, sockaddr = infos[0]
        with socket.socket(family, kind, protocol) as probe:
            # The same option trio's listeners set, so a port in TIME_WAIT is not refused here.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as error:
                reason = (
                    "already in use (is this node, or another one, already running?)"
                    if error.errno == errno.EADDRINUSE
                    else error.strerror or str(error)
                )
                problems.append(f"{where}: {reason}")
    return problems


def _address_in_use(error: BaseException) -> bool:
    """True when ``error`` (or every leaf of an exception group) is EADDRINUSE."""
    if isinstance(error, BaseExceptionGroup):
        return all(_address_in_use(inner) for inner in error.exceptions)
    return isinstance(error, OSError) and error.errno == errno.EADDRINUSE


@click.command("start", short_help="Start the node in a home directory.")
@click.option("--home", "home", required=True, type=click.Path(file_okay=False, path_type=Path))
def start_command(home: Path) -> None:
    """Start the node in HOME (config.toml, genesis.json, keys, data/); Ctrl-C stops it."""
    try:
        loaded = load_home(home)
    except HomeError as error:
        for problem in error.problems:
            click.echo(str(problem), err=True)
        raise click.ClickException(
            f"{len(error.problems)} problem(s) in {home}; `suanpan config check --home {home}`"
        ) from None
    unbindable = listen_address_problems(loaded.config)
    if unbindable:
        for line in unbindable:
            click.echo(f"{home}/{line}", err=True)
        raise click.ClickException(
            f"cannot listen on {len(unbindable)} address(es); stop what holds them or change "
            f"the ports in {home}/{CONFIG_FILE}"
        )
    try:
        configure_logging(loaded.config.log_level, loaded.config.log_format, loaded.log_path())
    except OSError as error:  # a full disk, a permission: the file cannot be made or opened
        raise click.ClickException(
            f"cannot open the log file {loaded.log_path()}: {error.strerror or error}"
        ) from None
    report_fatal_signals()
    if take_held_termination():
        # Asked to stop while still loading (node.termination): nothing is open yet.
        log.info("start_cancelled", extra={"signal": "SIGTERM"})
        return
    from node.runtime import Node, NodeStartError, NodeStoppedError, raised_in, stopped_error
    from node.testnet.faults import testnet_hooks_for

    try:
        node = Node(
            loaded, fault_hooks=testnet_hooks_for if loaded.config.testnet.fault_hooks else None
        )
    except NodeStartError as error:
        raise click.ClickException(str(error)) from None
    tune_garbage_collector()
    try:
        trio.run(node.run)
    except (OSError, NodeStoppedError, StoreDamagedError, BaseExceptionGroup) as error:
        stopped = stopped_error(error)
        if stopped is not None:
            raise click.ClickException(str(stopped)) from None
        # A read of a node task met a damaged page of the store: the node stops rather than
        # vote, execute or serve blocks from a store it cannot read (docs/operators.md).
        damaged = raised_in(error, StoreDamagedError)
        if damaged is not None:
            log.critical("store_damaged", extra={"home": str(home), "error": str(damaged)})
            raise click.ClickException(f"the node stopped: {damaged}") from None
        # Another process took a port between the check above and the bind.
        if not _address_in_use(error):
            raise
        raise click.ClickException(
            f"a listen address in {home}/{CONFIG_FILE} is already in use: {error}"
        ) from None
    if node.halted_at is not None:
        click.echo(
            f"the node halted at height {node.halted_at} ([consensus] halt_height in "
            f"{home}/{CONFIG_FILE}); remove the key or set it higher to go on",
            err=True,
        )


def report_fatal_signals() -> None:
    """On a signal no Python code survives (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT), write
    each thread's Python stack to stderr before the process dies. LMDB trusts the pages it
    reads, so a damaged record header can make it read past the end of the store's file
    (SIGBUS): the stack says which read met it (docs/operators.md, "A damaged store").
    Without a usable stderr (a daemon that closed it) there is nowhere to write: skipped."""
    with contextlib.suppress(AttributeError, RuntimeError, ValueError, OSError):
        faulthandler.enable(file=sys.stderr, all_threads=True)


def tune_garbage_collector() -> None:
    """Set the node process's collector for a long run (``GC_THRESHOLDS``), after start-up:
    what start-up made (modules, configuration, genesis) is collected once and then frozen,
    so later full collections do not walk it again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    log.info(
        "garbage_collector_tuned",
        extra={"thresholds": list(GC_THRESHOLDS), "frozen_objects": gc.get_freeze_count()},
    )
