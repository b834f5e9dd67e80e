"""A node-shaped chain over the real LMDB store and host (used by store and crash tests).

``NodeChain.commit`` is the commit path the node runs: build the block on the stored chain,
execute it with the host, certify it, persist everything in one store commit, then tell the
host the state moved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from apps.base import App, BlockContext
from apps.host import AppHost, BlockResult
from apps.membership import MembershipApp
from consensus.codec import Value
from consensus.crypto import PrivateKey, hash_bytes
from consensus.types import Block, CommitCertificate, Phase, Validator, ValidatorSet, Vote
from node.store import (
    MAP_SIZE_INITIAL_BYTES,
    TREE_FLUSH_BLOCKS,
    TREE_PENDING_RECORDS_MAX,
    Store,
)
from tests.host_fixtures import CHAIN, genesis_config

VALIDATOR_KEYS = tuple(PrivateKey(bytes([index + 1]) * 32) for index in range(4))
VALIDATORS = ValidatorSet(
    tuple(Validator(f"v{index}", key.public_key) for index, key in enumerate(VALIDATOR_KEYS))
)
GENESIS_HASH = hash_bytes(b"suanpan-test genesis")
GENESIS_TIME_MS = 1_700_000_000_000


def stored_block(store: Store, height: int) -> Block:
    """The committed block at ``height`` (the test fails when the store has none)."""
    block = store.block(height)
    assert block is not None, f"no block {height} in the store"
    return block


def certify(block: Block, view: int = 0) -> CommitCertificate:
    """A commit certificate signed by a quorum (the first three validators)."""
    votes = [
        Vote.create(
            key,
            CHAIN,
            phase=Phase.COMMIT,
            height=block.height,
            view=view,
            block_hash=block.hash,
            validator=index,
        )
        for index, key in enumerate(VALIDATOR_KEYS[: VALIDATORS.quorum])
    ]
    return CommitCertificate.from_votes(votes)


def open_store(
    path: Path,
    *,
    map_size_bytes: int = MAP_SIZE_INITIAL_BYTES,
    sync: bool = True,
    tree_flush_blocks: int = TREE_FLUSH_BLOCKS,
    tree_pending_records_max: int = TREE_PENDING_RECORDS_MAX,
) -> Store:
    """The test chain's store at ``path``."""
    return Store(
        path,
        chain_id=CHAIN,
        genesis_hash=GENESIS_HASH,
        map_size_bytes=map_size_bytes,
        sync=sync,
        tree_flush_blocks=tree_flush_blocks,
        tree_pending_records_max=tree_pending_records_max,
    )


class NodeChain:
    """Store + host wired the way a node wires them."""

    def __init__(
        self,
        path: Path,
        extra_apps: Sequence[App] = (),
        app_genesis: Mapping[str, Value] | None = None,
        *,
        map_size_bytes: int = MAP_SIZE_INITIAL_BYTES,
        sync: bool = True,
        tree_flush_blocks: int = TREE_FLUSH_BLOCKS,
        tree_pending_records_max: int = TREE_PENDING_RECORDS_MAX,
    ) -> None:
        self.store = open_store(
            path,
            map_size_bytes=map_size_bytes,
            sync=sync,
            tree_flush_blocks=tree_flush_blocks,
            tree_pending_records_max=tree_pending_records_max,
        )
        apps = [MembershipApp(), *extra_apps]
        if not self.store.initialised:
            genesis_host = AppHost(apps, self.store.state_backend(), chain_id=CHAIN)
            genesis = {"membership": genesis_config()} if app_genesis is None else app_genesis
            writes, app_hash = genesis_host.init_genesis(genesis)
            self.store.init_genesis(writes, app_hash)
        self.host = AppHost(
            apps,
            self.store.state_backend(),
            chain_id=CHAIN,
            height=self.store.height,
            app_hash=self.store.app_hash,
        )

    def commit(self, transactions: Sequence[bytes], *, view: int = 0) -> BlockResult:
        """Build, execute, certify and persist the next block."""
        block, certificate, result = self.execute(transactions, view=view)
        self.store.commit_block(block, certificate, result)
        self.host.committed(block.height, result.app_hash)
        return result

    def execute(
        self, transactions: Sequence[bytes], *, view: int = 0
    ) -> tuple[Block, CommitCertificate, BlockResult]:
        """Build, execute and certify the next block (``commit`` persists it)."""
        height = self.store.height + 1
        time_ms = GENESIS_TIME_MS + 1000 * height
        block = Block.build(
            chain_id=CHAIN,
            height=height,
            view=view,
            parent_hash=self.store.last_block_hash,
            app_hash=self.store.app_hash,
            next_validators_hash=VALIDATORS.hash(),
            proposer=view % VALIDATORS.size,
            timestamp_ms=time_ms,
            transactions=transactions,
        )
        context = BlockContext(
            height=height,
            time_ms=time_ms,
            proposer=VALIDATORS.public_key(block.header.proposer),
            chain_id=CHAIN,
        )
        result = self.host.execute_block(context, block.transactions)
        return block, certify(block, view), result

    def close(self) -> None:
        self.store.close()
