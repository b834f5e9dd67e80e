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
* a regulator suspends and reinstates identities and enterprises in its own jurisdiction. A
  regulator's suspension is a hold (``held_by``: the regulator) that only a regulator lifts:
  the sponsor bank, or a colleague of a suspended bank employee, cannot reinstate what a
  regulator suspended (``regulator_hold``); a regulator may also put its hold on an identity or
  enterprise a bank has already suspended;
* admitting a new bank, regulator or auditor, and suspending or reinstating a bank, regulator
  or auditor, is consortium governance: a bank proposes, banks vote, and the action executes
  in the transaction that brings the yes votes of *currently active* banks to
  ``active_banks * 2 // 3 + 1``. The proposer's bank votes yes by proposing. A proposal
  expires ``PROPOSAL_LIFETIME_BLOCKS`` after it opened: a vote after its ``expires_height`` is
  ``proposal_expired``, and the first block past it marks the proposal ``expired``
  (``end_block``, by block height), so the ``proposals`` query lists only live ones. Its
  action is validated when proposed and again when it executes; a vote whose execution would
  be invalid (say, the id was taken meanwhile) is rejected and the proposal stays open until
  it expires;
* changing the validator set (adding a bank's validator, removing one, rotating a validator's
  consensus or node key) is governance too, by the same vote; the change takes effect two
  heights after the block that executes it (``apps.validators`` holds the registry and the
  rules a change must keep).

State layout (inside the ``membership`` namespace; values are canonical maps):
``inst/<id>``, ``ident/<public key>``, ``member/<institution id>\\x00<public key>`` (index for
listing an institution's identities), ``prop/<proposal id>``, the expiry index of open
proposals (``apps._records.schedule_expiry``: ``expiry/<height>/<proposal id>``), and the
validator registry (``vset/<height>``, ``vkey/<public key>``; see ``apps.validators``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar, Final

from mypy_extensions import mypyc_attr

from apps._records import (
    expired_in_backlog,
    genesis_entry,
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
    AppError,
    AppState,
    ReadState,
    TxContext,
)
from apps.schema import (
    AppSchema,
    Argument,
    Arguments,
    Choice,
    DispatchingApp,
    Identifier,
    Integer,
    Operation,
    PublicKey,
    Query,
    Record,
    Records,
    Strings,
    Text,
)
from apps.validators import (
    VALIDATOR_ACTIONS,
    VALIDATOR_NAME_PATTERN,
    execute_change,
    parse_change,
    seed_validators,
    validate_change,
    validator_records_at,
)
from consensus.codec import INT_MAX, Value, decode, encode

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
# In a suspended identity's or enterprise's record: the regulator whose suspension it is (only
# a regulator reinstates it).
HELD_BY: Final = "held_by"
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
        # Anyone who checks a certificate needs the set that signed it.
        "validators": public("the validators that certify each height"),
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
        "validator_set_changed": public("the validators that certify each height"),
    },
    overseers=OVERSEERS,
)


def governance_quorum(active_banks: int) -> int:
    """Yes votes needed to execute a proposal: more than two thirds of the active banks."""
    return active_banks * 2 // 3 + 1


# -- the schema (every client value is checked here, once) --------------------------------

_INSTITUTION_ID: Final = Identifier(INSTITUTION_ID_PATTERN)
_JURISDICTION: Final = Identifier(JURISDICTION_PATTERN, "an ISO 3166 code like 'SG'")
_NAME: Final = Text(bytes_max=None, characters=(1, NAME_CHARS_MAX))
# Transactions carry keys as bytes (the CLI and JSON clients send {"$bytes": hex}).
_KEY: Final = PublicKey(hex=False)
# Roles are checked against the institution's kind by the app (``role_not_allowed``).
_ROLES: Final = Strings(items_min=1)
# Proposal ids are transaction hashes in hex; any string is looked up (and not found).
_PROPOSAL_ID: Final = Text(bytes_max=None)
_ACTIONS: Final = (ACTION_ADMIT, ACTION_SUSPEND, ACTION_REINSTATE, *VALIDATOR_ACTIONS)
_STAFF: Final = frozenset({ROLE_BANK, ROLE_REGULATOR})
_IDENTITY_ARGUMENT: Final = Argument("public_key", _KEY, "the identity")
_ID_ARGUMENT: Final = Argument("id", _INSTITUTION_ID, "institution id")
_NAME_ARGUMENT: Final = Argument("name", _NAME, "display name")
_JURISDICTION_ARGUMENT: Final = Argument("jurisdiction", _JURISDICTION, "ISO 3166 country code")

SCHEMA: Final = AppSchema(
    help="Membership: institutions, identities, roles and bank governance.",
    operations=(
        Operation(
            "onboard_enterprise",
            frozenset({ROLE_BANK}),
            "Onboard an enterprise sponsored by the sender's bank.",
            (
                _ID_ARGUMENT,
                _NAME_ARGUMENT,
                _JURISDICTION_ARGUMENT,
            ),
        ),
        Operation(
            "register_identity",
            frozenset({ROLE_BANK}),
            "Register a key for the sender's bank or an enterprise it sponsors.",
            (
                Argument("institution", _INSTITUTION_ID, "institution id"),
                Argument("public_key", _KEY, "the new identity's key"),
                Argument("roles", _ROLES, "roles, e.g. customer"),
            ),
        ),
        Operation("suspend_identity", _STAFF, "Suspend an identity.", (_IDENTITY_ARGUMENT,)),
        Operation("reinstate_identity", _STAFF, "Reinstate an identity.", (_IDENTITY_ARGUMENT,)),
        Operation(
            "suspend_enterprise",
            _STAFF,
            "Suspend an enterprise (its sponsor bank or a regulator).",
            (_ID_ARGUMENT,),
        ),
        Operation("reinstate_enterprise", _STAFF, "Reinstate an enterprise.", (_ID_ARGUMENT,)),
        Operation(
            "propose",
            frozenset({ROLE_BANK}),
            "Propose admitting, suspending or reinstating a bank, regulator or auditor, or adding,"
            " removing or re-keying a validator (in force two blocks after the vote that carries"
            " it).",
            (
                Argument("action", Choice(_ACTIONS), "what to do"),
                Argument(
                    "institution",
                    Record(
                        (
                            _ID_ARGUMENT,
                            _NAME_ARGUMENT,
                            Argument("kind", Choice(tuple(sorted(GOVERNED_KINDS))), "its kind"),
                            _JURISDICTION_ARGUMENT,
                        )
                    ),
                    "admit_institution: the institution",
                    required=False,
                ),
                Argument(
                    "identities",
                    Records(
                        (
                            Argument("public_key", _KEY, "the identity's key"),
                            Argument("roles", _ROLES, "its roles"),
                        ),
                        PROPOSAL_IDENTITIES_MAX,
                    ),
                    "admit_institution: initial identities",
                    required=False,
                ),
                Argument(
                    "institution_id",
                    _INSTITUTION_ID,
                    "suspend/reinstate_institution: the institution; add_validator: the bank "
                    "running it",
                    required=False,
                ),
                Argument(
                    "validator_name",
                    Identifier(VALIDATOR_NAME_PATTERN),
                    "add/remove_validator, rotate_validator_key: the validator's name",
                    required=False,
                ),
                Argument(
                    "validator_key",
                    _KEY,
                    "add_validator, rotate_validator_key: its (new) consensus key",
                    required=False,
                ),
                Argument(
                    "node_key",
                    _KEY,
                    "add_validator, rotate_validator_key: its (new) node key",
                    required=False,
                ),
            ),
        ),
        Operation(
            "vote",
            frozenset({ROLE_BANK}),
            "Vote yes on an open proposal.",
            (Argument("proposal", _PROPOSAL_ID, "proposal id"),),
        ),
    ),
    queries=(
        Query("identity", "One identity.", (_IDENTITY_ARGUMENT,)),
        Query(
            "institution",
            "One institution.",
            (Argument("id", Text(bytes_max=None), "institution id"),),
        ),
        Query(
            "institutions",
            "Every institution (optionally of one kind).",
            (
                Argument(
                    "kind", Choice(tuple(sorted(ROLES_BY_KIND))), "only this kind", required=False
                ),
            ),
        ),
        Query(
            "identities",
            "The identities of an institution.",
            (Argument("institution", _INSTITUTION_ID, "institution id"),),
        ),
        Query("proposal", "One proposal.", (Argument("id", _PROPOSAL_ID, "proposal id"),)),
        Query("proposals", "Open proposals."),
        Query(
            "validators",
            "The validator set in force at a height (default: the latest one scheduled).",
            (Argument("height", Integer(1, INT_MAX), "block height", required=False),),
        ),
    ),
)
# Genesis entries, parsed like arguments.
_GENESIS_INSTITUTION: Final = (
    _ID_ARGUMENT,
    _NAME_ARGUMENT,
    Argument("kind", Text(bytes_max=None), "bank, enterprise, regulator or auditor"),
    _JURISDICTION_ARGUMENT,
    Argument("sponsor", _INSTITUTION_ID, "an enterprise's onboarding bank", required=False),
)
_GENESIS_IDENTITY: Final = (
    Argument("institution", _INSTITUTION_ID, "institution id"),
    Argument("public_key", PublicKey(), "the identity's key (bytes or hex)"),
    Argument("roles", _ROLES, "its roles"),
)


def _allowed_roles(roles: tuple[str, ...], kind: str) -> tuple[str, ...]:
    """``roles`` (distinct, sorted) if an identity of a ``kind`` institution may hold them."""
    allowed = ROLES_BY_KIND[kind]
    if not set(roles) <= allowed:
        raise AppError(
            "role_not_allowed",
            f"an identity of a {kind} may hold {sorted(allowed)}, not "
            f"{sorted(set(roles) - allowed)}",
        )
    return roles


def _genesis_list(config: Mapping[str, Value], name: str) -> tuple[Value, ...]:
    value = config.get(name, ())
    if not isinstance(value, (tuple, list)):
        raise AppError("bad_genesis", f"{name!r} must be a list")
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


def _apply_status(
    record: dict[str, Value], status: str, actor: Mapping[str, Value], what: str
) -> None:
    """Set an identity's or enterprise's ``record`` to ``status`` on ``actor``'s authority
    (checked by the caller). A regulator's suspension holds it (``held_by``) until a regulator
    reinstates it; a regulator may hold one a bank already suspended."""
    regulator = actor["kind"] == KIND_REGULATOR
    held_by = record.get(HELD_BY)
    if status == STATUS_ACTIVE and held_by is not None and not regulator:
        raise AppError(
            "regulator_hold",
            f"{what} was suspended by regulator {held_by!r}; only a regulator reinstates it",
        )
    if record["status"] == status and not (
        status == STATUS_SUSPENDED and regulator and held_by is None
    ):
        raise AppError("no_change", f"{what} is already {status}")
    record["status"] = status
    if status == STATUS_SUSPENDED and regulator:
        record[HELD_BY] = actor["id"]
    else:
        record.pop(HELD_BY, None)


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


# A bank's own app may extend a shipped one, also when this module runs compiled (node.native).
@mypyc_attr(allow_interpreted_subclasses=True)
class MembershipApp(DispatchingApp):
    """The permissioning registry: institutions, identities, roles and bank governance."""

    name: ClassVar[str] = "membership"
    schema: ClassVar[AppSchema] = SCHEMA
    read_rules: ClassVar[ReadRules] = READ_RULES

    # -- genesis ------------------------------------------------------------------------------

    def genesis(self, state: AppState, config: Mapping[str, Value]) -> None:
        """Seed institutions and identities. ``config``: ``{"institutions": [{"id", "name",
        "kind", "jurisdiction", "sponsor"?}], "identities": [{"public_key" (bytes or hex),
        "institution", "roles"}], "validators"?: [...]}``; at least one bank is required.
        ``validators`` is filled by the host from the genesis validators (``AppHost.
        init_genesis``), never by hand: it starts the validator registry."""
        validators = config.get("validators")
        if validators is not None:
            if not isinstance(validators, (tuple, list)):
                raise AppError("bad_genesis", "validators must be a list")
            seed_validators(state, tuple(validators))
        for raw_entry in _genesis_list(config, "institutions"):
            entry = genesis_entry(_GENESIS_INSTITUTION, raw_entry, "each institution")
            kind = entry.text("kind")
            if kind not in ROLES_BY_KIND:
                raise AppError("bad_genesis", f"unknown institution kind {kind!r}")
            sponsor = entry.optional_text("sponsor")
            if kind == KIND_ENTERPRISE:
                entry.require("sponsor", "for an enterprise")
                sponsor = entry.text("sponsor")
                sponsor_record = _load(state, _institution_key(sponsor))
                if sponsor_record is None or sponsor_record["kind"] != KIND_BANK:
                    raise AppError(
                        "bad_genesis", f"sponsor {sponsor!r} must be a bank listed first"
                    )
            elif sponsor is not None:
                raise AppError("bad_genesis", "only enterprises have a sponsor")
            self._create_institution(
                state,
                entry.text("id"),
                entry.text("name"),
                kind,
                entry.text("jurisdiction"),
                sponsor,
            )
        if not any(
            record["kind"] == KIND_BANK for record in self._institutions(state, kind=KIND_BANK)
        ):
            raise AppError("bad_genesis", "genesis must seed at least one bank")
        for raw_entry in _genesis_list(config, "identities"):
            entry = genesis_entry(_GENESIS_IDENTITY, raw_entry, "each identity")
            institution = self._institution(state, entry.text("institution"))
            self._create_identity(
                state,
                entry.key("public_key"),
                institution,
                _allowed_roles(entry.strings("roles"), str(institution["kind"])),
            )

    # -- transactions --------------------------------------------------------------------------

    # Its check is ``apply``, which parses the arguments through the schema.
    arguments_left_intact: ClassVar[bool] = True

    def check(self, ctx: TxContext, operation: str, arguments: Mapping[str, Value]) -> None:
        """Admission: the full rules of ``apply`` against committed state (the host discards
        anything written while checking)."""
        self.apply(ctx, operation, arguments)

    def _sender_institution(self, ctx: TxContext) -> dict[str, Value]:
        """The institution of the sender (the host admitted it as an active identity)."""
        sender = self._identity(ctx.state, ctx.sender)
        return self._institution(ctx.state, str(sender["institution"]))

    def _onboard_enterprise(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        bank = self._sender_institution(ctx)
        self._require_kind(bank, KIND_BANK)
        institution_id = a.text("id")
        record = self._create_institution(
            ctx.state,
            institution_id,
            a.text("name"),
            KIND_ENTERPRISE,
            a.text("jurisdiction"),
            str(bank["id"]),
        )
        ctx.emit(
            "institution_onboarded",
            {"id": institution_id, "kind": KIND_ENTERPRISE, "sponsor": bank["id"]},
        )
        return _institution_view(record)

    def _register_identity(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        bank = self._sender_institution(ctx)
        self._require_kind(bank, KIND_BANK)
        institution = self._institution(ctx.state, a.text("institution"))
        if not (
            institution["id"] == bank["id"]
            or (institution["kind"] == KIND_ENTERPRISE and institution["sponsor"] == bank["id"])
        ):
            raise AppError(
                "not_sponsor",
                f"bank {bank['id']!r} may register identities for itself and the enterprises "
                f"it onboarded, not for {institution['id']!r}",
            )
        public_key = a.key("public_key")
        roles = _allowed_roles(a.strings("roles"), str(institution["kind"]))
        self._create_identity(ctx.state, public_key, institution, roles)
        ctx.emit(
            "identity_registered",
            {"public_key": public_key, "institution": institution["id"], "roles": roles},
        )
        return _identity_view(ctx.state, self._identity(ctx.state, public_key))

    def _suspend_identity(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        return self._set_identity_status(ctx, a, STATUS_SUSPENDED)

    def _reinstate_identity(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        return self._set_identity_status(ctx, a, STATUS_ACTIVE)

    def _suspend_enterprise(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        return self._set_enterprise_status(ctx, a, STATUS_SUSPENDED)

    def _reinstate_enterprise(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        return self._set_enterprise_status(ctx, a, STATUS_ACTIVE)

    def _set_identity_status(self, ctx: TxContext, a: Arguments, status: str) -> Value:
        actor = self._sender_institution(ctx)
        public_key = a.key("public_key")
        if public_key == ctx.sender:
            raise AppError("own_identity", "an identity cannot change its own status")
        record = self._identity(ctx.state, public_key)
        institution = self._institution(ctx.state, str(record["institution"]))
        self._require_authority(actor, institution)
        _apply_status(record, status, actor, f"identity {public_key.hex()}")
        _save(ctx.state, _identity_key(public_key), record)
        kind = "identity_suspended" if status == STATUS_SUSPENDED else "identity_reinstated"
        ctx.emit(kind, {"public_key": public_key, "by": actor["id"]})
        return _identity_view(ctx.state, record)

    def _set_enterprise_status(self, ctx: TxContext, a: Arguments, status: str) -> Value:
        actor = self._sender_institution(ctx)
        institution = self._institution(ctx.state, a.text("id"))
        if institution["kind"] != KIND_ENTERPRISE:
            raise AppError(
                "governance_required",
                f"{institution['kind']!r} {institution['id']!r} changes status by proposal only",
            )
        self._require_authority(actor, institution)
        _apply_status(institution, status, actor, f"enterprise {institution['id']!r}")
        self._save_institution_status(ctx, institution, str(actor["id"]))
        return _institution_view(institution)

    def _propose(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        bank = self._sender_institution(ctx)
        self._require_kind(bank, KIND_BANK)
        action = a.text("action")
        if action == ACTION_ADMIT:
            a.require("institution", "to admit an institution")
            proposed = a.map("institution")
            kind = str(proposed["kind"])
            identities: list[Value] = [
                {
                    "public_key": entry["public_key"],
                    "roles": _allowed_roles(tuple(map(str, entry["roles"])), kind),  # type: ignore[arg-type]
                }
                for entry in a.maps("identities")
            ]
            subject: dict[str, Value] = {
                "institution": {
                    "id": proposed["id"],
                    "name": proposed["name"],
                    "kind": kind,
                    "jurisdiction": proposed["jurisdiction"],
                },
                "identities": tuple(identities),
            }
        elif action in VALIDATOR_ACTIONS:
            subject = parse_change(action, a)
        else:
            assert action in (ACTION_SUSPEND, ACTION_REINSTATE), action
            a.require("institution_id", f"to {action.removesuffix('_institution')} one")
            subject = {"id": a.text("institution_id")}
        # Validate now so a hopeless proposal is refused up front (and again on execution); a
        # validator change scheduled meanwhile does not make a proposal hopeless.
        self._validate_action(ctx.state, action, subject, height=None)
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

    def _vote(self, ctx: TxContext, a: Arguments, execute: bool) -> Value:
        bank = self._sender_institution(ctx)
        self._require_kind(bank, KIND_BANK)
        proposal_id = a.text("proposal")
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
            if proposal["action"] in VALIDATOR_ACTIONS:
                # When the scheduled set takes effect, for clients and operators.
                proposal["effective_height"] = validator_records_at(ctx.state)[0]  # type: ignore[index]
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

    def _validate_action(
        self, state: ReadState, action: str, subject: Mapping[str, Value], *, height: int | None
    ) -> None:
        """Raise ``AppError`` if ``action`` cannot execute now. ``height``: the block it would
        execute in (None when proposing: a pending validator change is no obstacle then)."""
        if action in VALIDATOR_ACTIONS:
            validate_change(
                state,
                action,
                subject,
                height=height if height is not None else 2**63,
                bank_active=self._active_bank(state, subject.get("institution")),
            )
            return
        if action == ACTION_ADMIT:
            institution = subject["institution"]
            assert isinstance(institution, dict)
            if _load(state, _institution_key(str(institution["id"]))) is not None:
                raise AppError(
                    "institution_exists", f"institution {institution['id']!r} already exists"
                )
            identities = subject["identities"]
            assert isinstance(identities, tuple)
            keys: list[Value] = []
            for entry in identities:
                assert isinstance(entry, dict)
                keys.append(entry["public_key"])
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
        if action in VALIDATOR_ACTIONS:
            effective, validators = execute_change(
                ctx.state,
                action,
                subject,
                height=ctx.block.height,
                bank_active=self._active_bank(ctx.state, subject.get("institution")),
            )
            ctx.emit(
                "validator_set_changed",
                {
                    "action": action,
                    "validator": subject["name"],
                    "effective_height": effective,
                    "validators": validators.size,
                    "validators_hash": validators.hash(),
                },
            )
            return
        self._validate_action(ctx.state, action, subject, height=ctx.block.height)
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
    def _active_bank(state: ReadState, institution_id: Value) -> bool:
        if not isinstance(institution_id, str):
            return False
        record = _load(state, _institution_key(institution_id))
        return (
            record is not None and record["kind"] == KIND_BANK and record["status"] == STATUS_ACTIVE
        )

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
        self._save_institution_status(ctx, institution, by)

    @staticmethod
    def _save_institution_status(ctx: TxContext, institution: dict[str, Value], by: str) -> None:
        """Store ``institution`` with the status just set, and say so (``by``: who set it)."""
        _save(ctx.state, _institution_key(str(institution["id"])), institution)
        suspended = institution["status"] == STATUS_SUSPENDED
        kind = "institution_suspended" if suspended else "institution_reinstated"
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

    def answer(self, state: ReadState, path: str, a: Arguments) -> Value:
        """Paths: ``identity`` {public_key}, ``institution`` {id} (shapes pinned in
        ``apps.base.App``; None when absent), ``institutions`` {kind?}, ``identities``
        {institution}, ``proposal`` {id}, ``proposals`` {} (open ones, in id order),
        ``validators`` {height?} (the set in force at ``height``, default the latest scheduled:
        ``{"effective_height", "validators": [{"name", "public_key", "node_key",
        "institution"}]}``, None on a chain without a registry)."""
        if path == "identity":
            record = _load(state, _identity_key(a.key("public_key")))
            return None if record is None else _identity_view(state, record)
        if path == "institution":
            record = _load(state, _institution_key(a.text("id")))
            return None if record is None else _institution_view(record)
        if path == "institutions":
            return tuple(
                _institution_view(record)
                for record in self._institutions(state, kind=a.optional_text("kind"))
            )
        if path == "identities":
            institution_id = a.text("institution")
            prefix = _MEMBER + institution_id.encode("utf-8") + b"\x00"
            views = []
            for key, _ in state.scan(prefix, prefix[:-1] + b"\x01"):
                record = _load(state, _identity_key(key[len(prefix) :]))
                assert record is not None
                views.append(_identity_view(state, record))
            return tuple(views)
        if path == "proposal":
            proposal_id = a.text("id")
            found_proposal = _load(state, _PROPOSAL + proposal_id.encode("utf-8"))
            return None if found_proposal is None else _proposal_view(state, found_proposal)
        if path == "validators":
            found = validator_records_at(state, a.optional_integer("height"))
            if found is None:
                return None
            answer: dict[str, Value] = {"effective_height": found[0], "validators": found[1]}
            return answer
        if path == "proposals":
            open_proposals: list[Value] = []
            for _, raw in state.scan(_PROPOSAL, _PROPOSAL[:-1] + b"0"):
                proposal = decode(raw)
                assert isinstance(proposal, dict)
                if _proposal_view(state, proposal)["status"] == PROPOSAL_OPEN:
                    open_proposals.append(proposal)
            return tuple(open_proposals)
        raise AppError("unknown_query", f"membership has no query {path!r}")
