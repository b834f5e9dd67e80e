"""The mempool's recheck after a commit: as good as rechecking the whole pool, at the cost of
what the block touched.

Scenarios run the real host with membership (identity and enterprise suspensions change who
may send) and an app whose admission check reads state three ways (a key, a scanned range, the
block context), against two pools fed the same transactions: one rechecks everything after
each block (``update`` without a write set), the other only what the block wrote into.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st

from apps.base import ROLE_BANK, ROLE_ENTERPRISE, App, AppError, AppState, ReadState, TxContext
from apps.host import AppHost
from apps.membership import MembershipApp
from apps.transaction import Transaction
from consensus.codec import Value
from node.mempool import Mempool, MempoolLimits, MempoolRejected, MempoolUpdate
from tests.host_fixtures import CHAIN, Chain, genesis_config, identity, key

_LOCKS = (b"lock/", b"lock0")
_GUARDED = (b"g1", b"g2", b"g3")


class GuardApp(App):
    """An app whose ``check`` depends on committed state: a key must be absent (``absent``),
    no ``lock/`` key may exist (``no_locks``), the next block must be below a height
    (``before_height``). ``apply`` writes and deletes keys."""

    name: ClassVar[str] = "guard"
    operations: ClassVar[Mapping[str, frozenset[str]]] = {
        "op": frozenset({ROLE_BANK, ROLE_ENTERPRISE})
    }

    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        return None

    def check(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> None:
        absent = arguments.get("absent")
        if isinstance(absent, bytes) and ctx.state.get(absent) is not None:
            raise AppError("present", f"{absent!r} is set")
        if arguments.get("no_locks") and any(True for _ in ctx.state.scan(*_LOCKS)):
            raise AppError("locked", "a lock is held")
        before = arguments.get("before_height")
        if isinstance(before, int) and ctx.block.height >= before:
            raise AppError("late", f"the next block is at or past {before}")

    def apply(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> Value:
        for written in arguments.get("puts", ()):  # type: ignore[union-attr]
            assert isinstance(written, bytes)
            ctx.state.put(written, b"1")
        for deleted in arguments.get("deletes", ()):  # type: ignore[union-attr]
            assert isinstance(deleted, bytes)
            ctx.state.delete(deleted)
        return None

    def query(self, state: ReadState, path: str, arguments: Mapping[str, Value]) -> Value:
        raise AppError("unknown_query", path)


def _genesis(extra_identities: int = 0) -> dict[str, Value]:
    config = genesis_config()
    assert isinstance(config, dict)
    institutions = list(config["institutions"])
    institutions.append(
        {
            "id": "acme",
            "name": "Acme",
            "kind": "enterprise",
            "jurisdiction": "SG",
            "sponsor": "bank_a",
        }
    )
    identities = list(config["identities"])
    identities += [
        identity("u1", "bank_a", "bank"),
        identity("u2", "bank_a", "bank"),
        identity("u3", "bank_b", "bank"),
        identity("e1", "acme", "enterprise"),
    ]
    identities += [identity(f"many{i}", "bank_c", "bank") for i in range(extra_identities)]
    return {"membership": {"institutions": institutions, "identities": identities}}


SENDERS = ("bank_a", "bank_b", "u1", "u2", "u3", "e1")
# Who may suspend whom (a bank for its own staff and the enterprises it sponsors).
_STAFF = {"u1": "bank_a", "u2": "bank_a", "u3": "bank_b"}


def _add(pool: Mempool, tx: Transaction) -> str:
    try:
        pool.add(tx)
    except MempoolRejected as error:
        return error.code
    return "ok"


def _guard_arguments(rng: random.Random, height: int) -> dict[str, Value]:
    arguments: dict[str, Value] = {}
    if rng.random() < 0.5:
        arguments["absent"] = rng.choice(_GUARDED)
    if rng.random() < 0.3:
        arguments["no_locks"] = True
    if rng.random() < 0.3:
        arguments["before_height"] = height + rng.randint(1, 4)
    return arguments


def _external(rng: random.Random, chain: Chain, block: list[Transaction]) -> Transaction:
    """A transaction another node proposed: a suspension or reinstatement, a guard write, or
    a transaction that takes a pending transaction's nonce."""

    def nonce_of(label: str) -> int:
        public_key = key(label).public_key
        return chain.host.next_nonce(public_key) + sum(tx.sender == public_key for tx in block)

    choice = rng.randrange(4)
    if choice == 0:
        staff = rng.choice(sorted(_STAFF))
        operation = rng.choice(("suspend_identity", "reinstate_identity"))
        bank = _STAFF[staff]
        arguments: dict[str, Value] = {"public_key": key(staff).public_key}
        return chain.sign(key(bank), "membership", operation, arguments, nonce=nonce_of(bank))
    if choice == 1:
        operation = rng.choice(("suspend_enterprise", "reinstate_enterprise"))
        return chain.sign(
            key("bank_a"), "membership", operation, {"id": "acme"}, nonce=nonce_of("bank_a")
        )
    sender = rng.choice(SENDERS)
    arguments = {
        "puts": tuple(k for k in (*_GUARDED, b"lock/x") if rng.random() < 0.3),
        "deletes": tuple(k for k in (*_GUARDED, b"lock/x") if rng.random() < 0.3),
    }
    return chain.sign(key(sender), "guard", "op", arguments, nonce=nonce_of(sender))


def _pending(pool: Mempool) -> list[bytes]:
    return list(pool.known())


def run_scenario(seed: int, blocks: int = 10) -> tuple[int, int]:
    """Feed two pools the same transactions and blocks; they must always agree. Returns the
    work (checks) both did in total."""
    rng = random.Random(seed)
    chain = Chain.start([GuardApp()], _genesis())
    full = Mempool(chain.host)
    targeted = Mempool(chain.host)
    work_full = work_targeted = 0
    for _ in range(blocks):
        for _ in range(rng.randint(0, 10)):
            label = rng.choice(SENDERS)
            public_key = key(label).public_key
            nonce = full.pending_nonce(public_key) + (1 if rng.random() < 0.05 else 0)
            arguments = _guard_arguments(rng, chain.host.height)
            tx = chain.sign(key(label), "guard", "op", arguments, nonce=nonce)
            assert _add(full, tx) == _add(targeted, tx)
        taken = rng.randint(0, len(full))
        reaped = full.reap(transactions_max=taken, bytes_max=1 << 30)
        assert reaped == targeted.reap(transactions_max=taken, bytes_max=1 << 30)
        block = [full.known()[tx_hash] for tx_hash in [_hash_of(full, raw) for raw in reaped]]
        for _ in range(rng.randint(0, 3)):
            block.append(_external(rng, chain, block))
        result = chain.run(block)
        committed = [tx.hash for tx in block]
        by_full = full.update(committed)
        by_targeted = targeted.update(committed, [written for written, _ in result.writes])
        assert by_targeted.evicted == by_full.evicted
        assert by_targeted.committed == by_full.committed
        assert _pending(targeted) == _pending(full)
        _assert_still_admissible(chain, targeted)
        work_full += by_full.checks
        work_targeted += by_targeted.checks
    return work_full, work_targeted


def _assert_still_admissible(chain: Chain, pool: Mempool) -> None:
    """An independent judge: a fresh host (nothing memoised) over the committed state admits
    every transaction the pool kept, at its place in its sender's queue."""
    oracle = AppHost(
        [MembershipApp(), GuardApp()], chain.backend, chain_id=CHAIN, height=chain.host.height
    )
    position: dict[bytes, int] = {}
    for tx in pool.known().values():
        index = position.get(tx.sender, 0)
        position[tx.sender] = index + 1
        expected = oracle.next_nonce(tx.sender) + index
        oracle.check_transaction(tx, expected_nonce=expected)


def _hash_of(pool: Mempool, raw: bytes) -> bytes:
    return next(tx_hash for tx_hash, tx in pool.known().items() if tx.encoded == raw)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_targeted_recheck_evicts_exactly_what_a_full_recheck_evicts(seed: int) -> None:
    run_scenario(seed)


def test_the_scenarios_exercise_evictions_of_every_kind() -> None:
    """The comparison above is only worth something if the scenarios evict for every reason
    the recheck must catch: suspended senders, checks whose reads changed, stale nonces."""
    reasons: set[str] = set()
    for seed in range(30):
        reasons |= _eviction_reasons(seed)
    assert {"sender_suspended", "present", "locked", "late", "stale_nonce", "nonce_gap"} <= reasons


def _eviction_reasons(seed: int) -> set[str]:
    rng = random.Random(seed)
    chain = Chain.start([GuardApp()], _genesis())
    pool = Mempool(chain.host)
    reasons: set[str] = set()
    for _ in range(10):
        for _ in range(rng.randint(0, 10)):
            label = rng.choice(SENDERS)
            public_key = key(label).public_key
            nonce = pool.pending_nonce(public_key) + (1 if rng.random() < 0.05 else 0)
            tx = chain.sign(
                key(label), "guard", "op", _guard_arguments(rng, chain.host.height), nonce=nonce
            )
            _add(pool, tx)
        reaped = pool.reap(transactions_max=rng.randint(0, len(pool)), bytes_max=1 << 30)
        block = [_decoded(pool, raw) for raw in reaped]
        for _ in range(rng.randint(0, 3)):
            block.append(_external(rng, chain, block))
        result = chain.run(block)
        update = pool.update([tx.hash for tx in block], [k for k, _ in result.writes])
        reasons |= {reason for _, reason in update.evicted}
    return reasons


def _decoded(pool: Mempool, raw: bytes) -> Transaction:
    return pool.known()[_hash_of(pool, raw)]


def test_recheck_work_is_bounded_by_what_the_block_touched() -> None:
    """400 senders wait with two transactions each; a block from three of them (one of which
    also suspends a fourth's identity) costs a handful of checks, where a full recheck costs
    one per pending transaction."""
    chain = Chain.start([GuardApp()], _genesis(extra_identities=400))
    limits = MempoolLimits(transactions_max=10_000)
    pool, full = Mempool(chain.host, limits), Mempool(chain.host, limits)
    waiting = [f"many{i}" for i in range(400)]
    for label in waiting:
        for nonce in (0, 1):
            tx = chain.sign(key(label), "guard", "op", {"absent": b"g1"}, nonce=nonce)
            pool.add(tx)
            full.add(tx)
    movers = ("u1", "u2", "u3")
    block: list[Transaction] = []
    for label in movers:
        tx = chain.sign(key(label), "guard", "op", {"puts": (b"g2",)}, nonce=0)
        pool.add(tx)
        full.add(tx)
        block.append(tx)
    block.append(
        chain.sign(
            key("bank_a"),
            "membership",
            "suspend_identity",
            {"public_key": key("u1").public_key},
            nonce=0,
        )
    )
    pending_before = len(pool)
    result = chain.run(block)
    committed = [tx.hash for tx in block]
    update: MempoolUpdate = pool.update(committed, [written for written, _ in result.writes])
    everything = full.update(committed)
    assert update.evicted == everything.evicted == ()
    # The senders the block touched: the three movers and bank_a (its nonce moved), one nonce
    # read each; nothing pending read g2 or u1's identity (u1 has nothing left pending).
    assert update.checks <= len(movers) + 1
    assert everything.checks >= pending_before - len(movers)
    # A write into what pending checks read costs exactly those checks: g1 is read by the 800.
    guard = chain.sign(key("u2"), "guard", "op", {"puts": (b"g1",)}, nonce=1)
    result = chain.run([guard])
    update = pool.update([guard.hash], [written for written, _ in result.writes])
    assert len(update.evicted) == 2 * len(waiting)
    assert {reason for _, reason in update.evicted} == {"present", "nonce_gap"}
    assert update.checks <= len(waiting) + len(waiting) + 1
    assert len(pool) == 0
