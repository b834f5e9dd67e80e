"""An observer node: a full node without a vote follows a running testnet and serves its API.

Four validators and one observer (``create_testnet(observers=1)``, ``testnet up --observers``)
run as real processes on loopback. The observer's validator key is in no set: it commits every
block from the validators' messages and block sync, answers queries (a regulator's or an
auditor's window on the chain), accepts a transaction and gossips it to the validators, and
never signs. ``config check`` and ``start`` agree that its home is valid.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli import main
from node.client.client import Client
from node.testnet.testnet import Testnet, agreement_problems, create_testnet

OBSERVER = 4
DEADLINE_S = 180.0


@pytest.fixture
def testnet(tmp_path: Path) -> Iterator[Testnet]:
    info = create_testnet(tmp_path / "net", 4, chain_id="observer-test", observers=1)
    net = Testnet(info)
    try:
        net.start_all()
        net.wait_serving()
        yield net
    finally:
        net.stop_all()


def test_config_check_calls_an_observer_home_valid(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 1, chain_id="observer-check", observers=1)
    assert info.role(1) == "observer"
    result = CliRunner().invoke(main, ["config", "check", "--home", str(info.homes[1])])
    assert result.exit_code == 0, result.output
    assert "observer" in result.output


def test_an_observer_follows_the_chain_answers_queries_and_never_votes(testnet: Testnet) -> None:
    info = testnet.info
    observer = testnet.client(OBSERVER, timeout_s=30.0)
    validator = testnet.client(0, timeout_s=30.0)
    # A bank submits through the observer's API: the observer gossips it to the validators.
    bank = info.client_key(0)
    document = observer.send(
        "membership",
        "register_identity",
        {
            "institution": info.institutions[0],
            "public_key": bytes(range(32)),
            "roles": ("customer",),
        },
        bank,
        wait=True,
        timeout_ms=int(DEADLINE_S * 1000),
    )
    assert document["status"] == "committed", document
    height = document["height"]
    assert isinstance(height, int)
    testnet.wait_until(
        "the observer reaches the validators' height",
        lambda: _height(observer) >= max(height, _height(validator)) > 0,
        DEADLINE_S,
    )
    status = observer.status()
    assert status["role"] == "observer"
    assert status["validator_index"] is None
    assert len(status["validators"]) == 4  # type: ignore[arg-type]
    # It answers queries from its own copy of the chain.
    identity = observer.query_app("membership", "identity", public_key=bytes(range(32)))
    assert isinstance(identity, dict)
    assert identity["institution"] == info.institutions[0]
    validators = observer.query_app("membership", "validators")
    assert isinstance(validators, dict)
    assert len(validators["validators"]) == 4
    # It holds the same chain, and no certificate carries a fifth signer.
    clients = [testnet.client(i, timeout_s=30.0) for i in range(5)]
    assert agreement_problems(clients) == []
    for block_height in range(1, _height(observer) + 1):
        certificate = observer.block(block_height)["certificate"]
        assert isinstance(certificate, dict)
        signers = [pair[0] for pair in certificate["signatures"]]  # type: ignore[index,union-attr]
        assert all(isinstance(s, int) and s < 4 for s in signers)
    for client in (*clients, observer, validator):
        client.close()


def _height(client: Client) -> int:
    value = client.status().get("height")
    return value if isinstance(value, int) else 0
