"""Admission control: client transactions beyond what the chain commits are refused early.

Theory of operation
-------------------
The mempool's own bounds (``[mempool] transactions_max``, ``bytes_max``) bound memory, not
latency: a pool of 20,000 transactions ahead of a chain that commits 1,000 per second holds
every new one for 20 s, and the blocks that drain it grow until consensus times out. So
client submissions (the API; gossip from peers only meets the hard bounds) are admitted only
while the transactions *waiting* in the pool (the pool less the block being decided, whose
transactions stay in the pool until it commits) are fewer than ``budget`` worth of what this
node has recently seen the chain commit, or commit at:

    limit = clamp(capacity * budget_ms / 1000, transactions_min, transactions_max)

where ``capacity`` is the larger of two rates over the last ``WINDOW_S`` seconds:

- the *committed rate*: the transactions committed per second since the commit that preceded
  the first of them (at least ``SPAN_MIN_S``, at most ``WINDOW_S``). Under steady load that is
  the whole window; after an idle spell the idle seconds do not dilute it. (The floor of
  ``SPAN_MIN_S`` keeps a few blocks committed in quick succession, as in catch-up, from
  standing for a second of capacity.)
- the *pace*: the transactions of the blocks this node saw proposed, per second of the time
  each took from its proposal reaching the node to its commit. Blocks a node did not see
  proposed (block sync) count in the committed rate only.

Below capacity the committed rate is only what the clients offer, and a block commits well
within the block interval: a limit of ``budget`` of that rate leaves room for little more than
one interval's arrivals, so a burst, or a load that grows, is pushed back although the chain
has time to spare, and the limit grows by only ``budget / interval`` each time the window's
rate catches up (several seconds from an idle chain to a load it carries easily). The pace
counts what the chain moves in the time it spends on a block, so the limit leaves room in
proportion to the time to spare, and follows a growing load from the first block that carries
it. At capacity the rounds follow one another (the next proposal goes out as soon as the block
before it commits), a block's time from proposal to commit is nearly its whole round, and the
pace comes down to about the committed rate; the intake, admission and gossip work the node
does meanwhile stretches that time too, so the pace does not mistake the block's own work for
the node's whole capacity. (A block's fixed costs, its messages and writes, only make the pace
of small blocks lower than the chain's.)

Over the limit a submission is refused *before* any work is spent on it (no decode, no
signature check) with code ``full``, ``retry`` true and a ``retry_after_ms``: the time the
chain needs, at the rate the limit is the budget of (the larger of the committed rate and the
pace), to move on as many pending transactions as were refused (so that they fit), at least
``RETRY_AFTER_MS_MIN`` and at most the budget. A batch that missed the
limit by a few (a slow round near capacity) comes back at once rather than after the whole
queue has committed; under overload, where every batch misses by about its own size, clients
come back within about a budget, when the next proposal has made room. The API turns that into
HTTP 429 with ``Retry-After``.

Why it is stable: what waits is at most ``budget`` of commits, so every block is too, and a
pending transaction waits at most about ``budget`` plus one block. (Counting the block being
decided as waiting would cap blocks at half the budget and push clients back while the chain
still keeps up.) If blocks of that size take longer than ``budget`` to commit, the committed
rate and the pace fall and the limit with them; if they take less, the pace and the limit grow:
the limit follows capacity, never the offered load. Under sustained overload it settles where a
block takes about ``budget`` to commit, and an admitted transaction waits for the rest of the
block being decided, the queue ahead of it (about ``budget``) and its own block: about 2.5
budgets on average, 3 at worst. That holds while clients come back in time to fill the pool
again (see ``room_retry_after_ms``): with the pool kept full, blocks under overload grow to
what the budget allows, and rounds with them. The default 250 ms kept the p99 of admitted
transactions at 1.4-1.6 s at 2x and 4x the sustainable load of a 2-core machine (4,500-10,000
tx/s offered); with the committed rate alone it kept 1.1-1.5 s (3,000 and 6,000 offered), where
300 ms reached 1.8 s and 350 ms went over 2 s in four runs of six, at the price of blocks (and
so throughput under overload) smaller than a longer budget allows.
The floor ``transactions_min`` keeps an idle chain (rate 0) admitting.

Two things keep the pool near the limit when several nodes take client load at once. Each
node admits against its own pool, which holds the others' admissions only once gossip
brought them, so clients that all come back at the same moment can fill every node's room at
once. So ``retry_after_ms`` is spread over ``RETRY_JITTER`` of its value (clients told to come
back together do not); gossiped transactions count as waiting while the receiving node
verifies them; and a proposal carries at most twice the limit (``proposal_limit``), so an
overshoot neither waits several blocks nor makes one block arbitrarily slow.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ARRIVALS_KEPT_MAX",
    "SPAN_MIN_S",
    "WINDOW_S",
    "AdmissionControl",
    "AdmissionLimits",
    "ProposalArrivals",
]

# Commits are averaged over this window: long enough to span several blocks, short enough to
# follow a change of capacity within a few seconds.
WINDOW_S: Final = 3.0
# The rate is counted over at least this many seconds.
SPAN_MIN_S: Final = 1.0
# A client is never told to come back sooner than this, or later than this.
RETRY_AFTER_MS_MIN: Final = 100
RETRY_AFTER_MS_MAX: Final = 10_000
# retry_after_ms is drawn from [1 - RETRY_JITTER, 1 + RETRY_JITTER] times the wait it names,
# so clients pushed back together do not all return in the same instant.
RETRY_JITTER: Final = 0.5
# A proposal carries at most this many limits' worth (see ``proposal_limit``).
PROPOSAL_LIMITS: Final = 2
# Heights whose proposal's arrival ``ProposalArrivals`` keeps at once: the block being decided
# and the few executed but not yet written.
ARRIVALS_KEPT_MAX: Final = 16


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """``[mempool]`` admission settings."""

    # Pending work the pool may hold, in milliseconds of recent commits.
    budget_ms: int = 250
    # The limit never goes below this many transactions (an idle chain still admits).
    transactions_min: int = 250
    # Nor above the pool's own bound.
    transactions_max: int = 20_000

    def __post_init__(self) -> None:
        if min(self.budget_ms, self.transactions_min, self.transactions_max) < 1:
            raise ValueError("admission limits must be positive")


class AdmissionControl:
    """How many transactions the pool may hold for client submissions, from recent commits."""

    def __init__(self, limits: AdmissionLimits, *, jitter: random.Random | None = None) -> None:
        self.limits = limits
        self._jitter = jitter or random.Random()
        # Blocks with transactions: (commit time, transactions, the time of the commit before
        # it, empty or not; the seconds from its proposal reaching this node to its commit, 0.0
        # when the node did not see it proposed).
        self._commits: deque[tuple[float, int, float, float]] = deque()
        self._committed_in_window = 0
        self._last_commit_s: float | None = None

    def observe_commit(self, now_s: float, transactions: int, busy_s: float | None = None) -> None:
        """A block with ``transactions`` (possibly none) committed at monotonic time
        ``now_s``, ``busy_s`` seconds after its proposal reached this node (None when the node
        did not see it proposed)."""
        previous = now_s - WINDOW_S if self._last_commit_s is None else self._last_commit_s
        self._last_commit_s = now_s
        if transactions:
            busy = busy_s if busy_s is not None and busy_s > 0 else 0.0
            self._commits.append((now_s, transactions, previous, busy))
            self._committed_in_window += transactions
        self._expire(now_s)

    def _expire(self, now_s: float) -> None:
        commits = self._commits
        while commits and commits[0][0] < now_s - WINDOW_S:
            self._committed_in_window -= commits.popleft()[1]

    def rate(self, now_s: float) -> float:
        """Transactions per second committed over the window ending at ``now_s``: per second
        since the commit before the window's first block with transactions, at least
        ``SPAN_MIN_S`` and at most ``WINDOW_S``."""
        self._expire(now_s)
        commits = self._commits
        if not commits:
            return 0.0
        span = min(max(now_s - commits[0][2], SPAN_MIN_S), WINDOW_S)
        return self._committed_in_window / span

    def pace(self, now_s: float) -> float:
        """Transactions per second of the time the window's blocks took from their proposal
        reaching this node to their commit (only blocks it saw proposed count); 0.0 when
        there are none."""
        self._expire(now_s)
        paced = busy = 0.0
        for _, transactions, _, busy_s in self._commits:
            if busy_s:
                paced += transactions
                busy += busy_s
        return paced / busy if busy else 0.0

    def limit(self, now_s: float) -> int:
        """The most transactions the pool may hold when a client submission arrives."""
        limits = self.limits
        budgeted = int(self._capacity(now_s) * limits.budget_ms / 1000)
        return max(limits.transactions_min, min(budgeted, limits.transactions_max))

    def _capacity(self, now_s: float) -> float:
        """The rate the limit is the budget of: the larger of the committed rate and the
        pace."""
        return max(self.rate(now_s), self.pace(now_s))

    def proposal_limit(self, now_s: float) -> int:
        """The most transactions a proposal should carry: twice the limit, so everything
        admitted fits in the next block even after the nodes' admissions overlapped, while a
        block still takes a bounded multiple of the budget to commit."""
        return PROPOSAL_LIMITS * self.limit(now_s)

    def retry_after_ms(self, now_s: float, pending: int) -> int:
        """When to come back: the time the chain needs, at the larger of its committed rate
        and its pace (at least the floor's worth per budget), to move ``pending``
        transactions on."""
        return self._retry_after_ms(pending * 1000 / self._paced_rate(now_s))

    def room_retry_after_ms(self, now_s: float, refused: int) -> int:
        """When a client refused ``refused`` transactions over the limit should come back: the
        time the chain needs to move that many on, but at most the budget. Each round moves
        the waiting part of the pool (at most the limit, a budget's worth of commits) into a
        proposal, so there is room again within about a budget; told to wait for all it was
        refused (which can be more than the whole limit), every client would still be waiting
        while the pool ran dry, and the next block would be small."""
        wait_ms = refused * 1000 / self._paced_rate(now_s)
        return self._retry_after_ms(min(wait_ms, self.limits.budget_ms))

    def _paced_rate(self, now_s: float) -> float:
        """The rate a wait is counted at: the one the limit is the budget of (``_capacity``),
        at least the floor's worth per budget."""
        limits = self.limits
        return max(self._capacity(now_s), limits.transactions_min * 1000 / limits.budget_ms)

    def _retry_after_ms(self, wait_ms: float) -> int:
        spread = self._jitter.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
        return max(RETRY_AFTER_MS_MIN, min(math.ceil(wait_ms * spread), RETRY_AFTER_MS_MAX))


class ProposalArrivals:
    """When this node first saw each height's proposal, until that height commits: the time a
    block took from its proposal to its commit, for the pace (``observe_commit``'s
    ``busy_s``).

    The first arrival of a height counts (a proposal of a later view for the same height
    counts from the first one, so the view change's delay is part of the block's time). Only
    heights above the last commit are kept, at most ``ARRIVALS_KEPT_MAX`` of them (a primary
    that proposes many heights ahead cannot grow the record); a commit drops its own height
    and every lower one (heights this node took from block sync, whose proposals it saw but
    never committed from them)."""

    def __init__(self) -> None:
        self._seen_at: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._seen_at)

    def heights(self) -> list[int]:
        """The heights whose arrival is kept, ascending."""
        return sorted(self._seen_at)

    def seen(self, height: int, now_s: float, committed_height: int) -> None:
        """A proposal for ``height`` reached this node at ``now_s``; ``committed_height`` is
        the last height this node committed."""
        seen_at = self._seen_at
        if height > committed_height and len(seen_at) < ARRIVALS_KEPT_MAX:
            seen_at.setdefault(height, now_s)

    def committed(self, height: int, now_s: float) -> float | None:
        """``height`` committed at ``now_s``: the seconds since its proposal first reached
        this node, or None when it never did (block sync)."""
        seen_at = self._seen_at
        first = seen_at.pop(height, None)
        for lower in [kept for kept in seen_at if kept < height]:
            del seen_at[lower]
        return None if first is None else now_s - first
