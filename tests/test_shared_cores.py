"""Where a node checks signatures: on its event loop's thread for batches of at most
``[mempool] verify_inline_max``, otherwise on a verifying thread; and the testnet tools'
choice of that setting for nodes that share the machine's cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from apps.transaction import Transaction
from node import runtime
from node.cli import main
from node.config import NodeConfig, parse_config, with_settings
from node.home import load_home
from node.testnet import testnet as testnet_module
from node.testnet.loadgen import register_identity_transaction
from node.testnet.testnet import VERIFY_INLINE_ALL, create_testnet, shared_cores_config

DEADLINE_S = 120.0
DEFAULT_INLINE = NodeConfig().mempool.verify_inline_max


def test_nodes_that_fill_the_cores_check_every_signature_on_their_loop() -> None:
    base = NodeConfig().with_changes("mempool", verify_workers=3)
    for nodes, cores in ((4, 2), (2, 2), (1, 1), (16, 4)):
        shared = shared_cores_config(base, nodes, cores)
        assert shared.mempool.verify_inline_max == VERIFY_INLINE_ALL, (nodes, cores)
        assert shared.mempool.verify_workers == 3  # nothing else changes
    for nodes, cores in ((1, 2), (4, 8), (3, 4)):
        assert shared_cores_config(base, nodes, cores) == base, (nodes, cores)
    # Settings given afterwards (--set) win.
    chosen = with_settings(shared_cores_config(base, 4, 2), ["mempool.verify_inline_max=8"])
    assert chosen.mempool.verify_inline_max == 8
    assert testnet_module.machine_cores() >= 1


@pytest.mark.parametrize(("cores", "expected"), [(2, VERIFY_INLINE_ALL), (8, DEFAULT_INLINE)])
def test_a_local_testnet_sets_it_by_the_cores_it_shares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int, expected: int
) -> None:
    monkeypatch.setattr(testnet_module, "machine_cores", lambda: cores)
    directory = tmp_path / "net"
    result = CliRunner().invoke(
        main, ["testnet", "init", "--dir", str(directory), "--validators", "4", "--no-demo"]
    )
    assert result.exit_code == 0, result.output
    for index in range(4):
        config, problems = parse_config((directory / f"node{index}" / "config.toml").read_bytes())
        assert config is not None, problems
        assert config.mempool.verify_inline_max == expected


def test_homes_for_separate_machines_keep_the_verifying_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(testnet_module, "machine_cores", lambda: 1)
    directory = tmp_path / "net"
    hosts = "10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4"
    result = CliRunner().invoke(
        main, ["testnet", "init", "--dir", str(directory), "--hosts", hosts, "--no-demo"]
    )
    assert result.exit_code == 0, result.output
    config, problems = parse_config((directory / "node0" / "config.toml").read_bytes())
    assert config is not None, problems
    assert config.mempool.verify_inline_max == DEFAULT_INLINE


@pytest.mark.parametrize(("inline_max", "thread_hops"), [(0, 1), (VERIFY_INLINE_ALL, 0)])
async def test_verdicts_are_the_same_on_the_loop_and_on_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inline_max: int, thread_hops: int
) -> None:
    config = NodeConfig().with_changes("mempool", verify_inline_max=inline_max)
    info = create_testnet(tmp_path / "net", 1, chain_id="inline-net", config=config)
    home = load_home(info.homes[0])
    key = info.client_key(0)
    genuine = [
        Transaction.decode(
            register_identity_transaction(key, info.chain_id, "bank0", nonce),
            chain_id=info.chain_id,
        )
        for nonce in range(12)
    ]
    forged = Transaction.build(
        genuine[3].chain_id,
        genuine[3].app,
        genuine[3].operation,
        genuine[4].arguments,
        genuine[3].sender,
        genuine[3].nonce,
        genuine[3].signature,
    )
    batch = [*genuine[:5], forged, *genuine[5:]]
    hops: list[int] = []
    hand_off = trio.to_thread.run_sync

    async def counted(function, *args, **kwargs):  # type: ignore[no-untyped-def]
        if function is runtime._verify_all:
            hops.append(len(args[0]))
        return await hand_off(function, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(home).run)
            assert node.config.mempool.verify_inline_max == inline_max
            verdicts = await node._verify(batch)
            assert verdicts == [True] * 5 + [False] + [True] * 7
            assert len(hops) == thread_hops
            # The phase is charged either way.
            assert node.phases.snapshot()["verify"] > 0
            nursery.cancel_scope.cancel()
