"""Suanpan's pure core: canonical encoding, signatures, consensus types and the PBFT replica.

Nothing in this package performs I/O, reads a clock or draws randomness (see the layering test).
"""

from consensus.codec import DEFAULT_LIMITS, CodecError, Limits, Value, decode, encode
from consensus.crypto import PrivateKey, hash_bytes, signing_bytes, verify
from consensus.types import (
    Block,
    BlockHeader,
    CertificateError,
    CommitCertificate,
    DecodeError,
    Phase,
    Validator,
    ValidatorSet,
    Vote,
    merkle_root,
    quorum_size,
    verify_certificate,
)

__all__ = [
    "DEFAULT_LIMITS",
    "Block",
    "BlockHeader",
    "CertificateError",
    "CodecError",
    "CommitCertificate",
    "DecodeError",
    "Limits",
    "Phase",
    "PrivateKey",
    "Validator",
    "ValidatorSet",
    "Value",
    "Vote",
    "decode",
    "encode",
    "hash_bytes",
    "merkle_root",
    "quorum_size",
    "signing_bytes",
    "verify",
    "verify_certificate",
]
