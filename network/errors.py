"""Typed errors of the network layer.

Every error carries ``reason``, a short stable code used in logs and statistics (for example
``genesis_mismatch`` or ``authentication_failed``), and ``detail``, a human sentence. Errors
caused by a remote peer's bytes are *remote* errors: they close only that peer's connection.
"""

from __future__ import annotations

__all__ = [
    "ChannelError",
    "FrameError",
    "HandshakeError",
    "MessageError",
    "NetworkError",
    "PeerUnavailableError",
    "RequestError",
]


class NetworkError(Exception):
    """Base class; ``reason`` is a short stable code, ``detail`` a sentence for operators."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class FrameError(NetworkError):
    """The byte stream does not follow the framing rules (e.g. a frame over the size limit)."""


class ChannelError(NetworkError):
    """An encrypted frame failed authentication (tampered, replayed or reordered) or the
    counter space is exhausted."""


class HandshakeError(NetworkError):
    """The connection handshake failed; ``reason`` says why (``chain_id_mismatch``,
    ``genesis_mismatch``, ``unknown_peer``, ``bad_signature``, ``timeout``, ...)."""


class MessageError(NetworkError):
    """A decrypted frame is not a well-formed network message."""


class PeerUnavailableError(NetworkError):
    """The peer is not connected, or disconnected before answering."""


class RequestError(NetworkError):
    """A request failed: the peer answered with an error, or the request timed out."""
