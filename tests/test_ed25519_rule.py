"""The ledger's ed25519 rule (``consensus.ed25519``): cofactored, with strict encodings.

Every implementation of the rule gives the same verdict on every input: the portable fallback
(``verify_portable``), the big-integer reference in ``tests/ed25519_reference.py``, and, once it
is built, the native module ``consensus._ed25519`` one signature at a time and as a batch of
one. The scenarios: honest signatures are valid, and libsodium agrees; one changed bit or byte
makes them invalid, and libsodium agrees; a torsion component on the nonce point or the key is
valid here and refused by libsodium's cofactorless ``crypto_sign_open`` (the one intended
difference); small-order points, non-canonical encodings, S >= L, points off the curve and wrong
lengths are invalid, without exceptions; random and crafted inputs get one verdict from all.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import os
from collections.abc import Callable
from types import ModuleType

import nacl.bindings
import nacl.exceptions
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import consensus.ed25519
from consensus.ed25519 import is_point_encoding, verify_portable
from tests import ed25519_reference as reference
from tests.ed25519_reference import (
    FIELD_PRIME,
    IDENTITY,
    ORDER,
    TORSION,
    verify_reference,
)

Verify = Callable[[bytes, bytes, bytes], bool]

NATIVE_MODULE = "consensus._ed25519"
RANDOMNESS_BYTES_PER_ITEM = 16


def _native() -> ModuleType | None:
    """The native module, or None while it is not built (any other import error propagates)."""
    try:
        return importlib.import_module(NATIVE_MODULE)
    except ModuleNotFoundError as error:
        if error.name != NATIVE_MODULE:
            raise
        return None


NATIVE = _native()
needs_native = pytest.mark.skipif(NATIVE is None, reason=f"{NATIVE_MODULE} is not built")


def _native_single(native: ModuleType) -> Verify:
    def verify(signature: bytes, message: bytes, public_key: bytes) -> bool:
        verdict = native.verify(signature, message, public_key)
        assert isinstance(verdict, bool), f"verify returned {verdict!r}, not a bool"
        return verdict

    return verify


def _native_batch_of_one(native: ModuleType) -> Verify:
    def verify(signature: bytes, message: bytes, public_key: bytes) -> bool:
        item = (signature, message, public_key)
        verdicts = native.verify_batch((item,), os.urandom(RANDOMNESS_BYTES_PER_ITEM))
        assert verdicts in (b"\x00", b"\x01"), f"verify_batch returned {verdicts!r}"
        return bool(verdicts == b"\x01")

    return verify


def _implementations() -> list[tuple[str, Verify]]:
    found: list[tuple[str, Verify]] = [
        ("portable", verify_portable),
        ("reference", verify_reference),
    ]
    if NATIVE is not None:
        found += [
            ("native", _native_single(NATIVE)),
            ("native_batch", _native_batch_of_one(NATIVE)),
        ]
    return found


IMPLEMENTATIONS = _implementations()
each_implementation = pytest.mark.parametrize(
    "verify", [verify for _, verify in IMPLEMENTATIONS], ids=[name for name, _ in IMPLEMENTATIONS]
)

# The reference takes milliseconds per check: hypothesis tests that reach it draw fewer examples.
reference_budget = settings(max_examples=60, deadline=None)

seeds = st.binary(min_size=32, max_size=32)
messages = st.binary(max_size=600)
MESSAGE = b"transfer 100 from alice to bob"
SECRET = 0x1234_5678_9ABC_DEF0_1234_5678_9ABC_DEF0_1234_5678_9ABC_DEF0_1234_5678_9ABC_DEF
NONCE = 0x0FED_CBA9_8765_4321_0FED_CBA9_8765_4321_0FED_CBA9_8765_4321_0FED_CBA9_8765_432


def verdicts(signature: bytes, message: bytes, public_key: bytes) -> dict[str, bool]:
    """Each implementation's verdict, by name."""
    return {name: verify(signature, message, public_key) for name, verify in IMPLEMENTATIONS}


def libsodium_accepts(signature: bytes, message: bytes, public_key: bytes) -> bool:
    """libsodium's cofactorless ``crypto_sign_open`` (``public_key`` must be 32 bytes: it reads
    32 bytes whatever it is given)."""
    assert len(public_key) == 32
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def sign_honestly(seed: bytes, message: bytes) -> tuple[bytes, bytes]:
    """``(signature, public key)`` from libsodium's own signing."""
    key = nacl.signing.SigningKey(seed)
    return key.sign(message).signature, bytes(key.verify_key)


def with_scalar(signature: bytes, s: int) -> bytes:
    """``signature`` with its S replaced."""
    return signature[:32] + reference.scalar_encoding(s)


def torsion_residue(signature: bytes, message: bytes, public_key: bytes) -> reference.Point:
    """R - ([S]B - [k]A): the identity exactly when the cofactorless equation holds."""
    nonce = reference.decode(signature[:32])
    key = reference.decode(public_key)
    assert nonce is not None
    assert key is not None
    s = int.from_bytes(signature[32:], "little")
    k = reference.challenge(signature[:32], public_key, message)
    expected = reference.add(reference.multiply(reference.BASE, s), reference.multiply(key, -k))
    return reference.add(nonce, reference.negate(expected))


@functools.cache
def crafted_with_key_torsion(key_index: int, *, cancelled: bool) -> tuple[bytes, bytes]:
    """``(signature, key)`` over ``MESSAGE`` with the key ``[SECRET]B + TORSION[key_index]``,
    the nonce tried upwards from ``NONCE`` until ``[k]TORSION[key_index]`` is the identity
    (``cancelled``) or is not: the torsion residue is then exactly that point."""
    for nonce in itertools.count(NONCE):
        signature, key = reference.sign_crafted(
            MESSAGE, SECRET, nonce, key_torsion=TORSION[key_index]
        )
        k = reference.challenge(signature[:32], key, MESSAGE)
        if (reference.multiply(TORSION[key_index], k) == IDENTITY) == cancelled:
            return signature, key
    raise AssertionError("unreachable: itertools.count is endless")


def test_the_constants_are_the_curve_s() -> None:
    assert consensus.ed25519.FIELD_PRIME == 2**255 - 19 == FIELD_PRIME
    assert consensus.ed25519.ORDER == ORDER
    assert reference.multiply(reference.BASE, consensus.ed25519.ORDER) == IDENTITY
    assert reference.point_order(reference.BASE) == consensus.ed25519.ORDER


# --- honest signatures ----------------------------------------------------------------------


@each_implementation
@reference_budget
@given(seed=seeds, message=messages)
def test_honest_signatures_are_valid_and_libsodium_agrees(
    verify: Verify, seed: bytes, message: bytes
) -> None:
    signature, key = sign_honestly(seed, message)
    assert libsodium_accepts(signature, message, key)
    assert verify(signature, message, key) is True


@each_implementation
@reference_budget
@given(seed=seeds, message=messages, data=st.data())
def test_one_changed_bit_or_byte_invalidates_an_honest_signature(
    verify: Verify, seed: bytes, message: bytes, data: st.DataObject
) -> None:
    signature, key = sign_honestly(seed, message)
    parts = {"signature": signature, "message": message, "key": key}
    target = data.draw(st.sampled_from([name for name, value in parts.items() if value]))
    original = parts[target]
    index = data.draw(st.integers(0, len(original) - 1), label="index")
    mask = data.draw(
        st.one_of(st.sampled_from([1 << bit for bit in range(8)]), st.integers(1, 255)),
        label="xor mask",
    )
    parts[target] = original[:index] + bytes([original[index] ^ mask]) + original[index + 1 :]
    changed = (parts["signature"], parts["message"], parts["key"])
    assert not libsodium_accepts(*changed)
    assert verify(*changed) is False


# --- torsion: the one intended difference from libsodium -------------------------------------


@each_implementation
@pytest.mark.parametrize("torsion_index", range(1, 8))
def test_a_nonce_with_a_torsion_component_is_valid_but_libsodium_refuses_it(
    verify: Verify, torsion_index: int
) -> None:
    signature, key = reference.sign_crafted(
        MESSAGE, SECRET, NONCE, nonce_torsion=TORSION[torsion_index]
    )
    assert torsion_residue(signature, MESSAGE, key) == TORSION[torsion_index]
    assert not libsodium_accepts(signature, MESSAGE, key)
    assert verify(signature, MESSAGE, key) is True


@each_implementation
@pytest.mark.parametrize("torsion_index", range(1, 8))
def test_a_mixed_order_key_is_valid_but_libsodium_refuses_it_unless_k_cancels_the_torsion(
    verify: Verify, torsion_index: int
) -> None:
    signature, key = crafted_with_key_torsion(torsion_index, cancelled=False)
    assert torsion_residue(signature, MESSAGE, key) != IDENTITY
    assert not libsodium_accepts(signature, MESSAGE, key)
    assert verify(signature, MESSAGE, key) is True


@each_implementation
@pytest.mark.parametrize("torsion_index", range(1, 8))
def test_a_mixed_order_key_whose_torsion_k_cancels_is_valid_and_libsodium_agrees(
    verify: Verify, torsion_index: int
) -> None:
    """libsodium does not refuse mixed-order keys: it accepts when [k]T happens to vanish."""
    signature, key = crafted_with_key_torsion(torsion_index, cancelled=True)
    assert torsion_residue(signature, MESSAGE, key) == IDENTITY
    assert libsodium_accepts(signature, MESSAGE, key)
    assert verify(signature, MESSAGE, key) is True


@settings(max_examples=30, deadline=None)
@given(
    secret=st.integers(1, ORDER - 1),
    nonce=st.integers(1, ORDER - 1),
    nonce_torsion=st.sampled_from(range(8)),
    key_torsion=st.sampled_from(range(8)),
    message=st.binary(max_size=64),
)
def test_the_rule_accepts_every_torsion_residue_and_libsodium_only_the_identity(
    secret: int, nonce: int, nonce_torsion: int, key_torsion: int, message: bytes
) -> None:
    signature, key = reference.sign_crafted(
        message,
        secret,
        nonce,
        nonce_torsion=TORSION[nonce_torsion],
        key_torsion=TORSION[key_torsion],
    )
    residue = torsion_residue(signature, message, key)
    assert libsodium_accepts(signature, message, key) == (residue == IDENTITY)
    assert set(verdicts(signature, message, key).values()) == {True}


# --- what the rule refuses --------------------------------------------------------------------


@each_implementation
@pytest.mark.parametrize("torsion_index", range(8))
def test_a_small_order_nonce_is_invalid_although_the_equation_holds(
    verify: Verify, torsion_index: int
) -> None:
    """R = T and S = k a: [8]([S]B - R - [k]A) = [8](-T) is the identity, so step 4 alone
    refuses it."""
    signature, key = reference.sign_crafted(
        MESSAGE, SECRET, 0, nonce_torsion=TORSION[torsion_index]
    )
    assert signature[:32] == reference.encode(TORSION[torsion_index])
    assert reference.multiply(torsion_residue(signature, MESSAGE, key), 8) == IDENTITY
    assert not libsodium_accepts(signature, MESSAGE, key)
    assert verify(signature, MESSAGE, key) is False


@each_implementation
@pytest.mark.parametrize("torsion_index", range(8))
def test_a_small_order_key_is_invalid_although_the_equation_holds(
    verify: Verify, torsion_index: int
) -> None:
    """A = T and S = r: [8]([S]B - R - [k]A) = [8](-[k]T) is the identity, so step 4 alone
    refuses it."""
    signature, key = reference.sign_crafted(MESSAGE, 0, NONCE, key_torsion=TORSION[torsion_index])
    assert key == reference.encode(TORSION[torsion_index])
    assert reference.multiply(torsion_residue(signature, MESSAGE, key), 8) == IDENTITY
    assert not libsodium_accepts(signature, MESSAGE, key)
    assert verify(signature, MESSAGE, key) is False


def describe_encoding(encoding: bytes) -> str:
    """``y=p+2,sign=1`` and the like, for test ids."""
    value = int.from_bytes(encoding, "little")
    y, sign = value % 2**255, value >> 255
    if y >= FIELD_PRIME:
        return f"y=p+{y - FIELD_PRIME},sign={sign}"
    if y > FIELD_PRIME // 2:
        return f"y=p-{FIELD_PRIME - y},sign={sign}"
    return f"y={y},sign={sign}"


NONCANONICAL = reference.noncanonical_encodings()
OFF_CURVE = reference.off_curve_encodings(4)


def test_both_decodes_refuse_noncanonical_and_off_curve_encodings() -> None:
    """No signature over a non-canonical point can be made valid otherwise (it would take the
    discrete log of a point picked by its y, and those with y = 0 or 1 have small order), so
    the verdict tests below cannot tell a decode that forgot a check: this one can."""
    assert len(NONCANONICAL) == 26  # 12 y values below 19 name a point, either sign; 2 x == 0
    for encoding in NONCANONICAL + OFF_CURVE:
        assert reference.decode(encoding) is None, encoding.hex()
        assert is_point_encoding(encoding) is False, encoding.hex()
        reduced = int.from_bytes(encoding, "little") % 2**255 % FIELD_PRIME
        if encoding in NONCANONICAL and reduced not in (1, FIELD_PRIME - 1):
            # The same y reduced, with either sign, names a point: only the encoding is wrong.
            assert is_point_encoding(reference.encode_y(reduced, encoding[31] >> 7))


@each_implementation
@pytest.mark.parametrize("encoding", NONCANONICAL + OFF_CURVE, ids=describe_encoding)
def test_noncanonical_and_off_curve_encodings_are_invalid_as_key_and_as_nonce(
    verify: Verify, encoding: bytes
) -> None:
    signature, key = reference.sign_crafted(MESSAGE, SECRET, NONCE)
    assert verify(signature, MESSAGE, key) is True
    # As the key: the valid signature, now over the encoding instead of the key.
    assert verify(signature, MESSAGE, encoding) is False
    # As the nonce, with S = k a: [S]B - R - [k]A = -R, so if the reduced point had small order
    # (y = 0 or 1 here) the encoding alone would stand between this and step 6.
    k = reference.challenge(encoding, key, MESSAGE)
    assert verify(encoding + reference.scalar_encoding(k * SECRET % ORDER), MESSAGE, key) is False
    assert verify(encoding + signature[32:], MESSAGE, key) is False


@each_implementation
def test_s_at_or_above_the_order_is_invalid(verify: Verify) -> None:
    """S + L names the same scalar mod L: an implementation that reduced S would accept it."""
    signature, key = sign_honestly(b"\x09" * 32, MESSAGE)
    s = int.from_bytes(signature[32:], "little")
    assert verify(signature, MESSAGE, key) is True
    for larger in [ORDER, *(s + n * ORDER for n in range(1, 16) if s + n * ORDER < 2**256)]:
        changed = with_scalar(signature, larger)
        assert not libsodium_accepts(changed, MESSAGE, key)
        assert verify(changed, MESSAGE, key) is False, hex(larger)
    assert verify(signature[:32] + b"\xff" * 32, MESSAGE, key) is False


@each_implementation
def test_s_zero_is_checked_like_any_other(verify: Verify) -> None:
    """[8S mod L]B is the identity for S = 0, which libsodium's base multiplication refuses."""
    signature, key = sign_honestly(b"\x0a" * 32, MESSAGE)
    assert verify(with_scalar(signature, 0), MESSAGE, key) is False


@each_implementation
def test_wrong_lengths_are_invalid_without_exceptions(verify: Verify) -> None:
    """A valid signature padded or truncated by one byte, on either part, and empty parts."""
    signature, key = sign_honestly(b"\x0b" * 32, MESSAGE)
    assert verify(signature, MESSAGE, key) is True
    for bad_signature in (signature[:63], signature + b"\x00", signature * 2, b""):
        assert verify(bad_signature, MESSAGE, key) is False, len(bad_signature)
    for bad_key in (key[:31], key + b"\x00", key * 2, b""):
        assert verify(signature, MESSAGE, bad_key) is False, len(bad_key)
    assert verify(b"", b"", b"") is False


# --- one verdict from every implementation -----------------------------------------------------


@functools.cache
def _valid_points() -> tuple[bytes, ...]:
    """Encodings of points of every order class: [n]B + T for two n and each torsion T."""
    return tuple(
        reference.encode(reference.add(reference.multiply(reference.BASE, n), torsion))
        for n in (3, ORDER // 3)
        for torsion in TORSION
    )


signs = st.integers(0, 1)
point_encodings = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.builds(reference.encode_y, st.integers(0, 2**255 - 1), signs),
    st.builds(
        reference.encode_y, st.integers(FIELD_PRIME - 40, 2**255 - 1), signs
    ),  # near p, above p
    st.builds(reference.encode_y, st.integers(0, 40), signs),  # y = 0, 1 (x = 0) and small y
    st.sampled_from([reference.encode(torsion) for torsion in TORSION]),
    st.integers(0, 15).map(lambda index: _valid_points()[index]),
)
scalars = st.one_of(
    st.just(0),
    st.integers(0, ORDER - 1),
    st.integers(ORDER - 8, ORDER + 8),
    st.integers(ORDER, 2**256 - 1),
).map(reference.scalar_encoding)
signatures = st.one_of(
    st.binary(min_size=64, max_size=64), st.builds(bytes.__add__, point_encodings, scalars)
)


@settings(max_examples=500, deadline=None)
@given(encoding=st.one_of(point_encodings, st.binary(max_size=40)))
def test_the_portable_decode_check_is_the_reference_decode(encoding: bytes) -> None:
    assert is_point_encoding(encoding) == (reference.decode(encoding) is not None)


@settings(max_examples=200, deadline=None)
@given(signature=signatures, message=st.binary(max_size=64), public_key=point_encodings)
def test_every_implementation_gives_one_verdict_on_arbitrary_bytes(
    signature: bytes, message: bytes, public_key: bytes
) -> None:
    found = verdicts(signature, message, public_key)
    assert len(set(found.values())) == 1, found


@settings(max_examples=40, deadline=None)
@given(
    secret=st.integers(0, ORDER - 1),
    nonce=st.integers(0, ORDER - 1),
    nonce_torsion=st.sampled_from(range(8)),
    key_torsion=st.sampled_from(range(8)),
    message=st.binary(max_size=64),
    change=st.one_of(st.none(), st.tuples(st.integers(0, 95), st.integers(1, 255))),
)
def test_every_implementation_gives_one_verdict_on_crafted_signatures(
    secret: int,
    nonce: int,
    nonce_torsion: int,
    key_torsion: int,
    message: bytes,
    change: tuple[int, int] | None,
) -> None:
    """Crafted signatures, small-order parts included (secret or nonce 0), sometimes with one
    byte of signature or key changed; whatever libsodium accepts, every implementation does."""
    signature, key = reference.sign_crafted(
        message,
        secret,
        nonce,
        nonce_torsion=TORSION[nonce_torsion],
        key_torsion=TORSION[key_torsion],
    )
    if change is not None:
        index, mask = change
        joined = bytearray(signature + key)
        joined[index] ^= mask
        signature, key = bytes(joined[:64]), bytes(joined[64:])
    found = verdicts(signature, message, key)
    assert len(set(found.values())) == 1, found
    if libsodium_accepts(signature, message, key):
        assert found["reference"] is True


# --- the native batch ---------------------------------------------------------------------------


def _batch(native: ModuleType, items: tuple[tuple[bytes, bytes, bytes], ...]) -> bytes:
    randomness = os.urandom(RANDOMNESS_BYTES_PER_ITEM * len(items))
    answer = native.verify_batch(items, randomness)
    assert isinstance(answer, bytes), f"verify_batch returned {answer!r}"
    return answer


@functools.cache
def mixed_batch() -> tuple[tuple[bytes, bytes, bytes], ...]:
    """100 honest signatures, some replaced: two valid crafted-torsion ones (indices 20, 40) and
    four invalid ones (10: changed message, 50: small-order nonce, 60: S + L, 70: 63 bytes)."""
    items = []
    for index in range(100):
        message = f"payment {index}".encode()
        signature, key = sign_honestly(bytes([index]) * 32, message)
        items.append((signature, message, key))
    torsion_nonce, torsion_nonce_key = reference.sign_crafted(
        MESSAGE, SECRET, NONCE, nonce_torsion=TORSION[4]
    )
    torsion_key_signature, torsion_key = crafted_with_key_torsion(1, cancelled=False)
    small_nonce, small_nonce_key = reference.sign_crafted(
        MESSAGE, SECRET, 0, nonce_torsion=TORSION[2]
    )
    signature, message, key = items[30]
    s_plus_order = int.from_bytes(signature[32:], "little") + ORDER
    items[10] = (signature, message + b"!", key)
    items[20] = (torsion_nonce, MESSAGE, torsion_nonce_key)
    items[40] = (torsion_key_signature, MESSAGE, torsion_key)
    items[50] = (small_nonce, MESSAGE, small_nonce_key)
    items[60] = (with_scalar(signature, s_plus_order), message, key)
    items[70] = (signature[:63], message, key)
    return tuple(items)


@needs_native
def test_a_batch_gives_the_reference_verdict_of_every_item() -> None:
    assert NATIVE is not None
    items = mixed_batch()
    expected = bytes(verify_reference(*item) for item in items)
    assert [index for index, verdict in enumerate(expected) if not verdict] == [10, 50, 60, 70]
    # A cofactorless batch would refuse the torsion items for some draws of randomness only.
    for _ in range(8):
        assert _batch(NATIVE, items) == expected


@needs_native
def test_an_empty_batch_gives_no_verdicts() -> None:
    assert NATIVE is not None
    assert NATIVE.verify_batch((), b"") == b""


@needs_native
@pytest.mark.parametrize("extra_bytes", [-16, -1, 1, 16])
def test_randomness_of_the_wrong_length_is_refused(extra_bytes: int) -> None:
    assert NATIVE is not None
    items = mixed_batch()[:2]
    randomness = os.urandom(RANDOMNESS_BYTES_PER_ITEM * len(items) + extra_bytes)
    with pytest.raises(ValueError):  # noqa: PT011 (the message is the native module's own)
        NATIVE.verify_batch(items, randomness)


@needs_native
@pytest.mark.parametrize(
    "bad_item",
    [
        pytest.param("pair", id="two-tuple"),
        pytest.param("quadruple", id="four-tuple"),
        pytest.param("list", id="list"),
        pytest.param("text", id="str-message"),
        pytest.param("none", id="none-key"),
        pytest.param("integer", id="integer-item"),
    ],
)
def test_items_that_are_not_three_tuples_of_bytes_are_refused(bad_item: str) -> None:
    assert NATIVE is not None
    signature, message, key = mixed_batch()[0]
    item: object = {
        "pair": (signature, message),
        "quadruple": (signature, message, key, b""),
        "list": [signature, message, key],
        "text": (signature, message.decode(), key),
        "none": (signature, message, None),
        "integer": 7,
    }[bad_item]
    items = ((signature, message, key), item)
    with pytest.raises(TypeError):
        NATIVE.verify_batch(items, os.urandom(RANDOMNESS_BYTES_PER_ITEM * len(items)))
