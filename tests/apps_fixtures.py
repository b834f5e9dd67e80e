"""The demo consortium on the real host, for the business-app tests (payments, scf, assets)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from apps.assets import AssetsApp
from apps.base import App
from apps.demo import Consortium, demo_consortium
from apps.payments import PaymentsApp
from apps.scf import ScfApp
from apps.transaction import Transaction
from consensus.codec import Value
from consensus.crypto import PrivateKey
from tests.host_fixtures import Chain

DAY_MS = 86_400_000


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

    def rejected(self, name: str, app: str, operation: str, /, **arguments: Value) -> str:
        receipt = self.chain.run([self.sign(name, app, operation, **arguments)]).receipts[0]
        assert not receipt.ok, f"{app}.{operation} unexpectedly succeeded: {receipt.result!r}"
        assert receipt.message, "a rejection names its rule"
        return receipt.code

    def query(self, app: str, path: str, /, **arguments: Value) -> Value:
        return self.chain.host.query(app, path, arguments)

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
        value = self.query("assets", "balance", symbol=symbol, holder=self.pk(name))
        assert isinstance(value, dict)
        balance = value["balance"]
        assert isinstance(balance, int)
        return balance
