"""Shared helpers for the simulator tests."""

from __future__ import annotations

from consensus.crypto import PrivateKey
from consensus.replica import ChainTip, Replica, ReplicaConfig
from consensus.types import Validator, ValidatorSet


def replica_missing() -> bool:
    """True while the branch only has the replica's public API (its logic not merged yet)."""
    key = PrivateKey(bytes(32))
    validators = ValidatorSet((Validator("v", key.public_key),))
    try:
        Replica(
            ReplicaConfig(),
            chain_id="probe",
            validators=validators,
            key=key,
            tip=ChainTip(0, bytes(32), bytes(32), 0),
        )
    except NotImplementedError:
        return True
    return False
