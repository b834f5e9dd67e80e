"""One validator in this process (n = 1 commits alone): the whole runtime through its API —
submit and wait, receipts, queries, blocks with certificates, the block feed, metrics — and a
restart that resumes at the committed height."""

from __future__ import annotations

import functools
import http.client
import json
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from click.testing import CliRunner
from openapi_spec_validator import validate as validate_openapi

from consensus.types import CommitCertificate, verify_certificate
from node import runtime
from node.cli import main
from node.client.client import ApiError, Client
from node.home import load_home
from node.testnet.loadgen import register_identity_transaction
from node.testnet.testnet import create_testnet

DEADLINE_S = 120.0


T = TypeVar("T")


async def call(function: functools.partial[T]) -> T:
    """Run a blocking client call on a worker thread."""
    return await trio.to_thread.run_sync(function)


async def test_single_validator_commits_serves_and_resumes_after_restart(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="solo-net")
    home = load_home(info.homes[0])
    key = info.client_key(0)
    client = Client(info.api_addresses[0], timeout_s=60, key=key)

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(home).run)
            hashes = []
            for nonce in range(3):
                data = register_identity_transaction(key, info.chain_id, "bank0", nonce)
                result: Any = await call(functools.partial(client.submit, data, wait=True))
                assert result["status"] == "committed", result
                assert isinstance(result["receipt"], dict)
                assert result["receipt"]["status"] == "ok"
                assert result["receipt"]["events"][0]["kind"] == "identity_registered"
                hashes.append(str(result["hash"]))

            # A replay is refused with a reason, not silently dropped.
            replay = register_identity_transaction(key, info.chain_id, "bank0", 0)
            with pytest.raises(ApiError) as refused:
                await call(functools.partial(client.submit, replay))
            assert refused.value.status == 422
            assert refused.value.code

            # The block writer handed the allocator's free memory back after a write.
            assert node.heap.releases >= 1 or not node.heap.available

            status: Any = await call(functools.partial(client.status))
            height = status["height"]
            assert isinstance(height, int)
            assert height >= 1
            assert status["validators"][0]["name"] == "bank0"
            # The command line prints it for people, the node's rates (floats) included.
            printed = await trio.to_thread.run_sync(
                functools.partial(
                    CliRunner().invoke, main, ["status", "--node", info.api_addresses[0]]
                )
            )
            assert printed.exit_code == 0, printed.output
            assert "transactions_per_second" in printed.output

            document: Any = await call(functools.partial(client.transaction, hashes[0]))
            assert document["status"] == "committed"
            block: Any = await call(functools.partial(client.block, document["height"]))
            signatures = block["certificate"]["signatures"]
            certificate = CommitCertificate(
                block["certificate"]["height"],
                block["certificate"]["view"],
                bytes.fromhex(str(block["hash"])),
                tuple((index, bytes.fromhex(sig)) for index, sig in signatures),
            )
            verify_certificate(
                certificate, home.genesis.validator_set, info.chain_id, height=block["height"]
            )
            assert hashes[0] in block["transaction_hashes"]

            identity = await call(
                functools.partial(
                    client.query, "membership", "identity", {"public_key": key.public_key}
                )
            )
            assert isinstance(identity, dict)
            assert identity["institution"] == "bank0"

            polled: Any = await call(functools.partial(client.blocks, 1, limit=100))
            assert [b["height"] for b in polled["blocks"]] == list(range(1, height + 1))

            # The API describes itself, with the operations and queries of the chain's apps
            # (this genesis enables membership only; payments is installed but not described).
            described = await call(functools.partial(client.request_raw, "GET", "/openapi.json"))
            assert described[0] == 200
            api = json.loads(described[1])
            validate_openapi(api)
            assert "membership.register_identity.arguments" in api["components"]["schemas"]
            assert "membership.validators.query" in api["components"]["schemas"]
            assert not any(name.startswith("payments.") for name in api["components"]["schemas"])

            metrics = await call(functools.partial(client.metrics))
            assert "suanpan_height" in metrics
            assert "suanpan_tree_blocks_held " in metrics
            assert "suanpan_tree_records_held " in metrics
            assert "suanpan_committed_transactions_total 3.0" in metrics

            # The NDJSON stream delivers the next committed block.
            host, _, port = info.api_addresses[0].rpartition(":")

            def first_stream_line() -> bytes:
                connection = http.client.HTTPConnection(host, int(port), timeout=60)
                try:
                    connection.request("GET", f"/stream?from={height}")
                    return connection.getresponse().readline()
                finally:
                    connection.close()

            line = await trio.to_thread.run_sync(first_stream_line)
            assert b'"height":' in line
            nursery.cancel_scope.cancel()
        assert node.host.height >= height

        # Restart on the same home: the committed chain and the replica's state are kept.
        async with trio.open_nursery() as nursery:
            restarted = await nursery.start(runtime.Node(load_home(info.homes[0])).run)
            assert restarted.host.height >= height
            next_nonce = await call(functools.partial(client.next_nonce, key.public_key))
            assert next_nonce == 3
            data = register_identity_transaction(key, info.chain_id, "bank0", 3)
            result = await call(functools.partial(client.submit, data, wait=True))
            assert result["status"] == "committed"
            nursery.cancel_scope.cancel()
    client.close()
