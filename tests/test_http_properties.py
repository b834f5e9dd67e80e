"""Properties of the HTTP/1.1 server (``node.http``), observed at the socket only.

Each test starts the server with an echo handler, writes raw bytes to a TCP socket (split at
random points, so the parser sees requests arrive in pieces) and parses what comes back; nothing
here depends on how the server parses HTTP:

* valid requests (any method, a percent-encoded path and query, extra headers, a body framed by
  Content-Length or by chunks with extensions), pipelined on one connection, are each answered
  in order with exactly what was sent;
* a body over ``HttpLimits.body_bytes_max`` gets 413, one at the limit is served;
* a mutated or garbage request gets a normal answer or a plain 4xx/501/505, never a 5xx crash or
  a Python repr, and the server keeps serving;
* an HTTP/1.0 request without keep-alive is answered, then the server closes the connection.

Every read has a timeout, so a server that hangs fails the test instead of hanging it.
"""

from __future__ import annotations

import itertools
import json
import string
from dataclasses import dataclass
from typing import Final

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from node.http import HttpLimits, Request, Response, json_response, serve_http

BODY_BYTES_MAX: Final = 1000
READ_TIMEOUT_S: Final = 5.0
# What the server says when it refuses a body or gives up on a slow request (its own words,
# not the parser's).
TOO_LARGE: Final = f"request body exceeds {BODY_BYTES_MAX} bytes"
TIMED_OUT: Final = "request not received in time"
MALFORMED: Final = "malformed HTTP request"
# What a Python repr or traceback would leak into an answer.
INTERNALS: Final = ("b'", 'b"', "\\x", "Traceback", "bytearray")

TOKEN_CHARS: Final = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
VISIBLE_ASCII: Final = "".join(chr(code) for code in range(0x21, 0x7F))
UNRESERVED: Final = string.ascii_letters + string.digits + "-._~"
PATH_SAFE: Final = UNRESERVED + "!$&'()*+,;=:@"
# Literal in a query component: not the separators ``&`` and ``=``, not ``+`` (a space), not
# ``#`` (a fragment) and not ``%`` (an escape).
QUERY_SAFE: Final = UNRESERVED + "!$'()*,;:@/?"
# Headers that change framing or the connection: sent only where a test means to.
RESERVED_HEADERS: Final = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "expect",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "proxy-connection",
    }
)
# Bytes a hostile mutation likes: separators, controls, non-ASCII.
NASTY_BYTES: Final = b" \t\r\n:;,/?%#\x00\x01\x7f\x80\xff0aF"
# Fragments of HTTP that make garbage look almost like a request.
HTTP_FRAGMENTS: Final = (
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b" ",
    b":",
    b"GET",
    b"POST",
    b"/",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2",
    b"Host: t",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked",
    b"Connection: close",
    b"0",
    b"ffffffff",
    b"-1",
    b"5",
    b";ext",
)


# ---------------------------------------------------------------- the server under test


async def echo(request: Request) -> Response:
    """Everything the server parsed out of the request, as JSON."""
    return json_response(200, echo_document(request))


def echo_document(request: Request) -> dict[str, object]:
    return {
        "method": request.method,
        "path": request.path,
        "target": request.target,
        "query": request.query,
        "headers": request.headers,
        "body": request.body.hex(),
    }


async def start(nursery: trio.Nursery) -> int:
    limits = HttpLimits(body_bytes_max=BODY_BYTES_MAX, request_timeout_s=10.0)
    port: int = await nursery.start(serve_http, echo, "127.0.0.1", 0, limits)
    return port


# ---------------------------------------------------------------- the client side


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class Reader:
    """Responses read off one connection, each within ``READ_TIMEOUT_S``."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def fill(self) -> bool:
        """Read more; False at end of stream."""
        with trio.fail_after(READ_TIMEOUT_S):
            data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def reply(self, *, head: bool = False) -> Reply | None:
        """The next response (no body after ``HEAD``), or None when the server closed the
        connection cleanly between responses."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self.fill():
                assert not self.buffer, f"closed inside a response head: {bytes(self.buffer)!r}"
                return None
        end = self.buffer.index(b"\r\n\r\n")
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        version, status, *_ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            assert colon, f"response header without a colon: {line!r}"
            headers[name.strip().lower()] = value.strip()
        if head:
            return Reply(int(status), headers, b"")
        assert "content-length" in headers, headers
        size = int(headers["content-length"])
        while len(self.buffer) < size:
            assert await self.fill(), f"closed inside a response body: {bytes(self.buffer)!r}"
        body = bytes(self.buffer[:size])
        del self.buffer[:size]
        return Reply(int(status), headers, body)

    async def end_of_stream(self) -> None:
        """The server closes the connection, with nothing more sent."""
        while await self.fill():
            pass
        assert not self.buffer, f"bytes after the last response: {bytes(self.buffer)!r}"


async def send_split(stream: trio.SocketStream, data: bytes, cuts: list[int]) -> None:
    """Write ``data`` in pieces cut at ``cuts``, yielding to the server between pieces."""
    start_at = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        if cut > start_at:
            await stream.send_all(data[start_at:cut])
            await trio.lowlevel.checkpoint()
            start_at = cut


async def served_fresh_connection(port: int) -> None:
    """A new connection still gets a 200."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /fresh HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        reader = Reader(stream)
        reply = await reader.reply()
        assert reply is not None
        assert reply.status == 200, reply
        assert json.loads(reply.body)["path"] == "/fresh"
        await reader.end_of_stream()


# ---------------------------------------------------------------- requests


@dataclass(frozen=True)
class Sent:
    """One request as written, and what the echo must show for it."""

    method: str
    target: str
    path: str
    query: dict[str, str]
    version: str
    headers: list[tuple[str, str, str]]  # name, value as written (with spaces), value
    body: bytes
    chunks: list[tuple[str, bytes, str]] | None  # size, data, extension; None: not chunked
    last_chunk: str = "0"

    def wire(self) -> bytes:
        head = f"{self.method} {self.target} HTTP/{self.version}\r\n"
        head += "".join(f"{name}:{written}\r\n" for name, written, _ in self.headers)
        if self.chunks is None:
            return (head + "\r\n").encode("ascii") + self.body
        body = b"".join(
            f"{size}{extension}\r\n".encode("ascii") + data + b"\r\n"
            for size, data, extension in self.chunks
        )
        return (head + "\r\n").encode("ascii") + body + f"{self.last_chunk}\r\n\r\n".encode()

    def expected(self) -> dict[str, object]:
        return {
            "method": self.method,
            "path": self.path,
            "target": self.target,
            "query": self.query,
            "headers": {name.lower(): value for name, _, value in self.headers},
            "body": self.body.hex(),
        }


def escape(char: str, upper: bool) -> str:
    return "".join(f"%{byte:02X}" if upper else f"%{byte:02x}" for byte in char.encode())


@st.composite
def encoded(
    draw: st.DrawFn, safe: str, *, plus_is_space: bool, min_size: int = 0
) -> tuple[str, str]:
    """Text and its encoding in a URL: safe characters literal or escaped, others escaped
    (UTF-8), hex digits in either case; with ``plus_is_space``, a space as ``+`` or ``%20``."""
    characters = st.one_of(st.sampled_from(safe), st.characters(exclude_categories=["Cs"]))
    text = draw(st.text(characters, min_size=min_size, max_size=6))
    parts: list[str] = []
    for char in text:
        if char in safe and draw(st.booleans()):
            parts.append(char)
        elif char == " " and plus_is_space and draw(st.booleans()):
            parts.append("+")
        else:
            parts.append(escape(char, draw(st.booleans())))
    return text, "".join(parts)


@st.composite
def targets(draw: st.DrawFn) -> tuple[str, str, dict[str, str]]:
    """A request target, its decoded path and its query."""
    count = draw(st.integers(1, 4))
    # A path starting ``//`` would read as an authority: the first segment is not empty when
    # more follow.
    segments = [draw(encoded(PATH_SAFE, plus_is_space=False, min_size=1 if count > 1 else 0))]
    segments += [draw(encoded(PATH_SAFE, plus_is_space=False)) for _ in range(count - 1)]
    path = "/" + "/".join(text for text, _ in segments)
    target = "/" + "/".join(raw for _, raw in segments)
    if not draw(st.booleans()):
        return target, path, {}
    pairs = draw(
        st.lists(
            st.tuples(
                encoded(QUERY_SAFE, plus_is_space=True, min_size=1),
                encoded(QUERY_SAFE, plus_is_space=True),
            ),
            max_size=3,
            unique_by=lambda pair: pair[0][0],
        )
    )
    fields: list[str] = []
    for (_, raw_key), (value, raw_value) in pairs:
        bare = value == "" and draw(st.booleans())
        fields.append(raw_key if bare else f"{raw_key}={raw_value}")
    return target + "?" + "&".join(fields), path, {key: value for (key, _), (value, _) in pairs}


def random_case(text: str) -> st.SearchStrategy[str]:
    return st.tuples(*(st.sampled_from((c.lower(), c.upper())) for c in text)).map("".join)


@st.composite
def header_value(draw: st.DrawFn) -> tuple[str, str]:
    """A value as written (with optional whitespace around it) and as meant."""
    words = draw(st.lists(st.text(VISIBLE_ASCII, min_size=1, max_size=8), max_size=3))
    value = "".join(word + draw(st.sampled_from((" ", "  ", "\t"))) for word in words[:-1])
    value += words[-1] if words else ""
    before = draw(st.sampled_from(("", " ", "  ", "\t")))
    after = draw(st.sampled_from(("", " ", "\t")))
    return before + value + after, value


extra_headers = st.lists(
    st.tuples(
        st.text(TOKEN_CHARS, min_size=1, max_size=12).filter(
            lambda name: name.lower() not in RESERVED_HEADERS
        ),
        header_value(),
    ),
    max_size=5,
    unique_by=lambda header: header[0].lower(),
)


@st.composite
def chunk_extension(draw: st.DrawFn) -> str:
    if not draw(st.booleans()):
        return ""
    name = draw(st.text(TOKEN_CHARS, min_size=1, max_size=6))
    value = draw(
        st.one_of(
            st.just(""),
            st.text(TOKEN_CHARS, min_size=1, max_size=6).map(lambda token: "=" + token),
            st.text(VISIBLE_ASCII.replace('"', "").replace("\\", ""), max_size=6).map(
                lambda text: f'="{text}"'
            ),
        )
    )
    return f";{name}{value}"


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> list[tuple[str, bytes, str]]:
    """``body`` cut into chunks of random sizes, sizes in hex of either case, with optional
    leading zeros and extensions."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=6))))
    bounds = [0, *(cut for cut in cuts if cut < len(body)), len(body)]
    chunks: list[tuple[str, bytes, str]] = []
    for low, high in itertools.pairwise(bounds):
        if high > low:
            size = f"{high - low:x}"
            size = draw(st.sampled_from((size, size.upper(), "0" + size)))
            chunks.append((size, body[low:high], draw(chunk_extension())))
    return chunks


SMALL_BODIES: Final = st.integers(0, 300)


@st.composite
def requests(
    draw: st.DrawFn,
    *,
    connection: str | None = None,
    version: str = "1.1",
    methods: tuple[str, ...] = ("GET", "POST", "PUT", "DELETE", "HEAD"),
    body_sizes: st.SearchStrategy[int] = SMALL_BODIES,
) -> Sent:
    """A valid request. ``connection``: a Connection header's value (random case), or None for
    an optional ``keep-alive``."""
    method = draw(st.sampled_from(methods))
    target, path, query = draw(targets())
    headers = [(name, written, value) for name, (written, value) in draw(extra_headers)]
    if version == "1.1" or draw(st.booleans()):
        headers.append((draw(random_case("host")), " t", "t"))
    if connection is not None:
        value = draw(random_case(connection))
        headers.append((draw(random_case("connection")), " " + value, value))
    elif version == "1.1" and draw(st.booleans()):
        value = draw(random_case("keep-alive"))
        headers.append((draw(random_case("connection")), " " + value, value))
    body = b""
    chunks: list[tuple[str, bytes, str]] | None = None
    last_chunk = "0"
    if method in ("POST", "PUT", "DELETE"):
        body = draw(st.binary(min_size=(size := draw(body_sizes)), max_size=size))
        framing = draw(st.sampled_from(("length", "chunked") if version == "1.1" else ("length",)))
    else:
        framing = draw(st.sampled_from(("none", "length")))
    if framing == "length":
        headers.append((draw(random_case("content-length")), f" {len(body)}", str(len(body))))
    elif framing == "chunked":
        name = draw(random_case("transfer-encoding"))
        headers.append((name, " chunked", "chunked"))
        chunks = draw(chunked(body))
        last_chunk = draw(st.sampled_from(("0", "00"))) + draw(chunk_extension())
    headers = draw(st.permutations(headers))
    return Sent(method, target, path, query, version, headers, body, chunks, last_chunk)


def cut_points(size: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, size), max_size=8)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[Sent], list[int]]:
    """1-4 requests for one connection (the last one closes it) and where to cut the bytes."""
    count = draw(st.integers(1, 4))
    sent = [draw(requests()) for _ in range(count - 1)]
    sent.append(draw(requests(connection="close")))
    return sent, draw(cut_points(sum(len(request.wire()) for request in sent)))


def assert_echoes(reply: Reply | None, request: Sent) -> None:
    assert reply is not None, f"no answer to {request.wire()!r}"
    assert reply.status == 200, (request.wire(), reply)
    expected = request.expected()
    if request.method == "HEAD":
        # The headers a GET would get (the echo's length), and no body.
        assert reply.headers["content-length"] == str(len(json_response(200, expected).body))
    else:
        assert json.loads(reply.body) == expected, request.wire()


# ---------------------------------------------------------------- 1: valid requests


@settings(max_examples=40, deadline=None)
@given(conversation=conversations())
async def test_pipelined_valid_requests_arriving_in_pieces_are_echoed_in_order(
    conversation: tuple[list[Sent], list[int]],
) -> None:
    sent, cuts = conversation
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await send_split(stream, b"".join(request.wire() for request in sent), cuts)
            reader = Reader(stream)
            for request in sent:
                assert_echoes(await reader.reply(head=request.method == "HEAD"), request)
            await reader.end_of_stream()
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- 2: body limit


@settings(max_examples=30, deadline=None)
@given(
    request=requests(
        connection="close",
        methods=("POST", "PUT"),
        body_sizes=st.one_of(
            st.integers(BODY_BYTES_MAX - 2, BODY_BYTES_MAX + 2),
            st.integers(BODY_BYTES_MAX + 1, 3 * BODY_BYTES_MAX),
        ),
    ),
    cuts=cut_points(4 * BODY_BYTES_MAX),
)
async def test_a_body_over_the_limit_gets_413_and_one_at_the_limit_is_served(
    request: Sent, cuts: list[int]
) -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await send_split(stream, request.wire(), cuts)
            reader = Reader(stream)
            reply = await reader.reply()
            if len(request.body) <= BODY_BYTES_MAX:
                assert_echoes(reply, request)
            else:
                assert reply is not None
                assert reply.status == 413, (len(request.body), request.chunks is None, reply)
                assert json.loads(reply.body) == {"error": TOO_LARGE}
            await reader.end_of_stream()
        await served_fresh_connection(port)
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- 3: hostile bytes


garbage = st.lists(
    st.one_of(st.binary(min_size=1, max_size=8), st.sampled_from(HTTP_FRAGMENTS)),
    min_size=1,
    max_size=30,
).map(lambda parts: b"".join(parts)[:200])
a_byte = st.one_of(st.integers(0, 255), st.sampled_from(NASTY_BYTES))


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    """A valid request with one mutation in its head, or garbage alone or inside it."""
    wire = draw(requests(methods=("GET", "POST", "PUT", "DELETE"))).wire()
    head_size = wire.index(b"\r\n\r\n") + 4
    kind = draw(st.sampled_from(("replace", "insert", "delete", "garbage", "garbage inside")))
    if kind == "garbage":
        return draw(garbage)
    if kind == "garbage inside":
        at = draw(st.integers(0, len(wire)))
        return wire[:at] + draw(garbage) + wire[at:]
    at = draw(st.integers(0, head_size - 1))
    if kind == "delete":
        return wire[:at] + wire[at + 1 :]
    byte = bytes([draw(a_byte)])
    if kind == "insert":
        return wire[:at] + byte + wire[at:]
    return wire[:at] + byte + wire[at + 1 :]


def assert_plain_answer(reply: Reply, data: bytes) -> None:
    """A normal answer, or a refusal in plain words from the server's own vocabulary."""
    text = reply.body.decode("utf-8", "replace")
    assert "Traceback" not in text, (data, reply)
    if reply.status == 200:
        assert set(json.loads(reply.body)) == {
            "method",
            "path",
            "target",
            "query",
            "headers",
            "body",
        }, (data, reply)
        return
    assert 400 <= reply.status < 500 or reply.status in (501, 505), (data, reply)
    message = json.loads(reply.body)["error"]
    assert isinstance(message, str), (data, reply)
    assert message.startswith(MALFORMED) or message in (TOO_LARGE, TIMED_OUT), (data, message)
    for leak in INTERNALS:
        assert leak not in message, (data, message)


@settings(max_examples=40, deadline=None)
@given(data=hostile(), cuts=cut_points(8 * 1024))
async def test_hostile_bytes_get_an_answer_or_a_plain_refusal_and_the_server_keeps_serving(
    data: bytes, cuts: list[int]
) -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await send_split(stream, data, cuts)
            # No more is coming: the server must decide on what it has, not wait.
            await stream.send_eof()
            reader = Reader(stream)
            replies: list[Reply] = []
            while (reply := await reader.reply()) is not None:
                replies.append(reply)
            assert replies or not data.strip(b"\r\n"), f"no answer to {data!r}"
            for reply in replies:
                assert_plain_answer(reply, data)
            # A refusal ends the connection: only the last answer may be one.
            assert all(reply.status == 200 for reply in replies[:-1]), (data, replies)
        await served_fresh_connection(port)
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- 4: HTTP/1.0


@settings(max_examples=25, deadline=None)
@given(
    request=st.one_of(requests(version="1.0"), requests(version="1.0", connection="close")),
    cuts=cut_points(2 * 1024),
)
async def test_an_http_1_0_request_is_answered_then_the_server_closes(
    request: Sent, cuts: list[int]
) -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await send_split(stream, request.wire(), cuts)
            reader = Reader(stream)
            assert_echoes(await reader.reply(head=request.method == "HEAD"), request)
            # The client does not close its side: the server closes on its own.
            await reader.end_of_stream()
        nursery.cancel_scope.cancel()
