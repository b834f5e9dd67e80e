"""The client API: routes, request validation and JSON shapes, over ``node.http``.

Endpoints (all JSON unless noted; hashes and keys are lowercase hex):

====== ============================ =====================================================
method path                         what
====== ============================ =====================================================
GET    /healthz                     ``{"ok", "height", "problems"}``: 200 while the node is
                                    current, 503 naming why when it is stale, isolated,
                                    behind, or its store was found damaged
GET    /status                      problems (as /healthz), height, view, primary, peers,
                                    validators, app hash, mempool size, syncing, chain id,
                                    genesis hash, software version, last block time
POST   /tx                          body ``{"tx": hex, "wait": bool, "timeout_ms": int}``:
                                    submit a signed transaction; returns its hash and
                                    status (``pending``; with ``wait``: ``committed`` or
                                    ``rejected`` with the reason, or ``pending`` on timeout)
POST   /txs                         body ``{"txs": [hex, ...]}``, or with
                                    ``Content-Type: application/msgpack`` a msgpack array
                                    of the transactions' bytes (``node.submission``):
                                    submit many signed transactions at once (one signature
                                    batch on the worker threads); returns ``{"accepted",
                                    "rejected": [{"index", "hash", "code", "error",
                                    "retry", "retry_after_ms"}]}``; in msgpack with
                                    ``Accept: application/msgpack``, a refused tail as
                                    one entry (``refused_from``, ``refusal``)
GET    /tx/{hash}                   status, block height and index, receipt with events
GET    /block/latest                the last committed block with its certificate
GET    /block/{height}              a block by height (``?transactions=1`` adds the bodies)
GET    /block/hash/{hash}           a block by hash
POST   /query                       body ``{"app", "path", "arguments", "prove"}``: an app
                                    query; with ``"prove": true`` (or ``?prove=1``) on the
                                    latest certified state, with ``proof``: the block that
                                    certifies it and a Merkle proof of every key it read
GET    /account/{public_key}        ``{"next_nonce"}``: the nonce the sender's next
                                    transaction needs (committed plus pending ones)
GET    /evidence                    equivocation evidence recorded by this node
GET    /blocks?from=H&timeout_ms=T  long poll: blocks from height H (waits up to T for H)
GET    /stream?from=H               NDJSON stream: one line per committed block (header,
                                    tx hashes, certificate); receipts via /tx/{hash}
GET    /events?from=H&app=..&kind=..&account=..&types=..
                                    Server-Sent Events: blocks, receipts and app events as
                                    they commit, resumable with ``Last-Event-ID``, scoped by
                                    the read rules (``node.events``)
GET    /metrics                     Prometheus text exposition
GET    /openapi.json                this API as an OpenAPI 3.1 document, with every query and
                                    operation of the chain's apps and their arguments
                                    (``node.openapi``)
====== ============================ =====================================================

Errors are ``{"error": "<what is wrong>"}`` with 400 (malformed request: names the field),
401 (a signed request whose signature, time or nonce is refused), 403 (the read rules refuse
the caller: ``{"error", "code": "forbidden", "rule"}`` names the rule), 404 (unknown path or
object), 405, 413 (body too large), 422 (a well-formed transaction refused: ``{"error",
"code"}``), 429 with ``Retry-After`` (a per-client limit; or the node is at capacity: retry
then; ``POST /txs`` answers 429 when it admitted nothing of the batch for that reason, and
every refusal carries ``retry`` and ``retry_after_ms``), 503 (too many connections, the
node is stopping, or ``"code": "store_damaged"``: a read met damage in the node's store).

Access: every request may be signed (``node.auth``); ``node.access`` turns the signature into a
caller and checks app data against the apps' read rules. Public: health, status, metrics,
blocks and their headers, certificates, evidence, the NDJSON block stream, transaction
submission (a transaction carries its own signature; an unsigned submitter is told the
outcome, not the receipt, unless the rules let it read the receipt). Scoped: queries,
``/tx/{hash}`` receipts, ``/account/{key}``, ``/events``; block bodies
(``?transactions=1``) are for nodes only.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import trio

from apps.base import Event
from apps.proofs import QueryProof
from apps.transaction import TX_BYTES_MAX
from consensus.codec import Value
from node.access import ACCESS_OPEN, AccessControl, AccessDenied, KeyLimited, Principal
from node.auth import AuthenticationError, RequestVerifier
from node.digits import decimal_value, is_decimal
from node.events import EventSource, event_stream, parse_event_id, parse_filter
from node.http import Request, Response, json_response
from node.jsonvalue import JsonType, JsonValueError, from_json, to_json
from node.phases import PhaseClock
from node.store import StoreDamagedError
from node.submission import (
    MSGPACK_CONTENT_TYPE,
    Rejection,
    SubmissionAnswer,
    SubmissionError,
    decode_submission,
    encode_answer,
    named_hash,
)

__all__ = [
    "STORE_DAMAGED_ANSWER",
    "ApiBackend",
    "CommittedTransaction",
    "Health",
    "QueryError",
    "SubmitOutcome",
    "make_handler",
]

# One /blocks poll returns at most this many blocks: bounds response size; clients page on.
BLOCKS_PER_POLL_MAX: Final = 100
# One POST /txs carries at most this many transactions: bounds the work of one request (the
# body size is bounded separately by ``[rpc] body_bytes_max``).
TXS_PER_SUBMIT_MAX: Final = 10_000
_HASH_HEX_LENGTH: Final = 64
# The answer to a request whose read met damage in the node's store.
STORE_DAMAGED_ANSWER: Final = (
    "this node cannot answer: a read met damage in its store; its operator must restore the "
    "store (the node's log says where: store_damaged), so ask another node meanwhile"
)
# Its document, and that document as a stream's last line (NDJSON) or message (SSE).
_STORE_DAMAGED: Final = {"error": STORE_DAMAGED_ANSWER, "code": "store_damaged"}
_STORE_DAMAGED_JSON: Final = json.dumps(_STORE_DAMAGED, separators=(",", ":"))


class QueryError(Exception):
    """An app refused a query (unknown app or path, bad arguments)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# Not frozen: a frozen dataclass's constructor sets each field through ``object.__setattr__``,
# five times the cost, and admission builds one of these for every transaction it takes in.
@dataclass(slots=True)
class SubmitOutcome:
    """What admission said about a submitted transaction (read-only by convention: one
    refusal may stand for a whole batch)."""

    hash: bytes | None
    accepted: bool
    code: str = ""
    message: str = ""
    # True when refusal is due to load (mempool full): the client should retry later.
    retry: bool = False
    # With ``retry``: when to come back (the API's ``Retry-After``).
    retry_after_ms: int = 0


@dataclass(frozen=True, slots=True)
class CommittedTransaction:
    """Who sent a committed transaction, to which app, and the events of its receipt: what the
    read rules need to decide who may read the receipt."""

    sender: bytes
    app: str
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class Health:
    """``/healthz``: ``problems`` is empty while the node is current; each names a reason."""

    height: int
    problems: tuple[str, ...]
    last_block_age_ms: int


class ApiBackend(EventSource, Protocol):
    """What the API needs from the node runtime."""

    def status(self) -> dict[str, JsonType]:
        """The node status document."""
        ...

    def height(self) -> int:
        """Last committed height."""
        ...

    async def submit(self, data: bytes) -> SubmitOutcome:
        """Stateless checks (off the event loop), then mempool admission."""
        ...

    async def submit_many(self, transactions: list[bytes]) -> list[SubmitOutcome]:
        """``submit`` for a batch, in order (one outcome per transaction)."""
        ...

    def transaction(self, tx_hash: bytes) -> dict[str, JsonType] | None:
        """Status document of a transaction, or None when the node never saw it."""
        ...

    async def wait_transaction(self, tx_hash: bytes, timeout_s: float) -> None:
        """Return when the transaction is committed or rejected, or at the timeout."""
        ...

    def block(self, height: int, *, transactions: bool) -> dict[str, JsonType] | None:
        """A committed block document."""
        ...

    def block_height_of(self, block_hash: bytes) -> int | None:
        """Height of the committed block with this hash."""
        ...

    async def wait_for_height(self, height: int, timeout_s: float) -> None:
        """Return when ``height`` is committed, or at the timeout."""
        ...

    def query(self, app: str, path: str, arguments: Value) -> Value:
        """Answer an app query; raise ``QueryError``."""
        ...

    def query_proven(self, app: str, path: str, arguments: Value) -> tuple[Value, QueryProof]:
        """Answer an app query on the latest certified state with its proof; raise
        ``QueryError`` (``not_provable``, ``not_certified``, or the app's refusal)."""
        ...

    def evidence(self) -> list[JsonType]:
        """Recorded equivocation evidence."""
        ...

    def next_nonce(self, sender: bytes) -> int:
        """The nonce the sender's next transaction must carry (after its pending ones)."""
        ...

    def metrics_bytes(self) -> bytes:
        """Prometheus exposition."""
        ...

    def committed_transaction(self, tx_hash: bytes) -> CommittedTransaction | None:
        """Sender, app and receipt events of a committed transaction, or None."""
        ...

    def health(self) -> Health:
        """Whether the node is current (fresh blocks, peers, not behind)."""
        ...

    def store_damaged(self, error: StoreDamagedError) -> None:
        """A request's read met damage in the node's store (``/healthz`` says so from now on)."""
        ...


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _parse_json_body(request: Request) -> dict[str, object]:
    if not request.body:
        raise _BadRequest("request body is empty; expected a JSON object")
    try:
        document = json.loads(request.body.decode("utf-8"))
    except UnicodeDecodeError:
        raise _BadRequest("request body is not UTF-8") from None
    except json.JSONDecodeError as error:
        raise _BadRequest(f"request body is not valid JSON: {error}") from None
    except RecursionError:
        raise _BadRequest("request body is nested too deeply") from None
    except ValueError:
        # Python refuses to convert an integer of more digits than this (``json`` raises a
        # bare ValueError, not a JSONDecodeError).
        raise _BadRequest(
            f"request body holds a number of more than {sys.get_int_max_str_digits()} digits"
        ) from None
    if not isinstance(document, dict):
        raise _BadRequest("request body must be a JSON object")
    return document


def _hex_field(value: object, name: str, length: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise _BadRequest(f"{name} must be a hex string")
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise _BadRequest(f"{name} is not valid hex") from None
    if length is not None and len(data) != length:
        raise _BadRequest(f"{name} must be {length} bytes ({2 * length} hex digits)")
    return data


def _int_param(value: object, name: str, low: int, high: int, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, str):
        if not is_decimal(value):
            raise _BadRequest(f"{name} must be a non-negative integer")
        # Past ``high``'s digits it is out of range.
        number = decimal_value(value, len(str(high)))
        value = high + 1 if number is None else number
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _BadRequest(f"{name} must be an integer in {low}..{high}")
    return value


def _retry_later(response: Response, outcomes: list[SubmitOutcome]) -> Response:
    """Add ``Retry-After`` (whole seconds, rounded up) when any refusal may be retried."""
    waits = [outcome.retry_after_ms for outcome in outcomes if outcome.retry]
    if waits:
        response.headers.append(("retry-after", str(max(1, -(-max(waits) // 1000)))))
    return response


def _refused_tail(outcomes: Sequence[SubmitOutcome]) -> int:
    """Where a batch's refused tail starts: the run at the end of ``outcomes`` of one shared
    refusal without a hash (the node refuses what exceeds its admission limit as one); the
    length of ``outcomes`` when there is none."""
    end = len(outcomes)
    if not end:
        return end
    last = outcomes[-1]
    if last.accepted or last.hash is not None:
        return end
    start = end - 1
    while start > 0 and outcomes[start - 1] is last:
        start -= 1
    return start


def _rejection(index: int, outcome: SubmitOutcome) -> Rejection:
    """The refusal ``outcome`` of the batch's transaction ``index``."""
    return Rejection(
        index, outcome.hash, outcome.code, outcome.message, outcome.retry, outcome.retry_after_ms
    )


def _answer(outcomes: Sequence[SubmitOutcome], tail: int, accepted: int) -> SubmissionAnswer:
    """The msgpack answer: refusals before ``tail`` one by one, the tail as one."""
    rejected = tuple(
        _rejection(index, outcome)
        for index, outcome in enumerate(outcomes[:tail])
        if not outcome.accepted
    )
    if tail == len(outcomes):
        return SubmissionAnswer(len(outcomes), accepted, rejected)
    return SubmissionAnswer(
        len(outcomes), accepted, rejected, tail, _rejection(tail, outcomes[tail])
    )


def _wants_msgpack(request: Request) -> bool:
    """Whether the client asked for a msgpack answer (``Accept: application/msgpack``)."""
    accept = request.headers.get("accept", "")
    kinds = (part.split(";")[0].strip().lower() for part in accept.split(","))
    return MSGPACK_CONTENT_TYPE in kinds


def make_handler(
    backend: ApiBackend,
    *,
    wait_timeout_ms_max: int,
    access: AccessControl | None = None,
    phases: PhaseClock | None = None,
    openapi: Mapping[str, JsonType] | None = None,
) -> _Handler:
    """The request handler for ``node.http.serve_http``. Without ``access``, every read is
    allowed and requests are not authenticated (a server for tests and tools only);
    ``phases`` is charged the CPU time of parsing submission bodies (``intake``); ``openapi``
    is the document ``GET /openapi.json`` serves (``node.openapi``; 404 without it)."""
    return _Handler(backend, wait_timeout_ms_max, access, phases or PhaseClock(), openapi)


def _open_access(backend: ApiBackend) -> AccessControl:
    def no_rules(_: str) -> None:
        return None

    return AccessControl(
        mode=ACCESS_OPEN,
        verifier=RequestVerifier("unauthenticated"),
        query=backend.query,
        rules_of=no_rules,
        node_keys=frozenset(),
        height=backend.height,
    )


class _Handler:
    def __init__(
        self,
        backend: ApiBackend,
        wait_timeout_ms_max: int,
        access: AccessControl | None,
        phases: PhaseClock,
        openapi: Mapping[str, JsonType] | None = None,
    ) -> None:
        self._backend = backend
        # Encoded once: the document is fixed for the life of the node.
        self._openapi = None if openapi is None else json_response(200, dict(openapi)).body
        self._wait_ms_max = wait_timeout_ms_max
        self._authenticate = access is not None
        self._access = access if access is not None else _open_access(backend)
        self._phases = phases

    async def __call__(self, request: Request) -> Response:
        try:
            principal = (
                self._access.authenticate(request) if self._authenticate else Principal("node")
            )
            return await self._route(request, principal)
        except _BadRequest as error:
            return json_response(error.status, {"error": str(error)})
        except AuthenticationError as error:
            return json_response(error.status, {"error": str(error), "code": error.reason})
        except KeyLimited as limited:
            response = json_response(
                429, {"error": limited.refusal.message, "code": limited.refusal.reason}
            )
            response.headers.append(("retry-after", str(limited.refusal.retry_after_s)))
            return response
        except AccessDenied as denied:
            return json_response(
                403, {"error": denied.message, "code": "forbidden", "rule": denied.rule}
            )
        except StoreDamagedError as error:
            # The operator's business, not the client's: the file and what was met go to the
            # log (the store's path is not for clients), and ``/healthz`` names the damage.
            self._backend.store_damaged(error)
            return json_response(503, _STORE_DAMAGED)

    async def _route(self, request: Request, principal: Principal) -> Response:
        parts = [part for part in request.path.split("/") if part]
        method = request.method
        if parts in (["tx"], ["txs"], ["query"]):
            if method != "POST":
                raise _BadRequest(f"use POST for /{parts[0]}", 405)
        elif method not in ("GET", "HEAD"):
            raise _BadRequest(f"use GET for {request.path}", 405)
        match parts:
            case ["healthz"]:
                health = self._backend.health()
                return json_response(
                    503 if health.problems else 200,
                    {
                        "ok": not health.problems,
                        "height": health.height,
                        "last_block_age_ms": health.last_block_age_ms,
                        "problems": list(health.problems),
                    },
                )
            case ["status"]:
                return json_response(200, self._backend.status())
            case ["metrics"]:
                return Response(
                    200, self._backend.metrics_bytes(), "text/plain; version=0.0.4; charset=utf-8"
                )
            case ["tx"]:
                return await self._submit(request, principal)
            case ["txs"]:
                return await self._submit_many(request)
            case ["tx", hash_hex]:
                tx_hash = _hex_field(hash_hex, "transaction hash", 32)
                document = self._backend.transaction(tx_hash)
                if document is None:
                    raise _BadRequest(f"transaction {hash_hex} is unknown to this node", 404)
                committed = self._backend.committed_transaction(tx_hash)
                if committed is not None:
                    self._access.check_receipt(
                        principal,
                        committed.sender,
                        committed.app,
                        committed.events,
                        f"the receipt of transaction {hash_hex[:16]}",
                    )
                return json_response(200, document)
            case ["block", "latest"]:
                return self._block(self._backend.height(), request, principal)
            case ["block", "hash", hash_hex]:
                height = self._backend.block_height_of(_hex_field(hash_hex, "block hash", 32))
                if height is None:
                    raise _BadRequest(f"no committed block has hash {hash_hex}", 404)
                return self._block(height, request, principal)
            case ["block", height_text]:
                return self._block(
                    _int_param(height_text, "height", 1, 2**63 - 1, 1), request, principal
                )
            case ["query"]:
                return self._query(request, principal)
            case ["account", key_hex]:
                sender = _hex_field(key_hex, "public key", 32)
                self._access.require_account(principal, sender, "/account (next nonce)")
                return json_response(
                    200, {"public_key": key_hex, "next_nonce": self._backend.next_nonce(sender)}
                )
            case ["evidence"]:
                return json_response(200, {"evidence": self._backend.evidence()})
            case ["blocks"]:
                return await self._blocks(request)
            case ["stream"]:
                return self._stream(request)
            case ["events"]:
                return self._events(request, principal)
            case ["openapi.json"] if self._openapi is not None:
                return Response(200, self._openapi, "application/json")
        raise _BadRequest(f"no such endpoint: {request.path}", 404)

    def _block(self, height: int, request: Request, principal: Principal) -> Response:
        full = request.query.get("transactions", "") in ("1", "true")
        if full:
            self._access.require_node(principal, "block transaction bodies (?transactions=1)")
        document = self._backend.block(height, transactions=full)
        if document is None:
            raise _BadRequest(
                f"no committed block at height {height} (height is {self._backend.height()})",
                404,
            )
        return json_response(200, document)

    async def _submit(self, request: Request, principal: Principal) -> Response:
        body = _parse_json_body(request)
        unknown = set(body) - {"tx", "wait", "timeout_ms"}
        if unknown:
            raise _BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
        data = _hex_field(body.get("tx"), "tx")
        if not data:
            raise _BadRequest("tx is empty")
        wait = body.get("wait", False)
        if not isinstance(wait, bool):
            raise _BadRequest("wait must be true or false")
        timeout_ms = _int_param(
            body.get("timeout_ms"),
            "timeout_ms",
            0,
            self._wait_ms_max,
            min(30_000, self._wait_ms_max),
        )
        outcome = await self._backend.submit(data)
        if not outcome.accepted:
            document: dict[str, JsonType] = {
                "error": outcome.message,
                "code": outcome.code,
                "status": "rejected",
            }
            named = named_hash(outcome.hash, outcome.retry, data)
            if named is not None:
                document["hash"] = named
            if outcome.retry:
                document["retry_after_ms"] = outcome.retry_after_ms
                return _retry_later(json_response(429, document), [outcome])
            return json_response(422, document)
        assert outcome.hash is not None
        if wait:
            await self._backend.wait_transaction(outcome.hash, timeout_ms / 1000)
        document = self._backend.transaction(outcome.hash) or {
            "hash": outcome.hash.hex(),
            "status": "pending",
        }
        committed = self._backend.committed_transaction(outcome.hash)
        if committed is not None and not self._access.receipt_visible(
            principal, committed.sender, committed.app, committed.events
        ):
            document = {key: value for key, value in document.items() if key != "receipt"}
            document["receipt_withheld"] = (
                "sign the request with a key the read rules let read this receipt"
            )
        return json_response(200, document)

    async def _submit_many(self, request: Request) -> Response:
        with self._phases.measure("intake"):
            transactions = self._submitted_transactions(request)
        outcomes = await self._backend.submit_many(transactions) if transactions else []
        with self._phases.measure("intake"):
            # The outcomes up to the refused tail, and the tail's one shared refusal.
            tail = _refused_tail(outcomes)
            distinct = outcomes[: tail + 1]
            accepted = sum(1 for outcome in distinct if outcome.accepted)
            # Nothing admitted and the node asks to come back later: the whole batch was
            # pushed back (429); otherwise the per-transaction outcomes say it all (200).
            pushed_back = accepted == 0 and any(outcome.retry for outcome in distinct)
            status = 429 if pushed_back else 200
            if _wants_msgpack(request):
                response = Response(
                    status,
                    encode_answer(_answer(outcomes, tail, accepted)),
                    content_type=MSGPACK_CONTENT_TYPE,
                )
            else:
                rejected: list[JsonType] = [
                    _rejection(index, outcome).json_document(transactions[index])
                    for index, outcome in enumerate(outcomes)
                    if not outcome.accepted
                ]
                response = json_response(status, {"accepted": accepted, "rejected": rejected})
            return _retry_later(response, distinct)

    def _submitted_transactions(self, request: Request) -> list[bytes]:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == MSGPACK_CONTENT_TYPE:
            try:
                return decode_submission(
                    request.body, count_max=TXS_PER_SUBMIT_MAX, item_bytes_max=TX_BYTES_MAX
                )
            except SubmissionError as error:
                raise _BadRequest(str(error)) from None
        body = _parse_json_body(request)
        unknown = set(body) - {"txs"}
        if unknown:
            raise _BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
        items = body.get("txs")
        if not isinstance(items, list):
            raise _BadRequest("txs must be a list of hex strings")
        if len(items) > TXS_PER_SUBMIT_MAX:
            raise _BadRequest(f"txs holds {len(items)} transactions; at most {TXS_PER_SUBMIT_MAX}")
        transactions = []
        for index, item in enumerate(items):
            data = _hex_field(item, f"txs[{index}]")
            if not data:
                raise _BadRequest(f"txs[{index}] is empty")
            transactions.append(data)
        return transactions

    def _query(self, request: Request, principal: Principal) -> Response:
        body = _parse_json_body(request)
        unknown = set(body) - {"app", "path", "arguments", "prove"}
        if unknown:
            raise _BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
        prove = body.get("prove", request.query.get("prove", "") in ("1", "true"))
        if not isinstance(prove, bool):
            raise _BadRequest("prove must be true or false")
        app, path = body.get("app"), body.get("path")
        if not isinstance(app, str) or not app:
            raise _BadRequest("app must be a non-empty string")
        if not isinstance(path, str) or not path:
            raise _BadRequest("path must be a non-empty string")
        try:
            arguments = from_json(body.get("arguments", {}), "arguments")
        except JsonValueError as error:
            raise _BadRequest(str(error)) from None
        if isinstance(arguments, dict):
            # Refused by the arguments alone: before the query runs (its time tells nothing).
            self._access.check_arguments(principal, app, path, arguments, proven=prove)
        proof: QueryProof | None = None
        try:
            if prove:
                result, proof = self._backend.query_proven(app, path, arguments)
            else:
                result = self._backend.query(app, path, arguments)
        except QueryError as error:
            status = {"unknown_app": 404, "not_certified": 503}.get(error.code, 422)
            return json_response(status, {"error": error.message, "code": error.code})
        assert isinstance(arguments, dict)  # the backend refuses anything else
        # A proven answer carries the values the query read and is checked like any answer.
        self._access.check_query(principal, app, path, arguments, result, proven=proof is not None)
        if proof is None:
            return json_response(200, {"result": to_json(result)})
        summary: dict[str, JsonType] = {
            "height": proof.height,
            "block": proof.header.height,
            "app_hash": proof.header.app_hash.hex(),
            "keys": len(proof.reads),
            "encoded": proof.encode().hex(),
        }
        return json_response(200, {"result": to_json(result), "proof": summary})

    async def _blocks(self, request: Request) -> Response:
        start = _int_param(request.query.get("from"), "from", 1, 2**63 - 1, 1)
        limit = _int_param(request.query.get("limit"), "limit", 1, BLOCKS_PER_POLL_MAX, 20)
        timeout_ms = _int_param(
            request.query.get("timeout_ms"), "timeout_ms", 0, self._wait_ms_max, 0
        )
        if self._backend.height() < start and timeout_ms:
            await self._backend.wait_for_height(start, timeout_ms / 1000)
        top = min(self._backend.height(), start + limit - 1)
        blocks = [
            self._backend.block(height, transactions=False) for height in range(start, top + 1)
        ]
        return json_response(
            200, {"height": self._backend.height(), "blocks": [b for b in blocks if b is not None]}
        )

    def _stream(self, request: Request) -> Response:
        start = _int_param(
            request.query.get("from"), "from", 1, 2**63 - 1, self._backend.height() + 1
        )
        backend = self._backend

        async def lines() -> AsyncGenerator[bytes, None]:
            height = start
            while True:
                if backend.height() < height:
                    # A heartbeat line every few seconds lets clients notice a dead node.
                    await backend.wait_for_height(height, 5.0)
                    if backend.height() < height:
                        yield b'{"heartbeat":true}\n'
                        continue
                document = backend.block(height, transactions=False)
                if document is not None:
                    yield (json.dumps(document, separators=(",", ":")) + "\n").encode()
                height += 1
                await trio.lowlevel.checkpoint()

        return Response(
            200,
            content_type="application/x-ndjson",
            stream=self._until_damage(lines(), f"{_STORE_DAMAGED_JSON}\n".encode()),
        )

    def _events(self, request: Request, principal: Principal) -> Response:
        try:
            wanted = parse_filter(request.query)
        except ValueError as error:
            raise _BadRequest(str(error)) from None
        for account in sorted(wanted.accounts):
            self._access.require_account(principal, account, "/events?account")
        resume = request.headers.get("last-event-id") or request.query.get("after")
        if resume:
            try:
                start, after = parse_event_id(resume)
            except ValueError as error:
                raise _BadRequest(str(error)) from None
        else:
            start = _int_param(
                request.query.get("from"), "from", 1, 2**63 - 1, self._backend.height() + 1
            )
            after = -1
        stream = event_stream(self._backend, self._access, principal, wanted, start, after)
        return Response(
            200,
            content_type="text/event-stream",
            stream=self._until_damage(
                stream, f"event: error\ndata: {_STORE_DAMAGED_JSON}\n\n".encode()
            ),
        )

    async def _until_damage(
        self, chunks: AsyncGenerator[bytes, None], last: bytes
    ) -> AsyncIterator[bytes]:
        """``chunks`` until a read meets damage in the store: then ``last`` (the stream's own
        form of the ``store_damaged`` answer) ends the stream, and the node records the damage
        as for any request (a client resumes from its last height or event id elsewhere)."""
        async with contextlib.aclosing(chunks):
            try:
                async for chunk in chunks:
                    yield chunk
            except StoreDamagedError as error:
                self._backend.store_damaged(error)
                yield last
