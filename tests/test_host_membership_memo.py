"""The host's memos of membership answers never change a block's outcome.

Each block is executed twice, on identical committed state: by a host that reuses membership
answers while membership state is unchanged (within a block, and across blocks until one
writes membership state), and by one that asks membership every time. Receipts, write sets
and app hashes must be identical, including when identities and enterprises are suspended,
reinstated or registered in the middle of a block or in a block of their own, and when a
membership operation that wrote something is rolled back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import pytest

from apps.assets import AssetsApp
from apps.base import ROLE_BANK, AppError, BlockContext, TxContext
from apps.demo import DemoTraffic, Party, demo_consortium
from apps.host import (
    _MEMBERSHIP_PREFIX,
    AppHost,
    BlockResult,
    TransactionRejected,
    _MembershipAnswers,
)
from apps.membership import MembershipApp
from apps.payments import PaymentsApp
from apps.scf import ScfApp
from apps.state import MemoryBackend, StateOverlay
from apps.transaction import Transaction, sign_transaction
from consensus.codec import Value, decode, encode
from consensus.crypto import PrivateKey

EPOCH_MS = 1_704_067_200_000
CONSORTIUM = demo_consortium(7)
NEWCOMER = PrivateKey(b"\x42" * 32)


class RollbackMembership(MembershipApp):
    """Membership plus one operation that suspends an identity, looks it up (so the memo
    records it suspended), then fails: every write is rolled back."""

    operations: ClassVar[Mapping[str, frozenset[str]]] = {
        **MembershipApp.operations,
        "suspend_then_fail": frozenset({ROLE_BANK}),
    }

    def apply(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> Value:
        if operation != "suspend_then_fail":
            return super().apply(ctx, operation, arguments)
        super().apply(ctx, "suspend_identity", arguments)
        answer = ctx.query("membership", "identity", arguments)
        assert isinstance(answer, dict)
        assert answer["status"] == "suspended"
        raise AppError("changed_mind", "the suspension is abandoned")


def start(memoise: bool) -> tuple[AppHost, MemoryBackend]:
    backend = MemoryBackend()
    apps = [RollbackMembership(), PaymentsApp(), ScfApp(), AssetsApp()]
    host = AppHost(apps, backend, chain_id=CONSORTIUM.chain_id)
    host._memoise_membership = memoise
    writes, app_hash = host.init_genesis(CONSORTIUM.app_genesis)
    backend.apply(writes)
    host.committed(0, app_hash)
    return host, backend


class Signer:
    """Signs with per-sender sequential nonces."""

    def __init__(self) -> None:
        self.nonces: dict[bytes, int] = {}

    def __call__(
        self, key: PrivateKey, app: str, operation: str, arguments: Mapping[str, Value]
    ) -> bytes:
        nonce = self.nonces.get(key.public_key, 0)
        self.nonces[key.public_key] = nonce + 1
        tx = sign_transaction(
            key,
            chain_id=CONSORTIUM.chain_id,
            app=app,
            operation=operation,
            arguments=arguments,
            nonce=nonce,
        )
        return tx.encoded

    def refused(self, key: PrivateKey | Party, encoded: bytes) -> bytes:
        """``encoded`` will fail the host's gates, which do not use up its nonce."""
        self.nonces[key.public_key] -= 1
        return encoded


def pay(sign: Signer, source: Party, to: Party | PrivateKey, amount: int = 100) -> bytes:
    target = to.public_key
    return sign(
        source.key,
        "payments",
        "transfer",
        {
            "to": target,
            "currency": source.currency,
            "amount": amount,
            "end_to_end_id": f"memo-{source.name}-{sign.nonces.get(source.public_key, 0)}",
        },
    )


def execute_both(blocks: Sequence[Sequence[bytes]]) -> list[BlockResult]:
    """Run the blocks on a memoising and a non-memoising host; assert identical results."""
    memo_host, memo_backend = start(memoise=True)
    plain_host, plain_backend = start(memoise=False)
    results: list[BlockResult] = []
    for height, block in enumerate(blocks, start=1):
        context = BlockContext(height, EPOCH_MS + 1000 * height, b"", CONSORTIUM.chain_id)
        memo = memo_host.execute_block(context, block)
        plain = plain_host.execute_block(context, block)
        assert memo.receipts == plain.receipts
        assert memo.writes == plain.writes
        assert memo.app_hash == plain.app_hash
        for host, backend in ((memo_host, memo_backend), (plain_host, plain_backend)):
            backend.apply(memo.writes)
            # With the write set, as a node commits: the memoising host keeps its answers on
            # committed state across blocks that do not write membership state.
            host.committed(height, memo.app_hash, memo.writes)
        results.append(memo)
    assert memo_backend.items() == plain_backend.items()
    return results


def test_membership_changes_mid_block_are_seen_by_later_transactions() -> None:
    sign = Signer()
    bank = CONSORTIUM.party("lion-bank")
    alice, bob = CONSORTIUM.party("alice"), CONSORTIUM.party("bob")
    metals = CONSORTIUM.party("merlion-metals")  # an enterprise sponsored by lion-bank
    newcomer_pays: dict[str, Value] = {
        "to": bob.public_key,
        "currency": "SGD",
        "amount": 1,
        "end_to_end_id": "newcomer-0",
    }
    block = [
        pay(sign, alice, bob),
        pay(sign, metals, alice),
        sign(bank.key, "membership", "suspend_identity", {"public_key": alice.public_key}),
        sign.refused(alice, pay(sign, alice, bob)),  # the sender is now suspended
        pay(sign, metals, alice),  # the beneficiary is now suspended
        sign(bank.key, "membership", "reinstate_identity", {"public_key": alice.public_key}),
        pay(sign, alice, bob),
        sign(bank.key, "membership", "suspend_enterprise", {"id": "merlion-metals"}),
        sign.refused(metals, pay(sign, metals, bob)),  # the sender's institution is suspended
        sign(bank.key, "membership", "reinstate_enterprise", {"id": "merlion-metals"}),
        pay(sign, metals, bob),
        # Not a member yet:
        sign.refused(NEWCOMER, sign(NEWCOMER, "payments", "transfer", newcomer_pays)),
        sign(
            bank.key,
            "membership",
            "register_identity",
            {"public_key": NEWCOMER.public_key, "institution": "lion-bank", "roles": ["customer"]},
        ),
        sign(NEWCOMER, "payments", "transfer", newcomer_pays),  # a member without an account
        pay(sign, bank, PrivateKey(b"\x43" * 32)),  # to a stranger
        sign(bank.key, "membership", "suspend_then_fail", {"public_key": alice.public_key}),
        pay(sign, alice, bob),  # the suspension was rolled back
        pay(sign, metals, alice),
    ]
    (result,) = execute_both([block])
    codes = [receipt.code or "ok" for receipt in result.receipts]
    assert codes == [
        "ok",
        "ok",
        "ok",
        "sender_suspended",
        "inactive_party",
        "ok",
        "ok",
        "ok",
        "sender_suspended",
        "ok",
        "ok",
        "unknown_sender",
        "ok",
        "no_account",
        "unknown_party",
        "changed_mind",
        "ok",
        "ok",
    ]


def test_membership_changes_in_earlier_blocks_are_seen_by_later_blocks() -> None:
    """Answers remembered in one block (the parties active) are not reused after a later
    block suspended or reinstated them: the committed memo is dropped by that commit."""
    sign = Signer()
    bank = CONSORTIUM.party("lion-bank")
    alice, bob = CONSORTIUM.party("alice"), CONSORTIUM.party("bob")
    metals = CONSORTIUM.party("merlion-metals")
    blocks = [
        [pay(sign, alice, bob), pay(sign, metals, alice)],
        [sign(bank.key, "membership", "suspend_identity", {"public_key": alice.public_key})],
        [sign.refused(alice, pay(sign, alice, bob)), pay(sign, metals, alice)],
        [sign(bank.key, "membership", "reinstate_identity", {"public_key": alice.public_key})],
        [pay(sign, alice, bob), pay(sign, metals, alice)],
        [sign(bank.key, "membership", "suspend_enterprise", {"id": "merlion-metals"})],
        [sign.refused(metals, pay(sign, metals, bob)), pay(sign, alice, bob)],
    ]
    results = execute_both(blocks)
    codes = [[receipt.code or "ok" for receipt in result.receipts] for result in results]
    assert codes == [
        ["ok", "ok"],
        ["ok"],
        ["sender_suspended", "inactive_party"],
        ["ok"],
        ["ok", "ok"],
        ["ok"],
        ["sender_suspended", "ok"],
    ]


def test_demo_stream_is_identical_with_and_without_the_memo() -> None:
    traffic = DemoTraffic(CONSORTIUM)
    blocks = [
        [tx.encoded for tx in traffic.batch(60, EPOCH_MS + 1000 * height)] for height in range(1, 9)
    ]
    results = execute_both(blocks)
    assert sum(receipt.ok for result in results for receipt in result.receipts) > 400


def test_answers_from_the_committed_memo_are_fresh_copies_until_membership_changes() -> None:
    # While the block has not changed membership state, an answer comes from the host's memo
    # of committed answers: each caller gets a map of its own, and a write in the membership
    # namespace sends the next query to membership itself.
    host, backend = start(memoise=True)
    sender = CONSORTIUM.parties[0]
    arguments: dict[str, Value] = {"public_key": sender.public_key}
    overlay = StateOverlay(backend, watch=_MEMBERSHIP_PREFIX)
    answers = _MembershipAnswers(host._apps["membership"], overlay, host._committed_answers)
    assert host._committed_answers.kept(("identity", sender.public_key)) is None
    given: list[dict[str, Value]] = []
    for _ in range(3):
        answer = answers.query("identity", arguments)
        assert isinstance(answer, dict)
        assert answer["status"] == "active"
        assert all(answer is not earlier for earlier in given)
        # The first answer is asked of membership and kept; the others come from the memo.
        assert host._committed_answers.kept(("identity", sender.public_key)) is not None
        answer["status"] = "tampered"
        given.append(answer)
    # Suspended in this block's overlay (membership's own record, rewritten by hand): the
    # memo of committed answers no longer answers.
    key = _MEMBERSHIP_PREFIX + b"ident/" + sender.public_key
    record = overlay.get(key)
    assert record is not None
    stored = decode(record)
    assert isinstance(stored, dict)
    overlay.put(key, encode({**stored, "status": "suspended"}))
    after = answers.query("identity", arguments)
    assert isinstance(after, dict)
    assert after["status"] == "suspended"


def test_authorisations_on_committed_state_are_kept_until_a_commit_writes_membership() -> None:
    host, backend = start(memoise=True)
    sign = Signer()
    bank = CONSORTIUM.party("lion-bank")
    alice, bob = CONSORTIUM.party("alice"), CONSORTIUM.party("bob")
    authorised = host._committed_answers.authorised

    def run(height: int, block: list[bytes]) -> list[str]:
        context = BlockContext(height, EPOCH_MS + 1000 * height, b"", CONSORTIUM.chain_id)
        result = host.execute_block(context, block)
        backend.apply(result.writes)
        host.committed(height, result.app_hash, result.writes)
        return [receipt.code or "ok" for receipt in result.receipts]

    assert run(1, [pay(sign, alice, bob), pay(sign, bob, alice)]) == ["ok", "ok"]
    assert authorised == {
        (alice.public_key, "payments", "transfer"),
        (bob.public_key, "payments", "transfer"),
    }
    # A block that changes membership state: what it authorised after the change is not
    # kept, and its commit drops what was.
    block = [
        sign(bank.key, "membership", "suspend_identity", {"public_key": alice.public_key}),
        pay(sign, bob, alice),
    ]
    assert run(2, block) == ["ok", "inactive_party"]
    assert authorised == set()
    assert run(3, [sign.refused(alice, pay(sign, alice, bob))]) == ["sender_suspended"]
    assert authorised == set()


def test_authorisations_found_by_checks_are_kept_with_the_keys_they_read() -> None:
    # A repeat sender's admission check is authorised from the kept outcome and records the
    # keys the answers behind it read, so its read set is what a check asking membership
    # records; a commit that writes membership state drops it.
    host, backend = start(memoise=True)
    fresh, _ = start(memoise=True)
    sign = Signer()
    bank = CONSORTIUM.party("lion-bank")
    alice, bob = CONSORTIUM.party("alice"), CONSORTIUM.party("bob")
    first, second = (
        Transaction.decode(pay(sign, alice, bob), chain_id=CONSORTIUM.chain_id) for _ in range(2)
    )
    authorisation = (alice.public_key, "payments", "transfer")
    checked = host._committed_answers.checked
    assert authorisation not in checked
    host.check_transaction_reads(first)
    assert authorisation in checked
    kept = checked[authorisation]
    assert _MEMBERSHIP_PREFIX + b"ident/" + alice.public_key in kept
    assert all(key.startswith(_MEMBERSHIP_PREFIX) for key in kept)
    from_memo = host.check_transaction_reads(second, expected_nonce=second.nonce)
    asked = fresh.check_transaction_reads(second, expected_nonce=second.nonce)
    assert from_memo == asked
    assert kept <= from_memo.keys
    # What a hit records is what was kept (a marker shows it is read from there).
    checked[authorisation] = kept | {b"marker"}
    assert b"marker" in host.check_transaction_reads(second, expected_nonce=second.nonce).keys
    # Alice suspended by a committed block: the kept outcome goes with the commit.
    context = BlockContext(1, EPOCH_MS + 1000, b"", CONSORTIUM.chain_id)
    suspend = sign(bank.key, "membership", "suspend_identity", {"public_key": alice.public_key})
    result = host.execute_block(context, [suspend])
    assert [receipt.code or "ok" for receipt in result.receipts] == ["ok"]
    backend.apply(result.writes)
    host.committed(1, result.app_hash, result.writes)
    assert checked == {}
    with pytest.raises(TransactionRejected) as refused:
        host.check_transaction_reads(first)
    assert refused.value.code == "sender_suspended"
