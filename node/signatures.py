"""Transactions' signatures checked in batches, the interpreter lock released once per batch.

Theory of operation
-------------------
A node checks signatures on worker threads (``[mempool] verify_workers``) so that a second core
works beside the event loop. PyNaCl releases the interpreter lock around each check, and a
thread that gave the lock up must win it back before its next one: CPython hands the lock to a
waiting thread when its holder blocks or, at the latest, after the switch interval (5 ms). With
the event loop busy in Python, a thread checking one signature per call waits up to that long
between checks and runs at the loop's pace instead of on the other core (in a test program,
5.3 ms per signature beside a busy thread against 63 µs alone).

``_ed25519batch`` (``node/_ed25519batch.c``, built by the install with the compiled modules of
``node.native``) takes a batch of (signature, signed bytes, public key) and calls libsodium's
``crypto_sign_ed25519_verify_detached`` for each with the lock released once for all of them:
the function PyNaCl's ``crypto_sign_open`` calls, in PyNaCl's own libsodium (loaded and
initialised by PyNaCl's import), so the verdicts are PyNaCl's. A signature or key of the wrong
length never verifies. Before first use the batch must accept a good signature and refuse three
bad ones. When it is not built, fails that check, or ``SUANPAN_PURE_PYTHON=1`` is set,
``verify_transactions`` checks one signature per call (``Transaction.signature_valid``) and one
log event (``signature_batch_unavailable``) says why. ``batch_status()`` names the path; the
node reports it in ``/status`` (``signature_batch``).
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from apps.transaction import TX_TAG, Transaction
from consensus.crypto import PrivateKey, signature_check, signing_bytes
from node.native import PURE_PYTHON_ENV

__all__ = ["BATCH_STATUS_NATIVE", "batch_status", "verify_per_signature", "verify_transactions"]

log = logging.getLogger("suanpan.signatures")

BATCH_STATUS_NATIVE: Final = "native batch"
_VERIFY_SYMBOL: Final = "crypto_sign_ed25519_verify_detached"

Check = tuple[bytes, bytes, bytes]  # (signature, signed bytes, public key)
Verifier = Callable[[tuple[Check, ...]], list[bool]]


@dataclass(frozen=True, slots=True)
class _Native:
    """The native batch: ``verify_batch`` with the address of libsodium's check in
    ``library``, which it holds so the address stays valid."""

    verify_batch: Callable[[int, tuple[Check, ...]], bytes]
    library: ctypes.CDLL
    address: int

    def __call__(self, checks: tuple[Check, ...]) -> list[bool]:
        return [verdict == 1 for verdict in self.verify_batch(self.address, checks)]


@dataclass(frozen=True, slots=True)
class _Batch:
    """The native batch check, or why it is not used."""

    run: Verifier | None
    status: str


def _self_test(run: Verifier) -> bool:
    """Whether ``run`` accepts a good signature and refuses a changed message, a changed
    signature and another key."""
    key = PrivateKey(bytes(range(32)))
    other = PrivateKey(bytes(range(1, 33)))
    message = signing_bytes(TX_TAG, "self-test", b"batch")
    signature = key.sign(TX_TAG, "self-test", b"batch")
    changed = bytes([signature[0] ^ 1]) + signature[1:]
    checks = (
        (signature, message, key.public_key),
        (signature, message + b"!", key.public_key),
        (changed, message, key.public_key),
        (signature, message, other.public_key),
    )
    return run(checks) == [True, False, False, False]


def _load() -> _Batch:
    if os.environ.get(PURE_PYTHON_ENV) == "1":
        return _Batch(None, f"per signature ({PURE_PYTHON_ENV}=1)")
    try:
        native = importlib.import_module("node._ed25519batch")
    except ImportError:
        return _Batch(None, "per signature (node._ed25519batch is not built)")
    spec = importlib.util.find_spec("nacl._sodium")
    if spec is None or spec.origin is None:
        return _Batch(None, "per signature (PyNaCl's libsodium was not found)")
    try:
        library = ctypes.CDLL(spec.origin)
        address = ctypes.cast(getattr(library, _VERIFY_SYMBOL), ctypes.c_void_p).value
    except (OSError, AttributeError) as error:
        return _Batch(None, f"per signature ({_VERIFY_SYMBOL} was not found: {error})")
    if not address:
        return _Batch(None, f"per signature ({_VERIFY_SYMBOL} has no address)")
    run = _Native(native.verify_batch, library, address)
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


def _check(transaction: Transaction) -> Check | None:
    """What ``transaction.signature_valid()`` verifies; None when it cannot verify."""
    return signature_check(
        transaction.sender, TX_TAG, transaction.chain_id, transaction.body(), transaction.signature
    )


def verify_per_signature(transactions: Sequence[Transaction]) -> list[bool]:
    """Each transaction's ``signature_valid()``: one PyNaCl call each."""
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
