"""``suanpan openapi``: write the client API's OpenAPI document (``node.openapi``).

The document describes the fixed endpoints and every query and operation of the apps chosen:
the apps a genesis enables (``--genesis``), the apps named (``--apps``), or every installed app
with a schema. A node serves the same document for its chain at ``GET /openapi.json``.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import click

from apps.schema import AppSchema
from node.apploader import AppLoadError, app_classes
from node.genesis import GenesisError, load_genesis
from node.openapi import openapi_document

__all__ = ["openapi_command"]


def _version() -> str:
    try:
        return importlib.metadata.version("suanpan")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@click.command(
    "openapi",
    short_help="Write the client API's OpenAPI document.",
)
@click.option(
    "--apps",
    "app_names",
    help="Comma-separated app names [default: every installed app with a schema].",
)
@click.option(
    "--genesis",
    "genesis_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Describe the apps this genesis.json enables.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file [default: print it].",
)
def openapi_command(app_names: str | None, genesis_path: Path | None, output: Path | None) -> None:
    """Write the OpenAPI 3.1 document of the client API: the fixed endpoints and every query
    and operation of the apps, with their arguments (the node serves the same document for
    its chain at GET /openapi.json)."""
    if app_names is not None and genesis_path is not None:
        raise click.UsageError("give --apps or --genesis, not both")
    installed = app_classes()
    wanted: list[str]
    if genesis_path is not None:
        try:
            wanted = list(load_genesis(genesis_path).apps)
        except GenesisError as error:
            raise click.BadParameter(f"{genesis_path}: {error}", param_hint="--genesis") from None
    elif app_names is not None:
        wanted = [name.strip() for name in app_names.split(",") if name.strip()]
    else:
        wanted = [name for name, loaded in installed.items() if not isinstance(loaded, Exception)]
    schemas: list[tuple[str, AppSchema]] = []
    for name in wanted:
        loaded = installed.get(name)
        if loaded is None:
            raise click.ClickException(
                f"no app {name!r} is installed; installed: {sorted(installed)}"
            )
        if isinstance(loaded, AppLoadError):
            raise click.ClickException(str(loaded))
        if loaded.schema is None:
            click.echo(f"note: app {name!r} declares no schema; it is left out", err=True)
            continue
        schemas.append((name, loaded.schema))
    text = json.dumps(openapi_document(schemas, version=_version()), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as error:
        raise click.ClickException(f"cannot write {output}: {error.strerror or error}") from None
    click.echo(f"wrote {output} ({len(schemas)} apps)")
