"""The demo consortium on the real host, for the business-app tests (payments, scf, assets)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from apps._records import STATE_LIMITS, key
from apps.assets import AssetsApp
from apps.base import App
from apps.demo import Consortium, demo_consortium
from apps.host import Receipt
from apps.payments import PaymentsApp
from apps.scf import ScfApp
from apps.state import HOST_NAMESPACE, namespace_prefix
from apps.transaction import Transaction
from consensus.codec import Value, decode
from consensus.crypto import PrivateKey
from tests.host_fixtures import Chain

DAY_MS = 86_400_000
# The host's record of a sender's next nonce (consumed even by a rejected transaction).
NONCE_PREFIX = HOST_NAMESPACE.encode("ascii") + b"\x00nonce/"


@dataclass
class Outcome:
    """One transaction run alone in a block, and what it changed.

    ``changes`` compares the block's write set with that of an *empty* block at the same
    height and time (both executed from the same committed state): key -> (value without the
    transaction, value with it). Whatever the block's end did anyway (expiries released) is
    in both and cancels out, so ``changes`` is exactly the transaction's own effect.
    """

    receipt: Receipt
    changes: dict[bytes, tuple[bytes | None, bytes | None]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.receipt.ok

    def assert_rejection_changed_nothing(self) -> None:
        """A rejected transaction changed no app's state: only its sender's nonce moved."""
        assert not self.receipt.ok
        changed = sorted(k for k in self.changes if not k.startswith(NONCE_PREFIX))
        assert not changed, f"rejected {self.receipt.code} changed {changed}"

    def balance_delta(self, account: bytes, currency: str) -> int:
        """How much the transaction itself changed ``account``'s ``currency`` balance."""
        full = namespace_prefix("payments") + key("bal", account, currency)
        return _int_or_zero(self.changes.get(full, (None, None))[1]) - _int_or_zero(
            self.changes.get(full, (None, None))[0]
        )

    def units_delta(self, holder: bytes, symbol: str) -> int:
        """How much the transaction itself changed ``holder``'s ``symbol`` balance."""
        full = namespace_prefix("assets") + key("bal", symbol, holder)
        return _int_or_zero(self.changes.get(full, (None, None))[1]) - _int_or_zero(
            self.changes.get(full, (None, None))[0]
        )


def _int_or_zero(data: bytes | None) -> int:
    if data is None:
        return 0
    value = decode(data, STATE_LIMITS)
    assert isinstance(value, int)
    return value


def run_alone(chain: Chain, tx: Transaction) -> Outcome:
    """Execute ``tx`` in a block of its own, compare with the empty block (see ``Outcome``),
    then commit the block with ``tx``."""
    context = chain.context()
    empty = chain.host.execute_block(context, [])
    result = chain.host.execute_block(context, [tx.encoded])
    without, with_tx = dict(empty.writes), dict(result.writes)
    changes: dict[bytes, tuple[bytes | None, bytes | None]] = {}
    for written in without.keys() | with_tx.keys():
        before = without[written] if written in without else chain.backend.get(written)
        after = with_tx[written] if written in with_tx else chain.backend.get(written)
        if before != after:
            changes[written] = (before, after)
    chain.backend.apply(result.writes)
    chain.host.committed(result.height, result.app_hash, result.writes)
    # A transaction refused at the host's gates (say, a suspended sender) does not use up its
    # nonce: sign the sender's next one from the chain's count, not the local one.
    chain.nonces[tx.sender] = chain.host.next_nonce(tx.sender)
    outcome = Outcome(result.receipts[0], changes)
    if not outcome.ok:
        outcome.assert_rejection_changed_nothing()
    return outcome


@dataclass
class Network:
    """The demo consortium (seed 1) on the real host with membership and the three apps.

    ``ok`` runs one transaction in its own block and returns its result (failing the test on
    a rejection); ``rejected`` runs one and returns the rejection code (failing on success).
    """

    chain: Chain
    consortium: Consortium

    @classmethod
    def start(cls, extra_apps: Sequence[App] = ()) -> Network:
        consortium = demo_consortium(1)
        chain = Chain.start(
            [PaymentsApp(), ScfApp(), AssetsApp(), *extra_apps],
            app_genesis=consortium.app_genesis,
        )
        return cls(chain, consortium)

    def key(self, name: str) -> PrivateKey:
        return self.consortium.party(name).key

    def pk(self, name: str) -> bytes:
        return self.consortium.party(name).public_key

    def sign(self, name: str, app: str, operation: str, /, **arguments: Value) -> Transaction:
        return self.chain.sign(self.key(name), app, operation, arguments)

    def ok(self, name: str, app: str, operation: str, /, **arguments: Value) -> Value:
        return self.chain.run_one(self.sign(name, app, operation, **arguments))

    def set_controls(self, name: str, account: str, currency: str, **controls: Value) -> Value:
        """``name`` sets controls (``frozen``, limits) on ``account``'s ``currency`` account."""
        return self.ok(
            name,
            "payments",
            "set_controls",
            account=self.pk(account),
            currency=currency,
            **controls,
        )

    def rejected(self, name: str, app: str, operation: str, /, **arguments: Value) -> str:
        receipt = self.chain.run([self.sign(name, app, operation, **arguments)]).receipts[0]
        assert not receipt.ok, f"{app}.{operation} unexpectedly succeeded: {receipt.result!r}"
        assert receipt.message, "a rejection names its rule"
        return receipt.code

    def query(self, app: str, path: str, /, **arguments: Value) -> Value:
        return self.chain.host.query(app, path, arguments)

    def attempt(self, name: str, app: str, operation: str, /, **arguments: Value) -> Outcome:
        """Run one transaction alone in a block (``run_alone``): a rejection is checked to
        have changed nothing in any app."""
        return run_alone(self.chain, self.sign(name, app, operation, **arguments))

    @property
    def now_ms(self) -> int:
        """The block time the next block will carry."""
        return self.chain.context().time_ms

    def advance(self, ms: int) -> None:
        """Move block time forward by ``ms``."""
        self.chain.time_ms += ms

    def balance(self, name: str, currency: str) -> int:
        value = self.query("payments", "balance", account=self.pk(name), currency=currency)
        assert isinstance(value, int)
        return value

    def units(self, name: str, symbol: str) -> int:
        return self._asset_balance(name, symbol, "balance")

    def escrowed(self, name: str, symbol: str) -> int:
        """Units of ``symbol`` that ``name`` holds in escrow for its own open sell offers."""
        return self._asset_balance(name, symbol, "escrowed")

    def _asset_balance(self, name: str, symbol: str, field: str) -> int:
        value = self.query("assets", "balance", symbol=symbol, holder=self.pk(name))
        assert isinstance(value, dict)
        amount = value[field]
        assert isinstance(amount, int)
        return amount


def as_record(value: object) -> Mapping[str, Value]:
    """A query answer or state record as a string-keyed map (fails the test otherwise)."""
    assert isinstance(value, Mapping), value
    assert all(isinstance(name, str) for name in value), value
    return value
