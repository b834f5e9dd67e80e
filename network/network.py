"""The peer-to-peer network of one node: connections, peer management, gossip, requests.

Theory of operation
-------------------
``Network.run`` owns one nursery. In it: a TCP listener (``trio.serve_tcp``) whose handler
runs the handshake for each inbound connection, and one *dial loop* per persistent peer that
connects, runs the connection until it ends, and redials with exponential backoff and jitter.

A connection exists only after the handshake (``network.handshake``) authenticated the peer.
It then runs two tasks in its own nursery: a receive loop (decrypt, rate-limit, decode,
dispatch) and a send loop (drain the peer's queues, see ``network.peer``). Any remote error
(tampered frame, oversized frame, malformed message, idle peer) ends that connection only; it
is logged with the peer and reason and counted under ``connection_errors``.

One connection per peer: when a second authenticated connection to the same peer appears
(both sides dialled at once), both sides keep the one dialled by the side with the smaller
public key; if both were dialled by the same side, the newer one wins (the peer restarted).
Every decision depends only on the two keys and the connection's direction, so both ends
agree without talking.

Gossip: a transaction's identity is SHA-256 of its bytes (the same as
``apps.transaction.Transaction.hash``). A bounded ``SeenCache`` makes each transaction
delivered to the node at most once. A transaction's origin (``gossip_transactions``) pushes
it in full to every connected peer. A node that receives one for the first time relays it by
*announcing* its hash to every other connected peer (an announcement rides with the next
frame to that peer, or goes on its own after ``announce_linger_seconds``; pushed gossip the
caller lets linger waits up to ``gossip_linger_seconds`` for more to fill its frame
likewise); a peer that has
still not seen it ``fetch_delay_seconds`` later fetches it from the announcer (which keeps
relayed transactions for a few seconds, in a bounded ``RelayStore``). In a full mesh the
origin's push arrives first and relays cost 32 bytes per peer instead of the whole
transaction; in a sparser mesh (observers behind a validator) transactions still reach
everyone. Consensus messages are sent to one peer or broadcast to all; requests carry an id
and wait for the matching response.

The layer knows message kinds and bytes, never their meaning.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import math
import random as random_module
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Final

import trio

from consensus.crypto import HASH_BYTES, PUBLIC_KEY_BYTES, PrivateKey
from network.channel import SecureStream
from network.errors import (
    ChannelError,
    FrameError,
    HandshakeError,
    MessageError,
    PeerUnavailableError,
    RequestError,
)
from network.handshake import HandshakeResult, perform_handshake
from network.inbox import FairInbox
from network.limits import DEFAULT_LIMITS, NetworkLimits
from network.loglimit import LogLimiter
from network.messages import (
    GOSSIP_FRAME_TYPES,
    KIND_MAX,
    Announce,
    Fetch,
    Gossip,
    Message,
    Ping,
    Request,
    Response,
    ResponseStatus,
    decode_message,
    encode_fetch,
    encode_message,
    encode_ping,
    encode_request,
    encode_response,
)
from network.peer import PeerQueues
from network.ratelimit import TokenBucket
from network.seen import RelayStore, SeenCache

__all__ = [
    "InboundMessage",
    "InboundTransactions",
    "Network",
    "NetworkConfig",
    "NetworkStatistics",
    "PeerAddress",
    "PeerInfo",
    "PeerStatistics",
    "RequestHandler",
    "StreamOpener",
]

log = logging.getLogger("suanpan.network")

RequestHandler = Callable[[bytes, bytes], Awaitable[bytes]]
"""``async handler(peer_public_key, request_payload) -> response_payload`` (block sync)."""

StreamOpener = Callable[[str, int], Awaitable[trio.abc.Stream]]
"""``async open_stream(host, port) -> stream``: how dial loops connect (TCP by default)."""

# Error text sent back to a requester is truncated to this: enough for a reason, no more.
_ERROR_TEXT_BYTES_MAX: Final = 512
_STREAM_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
# Warnings a remote party can trigger (bad handshakes, connections over the limit): at most
# this many lines per event per window; the rest are counted (``network.loglimit``).
_REPEATED_WARNINGS_MAX: Final = 10
_REPEATED_WARNINGS_WINDOW_S: Final = 60.0
# A handshake error's detail is logged up to this many characters.
_LOG_DETAIL_CHARS_MAX: Final = 200
_REMOTE_ERRORS: Final = (FrameError, ChannelError, MessageError)


def _log_event(level: int, event: str, **fields: object) -> None:
    """One structured log line: the event name, then ``key=value`` fields (also in ``extra``)."""
    if log.isEnabledFor(level):
        text = " ".join(f"{key}={value}" for key, value in fields.items())
        log.log(level, "%s %s", event, text, extra={"event": event, "fields": fields})


def _short(public_key: bytes) -> str:
    return public_key.hex()[:16]


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """A peer this node dials: its identity key and where it listens."""

    public_key: bytes
    host: str
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, bytes) or len(self.public_key) != PUBLIC_KEY_BYTES:
            raise ValueError(f"a peer public key is {PUBLIC_KEY_BYTES} bytes")
        if not self.host:
            raise ValueError("a peer address needs a host")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is outside 1..65535")


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """Everything the network layer needs from the node.

    ``allowlist`` holds the keys allowed to connect (validators plus operator-configured
    observers); the persistent peers are always allowed.
    """

    chain_id: str
    genesis_hash: bytes
    identity: PrivateKey
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    persistent_peers: tuple[PeerAddress, ...] = ()
    allowlist: frozenset[bytes] = frozenset()
    limits: NetworkLimits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        if not self.chain_id:
            raise ValueError("chain id must not be empty")
        if len(self.genesis_hash) != HASH_BYTES:
            raise ValueError(f"genesis hash is {HASH_BYTES} bytes")
        if not 0 <= self.listen_port < 65536:
            raise ValueError(f"listen port {self.listen_port} is outside 0..65535")
        keys = [peer.public_key for peer in self.persistent_peers]
        if len(set(keys)) != len(keys):
            raise ValueError("a persistent peer is listed twice")
        if self.identity.public_key in keys:
            raise ValueError("this node's own key is listed as a persistent peer")

    @property
    def allowed_keys(self) -> frozenset[bytes]:
        """The allowlist plus the persistent peers."""
        return self.allowlist | {peer.public_key for peer in self.persistent_peers}


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A consensus (node-level) message received from ``peer``."""

    peer: bytes
    kind: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class InboundTransactions:
    """Transactions first seen in one gossip frame from ``peer`` (each delivered once)."""

    peer: bytes
    transactions: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A connected peer."""

    public_key: bytes
    host: str
    port: int
    outbound: bool


@dataclass(frozen=True, slots=True)
class PeerStatistics:
    """Per-peer counters (for metrics)."""

    public_key: bytes
    connected: bool
    frames_sent: int
    frames_received: int
    bytes_sent: int
    bytes_received: int
    priority_backlog_frames: int
    gossip_backlog_bytes: int
    transactions_shed: int


@dataclass(slots=True)
class _Counters:
    transactions_gossiped: int = 0
    transactions_resent: int = 0
    transactions_forgotten: int = 0
    transactions_received: int = 0
    transactions_delivered: int = 0
    transactions_duplicate: int = 0
    transactions_forwarded: int = 0
    transactions_announced: int = 0
    announcements_received: int = 0
    announcements_ignored: int = 0
    transactions_fetched: int = 0
    fetches_served: int = 0
    transactions_shed_outbound: int = 0
    transactions_shed_inbound: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    messages_undeliverable: int = 0
    send_queue_overflows: int = 0
    requests_sent: int = 0
    requests_served: int = 0
    requests_busy: int = 0
    responses_unmatched: int = 0
    dial_attempts: int = 0
    dial_failures: int = 0
    connections_opened: int = 0
    connections_duplicate: int = 0
    inbound_rejected: int = 0
    rate_limit_waits: int = 0
    cpu_ns_gossip_in: int = 0
    cpu_ns_gossip_out: int = 0
    cpu_ns_messages_in: int = 0
    cpu_ns_messages_out: int = 0


@dataclass(frozen=True, slots=True)
class NetworkStatistics:
    """A snapshot of the network's counters (cumulative since start) and gauges."""

    peers_connected: int
    frames_sent: int
    frames_received: int
    bytes_sent: int
    bytes_received: int
    transactions_gossiped: int  # local transactions admitted by gossip_transactions
    transactions_resent: int  # local transactions sent again by resend_transactions
    transactions_forgotten: int  # delivered or shed, then forgotten: a resend is taken again
    transactions_received: int  # in gossip frames, duplicates included
    transactions_delivered: int  # first sightings handed to the node
    transactions_duplicate: int
    transactions_forwarded: int  # queued in full to peers (one count per peer)
    transactions_announced: int  # hashes queued to peers (one count per peer)
    announcements_received: int  # hashes announced to us
    announcements_ignored: int  # announced while announcements_pending_max was reached
    transactions_fetched: int  # hashes we asked a peer for
    fetches_served: int  # transactions we sent because a peer fetched them
    transactions_shed_outbound: int  # dropped: a peer's gossip backlog was full
    transactions_shed_inbound: int  # dropped: the node's transaction channel was full
    messages_sent: int
    messages_received: int
    messages_undeliverable: int  # send/broadcast to a peer that was not connected
    send_queue_overflows: int  # connections closed because consensus traffic backed up
    requests_sent: int
    requests_served: int
    requests_busy: int
    responses_unmatched: int
    dial_attempts: int
    dial_failures: int
    connections_opened: int
    connections_duplicate: int  # closed by the one-connection-per-peer rule
    inbound_rejected: int  # refused by inbound_connections_max
    rate_limit_waits: int
    # Thread CPU nanoseconds spent on each kind of traffic: decrypting, decoding and
    # dispatching received frames, building and sealing sent ones (gossip covers
    # transactions, announcements and fetches; messages cover consensus, requests, pings).
    cpu_ns_gossip_in: int
    cpu_ns_gossip_out: int
    cpu_ns_messages_in: int
    cpu_ns_messages_out: int
    handshake_failures: Mapping[str, int]
    handshake_logs_suppressed: int  # warning lines not written (rate limit; still counted)
    connection_errors: Mapping[str, int]
    peers: tuple[PeerStatistics, ...]


@dataclass(slots=True)
class _Connection:
    public_key: bytes
    secure: SecureStream
    outbound: bool
    host: str
    port: int
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    close_reason: str = "closed"
    # Since when the sender has waited with nothing to write, and the receiver for a frame
    # (the trio clock; inf: not waiting). The keepalive loop reads them.
    send_idle_since: float = math.inf
    receive_idle_since: float = math.inf
    # Set by the keepalive loop: the sender waited a ping interval and is to send a ping.
    ping_due: bool = False


@dataclass(slots=True)
class _Peer:
    public_key: bytes
    queues: PeerQueues
    connection: _Connection | None = None
    disconnected: trio.Event = field(default_factory=trio.Event)
    requests_in_flight: int = 0
    # A write of this peer's frames has started and not returned (``consensus_unsent``).
    writing: bool = False
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass(slots=True)
class _PendingRequest:
    peer: bytes
    done: trio.Event = field(default_factory=trio.Event)
    response: Response | None = None


class Network:
    """One node's peer-to-peer network. Start it with ``await nursery.start(network.run)``.

    Consumers read ``messages`` (consensus, in order per peer) and ``transactions`` (gossip,
    each transaction once). ``random`` (a function returning floats in [0, 1)) drives the
    redial jitter and ``open_stream`` makes outgoing connections; tests inject both.
    """

    def __init__(
        self,
        config: NetworkConfig,
        *,
        request_handler: RequestHandler | None = None,
        random: Callable[[], float] = random_module.random,
        open_stream: StreamOpener = trio.open_tcp_stream,
    ) -> None:
        self.config = config
        self.limits = config.limits
        self.public_key = config.identity.public_key
        self._allowed = config.allowed_keys
        # Peers cut off on purpose (testnet fault injection): refused until unblocked.
        self._blocked: frozenset[bytes] = frozenset()
        self._request_handler = request_handler
        self._random = random
        self._open_stream = open_stream
        self._peers: dict[bytes, _Peer] = {}
        self._seen = SeenCache(self.limits.seen_transactions_max)
        self._relay_store = RelayStore(
            self.limits.relay_store_transactions_max, self.limits.relay_store_seconds
        )
        # Announced hashes awaiting their fetch, in arrival (= due time) order.
        self._pending_fetches: deque[tuple[float, bytes, bytes]] = deque()
        self._pending_hashes: set[bytes] = set()
        self._fetch_wakeup = trio.Event()
        # When the linger flusher (announcements and held gossip) next wakes by itself (inf: it
        # waits to be woken).
        self._linger_flush_at = math.inf
        self._linger_flush_wakeup = trio.Event()
        self._counters = _Counters()
        self._handshake_failures: dict[str, int] = {}
        self._log_limiter = LogLimiter(_REPEATED_WARNINGS_MAX, _REPEATED_WARNINGS_WINDOW_S)
        self._connection_errors: dict[str, int] = {}
        self._pending: dict[int, _PendingRequest] = {}
        self._request_ids = itertools.count(1)
        self._inbound_active = 0
        self._peers_changed = trio.Event()
        self._gossip_sent = trio.Event()
        # Set when a write to a peer returns or a connection ends, while
        # ``wait_consensus_sent`` waits (None otherwise: the writes make no event).
        self._frames_written: trio.Event | None = None
        self._listen_port: int | None = None
        # Consensus messages, taken from the peers in turn (``network.inbox``).
        total = self.limits.inbound_messages_max
        self.messages = FairInbox[InboundMessage](
            min(self.limits.inbound_messages_per_peer_max, total), total
        )
        self._transactions_send, self.transactions = trio.open_memory_channel[InboundTransactions](
            self.limits.inbound_transaction_batches_max
        )

    # ----------------------------------------------------------------- lifecycle

    @property
    def listen_port(self) -> int:
        """The TCP port actually bound (useful with ``listen_port=0``); valid after start."""
        if self._listen_port is None:
            raise RuntimeError("the network is not listening yet")
        return self._listen_port

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, dial persistent peers, and serve until cancelled. Reports the bound port."""
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(
                    trio.serve_tcp,
                    self._handle_inbound,
                    self.config.listen_port,
                    host=self.config.listen_host,
                )
            )
            self._listen_port = int(listeners[0].socket.getsockname()[1])
            _log_event(
                logging.INFO,
                "network_listening",
                host=self.config.listen_host,
                port=self._listen_port,
                node=_short(self.public_key),
            )
            nursery.start_soon(self._fetch_loop)
            nursery.start_soon(self._linger_flush_loop)
            nursery.start_soon(self._keepalive_loop)
            for address in self.config.persistent_peers:
                nursery.start_soon(self._dial_loop, address)
            task_status.started(self._listen_port)

    # ----------------------------------------------------------------- public API

    def send(self, peer: bytes, kind: int, payload: bytes) -> bool:
        """Queue a consensus message of ``kind`` (0..255) for ``peer``; never blocks.

        True if queued. False if the peer is not connected (counted in
        ``messages_undeliverable``) or its consensus queue overflowed, in which case that
        connection is closed and logged (``send_queue_overflow``): never a silent drop.
        """
        self._check_payload(kind, payload)
        return self._send_plaintext(peer, encode_message(kind, payload))

    def broadcast(
        self, kind: int, payload: bytes, recipients: Collection[bytes] | None = None
    ) -> int:
        """``send`` to every connected peer (or to ``recipients``); returns how many queued."""
        self._check_payload(kind, payload)
        plaintext = encode_message(kind, payload)
        targets = list(self._peers) if recipients is None else list(recipients)
        return sum(self._send_plaintext(peer, plaintext) for peer in targets)

    def set_blocked_peers(self, peers: Collection[bytes]) -> None:
        """Cut the links to ``peers`` and refuse them until a later call leaves them out.

        A fault-injection hook (local testnets): a blocked peer's connection is closed now,
        and handshakes with it, inbound or dialled, fail as ``unknown_peer`` meanwhile. The
        dial loops keep running, so unblocked peers reconnect by themselves.
        """
        self._blocked = frozenset(peers)
        for key in self._blocked:
            peer = self._peers.get(key)
            if peer is not None and peer.connection is not None:
                self._close(peer.connection, "blocked")
        _log_event(
            logging.WARNING,
            "peers_blocked" if self._blocked else "peers_unblocked",
            peers=",".join(sorted(_short(key) for key in self._blocked)),
        )

    def set_allowlist(self, keys: Collection[bytes]) -> None:
        """Replace the keys allowed to connect (the persistent peers stay allowed): the node
        calls this as the validator set on chain changes. A connected peer that is no longer
        allowed is disconnected now, and refused from then on; a newly allowed one may connect
        (or is dialled, if it is a persistent peer)."""
        allowed = frozenset(keys) | {peer.public_key for peer in self.config.persistent_peers}
        if allowed == self._allowed:
            return
        added, removed = allowed - self._allowed, self._allowed - allowed
        self._allowed = allowed
        for key in removed:
            peer = self._peers.get(key)
            if peer is not None and peer.connection is not None:
                self._close(peer.connection, "not_allowed")
        _log_event(
            logging.INFO,
            "allowlist_changed",
            added=",".join(sorted(_short(key) for key in added)),
            removed=",".join(sorted(_short(key) for key in removed)),
        )

    def gossip_transactions(self, transactions: Sequence[bytes], *, linger: bool = True) -> int:
        """Flood local transactions to every connected peer; returns how many were new.

        Never blocks. Transactions already seen are skipped; a peer whose gossip backlog is
        full sheds them (counted in ``transactions_shed_outbound``). With ``linger`` they may
        wait up to ``gossip_linger_seconds`` for more to fill their frame; without, they go
        at once.
        """
        self._check_gossip_sizes(transactions)
        fresh, _ = self._seen.first_sightings(transactions)
        self._counters.transactions_gossiped += len(fresh)
        self._push(fresh, source=None, linger=linger)
        return len(fresh)

    def resend_transactions(self, transactions: Sequence[bytes], *, linger: bool = True) -> None:
        """Send transactions already gossiped to every connected peer again, whether or not
        this network relayed them before: the node's pending transactions that have waited
        long, for peers that connected later or dropped them. A peer that holds them drops
        the copies as duplicates; one that forgot them (``forget_transactions``) takes them.
        Never blocks; a full gossip backlog sheds them as usual. ``linger`` as for
        ``gossip_transactions``."""
        self._check_gossip_sizes(transactions)
        self._seen.first_sightings(transactions)
        self._counters.transactions_resent += len(transactions)
        self._push(list(transactions), source=None, linger=linger)

    def _check_gossip_sizes(self, transactions: Sequence[bytes]) -> None:
        limit = self.limits.transaction_bytes_max
        for transaction in transactions:
            if not transaction or len(transaction) > limit:
                raise ValueError(f"a gossiped transaction is 1..{limit} bytes")

    def forget_transactions(self, transactions: Sequence[bytes]) -> None:
        """Forget that these transactions were seen, so they are taken again when a peer
        resends them: for transactions the node dropped for a passing reason (its pool was
        full, it was installing a snapshot) rather than judged."""
        self._seen.discard(hashlib.sha256(transaction).digest() for transaction in transactions)
        self._counters.transactions_forgotten += len(transactions)

    async def request(
        self, peer: bytes, payload: bytes, *, timeout_seconds: float | None = None
    ) -> bytes:
        """Send ``payload`` to ``peer``'s request handler and return its response payload.

        Raises ``PeerUnavailableError`` if the peer is not connected or disconnects first, and
        ``RequestError`` if the handler failed, the peer was busy, or the time ran out.
        """
        if len(payload) > self.limits.message_bytes_max:
            raise ValueError(f"request payload over {self.limits.message_bytes_max} bytes")
        if len(self._pending) >= self.limits.requests_outstanding_max:
            raise RequestError("too_many_requests", "requests_outstanding_max reached")
        request_id = next(self._request_ids)
        pending = _PendingRequest(peer)
        self._pending[request_id] = pending
        try:
            if not self._send_plaintext(peer, encode_request(request_id, payload), count=False):
                raise PeerUnavailableError("not_connected", f"peer {_short(peer)} not connected")
            self._counters.requests_sent += 1
            timeout = (
                self.limits.request_timeout_seconds if timeout_seconds is None else timeout_seconds
            )
            with trio.move_on_after(timeout):
                await pending.done.wait()
            response = pending.response
            if not pending.done.is_set():
                raise RequestError("timeout", f"no response from {_short(peer)} in {timeout} s")
            if response is None:
                raise PeerUnavailableError("disconnected", f"peer {_short(peer)} disconnected")
            if response.status is ResponseStatus.OK:
                return response.payload
            text = response.payload.decode("utf-8", "replace")
            raise RequestError(response.status.name.lower(), f"peer {_short(peer)}: {text}")
        finally:
            del self._pending[request_id]

    def peers(self) -> list[PeerInfo]:
        """The peers connected right now."""
        return [
            PeerInfo(peer.public_key, conn.host, conn.port, conn.outbound)
            for peer in self._peers.values()
            if (conn := peer.connection) is not None
        ]

    async def wait_any_peer_connected(self) -> bytes:
        """The key of a connected peer, once there is one (use a cancel scope)."""
        while True:
            for peer in self._peers.values():
                if peer.connection is not None:
                    return peer.public_key
            await self._peers_changed.wait()

    async def wait_peers_connected(self, public_keys: Iterable[bytes]) -> None:
        """Return once every key in ``public_keys`` has a connection (use a cancel scope)."""
        wanted = set(public_keys)
        while not all(
            (peer := self._peers.get(key)) is not None and peer.connection is not None
            for key in wanted
        ):
            await self._peers_changed.wait()

    def consensus_unsent(self) -> int:
        """Connected peers whose consensus frames are not all written to their connection
        yet (queued, or in a write that has not returned)."""
        return sum(
            1
            for peer in self._peers.values()
            if peer.connection is not None and (peer.queues.priority or peer.writing)
        )

    async def wait_consensus_sent(self, timeout_s: float) -> bool:
        """Wait until every connected peer's consensus frames are written (what a node that
        stops on purpose sent last, its votes, then reaches the peers that stay), or
        ``timeout_s``; returns whether they were. Gossip is not waited for."""
        with trio.move_on_after(timeout_s):
            while self.consensus_unsent():
                if self._frames_written is None:
                    self._frames_written = trio.Event()
                await self._frames_written.wait()
            return True
        return False

    def _note_frames_written(self) -> None:
        """A write to a peer returned, or a connection ended (its queue went with it): wake
        ``wait_consensus_sent``, if it waits, to look again."""
        event = self._frames_written
        if event is not None:
            self._frames_written = None
            event.set()

    def gossip_backlog_bytes(self) -> int:
        """The largest per-peer gossip backlog: producers may pace themselves on it."""
        return max((peer.queues.gossip_bytes for peer in self._peers.values()), default=0)

    async def wait_gossip_backlog_below(self, limit_bytes: int) -> None:
        """Return once every peer's gossip backlog is under ``limit_bytes`` (producer pacing:
        a bulk submitter waits here instead of having its transactions shed)."""
        while self.gossip_backlog_bytes() >= limit_bytes:
            await self._gossip_sent.wait()

    def statistics(self) -> NetworkStatistics:
        """A snapshot of all counters, gauges and per-peer statistics."""
        counters = asdict(self._counters)
        peers = []
        for peer in self._peers.values():
            conn = peer.connection
            live = conn.secure if conn is not None else None
            peers.append(
                PeerStatistics(
                    public_key=peer.public_key,
                    connected=conn is not None,
                    frames_sent=peer.frames_sent + (live.frames_sent if live else 0),
                    frames_received=peer.frames_received + (live.frames_received if live else 0),
                    bytes_sent=peer.bytes_sent + (live.bytes_sent if live else 0),
                    bytes_received=peer.bytes_received + (live.bytes_received if live else 0),
                    priority_backlog_frames=len(peer.queues.priority),
                    gossip_backlog_bytes=peer.queues.gossip_bytes,
                    transactions_shed=peer.queues.transactions_shed,
                )
            )
        return NetworkStatistics(
            peers_connected=sum(peer.connected for peer in peers),
            frames_sent=sum(peer.frames_sent for peer in peers),
            frames_received=sum(peer.frames_received for peer in peers),
            bytes_sent=sum(peer.bytes_sent for peer in peers),
            bytes_received=sum(peer.bytes_received for peer in peers),
            handshake_failures=dict(self._handshake_failures),
            handshake_logs_suppressed=self._log_limiter.suppressed_total,
            connection_errors=dict(self._connection_errors),
            peers=tuple(peers),
            **counters,
        )

    def phase_cpu_ns(self) -> int:
        """The CPU the network has measured and charged to phases so far (gossip and
        consensus frames in and out; ``cpu_ns_*`` in ``statistics``), all on the event loop's
        thread: cheaper than a ``statistics`` snapshot."""
        counters = self._counters
        return (
            counters.cpu_ns_gossip_in
            + counters.cpu_ns_gossip_out
            + counters.cpu_ns_messages_in
            + counters.cpu_ns_messages_out
        )

    # ----------------------------------------------------------------- sending

    def _check_payload(self, kind: int, payload: bytes) -> None:
        if not 0 <= kind <= KIND_MAX:
            raise ValueError(f"message kind must be in [0, {KIND_MAX}]")
        if len(payload) > self.limits.message_bytes_max:
            raise ValueError(f"message payload over {self.limits.message_bytes_max} bytes")

    def _send_plaintext(self, public_key: bytes, plaintext: bytes, *, count: bool = True) -> bool:
        peer = self._peers.get(public_key)
        conn = peer.connection if peer is not None else None
        if peer is None or conn is None:
            if count:
                self._counters.messages_undeliverable += 1
            return False
        if not peer.queues.push_priority(plaintext):
            self._counters.send_queue_overflows += 1
            self._close(conn, "send_queue_overflow")
            return False
        if count:
            self._counters.messages_sent += 1
        return True

    def _announce(self, digests: list[bytes], source: bytes) -> None:
        now = trio.current_time()
        for peer in self._peers.values():
            if peer.connection is None or peer.public_key == source:
                continue
            if peer.queues.push_announce(digests, now):
                self._counters.transactions_announced += len(digests)
                self._flush_by(peer.queues.due_at(), now)
            else:
                self._counters.transactions_shed_outbound += len(digests)

    def _flush_by(self, due_at: float, now: float) -> None:
        """Have the flusher wake by ``due_at`` (a peer's queues' ``due_at``). Nothing when it
        is due already: the queue woke its sender itself."""
        if now < due_at < self._linger_flush_at:
            self._linger_flush_wakeup.set()

    async def _linger_flush_loop(self) -> None:
        """Wake the sender of every peer whose oldest announcement or gossip waited its
        linger without a frame to ride with; one timer for all peers, not one per peer."""
        while True:
            now = trio.current_time()
            earliest = math.inf
            for peer in self._peers.values():
                due_at = peer.queues.due_at()
                if due_at <= now:
                    peer.queues.wake()
                else:
                    earliest = min(earliest, due_at)
            self._linger_flush_at = earliest
            self._linger_flush_wakeup = trio.Event()
            with trio.move_on_at(earliest):
                await self._linger_flush_wakeup.wait()

    async def _keepalive_loop(self) -> None:
        """Ping for every connection whose sender has waited ``ping_interval_seconds`` with
        nothing to write, and close every connection whose receiver has waited
        ``idle_timeout_seconds`` for a frame: one timer for all connections instead of a
        cancel scope with a deadline entered and left around every wait.

        The loop wakes at the earliest of those deadlines and at least once per the shorter
        of the two periods, so a wait that starts after a wake-up ends its period after the
        next one, which then times it: no wait needs to wake the loop."""
        limits = self.limits
        period = min(limits.ping_interval_seconds, limits.idle_timeout_seconds)
        while True:
            now = trio.current_time()
            earliest = now + period
            for peer in self._peers.values():
                conn = peer.connection
                if conn is None:
                    continue
                silent_at = conn.receive_idle_since + limits.idle_timeout_seconds
                if silent_at <= now:
                    conn.receive_idle_since = math.inf
                    self._connection_errors["idle_timeout"] = (
                        self._connection_errors.get("idle_timeout", 0) + 1
                    )
                    self._close(conn, "idle_timeout")
                    continue
                ping_at = conn.send_idle_since + limits.ping_interval_seconds
                if ping_at <= now:
                    conn.send_idle_since = math.inf
                    conn.ping_due = True
                    peer.queues.wake()
                    ping_at = math.inf
                earliest = min(earliest, silent_at, ping_at)
            await trio.sleep_until(earliest)

    def _push(self, transactions: list[bytes], source: bytes | None, *, linger: bool) -> None:
        if not transactions:
            return
        size = sum(map(len, transactions))
        now = trio.current_time()
        for peer in self._peers.values():
            if peer.connection is None or peer.public_key == source:
                continue
            if peer.queues.push_gossip(transactions, size, now, linger=linger):
                self._counters.transactions_forwarded += len(transactions)
                self._flush_by(peer.queues.due_at(), now)
            else:
                self._counters.transactions_shed_outbound += len(transactions)

    # ----------------------------------------------------------------- connections

    def _peer(self, public_key: bytes) -> _Peer:
        peer = self._peers.get(public_key)
        if peer is None:
            peer = _Peer(public_key, PeerQueues.create(self.limits))
            self._peers[public_key] = peer
        return peer

    def _notify_peers_changed(self) -> None:
        self._peers_changed.set()
        self._peers_changed = trio.Event()

    def _close(self, conn: _Connection, reason: str) -> None:
        if not conn.cancel_scope.cancel_called:
            conn.close_reason = reason
            conn.cancel_scope.cancel()

    def _register(self, conn: _Connection) -> bool:
        """Make ``conn`` the peer's connection, or refuse it (one connection per peer)."""
        peer = self._peer(conn.public_key)
        existing = peer.connection
        if existing is not None:
            # Preferred: dialled by the smaller key. Both ends compute the same answer.
            we_are_preferred_dialer = self.public_key < conn.public_key
            new_preferred = conn.outbound == we_are_preferred_dialer
            old_preferred = existing.outbound == we_are_preferred_dialer
            self._counters.connections_duplicate += 1
            if old_preferred and not new_preferred:
                _log_event(
                    logging.DEBUG, "duplicate_connection_refused", peer=_short(peer.public_key)
                )
                return False
            _log_event(logging.DEBUG, "duplicate_connection_replaced", peer=_short(peer.public_key))
            self._retire(peer, existing)
            self._close(existing, "replaced_by_newer_connection")
        if existing is None:
            # A replacement keeps the event: whoever waits for "disconnected" waits for the
            # peer to have no connection at all.
            peer.disconnected = trio.Event()
        peer.connection = conn
        self._counters.connections_opened += 1
        _log_event(
            logging.INFO,
            "peer_connected",
            peer=_short(conn.public_key),
            host=conn.host,
            port=conn.port,
            outbound=conn.outbound,
        )
        self._notify_peers_changed()
        return True

    def _retire(self, peer: _Peer, conn: _Connection) -> None:
        """Fold a finished connection's counters into the peer's totals."""
        peer.frames_sent += conn.secure.frames_sent
        peer.frames_received += conn.secure.frames_received
        peer.bytes_sent += conn.secure.bytes_sent
        peer.bytes_received += conn.secure.bytes_received
        conn.secure.frames_sent = conn.secure.frames_received = 0
        conn.secure.bytes_sent = conn.secure.bytes_received = 0

    def _unregister(self, conn: _Connection) -> None:
        peer = self._peers[conn.public_key]
        self._retire(peer, conn)
        if peer.connection is not conn:
            return  # already replaced by a newer connection; its queues are live
        peer.connection = None
        frames, transactions = peer.queues.clear()
        peer.disconnected.set()
        self._note_frames_written()
        for pending in self._pending.values():
            if pending.peer == conn.public_key:
                pending.done.set()
        _log_event(
            logging.INFO,
            "peer_disconnected",
            peer=_short(conn.public_key),
            reason=conn.close_reason,
            dropped_frames=frames,
            dropped_transactions=transactions,
        )
        self._notify_peers_changed()

    async def _serve(self, result: HandshakeResult, host: str, port: int) -> None:
        """Run an authenticated connection until it ends, then clean up."""
        conn = _Connection(result.peer_public_key, result.stream, result.initiator, host, port)
        if not self._register(conn):
            await trio.aclose_forcefully(result.stream.stream)
            return
        # Named for what it runs while the connection lasts (``node.looptasks`` groups CPU by
        # task name); an outbound connection runs in its dial loop's task.
        task = trio.lowlevel.current_task()
        name = task.name
        task.name = "peer receive"
        try:
            with conn.cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._guard, conn, self._send_loop(conn), name="peer send")
                    await self._guard(conn, self._receive_loop(conn, nursery))
                    nursery.cancel_scope.cancel()
        finally:
            task.name = name
            self._unregister(conn)
            await trio.aclose_forcefully(result.stream.stream)

    async def _guard(self, conn: _Connection, work: Awaitable[None]) -> None:
        """Run one side of a connection; a remote or I/O error closes that connection only."""
        try:
            await work
        except _REMOTE_ERRORS as error:
            self._connection_errors[error.reason] = self._connection_errors.get(error.reason, 0) + 1
            _log_event(
                logging.WARNING,
                "peer_protocol_error",
                peer=_short(conn.public_key),
                host=conn.host,
                port=conn.port,
                reason=error.reason,
                detail=repr(error.detail),
            )
            self._close(conn, error.reason)
        except _STREAM_ERRORS as error:
            self._close(conn, f"io_error:{type(error).__name__}")
        else:
            self._close(conn, conn.close_reason)

    async def _send_loop(self, conn: _Connection) -> None:
        peer = self._peers[conn.public_key]
        queues = peer.queues
        while True:
            if peer.connection is not conn:
                # Replaced by a newer connection (two dials crossed): the queues and their
                # wake-up are its sender's now. Taking frames here would lose them with this
                # connection, and arming the wake-up would leave the new sender waiting on an
                # event nobody sets, its frames unsent until the connection timed out.
                return
            if queues.due(trio.current_time()):
                started_ns = time.thread_time_ns()
                frames, transaction_count = queues.take()
                taken_ns = time.thread_time_ns() - started_ns
                if transaction_count:
                    self._gossip_sent.set()
                    self._gossip_sent = trio.Event()
                peer.writing = True
                try:
                    await conn.secure.send_frames(frames)
                finally:
                    peer.writing = False
                    self._note_frames_written()
                self._charge_sent(frames, taken_ns + conn.secure.seal_ns_last)
                continue
            queues.wakeup = wakeup = trio.Event()
            # The keepalive loop times the wait and sets ``ping_due`` when it lasted a ping
            # interval.
            conn.send_idle_since = trio.current_time()
            await wakeup.wait()
            conn.send_idle_since = math.inf
            if conn.ping_due:
                conn.ping_due = False
                if not queues.due(trio.current_time()):
                    await conn.secure.send_frames([encode_ping()])

    async def _receive_loop(self, conn: _Connection, nursery: trio.Nursery) -> None:
        limits = self.limits
        now = trio.current_time()
        byte_bucket = TokenBucket(
            limits.peer_receive_bytes_per_second, limits.peer_receive_bytes_per_second, now
        )
        frame_bucket = TokenBucket(
            limits.peer_receive_frames_per_second, limits.peer_receive_frames_per_second, now
        )
        # Consensus messages cost the node a decode and often a signature check each, far more
        # than a frame's share of the rates above: a peer gets a budget of its own for them.
        message_bucket = TokenBucket(
            limits.peer_receive_messages_per_second, limits.peer_receive_messages_per_second, now
        )
        peer = self._peers[conn.public_key]
        while True:
            # A frame an earlier read brought needs no wait. A real wait is timed by the
            # keepalive loop, which closes the connection when it lasts the idle timeout.
            plaintext = conn.secure.receive_buffered()
            if plaintext is None:
                conn.receive_idle_since = trio.current_time()
                plaintext = await conn.secure.receive_frame()
                conn.receive_idle_since = math.inf
                if plaintext is None:
                    conn.close_reason = "closed_by_peer"
                    return
            opened_ns = conn.secure.open_ns_last
            now = trio.current_time()
            delay = max(byte_bucket.consume(len(plaintext), now), frame_bucket.consume(1, now))
            if delay > 0:
                self._counters.rate_limit_waits += 1
                await trio.sleep(delay)
            started_ns = time.thread_time_ns()
            message = decode_message(plaintext, limits)
            if isinstance(message, Gossip | Announce | Fetch):
                if isinstance(message, Gossip):
                    self._on_gossip(conn.public_key, message.transactions)
                elif isinstance(message, Announce):
                    self._on_announce(conn.public_key, message.hashes)
                else:
                    self._on_fetch(conn.public_key, message.hashes)
                self._counters.cpu_ns_gossip_in += opened_ns + time.thread_time_ns() - started_ns
                continue
            self._counters.cpu_ns_messages_in += opened_ns + time.thread_time_ns() - started_ns
            if isinstance(message, Message):
                self._counters.messages_received += 1
                delay = message_bucket.consume(1, trio.current_time())
                if delay > 0:
                    self._counters.rate_limit_waits += 1
                    await trio.sleep(delay)
                await self.messages.put(
                    conn.public_key, InboundMessage(conn.public_key, message.kind, message.payload)
                )
            elif isinstance(message, Request):
                if peer.requests_in_flight >= limits.peer_requests_in_flight_max:
                    self._counters.requests_busy += 1
                    self._respond(conn, message.request_id, ResponseStatus.BUSY, b"busy")
                else:
                    peer.requests_in_flight += 1
                    nursery.start_soon(self._serve_request, conn, peer, message)
            elif isinstance(message, Response):
                pending = self._pending.get(message.request_id)
                if pending is None or pending.peer != conn.public_key or pending.done.is_set():
                    self._counters.responses_unmatched += 1
                else:
                    pending.response = message
                    pending.done.set()
            else:
                assert isinstance(message, Ping)

    def _charge_sent(self, frames: Sequence[bytes], cpu_ns: int) -> None:
        """Split the CPU time of one write between gossip and messages by their bytes."""
        total = gossip = 0
        for frame in frames:
            total += len(frame)
            if frame and frame[0] in GOSSIP_FRAME_TYPES:
                gossip += len(frame)
        share = cpu_ns * gossip // total if total else 0
        self._counters.cpu_ns_gossip_out += share
        self._counters.cpu_ns_messages_out += cpu_ns - share

    def _on_gossip(self, source: bytes, transactions: tuple[bytes, ...]) -> None:
        counters = self._counters
        counters.transactions_received += len(transactions)
        fresh, digests = self._seen.first_sightings(transactions)
        counters.transactions_duplicate += len(transactions) - len(fresh)
        if not fresh:
            return
        try:
            self._transactions_send.send_nowait(InboundTransactions(source, tuple(fresh)))
            counters.transactions_delivered += len(fresh)
        except trio.WouldBlock:
            counters.transactions_shed_inbound += len(fresh)
            # Never delivered (still relayed): a later resend of the same bytes is taken.
            self._seen.discard(digests)
        self._relay_store.put_many(digests, fresh, trio.current_time())
        self._announce(digests, source)

    def _on_announce(self, source: bytes, hashes: tuple[bytes, ...]) -> None:
        self._counters.announcements_received += len(hashes)
        seen, pending, pending_hashes = self._seen, self._pending_fetches, self._pending_hashes
        due = trio.current_time() + self.limits.fetch_delay_seconds
        room = self.limits.announcements_pending_max - len(pending)
        added = 0
        for digest in hashes:
            if digest in seen or digest in pending_hashes:
                continue
            if added >= room:
                self._counters.announcements_ignored += 1
                continue
            pending.append((due, digest, source))
            pending_hashes.add(digest)
            added += 1
        if added:
            self._fetch_wakeup.set()

    def _on_fetch(self, source: bytes, hashes: tuple[bytes, ...]) -> None:
        get = self._relay_store.get
        found = [transaction for digest in hashes if (transaction := get(digest)) is not None]
        peer = self._peers[source]
        if found and peer.queues.push_gossip(
            found, sum(map(len, found)), trio.current_time(), linger=False
        ):
            self._counters.fetches_served += len(found)
        elif found:
            self._counters.transactions_shed_outbound += len(found)

    async def _fetch_loop(self) -> None:
        """Fetch announced transactions still unseen once their delay has passed."""
        pending, pending_hashes = self._pending_fetches, self._pending_hashes
        step = self.limits.announce_hashes_max
        while True:
            if not pending:
                self._fetch_wakeup = trio.Event()
                await self._fetch_wakeup.wait()
                continue
            due = pending[0][0]
            if due > trio.current_time():
                await trio.sleep_until(due)
                continue
            now = trio.current_time()
            wanted: dict[bytes, list[bytes]] = {}
            while pending and pending[0][0] <= now:
                _, digest, peer = pending.popleft()
                pending_hashes.discard(digest)
                if digest not in self._seen:
                    wanted.setdefault(peer, []).append(digest)
            for peer, digests in wanted.items():
                for start in range(0, len(digests), step):
                    chunk = digests[start : start + step]
                    if self._send_plaintext(peer, encode_fetch(chunk), count=False):
                        self._counters.transactions_fetched += len(chunk)

    def _respond(
        self, conn: _Connection, request_id: int, status: ResponseStatus, payload: bytes
    ) -> None:
        # Queues belong to the peer, so a response survives a connection replacement.
        self._send_plaintext(
            conn.public_key, encode_response(request_id, status, payload), count=False
        )

    async def _serve_request(self, conn: _Connection, peer: _Peer, request: Request) -> None:
        try:
            if self._request_handler is None:
                status, payload = ResponseStatus.ERROR, b"no request handler"
            else:
                try:
                    payload = await self._request_handler(conn.public_key, request.payload)
                    status = ResponseStatus.OK
                except Exception as error:  # the handler is node code; report, never crash
                    text = f"{type(error).__name__}: {error}"
                    status = ResponseStatus.ERROR
                    payload = text.encode("utf-8")[:_ERROR_TEXT_BYTES_MAX]
                if len(payload) > self.limits.message_bytes_max:
                    status, payload = ResponseStatus.ERROR, b"response too large"
            self._counters.requests_served += 1
            self._respond(conn, request.request_id, status, payload)
        finally:
            peer.requests_in_flight -= 1

    # ----------------------------------------------------------------- dialling and accepting

    def _record_handshake_failure(self, error: HandshakeError, host: str, port: int) -> None:
        self._handshake_failures[error.reason] = self._handshake_failures.get(error.reason, 0) + 1
        write, suppressed = self._log_limiter.admit("handshake_rejected", trio.current_time())
        if write:
            _log_event(
                logging.WARNING,
                "handshake_rejected",
                reason=error.reason,
                peer=f"{host}:{port}",
                detail=repr(error.detail)[:_LOG_DETAIL_CHARS_MAX],
                suppressed_before=suppressed,
            )

    async def _handle_inbound(self, stream: trio.SocketStream) -> None:
        try:
            host, port = stream.socket.getpeername()[:2]
        except OSError:
            await trio.aclose_forcefully(stream)
            return
        if self._inbound_active >= self.limits.inbound_connections_max:
            self._counters.inbound_rejected += 1
            write, suppressed = self._log_limiter.admit("inbound_rejected", trio.current_time())
            if write:
                _log_event(
                    logging.WARNING,
                    "inbound_rejected",
                    peer=f"{host}:{port}",
                    reason="limit",
                    suppressed_before=suppressed,
                )
            await trio.aclose_forcefully(stream)
            return
        self._inbound_active += 1
        try:
            try:
                result = await self._handshake(stream, initiator=False, expected_peer=None)
            except HandshakeError as error:
                self._record_handshake_failure(error, host, port)
                await trio.aclose_forcefully(stream)
                return
            await self._serve(result, str(host), int(port))
        finally:
            self._inbound_active -= 1

    async def _handshake(
        self, stream: trio.abc.Stream, *, initiator: bool, expected_peer: bytes | None
    ) -> HandshakeResult:
        return await perform_handshake(
            stream,
            initiator=initiator,
            identity=self.config.identity,
            chain_id=self.config.chain_id,
            genesis_hash=self.config.genesis_hash,
            allowlist=self._allowed - self._blocked,
            limits=self.limits,
            expected_peer=expected_peer,
        )

    def backoff_seconds(self, failures: int) -> float:
        """Delay before redial number ``failures`` (>= 1): exponential, capped, jittered."""
        limits = self.limits
        exponent = min(failures - 1, 62)
        base = min(limits.dial_backoff_max_seconds, limits.dial_backoff_base_seconds * 2**exponent)
        return float(base * (1.0 - limits.dial_backoff_jitter * self._random()))

    async def _dial_loop(self, address: PeerAddress) -> None:
        peer = self._peer(address.public_key)
        failures = 0
        while True:
            if peer.connection is not None:
                await peer.disconnected.wait()
                failures = max(failures, 1)
                await trio.sleep(self.backoff_seconds(failures))
                continue
            self._counters.dial_attempts += 1
            result = await self._dial(address)
            if result is None:
                self._counters.dial_failures += 1
                failures += 1
                await trio.sleep(self.backoff_seconds(failures))
                continue
            await self._serve(result, address.host, address.port)
            # Connected, then lost (or refused as a duplicate): one short backoff, so a peer
            # that closes every connection at once cannot make us spin.
            failures = 1
            await trio.sleep(self.backoff_seconds(failures))

    async def _dial(self, address: PeerAddress) -> HandshakeResult | None:
        stream: trio.abc.Stream | None = None
        try:
            with trio.fail_after(self.limits.dial_timeout_seconds):
                stream = await self._open_stream(address.host, address.port)
            result = await self._handshake(stream, initiator=True, expected_peer=address.public_key)
            stream = None  # the connection's from here on
            return result
        except (OSError, trio.TooSlowError) as error:
            _log_event(
                logging.DEBUG,
                "dial_failed",
                peer=_short(address.public_key),
                address=f"{address.host}:{address.port}",
                error=type(error).__name__,
            )
        except HandshakeError as error:
            self._record_handshake_failure(error, address.host, address.port)
        finally:
            # A failed handshake, or one cancelled as the node stops: the socket is closed
            # here, not left to the garbage collector.
            if stream is not None:
                await trio.aclose_forcefully(stream)
        return None
