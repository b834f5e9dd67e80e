"""The execution benchmark runs end to end on a small workload: every phase is timed, the
in-memory and LMDB runs agree on the fingerprint, and every transaction is accepted."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from apps.transaction import Transaction
from node.bench.execution import (
    PHASES,
    BlockSample,
    estimated_leaf_pages,
    growth_segments,
    main,
    prepare_workload,
    run_benchmark,
)


@pytest.mark.parametrize("mix", ["demo", "payments"])
def test_small_benchmark_runs_and_backends_agree(mix: str) -> None:
    workload = prepare_workload(mix, transactions=60, block_size=25)
    assert [len(block) for block in workload.blocks] == [25, 25, 10]
    result = run_benchmark(workload, runs=1)
    assert result.accepted == 60
    assert set(result.microseconds_per_tx) == set(PHASES)
    assert all(value >= 0 for value in result.cpu_microseconds_per_tx.values())
    assert len(result.fingerprint) == 64
    first, last = result.ledger_growth
    assert (first.name, first.committed_before, first.blocks) == ("first", 0, 1)
    assert (last.name, last.committed_before, last.blocks) == ("last", 50, 1)
    assert first.commit_cpu_us_per_tx > 0
    assert last.execute_cpu_us_per_tx > 0
    assert first.state_writes_per_tx > 1
    assert last.tree_records_per_tx > 1
    # The last block (10 transactions) wrote its state keys, tree records and 10 index
    # entries, each database's records on at least one page and at most one page each.
    pages = result.last_block_pages
    assert set(pages) == {"state", "tree", "transactions"}
    assert pages["transactions"][0] == 10
    assert all(1 <= estimated <= records for records, estimated in pages.values())
    # Same transactions, same results: a second run reproduces the fingerprint, and so does
    # one that writes two blocks per LMDB transaction (the last one alone).
    assert run_benchmark(workload, runs=1).fingerprint == result.fingerprint
    batched = run_benchmark(workload, runs=1, commit_blocks=2)
    assert batched.fingerprint == result.fingerprint
    assert batched.commit_blocks == 2
    assert batched.accepted == 60


def test_accounts_mix_is_the_catchup_benchmarks_transfers() -> None:
    # The catch-up benchmark's 200 accounts (4 banks of 50), each bank's
    # stream interleaved: a block's transfers come from many senders, not the demo's ten.
    workload = prepare_workload("accounts", transactions=450, block_size=200)
    assert workload.chain_id == "suanpan-bench"
    assert [len(block) for block in workload.blocks] == [200, 200, 50]
    senders = {
        Transaction.decode(raw, chain_id=workload.chain_id).sender for raw in workload.blocks[0]
    }
    assert len(senders) == 200
    result = run_benchmark(workload, runs=1)
    assert result.accepted == 450
    assert len(result.fingerprint) == 64
    assert run_benchmark(workload, runs=1).fingerprint == result.fingerprint


def test_unknown_mix_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown mix"):
        prepare_workload("lottery", transactions=1, block_size=1)


def test_growth_segments_are_the_first_and_last_fifth_with_medians_over_runs() -> None:
    # Ten blocks of 100 transactions: fifths of two blocks; block i costs i ms to execute and
    # 2i ms to commit and writes i KiB in the first run, twice that in the second and third.
    def run(scale: float) -> list[BlockSample]:
        return [
            (100, scale * i / 1000, scale * 2 * i / 1000, int(scale * i * 1024), 400, 100 * i)
            for i in range(10)
        ]

    first, last = growth_segments([run(1), run(2), run(2)])
    assert (first.name, first.committed_before, first.blocks) == ("first", 0, 2)
    assert (last.name, last.committed_before, last.blocks) == ("last", 800, 2)
    # The median run is a doubled one: blocks 0 and 1 take 2 ms over 200 transactions...
    assert first.execute_cpu_us_per_tx == 10.0
    assert first.commit_cpu_us_per_tx == 20.0
    assert first.written_kib_per_block == 1.0
    # Blocks 0 and 1 wrote 0 and 100 tree records for 200 transactions, 8 and 9 wrote 1,700.
    assert (first.state_writes_per_tx, first.tree_records_per_tx) == (4.0, 0.5)
    assert (last.state_writes_per_tx, last.tree_records_per_tx) == (4.0, 8.5)
    # ...blocks 8 and 9 take 34 ms.
    assert last.execute_cpu_us_per_tx == 170.0
    assert last.commit_cpu_us_per_tx == 340.0
    assert last.written_kib_per_block == 17.0


def test_growth_segments_without_write_figures_or_blocks() -> None:
    blocks: list[BlockSample] = [(10, 0.001, 0.002, None, 0, 0)] * 3
    segments = growth_segments([blocks])
    assert [segment.blocks for segment in segments] == [1, 1]
    assert all(segment.written_kib_per_block is None for segment in segments)
    assert growth_segments([[]]) == ()


def test_growth_segments_keep_write_transactions_whole() -> None:
    # Seven blocks written three to a transaction: the commit shows at blocks 2, 5 and 6.
    blocks: list[BlockSample] = [
        (10, 0.001, 0.003 if index in (2, 5, 6) else 0.0, 30 if index in (2, 5, 6) else 0, 5, 9)
        for index in range(7)
    ]
    first, last = growth_segments([blocks], commit_blocks=3)
    assert (first.committed_before, first.blocks) == (0, 3)
    assert first.commit_cpu_us_per_tx == 100.0
    # The last stretch is whole transactions to the end: blocks 3 to 6 (the last one short).
    assert (last.committed_before, last.blocks) == (30, 4)
    assert last.commit_cpu_us_per_tx == 150.0
    assert last.written_kib_per_block == 60 / 1024 / 4


def test_benchmark_refuses_a_non_positive_count() -> None:
    outcome = CliRunner().invoke(main, ["--commit-blocks", "0"])
    assert outcome.exit_code == 2
    assert "commit blocks must be positive" in outcome.output


def test_estimated_leaf_pages_counts_the_runs_of_keys_the_writes_fall_in() -> None:
    keys = [b"%04d" % number for number in range(1000)]  # ten pages of 100 keys
    assert estimated_leaf_pages(keys, [b"0000", b"0099", b"0100", b"0999"], 10) == 3
    # A key between two stored ones counts where it would be inserted.
    assert estimated_leaf_pages(keys, [b"0050x", b"0550"], 10) == 2
    assert estimated_leaf_pages(keys, [], 10) == 0
    assert estimated_leaf_pages([], [b"a"], 0) == 0
