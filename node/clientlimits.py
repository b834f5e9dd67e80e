"""Per-client limits for the client API: connections, requests/s and bytes/s, per address and
per key, so one client cannot starve the others.

Theory of operation
-------------------
A *client* is seen two ways. Its **address** is known when the connection is accepted (IPv4:
the address; IPv6: its /64 prefix, since one host usually owns a whole /64; an IPv4-mapped
IPv6 address counts as the IPv4 address). Its **key** is known once a request on the
connection carries a valid signature (``node.auth``). Limits apply to both:

* connections: ``connections_per_address_max`` open connections per address (checked at
  accept, before a byte is read, so a slow-loris client holds at most its own share of the
  server's ``connections_max`` and every further connection it opens is refused at once);
  ``connections_per_key_max`` connections that carried a request signed by one key;
* requests/s and bytes/s: a token bucket per address and one per key. A request over the
  address's rate, or over its key's rate, is refused with 429 and ``Retry-After`` (refused
  requests cost no tokens, so a client that backs off as told recovers at once); request
  bodies are paced at the address's byte rate while they arrive (the reader waits, which
  becomes TCP back-pressure on that one client), and the bytes a key's requests carry are
  charged to the key.

The tables of addresses and keys are bounded (``clients_tracked_max``): when full, the least
recently seen entry without an open connection is forgotten (its buckets were full again, or
nearly). Entries with open connections are at most ``connections_max``, so the bound holds.
Refusals are counted by reason for ``/metrics``; they are never logged one by one (a flood of
refusals must not become a flood of log lines).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

__all__ = [
    "ClientConnection",
    "ClientLimiter",
    "ClientLimits",
    "Refusal",
    "address_group",
]

# Retry-After is whole seconds; never tell a client to wait less than this.
_RETRY_AFTER_S_MIN: Final = 1
_Name = TypeVar("_Name", str, bytes)
REFUSAL_REASONS: Final = (
    "address_connections",
    "key_connections",
    "address_requests",
    "key_requests",
    "key_bytes",
)


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """Per-client bounds (from ``[rpc]`` in config.toml); 0 disables a rate limit."""

    connections_per_address_max: int = 64
    connections_per_key_max: int = 32
    requests_per_second_per_address: int = 1000
    requests_per_second_per_key: int = 500
    bytes_per_second_per_address: int = 64 * 1024 * 1024
    bytes_per_second_per_key: int = 64 * 1024 * 1024
    # Addresses and keys remembered at once: bounds memory under a spray of source addresses.
    clients_tracked_max: int = 65_536


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a client was refused, and how long it should wait before trying again."""

    reason: str
    message: str
    retry_after_s: int


class _Bucket:
    """Tokens accrue at ``rate`` per second up to ``rate`` (one second of burst)."""

    __slots__ = ("_tokens", "_updated", "rate")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self._tokens = rate
        self._updated = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(self.rate, self._tokens + elapsed * self.rate)

    def take(self, amount: float, now: float) -> float:
        """Take ``amount`` if available and return 0.0; otherwise take nothing and return the
        seconds until it would be available (an amount above the burst waits for a full one)."""
        self._refill(now)
        needed = min(amount, self.rate)
        if self._tokens >= needed:
            self._tokens -= needed
            return 0.0
        return (needed - self._tokens) / self.rate

    def charge(self, amount: float, now: float) -> float:
        """Take ``amount`` even into debt; return the seconds the caller should pause so the
        average stays within the rate (pacing, not refusal)."""
        self._refill(now)
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def full(self, now: float) -> bool:
        """True when the bucket has refilled completely (forgetting it loses nothing)."""
        self._refill(now)
        return self._tokens >= self.rate


@dataclass(slots=True)
class _Client:
    connections: int = 0
    requests: _Bucket | None = None
    bytes: _Bucket | None = None


@dataclass(slots=True)
class ClientConnection:
    """One accepted connection: its address group, and the key it was bound to (if any)."""

    peer: str
    address: str
    key: bytes | None = None
    requests: int = 0
    closed: bool = field(default=False)


def address_group(host: str) -> str:
    """The address a limit is kept for: IPv4 as is, IPv6 by its /64 prefix."""
    try:
        parsed = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(parsed) >> 64 << 64, 64)))
    return str(parsed)


class ClientLimiter:
    """Tracks every client of one API server and decides who is served (see the module
    docstring). Not thread-safe: it lives on the server's event loop."""

    def __init__(
        self, limits: ClientLimits, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._addresses: OrderedDict[str, _Client] = OrderedDict()
        self._keys: OrderedDict[bytes, _Client] = OrderedDict()
        self.refused: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)

    # -- connections --------------------------------------------------------------------------

    def open_connection(self, host: str) -> ClientConnection | Refusal:
        """Account for a new connection from ``host``, or refuse it (address over its cap)."""
        address = address_group(host)
        client = self._entry(self._addresses, address)
        if client.connections >= self.limits.connections_per_address_max:
            return self._refuse(
                "address_connections",
                f"too many connections from {address} "
                f"(at most {self.limits.connections_per_address_max}); close some and retry",
                _RETRY_AFTER_S_MIN,
            )
        client.connections += 1
        return ClientConnection(peer=host, address=address)

    def close_connection(self, connection: ClientConnection) -> None:
        """Release what ``connection`` held (idempotent)."""
        if connection.closed:
            return
        connection.closed = True
        address = self._addresses.get(connection.address)
        if address is not None:
            address.connections -= 1
        if connection.key is not None:
            key = self._keys.get(connection.key)
            if key is not None:
                key.connections -= 1

    # -- requests ------------------------------------------------------------------------------

    def admit_request(self, connection: ClientConnection) -> Refusal | None:
        """One request arrived on ``connection``: within its address's rate, or refused."""
        connection.requests += 1
        rate = self.limits.requests_per_second_per_address
        if not rate:
            return None
        client = self._entry(self._addresses, connection.address)
        now = self._clock()
        if client.requests is None:
            client.requests = _Bucket(rate, now)
        wait_s = client.requests.take(1, now)
        if wait_s:
            return self._refuse(
                "address_requests",
                f"more than {rate} requests per second from {connection.address}; slow down",
                wait_s,
            )
        return None

    def inbound_delay_s(self, connection: ClientConnection, size: int) -> float:
        """Charge ``size`` received bytes to the connection's address; seconds to pause."""
        rate = self.limits.bytes_per_second_per_address
        if not rate or not size:
            return 0.0
        client = self._entry(self._addresses, connection.address)
        now = self._clock()
        if client.bytes is None:
            client.bytes = _Bucket(rate, now)
        return client.bytes.charge(size, now)

    def admit_key(self, connection: ClientConnection, key: bytes, size: int) -> Refusal | None:
        """A request on ``connection`` was signed by ``key`` and carried ``size`` bytes: bind the
        connection to the key (first time), and check the key's connections, rate and bytes."""
        client = self._entry(self._keys, key)
        if connection.key != key:
            if client.connections >= self.limits.connections_per_key_max:
                return self._refuse(
                    "key_connections",
                    f"too many connections signed by key {key.hex()[:16]} (at most "
                    f"{self.limits.connections_per_key_max}); reuse a connection",
                    _RETRY_AFTER_S_MIN,
                )
            if connection.key is not None:
                previous = self._keys.get(connection.key)
                if previous is not None:
                    previous.connections -= 1
            connection.key = key
            client.connections += 1
        now = self._clock()
        rate = self.limits.requests_per_second_per_key
        if rate:
            if client.requests is None:
                client.requests = _Bucket(rate, now)
            wait_s = client.requests.take(1, now)
            if wait_s:
                return self._refuse(
                    "key_requests",
                    f"more than {rate} requests per second signed by key {key.hex()[:16]}",
                    wait_s,
                )
        byte_rate = self.limits.bytes_per_second_per_key
        if byte_rate and size:
            if client.bytes is None:
                client.bytes = _Bucket(byte_rate, now)
            wait_s = client.bytes.take(size, now)
            if wait_s:
                return self._refuse(
                    "key_bytes",
                    f"more than {byte_rate} bytes per second signed by key {key.hex()[:16]}",
                    wait_s,
                )
        return None

    # -- bookkeeping ---------------------------------------------------------------------------

    def open_connections(self, host: str) -> int:
        """Connections open from ``host``'s address group."""
        client = self._addresses.get(address_group(host))
        return 0 if client is None else client.connections

    def tracked(self) -> tuple[int, int]:
        """(addresses, keys) currently remembered."""
        return len(self._addresses), len(self._keys)

    def _refuse(self, reason: str, message: str, wait_s: float) -> Refusal:
        self.refused[reason] += 1
        return Refusal(reason, message, max(_RETRY_AFTER_S_MIN, math.ceil(wait_s)))

    def _entry(self, table: OrderedDict[_Name, _Client], name: _Name) -> _Client:
        client = table.get(name)
        if client is not None:
            table.move_to_end(name)
            return client
        if len(table) >= self.limits.clients_tracked_max:
            self._forget_one(table)
        client = _Client()
        table[name] = client
        return client

    def _forget_one(self, table: OrderedDict[_Name, _Client]) -> None:
        """Forget the least recently seen client that holds no connection."""
        for name, client in table.items():
            if client.connections == 0:
                del table[name]
                return
        # Every entry holds a connection: there are at most connections_max of them, so the
        # table is only over its bound when the bound is set below connections_max.
