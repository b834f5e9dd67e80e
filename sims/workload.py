"""The client workload: banks submitting signed transactions and waiting for commits.

Theory of operation
-------------------
Each simulated client is a founding bank's operator key (seeded in the membership genesis).
It keeps at most one transaction outstanding: it signs the next one (``register_identity``
for a fresh customer key of its own bank, with the next nonce), submits it to a node, and
waits. When an honest node commits a block containing it, the client is *acknowledged*: the
transaction is recorded with its height (the checker later proves it is still there on every
honest node) and the client moves on to its next nonce. If no acknowledgement arrives within
``RESUBMIT_MS``, the client submits the *same* bytes again to another node (the first node may
have crashed, been partitioned, or be byzantine), exactly like a careful real client.

Keys and customer keys are derived from the seed, so the workload is deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from apps.transaction import Transaction, sign_transaction
from consensus.codec import Value
from consensus.crypto import PrivateKey, hash_bytes

__all__ = ["RESUBMIT_MS", "Client", "Workload", "membership_genesis"]

# Long enough for a block to commit under moderate faults, short enough to route around a
# crashed or byzantine entry node quickly.
RESUBMIT_MS: Final = 1_500
CLIENTS: Final = 3


def bank_key(index: int) -> PrivateKey:
    """The operator key of founding bank ``index`` (fixed across seeds: genesis is too)."""
    return PrivateKey(hash_bytes(f"suanpan/sim/bank/{index}".encode()))


def membership_genesis(clients: int = CLIENTS) -> Mapping[str, Value]:
    """Membership genesis: one bank per client, each with one operator identity."""
    institutions: list[Value] = [
        {"id": f"bank_{i}", "name": f"Bank {i}", "kind": "bank", "jurisdiction": "SG"}
        for i in range(clients)
    ]
    identities: list[Value] = []
    for i in range(clients):
        roles: list[Value] = ["bank"]
        identities.append(
            {"public_key": bank_key(i).public_key, "institution": f"bank_{i}", "roles": roles}
        )
    return {"institutions": institutions, "identities": identities}


@dataclass(slots=True)
class Client:
    """One bank's operator: its key, next nonce and the transaction in flight."""

    index: int
    key: PrivateKey
    nonce: int = 0
    outstanding: Transaction | None = None
    submitted_at_ms: int = 0
    attempts: int = 0


class Workload:
    """Clients submitting transactions through ``submit(node, tx_bytes) -> accepted``."""

    def __init__(
        self,
        rng: random.Random,
        chain_id: str,
        *,
        clients: int = CLIENTS,
    ) -> None:
        self._rng = rng
        self._chain_id = chain_id
        self.clients = [Client(i, bank_key(i)) for i in range(clients)]
        self._by_hash: dict[bytes, Client] = {}
        self.submitted = 0
        self.acknowledged = 0
        self.enabled = True

    def _next_transaction(self, client: Client) -> Transaction:
        customer = PrivateKey(
            hash_bytes(f"suanpan/sim/customer/{client.index}/{client.nonce}".encode())
        )
        return sign_transaction(
            client.key,
            chain_id=self._chain_id,
            app="membership",
            operation="register_identity",
            arguments={
                "institution": f"bank_{client.index}",
                "public_key": customer.public_key,
                "roles": ["customer"],
            },
            nonce=client.nonce,
        )

    def step(self, now_ms: int, nodes: list[int], submit: Callable[[int, bytes], bool]) -> None:
        """Give every client a chance to submit (or resubmit) to one of ``nodes``."""
        if not self.enabled or not nodes:
            return
        for client in self.clients:
            if client.outstanding is None:
                client.outstanding = self._next_transaction(client)
                self._by_hash[client.outstanding.hash] = client
                client.attempts = 0
            elif now_ms - client.submitted_at_ms < RESUBMIT_MS:
                continue
            node = self._rng.choice(nodes)
            client.submitted_at_ms = now_ms
            client.attempts += 1
            self.submitted += 1
            submit(node, client.outstanding.encoded)

    def on_committed(self, transaction_hash: bytes) -> bool:
        """An honest node committed ``transaction_hash``; True when it acknowledges a client."""
        client = self._by_hash.get(transaction_hash)
        if client is None or client.outstanding is None:
            return False
        if client.outstanding.hash != transaction_hash:
            return False
        del self._by_hash[transaction_hash]
        client.outstanding = None
        client.nonce += 1
        self.acknowledged += 1
        return True
