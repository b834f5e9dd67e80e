"""``[consensus] trust_certified_blocks``: what a node catching up checks of the blocks it
applies. By default it checks every transaction's signature, so a block certified by a
quorum that holds a forged transaction (possible only when 2f+1 validators collude) gets that
transaction refused. With the option it applies the block on its certificate alone, and the
forged transaction goes through: the trade-off the operators' guide describes, shown here with
a lone validator (a quorum of one) certifying a block of its own making. The checking node
then cannot take the colluders' next block (its state is not the one that block extends), and
the audit, which replays every block with every signature checked, tells the two stores
apart."""

from __future__ import annotations

import shutil
from pathlib import Path

import trio

from consensus.crypto import PrivateKey, hash_bytes
from consensus.messages import encode_block_response
from consensus.replica import PeerMessage
from consensus.types import Block, CommitCertificate
from node import runtime
from node.audit.audit import audit_home
from node.config import parse_config
from node.home import Home, load_home
from node.jsonvalue import JsonType
from node.testnet.testnet import create_testnet
from tests.node_fixtures import (
    NEVER_MS,
    certified_by_lone_validator,
    forged_registration,
    next_block,
    registrations_chain,
    synced,
    with_consensus,
)

DEADLINE_S = 120.0
TRANSACTIONS = 12
# Bytes that are no transaction at all: no node can decode them, trusted or not.
GARBAGE = b"\x93not a transaction"

Entries = list[tuple[Block, CommitCertificate]]


def _configured(home: Home, *, block_ms: int, trust: bool = False) -> Home:
    return with_consensus(home, block_ms=block_ms, trust_certified_blocks=trust)


async def _chain_with_a_forged_block(
    source_dir: Path, chain_id: str, key: PrivateKey
) -> tuple[Entries, bytes]:
    """The lone validator's chain of ``TRANSACTIONS`` registrations by ``key``, then one more
    block that the validator's key certifies around a registration whose signature is
    broken (the forged transaction, returned too) and ``GARBAGE``."""
    home = load_home(source_dir)
    with trio.fail_after(DEADLINE_S):
        entries, app_hash = await registrations_chain(
            _configured(home, block_ms=20), key, TRANSACTIONS, deadline_s=DEADLINE_S
        )
    forged = forged_registration(key, chain_id, TRANSACTIONS)
    block = next_block(entries[-1][0], app_hash, (forged, GARBAGE))
    return [*entries, certified_by_lone_validator(home.validator_key, block)], forged


async def _sync(
    home_dir: Path, entries: Entries, forged: bytes, *, trust: bool
) -> tuple[dict[str, JsonType], dict[str, JsonType], bytes]:
    """Start the node of ``home_dir``, hand it ``entries`` as the answer to its request for
    blocks, and return, once it applied them all, the forged transaction's receipt, the
    node's status and its app hash. ``GARBAGE`` is refused either way."""
    home = _configured(load_home(home_dir), block_ms=NEVER_MS, trust=trust)

    async def read(
        node: runtime.Node,
    ) -> tuple[dict[str, JsonType], dict[str, JsonType], bytes]:
        document = node.transaction(hash_bytes(forged))
        assert document is not None
        receipt = document["receipt"]
        assert isinstance(receipt, dict)
        garbage = node.transaction(hash_bytes(GARBAGE))
        assert garbage is not None
        refused = garbage["receipt"]
        assert isinstance(refused, dict)
        assert (refused["status"], refused["code"]) == ("rejected", "invalid_transaction")
        status = node.status()
        # The same counts for Prometheus.
        for signatures in ("trusted", "verified_ahead"):
            exported = node.metrics.registry.get_sample_value(
                "suanpan_synced_transactions_total", {"signatures": signatures}
            )
            assert exported == status[f"transactions_{signatures}"]
        return receipt, status, node.host.app_hash

    return await synced(home, entries, read, deadline_s=DEADLINE_S)


async def _offer_next(
    home_dir: Path, entry: tuple[Block, CommitCertificate], *, trust: bool
) -> tuple[int, float]:
    """Start the node of ``home_dir`` again, hand it ``entry`` (the block after its height),
    and return its height and the state divergences its replica dropped once the block was
    either applied or dropped."""
    home = _configured(load_home(home_dir), block_ms=NEVER_MS, trust=trust)
    block = entry[0]
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(home).run)
            assert node.host.height == block.height - 1
            data = encode_block_response([entry], bytes_max=node.network.limits.message_bytes_max)
            await node._inputs_send.send(PeerMessage(data, 0))

            def diverged() -> float:
                value = node.metrics.registry.get_sample_value(
                    "suanpan_dropped_consensus_messages_total", {"reason": "state_diverged"}
                )
                return value or 0.0

            while node.host.height < block.height and not diverged():
                await trio.lowlevel.checkpoint()
            height, dropped = node.host.height, diverged()
            nursery.cancel_scope.cancel()
    return height, dropped


async def test_a_forged_transaction_in_a_certified_block_is_refused_unless_trusted(
    tmp_path: Path,
) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="trust-certified", observers=1)
    observer_dir = Path(info.homes[1])
    # Two copies of the observer before it ever started: one syncs as configured by default,
    # one with the option.
    checking_dir = tmp_path / "checking"
    trusting_dir = tmp_path / "trusting"
    shutil.copytree(observer_dir, checking_dir)
    shutil.copytree(observer_dir, trusting_dir)
    entries, forged = await _chain_with_a_forged_block(
        Path(info.homes[0]), info.chain_id, info.client_key(0)
    )
    synced = sum(len(block.transactions) for block, _ in entries)
    assert synced == TRANSACTIONS + 2

    receipt, status, checked_hash = await _sync(checking_dir, entries, forged, trust=False)
    # Every signature was checked (ahead of the blocks, on worker threads): the forged one
    # failed, so the transaction was refused when its block executed.
    assert (receipt["status"], receipt["code"]) == ("rejected", "invalid_transaction")
    assert "signature" in str(receipt["message"])
    assert status["transactions_trusted"] == 0
    assert status["transactions_verified_ahead"] == TRANSACTIONS

    receipt, status, trusted_hash = await _sync(trusting_dir, entries, forged, trust=True)
    # Applied on the certificate: no signature was checked, and the forgery registered its
    # customer like a signed transaction. The garbage was not trusted: it does not decode.
    assert receipt["status"] == "ok", receipt
    assert status["transactions_trusted"] == synced - 1
    assert status["transactions_verified_ahead"] == 0
    assert trusted_hash != checked_hash

    # The colluders go on from the state with the forgery in it: the trusting node takes their
    # next block, the checking node's state is not the one it claims to extend.
    top = entries[-1][0].height
    following = certified_by_lone_validator(
        load_home(Path(info.homes[0])).validator_key, next_block(entries[-1][0], trusted_hash)
    )
    assert await _offer_next(trusting_dir, following, trust=True) == (top + 1, 0.0)
    assert await _offer_next(checking_dir, following, trust=False) == (top, 1.0)

    # The audit replays each block with its signatures checked: the checking node's store is
    # what it claims to be; the trusting node's holds a receipt the replay does not give.
    assert audit_home(checking_dir).ok
    failure = audit_home(trusting_dir).failure
    assert failure is not None
    assert (failure.height, failure.item) == (top, "receipt")


def test_the_option_is_a_boolean_and_off_by_default() -> None:
    config, problems = parse_config(b"[consensus]\ntrust_certified_blocks = true\n")
    assert not problems
    assert config is not None
    assert config.consensus.trust_certified_blocks is True
    config, problems = parse_config(b"")
    assert not problems
    assert config is not None
    assert config.consensus.trust_certified_blocks is False
    config, problems = parse_config(b'[consensus]\ntrust_certified_blocks = "yes"\n')
    assert config is None
    assert [problem.key for problem in problems] == ["[consensus] trust_certified_blocks"]
    assert "'yes' is not true or false" in str(problems[0])
