"""A token bucket: the per-peer receive rate limit."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate_per_second`` tokens accrue continuously up to ``burst``.

    ``consume(amount, now)`` takes the tokens (going negative if needed) and returns how many
    seconds the caller should wait before doing more: 0.0 while within the rate. Waiting
    instead of dropping turns a flood into TCP back-pressure on that one peer.
    """

    def __init__(self, rate_per_second: float, burst: float, now: float) -> None:
        if rate_per_second <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate_per_second = rate_per_second
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def consume(self, amount: float, now: float) -> float:
        """Take ``amount`` tokens at time ``now``; seconds to wait before the next use."""
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_second) - amount
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate_per_second
