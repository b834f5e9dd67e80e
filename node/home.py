"""A node's home directory, shaped like CometBFT's::

    HOME/
      config.toml          local settings (node.config)
      genesis.json         the chain's genesis, identical on every node (node.genesis)
      node_key.json        p2p identity (ed25519, mode 0600)
      validator_key.json   consensus signing key (ed25519, mode 0600)
      validator_key.next.json   optional: the key a rotation decided on chain switches to
                           (a running node picks it up at its next block)
      node_key.next.json   optional: the node key a rotation switches to (at a restart, once
                           promoted with ``promote_next_key``)
      data/                LMDB store and the node's state
      snapshots/           state snapshots taken every [statesync] snapshot_interval heights

A node whose validator key is in no validator set is an observer: it follows the chain and
serves the API without voting (and votes from the height governance adds its key).

``init_home`` creates one; ``check_home`` validates all of it and returns every problem
(file, key, problem, fix); ``load_home`` returns a ready ``Home`` or raises ``HomeError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from consensus.crypto import PrivateKey
from node.config import ConfigProblem, NodeConfig, parse_config, render_config
from node.genesis import Genesis, GenesisError, load_genesis
from node.keys import KeyFileError, generate_private_key, load_key_file, save_key_file
from node.tls import TlsError, server_context

__all__ = [
    "CONFIG_FILE",
    "DATA_DIR",
    "GENESIS_FILE",
    "NEXT_NODE_KEY_FILE",
    "NEXT_VALIDATOR_KEY_FILE",
    "NODE_KEY_FILE",
    "SNAPSHOTS_DIR",
    "VALIDATOR_KEY_FILE",
    "Home",
    "HomeError",
    "check_home",
    "init_home",
    "load_home",
    "promote_next_key",
    "write_next_key",
]

CONFIG_FILE: Final = "config.toml"
GENESIS_FILE: Final = "genesis.json"
NODE_KEY_FILE: Final = "node_key.json"
VALIDATOR_KEY_FILE: Final = "validator_key.json"
NEXT_VALIDATOR_KEY_FILE: Final = "validator_key.next.json"
NEXT_NODE_KEY_FILE: Final = "node_key.next.json"
DATA_DIR: Final = "data"
SNAPSHOTS_DIR: Final = "snapshots"


class HomeError(ValueError):
    """A home directory that cannot start a node; carries every problem found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Home:
    """Everything a node loads from its home directory."""

    path: Path
    config: NodeConfig
    genesis: Genesis
    node_key: PrivateKey
    validator_key: PrivateKey
    # The key a validator-key rotation decided on chain switches to (signs from its height).
    next_validator_key: PrivateKey | None = None

    @property
    def data_dir(self) -> Path:
        """Where the store lives."""
        return self.path / DATA_DIR

    @property
    def snapshots_dir(self) -> Path:
        """Where the state snapshots this node takes and serves live (``node.snapshots``)."""
        return self.path / SNAPSHOTS_DIR

    @property
    def validator_index(self) -> int | None:
        """This node's index in the genesis validator set, or None when it starts as an
        observer (governance may add its key later; the chain, not genesis, decides)."""
        return self.genesis.validator_set.index_of(self.validator_key.public_key)

    def log_path(self) -> Path | None:
        """The log file, or None for stderr."""
        if not self.config.log_file:
            return None
        path = Path(self.config.log_file)
        return path if path.is_absolute() else self.path / path


def init_home(home: Path, moniker: str, *, config: NodeConfig | None = None) -> tuple[bytes, bytes]:
    """Create a home with fresh keys and a default config; return (validator key, node key)
    public keys. Refuses to overwrite existing keys or config, and writes nothing when the
    config it would write (e.g. its moniker) is invalid."""
    config_path = home / CONFIG_FILE
    chosen = config if config is not None else NodeConfig(moniker=moniker)
    rendered = render_config(chosen.with_changes("", moniker=moniker))
    _, problems = parse_config(rendered.encode("utf-8"), str(config_path))
    if problems:
        raise HomeError(problems)
    home.mkdir(parents=True, exist_ok=True)
    if config_path.exists():
        raise HomeError(
            [ConfigProblem(str(config_path), "(file)", "already exists", "choose another --home")]
        )
    validator_key = generate_private_key()
    node_key = generate_private_key()
    try:
        save_key_file(home / VALIDATOR_KEY_FILE, validator_key)
        save_key_file(home / NODE_KEY_FILE, node_key)
    except KeyFileError as error:
        raise HomeError(
            [ConfigProblem(str(home), "(keys)", str(error), "choose an empty --home")]
        ) from None
    (home / DATA_DIR).mkdir(exist_ok=True, mode=0o700)
    config_path.write_text(rendered, "utf-8")
    return validator_key.public_key, node_key.public_key


def write_next_key(home: Path, *, node_key: bool = False) -> PrivateKey:
    """Start a key rotation: write a fresh next validator key (``validator_key.next.json``)
    or, with ``node_key``, next node key (``node_key.next.json``) into ``home`` and return it.
    Refuses (``KeyFileError``) while a next key is already there."""
    key = generate_private_key()
    save_key_file(home / (NEXT_NODE_KEY_FILE if node_key else NEXT_VALIDATOR_KEY_FILE), key)
    return key


def promote_next_key(home: Path, *, node_key: bool = False) -> PrivateKey:
    """Finish a key rotation: the next key replaces the current one (the retired key is
    overwritten: it must never sign or connect again) and the next-key file is removed. A
    node uses a promoted node key from its next start. Raises ``KeyFileError``."""
    current = home / (NODE_KEY_FILE if node_key else VALIDATOR_KEY_FILE)
    upcoming = home / (NEXT_NODE_KEY_FILE if node_key else NEXT_VALIDATOR_KEY_FILE)
    key = load_key_file(upcoming)
    save_key_file(current, key, overwrite=True)
    upcoming.unlink()
    return key


def write_config(home: Path, config: NodeConfig) -> None:
    """Replace ``config.toml`` in ``home``."""
    (home / CONFIG_FILE).write_text(render_config(config), "utf-8")


def check_home(home: Path) -> tuple[Home | None, list[ConfigProblem]]:
    """Validate every file of ``home``; return the loaded home (None on problems) and all
    problems found."""
    problems: list[ConfigProblem] = []
    config: NodeConfig | None = None
    genesis: Genesis | None = None
    config_path = home / CONFIG_FILE
    genesis_path = home / GENESIS_FILE
    if not home.is_dir():
        return None, [
            ConfigProblem(str(home), "(home)", "not a directory", "run `suanpan init --home DIR`")
        ]
    try:
        raw = config_path.read_bytes()
    except OSError as error:
        problems.append(
            ConfigProblem(
                str(config_path), "(file)", f"cannot read: {error.strerror}", "run `suanpan init`"
            )
        )
    else:
        config, config_problems = parse_config(raw, str(config_path))
        problems.extend(config_problems)
    try:
        genesis = load_genesis(genesis_path)
    except GenesisError as error:
        problems.extend(
            ConfigProblem(str(genesis_path), item.key, item.problem, item.fix)
            for item in error.problems
        )
    keys: dict[str, PrivateKey] = {}
    for name in (NODE_KEY_FILE, VALIDATOR_KEY_FILE):
        try:
            keys[name] = load_key_file(home / name)
        except KeyFileError as error:
            fix = (
                f"run: chmod 600 {home / name}"
                if "chmod" in str(error)
                else "restore the key file from backup, or create one with `suanpan init`"
            )
            problems.append(ConfigProblem(str(home / name), "(file)", str(error), fix))
    next_key: PrivateKey | None = None
    next_path = home / NEXT_VALIDATOR_KEY_FILE
    if next_path.exists():
        try:
            next_key = load_key_file(next_path)
        except KeyFileError as error:
            fix = (
                f"run: chmod 600 {next_path}"
                if "chmod" in str(error)
                else "remove it, or write it with `suanpan keys rotate --home HOME`"
            )
            problems.append(ConfigProblem(str(next_path), "(file)", str(error), fix))
        else:
            current = keys.get(VALIDATOR_KEY_FILE)
            if current is not None and current.public_key == next_key.public_key:
                problems.append(
                    ConfigProblem(
                        str(next_path),
                        "(file)",
                        "holds the same key as validator_key.json",
                        "remove it: a rotation needs a new key",
                    )
                )
    data = home / DATA_DIR
    if data.exists() and not data.is_dir():
        problems.append(ConfigProblem(str(data), "(dir)", "is not a directory", "move it away"))
    if config is not None and config.log_file:
        problem = _log_file_problem(home, config.log_file)
        if problem is not None:
            problems.append(
                ConfigProblem(
                    str(config_path), "log_file", problem, 'a file path, or "" for stderr'
                )
            )
    if config is not None:
        try:
            server_context(home, config.rpc)
        except TlsError as error:
            problems.append(
                ConfigProblem(
                    str(home / CONFIG_FILE),
                    error.key,
                    f"{error.path}: {error.problem}",
                    "give PEM files readable by the node (paths relative to the home)",
                )
            )
    if config is not None and genesis is not None:
        problems.extend(_cross_checks(home, config, genesis, keys))
    if problems or config is None or genesis is None:
        return None, problems
    return (
        Home(home, config, genesis, keys[NODE_KEY_FILE], keys[VALIDATOR_KEY_FILE], next_key),
        problems,
    )


def _log_file_problem(home: Path, name: str) -> str | None:
    """What stops the node from appending to log file ``name`` (relative to ``home``), if
    anything a look at the file system shows (the node opens it only once it starts)."""
    if not name.isprintable():
        return f"{name!r} contains control characters"
    path = Path(name) if Path(name).is_absolute() else home / name
    try:
        if path.is_dir():
            return f"{path} is a directory"
        for parent in path.parents:
            if parent.exists():
                return None if parent.is_dir() else f"{parent} is not a directory"
    except OSError as error:  # e.g. a name too long
        return f"{path}: {error.strerror or error}"
    return None


def _cross_checks(
    home: Path, config: NodeConfig, genesis: Genesis, keys: dict[str, PrivateKey]
) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    config_file = str(home / CONFIG_FILE)
    params = genesis.consensus_params
    if config.block.proposal_transactions_max > params.block_transactions_max:
        problems.append(
            ConfigProblem(
                config_file,
                "[block] proposal_transactions_max",
                f"exceeds genesis block_transactions_max {params.block_transactions_max}",
                f"set it to at most {params.block_transactions_max}",
            )
        )
    if config.block.proposal_bytes_max > params.block_bytes_max:
        problems.append(
            ConfigProblem(
                config_file,
                "[block] proposal_bytes_max",
                f"exceeds genesis block_bytes_max {params.block_bytes_max}",
                f"set it to at most {params.block_bytes_max}",
            )
        )
    # Persistent peers are not checked against genesis: the chain decides who validates (a
    # validator added or a node key rotated by governance is in no genesis file), and a peer
    # that presents another key than listed is refused at the handshake and reported.
    statesync = config.statesync
    reachable = len(genesis.validators) - 1 + len(config.p2p.observers)
    if statesync.enabled and statesync.peers_min > reachable:
        problems.append(
            ConfigProblem(
                config_file,
                "[statesync] peers_min",
                f"{statesync.peers_min} peers to sync from, but at most {reachable} can connect",
                f"set it to at most {reachable}"
                if reachable
                else "a chain of one validator has no peer to sync from: set enabled = false",
            )
        )
    node_key = keys.get(NODE_KEY_FILE)
    if node_key is not None and any(
        peer.node_key == node_key.public_key for peer in config.p2p.persistent_peers
    ):
        problems.append(
            ConfigProblem(
                config_file,
                "[p2p] persistent_peers",
                "lists this node itself",
                "remove this node's own entry",
            )
        )
    return problems


def load_home(home: Path) -> Home:
    """Load ``home`` or raise ``HomeError`` listing every problem."""
    loaded, problems = check_home(home)
    if loaded is None:
        raise HomeError(problems)
    return loaded
