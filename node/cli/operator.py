"""Operator commands: ``suanpan init``, ``suanpan genesis ...``, ``suanpan config check``.

The genesis flow for a consortium: one bank runs ``genesis init`` and shares the file; each
bank runs ``suanpan init`` for its node and ``genesis add-validator`` with its home (adding its
name, validator key and node key); when every bank has added itself, ``genesis validate`` prints
the genesis hash that every operator compares out of band, and the file is copied into every
home.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from apps.host import AppHost
from apps.host import GenesisError as AppGenesisError
from apps.membership import KIND_ENTERPRISE, ROLES_BY_KIND
from apps.state import MemoryBackend
from node.apploader import AppLoadError, load_apps
from node.config import config_warnings, halt_height_warning
from node.genesis import (
    CHAIN_ID_PATTERN,
    ConsensusParams,
    Genesis,
    GenesisProblem,
    parse_genesis,
)
from node.home import (
    GENESIS_FILE,
    NODE_KEY_FILE,
    VALIDATOR_KEY_FILE,
    HomeError,
    check_home,
    init_home,
)
from node.keys import KeyFileError, load_public_key_file
from node.tls import TlsError, api_certificate, read_expiry

_HEX_KEY_LENGTH = 64  # an ed25519 public key as hex

__all__ = ["app_genesis_problem", "config_group", "genesis_group", "init_command"]


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


def app_genesis_problem(genesis: Genesis) -> str | None:
    """Run the enabled apps' genesis over an empty in-memory state, exactly as a node's first
    start does; the reason it fails (an unknown app, an app rejecting its section, e.g.
    membership without a bank), or None."""
    try:
        apps = load_apps(genesis.apps)
        AppHost(apps, MemoryBackend(), chain_id=genesis.chain_id).init_genesis(
            genesis.app_state, validators=genesis.validator_set
        )
    except (AppLoadError, AppGenesisError, ValueError) as error:
        return str(error)
    return None


_APP_GENESIS_FIX = (
    "seed membership with `suanpan genesis add-institution` (at least one bank) and "
    "`suanpan genesis add-identity`; enable only installed apps"
)


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
    if not path.name:  # "" (or "/"): no file name to write
        raise click.BadParameter(f"{str(path)!r} names no file", param_hint="PATH")
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
    for option, value in (("--public-key", public_key), ("--node-key", node_key)):
        if not _is_hex_key(value):
            raise click.BadParameter(
                f"{value!r} is not a public key (64 hex digits, as `suanpan keys show` prints)",
                param_hint=option,
            )
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


def _is_hex_key(text: str) -> bool:
    if len(text) != _HEX_KEY_LENGTH:
        return False
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _membership_list(document: dict[str, object], path: Path, name: str) -> list[object]:
    app_state = document.setdefault("app_state", {})
    if not isinstance(app_state, dict):
        raise click.ClickException(f"{path}: app_state must be an object")
    membership = app_state.setdefault("membership", {})
    if not isinstance(membership, dict):
        raise click.ClickException(f"{path}: app_state.membership must be an object")
    entries = membership.setdefault(name, [])
    if not isinstance(entries, list):
        raise click.ClickException(f"{path}: app_state.membership.{name} must be a list")
    return entries


@genesis_group.command("add-institution", short_help="Seed a founding institution in genesis.")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--id", "institution_id", required=True, help="Institution id, e.g. bank-a.")
@click.option("--name", required=True, help="Display name, e.g. 'Bank A'.")
@click.option(
    "--kind", required=True, type=click.Choice(sorted(ROLES_BY_KIND)), help="Institution kind."
)
@click.option("--jurisdiction", required=True, help="ISO 3166 country code, e.g. SG.")
@click.option("--sponsor", help="The onboarding bank's id (enterprises only).")
def genesis_add_institution(
    path: Path,
    institution_id: str,
    name: str,
    kind: str,
    jurisdiction: str,
    sponsor: str | None,
) -> None:
    """Seed a founding institution in membership's genesis (at least one bank is needed)."""
    if (kind == KIND_ENTERPRISE) != (sponsor is not None):
        raise click.UsageError("an enterprise needs --sponsor BANK_ID, and only an enterprise")
    document = _read_json(path)
    institutions = _membership_list(document, path, "institutions")
    if any(isinstance(entry, dict) and entry.get("id") == institution_id for entry in institutions):
        raise click.ClickException(f"{path}: institution {institution_id!r} is already listed")
    entry: dict[str, object] = {
        "id": institution_id,
        "name": name,
        "kind": kind,
        "jurisdiction": jurisdiction,
    }
    if sponsor is not None:
        entry["sponsor"] = sponsor
    institutions.append(entry)
    _write_json(path, document)
    click.echo(f"added institution {institution_id} ({kind}); `suanpan genesis validate` checks it")


@genesis_group.command("add-identity", short_help="Seed a client identity in membership's genesis.")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--institution", required=True, help="The institution id it belongs to.")
@click.option(
    "--roles", required=True, help="Comma-separated, e.g. bank (bank: bank, customer; ...)."
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Take the public key from this key file (`suanpan keys new`).",
)
@click.option("--public-key", help="The identity's public key (hex), instead of --key.")
def genesis_add_identity(
    path: Path, institution: str, roles: str, key_file: Path | None, public_key: str | None
) -> None:
    """Seed an identity (a client key that signs transactions) in membership's genesis."""
    if (key_file is None) == (public_key is None):
        raise click.UsageError("give exactly one of --key and --public-key")
    if key_file is not None:
        try:
            public_key = load_public_key_file(key_file).hex()
        except KeyFileError as error:
            raise click.ClickException(str(error)) from None
    assert public_key is not None
    if not _is_hex_key(public_key):
        raise click.BadParameter(
            f"{public_key!r} is not a public key (64 hex digits)", param_hint="--public-key"
        )
    role_list = [role.strip() for role in roles.split(",") if role.strip()]
    document = _read_json(path)
    identities = _membership_list(document, path, "identities")
    if any(
        isinstance(entry, dict) and entry.get("public_key") == public_key for entry in identities
    ):
        raise click.ClickException(f"{path}: public key {public_key[:16]}… is already listed")
    identities.append({"public_key": public_key, "institution": institution, "roles": role_list})
    _write_json(path, document)
    click.echo(f"added identity {public_key[:16]}… of {institution} ({', '.join(role_list)})")


def _echo_genesis_problems(path: Path, problems: list[GenesisProblem]) -> None:
    for problem in problems:
        click.echo(f"{path}: {problem.key}: {problem.problem}\n    fix: {problem.fix}", err=True)


@genesis_group.command("validate", short_help="Check a genesis and print its hash.")
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
    problem = app_genesis_problem(genesis)
    if problem is not None:
        _echo_genesis_problems(path, [GenesisProblem("app_state", problem, _APP_GENESIS_FIX)])
        raise click.ClickException(f"1 problem(s) in {path}")
    click.echo(f"chain_id     {genesis.chain_id}")
    click.echo(f"validators   {len(genesis.validators)} (quorum {genesis.validator_set.quorum})")
    click.echo(f"apps         {', '.join(genesis.apps)}")
    click.echo(f"genesis_hash {genesis.hash.hex()}")


@click.group("config")
def config_group() -> None:
    """Check node configuration."""


@config_group.command("check", short_help="Check a home's config, genesis and keys.")
@click.option("--home", "home", required=True, type=click.Path(path_type=Path))
def config_check(home: Path) -> None:
    """Validate config.toml, genesis.json and the key files of a home; list every problem."""
    loaded, problems = check_home(home)
    if loaded is None:
        for problem in problems:
            click.echo(str(problem), err=True)
        raise click.ClickException(f"{len(problems)} problem(s) in {home}")
    app_problem = app_genesis_problem(loaded.genesis)
    if app_problem is not None:
        _echo_genesis_problems(
            home / GENESIS_FILE, [GenesisProblem("app_state", app_problem, _APP_GENESIS_FIX)]
        )
        raise click.ClickException(f"1 problem(s) in {home}")
    index = loaded.validator_index
    role = (
        f"validator {index} ({loaded.genesis.validators[index].name})"
        if index is not None
        else "observer at genesis (its validator key is in no genesis validator; it follows"
        " the chain, and votes from the height governance adds its key)"
    )
    click.echo(f"ok: {home}")
    for warning in config_warnings(loaded.config):
        click.echo(f"warning: {warning}", err=True)
    halt = halt_height_warning(loaded.config)
    if halt is not None:
        click.echo(f"warning: {halt}", err=True)
    certificate: Path | None = None
    with contextlib.suppress(TlsError):  # loaded above; a file gone since has no date to read
        certificate = api_certificate(home, loaded.config.rpc)
    expires, expiry = (None, None) if certificate is None else read_expiry(certificate, time.time())
    if expiry is not None:
        click.echo(f"warning: {expiry}", err=True)
    click.echo(f"moniker      {loaded.config.moniker}")
    click.echo(f"role         {role}")
    click.echo(f"chain_id     {loaded.genesis.chain_id}")
    click.echo(f"genesis_hash {loaded.genesis.hash.hex()}")
    click.echo(f"{GENESIS_FILE} validators {len(loaded.genesis.validators)}")
    rpc = loaded.config.rpc
    tls = (
        "mutual TLS" if rpc.tls_client_ca_file else "TLS" if rpc.tls_certificate_file else "no TLS"
    )
    if expires is not None:
        tls += f", certificate valid until {time.strftime('%Y-%m-%d', time.gmtime(expires))}"
    click.echo(f"api          {rpc.listen_address} access={rpc.access} ({tls})")
