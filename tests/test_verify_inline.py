"""Where a node checks signatures: on its event loop's thread for batches of at most
``[mempool] verify_inline_max``, otherwise on a verifying thread; the verdicts are the same."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from apps.transaction import Transaction
from node import runtime
from node.config import NodeConfig
from node.home import load_home
from node.testnet.loadgen import register_identity_transaction
from node.testnet.testnet import create_testnet

DEADLINE_S = 120.0
# Every batch a node checks (the largest value the key takes).
EVERY_BATCH = 100_000


@pytest.mark.parametrize(("inline_max", "thread_hops"), [(0, 1), (EVERY_BATCH, 0)])
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
