"""What the client API's HTTP server costs per request (``suanpan bench http``).

The run starts a trio server of ``node.http`` in this process, with a handler that does nothing
but answer ``answer_bytes`` (the benchmark's submitter gets about 40 bytes for a batch that
was admitted whole), and a client in another process that sends ``requests`` POSTs of
``body_bytes`` (15 transactions of the benchmark's payments are about 5,000 bytes) on one
persistent HTTP/1.1 connection, each after the previous answer, with the submitter's headers
(``node.bench.submitter``). It reports, as the median over ``repeats`` rounds (a fresh client
and connection each):

* ``cpu_us_per_request``: this process's CPU time per request: all of the server's work
  (trio's scheduler, the socket calls, reading the request, framing the answer), nothing of
  the client's;
* ``requests_per_s``: the requests answered per second of wall-clock time.

The client checks every answer (status 200, the length sent): a round with a wrong answer
raises instead of reporting.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import trio

from node.http import Handler, HttpLimits, Request, Response, serve_http
from node.jsonvalue import JsonType
from node.submission import MSGPACK_CONTENT_TYPE

__all__ = ["HttpServerReport", "run_http_bench"]


@dataclass(frozen=True, slots=True)
class HttpServerReport:
    """The server's CPU µs and the wall-clock rate per request, medians over the rounds."""

    requests: int
    body_bytes: int
    answer_bytes: int
    repeats: int
    cpu_us_per_request: float
    requests_per_s: float

    def to_json(self) -> dict[str, JsonType]:
        return {
            "requests": self.requests,
            "body_bytes": self.body_bytes,
            "answer_bytes": self.answer_bytes,
            "repeats": self.repeats,
            "cpu_us_per_request": round(self.cpu_us_per_request, 1),
            "requests_per_s": round(self.requests_per_s, 1),
        }


def _client(port: int, requests: int, body_bytes: int, answer_bytes: int, out: Connection) -> None:
    """Say it is ready, send the requests one after another, then report "" or what went
    wrong."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": MSGPACK_CONTENT_TYPE, "Accept": MSGPACK_CONTENT_TYPE}
    body = b"\x91" * body_bytes
    problem = ""
    out.send("ready")
    try:
        for index in range(requests):
            connection.request("POST", "/txs", body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200 or len(answer) != answer_bytes:
                problem = (
                    f"request {index}: status {response.status}, {len(answer)} bytes"
                    f" (expected 200 and {answer_bytes})"
                )
                break
    except (OSError, http.client.HTTPException) as error:
        problem = f"{type(error).__name__}: {error}"
    finally:
        connection.close()
    out.send(problem)
    out.close()


def run_http_bench(
    *,
    requests: int = 5_000,
    body_bytes: int = 5_000,
    answer_bytes: int = 40,
    repeats: int = 3,
    handler: Handler | None = None,
) -> HttpServerReport:
    """Measure the server (see the module docstring). ``handler`` replaces the one that only
    answers (a test gives one that answers wrongly)."""
    if requests < 1 or repeats < 1 or body_bytes < 0 or answer_bytes < 0:
        raise ValueError("requests and repeats must be positive, sizes not negative")
    answer = b"\x80" * answer_bytes

    async def answer_only(request: Request) -> Response:
        return Response(200, answer, content_type=MSGPACK_CONTENT_TYPE)

    cpu_us: list[float] = []
    rates: list[float] = []
    problems: list[str] = []

    async def main() -> None:
        limits = HttpLimits(body_bytes_max=max(1024 * 1024, body_bytes))
        async with trio.open_nursery() as nursery:
            port: int = await nursery.start(
                serve_http, handler or answer_only, "127.0.0.1", 0, limits
            )
            context = multiprocessing.get_context("spawn")
            for _ in range(repeats):
                receiver, sender = context.Pipe(duplex=False)
                client = context.Process(
                    target=_client,
                    args=(port, requests, body_bytes, answer_bytes, sender),
                    daemon=True,
                )
                client.start()
                sender.close()
                # The spawned interpreter's start-up is not the server's work: the clocks
                # start when the client is about to connect.
                ready: str = await trio.to_thread.run_sync(receiver.recv)
                if ready != "ready":
                    problems.append(f"the client did not start: {ready}")
                    break
                cpu_started = time.process_time()
                wall_started = time.perf_counter()
                problem: str = await trio.to_thread.run_sync(receiver.recv)
                wall = time.perf_counter() - wall_started
                cpu = time.process_time() - cpu_started
                await trio.to_thread.run_sync(client.join)
                if problem:
                    problems.append(problem)
                    break
                cpu_us.append(cpu / requests * 1e6)
                rates.append(requests / wall)
            nursery.cancel_scope.cancel()

    trio.run(main)
    if problems:
        raise RuntimeError(f"the server answered wrongly: {problems[0]}")
    return HttpServerReport(
        requests=requests,
        body_bytes=body_bytes,
        answer_bytes=answer_bytes,
        repeats=repeats,
        cpu_us_per_request=statistics.median(cpu_us),
        requests_per_s=statistics.median(rates),
    )
