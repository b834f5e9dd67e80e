"""A synchronous Python client for a node's client API (``http.client``, one keep-alive
connection, reconnecting when the node closed it).

    client = Client("127.0.0.1:26657")
    client.status()["height"]
    client.submit(transaction.encoded, wait=True)["status"]   # "committed" / "rejected"
    client.send("payments", "transfer", {...}, key, wait=True)  # signs with the next nonce
    client.query_app("payments", "balances", account=public_key)
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Mapping
from typing import Final

from apps.transaction import Transaction, sign_transaction
from consensus.codec import Value
from consensus.crypto import PrivateKey
from node.jsonvalue import JsonType, from_json, to_json

__all__ = ["ApiError", "Client"]

# Responses are JSON documents of at most a few MiB (a block with transactions).
_RESPONSE_BYTES_MAX: Final = 64 * 1024 * 1024
# One waiting request (submit with wait, block long poll) lasts at most this long: well under
# the node's cap (``rpc.wait_timeout_ms_max``, 60 s by default); longer waits repeat it.
_WAIT_REQUEST_MS_MAX: Final = 10_000


class ApiError(Exception):
    """The node answered with an error status (``status``, ``message``, optional ``code``),
    or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.code = code


class Client:
    """Client of one node's API at ``address`` (``host:port``)."""

    def __init__(self, address: str, *, timeout_s: float = 30.0) -> None:
        host, _, port = address.rpartition(":")
        self.host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
        self.port = int(port)
        self.timeout_s = timeout_s
        self._connection: http.client.HTTPConnection | None = None
        self._chain_id: str | None = None

    def close(self) -> None:
        """Close the connection."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request_raw(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request; return (status, body). Retries once on a stale connection."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout_s
                )
            try:
                self._connection.request(method, path, body=body, headers=headers)
                response = self._connection.getresponse()
                data = response.read(_RESPONSE_BYTES_MAX)
                if response.will_close:
                    self.close()
                return response.status, data
            except (ConnectionError, http.client.HTTPException, OSError) as error:
                self.close()
                if attempt == 2 or isinstance(error, TimeoutError):
                    raise ApiError(0, f"cannot reach {self.host}:{self.port}: {error}") from None
        raise AssertionError("unreachable")

    def _request(
        self, method: str, path: str, document: dict[str, JsonType] | None = None
    ) -> dict[str, JsonType]:
        body = None if document is None else json.dumps(document).encode()
        status, data = self.request_raw(method, path, body)
        try:
            parsed = json.loads(data.decode("utf-8")) if data else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ApiError(status, f"response is not JSON: {data[:200]!r}") from None
        if status >= 400:
            message = parsed.get("error", "") if isinstance(parsed, dict) else ""
            code = parsed.get("code", "") if isinstance(parsed, dict) else ""
            raise ApiError(status, str(message), str(code))
        if not isinstance(parsed, dict):
            raise ApiError(status, "response is not a JSON object")
        return parsed

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
        "rejected": [{"index", "hash", "code", "error", "retry"}]}``."""
        return self._request("POST", "/txs", {"txs": [data.hex() for data in transactions]})

    def transaction(self, tx_hash: bytes | str) -> dict[str, JsonType]:
        """Status and receipt of a transaction."""
        text = tx_hash.hex() if isinstance(tx_hash, bytes) else tx_hash
        return self._request("GET", f"/tx/{text}")

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
            return self._request("GET", f"/block/hash/{block_hash}{suffix}")
        return self._request("GET", f"/block/{'latest' if height is None else height}{suffix}")

    def blocks(self, start: int, *, timeout_ms: int = 0, limit: int = 20) -> dict[str, JsonType]:
        """Blocks from ``start`` (long poll up to ``timeout_ms`` for the first)."""
        return self._request("GET", f"/blocks?from={start}&limit={limit}&timeout_ms={timeout_ms}")

    def query(self, app: str, path: str, arguments: Value | None = None) -> Value:
        """Run an app query; returns the decoded result value."""
        document = self._request(
            "POST",
            "/query",
            {"app": app, "path": path, "arguments": to_json(arguments or {})},
        )
        return from_json(document.get("result"))

    def query_app(self, app: str, path: str, /, **arguments: Value) -> Value:
        """``query`` with the arguments as keywords:
        ``client.query_app("scf", "lineage", id="rc-...")``."""
        return self.query(app, path, arguments)

    def chain_id(self) -> str:
        """The chain the node serves (asked once, then remembered)."""
        if self._chain_id is None:
            value = self.status().get("chain_id")
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
    ) -> dict[str, JsonType]:
        """Sign (see ``sign``) and submit; returns the node's document (``hash``, ``status``
        and, once committed, ``height`` and ``receipt``). With ``wait``, waits up to
        ``timeout_ms`` for the commit (``status`` stays ``pending`` after that). Raises
        ``ApiError`` when admission refuses it (``code`` says why) and ``TransactionError``
        for an invalid envelope."""
        transaction = self.sign(app, operation, arguments, key, nonce=nonce)
        deadline = time.monotonic() + timeout_ms / 1000
        document = self.submit(
            transaction.encoded, wait=wait, timeout_ms=min(timeout_ms, _WAIT_REQUEST_MS_MAX)
        )
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
