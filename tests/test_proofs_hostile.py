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
import hashlib
import re
from collections.abc import Callable, Mapping
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.base import App, AppError, AppState, ReadState, TxContext
from apps.merkle import (
    MemoryTree,
    Proof,
    ProofError,
    ProofLevel,
    build,
    key_hash,
    leaf_of,
    node_key,
    prove,
)
from apps.proofs import (
    PROVEN_READS_MAX,
    VALIDATOR_LINKS_MAX,
    ProofUnsupported,
    ProvenReads,
    QueryProof,
    ReadRecorder,
    ValidatorLink,
    certifying_validators,
    recorded_query,
    verify_query_proof,
)
from apps.state import NamespacedState, namespace_prefix
from consensus.codec import Limits, Value, decode, encode
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
OTHER_CHAIN = "other-chain"
APP = "ledger"
CHANGE_HEIGHT = 4
SETTINGS = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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


def assert_true_or_refused(data: bytes) -> None:
    """``data`` decodes and verifies only into values true of a state the chain certified at
    the proof's height, each with the proof an honest node gives; anything else raises
    ``ProofError``."""
    try:
        proof = QueryProof.decode(data)
        values = verify_query_proof(proof, GENESIS_SET, CHAIN)
        validators = certifying_validators(proof, GENESIS_SET, CHAIN)
    except ProofError:
        return
    assert proof.header.chain_id == CHAIN
    assert proof.header.height == proof.height + 1
    assert proof.height in ROOTS
    assert proof.header.app_hash == ROOTS[proof.height]
    assert validators == (NEXT_SET if proof.header.height >= CHANGE_HEIGHT else GENESIS_SET)
    memory = tree(proof.height)
    for key, value, key_proof in proof.reads:
        assert STATES[proof.height].get(key) == values[key] == value, key
        # Nothing else verifies either: not even bits the root does not depend on.
        assert key_proof == prove(memory, key), key


def test_the_genuine_answers_verify() -> None:
    # Block 2 by the genesis set; 4, the first by the new set; 6 and 7.
    for height in (1, 3, 5, 6):
        proof = answer(height)
        assert verified(proof) == {key: STATES[height].get(key) for key in (PRESENT, ABSENT)}
        assert QueryProof.decode(proof.encode()) == proof


# ------------------------------------------------------------------ every field, every byte


def _paths(value: Value, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every position in a nested tuple value, the value itself first."""
    found = [prefix]
    if isinstance(value, tuple):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*prefix, index)))
    return found


def _at(value: Value, path: tuple[int, ...]) -> Value:
    for index in path:
        assert isinstance(value, tuple)
        value = value[index]
    return value


def _replace(value: Value, path: tuple[int, ...], new: Value) -> Value:
    if not path:
        return new
    assert isinstance(value, tuple)
    head, rest = path[0], path[1:]
    return (*value[:head], _replace(value[head], rest, new), *value[head + 1 :])


def _fields(proof: QueryProof) -> Value:
    """The proof's encodable form, with each key's proof opened up (so mutations reach into
    the levels)."""
    return (
        proof.height,
        proof.header.fields(),
        proof.certificate.fields(),
        tuple(
            (
                key,
                value,
                (tuple((lv.bitmap, lv.leafmap, lv.siblings) for lv in p.levels), p.terminal),
            )
            for key, value, p in proof.reads
        ),
        tuple(link.fields() for link in proof.links),
    )


def _encode_fields(fields: Value) -> bytes | None:
    """The bytes of a (mutated) ``_fields`` value, or None when it is no longer encodable."""
    try:
        assert isinstance(fields, tuple)
        assert len(fields) == 5
        height, block, signed, reads, links = fields
        assert isinstance(reads, tuple)
        packed: list[Value] = []
        for read in reads:
            if isinstance(read, tuple) and len(read) == 3 and not isinstance(read[2], bytes):
                read = (read[0], read[1], encode(read[2]))
            packed.append(read)
        return encode((height, block, signed, tuple(packed), links))
    except (AssertionError, ValueError):
        return None


GENUINE_FIELDS = _fields(GENUINE)
OTHER_FIELDS = _fields(answer(6, (PRESENT, account_key("account-8"), ABSENT)))
# Every piece of genuine answers a node could splice in (other heights, keys, blocks).
PIECES = [_at(fields, path) for fields in (GENUINE_FIELDS, OTHER_FIELDS) for path in _paths(fields)]
SCALARS: st.SearchStrategy[Value] = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, 1, 2, 3, 5, 6, 7, 0x8000, 0xFFFF, 0x10000, 2**63, 2**64 - 1, -1]),
    st.binary(max_size=70),
    st.sampled_from([b"\x00" * 32, b"\x00" * 64, CHAIN, OTHER_CHAIN, ""]),
)
MUTATIONS: st.SearchStrategy[Value] = st.one_of(
    SCALARS,
    st.sampled_from(PIECES),
    st.lists(SCALARS, max_size=4).map(tuple),
)


@SETTINGS
@given(st.data())
def test_an_answer_with_any_field_replaced_is_refused_unless_still_true(
    data: st.DataObject,
) -> None:
    fields = GENUINE_FIELDS
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        path = data.draw(st.sampled_from(_paths(fields)), label="where")
        old = _at(fields, path)
        choices: list[st.SearchStrategy[Value]] = [MUTATIONS]
        if isinstance(old, tuple) and old:
            index = data.draw(st.integers(0, len(old) - 1), label="index")
            dropped: Value = (*old[:index], *old[index + 1 :])
            doubled: Value = (*old[: index + 1], *old[index:])
            choices.append(st.sampled_from([dropped, doubled]))
        if isinstance(old, bytes) and old:
            index = data.draw(st.integers(0, len(old) - 1), label="byte")
            flipped = old[:index] + bytes((old[index] ^ 1,)) + old[index + 1 :]
            choices.append(st.sampled_from([flipped, old[:-1], old + b"\x00"]))
        if isinstance(old, int) and not isinstance(old, bool):
            choices.append(st.sampled_from([old - 1, old + 1]))
        fields = _replace(fields, path, data.draw(st.one_of(*choices), label="new"))
    encoded = _encode_fields(fields)
    if encoded is not None:
        assert_true_or_refused(encoded)


@SETTINGS
@given(st.data())
def test_an_answer_with_any_bytes_changed_is_refused_unless_still_true(data: st.DataObject) -> None:
    encoded = bytearray(GENUINE.encode())
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        index = data.draw(st.integers(0, len(encoded) - 1), label="at")
        change = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]), label="change")
        if change == "flip":
            encoded[index] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif change == "set":
            encoded[index] = data.draw(st.integers(0, 255), label="byte")
        elif change == "cut":
            del encoded[index : index + data.draw(st.integers(1, 80), label="length")]
        else:
            encoded[index:index] = data.draw(st.binary(min_size=1, max_size=8), label="bytes")
        if not encoded:
            return
    assert_true_or_refused(bytes(encoded))


# ------------------------------------------------------------------ spliced answers


def _read(proof: QueryProof, index: int = 0) -> tuple[bytes, bytes | None, Proof]:
    return proof.reads[index]


def _with_read(proof: QueryProof, key: bytes, value: bytes | None, key_proof: Proof) -> QueryProof:
    return dataclasses.replace(proof, reads=((key, value, key_proof),))


def _levels(key_proof: Proof, levels: tuple[ProofLevel, ...]) -> Proof:
    return dataclasses.replace(key_proof, levels=levels)


def _present_proof() -> Proof:
    return _read(GENUINE, 0)[2]


def _absent_proof() -> Proof:
    return _read(GENUINE, 1)[2]


def _first_level_changed(**changes: int | bytes) -> QueryProof:
    """GENUINE with the present key's first proof level changed by ``changes``."""
    levels = _present_proof().levels
    changed = (dataclasses.replace(levels[0], **changes), *levels[1:])  # type: ignore[arg-type]
    return _with_read(GENUINE, PRESENT, _read(GENUINE)[1], _levels(_present_proof(), changed))


def _node_hash_below_root(key: bytes) -> bytes:
    """The hash of the node one level below the root on ``key``'s path, as the root holds it
    in ``key``'s slot (32 bytes)."""
    assert len(_present_proof().levels) >= 2, "the key sits deeper than the root's children"
    record = tree(5).records[node_key(key_hash(key), 1)]
    return hashlib.sha256(b"\x01" + record).digest()


SPLICES: dict[str, tuple[Callable[[], QueryProof], str]] = {
    "another key's proof, with its value": (
        lambda: _with_read(GENUINE, account_key("account-8"), _read(GENUINE)[1], _present_proof()),
        "does not end at this key's leaf",
    ),
    "a present key's proof claiming absence": (
        lambda: _with_read(GENUINE, PRESENT, None, _present_proof()),
        "the key is present",
    ),
    "an absent key's proof of absence for a present key": (
        lambda: _with_read(GENUINE, PRESENT, None, _absent_proof()),
        f"key {PRESENT!r}",
    ),
    "an absent key's proof claiming a value": (
        lambda: _with_read(GENUINE, ABSENT, encode(0), _absent_proof()),
        "does not end at this key's leaf",
    ),
    "the value with trailing bytes": (
        lambda: _with_read(
            GENUINE, PRESENT, (_read(GENUINE)[1] or b"") + b"\x00", _present_proof()
        ),
        "does not end at this key's leaf",
    ),
    "the value of the next height": (
        lambda: _with_read(GENUINE, PRESENT, STATES[6][PRESENT], _present_proof()),
        "does not end at this key's leaf",
    ),
    "the read of the next height, with its proof": (
        lambda: dataclasses.replace(GENUINE, reads=answer(6).reads),
        "hashes to",
    ),
    "the path cut short": (
        lambda: _with_read(
            GENUINE,
            PRESENT,
            _read(GENUINE)[1],
            _levels(_present_proof(), _present_proof().levels[:-1]),
        ),
        "marks the key's slot as the wrong kind",
    ),
    "the path cut at the root": (
        lambda: _with_read(GENUINE, PRESENT, _read(GENUINE)[1], _levels(_present_proof(), ())),
        "hashes to",
    ),
    "the path extended by a level": (
        lambda: _with_read(
            GENUINE,
            PRESENT,
            _read(GENUINE)[1],
            _levels(_present_proof(), (*_present_proof().levels, _present_proof().levels[-1])),
        ),
        f"key {PRESENT!r}",
    ),
    "another key's levels": (
        lambda: _with_read(
            GENUINE, PRESENT, _read(GENUINE)[1], _levels(_present_proof(), _absent_proof().levels)
        ),
        f"key {PRESENT!r}",
    ),
    "a level with a sibling's bytes left over": (
        lambda: _first_level_changed(siblings=_present_proof().levels[0].siblings + b"!"),
        "more siblings than its bitmap",
    ),
    "a level's leafmap marking an empty slot": (
        lambda: _with_read(
            GENUINE,
            ABSENT,
            None,
            _levels(
                _absent_proof(),
                (
                    *_absent_proof().levels[:-1],
                    dataclasses.replace(
                        _absent_proof().levels[-1],
                        leafmap=_absent_proof().levels[-1].leafmap
                        | (0xFFFF & ~_absent_proof().levels[-1].bitmap),
                    ),
                ),
            ),
        ),
        "bitmaps are malformed",
    ),
    "a level's bitmap beyond sixteen slots": (
        lambda: _first_level_changed(bitmap=_present_proof().levels[0].bitmap | 1 << 16),
        "bitmaps are malformed",
    ),
    "the path cut at a node, its hash for the end": (
        lambda: _with_read(
            GENUINE,
            PRESENT,
            None,
            Proof(_present_proof().levels[:1], _node_hash_below_root(PRESENT)),
        ),
        "terminal slot is not a 64-byte leaf",
    ),
    "a key read twice": (
        lambda: dataclasses.replace(GENUINE, reads=(_read(GENUINE), _read(GENUINE))),
        "proven twice",
    ),
    "the header of the next height": (
        lambda: dataclasses.replace(GENUINE, header=header(7)),
        "certified by block 6, not by block 7",
    ),
    "the header and certificate of the next height": (
        lambda: dataclasses.replace(GENUINE, header=header(7), certificate=certificate(header(7))),
        "certified by block 6, not by block 7",
    ),
    "the next height's certificate": (
        lambda: dataclasses.replace(GENUINE, certificate=certificate(header(7))),
        "certificate of block 6",
    ),
    "the height of the next state": (
        lambda: dataclasses.replace(GENUINE, height=6),
        "certified by block 7, not by block 6",
    ),
    "another chain's block": (
        lambda: dataclasses.replace(
            GENUINE,
            header=header(6, chain=OTHER_CHAIN),
            certificate=certificate(header(6, chain=OTHER_CHAIN), chain=OTHER_CHAIN),
        ),
        "for chain 'other-chain'",
    ),
    "this chain's block signed for another chain": (
        lambda: dataclasses.replace(GENUINE, certificate=certificate(header(6), chain=OTHER_CHAIN)),
        "does not verify",
    ),
    "a header carrying another app hash": (
        lambda: dataclasses.replace(GENUINE, header=header(6, app_hash=ROOTS[6])),
        "certificate of block 6",
    ),
    "a block certified by the retired validators": (
        lambda: dataclasses.replace(
            GENUINE,
            header=header(6, app_hash=ROOTS[6]),
            certificate=certificate(header(6, app_hash=ROOTS[6]), GENESIS_KEYS),
        ),
        "does not verify",
    ),
    "an early answer's certificate signed by the next validators": (
        lambda: dataclasses.replace(answer(1), certificate=certificate(header(2), NEXT_KEYS)),
        "does not verify",
    ),
    "a validator change linked to the wrong block": (
        lambda: dataclasses.replace(
            GENUINE,
            links=(
                dataclasses.replace(LINK, header=header(2), certificate=certificate(header(2))),
            ),
        ),
        "does not carry block 3",
    ),
    "a validator change certified by the sets it names": (
        lambda: dataclasses.replace(
            GENUINE,
            links=(dataclasses.replace(LINK, certificate=certificate(header(3), NEXT_KEYS)),),
        ),
        "does not verify",
    ),
    "a certificate of this block at another height": (
        lambda: dataclasses.replace(GENUINE, certificate=certificate(header(6), height=7)),
        "certificate is for height 7, not 6",
    ),
    "the same validator change twice": (
        lambda: dataclasses.replace(GENUINE, links=(LINK, LINK)),
        "increasing height order",
    ),
    "a validator change after the certified block": (
        lambda: dataclasses.replace(answer(1), links=(LINK,)),
        "after the certified block 2",
    ),
    "a validator change from another chain's block": (
        lambda: dataclasses.replace(
            GENUINE,
            links=(
                dataclasses.replace(
                    LINK,
                    header=header(3, chain=OTHER_CHAIN),
                    certificate=certificate(header(3, chain=OTHER_CHAIN), chain=OTHER_CHAIN),
                ),
            ),
        ),
        "does not carry block 3 of chain 'proof-chain'",
    ),
    "too many reads": (
        lambda: dataclasses.replace(GENUINE, reads=(_read(GENUINE),) * (PROVEN_READS_MAX + 1)),
        f"at most {PROVEN_READS_MAX} reads",
    ),
}


@pytest.mark.parametrize("name", list(SPLICES))
def test_a_spliced_answer_is_refused_and_named(name: str) -> None:
    build_proof, expected = SPLICES[name]
    proof = build_proof()
    with pytest.raises(ProofError, match=re.escape(expected)):
        verified(proof)


def test_a_long_key_is_named_briefly() -> None:
    """A hostile node's keys may be long (the answer may hold megabytes): a refusal names the
    key by its first bytes and its length, so a client's message stays short."""
    key = b"k" * 100_000
    _, value, key_proof = _read(GENUINE)
    with pytest.raises(ProofError) as refused:
        verified(_with_read(GENUINE, key, value, key_proof))
    message = str(refused.value)
    assert message.startswith(f"key {b'k' * 64!r}... (100000 bytes): "), message[:200]
    assert len(message) < 500
    with pytest.raises(ProofError, match=r"'\.\.\. \(100000 bytes\), which the proof"):
        ProvenReads({}).get(key)
    # A short key is shown whole.
    with pytest.raises(ProofError, match=re.escape("key b'short', which")):
        ProvenReads({}).get(b"short")


def test_an_oversized_answer_is_refused_before_it_is_read() -> None:
    roomy = Limits(
        total_bytes_max=64 * 1024 * 1024,
        depth_max=8,
        str_bytes_max=256,
        bytes_max=32 * 1024 * 1024,
        array_len_max=4096,
        map_len_max=16,
    )
    height, block, signed, reads, _ = (
        GENUINE.height,
        GENUINE.header.fields(),
        GENUINE.certificate.fields(),
        (),
        (),
    )
    links = tuple(LINK.fields() for _ in range(VALIDATOR_LINKS_MAX + 1))
    with pytest.raises(ProofError, match="query proof does not decode"):
        QueryProof.decode(encode((height, block, signed, reads, links), roomy))
    key = b"k" * 17 * 1024 * 1024
    huge = encode((height, block, signed, ((key, None, b""),), ()), roomy)
    with pytest.raises(ProofError, match="query proof does not decode: too_large"):
        QueryProof.decode(huge)


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


@pytest.mark.parametrize(
    "app",
    [ScanningLedgerApp(), FragileLedgerApp(), TolerantLedgerApp()],
    ids=lambda app: type(app).__name__,
)
def test_a_node_does_not_answer_a_query_that_met_a_refusal(app: App) -> None:
    """The node side (``recorded_query``, what ``Node.query_proven`` runs): a query whose own
    code caught a refusal and answered anyway, or failed otherwise, is not provable, instead of
    an answer every client would refuse. A query that reads single keys is recorded."""
    state = {namespace_prefix(APP) + b"balance/alice": encode(5)}
    arguments: dict[str, Value] = {"account": "alice"}

    def run(recorder: ReadRecorder) -> Value:
        return app.query(NamespacedState(recorder, APP, writable=False), "balance", arguments)

    if isinstance(app, ScanningLedgerApp):
        with pytest.raises(ProofUnsupported, match="reads a range"):
            recorded_query(run, state)
    else:
        assert recorded_query(run, state) == (5, state)
    # More reads than a proof holds, caught by the app: not provable either.
    many = [b"balance/" + bytes([i]) for i in range(PROVEN_READS_MAX + 1)]

    def greedy(recorder: ReadRecorder) -> Value:
        view = NamespacedState(recorder, APP, writable=False)
        try:
            for item in many:
                view.get(item)
        except Exception:  # an app that takes any failure for no balance
            return 0
        return 1

    with pytest.raises(ProofUnsupported, match=f"more than {PROVEN_READS_MAX} keys"):
        recorded_query(greedy, state)

    # A refusal the app's code turns into another failure: not provable, not that failure.
    def failing(recorder: ReadRecorder) -> Value:
        view = NamespacedState(recorder, APP, writable=False)
        try:
            return len(list(view.scan(b"balance/")))
        except Exception:
            raise KeyError("balance") from None

    with pytest.raises(ProofUnsupported, match="reads a range"):
        recorded_query(failing, state)


@pytest.mark.parametrize(
    "proof",
    [
        None,
        "00",
        [],
        {},
        {"encoded": None},
        {"encoded": 7},
        {"encoded": "0"},
        {"encoded": "zz"},
        {"encoded": "é"},
        {"encoded": ""},
        {"encoded": GENUINE.encode().hex() + "00"},
        {"encoded": GENUINE.encode().hex()[:-2]},
        {"encoded": encode((5, (), (), (), ())).hex()},
    ],
)
def test_a_proof_that_is_not_one_is_refused(proof: JsonType) -> None:
    with pytest.raises(ProofRefused, match=r"carries no proof|proof refused"):
        ask(LedgerApp(), proof, decode(STATES[5][PRESENT]))


def test_an_answer_other_than_the_proven_one_is_refused() -> None:
    balance = decode(STATES[5][PRESENT])
    assert isinstance(balance, int)
    for other in (balance + 1, str(balance), None, decode(STATES[6][PRESENT])):
        with pytest.raises(ProofRefused, match="differs from what its proven state gives"):
            ask(LedgerApp(), GENUINE, other)
