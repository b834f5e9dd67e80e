"""The C rule's batch equation (``consensus/_ed25519.c``): it holds for every batch of valid
signatures, fails for a batch holding one that is not, depends on the random coefficients, and
``verify_batch`` settles every batch to the verdicts of the single check at every bucket width."""

from __future__ import annotations

import os
import threading

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.ed25519 import ORDER, verify_portable
from tests import ed25519_reference as reference

native = pytest.importorskip("consensus._ed25519")

Item = tuple[bytes, bytes, bytes]
SEEDS = [bytes([index, 7]) * 16 for index in range(1, 9)]
SIGNERS = [nacl.signing.SigningKey(seed) for seed in SEEDS]


def _honest(index: int, message: bytes, signer: int | None = None) -> Item:
    key = SIGNERS[index % len(SIGNERS)] if signer is None else SIGNERS[signer]
    return bytes(key.sign(message).signature), message, bytes(key.verify_key)


def _fresh(count: int) -> list[Item]:
    """``count`` honest signatures, each by its own key."""
    items = []
    for index in range(count):
        key = nacl.signing.SigningKey(index.to_bytes(4, "little") * 8)
        message = b"fresh %d" % index
        items.append((bytes(key.sign(message).signature), message, bytes(key.verify_key)))
    return items


def _randomness(count: int) -> bytes:
    return os.urandom(16 * count)


def _with_s(item: Item, s: int) -> Item:
    signature, message, key = item
    return signature[:32] + s.to_bytes(32, "little"), message, key


def _s(item: Item) -> int:
    return int.from_bytes(item[0][32:], "little")


def _torsion_items() -> list[Item]:
    """Valid under the rule, refused by libsodium: R or A with a torsion component."""
    items = []
    for index in (1, 2, 3, 5):
        message = b"torsion %d" % index
        signature, key = reference.sign_crafted(
            message, 1234567 + index, 7654321 + index, nonce_torsion=reference.TORSION[index]
        )
        items.append((signature, message, key))
        signature, key = reference.sign_crafted(
            message, 2345678 + index, 8765432 + index, key_torsion=reference.TORSION[index]
        )
        items.append((signature, message, key))
    return items


TORSION_ITEMS = _torsion_items()


def test_the_equation_holds_for_valid_signatures_with_any_coefficients() -> None:
    items = tuple([_honest(index, b"message %d" % index) for index in range(12)] + TORSION_ITEMS)
    assert all(verify_portable(*item) for item in items)
    for _ in range(20):
        assert native.equation_holds(items, _randomness(len(items)))
    assert native.equation_holds((), b"")
    assert native.equation_holds(items[:1], _randomness(1))


@pytest.mark.parametrize(
    "tamper", ["message", "s_plus_one", "other_key", "other_r", "torsion_message"]
)
def test_one_invalid_signature_fails_the_equation(tamper: str) -> None:
    items = [_honest(index, b"message %d" % index) for index in range(12)] + TORSION_ITEMS
    victim = items[5] if tamper != "torsion_message" else items[-1]
    signature, message, key = victim
    if tamper in ("message", "torsion_message"):
        bad = (signature, message + b".", key)
    elif tamper == "s_plus_one":
        bad = _with_s(victim, (_s(victim) + 1) % ORDER)
    elif tamper == "other_key":
        bad = (signature, message, items[6][2])
    else:
        bad = (items[6][0][:32] + signature[32:], message, key)
    items[items.index(victim)] = bad
    # The checks before the equation pass: only the equation can catch it.
    assert native.equation_holds((bad,), bytes(16)) is False
    assert not verify_portable(*bad)
    for _ in range(20):
        assert not native.equation_holds(tuple(items), _randomness(len(items)))


def test_the_coefficients_must_differ_for_errors_not_to_cancel() -> None:
    """Two signatures whose S are moved by +1 and -1 cancel in a batch where both have the same
    coefficient: why each batch draws fresh random ones (``node.signatures``)."""
    first, second = _honest(0, b"first"), _honest(1, b"second")
    assert 0 < _s(first) + 1 < ORDER
    assert _s(second) >= 1
    pair = (_with_s(first, _s(first) + 1), _with_s(second, _s(second) - 1))
    assert not verify_portable(*pair[0])
    assert not verify_portable(*pair[1])
    same = os.urandom(15) + b"\x01"
    assert native.equation_holds(pair, same + same)
    assert not native.equation_holds(pair, _randomness(2))
    # verify_batch settles a failed equation one signature at a time; the pair is refused.
    padding = tuple(_honest(index, b"pad %d" % index) for index in range(10))
    assert native.verify_batch(pair + padding, _randomness(12)) == b"\x00\x00" + b"\x01" * 10


def test_checks_before_the_equation_fail_it() -> None:
    good = _honest(0, b"good")
    too_large = _with_s(good, _s(good) + ORDER)
    assert too_large[0] != good[0]
    assert _s(too_large) < 2**256
    assert not native.equation_holds((good, too_large), _randomness(2))
    small_order_key = (good[0], good[1], reference.encode(reference.TORSION[2]))
    assert not native.equation_holds((good, small_order_key), _randomness(2))


@pytest.mark.parametrize("count", [1, 2, 7, 50, 80, 90, 200, 400, 1100])
def test_batches_of_every_size_give_the_single_checks_verdicts(count: int) -> None:
    """Batches of 2n + 1 points: the interleaved sum up to 80 signatures, then the buckets at
    every width (5 to 8 bits); one in 37 signatures tampered, and one batch all valid, so both
    the equation and its settling run."""
    items = _fresh(count)
    assert native.verify_batch(tuple(items), _randomness(count)) == b"\x01" * count
    for index in range(0, count, 37):
        signature, message, key = items[index]
        items[index] = (signature, message + b"!", key)
    expected = bytes(int(index % 37 != 0) for index in range(count))
    assert native.verify_batch(tuple(items), _randomness(count)) == expected
    assert native.verify_each(tuple(items)) == expected


def test_repeated_keys_share_one_point() -> None:
    items = [_honest(index, b"repeat %d" % index, signer=index % 2) for index in range(30)]
    assert native.verify_batch(tuple(items), _randomness(30)) == b"\x01" * 30
    signature, message, _key = items[4]
    items[4] = (signature, message, bytes(SIGNERS[1].verify_key))  # the other repeated key
    expected = bytes(int(index != 4) for index in range(30))
    assert native.verify_batch(tuple(items), _randomness(30)) == expected


@pytest.mark.parametrize("length", [0, 1, 47, 48, 49, 63, 64, 65, 175, 176, 177, 191, 192, 193])
def test_messages_around_hash_block_boundaries(length: int) -> None:
    """SHA-512 hashes R || A || M in 128-byte blocks, its length in the last 16 bytes: the
    message lengths where R || A || M fills a block or leaves no room for the length."""
    message = bytes(range(256))[:length]
    item = _honest(3, message)
    assert native.verify(*item)
    assert not native.verify(item[0], message + b"\x00", item[2])
    assert native.verify_each((item,)) == b"\x01"


@settings(max_examples=30, deadline=None)
@given(
    cases=st.lists(
        st.tuples(
            st.integers(0, len(SIGNERS) - 1),
            st.binary(max_size=300),
            st.sampled_from(["none", "bit", "message", "torsion"]),
            st.integers(0, 511),
        ),
        max_size=40,
    )
)
def test_random_batches_agree_with_the_portable_rule(
    cases: list[tuple[int, bytes, str, int]],
) -> None:
    items = []
    for signer, message, change, position in cases:
        if change == "torsion":
            items.append(TORSION_ITEMS[position % len(TORSION_ITEMS)])
            continue
        signature, _, key = _honest(0, message, signer=signer)
        if change == "bit":
            flipped = bytearray(signature)
            flipped[position % 64] ^= 1 << (position % 8)
            signature = bytes(flipped)
        elif change == "message":
            message += b"?"
        items.append((signature, message, key))
    expected = bytes(int(verify_portable(*item)) for item in items)
    assert native.verify_batch(tuple(items), _randomness(len(items))) == expected
    assert native.verify_each(tuple(items)) == expected


def test_bad_arguments_are_named() -> None:
    good = _honest(0, b"good")
    with pytest.raises(ValueError, match="randomness is 0 bytes; 1 items need 16"):
        native.equation_holds((good,), b"")
    with pytest.raises(TypeError, match="item 0 is not a"):
        native.verify_each(((good[0], good[1]),))
    with pytest.raises(TypeError):
        native.verify("not bytes", good[1], good[2])
    assert native.verify(good[0][:63], good[1], good[2]) is False
    assert native.verify(good[0], good[1], good[2] + b"\x00") is False


# The decoded-key table (``key_cache_info``, ``key_cache_clear``): what it keeps and when.


def _twin(key: bytes) -> bytes:
    """The encoding of -A for the encoding of A: only the sign bit (bit 255) differs, so both
    keys share a slot of the table (chosen from the first eight bytes), and both are valid."""
    return key[:31] + bytes([key[31] ^ 0x80])


def test_a_valid_key_is_decoded_once_and_then_found() -> None:
    native.key_cache_clear()
    signature, message, key = _honest(0, b"kept")
    assert native.verify(signature, message, key) is True
    assert native.key_cache_info() == {"slots": 4096, "filled": 1, "hits": 0, "misses": 1}
    assert native.verify(signature, message, key) is True
    assert native.verify(signature, message + b"!", key) is False
    assert native.key_cache_info()["hits"] == 2
    batch = (
        (signature, message, key),
        (signature, message, key),
        _honest(0, b"another", signer=0),
        _honest(1, b"a second key"),
    )
    assert native.verify_batch(batch, _randomness(4)) == b"\x01\x01\x01\x01"
    info = native.key_cache_info()
    # One lookup per distinct key of the batch: the first key found, the second new.
    assert (info["filled"], info["hits"], info["misses"]) == (2, 3, 2)


def test_keys_that_fail_their_checks_are_never_kept() -> None:
    native.key_cache_clear()
    signature, message, _ = _honest(0, b"small order")
    refused = [reference.encode(point) for point in reference.TORSION]
    refused += reference.noncanonical_encodings()[:4] + reference.off_curve_encodings(4)
    for _ in range(2):
        for key in refused:
            assert native.verify(signature, message, key) is False
        items = tuple((signature, message, key) for key in refused)
        assert native.verify_batch(items, _randomness(len(items))) == bytes(len(items))
    info = native.key_cache_info()
    assert info["filled"] == 0
    assert info["hits"] == 0


def test_a_slot_holds_one_key_and_is_matched_on_all_its_bytes() -> None:
    """A and -A (secrets a and -a) share a slot: whichever the slot holds, each key's own
    signatures are accepted and the other's refused."""
    native.key_cache_clear()
    secret = 987654321
    message = b"slot"
    signature, key = reference.sign_crafted(message, secret, 4242)
    twin_signature, twin = reference.sign_crafted(message, reference.ORDER - secret, 4343)
    assert twin == _twin(key)
    assert native.verify(signature, message, key) is True
    # The slot holds key: twin's lookup must not take its point.
    assert native.verify(twin_signature, message, twin) is True
    assert native.verify(signature, message, twin) is False
    assert native.key_cache_info()["filled"] == 1
    assert native.verify(signature, message, key) is True
    assert native.verify(twin_signature, message, key) is False
    items = (
        (signature, message, key),
        (twin_signature, message, twin),
        (signature, message, twin),
        (twin_signature, message, key),
    ) * 2
    assert native.verify_batch(items, _randomness(8)) == b"\x01\x01\x00\x00" * 2
    assert native.verify_each(items) == b"\x01\x01\x00\x00" * 2
    assert native.key_cache_info()["filled"] == 1


def test_threads_sharing_the_table_get_every_verdict_right() -> None:
    """Threads check batches at once whose keys fight over the same slots (each key with its
    twin): every verdict is the one the rule gives."""
    native.key_cache_clear()
    signed = _fresh(48)
    items = list(signed) + [(s, m, _twin(k)) for s, m, k in signed]
    expected = b"\x01" * len(signed) + b"\x00" * len(signed)
    failures: list[str] = []

    def work(seed: int) -> None:
        for round_ in range(12):
            order = sorted(range(len(items)), key=lambda i: (i * (seed + 7) + round_) % 97)
            batch = tuple(items[i] for i in order)
            want = bytes(expected[i] for i in order)
            size = 1 + (seed + round_) % 40
            for start in range(0, len(batch), size):
                part = batch[start : start + size]
                got = native.verify_batch(part, _randomness(len(part)))
                if got != want[start : start + size]:
                    failures.append(f"thread {seed} round {round_} at {start}")
            failures.extend(
                f"thread {seed} single {index}"
                for index in order[:8]
                if native.verify(*items[index]) != (expected[index] == 1)
            )

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert native.key_cache_info()["hits"] > 0
