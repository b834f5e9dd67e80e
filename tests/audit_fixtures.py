"""Real node homes for the audit and state-diff tests.

``build_home`` writes a ``genesis.json`` (4 validators, the demo consortium's membership,
payments, scf and assets apps) and commits a chain into ``<home>/data`` exactly as a node does:
the apps loaded through their entry points, the real host over the LMDB store, signed demo
transactions, commit certificates signed by a quorum of validator keys, one store commit per
block. It also repeats one transaction in a later block and stores one real equivocation.
``corrupt`` opens the LMDB environment directly to change one record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lmdb

from apps.base import BlockContext
from apps.demo import DEMO_EPOCH_MS, DemoTraffic, demo_consortium
from apps.host import AppHost, BlockResult
from apps.state import WriteSet
from consensus.crypto import PrivateKey, hash_bytes
from consensus.evidence import Evidence, SignedStatement
from consensus.types import Block, CommitCertificate, Phase, Vote
from node.apploader import load_apps
from node.audit.storeview import DATABASES
from node.genesis import ConsensusParams, Genesis, GenesisValidator, load_genesis, save_genesis
from node.store import Store

VALIDATOR_KEYS = tuple(PrivateKey(bytes([index + 1]) * 32) for index in range(4))
NODE_KEYS = tuple(PrivateKey(bytes([index + 101]) * 32) for index in range(4))
BLOCK_INTERVAL_MS = 1000
HEIGHTS = 12
TRANSACTIONS_PER_BLOCK = 4
# Block 9 repeats the first transaction of block 3 (rejected as a stale nonce; the index keeps
# block 3); validator 3 equivocates at height 4.
REPEAT_FROM = (3, 0)
REPEAT_AT = 9
EQUIVOCATION_HEIGHT = 4
EQUIVOCATOR = 3


def make_genesis(
    validator_keys: Sequence[PrivateKey] = VALIDATOR_KEYS, *, seed: int = 1
) -> Genesis:
    """The test chain's genesis: the demo consortium of ``seed`` on four validators."""
    consortium = demo_consortium(seed)
    return Genesis(
        chain_id=consortium.chain_id,
        genesis_time_ms=DEMO_EPOCH_MS,
        consensus_params=ConsensusParams(),
        validators=tuple(
            GenesisValidator(f"v{index}", key.public_key, NODE_KEYS[index].public_key)
            for index, key in enumerate(validator_keys)
        ),
        apps=("assets", "membership", "payments", "scf"),
        app_state=consortium.app_genesis,
    )


def signers_of(height: int) -> tuple[int, ...]:
    """A quorum (3 of 4) that changes with the height: everyone but validator height % 4."""
    return tuple(index for index in range(4) if index != height % 4)


def certify(chain_id: str, block: Block, signers: Sequence[int]) -> CommitCertificate:
    """A commit certificate signed by the validators ``signers``."""
    votes = [
        Vote.create(
            VALIDATOR_KEYS[index],
            chain_id,
            phase=Phase.COMMIT,
            height=block.height,
            view=block.header.view,
            block_hash=block.hash,
            validator=index,
        )
        for index in signers
    ]
    return CommitCertificate.from_votes(votes)


class Committer:
    """A node's commit path over the home's store (genesis state written on first open)."""

    def __init__(self, home: Path) -> None:
        self.genesis = load_genesis(home / "genesis.json")
        self.chain_id = self.genesis.chain_id
        self.validators = self.genesis.validator_set
        self.store = Store(
            home / "data", chain_id=self.chain_id, genesis_hash=self.genesis.hash, sync=False
        )
        apps = load_apps(self.genesis.apps)
        if not self.store.initialised:
            host = AppHost(apps, self.store.state_backend(), chain_id=self.chain_id)
            writes, app_hash = host.init_genesis(self.genesis.app_state, validators=self.validators)
            self.store.init_genesis(writes, app_hash)
        self.host = AppHost(
            apps,
            self.store.state_backend(),
            chain_id=self.chain_id,
            height=self.store.height,
            app_hash=self.store.app_hash,
        )

    def time_of(self, height: int) -> int:
        """The timestamp block ``height`` carries."""
        return self.genesis.genesis_time_ms + BLOCK_INTERVAL_MS * height

    def commit(
        self, transactions: Sequence[bytes], *, skew_ms: int = 0
    ) -> tuple[Block, BlockResult]:
        """Build, execute, certify and persist the next block (``skew_ms`` later than usual)."""
        height = self.store.height + 1
        view = height % 3  # views vary; the proposer is the view's primary
        block = Block.build(
            chain_id=self.chain_id,
            height=height,
            view=view,
            parent_hash=self.store.last_block_hash,
            app_hash=self.store.app_hash,
            next_validators_hash=self.validators.hash(),
            proposer=self.validators.primary(view),
            timestamp_ms=self.time_of(height) + skew_ms,
            transactions=transactions,
        )
        context = BlockContext(
            height,
            block.header.timestamp_ms,
            self.validators.public_key(block.header.proposer),
            self.chain_id,
        )
        result = self.host.execute_block(context, block.transactions)
        self.store.commit_block(block, certify(self.chain_id, block, signers_of(height)), result)
        self.host.committed(height, result.app_hash)
        return block, result

    def close(self) -> None:
        self.store.close()


@dataclass
class BuiltChain:
    """What ``build_home`` committed, for tests to aim their corruption."""

    home: Path
    genesis: Genesis
    blocks: dict[int, Block] = field(default_factory=dict)
    results: dict[int, BlockResult] = field(default_factory=dict)

    @property
    def height(self) -> int:
        return max(self.blocks)

    def writes(self, height: int) -> WriteSet:
        return self.results[height].writes

    def last_write_height(self, key: bytes) -> int:
        """The last height whose write set touched ``key`` (0: genesis only)."""
        return max(
            (h for h, r in self.results.items() if any(k == key for k, _ in r.writes)), default=0
        )


def build_home(home: Path, *, heights: int = HEIGHTS) -> BuiltChain:
    """A node home with ``heights`` committed blocks of demo traffic (see the module doc)."""
    genesis = make_genesis()
    save_genesis(home / "genesis.json", genesis)
    (home / "data").mkdir(parents=True, exist_ok=True)
    committer = Committer(home)
    assert committer.genesis.hash == genesis.hash, "genesis.json must round-trip"
    traffic = DemoTraffic(demo_consortium(1))
    built = BuiltChain(home, committer.genesis)
    try:
        for height in range(1, heights + 1):
            now_ms = committer.time_of(height)
            transactions = [tx.encoded for tx in traffic.batch(TRANSACTIONS_PER_BLOCK, now_ms)]
            if height == REPEAT_AT:
                repeated_height, repeated_index = REPEAT_FROM
                transactions.append(built.blocks[repeated_height].transactions[repeated_index])
            block, result = committer.commit(transactions)
            built.blocks[height] = block
            built.results[height] = result
            if height == EQUIVOCATION_HEIGHT:
                committer.store.add_evidence(
                    height, equivocation(committer.chain_id, block).encode()
                )
    finally:
        committer.close()
    return built


def extend_home(home: Path, blocks: int, *, skew_ms: int = 0) -> None:
    """Commit ``blocks`` more empty blocks (timestamps ``skew_ms`` late) to the home's store."""
    committer = Committer(home)
    try:
        for _ in range(blocks):
            committer.commit([], skew_ms=skew_ms)
    finally:
        committer.close()


def equivocation(chain_id: str, block: Block) -> Evidence:
    """Validator ``EQUIVOCATOR`` signed commits for ``block`` and for another hash."""
    statements = [
        SignedStatement.of_vote(
            Vote.create(
                VALIDATOR_KEYS[EQUIVOCATOR],
                chain_id,
                phase=Phase.COMMIT,
                height=block.height,
                view=block.header.view,
                block_hash=block_hash,
                validator=EQUIVOCATOR,
            )
        )
        for block_hash in (block.hash, hash_bytes(b"another block"))
    ]
    return Evidence.of(*statements)


def height_key(height: int) -> bytes:
    return height.to_bytes(8, "big")


def corrupt(
    home: Path, db: str, change: Callable[[lmdb.Transaction, lmdb._Database], object]
) -> None:
    """Open the home's LMDB environment directly and run ``change`` on database ``db``."""
    env = lmdb.open(str(home / "data"), max_dbs=len(DATABASES))
    try:
        handle = env.open_db(db.encode(), create=False)
        with env.begin(write=True) as txn:
            change(txn, handle)
    finally:
        env.close()


def flip_byte(data: bytes, offset: int) -> bytes:
    """``data`` with the byte at ``offset`` inverted."""
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]
