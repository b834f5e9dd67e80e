"""``status``, ``block`` and ``tx show`` print for people by default and the node's JSON with
``--json``; a refused submission prints the transaction's hash (as the client computed it) and
the node's reason. A small stand-in API on loopback answers with the documents a node gives."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Final

import pytest
import trio
from click.testing import CliRunner, Result

from apps.transaction import sign_transaction
from consensus.codec import Value
from consensus.crypto import PrivateKey
from node.cli import main
from node.http import HttpLimits, Request, Response, json_response, serve_http
from node.jsonvalue import JsonType, to_json
from node.keys import save_key_file

CHAIN: Final = "fake-chain"
TX_HASH: Final = "ee" * 32
STATUS: Final[dict[str, JsonType]] = {
    "chain_id": CHAIN,
    "moniker": "node0",
    "height": 5,
    "view": 0,
    "app_hash": "cd" * 32,
    "validators": [{"name": "bank0", "public_key": "ab" * 32, "power": 1}],
}
BLOCK: Final[dict[str, JsonType]] = {
    "height": 3,
    "hash": "12" * 32,
    "header": {"height": 3, "timestamp_ms": 1_704_067_200_000, "transaction_count": 1},
    "certificate": {"height": 3, "view": 0, "signatures": [[0, "aa" * 64], [2, "bb" * 64]]},
    "transaction_hashes": [TX_HASH],
}
COMMITTED: Final[dict[str, JsonType]] = {
    "hash": TX_HASH,
    "status": "committed",
    "height": 3,
    "index": 0,
    "receipt": {
        "status": "ok",
        "result": {"payment": 7},
        "events": [{"app": "payments", "kind": "payment", "attributes": {"amount": 1250}}],
    },
}
REFUSAL: Final[dict[str, JsonType]] = {
    "status": "rejected",
    "code": "unknown_sender",
    "error": "sender is not a registered identity",
}


async def stand_in(request: Request) -> Response:
    """What a node answers (the parts these commands read)."""
    match request.path.strip("/").split("/"):
        case ["status"]:
            return json_response(200, STATUS)
        case ["block", _]:
            return json_response(200, BLOCK)
        case ["tx", _]:
            return json_response(200, COMMITTED)
        case ["tx"]:
            return json_response(422, REFUSAL)
        case ["account", _]:
            return json_response(200, {"next_nonce": 0})
    return json_response(404, {"error": "no such endpoint"})


def run_against_stand_in(work: Callable[[str], None]) -> None:
    async def main_task() -> None:
        async with trio.open_nursery() as nursery:
            limits = HttpLimits(body_bytes_max=100_000, request_timeout_s=30.0)
            port = await nursery.start(serve_http, stand_in, "127.0.0.1", 0, limits)
            await trio.to_thread.run_sync(work, f"127.0.0.1:{port}")
            nursery.cancel_scope.cancel()

    trio.run(main_task)


def suanpan(*arguments: str) -> Result:
    return CliRunner().invoke(main, list(arguments), terminal_width=120)


def not_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return True
    return False


@pytest.mark.parametrize(
    ("command", "document", "shown"),
    [
        (["status"], STATUS, ("node node0", "height", "5", "validators", "bank0")),
        (
            ["block", "3"],
            BLOCK,
            (
                "block 3",
                "certificate: view 0, 2 signatures (validators 0, 2)",
                TX_HASH,
                "1 transactions",
            ),
        ),
        (
            ["tx", "show", TX_HASH],
            COMMITTED,
            (
                "committed transaction at height 3",
                TX_HASH,
                "payment",
                "1250",
                "block 3, position 0",
            ),
        ),
    ],
)
def test_readable_by_default_and_the_document_with_json(
    command: list[str], document: dict[str, JsonType], shown: tuple[str, ...]
) -> None:
    def work(address: str) -> None:
        readable = suanpan(*command, "--node", address)
        assert readable.exit_code == 0, readable.output
        assert not_json(readable.output)
        for text in shown:
            assert text in readable.output, (text, readable.output)
        raw = suanpan(*command, "--node", address, "--json")
        assert raw.exit_code == 0, raw.output
        assert json.loads(raw.output) == document

    run_against_stand_in(work)


def test_a_refused_submission_prints_its_hash_and_the_reason(tmp_path: Path) -> None:
    key = PrivateKey(bytes(range(32)))
    key_file = tmp_path / "alice.json"
    save_key_file(key_file, key)
    arguments: dict[str, Value] = {
        "to": b"\x02" * 32,
        "currency": "SGD",
        "amount": 1250,
        "end_to_end_id": "E2E-1",
    }
    expected = sign_transaction(
        key, chain_id=CHAIN, app="payments", operation="transfer", arguments=arguments, nonce=0
    ).hash.hex()

    def work(address: str) -> None:
        result = suanpan(
            "tx", "payments", "transfer", "--to", "02" * 32, "--currency", "SGD",
            "--amount", "1250", "--end-to-end-id", "E2E-1", "--key", str(key_file),
            "--node", address,
        )  # fmt: skip
        assert result.exit_code == 1, result.output
        assert f"rejected payments.transfer  tx {expected}" in result.output
        assert "unknown_sender: sender is not a registered identity" in result.output
        as_json = suanpan(
            "tx", "payments", "transfer", "--to", "02" * 32, "--currency", "SGD",
            "--amount", "1250", "--end-to-end-id", "E2E-1", "--key", str(key_file),
            "--node", address, "--json",
        )  # fmt: skip
        assert json.loads(as_json.output) == {**REFUSAL, "hash": expected}
        sent = suanpan(
            "tx", "send", "--app", "payments", "--op", "transfer", "--key", str(key_file),
            "--args", json.dumps(to_json(arguments)), "--node", address,
        )  # fmt: skip
        assert sent.exit_code == 1, sent.output
        assert f"tx {expected}" in sent.output

    run_against_stand_in(work)


@pytest.mark.parametrize("command", [["status"], ["block", "3"], ["tx", "show", TX_HASH]])
@pytest.mark.parametrize("as_json", [[], ["--json"]])
def test_an_unreachable_node_is_named_with_or_without_json(
    command: list[str], as_json: list[str]
) -> None:
    """Nothing listens on port 9 of loopback (discard)."""
    result = suanpan(*command, "--node", "127.0.0.1:9", *as_json)
    assert result.exit_code == 1, result.output
    assert "Error: cannot reach 127.0.0.1:9" in result.output
    assert "Traceback" not in result.output
