"""The benchmark's open-loop submitter: pre-signed transactions at a fixed rate, in batches.

Theory of operation
-------------------
``run_submitter`` runs in its own process (``start_submitter``), so its CPU never competes with
the measuring process for the GIL. It gets one ``SubmitPlan`` per node: the node's API address,
the node's stream of encoded transactions (already signed, in an order that keeps each sender's
nonces ascending) and the node's share of the rate. One thread per node keeps one persistent
HTTP/1.1 connection and, every ``BATCH_INTERVAL_S``, sends every transaction that is due by the
schedule (``rate * elapsed``) as one binary ``POST /txs`` (``node.submission``). It is *open
loop*: a slow node does not slow the schedule; the batch just grows (up to
``BATCH_TRANSACTIONS_MAX``) so the offered rate holds until the node refuses or the connection
stalls, which the report shows.

Each transaction's submit time is the wall-clock time (``time.time()``, shared by every process
on the machine) just before its batch is written; a pushed-back transaction keeps the time it
was first offered too, so its latency can be counted from when the client first wanted it in.
The results (submit times, accepted count, refusals by code, transport errors, the submitter's
own CPU time) come back over a pipe.
"""

from __future__ import annotations

import http.client
import math
import multiprocessing
import resource
import threading
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Final

from node.submission import MSGPACK_CONTENT_TYPE, decode_answer, encode_submission

__all__ = [
    "BATCH_INTERVAL_S",
    "BATCH_TRANSACTIONS_MAX",
    "SubmitPlan",
    "SubmitResult",
    "SubmitterProcess",
    "run_submitter",
    "start_submitter",
]

# Batching period: short against the block interval, long enough to amortise each request.
BATCH_INTERVAL_S: Final = 0.02
# A batch never carries more than this (well under the API's 10,000 transactions and 1 MiB
# body bounds at ~330 bytes per transaction).
BATCH_TRANSACTIONS_MAX: Final = 1_000
# One request may wait this long for the node (a stalled node shows as transport errors).
REQUEST_TIMEOUT_S: Final = 30.0
# Pushed-back transactions are resent at most this long after the submission window.
RETRY_WINDOW_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class SubmitPlan:
    """What to submit to one node: its API address, the stream and the rate (tx/s)."""

    address: str
    transactions: list[bytes]
    rate: float


@dataclass(slots=True)
class SubmitResult:
    """What happened to one node's stream. ``submit_times[i]`` is the wall-clock time
    ``transactions[i]`` was last sent: the submission the node admitted (NaN when it was never
    sent, or refused for good); ``offer_times[i]`` the time it was first sent (equal unless the
    node pushed it back)."""

    address: str
    submit_times: array[float]
    offer_times: array[float]
    sent: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    # Refusals the node asked to retry (429 / ``retry``): resent after ``retry_after_ms``.
    pushed_back: int = 0
    # Still waiting to be resent when the retry window closed.
    abandoned: int = 0
    transport_errors: int = 0
    last_error: str = ""
    requests: int = 0


def _submit_stream(plan: SubmitPlan, start_at: float, duration_s: float, out: SubmitResult) -> None:
    """Send the plan's stream on schedule. A transaction the node pushes back (``retry``) is
    resent, with the sender's later ones, before anything new, once the node's
    ``retry_after_ms`` has passed; new transactions wait meanwhile (a client backing off),
    while the schedule keeps running."""
    host, _, port = plan.address.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT_S)
    transactions = plan.transactions
    total = min(len(transactions), int(plan.rate * duration_s))
    headers = {"Content-Type": MSGPACK_CONTENT_TYPE, "Accept": MSGPACK_CONTENT_TYPE}
    next_new = 0
    backlog: list[int] = []
    retry_at = 0.0
    give_up_at = start_at + duration_s + RETRY_WINDOW_S
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    while next_new < total or backlog:
        now = time.time()
        if now >= give_up_at:
            break
        if backlog and now < retry_at:
            time.sleep(min(BATCH_INTERVAL_S, retry_at - now))
            continue
        due = min(total, int((now - start_at) * plan.rate))
        indices = backlog[:BATCH_TRANSACTIONS_MAX]
        resent = len(indices)
        if resent == len(backlog):
            fresh = min(due - next_new, BATCH_TRANSACTIONS_MAX - resent)
            indices.extend(range(next_new, next_new + max(0, fresh)))
        if not indices:
            time.sleep(min(BATCH_INTERVAL_S, (next_new + 1) / plan.rate + start_at - now))
            continue
        fresh_count = len(indices) - resent
        body = encode_submission([transactions[index] for index in indices])
        submitted = time.time()
        offer_times = out.offer_times
        for index in indices:
            out.submit_times[index] = submitted
            if math.isnan(offer_times[index]):
                offer_times[index] = submitted
        retry_after_s = 0.0
        pushed: list[int] = []
        try:
            connection.request("POST", "/txs", body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            out.requests += 1
            if response.status not in (200, 429):
                out.rejected[f"http_{response.status}"] += len(indices)
                out.last_error = data[:200].decode("utf-8", "replace")
                for index in indices:
                    out.submit_times[index] = math.nan
            else:
                answer = decode_answer(data, len(indices))
                refused = {item.index: item for item in answer.rejected}
                tail = len(indices) if answer.refused_from is None else answer.refused_from
                for position, index in enumerate(indices):
                    item = refused.get(position) if position < tail else answer.refusal
                    if item is None:
                        out.accepted += 1
                    elif item.retry:
                        pushed.append(index)
                        retry_after_s = max(retry_after_s, item.retry_after_ms / 1000)
                    else:
                        out.rejected[item.code] += 1
                        out.last_error = item.error
                        out.submit_times[index] = math.nan
        except (OSError, http.client.HTTPException, ValueError) as error:
            out.transport_errors += 1
            out.last_error = f"{type(error).__name__}: {error}"
            for index in indices:
                out.submit_times[index] = math.nan
            connection.close()
            connection = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT_S)
        out.pushed_back += len(pushed)
        backlog = sorted(pushed + backlog[resent:])
        if pushed:
            retry_at = time.time() + retry_after_s
        next_new += fresh_count
        out.sent = max(out.sent, next_new)
        elapsed = time.time() - now
        if elapsed < BATCH_INTERVAL_S:
            time.sleep(BATCH_INTERVAL_S - elapsed)
    for index in backlog:
        out.submit_times[index] = math.nan
    out.abandoned = len(backlog)
    connection.close()


def run_submitter(
    plans: list[SubmitPlan], start_at: float, duration_s: float
) -> tuple[list[SubmitResult], float]:
    """Submit every plan from wall-clock ``start_at`` for ``duration_s`` (one thread per
    plan); returns the results and this process's CPU seconds."""
    results = [
        SubmitResult(
            plan.address,
            array("d", [math.nan]) * len(plan.transactions),
            array("d", [math.nan]) * len(plan.transactions),
        )
        for plan in plans
    ]
    threads = [
        threading.Thread(target=_submit_stream, args=(plan, start_at, duration_s, result))
        for plan, result in zip(plans, results, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return results, usage.ru_utime + usage.ru_stime


def _process_main(
    connection: Connection, plans: list[SubmitPlan], start_at: float, duration_s: float
) -> None:
    connection.send(run_submitter(plans, start_at, duration_s))
    connection.close()


class SubmitterProcess:
    """A running submitter process; ``result()`` waits for it."""

    def __init__(self, plans: list[SubmitPlan], start_at: float, duration_s: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._receiver, sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_process_main, args=(sender, plans, start_at, duration_s), daemon=True
        )
        self._process.start()
        sender.close()

    @property
    def pid(self) -> int | None:
        """The process id."""
        return self._process.pid

    def stop(self) -> None:
        """Stop submitting now (the results are discarded)."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=10)

    def result(self, timeout_s: float) -> tuple[list[SubmitResult], float]:
        """The results; raises ``TimeoutError`` when the process does not finish in time."""
        if not self._receiver.poll(timeout_s):
            self._process.kill()
            raise TimeoutError("the submitter did not finish in time")
        results: tuple[list[SubmitResult], float] = self._receiver.recv()
        self._process.join(timeout=10)
        return results


def start_submitter(
    plans: list[SubmitPlan], start_at: float, duration_s: float
) -> SubmitterProcess:
    """Start the submitter in its own process."""
    return SubmitterProcess(plans, start_at, duration_s)
