"""Hashes and ed25519 signatures with domain separation.

Every signature in Suanpan covers ``signing_bytes(tag, chain_id, payload)``: the domain tag
(what kind of message this is, e.g. ``b"suanpan/prepare/v1"``), the chain id, and the
canonical bytes of the message, each length-prefixed so no two (tag, chain, payload) triples
share signing bytes. A signature made for one message kind or one chain therefore never
verifies as another.

This module is pure: it derives keys from a seed but never draws randomness. Fresh keys are
generated in ``node.keys``, which owns the operating system's random source.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

import nacl.bindings
import nacl.exceptions
import nacl.signing

__all__ = [
    "HASH_BYTES",
    "PUBLIC_KEY_BYTES",
    "SEED_BYTES",
    "SIGNATURE_BYTES",
    "PrivateKey",
    "hash_bytes",
    "signature_check",
    "signing_bytes",
    "verify",
]

HASH_BYTES: Final = 32
PUBLIC_KEY_BYTES: Final = 32
SEED_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
# Tags and chain ids are short ASCII names; one length byte each keeps the framing unambiguous.
_NAME_BYTES_MAX: Final = 255


def hash_bytes(data: bytes) -> bytes:
    """SHA-256 of ``data``."""
    return hashlib.sha256(data).digest()


def signing_bytes(tag: bytes, chain_id: str, payload: bytes) -> bytes:
    """The exact bytes a signature covers: ``len|tag || len|chain_id || payload``."""
    chain = chain_id.encode("utf-8")
    if not tag or len(tag) > _NAME_BYTES_MAX:
        raise ValueError(f"domain tag must be 1..{_NAME_BYTES_MAX} bytes")
    if not chain or len(chain) > _NAME_BYTES_MAX:
        raise ValueError(f"chain id must be 1..{_NAME_BYTES_MAX} bytes")
    return bytes((len(tag),)) + tag + bytes((len(chain),)) + chain + payload


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """An ed25519 private key, held as its 32-byte seed."""

    seed: bytes = field(repr=False)
    public_key: bytes = field(init=False)
    _signer: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_BYTES:
            raise ValueError(f"an ed25519 seed is exactly {SEED_BYTES} bytes")
        signer = nacl.signing.SigningKey(self.seed)
        object.__setattr__(self, "_signer", signer)
        object.__setattr__(self, "public_key", bytes(signer.verify_key))

    def sign(self, tag: bytes, chain_id: str, payload: bytes) -> bytes:
        """Sign ``payload`` for message kind ``tag`` on chain ``chain_id``; 64 bytes."""
        signed = self._signer.sign(signing_bytes(tag, chain_id, payload))
        return bytes(signed.signature)


def signature_check(
    public_key: bytes, tag: bytes, chain_id: str, payload: bytes, signature: bytes
) -> tuple[bytes, bytes, bytes] | None:
    """What ``verify`` checks: (signature, signed bytes, public key), or None when the key,
    signature, tag or chain id is malformed (such a signature never verifies)."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return None
    try:
        return signature, signing_bytes(tag, chain_id, payload), public_key
    except ValueError:
        return None


def verify(public_key: bytes, tag: bytes, chain_id: str, payload: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s signature of ``payload`` under tag and chain.

    Never raises for malformed keys or signatures: those simply do not verify.
    """
    check = signature_check(public_key, tag, chain_id, payload, signature)
    if check is None:
        return False
    message = check[1]
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True
