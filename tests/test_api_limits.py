"""Per-client limits on the API server: one client cannot starve the others.

The scenario the limits exist for: a client opens 300 slow connections from one address (each
sends half a request head and stalls). The server must keep serving another client. Two
clients on one loopback machine are told apart the way two machines would be: the second
binds its socket to 127.0.0.2 (Linux routes all of 127.0.0.0/8 to the loopback interface).
"""

from __future__ import annotations

import contextlib
import errno
import json
from collections.abc import Callable

import pytest
import trio

from node.clientlimits import ClientConnection, ClientLimiter, ClientLimits, address_group
from node.http import HttpLimits, Request, Response, json_response, serve_http

SLOW_CONNECTIONS = 300
PER_ADDRESS = 64
DEADLINE_S = 120.0


async def echo(request: Request) -> Response:
    return json_response(200, {"path": request.path})


async def wait_until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(DEADLINE_S):
        while not condition():  # noqa: ASYNC110 - the server's counters have no event
            await trio.sleep(0.01)


async def ask(port: int, local_address: str | None = None, path: bytes = b"/ok") -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local_address)
    async with stream:
        await stream.send_all(b"GET " + path + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        received = b""
        with trio.fail_after(DEADLINE_S):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


async def second_loopback_address_usable() -> bool:
    try:
        listener = trio.socket.socket()
        with listener:
            await listener.bind(("127.0.0.2", 0))
    except OSError as error:
        if error.errno in (errno.EADDRNOTAVAIL, errno.EINVAL):
            return False
        raise
    return True


async def test_300_slow_connections_from_one_address_leave_another_client_served() -> None:
    if not await second_loopback_address_usable():
        pytest.skip("127.0.0.2 is not a usable loopback address on this machine")
    limiter = ClientLimiter(ClientLimits(connections_per_address_max=PER_ADDRESS))
    limits = HttpLimits(request_timeout_s=DEADLINE_S * 2, connections_max=256)
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(
            lambda task_status: serve_http(
                echo, "127.0.0.1", 0, limits, limiter=limiter, task_status=task_status
            )
        )
        slow: list[trio.SocketStream] = []
        try:
            for _ in range(SLOW_CONNECTIONS):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                slow.append(stream)
                with contextlib.suppress(trio.BrokenResourceError):  # refused and closed
                    await stream.send_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n")  # never ends
            refused = SLOW_CONNECTIONS - PER_ADDRESS
            await wait_until(lambda: limiter.refused["address_connections"] >= refused)
            assert limiter.refused["address_connections"] == refused

            # Another client (another address) is served while the slow ones hang on.
            reply = await ask(port, local_address="127.0.0.2")
            assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
            # The slow client's address, over its share, is refused at once with a reason.
            reply = await ask(port)
            assert reply.startswith(b"HTTP/1.1 429"), reply[:200]
            assert b"retry-after: 1" in reply.lower()
            assert b"too many connections from 127.0.0.1" in reply
        finally:
            for stream in slow:
                await trio.aclose_forcefully(stream)
        # Once the slow connections are gone, the address is served again.
        await wait_until(lambda: limiter.open_connections("127.0.0.1") == 0)
        reply = await ask(port)
        assert reply.startswith(b"HTTP/1.1 200")
        nursery.cancel_scope.cancel()


class FrozenClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


async def test_an_address_over_its_request_rate_gets_429_and_recovers_after_retry_after() -> None:
    clock = FrozenClock()
    limiter = ClientLimiter(ClientLimits(requests_per_second_per_address=5), clock=clock)
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(
            lambda task_status: serve_http(
                echo, "127.0.0.1", 0, HttpLimits(), limiter=limiter, task_status=task_status
            )
        )
        replies = [await ask(port) for _ in range(6)]
        assert all(reply.startswith(b"HTTP/1.1 200") for reply in replies[:5])
        refused = replies[5]
        assert refused.startswith(b"HTTP/1.1 429")
        assert b"retry-after: 1" in refused.lower()
        body = json.loads(refused.partition(b"\r\n\r\n")[2])
        assert body["code"] == "address_requests"
        clock.now_s += 1.0
        assert (await ask(port)).startswith(b"HTTP/1.1 200")
        nursery.cancel_scope.cancel()


def test_per_key_limits_count_connections_and_requests_of_the_key_not_the_address() -> None:
    clock = FrozenClock()
    limiter = ClientLimiter(
        ClientLimits(connections_per_key_max=2, requests_per_second_per_key=3), clock=clock
    )
    key = bytes(32)
    connections = []
    for host in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        opened = limiter.open_connection(host)
        assert isinstance(opened, ClientConnection)
        connections.append(opened)
    assert limiter.admit_key(connections[0], key, 10) is None
    assert limiter.admit_key(connections[1], key, 10) is None
    third = limiter.admit_key(connections[2], key, 10)
    assert third is not None
    assert third.reason == "key_connections"
    # Requests of the key on its own connections are rate limited across both.
    assert limiter.admit_key(connections[0], key, 10) is None
    over = limiter.admit_key(connections[1], key, 10)
    assert over is not None
    assert over.reason == "key_requests"
    # Closing a connection frees the key's share.
    limiter.close_connection(connections[0])
    clock.now_s += 10
    assert limiter.admit_key(connections[2], key, 10) is None


def test_a_key_over_its_byte_rate_is_refused() -> None:
    clock = FrozenClock()
    limiter = ClientLimiter(ClientLimits(bytes_per_second_per_key=1000), clock=clock)
    connection = limiter.open_connection("10.0.0.1")
    assert isinstance(connection, ClientConnection)
    assert limiter.admit_key(connection, bytes(32), 900) is None
    refused = limiter.admit_key(connection, bytes(32), 900)
    assert refused is not None
    assert refused.reason == "key_bytes"


def test_the_client_table_is_bounded_and_keeps_clients_with_open_connections() -> None:
    limiter = ClientLimiter(ClientLimits(clients_tracked_max=4))
    held = limiter.open_connection("10.0.0.1")
    assert isinstance(held, ClientConnection)
    for index in range(2, 50):
        opened = limiter.open_connection(f"10.0.0.{index}")
        assert isinstance(opened, ClientConnection)
        limiter.close_connection(opened)
    addresses, _ = limiter.tracked()
    assert addresses <= 4
    assert limiter.open_connections("10.0.0.1") == 1


def test_ipv6_clients_are_grouped_by_their_64_prefix() -> None:
    assert address_group("2001:db8:1:2:aaaa::1") == address_group("2001:db8:1:2:bbbb::9")
    assert address_group("2001:db8:1:3::1") != address_group("2001:db8:1:2::1")
    assert address_group("::ffff:192.0.2.7") == "192.0.2.7"
