"""Testnet fault hooks: admin endpoints that cut a node off its peers, and the byzantine driver.

Only a home whose ``config.toml`` has ``[testnet] fault_hooks = true`` gets them (homes made by
``suanpan testnet chaos``; ``suanpan init`` never writes that section). The node runtime then
builds one ``TestnetHooks`` and calls it in two places: it wraps the client API handler
(``wrap``), and it passes every consensus message it broadcasts to ``after_broadcast`` (which
lets a configured ``node.testnet.byzantine.Byzantine`` sign a conflicting one).

Endpoints, on the client API address (JSON):

====== ============================ =====================================================
method path                         what
====== ============================ =====================================================
GET    /admin/faults                blocked peers and the byzantine state (mode, heights,
                                    every conflicting statement sent so far)
POST   /admin/faults/disconnect     body ``{"peers": [node key hex, ...]}`` (optional;
                                    default every validator): close those links and refuse
                                    them until restored
POST   /admin/faults/restore        unblock every peer; the dial loops reconnect
====== ============================ =====================================================
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from consensus.crypto import PrivateKey
from network.network import Network
from node.config import TestnetConfig
from node.http import Handler, Request, Response, json_response
from node.jsonvalue import JsonType
from node.testnet.byzantine import Byzantine

if TYPE_CHECKING:
    from node.runtime import Node

__all__ = ["ADMIN_PREFIX", "TestnetHooks", "testnet_hooks_for"]

ADMIN_PREFIX: Final = "/admin/faults"
# A disconnect request names at most every validator; bodies are tiny.
_BODY_BYTES_MAX: Final = 64 * 1024


class _BadRequest(Exception):
    pass


class TestnetHooks:
    """The fault-injection side of one testnet node."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        config: TestnetConfig,
        *,
        network: Network,
        node_keys: Sequence[bytes],
        validator: int | None,
        validator_key: PrivateKey,
        chain_id: str,
        consensus_kind: int,
    ) -> None:
        """``node_keys``: every validator's node key; ``consensus_kind``: the network message
        kind that carries consensus messages."""
        assert config.fault_hooks, "fault hooks are for testnet homes only"
        self._network = network
        self._node_keys = tuple(node_keys)
        self._own_key = network.public_key
        self._consensus_kind = consensus_kind
        self.blocked: frozenset[bytes] = frozenset()
        self.byzantine: Byzantine | None = None
        if config.byzantine and validator is not None:
            self.byzantine = Byzantine(
                config,
                key=validator_key,
                chain_id=chain_id,
                validator=validator,
                broadcast=self._broadcast,
            )

    def after_broadcast(self, payload: bytes) -> None:
        """The runtime broadcast one of the replica's consensus messages."""
        if self.byzantine is not None:
            self.byzantine.after_broadcast(payload)

    def _broadcast(self, payload: bytes) -> None:
        others = [key for key in self._node_keys if key != self._own_key]
        self._network.broadcast(self._consensus_kind, payload, others)

    def wrap(self, handler: Handler) -> Handler:
        """The API handler with the ``/admin/faults`` endpoints in front of it."""

        async def handle(request: Request) -> Response:
            if request.path == ADMIN_PREFIX or request.path.startswith(ADMIN_PREFIX + "/"):
                try:
                    return self._admin(request)
                except _BadRequest as error:
                    return json_response(400, {"error": str(error)})
            return await handler(request)

        return handle

    def state(self) -> dict[str, JsonType]:
        """The document ``GET /admin/faults`` returns."""
        return {
            "blocked_peers": [key.hex() for key in sorted(self.blocked)],
            "byzantine": None if self.byzantine is None else self.byzantine.to_json(),
        }

    def _admin(self, request: Request) -> Response:
        action = request.path[len(ADMIN_PREFIX) :].strip("/")
        if action == "":
            if request.method not in ("GET", "HEAD"):
                return json_response(405, {"error": f"use GET for {ADMIN_PREFIX}"})
            return json_response(200, self.state())
        if action not in ("disconnect", "restore"):
            return json_response(404, {"error": f"no such fault hook: {request.path}"})
        if request.method != "POST":
            return json_response(405, {"error": f"use POST for {request.path}"})
        if action == "restore":
            self._block(frozenset())
        else:
            self._block(self._peers_of(request.body))
        return json_response(200, self.state())

    def _peers_of(self, body: bytes) -> frozenset[bytes]:
        others = frozenset(key for key in self._node_keys if key != self._own_key)
        if not body.strip():
            return others
        if len(body) > _BODY_BYTES_MAX:
            raise _BadRequest(f"body over {_BODY_BYTES_MAX} bytes")
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise _BadRequest("body is not a JSON object") from None
        if not isinstance(document, dict) or set(document) - {"peers"}:
            raise _BadRequest('body must be {"peers": [node key hex, ...]}')
        peers = document.get("peers")
        if peers is None:
            return others
        if not isinstance(peers, list):
            raise _BadRequest("peers must be a list of node keys (hex)")
        chosen = set()
        for item in peers:
            try:
                key = bytes.fromhex(item) if isinstance(item, str) else b""
            except ValueError:
                key = b""
            if key not in others:
                raise _BadRequest(f"{item!r} is not the node key of another validator")
            chosen.add(key)
        return frozenset(chosen)

    def _block(self, peers: frozenset[bytes]) -> None:
        self.blocked = peers
        self._network.set_blocked_peers(peers)


def testnet_hooks_for(node: Node) -> TestnetHooks:
    """The fault hooks of a testnet node (``node.runtime.FaultHooksFactory``)."""
    from node.runtime import CONSENSUS_KIND

    return TestnetHooks(
        node.config.testnet,
        network=node.network,
        node_keys=node.validator_node_keys,
        validator=node.index,
        validator_key=node.home.validator_key,
        chain_id=node.chain_id,
        consensus_kind=CONSENSUS_KIND,
    )
