"""What a signature check costs, one at a time and in batches (``suanpan bench signatures``).

The run signs ``signatures`` messages of ``message_bytes`` random bytes, each with its own key
(or with ``keys`` keys taken in turn, as a sender signs many transactions), and reports the CPU
time per signature (the thread's own, ``time.thread_time_ns``: the machine may be shared) as
the median over ``repeats`` rounds of:

* ``single``: the ledger's rule one signature per call (``consensus.crypto.verify_signed``:
  ``consensus/_ed25519.c``, or ``consensus.ed25519.verify_portable`` where it is not built);
* ``libsodium``: libsodium's ``crypto_sign_open`` through PyNaCl, one per call (the
  cofactorless check, for comparison: not the ledger's rule);
* ``batch N``: ``node.signatures``' batch of N signatures (random coefficients drawn per
  call), for each N of ``batch_sizes``.

The C rule keeps the keys it decoded (``consensus.crypto.key_cache_info``), so each figure of
the rule is taken twice: with the table emptied before each round (``cpu_us_per_signature``:
every key decoded, as for a sender seen for the first time) and with it left as the previous
round filled it (``cpu_us_per_signature_known_keys``: a ledger's repeat senders; keys that share
a slot of the table are decoded again).

Every check must accept: a run whose signatures do not all verify raises instead of reporting.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import nacl.bindings
import nacl.signing

from consensus.crypto import key_cache_clear, rule_status, verify_signed
from node.jsonvalue import JsonType
from node.signatures import batch_status, native_batch

__all__ = ["SignatureReport", "run_signature_bench"]

Check = tuple[bytes, bytes, bytes]


@dataclass(frozen=True, slots=True)
class SignatureReport:
    """CPU µs per signature: ``single``, ``libsodium`` and each batch size's."""

    signatures: int
    keys: int
    message_bytes: int
    repeats: int
    single_us: float
    libsodium_us: float
    batch_us: dict[int, float]
    single_known_us: float
    batch_known_us: dict[int, float]
    signature_rule: str
    signature_batch: str

    def to_json(self) -> dict[str, JsonType]:
        return {
            "signatures": self.signatures,
            "keys": self.keys,
            "message_bytes": self.message_bytes,
            "repeats": self.repeats,
            "cpu_us_per_signature": {
                "single": round(self.single_us, 1),
                "libsodium": round(self.libsodium_us, 1),
                **{f"batch_{size}": round(us, 1) for size, us in self.batch_us.items()},
            },
            "cpu_us_per_signature_known_keys": {
                "single": round(self.single_known_us, 1),
                **{f"batch_{size}": round(us, 1) for size, us in self.batch_known_us.items()},
            },
            "signature_rule": self.signature_rule,
            "signature_batch": self.signature_batch,
        }


def _signed(signatures: int, keys: int, message_bytes: int) -> list[Check]:
    signers = [nacl.signing.SigningKey(os.urandom(32)) for _ in range(keys)]
    checks = []
    for index in range(signatures):
        signer = signers[index % keys]
        message = os.urandom(message_bytes)
        checks.append((bytes(signer.sign(message).signature), message, bytes(signer.verify_key)))
    return checks


def _per_signature_us(
    run: Callable[[], int], count: int, repeats: int, *, known_keys: bool = False
) -> float:
    """Median over ``repeats`` of the thread CPU µs per signature of ``run`` (which checks
    ``count`` signatures and returns how many verified: all of them, or the run is wrong),
    with the table of decoded keys emptied before each round unless ``known_keys`` (after a
    round that fills it)."""
    if known_keys:
        run()
    rounds = []
    for _ in range(repeats):
        if not known_keys:
            key_cache_clear()
        started = time.thread_time_ns()
        verified = run()
        rounds.append((time.thread_time_ns() - started) / count / 1000)
        if verified != count:
            raise RuntimeError(f"{count - verified} of {count} signatures did not verify")
    return statistics.median(rounds)


def run_signature_bench(
    *,
    signatures: int = 1024,
    keys: int | None = None,
    message_bytes: int = 250,
    batch_sizes: Sequence[int] = (16, 64, 128, 256, 512),
    repeats: int = 5,
) -> SignatureReport:
    """Measure the checks on ``signatures`` fresh signatures (see the module docstring)."""
    key_count = signatures if keys is None else keys
    if signatures < 1 or key_count < 1 or repeats < 1 or message_bytes < 0:
        raise ValueError("signatures, keys and repeats must be positive")
    if any(size < 1 or size > signatures for size in batch_sizes):
        raise ValueError(f"batch sizes must be 1..{signatures} (the signatures made)")
    checks = _signed(signatures, key_count, message_bytes)

    def singles() -> int:
        return sum(verify_signed(*check) for check in checks)

    def libsodium() -> int:
        verified = 0
        for signature, message, key in checks:
            nacl.bindings.crypto_sign_open(signature + message, key)
            verified += 1
        return verified

    batch_us: dict[int, float] = {}
    batch_known_us: dict[int, float] = {}
    batch = native_batch()
    for size in batch_sizes:
        groups = [tuple(checks[start : start + size]) for start in range(0, signatures, size)]
        groups = [group for group in groups if len(group) == size]

        def batches(groups: list[tuple[Check, ...]] = groups) -> int:
            if batch is None:
                return sum(verify_signed(*check) for group in groups for check in group)
            return sum(sum(batch(group)) for group in groups)

        batch_us[size] = _per_signature_us(batches, size * len(groups), repeats)
        batch_known_us[size] = _per_signature_us(
            batches, size * len(groups), repeats, known_keys=True
        )
    return SignatureReport(
        signatures=signatures,
        keys=key_count,
        message_bytes=message_bytes,
        repeats=repeats,
        single_us=_per_signature_us(singles, signatures, repeats),
        libsodium_us=_per_signature_us(libsodium, signatures, repeats),
        batch_us=batch_us,
        single_known_us=_per_signature_us(singles, signatures, repeats, known_keys=True),
        batch_known_us=batch_known_us,
        signature_rule=rule_status(),
        signature_batch=batch_status(),
    )
