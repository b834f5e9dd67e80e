"""A small HTTP/1.1 server on trio and httptools, for the client API and metrics.

Theory of operation
-------------------
httptools (llhttp, in C) is sans-I/O: this module owns the sockets, TLS and timeouts, and
``_RequestReader`` turns the parser's callbacks into whole requests. One task per connection:
an accepted connection first passes the server's ``connections_max`` (503 when full) and its
client's per-address share (``node.clientlimits``: 429 when over), then, with TLS configured,
the TLS handshake (within ``request_timeout``). Then it loops: read a request (head within
``request_timeout``; the body is counted against ``body_bytes_max`` *while* it arrives, so an
oversized body is refused with 413 before it is buffered, and paced at the client's byte rate),
check the client's request rate (429 with ``Retry-After``), call the handler, write the
response, and keep the connection alive when both sides allow it. Pipelined requests are
answered in order.

Every failure is contained to its connection: malformed HTTP gets 4xx with a plain reason (never
a Python repr of the bytes), a request with both ``Content-Length`` and ``Transfer-Encoding``
gets 400 and the connection is closed (the two framings disagree about where the next request
starts: the classic request-smuggling ambiguity), as does any transfer coding but ``chunked``
(501), a missing or repeated ``Host`` on HTTP/1.1, a bare LF line ending, or a head over
``HEAD_BYTES_MAX``. A handler exception gets 500 (logged), a slow client is cut at the timeout
(408 once its head has arrived), any other failure on a connection ends that connection only
(logged), and the server keeps serving. After a refused request the
connection is closed: where the next request would start is no longer known. ``HEAD`` gets the
headers ``GET`` would get and no body. A handler may return a streaming response (an async
iterator of chunks), written with chunked encoding (to an HTTP/1.0 client: as is, ended by
closing the connection), for long-lived feeds (the NDJSON block stream, Server-Sent Events).
An ``Upgrade`` or ``CONNECT`` request is answered like any other and the connection closed: the
server speaks nothing but HTTP/1.0 and 1.1.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

import httptools
import trio

from node.clientlimits import ClientConnection, ClientLimiter, Refusal

__all__ = [
    "HEAD_BYTES_MAX",
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
# What a malformed request is told, by the parser's message (first matching fragment wins):
# status and a plain sentence, never the parser's own words about the offending bytes.
_PARSER_MESSAGES: Final = (
    (
        "can't be present with",
        400,
        "both Content-Length and Transfer-Encoding are set; send exactly one",
    ),
    ("content-length", 400, "bad Content-Length header"),
    ("transfer-encoding", 501, "unsupported Transfer-Encoding (only chunked is accepted)"),
    ("chunk", 400, "malformed chunked request body"),
    ("method", 400, "malformed request line or unsupported method"),
    ("url", 400, "malformed request target"),
    ("invalid http version", 505, "unsupported HTTP version"),
    ("crlf", 400, "malformed line ending (lines end with CRLF)"),
    (" lf ", 400, "malformed line ending (lines end with CRLF)"),
    (" cr ", 400, "malformed line ending (lines end with CRLF)"),
    ("version", 400, "malformed request line"),
    ("header", 400, "malformed header line"),
)
# The status line of each status the server may send (HTTP/1.1 and the standard reason).
# Headers the server adds to a response.
_CLOSE: Final = (("connection", "close"),)
_KEEP_ALIVE: Final = (("connection", "keep-alive"),)
_CHUNKED: Final = (("transfer-encoding", "chunked"), ("cache-control", "no-cache"))
_UNFRAMED: Final = (("cache-control", "no-cache"),)
_STATUS_LINES: Final = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n" for status in HTTPStatus
}


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


class _BadRequest(Exception):
    """A request the server cannot read: answered with ``status`` and closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = f"malformed HTTP request: {message}"


def _parser_error(error: httptools.HttpParserError) -> _BadRequest:
    text = str(error).lower()
    for fragment, status, message in _PARSER_MESSAGES:
        if fragment in text:
            return _BadRequest(status, message)
    return _BadRequest(400, "unreadable request")


@dataclass(slots=True)
class _Parsed:
    """One whole request as the parser delivered it."""

    method: bytes
    target: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool


class _RequestReader:
    """httptools' callbacks in, whole requests out (sans-I/O). ``feed`` hands it bytes and
    returns how many were request body; ``ready`` holds the requests read so far, in order.
    A request the server cannot read is kept in ``failure`` and raised once the requests
    before it are answered; after it, or after an ``Upgrade``/``CONNECT`` request
    (``finished``), nothing more is read from the connection."""

    __slots__ = (
        "_body",
        "_body_bytes",
        "_body_bytes_max",
        "_fed_body",
        "_headers",
        "_messages",
        "_open_head_bytes",
        "_parser",
        "_raised",
        "_target",
        "failure",
        "finished",
        "head_received",
        "in_message",
        "ready",
    )

    def __init__(self, body_bytes_max: int) -> None:
        self._body_bytes_max = body_bytes_max
        self._parser = httptools.HttpRequestParser(self)
        self.ready: deque[_Parsed] = deque()
        self.failure: Exception | None = None
        self.finished = False
        # A request has begun (its first byte read) and is not yet whole.
        self.in_message = False
        # That request's head is whole (a timeout now owes the client a 408).
        self.head_received = False
        self._raised: Exception | None = None
        self._target: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._fed_body = 0
        self._open_head_bytes = 0
        self._messages = 0

    def feed(self, data: bytes) -> int:
        """Parse ``data``; return the bytes of request body in it."""
        if self.failure is not None or self.finished:
            return 0
        self._fed_body = 0
        # The request whose head was open before this data, if any.
        open_head = self._messages if self.in_message and not self.head_received else -1
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.finished = True
            if self.ready:
                self.ready[-1].keep_alive = False
        except httptools.HttpParserCallbackError:
            self.failure = self._raised or _BadRequest(400, "unreadable request")
        except httptools.HttpParserError as error:
            self.failure = _parser_error(error)
        else:
            # A head that arrives in pieces is bounded here (one that arrives whole, below).
            if open_head == self._messages and self.in_message and not self.head_received:
                self._open_head_bytes += len(data)
                if self._open_head_bytes > HEAD_BYTES_MAX:
                    self.failure = _head_too_large()
        return self._fed_body

    def _fail(self, error: Exception) -> Exception:
        self._raised = error
        return error

    # httptools' callbacks.

    def on_message_begin(self) -> None:
        self._messages += 1
        self.in_message = True
        self.head_received = False
        self._target = []
        self._headers = []
        self._body = []
        self._body_bytes = 0
        self._open_head_bytes = 0

    def on_url(self, piece: bytes) -> None:
        self._target.append(piece)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_received:  # trailers of a chunked body are dropped
            # llhttp keeps the whitespace after a value; it is not part of it (RFC 9110 5.5).
            self._headers.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        self.head_received = True
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.0", "1.1"):
            raise self._fail(_BadRequest(505, "only HTTP/1.0 and 1.1 are served"))
        target_bytes = sum(len(piece) for piece in self._target)
        if target_bytes + sum(len(n) + len(v) for n, v in self._headers) > HEAD_BYTES_MAX:
            raise self._fail(_head_too_large())
        hosts = 0
        codings: list[bytes] = []
        declared: bytes | None = None
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"host":
                hosts += 1
            elif lowered == b"transfer-encoding":
                codings.append(value.strip().lower())
            elif lowered == b"content-length":
                declared = value
        if codings and declared is not None:
            raise self._fail(
                _BadRequest(
                    400,
                    "both Content-Length and Transfer-Encoding are set; send exactly one",
                )
            )
        if codings and codings != [b"chunked"]:
            raise self._fail(
                _BadRequest(501, "unsupported Transfer-Encoding (only chunked is accepted)")
            )
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            raise self._fail(_BadRequest(400, "missing or repeated Host header"))
        if declared is not None and declared.isdigit() and int(declared) > self._body_bytes_max:
            raise self._fail(_BodyTooLarge())

    def on_body(self, piece: bytes) -> None:
        self._body_bytes += len(piece)
        self._fed_body += len(piece)
        if self._body_bytes > self._body_bytes_max:
            raise self._fail(_BodyTooLarge())
        self._body.append(piece)

    def on_message_complete(self) -> None:
        parser = self._parser
        self.ready.append(
            _Parsed(
                method=parser.get_method(),
                target=b"".join(self._target),
                version=parser.get_http_version(),
                headers=self._headers,
                body=b"".join(self._body),
                keep_alive=parser.should_keep_alive(),
            )
        )
        self.in_message = False
        self.head_received = False
        self._body = []


def _head_too_large() -> _BadRequest:
    return _BadRequest(431, f"request head exceeds {HEAD_BYTES_MAX} bytes")


def _request(parsed: _Parsed, client: ClientConnection | None) -> Request:
    """The handler's view of ``parsed``; ``_BadRequest`` for a target with a fragment (a
    client keeps it: a request target has none) or an absolute target no URL parser reads
    (``http://[x/``: the parser passes it, ``urlsplit`` does not)."""
    raw_target = parsed.target.decode("latin-1")
    if "#" in raw_target:
        raise _BadRequest(400, "a request target carries no fragment (#)")
    if raw_target.startswith("/"):
        # Origin form, as clients send it: split by hand, so that ``//a/b`` stays a path
        # (``urlsplit`` would read ``a`` as a host and drop it).
        path, _, query = raw_target.partition("?")
    else:
        try:
            target = urlsplit(raw_target)
        except ValueError:
            raise _BadRequest(400, "malformed request target") from None
        path, query = target.path, target.query
    return Request(
        method=parsed.method.decode("latin-1"),
        path=unquote(path),
        query=dict(parse_qsl(query, keep_blank_values=True)),
        headers={
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in parsed.headers
        },
        body=parsed.body,
        target=raw_target,
        connection=client,
    )


async def serve_http(
    handler: Handler,
    host: str,
    port: int,
    limits: HttpLimits,
    *,
    tls: ssl.SSLContext | Callable[[], ssl.SSLContext | None] | None = None,
    limiter: ClientLimiter | None = None,
    counters: HttpCounters | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` on ``host:port`` until cancelled. ``nursery.start`` returns the bound
    port (useful with port 0). ``tls`` serves HTTPS: a context, or a function that gives the
    one for each new connection (a certificate renewed while the server runs); ``limiter``
    enforces per-client limits."""
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
                context = tls() if callable(tls) else tls
                if context is not None:
                    secure = trio.SSLStream(tcp, context, server_side=True, https_compatible=True)
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
        except Exception:
            # A bug on one connection (a handler's stream that fails mid-response, say) ends
            # that connection, never the server and the node around it.
            log.exception("http_connection_failed")
        finally:
            if limiter is not None and connection is not None:
                limiter.close_connection(connection)
            await trio.aclose_forcefully(stream)

    task_status.started(bound_port)
    await trio.serve_listeners(serve_one, listeners)


async def _refuse(stream: trio.abc.Stream, response: Response, counters: HttpCounters) -> None:
    """Answer a connection refused before any request was read, then drop it."""
    counters.responses[response.status] = counters.responses.get(response.status, 0) + 1
    head = _head(response, length=len(response.body), extra=_CLOSE)
    with trio.move_on_after(_REFUSAL_WRITE_S):
        await stream.send_all(head + response.body)
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


class _InvalidResponse(Exception):
    pass


def _head(
    response: Response, *, length: int | None, extra: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """The status line and headers of ``response`` and ``extra``: with ``Content-Length:
    length``, or with none (``length`` None: the caller frames the body). A status that is not
    three digits, or a header that could split the head (CR, LF or NUL in it), raises
    ``_InvalidResponse``."""
    status_line = _STATUS_LINES.get(response.status)
    if status_line is None:
        if not 100 <= response.status <= 999:
            raise _InvalidResponse(f"status {response.status} is not a 3-digit HTTP status")
        status_line = f"HTTP/1.1 {response.status} \r\n"
    fields = [response.content_type]
    lines = [status_line, "content-type: ", response.content_type, "\r\n"]
    for headers in (response.headers, extra):
        for name, value in headers:
            fields += (name, value)
            lines += (name, ": ", value, "\r\n")
    if length is not None:
        lines += ("content-length: ", str(length), "\r\n")
    checked = "".join(fields)
    if "\r" in checked or "\n" in checked or "\x00" in checked:
        raise _InvalidResponse("a response header holds CR, LF or NUL")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


async def _next_request(
    reader: _RequestReader,
    stream: trio.abc.Stream,
    limiter: ClientLimiter | None,
    client: ClientConnection | None,
) -> _Parsed | None:
    """The connection's next request; None when the client closed cleanly between requests
    or nothing more is read from it."""
    while True:
        if reader.ready:
            return reader.ready.popleft()
        if reader.failure is not None:
            raise reader.failure
        if reader.finished:
            return None
        data = await stream.receive_some(_RECEIVE_BYTES)
        if not data:
            if reader.in_message:
                raise _BadRequest(400, "request ended early")
            return None
        body_bytes = reader.feed(bytes(data))
        if body_bytes and limiter is not None and client is not None:
            pause_s = limiter.inbound_delay_s(client, body_bytes)
            if pause_s:
                await trio.sleep(pause_s)


async def _send_response(
    stream: trio.abc.Stream,
    response: Response,
    *,
    head: bool,
    chunked: bool,
    extra: tuple[tuple[str, str], ...],
) -> None:
    """Write ``response`` with the ``extra`` headers; for a ``HEAD`` request, its headers only
    (a stream is closed without being read). A stream is written in chunked encoding, or as is
    when ``chunked`` is false (an HTTP/1.0 client: the connection's close ends it)."""
    if response.stream is None:
        data = _head(response, length=len(response.body), extra=extra)
        # Head and body in one write: each write is a pass of the event loop.
        await stream.send_all(data if head else data + response.body)
        return
    try:
        framing = _CHUNKED if chunked else _UNFRAMED
        await stream.send_all(_head(response, length=None, extra=extra + framing))
        if head:
            return
        async for chunk in response.stream:
            if chunk:
                await stream.send_all(
                    b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else bytes(chunk)
                )
        if chunked:
            await stream.send_all(b"0\r\n\r\n")
    finally:
        await _close_stream(response.stream)


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


async def _serve_connection(
    stream: trio.abc.Stream,
    handler: Handler,
    limits: HttpLimits,
    limiter: ClientLimiter | None,
    client: ClientConnection | None,
    counters: HttpCounters,
) -> None:
    reader = _RequestReader(limits.body_bytes_max)
    while True:
        response: Response
        parsed: _Parsed | None = None
        request: Request | None = None
        with trio.move_on_after(limits.request_timeout_s) as scope:
            try:
                parsed = await _next_request(reader, stream, limiter, client)
                if parsed is None:
                    return
                request = _request(parsed, client)
            except _BodyTooLarge:
                response = _error(413, f"request body exceeds {limits.body_bytes_max} bytes")
            except _BadRequest as error:
                counters.malformed_requests += 1
                response = _error(error.status, error.message)
                parsed = None
        if scope.cancelled_caught:
            if reader.head_received:
                response = _error(408, "request not received in time")
                parsed = request = None
            else:
                return
        keep_alive = parsed is not None and parsed.keep_alive
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
        http10 = parsed is not None and parsed.version == "1.0"
        if http10 and response.stream is not None:
            keep_alive = False  # the body ends where the connection does
        extra = (_KEEP_ALIVE if http10 else ()) if keep_alive else _CLOSE
        counters.responses[response.status] = counters.responses.get(response.status, 0) + 1
        try:
            await _send_response(
                stream,
                response,
                head=parsed is not None and parsed.method == b"HEAD",
                chunked=not http10,
                extra=extra,
            )
        except _InvalidResponse as error:
            log.error(
                "http_response_invalid", extra={"status": response.status, "error": str(error)}
            )
            return
        if parsed is None:
            await _linger(stream)
            return
        if not keep_alive:
            return
