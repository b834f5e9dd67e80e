"""Replaying a node's stored blocks through the real apps, in memory, for offline tools.

A ``Replay`` is the node's execution path without the node: the apps genesis enables, loaded
through their entry points exactly as ``node.runtime`` loads them, run by the pure
``apps.host.AppHost`` over an in-memory ``apps.state.MemoryBackend``. It starts from the
genesis state and executes one block at a time with the block context a node derives from the
header (height, timestamp, the proposer's public key, the chain id), so an honest store and its
replay agree on every app hash, receipt and state entry.

Blocks are fed one by one; only the state is held in memory (never the chain). ``last_written``
remembers, per state key, the last height whose write set touched it, so a tool that finds a
differing key can say which block produced it. The replayed state also decides the validator
set of every height (``validators_at``), exactly as a node's does: the tools trust genesis and
the blocks, never a set the store claims.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from apps.base import App, BlockContext
from apps.host import AppHost, BlockResult
from apps.merkle import TreeUpdate
from apps.state import MemoryBackend, WriteSet
from consensus.types import Block, ValidatorSet
from node.apploader import load_apps
from node.genesis import Genesis, load_genesis
from node.home import DATA_DIR, GENESIS_FILE

__all__ = ["Replay", "ReplayError", "load_home_genesis"]


class ReplayError(Exception):
    """A block cannot be executed (e.g. its proposer index names no validator)."""


def load_home_genesis(home: Path) -> tuple[Genesis, Path]:
    """The genesis of the node home ``home`` and its data directory (raises
    ``node.genesis.GenesisError`` for a missing or invalid ``genesis.json``)."""
    return load_genesis(home / GENESIS_FILE), home / DATA_DIR


class Replay:
    """The state of a chain replayed from genesis; ``execute`` applies the next block.

    ``apps`` defaults to the apps genesis enables, loaded as a node loads them (raises
    ``node.apploader.AppLoadError``); the genesis app state is applied on construction (raises
    ``apps.host.GenesisError``)."""

    def __init__(
        self,
        genesis: Genesis,
        apps: Sequence[App] | None = None,
        *,
        base: tuple[int, Sequence[tuple[bytes, bytes]]] | None = None,
    ) -> None:
        """``base``: start from the state after that height (a state-synced store's snapshot
        entries) instead of from genesis."""
        self.genesis = genesis
        self.backend = MemoryBackend()
        loaded = list(apps) if apps is not None else load_apps(genesis.apps)
        self.last_written: dict[bytes, int] = {}
        # What each block's writes replaced (None: absent), as a store's undo records say, for
        # the heights from ``undo_kept_from`` on (a store keeps the last block's, and every
        # block's since the height its tree waits at).
        self.undo_kept_from: int | None = None
        self.undo_states: dict[int, dict[bytes, bytes | None]] = {}
        if base is None:
            self.host = AppHost(loaded, self.backend, chain_id=genesis.chain_id)
            writes, app_hash = self.host.init_genesis(
                genesis.app_state, validators=genesis.validator_set
            )
            self._apply(0, writes)
            self.host.committed(0, app_hash)
        else:
            height, items = base
            self.backend = MemoryBackend(items)
            self.host = AppHost(
                loaded,
                self.backend,
                chain_id=genesis.chain_id,
                height=height,
                app_hash=self.backend.app_hash,
            )

    @property
    def height(self) -> int:
        """The height of the replayed state (0: genesis)."""
        return self.host.height

    @property
    def app_hash(self) -> bytes:
        """The app hash of the replayed state."""
        return self.host.app_hash

    def validators_at(self, height: int) -> ValidatorSet:
        """The validator set of ``height`` as the replayed state decides it (final for
        ``height <= self.height + 2``; the genesis set on a chain without a registry)."""
        return self.host.validator_set(height) or self.genesis.validator_set

    def execute(self, block: Block) -> BlockResult:
        """Execute ``block`` (the next height) and apply its write set; return the result."""
        assert block.height == self.height + 1, "blocks are replayed in order"
        proposer = block.header.proposer
        validators = self.validators_at(block.height)
        if proposer >= validators.size:
            raise ReplayError(f"proposer index {proposer} names no validator")
        context = BlockContext(
            height=block.height,
            time_ms=block.header.timestamp_ms,
            proposer=validators.public_key(proposer),
            chain_id=self.genesis.chain_id,
        )
        result = self.host.execute_block(context, block.transactions)
        self._apply(block.height, result.writes, result.tree)
        self.host.committed(block.height, result.app_hash, result.writes)
        return result

    def _apply(self, height: int, writes: WriteSet, tree: TreeUpdate | None = None) -> None:
        backend = self.backend
        if self.undo_kept_from is not None and height >= self.undo_kept_from:
            self.undo_states[height] = {key: backend.get(key) for key, _ in writes}
        backend.apply(writes, tree)
        for key, _ in writes:
            self.last_written[key] = height
