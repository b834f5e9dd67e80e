"""A small HTTP/1.1 server on trio and h11, for the client API and metrics.

Theory of operation
-------------------
h11 is sans-I/O: this module owns the sockets, TLS and timeouts, h11 owns the protocol. One task
per connection: an accepted connection first passes the server's ``connections_max`` (503 when
full) and its client's per-address share (``node.clientlimits``: 429 when over), then, with
TLS configured, the TLS handshake (within ``request_timeout``). Then it loops: read a request
(head within ``request_timeout``; the body is counted against ``body_bytes_max`` *while* it
arrives, so an oversized body is refused with 413 before it is buffered, and paced at the
client's byte rate), check the client's request rate (429 with ``Retry-After``), call the
handler, write the response, and keep the connection alive when both sides allow it.

Every failure is contained to its connection: malformed HTTP gets 400 with a plain reason
(never a Python repr of the bytes), a request with both ``Content-Length`` and
``Transfer-Encoding`` gets 400 and the connection is closed (the two framings disagree about
where the next request starts: the classic request-smuggling ambiguity), a handler exception
gets 500 (logged), a slow client is cut at the timeout, and the server keeps serving. ``HEAD``
gets the headers ``GET`` would get and no body. A handler may return a streaming response (an
async iterator of chunks), written with chunked encoding, for long-lived feeds (the NDJSON
block stream, Server-Sent Events).
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import trio

from node.clientlimits import ClientConnection, ClientLimiter, Refusal

__all__ = [
    "HttpCounters",
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
# A refusal before any request is read is written within this long, or the socket is dropped;
# then the server reads and drops what the client sent for at most as long again (closing a
# socket with unread data resets it, and the client would lose the refusal), for at most
# ``_REFUSALS_LINGERING_MAX`` refused connections at once (a flood is just dropped).
_REFUSAL_WRITE_S: Final = 1.0
_REFUSALS_LINGERING_MAX: Final = 1024
# What a malformed request is told: h11's own messages quote the offending bytes as Python
# reprs, so each is replaced by a plain sentence (first matching fragment wins).
_PROTOCOL_MESSAGES: Final = (
    ("receive buffer too long", f"request head exceeds {HEAD_BYTES_MAX} bytes"),
    ("illegal request line", "malformed request line"),
    ("no request line", "malformed request line"),
    ("illegal header line", "malformed header line"),
    ("continuation line", "malformed header line"),
    ("illegal chunk header", "malformed chunk header in the request body"),
    ("chunk", "malformed chunked request body"),
    ("content-length", "bad Content-Length header"),
    ("host", "missing or repeated Host header"),
    ("transfer-encoding", "unsupported Transfer-Encoding (only chunked is accepted)"),
    ("target", "malformed request target"),
    ("http version", "unsupported HTTP version"),
    ("peer closed connection", "request body ended early"),
)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Per-server bounds (from ``[rpc]`` in config.toml)."""

    body_bytes_max: int = 1024 * 1024
    request_timeout_s: float = 10.0
    connections_max: int = 256


@dataclass(slots=True)
class HttpCounters:
    """Running totals of one server, for ``/metrics`` (per-client refusals are counted by the
    ``ClientLimiter``)."""

    connections_accepted: int = 0
    connections_refused_full: int = 0
    tls_handshakes_failed: int = 0
    malformed_requests: int = 0
    responses: dict[int, int] = field(default_factory=dict)
    refusals_lingering: int = 0


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request. ``target`` is the request target exactly as sent (path and query, still
    percent-encoded: what a request signature covers); ``connection`` is the client's
    connection record when the server tracks clients."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    target: str = ""
    connection: ClientConnection | None = None


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


def _refusal_response(refusal: Refusal) -> Response:
    response = json_response(429, {"error": refusal.message, "code": refusal.reason})
    response.headers.append(("retry-after", str(refusal.retry_after_s)))
    return response


class _BodyTooLarge(Exception):
    pass


class _AmbiguousFraming(Exception):
    pass


class _UnsupportedVersion(Exception):
    pass


class _HeadTooLarge(Exception):
    pass


def _protocol_message(error: h11.RemoteProtocolError) -> str:
    text = str(error).lower()
    for fragment, message in _PROTOCOL_MESSAGES:
        if fragment in text:
            return f"malformed HTTP request: {message}"
    return "malformed HTTP request"


async def serve_http(
    handler: Handler,
    host: str,
    port: int,
    limits: HttpLimits,
    *,
    tls: ssl.SSLContext | None = None,
    limiter: ClientLimiter | None = None,
    counters: HttpCounters | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` on ``host:port`` until cancelled. ``nursery.start`` returns the bound
    port (useful with port 0). ``tls`` serves HTTPS; ``limiter`` enforces per-client limits."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port: int = listeners[0].socket.getsockname()[1]
    slots = trio.Semaphore(limits.connections_max)
    totals = counters if counters is not None else HttpCounters()

    async def serve_one(tcp: trio.SocketStream) -> None:
        # Named apart from the peer connections trio also serves (``node.looptasks``).
        trio.lowlevel.current_task().name = "http connection"
        stream: trio.abc.Stream = tcp
        connection: ClientConnection | None = None
        try:
            # The client's own share first: a client over it must not hold a server slot,
            # not even while it is told so.
            if limiter is not None:
                try:
                    peer_host = str(tcp.socket.getpeername()[0])
                except OSError:
                    return
                opened = limiter.open_connection(peer_host)
                if isinstance(opened, Refusal):
                    await _refuse(stream, _refusal_response(opened), totals)
                    return
                connection = opened
            if slots.value == 0:
                totals.connections_refused_full += 1
                response = json_response(503, {"error": "too many connections; retry later"})
                response.headers.append(("retry-after", "1"))
                await _refuse(stream, response, totals)
                return
            async with slots:
                totals.connections_accepted += 1
                if tls is not None:
                    secure = trio.SSLStream(tcp, tls, server_side=True, https_compatible=True)
                    stream = secure
                    with trio.move_on_after(limits.request_timeout_s) as handshake:
                        try:
                            await secure.do_handshake()
                        except trio.BrokenResourceError:
                            totals.tls_handshakes_failed += 1
                            return
                    if handshake.cancelled_caught:
                        totals.tls_handshakes_failed += 1
                        return
                await _serve_connection(stream, handler, limits, limiter, connection, totals)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if limiter is not None and connection is not None:
                limiter.close_connection(connection)
            await trio.aclose_forcefully(stream)

    task_status.started(bound_port)
    await trio.serve_listeners(serve_one, listeners)


async def _refuse(stream: trio.abc.Stream, response: Response, counters: HttpCounters) -> None:
    """Answer a connection refused before any request was read, then drop it."""
    connection = h11.Connection(h11.SERVER)
    counters.responses[response.status] = counters.responses.get(response.status, 0) + 1
    data = connection.send(
        h11.Response(
            status_code=response.status,
            headers=[
                ("content-type", response.content_type),
                ("content-length", str(len(response.body))),
                ("connection", "close"),
                *response.headers,
            ],
        )
    )
    data = (data or b"") + (connection.send(h11.Data(data=response.body)) or b"")
    with trio.move_on_after(_REFUSAL_WRITE_S):
        await stream.send_all(data)
    if counters.refusals_lingering >= _REFUSALS_LINGERING_MAX:
        return
    counters.refusals_lingering += 1
    try:
        with trio.move_on_after(_REFUSAL_WRITE_S):
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            received = 0
            while received < _RECEIVE_BYTES:
                discarded = await stream.receive_some(_RECEIVE_BYTES)
                if not discarded:
                    break
                received += len(discarded)
    finally:
        counters.refusals_lingering -= 1


async def _next_event(
    connection: h11.Connection, stream: trio.abc.Stream
) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await stream.receive_some(_RECEIVE_BYTES)
        connection.receive_data(bytes(data))


async def _read_request(
    connection: h11.Connection,
    stream: trio.abc.Stream,
    limits: HttpLimits,
    limiter: ClientLimiter | None,
    client: ClientConnection | None,
) -> Request | None:
    """One request, or None when the client closed cleanly between requests."""
    event = await _next_event(connection, stream)
    if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
        return None
    if not isinstance(event, h11.Request):
        raise h11.RemoteProtocolError("expected a request")
    if event.http_version not in (b"1.0", b"1.1"):
        raise _UnsupportedVersion
    # h11 bounds a head that arrives in pieces; one that arrives whole is measured here.
    head_bytes = len(event.target) + sum(len(name) + len(value) for name, value in event.headers)
    if head_bytes > HEAD_BYTES_MAX:
        raise _HeadTooLarge
    method = event.method.decode("latin-1").upper()
    raw_target = event.target.decode("latin-1")
    target = urlsplit(raw_target)
    names = [name.decode("latin-1").lower() for name, _ in event.headers]
    if "content-length" in names and "transfer-encoding" in names:
        raise _AmbiguousFraming
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
            if limiter is not None and client is not None:
                pause_s = limiter.inbound_delay_s(client, len(event.data))
                if pause_s:
                    await trio.sleep(pause_s)
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
        target=raw_target,
        connection=client,
    )


async def _send_response(
    connection: h11.Connection, stream: trio.abc.Stream, response: Response, *, head: bool
) -> None:
    """Write ``response``; for a ``HEAD`` request, its headers only (h11 refuses a body there,
    and a stream is closed without being read)."""
    headers = [("content-type", response.content_type), *response.headers]
    if response.stream is None:
        headers.append(("content-length", str(len(response.body))))
    else:
        headers.append(("transfer-encoding", "chunked"))
        headers.append(("cache-control", "no-cache"))
    data = connection.send(h11.Response(status_code=response.status, headers=headers)) or b""
    if head or response.stream is None:
        if response.stream is not None:
            await _close_stream(response.stream)
        body = b"" if head else connection.send(h11.Data(data=response.body)) or b""
        # Head, body and end of message in one write: each write is a pass of the event loop.
        await stream.send_all(data + body + (connection.send(h11.EndOfMessage()) or b""))
        return
    await stream.send_all(data)
    try:
        async for chunk in response.stream:
            if chunk:
                await stream.send_all(connection.send(h11.Data(data=chunk)) or b"")
    finally:
        await _close_stream(response.stream)
    await stream.send_all(connection.send(h11.EndOfMessage()) or b"")


async def _close_stream(chunks: AsyncIterator[bytes]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


async def _linger(stream: trio.abc.Stream) -> None:
    """After refusing a request mid-body, read and discard what the client is still sending
    (bounded in bytes and time) so it reads our 4xx instead of a connection reset."""
    if isinstance(stream, trio.abc.HalfCloseableStream):
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
    stream: trio.abc.Stream,
    handler: Handler,
    limits: HttpLimits,
    limiter: ClientLimiter | None,
    client: ClientConnection | None,
    counters: HttpCounters,
) -> None:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_BYTES_MAX)
    while True:
        response: Response
        request: Request | None = None
        with trio.move_on_after(limits.request_timeout_s) as scope:
            try:
                request = await _read_request(connection, stream, limits, limiter, client)
                if request is None:
                    return
            except _BodyTooLarge:
                response = _error(413, f"request body exceeds {limits.body_bytes_max} bytes")
            except _AmbiguousFraming:
                counters.malformed_requests += 1
                response = _error(
                    400,
                    "malformed HTTP request: both Content-Length and Transfer-Encoding are set;"
                    " send exactly one",
                )
            except _HeadTooLarge:
                counters.malformed_requests += 1
                response = _error(
                    431, f"malformed HTTP request: request head exceeds {HEAD_BYTES_MAX} bytes"
                )
            except _UnsupportedVersion:
                counters.malformed_requests += 1
                response = _error(505, "malformed HTTP request: only HTTP/1.0 and 1.1 are served")
            except h11.RemoteProtocolError as error:
                counters.malformed_requests += 1
                status = error.error_status_hint if 400 <= error.error_status_hint < 600 else 400
                response = _error(status, _protocol_message(error))
        if scope.cancelled_caught:
            if connection.our_state is h11.SEND_RESPONSE:
                response = _error(408, "request not received in time")
                request = None
            else:
                return
        if request is not None:
            refusal = None
            if limiter is not None and client is not None:
                refusal = limiter.admit_request(client)
            if refusal is not None:
                response = _refusal_response(refusal)
            else:
                try:
                    response = await handler(request)
                except Exception:
                    log.exception("http_handler_failed", extra={"path": request.path})
                    response = _error(500, "internal error; see the node log")
        if connection.our_state not in (h11.SEND_RESPONSE, h11.IDLE):
            return
        if request is None:
            response.headers.append(("connection", "close"))
        counters.responses[response.status] = counters.responses.get(response.status, 0) + 1
        try:
            await _send_response(
                connection,
                stream,
                response,
                head=request is not None and request.method == "HEAD",
            )
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
