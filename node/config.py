"""``config.toml``: one node's local settings, and the checks that name every problem at once.

The file is shaped like CometBFT's (top-level moniker and logging, then ``[p2p]``, ``[rpc]``,
``[metrics]``, ``[consensus]``, ``[mempool]``, ``[block]``, ``[store]``, ``[statesync]`` sections;
``[testnet]`` exists only in homes generated for local test networks and is never rendered
with its defaults). The
schema is data (``SCHEMA``): every key has a type, a default, a range or format check, and a
one-line reason that is also written as the comment above the key in generated files.

``parse_config`` never stops at the first problem: it returns every ``ConfigProblem`` (file,
``[section] key``, what is wrong, how to fix it). Unknown sections and keys are errors, so a
typo never silently falls back to a default. Defaults bind to 127.0.0.1 only.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Final

from node.digits import decimal_value

__all__ = [
    "ACCESS_MODES",
    "BYZANTINE_MODES",
    "SCHEMA",
    "ConfigError",
    "ConfigProblem",
    "HostPort",
    "NodeConfig",
    "PeerAddress",
    "StateSyncConfig",
    "StoreConfig",
    "TestnetConfig",
    "config_warnings",
    "halt_height_warning",
    "is_loopback",
    "parse_config",
    "parse_host_port",
    "parse_peer",
    "render_config",
    "with_settings",
]

CONFIG_BYTES_MAX: Final = 1024 * 1024  # a config file is a few KiB; refuse anything absurd
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("json", "text")
# Byzantine behaviours a testnet node can be started with (see node.testnet.byzantine); "" = honest.
BYZANTINE_MODES: Final = ("", "double_vote", "equivocate")
# Client API access: "scoped" enforces the apps' read rules; "open" lets anyone read anything
# (a loopback development chain only).
ACCESS_MODES: Final = ("scoped", "open")
_MONIKER: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# ``section.key`` (or a top-level ``key``) of ``with_settings``.
_SETTING_NAME: Final = re.compile(r"(?:([a-z][a-z0-9_]*)\.)?([a-z][a-z0-9_]*)")


class ConfigError(ValueError):
    """A config file that cannot be used; carries every problem found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem: the file, the key (``[section] key``), what is wrong and how to fix it."""

    file: str
    key: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.problem}\n    fix: {self.fix}"


@dataclass(frozen=True, slots=True)
class HostPort:
    """A TCP address (``host`` without brackets, also for IPv6)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """A persistent peer: its node public key and address (``<node key hex>@host:port``)."""

    node_key: bytes
    address: HostPort

    def __str__(self) -> str:
        return f"{self.node_key.hex()}@{self.address}"


def parse_host_port(text: str) -> HostPort:
    """Parse ``host:port`` (``[IPv6]:port``; an unbracketed IPv6 host is read up to the last
    colon); raise ``ValueError`` naming the problem."""
    host, separator, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif "[" in host or "]" in host:
        raise ValueError(f"{text!r}: write an IPv6 host as [address]:port")
    if not separator or not host:
        raise ValueError(f"{text!r} is not host:port")
    port = decimal_value(port_text, 5)
    if port is None or not 1 <= port <= 65535:
        raise ValueError(f"{text[:80]!r}: port must be 1..65535")
    if any(character.isspace() for character in host):
        raise ValueError(f"{text!r}: host contains spaces")
    if not host.isprintable():
        raise ValueError(f"{text!r}: host contains control characters")
    try:
        # What getaddrinfo does with a name; an empty or over-long label fails there too.
        host.encode("idna")
    except UnicodeError:
        raise ValueError(f"{text!r}: {host!r} is not a valid host name") from None
    return HostPort(host, port)


def parse_peer(text: str) -> PeerAddress:
    """Parse ``<64 hex node key>@host:port``; raise ``ValueError`` naming the problem."""
    key_text, separator, address = text.partition("@")
    if not separator:
        raise ValueError(f"{text!r} is not <node key>@host:port")
    try:
        key = bytes.fromhex(key_text)
    except ValueError:
        raise ValueError(f"{text!r}: node key is not hex") from None
    if len(key) != 32:
        raise ValueError(f"{text!r}: node key must be 64 hex digits")
    return PeerAddress(key, parse_host_port(address))


@dataclass(frozen=True, slots=True)
class P2PConfig:
    """``[p2p]``: peer connections."""

    listen_address: HostPort = HostPort("127.0.0.1", 26656)
    advertised_address: HostPort | None = None
    persistent_peers: tuple[PeerAddress, ...] = ()
    observers: tuple[bytes, ...] = ()
    inbound_peers_max: int = 64
    # Block-sync answers one peer may receive per second: four full 16 MiB responses, far more
    # than a node can apply, while one peer can no longer make us read and send without end.
    block_serve_bytes_per_peer_per_s: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RPCConfig:
    """``[rpc]``: the client API."""

    listen_address: HostPort = HostPort("127.0.0.1", 26657)
    access: str = "scoped"
    readers: tuple[bytes, ...] = ()
    request_window_ms: int = 30_000
    replay_cache_entries_max: int = 200_000
    tls_certificate_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    body_bytes_max: int = 1024 * 1024
    request_timeout_ms: int = 10_000
    connections_max: int = 256
    connections_per_address_max: int = 64
    connections_per_key_max: int = 32
    requests_per_second_per_address: int = 1000
    requests_per_second_per_key: int = 500
    bytes_per_second_per_address: int = 64 * 1024 * 1024
    bytes_per_second_per_key: int = 64 * 1024 * 1024
    wait_timeout_ms_max: int = 60_000
    healthz_block_age_ms_max: int = 30_000


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: Prometheus exposition."""

    enabled: bool = True
    listen_address: HostPort | None = HostPort("127.0.0.1", 26660)
    # The event loop's CPU outside the phases, by task, in /status (``node.looptasks``): a
    # diagnostic with a cost per task step, off by default.
    loop_task_cpu: bool = False


@dataclass(frozen=True, slots=True)
class ConsensusConfig:
    """``[consensus]``: local timing of the consensus driver."""

    tick_ms: int = 50
    view_timeout_ms: int = 2000
    block_interval_ms: int = 200
    create_empty_blocks: bool = True
    empty_block_interval_ms: int = 1000
    # Apply a block this node did not validate itself (catching up) on the strength of its
    # commit certificate, without checking its transactions' signatures again.
    trust_certified_blocks: bool = False
    # While catching up, update the Merkle tree once per this many synced blocks (each one's
    # app hash taken from the certified block after it, the group's checked against the tree).
    sync_tree_blocks: int = 8
    # Commit blocks up to this height, then stop (0: never): validators given the same height
    # all stop after the same block, the agreed stop of an upgrade.
    halt_height: int = 0


@dataclass(frozen=True, slots=True)
class MempoolConfig:
    """``[mempool]``: pending transactions."""

    transactions_max: int = 20_000
    bytes_max: int = 64 * 1024 * 1024
    verify_workers: int = 2
    # Signature checks of at most this many transactions at once run on the event loop's
    # thread instead of a verifying thread: a hand-off to a thread costs about one check.
    verify_inline_max: int = 8
    # While the machine has had less than half a core to spare beside the event loop
    # (``node.machineidle``), checks of at most this many transactions at once run on the
    # loop's thread too: a verifying thread would add little parallelism, and the hand-off
    # costs CPU.
    verify_inline_busy_max: int = 2048
    # Client submissions are refused (429, retry later) while the pool holds this much of
    # recent commits, or admission_transactions_min if more (see node.admission).
    admission_budget_ms: int = 250
    admission_transactions_min: int = 250


@dataclass(frozen=True, slots=True)
class BlockConfig:
    """``[block]``: what this node puts in a block it proposes (at most genesis limits)."""

    proposal_transactions_max: int = 2000
    proposal_bytes_max: int = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """``[store]``: how this node writes its blocks."""

    # Write blocks and the Merkle tree's held records in a process of its own (the block
    # writer process), not on a thread of the node's.
    writer_process: bool = False
    # Write the blocks of a long block sync (32 synced blocks or more held to apply) in a block
    # writer process, which the node starts with itself (it waits 60 s at most) or for the
    # sync, and ends when the sync does.
    sync_writer_process: bool = True


@dataclass(frozen=True, slots=True)
class StateSyncConfig:
    """``[statesync]``: the snapshots this node takes and serves, and joining from one."""

    enabled: bool = False
    snapshot_interval: int = 1000
    snapshot_retention: int = 2
    peers_min: int = 2
    chunk_requests_max: int = 4
    serve_bytes_per_second: int = 32 * 1024 * 1024
    request_timeout_ms: int = 30_000


@dataclass(frozen=True, slots=True)
class TestnetConfig:
    """``[testnet]``: fault injection for local test networks only (``suanpan testnet chaos``).

    Operator homes never set it: ``fault_hooks`` opens admin endpoints that cut the node off
    its peers, and the byzantine keys make the validator sign conflicting votes on purpose.
    """

    __test__ = False  # not a pytest test class, despite the name

    fault_hooks: bool = False
    byzantine: str = ""
    byzantine_from_height: int = 0
    byzantine_to_height: int = 0


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """A parsed, validated ``config.toml``."""

    moniker: str = "node"
    log_level: str = "info"
    log_format: str = "json"
    log_file: str = ""
    p2p: P2PConfig = field(default_factory=P2PConfig)
    rpc: RPCConfig = field(default_factory=RPCConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    mempool: MempoolConfig = field(default_factory=MempoolConfig)
    block: BlockConfig = field(default_factory=BlockConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    statesync: StateSyncConfig = field(default_factory=StateSyncConfig)
    testnet: TestnetConfig = field(default_factory=TestnetConfig)

    def with_changes(self, section: str, **changes: object) -> NodeConfig:
        """A copy with keys of one section (``""`` for top level) replaced."""
        if not section:
            return replace(self, **changes)  # type: ignore[arg-type]
        current = getattr(self, section)
        return replace(self, **{section: replace(current, **changes)})


# --- schema ------------------------------------------------------------------------------------

# A converter turns the TOML value into the typed value or raises ValueError naming the problem.
Converter = Callable[[object], object]


@dataclass(frozen=True, slots=True)
class Key:
    """One config key: its converter, the fix hint, and the reason (written as a comment)."""

    name: str
    convert: Converter
    fix: str
    reason: str


def _int(low: int, high: int) -> Converter:
    def convert(value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not an integer")
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high}")
        return value

    return convert


def _bool(value: object) -> object:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false")
    return value


def _choice(options: tuple[str, ...]) -> Converter:
    def convert(value: object) -> object:
        if value not in options:
            raise ValueError(f"{value!r} is not one of {', '.join(options)}")
        return value

    return convert


def _string(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _moniker(value: object) -> object:
    if not isinstance(value, str) or not _MONIKER.fullmatch(value):
        raise ValueError(f"{value!r} is not a moniker")
    return value


def _address(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return parse_host_port(value)


def _optional_address(value: object) -> object:
    if value == "":
        return None
    return _address(value)


def _peers(value: object) -> object:
    if not isinstance(value, list):
        raise ValueError("must be a list of strings")
    peers = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not a string")
        peers.append(parse_peer(item))
    return tuple(peers)


def _keys(value: object) -> object:
    if not isinstance(value, list):
        raise ValueError("must be a list of hex strings")
    result = []
    for item in value:
        try:
            key = bytes.fromhex(item) if isinstance(item, str) else b""
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ValueError(f"{item!r} is not a 64-hex-digit node key")
        result.append(key)
    return tuple(result)


_ADDRESS_FIX: Final = 'use "host:port", e.g. "127.0.0.1:26656"'
SCHEMA: Final[dict[str, tuple[Key, ...]]] = {
    "": (
        Key("moniker", _moniker, "use 1..64 letters, digits, '.', '_' or '-'", "this node's name"),
        Key("log_level", _choice(LOG_LEVELS), f"one of {LOG_LEVELS}", "least severe level logged"),
        Key("log_format", _choice(LOG_FORMATS), f"one of {LOG_FORMATS}", "json lines or text"),
        Key("log_file", _string, 'a path, or "" for stderr', "relative paths are under the home"),
    ),
    "p2p": (
        Key("listen_address", _address, _ADDRESS_FIX, "where peers connect"),
        Key(
            "advertised_address",
            _optional_address,
            _ADDRESS_FIX + ' or ""',
            'address peers are told to dial; "" = listen_address',
        ),
        Key(
            "persistent_peers",
            _peers,
            'a list of "<node key hex>@host:port"',
            "peers this node always dials",
        ),
        Key("observers", _keys, "a list of 64-hex-digit node keys", "non-validators allowed in"),
        Key("inbound_peers_max", _int(1, 1024), "use 1..1024", "bounds accepted connections"),
        Key(
            "block_serve_bytes_per_peer_per_s",
            _int(16 * 1024 * 1024 + 1024, 2**36),
            "use 16778240..68719476736 (at least one full block-sync response)",
            "block-sync answer bytes one peer may get per second",
        ),
    ),
    "rpc": (
        Key(
            "listen_address",
            _address,
            _ADDRESS_FIX,
            "client API (off loopback: keep access scoped and configure TLS)",
        ),
        Key(
            "access",
            _choice(ACCESS_MODES),
            f"one of {ACCESS_MODES}",
            "scoped: the apps' read rules apply to signed requests; open: anyone reads anything"
            " (loopback development chains only)",
        ),
        Key(
            "readers",
            _keys,
            "a list of 64-hex-digit public keys",
            "keys that read everything here, like validators (monitoring, back office)",
        ),
        Key(
            "request_window_ms",
            _int(1000, 600_000),
            "use 1000..600000",
            "a signed request more than this far from our clock is refused (replay window)",
        ),
        Key(
            "replay_cache_entries_max",
            _int(1000, 10_000_000),
            "use 1000..10000000",
            "signed requests remembered inside the window to refuse replays",
        ),
        Key(
            "tls_certificate_file",
            _string,
            'a PEM file (relative to the home), or "" for plain HTTP',
            "serve the API over TLS with this certificate chain",
        ),
        Key(
            "tls_key_file",
            _string,
            'the PEM private key of tls_certificate_file, or ""',
            "private key of the TLS certificate",
        ),
        Key(
            "tls_client_ca_file",
            _string,
            'a PEM file of CA certificates, or "" (no client certificates)',
            "require client certificates signed by these CAs (mutual TLS)",
        ),
        Key("body_bytes_max", _int(1024, 64 * 1024 * 1024), "use 1024..67108864", "request cap"),
        Key("request_timeout_ms", _int(100, 600_000), "use 100..600000", "slow clients are cut"),
        Key("connections_max", _int(1, 100_000), "use 1..100000", "concurrent API connections"),
        Key(
            "connections_per_address_max",
            _int(1, 100_000),
            "use 1..100000 (at most connections_max)",
            "one address's share of connections_max (a slow client cannot take them all)",
        ),
        Key(
            "connections_per_key_max",
            _int(1, 100_000),
            "use 1..100000",
            "connections carrying requests signed by one key",
        ),
        Key(
            "requests_per_second_per_address",
            _int(0, 10_000_000),
            "use 0..10000000 (0 = no limit)",
            "requests one address may make per second (429 beyond)",
        ),
        Key(
            "requests_per_second_per_key",
            _int(0, 10_000_000),
            "use 0..10000000 (0 = no limit)",
            "signed requests one key may make per second (429 beyond)",
        ),
        Key(
            "bytes_per_second_per_address",
            _int(0, 2**40),
            "use 0..1099511627776 (0 = no limit)",
            "request bytes one address may send per second (paced)",
        ),
        Key(
            "bytes_per_second_per_key",
            _int(0, 2**40),
            "use 0..1099511627776 (0 = no limit)",
            "request bytes one key may send per second (429 beyond)",
        ),
        Key(
            "wait_timeout_ms_max",
            _int(0, 3_600_000),
            "use 0..3600000",
            "longest a client may wait for a commit or new block",
        ),
        Key(
            "healthz_block_age_ms_max",
            _int(1000, 86_400_000),
            "use 1000..86400000",
            "/healthz reports stale when no block committed for this long",
        ),
    ),
    "metrics": (
        Key("enabled", _bool, "true or false", "serve Prometheus metrics"),
        Key(
            "listen_address",
            _optional_address,
            _ADDRESS_FIX + ' or ""',
            '"" = only /metrics on the RPC address',
        ),
        Key(
            "loop_task_cpu",
            _bool,
            "true or false",
            "report the event loop's CPU by task in /status (a diagnostic: a few us per step)",
        ),
    ),
    "consensus": (
        Key("tick_ms", _int(1, 10_000), "use 1..10000", "one logical consensus tick"),
        Key(
            "view_timeout_ms",
            _int(10, 600_000),
            "use 10..600000",
            "no progress for this long starts a view change (grows per failed view)",
        ),
        Key(
            "block_interval_ms",
            _int(0, 600_000),
            "use 0..600000",
            "a primary proposes at most this often (it gathers transactions meanwhile)",
        ),
        Key("create_empty_blocks", _bool, "true or false", "propose blocks with no transactions"),
        Key(
            "empty_block_interval_ms",
            _int(0, 3_600_000),
            "use 0..3600000",
            "with no transactions, propose at most this often",
        ),
        Key(
            "trust_certified_blocks",
            _bool,
            "true or false",
            "apply blocks caught up on by their commit certificate, without checking their"
            " transactions' signatures again (faster catch-up; see docs/operators.md)",
        ),
        Key(
            "sync_tree_blocks",
            _int(1, 64),
            "use 1..64",
            "while catching up, update the state's Merkle tree once per this many blocks (1:"
            " every block; see docs/operators.md)",
        ),
        Key(
            "halt_height",
            _int(0, 2**63 - 1),
            "use 0 (never) or a block height",
            "commit blocks up to this height, then stop (0: never); validators given the same"
            " height stop after the same block (see docs/operators.md, Upgrades)",
        ),
    ),
    "mempool": (
        Key("transactions_max", _int(1, 10_000_000), "use 1..10000000", "pending tx count cap"),
        Key("bytes_max", _int(1024, 2**34), "use 1024..17179869184", "pending tx bytes cap"),
        Key("verify_workers", _int(1, 64), "use 1..64", "threads checking tx signatures"),
        Key(
            "verify_inline_max",
            _int(0, 100_000),
            "use 0..100000",
            "check the signatures of at most this many txs at once on the event loop's thread,"
            " not a verifying thread",
        ),
        Key(
            "verify_inline_busy_max",
            _int(0, 100_000),
            "use 0..100000",
            "while the machine has no core to spare, check at most this many txs at once on"
            " the event loop's thread",
        ),
        Key(
            "admission_budget_ms",
            _int(1, 600_000),
            "use 1..600000",
            "refuse client txs while the pool holds this many ms of recent commits",
        ),
        Key(
            "admission_transactions_min",
            _int(1, 10_000_000),
            "use 1..10000000",
            "the admission limit never falls below this many pending txs",
        ),
    ),
    "block": (
        Key(
            "proposal_transactions_max",
            _int(1, 100_000),
            "use 1..100000 (at most genesis block_transactions_max)",
            "transactions in a block this node proposes",
        ),
        Key(
            "proposal_bytes_max",
            _int(1024, 16 * 1024 * 1024),
            "use 1024..16777216 (at most genesis block_bytes_max)",
            "bytes of a block this node proposes",
        ),
    ),
    "store": (
        Key(
            "writer_process",
            _bool,
            "true or false",
            "write blocks in a process of its own, beside the node's (see docs/operators.md)",
        ),
        Key(
            "sync_writer_process",
            _bool,
            "true or false",
            "write a long block sync's blocks in a process of its own, started with the node "
            "or for the sync (see docs/operators.md)",
        ),
    ),
    "statesync": (
        Key(
            "enabled",
            _bool,
            "true or false",
            "a node with no blocks yet joins from the peers' latest snapshot, not by replay",
        ),
        Key(
            "snapshot_interval",
            _int(0, 2**40),
            "use 0 (never) or a number of heights",
            "take a state snapshot every this many heights, to serve to joining nodes",
        ),
        Key("snapshot_retention", _int(1, 1000), "use 1..1000", "snapshots kept on disk"),
        Key(
            "peers_min",
            _int(1, 1024),
            "use 1..1024",
            "peers to wait for before choosing a snapshot to sync from",
        ),
        Key(
            "chunk_requests_max",
            _int(1, 256),
            "use 1..256",
            "snapshot chunks requested at once while syncing",
        ),
        Key(
            "serve_bytes_per_second",
            _int(64 * 1024, 2**40),
            "use at least 65536",
            "snapshot bytes served to one peer per second (a faster peer is paced)",
        ),
        Key(
            "request_timeout_ms",
            _int(100, 600_000),
            "use 100..600000",
            "a snapshot request unanswered this long is asked of another peer",
        ),
    ),
    "testnet": (
        Key(
            "fault_hooks",
            _bool,
            "true or false (only ever true in local testnets)",
            "serve /admin/faults (cut and restore peer links): local testnets only",
        ),
        Key(
            "byzantine",
            _choice(BYZANTINE_MODES),
            f"one of {BYZANTINE_MODES} (needs fault_hooks = true)",
            "misbehave on purpose: sign conflicting votes or proposals (testnets only)",
        ),
        Key(
            "byzantine_from_height",
            _int(0, 2**63 - 1),
            "a height >= 0",
            "first height at which the byzantine behaviour is active",
        ),
        Key(
            "byzantine_to_height",
            _int(0, 2**63 - 1),
            "a height >= byzantine_from_height",
            "last height at which the byzantine behaviour is active",
        ),
    ),
}
_SECTION_CLASSES: Final = {
    "p2p": P2PConfig,
    "rpc": RPCConfig,
    "metrics": MetricsConfig,
    "consensus": ConsensusConfig,
    "mempool": MempoolConfig,
    "block": BlockConfig,
    "store": StoreConfig,
    "statesync": StateSyncConfig,
    "testnet": TestnetConfig,
}


def _key_label(section: str, key: str) -> str:
    return f"[{section}] {key}" if section else key


def parse_config(
    raw: bytes, file: str = "config.toml"
) -> tuple[NodeConfig | None, list[ConfigProblem]]:
    """Parse config bytes; return the config (None when any problem) and every problem."""
    problems: list[ConfigProblem] = []
    if len(raw) > CONFIG_BYTES_MAX:
        problems.append(ConfigProblem(file, "(file)", "too large", "regenerate with suanpan init"))
        return None, problems
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except RecursionError:
        problems.append(
            ConfigProblem(file, "(file)", "not valid TOML: nested too deeply", "fix the syntax")
        )
        return None, problems
    except ValueError as error:
        # UnicodeDecodeError, TOMLDecodeError, and an integer too long for int() (4300 digits).
        problems.append(ConfigProblem(file, "(file)", f"not valid TOML: {error}", "fix the syntax"))
        return None, problems

    values: dict[str, dict[str, object]] = {section: {} for section in SCHEMA}
    for name, item in document.items():
        if name in SCHEMA and name:
            if not isinstance(item, dict):
                problems.append(
                    ConfigProblem(file, f"[{name}]", "must be a table", f"write it as [{name}]")
                )
                continue
            for key, value in item.items():
                values[name][key] = value
        elif isinstance(item, dict):
            problems.append(
                ConfigProblem(
                    file,
                    f"[{name}]",
                    "unknown section",
                    f"remove it; sections are {', '.join(s for s in SCHEMA if s)}",
                )
            )
        else:
            values[""][name] = item

    converted: dict[str, dict[str, object]] = {section: {} for section in SCHEMA}
    for section in SCHEMA:
        for name, value in values[section].items():
            typed, problem = _convert_key(file, section, name, value)
            if problem is None:
                converted[section][name] = typed
            else:
                problems.append(problem)
    if problems:
        return None, problems
    sections = {name: cls(**converted[name]) for name, cls in _SECTION_CLASSES.items()}
    config = NodeConfig(**converted[""], **sections)  # type: ignore[arg-type]
    problems.extend(_cross_checks(config, file))
    return (None if problems else config), problems


def with_settings(config: NodeConfig, settings: Sequence[str], source: str = "--set") -> NodeConfig:
    """``config`` with keys replaced by ``settings``, each written ``section.key=value`` (or
    ``key=value`` at the top level) with the value as in ``config.toml`` (a bare word counts
    as a string). Each key and value is checked as the file's would be, then the result's keys
    against each other (so settings that only make sense together may come in any order).
    Raises ``ConfigError`` naming every problem and its fix."""
    problems: list[ConfigProblem] = []
    for setting in settings:
        changed, problem = _with_setting(config, setting, source)
        if problem is not None:
            problems.append(problem)
        config = changed
    if not problems:
        problems = _cross_checks(config, source)
    if problems:
        raise ConfigError(problems)
    return config


def _with_setting(
    config: NodeConfig, setting: str, source: str
) -> tuple[NodeConfig, ConfigProblem | None]:
    """``config`` with one setting applied, or unchanged with the problem."""
    name, equals, text = setting.partition("=")
    matched = _SETTING_NAME.fullmatch(name.strip())
    if not equals or matched is None:
        return config, ConfigProblem(
            source, repr(setting), "not section.key=value", "e.g. mempool.verify_workers=1"
        )
    section, name = matched.group(1) or "", matched.group(2)
    if section not in SCHEMA:
        fix = f"remove it; sections are {', '.join(s for s in SCHEMA if s)}"
        label = _key_label(section, name)
        return config, ConfigProblem(source, label, "unknown section", fix)
    text = text.strip()
    try:
        document = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        document = {}
    # A bare word, or anything that is not exactly one TOML value, is the text itself.
    raw: object = document["value"] if len(document) == 1 else text
    value, problem = _convert_key(source, section, name, raw)
    if problem is not None:
        return config, problem
    return config.with_changes(section, **{name: value}), None


def _convert_key(
    file: str, section: str, name: str, value: object
) -> tuple[object, ConfigProblem | None]:
    """Key ``name`` of ``section`` (a known section) converted from ``value``, or the problem
    (an unknown key, or a value the key's converter refuses)."""
    key = next((key for key in SCHEMA[section] if key.name == name), None)
    if key is None:
        known = ", ".join(key.name for key in SCHEMA[section])
        fix = f"remove it; known keys here: {known}"
        return None, ConfigProblem(file, _key_label(section, name), "unknown key", fix)
    try:
        return key.convert(value), None
    except ValueError as error:
        return None, ConfigProblem(file, _key_label(section, name), str(error), key.fix)


def _cross_checks(config: NodeConfig, file: str) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    bound: dict[tuple[str, int], str] = {}
    addresses = [
        ("[p2p] listen_address", config.p2p.listen_address),
        ("[rpc] listen_address", config.rpc.listen_address),
    ]
    if config.metrics.enabled and config.metrics.listen_address is not None:
        addresses.append(("[metrics] listen_address", config.metrics.listen_address))
    for label, address in addresses:
        previous = bound.get((address.host, address.port))
        if previous is not None:
            problems.append(
                ConfigProblem(file, label, f"same address as {previous}", "give each its own port")
            )
        bound[(address.host, address.port)] = label
    if (
        config.consensus.empty_block_interval_ms
        and config.consensus.empty_block_interval_ms < config.consensus.block_interval_ms
    ):
        problems.append(
            ConfigProblem(
                file,
                "[consensus] empty_block_interval_ms",
                "shorter than block_interval_ms",
                "make it at least block_interval_ms",
            )
        )
    rpc = config.rpc
    if rpc.connections_per_address_max > rpc.connections_max:
        problems.append(
            ConfigProblem(
                file,
                "[rpc] connections_per_address_max",
                f"above connections_max {rpc.connections_max}: one address could take them all",
                "make it at most connections_max (a quarter of it leaves room for others)",
            )
        )
    if bool(rpc.tls_certificate_file) != bool(rpc.tls_key_file):
        problems.append(
            ConfigProblem(
                file,
                "[rpc] tls_certificate_file"
                if not rpc.tls_certificate_file
                else "[rpc] tls_key_file",
                "TLS needs both a certificate and its key",
                "set both tls_certificate_file and tls_key_file, or neither",
            )
        )
    if rpc.tls_client_ca_file and not rpc.tls_certificate_file:
        problems.append(
            ConfigProblem(
                file,
                "[rpc] tls_client_ca_file",
                "client certificates need TLS",
                "set tls_certificate_file and tls_key_file too, or remove tls_client_ca_file",
            )
        )
    testnet = config.testnet
    if testnet.byzantine and not testnet.fault_hooks:
        problems.append(
            ConfigProblem(
                file,
                "[testnet] byzantine",
                "set without fault_hooks = true",
                "byzantine behaviour is for local testnets only; remove it",
            )
        )
    if testnet.byzantine and testnet.byzantine_to_height < testnet.byzantine_from_height:
        problems.append(
            ConfigProblem(
                file,
                "[testnet] byzantine_to_height",
                "below byzantine_from_height",
                "make it at least byzantine_from_height",
            )
        )
    return problems


def is_loopback(host: str) -> bool:
    """True for a host that only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def config_warnings(config: NodeConfig) -> list[str]:
    """Settings that are valid but dangerous, one sentence each (``config check`` prints them,
    the node logs them loudly at start)."""
    warnings: list[str] = []
    rpc = config.rpc
    if not is_loopback(rpc.listen_address.host):
        if rpc.access == "open":
            warnings.append(
                f'[rpc] access = "open" on {rpc.listen_address}, which is not a loopback'
                " address: anyone who reaches it reads every account's data; set access ="
                ' "scoped" or listen on 127.0.0.1'
            )
        if not rpc.tls_certificate_file:
            warnings.append(
                f"[rpc] listen_address {rpc.listen_address} is not loopback and TLS is off:"
                " requests and answers cross the network in clear text; set"
                " tls_certificate_file and tls_key_file"
            )
    return warnings


def halt_height_warning(config: NodeConfig) -> str | None:
    """What ``[consensus] halt_height`` does, while it is set (``config check`` prints it, the
    node logs it at start and lists it in ``/status``): a key left over from an upgrade would
    stop the node."""
    halt_height = config.consensus.halt_height
    if not halt_height:
        return None
    return (
        f"[consensus] halt_height = {halt_height}: the node stops after committing block"
        f" {halt_height} and will not start past it; remove the key once the upgrade it was set"
        " for is done"
    )


def _toml_value(value: object) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, HostPort | PeerAddress | str):
        text = str(value)
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bytes):
        return f'"{value.hex()}"'
    if isinstance(value, tuple):
        if not value:
            return "[]"
        return "[\n" + "".join(f"  {_toml_value(item)},\n" for item in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__}")


def render_config(config: NodeConfig) -> str:
    """The ``config.toml`` text for ``config``, every key preceded by its reason."""
    lines = ["# Suanpan node configuration. `suanpan config check --home DIR` validates it.", ""]
    for section, keys in SCHEMA.items():
        holder: object = getattr(config, section) if section else config
        if section == "testnet" and holder == TestnetConfig():
            continue  # operator homes never carry the fault-injection section
        if section:
            lines.append(f"[{section}]")
        for key in keys:
            lines.append(f"# {key.reason}")
            lines.append(f"{key.name} = {_toml_value(getattr(holder, key.name))}")
        lines.append("")
    return "\n".join(lines)


def _assert_schema_matches_dataclasses() -> None:
    for section, keys in SCHEMA.items():
        cls = _SECTION_CLASSES[section] if section else NodeConfig
        names = {f.name for f in fields(cls)} - set(_SECTION_CLASSES)
        assert names == {key.name for key in keys}, f"schema and dataclass differ for [{section}]"


_assert_schema_matches_dataclasses()
