"""Length-prefixed framing, sans-I/O.

Theory of operation
-------------------
The wire is a sequence of frames, each ``length (4 bytes, big-endian) || body``. The decoder
is fed whatever bytes the socket produced and hands back complete bodies. The length header
is checked against ``frame_bytes_max`` the moment its four bytes are present, before any
buffer for the body exists, so a peer announcing a 4 GiB frame costs us four bytes.

Memory bound: the caller feeds at most ``chunk_bytes_max`` at a time and drains every complete
frame before feeding again, so the buffer never holds more than one incomplete frame plus one
chunk. ``feed`` asserts that bound as a ``FrameError`` (``buffer_overflow``) rather than
growing. Any error is final: the decoder refuses further input and the connection closes.
"""

from __future__ import annotations

import struct
from typing import Final

from network.errors import FrameError
from network.limits import FRAME_HEADER_BYTES, RECEIVE_CHUNK_BYTES

__all__ = ["FrameDecoder", "encode_frame_header"]

_HEADER: Final = struct.Struct(">I")


def encode_frame_header(body_length: int) -> bytes:
    """The 4-byte length header for a body of ``body_length`` bytes."""
    return _HEADER.pack(body_length)


class FrameDecoder:
    """Turns a byte stream into frame bodies of at most ``frame_bytes_max`` bytes."""

    def __init__(self, frame_bytes_max: int, chunk_bytes_max: int = RECEIVE_CHUNK_BYTES) -> None:
        if frame_bytes_max < 1 or chunk_bytes_max < 1:
            raise ValueError("frame and chunk limits must be positive")
        self.frame_bytes_max = frame_bytes_max
        self.chunk_bytes_max = chunk_bytes_max
        # Never exceeded: one incomplete frame (header and body) plus one fed chunk.
        self.buffer_bytes_max = FRAME_HEADER_BYTES + frame_bytes_max + chunk_bytes_max
        self._buffer = bytearray()
        self._position = 0
        self._failed: FrameError | None = None

    def set_frame_bytes_max(self, frame_bytes_max: int) -> None:
        """Change the frame limit (the handshake uses a small one, then the session a large one)."""
        if frame_bytes_max < 1:
            raise ValueError("frame limit must be positive")
        self.frame_bytes_max = frame_bytes_max
        self.buffer_bytes_max = FRAME_HEADER_BYTES + frame_bytes_max + self.chunk_bytes_max
        if self._failed is None:
            self._check_header()

    @property
    def buffered_bytes(self) -> int:
        """Bytes held that do not yet form a complete frame (plus any not yet drained)."""
        return len(self._buffer) - self._position

    def feed(self, data: bytes | bytearray) -> None:
        """Append bytes received from the peer. Raises ``FrameError`` on a bound violation."""
        if self._failed is not None:
            raise self._failed
        if len(data) > self.chunk_bytes_max:
            raise self._fail(
                "chunk_too_large", f"fed {len(data)} bytes, limit {self.chunk_bytes_max}"
            )
        if self._position:
            del self._buffer[: self._position]
            self._position = 0
        if len(self._buffer) + len(data) > self.buffer_bytes_max:
            raise self._fail(
                "buffer_overflow", "caller fed more input without draining complete frames"
            )
        self._buffer += data
        self._check_header()

    def next_frame(self) -> bytes | None:
        """The next complete frame body, or ``None`` until more bytes arrive."""
        if self._failed is not None:
            raise self._failed
        available = len(self._buffer) - self._position
        if available < FRAME_HEADER_BYTES:
            return None
        (length,) = _HEADER.unpack_from(self._buffer, self._position)
        if length > self.frame_bytes_max:  # pragma: no cover - _check_header caught it on feed
            raise self._fail("frame_too_large", f"{length} bytes, limit {self.frame_bytes_max}")
        if available < FRAME_HEADER_BYTES + length:
            return None
        start = self._position + FRAME_HEADER_BYTES
        body = bytes(self._buffer[start : start + length])
        self._position = start + length
        self._check_header()
        return body

    def _check_header(self) -> None:
        if len(self._buffer) - self._position < FRAME_HEADER_BYTES:
            return
        (length,) = _HEADER.unpack_from(self._buffer, self._position)
        if length > self.frame_bytes_max:
            raise self._fail(
                "frame_too_large", f"peer announced {length} bytes, limit {self.frame_bytes_max}"
            )
        if length == 0:
            raise self._fail("empty_frame", "a frame must carry at least one byte")

    def _fail(self, reason: str, detail: str) -> FrameError:
        self._failed = FrameError(reason, detail)
        self._buffer = bytearray()
        self._position = 0
        return self._failed
