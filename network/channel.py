"""Encrypted, authenticated frames over a trio stream.

Theory of operation
-------------------
After the handshake each direction has its own 32-byte key. Every frame body is
``ChaCha20-Poly1305-IETF(key, nonce = 4 zero bytes || counter (8 bytes, little-endian),
aad = the frame's length header)``. The counter starts at 0 in each direction and goes up by
one per frame; it is never sent. A receiver that sees a frame that was altered, replayed,
dropped or reordered computes a different nonce or tag and the decryption fails: that is a
``ChannelError`` and the connection is closed, because a stream with a hole in it cannot be
trusted any more. The length header is authenticated as associated data.

``FrameCipher`` is the sans-I/O half (seal/open with counters); ``SecureStream`` adds the
trio stream, the bounded ``FrameDecoder`` and batching of outgoing frames into one write.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from typing import Final

import nacl.bindings
import nacl.exceptions
import trio

from network.errors import ChannelError, FrameError
from network.framing import FrameDecoder, encode_frame_header
from network.limits import RECEIVE_CHUNK_BYTES

__all__ = ["KEY_BYTES", "TAG_BYTES", "FrameCipher", "SecureStream"]

KEY_BYTES: Final = 32
TAG_BYTES: Final = nacl.bindings.crypto_aead_chacha20poly1305_ietf_ABYTES
_NONCE: Final = struct.Struct("<4xQ")
# 2**64 frames is unreachable in practice; the check keeps a nonce from ever repeating.
_COUNTER_MAX: Final = 2**64 - 1


class FrameCipher:
    """One direction's AEAD state: a key and the counter of the next frame."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a frame key is {KEY_BYTES} bytes")
        self._key = key
        self.counter = 0

    def _next_nonce(self) -> bytes:
        if self.counter >= _COUNTER_MAX:
            raise ChannelError("counter_exhausted", "frame counter reached its limit")
        nonce = _NONCE.pack(self.counter)
        self.counter += 1
        return nonce

    def seal(self, plaintext: bytes) -> bytes:
        """The complete wire frame (header and ciphertext) for ``plaintext``."""
        header = encode_frame_header(len(plaintext) + TAG_BYTES)
        ciphertext = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext, header, self._next_nonce(), self._key
        )
        return header + ciphertext

    def open(self, body: bytes) -> bytes:
        """Decrypt one received frame body; ``ChannelError`` if it fails authentication."""
        header = encode_frame_header(len(body))
        nonce = self._next_nonce()
        try:
            return bytes(
                nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
                    body, header, nonce, self._key
                )
            )
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise ChannelError(
                "authentication_failed",
                f"frame {self.counter - 1} was tampered with, replayed or reordered",
            ) from None


class SecureStream:
    """A trio stream carrying AEAD-sealed frames in both directions.

    One task may send and one task may receive at the same time (trio's own stream rule).
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        send_key: bytes,
        receive_key: bytes,
        frame_bytes_max: int,
        decoder: FrameDecoder | None = None,
    ) -> None:
        self.stream = stream
        self._sender = FrameCipher(send_key)
        self._receiver = FrameCipher(receive_key)
        self._decoder = decoder if decoder is not None else FrameDecoder(frame_bytes_max)
        self.frames_sent = 0
        self.frames_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        # Thread CPU nanoseconds of the last frame's decryption and the last batch's sealing
        # (the network charges them to the traffic kind they carried).
        self.open_ns_last = 0
        self.seal_ns_last = 0

    def adopt_counters(self, send_counter: int, receive_counter: int) -> None:
        """Continue the counters the handshake used (its Auth frames were counter 0)."""
        self._sender.counter = send_counter
        self._receiver.counter = receive_counter

    async def send_frames(self, plaintexts: Sequence[bytes]) -> None:
        """Seal every plaintext and write them with one ``send_all``."""
        started_ns = time.thread_time_ns()
        wire = b"".join([self._sender.seal(plaintext) for plaintext in plaintexts])
        self.seal_ns_last = time.thread_time_ns() - started_ns
        await self.stream.send_all(wire)
        self.frames_sent += len(plaintexts)
        self.bytes_sent += len(wire)

    def receive_buffered(self) -> bytes | None:
        """The next decrypted frame if the bytes received so far hold all of it, else ``None``
        (no I/O: one read often brings several frames).

        Raises ``FrameError`` / ``ChannelError`` for bad input.
        """
        body = self._decoder.next_frame()
        if body is None:
            return None
        started_ns = time.thread_time_ns()
        plaintext = self._receiver.open(body)
        self.open_ns_last = time.thread_time_ns() - started_ns
        self.frames_received += 1
        return plaintext

    async def receive_frame(self) -> bytes | None:
        """The next decrypted frame, or ``None`` when the peer closed cleanly between frames.

        Raises ``FrameError`` / ``ChannelError`` for bad input, trio stream errors for I/O.
        """
        while True:
            plaintext = self.receive_buffered()
            if plaintext is not None:
                return plaintext
            data = await self.stream.receive_some(RECEIVE_CHUNK_BYTES)
            if not data:
                if self._decoder.buffered_bytes:
                    raise FrameError("truncated", "peer closed in the middle of a frame")
                return None
            self.bytes_received += len(data)
            self._decoder.feed(data)

    async def aclose(self) -> None:
        """Close the underlying stream."""
        await self.stream.aclose()
