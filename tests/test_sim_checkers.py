"""Every simulator checker, fed a hand-made history: a clean one passes, a violating one fires.

A checker nobody has seen fail proves nothing. Each test below builds a tiny history by hand
(4 validators, real keys, real certificates) and asserts the exact check that reports it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from consensus.crypto import PrivateKey, hash_bytes
from consensus.replica import DropReason
from consensus.types import (
    Block,
    BlockHeader,
    CommitCertificate,
    Phase,
    Validator,
    ValidatorSet,
    Vote,
)
from sims.checkers import CHECKS, TERMINAL_CHECKS, InvariantChecker

CHAIN = "checker-test"
KEYS = [PrivateKey(hash_bytes(f"checker/{i}".encode())) for i in range(4)]
VALIDATORS = ValidatorSet(tuple(Validator(f"v{i}", k.public_key) for i, k in enumerate(KEYS)))
GENESIS = hash_bytes(b"checker/genesis")
GENESIS_APP = hash_bytes(b"checker/genesis-app")


def app_after(block: Block) -> bytes:
    """The state after ``block`` in these histories (any function of the block will do)."""
    return hash_bytes(b"state" + block.hash)


def block_at(height: int, parent: bytes, app_hash: bytes, *, salt: int = 0) -> Block:
    return Block.build(
        chain_id=CHAIN,
        height=height,
        view=0,
        parent_hash=parent,
        app_hash=app_hash,
        next_validators_hash=VALIDATORS.hash(),
        proposer=height % 4,
        timestamp_ms=1_000 + height * 10 + salt,
        transactions=(),
    )


def certificate(
    block: Block, signers: Sequence[int] = (0, 1, 2), view: int = 0
) -> CommitCertificate:
    votes = [
        Vote.create(
            KEYS[i],
            CHAIN,
            phase=Phase.COMMIT,
            height=block.height,
            view=view,
            block_hash=block.hash,
            validator=i,
        )
        for i in signers
    ]
    return CommitCertificate.from_votes(votes)


def checker() -> InvariantChecker:
    return InvariantChecker(
        validators=VALIDATORS, chain_id=CHAIN, genesis_hash=GENESIS, genesis_app_hash=GENESIS_APP
    )


def chain_of(length: int, *, salt: int = 0) -> list[Block]:
    blocks: list[Block] = []
    parent, app = GENESIS, GENESIS_APP
    for height in range(1, length + 1):
        block = block_at(height, parent, app, salt=salt if height == length else 0)
        blocks.append(block)
        parent, app = block.hash, app_after(block)
    return blocks


def commit_all(check: InvariantChecker, node: int, blocks: Sequence[Block]) -> None:
    for block in blocks:
        check.on_commit(0, node, block, certificate(block), app_after(block))


def checks_fired(check: InvariantChecker) -> set[str]:
    return {violation.check for violation in check.violations}


def test_a_clean_history_passes_every_check() -> None:
    check = checker()
    blocks = chain_of(3)
    for node in range(4):
        commit_all(check, node, blocks)
    for node in range(4):
        for phase in (1, 2):
            check.on_vote_signed(0, node, phase, 1, 0, blocks[0].hash)
    check.on_rejected(0, 1, 2, DropReason.STALE, "late")
    check.on_restart(5, 2, 3)
    check.on_acknowledged(b"t" * 32, 2)
    check.check_acknowledged(
        6, 0, [(1, frozenset()), (2, frozenset({b"t" * 32})), (3, frozenset())]
    )
    wanted = check.liveness_start(10, start_view=0, view_bound=3, budget_ms=1_000)
    assert wanted == 4
    block4 = block_at(4, blocks[-1].hash, app_after(blocks[-1]))
    check.on_commit(20, 0, block4, certificate(block4, view=2), app_after(block4))
    assert check.liveness_progress(30)
    assert check.liveness_catch_up(40, {0: 4, 1: 4}, 100)
    assert check.violations == []
    assert check.checks_run > 0


def test_agreement_fires_on_two_blocks_at_one_height() -> None:
    check = checker()
    commit_all(check, 0, chain_of(2))
    commit_all(check, 1, chain_of(2, salt=1))
    assert checks_fired(check) == {"agreement"}
    assert check.terminal


def test_validity_fires_on_a_short_certificate_a_garbled_body_and_a_bad_transaction() -> None:
    check = checker()
    block = chain_of(1)[0]
    check.on_commit(0, 0, block, certificate(block, signers=(0, 1)), app_after(block))
    assert "2 signatures, quorum is 3" in check.violations[-1].detail
    header = block.header
    garbled = Block(
        BlockHeader(
            header.chain_id,
            header.height,
            header.view,
            header.parent_hash,
            header.app_hash,
            header.next_validators_hash,
            header.proposer,
            header.timestamp_ms,
            header.transactions_root,
            1,
        ),
        (b"not in the root",),
    )
    body = checker()
    body.on_commit(0, 1, garbled, certificate(garbled), app_after(garbled))
    assert any("body does not match" in v.detail for v in body.violations)
    assert any("transaction 0 invalid" in v.detail for v in body.violations)
    assert checks_fired(check) == checks_fired(body) == {"validity"}
    assert not check.terminal


def test_chain_fires_on_a_gap_a_wrong_parent_and_a_wrong_app_hash() -> None:
    blocks = chain_of(3)
    gap = checker()
    gap.on_commit(0, 0, blocks[1], certificate(blocks[1]), app_after(blocks[1]))
    assert checks_fired(gap) == {"chain"}
    parent = checker()
    commit_all(parent, 0, blocks[:1])
    stranger = block_at(2, hash_bytes(b"elsewhere"), app_after(blocks[0]))
    parent.on_commit(0, 0, stranger, certificate(stranger), app_after(stranger))
    assert "parent_hash" in parent.violations[0].detail
    state = checker()
    commit_all(state, 0, blocks[:1])
    diverged = block_at(2, blocks[0].hash, hash_bytes(b"other state"))
    state.on_commit(0, 0, diverged, certificate(diverged), app_after(diverged))
    assert "app_hash" in state.violations[0].detail


def test_app_state_fires_when_the_same_block_leaves_different_states() -> None:
    check = checker()
    block = chain_of(1)[0]
    check.on_commit(0, 0, block, certificate(block), app_after(block))
    check.on_commit(0, 1, block, certificate(block), hash_bytes(b"a different state"))
    assert checks_fired(check) == {"app_state"}


def test_sync_hint_fires_when_the_vouched_app_hash_is_not_the_nodes_state() -> None:
    check = checker()
    first, second = chain_of(2)
    # Right: the hint is the state the block leaves (the next block's header says so).
    check.on_commit(0, 0, first, certificate(first), app_after(first), vouched_app_hash=None)
    vouched = second.header.app_hash
    assert vouched == app_after(first)
    check.on_commit(0, 1, first, certificate(first), app_after(first), vouched_app_hash=vouched)
    assert check.violations == []
    assert check.sync_hints_checked == 1
    # Wrong: the state after the block after.
    check.on_commit(
        0, 2, first, certificate(first), app_after(first), vouched_app_hash=app_after(second)
    )
    assert checks_fired(check) == {"sync_hint"}
    assert check.violations[0].node == 2
    assert not check.terminal


def test_durability_fires_when_a_node_restarts_below_what_it_committed() -> None:
    check = checker()
    commit_all(check, 2, chain_of(3))
    check.on_restart(10, 2, 3)
    assert check.violations == []
    check.on_restart(20, 2, 2)
    assert checks_fired(check) == {"durability"}
    assert "restarted at height 2 after committing 3" in check.violations[0].detail


def test_acknowledged_fires_when_an_acknowledged_transaction_is_not_on_disk() -> None:
    check = checker()
    commit_all(check, 0, chain_of(2))
    check.on_acknowledged(b"a" * 32, 1)
    check.on_acknowledged(b"b" * 32, 2)
    check.check_acknowledged(0, 0, [(1, frozenset({b"a" * 32})), (2, frozenset())])
    assert checks_fired(check) == {"acknowledged"}
    missing = checker()
    commit_all(missing, 0, chain_of(2))
    missing.on_acknowledged(b"a" * 32, 2)
    missing.check_acknowledged(0, 0, [(1, frozenset())])
    assert "missing from the node's disk" in missing.violations[0].detail


def test_honest_signatures_fire_on_two_votes_in_one_slot() -> None:
    check = checker()
    check.on_vote_signed(0, 1, 1, 5, 2, b"x" * 32)
    check.on_vote_signed(0, 1, 1, 5, 2, b"x" * 32)  # a re-broadcast is fine
    check.on_vote_signed(0, 1, 1, 5, 3, b"y" * 32)  # another view is fine
    assert check.violations == []
    check.on_vote_signed(0, 1, 1, 5, 2, b"y" * 32)
    assert checks_fired(check) == {"honest_signatures"}


@pytest.mark.parametrize(
    ("reason", "fires"),
    [
        (DropReason.INVALID_NEW_VIEW, True),
        (DropReason.BAD_SIGNATURE, True),
        (DropReason.INVALID_CERTIFICATE, True),
        (DropReason.STATE_DIVERGED, True),
        (DropReason.STALE, False),
        (DropReason.DUPLICATE, False),
        (DropReason.TOO_FAR_AHEAD, False),
        (DropReason.BUFFER_FULL, False),
        (DropReason.UNEXPECTED, False),
    ],
)
def test_honest_rejected_fires_on_invalid_drops_only(reason: DropReason, fires: bool) -> None:
    check = checker()
    check.on_rejected(0, 1, 3, reason, "detail")
    assert checks_fired(check) == ({"honest_rejected"} if fires else set())


def test_certificate_possibility_fires_before_any_fork_is_committed() -> None:
    """n = 4, f = 1, q = 3: two honest commit votes for d in view 0 plus one byzantine would
    certify d; two honest commit votes for d' in view 2 would certify d' too."""
    check = checker()
    d, other = b"d" * 32, b"e" * 32
    check.on_vote_signed(0, 0, 2, 7, 0, d)
    check.on_vote_signed(0, 1, 2, 7, 0, d)
    check.on_vote_signed(0, 2, 2, 7, 1, other)  # one vote for another block: not certifiable
    assert check.violations == []
    check.on_vote_signed(0, 2, 2, 7, 2, other)
    assert check.violations == []
    check.on_vote_signed(0, 3, 2, 7, 2, other)
    assert checks_fired(check) == {"certificate_possibility"}
    assert not check.terminal


def test_certificate_possibility_allows_a_later_view_to_reuse_the_same_block() -> None:
    check = checker()
    d = b"d" * 32
    for view in (0, 3):
        for validator in (0, 1, 2):
            check.on_vote_signed(0, validator, 2, 4, view, d)
    assert check.violations == []


def test_liveness_fires_when_no_height_commits_or_it_takes_too_many_views() -> None:
    stuck = checker()
    commit_all(stuck, 0, chain_of(2))
    stuck.liveness_start(100, start_view=1, view_bound=4, budget_ms=500)
    assert not stuck.liveness_progress(600)
    assert "no new height after faults stopped: stuck at 2" in stuck.violations[0].detail
    slow = checker()
    blocks = chain_of(3)
    commit_all(slow, 0, blocks[:2])
    slow.liveness_start(100, start_view=0, view_bound=3, budget_ms=5_000)
    slow.on_commit(200, 0, blocks[2], certificate(blocks[2], view=7), app_after(blocks[2]))
    assert not slow.liveness_progress(300)
    assert "committed in view 7, bound was 3" in slow.violations[0].detail
    assert checks_fired(stuck) == checks_fired(slow) == {"liveness"}


def test_liveness_fires_when_an_honest_node_does_not_catch_up() -> None:
    check = checker()
    blocks = chain_of(2)
    commit_all(check, 0, blocks[:1])
    check.liveness_start(0, start_view=0, view_bound=3, budget_ms=1_000)
    commit_all(check, 0, blocks[1:])
    assert check.liveness_progress(10)
    assert not check.liveness_catch_up(20, {0: 2, 1: 2, 3: 1}, 100)
    assert checks_fired(check) == {"liveness"}
    assert check.violations[0].node == 3


def test_every_check_has_a_test_here() -> None:
    """Adding a check without a firing test here fails this test."""
    tested = {
        "agreement",
        "validity",
        "chain",
        "app_state",
        "durability",
        "acknowledged",
        "honest_signatures",
        "honest_rejected",
        "certificate_possibility",
        "liveness",
        "sync_hint",
    }
    assert set(CHECKS) == tested
    assert set(TERMINAL_CHECKS) <= tested
