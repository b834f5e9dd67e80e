"""The client API server of one node: request authentication, the apps' read rules,
per-client limits and TLS, put together from ``[rpc]`` in config.toml.

``ApiServer`` owns the pieces that live as long as the node: the request verifier with its
replay cache (``node.auth``), the access control (``node.access``), the client limiter
(``node.clientlimits``), the TLS context (``node.tls``) and the server's counters. The runtime
builds one, asks it for the handler (``node.api``) and serves it; ``totals`` feeds the running
totals to ``/metrics``. At start it logs one loud structured warning per dangerous setting
(``node.config.config_warnings``: open access or clear text on a non-loopback address).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import trio

from apps.access import ReadRules
from consensus.codec import Value
from node.access import AccessControl
from node.api import ApiBackend, make_handler
from node.auth import RequestVerifier
from node.clientlimits import ClientLimiter, ClientLimits
from node.config import NodeConfig, RPCConfig, config_warnings
from node.http import Handler, HttpCounters, HttpLimits, serve_http
from node.jsonvalue import JsonType
from node.metrics import RunningTotal
from node.phases import PhaseClock
from node.tls import TlsError, api_certificate, read_expiry, server_context

__all__ = ["ApiServer"]

log = logging.getLogger("suanpan.api")


class ApiServer:
    """The client API of one node (module docstring)."""

    def __init__(
        self,
        backend: ApiBackend,
        *,
        home: Path,
        config: NodeConfig,
        chain_id: str,
        node_keys: frozenset[bytes] | Callable[[], frozenset[bytes]],
        query: Callable[[str, str, Mapping[str, Value]], Value],
        rules_of: Callable[[str], ReadRules | None],
        openapi: Mapping[str, JsonType] | None = None,
    ) -> None:
        rpc: RPCConfig = config.rpc
        self.openapi = openapi
        self.config = config
        self.rpc = rpc
        self.backend = backend
        self.verifier = RequestVerifier(
            chain_id, window_ms=rpc.request_window_ms, entries_max=rpc.replay_cache_entries_max
        )
        self.limiter = ClientLimiter(
            ClientLimits(
                connections_per_address_max=rpc.connections_per_address_max,
                connections_per_key_max=rpc.connections_per_key_max,
                requests_per_second_per_address=rpc.requests_per_second_per_address,
                requests_per_second_per_key=rpc.requests_per_second_per_key,
                bytes_per_second_per_address=rpc.bytes_per_second_per_address,
                bytes_per_second_per_key=rpc.bytes_per_second_per_key,
            )
        )
        self.access = AccessControl(
            mode=rpc.access,
            verifier=self.verifier,
            query=query,
            rules_of=rules_of,
            node_keys=_with_readers(node_keys, frozenset(rpc.readers)),
            height=backend.height,
            limiter=self.limiter,
        )
        self.counters = HttpCounters()
        self.home = home
        self.tls: ssl.SSLContext | None = server_context(home, rpc)
        # When the served certificate stops being valid (Unix seconds; None without TLS or
        # when it cannot be read), for the metrics and their alert, and what to warn of it.
        self.certificate_expires_s: int | None = None
        self._expiry_warning = self._read_certificate_expiry()
        self.limits = HttpLimits(
            body_bytes_max=rpc.body_bytes_max,
            request_timeout_s=rpc.request_timeout_ms / 1000,
            connections_max=rpc.connections_max,
        )

    def handler(self, *, phases: PhaseClock | None = None) -> Handler:
        """The API's request handler (authentication and read rules included); ``phases``
        is charged the CPU time of parsing submissions."""
        return make_handler(
            self.backend,
            wait_timeout_ms_max=self.rpc.wait_timeout_ms_max,
            access=self.access,
            phases=phases,
            openapi=self.openapi,
        )

    def warnings(self) -> list[str]:
        """Dangerous settings of this server, one sentence each."""
        return config_warnings(self.config)

    async def serve(
        self, handler: Handler, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve ``handler`` on ``[rpc] listen_address`` until cancelled."""
        for warning in self.warnings():
            log.warning("api_exposed", extra={"warning": warning})
        self._warn_of_expiry(self._expiry_warning)
        address = self.rpc.listen_address
        await serve_http(
            handler,
            address.host,
            address.port,
            self.limits,
            tls=lambda: self.tls,
            limiter=self.limiter,
            counters=self.counters,
            task_status=task_status,
        )

    def reload_tls(self) -> None:
        """Load ``[rpc]``'s certificate, key and client CA files again (renewed in place, the
        same paths): connections made from now on get them, open ones keep theirs. Files that
        do not load leave the ones in use serving, and the problem is logged
        (``api_tls_reload_failed``, named as ``config check`` would). Nothing without TLS."""
        if self.tls is None:
            return
        try:
            context = server_context(self.home, self.rpc)
        except TlsError as error:
            log.error(
                "api_tls_reload_failed",
                extra={
                    "key": error.key,
                    "path": str(error.path),
                    "problem": error.problem,
                    "then": "the certificate loaded before goes on serving",
                },
            )
            return
        self.tls = context
        warning = self._read_certificate_expiry()
        log.info(
            "api_tls_reloaded",
            extra={
                "certificate": self.rpc.tls_certificate_file,
                "expires_s": self.certificate_expires_s,
            },
        )
        self._warn_of_expiry(warning)

    def _read_certificate_expiry(self) -> str | None:
        """Read the served certificate's expiry once per load (start, reload) into
        ``certificate_expires_s``; return what to warn of it (``node.tls.read_expiry``)."""
        try:
            certificate = api_certificate(self.home, self.rpc)
        except TlsError as error:  # the file went since it loaded
            self.certificate_expires_s = None
            return f"{error.key} {error}"
        if certificate is None:
            self.certificate_expires_s = None
            return None
        self.certificate_expires_s, warning = read_expiry(certificate, time.time())
        return warning

    @staticmethod
    def _warn_of_expiry(warning: str | None) -> None:
        """Log ``api_tls_certificate_expiring`` when the served certificate has expired,
        expires soon or cannot be read."""
        if warning is not None:
            log.warning("api_tls_certificate_expiring", extra={"warning": warning})

    def totals(self) -> Iterable[RunningTotal]:
        """The server's running totals, for ``/metrics``."""
        counters = self.counters
        yield RunningTotal(
            "suanpan_api_connections",
            "Client API connections accepted",
            {"": counters.connections_accepted},
        )
        refused = {reason: float(count) for reason, count in self.limiter.refused.items()}
        refused["server_connections"] = counters.connections_refused_full
        yield RunningTotal(
            "suanpan_api_refused",
            "Client API connections and requests refused by a limit",
            refused,
            "reason",
        )
        yield RunningTotal(
            "suanpan_api_responses",
            "Client API responses by status",
            {str(status): count for status, count in counters.responses.items()},
            "status",
        )
        yield RunningTotal(
            "suanpan_api_authentication_failures",
            "Signed API requests refused (bad signature, stale time, replay, ...)",
            dict(self.verifier.refused),
            "reason",
        )
        yield RunningTotal(
            "suanpan_api_reads_denied", "Reads the read rules refused", {"": self.access.denied}
        )
        yield RunningTotal(
            "suanpan_api_malformed_requests",
            "Malformed HTTP requests",
            {"": counters.malformed_requests},
        )
        yield RunningTotal(
            "suanpan_api_tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            {"": counters.tls_handshakes_failed},
        )


def _with_readers(
    node_keys: frozenset[bytes] | Callable[[], frozenset[bytes]], readers: frozenset[bytes]
) -> frozenset[bytes] | Callable[[], frozenset[bytes]]:
    """``node_keys`` plus the configured ``[rpc] readers`` (who read everything too)."""
    if callable(node_keys):
        source = node_keys
        return lambda: source() | readers
    return node_keys | readers
