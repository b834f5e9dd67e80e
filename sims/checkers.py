"""Invariant checkers, run continuously as the simulation commits blocks.

Theory of operation
-------------------
The checker sees every commit of every *honest* node (byzantine nodes, including both copies
of a twin, are not trusted to follow any rule) and every vote an honest node signs, and keeps
one canonical chain: the first honest commit at each height. It checks, at the moment each
event happens:

* **agreement**: no two honest nodes commit different blocks at one height;
* **validity**: every committed block carries a certificate that verifies against the
  validator set (a quorum of distinct, correctly signed commits for that exact block), its
  body matches its header, and every transaction in it decodes with a valid signature;
* **chain**: each node commits heights in order, each block's ``parent_hash`` is the hash of
  the node's previous block (the genesis hash at height 1) and its ``app_hash`` is the node's
  own state after the previous block;
* **app state**: the application hash after each height is identical on every honest node;
* **durability**: a node restarted from its disk comes back with every block it committed;
  and no acknowledged transaction is lost (``check_acknowledged`` at the end);
* **honest signatures**: an honest validator never signs two different votes for the same
  (phase, height, view), which is what persisting votes before sending them guarantees.

Liveness is checked by the simulation itself (it needs the schedule); it reports through
``report``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from apps.transaction import Transaction, TransactionError
from consensus.types import (
    Block,
    CertificateError,
    CommitCertificate,
    ValidatorSet,
    verify_certificate,
)

__all__ = ["CHECKS", "InvariantChecker", "Violation"]

CHECKS = (
    "agreement",
    "validity",
    "chain",
    "app_state",
    "durability",
    "acknowledged",
    "honest_signatures",
    "liveness",
)


_KINDS = ("proposal", "prepare vote", "commit vote")


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant: which check, when, on which node, and what was seen."""

    check: str
    time_ms: int
    node: int | None
    detail: str

    def describe(self) -> dict[str, object]:
        """A JSON-friendly view."""
        return {
            "check": self.check,
            "time_ms": self.time_ms,
            "node": self.node,
            "detail": self.detail,
        }


@dataclass(slots=True)
class _NodeChain:
    height: int
    last_hash: bytes
    app_hash: bytes
    blocks: dict[int, bytes]


class InvariantChecker:
    """Collects violations; ``violations`` is empty while every invariant holds."""

    # One violation of a kind per (check, node, height) is enough to reproduce it; cap the
    # list so a broken run cannot flood the report.
    VIOLATIONS_MAX = 50

    def __init__(
        self,
        *,
        validators: ValidatorSet,
        chain_id: str,
        genesis_hash: bytes,
        genesis_app_hash: bytes,
    ) -> None:
        self._validators = validators
        self._chain_id = chain_id
        self._genesis_hash = genesis_hash
        self._genesis_app_hash = genesis_app_hash
        self._canonical: dict[int, tuple[bytes, bytes]] = {}  # height -> (block hash, app hash)
        self._chains: dict[int, _NodeChain] = {}
        self._signed: dict[tuple[int, int, int, int], bytes] = {}
        self._acknowledged: dict[bytes, int] = {}  # tx hash -> height
        self.violations: list[Violation] = []
        self.checks_run = 0
        self.commits_seen = 0

    def report(self, check: str, time_ms: int, node: int | None, detail: str) -> None:
        """Record a violation (used by the simulation for liveness)."""
        assert check in CHECKS, check
        if len(self.violations) < self.VIOLATIONS_MAX:
            self.violations.append(Violation(check, time_ms, node, detail))

    def _chain(self, node: int) -> _NodeChain:
        chain = self._chains.get(node)
        if chain is None:
            chain = _NodeChain(0, self._genesis_hash, self._genesis_app_hash, {})
            self._chains[node] = chain
        return chain

    def height_of(self, node: int) -> int:
        """The last height ``node`` was seen committing."""
        return self._chain(node).height

    @property
    def canonical_height(self) -> int:
        """The highest height any honest node committed."""
        return max(self._canonical, default=0)

    def canonical_hash(self, height: int) -> bytes | None:
        """The block hash honest nodes committed at ``height``."""
        entry = self._canonical.get(height)
        return None if entry is None else entry[0]

    def on_commit(
        self,
        time_ms: int,
        node: int,
        block: Block,
        certificate: CommitCertificate,
        app_hash_after: bytes,
    ) -> None:
        """An honest node committed ``block`` and its state is now ``app_hash_after``."""
        self.commits_seen += 1
        self.checks_run += 5
        height = block.height
        chain = self._chain(node)
        where = f"height {height}"
        # validity
        try:
            verify_certificate(
                certificate, self._validators, self._chain_id, block_hash=block.hash, height=height
            )
        except CertificateError as error:
            self.report("validity", time_ms, node, f"{where}: invalid certificate: {error}")
        if not block.body_matches_header():
            self.report("validity", time_ms, node, f"{where}: body does not match header")
        if block.header.chain_id != self._chain_id:
            self.report("validity", time_ms, node, f"{where}: block for another chain")
        for index, encoded in enumerate(block.transactions):
            try:
                Transaction.decode(encoded, chain_id=self._chain_id)
            except TransactionError as error:
                self.report(
                    "validity", time_ms, node, f"{where}: transaction {index} invalid: {error}"
                )
        # chain integrity, against this node's own history
        if height != chain.height + 1:
            self.report(
                "chain", time_ms, node, f"committed height {height} after height {chain.height}"
            )
        elif block.header.parent_hash != chain.last_hash:
            self.report("chain", time_ms, node, f"{where}: parent_hash is not the previous block")
        elif block.header.app_hash != chain.app_hash:
            self.report(
                "chain", time_ms, node, f"{where}: header app_hash differs from the node's state"
            )
        # agreement and identical state, against the canonical chain
        canonical = self._canonical.get(height)
        if canonical is None:
            self._canonical[height] = (block.hash, app_hash_after)
        else:
            if canonical[0] != block.hash:
                self.report(
                    "agreement",
                    time_ms,
                    node,
                    f"{where}: committed {block.hash.hex()[:16]}, "
                    f"another honest node committed {canonical[0].hex()[:16]}",
                )
            elif canonical[1] != app_hash_after:
                self.report(
                    "app_state",
                    time_ms,
                    node,
                    f"{where}: app hash {app_hash_after.hex()[:16]}, "
                    f"another honest node has {canonical[1].hex()[:16]}",
                )
        chain.height = max(chain.height, height)
        chain.last_hash = block.hash
        chain.app_hash = app_hash_after
        chain.blocks[height] = block.hash

    def on_vote_signed(
        self, time_ms: int, validator: int, phase: int, height: int, view: int, block_hash: bytes
    ) -> None:
        """An honest validator put its signature on a vote (seen on the wire)."""
        self.checks_run += 1
        key = (validator, phase, height, view)
        previous = self._signed.setdefault(key, block_hash)
        if previous != block_hash:
            self.report(
                "honest_signatures",
                time_ms,
                validator,
                f"honest validator {validator} signed two {_KINDS[phase]}s for different blocks at "
                f"height {height} view {view}: {previous.hex()[:16]} and {block_hash.hex()[:16]}",
            )

    def on_restart(self, time_ms: int, node: int, recovered_height: int) -> None:
        """``node`` restarted from its disk at ``recovered_height``."""
        self.checks_run += 1
        chain = self._chain(node)
        if recovered_height < chain.height:
            self.report(
                "durability",
                time_ms,
                node,
                f"restarted at height {recovered_height} after committing {chain.height}",
            )

    def on_acknowledged(self, transaction_hash: bytes, height: int) -> None:
        """The client was told ``transaction_hash`` committed at ``height``."""
        self._acknowledged.setdefault(transaction_hash, height)

    @property
    def acknowledged(self) -> int:
        """How many distinct transactions were acknowledged."""
        return len(self._acknowledged)

    def check_acknowledged(
        self, time_ms: int, node: int, committed: Sequence[tuple[int, frozenset[bytes]]]
    ) -> None:
        """Every acknowledged transaction at a height ``node`` has durably committed is in
        ``node``'s block at that height. ``committed`` is (height, tx hashes) from its disk."""
        self.checks_run += 1
        by_height = dict(committed)
        for transaction_hash, height in sorted(self._acknowledged.items(), key=lambda i: i[1]):
            if height not in by_height:
                if height <= self._chain(node).height:
                    self.report(
                        "acknowledged",
                        time_ms,
                        node,
                        f"height {height} with acknowledged tx {transaction_hash.hex()[:16]} "
                        "is missing from the node's disk",
                    )
                continue
            if transaction_hash not in by_height[height]:
                self.report(
                    "acknowledged",
                    time_ms,
                    node,
                    f"acknowledged tx {transaction_hash.hex()[:16]} is not in block {height}",
                )
