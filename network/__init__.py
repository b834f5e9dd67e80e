"""Authenticated, encrypted peer links, bounded framing, peer management and gossip (trio).

The node uses ``Network`` (see ``network.network`` for the theory of operation); the other
modules are its parts: ``handshake`` (X25519 + ed25519 identities), ``channel`` (AEAD frames),
``framing`` (bounded length-prefixed frames), ``messages`` (frame types), ``peer`` (send
queues and their policy), ``limits`` (every bound, with its reason).
"""

from network.errors import (
    ChannelError,
    FrameError,
    HandshakeError,
    MessageError,
    NetworkError,
    PeerUnavailableError,
    RequestError,
)
from network.limits import DEFAULT_LIMITS, NetworkLimits
from network.messages import KIND_MAX
from network.network import (
    InboundMessage,
    InboundTransactions,
    Network,
    NetworkConfig,
    NetworkStatistics,
    PeerAddress,
    PeerInfo,
    PeerStatistics,
    RequestHandler,
)

__all__ = [
    "DEFAULT_LIMITS",
    "KIND_MAX",
    "ChannelError",
    "FrameError",
    "HandshakeError",
    "InboundMessage",
    "InboundTransactions",
    "MessageError",
    "Network",
    "NetworkConfig",
    "NetworkError",
    "NetworkLimits",
    "NetworkStatistics",
    "PeerAddress",
    "PeerInfo",
    "PeerStatistics",
    "PeerUnavailableError",
    "RequestError",
    "RequestHandler",
]
