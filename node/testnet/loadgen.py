"""Load generation for a running testnet: the demo consortium's business traffic, or signed
membership transactions, at a target rate.

Demo traffic (``DemoLoadGenerator``)
------------------------------------
``apps.demo.DemoTraffic`` produces one ordered stream of signed transactions from the demo
parties (payments, FX, receivables, assets, DvP). A producer thread draws from it at the target
rate and routes every transaction by its **sender** to one node's queue (party index modulo the
number of nodes), so a sender's transactions always reach the same node, in nonce order: nonces
never gap across nodes. The stream stays ordered across senders as well (a full queue stalls
the producer rather than reordering), which is what lets a flow's later step (accept an offer)
follow its earlier one (the offer): the traffic is generated with steps ``STEP_GAP_S`` of
traffic apart, several blocks.

One worker thread per node keeps one persistent connection and, every ``BATCH_INTERVAL_S``,
submits everything its queue holds (at most ``BATCH_TRANSACTIONS_MAX``) as one ``POST /txs``
(``DemoBatcher``). The node admits a batch in order, so a sender's transactions in one batch
are admitted in nonce order too. The outcomes are read in batch order, per sender:

- admitted (or ``duplicate``: a resend after a lost response) is counted, and sampled;
- refused by a rule is counted by code, and the sender's later transactions are re-signed one
  nonce lower (the refused nonce was never used);
- refused for its nonce resynchronises the sender from the node (``/account/{key}``) and is
  resent, at most ``_NONCE_RETRIES_MAX`` times;
- refused with ``retry`` (a full mempool) or ``sender_full`` (the sender's pending queue is
  full) is resent in a later batch, after a short backoff.

Once one of a sender's transactions is refused or held back, that sender's later transactions
in the same batch are resent after it (the node saw a nonce gap), so nothing of a sender ever
overtakes its predecessor. A transport error or an error status resends the whole batch. A
sample of admitted transactions (at most ``RECEIPT_CHECKS_PER_S`` a second) is looked up after
commit, so the statistics show how many receipts were ``ok`` or rejected, and by which rule.

Membership traffic (``LoadGenerator``)
--------------------------------------
Each client key (a ``bank`` identity of bank *i*, seeded in the testnet genesis) submits to
one node only, because nonces are strictly sequential per sender: sending nonce n+1 to a node
that has not yet received n would be refused as a gap. Every transaction registers a fresh
customer identity for the client's bank (``membership.register_identity``), whose key is
derived from the sender and nonce, so the workload is deterministic and every transaction
changes state.

One thread per client paces itself with a token bucket; a full mempool (429) backs off, and a
nonce refusal resynchronises the nonce from the node.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from apps.demo import STEP_GAP_TRANSACTIONS, Consortium, DemoTraffic
from apps.transaction import Transaction, sign_transaction
from consensus.crypto import PrivateKey, hash_bytes
from node.client.client import ApiError, Client
from node.jsonvalue import JsonType

__all__ = [
    "BATCH_INTERVAL_S",
    "BATCH_TRANSACTIONS_MAX",
    "RECEIPT_CHECKS_PER_S",
    "DemoBatcher",
    "DemoLoadGenerator",
    "DemoLoadStatistics",
    "LoadGenerator",
    "LoadStatistics",
    "register_identity_transaction",
]

# A sender never runs more than this far ahead of its own schedule after a stall.
_BURST_S: Final = 0.5
# Receipt look-ups cost the nodes an API request each: sample at most this many per second.
RECEIPT_CHECKS_PER_S: Final = 25.0
# A sampled transaction is looked up this long after admission (about a block or two) ...
_RECEIPT_DELAY_S: Final = 1.5
# ... and counted as lost when still unknown or pending this long after admission.
_RECEIPT_DEADLINE_S: Final = 60.0
# Transactions waiting per node: about two seconds at 400 tx/s; a slower node stalls the
# producer (keeping the stream in order) instead of growing a backlog without bound.
_QUEUE_TRANSACTIONS_MAX: Final = 800
# Each node worker submits what is queued once per this period: short against a block, long
# enough that one request carries many transactions (about 20 per node at 1,600 tx/s).
BATCH_INTERVAL_S: Final = 0.05
# One batch carries at most this many transactions: with ~700 hex characters each, well under
# the API's default 1 MiB body cap (``[rpc] body_bytes_max``).
BATCH_TRANSACTIONS_MAX: Final = 500
# The producer sleeps at least this long between wake-ups (the workers batch anyway).
_PRODUCER_TICK_S: Final = 0.005
# Pause after a full mempool (429 / retry) or a transport error before the next batch.
_BACKOFF_S: Final = 0.2
_ERROR_PAUSE_S: Final = 1.0
# A nonce refusal is resynchronised and retried at most this often per transaction.
_NONCE_RETRIES_MAX: Final = 3
_NONCE_CODES: Final = frozenset({"stale_nonce", "nonce_gap", "nonce_in_use"})
# Refusals for load that the node does not flag ``retry`` (the sender's pending queue in the
# mempool is full): resent after a backoff like a full mempool, never counted as refused.
_LOAD_CODES: Final = frozenset({"full", "sender_full"})
# A flow's later step (accept an offer, finance a receivable) is generated this much traffic
# after its earlier step, so the earlier one has committed by then (a few blocks, with room for
# gossip between nodes and a busy machine).
STEP_GAP_S: Final = 3.0


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

    def summary_line(self) -> str:
        """One line for the live view."""
        statistics = self.statistics
        line = (
            f"load: {statistics.accepted} accepted, {statistics.rejected} rejected,"
            f" {statistics.backoffs} backoffs"
        )
        if statistics.last_error:
            line += f" | last: {statistics.last_error[:60]}"
        return line

    def to_json(self) -> dict[str, JsonType]:
        """The statistics for the summary."""
        return {
            "kind": "membership",
            "target_tps": self.rate,
            "accepted": self.statistics.accepted,
            "rejected": self.statistics.rejected,
            "backoffs": self.statistics.backoffs,
        }

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
        client = Client(address, timeout_s=10, key=key)
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
                if error.status in (429, 503):
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


@dataclass(slots=True)
class DemoLoadStatistics:
    """Counters of a demo load run (updated by the generator's threads under ``lock``)."""

    submitted: int = 0
    accepted: int = 0
    batches: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    accepted_by_app: Counter[str] = field(default_factory=Counter)
    backoffs: int = 0
    errors: int = 0
    last_error: str = ""
    receipts_ok: int = 0
    receipts_rejected: Counter[str] = field(default_factory=Counter)
    receipts_evicted: int = 0
    receipts_lost: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def receipts_checked(self) -> int:
        """Sampled transactions whose outcome is known."""
        return (
            self.receipts_ok
            + sum(self.receipts_rejected.values())
            + self.receipts_evicted
            + self.receipts_lost
        )

    def to_json(self) -> dict[str, JsonType]:
        """A snapshot for the testnet summary."""
        with self.lock:
            checked = self.receipts_checked
            return {
                "submitted": self.submitted,
                "accepted": self.accepted,
                "batches": self.batches,
                "accepted_by_app": dict(sorted(self.accepted_by_app.items())),
                "refused": dict(self.refused.most_common()),
                "backoffs": self.backoffs,
                "errors": self.errors,
                "receipts_checked": checked,
                "receipts_ok": self.receipts_ok,
                "receipts_ok_percent": round(100 * self.receipts_ok / checked, 1)
                if checked
                else None,
                "receipts_rejected": dict(self.receipts_rejected.most_common()),
                "receipts_evicted": self.receipts_evicted,
                "receipts_lost": self.receipts_lost,
            }

    def summary_line(self) -> str:
        """One line for the live view."""
        with self.lock:
            checked = self.receipts_checked
            ok_percent = f"{100 * self.receipts_ok / checked:.0f}%" if checked else "-"
            by_app = " ".join(
                f"{app} {count}" for app, count in sorted(self.accepted_by_app.items())
            )
            rejected = ", ".join(
                f"{code} {count}" for code, count in self.receipts_rejected.most_common(3)
            )
            line = (
                f"demo load: {self.accepted} admitted ({by_app}), {sum(self.refused.values())}"
                f" refused, {self.backoffs} backoffs | receipts (sampled {checked}):"
                f" {ok_percent} ok"
            )
            if rejected:
                line += f", rejected: {rejected}"
            return line


@dataclass(frozen=True, slots=True)
class _Sample:
    """An admitted transaction whose receipt will be looked up."""

    tx_hash: bytes
    node: int
    admitted_s: float
    due_s: float


class NodeApi(Protocol):
    """What a ``DemoBatcher`` needs from a node (``node.client.Client`` implements it)."""

    def submit_many(self, transactions: list[bytes]) -> dict[str, JsonType]:
        """``POST /txs``: ``{"accepted", "rejected": [{"index", "code", "error", "retry"}]}``."""
        ...

    def next_nonce(self, public_key: bytes) -> int:
        """The sender's next nonce, counting the node's pending transactions."""
        ...

    def transaction(self, tx_hash: bytes | str) -> dict[str, JsonType]:
        """The transaction's status document."""
        ...


@dataclass(frozen=True, slots=True)
class _Rejection:
    code: str
    message: str
    retry: bool


@dataclass(slots=True)
class _Pending:
    """A transaction of the stream waiting to be (re)submitted."""

    original: Transaction
    nonce_retries: int = 0


class DemoBatcher:
    """The transactions routed to one node, submitted in batches (see the module docstring).

    ``add`` queues a transaction of the stream; ``submit`` sends one batch and sorts the
    outcomes, updating ``statistics`` and calling ``on_admitted(original, admitted)`` for each
    admitted transaction (``admitted`` is re-signed with a lower nonce after a refusal)."""

    def __init__(
        self,
        api: NodeApi,
        keys: Mapping[bytes, PrivateKey],
        statistics: DemoLoadStatistics,
        on_admitted: Callable[[Transaction, Transaction], None],
    ) -> None:
        self.api = api
        self.keys = keys
        self.statistics = statistics
        self.on_admitted = on_admitted
        self.pending: deque[_Pending] = deque()
        # Per sender: how many nonces below the stream's this node's chain is (refused ones).
        self.shift: dict[bytes, int] = {}

    def add(self, transaction: Transaction) -> None:
        """Queue a transaction of the stream (after every earlier one of its sender)."""
        self.pending.append(_Pending(transaction))
        with self.statistics.lock:
            self.statistics.submitted += 1

    def submit(self) -> float:
        """Submit up to ``BATCH_TRANSACTIONS_MAX`` pending transactions as one request; return
        how long to pause before the next batch (0 unless the node pushed back or failed)."""
        count = min(len(self.pending), BATCH_TRANSACTIONS_MAX)
        if count == 0:
            return 0.0
        batch = [self.pending.popleft() for _ in range(count)]
        signed = [self._adjusted(item.original) for item in batch]
        try:
            rejections = self._rejections(self.api.submit_many([tx.encoded for tx in signed]))
        except ApiError as error:
            # Nothing is known about this batch: resend all of it (admitted ones come back as
            # duplicates, which count as admitted).
            self.pending.extendleft(reversed(batch))
            with self.statistics.lock:
                self.statistics.errors += 1
                self.statistics.last_error = str(error)
            return _ERROR_PAUSE_S
        with self.statistics.lock:
            self.statistics.batches += 1
        resend: list[_Pending] = []
        held: set[bytes] = set()
        pause = 0.0
        for index, (item, transaction) in enumerate(zip(batch, signed, strict=True)):
            sender = item.original.sender
            if sender in held:
                resend.append(item)
                continue
            rejection = rejections.get(index)
            if rejection is None or rejection.code == "duplicate":
                self._admitted(item.original, transaction)
                continue
            if rejection.retry or rejection.code in _LOAD_CODES:
                resend.append(item)
                held.add(sender)
                pause = _BACKOFF_S
                with self.statistics.lock:
                    self.statistics.backoffs += 1
                    self.statistics.last_error = rejection.message
                continue
            if rejection.code in _NONCE_CODES:
                if self._known(transaction):
                    self._admitted(item.original, transaction)
                    continue
                held.add(sender)
                if item.nonce_retries < _NONCE_RETRIES_MAX:
                    item.nonce_retries += 1
                    self._resynchronise(item.original)
                    resend.append(item)
                    continue
            else:
                held.add(sender)
                # The refused nonce was never used: the sender's later ones move down.
                self.shift[sender] = self.shift.get(sender, 0) + 1
            with self.statistics.lock:
                self.statistics.refused[rejection.code or "unknown"] += 1
                self.statistics.last_error = f"{rejection.code}: {rejection.message}"
        self.pending.extendleft(reversed(resend))
        return pause

    @staticmethod
    def _rejections(document: dict[str, JsonType]) -> dict[int, _Rejection]:
        items = document.get("rejected")
        if not isinstance(items, list):
            raise ApiError(200, "rejected missing from the /txs response")
        rejections: dict[int, _Rejection] = {}
        for item in items:
            index = item.get("index") if isinstance(item, dict) else None
            if not isinstance(item, dict) or not isinstance(index, int):
                raise ApiError(200, f"malformed rejection in the /txs response: {item!r:.100}")
            rejections[index] = _Rejection(
                str(item.get("code") or ""), str(item.get("error") or ""), item.get("retry") is True
            )
        return rejections

    def _admitted(self, original: Transaction, transaction: Transaction) -> None:
        with self.statistics.lock:
            self.statistics.accepted += 1
            self.statistics.accepted_by_app[original.app] += 1
        self.on_admitted(original, transaction)

    def _adjusted(self, original: Transaction) -> Transaction:
        shift = self.shift.get(original.sender, 0)
        if shift == 0:
            return original
        return sign_transaction(
            self.keys[original.sender],
            chain_id=original.chain_id,
            app=original.app,
            operation=original.operation,
            arguments=original.arguments,
            nonce=original.nonce - shift,
        )

    def _known(self, transaction: Transaction) -> bool:
        """True when the node already has ``transaction`` (a resend after a lost response)."""
        try:
            document = self.api.transaction(transaction.hash)
        except ApiError:
            return False
        return document.get("status") in ("pending", "committed")

    def _resynchronise(self, original: Transaction) -> None:
        try:
            expected = self.api.next_nonce(original.sender)
        except ApiError as error:
            with self.statistics.lock:
                self.statistics.errors += 1
                self.statistics.last_error = str(error)
            return
        self.shift[original.sender] = original.nonce - expected


class DemoLoadGenerator:
    """Drive ``DemoTraffic`` of ``consortium`` into the nodes at ``addresses`` at ``rate`` tx/s.

    ``nonces`` are the parties' next nonces (ask the node when resuming a chain that already has
    traffic); ``traffic_seed`` varies the stream (default: the consortium's seed).
    """

    def __init__(
        self,
        consortium: Consortium,
        addresses: Sequence[str],
        rate: float,
        *,
        nonces: Mapping[bytes, int] | None = None,
        traffic_seed: int | None = None,
        reader: PrivateKey | None = None,
    ) -> None:
        """``reader`` signs the generator's API requests (nonce look-ups, receipt samples):
        a key the nodes' read rules let read every party's data (a node key)."""
        assert addresses, "at least one node"
        assert rate > 0, "a positive rate"
        self.consortium = consortium
        self.addresses = tuple(addresses)
        self.rate = rate
        self.reader = reader
        self.statistics = DemoLoadStatistics()
        self._traffic = DemoTraffic(
            consortium,
            seed=traffic_seed,
            nonces=nonces,
            step_gap_transactions=max(STEP_GAP_TRANSACTIONS, math.ceil(rate * STEP_GAP_S)),
        )
        self._keys = {party.public_key: party.key for party in consortium.parties}
        self._route = {
            party.public_key: index % len(self.addresses)
            for index, party in enumerate(consortium.parties)
        }
        self._queues: list[queue.Queue[Transaction]] = [
            queue.Queue(_QUEUE_TRANSACTIONS_MAX) for _ in self.addresses
        ]
        self._samples: deque[_Sample] = deque()
        self._sample_every = max(1, math.ceil(rate / RECEIPT_CHECKS_PER_S))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @staticmethod
    def fetch_nonces(client: Client, consortium: Consortium) -> dict[bytes, int]:
        """Every party's next nonce, from one node (to resume against a chain with traffic)."""
        return {
            party.public_key: client.next_nonce(party.public_key) for party in consortium.parties
        }

    def start(self) -> None:
        """Start the producer, one worker per node and the receipt checker."""
        targets: list[tuple[Callable[..., None], tuple[int, ...]]] = [(self._produce, ())]
        targets += [(self._work, (index,)) for index in range(len(self.addresses))]
        targets.append((self._check_receipts, ()))
        for target, args in targets:
            thread = threading.Thread(target=target, args=args, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop and join every thread."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def summary_line(self) -> str:
        """One line for the live view."""
        return self.statistics.summary_line()

    def to_json(self) -> dict[str, JsonType]:
        """The statistics for the summary."""
        return {"kind": "demo", "target_tps": self.rate, **self.statistics.to_json()}

    # ------------------------------------------------------------------ threads
    def _count(self, name: str, error: str = "") -> None:
        with self.statistics.lock:
            setattr(self.statistics, name, getattr(self.statistics, name) + 1)
            if error:
                self.statistics.last_error = error

    def _produce(self) -> None:
        interval = 1.0 / self.rate
        next_send = time.monotonic()
        pending: Transaction | None = None
        while not self._stop.is_set():
            if pending is None:
                now = time.monotonic()
                if next_send > now:
                    # Wake at most every _PRODUCER_TICK_S and produce everything then due.
                    self._stop.wait(min(max(next_send - now, _PRODUCER_TICK_S), 0.2))
                    continue
                next_send = max(next_send + interval, now - _BURST_S)
                pending = self._traffic.next_transaction(int(time.time() * 1000))
            try:
                self._queues[self._route[pending.sender]].put(pending, timeout=0.2)
            except queue.Full:
                continue
            pending = None

    def _work(self, index: int) -> None:
        client = Client(self.addresses[index], timeout_s=10, key=self.reader)

        def sample(original: Transaction, admitted: Transaction) -> None:
            with self.statistics.lock:
                sampled = self.statistics.accepted % self._sample_every == 0
            if sampled:
                now = time.monotonic()
                self._samples.append(_Sample(admitted.hash, index, now, now + _RECEIPT_DELAY_S))

        batcher = DemoBatcher(client, self._keys, self.statistics, sample)
        source = self._queues[index]
        while not self._stop.is_set():
            started = time.monotonic()
            while len(batcher.pending) < BATCH_TRANSACTIONS_MAX:
                try:
                    batcher.add(source.get_nowait())
                except queue.Empty:
                    break
            pause = batcher.submit()
            self._stop.wait(max(pause, BATCH_INTERVAL_S - (time.monotonic() - started)))
        client.close()

    def _check_receipts(self) -> None:
        clients = [Client(address, timeout_s=10, key=self.reader) for address in self.addresses]
        while not self._stop.is_set():
            if (
                not self._samples
                or time.monotonic() - self._samples[0].admitted_s < _RECEIPT_DELAY_S
            ):
                self._stop.wait(0.2)
                continue
            sample = self._samples.popleft()
            self._check_one(clients[sample.node], sample)
        for client in clients:
            client.close()

    def _check_one(self, client: Client, sample: _Sample) -> None:
        now = time.monotonic()
        overdue = now - sample.admitted_s > _RECEIPT_DEADLINE_S
        later = dataclasses.replace(sample, due_s=now + _RECEIPT_DELAY_S)
        try:
            document = client.transaction(sample.tx_hash)
        except ApiError as error:
            if error.status == 404 and overdue:
                self._count("receipts_lost")
            elif error.status in (0, 404):
                self._samples.append(later)
            else:
                self._count("errors", str(error))
            return
        status = document.get("status")
        receipt = document.get("receipt")
        if status == "committed" and isinstance(receipt, dict):
            with self.statistics.lock:
                if receipt.get("status") == "ok":
                    self.statistics.receipts_ok += 1
                else:
                    self.statistics.receipts_rejected[str(receipt.get("code"))] += 1
        elif status == "rejected":
            self._count("receipts_evicted")
        elif overdue:
            self._count("receipts_lost")
        else:
            self._samples.append(later)
