"""The network layer's ``suanpan`` commands (registered in ``node/cli/main.py``)."""

from __future__ import annotations

import click

from network.bench import benchmark

__all__ = ["bench_gossip"]


@click.command("gossip", short_help="Gossip throughput between 4 node processes.")
@click.option(
    "--transactions", default=100_000, show_default=True, help="Signed transactions to gossip."
)
@click.option("--runs", default=3, show_default=True, help="Runs; the summary is the median.")
def bench_gossip(transactions: int, runs: int) -> None:
    """Gossip throughput: 4 node processes on loopback, one gossips, three receive."""
    if transactions < 1 or runs < 1:
        raise click.BadParameter("transactions and runs must be positive")
    try:
        benchmark(transactions, runs, echo=click.echo)
    except RuntimeError as error:
        raise click.ClickException(str(error)) from None
