"""The three business apps end to end on a 4-process testnet, driven through the ``suanpan``
command line as the demo consortium's parties, then a short burst of demo load.

Walk-through: payments (issue, transfer, a duplicate end-to-end id refused, FX offer and
accept), supply-chain finance (order, issue, accept, split-transfer, financing, repayment,
lineage), digital assets (create, mint, transfer, DvP, ``can_transfer`` dry runs). Every answer
is then asked of every node and must be identical. Each party always talks to the same node,
as the load generator routes it. Waits poll with generous deadlines; nothing sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from apps.demo import demo_consortium
from consensus.codec import Value
from node.cli import main
from node.client.client import ApiError, Client
from node.jsonvalue import from_json
from node.testnet.loadgen import DemoLoadGenerator
from node.testnet.testnet import Testnet, TestnetInfo, agreement_problems, create_testnet

# Deadlines for a 2-core machine shared with other test runs; typical times are far shorter.
STARTUP_S = 120.0
PROGRESS_S = 120.0
DEMO_SEED = 11


@pytest.fixture
def testnet(tmp_path: Path) -> Iterator[Testnet]:
    info = create_testnet(tmp_path / "net", 4, chain_id="e2e-net", demo_seed=DEMO_SEED)
    network = Testnet(info)
    network.start_all()
    try:
        yield network
    finally:
        codes = network.stop_all()
        for home in info.homes:
            log = home / "process.log"
            if log.exists() and any(code not in (0, None) for code in codes):
                print(home.name, log.read_text()[-3000:])


def healthy(client: Client) -> bool:
    try:
        client.health()
    except ApiError:
        return False
    return True


def height(client: Client) -> int:
    try:
        value = client.status()["height"]
    except ApiError:
        return -1
    assert isinstance(value, int)
    return value


def options(arguments: dict[str, str]) -> list[str]:
    """``{"end_to_end_id": "E2E-1"}`` -> ``["--end-to-end-id", "E2E-1"]``."""
    flat: list[str] = []
    for name, value in arguments.items():
        flat += ["--" + name.replace("_", "-"), value]
    return flat


class Walkthrough:
    """Runs ``suanpan`` commands as the testnet's parties (each party on its own node)."""

    def __init__(self, info: TestnetInfo) -> None:
        self.info = info
        self.runner = CliRunner()
        self.names = [party.name for party in info.parties]
        self.top_height = 0

    def key(self, party: str) -> str:
        return str(self.info.party(party).key_file)

    def node_of(self, party: str) -> str:
        return self.info.api_addresses[self.names.index(party) % len(self.info.api_addresses)]

    def run(self, *arguments: str, expect_exit: int = 0) -> str:
        result = self.runner.invoke(main, list(arguments))
        assert result.exit_code == expect_exit, (arguments, result.output, result.exception)
        return result.stdout

    def send(
        self, party: str, app: str, operation: str, expect_exit: int, **arguments: str
    ) -> dict:  # type: ignore[type-arg]
        output = self.run(
            "tx",
            app,
            operation,
            *options(arguments),
            *options({"key": self.key(party), "node": self.node_of(party), "timeout_ms": "90000"}),
            "--json",
            expect_exit=expect_exit,
        )
        document = json.loads(output)
        assert isinstance(document, dict)
        return document

    def tx(self, party: str, app: str, operation: str, **arguments: str) -> dict[str, Value]:
        """Send as ``party``, wait for the commit, return the receipt's result."""
        document = self.send(party, app, operation, 0, **arguments)
        assert document["status"] == "committed", document
        assert document["receipt"]["status"] == "ok", document["receipt"]
        self.top_height = max(self.top_height, document["height"])
        result = from_json(document["receipt"]["result"])
        return record(result) if result is not None else {}

    def rejected(self, party: str, app: str, operation: str, **arguments: str) -> str:
        """Send as ``party``; it must be rejected; return the rule's code."""
        document = self.send(party, app, operation, 1, **arguments)
        receipt = document.get("receipt") or document
        return str(receipt["code"])

    def query(self, app: str, path: str, **arguments: str) -> Value:
        """Ask node 0."""
        return self.query_on(0, app, path, **arguments)

    def query_on(self, node: int, app: str, path: str, **arguments: str) -> Value:
        output = self.run(
            "query",
            app,
            path,
            *options(arguments),
            "--node",
            self.info.api_addresses[node],
            # Every node is asked the same question as a node (validators read everything).
            "--key",
            str(self.info.homes[0] / "node_key.json"),
            "--json",
        )
        return from_json(json.loads(output)["result"])

    def everywhere(self, app: str, path: str, **arguments: str) -> Value:
        """The answer of every node; they must be identical."""
        answers = [self.query_on(i, app, path, **arguments) for i in range(4)]
        for answer in answers[1:]:
            assert answer == answers[0], (app, path, arguments)
        return answers[0]


def record(value: Value) -> dict[str, Value]:
    assert isinstance(value, dict), value
    return {str(name): item for name, item in value.items()}


def records(value: Value) -> list[dict[str, Value]]:
    assert isinstance(value, tuple), value
    return [record(item) for item in value]


def test_every_app_through_the_cli_on_four_processes(testnet: Testnet) -> None:
    info = testnet.info
    clients = [testnet.client(i, timeout_s=60) for i in range(4)]
    testnet.wait_until("all APIs up", lambda: all(healthy(c) for c in clients), STARTUP_S)
    w = Walkthrough(info)
    pk = {party.name: party.public_key for party in info.parties}

    # A bad value is refused before anything is sent, naming the option.
    bad = w.runner.invoke(
        main,
        [
            *("tx", "payments", "transfer", "--key", w.key("alice"), "--node", w.node_of("alice")),
            *options(
                {"to": w.key("bob"), "currency": "SGD", "amount": "12.50", "end_to_end_id": "X"}
            ),
        ],
    )
    assert bad.exit_code == 2
    assert "--amount" in bad.output
    assert "not a whole number" in bad.output

    # ---- payments: issue, transfer (its duplicate refused), FX offer and accept
    w.tx(
        "lion-bank", "payments", "issue", currency="SGD", to=w.key("harbour-bank"), amount="500000"
    )
    transfer = {"to": w.key("bob"), "currency": "SGD", "end_to_end_id": "E2E-1"}
    w.tx(
        "alice",
        "payments",
        "transfer",
        amount="1250",
        purpose="gift",
        originator="name=Alice,country=SG",
        beneficiary="name=Bob,country=HK",
        **transfer,
    )
    code = w.rejected("alice", "payments", "transfer", amount="1", **transfer)
    assert code == "duplicate_end_to_end_id"
    offer = w.tx(
        "harbour-bank",
        "payments",
        "offer_fx",
        sell_currency="HKD",
        sell_amount="58000",
        buy_currency="SGD",
        buy_amount="10000",
        expires_ms="+1d",
    )["offer"]
    assert isinstance(offer, str)
    assert w.tx("lion-bank", "payments", "accept-fx", offer=offer)["offer"] == offer

    # ---- scf: order, issue, accept, split-transfer, finance, repay
    w.tx(
        "dragon-motors",
        "scf",
        "register_order",
        order_id="PO-E2E-1",
        supplier=w.key("kowloon-parts"),
        description="brake assemblies",
    )
    receivable = w.tx(
        "dragon-motors",
        "scf",
        "issue",
        supplier=w.key("kowloon-parts"),
        amount="10000000",
        currency="CNY",
        due_ms="+90d",
        invoice_hash="sha256:INV-E2E-1",
        order_id="PO-E2E-1",
    )["id"]
    assert isinstance(receivable, str)
    w.tx("kowloon-parts", "scf", "accept", receivable=receivable)
    children = w.tx(
        "kowloon-parts",
        "scf",
        "transfer",
        receivable=receivable,
        to=w.key("merlion-metals"),
        amount="4000000",
    )["children"]
    assert isinstance(children, tuple)
    tier2, kept = (str(child) for child in children)
    price = w.tx(
        "merlion-metals",
        "scf",
        "offer_financing",
        receivable=tier2,
        bank=w.key("lion-bank"),
        rate_bps="450",
        expires_ms="+1d",
    )["price"]
    assert isinstance(price, int)
    assert 0 < price < 4_000_000
    w.tx("lion-bank", "scf", "accept_financing", receivable=tier2)
    repaid = w.tx("dragon-motors", "scf", "repay", receivable=receivable)["repaid"]
    assert len(records(repaid)) == 2

    # ---- assets: create, mint, transfer, DvP
    w.tx(
        "lion-bank",
        "assets",
        "create_asset",
        symbol="BOND-E2E",
        name="E2E bond",
        decimals="0",
        supply_cap="1000000",
        eligible_roles="bank,enterprise",
        eligible_jurisdictions="SG,HK,CN",
        holder_cap="600000",
    )
    w.tx(
        "lion-bank", "assets", "mint", symbol="BOND-E2E", to=w.key("harbour-bank"), amount="500000"
    )
    w.tx(
        "harbour-bank",
        "assets",
        "transfer",
        symbol="BOND-E2E",
        to=w.key("straits-funds"),
        amount="100000",
    )
    dvp = w.tx(
        "straits-funds",
        "assets",
        "offer_dvp",
        symbol="BOND-E2E",
        side="sell",
        amount="50000",
        currency="SGD",
        price="5050000",
        expires_ms="+1d",
    )["offer"]
    assert isinstance(dvp, str)
    w.tx("harbour-bank", "assets", "accept_dvp", offer=dvp)

    # ---- every node has committed all of it, and answers every question identically
    top = w.top_height
    testnet.wait_until(
        f"every node at height {top}", lambda: all(height(c) >= top for c in clients), PROGRESS_S
    )
    alice = record(w.everywhere("payments", "balances", account=w.key("alice")))
    assert alice["SGD"] == 10_000_00 - 1250
    bob = record(w.everywhere("payments", "balances", account=w.key("bob")))
    assert bob == {"HKD": 10_000_00, "SGD": 1250}
    payment = record(
        w.everywhere("payments", "payment", sender=w.key("alice"), end_to_end_id="E2E-1")
    )
    assert payment["amount"] == 1250
    assert payment["originator"] == {"name": "Alice", "country": "SG"}
    assert record(w.everywhere("payments", "offer", id=offer))["status"] == "settled"
    history = records(w.everywhere("payments", "history", account=w.key("harbour-bank")))
    assert {entry["kind"] for entry in history} >= {"issue", "fx_escrow", "fx_settle"}

    lineage = record(w.everywhere("scf", "lineage", id=tier2))
    assert lineage["root"] == receivable
    assert [ancestor["id"] for ancestor in records(lineage["ancestors"])] == [receivable]
    tree = record(lineage["tree"])
    assert tree["status"] == "split"
    leaves = {str(child["id"]): child for child in records(tree["children"])}
    assert set(leaves) == {tier2, kept}
    assert leaves[tier2]["status"] == "repaid"
    assert leaves[kept]["status"] == "repaid"
    assert leaves[tier2]["financed_by"] == pk["lion-bank"]
    assert leaves[tier2]["amount"] == 4_000_000
    assert leaves[kept]["amount"] == 6_000_000
    order = record(w.everywhere("scf", "order", order_id="PO-E2E-1"))
    assert order["supplier"] == pk["kowloon-parts"]

    holders = records(w.everywhere("assets", "holders", symbol="BOND-E2E"))
    assert {str(entry["holder"]): entry["balance"] for entry in holders} == {
        pk["harbour-bank"].hex(): 450_000,
        pk["straits-funds"].hex(): 50_000,
    }
    assert record(w.everywhere("assets", "offer", id=dvp))["status"] == "settled"
    # The dry run: a customer is not eligible (the CLI reads her roles from membership) ...
    dry_run = {"symbol": "BOND-E2E", "from": w.key("harbour-bank"), "amount": "10"}
    verdict = record(w.everywhere("assets", "can_transfer", to=w.key("alice"), **dry_run))
    assert verdict["code"] == "receiver_role"
    assert verdict["identity_rules_evaluated"] is True
    # ... a bank is, and more than the balance is not.
    assert record(w.query("assets", "can_transfer", to=w.key("pearl-bank"), **dry_run))["allowed"]
    dry_run["amount"] = "450001"
    too_much = record(w.query("assets", "can_transfer", to=w.key("pearl-bank"), **dry_run))
    assert too_much["code"] == "insufficient_balance"

    # The readable form names the parties when --node is the testnet directory.
    directory = str(info.directory)
    readable = w.run(
        *("query", "payments", "balances", "--account", w.key("bob"), "--node", directory),
        *("--key", w.key("bob")),
    )
    assert "SGD" in readable
    assert "1250" in readable
    readable_lineage = w.run(
        *("query", "scf", "lineage", "--id", tier2, "--node", directory),
        *("--key", w.key("lion-bank")),
    )
    assert "lion-bank" in readable_lineage
    # An id the app does not know reads as such, not as a bare "-".
    not_found = w.run("query", "scf", "receivable", "--id", "rc-unknown", "--node", directory)
    assert "(nothing found)" in not_found
    # The generic JSON form still works, with --node before the app as before.
    generic = json.loads(
        w.run(
            *("query", "--node", info.api_addresses[0], "membership", "institutions"),
            *("--args", '{"kind": "bank"}', "--json"),
        )
    )
    assert len(generic["result"]) == 4 + 3  # the validators' banks and the demo's banks
    # An app without a table (a bank's own plugin) is asked generically; this node has none.
    unknown = w.runner.invoke(
        main, ["query", "no-such-app", "anything", "--node", info.api_addresses[0]]
    )
    assert unknown.exit_code == 1
    assert "no-such-app" in unknown.output

    # ---- a short burst of demo load continues the parties' nonces across all four nodes
    consortium = demo_consortium(DEMO_SEED, info.chain_id)
    load = DemoLoadGenerator(
        consortium,
        info.api_addresses,
        40.0,
        nonces=DemoLoadGenerator.fetch_nonces(clients[0], consortium),
        traffic_seed=DEMO_SEED + 1,
        reader=info.reader_key(),
    )
    load.start()
    try:
        testnet.wait_until(
            "120 demo transactions admitted and 5 receipts checked",
            lambda: load.statistics.accepted >= 120 and load.statistics.receipts_checked >= 5,
            PROGRESS_S,
        )
    finally:
        load.stop()
    statistics = load.statistics.to_json()
    assert statistics["refused"] == {}, statistics
    assert statistics["receipts_ok"], statistics
    assert set(load.statistics.accepted_by_app) >= {"payments", "assets"}
    assert agreement_problems(clients) == []
    for client in clients:
        client.close()
