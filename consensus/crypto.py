"""Hashes and ed25519 signatures with domain separation.

Every signature in Suanpan covers ``signing_bytes(tag, chain_id, payload)``: the domain tag
(what kind of message this is, e.g. ``b"suanpan/prepare/v1"``), the chain id, and the
canonical bytes of the message, each length-prefixed so no two (tag, chain, payload) triples
share signing bytes. A signature made for one message kind or one chain therefore never
verifies as another.

Signatures are valid under the ledger's rule (``consensus.ed25519`` states it: ed25519 with
strict encodings and the cofactored equation), checked by ``consensus/_ed25519.c`` when the
install built it and passes its self-test, else by ``consensus.ed25519.verify_portable``; both
give the same verdict for every input (``rule_status`` says which runs).

This module is pure: it derives keys from a seed but never draws randomness. Fresh keys are
generated in ``node.keys``, which owns the operating system's random source; batches with
random coefficients are checked in ``node.signatures``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from dataclasses import dataclass, field
from typing import Final, Protocol

import nacl.signing

from consensus.ed25519 import verify_portable

__all__ = [
    "HASH_BYTES",
    "PUBLIC_KEY_BYTES",
    "RULE_STATUS_NATIVE",
    "SEED_BYTES",
    "SIGNATURE_BYTES",
    "NativeRule",
    "PrivateKey",
    "hash_bytes",
    "key_cache_clear",
    "key_cache_info",
    "native_rule",
    "rule_status",
    "signature_check",
    "signing_bytes",
    "verify",
    "verify_signed",
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


class NativeRule(Protocol):
    """``consensus._ed25519``: the rule in C, with the interpreter lock released."""

    def verify(self, signature: bytes, message: bytes, public_key: bytes, /) -> bool: ...

    def verify_batch(
        self, items: tuple[tuple[bytes, bytes, bytes], ...], randomness: bytes, /
    ) -> bytes: ...

    def verify_each(self, items: tuple[tuple[bytes, bytes, bytes], ...], /) -> bytes: ...

    def key_cache_info(self) -> dict[str, int]: ...

    def key_cache_clear(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Loaded:
    native: NativeRule | None
    status: str


RULE_STATUS_NATIVE: Final = "native"


def _agrees_with_portable(native: NativeRule) -> bool:
    """Whether the C rule accepts a good signature and refuses a changed message, signature
    and key, as the portable one does."""
    key = PrivateKey(bytes(range(32)))
    other = PrivateKey(bytes(range(1, 33)))
    message = signing_bytes(b"suanpan/self-test/v1", "self-test", b"rule")
    signature = key.sign(b"suanpan/self-test/v1", "self-test", b"rule")
    changed = bytes([signature[0] ^ 1]) + signature[1:]
    cases = (
        (signature, message, key.public_key),
        (signature, message + b"!", key.public_key),
        (changed, message, key.public_key),
        (signature, message, other.public_key),
    )
    expected = [True, False, False, False]
    return (
        [native.verify(*case) for case in cases] == expected
        and [verify_portable(*case) for case in cases] == expected
        and list(native.verify_each(cases)) == [int(verdict) for verdict in expected]
    )


@functools.cache
def _loaded() -> _Loaded:
    try:
        module = importlib.import_module("consensus._ed25519")
    except ImportError as error:
        return _Loaded(None, f"portable (consensus._ed25519 is not available: {error})")
    native: NativeRule = module
    if not _agrees_with_portable(native):
        return _Loaded(None, "portable (consensus._ed25519 failed its self-test)")
    return _Loaded(native, RULE_STATUS_NATIVE)


def native_rule() -> NativeRule | None:
    """The rule in C, or None when it is not built or failed its self-test."""
    return _loaded().native


def rule_status() -> str:
    """``"native"``, or ``"portable (why)"``: which implementation checks signatures."""
    return _loaded().status


def key_cache_info() -> dict[str, int] | None:
    """The C rule's table of decoded keys, kept across checks (``consensus/_ed25519.c``):
    ``slots``, ``filled``, and the lookups that found their key (``hits``) and did not
    (``misses``); None when the portable rule checks signatures (it keeps nothing)."""
    native = _loaded().native
    return None if native is None else native.key_cache_info()


def key_cache_clear() -> None:
    """Empty the C rule's table of decoded keys (for benchmarks); nothing on the portable
    rule."""
    native = _loaded().native
    if native is not None:
        native.key_cache_clear()


def verify(public_key: bytes, tag: bytes, chain_id: str, payload: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s signature of ``payload`` under tag and chain,
    by the ledger's rule (``consensus.ed25519``).

    Never raises for malformed keys or signatures: those simply do not verify.
    """
    check = signature_check(public_key, tag, chain_id, payload, signature)
    return check is not None and verify_signed(*check)


def verify_signed(signature: bytes, message: bytes, public_key: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s over exactly ``message`` (signed bytes, as
    ``signature_check`` gives them), by the ledger's rule: in C when it is loaded, else the
    portable implementation."""
    native = _loaded().native
    if native is not None:
        return native.verify(signature, message, public_key)
    return verify_portable(signature, message, public_key)
