"""Validator-set changes on a running local testnet: new homes, governance votes, key files.

Theory of operation
-------------------
The chain decides who validates (``apps.validators``): a change is a membership proposal that
more than two thirds of the active banks approve, in force two heights after the block that
executes it, one change at a time. These tools do on a local testnet what a consortium's
operators do by hand (docs/operators.md, "Changing the validator set"):

* ``add_node`` writes the home of a new node (fresh keys, the testnet's genesis, free loopback
  ports, every running node as a persistent peer) and lists it in ``testnet.json`` as an
  observer; it may connect once the chain lists its node key;
* ``Governance`` proposes with one bank's governance key (``clients/governor-<bank>.json``,
  kept apart from the load's keys so votes never race the load for nonces) and votes with the
  others, one at a time, until the proposal executes; ``decide`` returns the height it
  executed at and the height the change is in force from. A vote refused because another
  change is still pending is repeated two blocks later;
* ``add_validator`` admits a bank for the new node (with a client and a governance key) and
  adds the node's validator; ``remove_validator`` removes one; ``rotate_validator_key``
  decides a key the node already holds as its standby key (``prepare_rotation`` writes it to
  ``validator_key.next.json``; the node loads it when it starts) and ``finish_rotation`` makes
  it the node's only key; ``prepare_node_key_rotation`` / ``rotate_node_key`` /
  ``finish_node_key_rotation`` do the same for the node (p2p) key, whose new file the node
  must be restarted with once the chain lists it.

Which processes run is the caller's business: ``suanpan testnet up`` starts the nodes
``testnet.json`` lists and stops those marked retired; ``suanpan testnet chaos`` manages its
own. Every wait polls the nodes' APIs under a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from consensus.codec import Value
from consensus.crypto import PrivateKey
from consensus.types import RECONFIGURATION_DELAY_HEIGHTS
from node.client.client import ApiError, Client
from node.config import HostPort, PeerAddress, parse_config
from node.genesis import load_genesis, save_genesis
from node.home import (
    CONFIG_FILE,
    GENESIS_FILE,
    NODE_KEY_FILE,
    VALIDATOR_KEY_FILE,
    init_home,
    promote_next_key,
    write_config,
    write_next_key,
)
from node.jsonvalue import JsonType
from node.keys import generate_private_key, load_key_file, save_key_file
from node.testnet.testnet import (
    TESTNET_FILE,
    TestnetInfo,
    free_ports,
    save_testnet_nodes,
)

__all__ = [
    "Decision",
    "Governance",
    "GovernanceError",
    "add_node",
    "add_validator",
    "finish_node_key_rotation",
    "finish_rotation",
    "mark_role",
    "prepare_node_key_rotation",
    "prepare_rotation",
    "remove_validator",
    "rotate_node_key",
    "rotate_validator_key",
    "validator_name",
    "wait_for_height",
]

# A proposal and its votes each take a block or two; a busy 2-core machine under load is slow.
DECISION_TIMEOUT_S: Final = 120.0
# How long one transaction may take to commit.
TRANSACTION_TIMEOUT_MS: Final = 60_000
# Polling interval of the waits (a node's status is cheap).
_POLL_S: Final = 0.2
_CLIENT_TIMEOUT_S: Final = 30.0


class GovernanceError(Exception):
    """A proposal could not be decided: the message names the refusal."""


@dataclass(frozen=True, slots=True)
class Decision:
    """A decided change: the proposal id, the block that executed it, and the height the
    new validator set certifies from."""

    proposal: str
    executed_height: int
    effective_height: int

    def to_json(self) -> dict[str, JsonType]:
        """JSON form (reports)."""
        return {
            "proposal": self.proposal,
            "executed_height": self.executed_height,
            "effective_height": self.effective_height,
        }


@dataclass(frozen=True, slots=True)
class _Governor:
    key: PrivateKey
    institution: str


def _serving_client(info: TestnetInfo, key: PrivateKey) -> Client:
    """A client of the first validator node that answers (signing requests with ``key``)."""
    for index, address in enumerate(info.api_addresses):
        if info.role(index) != "validator":
            continue
        client = Client(address, timeout_s=_CLIENT_TIMEOUT_S, key=key)
        try:
            client.status()
        except ApiError:
            client.close()
            continue
        return client
    raise GovernanceError(f"no validator of {info.directory} answers; is the testnet running?")


def _int(value: JsonType, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GovernanceError(f"{what} missing from the node's answer ({value!r})")
    return value


class Governance:
    """Decides membership proposals on a running testnet with the banks' governance keys."""

    def __init__(self, info: TestnetInfo, *, say: Callable[[str], None] = lambda _: None) -> None:
        if not info.governors:
            raise GovernanceError(
                f"{info.directory / TESTNET_FILE} lists no governance keys (a testnet written"
                " before governance keys existed); generate a new testnet"
            )
        self.info = info
        self.say = say
        self._governors = [
            _Governor(load_key_file(path), institution) for path, institution in info.governors
        ]

    def decide(self, arguments: Mapping[str, Value]) -> Decision:
        """Propose ``arguments`` (a ``membership.propose``) and vote it through."""
        proposer, *voters = self._governors
        action = str(arguments.get("action"))
        deadline = time.monotonic() + DECISION_TIMEOUT_S
        with _serving_client(self.info, proposer.key) as client:
            address = f"{client.host}:{client.port}"
            document = client.send(
                "membership",
                "propose",
                arguments,
                proposer.key,
                wait=True,
                timeout_ms=TRANSACTION_TIMEOUT_MS,
            )
        result = self._result(document, f"propose {action}")
        proposal = str(result.get("proposal"))
        self.say(f"proposal {proposal[:12]} ({action}) opened")
        pending = list(voters)
        while result.get("status") != "executed":
            if not pending:
                raise GovernanceError(f"proposal {proposal[:12]}: every bank voted, not executed")
            if time.monotonic() > deadline:
                raise GovernanceError(f"proposal {proposal[:12]} not executed in time")
            voter = pending[0]
            # Each bank reads its own nonce: requests are signed with the voter's key.
            with Client(address, timeout_s=_CLIENT_TIMEOUT_S, key=voter.key) as client:
                document = client.send(
                    "membership",
                    "vote",
                    {"proposal": proposal},
                    voter.key,
                    wait=True,
                    timeout_ms=TRANSACTION_TIMEOUT_MS,
                )
                receipt = document.get("receipt")
                code = receipt.get("code") if isinstance(receipt, dict) else None
                if code == "validator_change_pending":
                    # Another change is scheduled but not in force: vote again once it is.
                    height = _int(document.get("height"), "height")
                    wait_for_height(client, height + RECONFIGURATION_DELAY_HEIGHTS)
                    continue
            result = self._result(document, f"vote by {voter.institution}")
            pending.pop(0)
        executed = _int(document.get("height"), "height")
        decision = Decision(proposal, executed, executed + RECONFIGURATION_DELAY_HEIGHTS)
        self.say(
            f"proposal {proposal[:12]} executed at height {executed}; in force from"
            f" {decision.effective_height}"
        )
        return decision

    @staticmethod
    def _result(document: Mapping[str, JsonType], what: str) -> Mapping[str, JsonType]:
        if document.get("status") != "committed":
            raise GovernanceError(f"{what}: not committed ({document.get('status')})")
        receipt = document.get("receipt")
        if not isinstance(receipt, dict) or receipt.get("status") != "ok":
            code = str(receipt.get("code")) if isinstance(receipt, dict) else "?"
            message = str(receipt.get("message")) if isinstance(receipt, dict) else ""
            raise GovernanceError(f"{what} refused: {code}: {message}")
        result = receipt.get("result")
        if not isinstance(result, dict):
            raise GovernanceError(f"{what}: no result in the receipt")
        return result

    def add_governor(self, path: Path, institution: str) -> None:
        """Vote with one more bank's governance key from now on."""
        self._governors.append(_Governor(load_key_file(path), institution))


def wait_for_height(client: Client, height: int, *, timeout_s: float = DECISION_TIMEOUT_S) -> None:
    """Until the node of ``client`` has committed ``height`` (``TimeoutError`` naming it); a
    node that does not answer yet (starting) is asked again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            current = client.status().get("height")
        except ApiError:
            current = None  # starting, or restarting: ask again
        if isinstance(current, int) and current >= height:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"height {height} not committed within {timeout_s:.0f}s")
        time.sleep(_POLL_S)  # polling a condition under a deadline


def mark_role(info: TestnetInfo, index: int, role: str) -> TestnetInfo:
    """``info`` with node ``index``'s role changed, saved to ``testnet.json``."""
    roles = [info.role(i) for i in range(len(info.homes))]
    roles[index] = role
    changed = replace(info, roles=tuple(roles))
    save_testnet_nodes(changed)
    return changed


def add_node(info: TestnetInfo) -> tuple[TestnetInfo, int]:
    """Write the home of a new node (an observer until the chain adds its keys) and list it in
    ``testnet.json``; returns the updated info and the node's index."""
    if info.layout != "local":
        raise ValueError(
            f"{info.directory} is a {info.layout} testnet: new nodes can only be added to a"
            " local one (all nodes on this machine's loopback)"
        )
    index = len(info.homes)
    home = info.directory / f"node{index}"
    template_path = info.homes[0] / CONFIG_FILE
    template, problems = parse_config(template_path.read_bytes(), str(template_path))
    if template is None:
        raise ValueError("\n".join(str(problem) for problem in problems))
    peers = []
    for other, other_home in enumerate(info.homes):
        if info.role(other) == "retired":
            continue
        path = other_home / CONFIG_FILE
        config, problems = parse_config(path.read_bytes(), str(path))
        if config is None:
            raise ValueError("\n".join(str(problem) for problem in problems))
        node_key = load_key_file(other_home / NODE_KEY_FILE).public_key
        peers.append(PeerAddress(node_key, config.p2p.listen_address))
    p2p, rpc, metrics = free_ports(3)
    config = (
        template.with_changes("", moniker=f"node{index}")
        .with_changes(
            "p2p",
            listen_address=HostPort("127.0.0.1", p2p),
            advertised_address=None,
            persistent_peers=tuple(peers),
            observers=(),
        )
        .with_changes("rpc", listen_address=HostPort("127.0.0.1", rpc))
        .with_changes("metrics", listen_address=HostPort("127.0.0.1", metrics))
        .with_changes("testnet", byzantine="")
    )
    init_home(home, f"node{index}", config=config)
    save_genesis(home / GENESIS_FILE, load_genesis(info.directory / GENESIS_FILE))
    grown = replace(
        info,
        homes=(*info.homes, home),
        api_addresses=(*info.api_addresses, f"127.0.0.1:{rpc}"),
        roles=(*(info.role(i) for i in range(len(info.homes))), "observer"),
    )
    save_testnet_nodes(grown)
    return grown, index


def validator_name(client: Client, public_key: bytes) -> str | None:
    """The name of the validator whose consensus key is ``public_key`` in the latest set."""
    answer = client.query_app("membership", "validators")
    records = answer.get("validators") if isinstance(answer, dict) else None
    for record in records if isinstance(records, list | tuple) else ():
        if isinstance(record, dict) and record.get("public_key") == public_key:
            return str(record.get("name"))
    return None


def _save_governor(info: TestnetInfo, path: Path, institution: str) -> TestnetInfo:
    document_path = info.directory / TESTNET_FILE
    document = json.loads(document_path.read_text("utf-8"))
    governors = list(document.get("governors", ()))
    governors.append({"key": str(path.relative_to(info.directory)), "institution": institution})
    document["governors"] = governors
    document_path.write_text(json.dumps(document, indent=2) + "\n", "utf-8")
    return replace(info, governors=(*info.governors, (path, institution)))


def add_validator(
    info: TestnetInfo, index: int, governance: Governance
) -> tuple[TestnetInfo, Decision]:
    """Admit bank ``bank<index>`` (a client and a governance key) and add node ``index``'s
    validator, run by it. Returns the updated info and the decision that added it."""
    home = info.homes[index]
    bank = f"bank{index}"
    client_key = generate_private_key()
    save_key_file(info.directory / "clients" / f"client{index}.json", client_key)
    governor_key = generate_private_key()
    governor_path = info.directory / "clients" / f"governor-{bank}.json"
    save_key_file(governor_path, governor_key)
    governance.decide(
        {
            "action": "admit_institution",
            "institution": {
                "id": bank,
                "name": f"Bank {index}",
                "kind": "bank",
                "jurisdiction": "SG",
            },
            "identities": (
                {"public_key": client_key.public_key, "roles": ("bank",)},
                {"public_key": governor_key.public_key, "roles": ("bank",)},
            ),
        }
    )
    info = _save_governor(info, governor_path, bank)
    governance.add_governor(governor_path, bank)
    decision = governance.decide(
        {
            "action": "add_validator",
            "validator_name": bank,
            "validator_key": load_key_file(home / VALIDATOR_KEY_FILE).public_key,
            "node_key": load_key_file(home / NODE_KEY_FILE).public_key,
            "institution_id": bank,
        }
    )
    return mark_role(info, index, "validator"), decision


def remove_validator(info: TestnetInfo, index: int, governance: Governance) -> Decision:
    """Remove node ``index``'s validator from the set (its process is the caller's)."""
    public_key = load_key_file(info.homes[index] / VALIDATOR_KEY_FILE).public_key
    with _serving_client(info, governance._governors[0].key) as client:
        name = validator_name(client, public_key)
    if name is None:
        raise GovernanceError(f"node{index}'s validator key is in no current validator set")
    return governance.decide({"action": "remove_validator", "validator_name": name})


def prepare_rotation(info: TestnetInfo, index: int) -> PrivateKey:
    """Write node ``index``'s next consensus key (``validator_key.next.json``). The node signs
    with it from the height a rotation puts it in force (it loads the file at its next block,
    or when it starts)."""
    return write_next_key(info.homes[index])


def rotate_validator_key(
    info: TestnetInfo, index: int, governance: Governance, key: PrivateKey
) -> Decision:
    """Decide that node ``index``'s validator signs with ``key`` from now on."""
    name = _current_validator_name(info, index, governance)
    return governance.decide(
        {"action": "rotate_validator_key", "validator_name": name, "validator_key": key.public_key}
    )


def _current_validator_name(info: TestnetInfo, index: int, governance: Governance) -> str:
    """The on-chain name of node ``index``'s validator, found by its current key."""
    current = load_key_file(info.homes[index] / VALIDATOR_KEY_FILE).public_key
    with _serving_client(info, governance._governors[0].key) as client:
        name = validator_name(client, current)
    if name is None:
        raise GovernanceError(f"node{index}'s validator key is in no current validator set")
    return name


def finish_rotation(info: TestnetInfo, index: int) -> None:
    """Make the rotated key node ``index``'s only key (the retired key is overwritten: it must
    never sign again). Takes effect at the node's next start."""
    promote_next_key(info.homes[index])


def prepare_node_key_rotation(info: TestnetInfo, index: int) -> PrivateKey:
    """Write node ``index``'s next node (p2p) key beside its current one."""
    return write_next_key(info.homes[index], node_key=True)


def rotate_node_key(
    info: TestnetInfo, index: int, governance: Governance, key: PrivateKey
) -> Decision:
    """Decide that node ``index``'s validator is reached at node key ``key`` from now on."""
    name = _current_validator_name(info, index, governance)
    return governance.decide(
        {"action": "rotate_validator_key", "validator_name": name, "node_key": key.public_key}
    )


def finish_node_key_rotation(info: TestnetInfo, index: int) -> None:
    """Make the next node key node ``index``'s key and point the other nodes' persistent
    peers at it. The node must be stopped first and started afterwards; the others pick the
    new peer entry up at their next start (until then the node dials them)."""
    home = info.homes[index]
    old = load_key_file(home / NODE_KEY_FILE).public_key
    new_key = promote_next_key(home, node_key=True)
    for other in info.homes:
        path = other / CONFIG_FILE
        config, _ = parse_config(path.read_bytes(), str(path))
        if config is None:
            continue
        peers = tuple(
            PeerAddress(new_key.public_key, peer.address) if peer.node_key == old else peer
            for peer in config.p2p.persistent_peers
        )
        if peers != config.p2p.persistent_peers:
            write_config(other, config.with_changes("p2p", persistent_peers=peers))
