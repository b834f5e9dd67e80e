"""Who may read what through the client API: the caller's identity and the apps' read rules.

Theory of operation
-------------------
Every request is *authenticated* first (``AccessControl.authenticate``): a signed request
(``node.auth``) names its caller's key; an unsigned one is anonymous. The key becomes a
``Principal``:

* ``node``: a genesis validator's node key, an observer's (``[p2p] observers``) or a key the
  operator listed in ``[rpc] readers``: it reads everything (validators hold every byte anyway);
* ``member``: an identity in the membership app (its institution, roles, jurisdiction, and
  whether it and its institution are active), read from committed state;
* ``stranger``: a valid signature by a key that is neither;
* ``anonymous``: no signature.

Then every answer that carries app data is checked against the app's read rules
(``apps.access``) before it leaves the node: a query's answer under the rule of its path, a
transaction's receipt under the rules of its events (a receipt is readable by whoever may read
its sender's data or the data of an account one of its events concerns), a stream event under
the rule of its kind. A denied read raises ``AccessDenied`` (403 with the rule that denied it
and why), never an empty answer. Chain-level data (headers, certificates, the app list, the
status) is public. Nodes may read a block's transaction bodies; nobody else may (a body holds
every argument of every transaction in the block).

With ``[rpc] access = "open"`` (a loopback development chain) every read is allowed; requests
are still verified when signed, so per-key limits still apply.

Membership facts are read once per committed height and cached (``_FACTS_CACHED_MAX``
entries), so a burst of requests costs one lookup per caller and subject, not one per request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from apps.access import (
    AUDIENCE_MEMBERS,
    AUDIENCE_PARTIES,
    AUDIENCE_PUBLIC,
    OVERSEERS,
    SCOPE_ALL,
    Institution,
    Member,
    ReadRule,
    ReadRules,
    Subjects,
    account_relation,
    institution_relation,
    keyed_subjects,
    named_in,
    subjects_of,
)
from apps.base import AppError, Event
from consensus.codec import Value
from node.auth import RequestVerifier
from node.clientlimits import ClientLimiter, Refusal
from node.http import Request

__all__ = [
    "ACCESS_MODES",
    "ACCESS_OPEN",
    "ACCESS_SCOPED",
    "AccessControl",
    "AccessDenied",
    "KeyLimited",
    "Principal",
]

ACCESS_SCOPED: Final = "scoped"
ACCESS_OPEN: Final = "open"
ACCESS_MODES: Final = (ACCESS_SCOPED, ACCESS_OPEN)
KIND_ANONYMOUS: Final = "anonymous"
KIND_NODE: Final = "node"
KIND_MEMBER: Final = "member"
KIND_STRANGER: Final = "stranger"
# Membership facts remembered per committed height (callers and subjects of recent requests).
_FACTS_CACHED_MAX: Final = 4096
MEMBERSHIP: Final = "membership"

QueryFunction = Callable[[str, str, Mapping[str, Value]], Value]


class AccessDenied(Exception):
    """A read the rules refuse: ``rule`` names it (``payments.balances: <rule>``)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


class KeyLimited(Exception):
    """The caller's key is over one of its per-key limits."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking (module docstring)."""

    kind: str
    key: bytes | None = None
    member: Member | None = None

    def label(self) -> str:
        """The caller, as a denial message names it."""
        if self.key is None:
            return "an unsigned request"
        short = self.key.hex()[:16]
        if self.member is not None:
            roles = "/".join(sorted(self.member.roles))
            state = "" if self.member.active else ", suspended"
            return f"key {short} ({roles} of {self.member.institution}{state})"
        if self.kind == KIND_NODE:
            return f"node key {short}"
        return f"key {short} (not a member identity)"


ANONYMOUS: Final = Principal(KIND_ANONYMOUS)


def _text(value: Value) -> str:
    return value if isinstance(value, str) else ""


def _record(value: Value) -> Mapping[str, Value] | None:
    """A membership answer as a map with string keys, or None."""
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return value  # type: ignore[return-value]
    return None


class AccessControl:
    """Authenticates callers and enforces the apps' read rules (module docstring)."""

    def __init__(
        self,
        *,
        mode: str,
        verifier: RequestVerifier,
        query: QueryFunction,
        rules_of: Callable[[str], ReadRules | None],
        node_keys: frozenset[bytes] | Callable[[], frozenset[bytes]],
        height: Callable[[], int],
        limiter: ClientLimiter | None = None,
    ) -> None:
        """``node_keys``: the node keys that read everything, fixed or (a function) as of the
        committed height, asked again once per height: validators added on chain are nodes
        from the height their set is known."""
        assert mode in ACCESS_MODES, mode
        self.mode = mode
        self.verifier = verifier
        self._query = query
        self._rules_of = rules_of
        self._node_keys_source = node_keys
        self._node_keys = node_keys if isinstance(node_keys, frozenset) else frozenset()
        self._node_keys_height = -1
        self._height = height
        self._limiter = limiter
        self._cache_height = -1
        self._members: dict[bytes, Member | None] = {}
        self._institutions: dict[str, Institution | None] = {}
        self.denied = 0

    @property
    def open(self) -> bool:
        """True when every read is allowed (``[rpc] access = "open"``)."""
        return self.mode == ACCESS_OPEN

    # -- who is asking -------------------------------------------------------------------------

    def authenticate(self, request: Request) -> Principal:
        """The caller of ``request``; raises ``node.auth.AuthenticationError`` for a bad
        signature and ``KeyLimited`` when the key is over its limits."""
        key = self.verifier.verify(request.method, request.target, request.body, request.headers)
        if key is None:
            return ANONYMOUS
        if self._limiter is not None and request.connection is not None:
            refusal = self._limiter.admit_key(request.connection, key, len(request.body))
            if refusal is not None:
                raise KeyLimited(refusal)
        return self.principal_of(key)

    def node_keys(self) -> frozenset[bytes]:
        """The node keys that read everything, as of the committed height."""
        source = self._node_keys_source
        if callable(source):
            height = self._height()
            if height != self._node_keys_height:
                self._node_keys = source()
                self._node_keys_height = height
        return self._node_keys

    def principal_of(self, key: bytes) -> Principal:
        """The principal a verified ``key`` is."""
        if key in self.node_keys():
            return Principal(KIND_NODE, key)
        member = self.member(key)
        if member is None:
            return Principal(KIND_STRANGER, key)
        return Principal(KIND_MEMBER, key, member)

    def current(self, principal: Principal) -> Principal:
        """``principal`` as of the committed height: a long-lived request (the event stream)
        asks again as the chain moves on, so a key suspended, given other roles or no longer
        a node's reads what a new request would."""
        if principal.key is None:
            return principal
        return self.principal_of(principal.key)

    def sees_everything(self, principal: Principal) -> bool:
        """Nodes (and everyone on an open chain) read every app's data."""
        return self.open or principal.kind == KIND_NODE

    # -- membership facts ----------------------------------------------------------------------

    def _fresh(self) -> None:
        height = self._height()
        if height != self._cache_height or (
            len(self._members) + len(self._institutions) > _FACTS_CACHED_MAX
        ):
            self._cache_height = height
            self._members.clear()
            self._institutions.clear()

    def member(self, key: bytes) -> Member | None:
        """Membership facts of ``key`` (None when it is no identity)."""
        self._fresh()
        if key in self._members:
            return self._members[key]
        identity = _record(self._ask(MEMBERSHIP, "identity", {"public_key": key}))
        member: Member | None = None
        if identity is not None:
            institution_id = _text(identity.get("institution"))
            institution = self.institution(institution_id)
            roles = identity.get("roles")
            member = Member(
                key=key,
                institution=institution_id,
                roles=frozenset(str(role) for role in roles)
                if isinstance(roles, tuple | list)
                else frozenset(),
                active=identity.get("status") == "active"
                and institution is not None
                and institution.active,
                jurisdiction=_text(identity.get("jurisdiction")),
                institution_kind="" if institution is None else institution.kind,
                sponsor=None if institution is None else institution.sponsor,
            )
        self._members[key] = member
        return member

    def institution(self, institution_id: str) -> Institution | None:
        """Membership facts of an institution (None when unknown)."""
        self._fresh()
        if institution_id in self._institutions:
            return self._institutions[institution_id]
        record = _record(self._ask(MEMBERSHIP, "institution", {"id": institution_id}))
        institution: Institution | None = None
        if record is not None:
            sponsor = record.get("sponsor")
            institution = Institution(
                id=institution_id,
                kind=_text(record.get("kind")),
                jurisdiction=_text(record.get("jurisdiction")),
                sponsor=sponsor if isinstance(sponsor, str) else None,
                active=record.get("status") == "active",
            )
        self._institutions[institution_id] = institution
        return institution

    # -- decisions -----------------------------------------------------------------------------

    def _relation(
        self, principal: Principal, rule: ReadRule, subjects: Subjects, overseers: Mapping[str, str]
    ) -> str | None:
        """Why ``principal`` may read data under ``rule`` with these subjects, or None."""
        if self.sees_everything(principal):
            return "node"
        if rule.audience == AUDIENCE_PUBLIC:
            return "public"
        if rule.audience != AUDIENCE_MEMBERS and principal.key in subjects.accounts:
            return "owner"  # a key reads its own account's data, member or not
        member = principal.member
        if member is None:
            return None
        if rule.audience == AUDIENCE_MEMBERS:
            if member.active and (rule.roles is None or rule.roles & member.roles):
                return "member"
            return None
        if member.active:
            for role, scope in overseers.items():
                if scope == SCOPE_ALL and role in member.roles:
                    return role
        for account in sorted(subjects.accounts):
            relation = account_relation(member, account, self.member(account), overseers)
            if relation is not None:
                return relation
        for institution_id in sorted(subjects.institutions):
            relation = institution_relation(member, self.institution(institution_id), overseers)
            if relation is not None:
                return relation
        return None

    def _deny(self, principal: Principal, rule_name: str, rule: ReadRule | None, what: str) -> None:
        self.denied += 1
        reason = rule.description if rule is not None else "no read rule is declared: nodes only"
        if principal.key is None and rule is not None:
            reason += "; sign the request with your key (--key)"
        raise AccessDenied(f"{rule_name}: {reason}", f"{principal.label()} may not read {what}")

    def _rules(self, app: str) -> ReadRules:
        return self._rules_of(app) or ReadRules()

    def check_query(
        self,
        principal: Principal,
        app: str,
        path: str,
        arguments: Mapping[str, Value],
        answer: Value,
        *,
        proven: bool = False,
    ) -> None:
        """Raise ``AccessDenied`` unless ``principal`` may read ``answer`` to ``app.path``;
        ``proven``: the answer goes with a proof, which carries every value the query read, so
        the rule's ``proof`` rule must admit the caller too."""
        if self.sees_everything(principal):
            return
        rules = self._rules(app)
        rule = rules.queries.get(path)
        name = f"{app}.{path}"
        if rule is None:
            self._deny(principal, name, None, f"{name}")
            return
        record = _record(answer)
        if rule.closed is not None and record is not None and record.get(rule.closes) is not None:
            rule = rule.closed  # no longer the market's: its parties' record
        subjects = self._subjects(app, rule, arguments, answer)
        if not subjects and _empty(answer) and rule.keyed_by:
            # Nothing was found among these accounts' own records: that is their data.
            subjects = keyed_subjects(rule, arguments)
        if self._relation(principal, rule, subjects, rules.overseers) is None and not (
            # Nothing was found: there is nobody's data to protect.
            not subjects and _empty(answer) and rule.audience != AUDIENCE_MEMBERS
        ):
            self._deny(principal, name, rule, f"{name} {_describe(subjects, arguments)}")
        if proven and rule.proof is not None:
            # What the query read is there even when the answer is empty: no such exception.
            subjects = self._subjects(app, rule.proof, arguments, answer)
            if self._relation(principal, rule.proof, subjects, rules.overseers) is None:
                what = f"a proof of {name}, which carries data {_describe(subjects, arguments)}"
                self._deny(principal, f"{name} (proof)", rule.proof, what)

    def check_arguments(
        self,
        principal: Principal,
        app: str,
        path: str,
        arguments: Mapping[str, Value],
        *,
        proven: bool = False,
    ) -> None:
        """Raise ``AccessDenied`` before the query runs when its arguments alone refuse
        ``principal``: a rule whose subjects do not come from the answer (``account_data``) and
        that names some (an empty answer may be readable: that waits for the answer). Then
        neither the refusal's time nor the node's work depends on the answer (how much an
        account holds or did); ``check_query`` still checks the answer."""
        if self.sees_everything(principal):
            return
        rules = self._rules(app)
        rule = rules.queries.get(path)
        if rule is None:
            return  # an unknown path is for the app to name; the answer's check refuses it
        name = f"{app}.{path}"
        checks = [(name, rule)]
        if proven and rule.proof is not None:
            checks.append((f"{name} (proof)", rule.proof))
        for rule_name, part in checks:
            if part.audience != AUDIENCE_PARTIES or part.fields:
                continue
            subjects = self._subjects(app, part, arguments, None)
            if subjects and self._relation(principal, part, subjects, rules.overseers) is None:
                what = f"{name} {_describe(subjects, arguments)}"
                if part is not rule:
                    what = f"a proof of {name}, which carries data {_describe(subjects, arguments)}"
                self._deny(principal, rule_name, part, what)

    def _ask(self, app: str, path: str, arguments: Mapping[str, Value]) -> Value:
        """An app's answer for a rule's lookup, or None when it cannot answer (an unknown
        record, an argument it refuses): a lookup that fails finds no subject."""
        try:
            return self._query(app, path, arguments)
        except AppError:
            return None

    def _subjects(
        self, app: str, rule: ReadRule, values: Mapping[str, Value], answer: Value
    ) -> Subjects:
        return subjects_of(
            rule, values, answer, lambda path, arguments: self._ask(app, path, arguments)
        )

    def require_account(self, principal: Principal, account: bytes, what: str) -> None:
        """Raise ``AccessDenied`` unless ``principal`` may read data of ``account``."""
        if self.sees_everything(principal):
            return
        rule = _ACCOUNT_RULE
        if self._relation(principal, rule, Subjects(frozenset({account})), OVERSEERS):
            return
        self._deny(principal, what, rule, f"{what} of account {account.hex()[:16]}")

    def require_node(self, principal: Principal, what: str) -> None:
        """Raise ``AccessDenied`` unless ``principal`` reads everything."""
        if self.sees_everything(principal):
            return
        self.denied += 1
        raise AccessDenied(
            f"{what}: readable by validators and observers only (signed by a node key)",
            f"{principal.label()} may not read {what}",
        )

    # -- receipts and events -------------------------------------------------------------------

    def event_subjects(self, sender: bytes, event: Event) -> tuple[ReadRule | None, Subjects]:
        """The rule of ``event`` and whose data it is (its transaction's sender included)."""
        rules = self._rules(event.app)
        rule = rules.events.get(event.kind)
        subjects = Subjects(frozenset({sender}))
        if rule is not None:
            subjects = subjects.union(self._subjects(event.app, rule, dict(event.attributes), None))
        return rule, subjects

    def event_visible(self, principal: Principal, sender: bytes, event: Event) -> bool:
        """True when ``principal`` may read ``event`` (of a transaction sent by ``sender``)."""
        if self.sees_everything(principal):
            return True
        rule, subjects = self.event_subjects(sender, event)
        if rule is None:
            rule = _SENDER_RULE
        overseers = self._rules(event.app).overseers
        return self._relation(principal, rule, subjects, overseers) is not None

    def receipt_visible(
        self, principal: Principal, sender: bytes, app: str, events: Sequence[Event]
    ) -> bool:
        """True when ``principal`` may read the receipt of a transaction of ``app`` sent by
        ``sender`` with ``events``: it sees the sender, or an account an event concerns."""
        if self.sees_everything(principal):
            return True
        overseers = self._rules(app).overseers
        if self._relation(principal, _SENDER_RULE, Subjects(frozenset({sender})), overseers):
            return True
        return any(self.event_visible(principal, sender, event) for event in events)

    def check_receipt(
        self, principal: Principal, sender: bytes, app: str, events: Sequence[Event], what: str
    ) -> None:
        """Raise ``AccessDenied`` unless ``principal`` may read the receipt (see
        ``receipt_visible``)."""
        if not self.receipt_visible(principal, sender, app, events):
            self._deny(principal, "receipt", _RECEIPT_RULE, what)


_ACCOUNT_RULE: Final = ReadRule(
    "parties",
    "an account's data (its next nonce counts what it sent): readable by its owner, staff of"
    " its institution, the bank sponsoring that institution, a regulator of its jurisdiction,"
    " an auditor",
    accounts=("account",),
)
_SENDER_RULE: Final = ReadRule(
    "parties",
    "an event without a declared rule: readable by whoever sees its sender",
    accounts=("sender",),
)
_RECEIPT_RULE: Final = ReadRule(
    "parties",
    "a transaction's receipt: readable by whoever sees its sender or an account one of its"
    " events concerns (owner, staff of its institution, sponsor bank, regulator of its"
    " jurisdiction, auditor)",
    accounts=("sender",),
)


def _empty(answer: Value) -> bool:
    return answer is None or answer == () or answer == [] or answer == {}


def _describe(subjects: Subjects, arguments: Mapping[str, Value]) -> str:
    """Whose data a refusal is about, naming only the accounts and institutions the caller gave
    in ``arguments``: the others come from the answer or a rule's look-ups, and naming them
    would tell a caller who may not read the record whose it is (a payment's payer and payee)."""
    given = named_in(arguments)
    accounts = sorted(subjects.accounts & given.accounts)
    institutions = sorted(subjects.institutions & given.institutions)
    parts = [f"of account {key.hex()[:16]}" for key in accounts[:3]]
    parts += [f"of institution {name}" for name in institutions[:3]]
    if len(accounts) < len(subjects.accounts) or len(institutions) < len(subjects.institutions):
        parts.append("of parties it does not name")
    return " / ".join(parts) if parts else "(no owner could be determined)"
