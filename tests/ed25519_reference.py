"""A big-integer Edwards25519 and the ledger's signature rule, written to be read, not to be fast.

This is the yardstick the tests hold ``consensus.ed25519`` (and the native module) against, so it
shares nothing with them: no libsodium, no extended coordinates, no precomputed tables. Points
are affine ``(x, y)`` pairs of Python ints on the twisted Edwards curve
``-x^2 + y^2 = 1 + d x^2 y^2`` over ``p = 2^255 - 19``, added with the textbook formula, which is
complete on this curve (``d`` is not a square), so doubling, the identity and small-order points
need no special cases. ``multiply`` runs the same formula over common denominators (projective
coordinates) only so that a check takes milliseconds rather than tens of them.

``verify_reference`` is the rule of ``consensus.ed25519`` transcribed step by step. The rest
builds what the tests feed it: the eight torsion points (derived here, from the curve's order),
signatures over an arbitrary secret scalar and nonce whose nonce point and key may carry a
torsion component, and the encodings the rule must refuse (``y >= p``, ``x == 0`` with the sign
bit set, points off the curve, small-order points).
"""

from __future__ import annotations

import hashlib
from typing import Final, NamedTuple

__all__ = [
    "BASE",
    "FIELD_PRIME",
    "IDENTITY",
    "ORDER",
    "TORSION",
    "D",
    "Point",
    "add",
    "challenge",
    "decode",
    "encode",
    "encode_y",
    "is_small_order",
    "multiply",
    "negate",
    "noncanonical_encodings",
    "off_curve_encodings",
    "point_order",
    "public_key",
    "scalar_encoding",
    "sign_crafted",
    "verify_reference",
]

FIELD_PRIME: Final = 2**255 - 19
ORDER: Final = 2**252 + 27742317777372353535851937790883648493
D: Final = -121665 * pow(121666, -1, FIELD_PRIME) % FIELD_PRIME
# A square root of -1: 2 is not a square mod p (p = 5 mod 8), so 2^((p-1)/4) squares to -1.
SQRT_MINUS_ONE: Final = pow(2, (FIELD_PRIME - 1) // 4, FIELD_PRIME)
_Y_MASK: Final = (1 << 255) - 1


class Point(NamedTuple):
    """An affine point ``(x, y)``, both reduced mod p."""

    x: int
    y: int


IDENTITY: Final = Point(0, 1)
# (X : Y : Z) with x = X / Z and y = Y / Z; only multiply() uses it, to avoid an inversion per step.
_Projective = tuple[int, int, int]


def is_on_curve(point: Point) -> bool:
    """``-x^2 + y^2 == 1 + d x^2 y^2`` mod p."""
    x, y = point
    return (-x * x + y * y - 1 - D * x * x * y * y) % FIELD_PRIME == 0


def add(left: Point, right: Point) -> Point:
    """``left + right``: the complete twisted Edwards addition law with a = -1."""
    x1, y1 = left
    x2, y2 = right
    cross = D * x1 * x2 * y1 * y2 % FIELD_PRIME
    x3 = (x1 * y2 + x2 * y1) * pow(1 + cross, -1, FIELD_PRIME)
    y3 = (y1 * y2 + x1 * x2) * pow(1 - cross, -1, FIELD_PRIME)
    return Point(x3 % FIELD_PRIME, y3 % FIELD_PRIME)


def negate(point: Point) -> Point:
    """``-point``: the same y, the opposite x."""
    return Point(-point.x % FIELD_PRIME, point.y)


def _add_projective(left: _Projective, right: _Projective) -> _Projective:
    """``left + right`` in projective coordinates ``(X : Y : Z)``, x = X/Z, y = Y/Z: the affine
    law above with both fractions brought over the common denominators, so no inversion. With
    A = Z1 Z2, C = X1 X2, D' = Y1 Y2, E = d C D': 1 + d x1 x2 y1 y2 = (A^2 + E) / A^2 and
    1 - d x1 x2 y1 y2 = (A^2 - E) / A^2, hence x3 = A (X1 Y2 + X2 Y1) / (A^2 + E) and
    y3 = A (D' + C) / (A^2 - E), written over the one denominator (A^2 + E)(A^2 - E)."""
    x1, y1, z1 = left
    x2, y2, z2 = right
    common = z1 * z2 % FIELD_PRIME
    common_squared = common * common % FIELD_PRIME
    xx = x1 * x2 % FIELD_PRIME
    yy = y1 * y2 % FIELD_PRIME
    cross = D * xx * yy % FIELD_PRIME
    x_denominator = (common_squared + cross) % FIELD_PRIME
    y_denominator = (common_squared - cross) % FIELD_PRIME
    x_numerator = common * (x1 * y2 + x2 * y1) % FIELD_PRIME
    y_numerator = common * (yy + xx) % FIELD_PRIME
    return (
        x_numerator * y_denominator % FIELD_PRIME,
        y_numerator * x_denominator % FIELD_PRIME,
        x_denominator * y_denominator % FIELD_PRIME,
    )


def multiply(point: Point, scalar: int) -> Point:
    """``[scalar]point`` for any integer ``scalar`` (negative ones multiply ``-point``): double
    and add, in projective coordinates so that only the result costs an inversion."""
    if scalar < 0:
        return multiply(negate(point), -scalar)
    result: _Projective = (0, 1, 1)
    addend: _Projective = (point.x, point.y, 1)
    while scalar:
        if scalar & 1:
            result = _add_projective(result, addend)
        addend = _add_projective(addend, addend)
        scalar >>= 1
    x, y, z = result
    inverse = pow(z, -1, FIELD_PRIME)
    return Point(x * inverse % FIELD_PRIME, y * inverse % FIELD_PRIME)


def square_root(value: int) -> int | None:
    """A square root of ``value`` mod p (either one), or None when it has none."""
    value %= FIELD_PRIME
    # p = 5 mod 8: value^((p+3)/8) is a root of value or of -value.
    candidate = pow(value, (FIELD_PRIME + 3) // 8, FIELD_PRIME)
    if candidate * candidate % FIELD_PRIME == value:
        return candidate
    candidate = candidate * SQRT_MINUS_ONE % FIELD_PRIME
    if candidate * candidate % FIELD_PRIME == value:
        return candidate
    return None


def decode(encoding: bytes) -> Point | None:
    """The point ``encoding`` names under the rule, or None when it names none: wrong length,
    ``y >= p``, ``(y^2 - 1) / (d y^2 + 1)`` not a square, or ``x == 0`` with the sign bit set."""
    if len(encoding) != 32:
        return None
    value = int.from_bytes(encoding, "little")
    sign = value >> 255
    y = value & _Y_MASK
    if y >= FIELD_PRIME:
        return None
    x_squared = (y * y - 1) * pow(D * y * y + 1, -1, FIELD_PRIME)
    x = square_root(x_squared)
    if x is None:
        return None
    if x == 0 and sign == 1:
        return None
    if x & 1 != sign:
        x = FIELD_PRIME - x
    point = Point(x, y)
    assert is_on_curve(point)
    return point


def encode_y(y: int, sign: int) -> bytes:
    """32 bytes: ``y`` (any value below 2^255, canonical or not) with ``sign`` in bit 255."""
    assert 0 <= y < 2**255
    assert sign in (0, 1)
    return (y | sign << 255).to_bytes(32, "little")


def encode(point: Point) -> bytes:
    """The canonical encoding of ``point``: y, and the low bit of x as the sign."""
    return encode_y(point.y, point.x & 1)


def scalar_encoding(scalar: int) -> bytes:
    """``scalar`` as 32 little-endian bytes (any value below 2^256, reduced or not)."""
    return scalar.to_bytes(32, "little")


def point_order(point: Point) -> int:
    """The order of ``point`` (every point's order divides 8 L)."""
    for order in (1, 2, 4, 8, ORDER, 2 * ORDER, 4 * ORDER, 8 * ORDER):
        if multiply(point, order) == IDENTITY:
            return order
    raise AssertionError(f"{point} is not on the curve")


def is_small_order(point: Point) -> bool:
    """Whether ``[8]point`` is the identity (the rule's step 4)."""
    return multiply(point, 8) == IDENTITY


def _base_point() -> Point:
    """The standard base point: y = 4/5, x even."""
    y = 4 * pow(5, -1, FIELD_PRIME) % FIELD_PRIME
    point = decode(encode_y(y, 0))
    assert point is not None
    return point


BASE: Final = _base_point()


def _torsion_generator() -> Point:
    """A point of order 8: ``[L]P`` for the first point P with small y whose torsion part has
    order 8 (the curve's group is Z/8 x Z/L, so such points exist, and small y finds one)."""
    for y in range(2, 1000):
        point = decode(encode_y(y, 0))
        if point is None:
            continue
        torsion = multiply(point, ORDER)
        if multiply(torsion, 4) != IDENTITY:
            return torsion
    raise AssertionError("no point with a torsion part of order 8 among small y")


_GENERATOR_8: Final = _torsion_generator()
# The small-order subgroup, [i]T for a generator T of order 8: TORSION[0] is the identity,
# TORSION[4] is (0, -1) of order 2, TORSION[2] and TORSION[6] have order 4, the rest order 8.
TORSION: Final = tuple(multiply(_GENERATOR_8, index) for index in range(8))

assert multiply(BASE, ORDER) == IDENTITY
assert BASE != IDENTITY
assert len(set(TORSION)) == 8
assert all(multiply(point, 8) == IDENTITY for point in TORSION)
assert TORSION[4] == Point(0, FIELD_PRIME - 1)


def challenge(nonce_encoding: bytes, public_key_encoding: bytes, message: bytes) -> int:
    """``k = SHA-512(R || A || M)`` read little-endian, mod L (the rule's step 5)."""
    digest = hashlib.sha512(nonce_encoding + public_key_encoding + message).digest()
    return int.from_bytes(digest, "little") % ORDER


def verify_reference(signature: bytes, message: bytes, public_key: bytes) -> bool:
    """The ledger's rule, step by step (``consensus.ed25519`` states it)."""
    if len(signature) != 64 or len(public_key) != 32:  # step 1
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= ORDER:  # step 2
        return False
    key = decode(public_key)  # step 3
    nonce = decode(signature[:32])
    if key is None or nonce is None:
        return False
    if is_small_order(key) or is_small_order(nonce):  # step 4
        return False
    k = challenge(signature[:32], public_key, message)  # step 5
    residue = add(add(multiply(BASE, s), negate(nonce)), negate(multiply(key, k)))
    return multiply(residue, 8) == IDENTITY  # step 6


def public_key(secret: int, torsion: Point = IDENTITY) -> bytes:
    """The encoding of ``A = [secret]B + torsion``."""
    return encode(add(multiply(BASE, secret), torsion))


def sign_crafted(
    message: bytes,
    secret: int,
    nonce: int,
    *,
    nonce_torsion: Point = IDENTITY,
    key_torsion: Point = IDENTITY,
) -> tuple[bytes, bytes]:
    """``(signature, public key)``: ``message`` signed with secret scalar ``secret`` and nonce
    ``nonce`` as ``R = [nonce]B + nonce_torsion``, ``A = [secret]B + key_torsion``,
    ``S = nonce + k secret mod L``. Without torsion this is what an honest signer computes;
    ``[S]B - R - [k]A = -nonce_torsion - [k]key_torsion`` is always a torsion point, so the
    result always satisfies the cofactored equation of step 6. ``nonce = 0`` with a torsion
    point gives a small-order R, ``secret = 0`` a small-order key."""
    key = public_key(secret, key_torsion)
    nonce_point = encode(add(multiply(BASE, nonce), nonce_torsion))
    k = challenge(nonce_point, key, message)
    s = (nonce + k * secret) % ORDER
    return nonce_point + scalar_encoding(s), key


def noncanonical_encodings() -> list[bytes]:
    """Every encoding the rule refuses as non-canonical although its y, reduced mod p, names a
    point: ``y + p`` (below 2^255 only for y < 19) for each such y and either sign, and
    ``x == 0`` (y = 1 or y = -1) with the sign bit set."""
    encodings = [
        encode_y(y + FIELD_PRIME, sign)
        for y in range(2**255 - FIELD_PRIME)
        for sign in (0, 1)
        if square_root((y * y - 1) * pow(D * y * y + 1, -1, FIELD_PRIME)) is not None
    ]
    encodings += [encode_y(1, 1), encode_y(FIELD_PRIME - 1, 1)]
    return encodings


def off_curve_encodings(count: int) -> list[bytes]:
    """The first ``count`` canonical y values (from 2, sign 0) that name no point: their
    ``(y^2 - 1) / (d y^2 + 1)`` has no square root."""
    found: list[bytes] = []
    y = 2
    while len(found) < count:
        if square_root((y * y - 1) * pow(D * y * y + 1, -1, FIELD_PRIME)) is None:
            found.append(encode_y(y, 0))
        y += 1
    return found
