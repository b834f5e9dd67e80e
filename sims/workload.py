"""The client workloads: parties submitting signed transactions and waiting for commits.

Theory of operation
-------------------
Two workloads share one shape (``ClientWorkload``): ``step`` gives every client a chance to
submit, ``on_committed`` tells them an honest node committed a transaction.

``DemoWorkload`` (the default) drives the business apps: ``apps.demo.DemoTraffic`` over the
demo consortium yields one deterministic stream of signed payments, FX, supply-chain finance
and asset transactions from eleven parties. The stream is dealt, in order, to one client per
sending party; each client submits its transactions strictly in nonce order with at most one
outstanding, first to its home node (party index mod node count, as
``node/testnet/loadgen.py`` routes senders) and, after ``RESUBMIT_MS`` without an
acknowledgement or while the home node is down,
the same bytes to another live node (at once when a node refuses them). Cross-sender order (an
FX offer before its acceptance, a mint before the holder's transfer) is kept by a window over
the stream: the transaction at stream position p is submitted only once every position below p
- ``DEMO_WINDOW`` is acknowledged. As the window is no wider than ``DemoTraffic``'s step gap, a
flow's later step is never submitted before its earlier step committed.

``Workload`` (``--workload membership``): each simulated client is a founding bank's operator
key (seeded in the membership genesis). It keeps at most one transaction outstanding: it signs
the next one (``register_identity`` for a fresh customer key of its own bank, with the next
nonce), submits it to a node, and waits. When an honest node commits a block containing it, the
client is *acknowledged*: the transaction is recorded with its height (the checker later proves
it is still there on every honest node) and the client moves on to its next nonce. If no
acknowledgement arrives within ``RESUBMIT_MS``, the client submits the *same* bytes again to
another node (the first node may have crashed, been partitioned, or be byzantine), exactly like
a careful real client.

Keys and customer keys are derived from the seed, so the workload is deterministic.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from apps.demo import Consortium, DemoTraffic
from apps.transaction import Transaction, sign_transaction
from consensus.codec import Value
from consensus.crypto import PrivateKey, hash_bytes

__all__ = [
    "DEMO_STEP_GAP_TRANSACTIONS",
    "DEMO_WINDOW",
    "RESUBMIT_MS",
    "Client",
    "ClientWorkload",
    "DemoWorkload",
    "Workload",
    "membership_genesis",
]

# Long enough for a block to commit under moderate faults, short enough to route around a
# crashed or byzantine entry node quickly.
RESUBMIT_MS: Final = 1_500
CLIENTS: Final = 3
# Stream positions that may be in flight at once beyond the oldest unacknowledged one: a few
# senders busy per block, narrow enough that a transaction rarely overtakes one it needs.
DEMO_WINDOW: Final = 8
# A flow's later step waits this many stream transactions (``DemoTraffic``'s gap); at least
# ``DEMO_WINDOW``, so the window alone orders the steps.
DEMO_STEP_GAP_TRANSACTIONS: Final = 24


class ClientWorkload(Protocol):
    """What the simulation needs from a workload."""

    submitted: int
    acknowledged: int

    def step(self, now_ms: int, nodes: list[int], submit: Callable[[int, bytes], bool]) -> None:
        """Give every client a chance to submit (or resubmit) to one of ``nodes`` (the live
        node ids)."""

    def on_committed(self, transaction_hash: bytes) -> bool:
        """An honest node committed ``transaction_hash``; True when it acknowledges a client."""


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


@dataclass(slots=True)
class _Sender:
    """One demo party: its home node, queued transactions (nonce order) and the one in flight."""

    home: int
    queue: deque[tuple[int, Transaction]] = field(default_factory=deque)  # (position, tx)
    outstanding: Transaction | None = None
    position: int = 0  # stream position of the outstanding transaction
    submitted_at_ms: int = 0
    attempts: int = 0


class DemoWorkload:
    """The demo consortium's traffic (``DemoTraffic``), one client per sending party."""

    def __init__(
        self,
        rng: random.Random,
        consortium: Consortium,
        *,
        seed: int,
        node_count: int,
        time_offset_ms: int,
    ) -> None:
        self._rng = rng
        self._traffic = DemoTraffic(
            consortium, seed=seed, step_gap_transactions=DEMO_STEP_GAP_TRANSACTIONS
        )
        self._time_offset_ms = time_offset_ms
        self._senders: dict[bytes, _Sender] = {
            party.public_key: _Sender(index % node_count)
            for index, party in enumerate(consortium.parties)
        }
        self._waiting: dict[bytes, _Sender] = {}  # outstanding transaction hash -> its sender
        self._drawn = 0  # stream positions drawn so far
        self._oldest = 0  # the oldest unacknowledged stream position
        self._acknowledged_ahead: set[int] = set()  # acknowledged positions above _oldest
        self.submitted = 0
        self.acknowledged = 0

    def _draw(self, now_ms: int) -> None:
        while self._drawn < self._oldest + DEMO_WINDOW:
            transaction = self._traffic.next_transaction(self._time_offset_ms + now_ms)
            self._senders[transaction.sender].queue.append((self._drawn, transaction))
            self._drawn += 1

    def step(self, now_ms: int, nodes: list[int], submit: Callable[[int, bytes], bool]) -> None:
        """Give every sender a chance to submit its next transaction (or resubmit)."""
        if not nodes:
            return
        self._draw(now_ms)
        for sender in self._senders.values():
            if sender.outstanding is None:
                if not sender.queue or sender.queue[0][0] >= self._oldest + DEMO_WINDOW:
                    continue
                sender.position, sender.outstanding = sender.queue.popleft()
                self._waiting[sender.outstanding.hash] = sender
                sender.attempts = 0
            elif now_ms - sender.submitted_at_ms < RESUBMIT_MS:
                continue
            node = sender.home
            if sender.attempts > 0 or node not in nodes:
                node = self._rng.choice(nodes)
            sender.attempts += 1
            self.submitted += 1
            # A node that refuses it (down, behind on the sender's nonce, pool full) is
            # retried at another node on the next step, not after RESUBMIT_MS.
            accepted = submit(node, sender.outstanding.encoded)
            sender.submitted_at_ms = now_ms if accepted else now_ms - RESUBMIT_MS

    def on_committed(self, transaction_hash: bytes) -> bool:
        """An honest node committed ``transaction_hash``; True when it acknowledges a sender."""
        sender = self._waiting.pop(transaction_hash, None)
        if sender is None:
            return False
        sender.outstanding = None
        self._acknowledged_ahead.add(sender.position)
        while self._oldest in self._acknowledged_ahead:
            self._acknowledged_ahead.remove(self._oldest)
            self._oldest += 1
        self.acknowledged += 1
        return True
