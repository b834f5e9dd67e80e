"""A synchronous Python client for a node's client API (``http.client``, one keep-alive
connection, reconnecting when the node closed it).

    client = Client("127.0.0.1:26657", key=alice)    # key: signs every request (node.auth)
    client.status()["height"]
    client.submit(transaction.encoded, wait=True)["status"]   # "committed" / "rejected"
    client.send("payments", "transfer", {...}, key, wait=True)  # signs with the next nonce
    client.query_app("payments", "balances", account=public_key)
    client.query_proven("payments", "balance", {...}, genesis)   # verified, or ProofRefused
    for event in client.events(app="payments", account=alice.public_key):  # follows commits
        print(event.kind, event.data)

Arguments are checked client-side against the app's schema (``apps.schema``, from the
installed app) before anything is signed or sent: ``send`` and ``query`` raise
``ArgumentsRefused`` naming the argument, exactly as the app would refuse it (``check=False``
skips this, and an app that is not installed here or declares no schema is not checked).

With ``key``, every request carries the key's signature, so the node's read rules know who is
asking; without it, requests are anonymous and reach public data only. ``https://host:port``
(or ``tls=``, an ``ssl.SSLContext``) talks TLS; ``tls_context`` builds one from a CA file and,
for mutual TLS, a client certificate and key.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
import urllib.parse
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from apps.base import App, AppError
from apps.host import CODE_APP_FAULT
from apps.merkle import ProofError
from apps.proofs import (
    ProofUnsupported,
    ProvenReads,
    QueryProof,
    certifying_validators,
    verify_query_proof,
)
from apps.schema import AppSchema, Operation, Query
from apps.state import NamespacedState
from apps.transaction import Transaction, sign_transaction
from consensus.codec import Value
from consensus.crypto import PrivateKey
from node.apploader import AppLoadError, app_classes, load_apps
from node.auth import sign_request
from node.digits import decimal_value
from node.genesis import Genesis
from node.jsonvalue import JsonType, from_json, to_json
from node.submission import (
    MSGPACK_CONTENT_TYPE,
    SubmissionError,
    decode_answer,
    encode_submission,
)

__all__ = [
    "ApiError",
    "ArgumentsRefused",
    "Client",
    "ProofRefused",
    "ProvenAnswer",
    "StreamEvent",
    "check_arguments",
    "tls_context",
]

# Responses are JSON documents of at most a few MiB (a block with transactions).
_RESPONSE_BYTES_MAX: Final = 64 * 1024 * 1024
# One waiting request (submit with wait, block long poll) lasts at most this long: well under
# the node's cap (``rpc.wait_timeout_ms_max``, 60 s by default); longer waits repeat it.
_WAIT_REQUEST_MS_MAX: Final = 10_000
# One SSE line of the event stream: a receipt with its events, well under the node's limits.
_EVENT_LINE_BYTES_MAX: Final = 16 * 1024 * 1024
# After the event stream broke, reconnect after this long (the node's ``retry:`` overrides it).
_EVENT_RETRY_S: Final = 2.0


def tls_context(
    ca_file: Path | None = None,
    certificate_file: Path | None = None,
    key_file: Path | None = None,
) -> ssl.SSLContext:
    """A client TLS context trusting ``ca_file`` (default: the system's CAs), presenting
    ``certificate_file``/``key_file`` when the node requires client certificates."""
    context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certificate_file is not None:
        context.load_cert_chain(certificate_file, key_file)
    return context


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One item of ``GET /events``: ``kind`` (block, receipt, app_event, scope, end), its
    ``id`` (``<height>-<number>``; "" for scope and end) and its JSON ``data``."""

    kind: str
    id: str
    data: dict[str, JsonType]


class ApiError(Exception):
    """The node answered with an error status (``status``, ``message``, optional ``code`` and,
    for a read the rules refuse, the ``rule``), or could not be reached (``status`` 0).
    ``transaction_hash``: the hash of the transaction ``Client.send`` signed, when the error
    refused it (the client knows it even when the node could not say)."""

    def __init__(self, status: int, message: str, code: str = "", rule: str = "") -> None:
        text = f"HTTP {status}: {message}" if status else message
        if rule:
            text += f" (rule {rule})"
        super().__init__(text)
        self.status = status
        self.message = message
        self.code = code
        self.rule = rule
        self.transaction_hash: bytes | None = None


class ArgumentsRefused(ValueError):
    """Arguments the app's schema refuses, caught before anything was sent: ``code`` is the
    app's (``bad_argument``, ``unknown_operation``, ``unknown_query``), ``message`` names the
    argument and what it expects."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _installed_schema(app: str) -> AppSchema | None:
    if app not in _SCHEMA_CACHE:
        loaded = app_classes().get(app)
        _SCHEMA_CACHE[app] = (
            None if loaded is None or isinstance(loaded, Exception) else (loaded.schema)
        )
    return _SCHEMA_CACHE[app]


# Installed app classes do not change while a process runs: look each app up once.
_SCHEMA_CACHE: dict[str, AppSchema | None] = {}


def check_arguments(
    app: str,
    arguments: Mapping[str, Value],
    *,
    operation: str | None = None,
    query: str | None = None,
) -> bool:
    """Check ``arguments`` of ``app``'s ``operation`` (or ``query``) against the installed app's
    schema; raise ``ArgumentsRefused`` as the app would. Returns False when there is nothing to
    check against (the app is not installed here, or declares no schema)."""
    assert (operation is None) != (query is None)
    schema = _installed_schema(app)
    if schema is None:
        return False
    declared: Operation | Query | None
    if operation is not None:
        declared = schema.operation(operation)
        if declared is None:
            raise ArgumentsRefused(
                "unknown_operation", f"app {app!r} has no operation {operation!r}"
            )
    else:
        assert query is not None
        declared = schema.query(query)
        if declared is None:
            raise ArgumentsRefused("unknown_query", f"{app} has no query {query!r}")
    try:
        declared.parse(arguments)
    except AppError as error:
        raise ArgumentsRefused(error.code, error.message) from None
    return True


class ProofRefused(Exception):
    """A proven answer that does not verify: the node (or something between) lied, or the
    client's copy of the app answers differently. The message says which check failed."""


@dataclass(frozen=True, slots=True)
class ProvenAnswer:
    """A query answer computed by the client from state values proven against a certified
    block: ``result`` as of the state after ``height``, certified by block ``block`` whose
    certificate carries ``signatures`` of the ``validators`` genesis names."""

    result: Value
    height: int
    block: int
    app_hash: bytes
    signatures: int
    validators: int
    keys: int


class Client:
    """Client of one node's API at ``address`` (``host:port``)."""

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 30.0,
        key: PrivateKey | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``address`` is ``host:port`` or ``https://host:port``; ``key`` signs every request;
        ``tls`` (implied by ``https://``) talks TLS."""
        if address.startswith("https://"):
            address = address.removeprefix("https://")
            tls = tls or tls_context()
        elif address.startswith("http://"):
            address = address.removeprefix("http://")
        host, _, port = address.rstrip("/").rpartition(":")
        self.host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
        port_number = decimal_value(port, 5)
        if port_number is None or not 0 < port_number < 65536:
            raise ValueError(f"no port 1-65535 in {address!r}")
        self.port = port_number
        self.timeout_s = timeout_s
        self.key = key
        self.tls = tls
        self._connection: http.client.HTTPConnection | None = None
        self._chain_id: str | None = None
        # Guards the kept connection: a thread takes it out while it uses it (another thread
        # meanwhile opens its own), so no connection is shared or dropped unclosed.
        self._connection_lock = threading.Lock()

    def _open(self, timeout_s: float) -> http.client.HTTPConnection:
        if self.tls is not None:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout_s, context=self.tls
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)

    def _headers(
        self, method: str, path: str, body: bytes | None, content_type: str = "application/json"
    ) -> dict[str, str]:
        headers = {"Content-Type": content_type} if body is not None else {}
        if self.key is not None:
            headers.update(sign_request(self.key, self.chain_id(), method, path, body or b""))
        return headers

    def close(self) -> None:
        """Close the connection."""
        with self._connection_lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request_raw(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
        *,
        signed: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Send one request (signed with ``key`` unless ``signed`` is false); return (status,
        body). Retries once on a stale connection (a fresh signature each time). Safe to call
        from several threads."""
        for attempt in (1, 2):
            sent = {**(headers or {})}
            sent.update(
                self._headers(method, path, body, content_type)
                if signed
                else ({"Content-Type": content_type} if body is not None else {})
            )
            connection = self._take_connection()
            try:
                connection.request(method, path, body=body, headers=sent)
                response = connection.getresponse()
                data = response.read(_RESPONSE_BYTES_MAX)
            except (ConnectionError, http.client.HTTPException, OSError) as error:
                connection.close()
                if attempt == 2 or isinstance(error, TimeoutError):
                    raise ApiError(0, f"cannot reach {self.host}:{self.port}: {error}") from None
                continue
            if response.will_close:
                connection.close()
            else:
                self._return_connection(connection)
            return response.status, data
        raise AssertionError("unreachable")

    def _take_connection(self) -> http.client.HTTPConnection:
        """The kept connection, or a new one when it is absent or in use by another thread."""
        with self._connection_lock:
            connection, self._connection = self._connection, None
        return connection if connection is not None else self._open(self.timeout_s)

    def _return_connection(self, connection: http.client.HTTPConnection) -> None:
        """Keep ``connection`` for the next request, or close it if another one is kept."""
        with self._connection_lock:
            if self._connection is None:
                self._connection = connection
                return
        connection.close()

    def _request(
        self,
        method: str,
        path: str,
        document: dict[str, JsonType] | None = None,
    ) -> dict[str, JsonType]:
        body = None if document is None else json.dumps(document).encode()
        status, data = self.request_raw(method, path, body)
        return _json_answer(status, data)

    def health(self) -> dict[str, JsonType]:
        """``/healthz``."""
        return self._request("GET", "/healthz")

    def status(self) -> dict[str, JsonType]:
        """``/status``."""
        return self._request("GET", "/status")

    def submit(
        self, transaction: bytes, *, wait: bool = False, timeout_ms: int = 30_000
    ) -> dict[str, JsonType]:
        """Submit encoded transaction bytes; with ``wait``, until committed or rejected.
        Raises ``ApiError`` (422 with ``code``) when admission refuses it."""
        return self._request(
            "POST", "/tx", {"tx": transaction.hex(), "wait": wait, "timeout_ms": timeout_ms}
        )

    def submit_many(self, transactions: list[bytes]) -> dict[str, JsonType]:
        """Submit a batch of encoded transactions (``POST /txs``); returns ``{"accepted",
        "rejected": [{"index", "hash", "code", "error", "retry", "retry_after_ms"}]}``, also
        when the node pushed the whole batch back (429). Sent as msgpack, and answered in
        msgpack (``node.submission``): the transactions' bytes as they are, and a refused
        tail as one entry, listed here one by one again (hashes computed here)."""
        status, data = self.request_raw(
            "POST",
            "/txs",
            encode_submission(transactions),
            MSGPACK_CONTENT_TYPE,
            headers={"Accept": MSGPACK_CONTENT_TYPE},
        )
        if status not in (200, 429):
            _json_answer(status, data)  # raises the node's error
            raise ApiError(status, f"unexpected status for /txs: {data[:200]!r}")
        try:
            answer = decode_answer(data, len(transactions))
        except SubmissionError as error:
            raise ApiError(status, f"malformed /txs answer: {error}") from None
        rejected: list[JsonType] = [
            rejection.json_document(transactions[rejection.index])
            for rejection in answer.rejections()
        ]
        return {"accepted": answer.accepted, "rejected": rejected}

    def transaction(self, tx_hash: bytes | str) -> dict[str, JsonType]:
        """Status and receipt of a transaction."""
        text = tx_hash.hex() if isinstance(tx_hash, bytes) else tx_hash
        return self._request("GET", f"/tx/{urllib.parse.quote(text, safe='')}")

    def block(
        self,
        height: int | None = None,
        *,
        block_hash: str | None = None,
        transactions: bool = False,
    ) -> dict[str, JsonType]:
        """A block by height, by hash, or the latest."""
        suffix = "?transactions=1" if transactions else ""
        if block_hash is not None:
            quoted = urllib.parse.quote(block_hash, safe="")
            return self._request("GET", f"/block/hash/{quoted}{suffix}")
        return self._request("GET", f"/block/{'latest' if height is None else height}{suffix}")

    def blocks(self, start: int, *, timeout_ms: int = 0, limit: int = 20) -> dict[str, JsonType]:
        """Blocks from ``start`` (long poll up to ``timeout_ms`` for the first)."""
        return self._request("GET", f"/blocks?from={start}&limit={limit}&timeout_ms={timeout_ms}")

    def query(
        self, app: str, path: str, arguments: Value | None = None, *, check: bool = True
    ) -> Value:
        """Run an app query; returns the decoded result value. With ``check``, the arguments
        are checked against the installed app's schema first (``ArgumentsRefused``)."""
        if check and isinstance(arguments, Mapping | None):
            check_arguments(app, arguments or {}, query=path)  # type: ignore[arg-type]
        document = self._request(
            "POST",
            "/query",
            {"app": app, "path": path, "arguments": to_json(arguments or {})},
        )
        return from_json(document.get("result"))

    def query_proven(
        self,
        app: str,
        path: str,
        arguments: Mapping[str, Value] | None,
        genesis: Genesis,
        *,
        apps: Mapping[str, App] | None = None,
    ) -> ProvenAnswer:
        """Run an app query with a proof and verify it against ``genesis`` (its chain id and
        validator set are the only things trusted): the certificate, the certified header,
        every key's Merkle proof, and the answer itself, which the client recomputes from the
        proven values with its own copy of the app (``apps``, default: loaded from the
        installed entry points). Raises ``ProofRefused`` when anything fails to verify, and
        ``ApiError`` when the node refuses (``not_provable``, ``not_certified``...)."""
        document = self._request(
            "POST",
            "/query",
            {"app": app, "path": path, "arguments": to_json(dict(arguments or {})), "prove": True},
        )
        proof_document = document.get("proof")
        encoded = proof_document.get("encoded") if isinstance(proof_document, dict) else None
        if not isinstance(encoded, str):
            raise ProofRefused("the node's answer carries no proof")
        try:
            proof = QueryProof.decode(bytes.fromhex(encoded))
            values = verify_query_proof(proof, genesis.validator_set, genesis.chain_id)
            validators = certifying_validators(proof, genesis.validator_set, genesis.chain_id)
        except ValueError as error:
            raise ProofRefused(f"proof refused: {error}") from None
        target = (apps or {}).get(app) or _installed_app(app)
        reads = ProvenReads(values)
        view = NamespacedState(reads, app, writable=False)
        failure: str | None = None
        try:
            result = target.query(view, path, dict(arguments or {}))
        except (ProofError, ProofUnsupported) as error:
            raise ProofRefused(f"proof refused: {error}") from None
        except AppError as error:
            failure = error.code
        except Exception as error:  # a failing app, as the node's host counts it (app_fault)
            failure = f"{CODE_APP_FAULT}: {type(error).__name__}"
        # Checked whatever the query did: its own code may have caught the refusal of a read
        # the proof does not show, and answered as the node did from a state it did not prove.
        if reads.refused is not None:
            raise ProofRefused(f"proof refused: {reads.refused}")
        if failure is not None:
            raise ProofRefused(
                f"proof refused: the proven state makes the query fail ({failure}) but the "
                "node answered it"
            )
        if to_json(result) != document.get("result"):
            raise ProofRefused(
                "proof refused: the node's answer differs from what its proven state gives"
            )
        return ProvenAnswer(
            result=result,
            height=proof.height,
            block=proof.header.height,
            app_hash=proof.header.app_hash,
            signatures=len(proof.certificate.signatures),
            validators=validators.size,
            keys=len(values),
        )

    def query_app(self, app: str, path: str, /, **arguments: Value) -> Value:
        """``query`` with the arguments as keywords:
        ``client.query_app("scf", "lineage", id="rc-...")``."""
        return self.query(app, path, arguments)

    def chain_id(self) -> str:
        """The chain the node serves (asked once, unsigned, then remembered)."""
        if self._chain_id is None:
            status, data = self.request_raw("GET", "/status", signed=False)
            try:
                document = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise ApiError(status, "the status is not JSON") from None
            value = document.get("chain_id") if isinstance(document, dict) else None
            if not isinstance(value, str) or not value:
                raise ApiError(200, "chain_id missing from the status")
            self._chain_id = value
        return self._chain_id

    def latest_block_time_ms(self) -> int:
        """The timestamp of the last committed block (the chain's idea of "now")."""
        header = self.block().get("header")
        value = header.get("timestamp_ms") if isinstance(header, dict) else None
        if not isinstance(value, int) or isinstance(value, bool):
            raise ApiError(200, "timestamp_ms missing from the latest block")
        return value

    def sign(
        self,
        app: str,
        operation: str,
        arguments: Mapping[str, Value],
        key: PrivateKey,
        *,
        nonce: int | None = None,
    ) -> Transaction:
        """A transaction signed by ``key`` for this node's chain, with the sender's next nonce
        (asked from the node, counting its pending transactions) unless ``nonce`` is given.
        Raises ``TransactionError`` when the envelope is invalid."""
        if nonce is None:
            nonce = self.next_nonce(key.public_key)
        return sign_transaction(
            key,
            chain_id=self.chain_id(),
            app=app,
            operation=operation,
            arguments=dict(arguments),
            nonce=nonce,
        )

    def send(
        self,
        app: str,
        operation: str,
        arguments: Mapping[str, Value],
        key: PrivateKey,
        *,
        nonce: int | None = None,
        wait: bool = False,
        timeout_ms: int = 30_000,
        check: bool = True,
    ) -> dict[str, JsonType]:
        """Sign (see ``sign``) and submit; returns the node's document (``hash``, ``status``
        and, once committed, ``height`` and ``receipt``). With ``wait``, waits up to
        ``timeout_ms`` for the commit (``status`` stays ``pending`` after that). Raises
        ``ArgumentsRefused`` (before anything is sent) when ``check`` and the installed app's
        schema refuses the arguments, ``ApiError`` when admission refuses it (``code`` says
        why; the refusal document carries the transaction's ``hash``) and ``TransactionError``
        for an invalid envelope."""
        if check:
            check_arguments(app, arguments, operation=operation)
        transaction = self.sign(app, operation, arguments, key, nonce=nonce)
        deadline = time.monotonic() + timeout_ms / 1000
        try:
            document = self.submit(
                transaction.encoded, wait=wait, timeout_ms=min(timeout_ms, _WAIT_REQUEST_MS_MAX)
            )
        except ApiError as error:
            error.transaction_hash = transaction.hash
            raise
        if not wait or document.get("status") != "pending":
            return document
        return self.wait_transaction(transaction.hash, deadline - time.monotonic())

    def wait_transaction(self, tx_hash: bytes, timeout_s: float) -> dict[str, JsonType]:
        """The transaction's document once it is no longer pending, or at the timeout
        (long-polls for new blocks in between)."""
        deadline = time.monotonic() + timeout_s
        while True:
            document = self.transaction(tx_hash)
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if document.get("status") != "pending" or remaining_ms <= 0:
                return document
            height = self.status().get("height")
            start = height + 1 if isinstance(height, int) else 1
            self.blocks(start, timeout_ms=min(remaining_ms, _WAIT_REQUEST_MS_MAX), limit=1)

    def next_nonce(self, public_key: bytes) -> int:
        """The nonce the sender's next transaction must carry."""
        value = self._request("GET", f"/account/{public_key.hex()}").get("next_nonce")
        if not isinstance(value, int):
            raise ApiError(200, "next_nonce missing from the response")
        return value

    def evidence(self) -> list[JsonType]:
        """Recorded evidence."""
        evidence = self._request("GET", "/evidence").get("evidence", [])
        return evidence if isinstance(evidence, list) else []

    def metrics(self) -> str:
        """The Prometheus text."""
        status, data = self.request_raw("GET", "/metrics")
        if status != 200:
            raise ApiError(status, data.decode("utf-8", "replace"))
        return data.decode("utf-8")

    def events(
        self,
        *,
        start: int | None = None,
        after: str | None = None,
        until: int | None = None,
        app: str | None = None,
        kinds: tuple[str, ...] = (),
        account: bytes | None = None,
        types: tuple[str, ...] = (),
        reconnect: bool = True,
    ) -> Generator[StreamEvent, None, None]:
        """Committed blocks, receipts and app events from ``GET /events``, as they commit:
        from block ``start`` (default: the next one), or after the item id ``after``; up to
        block ``until`` (then the iteration ends), else forever. Filters: ``app``, event
        ``kinds``, ``account`` (items that concern it), item ``types``. When the connection
        breaks, it reconnects and resumes after the last item received (``reconnect``)."""
        last_id = after
        while True:
            query: dict[str, str] = {}
            if start is not None and last_id is None:
                query["from"] = str(start)
            if until is not None:
                query["until"] = str(until)
            if app:
                query["app"] = app
            if kinds:
                query["kind"] = ",".join(kinds)
            if account is not None:
                query["account"] = account.hex()
            if types:
                query["types"] = ",".join(types)
            path = "/events" + ("?" + urllib.parse.urlencode(query) if query else "")
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            headers.update(self._headers("GET", path, None))
            connection = self._open(self.timeout_s)
            try:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                if response.status != 200:
                    data = response.read(_RESPONSE_BYTES_MAX)
                    raise _error_of(response.status, data)
                for event in _read_events(response):
                    if event.id:
                        last_id = event.id
                    yield event
                    if event.kind == "end":
                        return
            except (ConnectionError, http.client.HTTPException, OSError) as error:
                if not reconnect:
                    raise ApiError(
                        0, f"event stream from {self.host}:{self.port}: {error}"
                    ) from None
            finally:
                connection.close()
            if not reconnect:
                return
            time.sleep(_EVENT_RETRY_S)


def _error_of(status: int, data: bytes) -> ApiError:
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return ApiError(status, data[:200].decode("utf-8", "replace"))
    if not isinstance(parsed, dict):
        return ApiError(status, "response is not a JSON object")
    return ApiError(
        status,
        str(parsed.get("error", "")),
        str(parsed.get("code", "")),
        str(parsed.get("rule", "")),
    )


def _read_events(response: http.client.HTTPResponse) -> Iterator[StreamEvent]:
    """Parse a Server-Sent Events body into ``StreamEvent``s (comments skipped)."""
    kind, item_id, data = "message", "", ""
    while True:
        line = response.readline(_EVENT_LINE_BYTES_MAX)
        if not line:
            return
        text = line.decode("utf-8").rstrip("\r\n")
        if not text:
            if data:
                try:
                    document = json.loads(data)
                except json.JSONDecodeError:
                    document = {"raw": data}
                yield StreamEvent(kind, item_id, document if isinstance(document, dict) else {})
            kind, item_id, data = "message", "", ""
            continue
        if text.startswith(":"):
            continue
        name, _, value = text.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            kind = value
        elif name == "id":
            item_id = value
        elif name == "data":
            data = f"{data}\n{value}" if data else value


def _installed_app(name: str) -> App:
    try:
        return load_apps([name])[0]
    except AppLoadError as error:
        raise ProofRefused(f"cannot check the answer: {error}") from None


def _json_answer(status: int, data: bytes) -> dict[str, JsonType]:
    """The JSON object a node answered; ``ApiError`` with its error, code and rule for a status
    of 400 or more."""
    try:
        parsed = json.loads(data.decode("utf-8")) if data else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(status, f"response is not JSON: {data[:200]!r}") from None
    if status >= 400:
        message = parsed.get("error", "") if isinstance(parsed, dict) else ""
        code = parsed.get("code", "") if isinstance(parsed, dict) else ""
        rule = parsed.get("rule", "") if isinstance(parsed, dict) else ""
        raise ApiError(status, str(message), str(code), str(rule))
    if not isinstance(parsed, dict):
        raise ApiError(status, "response is not a JSON object")
    return parsed
