"""Operator commands: ``suanpan init``, ``suanpan genesis ...``, ``suanpan config check``.

The genesis flow for a consortium: one bank runs ``genesis init`` and shares the file; each
bank runs ``suanpan init`` for its node and ``genesis add-validator`` with its home (adding its
name, validator key and node key); when every bank has added itself, ``genesis validate`` prints
the genesis hash that every operator compares out of band, and the file is copied into every
home.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from node.genesis import CHAIN_ID_PATTERN, ConsensusParams, GenesisProblem, parse_genesis
from node.home import (
    GENESIS_FILE,
    NODE_KEY_FILE,
    VALIDATOR_KEY_FILE,
    HomeError,
    check_home,
    init_home,
)
from node.keys import KeyFileError, load_public_key_file

__all__ = ["config_group", "genesis_group", "init_command"]


@click.command("init")
@click.option("--home", "home", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--moniker", required=True, help="This node's name (letters, digits, . _ -).")
def init_command(home: Path, moniker: str) -> None:
    """Create a node home: config.toml, node and validator keys, data/."""
    try:
        validator_key, node_key = init_home(home, moniker)
    except HomeError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"initialised {home}")
    click.echo(f"validator public_key {validator_key.hex()}")
    click.echo(f"node key             {node_key.hex()}")
    click.echo(f"next: suanpan genesis add-validator GENESIS --home {home} --name {moniker}")


@click.group("genesis")
def genesis_group() -> None:
    """Assemble and check the chain's genesis.json."""


def _read_json(path: Path) -> dict[str, object]:
    try:
        document = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise click.ClickException(f"{path}: no such file; run `suanpan genesis init`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise click.ClickException(f"{path}: cannot read: {error}") from None
    if not isinstance(document, dict):
        raise click.ClickException(f"{path}: expected a JSON object")
    return document


def _write_json(path: Path, document: dict[str, object]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n", "utf-8")
    temporary.replace(path)


@genesis_group.command("init")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--chain-id", required=True, help="The chain's name, e.g. suanpan-1.")
@click.option("--genesis-time", default=None, help="RFC 3339 UTC time; default now.")
@click.option("--app", "apps", multiple=True, help="Enable an app (repeat); membership always.")
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
def genesis_init(
    path: Path, chain_id: str, genesis_time: str | None, apps: tuple[str, ...], overwrite: bool
) -> None:
    """Start a genesis document at PATH with no validators yet."""
    if not CHAIN_ID_PATTERN.fullmatch(chain_id):
        raise click.BadParameter(
            "use 1..64 letters, digits, '.', '_' or '-'", param_hint="chain-id"
        )
    if path.exists() and not overwrite:
        raise click.ClickException(f"{path}: already exists (use --overwrite)")
    if genesis_time is None:
        genesis_time = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    enabled = ["membership", *[app for app in apps if app != "membership"]]
    document: dict[str, object] = {
        "chain_id": chain_id,
        "genesis_time": genesis_time,
        "consensus_params": ConsensusParams().to_json(),
        "validators": [],
        "apps": enabled,
        "app_state": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, document)
    click.echo(f"wrote {path}; next: suanpan genesis add-validator {path} --home HOME --name NAME")


@genesis_group.command("add-validator")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="The validator's display name (the bank).")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    help="Take the public keys from this node home.",
)
@click.option("--public-key", help="Validator public key (hex), instead of --home.")
@click.option("--node-key", help="Node public key (hex), instead of --home.")
def genesis_add_validator(
    path: Path, name: str, home: Path | None, public_key: str | None, node_key: str | None
) -> None:
    """Append a validator to the genesis at PATH."""
    if home is not None:
        try:
            public_key = load_public_key_file(home / VALIDATOR_KEY_FILE).hex()
            node_key = load_public_key_file(home / NODE_KEY_FILE).hex()
        except KeyFileError as error:
            raise click.ClickException(str(error)) from None
    if public_key is None or node_key is None:
        raise click.UsageError("give --home, or both --public-key and --node-key")
    document = _read_json(path)
    validators = document.setdefault("validators", [])
    if not isinstance(validators, list):
        raise click.ClickException(f"{path}: validators must be a list")
    for entry in validators:
        if isinstance(entry, dict) and (
            entry.get("name") == name or entry.get("public_key") == public_key
        ):
            raise click.ClickException(f"{path}: validator {name!r} or its key is already listed")
    validators.append({"name": name, "public_key": public_key, "node_key": node_key})
    _write_json(path, document)
    click.echo(f"added validator {name} ({len(validators)} validators)")


def _echo_genesis_problems(path: Path, problems: list[GenesisProblem]) -> None:
    for problem in problems:
        click.echo(f"{path}: {problem.key}: {problem.problem}\n    fix: {problem.fix}", err=True)


@genesis_group.command("validate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def genesis_validate(path: Path) -> None:
    """Check the genesis at PATH and print its hash (compare it with every other bank)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise click.ClickException(f"{path}: cannot read: {error.strerror}") from None
    genesis, problems = parse_genesis(raw)
    if genesis is None:
        _echo_genesis_problems(path, problems)
        raise click.ClickException(f"{len(problems)} problem(s) in {path}")
    click.echo(f"chain_id     {genesis.chain_id}")
    click.echo(f"validators   {len(genesis.validators)} (quorum {genesis.validator_set.quorum})")
    click.echo(f"apps         {', '.join(genesis.apps)}")
    click.echo(f"genesis_hash {genesis.hash.hex()}")


@click.group("config")
def config_group() -> None:
    """Check node configuration."""


@config_group.command("check")
@click.option("--home", "home", required=True, type=click.Path(path_type=Path))
def config_check(home: Path) -> None:
    """Validate config.toml, genesis.json and the key files of a home; list every problem."""
    loaded, problems = check_home(home)
    if loaded is None:
        for problem in problems:
            click.echo(str(problem), err=True)
        raise click.ClickException(f"{len(problems)} problem(s) in {home}")
    index = loaded.validator_index
    role = (
        f"validator {index} ({loaded.genesis.validators[index].name})"
        if index is not None
        else "observer (validator key not in genesis)"
    )
    click.echo(f"ok: {home}")
    click.echo(f"moniker      {loaded.config.moniker}")
    click.echo(f"role         {role}")
    click.echo(f"chain_id     {loaded.genesis.chain_id}")
    click.echo(f"genesis_hash {loaded.genesis.hash.hex()}")
    click.echo(f"{GENESIS_FILE} validators {len(loaded.genesis.validators)}")
