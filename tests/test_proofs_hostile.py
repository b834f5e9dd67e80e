"""Proven answers from a hostile node: whatever it sends in place of a genuine proof, the
client accepts only values that are true of the certified state, and refuses anything else with
``ProofError`` (``ProofRefused`` from the client), never another exception.

The chain is built here, signed with its validators' keys: four genesis validators certify
blocks 1 to 3, block 3 names four new ones, and those certify block 4 on (so a certificate of
the genesis set, signed by validators that have retired, proves nothing from height 4). The
app is a ledger of balances, and the node answers the states after heights 1, 3, 5 and 6.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import pytest

from apps.base import App, AppError, AppState, ReadState, TxContext
from apps.merkle import (
    MemoryTree,
    build,
    leaf_of,
    prove,
)
from apps.proofs import (
    QueryProof,
    ValidatorLink,
    certifying_validators,
    verify_query_proof,
)
from apps.state import namespace_prefix
from consensus.codec import Value, decode, encode
from consensus.crypto import PrivateKey, hash_bytes
from consensus.types import (
    BlockHeader,
    CommitCertificate,
    Phase,
    Validator,
    ValidatorSet,
    Vote,
)
from node.client.client import Client, ProofRefused
from node.genesis import ConsensusParams, Genesis, GenesisValidator
from node.jsonvalue import JsonType, to_json

CHAIN = "proof-chain"
APP = "ledger"
CHANGE_HEIGHT = 4


def keys(name: str) -> list[PrivateKey]:
    return [PrivateKey(hash_bytes(f"{name}-{index}".encode())) for index in range(4)]


GENESIS_KEYS = keys("genesis-validator")
NEXT_KEYS = keys("next-validator")


def validator_set(private_keys: list[PrivateKey]) -> ValidatorSet:
    return ValidatorSet(
        tuple(
            Validator(f"v{index}", key.public_key, hash_bytes(b"node " + key.public_key))
            for index, key in enumerate(private_keys)
        )
    )


GENESIS_SET = validator_set(GENESIS_KEYS)
NEXT_SET = validator_set(NEXT_KEYS)


def account_key(account: str) -> bytes:
    """The state key (namespaced, as the tree holds it) of ``account``'s balance."""
    return namespace_prefix(APP) + b"balance/" + account.encode()


# The state after heights 1, 3, 5 and 6 (the balances; "carol" is never there).
STATES: dict[int, dict[bytes, bytes]] = {
    height: {account_key(f"account-{index}"): encode(1000 * index + height) for index in range(40)}
    for height in (1, 3, 5, 6)
}
ROOTS = {
    height: build(leaf_of(k, v) for k, v in state.items()).root for height, state in STATES.items()
}
PRESENT = account_key("account-7")
ABSENT = account_key("carol")


def tree(height: int) -> MemoryTree:
    memory = MemoryTree()
    memory.apply(build(leaf_of(key, value) for key, value in STATES[height].items()))
    return memory


def header(height: int, *, chain: str = CHAIN, app_hash: bytes | None = None) -> BlockHeader:
    """Block ``height``: it carries the app hash of the state after ``height - 1`` and names
    the set that certifies the next block."""
    next_set = NEXT_SET if height + 1 >= CHANGE_HEIGHT else GENESIS_SET
    if app_hash is None:
        app_hash = ROOTS.get(height - 1, hash_bytes(b"state %d" % (height - 1)))
    return BlockHeader(
        chain,
        height,
        0,
        hash_bytes(b"parent %d" % height),
        app_hash,
        next_set.hash(),
        0,
        1_000_000 + height,
        hash_bytes(b"no transactions"),
        0,
    )


def certificate(
    block: BlockHeader,
    signers: list[PrivateKey] | None = None,
    *,
    chain: str = CHAIN,
    height: int | None = None,
) -> CommitCertificate:
    """Block ``block``'s commit certificate by a quorum (three of four) of ``signers``, by
    default the set in force at its height, their votes cast on ``chain`` at ``height``
    (default: the block's)."""
    if signers is None:
        signers = NEXT_KEYS if block.height >= CHANGE_HEIGHT else GENESIS_KEYS
    votes = [
        Vote.create(
            key,
            chain,
            phase=Phase.COMMIT,
            height=block.height if height is None else height,
            view=0,
            block_hash=block.hash(),
            validator=index,
        )
        for index, key in enumerate(signers[:3])
    ]
    return CommitCertificate.from_votes(votes)


LINK = ValidatorLink(CHANGE_HEIGHT, NEXT_SET, header(3), certificate(header(3)))


def answer(height: int, read_keys: tuple[bytes, ...] = (PRESENT, ABSENT)) -> QueryProof:
    """What an honest node sends for the state after ``height``."""
    memory = tree(height)
    block = header(height + 1)
    reads = tuple((key, STATES[height].get(key), prove(memory, key)) for key in read_keys)
    links = (LINK,) if block.height >= CHANGE_HEIGHT else ()
    return QueryProof(height, block, certificate(block), reads, links)


GENUINE = answer(5)


def verified(proof: QueryProof) -> dict[bytes, bytes | None]:
    """What the client takes from ``proof``: decoded from its bytes, then verified."""
    again = QueryProof.decode(proof.encode())
    values = verify_query_proof(again, GENESIS_SET, CHAIN)
    certifying_validators(again, GENESIS_SET, CHAIN)
    return values


def test_the_genuine_answers_verify() -> None:
    # Block 2 by the genesis set; 4, the first by the new set; 6 and 7.
    for height in (1, 3, 5, 6):
        proof = answer(height)
        assert verified(proof) == {key: STATES[height].get(key) for key in (PRESENT, ABSENT)}
        assert QueryProof.decode(proof.encode()) == proof


# ------------------------------------------------------------------ through the client


class LedgerApp(App):
    """Balances by account: ``balance {account}`` reads one key."""

    name: ClassVar[str] = APP
    operations: ClassVar[Mapping[str, frozenset[str]]] = {}

    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        return None

    def check(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> None:
        raise AppError("unknown_operation", operation)

    def apply(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> Value:
        raise AppError("unknown_operation", operation)

    def query(self, state: ReadState, path: str, arguments: Mapping[str, Value]) -> Value:
        account = arguments.get("account")
        if path != "balance" or not isinstance(account, str):
            raise AppError("unknown_query", path)
        return self.balance(state, b"balance/" + account.encode())

    def balance(self, state: ReadState, key: bytes) -> Value:
        raw = state.get(key)
        return 0 if raw is None else decode(raw)


class TolerantLedgerApp(LedgerApp):
    """The same ledger, read by code that takes a record it cannot read for no balance: it
    catches the codec's ``ValueError`` (and so anything else that is one)."""

    def balance(self, state: ReadState, key: bytes) -> Value:
        try:
            return decode(state.get(key) or b"")
        except ValueError:
            return 0


class ScanningLedgerApp(LedgerApp):
    """The same ledger, read by code that scans when it can and falls back to nothing."""

    def balance(self, state: ReadState, key: bytes) -> Value:
        try:
            return sum(1 for _ in state.scan(key))
        except Exception:
            return 0


class FragileLedgerApp(LedgerApp):
    """The same ledger, read by code that takes a record it cannot read for an empty one,
    which it then fails to decode (a ``CodecError``)."""

    def balance(self, state: ReadState, key: bytes) -> Value:
        try:
            raw = state.get(key)
        except ValueError:
            raw = b""
        return 0 if raw is None else decode(raw)


GENESIS = Genesis(
    chain_id=CHAIN,
    genesis_time_ms=1_000_000,
    consensus_params=ConsensusParams(),
    validators=tuple(
        GenesisValidator(validator.name, validator.public_key, validator.node_key or b"")
        for validator in GENESIS_SET.validators
    ),
    apps=(),
    app_state={},
)


class AnsweringClient(Client):
    """A client whose every request gets ``document`` back, as from a node that sends it."""

    def __init__(self, document: dict[str, JsonType]) -> None:
        super().__init__("127.0.0.1:9")
        self.document = document

    def _request(
        self, method: str, path: str, document: dict[str, JsonType] | None = None
    ) -> dict[str, JsonType]:
        return self.document


def ask(app: App, proof: QueryProof | JsonType, result: Value, account: str = "account-7") -> Value:
    """``Client.query_proven`` of ``balance {account}`` from a node that answers ``result`` with
    ``proof`` (encoded as a node sends it, or any JSON in its place)."""
    encoded: JsonType = (
        {"encoded": proof.encode().hex()} if isinstance(proof, QueryProof) else proof
    )
    client = AnsweringClient({"result": to_json(result), "proof": encoded})
    return client.query_proven(
        APP, "balance", {"account": account}, GENESIS, apps={APP: app}
    ).result


def test_the_client_takes_a_genuine_answer() -> None:
    assert GENESIS.validator_set == GENESIS_SET
    balance = decode(STATES[5][PRESENT])
    for app in (LedgerApp(), TolerantLedgerApp()):
        assert ask(app, GENUINE, balance) == balance
    assert ask(LedgerApp(), GENUINE, 0, "carol") == 0


@pytest.mark.parametrize(
    "app",
    [LedgerApp(), TolerantLedgerApp(), ScanningLedgerApp(), FragileLedgerApp()],
    ids=lambda app: type(app).__name__,
)
def test_an_answer_from_reads_the_proof_left_out_is_refused(app: App) -> None:
    """The node proves nothing and answers what the app gives when it cannot read the
    balance: the client refuses, and names the read, even when the app's own code catches the
    refusal and answers anyway, or fails in some other way."""
    empty = dataclasses.replace(GENUINE, reads=())
    with pytest.raises(ProofRefused, match=r"does not cover|reads a range"):
        ask(app, empty, 0)
