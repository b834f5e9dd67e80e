"""Membership invariants under random operation sequences (hypothesis, real host): any party,
a freshly registered key included, may try any registry operation. A transaction passes the
host's gates only when its sender is an active identity of an active institution holding a
role the operation allows; an identity only ever holds roles its institution's kind allows;
a bank registers keys only for itself and the enterprises it sponsors; every enterprise is
sponsored by a bank, and every bank, regulator and auditor is a founder or was admitted by an
executed proposal; a rejected operation changes nothing."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
)

from apps.membership import (
    GOVERNED_KINDS,
    KIND_BANK,
    KIND_ENTERPRISE,
    KIND_REGULATOR,
    ROLES_BY_KIND,
)
from apps.state import namespace_prefix
from apps.transaction import Transaction
from consensus.codec import Value, decode
from consensus.crypto import PrivateKey
from tests.apps_fixtures import Network, as_record, run_alone
from tests.hypothesis_profiles import machine_settings

BANKS = ("lion-bank", "harbour-bank", "pearl-bank")
STAFF = (*BANKS, "regulator")
PARTIES = (*STAFF, "dragon-motors", "merlion-metals", "alice")
# Keys the machine registers (or tries to): slot n signs with ``PrivateKey(bytes([n + 1]) * 32)``.
SLOTS = 6
NEW_ENTERPRISES = ("acme", "globex")
NEW_GOVERNED = ("new-bank", "new-auditor")
INSTITUTIONS = (
    "lion-bank",
    "mas",
    "merlion-metals",
    "harbour-bank",
    *NEW_ENTERPRISES,
    *NEW_GOVERNED,
)
ROLES = ("bank", "enterprise", "customer", "regulator", "auditor")
HOST_GATES = ("unknown_sender", "sender_suspended", "not_authorised")
# The roles the host requires of each operation tried here.
OPERATION_ROLES: Mapping[tuple[str, str], frozenset[str]] = {
    ("membership", "onboard_enterprise"): frozenset({"bank"}),
    ("membership", "register_identity"): frozenset({"bank"}),
    ("membership", "suspend_identity"): frozenset({"bank", "regulator"}),
    ("membership", "reinstate_identity"): frozenset({"bank", "regulator"}),
    ("membership", "suspend_enterprise"): frozenset({"bank", "regulator"}),
    ("membership", "reinstate_enterprise"): frozenset({"bank", "regulator"}),
    ("membership", "propose"): frozenset({"bank"}),
    ("membership", "vote"): frozenset({"bank"}),
    ("scf", "register_order"): frozenset({"enterprise"}),
}

signers = st.one_of(st.sampled_from(PARTIES), st.integers(0, SLOTS - 1))
# Registry operations are mostly tried by banks and the regulator, so that many pass the gates.
managers = st.one_of(st.sampled_from(BANKS), st.sampled_from(STAFF), signers)
# Role sets: every single role, and the pairs an institution kind allows.
role_sets = st.one_of(
    st.sampled_from(tuple((role,) for role in ROLES)),
    st.sampled_from((("bank", "customer"), ("customer", "enterprise"))),
)


def _slot_key(slot: int) -> PrivateKey:
    return PrivateKey(bytes([slot + 1]) * 32)


class MembershipMachine(RuleBasedStateMachine):
    proposals = Bundle("proposals")

    def __init__(self) -> None:
        super().__init__()
        self.net = Network.start()
        self.founders = {
            str(record["id"])
            for record in self._records("inst")
            if record["kind"] in GOVERNED_KINDS
        }
        self.admitted: set[str] = set()
        self.orders = 0

    # ------------------------------------------------------------------ helpers
    def _key(self, signer: str | int) -> PrivateKey:
        return _slot_key(signer) if isinstance(signer, int) else self.net.key(signer)

    def _records(self, kind: str) -> list[Mapping[str, Value]]:
        start = namespace_prefix("membership") + kind.encode("ascii") + b"/"
        return [
            as_record(decode(data))
            for _, data in self.net.chain.backend.scan(start, start[:-1] + b"0")
        ]

    def _passes_gates(self, tx: Transaction) -> bool:
        """What the host's gates should decide, read from membership state directly."""
        identity = self.net.query("membership", "identity", public_key=tx.sender)
        if identity is None:
            return False
        identity = as_record(identity)
        institution = as_record(
            self.net.query("membership", "institution", id=identity["institution"])
        )
        roles = identity["roles"]
        assert isinstance(roles, tuple)
        return (
            identity["status"] == "active"
            and institution["status"] == "active"
            and bool(OPERATION_ROLES[(tx.app, tx.operation)] & set(roles))
        )

    def _attempt(self, signer: str | int, app: str, operation: str, **arguments: Value) -> Value:
        """Run one transaction alone in a block; the gates decide as membership state says.
        Returns the result (None when rejected)."""
        tx = self.net.chain.sign(self._key(signer), app, operation, arguments)
        expected = self._passes_gates(tx)
        receipt = run_alone(self.net.chain, tx).receipt
        passed = receipt.code not in HOST_GATES
        assert passed == expected, (signer, operation, receipt.code, receipt.message)
        return receipt.result if receipt.ok else None

    def _track(self, result: Value) -> None:
        if result is None:
            return
        result = as_record(result)
        if result["status"] == "executed":
            proposal = as_record(self.net.query("membership", "proposal", id=result["proposal"]))
            if proposal["action"] == "admit_institution":
                subject = as_record(as_record(proposal["subject"])["institution"])
                self.admitted.add(str(subject["id"]))

    def _held(self, kind: str, field: str, value: Value) -> bool:
        """Whether the record of ``kind`` whose ``field`` is ``value`` is on a regulator's
        hold."""
        return any(
            record.get("held_by") is not None
            for record in self._records(kind)
            if record[field] == value
        )

    def _signer_kind(self, signer: str | int) -> str:
        identity = self.net.query("membership", "identity", public_key=self._key(signer).public_key)
        institution = as_record(identity)["institution"]
        return str(as_record(self.net.query("membership", "institution", id=institution))["kind"])

    def _check_hold(self, signer: str | int, suspend: bool, held: bool, result: Value) -> None:
        """Only a regulator lifts a regulator's suspension."""
        if result is not None and held and not suspend:
            assert self._signer_kind(signer) == KIND_REGULATOR, signer

    def _opened(self, result: Value) -> MultipleResults[str]:
        """The proposal a ``propose`` opened, for later votes (none when it was refused)."""
        self._track(result)
        return multiple() if result is None else multiple(str(as_record(result)["proposal"]))

    # ------------------------------------------------------------------ rules
    @rule(signer=managers, enterprise=st.sampled_from(NEW_ENTERPRISES))
    def onboard(self, signer: str | int, enterprise: str) -> None:
        self._attempt(
            signer,
            "membership",
            "onboard_enterprise",
            id=enterprise,
            name=enterprise.title(),
            jurisdiction="SG",
        )

    @rule(
        signer=st.one_of(st.just("lion-bank"), managers),
        institution=st.sampled_from(INSTITUTIONS),
        slot=st.integers(0, SLOTS - 1),
        roles=role_sets,
    )
    def register(
        self, signer: str | int, institution: str, slot: int, roles: tuple[str, ...]
    ) -> None:
        result = self._attempt(
            signer,
            "membership",
            "register_identity",
            institution=institution,
            public_key=_slot_key(slot).public_key,
            roles=roles,
        )
        if result is not None:
            # A bank registers keys for itself and for the enterprises it sponsors only.
            bank = as_record(
                self.net.query("membership", "identity", public_key=self._key(signer).public_key)
            )["institution"]
            record = as_record(self.net.query("membership", "institution", id=institution))
            assert bank in (record["id"], record["sponsor"]), (signer, institution)

    @rule(
        signer=managers,
        subject=signers,
        suspend=st.booleans(),
    )
    def identity_status(self, signer: str | int, subject: str | int, suspend: bool) -> None:
        operation = "suspend_identity" if suspend else "reinstate_identity"
        public_key = self._key(subject).public_key
        held = self._held("ident", "public_key", public_key)
        result = self._attempt(signer, "membership", operation, public_key=public_key)
        self._check_hold(signer, suspend, held, result)

    @rule(
        signer=managers,
        enterprise=st.sampled_from(("merlion-metals", *NEW_ENTERPRISES)),
        suspend=st.booleans(),
    )
    def enterprise_status(self, signer: str | int, enterprise: str, suspend: bool) -> None:
        operation = "suspend_enterprise" if suspend else "reinstate_enterprise"
        held = self._held("inst", "id", enterprise)
        result = self._attempt(signer, "membership", operation, id=enterprise)
        self._check_hold(signer, suspend, held, result)

    @rule(enterprise=st.booleans())
    def sponsor_lifts_a_regulators_suspension(self, enterprise: bool) -> None:
        """The regulator suspends merlion-metals (the enterprise, or its key), then its sponsor
        bank tries to reinstate it: random steps rarely line the two up."""
        if enterprise:
            self.enterprise_status("regulator", "merlion-metals", suspend=True)
            self.enterprise_status("lion-bank", "merlion-metals", suspend=False)
        else:
            self.identity_status("regulator", "merlion-metals", suspend=True)
            self.identity_status("lion-bank", "merlion-metals", suspend=False)

    @rule(
        target=proposals,
        signer=managers,
        institution=st.sampled_from(NEW_GOVERNED),
        kind=st.sampled_from(sorted(GOVERNED_KINDS)),
        slot=st.integers(0, SLOTS - 1),
        roles=role_sets,
    )
    def propose_admission(
        self, signer: str | int, institution: str, kind: str, slot: int, roles: tuple[str, ...]
    ) -> MultipleResults[str]:
        result = self._attempt(
            signer,
            "membership",
            "propose",
            action="admit_institution",
            institution={"id": institution, "name": "New", "kind": kind, "jurisdiction": "SG"},
            identities=({"public_key": _slot_key(slot).public_key, "roles": roles},),
        )
        return self._opened(result)

    @rule(
        target=proposals,
        signer=managers,
        institution=st.sampled_from(("harbour-bank", "mas", *NEW_GOVERNED)),
        suspend=st.booleans(),
    )
    def propose_status(
        self, signer: str | int, institution: str, suspend: bool
    ) -> MultipleResults[str]:
        action = "suspend_institution" if suspend else "reinstate_institution"
        result = self._attempt(
            signer, "membership", "propose", action=action, institution_id=institution
        )
        return self._opened(result)

    @rule(signer=managers, proposal=proposals)
    def vote(self, signer: str | int, proposal: str) -> None:
        self._track(self._attempt(signer, "membership", "vote", proposal=proposal))

    @rule(signer=signers)
    def act_as_enterprise(self, signer: str | int) -> None:
        self.orders += 1
        self._attempt(
            signer,
            "scf",
            "register_order",
            order_id=f"PO-{self.orders}",
            supplier=self.net.pk("merlion-metals"),
        )

    # ------------------------------------------------------------------ invariants
    @invariant()
    def roles_follow_the_institution_kind(self) -> None:
        kinds = {str(record["id"]): str(record["kind"]) for record in self._records("inst")}
        for identity in self._records("ident"):
            roles = identity["roles"]
            assert isinstance(roles, tuple)
            assert set(roles) <= ROLES_BY_KIND[kinds[str(identity["institution"])]], identity

    @invariant()
    def holds_are_regulators_on_suspended_records(self) -> None:
        kinds = {str(record["id"]): str(record["kind"]) for record in self._records("inst")}
        for record in self._records("inst") + self._records("ident"):
            held_by = record.get("held_by")
            if held_by is not None:
                assert record["status"] == "suspended", record
                assert kinds[str(held_by)] == KIND_REGULATOR, record

    @invariant()
    def enterprises_are_sponsored_and_governed_kinds_admitted(self) -> None:
        kinds = {str(record["id"]): str(record["kind"]) for record in self._records("inst")}
        for record in self._records("inst"):
            if record["kind"] == KIND_ENTERPRISE:
                assert kinds.get(str(record["sponsor"])) == KIND_BANK, record
            else:
                assert record["sponsor"] is None, record
                assert record["id"] in self.founders | self.admitted, record


MembershipMachine.TestCase.settings = machine_settings(max_examples=60, step_count=30)
TestMembershipInvariants = MembershipMachine.TestCase
