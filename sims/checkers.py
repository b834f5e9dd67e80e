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
  (phase, height, view), which is what persisting votes before sending them guarantees, and
  no honest validator is reported for equivocation;
* **honest rejected**: an honest replica never drops a message from another honest replica as
  *invalid* (bad signature, invalid proposal, view change, new view or certificate, state
  diverged, ...). Drops for timing (stale, duplicate, too far ahead, buffer full, unexpected)
  are normal and not counted. An honest message that another honest replica rejects is a view
  lost for no byzantine reason, or worse: a byzantine part smuggled into an honest message;
* **certificate possibility**: at each height, at most one block could be certified by the
  honest commit votes cast so far plus the signatures of f byzantine validators (f of the
  validator set, whoever is actually byzantine). The safety argument of the replica promises
  this: once q - f honest validators commit-voted d in some view, no honest validator is ever
  prepared on another block at that height. Two such blocks are a fork one step away, found
  before any honest replica has committed it;
* **sync hint**: the app hash a replica hands its driver with a synced block's commit (the one
  the certified block after it commits to, ``Commit.next_app_hash``) is the state an honest
  node reaches by executing the block. A node takes it as the block's app hash and updates
  its Merkle tree once per group of blocks, so a wrong hint stops it at the group's end;
* **liveness**: after faults stop (``liveness_start``), a new height commits within a bounded
  number of views (``liveness_progress``) and every honest node reaches it
  (``liveness_catch_up``).

The checker is fed by the simulation, but it needs nothing from it: each check is a method
taking a plain history (``tests/test_sim_checkers.py`` feeds each one a violating history).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from apps.transaction import Transaction, TransactionError
from consensus.replica import DropReason
from consensus.types import (
    Block,
    CertificateError,
    CommitCertificate,
    ValidatorSet,
    verify_certificate,
)

__all__ = [
    "CHECKS",
    "INVALID_DROPS",
    "TERMINAL_CHECKS",
    "InvariantChecker",
    "Violation",
]

CHECKS: Final = (
    "agreement",
    "validity",
    "chain",
    "app_state",
    "durability",
    "acknowledged",
    "honest_signatures",
    "honest_rejected",
    "certificate_possibility",
    "liveness",
    "sync_hint",
)
# After one of these the honest chains have split or lost blocks: anything checked later is
# noise, so a run stops at the first. Other violations are recorded and the run goes on, so a
# bug that first shows as a bad certificate still gets the chance to show as a fork.
TERMINAL_CHECKS: Final = frozenset({"agreement", "chain", "app_state", "durability"})
# Drops that say "this message is wrong", as opposed to "this message is late, early, repeated
# or unwanted now". An honest replica never sends a message another honest replica must drop
# for one of these reasons.
INVALID_DROPS: Final = frozenset(
    {
        DropReason.MALFORMED,
        DropReason.WRONG_CHAIN,
        DropReason.NOT_VALIDATOR,
        DropReason.BAD_SIGNATURE,
        DropReason.NOT_PRIMARY,
        DropReason.INVALID_PROPOSAL,
        DropReason.INVALID_VIEW_CHANGE,
        DropReason.INVALID_NEW_VIEW,
        DropReason.INVALID_CERTIFICATE,
        DropReason.INVALID_BLOCK,
        DropReason.STATE_DIVERGED,
    }
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


@dataclass(frozen=True, slots=True)
class _LivenessWindow:
    """What was promised when faults stopped: height ``wanted`` commits in a view up to
    ``view_bound`` within ``budget_ms`` of ``started_ms``."""

    started_ms: int
    wanted: int
    start_view: int
    view_bound: int
    budget_ms: int


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
        validators_at: Callable[[int], ValidatorSet] | None = None,
    ) -> None:
        """``validators_at``: the set in force at a height, when the set changes during the
        run (certificates and quorums of height h are judged by the set of h); default: the
        genesis ``validators`` at every height."""
        self._validators = validators
        self._validators_at = validators_at
        self._chain_id = chain_id
        self._genesis_hash = genesis_hash
        self._genesis_app_hash = genesis_app_hash
        self._canonical: dict[int, tuple[bytes, bytes]] = {}  # height -> (block hash, app hash)
        self._chains: dict[int, _NodeChain] = {}
        self._signed: dict[tuple[int, int, int, int], bytes] = {}
        self._acknowledged: dict[bytes, int] = {}  # tx hash -> height
        # Honest commit voters per height, by (view, block hash); and per height the first
        # block those voters plus f byzantine signatures could certify.
        self._commit_voters: dict[int, dict[tuple[int, bytes], set[int]]] = {}
        self._certifiable: dict[int, tuple[int, bytes]] = {}
        self._canonical_view: dict[int, int] = {}  # height -> view of its first honest commit
        self._liveness: _LivenessWindow | None = None
        self.violations: list[Violation] = []
        self.checks_run = 0
        # Commits that came with the replica's hint of the next block's app hash.
        self.sync_hints_checked = 0
        self.commits_seen = 0

    def _set(self, height: int) -> ValidatorSet:
        return self._validators if self._validators_at is None else self._validators_at(height)

    def report(self, check: str, time_ms: int, node: int | None, detail: str) -> None:
        """Record a violation."""
        assert check in CHECKS, check
        if len(self.violations) < self.VIOLATIONS_MAX:
            self.violations.append(Violation(check, time_ms, node, detail))

    @property
    def terminal(self) -> bool:
        """True once a violation after which the run should stop has been recorded."""
        return any(v.check in TERMINAL_CHECKS for v in self.violations)

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
        *,
        vouched_app_hash: bytes | None = None,
    ) -> None:
        """An honest node committed ``block`` and its state is now ``app_hash_after``; its
        replica vouched ``vouched_app_hash`` for that state (None: it did not)."""
        self.commits_seen += 1
        self.checks_run += 5
        height = block.height
        chain = self._chain(node)
        where = f"height {height}"
        if vouched_app_hash is not None:
            self.checks_run += 1
            self.sync_hints_checked += 1
            if vouched_app_hash != app_hash_after:
                self.report(
                    "sync_hint",
                    time_ms,
                    node,
                    f"{where}: the replica vouched app hash {vouched_app_hash.hex()[:16]}, the "
                    f"node's state after the block is {app_hash_after.hex()[:16]}",
                )
        # validity
        try:
            verify_certificate(
                certificate, self._set(height), self._chain_id, block_hash=block.hash, height=height
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
            self._canonical_view[height] = certificate.view
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
        """An honest validator put its signature on a proposal (phase 0), prepare (1) or commit
        (2) (seen on the wire)."""
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
        if phase == 2:
            self._on_commit_vote(time_ms, validator, height, view, block_hash)

    def _on_commit_vote(
        self, time_ms: int, validator: int, height: int, view: int, block_hash: bytes
    ) -> None:
        self.checks_run += 1
        voters = self._commit_voters.setdefault(height, {}).setdefault((view, block_hash), set())
        if validator in voters:
            return
        voters.add(validator)
        validators = self._set(height)
        if len(voters) + validators.faulty_max < validators.quorum:
            return
        first = self._certifiable.setdefault(height, (view, block_hash))
        if first[1] != block_hash:
            self.report(
                "certificate_possibility",
                time_ms,
                None,
                f"height {height}: honest commit votes plus {validators.faulty_max} "
                f"byzantine could certify {first[1].hex()[:16]} (view {first[0]}) and "
                f"{block_hash.hex()[:16]} (view {view}, honest voters {sorted(voters)})",
            )

    def on_rejected(
        self, time_ms: int, node: int, sender: int, reason: DropReason, detail: str
    ) -> None:
        """Honest ``node`` dropped a message that honest node ``sender`` sent it, for
        ``reason`` (only reasons in ``INVALID_DROPS`` are violations)."""
        self.checks_run += 1
        if reason in INVALID_DROPS:
            self.report(
                "honest_rejected",
                time_ms,
                node,
                f"honest node {node} dropped a message of honest node {sender} as "
                f"{reason.value}: {detail}",
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

    # -- liveness ------------------------------------------------------------------------------

    def liveness_start(
        self, time_ms: int, *, start_view: int, view_bound: int, budget_ms: int
    ) -> int:
        """Faults stopped at ``time_ms``: the next height must commit in a view up to
        ``view_bound`` within ``budget_ms``. Returns that height."""
        wanted = self.canonical_height + 1
        self._liveness = _LivenessWindow(time_ms, wanted, start_view, view_bound, budget_ms)
        return wanted

    def liveness_progress(self, time_ms: int) -> bool:
        """At the end of the budget (or once it committed): check that the promised height
        committed, in a view within the bound; False (and a violation) when it did not."""
        window = self._liveness
        assert window is not None, "liveness_start first"
        self.checks_run += 1
        view = self._canonical_view.get(window.wanted)
        if view is None:
            self.report(
                "liveness",
                time_ms,
                None,
                f"no new height after faults stopped: stuck at {window.wanted - 1} for "
                f"{time_ms - window.started_ms} ms (views {window.start_view}.."
                f"{window.view_bound}, budget {window.budget_ms} ms)",
            )
            return False
        if view > window.view_bound:
            self.report(
                "liveness",
                time_ms,
                None,
                f"height {window.wanted} committed in view {view}, bound was {window.view_bound}",
            )
            return False
        return True

    def liveness_catch_up(self, time_ms: int, heights: Mapping[int, int], catch_up_ms: int) -> bool:
        """Every honest node (``heights``: node -> durable height) reached the promised height
        within ``catch_up_ms`` of it committing; False (and a violation) when one did not."""
        window = self._liveness
        assert window is not None, "liveness_start first"
        self.checks_run += 1
        behind = sorted(node for node, height in heights.items() if height < window.wanted)
        if behind:
            node = behind[0]
            self.report(
                "liveness",
                time_ms,
                node,
                f"honest node {node} stuck at height {heights[node]} {catch_up_ms} ms after "
                f"height {window.wanted} committed",
            )
            return False
        return True
