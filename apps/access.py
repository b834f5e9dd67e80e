"""Read rules: who may read what an app stores, declared by the app as data.

Theory of operation
-------------------
Every app declares, next to its ``operations``, a ``read_rules`` table (``ReadRules``): one
``ReadRule`` per query path and one per event kind, plus the **overseer** roles it names (for
the built-in apps: a regulator for its jurisdiction, an auditor everywhere). The node enforces
the rules for queries, transaction receipts and the event stream (``node.access``); the app
only states them. Everything here is pure and deterministic: rules are frozen data, and the
functions below compute from (rule, arguments or attributes, answer, lookups, membership facts).

A rule has an **audience**:

* ``public``: anyone, signed or not (currency and asset definitions, institutions);
* ``members``: any active member identity holding one of ``roles`` (an open market's offers,
  membership lookups); a members rule may name a field that ``closes`` an answer to the market
  (an offer's ``taker``) and the ``closed`` rule that answer is read under then (its maker's
  and taker's record);
* ``parties``: only callers related to one of the answer's **subjects** (below).

The subjects of one answer are accounts (public keys) and institutions, found three ways:
``accounts``/``institutions`` name query arguments (or event attributes) whose values are
subjects (``balances {account}``: the account); ``fields`` name fields of the answer, anywhere
in it (``payment {id}``: its ``from`` and ``to``); ``lookups`` ask the same app another question
and take subjects from that answer's fields (``holders {symbol}``: the asset's ``issuer`` and
``agent``). A caller **sees** an account when it is the account itself (``owner``), staff of the
same institution (bank or enterprise role; a bank's customers do not see each other), a bank
that sponsors the account's enterprise (``sponsor bank``), or holds an overseer role the app
names (for its jurisdiction, or everywhere). A ``parties`` answer is readable when the caller
sees *any* of its subjects: every subject owns the whole answer (both sides of a payment, every
holder along a receivable's lineage, the issuer of an asset's cap table). Rules whose subjects
come from the answer use ``fields`` only on single records and trees, never on lists of other
accounts' records; lists are keyed by an argument (``history {account}``).

A query may read more than its answer shows (``assets can_transfer`` reads the receiver's
holding to judge the holder cap), and a proof of the answer carries every value the query read
(``apps.proofs``). Such a rule names a second rule, ``proof``, for that data: a proven answer
is readable only by a caller that both rules admit.

An answer with no subject at all (``None``: nothing was found) is readable by anyone the
audience admits, unless the rule names the arguments it is ``keyed_by`` (a record looked up
among one account's own, like a payment by its sender's end-to-end id): then by whoever sees
one of those accounts, as a found record would be; a non-empty answer whose subjects cannot
be determined is readable by overseers with scope ``all`` and nodes only. A path or event kind
with no rule is readable by nodes (validators and observers) only: deny by default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from consensus.codec import Value

__all__ = [
    "AUDIENCES",
    "AUDIENCE_MEMBERS",
    "AUDIENCE_PARTIES",
    "AUDIENCE_PUBLIC",
    "OVERSEERS",
    "SCOPE_ALL",
    "SCOPE_JURISDICTION",
    "STAFF_ROLES",
    "Institution",
    "Lookup",
    "Member",
    "ReadRule",
    "ReadRules",
    "Subjects",
    "account_data",
    "account_relation",
    "event_of",
    "institution_data",
    "institution_relation",
    "keyed_subjects",
    "members_only",
    "named_in",
    "public",
    "record_of",
    "subjects_of",
]

AUDIENCE_PUBLIC: Final = "public"
AUDIENCE_MEMBERS: Final = "members"
AUDIENCE_PARTIES: Final = "parties"
AUDIENCES: Final = (AUDIENCE_PUBLIC, AUDIENCE_MEMBERS, AUDIENCE_PARTIES)
SCOPE_JURISDICTION: Final = "jurisdiction"
SCOPE_ALL: Final = "all"
# Roles that make an identity staff of its institution (it sees the institution's accounts);
# a bank's or an enterprise's ``customer`` identities see only their own.
STAFF_ROLES: Final = frozenset({"bank", "enterprise"})
# Subjects are searched this deep in an answer (a lineage tree is at most 32 levels deep, each
# level two maps deep); deeper values are not subjects.
SEARCH_DEPTH_MAX: Final = 80
# The overseers the built-in apps name: a regulator sees its own jurisdiction, an auditor all.
OVERSEERS: Final[Mapping[str, str]] = {"regulator": "jurisdiction", "auditor": "all"}
_KEY_BYTES: Final = 32


@dataclass(frozen=True, slots=True)
class Lookup:
    """More subjects: ask the same app ``path`` with ``arguments`` (the lookup's argument name
    -> the name of the query argument or event attribute that supplies its value) and take the
    answer's ``fields``."""

    path: str
    arguments: tuple[tuple[str, str], ...]
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReadRule:
    """Who may read one query path or event kind (see the module docstring)."""

    audience: str
    description: str
    accounts: tuple[str, ...] = ()
    institutions: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    lookups: tuple[Lookup, ...] = ()
    # For ``members``: the roles admitted (None: every role).
    roles: frozenset[str] | None = None
    # For ``members``: an answer holding a value under ``closes`` (an offer's ``taker``: it was
    # taken) is no longer the market's but a record under ``closed`` (its maker's and taker's).
    closes: str = ""
    closed: ReadRule | None = None
    # Arguments naming the accounts whose own records the query looks up (``payment
    # {sender, end_to_end_id}``: the sender's ids): that such an account has no such record
    # is its data too, so an answer that found nothing is readable only by whoever sees one
    # of them, as a found one would be (else the refusal of a found record would tell a
    # caller that it exists).
    keyed_by: tuple[str, ...] = ()
    # Data a proof of the answer carries besides the answer (values the query read without
    # showing them): a proven answer must pass this rule too (None: the answer's rule covers
    # every value the query reads).
    proof: ReadRule | None = None

    def __post_init__(self) -> None:
        assert self.audience in AUDIENCES, self.audience
        assert self.proof is None or self.proof.proof is None, self.description
        has_subjects = bool(self.accounts or self.institutions or self.fields or self.lookups)
        assert (self.audience == AUDIENCE_PARTIES) == has_subjects, self.description
        assert self.roles is None or self.audience == AUDIENCE_MEMBERS, self.description
        assert not self.keyed_by or self.audience == AUDIENCE_PARTIES, self.description
        assert bool(self.closes) == (self.closed is not None), self.description
        assert self.closed is None or (
            self.audience == AUDIENCE_MEMBERS and self.closed.audience == AUDIENCE_PARTIES
        ), self.description


@dataclass(frozen=True, slots=True)
class ReadRules:
    """An app's read rules: per query path, per event kind, and the overseer roles it names
    (role -> ``jurisdiction`` or ``all``)."""

    queries: Mapping[str, ReadRule] = field(default_factory=dict)
    events: Mapping[str, ReadRule] = field(default_factory=dict)
    overseers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for scope in self.overseers.values():
            assert scope in (SCOPE_JURISDICTION, SCOPE_ALL), scope


@dataclass(frozen=True, slots=True)
class Subjects:
    """Whose data an answer (or an event) is: accounts and institution ids."""

    accounts: frozenset[bytes] = frozenset()
    institutions: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.accounts or self.institutions)

    def union(self, other: Subjects) -> Subjects:
        """Both sets of subjects."""
        return Subjects(self.accounts | other.accounts, self.institutions | other.institutions)


@dataclass(frozen=True, slots=True)
class Member:
    """What membership says about an identity (or about the institution of an account):
    ``active`` is true when both the identity and its institution are active."""

    key: bytes
    institution: str
    roles: frozenset[str]
    active: bool
    jurisdiction: str
    institution_kind: str
    sponsor: str | None


@dataclass(frozen=True, slots=True)
class Institution:
    """What membership says about an institution."""

    id: str
    kind: str
    jurisdiction: str
    sponsor: str | None
    active: bool = True


# Who "sees" an account, as the rules' descriptions say it.
_SEERS: Final = (
    "its owner, staff of its institution, the bank sponsoring that institution, a regulator of"
    " its jurisdiction, an auditor"
)


def public(description: str) -> ReadRule:
    """A rule for data anyone may read."""
    return ReadRule(AUDIENCE_PUBLIC, f"public: {description}")


def members_only(
    description: str,
    roles: frozenset[str] | None = None,
    *,
    closes: str = "",
    closed: ReadRule | None = None,
) -> ReadRule:
    """A rule for data every active member (holding one of ``roles``) may read; an answer
    holding a value under ``closes`` is read under ``closed`` instead."""
    who = "members" if roles is None else "members holding " + "/".join(sorted(roles))
    return ReadRule(
        AUDIENCE_MEMBERS, f"{who} only: {description}", roles=roles, closes=closes, closed=closed
    )


def _owners(named: list[str], lookups: tuple[Lookup, ...]) -> str:
    owners = [*named, *(f"the {'/'.join(item.fields)} of its {item.path}" for item in lookups)]
    return " and ".join(owners)


def account_data(
    *arguments: str, lookups: tuple[Lookup, ...] = (), proof: ReadRule | None = None
) -> ReadRule:
    """A rule for data owned by the accounts given as ``arguments`` (and by the lookups');
    ``proof``: the rule of what a proof of the answer carries besides it."""
    named = [f"the account given as '{name}'" for name in arguments]
    return ReadRule(
        AUDIENCE_PARTIES,
        f"data of {_owners(named, lookups)}: readable by whoever sees one of them ({_SEERS})",
        accounts=arguments,
        lookups=lookups,
        proof=proof,
    )


def record_of(
    *fields: str, lookups: tuple[Lookup, ...] = (), keyed_by: tuple[str, ...] = ()
) -> ReadRule:
    """A rule for a record owned by the accounts in its ``fields`` (and by the lookups');
    ``keyed_by``: arguments naming the accounts among whose own records the query looks it up
    (that it finds none is their data)."""
    named = [f"the accounts in its {'/'.join(fields)} fields"]
    absent = ""
    if keyed_by:
        owners = " or ".join(f"'{name}'" for name in keyed_by)
        absent = f"; that the account given as {owners} has none is that account's data"
    return ReadRule(
        AUDIENCE_PARTIES,
        f"a record of {_owners(named, lookups)}: readable by whoever sees one of them"
        f" ({_SEERS}){absent}",
        fields=fields,
        lookups=lookups,
        keyed_by=keyed_by,
    )


def institution_data(*arguments: str) -> ReadRule:
    """A rule for data owned by the institutions given as ``arguments``."""
    owners = ", ".join(f"'{name}'" for name in arguments)
    return ReadRule(
        AUDIENCE_PARTIES,
        f"data of the institution given as {owners}: readable by its staff, the bank"
        " sponsoring it, a regulator of its jurisdiction, an auditor",
        institutions=arguments,
    )


def event_of(
    *attributes: str, institutions: tuple[str, ...] = (), lookups: tuple[Lookup, ...] = ()
) -> ReadRule:
    """A rule for an event concerning the accounts in its ``attributes`` (and the lookups'),
    besides the transaction's sender."""
    named = ["the transaction's sender"]
    if attributes or institutions:
        named.append(f"the accounts in its {'/'.join((*attributes, *institutions))}")
    return ReadRule(
        AUDIENCE_PARTIES,
        f"an event of {_owners(named, lookups)}: readable by whoever sees one of them ({_SEERS})",
        accounts=attributes,
        institutions=institutions,
        lookups=lookups,
    )


def _account(value: Value) -> bytes | None:
    """A public key given as 32 bytes or 64 hex digits; anything else is not an account."""
    if isinstance(value, bytes):
        return value if len(value) == _KEY_BYTES else None
    if isinstance(value, str) and len(value) == 2 * _KEY_BYTES:
        try:
            return bytes.fromhex(value)
        except ValueError:
            return None
    return None


def _search(value: Value, names: frozenset[str], found: set[bytes], depth: int) -> None:
    """Accounts in fields called ``names`` anywhere in ``value`` (maps and lists)."""
    if depth > SEARCH_DEPTH_MAX:
        return
    if isinstance(value, Mapping):
        for name, item in value.items():
            if isinstance(name, str) and name in names:
                account = _account(item)
                if account is not None:
                    found.add(account)
            _search(item, names, found, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _search(item, names, found, depth + 1)


def subjects_of(
    rule: ReadRule,
    values: Mapping[str, Value],
    answer: Value,
    lookup: Callable[[str, Mapping[str, Value]], Value],
) -> Subjects:
    """The subjects of ``answer`` under ``rule``: from ``values`` (the query's arguments or the
    event's attributes), from the answer's fields, and from the rule's lookups (``lookup`` asks
    the same app a question; an answer it cannot give is ``None``)."""
    accounts: set[bytes] = set()
    institutions: set[str] = set()
    for name in rule.accounts:
        account = _account(values.get(name))
        if account is not None:
            accounts.add(account)
    for name in rule.institutions:
        institution = values.get(name)
        if isinstance(institution, str) and institution:
            institutions.add(institution)
    if rule.fields:
        _search(answer, frozenset(rule.fields), accounts, 0)
    for item in rule.lookups:
        arguments: dict[str, Value] = {}
        for target, source in item.arguments:
            if source not in values:
                break
            arguments[target] = values[source]
        else:
            _search(lookup(item.path, arguments), frozenset(item.fields), accounts, 0)
    return Subjects(frozenset(accounts), frozenset(institutions))


def keyed_subjects(rule: ReadRule, values: Mapping[str, Value]) -> Subjects:
    """The accounts given as the arguments ``rule`` is ``keyed_by``: whose data it is that the
    query found nothing."""
    accounts = (_account(values.get(name)) for name in rule.keyed_by)
    return Subjects(frozenset(account for account in accounts if account is not None))


def named_in(values: Mapping[str, Value]) -> Subjects:
    """Every account and institution id among ``values`` (what a caller named itself)."""
    accounts = (_account(value) for value in values.values())
    return Subjects(
        frozenset(account for account in accounts if account is not None),
        frozenset(value for value in values.values() if isinstance(value, str) and value),
    )


def _overseer(caller: Member, jurisdiction: str | None, overseers: Mapping[str, str]) -> str | None:
    for role, scope in sorted(overseers.items()):
        if role not in caller.roles:
            continue
        if scope == SCOPE_ALL:
            return role
        if jurisdiction is not None and jurisdiction == caller.jurisdiction:
            return f"{role} of {jurisdiction}"
    return None


def account_relation(
    caller: Member, account: bytes, holder: Member | None, overseers: Mapping[str, str]
) -> str | None:
    """How ``caller`` is entitled to see ``account`` (whose membership facts are ``holder``,
    None when it is no member), or None when it is not."""
    if caller.key == account:
        return "owner"
    if not caller.active:
        return None
    if holder is not None:
        if caller.institution == holder.institution and caller.roles & STAFF_ROLES:
            return f"staff of {holder.institution}"
        if "bank" in caller.roles and holder.sponsor == caller.institution:
            return f"sponsor bank of {holder.institution}"
    return _overseer(caller, None if holder is None else holder.jurisdiction, overseers)


def institution_relation(
    caller: Member, institution: Institution | None, overseers: Mapping[str, str]
) -> str | None:
    """How ``caller`` is entitled to see the data of ``institution``, or None."""
    if not caller.active:
        return None
    if institution is not None:
        if caller.institution == institution.id and caller.roles & STAFF_ROLES:
            return f"staff of {institution.id}"
        if "bank" in caller.roles and institution.sponsor == caller.institution:
            return f"sponsor bank of {institution.id}"
    return _overseer(caller, None if institution is None else institution.jurisdiction, overseers)
