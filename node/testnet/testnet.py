"""A local multi-process testnet: generate every home, run one process per node, watch, stop.

``create_testnet`` writes (files only)::

    DIR/
      genesis.json            one bank per validator, one client identity per bank
      testnet.json            what ``testnet up`` and tools need: nodes, API addresses, clients
      clients/client<i>.json  the client keys (role ``bank`` at bank<i>) of the validators' banks
      clients/governor-<bank>.json  each bank's governance key (role ``bank``), kept apart from
                              the load's keys so votes never race the load for nonces
      clients/<party>.json    with ``demo_seed``: the key of every demo party (lion-bank, alice..)
      node<i>/                a full node home (config.toml, genesis.json, keys, data/); the
                              last ``observers`` of them are observers (their validator keys
                              are in no set; every validator lists their node keys in
                              ``[p2p] observers``)

With ``demo_seed`` the genesis also holds the demo consortium of ``apps.demo`` (its banks,
enterprises, customers and regulator in membership, three currencies and their balances in
payments) and enables all four apps, so ``testnet up --load`` can drive ``DemoTraffic`` and a
visitor can act as any party with the CLI. The demo keys are derived from the seed: they are
for a local testnet only.

Where the nodes listen and how each dials the others is a ``Layout``: by default
(``local_layout``) free loopback ports chosen at generation time; ``node.testnet.hosts`` makes
one for nodes on separate machines, ``node.testnet.netns`` one for nodes in their own Linux
network namespaces. ``apply_layout`` rewrites the addresses of an existing testnet (a netns
testnet's API addresses change with every run).

``Testnet`` starts the processes (``python -m node start --home node<i>``, behind a per-node
command prefix such as ``ip netns exec NS``; stdout/stderr to ``node<i>/process.log``, the
structured log to ``node<i>/node.log``), stops them with SIGTERM (SIGKILL after a grace
period), and compares what the nodes committed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from apps.demo import Consortium, demo_consortium
from consensus.crypto import PrivateKey
from consensus.types import Block
from node.audit.storeview import StoreView
from node.client.client import ApiError, Client
from node.config import HostPort, NodeConfig, PeerAddress, parse_config
from node.genesis import ConsensusParams, Genesis, GenesisValidator, save_genesis
from node.home import CONFIG_FILE, GENESIS_FILE, NODE_KEY_FILE, init_home, write_config
from node.jsonvalue import JsonType, from_json, to_json
from node.keys import generate_private_key, load_key_file, save_key_file
from node.termination import termination_blocked

__all__ = [
    "DEMO_APPS",
    "LAYOUT_KINDS",
    "DemoParty",
    "Layout",
    "NodeAddresses",
    "NodeSummary",
    "Testnet",
    "TestnetInfo",
    "agreement_problems",
    "apply_layout",
    "create_testnet",
    "free_ports",
    "load_testnet",
    "local_layout",
    "save_testnet_nodes",
]

TESTNET_FILE: Final = "testnet.json"
# The apps a demo testnet runs (membership first: the host authorises senders through it).
DEMO_APPS: Final = ("membership", "payments", "scf", "assets")
# SIGTERM gives a node this long to close its store before SIGKILL.
STOP_GRACE_S: Final = 15.0
# Starting N interpreters and opening their stores on a busy 2-core machine can take a while.
STARTUP_TIMEOUT_S: Final = 120.0
# How much of the end of a node's log ``halt_event`` reads (a halt is its last few events).
_LOG_TAIL_BYTES: Final = 256 * 1024


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held together while choosing)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            listener = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            listener.bind(("127.0.0.1", 0))
            ports.append(listener.getsockname()[1])
        return ports


# local: every node on this machine's loopback; hosts: one node per machine (``testnet init
# --hosts``); netns: one Linux network namespace per node (``testnet up/chaos --netns``).
LAYOUT_KINDS: Final = ("local", "hosts", "netns")


@dataclass(frozen=True, slots=True)
class NodeAddresses:
    """Where one node listens: peers, the client API, metrics; and the address peers are told
    to dial (``None``: the listen address)."""

    p2p_listen: HostPort
    rpc_listen: HostPort
    metrics_listen: HostPort
    advertised: HostPort | None = None


@dataclass(frozen=True, slots=True)
class Layout:
    """Where every node of a testnet listens, and the address node ``i`` dials node ``j`` at
    (``dial[i][j]``; ``None`` on the diagonal). ``hosts``: the machine of each node (hosts
    layout only)."""

    kind: str
    nodes: tuple[NodeAddresses, ...]
    dial: tuple[tuple[HostPort | None, ...], ...]
    hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        count = len(self.nodes)
        assert self.kind in LAYOUT_KINDS, self.kind
        assert len(self.dial) == count, "one dial row per node"
        for i, row in enumerate(self.dial):
            assert len(row) == count, "one dial address per node"
            assert all((address is None) == (i == j) for j, address in enumerate(row))
        assert not self.hosts or len(self.hosts) == count

    def api_address(self, index: int) -> str:
        """Node ``index``'s API as ``host:port`` (for clients)."""
        return str(self.nodes[index].rpc_listen)


def local_layout(validators: int) -> Layout:
    """Every node on 127.0.0.1, on free ports chosen now."""
    ports = free_ports(3 * validators)
    nodes = tuple(
        NodeAddresses(
            HostPort("127.0.0.1", ports[3 * i]),
            HostPort("127.0.0.1", ports[3 * i + 1]),
            HostPort("127.0.0.1", ports[3 * i + 2]),
        )
        for i in range(validators)
    )
    dial = tuple(
        tuple(None if i == j else nodes[j].p2p_listen for j in range(validators))
        for i in range(validators)
    )
    return Layout("local", nodes, dial)


@dataclass(frozen=True, slots=True)
class DemoParty:
    """A demo party of a testnet: its name, key file and membership facts."""

    name: str
    key_file: Path
    public_key: bytes
    institution: str
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TestnetInfo:
    """The contents of ``testnet.json``."""

    __test__ = False  # not a pytest test class, despite the name

    directory: Path
    chain_id: str
    homes: tuple[Path, ...]
    api_addresses: tuple[str, ...]
    clients: tuple[Path, ...]
    institutions: tuple[str, ...]
    demo_seed: int | None = None
    parties: tuple[DemoParty, ...] = ()
    layout: str = "local"
    hosts: tuple[str, ...] = ()
    # Per home: "validator" (at genesis, or added by governance), "observer", or "retired" (a
    # validator governance removed; its process is stopped). Empty: every home a validator.
    roles: tuple[str, ...] = ()
    # Every bank's governance key file and institution (``node.testnet.reconfig``).
    governors: tuple[tuple[Path, str], ...] = ()

    def role(self, index: int) -> str:
        """The role of node ``index`` (see ``roles``)."""
        return self.roles[index] if index < len(self.roles) else "validator"

    def client_key(self, index: int) -> PrivateKey:
        """The load client key of bank ``index``."""
        return load_key_file(self.clients[index])

    def reader_key(self) -> PrivateKey:
        """A key every node's read rules let read everything: node0's node key (a validator's
        node key reads every app's data, on every node of the chain). The testnet tools sign
        their API requests with it."""
        return load_key_file(self.homes[0] / NODE_KEY_FILE)

    def consortium(self) -> Consortium | None:
        """The demo consortium in this testnet's genesis, or None."""
        if self.demo_seed is None:
            return None
        return demo_consortium(self.demo_seed, self.chain_id)

    def party(self, name: str) -> DemoParty:
        """The demo party called ``name``; raises ``KeyError``."""
        for party in self.parties:
            if party.name == name:
                return party
        raise KeyError(name)


def create_testnet(
    directory: Path,
    validators: int,
    *,
    chain_id: str = "suanpan-testnet",
    apps: tuple[str, ...] = ("membership",),
    app_state: dict[str, JsonType] | None = None,
    config: NodeConfig | None = None,
    demo_seed: int | None = None,
    layout: Layout | None = None,
    observers: int = 0,
    node_configs: Mapping[int, NodeConfig] | None = None,
) -> TestnetInfo:
    """Generate a ``validators``-node testnet in ``directory`` (which must not hold one).

    ``demo_seed``: also seed the demo consortium (``apps.demo.demo_consortium``) and run all
    four apps; its parties' key files go to ``clients/<party>.json``. ``layout``: where the
    nodes listen and dial each other (default ``local_layout``: free loopback ports).
    ``observers``: that many more nodes that follow the chain without voting (node<n>..).
    ``node_configs``: the nodes (by index) that run another configuration than ``config``."""
    if validators < 1:
        raise ValueError("a testnet needs at least one validator")
    if observers < 0:
        raise ValueError("observers must be 0 or more")
    nodes = validators + observers
    if layout is not None and len(layout.nodes) != nodes:
        raise ValueError(
            f"the address layout has {len(layout.nodes)} nodes, not {nodes}"
            f" ({validators} validators and {observers} observers)"
        )
    if (directory / TESTNET_FILE).exists():
        raise FileExistsError(f"{directory} already holds a testnet; choose another --dir")
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} is a file, not a directory; choose another --dir")
    if directory.is_dir() and any(directory.iterdir()):
        # Never write node homes and a genesis.json over files of something else (a real
        # node home given as --dir by mistake would lose its genesis).
        raise FileExistsError(
            f"{directory} is not empty and holds no testnet ({TESTNET_FILE}); "
            "choose a new or empty --dir"
        )
    others = dict(node_configs or {})
    if any(not 0 <= index < nodes for index in others):
        raise ValueError(f"node_configs names a node outside 0..{nodes - 1}")
    directory.mkdir(parents=True, exist_ok=True)
    base = config or NodeConfig()
    layout = layout or local_layout(nodes)
    homes: list[Path] = []
    entries: list[GenesisValidator] = []
    clients: list[Path] = []
    institutions: list[str] = []
    identities: list[JsonType] = []
    institution_entries: list[JsonType] = []
    for i in range(validators):
        home = directory / f"node{i}"
        validator_key, node_key = init_home(home, f"node{i}")
        homes.append(home)
        entries.append(GenesisValidator(f"bank{i}", validator_key, node_key))
        client = generate_private_key()
        client_path = directory / "clients" / f"client{i}.json"
        save_key_file(client_path, client)
        clients.append(client_path)
        institutions.append(f"bank{i}")
        institution_entries.append(
            {"id": f"bank{i}", "name": f"Bank {i}", "kind": "bank", "jurisdiction": "SG"}
        )
        identities.append(
            {"public_key": client.public_key.hex(), "institution": f"bank{i}", "roles": ["bank"]}
        )
    node_keys = [entry.node_key for entry in entries]
    for i in range(validators, nodes):
        home = directory / f"node{i}"
        _, node_key = init_home(home, f"node{i}")
        homes.append(home)
        node_keys.append(node_key)
    consortium = None if demo_seed is None else demo_consortium(demo_seed, chain_id)
    bank_ids = list(institutions)
    if consortium is not None:
        bank_ids += [party.institution for party in consortium.with_role("bank")]
    governors: list[tuple[Path, str]] = []
    for bank in dict.fromkeys(bank_ids):
        governor = generate_private_key()
        governor_path = directory / "clients" / f"governor-{bank}.json"
        save_key_file(governor_path, governor)
        governors.append((governor_path, bank))
        identities.append(
            {"public_key": governor.public_key.hex(), "institution": bank, "roles": ["bank"]}
        )
    parties: list[DemoParty] = []
    state: dict[str, JsonType] = {
        "membership": {"institutions": institution_entries, "identities": identities}
    }
    if consortium is not None:
        apps = tuple(dict.fromkeys((*DEMO_APPS, *apps)))
        state = _with_demo_genesis(state, consortium)
        for party in consortium.parties:
            key_file = directory / "clients" / f"{party.name}.json"
            save_key_file(key_file, party.key)
            parties.append(
                DemoParty(party.name, key_file, party.public_key, party.institution, party.roles)
            )
    state.update(app_state or {})
    genesis = Genesis(
        chain_id=chain_id,
        genesis_time_ms=int(datetime.now(UTC).timestamp() * 1000),
        consensus_params=ConsensusParams(),
        validators=tuple(entries),
        apps=apps,
        app_state={name: from_json(value) for name, value in state.items()},
    )
    save_genesis(directory / GENESIS_FILE, genesis)
    observer_keys = tuple(node_keys[validators:])
    for i, home in enumerate(homes):
        node_config = (
            others.get(i, base)
            .with_changes("", moniker=f"node{i}", log_file="node.log", log_format="json")
            .with_changes("p2p", observers=observer_keys if i < validators else ())
        )
        node_config = _with_addresses(node_config, layout, i, node_keys)
        # Every node dials the validators only: observers connect to validators, never to
        # each other (a validator lists them in [p2p] observers to let them in).
        peers = tuple(
            p for p in node_config.p2p.persistent_peers if p.node_key not in observer_keys
        )
        write_config(home, node_config.with_changes("p2p", persistent_peers=peers))
        save_genesis(home / GENESIS_FILE, genesis)
    addresses = tuple(layout.api_address(i) for i in range(nodes))
    roles = ("validator",) * validators + ("observer",) * observers
    info = TestnetInfo(
        directory,
        chain_id,
        tuple(homes),
        addresses,
        tuple(clients),
        tuple(institutions),
        demo_seed,
        tuple(parties),
        layout.kind,
        layout.hosts,
        roles,
        tuple(governors),
    )
    document: dict[str, JsonType] = {
        "chain_id": chain_id,
        "genesis_hash": genesis.hash.hex(),
        "layout": layout.kind,
        "nodes": _node_documents(info),
        "clients": [
            {"key": str(path.relative_to(directory)), "institution": institution}
            for path, institution in zip(clients, institutions, strict=True)
        ],
        "governors": [
            {"key": str(path.relative_to(directory)), "institution": institution}
            for path, institution in governors
        ],
    }
    if demo_seed is not None:
        document["demo"] = {
            "seed": demo_seed,
            "parties": [
                {
                    "name": party.name,
                    "key": str(party.key_file.relative_to(directory)),
                    "public_key": party.public_key.hex(),
                    "institution": party.institution,
                    "roles": list(party.roles),
                }
                for party in parties
            ],
        }
    (directory / TESTNET_FILE).write_text(json.dumps(document, indent=2) + "\n", "utf-8")
    return info


def _with_addresses(
    config: NodeConfig, layout: Layout, index: int, node_keys: Sequence[bytes]
) -> NodeConfig:
    """``config`` with node ``index``'s listen addresses and persistent peers from ``layout``."""
    addresses = layout.nodes[index]
    peers = tuple(
        PeerAddress(key, address)
        for key, address in zip(node_keys, layout.dial[index], strict=True)
        if address is not None
    )
    return (
        config.with_changes(
            "p2p",
            listen_address=addresses.p2p_listen,
            advertised_address=addresses.advertised,
            persistent_peers=peers,
        )
        .with_changes("rpc", listen_address=addresses.rpc_listen)
        .with_changes("metrics", listen_address=addresses.metrics_listen)
    )


def _node_documents(info: TestnetInfo) -> list[JsonType]:
    nodes: list[JsonType] = []
    for i, (home, address) in enumerate(zip(info.homes, info.api_addresses, strict=True)):
        entry: dict[str, JsonType] = {"home": home.name, "api": address, "role": info.role(i)}
        if info.hosts:
            entry["host"] = info.hosts[i]
        nodes.append(entry)
    return nodes


def save_testnet_nodes(info: TestnetInfo) -> None:
    """Rewrite ``testnet.json``'s node list from ``info`` (homes, API addresses, roles)."""
    path = info.directory / TESTNET_FILE
    document = json.loads(path.read_text("utf-8"))
    document["nodes"] = _node_documents(info)
    path.write_text(json.dumps(document, indent=2) + "\n", "utf-8")


def apply_layout(info: TestnetInfo, layout: Layout) -> TestnetInfo:
    """Rewrite every home's listen addresses and persistent peers, and ``testnet.json``'s API
    addresses, for ``layout`` (of the same kind); every other setting is kept."""
    if layout.kind != info.layout or len(layout.nodes) != len(info.homes):
        raise ValueError(
            f"{info.directory} is a {info.layout} testnet of {len(info.homes)} nodes;"
            f" cannot apply a {layout.kind} layout of {len(layout.nodes)}"
        )
    node_keys = [load_key_file(home / NODE_KEY_FILE).public_key for home in info.homes]
    for i, home in enumerate(info.homes):
        path = home / CONFIG_FILE
        config, problems = parse_config(path.read_bytes(), str(path))
        if config is None:
            raise ValueError("\n".join(str(problem) for problem in problems))
        moved_config = _with_addresses(config, layout, i, node_keys)
        validators_only = tuple(
            peer
            for peer in moved_config.p2p.persistent_peers
            if info.role(node_keys.index(peer.node_key)) == "validator"
        )
        write_config(home, moved_config.with_changes("p2p", persistent_peers=validators_only))
    moved = replace(
        info,
        api_addresses=tuple(layout.api_address(i) for i in range(len(info.homes))),
        hosts=layout.hosts,
    )
    path = info.directory / TESTNET_FILE
    document = json.loads(path.read_text("utf-8"))
    document["nodes"] = _node_documents(moved)
    path.write_text(json.dumps(document, indent=2) + "\n", "utf-8")
    return moved


def _with_demo_genesis(state: dict[str, JsonType], consortium: Consortium) -> dict[str, JsonType]:
    """``state`` plus the demo consortium's genesis (membership lists merged)."""
    merged = dict(state)
    for app, section in consortium.app_genesis.items():
        converted = to_json(section)
        if app == "membership" and isinstance(converted, dict):
            ours = merged["membership"]
            assert isinstance(ours, dict)
            merged["membership"] = {
                name: [*_list(ours.get(name)), *_list(converted.get(name))]
                for name in ("institutions", "identities")
            }
        else:
            merged[app] = converted
    return merged


def _list(value: JsonType) -> list[JsonType]:
    return value if isinstance(value, list) else []


def load_testnet(directory: Path) -> TestnetInfo:
    """Read ``testnet.json`` from ``directory`` (``ValueError`` when its layout is unknown)."""
    document = json.loads((directory / TESTNET_FILE).read_text("utf-8"))
    demo = document.get("demo") or {}
    layout = document.get("layout", "local")
    if layout not in LAYOUT_KINDS:
        raise ValueError(f"layout {layout!r} is not one of {LAYOUT_KINDS}")
    return TestnetInfo(
        directory,
        document["chain_id"],
        tuple(directory / node["home"] for node in document["nodes"]),
        tuple(node["api"] for node in document["nodes"]),
        tuple(directory / client["key"] for client in document["clients"]),
        tuple(client["institution"] for client in document["clients"]),
        demo.get("seed"),
        tuple(
            DemoParty(
                party["name"],
                directory / party["key"],
                bytes.fromhex(party["public_key"]),
                party["institution"],
                tuple(party["roles"]),
            )
            for party in demo.get("parties", ())
        ),
        layout,
        tuple(str(node["host"]) for node in document["nodes"] if "host" in node),
        tuple(str(node.get("role", "validator")) for node in document["nodes"]),
        tuple(
            (directory / governor["key"], str(governor["institution"]))
            for governor in document.get("governors", ())
        ),
    )


@dataclass(frozen=True, slots=True)
class NodeSummary:
    """What one node reported at the end of a run."""

    name: str
    alive: bool
    exit_code: int | None
    height: int
    block_hash: str
    app_hash: str
    transactions_committed: int
    error: str = ""
    # Stopped by itself at its ``[consensus] halt_height`` (its height and hashes read from its
    # store, ``transactions_committed`` from its log's ``halt_height_reached``).
    halted: bool = False

    def to_json(self) -> dict[str, JsonType]:
        """JSON form for ``--json``."""
        return {
            "node": self.name,
            "alive": self.alive,
            "halted": self.halted,
            "exit_code": self.exit_code,
            "height": self.height,
            "last_block_hash": self.block_hash,
            "app_hash": self.app_hash,
            "transactions_committed": self.transactions_committed,
            "error": self.error,
        }


class Testnet:
    """Runs the node processes of a generated testnet."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, info: TestnetInfo, command_prefixes: Sequence[Sequence[str]] = ()) -> None:
        """``command_prefixes[i]``: what node ``i``'s command runs behind (e.g. ``ip netns
        exec NS``); none by default."""
        assert not command_prefixes or len(command_prefixes) == len(info.homes)
        self.info = info
        self._prefixes = [tuple(prefix) for prefix in command_prefixes] or [()] * len(info.homes)
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * len(info.homes)
        self._stopped: set[int] = set()
        self._reader: PrivateKey | None = None

    def adopt(self, info: TestnetInfo) -> list[int]:
        """Take ``info`` (the same testnet with nodes added, ``node.testnet.reconfig``) as the
        testnet run; returns the new nodes' indices (not started)."""
        assert info.homes[: len(self.processes)] == self.info.homes[: len(self.processes)]
        added = list(range(len(self.processes), len(info.homes)))
        self.info = info
        self._prefixes += [()] * len(added)
        self.processes += [None] * len(added)
        return added

    def start(self, index: int) -> None:
        """Start node ``index`` (it must not be running)."""
        process = self.processes[index]
        assert process is None or process.poll() is not None, "node is already running"
        home = self.info.homes[index]
        output = (home / "process.log").open("ab")
        # SIGTERM blocked until the node holds it (node.termination): a stop sent while the
        # node is still starting ends it cleanly, however early it comes.
        with termination_blocked():
            self.processes[index] = subprocess.Popen(
                [
                    *self._prefixes[index],
                    sys.executable,
                    "-m",
                    "node",
                    "start",
                    "--home",
                    str(home),
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # Ctrl-C in the terminal reaches only the orchestrator
            )
        output.close()
        self._stopped.discard(index)

    def start_all(self) -> None:
        """Start every node."""
        for index in range(len(self.info.homes)):
            self.start(index)

    def stop(self, index: int, *, kill: bool = False, signalled: bool = False) -> int | None:
        """Stop node ``index`` (SIGTERM, SIGKILL after the grace period, or at once with
        ``kill``); returns its exit code. ``signalled``: SIGTERM was already sent."""
        process = self.processes[index]
        if process is None:
            return None
        self._stopped.add(index)
        if process.poll() is None:
            if kill or not signalled:
                process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def stop_all(self) -> list[int | None]:
        """Stop every node (SIGTERM to all first, so they stop in parallel)."""
        signalled = set()
        for index, process in enumerate(self.processes):
            if process is not None and process.poll() is None:
                self._stopped.add(index)
                process.send_signal(signal.SIGTERM)
                signalled.add(index)
        return [
            self.stop(index, signalled=index in signalled) for index in range(len(self.processes))
        ]

    def died(self, halted: Collection[int] | None = None) -> list[int]:
        """Nodes that exited without being asked to, but for a halt (``halted``, read from the
        logs unless the caller has just read it)."""
        if halted is None:
            halted = self.halted()
        return [index for index in self._exited_by_themselves() if index not in halted]

    def halted(self) -> list[int]:
        """Nodes that stopped by themselves at their ``[consensus] halt_height``: exit 0, and
        their log's last start followed by ``halt_height_reached``."""
        return list(self._halts())

    def _halts(self) -> dict[int, dict[str, JsonType]]:
        """``halted`` with each node's ``halt_height_reached`` event."""
        halts: dict[int, dict[str, JsonType]] = {}
        for index, code in self._exited_by_themselves().items():
            event = halt_event(self.info.homes[index] / "node.log") if code == 0 else None
            if event is not None:
                halts[index] = event
        return halts

    def _exited_by_themselves(self) -> dict[int, int]:
        """The nodes that exited without being asked to, with their exit codes."""
        codes: dict[int, int] = {}
        for index, process in enumerate(self.processes):
            code = None if process is None or index in self._stopped else process.poll()
            if code is not None:
                codes[index] = code
        return codes

    def client(self, index: int, timeout_s: float = 10.0) -> Client:
        """An API client of node ``index``, signing with the testnet's reader key."""
        if self._reader is None:
            self._reader = self.info.reader_key()
        return Client(self.info.api_addresses[index], timeout_s=timeout_s, key=self._reader)

    def serving(self, index: int, timeout_s: float = 5.0) -> bool:
        """True when node ``index``'s API answers ``/healthz``."""
        try:
            with self.client(index, timeout_s=timeout_s) as client:
                client.health()
        except ApiError:
            return False
        return True

    def wait_serving(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Wait until every node's API answers (raise naming a dead node or the timeout)."""
        nodes = range(len(self.info.api_addresses))
        self.wait_until(
            "every node's API", lambda: all(self.serving(i) for i in nodes), timeout_s, poll_s=0.3
        )

    def wait_until(
        self, condition: str, check: Callable[[], bool], timeout_s: float, *, poll_s: float = 0.2
    ) -> None:
        """Poll ``check`` until true; raise ``TimeoutError`` naming ``condition``."""
        deadline = time.monotonic() + timeout_s
        while not check():
            if self.died():
                raise RuntimeError(f"node(s) {self.died()} died while waiting for {condition}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {condition}")
            time.sleep(poll_s)

    def summaries(self, exit_codes: list[int | None] | None = None) -> list[NodeSummary]:
        """Per-node height, block hash, app hash and committed transactions, asked of each
        node's API (a node that does not answer gets height 0 and the error), with
        ``exit_codes`` as each node's exit code; a node that halted (``halted``) is read
        from its store."""
        halts = self._halts()
        return [
            self._summary(index, exit_codes, halts.get(index))
            for index in range(len(self.info.homes))
        ]

    def _summary(
        self, index: int, exit_codes: list[int | None] | None, halt: dict[str, JsonType] | None
    ) -> NodeSummary:
        name = self.info.homes[index].name
        process = self.processes[index]
        alive = process is not None and process.poll() is None
        code = exit_codes[index] if exit_codes is not None else None
        if halt is not None:
            # Its API is gone with it: what it committed is in its store, and its count (since
            # its start, as ``/status`` gives it) in its halt's event.
            height, block_hash, app_hash = stored_tip(self.info.homes[index])
            committed = _int(halt.get("transactions_committed"))
            return NodeSummary(
                name, False, code, height, block_hash, app_hash, committed, halted=True
            )
        try:
            with self.client(index, timeout_s=5.0) as client:
                status = client.status()
        except ApiError as error:
            return NodeSummary(name, alive, code, 0, "", "", 0, str(error))
        return NodeSummary(
            name,
            alive,
            code,
            _int(status.get("height")),
            str(status.get("last_block_hash", "")),
            str(status.get("app_hash", "")),
            _int(status.get("transactions_committed")),
        )


def halt_event(log: Path) -> dict[str, JsonType] | None:
    """The ``halt_height_reached`` event of the node whose JSON log is ``log``, if it halted at
    its ``[consensus] halt_height`` since it last started (no ``node_started`` after it)."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            tail = handle.read()
    except OSError:
        return None
    halt: dict[str, JsonType] | None = None
    for line in tail.splitlines():
        if b"node_started" not in line and b"halt_height_reached" not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("event") == "node_started":
            halt = None
        elif event.get("event") == "halt_height_reached":
            halt = event
    return halt


def stored_tip(home: Path) -> tuple[int, str, str]:
    """A stopped node's committed height, last block hash and app hash, read from its store
    (read-only)."""
    with StoreView(home / "data") as view:
        height = view.height or 0
        block_hash = view.meta(b"last_block_hash") or b""
        app_hash = view.meta(b"app_hash") or b""
    return height, block_hash.hex(), app_hash.hex()


def _int(value: JsonType) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def agreement_problems(nodes: Sequence[Client | Path]) -> list[str]:
    """Compare the nodes' chains at their common height: block hash and app hash must match.
    A node is its API client, or the home of a stopped node (a halted one), read from its
    store. Returns a description of every disagreement (empty when they agree)."""
    common = min((_chain_height(node) for node in nodes), default=0)
    if common < 1:
        return []
    problems = []
    reference: tuple[str, str] | None = None
    for i, node in enumerate(nodes):
        block_hash, app_hash = _chain_point(node, common)
        if reference is None:
            reference = (block_hash, app_hash)
            continue
        if block_hash != reference[0]:
            problems.append(f"node{i} has a different block at height {common}")
        if app_hash != reference[1]:
            problems.append(f"node{i} has a different app hash at height {common}")
    return problems


def _chain_height(node: Client | Path) -> int:
    if isinstance(node, Path):
        return stored_tip(node)[0]
    return _int(node.status().get("height"))


def _chain_point(node: Client | Path, height: int) -> tuple[str, str]:
    """The hash of ``node``'s block at ``height`` and the app hash its header names."""
    if isinstance(node, Path):
        with StoreView(node / "data") as view:
            raw = view.block_bytes(height)
        if raw is None:
            return "", ""
        block = Block.decode(raw)
        return block.hash.hex(), block.header.app_hash.hex()
    answer = node.block(height)
    header = answer.get("header")
    app_hash = header.get("app_hash") if isinstance(header, dict) else None
    return str(answer.get("hash")), str(app_hash)
