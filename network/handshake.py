"""The connection handshake: ephemeral X25519, authenticated by ed25519 node identities.

Theory of operation
-------------------
Both sides run the same three steps; the dialer is the *initiator*, the acceptor the
*responder*. Each side writes before it reads, so neither waits on the other.

1. Hello (plaintext frame): ``MAGIC || ephemeral X25519 public key`` (40 bytes exactly).
2. Both compute the X25519 shared secret and the transcript hash
   ``T = SHA-256(MAGIC || initiator ephemeral || responder ephemeral)``. Two direction keys
   are derived with keyed BLAKE2b (key = shared secret, data = T, personalisation per
   direction), so the two directions never share a (key, nonce) pair.
3. Auth (the first sealed frame, counter 0, in each direction): the canonical encoding of
   ``(identity public key, chain id, genesis hash, signature)`` where the signature is the
   identity key's ed25519 signature, under domain tag ``HANDSHAKE_TAG`` and the chain id, of
   ``role || T || genesis hash``. The role byte stops a reflected signature from verifying.

The receiver of an Auth checks, in order, and rejects with a ``HandshakeError`` naming the
first failure: the message decodes (``bad_auth``); chain id equals ours
(``chain_id_mismatch``); genesis hash equals ours (``genesis_mismatch``); the signature
verifies over *our* view of the transcript (``bad_signature`` — this is what defeats a
man in the middle, whose two transcripts differ); the key is not our own (``self_connection``);
the key is on the allowlist (``unknown_peer``); and, for a dialer, the key is the one it meant
to reach (``unexpected_peer``). The whole handshake runs under a deadline (``timeout``); any
I/O failure is ``connection_closed``. Each frame in the handshake is at most
``HANDSHAKE_FRAME_BYTES_MAX`` bytes, so a hostile peer cannot make us buffer more than that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

import nacl.bindings
import nacl.exceptions
import nacl.public
import trio

from consensus.codec import CodecError, Limits, decode, encode
from consensus.crypto import HASH_BYTES, PUBLIC_KEY_BYTES, SIGNATURE_BYTES, PrivateKey, verify
from network.channel import FrameCipher, SecureStream
from network.errors import ChannelError, FrameError, HandshakeError
from network.framing import FrameDecoder, encode_frame_header
from network.limits import RECEIVE_CHUNK_BYTES, NetworkLimits

__all__ = [
    "HANDSHAKE_FRAME_BYTES_MAX",
    "HANDSHAKE_TAG",
    "MAGIC",
    "HandshakeResult",
    "SessionKeys",
    "auth_signing_payload",
    "decode_auth",
    "derive_session_keys",
    "encode_auth",
    "encode_hello",
    "perform_handshake",
]

MAGIC: Final = b"SUANPAN\x01"  # protocol name and version 1
HANDSHAKE_TAG: Final = b"suanpan/handshake/v1"
# Hello is 40 bytes; Auth is ~32 + chain id (<=255) + 32 + 64 + msgpack overhead + 16-byte tag.
HANDSHAKE_FRAME_BYTES_MAX: Final = 512
_EPHEMERAL_BYTES: Final = 32
_HELLO_BYTES: Final = len(MAGIC) + _EPHEMERAL_BYTES
_ROLE_INITIATOR: Final = b"I"
_ROLE_RESPONDER: Final = b"R"
_AUTH_LIMITS: Final = Limits(
    total_bytes_max=HANDSHAKE_FRAME_BYTES_MAX,
    depth_max=1,
    str_bytes_max=255,
    bytes_max=SIGNATURE_BYTES,
    array_len_max=4,
    map_len_max=1,
)


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The keys and transcript hash both sides derive from the two hellos."""

    transcript: bytes
    initiator_to_responder: bytes
    responder_to_initiator: bytes


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """An authenticated connection: who the peer is and the encrypted stream to it."""

    peer_public_key: bytes
    stream: SecureStream
    initiator: bool


def encode_hello(ephemeral_public_key: bytes) -> bytes:
    """The Hello frame (header included)."""
    body = MAGIC + ephemeral_public_key
    return encode_frame_header(len(body)) + body


def derive_session_keys(
    ephemeral: nacl.public.PrivateKey,
    peer_ephemeral_public_key: bytes,
    initiator: bool,
) -> SessionKeys:
    """X25519 with the peer's ephemeral key, then the transcript and direction keys."""
    own = bytes(ephemeral.public_key)
    try:
        shared = nacl.bindings.crypto_scalarmult(bytes(ephemeral), peer_ephemeral_public_key)
    except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError, ValueError, TypeError):
        # libsodium refuses low-order points, whose shared secret would be all zeros.
        raise HandshakeError("bad_hello", "peer's ephemeral key is a low-order point") from None
    first, second = (
        (own, peer_ephemeral_public_key) if initiator else (peer_ephemeral_public_key, own)
    )
    transcript = hashlib.sha256(MAGIC + first + second).digest()

    def direction_key(person: bytes) -> bytes:
        return hashlib.blake2b(transcript, digest_size=32, key=shared, person=person).digest()

    return SessionKeys(
        transcript=transcript,
        initiator_to_responder=direction_key(b"suanpan/i2r"),
        responder_to_initiator=direction_key(b"suanpan/r2i"),
    )


def auth_signing_payload(initiator: bool, transcript: bytes, genesis_hash: bytes) -> bytes:
    """What the side with role ``initiator`` signs: ``role || transcript || genesis hash``."""
    return (_ROLE_INITIATOR if initiator else _ROLE_RESPONDER) + transcript + genesis_hash


def encode_auth(public_key: bytes, chain_id: str, genesis_hash: bytes, signature: bytes) -> bytes:
    """The Auth plaintext."""
    return encode((public_key, chain_id, genesis_hash, signature), _AUTH_LIMITS)


def decode_auth(plaintext: bytes) -> tuple[bytes, str, bytes, bytes]:
    """Parse an Auth plaintext into (public key, chain id, genesis hash, signature)."""
    try:
        value = decode(plaintext, _AUTH_LIMITS)
    except CodecError as error:
        raise HandshakeError("bad_auth", f"auth message does not decode: {error}") from None
    if not isinstance(value, tuple) or len(value) != 4:
        raise HandshakeError("bad_auth", "auth message must be a 4-element array")
    public_key, chain_id, genesis_hash, signature = value
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        raise HandshakeError("bad_auth", "public key must be 32 bytes")
    if not isinstance(chain_id, str):
        raise HandshakeError("bad_auth", "chain id must be a string")
    if not isinstance(genesis_hash, bytes) or len(genesis_hash) != HASH_BYTES:
        raise HandshakeError("bad_auth", "genesis hash must be 32 bytes")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise HandshakeError("bad_auth", "signature must be 64 bytes")
    return public_key, chain_id, genesis_hash, signature


async def _receive_body(stream: trio.abc.Stream, decoder: FrameDecoder) -> bytes:
    while True:
        body = decoder.next_frame()
        if body is not None:
            return body
        data = await stream.receive_some(RECEIVE_CHUNK_BYTES)
        if not data:
            raise HandshakeError("connection_closed", "peer closed the connection mid-handshake")
        decoder.feed(data)


async def perform_handshake(
    stream: trio.abc.Stream,
    *,
    initiator: bool,
    identity: PrivateKey,
    chain_id: str,
    genesis_hash: bytes,
    allowlist: Collection[bytes],
    limits: NetworkLimits,
    expected_peer: bytes | None = None,
    ephemeral: nacl.public.PrivateKey | None = None,
) -> HandshakeResult:
    """Run the handshake on ``stream`` within ``limits.handshake_timeout_seconds``.

    Returns the authenticated peer and its ``SecureStream``, or raises ``HandshakeError``
    (the caller closes the stream). No other exception escapes for any peer behaviour.
    """
    with trio.move_on_after(limits.handshake_timeout_seconds):
        try:
            return await _handshake(
                stream,
                initiator=initiator,
                identity=identity,
                chain_id=chain_id,
                genesis_hash=genesis_hash,
                allowlist=allowlist,
                limits=limits,
                expected_peer=expected_peer,
                ephemeral=ephemeral if ephemeral is not None else nacl.public.PrivateKey.generate(),
            )
        except FrameError as error:
            raise HandshakeError("bad_frame", str(error)) from None
        except ChannelError as error:
            raise HandshakeError("bad_auth", str(error)) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            raise HandshakeError("connection_closed", f"{type(error).__name__}: {error}") from None
    raise HandshakeError(
        "timeout", f"handshake did not finish in {limits.handshake_timeout_seconds} s"
    )


async def _handshake(
    stream: trio.abc.Stream,
    *,
    initiator: bool,
    identity: PrivateKey,
    chain_id: str,
    genesis_hash: bytes,
    allowlist: Collection[bytes],
    limits: NetworkLimits,
    expected_peer: bytes | None,
    ephemeral: nacl.public.PrivateKey,
) -> HandshakeResult:
    decoder = FrameDecoder(HANDSHAKE_FRAME_BYTES_MAX)
    await stream.send_all(encode_hello(bytes(ephemeral.public_key)))
    hello = await _receive_body(stream, decoder)
    if len(hello) != _HELLO_BYTES or not hello.startswith(MAGIC):
        raise HandshakeError("bad_hello", "not a Suanpan v1 hello (wrong protocol or version)")
    keys = derive_session_keys(ephemeral, hello[len(MAGIC) :], initiator)
    send_key, receive_key = (
        (keys.initiator_to_responder, keys.responder_to_initiator)
        if initiator
        else (keys.responder_to_initiator, keys.initiator_to_responder)
    )
    sender, receiver = FrameCipher(send_key), FrameCipher(receive_key)
    signature = identity.sign(
        HANDSHAKE_TAG, chain_id, auth_signing_payload(initiator, keys.transcript, genesis_hash)
    )
    await stream.send_all(
        sender.seal(encode_auth(identity.public_key, chain_id, genesis_hash, signature))
    )
    peer_key, peer_chain_id, peer_genesis, peer_signature = decode_auth(
        receiver.open(await _receive_body(stream, decoder))
    )
    if peer_chain_id != chain_id:
        raise HandshakeError(
            "chain_id_mismatch", f"peer is on chain {peer_chain_id!r}, we are on {chain_id!r}"
        )
    if peer_genesis != genesis_hash:
        raise HandshakeError(
            "genesis_mismatch",
            f"peer's genesis hash is {peer_genesis.hex()}, ours is {genesis_hash.hex()}",
        )
    peer_payload = auth_signing_payload(not initiator, keys.transcript, genesis_hash)
    if not verify(peer_key, HANDSHAKE_TAG, chain_id, peer_payload, peer_signature):
        raise HandshakeError("bad_signature", "peer's signature over the transcript is invalid")
    if peer_key == identity.public_key:
        raise HandshakeError("self_connection", "peer presented our own identity")
    if peer_key not in allowlist:
        raise HandshakeError("unknown_peer", f"key {peer_key.hex()} is not on the allowlist")
    if expected_peer is not None and peer_key != expected_peer:
        raise HandshakeError(
            "unexpected_peer", f"dialled {expected_peer.hex()} but reached {peer_key.hex()}"
        )
    decoder.set_frame_bytes_max(limits.frame_bytes_max)
    secure = SecureStream(stream, send_key, receive_key, limits.frame_bytes_max, decoder=decoder)
    secure.adopt_counters(sender.counter, receiver.counter)
    return HandshakeResult(peer_public_key=peer_key, stream=secure, initiator=initiator)
