"""Membership: onboarding, identities, suspension and consortium governance, through the host."""

from __future__ import annotations

import pytest

from apps.host import TransactionRejected
from apps.membership import PROPOSAL_LIFETIME_BLOCKS, MembershipApp, governance_quorum
from apps.state import MemoryBackend
from consensus.codec import Value
from tests.host_fixtures import Chain, genesis_config, identity, key

BANK_A, BANK_B, BANK_C, BANK_D = (key(f"bank_{x}") for x in "abcd")
REGULATOR = key("regulator_sg")
ACME = key("acme_treasurer")
ALICE = key("alice")


def rejected(c: Chain, tx: object) -> str:
    receipt = c.run([tx]).receipts[0]  # type: ignore[list-item]
    assert not receipt.ok
    return receipt.code


def onboard_acme(c: Chain) -> None:
    c.run_one(
        c.sign(
            BANK_A,
            "membership",
            "onboard_enterprise",
            {"id": "acme", "name": "Acme Trading", "jurisdiction": "SG"},
        )
    )
    c.run_one(
        c.sign(
            BANK_A,
            "membership",
            "register_identity",
            {"public_key": ACME.public_key, "institution": "acme", "roles": ["enterprise"]},
        )
    )


def test_genesis_seeds_banks_and_queries_have_the_pinned_shapes() -> None:
    c = Chain.start()
    identity = c.host.query("membership", "identity", {"public_key": BANK_A.public_key})
    assert identity == {
        "public_key": BANK_A.public_key,
        "institution": "bank_a",
        "roles": ("bank",),
        "status": "active",
        "jurisdiction": "SG",
    }
    assert c.host.query("membership", "institution", {"id": "bank_b"}) == {
        "id": "bank_b",
        "name": "Bank B",
        "kind": "bank",
        "jurisdiction": "HK",
        "status": "active",
        "sponsor": None,
    }
    assert c.host.query("membership", "identity", {"public_key": ALICE.public_key}) is None
    assert c.host.query("membership", "institution", {"id": "nobody"}) is None
    banks = c.host.query("membership", "institutions", {"kind": "bank"})
    assert isinstance(banks, tuple)
    assert [b["id"] for b in banks if isinstance(b, dict)] == [
        "bank_a",
        "bank_b",
        "bank_c",
        "bank_d",
    ]


def test_genesis_accepts_hex_keys_and_rejects_bad_entries() -> None:
    config = genesis_config(("bank_a",))
    assert isinstance(config, dict)
    identities = config["identities"]
    assert isinstance(identities, list)
    identities[0] = {
        "public_key": BANK_A.public_key.hex(),
        "institution": "bank_a",
        "roles": ["bank"],
    }
    c = Chain.start(app_genesis={"membership": config})
    assert c.host.query("membership", "identity", {"public_key": BANK_A.public_key}) is not None
    from apps.host import AppHost, GenesisError

    host = AppHost([MembershipApp()], MemoryBackend(), chain_id="x")
    bank_b: dict[str, Value] = {"id": "b", "name": "B", "kind": "bank", "jurisdiction": "SG"}
    bad_role: dict[str, Value] = {
        "institutions": [bank_b],
        "identities": [identity("alice", "b", "auditor")],
    }
    with pytest.raises(GenesisError, match="role_not_allowed"):
        host.init_genesis({"membership": bad_role})
    enterprise: dict[str, Value] = {
        "id": "e",
        "name": "E",
        "kind": "enterprise",
        "jurisdiction": "SG",
        "sponsor": "b",
    }
    bad_sponsor: dict[str, Value] = {"institutions": [enterprise]}
    with pytest.raises(GenesisError, match="sponsor"):
        host.init_genesis({"membership": bad_sponsor})


def test_bank_onboards_an_enterprise_and_its_identities() -> None:
    c = Chain.start()
    onboard_acme(c)
    identity = c.host.query("membership", "identity", {"public_key": ACME.public_key})
    assert isinstance(identity, dict)
    assert identity["institution"] == "acme"
    assert identity["roles"] == ("enterprise",)
    listed = c.host.query("membership", "identities", {"institution": "acme"})
    assert listed == (identity,)
    # Another bank cannot register identities for bank_a's enterprise.
    tx = c.sign(
        BANK_B,
        "membership",
        "register_identity",
        {"public_key": ALICE.public_key, "institution": "acme", "roles": ["customer"]},
    )
    assert rejected(c, tx) == "not_sponsor"
    # Roles follow the institution's kind.
    tx = c.sign(
        BANK_A,
        "membership",
        "register_identity",
        {"public_key": ALICE.public_key, "institution": "acme", "roles": ["bank"]},
    )
    assert rejected(c, tx) == "role_not_allowed"
    # A key is registered once.
    tx = c.sign(
        BANK_A,
        "membership",
        "register_identity",
        {"public_key": ACME.public_key, "institution": "bank_a", "roles": ["customer"]},
    )
    assert rejected(c, tx) == "identity_exists"
    # An institution id is taken once.
    tx = c.sign(
        BANK_A,
        "membership",
        "onboard_enterprise",
        {"id": "acme", "name": "Acme Again", "jurisdiction": "SG"},
    )
    assert rejected(c, tx) == "institution_exists"
    # Enterprises cannot onboard anyone: the host stops them before the app runs.
    tx = c.sign(
        ACME,
        "membership",
        "onboard_enterprise",
        {"id": "shell", "name": "Shell Co", "jurisdiction": "SG"},
    )
    assert rejected(c, tx) == "not_authorised"


def test_suspension_flow() -> None:
    c = Chain.start()
    onboard_acme(c)
    own = c.sign(BANK_A, "membership", "suspend_identity", {"public_key": BANK_A.public_key})
    assert rejected(c, own) == "own_identity"
    c.run_one(c.sign(BANK_A, "membership", "suspend_identity", {"public_key": ACME.public_key}))
    probe = c.sign(ACME, "membership", "vote", {"proposal": "x"}, nonce=0)
    with pytest.raises(TransactionRejected) as info:
        c.host.check_transaction(probe)
    assert info.value.code == "sender_suspended"
    c.run_one(c.sign(BANK_A, "membership", "reinstate_identity", {"public_key": ACME.public_key}))
    with pytest.raises(TransactionRejected) as info:
        c.host.check_transaction(probe)
    assert info.value.code == "not_authorised"  # active again, but an enterprise cannot vote
    # Suspending the enterprise stops all its identities.
    c.run_one(c.sign(REGULATOR, "membership", "suspend_enterprise", {"id": "acme"}))
    with pytest.raises(TransactionRejected) as info:
        c.host.check_transaction(probe)
    assert info.value.code == "sender_suspended"
    # A bank from another jurisdiction without sponsorship has no authority.
    tx = c.sign(BANK_B, "membership", "reinstate_enterprise", {"id": "acme"})
    assert rejected(c, tx) == "no_authority"
    # Its sponsor bank cannot lift a regulator's suspension; the regulator can.
    tx = c.sign(BANK_A, "membership", "reinstate_enterprise", {"id": "acme"})
    assert rejected(c, tx) == "regulator_hold"
    c.run_one(c.sign(REGULATOR, "membership", "reinstate_enterprise", {"id": "acme"}))
    # Banks change status by governance only.
    tx = c.sign(REGULATOR, "membership", "suspend_enterprise", {"id": "bank_a"})
    assert rejected(c, tx) == "governance_required"
    # The regulator in SG cannot suspend an identity of a bank in HK.
    tx = c.sign(REGULATOR, "membership", "suspend_identity", {"public_key": BANK_B.public_key})
    assert rejected(c, tx) == "no_authority"


def _status(answer: object) -> object:
    assert isinstance(answer, dict)
    return answer["status"]


def test_a_regulators_suspension_is_lifted_only_by_a_regulator() -> None:
    c = Chain.start()
    onboard_acme(c)
    acme = {"public_key": ACME.public_key}
    c.run_one(c.sign(REGULATOR, "membership", "suspend_identity", acme))
    held = c.sign(BANK_A, "membership", "reinstate_identity", acme)
    assert rejected(c, held) == "regulator_hold"
    c.run_one(c.sign(REGULATOR, "membership", "reinstate_identity", acme))
    # Reinstated, the hold is gone: the sponsor bank's own suspension it lifts itself.
    c.run_one(c.sign(BANK_A, "membership", "suspend_identity", acme))
    c.run_one(c.sign(BANK_A, "membership", "reinstate_identity", acme))
    # A regulator may hold what a bank already suspended; the bank then cannot lift it.
    c.run_one(c.sign(BANK_A, "membership", "suspend_identity", acme))
    again = c.sign(BANK_A, "membership", "suspend_identity", acme)
    assert rejected(c, again) == "no_change"
    c.run_one(c.sign(REGULATOR, "membership", "suspend_identity", acme))
    assert rejected(c, c.sign(REGULATOR, "membership", "suspend_identity", acme)) == "no_change"
    assert rejected(c, c.sign(BANK_A, "membership", "reinstate_identity", acme)) == "regulator_hold"
    c.run_one(c.sign(REGULATOR, "membership", "reinstate_identity", acme))
    assert _status(c.host.query("membership", "identity", acme)) == "active"
    # The same for an enterprise, put on hold after its sponsor suspended it.
    c.run_one(c.sign(BANK_A, "membership", "suspend_enterprise", {"id": "acme"}))
    c.run_one(c.sign(REGULATOR, "membership", "suspend_enterprise", {"id": "acme"}))
    tx = c.sign(BANK_A, "membership", "reinstate_enterprise", {"id": "acme"})
    assert rejected(c, tx) == "regulator_hold"
    c.run_one(c.sign(REGULATOR, "membership", "reinstate_enterprise", {"id": "acme"}))
    assert _status(c.host.query("membership", "institution", {"id": "acme"})) == "active"


def admit_bank_e(c: Chain, proposer: object = BANK_A) -> str:
    result = c.run_one(
        c.sign(
            proposer,  # type: ignore[arg-type]
            "membership",
            "propose",
            {
                "action": "admit_institution",
                "institution": {
                    "id": "bank_e",
                    "name": "Bank E",
                    "kind": "bank",
                    "jurisdiction": "AE",
                },
                "identities": [identity("bank_e", "bank_e", "bank")],
            },
        )
    )
    assert isinstance(result, dict)
    assert result["status"] == "open"
    assert result["yes"] == 1
    assert result["needed"] == 3
    proposal = result["proposal"]
    assert isinstance(proposal, str)
    return proposal


def test_governance_admits_a_bank_with_a_quorum_of_active_banks() -> None:
    c = Chain.start()
    proposal = admit_bank_e(c)
    assert len(c.host.query("membership", "proposals", {})) == 1  # type: ignore[arg-type]
    again = c.sign(BANK_A, "membership", "vote", {"proposal": proposal})
    assert rejected(c, again) == "already_voted"
    second = c.run_one(c.sign(BANK_B, "membership", "vote", {"proposal": proposal}))
    assert second == {"proposal": proposal, "status": "open", "yes": 2, "needed": 3}
    # Bank E cannot transact yet.
    probe = c.sign(key("bank_e"), "membership", "vote", {"proposal": proposal}, nonce=0)
    with pytest.raises(TransactionRejected):
        c.host.check_transaction(probe)
    third = c.run([c.sign(BANK_C, "membership", "vote", {"proposal": proposal})])
    receipt = third.receipts[0]
    assert receipt.ok
    assert receipt.result == {"proposal": proposal, "status": "executed", "yes": 3, "needed": 3}
    assert [e.kind for e in receipt.events] == [
        "proposal_voted",
        "institution_onboarded",
        "identity_registered",
        "proposal_executed",
    ]
    assert c.host.query("membership", "institution", {"id": "bank_e"}) is not None
    late = c.sign(BANK_D, "membership", "vote", {"proposal": proposal})
    assert rejected(c, late) == "proposal_closed"
    assert c.host.query("membership", "proposals", {}) == ()
    # The new bank now counts in the quorum: 5 active banks need 4 votes.
    c.run_one(
        c.sign(
            key("bank_e"),
            "membership",
            "onboard_enterprise",
            {"id": "dubai_dates", "name": "Dubai Dates", "jurisdiction": "AE"},
        )
    )
    assert governance_quorum(5) == 4


def test_governance_suspends_a_bank_and_its_votes_stop_counting() -> None:
    c = Chain.start()
    result = c.run_one(
        c.sign(
            BANK_A,
            "membership",
            "propose",
            {"action": "suspend_institution", "institution_id": "bank_d"},
        )
    )
    assert isinstance(result, dict)
    proposal = str(result["proposal"])
    c.run_one(c.sign(BANK_B, "membership", "vote", {"proposal": proposal}))
    c.run_one(c.sign(BANK_C, "membership", "vote", {"proposal": proposal}))
    probe = c.sign(BANK_D, "membership", "vote", {"proposal": proposal}, nonce=0)
    with pytest.raises(TransactionRejected) as info:
        c.host.check_transaction(probe)
    assert info.value.code == "sender_suspended"
    # With 3 active banks a new proposal needs 3 votes.
    proposal_e = admit_bank_e(c)
    assert proposal_e != proposal
    # Invalid actions are refused up front.
    tx = c.sign(
        BANK_A,
        "membership",
        "propose",
        {"action": "suspend_institution", "institution_id": "bank_d"},
    )
    assert rejected(c, tx) == "no_change"
    tx = c.sign(BANK_A, "membership", "propose", {"action": "dissolve"})
    assert rejected(c, tx) == "bad_argument"


def test_single_bank_consortium_cannot_suspend_its_last_bank() -> None:
    c = Chain.start(app_genesis={"membership": genesis_config(("bank_a",))})
    tx = c.sign(
        BANK_A,
        "membership",
        "propose",
        {"action": "suspend_institution", "institution_id": "bank_a"},
    )
    assert rejected(c, tx) == "last_bank"


def test_proposals_expire() -> None:
    c = Chain.start()
    proposal = admit_bank_e(c)
    listed = c.host.query("membership", "proposals", {})
    assert isinstance(listed, tuple)
    assert [p["id"] for p in listed if isinstance(p, dict)] == [proposal]
    c.host.height += PROPOSAL_LIFETIME_BLOCKS  # jump the committed height forward
    tx = c.sign(BANK_B, "membership", "vote", {"proposal": proposal})
    result = c.run([tx])
    assert result.receipts[0].code == "proposal_expired"
    # The same block's end marks it expired: it is no longer listed as open.
    assert [(event.app, event.kind) for event in result.block_events] == [
        ("membership", "proposal_expired")
    ]
    found = c.host.query("membership", "proposal", {"id": proposal})
    assert isinstance(found, dict)
    assert found["status"] == "expired"
    assert c.host.query("membership", "proposals", {}) == ()
    tx = c.sign(BANK_C, "membership", "vote", {"proposal": proposal})
    assert rejected(c, tx) == "proposal_expired"


def test_an_executed_proposal_leaves_no_expiry_behind() -> None:
    c = Chain.start()
    proposal = admit_bank_e(c)
    c.run_one(c.sign(BANK_B, "membership", "vote", {"proposal": proposal}))
    c.run_one(c.sign(BANK_C, "membership", "vote", {"proposal": proposal}))
    c.host.height += PROPOSAL_LIFETIME_BLOCKS
    assert c.run([]).block_events == ()
    found = c.host.query("membership", "proposal", {"id": proposal})
    assert isinstance(found, dict)
    assert found["status"] == "executed"


def test_a_proposal_to_admit_what_exists_names_what_exists() -> None:
    c = Chain.start()
    for institution_id, public_key, code in (
        ("bank_b", key("bank_f").public_key, "institution_exists"),
        ("bank_f", BANK_B.public_key, "identity_exists"),
    ):
        arguments: dict[str, Value] = {
            "action": "admit_institution",
            "institution": {
                "id": institution_id,
                "name": "Bank F",
                "kind": "bank",
                "jurisdiction": "AE",
            },
            "identities": [{"public_key": public_key, "roles": ("bank",)}],
        }
        assert rejected(c, c.sign(BANK_A, "membership", "propose", arguments)) == code


def test_enterprises_are_not_suspended_by_proposal() -> None:
    c = Chain.start()
    onboard_acme(c)
    tx = c.sign(
        BANK_B,
        "membership",
        "propose",
        {"action": "suspend_institution", "institution_id": "acme"},
    )
    assert rejected(c, tx) == "not_governed"


def test_bad_arguments_are_app_errors() -> None:
    c = Chain.start()
    for arguments in (
        {"id": "Bad Id", "name": "x", "jurisdiction": "SG"},
        {"id": "ok", "name": "", "jurisdiction": "SG"},
        {"id": "ok", "name": "x", "jurisdiction": "sg"},
        {"id": 5, "name": "x", "jurisdiction": "SG"},
    ):
        tx = c.sign(BANK_A, "membership", "onboard_enterprise", arguments)  # type: ignore[arg-type]
        assert rejected(c, tx) == "bad_argument"
    tx = c.sign(BANK_A, "membership", "vote", {"proposal": "nope"})
    assert rejected(c, tx) == "unknown_proposal"
