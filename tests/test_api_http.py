"""The trio + httptools server under the client API: keep-alive, limits, bad input, streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import trio

from node.http import HttpLimits, Request, Response, json_response, serve_http


async def echo(request: Request) -> Response:
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    if request.path == "/brokenstream":

        async def broken() -> AsyncIterator[bytes]:
            yield b"first\n"
            raise RuntimeError("stream bug")

        return Response(200, content_type="application/x-ndjson", stream=broken())
    if request.path == "/badheader":
        return Response(200, b"{}", headers=[("x-a", "1\r\nset-cookie: a=b")])
    if request.path == "/stream":

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                yield json.dumps({"n": i}).encode() + b"\n"

        return Response(200, content_type="application/x-ndjson", stream=chunks())
    return json_response(
        200,
        {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "body": request.body.decode(),
        },
    )


async def start(nursery: trio.Nursery, request_timeout_s: float = 10.0) -> int:
    limits = HttpLimits(body_bytes_max=1000, request_timeout_s=request_timeout_s)
    port: int = await nursery.start(serve_http, echo, "127.0.0.1", 0, limits)
    return port


async def exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        received = b""
        with trio.fail_after(30):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


async def test_keep_alive_serves_two_requests_on_one_connection() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        reply = await exchange(
            port,
            b"GET /a?x=1 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        )
        assert reply.count(b"HTTP/1.1 200") == 2
        assert b'"query":{"x":"1"}' in reply
        assert b'"body":"hi"' in reply
        nursery.cancel_scope.cancel()


async def test_oversized_body_gets_413_and_server_keeps_serving() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        reply = await exchange(
            port, b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000
        )
        assert reply.startswith(b"HTTP/1.1 413")
        assert b"exceeds 1000 bytes" in reply
        reply = await exchange(
            port,
            b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"100\r\n" + b"a" * 256 + b"\r\n" for _ in range(8))
            + b"0\r\n\r\n",
        )
        assert reply.startswith(b"HTTP/1.1 413")
        reply = await exchange(port, b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200")
        nursery.cancel_scope.cancel()


async def test_malformed_http_gets_400_and_handler_bug_gets_500() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        for garbage in (
            b"\x00\xff garbage\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        ):
            reply = await exchange(port, garbage)
            assert reply.startswith(b"HTTP/1.1 400"), reply
        reply = await exchange(port, b"GET /boom HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 500")
        reply = await exchange(port, b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200")
        nursery.cancel_scope.cancel()


async def test_slow_client_is_cut_with_408() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery, request_timeout_s=0.2)
        reply = await exchange(port, b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
        assert reply.startswith(b"HTTP/1.1 408")
        nursery.cancel_scope.cancel()


async def test_streaming_response_is_chunked_ndjson() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        reply = await exchange(
            port, b"GET /stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert b"transfer-encoding: chunked" in reply.lower()
        assert b'{"n": 2}' in reply
        nursery.cancel_scope.cancel()


async def test_head_gets_the_headers_of_get_and_no_body() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        reply = await exchange(
            port,
            b"HEAD /a HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        head, _, rest = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"content-length:" in head.lower()
        # No body after HEAD's headers: the next bytes are the GET's response on the same
        # connection.
        assert rest.startswith(b"HTTP/1.1 200"), rest[:80]
        assert b'"path":"/b"' in rest
        # A stream answered to HEAD is closed unread; the server does not hang on it.
        reply = await exchange(
            port, b"HEAD /stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert reply.startswith(b"HTTP/1.1 200")
        assert b'{"n"' not in reply
        nursery.cancel_scope.cancel()


async def test_content_length_with_chunked_is_refused_and_nothing_is_smuggled() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        reply = await exchange(
            port,
            b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
            b"\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
        assert b"both Content-Length and Transfer-Encoding" in reply
        assert reply.count(b"HTTP/1.1") == 1
        assert b"smuggled" not in reply
        nursery.cancel_scope.cancel()


BAD_REQUESTS = (
    b"\x00\xff garbage\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nZZZZ\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: t\r\n\r\n",
    b"GET /\xff\x00 HTTP/1.1\r\nHost: t\r\n\r\n",
    # Passes the parser but not urlsplit: once an exception that ended the server.
    b"GET http://[x/ HTTP/1.1\r\nHost: t\r\n\r\n",
    # A fragment stays with the client; the path before it was once served.
    b"GET /a#frag HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET http://t/a?b#c HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 20_000 + b"\r\n\r\n",
)
# What a Python repr or traceback would leak into an error message.
INTERNALS = (b"bytearray", b"b'", b'b"', b"\\x", b"\\r", b"Error", b"Traceback", b"<", b"0x")


async def test_every_bad_request_gets_a_plain_message_without_python_internals() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        for garbage in BAD_REQUESTS:
            reply = await exchange(port, garbage)
            status_line, _, rest = reply.partition(b"\r\n")
            status = int(status_line.split()[1])
            # 4xx, 501 for a transfer coding the server does not implement, 505 for a version.
            assert 400 <= status < 500 or status in (501, 505), (garbage[:60], status_line)
            body = rest.partition(b"\r\n\r\n")[2]
            message = json.loads(body)["error"].encode()
            assert message.startswith(b"malformed HTTP request"), (garbage[:60], message)
            for leak in INTERNALS:
                assert leak not in message, (garbage[:60], message)
        reply = await exchange(port, b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200")
        nursery.cancel_scope.cancel()


async def status_and_error(port: int, data: bytes) -> tuple[int, str]:
    reply = await exchange(port, data)
    status_line, _, rest = reply.partition(b"\r\n")
    return int(status_line.split()[1]), str(json.loads(rest.partition(b"\r\n\r\n")[2])["error"])


async def test_framing_the_parser_reads_but_the_server_refuses() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        cases = (
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
                501,
                "only chunked is accepted",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Length: 5\r\n\r\n0\r\n\r\n",
                400,
                "both Content-Length and Transfer-Encoding",
            ),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "repeated Host"),
            (b"GET / HTTP/1.1\r\nAccept: x\r\n\r\n", 400, "missing or repeated Host"),
            (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505, "only HTTP/1.0 and 1.1"),
            (b"GET / HTTP/1.1\r\nHost: t\n\r\n", 400, "lines end with CRLF"),
            (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1, 1\r\n\r\na", 400, "Content-Length"),
        )
        for data, status, fragment in cases:
            answer = await status_and_error(port, data)
            assert answer[0] == status, (data, answer)
            assert fragment in answer[1], (data, answer)
        # HTTP/1.0 needs no Host.
        reply = await exchange(port, b"GET /a HTTP/1.0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200"), reply
        nursery.cancel_scope.cancel()


async def test_a_head_that_arrives_in_pieces_is_cut_at_its_bound() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Long: ")
            received = b""
            with trio.fail_after(30):
                try:
                    for _ in range(40):  # 40,000 bytes of one header, 1,000 at a time
                        await trio.sleep(0.005)
                        await stream.send_all(b"a" * 1000)
                except trio.BrokenResourceError:
                    pass
                while chunk := await stream.receive_some(65536):
                    received += chunk
        assert received.startswith(b"HTTP/1.1 431"), received[:200]
        assert b"request head exceeds 16384 bytes" in received
        nursery.cancel_scope.cancel()


async def test_pipelined_requests_are_answered_in_order_up_to_a_malformed_one() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        reply = await exchange(
            port,
            b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /3 HTTP/1.1\r\nno colon\r\n\r\n"
            b"GET /4 HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        assert reply.count(b"HTTP/1.1 ") == 3, reply
        first, second = reply.index(b'"path":"/1"'), reply.index(b'"path":"/2"')
        assert first < second < reply.index(b"HTTP/1.1 400")
        assert b'"body":"abc"' in reply
        assert b'"/4"' not in reply
        # Nothing after a request that asked to close is answered.
        reply = await exchange(
            port,
            b"GET /1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            b"GET /2 HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        assert reply.count(b"HTTP/1.1 ") == 1, reply
        assert b"connection: close" in reply
        nursery.cancel_scope.cancel()


async def test_http_1_0_clients_keep_alive_only_when_asked_and_get_streams_unchunked() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        reply = await exchange(
            port,
            b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            b"GET /2 HTTP/1.0\r\n\r\nGET /3 HTTP/1.0\r\n\r\n",
        )
        assert reply.count(b"HTTP/1.1 200") == 2, reply
        assert b"connection: keep-alive" in reply.split(b'"path":"/1"')[0]
        assert b"connection: close" in reply.split(b'"path":"/1"')[1]
        assert b'"/3"' not in reply
        reply = await exchange(port, b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert b"transfer-encoding" not in head.lower()
        assert b"connection: close" in head
        assert body == b"".join(json.dumps({"n": i}).encode() + b"\n" for i in range(3))
        nursery.cancel_scope.cancel()


async def test_an_upgrade_request_is_answered_and_the_connection_closed() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        reply = await exchange(
            port,
            b"GET /1 HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
            b"GET /2 HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        assert reply.count(b"HTTP/1.1 200") == 1, reply
        assert b"connection: close" in reply
        assert b'"/2"' not in reply
        nursery.cancel_scope.cancel()


async def test_a_response_header_that_would_split_the_head_is_never_sent() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        reply = await exchange(port, b"GET /badheader HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reply == b""
        reply = await exchange(port, b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200")
        nursery.cancel_scope.cancel()


async def test_a_stream_that_fails_mid_response_ends_only_its_connection() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        reply = await exchange(port, b"GET /brokenstream HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200")
        assert b"first" in reply
        assert not reply.endswith(b"0\r\n\r\n")  # not ended as if it were whole
        reply = await exchange(port, b"GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200")
        nursery.cancel_scope.cancel()


async def test_a_target_is_split_into_path_and_query_as_sent() -> None:
    async with trio.open_nursery() as nursery:
        port = await start(nursery)
        for target, path, query in (
            (b"//evil.example/a/b?x=1", "//evil.example/a/b", {"x": "1"}),
            (b"/a%20b?x=%2F&y", "/a b", {"x": "/", "y": ""}),
            (b"http://host.example/c?z=2", "/c", {"z": "2"}),
        ):
            reply = await exchange(
                port, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            echoed = json.loads(reply.partition(b"\r\n\r\n")[2])
            assert (echoed["path"], echoed["query"]) == (path, query), target
        nursery.cancel_scope.cancel()
