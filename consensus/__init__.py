"""Suanpan's pure core: canonical encoding, signatures, consensus types and the PBFT replica.

Nothing in this package performs I/O, reads a clock or draws randomness (see the layering test).
"""

from consensus.codec import DEFAULT_LIMITS, CodecError, Limits, Value, decode, encode
from consensus.crypto import PrivateKey, hash_bytes, signing_bytes, verify
from consensus.evidence import Evidence, EvidenceError, verify_evidence
from consensus.messages import MessageError, decode_message, encode_message
from consensus.replica import PlantedBug, Replica, ReplicaConfig, primary_index
from consensus.types import (
    Block,
    BlockHeader,
    CertificateChecks,
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
    "CertificateChecks",
    "CertificateError",
    "CodecError",
    "CommitCertificate",
    "DecodeError",
    "Evidence",
    "EvidenceError",
    "Limits",
    "MessageError",
    "Phase",
    "PlantedBug",
    "PrivateKey",
    "Replica",
    "ReplicaConfig",
    "Validator",
    "ValidatorSet",
    "Value",
    "Vote",
    "decode",
    "decode_message",
    "encode",
    "encode_message",
    "hash_bytes",
    "merkle_root",
    "primary_index",
    "quorum_size",
    "signing_bytes",
    "verify",
    "verify_certificate",
    "verify_evidence",
]
