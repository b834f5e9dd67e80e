"""The client API under hostile requests: whatever a client sends, the answer is never a 5xx
(but the documented 503s) and every 4xx is JSON naming the problem.

A real single-validator node runs in-process; the fuzz calls its API handler (the one the HTTP
server calls, authentication and read rules included, and the open handler of tests and tools)
with requests built as ``node.http`` builds them from a request target: the path
percent-decoded, the query string parsed. The framing of requests themselves (heads, bodies,
chunks) is fuzzed by ``tests/test_http_properties.py``. Hypothesis runs on a worker thread and
hands each request to the node's event loop, so one node serves every example. Long-lived
routes are bounded: an answer is awaited for at most ``ANSWER_WAIT_S`` (``/blocks`` long polls,
``POST /tx`` with ``wait``), and a streamed answer (``/stream``, ``/events``) is read for at most
``STREAM_READ_S``, then closed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, quote, unquote

import msgpack
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node import runtime
from node.api import make_handler
from node.auth import HEADER_KEY, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIME
from node.home import load_home
from node.http import Handler, Request, Response
from node.submission import MSGPACK_CONTENT_TYPE
from node.testnet.testnet import create_testnet

DEADLINE_S: Final = 120.0
ANSWER_WAIT_S: Final = 0.3
STREAM_READ_S: Final = 0.02
FUZZ_SETTINGS: Final = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ----------------------------------------------------------------------------- strategies

_UNICODE_DIGITS: Final = ("²", "³", "¹", "٣", "४", "൬", "௫", "①", "\U0001d7d7", "٣٤")
_JUNK_NUMBERS: Final = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.integers(4290, 5000).map(lambda n: "9" * n),  # past int()'s 4300 digits
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(_UNICODE_DIGITS),
    st.sampled_from(("", "0", "-0", "+1", " 1", "1 ", "0x10", "1e3", "1_000", "true", "null")),
)
_HEX: Final = st.binary(max_size=40).map(bytes.hex)
_SEGMENTS: Final = st.one_of(
    _HEX,
    st.binary(min_size=32, max_size=32).map(bytes.hex),
    st.binary(min_size=32, max_size=32).map(lambda b: b.hex().upper()),
    _JUNK_NUMBERS,
    st.text(max_size=20),
    st.sampled_from(("%", "%zz", "%00", "%ff", "%c3%28", "%2F", "..", ".", "latest", "hash")),
)
_PARAMETERS: Final = (
    "from",
    "limit",
    "timeout_ms",
    "prove",
    "app",
    "kind",
    "account",
    "types",
    "until",
    "after",
    "transactions",
)
_QUERY_VALUES: Final = st.one_of(
    _JUNK_NUMBERS,
    _HEX,
    st.text(max_size=20),
    st.sampled_from(("1", "true", "block", "receipt", "event", "membership", "1-0", "-1-2")),
)
_ROUTES: Final = (
    ("healthz",),
    ("status",),
    ("metrics",),
    ("evidence",),
    ("openapi.json",),
    ("blocks",),
    ("stream",),
    ("events",),
    ("tx",),
    ("txs",),
    ("query",),
    ("block", "latest"),
    ("tx", None),
    ("block", None),
    ("block", "hash", None),
    ("account", None),
)
_METHODS: Final = st.one_of(
    st.sampled_from(("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get")),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8),
)


def _quoted(segment: str) -> Iterator[str]:
    yield segment
    yield quote(segment, safe="")


@st.composite
def targets(draw: st.DrawFn) -> str:
    """A request target: a route (or random segments) with random segments and query."""
    route = draw(st.sampled_from(_ROUTES + _ROUTES) | st.lists(_SEGMENTS, max_size=4).map(tuple))
    segments = [draw(_SEGMENTS) if part is None else part for part in route]
    path = "/" + "/".join(draw(st.sampled_from(list(_quoted(s)))) for s in segments)
    if draw(st.booleans()):
        path += "/"
    pairs = draw(
        st.lists(
            st.tuples(st.sampled_from(_PARAMETERS) | st.text(max_size=6), _QUERY_VALUES),
            max_size=5,
        )
    )
    if not pairs and draw(st.booleans()):
        return path
    raw = draw(st.booleans())
    query = "&".join(
        f"{name}={value}" if raw else f"{quote(name, safe='')}={quote(value, safe='')}"
        for name, value in pairs
    )
    return f"{path}?{query}"


_JSON: Final = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | _HEX,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
        | st.fixed_dictionaries({"$bytes": children})
        | st.fixed_dictionaries({"$map": st.lists(st.lists(children, max_size=3), max_size=3)})
    ),
    max_leaves=12,
)
_FIELDS: Final = ("tx", "wait", "timeout_ms", "txs", "app", "path", "arguments", "prove")


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    """A JSON document: mostly an object with the routes' fields, of any type."""
    fields = draw(st.lists(st.sampled_from(_FIELDS), max_size=4, unique=True))
    document: object = {name: draw(_JSON) for name in fields}
    if draw(st.integers(0, 3)) == 0:
        document = draw(_JSON)
    text = json.dumps(document)
    return text.encode("utf-8", "surrogatepass")


_MSGPACK: Final = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=10)
    | st.floats(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=10,
)
_BODIES: Final = st.one_of(
    json_bodies(),
    st.just(b""),
    st.binary(max_size=64),
    _MSGPACK.map(lambda value: msgpack.packb(value)),
    st.sampled_from(
        (
            b"\xff\xfe{}",
            b'{"tx": "\xff"}',
            b'{"app": "\\ud800", "path": "x"}',
            b'{"tx": "ab", "timeout_ms": ' + b"9" * 4400 + b"}",
            b'{"txs": [' + b"1" * 4400 + b"]}",
            b"[" * 100_000,
            b'{"a":' * 5000,
            b"NaN",
            b'{"timeout_ms": Infinity, "tx": "00"}',
            b'{"app": "membership", "path": "x", "arguments": {"a": -Infinity}}',
        )
    ),
)
_HEADER_VALUES: Final = (
    st.sampled_from((MSGPACK_CONTENT_TYPE, "application/json", "", "1-0")) | _QUERY_VALUES | _HEX
)
_PLAIN_HEADERS: Final = st.dictionaries(
    st.sampled_from(("content-type", "accept", "last-event-id")), _HEADER_VALUES, max_size=2
)
# Any header a request may carry, a signature's included (junk ones get 401).
_HEADERS: Final = st.dictionaries(
    st.sampled_from(
        (
            "content-type",
            "accept",
            "last-event-id",
            HEADER_KEY,
            HEADER_TIME,
            HEADER_NONCE,
            HEADER_SIGNATURE,
        )
    ),
    _HEADER_VALUES,
    max_size=3,
)


_NUMBER_SLOTS: Final = (
    "/block/{}",
    "/blocks?from={}",
    "/blocks?limit={}",
    "/blocks?timeout_ms={}",
    "/stream?from={}",
    "/events?from={}",
    "/events?until={}",
    "/events?after={}-1",
    "/events?after=1-{}",
)


@st.composite
def numbered(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """A request with a junk number where the API reads one: (method, target, body)."""
    number = draw(_JUNK_NUMBERS)
    if draw(st.integers(0, 4)) == 0:
        body = {"tx": "00", "timeout_ms": draw(st.sampled_from((number, _as_int(number))))}
        return "POST", "/tx", json.dumps(body).encode()
    encoded = draw(st.sampled_from(list(_quoted(number))))
    return "GET", draw(st.sampled_from(_NUMBER_SLOTS)).format(encoded), b""


def _as_int(text: str) -> object:
    try:
        return int(text)
    except ValueError:
        return text


_KEY_HEX: Final = st.binary(min_size=32, max_size=32).map(bytes.hex)
# The four headers of a signed request, each well-formed or junk (a signature that does not
# verify is refused with 401 either way).
_SIGNED_HEADERS: Final = st.fixed_dictionaries(
    {
        HEADER_KEY: _KEY_HEX | _HEADER_VALUES,
        HEADER_TIME: st.integers(0, 2**53).map(str) | _JUNK_NUMBERS,
        HEADER_NONCE: st.binary(min_size=8, max_size=8).map(bytes.hex) | _HEADER_VALUES,
        HEADER_SIGNATURE: st.binary(min_size=64, max_size=64).map(bytes.hex) | _HEADER_VALUES,
    }
)


def request_of(method: str, target: str, headers: dict[str, str], body: bytes) -> Request:
    """The request ``node.http`` hands the handler for this target."""
    path, _, query = target.partition("#")[0].partition("?")
    return Request(
        method=method,
        path=unquote(path),
        query=dict(parse_qsl(query, keep_blank_values=True)),
        headers=headers,
        body=body,
        target=target,
    )


# ----------------------------------------------------------------------------- the node


@asynccontextmanager
async def api_handlers(directory: Path) -> AsyncIterator[tuple[Handler, Handler]]:
    """A running single-validator node's API handler (scoped access) and an open one over
    the same node."""
    info = create_testnet(directory / "net", 1, chain_id="fuzz-net")
    home = load_home(info.homes[0])
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as nursery:
            node: runtime.Node = await nursery.start(runtime.Node(home).run)
            await node.wait_for_height(1, timeout_s=DEADLINE_S)
            scoped = node.api.handler()
            open_handler = make_handler(node.api.backend, wait_timeout_ms_max=60_000)
            yield scoped, open_handler
            nursery.cancel_scope.cancel()


async def answer(handler: Handler, request: Request) -> Response | None:
    """The handler's answer, or None when it is still waiting after ``ANSWER_WAIT_S``; a
    stream is read for ``STREAM_READ_S``, then closed."""
    with trio.move_on_after(ANSWER_WAIT_S):
        response = await handler(request)
        if response.stream is not None:
            with trio.move_on_after(STREAM_READ_S):
                async for _ in response.stream:
                    pass
            await response.stream.aclose()  # type: ignore[attr-defined]
        return response
    return None


def check(request: Request, response: Response | None) -> None:
    """Never a 5xx but the documented 503s; a 4xx is JSON with a non-empty ``error``."""
    if response is None:
        return
    status = response.status
    label = f"{request.method} {request.target!r} {request.body[:200]!r} -> {status}"
    if status == 503:
        path = request.path.strip("/")
        document = json.loads(response.body)
        assert path == "healthz" or (path == "query" and document["code"] == "not_certified"), (
            label,
            response.body,
        )
    else:
        assert status < 500, (label, response.body)
    if 400 <= status < 500:
        document = json.loads(response.body)
        assert isinstance(document, dict), (label, response.body)
        assert isinstance(document.get("error"), str), (label, document)
        assert document["error"], (label, document)


def fuzz_on_thread(
    handlers: tuple[Handler, Handler], test: Callable[[Callable[[Request], None]], None]
) -> Callable[[], None]:
    """``test`` with a function that answers one request on the node's event loop."""

    def ask(request: Request) -> None:
        for handler in handlers:
            check(request, trio.from_thread.run(answer, handler, request))

    return lambda: test(ask)


# ----------------------------------------------------------------------------- the fuzz


async def test_hostile_requests_get_a_named_4xx_never_a_5xx(tmp_path: Path) -> None:
    def reads(ask: Callable[[Request], None]) -> None:
        @FUZZ_SETTINGS
        @given(
            method=st.sampled_from(("GET", "GET", "GET", "HEAD")),
            target=targets(),
            headers=_PLAIN_HEADERS,
        )
        def run(method: str, target: str, headers: dict[str, str]) -> None:
            ask(request_of(method, target, headers, b""))

        run()

    def posts(ask: Callable[[Request], None]) -> None:
        @FUZZ_SETTINGS
        @given(
            target=st.sampled_from(("/tx", "/txs", "/query", "/query?prove=1")) | targets(),
            content_type=st.sampled_from(("application/json", MSGPACK_CONTENT_TYPE, "")),
            accept=st.sampled_from(("", MSGPACK_CONTENT_TYPE)),
            body=_BODIES,
        )
        def run(target: str, content_type: str, accept: str, body: bytes) -> None:
            headers = {"content-type": content_type, "accept": accept}
            ask(request_of("POST", target, headers, body))

        run()

    def anything(ask: Callable[[Request], None]) -> None:
        @FUZZ_SETTINGS
        @given(method=_METHODS, target=targets(), headers=_HEADERS, body=_BODIES)
        def run(method: str, target: str, headers: dict[str, str], body: bytes) -> None:
            ask(request_of(method, target, headers, body))

        run()

    def numbers(ask: Callable[[Request], None]) -> None:
        @FUZZ_SETTINGS
        @given(request=numbered())
        def run(request: tuple[str, str, bytes]) -> None:
            method, target, body = request
            ask(request_of(method, target, {}, body))

        run()

    def signed(ask: Callable[[Request], None]) -> None:
        @FUZZ_SETTINGS
        @given(
            target=st.sampled_from(("/status", "/events", "/account/" + "ab" * 32)) | targets(),
            headers=_SIGNED_HEADERS,
        )
        def run(target: str, headers: dict[str, str]) -> None:
            ask(request_of("GET", target, headers, b""))

        run()

    async with api_handlers(tmp_path) as handlers:
        for test in (numbers, signed, reads, posts, anything):
            await trio.to_thread.run_sync(fuzz_on_thread(handlers, test))


# ----------------------------------------------------------------------------- regressions

_TOO_MANY_DIGITS: Final = "9" * 4301  # one past what int() converts
# Requests that raised in the handler (a 500), and what their 400 now names.
REGRESSIONS: Final = (
    ("GET", "/block/%C2%B2", b"", "height must be a non-negative integer"),
    ("GET", "/block/" + _TOO_MANY_DIGITS, b"", "height must be an integer in 1.."),
    ("GET", "/blocks?from=%C2%B2", b"", "from must be a non-negative integer"),
    ("GET", "/blocks?limit=" + _TOO_MANY_DIGITS, b"", "limit must be an integer in 1..100"),
    ("GET", "/blocks?timeout_ms=" + _TOO_MANY_DIGITS, b"", "timeout_ms must be an integer"),
    ("GET", "/stream?from=%C2%B3", b"", "from must be a non-negative integer"),
    ("GET", "/events?from=%C2%B9", b"", "from must be a non-negative integer"),
    ("POST", "/tx", b'{"tx": "00", "timeout_ms": "\\u00b2"}', "timeout_ms must be a non-nega"),
    (
        "POST",
        "/tx",
        b'{"tx": "00", "timeout_ms": "' + _TOO_MANY_DIGITS.encode() + b'"}',
        "timeout_ms must be an integer in 0..",
    ),
    (
        "POST",
        "/tx",
        b'{"tx": "00", "timeout_ms": ' + _TOO_MANY_DIGITS.encode() + b"}",
        "request body holds a number of more than 4300 digits",
    ),
    (
        "POST",
        "/query",
        b'{"app": "membership", "path": "x", "arguments": {"n": -' + b"1" * 5000 + b"}}",
        "request body holds a number of more than 4300 digits",
    ),
    # 400 before too, but with Python's words ("invalid literal for int()", "Exceeds the
    # limit ... sys.set_int_max_str_digits()") instead of the parameter's name.
    ("GET", "/events?until=%C2%B2", b"", "until must be a block height"),
    ("GET", "/events?until=" + _TOO_MANY_DIGITS, b"", "until must be a block height"),
    ("GET", "/events?after=%C2%B2-1", b"", "is not <height>-<number>"),
    ("GET", "/events?after=1-" + _TOO_MANY_DIGITS, b"", "is not <height>-<number>"),
)


async def test_numbers_python_cannot_convert_get_a_400_naming_the_parameter(
    tmp_path: Path,
) -> None:
    """Digits ``str.isdigit`` takes but ``int`` refuses ("²", "٣"), and numbers of more
    digits than ``int`` converts (4,300), in a path, a query string or a JSON body."""
    async with api_handlers(tmp_path) as handlers:
        for method, target, body, named in REGRESSIONS:
            for handler in handlers:
                response = await handler(request_of(method, target, {}, body))
                label = (method, target[:40], body[:40])
                assert response.status == 400, (label, response.status, response.body)
                error = json.loads(response.body)["error"]
                assert named in error, (label, error)
