"""Transactions' signatures checked in randomised batches, the interpreter lock released once
per batch.

Theory of operation
-------------------
A node checks signatures on worker threads (``[mempool] verify_workers``) so that a second core
works beside the event loop. A thread that gave the interpreter lock up must win it back before
its next call: CPython hands the lock to a waiting thread when its holder blocks or, at the
latest, after the switch interval (5 ms). With the event loop busy in Python, a thread checking
one signature per call waits up to that long between checks and runs at the loop's pace instead
of on the other core (in a test program, 5.3 ms per signature beside a busy thread against
63 µs alone).

``consensus._ed25519`` (``consensus/_ed25519.c``, built by the install with the compiled
modules of ``node.native``) takes a batch of (signature, signed bytes, public key) and checks
it with the lock released once for all of them, by one equation over the whole batch with a
fresh random 128-bit coefficient per signature (16 bytes from ``os.urandom`` each): the
ledger's rule is the cofactored one (``consensus.ed25519``), for which the batch equation holds
exactly when every signature in it is valid, but for a chance of at most 2^-127 per call that no
signer can raise, as the coefficients are drawn after the signatures are made. A batch whose
equation fails is settled by checking each of its signatures alone, so each verdict is the
single check's. Before first use the batch must accept twelve good signatures together and,
with three bad ones among them, refuse exactly those three. When the C rule is not available
(``consensus.crypto.rule_status``), fails that check, or ``SUANPAN_PURE_PYTHON=1`` is set,
``verify_transactions`` checks one signature per call (``Transaction.signature_valid``) and one
log event (``signature_batch_unavailable``) says why. ``batch_status()`` names the path; the
node reports it in ``/status`` (``signature_batch``).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from apps.transaction import TX_TAG, Transaction
from consensus.crypto import NativeRule, PrivateKey, native_rule, signature_check, signing_bytes
from node.native import PURE_PYTHON_ENV

__all__ = [
    "BATCH_STATUS_NATIVE",
    "batch_status",
    "native_batch",
    "verify_per_signature",
    "verify_transactions",
]

log = logging.getLogger("suanpan.signatures")

BATCH_STATUS_NATIVE: Final = "native batch"
# Random bytes per signature in a batch: its coefficient in the batch equation.
RANDOM_BYTES_PER_SIGNATURE: Final = 16

Check = tuple[bytes, bytes, bytes]  # (signature, signed bytes, public key)
Verifier = Callable[[tuple[Check, ...]], list[bool]]


@dataclass(frozen=True, slots=True)
class _Native:
    """The native batch: one randomised batch equation per call."""

    rule: NativeRule

    def __call__(self, checks: tuple[Check, ...]) -> list[bool]:
        randomness = os.urandom(RANDOM_BYTES_PER_SIGNATURE * len(checks))
        return [verdict == 1 for verdict in self.rule.verify_batch(checks, randomness)]


@dataclass(frozen=True, slots=True)
class _Batch:
    """The native batch check, or why it is not used."""

    run: Verifier | None
    status: str


def _self_test(run: Verifier) -> bool:
    """Whether ``run`` accepts twelve good signatures together and, with a changed message, a
    changed signature and another key among them, refuses exactly those three."""
    keys = [PrivateKey(bytes([index]) * 32) for index in range(1, 5)]
    good: list[Check] = []
    for index in range(12):
        key = keys[index % len(keys)]
        payload = b"batch %d" % index
        signature = key.sign(TX_TAG, "self-test", payload)
        good.append((signature, signing_bytes(TX_TAG, "self-test", payload), key.public_key))
    signature, message, public_key = good[0]
    bad: list[Check] = [
        (signature, message + b"!", public_key),
        (bytes([signature[0] ^ 1]) + signature[1:], message, public_key),
        (signature, message, keys[1].public_key),
    ]
    mixed = (*good[:5], bad[0], *good[5:9], bad[1], *good[9:], bad[2])
    expected = [check in good for check in mixed]
    return run(tuple(good)) == [True] * len(good) and run(mixed) == expected


def _load() -> _Batch:
    if os.environ.get(PURE_PYTHON_ENV) == "1":
        return _Batch(None, f"per signature ({PURE_PYTHON_ENV}=1)")
    rule = native_rule()
    if rule is None:
        return _Batch(None, "per signature (consensus._ed25519 is not available)")
    run = _Native(rule)
    if not _self_test(run):
        return _Batch(None, "per signature (the native batch failed its self-test)")
    return _Batch(run, BATCH_STATUS_NATIVE)


@functools.cache
def _batch() -> _Batch:
    loaded = _load()
    if loaded.run is None:
        log.warning("signature_batch_unavailable", extra={"status": loaded.status})
    return loaded


def batch_status() -> str:
    """``"native batch"``, or ``"per signature (why)"``."""
    return _batch().status


def native_batch() -> Verifier | None:
    """The native batch check (verdicts for a tuple of checks), or None where it is not used."""
    return _batch().run


def _check(transaction: Transaction) -> Check | None:
    """What ``transaction.signature_valid()`` verifies; None when it cannot verify."""
    return signature_check(
        transaction.sender, TX_TAG, transaction.chain_id, transaction.body(), transaction.signature
    )


def verify_per_signature(transactions: Sequence[Transaction]) -> list[bool]:
    """Each transaction's ``signature_valid()``: one call each."""
    return [transaction.signature_valid() for transaction in transactions]


def verify_transactions(transactions: Sequence[Transaction]) -> list[bool]:
    """Whether each transaction's signature verifies: the verdicts of ``signature_valid()``,
    from one native call with the interpreter lock released when the batch is available
    (``batch_status``)."""
    run = _batch().run
    if run is None:
        return verify_per_signature(transactions)
    checks = [_check(transaction) for transaction in transactions]
    verdicts = iter(run(tuple(check for check in checks if check is not None)))
    return [check is not None and next(verdicts) for check in checks]
