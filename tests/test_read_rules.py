"""The apps' read rules, enforced by ``node.access``, against an independent statement of
whose data each answer is.

A demo consortium runs 30 blocks of its traffic on the real host; two parties are added that
have nothing to do with any of it: zed, a customer of a bank in another jurisdiction, and an
auditor. Hypothesis then asks every query path of every app, with arguments drawn from the
chain's real keys and ids, as every party, a key that is no member, and nobody (unsigned). The
test's own table (``OWNERS``) says whose data each answer is; a caller related to none of them
(not the account, not staff of its institution, not the bank sponsoring it, not a regulator of
its jurisdiction, not an auditor) must be refused, and a related one must be served.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from apps.access import ReadRule
from apps.assets import AssetsApp
from apps.base import AppError, BlockContext, Event
from apps.demo import DemoTraffic, demo_consortium
from apps.host import AppHost
from apps.membership import MembershipApp
from apps.payments import PaymentsApp
from apps.scf import ScfApp
from apps.schema import Amount as AmountType
from apps.schema import AppSchema, ArgumentType, Choice, Integer, PublicKey
from apps.state import MemoryBackend
from consensus.codec import Value
from consensus.crypto import PrivateKey
from node.access import AccessControl, AccessDenied, Principal
from node.auth import RequestVerifier

EPOCH_MS = 1_704_067_200_000
NODE_KEY: Final = PrivateKey(b"\x01" * 32).public_key
STRANGER: Final = PrivateKey(b"\x02" * 32).public_key
ZED: Final = PrivateKey(b"\x03" * 32).public_key
AUDITOR: Final = PrivateKey(b"\x04" * 32).public_key
PUBLIC: Final = "public"
MEMBERS: Final = "members"
GOVERNANCE: Final = "governance"


@dataclass(frozen=True)
class Facts:
    """The test's own view of a member: from the genesis it wrote, not from the node."""

    key: bytes
    institution: str
    roles: frozenset[str]
    jurisdiction: str
    sponsor: str | None


@dataclass
class World:
    host: AppHost
    access: AccessControl
    members: dict[bytes, Facts]
    institutions: dict[str, Facts]
    events: list[tuple[bytes, Event]]
    pools: dict[str, list[Value]]


def _string_map(value: Value) -> Mapping[str, Value]:
    assert isinstance(value, Mapping)
    return {str(key): item for key, item in value.items()}


@functools.cache
def world() -> World:
    consortium = demo_consortium(0)
    genesis = {name: _string_map(section) for name, section in consortium.app_genesis.items()}
    membership = dict(genesis["membership"])
    institutions = [*membership["institutions"]]  # type: ignore[misc]
    identities = [*membership["identities"]]  # type: ignore[misc]
    institutions.append({"id": "zebra-bank", "name": "Zebra", "kind": "bank", "jurisdiction": "ZZ"})
    institutions.append(
        {"id": "audit-co", "name": "Audit Co", "kind": "auditor", "jurisdiction": "ZZ"}
    )
    identities.append({"public_key": ZED, "institution": "zebra-bank", "roles": ("customer",)})
    identities.append({"public_key": AUDITOR, "institution": "audit-co", "roles": ("auditor",)})
    membership["institutions"] = tuple(institutions)
    membership["identities"] = tuple(identities)
    genesis["membership"] = membership
    backend = MemoryBackend()
    host = AppHost(
        [MembershipApp(), PaymentsApp(), ScfApp(), AssetsApp()], backend, chain_id="rules-net"
    )
    writes, app_hash = host.init_genesis(genesis)
    backend.apply(writes)
    host.committed(0, app_hash)
    traffic = DemoTraffic(demo_consortium(0, "rules-net"))
    events: list[tuple[bytes, Event]] = []
    for height in range(1, 31):
        now_ms = EPOCH_MS + height * 60_000
        batch = traffic.batch(25, now_ms)
        senders = {tx.hash: tx.sender for tx in batch}
        result = host.execute_block(
            BlockContext(height, now_ms, b"", host.chain_id), [tx.encoded for tx in batch]
        )
        backend.apply(result.writes)
        host.committed(height, result.app_hash)
        for receipt in result.receipts:
            events += [(senders[receipt.transaction_hash], event) for event in receipt.events]
    by_id = {str(_string_map(entry)["id"]): _string_map(entry) for entry in institutions}
    members: dict[bytes, Facts] = {}
    for entry in map(_string_map, identities):
        key = entry["public_key"]
        key = bytes.fromhex(key) if isinstance(key, str) else key
        assert isinstance(key, bytes)
        institution = by_id[str(entry["institution"])]
        roles = entry["roles"]
        assert isinstance(roles, tuple | list)
        members[key] = Facts(
            key,
            str(institution["id"]),
            frozenset(map(str, roles)),
            str(institution["jurisdiction"]),
            None if institution.get("sponsor") is None else str(institution["sponsor"]),
        )
    institution_facts = {
        name: Facts(b"", name, frozenset(), str(entry["jurisdiction"]), entry.get("sponsor"))  # type: ignore[arg-type]
        for name, entry in by_id.items()
    }

    def rules_of(app: str) -> object:
        return host.app(app).read_rules if app in host.app_names else None

    access = AccessControl(
        mode="scoped",
        verifier=RequestVerifier("rules-net"),
        query=host.query,
        rules_of=rules_of,  # type: ignore[arg-type]
        node_keys=frozenset({NODE_KEY}),
        height=lambda: host.height,
    )
    pools: dict[str, list[Value]] = {
        "key": [*members, STRANGER],
        "receivable": [],
        "fx": [],
        "dvp": [],
        "order": [],
        "symbol": ["NOPE-1"],
        "currency": ["SGD", "HKD", "CNY", "XXX"],
        "institution": [*by_id, "nobody"],
        "e2e": ["none"],
        "escrow": ["none"],
    }
    for _, event in events:
        attributes = event.attributes
        if event.app == "scf" and event.kind == "receivable_issued":
            pools["receivable"].append(attributes["id"])
        if event.app == "scf" and event.kind == "receivable_split":
            pools["receivable"] += list(attributes["children"])  # type: ignore[arg-type]
        if event.app == "scf" and event.kind == "order_registered":
            pools["order"].append(attributes["order_id"])
        if event.app == "payments" and event.kind == "fx_offered":
            pools["fx"].append(attributes["offer"])
        if event.app == "assets" and event.kind == "dvp_offered":
            pools["dvp"].append(attributes["offer"])
            pools["escrow"].append(attributes["offer"])
        if event.app == "assets" and event.kind == "asset_created":
            pools["symbol"].append(attributes["symbol"])
        if event.app == "payments" and event.kind == "payment":
            pools["e2e"].append(attributes["end_to_end_id"])
    for name in ("receivable", "fx", "dvp", "order"):
        assert pools[name], f"the demo traffic made no {name}"
        pools[name].append(f"{name}-unknown")
    return World(host, access, members, institution_facts, events, pools)


# --------------------------------------------------------------------------- the oracle


def _found(answer: Value, names: frozenset[str]) -> set[bytes]:
    """Account keys in fields ``names`` anywhere in ``answer``."""
    found: set[bytes] = set()
    if isinstance(answer, Mapping):
        for name, item in answer.items():
            if name in names and isinstance(item, bytes):
                found.add(item)
            if name in names and isinstance(item, str) and len(item) == 64:
                found.add(bytes.fromhex(item))
            found |= _found(item, names)
    elif isinstance(answer, tuple | list):
        for item in answer:
            found |= _found(item, names)
    return found


def _stewards(w: World, arguments: Mapping[str, Value]) -> set[bytes]:
    asset = w.host.query("assets", "asset", {"symbol": arguments["symbol"]})
    return _found(asset, frozenset({"issuer", "agent"}))


def _receivable_parties(w: World, rid: Value) -> set[bytes]:
    record = w.host.query("scf", "receivable", {"id": rid})
    return _found(record, frozenset({"debtor", "holder", "financed_by", "bank"}))


def _taken(offer: Value) -> set[bytes] | str:
    """An open offer is the market's; a taken one its maker's and taker's."""
    if isinstance(offer, Mapping) and _string_map(offer).get("taker") is not None:
        return _found(offer, frozenset({"maker", "taker"}))
    return MEMBERS


def _arg(arguments: Mapping[str, Value], name: str) -> set[bytes]:
    value = arguments.get(name)
    return {value} if isinstance(value, bytes) else set()


Owners = Callable[[World, Mapping[str, Value], Value], "set[bytes] | str | tuple[str, str]"]
# Whose data each answer is, stated by the test (not derived from the apps' rules).
OWNERS: Final[dict[tuple[str, str], Owners]] = {
    ("payments", "currencies"): lambda w, a, r: PUBLIC,
    ("payments", "currency"): lambda w, a, r: PUBLIC,
    ("payments", "balances"): lambda w, a, r: _arg(a, "account"),
    ("payments", "balance"): lambda w, a, r: _arg(a, "account"),
    ("payments", "history"): lambda w, a, r: _arg(a, "account"),
    ("payments", "controls"): lambda w, a, r: _arg(a, "account"),
    # Not found among a sender's end-to-end ids: whether it used one is the sender's data.
    ("payments", "payment"): lambda w, a, r: (
        _found(r, frozenset({"from", "to"})) if r is not None else _arg(a, "sender")
    ),
    ("payments", "escrow"): lambda w, a, r: _found(r, frozenset({"owner"})),
    ("payments", "offers"): lambda w, a, r: MEMBERS,
    ("payments", "offer"): lambda w, a, r: _taken(r),
    ("scf", "receivable"): lambda w, a, r: _receivable_parties(w, a["id"]),
    ("scf", "by_holder"): lambda w, a, r: _arg(a, "holder"),
    ("scf", "by_debtor"): lambda w, a, r: _arg(a, "debtor"),
    ("scf", "exposure"): lambda w, a, r: _arg(a, "debtor"),
    ("scf", "lineage"): lambda w, a, r: (
        _found(r, frozenset({"holder", "financed_by"})) | _receivable_parties(w, a["id"])
    ),
    ("scf", "order"): lambda w, a, r: _found(r, frozenset({"buyer", "supplier"})),
    ("assets", "assets"): lambda w, a, r: PUBLIC,
    ("assets", "asset"): lambda w, a, r: PUBLIC,
    ("assets", "rules"): lambda w, a, r: PUBLIC,
    ("assets", "balance"): lambda w, a, r: _arg(a, "holder") | _stewards(w, a),
    ("assets", "balances"): lambda w, a, r: _arg(a, "holder"),
    ("assets", "holders"): lambda w, a, r: _stewards(w, a),
    ("assets", "can_transfer"): lambda w, a, r: _arg(a, "from") | _stewards(w, a),
    ("assets", "history"): lambda w, a, r: _arg(a, "holder") | _stewards(w, a),
    ("assets", "offers"): lambda w, a, r: MEMBERS,
    ("assets", "offer"): lambda w, a, r: _taken(r),
    ("membership", "institution"): lambda w, a, r: PUBLIC,
    ("membership", "institutions"): lambda w, a, r: PUBLIC,
    ("membership", "identity"): lambda w, a, r: MEMBERS,
    ("membership", "identities"): lambda w, a, r: ("institution", str(a["institution"])),
    ("membership", "proposal"): lambda w, a, r: GOVERNANCE,
    ("membership", "proposals"): lambda w, a, r: GOVERNANCE,
    ("membership", "validators"): lambda w, a, r: PUBLIC,
}


def related(w: World, caller: bytes | None, account: bytes) -> bool:
    """The test's statement of who sees an account's data."""
    if caller is None:
        return False
    if caller == account:
        return True
    me = w.members.get(caller)
    if me is None:
        return False
    if "auditor" in me.roles:
        return True
    holder = w.members.get(account)
    if holder is None:
        return False
    if me.institution == holder.institution and me.roles & {"bank", "enterprise"}:
        return True
    if "bank" in me.roles and holder.sponsor == me.institution:
        return True
    return "regulator" in me.roles and me.jurisdiction == holder.jurisdiction


def related_institution(w: World, caller: bytes | None, institution: str) -> bool:
    me = None if caller is None else w.members.get(caller)
    facts = w.institutions.get(institution)
    if me is None:
        return False
    if "auditor" in me.roles:
        return True
    if facts is None:
        return False
    if me.institution == institution and me.roles & {"bank", "enterprise"}:
        return True
    if "bank" in me.roles and facts.sponsor == me.institution:
        return True
    return "regulator" in me.roles and me.jurisdiction == facts.jurisdiction


def expected_allowed(
    w: World, caller: bytes | None, owners: set[bytes] | str | tuple[str, str], answer: Value
) -> bool:
    if caller == NODE_KEY or owners == PUBLIC:
        return True
    member = None if caller is None else w.members.get(caller)
    if owners == MEMBERS:
        return member is not None
    if owners == GOVERNANCE:
        return member is not None and bool(member.roles & {"bank", "regulator", "auditor"})
    if isinstance(owners, tuple):
        return related_institution(w, caller, owners[1])
    assert isinstance(owners, set)
    if member is not None and "auditor" in member.roles:
        return True
    if not owners:
        return answer in (None, (), [], {})
    return any(related(w, caller, owner) for owner in owners)


# --------------------------------------------------------------------------- strategies


SCHEMAS: Final[tuple[tuple[str, AppSchema], ...]] = tuple(
    (app.name, app.schema)
    for app in (MembershipApp(), PaymentsApp(), ScfApp(), AssetsApp())
    if app.schema is not None
)


def _pool_for(app: str, path: str, name: str, kind: ArgumentType) -> str | None:
    if isinstance(kind, PublicKey):
        return "key"
    if name == "id":
        return {
            ("scf", "receivable"): "receivable",
            ("scf", "lineage"): "receivable",
            ("payments", "offer"): "fx",
            ("assets", "offer"): "dvp",
            ("payments", "escrow"): "escrow",
        }.get((app, path))
    return {
        "order_id": "order",
        "symbol": "symbol",
        "currency": "currency",
        "code": "currency",
        "institution": "institution",
        "end_to_end_id": "e2e",
    }.get(name)


@st.composite
def questions(draw: st.DrawFn) -> tuple[str, str, dict[str, Value]]:
    w = world()
    app, schema = draw(st.sampled_from(SCHEMAS))
    spec = draw(st.sampled_from(schema.queries))
    arguments: dict[str, Value] = {}
    for argument in spec.arguments:
        if not argument.required and not draw(st.booleans()):
            continue
        pool = _pool_for(app, spec.name, argument.name, argument.type)
        if pool is not None:
            arguments[argument.name] = draw(st.sampled_from(w.pools[pool]))
        elif argument.name == "app":
            arguments["app"] = "assets"
        elif isinstance(argument.type, Integer | AmountType):
            arguments[argument.name] = draw(st.integers(1, 200))
        elif isinstance(argument.type, Choice):
            arguments[argument.name] = draw(st.sampled_from(argument.type.options))
        elif argument.name == "id":
            arguments["id"] = "unknown-id"
    return app, spec.name, arguments


def callers() -> st.SearchStrategy[bytes | None]:
    return st.sampled_from([None, NODE_KEY, *world().pools["key"]])


def principal(w: World, caller: bytes | None) -> Principal:
    return Principal("anonymous") if caller is None else w.access.principal_of(caller)


# --------------------------------------------------------------------------- properties


def test_every_query_path_of_every_app_declares_a_rule() -> None:
    w = world()
    for app, schema in SCHEMAS:
        rules = w.host.app(app).read_rules
        for spec in schema.queries:
            assert isinstance(rules.queries.get(spec.name), ReadRule), (app, spec.name)
            assert (app, spec.name) in OWNERS, (app, spec.name)


def test_every_event_kind_the_demo_emits_declares_a_rule() -> None:
    w = world()
    kinds = {(event.app, event.kind) for _, event in w.events}
    undeclared = sorted(
        kind for kind in kinds if kind[1] not in w.host.app(kind[0]).read_rules.events
    )
    assert not undeclared


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(question=questions(), caller=callers())
# A key that is no member still reads its own (empty) account.
@example(question=("payments", "balances", {"account": STRANGER}), caller=STRANGER)
@example(question=("payments", "balances", {"account": ZED}), caller=None)
# Whether alice used an end-to-end id is hers: the unrelated customer learns neither answer.
@example(
    question=(
        "payments",
        "payment",
        {"sender": demo_consortium(0).party("alice").public_key, "end_to_end_id": "none"},
    ),
    caller=ZED,
)
def test_no_query_answers_a_caller_unrelated_to_its_owners(
    question: tuple[str, str, dict[str, Value]], caller: bytes | None
) -> None:
    w = world()
    app, path, arguments = question
    try:
        answer = w.host.query(app, path, arguments)
    except AppError:
        return  # a refused question answers nothing
    owners = OWNERS[(app, path)](w, arguments, answer)
    denial: AccessDenied | None = None
    try:
        w.access.check_query(principal(w, caller), app, path, arguments, answer)
    except AccessDenied as denied:
        denial = denied
    allowed = denial is None
    assert denial is None or denial.rule.startswith(f"{app}.{path}: ")
    assert allowed == expected_allowed(w, caller, owners, answer), (
        app,
        path,
        arguments,
        None if caller is None else caller.hex()[:8],
        owners,
    )


def test_the_unrelated_customer_sees_no_account_data_at_all() -> None:
    w = world()
    zed = principal(w, ZED)
    for sender, event in w.events:
        rules = w.host.app(event.app).read_rules.events
        rule = rules.get(event.kind)
        visible = w.access.event_visible(zed, sender, event)
        assert visible == (rule is not None and rule.audience == "public"), event
    for party in demo_consortium(0).parties:
        with pytest.raises(AccessDenied) as refused:
            w.access.check_query(
                zed, "payments", "balances", {"account": party.public_key}, {"SGD": 1}
            )
        assert refused.value.rule.startswith("payments.balances: data of the account")


def test_events_are_visible_to_their_sender_the_parties_they_name_and_an_auditor() -> None:
    w = world()
    auditor = principal(w, AUDITOR)
    checked = 0
    for sender, event in w.events:
        assert w.access.event_visible(principal(w, sender), sender, event)
        assert w.access.event_visible(auditor, sender, event)
        if event.app == "payments" and event.kind == "payment":
            parties = {event.attributes["from"], event.attributes["to"], sender}
            for caller in w.pools["key"]:
                assert isinstance(caller, bytes)
                expected = any(related(w, caller, party) for party in parties)  # type: ignore[arg-type]
                assert w.access.event_visible(principal(w, caller), sender, event) == expected
            checked += 1
    assert checked


def test_the_walk_through_cases() -> None:
    w = world()
    consortium = demo_consortium(0)
    alice, bob = consortium.party("alice").public_key, consortium.party("bob").public_key

    def balances(caller: bytes | None, account: bytes) -> None:
        w.access.check_query(
            principal(w, caller), "payments", "balances", {"account": account}, {"SGD": 1}
        )

    balances(alice, alice)  # her own
    with pytest.raises(AccessDenied) as refused:
        balances(bob, alice)
    assert refused.value.rule.startswith("payments.balances: data of the account given as")
    assert "customer of harbour-bank" in refused.value.message
    balances(consortium.party("lion-bank").public_key, alice)  # her bank
    balances(consortium.party("regulator").public_key, alice)  # SG regulator, SG account
    with pytest.raises(AccessDenied):
        balances(consortium.party("regulator").public_key, bob)  # a HK account
    with pytest.raises(AccessDenied, match="unsigned request"):
        balances(None, alice)
    balances(NODE_KEY, alice)
    # The sponsor bank of an enterprise reads it; another bank does not.
    dragon = consortium.party("dragon-motors").public_key
    balances(consortium.party("pearl-bank").public_key, dragon)
    with pytest.raises(AccessDenied):
        balances(consortium.party("lion-bank").public_key, dragon)
