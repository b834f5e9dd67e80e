"""Every bound the network layer enforces, in one place, each with the reason for its value.

``NetworkLimits`` is configuration: a node may tighten or loosen any field, and tests shrink
the timeouts. The defaults are sized for a consortium of tens of validators on a WAN.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

__all__ = ["DEFAULT_LIMITS", "FRAME_HEADER_BYTES", "RECEIVE_CHUNK_BYTES", "NetworkLimits"]

# Every frame on the wire starts with a 4-byte big-endian length of the ciphertext that follows.
FRAME_HEADER_BYTES: Final = 4
# One ``receive_some`` reads at most this much: large enough for few syscalls per batch frame,
# small enough that the decoder's buffer stays near one frame, and under the C allocator's
# mmap threshold (128 KiB): a larger read buffer is mapped and unmapped again on every
# receive that gets data (a send and receive of 4,000 bytes over a socket pair: 32-42 us of
# CPU with 256 KiB reads, 7 us with 64 KiB).
RECEIVE_CHUNK_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class NetworkLimits:
    """Hard bounds and timings for one node's network layer."""

    # One encrypted frame. The largest payload is a block-sync response carrying one block
    # (the codec caps a block at 16 MiB) plus a small header; nothing bigger is ever allocated.
    frame_bytes_max: int = 16 * 1024 * 1024 + 4096
    # One consensus message payload: votes and pre-prepares with a block proposal.
    message_bytes_max: int = 16 * 1024 * 1024
    # One gossiped transaction: apps.transaction.TX_BYTES_MAX is 32 KiB.
    transaction_bytes_max: int = 32 * 1024
    # Target size of one transaction batch frame: big enough to amortise per-frame crypto and
    # syscalls, small enough that consensus frames never wait long behind gossip.
    transaction_batch_bytes: int = 64 * 1024
    # Transactions in one received batch frame (64 KiB / ~100-byte minimum transaction, x4).
    transaction_batch_count_max: int = 4096
    # Hashes remembered to deliver each transaction once and stop re-flooding: 107 B each
    # (a 32-byte digest and its slot), so 28 MiB when full. At least half are remembered:
    # 65 s of traffic at 2,000 tx/s, 6.5 s at 20,000, while a transaction's copies arrive
    # within a second or two (resends of pending ones after seconds are dropped by admission
    # if they come back later). A million of them held 107 MiB of every node's heap.
    seen_transactions_max: int = 262_144
    # Relayed transactions kept to answer peers' fetches: about 390 B each with a 300-byte
    # transaction (the digest is the seen cache's), so 26 MiB when full. A fetch follows an
    # announcement after fetch_delay_seconds plus a round trip, so a relayed transaction is
    # kept at least relay_store_seconds (at most twice that) while the count bound allows,
    # which always keeps the last half of it: 1.6 s of traffic at 20,000 tx/s. Kept by count
    # alone, a node at 2,000 tx/s held 16-32 s of traffic (12 MiB after 20 s, the whole
    # bound after a minute) for fetches that come within about a second.
    relay_store_transactions_max: int = 65_536
    relay_store_seconds: float = 4.0
    # Announced hashes per Announce or Fetch frame (32 bytes each: 128 KiB at most).
    announce_hashes_max: int = 4096
    # Per-peer backlog of hashes waiting to be announced; beyond it they are shed and counted.
    announce_queue_hashes_max: int = 200_000
    # Announced-but-unseen hashes waiting for their fetch; beyond it announcements are ignored.
    announcements_pending_max: int = 200_000
    # After an announcement we wait this long before fetching, so a transaction already on its
    # way from its origin (every origin pushes to all its peers) is not transferred twice. A
    # busy receiver can lag its sockets by hundreds of ms; relays only matter for peers the
    # origin is not connected to, where a second of extra latency is harmless.
    fetch_delay_seconds: float = 1.0
    # Announcements wait at most this long for a frame to ride with (gossip or consensus to the
    # same peer) before they are sent on their own: each received gossip batch is announced to
    # every other peer, so in a full mesh announcements sent at once were two thirds of all
    # frames. A fetch waits fetch_delay_seconds anyway.
    announce_linger_seconds: float = 0.05
    # Gossip the caller lets linger (the node: while its machine has no core to spare) waits at
    # most this long for more to fill its frame (or for a frame it can ride with) before it is
    # sent; a full batch (transaction_batch_bytes) goes at once, and so does a fetched
    # transaction. Each gossip frame costs its receiver a wake-up, a decode, a signature batch
    # and an admission pass whatever it carries, so at moderate load, where each client request
    # would otherwise be a frame of its own, fewer and larger frames leave the receivers more
    # CPU for blocks. 0 sends gossip at once.
    gossip_linger_seconds: float = 0.03
    # Per-peer outgoing gossip backlog; beyond it new gossip for that peer is shed and counted.
    gossip_queue_bytes_max: int = 16 * 1024 * 1024
    # Per-peer outgoing consensus/response backlog (frames). Overflowing it closes the
    # connection loudly rather than dropping consensus traffic; the peer resyncs on reconnect.
    consensus_queue_frames_max: int = 4096
    # Received transaction batches waiting for the node; beyond it batches are shed and counted.
    inbound_transaction_batches_max: int = 1024
    # Received consensus messages waiting for the node, in all and of one peer; the node takes
    # them from the peers in turn (``network.inbox``), and a peer whose messages fill either
    # bound waits (its socket is back-pressured) while the others' messages go on.
    inbound_messages_max: int = 4096
    inbound_messages_per_peer_max: int = 512
    # Authenticated inbound connections plus handshakes in progress.
    inbound_connections_max: int = 64
    # A handshake that takes longer is dropped (slow-loris defence).
    handshake_timeout_seconds: float = 10.0
    # TCP connect attempt.
    dial_timeout_seconds: float = 5.0
    # Redial backoff: base * 2**failures, capped, times a random factor in [1 - jitter, 1].
    dial_backoff_base_seconds: float = 0.5
    dial_backoff_max_seconds: float = 30.0
    dial_backoff_jitter: float = 0.5
    # An idle sender emits a ping this often; a receiver that hears nothing for the idle
    # timeout closes the connection (a peer that vanished without a FIN).
    ping_interval_seconds: float = 5.0
    idle_timeout_seconds: float = 20.0
    # Per-peer receive rate: beyond it we stop reading that peer's socket (TCP back-pressure),
    # so one flooding peer cannot starve the others. Bursts up to one second's worth.
    peer_receive_bytes_per_second: float = 64 * 1024 * 1024
    peer_receive_frames_per_second: float = 50_000
    # Consensus messages of one peer (a decode and often a signature check each): a validator
    # sends a few per height, so this bounds only what a byzantine peer can make the node check.
    peer_receive_messages_per_second: float = 2_000
    # Requests one peer may have in flight at our request handler; more are answered "busy".
    peer_requests_in_flight_max: int = 8
    # Default time a block-sync request waits for its response.
    request_timeout_seconds: float = 30.0
    # Requests this node may have outstanding at once across all peers.
    requests_outstanding_max: int = 256

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "dial_backoff_jitter":
                if not 0.0 <= value < 1.0:
                    raise ValueError("NetworkLimits.dial_backoff_jitter must be in [0, 1)")
            elif item.name == "gossip_linger_seconds":
                if not 0.0 <= value <= 1.0:
                    raise ValueError("NetworkLimits.gossip_linger_seconds must be in [0, 1]")
            elif value <= 0:
                raise ValueError(f"NetworkLimits.{item.name} must be positive")
        if self.message_bytes_max + 64 > self.frame_bytes_max:
            raise ValueError("NetworkLimits.frame_bytes_max must hold message_bytes_max + header")
        if self.transaction_bytes_max + 64 > self.transaction_batch_bytes * 2:
            raise ValueError("NetworkLimits.transaction_batch_bytes too small for one transaction")
        if self.relay_store_seconds <= self.fetch_delay_seconds:
            raise ValueError(
                "NetworkLimits.relay_store_seconds must exceed fetch_delay_seconds (a fetch "
                "comes that long after its announcement)"
            )


DEFAULT_LIMITS: Final = NetworkLimits()
