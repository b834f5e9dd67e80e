"""State sync of a large state (``suanpan bench statesync --keys 1000000``).

The run builds a source store whose genesis state holds ``keys`` entries (``value_bytes`` each,
under their own namespace) with its Merkle tree, commits two certified blocks, exports the
snapshot of height 1 (as a node does after its snapshot height) and then syncs an empty store
of the same chain from it through the real machinery: two ``network.Network`` instances on
loopback (encrypted links, the request/response channel), a ``SnapshotServer`` with its per-peer
budget on one side, ``node.statesync.StateSync`` on the other: certificates checked against
the validator set, every chunk verified and written to LMDB, the tree completed and the tip
recorded. Both sides share this one process (and its GIL), so the sync time includes serving.

Reported: the time to build the source state (not part of a sync), the snapshot export time and
its size, and the sync time with its rate, as wall time and as this process's CPU time (both
sides; on a shared machine the CPU figure is the steadier one).
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import trio

from apps.host import BlockResult
from apps.merkle import EMPTY_ROOT, build, leaf_of, update
from consensus.codec import encode
from consensus.crypto import PrivateKey, hash_bytes
from consensus.types import Block, CommitCertificate, Phase, Validator, ValidatorSet, Vote
from network.network import Network, NetworkConfig, PeerAddress
from node.jsonvalue import JsonType
from node.snapshots import SnapshotDirectory, SnapshotServer, export_snapshot
from node.statesync import StateSync, StateSyncLimits
from node.store import Store

__all__ = ["StateSyncBenchReport", "run_statesync_bench"]

_CHAIN_ID: Final = "bench-statesync"
_GENESIS_HASH: Final = hash_bytes(b"bench-statesync genesis")
_VALIDATOR_KEYS: Final = tuple(PrivateKey(bytes([index + 1]) * 32) for index in range(4))
_VALIDATORS: Final = ValidatorSet(
    tuple(Validator(f"v{index}", key.public_key) for index, key in enumerate(_VALIDATOR_KEYS))
)
_NODE_KEYS: Final = (PrivateKey(b"\x51" * 32), PrivateKey(b"\x52" * 32))
_CONNECT_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class StateSyncBenchReport:
    """Figures of one run (seconds are wall time)."""

    keys: int
    value_bytes: int
    source_build_s: float
    snapshot_export_s: float
    snapshot_bytes: int
    snapshot_chunks: int
    sync_s: float
    sync_cpu_s: float
    snapshot_export_cpu_s: float
    keys_per_s: float
    megabytes_per_s: float
    store_bytes: int

    def to_json(self) -> dict[str, JsonType]:
        """As one JSON object."""
        return dict(asdict(self))


def _certify(block: Block) -> CommitCertificate:
    votes = [
        Vote.create(
            key,
            _CHAIN_ID,
            phase=Phase.COMMIT,
            height=block.height,
            view=0,
            block_hash=block.hash,
            validator=index,
        )
        for index, key in enumerate(_VALIDATOR_KEYS[: _VALIDATORS.quorum])
    ]
    return CommitCertificate.from_votes(votes)


def _commit_empty_block(store: Store) -> None:
    height = store.height + 1
    block = Block.build(
        chain_id=_CHAIN_ID,
        height=height,
        view=0,
        parent_hash=store.last_block_hash,
        app_hash=store.app_hash,
        next_validators_hash=_VALIDATORS.hash(),
        proposer=0,
        timestamp_ms=height,
        transactions=(),
    )
    writes = ((b"_host\x00last_block", encode((height, height))),)
    tree = update(store.state_backend(), writes)
    store.commit_block(block, _certify(block), BlockResult(height, (), writes, tree.root, tree))


def run_statesync_bench(
    *, keys: int = 1_000_000, value_bytes: int = 100, chunk_requests: int = 4
) -> StateSyncBenchReport:
    """Run the benchmark (see the module docstring)."""
    rng = random.Random(11)
    with tempfile.TemporaryDirectory(prefix="suanpan-bench-statesync-") as directory:
        root = Path(directory)
        started = time.perf_counter()
        items = sorted(
            (b"bench\x00%012d" % index, rng.randbytes(value_bytes)) for index in range(keys)
        )
        tree = build(leaf_of(key, value) for key, value in items)
        source = Store(root / "source", chain_id=_CHAIN_ID, genesis_hash=_GENESIS_HASH, sync=False)
        source.init_genesis(tuple(items), tree.root)
        del items
        _commit_empty_block(source)
        source_build_s = time.perf_counter() - started

        snapshots = SnapshotDirectory(root / "source-snapshots", _CHAIN_ID)
        started = time.perf_counter()
        cpu_started = time.process_time()
        with source.open_state_reader() as reader:
            manifest = export_snapshot(reader, snapshots.path, _CHAIN_ID)
        export_s = time.perf_counter() - started
        export_cpu_s = time.process_time() - cpu_started
        _commit_empty_block(source)

        target = Store(root / "target", chain_id=_CHAIN_ID, genesis_hash=_GENESIS_HASH)
        target.init_genesis((), EMPTY_ROOT)
        server = SnapshotServer(snapshots, source, serve_bytes_per_second=1 << 40)
        cpu_started = time.process_time()
        sync_s = trio.run(_sync, source, target, server, root, chunk_requests)
        sync_cpu_s = time.process_time() - cpu_started
        assert target.app_hash == source.app_hash_at(1), "the synced state is the source's"
        store_bytes = target.statistics()["used_bytes"]
        target.close()
        source.close()
    return StateSyncBenchReport(
        keys=keys,
        value_bytes=value_bytes,
        source_build_s=round(source_build_s, 2),
        snapshot_export_s=round(export_s, 2),
        snapshot_bytes=manifest.size_bytes,
        snapshot_chunks=len(manifest.chunks),
        sync_s=round(sync_s, 2),
        sync_cpu_s=round(sync_cpu_s, 2),
        snapshot_export_cpu_s=round(export_cpu_s, 2),
        keys_per_s=round(keys / sync_s),
        megabytes_per_s=round(manifest.size_bytes / sync_s / 1e6, 1),
        store_bytes=store_bytes,
    )


async def _sync(
    source: Store, target: Store, server: SnapshotServer, root: Path, chunk_requests: int
) -> float:
    serving = Network(
        NetworkConfig(
            chain_id=_CHAIN_ID,
            genesis_hash=_GENESIS_HASH,
            identity=_NODE_KEYS[0],
            allowlist=frozenset({_NODE_KEYS[1].public_key}),
        ),
        request_handler=server.handle,
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serving.run)
        joining = Network(
            NetworkConfig(
                chain_id=_CHAIN_ID,
                genesis_hash=_GENESIS_HASH,
                identity=_NODE_KEYS[1],
                persistent_peers=(PeerAddress(_NODE_KEYS[0].public_key, "127.0.0.1", port),),
            )
        )
        await nursery.start(joining.run)
        with trio.fail_after(_CONNECT_TIMEOUT_S):
            await joining.wait_peers_connected([_NODE_KEYS[0].public_key])
        sync = StateSync(
            request=joining.request,
            peers=lambda: [peer.public_key for peer in joining.peers()],
            store=target,
            snapshots=SnapshotDirectory(root / "target-snapshots", _CHAIN_ID),
            validators=_VALIDATORS,
            chain_id=_CHAIN_ID,
            limits=StateSyncLimits(peers_min=1, chunk_requests_max=chunk_requests),
        )
        started = time.perf_counter()
        await sync.run()
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return elapsed
