"""``suanpan bench signatures``: it measures every kind of check it names, refuses sizes it
cannot measure, and refuses to report a run whose signatures did not all verify."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from consensus.crypto import native_rule
from node.bench import signatures as bench
from node.cli import main


def test_the_report_names_every_check() -> None:
    report = bench.run_signature_bench(signatures=24, keys=3, batch_sizes=(2, 8, 24), repeats=1)
    figures = report.to_json()["cpu_us_per_signature"]
    assert isinstance(figures, dict)
    assert sorted(figures) == ["batch_2", "batch_24", "batch_8", "libsodium", "single"]
    assert all(isinstance(value, float) and value > 0 for value in figures.values())
    known = report.to_json()["cpu_us_per_signature_known_keys"]
    assert isinstance(known, dict)
    assert sorted(known) == ["batch_2", "batch_24", "batch_8", "single"]
    assert all(isinstance(value, float) and value > 0 for value in known.values())
    assert report.keys == 3


def test_new_keys_are_measured_with_the_table_emptied_and_known_keys_with_it_filled() -> None:
    native = native_rule()
    if native is None:
        pytest.skip("the portable rule keeps no keys")
    seen: list[int] = []

    def run() -> int:
        seen.append(native.key_cache_info()["filled"])
        return sum(native.verify(*check) for check in checks)

    checks = bench._signed(6, 3, 10)
    bench._per_signature_us(run, 6, 2)
    assert seen == [0, 0]
    seen.clear()
    native.key_cache_clear()
    bench._per_signature_us(run, 6, 2, known_keys=True)
    assert seen[0] == 0
    assert min(seen[1:]) >= 1  # the warm-up round filled the table


def test_sizes_it_cannot_measure_are_refused() -> None:
    with pytest.raises(ValueError, match=r"batch sizes must be 1\.\.8"):
        bench.run_signature_bench(signatures=8, batch_sizes=(16,), repeats=1)
    with pytest.raises(ValueError, match="must be positive"):
        bench.run_signature_bench(signatures=8, keys=0, batch_sizes=(), repeats=1)


def test_a_run_whose_signatures_do_not_all_verify_is_not_reported() -> None:
    with pytest.raises(RuntimeError, match="1 of 4 signatures did not verify"):
        bench._per_signature_us(lambda: 3, 4, 1)


def test_the_command_prints_json() -> None:
    result = CliRunner().invoke(
        main,
        ["bench", "signatures", "--signatures", "16", "--batch", "8", "--repeats", "1", "--json"],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert set(document["cpu_us_per_signature"]) == {"single", "libsodium", "batch_8"}
    refused = CliRunner().invoke(main, ["bench", "signatures", "--signatures", "4", "--batch", "8"])
    assert refused.exit_code == 2
    assert "batch sizes must be 1..4" in refused.output
