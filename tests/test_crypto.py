"""Signatures with domain separation: a signature never verifies under another tag or chain."""

from __future__ import annotations

import importlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

import consensus.crypto as crypto
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


class _FakeRule:
    """A stand-in for ``consensus._ed25519`` that gives fixed verdicts."""

    def __init__(self, verdict: bool) -> None:
        self.verdict = verdict

    def verify(self, signature: bytes, message: bytes, public_key: bytes, /) -> bool:
        return self.verdict

    def verify_batch(
        self, items: tuple[tuple[bytes, bytes, bytes], ...], randomness: bytes, /
    ) -> bytes:
        return bytes([self.verdict]) * len(items)

    def verify_each(self, items: tuple[tuple[bytes, bytes, bytes], ...], /) -> bytes:
        return bytes([self.verdict]) * len(items)

    def key_cache_info(self) -> dict[str, int]:
        return {"slots": 0, "filled": 0, "hits": 0, "misses": 0}

    def key_cache_clear(self) -> None:
        pass


def test_a_c_rule_that_disagrees_with_the_portable_one_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not crypto._agrees_with_portable(_FakeRule(True))
    assert not crypto._agrees_with_portable(_FakeRule(False))
    monkeypatch.setattr(importlib, "import_module", lambda name: _FakeRule(True))
    crypto._loaded.cache_clear()
    try:
        assert crypto.rule_status() == "portable (consensus._ed25519 failed its self-test)"
        assert crypto.native_rule() is None
        key = PrivateKey(bytes(range(32)))
        # The portable rule decides: the fake would have accepted the forged signature.
        assert not crypto.verify(key.public_key, b"t", "c", b"p", bytes(64))
        assert crypto.verify(key.public_key, b"t", "c", b"p", key.sign(b"t", "c", b"p"))
    finally:
        crypto._loaded.cache_clear()


def test_without_the_c_rule_signatures_are_checked_by_the_portable_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> object:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(importlib, "import_module", missing)
    crypto._loaded.cache_clear()
    try:
        assert crypto.rule_status().startswith("portable (consensus._ed25519 is not available")
        key = PrivateKey(bytes(range(32)))
        signature = key.sign(b"t", "c", b"p")
        assert crypto.verify(key.public_key, b"t", "c", b"p", signature)
        assert not crypto.verify(key.public_key, b"t", "c", b"q", signature)
        assert crypto.key_cache_info() is None  # the portable rule keeps no keys
    finally:
        crypto._loaded.cache_clear()


@pytest.mark.skipif(
    os.environ.get("SUANPAN_PURE_PYTHON") == "1",
    reason="SUANPAN_PURE_PYTHON=1 runs the portable rule",
)
def test_the_install_built_the_c_rule() -> None:
    assert crypto.rule_status() == crypto.RULE_STATUS_NATIVE
    info = crypto.key_cache_info()
    assert info is not None
    assert info["slots"] == 4096
