"""The read rules at the client API's ``POST /query``, proven answers included.

A demo consortium runs a few blocks of its traffic on the real host (the money market fund
``SMMF`` is minted to alice, a customer of lion-bank in SG, and to bob, a customer of
harbour-bank in HK); the API handler answers signed requests over a fake node whose proven
answers carry what a real node's carry: every state value the query read.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Final

import trio

from apps.assets import AssetsApp
from apps.base import BlockContext, Event
from apps.demo import Consortium, DemoTraffic, demo_consortium
from apps.host import AppHost
from apps.membership import MembershipApp
from apps.merkle import Proof
from apps.payments import PaymentsApp
from apps.proofs import QueryProof, recorded_query
from apps.scf import ScfApp
from apps.state import MemoryBackend
from consensus.codec import Value, encode
from consensus.crypto import PrivateKey
from consensus.types import BlockHeader, CommitCertificate
from node.access import AccessControl
from node.api import QueryError, make_handler
from node.auth import RequestVerifier, sign_request
from node.http import Request, Response

CHAIN_ID: Final = "rules-api-net"
EPOCH_MS: Final = 1_704_067_200_000
BLOCKS: Final = 8


class _Chain:
    """A host after a few blocks of demo traffic, with the API's view of it."""

    def __init__(self) -> None:
        self.consortium: Consortium = demo_consortium(0, CHAIN_ID)
        self.backend = MemoryBackend()
        self.host = AppHost(
            [MembershipApp(), PaymentsApp(), ScfApp(), AssetsApp()], self.backend, chain_id=CHAIN_ID
        )
        writes, app_hash = self.host.init_genesis(self.consortium.app_genesis)
        self.backend.apply(writes)
        self.host.committed(0, app_hash)
        traffic = DemoTraffic(self.consortium)
        self.events: list[Event] = []
        # The queries the API ran through this fake node (not the read rules' own look-ups).
        self.asked: list[str] = []
        for height in range(1, BLOCKS + 1):
            now_ms = EPOCH_MS + height * 60_000
            batch = traffic.batch(25, now_ms)
            result = self.host.execute_block(
                BlockContext(height, now_ms, b"", CHAIN_ID), [tx.encoded for tx in batch]
            )
            self.backend.apply(result.writes)
            self.host.committed(height, result.app_hash)
            self.events += [event for receipt in result.receipts for event in receipt.events]

    # -- the fake node (``node.api.ApiBackend``, what ``POST /query`` needs of it) -------------

    def height(self) -> int:
        return self.host.height

    def query(self, app: str, path: str, arguments: Value) -> Value:
        assert isinstance(arguments, dict)
        self.asked.append(f"{app}.{path}")
        return self.host.query(app, path, arguments)

    def query_proven(self, app: str, path: str, arguments: Value) -> tuple[Value, QueryProof]:
        """The answer and the values it read, as a real node's proof carries them (the Merkle
        paths and the certificate are placeholders: the API never looks into them)."""
        assert isinstance(arguments, dict)
        self.asked.append(f"{app}.{path}")
        try:
            result, read = recorded_query(
                lambda recorder: self.host.query(app, path, arguments, state=recorder),
                self.backend,
            )
        except Exception as error:
            raise QueryError("refused", str(error)) from None
        header = BlockHeader(
            CHAIN_ID, self.host.height + 1, 0, bytes(32), bytes(32), bytes(32), 0, 0, bytes(32), 0
        )
        certificate = CommitCertificate(self.host.height + 1, 0, bytes(32), ())
        reads = tuple((key, value, Proof((), None)) for key, value in sorted(read.items()))
        return result, QueryProof(self.host.height, header, certificate, reads)


@functools.cache
def chain() -> _Chain:
    return _Chain()


def key_of(name: str) -> PrivateKey:
    return chain().consortium.party(name).key


async def ask(
    caller: PrivateKey | None, app: str, path: str, arguments: Mapping[str, Value], prove: bool
) -> tuple[int, dict[str, object]]:
    """``POST /query`` through the API handler, signed by ``caller`` (None: unsigned)."""
    the_chain = chain()
    access = AccessControl(
        mode="scoped",
        verifier=RequestVerifier(CHAIN_ID),
        query=the_chain.host.query,
        rules_of=lambda name: the_chain.host.app(name).read_rules,
        node_keys=frozenset(),
        height=the_chain.height,
    )
    handler = make_handler(the_chain, wait_timeout_ms_max=1000, access=access)  # type: ignore[arg-type]
    body = json.dumps(
        {
            "app": app,
            "path": path,
            "arguments": {
                name: value.hex() if isinstance(value, bytes) else value
                for name, value in arguments.items()
            },
            "prove": prove,
        }
    ).encode()
    headers = {} if caller is None else sign_request(caller, CHAIN_ID, "POST", "/query", body)
    request = Request("POST", "/query", {}, headers, body, target="/query")
    response = await handler(request)
    assert isinstance(response, Response)
    document = json.loads(response.body)
    assert isinstance(document, dict)
    return response.status, document


def proven_reads(document: Mapping[str, object]) -> dict[bytes, bytes | None]:
    proof = document["proof"]
    assert isinstance(proof, dict)
    decoded = QueryProof.decode(bytes.fromhex(proof["encoded"]))
    return {key: value for key, value, _ in decoded.reads}


async def test_a_proven_dry_run_does_not_carry_the_receivers_holding_to_the_sender() -> None:
    """``assets can_transfer`` is the sender's question, but the query reads the receiver's
    balance and escrow (the holder cap judges them): a proof would hand them to the sender,
    so a proven dry run needs a caller who may read the receiver's holding too."""
    with trio.fail_after(120):
        the_chain = await trio.to_thread.run_sync(chain)
    alice, bob = (the_chain.consortium.party(name) for name in ("alice", "bob"))
    arguments: dict[str, Value] = {
        "symbol": "SMMF",
        "from": alice.public_key,
        "to": bob.public_key,
        "amount": 1,
        "now_ms": EPOCH_MS + 10 * 60_000,
    }
    bob_holding = the_chain.host.query(
        "assets", "balance", {"symbol": "SMMF", "holder": bob.public_key}
    )
    assert isinstance(bob_holding, dict)
    assert bob_holding["balance"]

    # Unproven, alice's dry run is hers to ask: the answer says whether it would pass.
    status, document = await ask(alice.key, "assets", "can_transfer", arguments, prove=False)
    assert status == 200, document

    # Proven, it would carry bob's balance: refused, naming the rule.
    status, document = await ask(alice.key, "assets", "can_transfer", arguments, prove=True)
    assert status == 403, proven_reads(document) if "proof" in document else document
    assert document["code"] == "forbidden"
    assert "assets.can_transfer" in str(document["rule"])
    assert "'to'" in str(document["rule"])

    # The asset's issuer (straits-funds runs the fund) reads every holding: its proof is served,
    # and it does carry bob's balance.
    issuer = key_of("straits-funds")
    status, document = await ask(issuer, "assets", "can_transfer", arguments, prove=True)
    assert status == 200, document
    assert encode(bob_holding["balance"]) in proven_reads(document).values()
    # The same for bob asking about a transfer to alice: his dry run, not alice's holding.
    mirrored = {**arguments, "from": bob.public_key, "to": alice.public_key}
    status, document = await ask(bob.key, "assets", "can_transfer", mirrored, prove=False)
    assert status == 200, document
    status, document = await ask(bob.key, "assets", "can_transfer", mirrored, prove=True)
    assert status == 403, document


async def test_whether_an_account_used_an_end_to_end_id_is_its_data() -> None:
    """``payments payment {sender, end_to_end_id}`` looks up a payment in the sender's own
    ids: a caller who may not read the sender's data gets the same refusal whether the sender
    used the id or not (an empty answer would say it did not, a refusal that it did)."""
    with trio.fail_after(120):
        the_chain = await trio.to_thread.run_sync(chain)
    alice = the_chain.consortium.party("alice")
    history = the_chain.host.query("payments", "history", {"account": alice.public_key})
    assert isinstance(history, tuple)
    pearl_side = {
        the_chain.consortium.party(name).public_key
        for name in ("chen", "pearl-bank", "dragon-motors")
    }
    sent = [
        record
        for record in history
        if isinstance(record, dict)
        and record["from"] == alice.public_key
        # Paid to none the strangers below see (pearl-bank sees its customers and enterprises).
        and record["to"] not in pearl_side
    ]
    assert sent, "the demo traffic made no payment by alice"
    used = sent[0]["end_to_end_id"]
    assert isinstance(used, str)
    for end_to_end_id in (used, "NEVER-USED-1"):
        arguments: dict[str, Value] = {"sender": alice.public_key, "end_to_end_id": end_to_end_id}
        for stranger in (None, key_of("chen"), key_of("pearl-bank")):
            status, document = await ask(stranger, "payments", "payment", arguments, prove=False)
            assert status == 403, (end_to_end_id, document)
            assert document["rule"] == (
                "payments.payment: "
                + the_chain.host.app("payments").read_rules.queries["payment"].description
                + ("; sign the request with your key (--key)" if stranger is None else "")
            )
        # Alice and her bank read it, found or not.
        for reader in (alice.key, key_of("lion-bank")):
            status, document = await ask(reader, "payments", "payment", arguments, prove=False)
            assert status == 200, document
            assert (document["result"] is None) == (end_to_end_id != used)
    # A payment looked up by number is the same record: the sender given does not widen it.
    number = sent[0]["id"]
    assert isinstance(number, int)
    chen = key_of("chen")
    by_number: dict[str, Value] = {"id": number, "sender": chen.public_key}
    status, document = await ask(chen, "payments", "payment", by_number, prove=False)
    assert status == 403, document


async def test_a_taken_offer_is_its_makers_and_takers_not_the_markets() -> None:
    """Open FX and DvP offers are a market every member reads; once one is taken, who took
    it (and so the trade: both amounts, both parties) is the maker's and the taker's, as
    their ``fx_settled`` and ``dvp_settled`` events are."""
    with trio.fail_after(120):
        the_chain = await trio.to_thread.run_sync(chain)
    customers = [party for party in the_chain.consortium.parties if party.roles == ("customer",)]
    for app, settled, offered in (
        ("payments", "fx_settled", "fx_offered"),
        ("assets", "dvp_settled", "dvp_offered"),
    ):
        taken = [event for event in the_chain.events if (event.app, event.kind) == (app, settled)]
        assert taken, f"the demo traffic took no {app} offer"
        event = taken[0]
        arguments: dict[str, Value] = {"id": event.attributes["offer"]}
        parties = {event.attributes["maker"], event.attributes["taker"]}
        outsider = next(party for party in customers if party.public_key not in parties)
        status, document = await ask(outsider.key, app, "offer", arguments, prove=False)
        assert status == 403, document
        assert str(document["rule"]).startswith(
            f"{app}.offer: a record of the accounts in its maker/taker"
        )
        for party in the_chain.consortium.parties:
            if party.public_key in parties:
                status, document = await ask(party.key, app, "offer", arguments, prove=False)
                assert status == 200, document
                result = document["result"]
                assert isinstance(result, dict)
                assert result["status"] == "settled"
        # An offer nobody took is still the market's.
        taken_ids = {event.attributes["offer"] for event in taken}
        still_open = [
            event.attributes["offer"]
            for event in the_chain.events
            if (event.app, event.kind) == (app, offered)
            and event.attributes["offer"] not in taken_ids
        ]
        assert still_open, f"every {app} offer of the demo traffic was taken"
        status, document = await ask(outsider.key, app, "offer", {"id": still_open[0]}, prove=False)
        assert status == 200, document


async def test_a_read_the_arguments_refuse_is_refused_before_the_query_runs() -> None:
    """When the arguments alone decide (another account's balances, history, holdings), the
    node refuses without running the query: the refusal's time and work cannot tell how much
    the account holds or did."""
    with trio.fail_after(120):
        the_chain = await trio.to_thread.run_sync(chain)
    alice = the_chain.consortium.party("alice")
    questions: list[tuple[str, str, dict[str, Value]]] = [
        ("payments", "balances", {"account": alice.public_key}),
        ("payments", "history", {"account": alice.public_key, "limit": 200}),
        ("assets", "balances", {"holder": alice.public_key}),
        ("scf", "by_holder", {"holder": alice.public_key}),
    ]
    for app, path, arguments in questions:
        for caller in (None, key_of("bob")):
            the_chain.asked.clear()
            status, document = await ask(caller, app, path, arguments, prove=False)
            assert status == 403, document
            assert the_chain.asked == [], (app, path, the_chain.asked)
        the_chain.asked.clear()
        status, document = await ask(alice.key, app, path, arguments, prove=False)
        assert status == 200, document
        assert the_chain.asked == [f"{app}.{path}"]
    # A proven dry run whose proof the caller may not read is refused before it runs too.
    bob = the_chain.consortium.party("bob")
    dry_run: dict[str, Value] = {
        "symbol": "SMMF",
        "from": alice.public_key,
        "to": bob.public_key,
        "amount": 1,
        "now_ms": EPOCH_MS,
    }
    the_chain.asked.clear()
    status, document = await ask(alice.key, "assets", "can_transfer", dry_run, prove=True)
    assert status == 403, document
    assert the_chain.asked == []


async def test_a_refusal_names_only_the_accounts_the_caller_gave() -> None:
    """A record looked up by its number (a payment, an order) is refused to a caller who is
    none of its parties, and the refusal does not say whose it is: naming its payer and payee
    would hand out the payment graph one number at a time."""
    with trio.fail_after(120):
        the_chain = await trio.to_thread.run_sync(chain)
    alice = the_chain.consortium.party("alice")
    history = the_chain.host.query("payments", "history", {"account": alice.public_key})
    assert isinstance(history, tuple)
    outsider = key_of("chen")
    refused = 0
    for record in history:
        assert isinstance(record, dict)
        parties = [record[side] for side in ("from", "to") if isinstance(record[side], bytes)]
        status, document = await ask(outsider, "payments", "payment", {"id": record["id"]}, False)
        if status == 200:
            continue  # chen's own payment, or one chen's bank's customer made
        refused += 1
        assert status == 403, document
        message = str(document["error"])
        for party in parties:
            assert party.hex()[:16] not in message, message
        assert "payments.payment" in message
    assert refused, "chen saw every payment of alice's history"
    # The accounts the caller named itself are named back: the refusal says what was asked.
    status, document = await ask(
        outsider, "payments", "balances", {"account": alice.public_key}, prove=False
    )
    assert status == 403
    assert alice.public_key.hex()[:16] in str(document["error"])
