"""``suanpan bench http``: the server's CPU per request, and the client's check of each answer."""

from __future__ import annotations

import pytest

from node.bench.httpserver import run_http_bench
from node.http import Request, Response


def test_the_report_counts_every_request_of_every_round() -> None:
    report = run_http_bench(requests=200, body_bytes=300, answer_bytes=7, repeats=2)
    document = report.to_json()
    assert document["requests"] == 200
    assert document["repeats"] == 2
    assert report.cpu_us_per_request > 0
    assert report.requests_per_s > 0


def test_a_wrong_answer_fails_the_run_instead_of_being_measured() -> None:
    async def refuses(request: Request) -> Response:
        return Response(503, b"no")

    with pytest.raises(RuntimeError, match="status 503, 2 bytes"):
        run_http_bench(requests=20, repeats=1, handler=refuses)

    async def short(request: Request) -> Response:
        return Response(200, b"abc")

    with pytest.raises(RuntimeError, match="status 200, 3 bytes"):
        run_http_bench(requests=20, answer_bytes=4, repeats=1, handler=short)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="requests and repeats must be positive"):
        run_http_bench(requests=0)
