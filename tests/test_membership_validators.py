"""Validator-set governance in membership: add, remove and rotate validators by bank vote.

Four founding banks (governance quorum 3) run four genesis validators. Each story proposes a
change, gathers votes, and reads the set in force at each height through the host, the way a
node does after each commit (``AppHost.validator_set``).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.host import AppHost, GenesisError
from apps.membership import MembershipApp
from apps.state import MemoryBackend
from consensus.codec import Value
from consensus.crypto import PrivateKey
from consensus.types import RECONFIGURATION_DELAY_HEIGHTS, Validator, ValidatorSet
from tests.host_fixtures import Chain, genesis_config, key

BANKS = [key(f"bank_{x}") for x in "abcd"]
GENESIS_VALIDATORS = ValidatorSet(
    tuple(
        Validator(f"val-{x}", key(f"validator_{x}").public_key, key(f"node_{x}").public_key)
        for x in "abcd"
    )
)


def start() -> Chain:
    return Chain.start(validators=GENESIS_VALIDATORS)


def propose(chain: Chain, proposer: int, arguments: dict[str, Value]) -> dict[str, Value]:
    result = chain.run_one(chain.sign(BANKS[proposer], "membership", "propose", arguments))
    assert isinstance(result, dict)
    return result


def vote(chain: Chain, voter: int, proposal: Value) -> dict[str, Value]:
    tx = chain.sign(BANKS[voter], "membership", "vote", {"proposal": proposal})
    receipt = chain.run([tx]).receipts[0]
    assert receipt.ok, receipt.message
    assert isinstance(receipt.result, dict)
    return receipt.result


def decide(chain: Chain, arguments: dict[str, Value]) -> int:
    """Propose (bank a) and vote (banks b, c) a change; returns the height it executed at."""
    opened = propose(chain, 0, arguments)
    vote(chain, 1, opened["proposal"])
    executed = vote(chain, 2, opened["proposal"])
    assert executed["status"] == "executed", executed
    return chain.host.height


def add_e(**overrides: Value) -> dict[str, Value]:
    arguments: dict[str, Value] = {
        "action": "add_validator",
        "validator_name": "val-e",
        "validator_key": key("validator_e").public_key,
        "node_key": key("node_e").public_key,
        "institution_id": "bank_d",
    }
    arguments.update(overrides)
    return arguments


def names(validators: ValidatorSet | None) -> list[str]:
    assert validators is not None
    return [v.name for v in validators.validators]


def test_genesis_starts_the_registry_from_the_genesis_validators() -> None:
    chain = start()
    assert chain.host.validator_set(1) == GENESIS_VALIDATORS
    assert chain.host.validator_set(2) == GENESIS_VALIDATORS
    answer = chain.host.query("membership", "validators", {})
    assert isinstance(answer, dict)
    assert answer["effective_height"] == 1
    assert Chain.start().host.validator_set(1) is None  # no registry: genesis set stands


def test_the_membership_genesis_may_not_list_validators_itself() -> None:
    config = genesis_config()
    assert isinstance(config, dict)
    host = AppHost([MembershipApp()], MemoryBackend(), chain_id="x")
    with pytest.raises(GenesisError, match="genesis validators"):
        host.init_genesis(
            {"membership": {**config, "validators": []}}, validators=GENESIS_VALIDATORS
        )


def test_an_added_validator_is_in_force_two_heights_after_the_deciding_block() -> None:
    chain = start()
    executed = decide(chain, add_e())
    effective = executed + RECONFIGURATION_DELAY_HEIGHTS
    assert names(chain.host.validator_set(effective - 1)) == ["val-a", "val-b", "val-c", "val-d"]
    assert names(chain.host.validator_set(effective)) == [
        "val-a",
        "val-b",
        "val-c",
        "val-d",
        "val-e",
    ]
    added = chain.host.validator_set(effective)
    assert added is not None
    assert added.validators[4].node_key == key("node_e").public_key
    # The state after block c answers every height beyond c + 2 as it answers c + 2 (the node
    # answers look-ahead heights from its c + 2 entry).
    final = chain.host.height + RECONFIGURATION_DELAY_HEIGHTS
    for height in range(final, final + 40, 7):
        assert chain.host.validator_set(height) == chain.host.validator_set(final)
    proposal = chain.host.query("membership", "proposals", {})
    assert proposal == ()
    answer = chain.host.query("membership", "validators", {"height": effective})
    assert isinstance(answer, dict)
    records = answer["validators"]
    assert isinstance(records, tuple)
    assert records[4]["institution"] == "bank_d"


def test_remove_and_rotate_change_one_validator_each() -> None:
    chain = start()
    removed_at = decide(chain, {"action": "remove_validator", "validator_name": "val-b"})
    chain.run([])
    chain.run([])  # the removal is in force now
    assert names(chain.host.validator_set(removed_at + 2)) == ["val-a", "val-c", "val-d"]
    new_key = key("validator_c_2").public_key
    rotated_at = decide(
        chain,
        {"action": "rotate_validator_key", "validator_name": "val-c", "validator_key": new_key},
    )
    rotated = chain.host.validator_set(rotated_at + 2)
    assert rotated is not None
    assert rotated.public_key(1) == new_key
    assert rotated.validators[1].node_key == key("node_c").public_key  # kept
    node_only = key("node_c_2").public_key
    chain.run([])
    chain.run([])
    node_at = decide(
        chain, {"action": "rotate_validator_key", "validator_name": "val-c", "node_key": node_only}
    )
    after = chain.host.validator_set(node_at + 2)
    assert after is not None
    assert (after.public_key(1), after.validators[1].node_key) == (new_key, node_only)


def test_one_change_at_a_time() -> None:
    """A second change cannot execute while the first is scheduled but not in force (in the
    very next block); the proposal stays open and executes once it is."""
    chain = start()
    decide(chain, add_e())
    propose_tx = chain.sign(
        BANKS[0], "membership", "propose", {"action": "remove_validator", "validator_name": "val-a"}
    )
    proposal = propose_tx.hash.hex()
    receipts = chain.run(
        [
            propose_tx,
            chain.sign(BANKS[1], "membership", "vote", {"proposal": proposal}),
            chain.sign(BANKS[2], "membership", "vote", {"proposal": proposal}),
        ]
    ).receipts
    assert [r.ok for r in receipts] == [True, True, False]
    assert receipts[2].code == "validator_change_pending"
    executed = vote(chain, 3, proposal)  # the first change is in force now
    assert executed["status"] == "executed"
    assert names(chain.host.validator_set(chain.host.height + 2))[0] == "val-b"


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        (add_e(validator_name="val-a"), "validator_exists"),
        (add_e(validator_key=key("validator_a").public_key), "validator_key_used"),
        (add_e(node_key=key("node_a").public_key), "node_key_used"),
        (add_e(institution_id="mas"), "not_a_bank"),
        (add_e(institution_id="nobody"), "not_a_bank"),
        (add_e(validator_name="bad name"), "bad_argument"),
        (add_e(validator_key=b"short"), "bad_argument"),
        ({"action": "remove_validator", "validator_name": "val-z"}, "unknown_validator"),
        ({"action": "rotate_validator_key", "validator_name": "val-a"}, "bad_argument"),
        (
            {
                "action": "rotate_validator_key",
                "validator_name": "val-a",
                "validator_key": key("validator_a").public_key,
            },
            "no_change",
        ),
    ],
)
def test_hopeless_changes_are_refused_when_proposed(arguments: dict[str, Value], code: str) -> None:
    chain = start()
    tx = chain.sign(BANKS[0], "membership", "propose", arguments)
    receipt = chain.run([tx]).receipts[0]
    assert (receipt.ok, receipt.code) == (False, code), receipt.message


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (add_e(node_key=None), "'node_key' is required to add a validator"),
        (add_e(institution_id=None), "'institution_id' is required to add a validator"),
        (add_e(validator_name="bad name"), "'validator_name' must be an identifier matching"),
        (add_e(node_key="ab" * 32), "'node_key' must be a public key (32 bytes)"),
        ({"action": "remove_validator"}, "'validator_name' is required to remove a validator"),
        (
            {"action": "rotate_validator_key"},
            "'validator_name' is required to rotate a validator's",
        ),
        ({"action": "rotate_validator_key", "validator_name": "val-a"}, "a rotation needs"),
        ({"action": "retire_validator", "validator_name": "val-a"}, "'action' must be one of"),
    ],
)
def test_a_malformed_change_is_refused_naming_the_argument(
    arguments: dict[str, Value], named: str
) -> None:
    """The proposal's arguments are parsed by membership's schema: the refusal names the
    argument and what it expects, and nothing is proposed."""
    chain = start()
    receipt = chain.run([chain.sign(BANKS[0], "membership", "propose", arguments)]).receipts[0]
    assert (receipt.ok, receipt.code) == (False, "bad_argument")
    assert named in receipt.message
    assert chain.host.query("membership", "proposals", {}) == ()


def test_a_retired_key_is_never_a_validator_key_again() -> None:
    chain = start()
    decide(chain, {"action": "remove_validator", "validator_name": "val-d"})
    chain.run([])
    chain.run([])
    tx = chain.sign(
        BANKS[0], "membership", "propose", add_e(validator_key=key("validator_d").public_key)
    )
    assert chain.run([tx]).receipts[0].code == "validator_key_used"


def test_the_last_validator_stays() -> None:
    single = ValidatorSet((GENESIS_VALIDATORS.validators[0],))
    chain = Chain.start(validators=single)
    tx = chain.sign(
        BANKS[0], "membership", "propose", {"action": "remove_validator", "validator_name": "val-a"}
    )
    assert chain.run([tx]).receipts[0].code == "last_validator"


def test_a_chain_without_a_registry_refuses_validator_changes() -> None:
    chain = Chain.start()
    tx = chain.sign(BANKS[0], "membership", "propose", add_e())
    assert chain.run([tx]).receipts[0].code == "no_validator_registry"


# -- property: the schedule a random stream of governance produces ------------------------------

FRESH = [PrivateKey(bytes([i + 1]) * 32) for i in range(40)]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "remove", "rotate", "rotate_node", "idle"]),
            st.integers(min_value=0, max_value=9),
        ),
        min_size=1,
        max_size=14,
    )
)
def test_every_height_has_one_set_changing_one_validator_at_a_time(
    steps: list[tuple[str, int]],
) -> None:
    """Whatever governance attempts, block after block: the set of each height is final two
    heights ahead (later blocks never change it), has at least one validator, differs from the
    previous height's in at most one validator, and never reuses a consensus key."""
    chain = start()
    fresh = iter(FRESH)
    observed: dict[int, ValidatorSet] = {1: GENESIS_VALIDATORS}
    for kind, choice in steps:
        current = chain.host.validator_set(chain.host.height + 2)
        assert current is not None
        target = current.validators[choice % current.size].name
        arguments: dict[str, Value]
        if kind == "add":
            arguments = add_e(
                validator_name=f"val-{next(fresh).public_key.hex()[:6]}",
                validator_key=next(fresh).public_key,
                node_key=next(fresh).public_key,
            )
        elif kind == "remove":
            arguments = {"action": "remove_validator", "validator_name": target}
        elif kind == "rotate":
            arguments = {
                "action": "rotate_validator_key",
                "validator_name": target,
                "validator_key": next(fresh).public_key,
            }
        elif kind == "rotate_node":
            arguments = {
                "action": "rotate_validator_key",
                "validator_name": target,
                "node_key": next(fresh).public_key,
            }
        else:
            chain.run([])
            arguments = {}
        if arguments:
            txs = [chain.sign(BANKS[0], "membership", "propose", arguments)]
            chain.run(txs)
            opened = chain.host.query("membership", "proposals", {})
            assert isinstance(opened, tuple)
            for proposal in opened:
                assert isinstance(proposal, dict)
                for voter in (1, 2):
                    tx = chain.sign(
                        BANKS[voter], "membership", "vote", {"proposal": proposal["id"]}
                    )
                    chain.run([tx])
        top = chain.host.height + 2
        for height in range(1, top + 1):
            validators = chain.host.validator_set(height)
            assert validators is not None
            if height in observed:
                assert observed[height] == validators, f"the set of {height} changed"
            observed[height] = validators
    keys_seen: dict[bytes, str] = {}
    previous = observed[1]
    for height in sorted(observed):
        validators = observed[height]
        assert validators.size >= 1
        before = {(v.name, v.public_key, v.node_key) for v in previous.validators}
        after = {(v.name, v.public_key, v.node_key) for v in validators.validators}
        assert len(before ^ after) <= 2, f"more than one validator changed at {height}"
        for v in validators.validators:
            assert keys_seen.setdefault(v.public_key, v.name) == v.name, "a key came back"
        previous = validators
