"""The demo consortium and traffic: deterministic from the seed, accepted by the real apps,
and applied identically on two independent hosts (same app hash after every block)."""

from __future__ import annotations

import contextlib
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.assets import AssetsApp
from apps.base import AppError, BlockContext
from apps.demo import DemoTraffic, DeterministicChooser, demo_consortium
from apps.host import AppHost, TransactionRejected
from apps.membership import MembershipApp
from apps.payments import PaymentsApp
from apps.scf import ScfApp
from apps.state import MemoryBackend
from apps.transaction import Transaction, sign_transaction
from consensus.codec import Value

EPOCH_MS = 1_704_067_200_000


def start_host(seed: int) -> tuple[AppHost, MemoryBackend]:
    consortium = demo_consortium(seed)
    backend = MemoryBackend()
    host = AppHost(
        [MembershipApp(), PaymentsApp(), ScfApp(), AssetsApp()],
        backend,
        chain_id=consortium.chain_id,
    )
    writes, app_hash = host.init_genesis(consortium.app_genesis)
    backend.apply(writes)
    host.committed(0, app_hash)
    return host, backend


def test_same_seed_same_consortium_and_stream() -> None:
    first, second = demo_consortium(3), demo_consortium(3)
    assert first.app_genesis == second.app_genesis
    assert [p.public_key for p in first.parties] == [p.public_key for p in second.parties]
    stream_a = DemoTraffic(first).batch(200, EPOCH_MS)
    stream_b = DemoTraffic(second).batch(200, EPOCH_MS)
    assert [tx.hash for tx in stream_a] == [tx.hash for tx in stream_b]
    other = demo_consortium(4)
    assert first.party("alice").public_key != other.party("alice").public_key


def test_chooser_is_deterministic_and_in_range() -> None:
    a, b = DeterministicChooser(9), DeterministicChooser(9)
    draws = [a.below(7) for _ in range(200)]
    assert draws == [b.below(7) for _ in range(200)]
    assert set(draws) == set(range(7))


def test_nonces_are_sequential_per_sender() -> None:
    traffic = DemoTraffic(demo_consortium(5))
    seen: dict[bytes, int] = {}
    for tx in traffic.batch(300, EPOCH_MS):
        assert tx.nonce == seen.get(tx.sender, 0)
        seen[tx.sender] = tx.nonce + 1
    assert all(traffic.nonce_of(sender) == nonce for sender, nonce in seen.items())


def test_demo_stream_mostly_succeeds_and_two_hosts_agree() -> None:
    seed = 11
    host_a, backend_a = start_host(seed)
    host_b, backend_b = start_host(seed)
    assert host_a.app_hash == host_b.app_hash
    traffic = DemoTraffic(demo_consortium(seed))
    outcomes: Counter[str] = Counter()
    kinds: set[tuple[str, str]] = set()
    now_ms = EPOCH_MS
    for height in range(1, 41):
        block = [tx.encoded for tx in traffic.batch(25, now_ms)]
        context = BlockContext(height, now_ms, b"", host_a.chain_id)
        result_a = host_a.execute_block(context, block)
        result_b = host_b.execute_block(context, block)
        assert result_a.app_hash == result_b.app_hash
        assert result_a.writes == result_b.writes
        for backend, host, result in ((backend_a, host_a, result_a), (backend_b, host_b, result_b)):
            backend.apply(result.writes)
            host.committed(height, result.app_hash)
        for raw, receipt in zip(block, result_a.receipts, strict=True):
            outcomes[receipt.code or "ok"] += 1
            if receipt.ok:
                tx = Transaction.decode(raw, chain_id=host_a.chain_id)
                kinds.add((tx.app, tx.operation))
        now_ms += 1000
    total = sum(outcomes.values())
    assert outcomes["ok"] >= 0.95 * total, outcomes
    assert backend_a.items() == backend_b.items()
    # The workload exercises every app and every multi-step flow.
    for expected in [
        ("payments", "transfer"),
        ("payments", "issue"),
        ("payments", "accept_fx"),
        ("scf", "issue"),
        ("scf", "transfer"),
        ("scf", "accept_financing"),
        ("scf", "repay"),
        ("assets", "create_asset"),
        ("assets", "transfer"),
        ("assets", "accept_dvp"),
    ]:
        assert expected in kinds, expected


# ---------------------------------------------------------------------- bad input
ARGUMENT_NAMES = (
    "to",
    "currency",
    "amount",
    "end_to_end_id",
    "purpose",
    "originator",
    "beneficiary",
    "offer",
    "sell_currency",
    "sell_amount",
    "buy_currency",
    "buy_amount",
    "expires_ms",
    "counterparty",
    "account",
    "frozen",
    "transaction_limit",
    "daily_limit",
    "code",
    "digits",
    "supplier",
    "due_ms",
    "invoice_hash",
    "order_id",
    "receivable",
    "amounts",
    "bank",
    "rate_bps",
    "milestone",
    "document_hash",
    "symbol",
    "decimals",
    "supply_cap",
    "holder",
    "eligible_roles",
    "eligible_jurisdictions",
    "max_holders",
    "holder_cap",
    "side",
    "price",
    "from",
    "reason",
    "paused",
    "id",
    "limit",
    "before",
    "debtor",
    "now_ms",
    "to_roles",
)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | st.sampled_from(["SGD", "BOND", "shipped", "sell", "rc-x", "fx-x"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
arguments = st.dictionaries(st.sampled_from(ARGUMENT_NAMES), values, max_size=6)
APPS = {"payments": PaymentsApp, "scf": ScfApp, "assets": AssetsApp}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    app=st.sampled_from(sorted(APPS)),
    pick=st.integers(min_value=0, max_value=50),
    args=arguments,
)
def test_malformed_arguments_are_rejected_never_faults(
    app: str, pick: int, args: dict[str, Value]
) -> None:
    host, _ = start_host(0)
    consortium = demo_consortium(0)
    operations = sorted(APPS[app].operations)
    operation = operations[pick % len(operations)]
    sender = consortium.party("lion-bank" if app != "scf" else "dragon-motors")
    tx = sign_transaction(
        sender.key, chain_id=host.chain_id, app=app, operation=operation, arguments=args, nonce=0
    )
    receipt = host.execute_block(BlockContext(1, EPOCH_MS, b"", host.chain_id), [tx.encoded])
    assert receipt.receipts[0].code not in ("app_fault", "bad_result"), receipt.receipts[0]
    with contextlib.suppress(TransactionRejected):
        host.check_transaction(tx)
    paths = (
        "balances",
        "history",
        "payment",
        "offers",
        "receivable",
        "lineage",
        "exposure",
        "by_holder",
        "holders",
        "can_transfer",
        "asset",
        "currency",
        "controls",
    )
    code = "ok"
    try:
        host.query(app, paths[pick % len(paths)], args)
    except AppError as error:
        code = error.code
    assert code != "app_fault"


def test_long_streams_never_stall_or_crash() -> None:
    for seed in (0, 1, 2):
        traffic = DemoTraffic(demo_consortium(seed))
        stream = iter(traffic)
        transactions = [next(stream) for _ in range(2500)]
        assert traffic.count == 2500
        assert len({tx.hash for tx in transactions}) == 2500
