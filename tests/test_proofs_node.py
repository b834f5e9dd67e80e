"""Proven queries end to end: one validator of the demo consortium in this process answers
``payments balance`` with a proof, the client and ``suanpan query ... --prove`` verify it
against genesis, and a fake node between them that tampers with any part of the answer is
refused."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from click.testing import CliRunner

from apps.merkle import ProofLevel
from apps.proofs import QueryProof
from consensus.codec import Value
from consensus.crypto import PrivateKey
from node import runtime
from node.cli import main
from node.client.client import ApiError, Client, ProofRefused
from node.home import load_home
from node.http import HttpLimits, Request, Response, serve_http
from node.keys import load_key_file
from node.testnet.testnet import create_testnet

DEADLINE_S = 120.0
T = TypeVar("T")
Tamper = Callable[[dict[str, Any]], None]


async def call(function: functools.partial[T]) -> T:
    """Run a blocking client call on a worker thread."""
    return await trio.to_thread.run_sync(function)


def edit_proof(document: dict[str, Any], change: Callable[[QueryProof], QueryProof]) -> None:
    proof = QueryProof.decode(bytes.fromhex(document["proof"]["encoded"]))
    document["proof"]["encoded"] = change(proof).encode().hex()


def flip_first_sibling(proof: QueryProof) -> QueryProof:
    key, value, key_proof = proof.reads[0]
    level = key_proof.levels[0]
    siblings = bytes((level.siblings[0] ^ 1,)) + level.siblings[1:]
    levels = (ProofLevel(level.bitmap, level.leafmap, siblings), *key_proof.levels[1:])
    read = (key, value, dataclasses.replace(key_proof, levels=levels))
    return dataclasses.replace(proof, reads=(read, *proof.reads[1:]))


def change_value(proof: QueryProof) -> QueryProof:
    key, value, key_proof = proof.reads[0]
    return dataclasses.replace(proof, reads=((key, (value or b"") + b"\x00", key_proof),))


def claim_absent(proof: QueryProof) -> QueryProof:
    key, _, key_proof = proof.reads[0]
    return dataclasses.replace(proof, reads=((key, None, key_proof),))


def other_app_hash(proof: QueryProof) -> QueryProof:
    header = dataclasses.replace(proof.header, app_hash=bytes(32))
    return dataclasses.replace(proof, header=header)


def drop_signatures(proof: QueryProof) -> QueryProof:
    certificate = dataclasses.replace(proof.certificate, signatures=())
    return dataclasses.replace(proof, certificate=certificate)


def other_height(proof: QueryProof) -> QueryProof:
    return dataclasses.replace(proof, height=proof.height + 1)


def drop_reads(proof: QueryProof) -> QueryProof:
    return dataclasses.replace(proof, reads=())


def add_one(document: dict[str, Any]) -> None:
    document["result"] = int(document["result"]) + 1


TAMPERS: dict[str, Tamper] = {
    "the balance": add_one,
    "a proven value": lambda d: edit_proof(d, change_value),
    "presence (claims absence)": lambda d: edit_proof(d, claim_absent),
    "a sibling hash": lambda d: edit_proof(d, flip_first_sibling),
    "the header's app hash": lambda d: edit_proof(d, other_app_hash),
    "the certificate": lambda d: edit_proof(d, drop_signatures),
    "the state height": lambda d: edit_proof(d, other_height),
    "the reads (left out)": lambda d: edit_proof(d, drop_reads),
    "the proof (removed)": lambda d: d.pop("proof"),
}


class TamperingNode:
    """A fake node: forwards every request to a real one and tampers with proven answers."""

    def __init__(self, real: str, key: PrivateKey) -> None:
        self.real = Client(real, timeout_s=60, key=key)
        self.tamper: Tamper | None = None

    async def __call__(self, request: Request) -> Response:
        status, body = await trio.to_thread.run_sync(
            self.real.request_raw, request.method, request.path, request.body or None
        )
        document = json.loads(body)
        if self.tamper is not None and "proof" in document:
            self.tamper(document)
        return Response(status, json.dumps(document).encode())


async def test_a_proven_balance_verifies_and_every_tampered_answer_is_refused(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "net"
    info = create_testnet(directory, 1, chain_id="proof-net", demo_seed=5)
    home = load_home(info.homes[0])
    genesis = home.genesis
    alice = info.party("alice")
    alice_key = load_key_file(alice.key_file)
    arguments: dict[str, Value] = {"account": alice.public_key, "currency": "SGD"}
    # Alice signs her requests: the read rules let her read her own balance.
    client = Client(info.api_addresses[0], timeout_s=60, key=alice_key)
    fake = TamperingNode(info.api_addresses[0], alice_key)
    runner = CliRunner()

    def cli(*arguments: str) -> tuple[int, str]:
        result = runner.invoke(main, list(arguments))
        return result.exit_code, result.output

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(runtime.Node(home).run)
            await node.wait_for_height(2, DEADLINE_S)

            answer = await call(
                functools.partial(client.query_proven, "payments", "balance", arguments, genesis)
            )
            assert answer.result == node.query("payments", "balance", arguments)
            assert isinstance(answer.result, int)
            assert answer.result > 0
            assert (answer.signatures, answer.validators) == (1, 1)
            assert answer.block == answer.height + 1

            code, output = await call(
                functools.partial(
                    cli,
                    *("query", "payments", "balance", "--account", str(alice.key_file)),
                    *("--currency", "SGD", "--prove", "--node", str(directory)),
                    *("--key", str(alice.key_file)),
                )
            )
            assert code == 0, output
            assert f"{answer.result:,}" in output or str(answer.result) in output
            assert "proof verified against block" in output
            assert "(certificate 1 of 1)" in output

            # The read rules hold for proven answers too: unsigned, Alice's balance is refused.
            anonymous = Client(info.api_addresses[0], timeout_s=60)
            with pytest.raises(ApiError) as denied:
                await call(
                    functools.partial(
                        anonymous.query_proven, "payments", "balance", arguments, genesis
                    )
                )
            anonymous.close()
            assert denied.value.status == 403

            # A query that scans a range cannot be proven, and says so.
            with pytest.raises(ApiError) as refused:
                await call(
                    functools.partial(
                        client.query_proven,
                        "payments",
                        "balances",
                        {"account": alice.public_key},
                        genesis,
                    )
                )
            assert refused.value.code == "not_provable"

            port = await nursery.start(serve_http, fake, "127.0.0.1", 0, HttpLimits())
            liar = Client(f"127.0.0.1:{port}", timeout_s=60, key=alice_key)
            # Untouched, the fake's answers verify: the refusals below are the tampering's.
            await call(
                functools.partial(liar.query_proven, "payments", "balance", arguments, genesis)
            )
            for what, tamper in TAMPERS.items():
                fake.tamper = tamper
                with pytest.raises(ProofRefused):
                    await call(
                        functools.partial(
                            liar.query_proven, "payments", "balance", arguments, genesis
                        )
                    )
                print("refused a tampered", what)
            fake.tamper = TAMPERS["a sibling hash"]
            code, output = await call(
                functools.partial(
                    cli,
                    *("query", "payments", "balance", "--account", str(alice.key_file)),
                    *("--currency", "SGD", "--prove", "--node", f"127.0.0.1:{port}"),
                    *("--genesis", str(info.homes[0] / "genesis.json")),
                    *("--key", str(alice.key_file)),
                )
            )
            assert code == 1
            assert "REFUSED" in output
            liar.close()
            fake.real.close()
            nursery.cancel_scope.cancel()
    client.close()
