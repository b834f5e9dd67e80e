"""Transaction intake of a real single-validator node: ``POST /txs`` in JSON and in msgpack,
malformed binary bodies refused with the problem named."""

from __future__ import annotations

import functools
import http.client
import json
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import trio

from apps.transaction import Transaction, sign_transaction
from consensus.crypto import PrivateKey, hash_bytes
from node import runtime
from node.admission import RETRY_AFTER_MS_MIN, RETRY_JITTER
from node.client.client import Client
from node.config import NodeConfig
from node.home import load_home
from node.submission import MSGPACK_CONTENT_TYPE, decode_answer, encode_submission
from node.testnet.loadgen import register_identity_transaction
from node.testnet.testnet import create_testnet
from node.verified import VerifiedTransactions
from tests.test_block_hashes import block_of

DEADLINE_S = 120.0
T = TypeVar("T")


async def call(function: functools.partial[T]) -> T:
    """Run a blocking client call on a worker thread."""
    return await trio.to_thread.run_sync(function)


async def test_binary_and_json_batches_are_admitted_alike_and_bad_bodies_named(
    tmp_path: Path,
) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="intake-net")
    home = load_home(info.homes[0])
    client = Client(info.api_addresses[0], timeout_s=60)
    key = info.client_key(0)
    transactions = [
        register_identity_transaction(key, info.chain_id, "bank0", nonce) for nonce in range(6)
    ]
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.Node(home).run)
            # JSON with hex, as people send it.
            body = json.dumps({"txs": [data.hex() for data in transactions[:3]]}).encode()
            status, data = await call(functools.partial(client.request_raw, "POST", "/txs", body))
            assert status == 200, data
            assert json.loads(data) == {"accepted": 3, "rejected": []}
            # msgpack with the raw bytes: same answer shape; a replay is refused by index.
            body = encode_submission([transactions[0], *transactions[3:]])
            status, data = await call(
                functools.partial(
                    client.request_raw, "POST", "/txs", body, content_type=MSGPACK_CONTENT_TYPE
                )
            )
            assert status == 200, data
            document: Any = json.loads(data)
            assert document["accepted"] == 3
            assert [item["index"] for item in document["rejected"]] == [0]
            assert document["rejected"][0]["code"] in ("duplicate", "stale_nonce")
            # Asked for msgpack, the same answer with the hash as bytes.
            status, data = await call(
                functools.partial(
                    client.request_raw,
                    "POST",
                    "/txs",
                    encode_submission([transactions[1], transactions[2]]),
                    content_type=MSGPACK_CONTENT_TYPE,
                    headers={"Accept": f"application/json;q=0.5, {MSGPACK_CONTENT_TYPE}"},
                )
            )
            answer = decode_answer(data, 2)
            assert (status, answer.accepted, answer.refused_from) == (200, 0, None)
            assert [(item.index, item.hash) for item in answer.rejected] == [
                (0, hash_bytes(transactions[1])),
                (1, hash_bytes(transactions[2])),
            ]

            bad_bodies = {
                b"": "empty",
                b"\xc1": "not valid msgpack",
                msgpack.packb({"txs": []}): "msgpack array",
                msgpack.packb(["ab"]): "not a msgpack bin",
                msgpack.packb([b""]): "item 0 is empty",
                msgpack.packb([b"x"]) + b"\x00": "bytes remain",
                msgpack.packb([b"x" * 40_000]): "at most",
            }
            for bad, named in bad_bodies.items():
                status, data = await call(
                    functools.partial(
                        client.request_raw, "POST", "/txs", bad, content_type=MSGPACK_CONTENT_TYPE
                    )
                )
                assert status == 400, (bad[:20], data)
                assert named in json.loads(data)["error"], (named, data)
            # The node still serves, and its Python client submits in msgpack.
            more = [register_identity_transaction(key, info.chain_id, "bank0", 6)]
            submitted: Any = await call(functools.partial(client.submit_many, more))
            assert submitted == {"accepted": 1, "rejected": []}
            nursery.cancel_scope.cancel()
    client.close()


async def test_a_transplanted_signature_is_refused_after_the_genuine_one_was_verified(
    tmp_path: Path,
) -> None:
    """The node remembers verified signatures (``node.verified``) keyed by the whole encoded
    transaction: a genuine signature put on another body, or presented under another sender,
    still fails, at admission and in a proposed block, after the genuine transaction was
    verified and cached."""
    info = create_testnet(tmp_path / "net", 1, chain_id="transplant-net")
    home = load_home(info.homes[0])
    client = Client(info.api_addresses[0], timeout_s=60)
    key = info.client_key(0)
    genuine = Transaction.decode(
        register_identity_transaction(key, info.chain_id, "bank0", 0), chain_id=info.chain_id
    )
    other_body = Transaction.build(
        genuine.chain_id,
        genuine.app,
        genuine.operation,
        {**genuine.arguments, "roles": ("customer", "bank")},
        genuine.sender,
        genuine.nonce,
        genuine.signature,
    )
    other_sender = Transaction.build(
        genuine.chain_id,
        genuine.app,
        genuine.operation,
        genuine.arguments,
        PrivateKey(bytes(32)).public_key,
        genuine.nonce,
        genuine.signature,
    )
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(home).run)
            answer: Any = await call(functools.partial(client.submit_many, [genuine.encoded]))
            assert answer == {"accepted": 1, "rejected": []}
            answer = await call(
                functools.partial(client.submit_many, [other_body.encoded, other_sender.encoded])
            )
            assert [item["code"] for item in answer["rejected"]] == ["signature", "signature"]
            # The same in a block: the genuine transaction verifies from the cache, a block
            # carrying a transplanted one fails validation.
            node.mempool.update([genuine.hash])  # leaves only the verified cache
            assert genuine.hash not in node.mempool
            assert await node._verify_block_transactions(block_of([genuine.encoded])) is not None
            for forged in (other_body, other_sender):
                assert await node._verify_block_transactions(block_of([forged.encoded])) is None
            nursery.cancel_scope.cancel()
    client.close()


def test_the_verified_cache_answers_only_for_the_exact_bytes() -> None:
    key = PrivateKey(bytes(range(32)))
    genuine = sign_transaction(
        key, chain_id="c", app="payments", operation="transfer", arguments={"a": 1}, nonce=0
    )
    forged = Transaction.build(
        "c", "payments", "transfer", {"a": 2}, key.public_key, 0, genuine.signature
    )
    cache = VerifiedTransactions(entries_max=2)
    cache.add(genuine)
    assert cache.get(genuine.encoded) is genuine
    assert cache.get(bytes(genuine.encoded)) is genuine
    assert cache.get(forged.encoded) is None
    assert not forged.signature_valid()
    for nonce in (1, 2):
        cache.add(
            sign_transaction(key, chain_id="c", app="p", operation="o", arguments={}, nonce=nonce)
        )
    assert cache.get(genuine.encoded) is None  # bounded: the oldest went first
    assert len(cache) == 2


def _bad_signature(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


async def test_an_overloaded_node_refuses_early_and_keeps_its_pool_bounded(
    tmp_path: Path,
) -> None:
    """Nothing commits (a long block interval) while batches keep coming: the node admits up
    to its admission limit, then refuses with ``full``, ``retry`` and a ``retry_after_ms``
    (429 with Retry-After when nothing of a batch fits) before spending anything on the
    refused ones (a bad signature past the limit is refused as ``full``, not checked). A
    sender's transactions behind one refused in the same batch are refused, naming the nonce
    to resubmit from."""
    limit = 50
    config = (
        NodeConfig()
        .with_changes("mempool", admission_transactions_min=limit, transactions_max=200)
        .with_changes("consensus", block_interval_ms=600_000, empty_block_interval_ms=600_000)
    )
    info = create_testnet(tmp_path / "net", 1, chain_id="overload-net", config=config)
    home = load_home(info.homes[0])
    client = Client(info.api_addresses[0], timeout_s=60)
    key = info.client_key(0)
    stream = [register_identity_transaction(key, info.chain_id, "bank0", n) for n in range(300)]

    async def post(batch: list[bytes], *, binary: bool = False) -> tuple[int, dict[str, str], Any]:
        def send() -> tuple[int, dict[str, str], Any]:
            host, _, port = info.api_addresses[0].rpartition(":")
            connection = http.client.HTTPConnection(host, int(port), timeout=60)
            headers = {"Content-Type": MSGPACK_CONTENT_TYPE}
            if binary:
                headers["Accept"] = MSGPACK_CONTENT_TYPE
            connection.request("POST", "/txs", encode_submission(batch), headers)
            response = connection.getresponse()
            data = response.read()
            document: Any = decode_answer(data, len(batch)) if binary else json.loads(data)
            headers = {name.lower(): value for name, value in response.getheaders()}
            connection.close()
            return response.status, headers, document

        return await trio.to_thread.run_sync(send)

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(home).run)
            # The lone validator's first proposal goes out as it starts (nothing came before
            # it to wait an interval from); the next waits the interval. Once that block is
            # in, no block moves the pool while the test counts what waits.
            await node.wait_for_height(1, timeout_s=DEADLINE_S)
            # A refused transaction holds back its sender's later ones in the batch.
            status, _, document = await post([_bad_signature(stream[0]), *stream[1:3]])
            assert status == 200
            codes = [item["code"] for item in document["rejected"]]
            assert codes == ["signature", "behind_refused", "behind_refused"]
            assert "resubmit from nonce 0" in document["rejected"][1]["error"]
            # Over the limit: the first `limit` fit, the rest are pushed back.
            status, headers, document = await post(stream[:80])
            assert status == 200
            assert document["accepted"] == limit
            assert {item["code"] for item in document["rejected"]} == {"full"}
            assert all(
                item["retry"] and item["retry_after_ms"] >= 100 for item in document["rejected"]
            )
            # The node refused them unhashed; the JSON answer still names each one's hash.
            assert [item["hash"] for item in document["rejected"]] == [
                hash_bytes(data).hex() for data in stream[limit:80]
            ]
            assert int(headers["retry-after"]) >= 1
            # A client that asks for msgpack gets the refused tail as one entry.
            status, headers, answer = await post(stream[80:85], binary=True)
            assert status == 429
            assert (answer.accepted, answer.rejected, answer.refused_from) == (0, (), 0)
            assert answer.refusal.code == "full"
            assert answer.refusal.retry
            # Room for 5 comes once 5 of what waits have moved on: soon (the floor of 100 ms);
            # for 200 it takes longer, but never more than the budget (250 ms, spread ±50 %:
            # the next proposal makes room), though moving 200 on at the idle floor's
            # 200 tx/s would take 1 s.
            assert answer.refusal.retry_after_ms == RETRY_AFTER_MS_MIN
            assert int(headers["retry-after"]) >= 1
            assert [item.index for item in answer.rejections()] == list(range(5))
            status, _, answer = await post(stream[85:285], binary=True)
            assert (status, answer.refused_from) == (429, 0)
            budget_ms = config.mempool.admission_budget_ms
            assert answer.refusal.retry_after_ms > RETRY_AFTER_MS_MIN
            assert answer.refusal.retry_after_ms <= budget_ms * (1 + RETRY_JITTER) + 1
            # The Python client asks for msgpack and lists the tail again, hashes and all.
            listed: Any = await call(functools.partial(client.submit_many, stream[85:88]))
            assert listed["accepted"] == 0
            assert [(item["index"], item["code"], item["hash"]) for item in listed["rejected"]] == [
                (n, "full", hash_bytes(data).hex()) for n, data in enumerate(stream[85:88])
            ]
            # Nothing fits: 429 for the batch, and refused before any signature check.
            batch = [*stream[80:90], _bad_signature(stream[90])]
            status, headers, document = await post(batch)
            assert status == 429
            assert document["accepted"] == 0
            assert [item["code"] for item in document["rejected"]] == ["full"] * len(batch)
            assert int(headers["retry-after"]) >= 1
            # The single-transaction endpoint answers the same way.
            body = json.dumps({"tx": stream[95].hex()}).encode()
            answer, data = await call(functools.partial(client.request_raw, "POST", "/tx", body))
            assert answer == 429
            assert json.loads(data)["code"] == "full"
            assert len(node.mempool) == limit
            assert node.mempool.size_bytes <= 64 * 1024 * 1024
            assert node.status()["admission_limit"] == limit
            # Once a proposal carries the pool's transactions they no longer wait for one:
            # the limit counts what waits, so the next `limit` fit (and no more).
            node._proposal_seen(node.height() + 1, limit)
            status, _, answer = await post(stream[limit : 2 * limit + 10], binary=True)
            assert status == 200
            assert (answer.accepted, answer.rejected, answer.refused_from) == (limit, (), limit)
            assert [item.code for item in answer.rejections()] == ["full"] * 10
            assert len(node.mempool) == 2 * limit
            # Gossiped transactions this node is still verifying wait too: while a peer's
            # batch of `limit` is being admitted, the pool's room is taken.
            node._proposal_seen(node.height() + 1, 2 * limit)
            node._gossip_admitting = limit
            status, _, document = await post(stream[2 * limit : 2 * limit + 5])
            assert status == 429
            assert [item["code"] for item in document["rejected"]] == ["full"] * 5
            node._gossip_admitting = 0
            status, _, document = await post(stream[2 * limit : 2 * limit + 5])
            assert document["accepted"] == 5
            nursery.cancel_scope.cancel()
    client.close()


async def test_a_node_paces_admission_by_the_time_its_blocks_took(tmp_path: Path) -> None:
    """Each committed block the node saw proposed counts its transactions over the time from
    its proposal to its commit (``admission_pace`` in ``/status``); the limit is the budget's
    worth of that pace or of the committed rate, whichever is larger, and the node keeps no
    proposal's arrival past its commit."""
    info = create_testnet(tmp_path / "net", 1, chain_id="pace-net")
    home = load_home(info.homes[0])
    client = Client(info.api_addresses[0], timeout_s=60)
    key = info.client_key(0)
    stream = [register_identity_transaction(key, info.chain_id, "bank0", n) for n in range(20)]
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(home).run)
            assert node.status()["admission_pace"] == 0.0
            submitted: Any = await call(functools.partial(client.submit_many, stream))
            assert submitted == {"accepted": 20, "rejected": []}
            while node.metrics.committed_total < 20:
                await node.wait_for_height(node.height() + 1, timeout_s=DEADLINE_S)
            status = node.status()
            pace, rate = status["admission_pace"], status["admission_rate"]
            assert isinstance(pace, float)
            assert isinstance(rate, float)
            # 20 transactions in blocks that each took well under the time this test allows.
            assert pace > 20 / DEADLINE_S
            budget_s = node.config.mempool.admission_budget_ms / 1000
            floor = node.config.mempool.admission_transactions_min
            # The status shows the pace and the rate rounded to 0.1 tx/s; the limit is of the
            # figures before rounding.
            top = max(pace, rate)
            low, high = (max(floor, int((top + shift) * budget_s)) for shift in (-0.05, 0.05))
            assert low <= status["admission_limit"] <= high
            assert all(height > node.height() for height in node._arrivals.heights())
            nursery.cancel_scope.cancel()
    client.close()
