"""The ledger's ed25519 signature rule, and its portable implementation.

Theory of operation
-------------------
A signature is valid when every node says so, so "valid" must be one exact predicate, not
"whatever the local library accepts". Suanpan's predicate is the **cofactored** ed25519 equation
with **strict encodings**. With p = 2^255 - 19, L = 2^252 + 27742317777372353535851937790883648493
(``FIELD_PRIME`` and ``ORDER``), d = -121665/121666 mod p and B the standard base point, a
signature ``sig`` of message M under public key ``key`` is valid iff:

1. ``sig`` is exactly 64 bytes and ``key`` exactly 32 bytes;
2. S = ``sig[32:64]`` read little-endian is below L;
3. A = decode(``key``) and R = decode(``sig[0:32]``) both exist. decode(b) reads y as b
   little-endian with bit 255 cleared and takes bit 255 as the sign; it fails when y >= p (a
   non-canonical y), when (y^2 - 1)/(d y^2 + 1) has no square root mod p (not on the curve), or
   when that root x is 0 and the sign is 1 (a non-canonical -0); otherwise x is the root whose
   low bit equals the sign;
4. neither A nor R has small order: [8]A and [8]R are not the identity (0, 1);
5. k = SHA-512(``sig[0:32]`` || ``key`` || M) read little-endian, mod L;
6. [8]([S]B - R - [k]A) is the identity.

An honest signer (libsodium's ``crypto_sign``) always satisfies this. Every signature libsodium's
``crypto_sign_open`` accepts is valid here too: it refuses S >= L, non-canonical and small-order
keys and small-order nonce points, and it compares R's bytes with the canonical encoding of
[S]B - [k]A, an equation without the factor 8 and so a stronger one. The only signatures this
rule accepts and ``crypto_sign_open`` refuses are those where R - ([S]B - [k]A) is a nonzero
torsion point: a nonce point or a key carrying a small-order component, which no honest signer
produces.

Why cofactored: batches
-----------------------
A node checks a block's signatures in one batch: it draws a random 128-bit z_i per signature
and tests one combined equation, sum [z_i]([S_i]B - R_i - [k_i]A_i) = identity, at about the
cost of one multi-scalar multiplication instead of one multiplication per signature. Without the
factor 8, a signature whose residue [S]B - R - [k]A is a nonzero torsion point T fails the single
check, yet a batch of otherwise valid signatures passes whenever [z_i]T vanishes, which for T of
order 2 is every even z_i: two honest nodes drawing different z_i would disagree about one block,
and the chain would fork. With the factor 8 every torsion residue vanishes whatever the z_i, and
what remains lies in the group of prime order L, where a random combination of residues that are
not all the identity is the identity with probability at most 2^-127. So the cofactored batch gives
the cofactored single check's verdicts whatever randomness a node draws; the single check is
cofactored so that the two always agree.

``verify_portable``
-------------------
The fallback where the native module (``consensus._ed25519``) is not built. Steps 1-3 and 5
are Python integers and ``hashlib``; the point arithmetic is libsodium's, through PyNaCl, using

    [8]([S]B - R - [k]A) = [8S mod L]B - [8]R - [k]([8]A)

(the factor 8 distributes; B has order L, so 8S may be reduced mod L; and since the group is
Z/8 x Z/L, [8]R and [8]A lie in the subgroup of order L, the only one libsodium multiplies in).
What libsodium's primitives accept shapes the rest:

* ``crypto_core_ed25519_add`` takes any point on the curve (small-order and mixed-order points
  included; it also silently reduces y >= p, which is why step 3 is done here first), so it
  computes [8]P as three doublings of the canonical encoding;
* ``crypto_scalarmult_ed25519_noclamp`` refuses points outside the subgroup of order L,
  small-order points, a zero scalar and an identity result, and
  ``crypto_scalarmult_ed25519_base_noclamp`` a zero scalar and an identity result. The inputs
  here keep clear of every refusal: [8]A has order exactly L once step 4 passed, and a scalar
  that is 0 mod L (8S when S = 0, or k) is not multiplied at all: its product is the identity.

``is_point_encoding`` is step 3 on its own. No signature that is otherwise valid can carry a
non-canonical point (it would take the discrete log of a point chosen by its y, and those whose
reduced y is 0 or 1 have small order anyway), so only there can the tests see that a
non-canonical encoding is refused for itself.

Every libsodium call therefore succeeds on every input that reaches it; an exception from one
would be a bug, and is left to propagate. Malformed input returns False at the step that refuses
it. Encodings from libsodium are canonical, so points are compared by their bytes.
"""

from __future__ import annotations

import hashlib
from typing import Final

import nacl.bindings

__all__ = ["FIELD_PRIME", "ORDER", "is_point_encoding", "verify_portable"]

FIELD_PRIME: Final = 2**255 - 19
ORDER: Final = 2**252 + 27742317777372353535851937790883648493

_SIGNATURE_BYTES: Final = 64
_PUBLIC_KEY_BYTES: Final = 32
_POINT_BYTES: Final = 32
_D: Final = -121665 * pow(121666, -1, FIELD_PRIME) % FIELD_PRIME
_Y_MASK: Final = (1 << 255) - 1
_IDENTITY_ENCODING: Final = (1).to_bytes(_POINT_BYTES, "little")  # (0, 1): y = 1, sign 0


def is_point_encoding(encoding: bytes) -> bool:
    """True when ``encoding`` is 32 bytes that the rule's decode (step 3) accepts: a canonical
    y with a root x, and no sign bit on x = 0. Small-order points pass: that is step 4.

    libsodium recomputes the same x from the same canonical bytes, so only the root's existence
    is needed here, and Euler's criterion answers that with one ``pow``: for v != 0, u/v is a
    square iff u v is, iff (u v)^((p-1)/2) is not -1. The denominator v = d y^2 + 1 is never 0
    (that would make -1/d a square; -1 is one mod p and d is not). x is 0 exactly when u is 0,
    i.e. y = 1 or y = -1, so the sign check needs no root either."""
    if len(encoding) != _POINT_BYTES:
        return False
    value = int.from_bytes(encoding, "little")
    y = value & _Y_MASK
    if y >= FIELD_PRIME:
        return False
    y_squared = y * y % FIELD_PRIME
    numerator = (y_squared - 1) % FIELD_PRIME
    if numerator == 0:
        return value >> 255 == 0
    denominator = (_D * y_squared + 1) % FIELD_PRIME
    return pow(numerator * denominator, (FIELD_PRIME - 1) // 2, FIELD_PRIME) == 1


def _times_eight(encoding: bytes) -> bytes:
    """[8]P for the canonical encoding of a point P of any order, as three doublings."""
    point = encoding
    for _ in range(3):
        point = nacl.bindings.crypto_core_ed25519_add(point, point)
    return point


def verify_portable(signature: bytes, message: bytes, public_key: bytes) -> bool:
    """True when ``signature`` is valid for ``message`` under ``public_key`` by the ledger's
    rule (the module docstring). Never raises on any bytes: malformed input is simply invalid."""
    if len(signature) != _SIGNATURE_BYTES or len(public_key) != _PUBLIC_KEY_BYTES:  # step 1
        return False
    nonce_encoding = signature[:_POINT_BYTES]
    s = int.from_bytes(signature[_POINT_BYTES:], "little")
    if s >= ORDER:  # step 2
        return False
    if not is_point_encoding(public_key) or not is_point_encoding(nonce_encoding):  # step 3
        return False
    key_times_eight = _times_eight(public_key)
    nonce_times_eight = _times_eight(nonce_encoding)
    if key_times_eight == _IDENTITY_ENCODING or nonce_times_eight == _IDENTITY_ENCODING:  # step 4
        return False
    digest = hashlib.sha512(nonce_encoding + public_key + message).digest()
    k = int.from_bytes(digest, "little") % ORDER  # step 5
    # Step 6 as [8S mod L]B == [8]R + [k]([8]A). S < L and L is odd: 8S mod L is 0 only for S = 0.
    eight_s = 8 * s % ORDER
    if eight_s == 0:
        left = _IDENTITY_ENCODING
    else:
        left = nacl.bindings.crypto_scalarmult_ed25519_base_noclamp(
            eight_s.to_bytes(_POINT_BYTES, "little")
        )
    if k == 0:  # [0]([8]A) is the identity; libsodium would refuse the zero scalar
        right = nonce_times_eight
    else:
        key_term = nacl.bindings.crypto_scalarmult_ed25519_noclamp(
            k.to_bytes(_POINT_BYTES, "little"), key_times_eight
        )
        right = nacl.bindings.crypto_core_ed25519_add(nonce_times_eight, key_term)
    return left == right
