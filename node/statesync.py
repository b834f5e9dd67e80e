"""State sync: a fresh node installs a verified snapshot from its peers instead of replaying
every block from genesis, then block-syncs the rest and joins consensus.

Theory of operation
-------------------
``StateSync.run`` works over any request transport (the p2p request/response channel on a
node: ``network.Network.request``) and trusts only the genesis validator set; the sets that
certify later heights it learns by walking the chain's validator-set changes from genesis:

1. **Discover.** Once ``peers_min`` peers are connected, ask each for the snapshots it offers
   (``OFFERS``). Candidates are tried newest first. When peers answered and none offers a
   snapshot (a young chain), the node joins from genesis (``NoSnapshotOffered``); when no peer
   answered with a well-formed list (timeouts, errors, junk), the attempt fails and is tried
   again: a peer that fails to answer has not said it holds nothing.
2. **Certify.** The app hash after height h is in block h+1's header. Ask a peer for every
   validator-set change in force by h+1 (``VALIDATORS``: effective height e and set), and for
   each change block e-1: it must carry a valid certificate of the set in force at e-1
   (genesis, then each set verified before it) and name the changed set's hash as its
   ``next_validators_hash``, so the peer can neither invent, move nor hide a change (a hidden
   change leaves a later certificate that does not verify). Then fetch blocks h and h+1 with
   their commit certificates, verify each against the set of its own height, and that block
   h+1 links to block h. The candidate's app hash must be block h+1's. A peer offering a
   snapshot no certificate backs, or changes the chain does not name, is not asked again.
3. **Manifest.** Fetch the manifest from a peer offering the snapshot and check that its chunk
   slots rebuild the certified app hash (``node.snapshots.Manifest.verify``); a peer whose
   manifest does not is marked bad.
4. **Chunks.** Up to ``chunk_requests_max`` chunks are fetched at once, spread over the peers
   offering the snapshot (fewest requests in flight first). Every chunk is verified on its own
   against the manifest (``verify_chunk``) before it is written; a chunk that fails marks its
   sender bad and goes back in the queue for another peer. A peer that fails to answer
   ``PEER_FAILURES_MAX`` times in a row is dropped too. When no usable peer is left for the
   snapshot, the sync fails with ``StateSyncError`` and the caller may start over.
5. **Install.** The store starts the sync (``begin_state_sync``) before the first chunk,
   writes each verified chunk, and finishes with the upper tree records, block h, its
   certificate and the new tip in one transaction (``finish_state_sync``). The received
   snapshot is kept on disk, pinned: the audit replays from it and the node serves it. A
   write this node's disk refuses (the store's, the snapshot directory's) ends the sync with
   ``StateSyncWriteError`` and a damaged store with ``StoreDamagedError``: the peers are not
   at fault and fetching the snapshot again would meet the same disk, so the node stops
   rather than download it again and again.

Why a byzantine server cannot make a node install a wrong state: the app hash is certified by a
quorum of the validator set of its height, reached from genesis through certified headers (as
long as no set ever had more than f byzantine members, retired keys included); the manifest is
accepted only if its slots hash to it; every chunk only if its entries rebuild its slot.
Altering, adding, dropping or moving a single entry changes a hash on the way to the root
(SHA-256 collisions aside). What a byzantine server can do is waste time: each lie costs it
its standing with this node (it is not asked again).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import trio

from consensus.types import (
    Block,
    CertificateError,
    CommitCertificate,
    DecodeError,
    ValidatorSchedule,
    ValidatorSet,
    verify_certificate,
)
from node.snapshots import (
    Manifest,
    SnapshotDirectory,
    SnapshotError,
    SnapshotOffer,
    StateSyncRequest,
    decode_block_answer,
    decode_offers,
    decode_validator_changes,
    verify_chunk,
)
from node.store import Store, StoreDamagedError, StoreError, StoreWriteError

__all__ = [
    "PEER_FAILURES_MAX",
    "NoSnapshotOffered",
    "StateSync",
    "StateSyncError",
    "StateSyncLimits",
    "StateSyncResult",
    "StateSyncWriteError",
]

log = logging.getLogger("suanpan.statesync")

Requester = Callable[[bytes, bytes], Awaitable[bytes]]
"""``await request(peer, payload) -> answer``; raises on any failure (the node's is
``Network.request``: ``RequestError``, ``PeerUnavailableError``)."""

# Failed requests in a row after which a peer is no longer asked (a timeout is a failure).
PEER_FAILURES_MAX: Final = 3
# How often to look at the connected peers while waiting for enough of them.
_PEERS_POLL_SECONDS: Final = 0.2


class StateSyncError(Exception):
    """State sync could not complete; the message says what is missing."""


class NoSnapshotOffered(StateSyncError):
    """Peers answered, and none offers a snapshot (a young chain: nothing to sync from)."""


class StateSyncWriteError(Exception):
    """This node could not keep what it received: its store refused a write (a full disk, a
    file size limit, an I/O error: ``StoreWriteError``) or its snapshot directory could not be
    written (``OSError``). Not a ``StateSyncError``: the peers are not at fault, and fetching
    the snapshot again would meet the same disk, so the caller stops instead of retrying.
    ``what`` names what was not written, ``error`` is the store's or the system's error. (A
    damaged store, ``StoreDamagedError``, is raised as it is.)"""

    def __init__(self, what: str, error: StoreWriteError | OSError) -> None:
        super().__init__(f"state sync could not write {what}: {error}")
        self.what = what
        self.error = error


@dataclass(frozen=True, slots=True)
class StateSyncLimits:
    """``[statesync]`` settings the client uses."""

    # Peers to wait for before choosing a snapshot (more peers: more sources to compare).
    peers_min: int = 2
    # How long to wait for them.
    peers_wait_seconds: float = 60.0
    # Chunk requests in flight at once (across all peers).
    chunk_requests_max: int = 4
    # Chunk requests in flight to one peer.
    chunk_requests_per_peer_max: int = 2
    # One request's time limit.
    request_timeout_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class StateSyncResult:
    """What a completed state sync installed, and what it took."""

    height: int
    app_hash: bytes
    block: Block
    entries: int
    chunks: int
    size_bytes: int
    elapsed_seconds: float
    chunks_refetched: int
    bad_peers: tuple[bytes, ...]


@dataclass(slots=True)
class _Peer:
    key: bytes
    in_flight: int = 0
    failures: int = 0
    bad: bool = False


@dataclass(slots=True)
class _Progress:
    chunks_done: int = 0
    entries: int = 0
    size_bytes: int = 0
    # What each installed chunk really held: (entries, bytes) by prefix.
    received: dict[int, tuple[int, int]] = field(default_factory=dict)
    chunks_total: int = 0
    refetched: int = 0
    bad: list[bytes] = field(default_factory=list)


class StateSync:
    """One state sync of ``store`` from the peers ``peers()`` returns, via ``request``."""

    def __init__(
        self,
        *,
        request: Requester,
        peers: Callable[[], Sequence[bytes]],
        store: Store,
        snapshots: SnapshotDirectory,
        validators: ValidatorSet,
        chain_id: str,
        limits: StateSyncLimits = StateSyncLimits(),
    ) -> None:
        self._request = request
        self._peers = peers
        self._store = store
        self._snapshots = snapshots
        self._validators = validators
        self._chain_id = chain_id
        self._limits = limits
        self._known: dict[bytes, _Peer] = {}
        self.progress = _Progress()

    # -- the steps ------------------------------------------------------------------------

    async def run(self) -> StateSyncResult:
        """Sync; ``StateSyncError`` when no certified snapshot could be installed."""
        started = time.monotonic()
        peers = await self._wait_for_peers()
        offers, answered = await self._discover(peers)
        if not offers and not answered:
            # Only a peer's own word that it holds no snapshot makes the node give up state
            # sync: a peer that failed to answer, or answered with junk, said nothing, and a
            # node whose only peers those are tries again instead of joining from genesis.
            raise StateSyncError(
                f"none of the {len(peers)} connected peers answered the request for the "
                "snapshots it offers"
            )
        if not offers:
            raise NoSnapshotOffered(
                f"none of the {len(peers)} connected peers offers a snapshot "
                "([statesync] snapshot_interval on the others?)"
            )
        heights = sorted({offer.height for offer, _ in offers}, reverse=True)
        problems: list[str] = []
        for height in heights:
            offering = {peer for offer, peer in offers if offer.height == height}
            try:
                block, certificate, app_hash = await self._certify(height, offering)
            except StateSyncError as error:
                problems.append(str(error))
                continue
            sources = [
                peer
                for offer, peer in offers
                if offer.height == height and offer.app_hash == app_hash
            ]
            for offer, peer in offers:
                if offer.height == height and offer.app_hash != app_hash:
                    self._mark_bad(peer, f"offered snapshot {height} with an uncertified app hash")
            if not sources:
                problems.append(f"no peer offers snapshot {height} with its certified app hash")
                continue
            try:
                return await self._install(height, app_hash, block, certificate, sources, started)
            except StateSyncError as error:
                problems.append(str(error))
                # A half-installed sync is started over by the next attempt.
                continue
        raise StateSyncError("; ".join(problems) or "no snapshot could be installed")

    async def _wait_for_peers(self) -> list[bytes]:
        with trio.move_on_after(self._limits.peers_wait_seconds):
            # The peer list is the network's to keep; looking at it 5 times a second is free.
            while len(self._peers()) < self._limits.peers_min:  # noqa: ASYNC110
                await trio.sleep(_PEERS_POLL_SECONDS)
        peers = list(self._peers())
        if not peers:
            raise StateSyncError(
                f"no peer connected within {self._limits.peers_wait_seconds:.0f} s"
            )
        return peers

    async def _discover(
        self, peers: Sequence[bytes]
    ) -> tuple[list[tuple[SnapshotOffer, bytes]], int]:
        """Every peer's offers, and how many peers answered with a well-formed list."""
        found: list[tuple[SnapshotOffer, bytes]] = []
        answered = 0

        async def ask(peer: bytes) -> None:
            nonlocal answered
            try:
                answer = await self._ask(peer, StateSyncRequest(StateSyncRequest.OFFERS))
                offers = decode_offers(answer)
            except SnapshotError as error:
                self._mark_bad(peer, f"offers: {error}")
                return
            except _Unanswered:
                return
            answered += 1
            found.extend((offer, peer) for offer in offers)

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(ask, peer)
        log.info(
            "statesync_offers",
            extra={
                "peers": len(peers),
                "answered": answered,
                "offers": sorted({o.height for o, _ in found}),
            },
        )
        return found, answered

    async def _certify(
        self, height: int, preferred: set[bytes]
    ) -> tuple[Block, CommitCertificate, bytes]:
        """Blocks ``height`` and ``height + 1`` with valid certificates, linked; returns block
        ``height``, its certificate and the app hash after ``height``."""
        candidates = sorted(preferred) + sorted(set(self._peers()) - preferred)
        for peer in candidates:
            if self._peer(peer).bad:
                continue
            try:
                schedule = await self._schedule(peer, height + 1)
                block, certificate = await self._block(peer, height, schedule.at(height))
                following, _ = await self._block(peer, height + 1, schedule.at(height + 1))
            except _Unanswered:
                continue
            except SnapshotError as error:
                self._mark_bad(peer, str(error))
                continue
            if following.header.parent_hash != block.hash:
                self._mark_bad(peer, f"block {height + 1} does not link to block {height}")
                continue
            return block, certificate, following.header.app_hash
        raise StateSyncError(f"no peer could give certified blocks {height} and {height + 1}")

    async def _schedule(self, peer: bytes, top: int) -> ValidatorSchedule:
        """The validator sets in force up to height ``top``, as ``peer`` says they changed and
        as the certified headers before each change confirm (``SnapshotError`` otherwise)."""
        answer = await self._ask(peer, StateSyncRequest(StateSyncRequest.VALIDATORS, top))
        schedule = ValidatorSchedule(self._validators)
        for effective, validators in decode_validator_changes(answer):
            if effective > top:
                raise SnapshotError(f"validator change at {effective}, above the {top} asked for")
            if effective <= 1:
                if validators != self._validators:
                    raise SnapshotError("the validator set of height 1 is not genesis's")
                continue
            # Block e-1 is certified by the set in force at e-1 and names the set of e.
            link, _ = await self._block(peer, effective - 1, schedule.at(effective - 1))
            if link.header.next_validators_hash != validators.hash():
                raise SnapshotError(
                    f"block {effective - 1} does not name the validator set said to take"
                    f" effect at {effective}"
                )
            schedule = schedule.with_change(effective, validators)
        return schedule

    async def _block(
        self, peer: bytes, height: int, validators: ValidatorSet
    ) -> tuple[Block, CommitCertificate]:
        answer = await self._ask(peer, StateSyncRequest(StateSyncRequest.BLOCK, height))
        block_bytes, certificate_bytes = decode_block_answer(answer)
        try:
            block = Block.decode(block_bytes)
            certificate = CommitCertificate.decode(certificate_bytes)
            if block.header.chain_id != self._chain_id or block.height != height:
                raise SnapshotError(f"block answer is not block {height} of this chain")
            verify_certificate(
                certificate, validators, self._chain_id, block_hash=block.hash, height=height
            )
        except (DecodeError, CertificateError) as error:
            raise SnapshotError(f"block {height}: {error}") from None
        return block, certificate

    async def _install(
        self,
        height: int,
        app_hash: bytes,
        block: Block,
        certificate: CommitCertificate,
        sources: list[bytes],
        started: float,
    ) -> StateSyncResult:
        manifest, upper = await self._manifest(height, app_hash, sources)
        with _local_write(f"the start of snapshot {height}"):
            await trio.to_thread.run_sync(self._store.begin_state_sync, height)
            self._snapshots.begin_received(manifest)
        log.info(
            "statesync_started",
            extra={
                "height": height,
                "chunks": len(manifest.chunks),
                "entries": manifest.entries,
                "bytes": manifest.size_bytes,
                "peers": len(sources),
            },
        )
        await self._fetch_chunks(manifest, sources)
        with _local_write(f"the end of snapshot {height}"):
            await trio.to_thread.run_sync(
                self._store.finish_state_sync, block, certificate, app_hash, upper
            )
        # Keep the manifest with what the chunks really held: the counts and sizes a manifest
        # gives are not covered by the root, so the sender's may be wrong.
        received = self.progress.received
        kept = dataclasses.replace(
            manifest,
            chunks=tuple(
                dataclasses.replace(
                    chunk, entries=received[chunk.prefix][0], size_bytes=received[chunk.prefix][1]
                )
                for chunk in manifest.chunks
            ),
        )
        with _local_write(f"the received snapshot {height}'s manifest"):
            self._snapshots.finish_received(kept, pinned=True)
        elapsed = time.monotonic() - started
        result = StateSyncResult(
            height=height,
            app_hash=app_hash,
            block=block,
            entries=self.progress.entries,
            chunks=len(manifest.chunks),
            size_bytes=self.progress.size_bytes,
            elapsed_seconds=elapsed,
            chunks_refetched=self.progress.refetched,
            bad_peers=tuple(self.progress.bad),
        )
        log.info(
            "statesync_finished",
            extra={
                "height": height,
                "app_hash": app_hash.hex()[:16],
                "entries": result.entries,
                "seconds": round(elapsed, 3),
                "refetched": result.chunks_refetched,
                "bad_peers": len(result.bad_peers),
            },
        )
        return result

    async def _manifest(
        self, height: int, app_hash: bytes, sources: list[bytes]
    ) -> tuple[Manifest, dict[bytes, bytes]]:
        for peer in sources:
            if self._peer(peer).bad:
                continue
            try:
                answer = await self._ask(peer, StateSyncRequest(StateSyncRequest.MANIFEST, height))
                manifest = Manifest.decode(answer)
                upper = manifest.verify(self._chain_id, height, app_hash)
            except _Unanswered:
                continue
            except SnapshotError as error:
                self._mark_bad(peer, f"manifest {height}: {error}")
                continue
            return manifest, upper
        raise StateSyncError(f"no peer gave a manifest of snapshot {height} that verifies")

    async def _fetch_chunks(self, manifest: Manifest, sources: list[bytes]) -> None:
        queue: deque[int] = deque(chunk.prefix for chunk in manifest.chunks)
        pending = {chunk.prefix for chunk in manifest.chunks}
        self.progress.chunks_total = len(pending)
        wakeup = trio.Event()
        failure: list[str] = []
        # This node's own disk failed: raised as it is once the fetches are cancelled.
        local: list[StateSyncWriteError | StoreDamagedError] = []

        async def fetch(prefix: int, peer: _Peer) -> None:
            nonlocal wakeup
            try:
                data = await self._ask(
                    peer.key, StateSyncRequest(StateSyncRequest.CHUNK, manifest.height, prefix)
                )
                chunk = await trio.to_thread.run_sync(verify_chunk, manifest, prefix, data)
            except _Unanswered:
                peer.failures += 1
                if peer.failures >= PEER_FAILURES_MAX:
                    self._mark_bad(peer.key, f"{peer.failures} requests in a row failed")
                queue.append(prefix)
            except SnapshotError as error:
                self._mark_bad(peer.key, f"chunk {prefix}: {error}")
                self.progress.refetched += 1
                queue.append(prefix)
            else:
                peer.failures = 0
                try:
                    with _local_write(f"chunk {prefix} of snapshot {manifest.height}"):
                        await trio.to_thread.run_sync(
                            self._store.install_state_chunk, chunk.items, chunk.records
                        )
                        self._snapshots.add_received_chunk(manifest.height, prefix, data)
                except (StateSyncWriteError, StoreDamagedError) as error:
                    local.append(error)
                except StoreError as error:  # the store's own state: the next attempt starts over
                    failure.append(f"cannot install chunk {prefix}: {error}")
                else:
                    pending.discard(prefix)
                    self.progress.chunks_done += 1
                    self.progress.entries += len(chunk.items)
                    self.progress.size_bytes += len(data)
                    self.progress.received[prefix] = (len(chunk.items), len(data))
            finally:
                peer.in_flight -= 1
                wakeup.set()
                wakeup = trio.Event()

        async with trio.open_nursery() as nursery:
            in_flight = 0
            while pending and not failure and not local:
                usable = [
                    self._peer(key)
                    for key in sources
                    if not self._peer(key).bad
                    and self._peer(key).in_flight < self._limits.chunk_requests_per_peer_max
                ]
                if not any(not self._peer(key).bad for key in sources):
                    failure.append(
                        f"every peer offering snapshot {manifest.height} failed or lied "
                        f"({self.progress.chunks_done} of {len(manifest.chunks)} chunks in)"
                    )
                    nursery.cancel_scope.cancel()
                    break
                in_flight = sum(self._peer(key).in_flight for key in sources)
                if queue and usable and in_flight < self._limits.chunk_requests_max:
                    peer = min(usable, key=lambda p: (p.in_flight, p.failures))
                    peer.in_flight += 1
                    nursery.start_soon(fetch, queue.popleft(), peer)
                    continue
                await wakeup.wait()
            nursery.cancel_scope.cancel()
        if local:
            raise local[0]
        if failure:
            raise StateSyncError(failure[0])

    # -- plumbing -------------------------------------------------------------------------

    def _peer(self, key: bytes) -> _Peer:
        peer = self._known.get(key)
        if peer is None:
            peer = self._known[key] = _Peer(key)
        return peer

    def _mark_bad(self, key: bytes, reason: str) -> None:
        peer = self._peer(key)
        if not peer.bad:
            peer.bad = True
            self.progress.bad.append(key)
            log.warning("statesync_peer_refused", extra={"peer": key.hex()[:16], "reason": reason})

    async def _ask(self, peer: bytes, request: StateSyncRequest) -> bytes:
        try:
            with trio.fail_after(self._limits.request_timeout_seconds):
                return await self._request(peer, request.encode())
        except trio.TooSlowError:
            raise _Unanswered(f"peer {peer.hex()[:16]} did not answer in time") from None
        except SnapshotError:
            raise
        except Exception as error:  # transport failures of any kind: try elsewhere
            raise _Unanswered(f"peer {peer.hex()[:16]}: {error}") from None


class _Unanswered(Exception):
    """A request got no usable answer (timeout, disconnect, busy, error status)."""


@contextlib.contextmanager
def _local_write(what: str) -> Iterator[None]:
    """This node's own writes of a sync (the store's, the snapshot directory's): a write the
    disk refuses is ``StateSyncWriteError`` naming ``what``."""
    try:
        yield
    except (StoreWriteError, OSError) as error:
        raise StateSyncWriteError(what, error) from error
