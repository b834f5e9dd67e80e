"""Membership: who may transact on the chain, for which institution, in which roles.

Theory of operation
-------------------
Membership keeps two registries:

* **institutions** (``kind``: bank, enterprise, regulator, auditor) with a jurisdiction
  (ISO 3166 alpha-2, e.g. ``"SG"``) and a status (``active`` | ``suspended``); an enterprise
  records the bank that onboarded it (its *sponsor*);
* **identities**: ed25519 public keys, each belonging to one institution, holding roles
  (``apps.base.ROLE_*``) and a status.

The host asks membership (queries ``identity`` and ``institution``) whether a sender is an
active identity of an active institution holding a role the operation allows, before any app
sees a transaction. Which roles an identity may hold follows its institution's kind: a bank's
identities are ``bank`` (staff) or ``customer`` (its retail customers), an enterprise's are
``enterprise`` or ``customer``, a regulator's ``regulator``, an auditor's ``auditor``.

Who may change what:

* genesis seeds the founding institutions (at least one bank) and their identities;
* a bank onboards enterprises (it becomes their sponsor) and registers identities for itself
  and for the enterprises it sponsors; it suspends and reinstates those identities and
  enterprises;
* a regulator suspends and reinstates identities and enterprises in its own jurisdiction;
* admitting a new bank, regulator or auditor, and suspending or reinstating a bank, regulator
  or auditor, is consortium governance: a bank proposes, banks vote, and the action executes
  in the transaction that brings the yes votes of *currently active* banks to
  ``active_banks * 2 // 3 + 1``. The proposer's bank votes yes by proposing. A proposal
  expires ``PROPOSAL_LIFETIME_BLOCKS`` after it opened: a vote after its ``expires_height`` is
  ``proposal_expired``, and the first block past it marks the proposal ``expired``
  (``end_block``, by block height), so the ``proposals`` query lists only live ones. Its
  action is validated when proposed and again when it executes; a vote whose execution would
  be invalid (say, the id was taken meanwhile) is rejected and the proposal stays open until
  it expires.

State layout (inside the ``membership`` namespace; values are canonical maps):
``inst/<id>``, ``ident/<public key>``, ``member/<institution id>\\x00<public key>`` (index for
listing an institution's identities), ``prop/<proposal id>``, and the expiry index of open
proposals (``apps._records.schedule_expiry``: ``expiry/<height>/<proposal id>``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar, Final, cast

from apps._records import (
    expired_in_backlog,
    schedule_expiry,
    take_expired,
    unschedule_expiry,
)
from apps.access import (
    OVERSEERS,
    ReadRules,
    event_of,
    institution_data,
    members_only,
    public,
)
from apps.base import (
    ROLE_AUDITOR,
    ROLE_BANK,
    ROLE_CUSTOMER,
    ROLE_ENTERPRISE,
    ROLE_REGULATOR,
    App,
    AppError,
    AppState,
    ReadState,
    TxContext,
)
from consensus.codec import Value, decode, encode
from consensus.crypto import PUBLIC_KEY_BYTES

__all__ = [
    "KIND_AUDITOR",
    "KIND_BANK",
    "KIND_ENTERPRISE",
    "KIND_REGULATOR",
    "PROPOSAL_LIFETIME_BLOCKS",
    "STATUS_ACTIVE",
    "STATUS_SUSPENDED",
    "MembershipApp",
    "governance_quorum",
]

KIND_BANK: Final = "bank"
KIND_ENTERPRISE: Final = "enterprise"
KIND_REGULATOR: Final = "regulator"
KIND_AUDITOR: Final = "auditor"
STATUS_ACTIVE: Final = "active"
STATUS_SUSPENDED: Final = "suspended"
# Roles an identity may hold, by the kind of its institution.
ROLES_BY_KIND: Final[Mapping[str, frozenset[str]]] = {
    KIND_BANK: frozenset({ROLE_BANK, ROLE_CUSTOMER}),
    KIND_ENTERPRISE: frozenset({ROLE_ENTERPRISE, ROLE_CUSTOMER}),
    KIND_REGULATOR: frozenset({ROLE_REGULATOR}),
    KIND_AUDITOR: frozenset({ROLE_AUDITOR}),
}
# Kinds only consortium governance may admit, suspend or reinstate.
GOVERNED_KINDS: Final = frozenset({KIND_BANK, KIND_REGULATOR, KIND_AUDITOR})
# About two weeks at one block per second: long enough for banks in every time zone to vote,
# short enough that a forgotten proposal cannot be revived years later.
PROPOSAL_LIFETIME_BLOCKS: Final = 1_209_600
# A proposal admits one institution with a handful of initial operator keys.
PROPOSAL_IDENTITIES_MAX: Final = 32
INSTITUTION_ID_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
JURISDICTION_PATTERN: Final = re.compile(r"[A-Z]{2}")
NAME_CHARS_MAX: Final = 128
ACTION_ADMIT: Final = "admit_institution"
ACTION_SUSPEND: Final = "suspend_institution"
ACTION_REINSTATE: Final = "reinstate_institution"
PROPOSAL_OPEN: Final = "open"
PROPOSAL_EXECUTED: Final = "executed"
PROPOSAL_EXPIRED: Final = "expired"

_INSTITUTION: Final = b"inst/"
_IDENTITY: Final = b"ident/"
_MEMBER: Final = b"member/"
_PROPOSAL: Final = b"prop/"


_GOVERNANCE: Final = frozenset({ROLE_BANK, ROLE_REGULATOR, ROLE_AUDITOR})
# Who may read what (``apps.access``): institutions are public; who an identity is, members
# may ask (to pay it, to check a transfer to it); an institution's list of identities is its
# own; governance is for banks, regulators and auditors.
READ_RULES: Final = ReadRules(
    queries={
        "institution": public("the consortium's institutions"),
        "institutions": public("the consortium's institutions"),
        "identity": members_only("who an identity is (institution, roles, status)"),
        "identities": institution_data("institution"),
        "proposal": members_only("governance proposals", _GOVERNANCE),
        "proposals": members_only("governance proposals", _GOVERNANCE),
    },
    events={
        "institution_onboarded": public("the consortium's institutions"),
        "institution_suspended": public("the consortium's institutions"),
        "institution_reinstated": public("the consortium's institutions"),
        "identity_registered": event_of("public_key", institutions=("institution",)),
        "identity_suspended": event_of("public_key"),
        "identity_reinstated": event_of("public_key"),
        "proposal_opened": members_only("governance proposals", _GOVERNANCE),
        "proposal_voted": members_only("governance proposals", _GOVERNANCE),
        "proposal_executed": members_only("governance proposals", _GOVERNANCE),
        "proposal_expired": members_only("governance proposals", _GOVERNANCE),
    },
    overseers=OVERSEERS,
)


def governance_quorum(active_banks: int) -> int:
    """Yes votes needed to execute a proposal: more than two thirds of the active banks."""
    return active_banks * 2 // 3 + 1


# -- argument parsing (every client value is checked here, once) ------------------------------


def _string(arguments: Mapping[str, Value], name: str) -> str:
    value = arguments.get(name)
    if not isinstance(value, str):
        raise AppError("bad_argument", f"{name!r} must be a string")
    return value


def _institution_id(arguments: Mapping[str, Value], name: str = "id") -> str:
    value = _string(arguments, name)
    if not INSTITUTION_ID_PATTERN.fullmatch(value):
        raise AppError(
            "bad_argument", f"{name!r} must match {INSTITUTION_ID_PATTERN.pattern}, not {value!r}"
        )
    return value


def _jurisdiction(arguments: Mapping[str, Value]) -> str:
    value = _string(arguments, "jurisdiction")
    if not JURISDICTION_PATTERN.fullmatch(value):
        raise AppError("bad_argument", f"jurisdiction must be an ISO 3166 code, not {value!r}")
    return value


def _display_name(arguments: Mapping[str, Value]) -> str:
    value = _string(arguments, "name")
    if not 1 <= len(value) <= NAME_CHARS_MAX:
        raise AppError("bad_argument", f"name must be 1..{NAME_CHARS_MAX} characters")
    return value


def _public_key(arguments: Mapping[str, Value], *, allow_hex: bool = False) -> bytes:
    value = arguments.get("public_key")
    if allow_hex and isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            raise AppError("bad_argument", "public_key is not valid hex") from None
    if not isinstance(value, bytes) or len(value) != PUBLIC_KEY_BYTES:
        raise AppError("bad_argument", f"public_key must be {PUBLIC_KEY_BYTES} bytes")
    return value


def _roles(arguments: Mapping[str, Value], kind: str) -> tuple[str, ...]:
    value = arguments.get("roles")
    if not isinstance(value, tuple | list) or not value:
        raise AppError("bad_argument", "roles must be a non-empty list of role names")
    roles = set()
    for role in value:
        if not isinstance(role, str):
            raise AppError("bad_argument", "roles must be strings")
        roles.add(role)
    allowed = ROLES_BY_KIND[kind]
    if not roles <= allowed:
        raise AppError(
            "role_not_allowed",
            f"an identity of a {kind} may hold {sorted(allowed)}, not {sorted(roles - allowed)}",
        )
    return tuple(sorted(roles))


def _as_map(value: Value, what: str) -> Mapping[str, Value]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise AppError("bad_argument", f"{what} must be a map with string keys")
    return cast(Mapping[str, Value], value)


def _map(arguments: Mapping[str, Value], name: str) -> Mapping[str, Value]:
    return _as_map(arguments.get(name), repr(name))


def _list(arguments: Mapping[str, Value], name: str) -> tuple[Value, ...]:
    value = arguments.get(name, ())
    if not isinstance(value, tuple | list):
        raise AppError("bad_argument", f"{name!r} must be a list")
    return tuple(value)


# -- records ----------------------------------------------------------------------------------


def _load(state: ReadState, key: bytes) -> dict[str, Value] | None:
    raw = state.get(key)
    if raw is None:
        return None
    value = decode(raw)
    assert isinstance(value, dict), "membership records are maps"
    return value


def _save(state: AppState, key: bytes, record: Mapping[str, Value]) -> None:
    state.put(key, encode(dict(record)))


def _institution_key(institution_id: str) -> bytes:
    return _INSTITUTION + institution_id.encode("utf-8")


def _identity_key(public_key: bytes) -> bytes:
    return _IDENTITY + public_key


def _member_key(institution_id: str, public_key: bytes) -> bytes:
    return _MEMBER + institution_id.encode("utf-8") + b"\x00" + public_key


def _institution_view(record: Mapping[str, Value]) -> dict[str, Value]:
    # The shape pinned in apps.base.App's docstring.
    return {key: record[key] for key in ("id", "name", "kind", "jurisdiction", "status", "sponsor")}


def _identity_view(state: ReadState, record: Mapping[str, Value]) -> dict[str, Value]:
    institution_id = record["institution"]
    assert isinstance(institution_id, str)
    institution = _load(state, _institution_key(institution_id))
    assert institution is not None, "an identity's institution exists"
    return {
        "public_key": record["public_key"],
        "institution": institution_id,
        "roles": record["roles"],
        "status": record["status"],
        "jurisdiction": institution["jurisdiction"],
    }


def _lapse_height(proposal: Mapping[str, Value]) -> int:
    """The first height at which ``proposal`` can no longer be voted on."""
    expires = proposal["expires_height"]
    assert isinstance(expires, int)
    return expires + 1


def _proposal_view(state: ReadState, proposal: dict[str, Value]) -> dict[str, Value]:
    """A proposal as queries report it: one still waiting in the expiry sweep's backlog is
    ``expired`` already."""
    if proposal["status"] == PROPOSAL_OPEN and expired_in_backlog(state, _lapse_height(proposal)):
        return {**proposal, "status": PROPOSAL_EXPIRED}
    return proposal


class MembershipApp(App):
    """The permissioning registry: institutions, identities, roles and bank governance."""

    name: ClassVar[str] = "membership"
    operations: ClassVar[Mapping[str, frozenset[str]]] = {
        "onboard_enterprise": frozenset({ROLE_BANK}),
        "register_identity": frozenset({ROLE_BANK}),
        "suspend_identity": frozenset({ROLE_BANK, ROLE_REGULATOR}),
        "reinstate_identity": frozenset({ROLE_BANK, ROLE_REGULATOR}),
        "suspend_enterprise": frozenset({ROLE_BANK, ROLE_REGULATOR}),
        "reinstate_enterprise": frozenset({ROLE_BANK, ROLE_REGULATOR}),
        "propose": frozenset({ROLE_BANK}),
        "vote": frozenset({ROLE_BANK}),
    }
    read_rules: ClassVar[ReadRules] = READ_RULES

    # -- genesis ------------------------------------------------------------------------------

    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        """Seed institutions and identities. ``config``: ``{"institutions": [{"id", "name",
        "kind", "jurisdiction", "sponsor"?}], "identities": [{"public_key" (bytes or hex),
        "institution", "roles"}]}``; at least one bank is required."""
        for raw_entry in _list(config, "institutions"):
            entry = _as_map(raw_entry, "each institution")
            kind = _string(entry, "kind")
            if kind not in ROLES_BY_KIND:
                raise AppError("bad_genesis", f"unknown institution kind {kind!r}")
            sponsor = entry.get("sponsor")
            if kind == KIND_ENTERPRISE:
                sponsor = _institution_id(entry, "sponsor")
                sponsor_record = _load(state, _institution_key(sponsor))
                if sponsor_record is None or sponsor_record["kind"] != KIND_BANK:
                    raise AppError(
                        "bad_genesis", f"sponsor {sponsor!r} must be a bank listed first"
                    )
            elif sponsor is not None:
                raise AppError("bad_genesis", "only enterprises have a sponsor")
            self._create_institution(
                state,
                _institution_id(entry),
                _display_name(entry),
                kind,
                _jurisdiction(entry),
                sponsor,
            )
        if not any(
            record["kind"] == KIND_BANK for record in self._institutions(state, kind=KIND_BANK)
        ):
            raise AppError("bad_genesis", "genesis must seed at least one bank")
        for raw_entry in _list(config, "identities"):
            entry = _as_map(raw_entry, "each identity")
            institution = self._institution(state, _institution_id(entry, "institution"))
            self._create_identity(
                state,
                _public_key(entry, allow_hex=True),
                institution,
                _roles(entry, str(institution["kind"])),
            )

    # -- transactions --------------------------------------------------------------------------

    def check(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> None:
        """Admission: the full rules of ``apply`` against committed state (the host discards
        anything written while checking)."""
        self.apply(ctx, operation, arguments)

    def apply(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> Value:
        """Execute one membership operation for ``ctx.sender``."""
        state = ctx.state
        sender = self._identity(state, ctx.sender)
        sender_institution = self._institution(state, str(sender["institution"]))
        if operation == "onboard_enterprise":
            return self._onboard_enterprise(ctx, sender_institution, arguments)
        if operation == "register_identity":
            return self._register_identity(ctx, sender_institution, arguments)
        if operation in ("suspend_identity", "reinstate_identity"):
            status = STATUS_SUSPENDED if operation == "suspend_identity" else STATUS_ACTIVE
            return self._set_identity_status(ctx, sender_institution, arguments, status)
        if operation in ("suspend_enterprise", "reinstate_enterprise"):
            status = STATUS_SUSPENDED if operation == "suspend_enterprise" else STATUS_ACTIVE
            return self._set_enterprise_status(ctx, sender_institution, arguments, status)
        if operation == "propose":
            return self._propose(ctx, sender_institution, arguments)
        if operation == "vote":
            return self._vote(ctx, sender_institution, arguments)
        raise AppError("unknown_operation", f"membership has no operation {operation!r}")

    def _onboard_enterprise(
        self, ctx: TxContext, bank: Mapping[str, Value], arguments: Mapping[str, Value]
    ) -> Value:
        self._require_kind(bank, KIND_BANK)
        institution_id = _institution_id(arguments)
        record = self._create_institution(
            ctx.state,
            institution_id,
            _display_name(arguments),
            KIND_ENTERPRISE,
            _jurisdiction(arguments),
            str(bank["id"]),
        )
        ctx.emit(
            "institution_onboarded",
            {"id": institution_id, "kind": KIND_ENTERPRISE, "sponsor": bank["id"]},
        )
        return _institution_view(record)

    def _register_identity(
        self, ctx: TxContext, bank: Mapping[str, Value], arguments: Mapping[str, Value]
    ) -> Value:
        self._require_kind(bank, KIND_BANK)
        institution = self._institution(ctx.state, _institution_id(arguments, "institution"))
        if not (
            institution["id"] == bank["id"]
            or (institution["kind"] == KIND_ENTERPRISE and institution["sponsor"] == bank["id"])
        ):
            raise AppError(
                "not_sponsor",
                f"bank {bank['id']!r} may register identities for itself and the enterprises "
                f"it onboarded, not for {institution['id']!r}",
            )
        public_key = _public_key(arguments)
        roles = _roles(arguments, str(institution["kind"]))
        self._create_identity(ctx.state, public_key, institution, roles)
        ctx.emit(
            "identity_registered",
            {"public_key": public_key, "institution": institution["id"], "roles": roles},
        )
        return _identity_view(ctx.state, self._identity(ctx.state, public_key))

    def _set_identity_status(
        self,
        ctx: TxContext,
        actor: Mapping[str, Value],
        arguments: Mapping[str, Value],
        status: str,
    ) -> Value:
        public_key = _public_key(arguments)
        if public_key == ctx.sender:
            raise AppError("own_identity", "an identity cannot change its own status")
        record = self._identity(ctx.state, public_key)
        institution = self._institution(ctx.state, str(record["institution"]))
        self._require_authority(actor, institution)
        if record["status"] == status:
            raise AppError("no_change", f"identity {public_key.hex()} is already {status}")
        record["status"] = status
        _save(ctx.state, _identity_key(public_key), record)
        kind = "identity_suspended" if status == STATUS_SUSPENDED else "identity_reinstated"
        ctx.emit(kind, {"public_key": public_key, "by": actor["id"]})
        return _identity_view(ctx.state, record)

    def _set_enterprise_status(
        self,
        ctx: TxContext,
        actor: Mapping[str, Value],
        arguments: Mapping[str, Value],
        status: str,
    ) -> Value:
        institution = self._institution(ctx.state, _institution_id(arguments))
        if institution["kind"] != KIND_ENTERPRISE:
            raise AppError(
                "governance_required",
                f"{institution['kind']!r} {institution['id']!r} changes status by proposal only",
            )
        self._require_authority(actor, institution)
        self._change_institution_status(ctx, institution, status, str(actor["id"]))
        return _institution_view(institution)

    def _propose(
        self, ctx: TxContext, bank: Mapping[str, Value], arguments: Mapping[str, Value]
    ) -> Value:
        self._require_kind(bank, KIND_BANK)
        action = _string(arguments, "action")
        if action == ACTION_ADMIT:
            proposed = _map(arguments, "institution")
            kind = _string(proposed, "kind")
            if kind not in GOVERNED_KINDS:
                raise AppError("bad_argument", f"governance admits {sorted(GOVERNED_KINDS)}")
            identities: list[Value] = []
            raw_identities = _list(arguments, "identities")
            if len(raw_identities) > PROPOSAL_IDENTITIES_MAX:
                raise AppError(
                    "bad_argument", f"at most {PROPOSAL_IDENTITIES_MAX} initial identities"
                )
            for raw_entry in raw_identities:
                entry = _as_map(raw_entry, "each identity")
                identities.append({"public_key": _public_key(entry), "roles": _roles(entry, kind)})
            subject: dict[str, Value] = {
                "institution": {
                    "id": _institution_id(proposed),
                    "name": _display_name(proposed),
                    "kind": kind,
                    "jurisdiction": _jurisdiction(proposed),
                },
                "identities": tuple(identities),
            }
        elif action in (ACTION_SUSPEND, ACTION_REINSTATE):
            subject = {"id": _institution_id(arguments, "institution_id")}
        else:
            raise AppError(
                "bad_argument",
                f"action must be one of {[ACTION_ADMIT, ACTION_SUSPEND, ACTION_REINSTATE]}",
            )
        # Validate now so a hopeless proposal is refused up front (and again on execution).
        self._validate_action(ctx.state, action, subject)
        proposal_id = ctx.transaction_hash.hex()
        proposal: dict[str, Value] = {
            "id": proposal_id,
            "action": action,
            "subject": subject,
            "proposer": bank["id"],
            "votes": (bank["id"],),
            "status": PROPOSAL_OPEN,
            "opened_height": ctx.block.height,
            "expires_height": ctx.block.height + PROPOSAL_LIFETIME_BLOCKS,
        }
        ctx.emit("proposal_opened", {"id": proposal_id, "action": action, "by": bank["id"]})
        return self._tally(ctx, proposal, new=True)

    def _vote(
        self, ctx: TxContext, bank: Mapping[str, Value], arguments: Mapping[str, Value]
    ) -> Value:
        self._require_kind(bank, KIND_BANK)
        proposal_id = _string(arguments, "proposal")
        proposal = _load(ctx.state, _PROPOSAL + proposal_id.encode("utf-8"))
        if proposal is None:
            raise AppError("unknown_proposal", f"no proposal {proposal_id!r}")
        expires = proposal["expires_height"]
        assert isinstance(expires, int)
        if proposal["status"] == PROPOSAL_EXPIRED:
            raise AppError("proposal_expired", f"proposal {proposal_id!r} expired at {expires}")
        if proposal["status"] != PROPOSAL_OPEN:
            raise AppError("proposal_closed", f"proposal {proposal_id!r} is {proposal['status']!r}")
        if ctx.block.height > expires:
            raise AppError("proposal_expired", f"proposal {proposal_id!r} expired at {expires}")
        votes = proposal["votes"]
        assert isinstance(votes, tuple)
        if bank["id"] in votes:
            raise AppError("already_voted", f"bank {bank['id']!r} already voted")
        proposal["votes"] = tuple(sorted((*votes, bank["id"])))  # type: ignore[type-var]
        ctx.emit("proposal_voted", {"id": proposal_id, "by": bank["id"]})
        return self._tally(ctx, proposal, new=False)

    def _tally(self, ctx: TxContext, proposal: dict[str, Value], *, new: bool) -> Value:
        """Count the yes votes of active banks, execute at quorum, store the proposal, and
        keep the expiry index in step (an open proposal lapses at ``expires_height + 1``)."""
        active_banks = {
            str(record["id"])
            for record in self._institutions(ctx.state, kind=KIND_BANK)
            if record["status"] == STATUS_ACTIVE
        }
        votes = proposal["votes"]
        assert isinstance(votes, tuple)
        yes = len(active_banks.intersection(str(vote) for vote in votes))
        needed = governance_quorum(len(active_banks))
        if yes >= needed:
            subject = proposal["subject"]
            assert isinstance(subject, dict)
            self._execute(ctx, str(proposal["action"]), subject)
            proposal["status"] = PROPOSAL_EXECUTED
            proposal["executed_height"] = ctx.block.height
            ctx.emit("proposal_executed", {"id": proposal["id"], "action": proposal["action"]})
        lapse_height = _lapse_height(proposal)
        if new and proposal["status"] == PROPOSAL_OPEN:
            schedule_expiry(ctx.state, lapse_height, str(proposal["id"]))
        elif not new and proposal["status"] == PROPOSAL_EXECUTED:
            unschedule_expiry(ctx.state, lapse_height, str(proposal["id"]))
        _save(ctx.state, _PROPOSAL + str(proposal["id"]).encode("utf-8"), proposal)
        return {
            "proposal": proposal["id"],
            "status": proposal["status"],
            "yes": yes,
            "needed": needed,
        }

    def _validate_action(self, state: ReadState, action: str, subject: Mapping[str, Value]) -> None:
        if action == ACTION_ADMIT:
            institution = subject["institution"]
            assert isinstance(institution, dict)
            if _load(state, _institution_key(str(institution["id"]))) is not None:
                raise AppError(
                    "institution_exists", f"institution {institution['id']!r} already exists"
                )
            identities = subject["identities"]
            assert isinstance(identities, tuple)
            keys = [_as_map(entry, "identity")["public_key"] for entry in identities]
            if len(set(keys)) != len(keys):
                raise AppError("bad_argument", "initial identities repeat a public key")
            for key in keys:
                assert isinstance(key, bytes)
                if _load(state, _identity_key(key)) is not None:
                    raise AppError("identity_exists", f"identity {key.hex()} is already registered")
            return
        institution = self._institution(state, str(subject["id"]))
        if institution["kind"] not in GOVERNED_KINDS:
            raise AppError(
                "not_governed",
                f"{institution['kind']!r} {institution['id']!r} is suspended and reinstated by "
                "its sponsor bank or a regulator, not by proposal",
            )
        wanted = STATUS_SUSPENDED if action == ACTION_SUSPEND else STATUS_ACTIVE
        if institution["status"] == wanted:
            raise AppError("no_change", f"institution {institution['id']!r} is already {wanted}")
        if action == ACTION_SUSPEND and institution["kind"] == KIND_BANK:
            active = [
                record
                for record in self._institutions(state, kind=KIND_BANK)
                if record["status"] == STATUS_ACTIVE
            ]
            if len(active) <= 1:
                raise AppError("last_bank", "the last active bank cannot be suspended")

    def _execute(self, ctx: TxContext, action: str, subject: Mapping[str, Value]) -> None:
        self._validate_action(ctx.state, action, subject)
        if action == ACTION_ADMIT:
            proposed = subject["institution"]
            assert isinstance(proposed, dict)
            record = self._create_institution(
                ctx.state,
                str(proposed["id"]),
                str(proposed["name"]),
                str(proposed["kind"]),
                str(proposed["jurisdiction"]),
                None,
            )
            ctx.emit(
                "institution_onboarded",
                {"id": record["id"], "kind": record["kind"], "sponsor": None},
            )
            identities = subject["identities"]
            assert isinstance(identities, tuple)
            for entry in identities:
                assert isinstance(entry, dict)
                public_key = entry["public_key"]
                roles = entry["roles"]
                assert isinstance(public_key, bytes)
                assert isinstance(roles, tuple)
                self._create_identity(ctx.state, public_key, record, tuple(map(str, roles)))
                ctx.emit(
                    "identity_registered",
                    {"public_key": public_key, "institution": record["id"], "roles": roles},
                )
            return
        institution = self._institution(ctx.state, str(subject["id"]))
        status = STATUS_SUSPENDED if action == ACTION_SUSPEND else STATUS_ACTIVE
        self._change_institution_status(ctx, institution, status, "governance")

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _require_kind(institution: Mapping[str, Value], kind: str) -> None:
        if institution["kind"] != kind:
            raise AppError("wrong_institution", f"only a {kind} may do this")

    @staticmethod
    def _require_authority(actor: Mapping[str, Value], target: Mapping[str, Value]) -> None:
        """A bank manages itself and the enterprises it sponsors; a regulator manages
        everything in its jurisdiction except other regulators."""
        if actor["kind"] == KIND_BANK and (
            target["id"] == actor["id"] or target.get("sponsor") == actor["id"]
        ):
            return
        if (
            actor["kind"] == KIND_REGULATOR
            and target["jurisdiction"] == actor["jurisdiction"]
            and target["kind"] != KIND_REGULATOR
        ):
            return
        raise AppError(
            "no_authority",
            f"{actor['kind']!r} {actor['id']!r} has no authority over {target['id']!r}",
        )

    def _change_institution_status(
        self, ctx: TxContext, institution: dict[str, Value], status: str, by: str
    ) -> None:
        if institution["status"] == status:
            raise AppError("no_change", f"institution {institution['id']!r} is already {status}")
        institution["status"] = status
        _save(ctx.state, _institution_key(str(institution["id"])), institution)
        kind = "institution_suspended" if status == STATUS_SUSPENDED else "institution_reinstated"
        ctx.emit(kind, {"id": institution["id"], "by": by})

    @staticmethod
    def _create_institution(
        state: AppState,
        institution_id: str,
        name: str,
        kind: str,
        jurisdiction: str,
        sponsor: str | None,
    ) -> dict[str, Value]:
        key = _institution_key(institution_id)
        if state.get(key) is not None:
            raise AppError("institution_exists", f"institution {institution_id!r} already exists")
        record: dict[str, Value] = {
            "id": institution_id,
            "name": name,
            "kind": kind,
            "jurisdiction": jurisdiction,
            "status": STATUS_ACTIVE,
            "sponsor": sponsor,
        }
        _save(state, key, record)
        return record

    @staticmethod
    def _create_identity(
        state: AppState,
        public_key: bytes,
        institution: Mapping[str, Value],
        roles: tuple[str, ...],
    ) -> None:
        key = _identity_key(public_key)
        if state.get(key) is not None:
            raise AppError("identity_exists", f"identity {public_key.hex()} is already registered")
        institution_id = str(institution["id"])
        _save(
            state,
            key,
            {
                "public_key": public_key,
                "institution": institution_id,
                "roles": roles,
                "status": STATUS_ACTIVE,
            },
        )
        state.put(_member_key(institution_id, public_key), b"")

    @staticmethod
    def _institution(state: ReadState, institution_id: str) -> dict[str, Value]:
        record = _load(state, _institution_key(institution_id))
        if record is None:
            raise AppError("unknown_institution", f"no institution {institution_id!r}")
        return record

    @staticmethod
    def _identity(state: ReadState, public_key: bytes) -> dict[str, Value]:
        record = _load(state, _identity_key(public_key))
        if record is None:
            raise AppError("unknown_identity", f"no identity {public_key.hex()}")
        return record

    @staticmethod
    def _institutions(state: ReadState, *, kind: str | None = None) -> list[dict[str, Value]]:
        records = []
        for _, raw in state.scan(_INSTITUTION, _INSTITUTION[:-1] + b"0"):
            record = decode(raw)
            assert isinstance(record, dict)
            if kind is None or record["kind"] == kind:
                records.append(record)
        return records

    # -- expiry -------------------------------------------------------------------------------

    def end_block(self, ctx: TxContext) -> None:
        """Mark every open proposal whose lifetime ended by this block's height ``expired``
        (oldest first, bounded per block: ``apps._records.take_expired``)."""
        for _, proposal_id in take_expired(ctx.state, ctx.block.height):
            proposal_key = _PROPOSAL + proposal_id.encode("utf-8")
            proposal = _load(ctx.state, proposal_key)
            # The index holds open proposals only: execution removes the entry.
            assert proposal is not None, proposal_id
            assert proposal["status"] == PROPOSAL_OPEN, proposal_id
            proposal["status"] = PROPOSAL_EXPIRED
            _save(ctx.state, proposal_key, proposal)
            ctx.emit("proposal_expired", {"id": proposal_id})

    # -- queries ------------------------------------------------------------------------------

    def query(self, state: ReadState, path: str, arguments: Mapping[str, Value]) -> Value:
        """Paths: ``identity`` {public_key}, ``institution`` {id} (shapes pinned in
        ``apps.base.App``; None when absent), ``institutions`` {kind?}, ``identities``
        {institution}, ``proposal`` {id}, ``proposals`` {} (open ones, in id order)."""
        if path == "identity":
            record = _load(state, _identity_key(_public_key(arguments)))
            return None if record is None else _identity_view(state, record)
        if path == "institution":
            institution_id = arguments.get("id")
            if not isinstance(institution_id, str):
                return None
            record = _load(state, _institution_key(institution_id))
            return None if record is None else _institution_view(record)
        if path == "institutions":
            kind = arguments.get("kind")
            if kind is not None and kind not in ROLES_BY_KIND:
                raise AppError("bad_argument", f"kind must be one of {sorted(ROLES_BY_KIND)}")
            return tuple(
                _institution_view(record)
                for record in self._institutions(state, kind=kind)  # type: ignore[arg-type]
            )
        if path == "identities":
            institution_id = _institution_id(arguments, "institution")
            prefix = _MEMBER + institution_id.encode("utf-8") + b"\x00"
            views = []
            for key, _ in state.scan(prefix, prefix[:-1] + b"\x01"):
                record = _load(state, _identity_key(key[len(prefix) :]))
                assert record is not None
                views.append(_identity_view(state, record))
            return tuple(views)
        if path == "proposal":
            proposal_id = _string(arguments, "id")
            found = _load(state, _PROPOSAL + proposal_id.encode("utf-8"))
            return None if found is None else _proposal_view(state, found)
        if path == "proposals":
            open_proposals: list[Value] = []
            for _, raw in state.scan(_PROPOSAL, _PROPOSAL[:-1] + b"0"):
                proposal = decode(raw)
                assert isinstance(proposal, dict)
                if _proposal_view(state, proposal)["status"] == PROPOSAL_OPEN:
                    open_proposals.append(proposal)
            return tuple(open_proposals)
        raise AppError("unknown_query", f"membership has no query {path!r}")
