"""Load generation for a running testnet: signed membership transactions at a target rate.

Each client key (a ``bank`` identity of bank *i*, seeded in the testnet genesis) submits to
one node only, because nonces are strictly sequential per sender: sending nonce n+1 to a node
that has not yet received n would be refused as a gap. Every transaction registers a fresh
customer identity for the client's bank (``membership.register_identity``), whose key is
derived from the sender and nonce, so the workload is deterministic and every transaction
changes state.

One thread per client paces itself with a token bucket; a full mempool (503) backs off, and a
nonce refusal resynchronises the nonce from the node.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Final

from apps.transaction import sign_transaction
from consensus.crypto import PrivateKey, hash_bytes
from node.client import ApiError, Client

__all__ = ["LoadGenerator", "LoadStatistics", "register_identity_transaction"]

# A sender never runs more than this far ahead of its own schedule after a stall.
_BURST_S: Final = 0.5


def register_identity_transaction(
    key: PrivateKey, chain_id: str, institution: str, nonce: int
) -> bytes:
    """A signed ``membership.register_identity`` adding a customer of ``institution``."""
    customer = hash_bytes(b"suanpan/loadgen/customer" + key.public_key + nonce.to_bytes(8, "big"))
    transaction = sign_transaction(
        key,
        chain_id=chain_id,
        app="membership",
        operation="register_identity",
        arguments={"institution": institution, "public_key": customer, "roles": ["customer"]},
        nonce=nonce,
    )
    return transaction.encoded


@dataclass(slots=True)
class LoadStatistics:
    """Counters of one load run (updated by the sender threads)."""

    submitted: int = 0
    accepted: int = 0
    rejected: int = 0
    backoffs: int = 0
    errors: int = 0
    last_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


class LoadGenerator:
    """Submit ``rate`` transactions per second in total, spread over the given senders."""

    def __init__(
        self,
        chain_id: str,
        senders: list[tuple[PrivateKey, str, str]],
        rate: float,
    ) -> None:
        """``senders``: (client key, institution id, API address of its node)."""
        self.chain_id = chain_id
        self.senders = senders
        self.rate = rate
        self.statistics = LoadStatistics()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start one thread per sender."""
        for sender in self.senders:
            thread = threading.Thread(target=self._run, args=sender, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop and join the threads."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _count(self, name: str, error: str = "") -> None:
        with self.statistics.lock:
            setattr(self.statistics, name, getattr(self.statistics, name) + 1)
            if error:
                self.statistics.last_error = error

    def _run(self, key: PrivateKey, institution: str, address: str) -> None:
        interval = len(self.senders) / self.rate
        client = Client(address, timeout_s=10)
        nonce: int | None = None
        next_send = time.monotonic()
        while not self._stop.is_set():
            if nonce is None:
                try:
                    nonce = client.next_nonce(key.public_key)
                except ApiError as error:
                    self._count("errors", str(error))
                    self._stop.wait(1.0)
                    continue
            now = time.monotonic()
            if next_send > now:
                self._stop.wait(next_send - now)
                continue
            next_send = max(next_send + interval, now - _BURST_S)
            data = register_identity_transaction(key, self.chain_id, institution, nonce)
            self._count("submitted")
            try:
                client.submit(data)
            except ApiError as error:
                if error.status == 503:
                    self._count("backoffs", error.message)
                    self._stop.wait(0.2)
                elif error.status == 0:
                    self._count("errors", error.message)
                    self._stop.wait(1.0)
                else:
                    self._count("rejected", f"{error.code}: {error.message}")
                # Whatever happened, ask the node which nonce it expects next.
                nonce = None
                continue
            self._count("accepted")
            nonce += 1
        client.close()
