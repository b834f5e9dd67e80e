"""Where a node checks signatures: on its event loop's thread for batches of at most
``[mempool] verify_inline_max`` (or ``verify_inline_busy_max`` while the machine has less than
one idle core), otherwise on a verifying thread; the verdicts are the same. And its gossip
lingers to fill its frames only while the machine is busy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from apps.transaction import Transaction
from consensus.codec import decoder_status, encoder_status
from consensus.crypto import key_cache_info
from network import Network
from node import runtime
from node.config import NodeConfig
from node.home import load_home
from node.machineidle import MachineIdle
from node.testnet.loadgen import register_identity_transaction
from node.testnet.testnet import create_testnet

DEADLINE_S = 120.0
# Every batch a node checks (the largest value the key takes).
EVERY_BATCH = 100_000


def _machine(path: Path, busy: bool) -> MachineIdle:
    """A machine of two cores that had 1 % (busy) or 60 % of its time idle between two
    readings of a ``/proc/stat``-shaped file (its clock stands still after the first)."""
    times = iter((0.0,))
    path.write_text("cpu  0 0 0 0 0 0 0 0 0 0\n")
    machine = MachineIdle(path, interval_s=0.5, clock=lambda: next(times, 1.0), cores=2)
    idle = 1 if busy else 60
    path.write_text(f"cpu  {100 - idle} 0 0 {idle} 0 0 0 0 0 0\n")
    return machine


@pytest.mark.parametrize(
    ("inline_max", "busy_max", "busy", "thread_hops"),
    [
        (0, 0, True, 1),
        (EVERY_BATCH, 0, False, 0),
        (0, EVERY_BATCH, True, 0),
        (0, EVERY_BATCH, False, 1),
        (0, 12, True, 1),  # the batch is 13
        (0, 13, True, 0),
    ],
)
async def test_verdicts_are_the_same_on_the_loop_and_on_a_thread(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    inline_max: int,
    busy_max: int,
    busy: bool,
    thread_hops: int,
) -> None:
    config = NodeConfig().with_changes(
        "mempool", verify_inline_max=inline_max, verify_inline_busy_max=busy_max
    )
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
            assert node.config.mempool.verify_inline_busy_max == busy_max
            node.machine_idle = _machine(tmp_path / "stat", busy)
            before = dict(node.signatures_checked)
            kept_before = key_cache_info()
            helpers_before = node._helpers_cpu_ns()
            verify_before = node.phases.snapshot()["verify"]
            verdicts = await node._verify(batch)
            assert verdicts == [True] * 5 + [False] + [True] * 7
            assert len(hops) == thread_hops
            if thread_hops:
                # The verifying thread's CPU counts as the node's work off its loop (what the
                # machine's spare cores add to its idle ones). The process clock and the
                # thread's own were once seen 5 % apart on a busy machine: half of it is
                # enough to show it counted (nothing else runs off the loop here).
                thread_ns = node.phases.snapshot()["verify"] - verify_before
                assert thread_ns > 0
                assert node._helpers_cpu_ns() - helpers_before >= thread_ns // 2
            # The status says where the batch's 13 signatures were checked, and the
            # machine's spare cores (1 % or 60 % of two idle; no worker threads' time here).
            if thread_hops:
                where = "threads"
            else:
                where = "loop" if inline_max >= len(batch) else "loop_machine_busy"
            status = node.status()
            checked = status["signatures_checked"]
            assert isinstance(checked, dict)
            assert {name: int(str(checked[name])) - before[name] for name in before} == {
                name: len(batch) if name == where else 0 for name in before
            }
            for name, count in checked.items():
                exported = node.metrics.registry.get_sample_value(
                    "suanpan_signatures_checked_total", {"where": name}
                )
                assert exported == count
            # The C rule looked the batch's keys up in its table of decoded keys.
            kept = status["signature_keys_kept"]
            if kept_before is None:
                assert kept is None
            else:
                assert isinstance(kept, dict)
                lookups = int(str(kept["hits"])) + int(str(kept["misses"]))
                assert lookups > kept_before["hits"] + kept_before["misses"]
            # Which encoder and decoder the node runs, as the codec says.
            assert status["codec_encoder"] == encoder_status()
            assert status["codec_decoder"] == decoder_status()
            # The machine is only asked when the batch is above one bound and within the other.
            asked = inline_max < len(batch) <= busy_max
            spare_cores = (0.02 if busy else 1.2) if asked else None
            assert status["machine_spare_cores"] == spare_cores
            # The phase is charged either way.
            assert node.phases.snapshot()["verify"] > 0
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("busy", [True, False])
async def test_admitted_transactions_linger_in_gossip_only_while_the_machine_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy: bool
) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="linger-net")
    home = load_home(info.homes[0])
    key = info.client_key(0)
    transactions = [
        register_identity_transaction(key, info.chain_id, "bank0", nonce) for nonce in range(3)
    ]
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(home).run)
            node.machine_idle = _machine(tmp_path / "stat", busy)
            gossiped: list[tuple[int, bool]] = []
            network: Network = node.network
            gossip = network.gossip_transactions

            def recorded(batch: Sequence[bytes], *, linger: bool = True) -> int:
                gossiped.append((len(batch), linger))
                return gossip(batch, linger=linger)

            monkeypatch.setattr(network, "gossip_transactions", recorded)
            outcomes = await node.submit_many(transactions)
            assert [outcome.accepted for outcome in outcomes] == [True] * 3
            assert gossiped == [(3, busy)]
            nursery.cancel_scope.cancel()
