"""Signatures with domain separation: a signature never verifies under another tag or chain."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.crypto import PrivateKey, signing_bytes, verify

names = st.binary(min_size=1, max_size=40)
chains = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=20)


@given(st.binary(min_size=32, max_size=32), names, names, chains, chains, st.binary(max_size=64))
def test_signature_is_bound_to_tag_and_chain(
    seed: bytes, tag_a: bytes, tag_b: bytes, chain_x: str, chain_y: str, payload: bytes
) -> None:
    key = PrivateKey(seed)
    signature = key.sign(tag_a, chain_x, payload)
    assert verify(key.public_key, tag_a, chain_x, payload, signature)
    if tag_a != tag_b:
        assert not verify(key.public_key, tag_b, chain_x, payload, signature)
    if chain_x != chain_y:
        assert not verify(key.public_key, tag_a, chain_y, payload, signature)


@given(names, names, chains, chains, st.binary(max_size=32), st.binary(max_size=32))
def test_signing_bytes_are_unambiguous(
    tag_a: bytes, tag_b: bytes, chain_a: str, chain_b: str, payload_a: bytes, payload_b: bytes
) -> None:
    if (tag_a, chain_a, payload_a) != (tag_b, chain_b, payload_b):
        assert signing_bytes(tag_a, chain_a, payload_a) != signing_bytes(tag_b, chain_b, payload_b)


def test_tampered_payload_and_malformed_inputs_do_not_verify() -> None:
    key = PrivateKey(b"\x01" * 32)
    signature = key.sign(b"t", "c", b"payload")
    assert not verify(key.public_key, b"t", "c", b"payloaD", signature)
    assert not verify(key.public_key[:31], b"t", "c", b"payload", signature)
    assert not verify(key.public_key, b"t", "c", b"payload", signature[:63])
    assert not verify(b"\xff" * 32, b"t", "c", b"payload", signature)
    assert not verify(key.public_key, b"", "c", b"payload", signature)


def test_seed_length_is_checked() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PrivateKey(b"short")
