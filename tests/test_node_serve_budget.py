"""Block serving has a per-peer byte budget: a peer that keeps asking for blocks gets at most
the budget's bytes per window, as fewer blocks per answer and then no answer at all, and the
next window serves it again."""

from __future__ import annotations

from pathlib import Path

import trio

from consensus.messages import BlockResponse, decode_message, encode_block_response
from consensus.replica import ServeBlocks
from node import runtime
from node.home import load_home
from node.servebudget import ServeBudget
from node.testnet.testnet import create_testnet
from tests.node_fixtures import with_intervals

DEADLINE_S = 120.0
BLOCKS = 8


def test_budget_is_per_peer_and_per_window() -> None:
    budget = ServeBudget(bytes_per_window=1000, window_ms=1000)
    assert budget.available(1, 0) == 1000
    budget.spend(1, 10, 700)
    assert budget.available(1, 999) == 300
    assert budget.available(2, 999) == 1000, "another peer has its own budget"
    budget.spend(1, 500, 400)
    assert budget.available(1, 999) == 0
    assert budget.available(1, 1010) == 1000, "a new window starts afresh"


async def test_a_peer_asking_again_and_again_gets_at_most_its_budget(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="serve-budget")
    home = with_intervals(load_home(Path(info.homes[0])), block_ms=20, empty_ms=20)
    sent: list[bytes] = []
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(home).run)
            await node.wait_for_height(BLOCKS, timeout_s=DEADLINE_S)
            entries = []
            for height in range(1, BLOCKS + 1):
                stored = node._load_block(height)
                assert stored is not None
                entries.append(stored)
            three_blocks = len(encode_block_response(entries[:3]))
            node._serve_budget = ServeBudget(bytes_per_window=three_blocks, window_ms=3_600_000)
            # Record what the node hands its network for the asking peer.
            node.network.send = lambda key, kind, data: sent.append(data)
            # The peer asks again at once each time, from the block after the last it got.
            next_height = 1
            for _ in range(5):
                node._serve_blocks(ServeBlocks(0, next_height, BLOCKS))
                if sent:
                    answer = decode_message(sent[-1])
                    assert isinstance(answer, BlockResponse)
                    next_height = answer.entries[-1][0].height + 1
            nursery.cancel_scope.cancel()
    assert sum(len(data) for data in sent) <= three_blocks
    answers = [decode_message(data) for data in sent]
    assert all(isinstance(answer, BlockResponse) for answer in answers)
    heights = [
        block.height
        for answer in answers
        if isinstance(answer, BlockResponse)
        for block, _ in answer.entries
    ]
    assert heights == [1, 2, 3], "answers are cut to the budget, then refused"
