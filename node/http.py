"""A small HTTP/1.1 server on trio and h11, for the client API and metrics.

Theory of operation
-------------------
h11 is sans-I/O: this module owns the sockets and timeouts, h11 owns the protocol. One task per
connection loops: read a request (head within ``request_timeout``; the body is counted against
``body_bytes_max`` *while* it arrives, so an oversized body is refused with 413 before it is
buffered), call the handler, write the response, and keep the connection alive when both sides
allow it. Concurrent connections are bounded by a semaphore; over the bound, a connection gets
503 and is closed.

Every failure is contained to its connection: malformed HTTP gets 400, a handler exception
gets 500 (logged), a slow client is cut at the timeout, and the server keeps serving. A handler
may return a streaming response (an async iterator of chunks), written with chunked encoding,
for long-lived feeds such as the NDJSON block stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import trio

__all__ = [
    "HttpLimits",
    "Request",
    "Response",
    "json_response",
    "serve_http",
]

log = logging.getLogger("suanpan.http")

# Request line plus headers: generous for any real client, small enough to bound memory.
HEAD_BYTES_MAX: Final = 16 * 1024
# After a refused request, discard at most this much of the client's remaining upload, for at
# most this long, so well-behaved clients read the error instead of a reset.
_LINGER_BYTES_MAX: Final = 64 * 1024 * 1024
_LINGER_S: Final = 5.0
# Read size per receive: one socket buffer's worth.
_RECEIVE_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Per-server bounds (from ``[rpc]`` in config.toml)."""

    body_bytes_max: int = 1024 * 1024
    request_timeout_s: float = 10.0
    connections_max: int = 256


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Response:
    """A response: a full body, or a ``stream`` of chunks (chunked encoding)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    stream: AsyncIterator[bytes] | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


def json_response(status: int, document: object) -> Response:
    """A JSON response."""
    return Response(status, (json.dumps(document, separators=(",", ":")) + "\n").encode())


def _error(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


class _BodyTooLarge(Exception):
    pass


async def serve_http(
    handler: Handler,
    host: str,
    port: int,
    limits: HttpLimits,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` on ``host:port`` until cancelled. ``nursery.start`` returns the bound
    port (useful with port 0)."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port: int = listeners[0].socket.getsockname()[1]
    slots = trio.Semaphore(limits.connections_max)

    async def serve_one(stream: trio.SocketStream) -> None:
        try:
            if slots.value == 0:
                await _refuse(stream)
                return
            async with slots:
                await _serve_connection(stream, handler, limits)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    task_status.started(bound_port)
    await trio.serve_listeners(serve_one, listeners)


async def _refuse(stream: trio.SocketStream) -> None:
    connection = h11.Connection(h11.SERVER)
    body = b'{"error":"too many connections; retry later"}\n'
    data = connection.send(
        h11.Response(
            status_code=503,
            headers=[
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
                ("connection", "close"),
            ],
        )
    )
    data = (data or b"") + (connection.send(h11.Data(data=body)) or b"")
    with trio.move_on_after(1):
        await stream.send_all(data)


async def _next_event(
    connection: h11.Connection, stream: trio.SocketStream
) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await stream.receive_some(_RECEIVE_BYTES)
        connection.receive_data(data)


async def _read_request(
    connection: h11.Connection, stream: trio.SocketStream, limits: HttpLimits
) -> Request | None:
    """One request, or None when the client closed cleanly between requests."""
    event = await _next_event(connection, stream)
    if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
        return None
    if not isinstance(event, h11.Request):
        raise h11.RemoteProtocolError("expected a request")
    method = event.method.decode("latin-1").upper()
    target = urlsplit(event.target.decode("latin-1"))
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers
    }
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.body_bytes_max:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await _next_event(connection, stream)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > limits.body_bytes_max:
                raise _BodyTooLarge
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            raise h11.RemoteProtocolError("unexpected event in request body")
    return Request(
        method=method,
        path=unquote(target.path),
        query=dict(parse_qsl(target.query, keep_blank_values=True)),
        headers=headers,
        body=b"".join(chunks),
    )


async def _send_response(
    connection: h11.Connection, stream: trio.SocketStream, response: Response
) -> None:
    headers = [("content-type", response.content_type), *response.headers]
    if response.stream is None:
        headers.append(("content-length", str(len(response.body))))
    else:
        headers.append(("transfer-encoding", "chunked"))
        headers.append(("cache-control", "no-cache"))
    data = connection.send(h11.Response(status_code=response.status, headers=headers))
    if response.stream is None:
        await stream.send_all(
            (data or b"") + (connection.send(h11.Data(data=response.body)) or b"")
        )
    else:
        await stream.send_all(data or b"")
        async for chunk in response.stream:
            if chunk:
                await stream.send_all(connection.send(h11.Data(data=chunk)) or b"")
    await stream.send_all(connection.send(h11.EndOfMessage()) or b"")


async def _linger(stream: trio.SocketStream) -> None:
    """After refusing a request mid-body, read and discard what the client is still sending
    (bounded in bytes and time) so it reads our 4xx instead of a connection reset."""
    await stream.send_eof()
    received = 0
    with trio.move_on_after(_LINGER_S):
        while received < _LINGER_BYTES_MAX:
            data = await stream.receive_some(_RECEIVE_BYTES)
            if not data:
                return
            received += len(data)


def _cycle_complete(connection: h11.Connection) -> bool:
    """True when both sides finished the request/response cycle (keep-alive is possible)."""
    states: list[object] = list(connection.states.values())
    return all(state is h11.DONE for state in states)


async def _serve_connection(
    stream: trio.SocketStream, handler: Handler, limits: HttpLimits
) -> None:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_BYTES_MAX)
    while True:
        response: Response
        request: Request | None = None
        with trio.move_on_after(limits.request_timeout_s) as scope:
            try:
                request = await _read_request(connection, stream, limits)
                if request is None:
                    return
            except _BodyTooLarge:
                response = _error(413, f"request body exceeds {limits.body_bytes_max} bytes")
            except h11.RemoteProtocolError as error:
                response = _error(400, f"malformed HTTP request: {error}")
        if scope.cancelled_caught:
            if connection.our_state is h11.SEND_RESPONSE:
                response = _error(408, "request not received in time")
            else:
                return
        if request is not None:
            try:
                response = await handler(request)
            except Exception:
                log.exception("http_handler_failed", extra={"path": request.path})
                response = _error(500, "internal error; see the node log")
        if connection.our_state not in (h11.SEND_RESPONSE, h11.IDLE):
            return
        if request is None:
            response.headers.append(("connection", "close"))
        try:
            await _send_response(connection, stream, response)
        except h11.LocalProtocolError:
            return
        if request is None:
            await _linger(stream)
            return
        if not _cycle_complete(connection):
            return
        try:
            connection.start_next_cycle()
        except h11.LocalProtocolError:
            return
