"""A block's transaction hashes (``Block.transaction_hashes``): computed once per block object
from its own bytes, the leaves of its transactions root, and what every later step (execution,
the mempool, the store's index) uses instead of hashing again."""

from __future__ import annotations

import pytest

from consensus.crypto import hash_bytes
from consensus.types import Block, DecodeError
from tests.store_fixtures import VALIDATORS

TRANSACTIONS = [b"first transaction", b"second", b"third, longer " * 20]


def block_of(transactions: list[bytes]) -> Block:
    """A block carrying ``transactions`` under a header whose other fields do not matter."""
    return Block.build(
        chain_id="hash-chain",
        height=3,
        view=0,
        parent_hash=bytes(32),
        app_hash=bytes(32),
        next_validators_hash=VALIDATORS.hash(),
        proposer=0,
        timestamp_ms=1_000,
        transactions=transactions,
    )


def test_built_and_decoded_blocks_hash_each_transaction_once() -> None:
    built = block_of(TRANSACTIONS)
    expected = tuple(hash_bytes(tx) for tx in TRANSACTIONS)
    assert built.transaction_hashes() == expected
    assert built.transaction_hashes() is built.transaction_hashes()  # kept, not recomputed
    decoded = Block.decode(built.encode())
    assert decoded.transaction_hashes() == expected
    assert decoded == built
    assert block_of([]).transaction_hashes() == ()


def test_a_body_swapped_under_a_header_still_fails_its_root() -> None:
    # The hashes belong to the object they were computed from: a block carrying another
    # body under the same header computes its own and no longer matches the root.
    built = block_of(TRANSACTIONS)
    swapped = Block(built.header, (TRANSACTIONS[0], TRANSACTIONS[2], TRANSACTIONS[1]))
    assert not swapped.body_matches_header()
    assert built.body_matches_header()
    forged = built.encode().replace(b"second", b"sEcond")
    with pytest.raises(DecodeError, match="does not match transactions_root"):
        Block.decode(forged)
