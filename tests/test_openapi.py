"""The OpenAPI description is derived from the apps' schemas: it is a valid OpenAPI 3.1
document, every operation and query of every app appears with its argument schema, and the
JSON Schema of an argument map accepts exactly the maps the app accepts (two things derived
from one declaration, checked against each other on generated maps).

A plugin app outside the ``apps`` package, registered through a real ``suanpan.apps`` entry
point, gets its commands and its OpenAPI entries with no table anywhere, and a chain that
enables it takes its transactions and answers its queries through those commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_openapi

from apps.assets import AssetsApp
from apps.base import App, AppError
from apps.membership import MembershipApp
from apps.payments import PaymentsApp
from apps.scf import ScfApp
from apps.schema import (
    Amount,
    Amounts,
    AppSchema,
    Argument,
    ArgumentType,
    Boolean,
    Choice,
    Hash,
    Identifier,
    Integer,
    Operation,
    Party,
    PublicKey,
    Query,
    Record,
    Records,
    Strings,
    Text,
)
from node.jsonvalue import JsonType, JsonValueError, from_json
from node.openapi import arguments_schema, openapi_document
from node.testnet.testnet import Testnet, create_testnet
from tests.plugin_example import NotesApp

APPS: Final[tuple[App, ...]] = (MembershipApp(), PaymentsApp(), ScfApp(), AssetsApp(), NotesApp())
REPOSITORY: Final = Path(__file__).resolve().parent.parent


def schemas() -> list[tuple[str, AppSchema]]:
    return [(app.name, app.schema) for app in APPS if app.schema is not None]


@cache
def document() -> Any:
    """The document as a client reads it (through JSON)."""
    return json.loads(json.dumps(openapi_document(schemas(), version="test")))


def test_the_document_is_valid_openapi() -> None:
    validate_openapi(document())


def test_every_operation_lists_503() -> None:
    """Any request may be answered 503: the connection limit, a stopping node, or a read that
    met damage in the node's store (``store_damaged``)."""
    operations = [
        (path, method, operation)
        for path, item in document()["paths"].items()
        for method, operation in item.items()
    ]
    assert len(operations) > 10
    for path, method, operation in operations:
        assert "503" in operation["responses"], (method, path)
        assert "store_damaged" in operation["responses"]["503"]["description"], (method, path)


def test_every_operation_and_query_appears_with_its_argument_schema() -> None:
    found = document()["components"]["schemas"]
    listed = document()["paths"]["/tx"]["post"]["x-suanpan-operations"]
    content = found["TransactionContent"]["oneOf"]
    requests = found["QueryRequest"]["oneOf"]
    for app, schema in schemas():
        for operation in schema.operations:
            component = found[f"{app}.{operation.name}.arguments"]
            assert component["description"] == operation.help
            _same_arguments(component, operation.arguments)
            ref = f"#/components/schemas/{app}.{operation.name}.arguments"
            assert {
                "app": app,
                "operation": operation.name,
                "summary": operation.help,
                "roles": sorted(operation.roles),
                "arguments": {"$ref": ref},
            } in listed
            assert any(
                variant["properties"]["operation"] == {"const": operation.name}
                and variant["properties"]["app"] == {"const": app}
                for variant in content
            )
        for query in schema.queries:
            component = found[f"{app}.{query.name}.query"]
            _same_arguments(component, query.arguments)
            assert any(
                variant["properties"]["path"] == {"const": query.name}
                and variant["properties"]["app"] == {"const": app}
                for variant in requests
            )


def _same_arguments(component: Any, declared: tuple[Argument, ...]) -> None:
    properties = component["properties"]
    assert list(properties) == [argument.name for argument in declared]
    required = [argument.name for argument in declared if argument.required]
    assert component.get("required", []) == required
    for argument in declared:
        described = properties[argument.name]
        assert argument.help in str(described["description"])


def test_a_request_the_schema_describes_is_one_the_node_takes() -> None:
    """A query request in the documented shape validates; the wrong path's arguments do not."""
    validator = OAS31Validator(
        {"$ref": "#/components/schemas/QueryRequest", "components": document()["components"]}
    )
    good = {
        "app": "payments",
        "path": "balance",
        "arguments": {"account": "ab" * 32, "currency": "SGD"},
    }
    assert validator.is_valid(good)
    assert not validator.is_valid({**good, "arguments": {"account": "ab" * 32}})
    assert not validator.is_valid({**good, "path": "no_such_path"})


# ---------------------------------------------------------------------- schema == app
_TEXT: Final = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)


def _near(argument_type: ArgumentType) -> st.SearchStrategy[JsonType]:
    """JSON values around what ``argument_type`` accepts: valid ones, and ones just outside."""
    hex_key = st.binary(min_size=32, max_size=32).map(bytes.hex)
    wrong: st.SearchStrategy[JsonType] = st.one_of(
        st.none(), st.booleans(), st.integers(-3, 3), _TEXT, st.just([]), st.just({})
    )
    near: st.SearchStrategy[JsonType]
    match argument_type:
        case Integer():
            low, high = argument_type.low, argument_type.high
            near = st.one_of(st.integers(low - 2, low + 2), st.integers(high - 2, high + 2))
        case Amount():
            near = st.integers(-2, 3) | st.integers(2**63 - 3, 2**63 + 1)
        case Text():
            near = _TEXT
        case Identifier():
            near = (
                st.from_regex(argument_type.pattern, fullmatch=True).filter(
                    lambda text: "\n" not in text
                )
                | _TEXT
            )
        case Choice():
            near = st.sampled_from(argument_type.options) | _TEXT
        case Boolean():
            near = st.booleans()
        case PublicKey() | Hash():
            near = st.one_of(
                hex_key,
                hex_key.map(lambda text: {"$bytes": text}),
                st.binary(max_size=33).map(lambda data: {"$bytes": data.hex()}),
                hex_key.map(lambda text: text[:-1]),
            )
        case Strings():
            item = (
                st.from_regex(argument_type.pattern, fullmatch=True).filter(
                    lambda text: "\n" not in text
                )
                if argument_type.pattern is not None
                else _TEXT
            )
            near = st.lists(item | _TEXT, max_size=(argument_type.items_max or 4) + 2)
        case Amounts():
            near = st.lists(st.integers(-1, 5), max_size=argument_type.items_max + 1)
        case Party():
            near = st.dictionaries(
                st.sampled_from(["name", "country", "a/b", "bic"]),
                _TEXT | st.integers(),
                max_size=4,
            )
        case Record():
            near = _records(argument_type.fields)
        case Records():
            near = st.lists(_records(argument_type.fields), max_size=3)
        case _:
            near = wrong
    return st.one_of(near, near, wrong)


def _records(fields: tuple[Argument, ...]) -> st.SearchStrategy[JsonType]:
    return st.fixed_dictionaries(
        {},
        optional={argument.name: _near(argument.type) for argument in fields},
    )


def _maps() -> st.SearchStrategy[tuple[str, Record, JsonType]]:
    signatures: list[tuple[str, Record]] = []
    for app, schema in schemas():
        specs: tuple[Operation | Query, ...] = (*schema.operations, *schema.queries)
        signatures.extend(
            (f"{app}.{spec.name}", Record(spec.arguments)) for spec in specs if spec.arguments
        )

    def maps_of(item: tuple[str, Record]) -> st.SearchStrategy[tuple[str, Record, JsonType]]:
        return _records(item[1].fields).map(lambda values: (item[0], item[1], values))

    return st.sampled_from(signatures).flatmap(maps_of)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_maps())
def test_the_argument_schemas_accept_exactly_what_the_apps_accept(
    case: tuple[str, Record, JsonType],
) -> None:
    """On printable ASCII text (where a character is a byte and no line ends), the JSON Schema
    of every operation's and query's arguments and the app's own parse agree on every map."""
    name, record, values = case
    try:
        record.parse("arguments", from_json(values))
        app_accepts = True
    except (AppError, JsonValueError):
        app_accepts = False
    validator = OAS31Validator(arguments_schema(record.fields))
    assert validator.is_valid(values) == app_accepts, (name, values)


# ---------------------------------------------------------------------- a plugin app
@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a ``.dist-info`` registering ``tests.plugin_example:NotesApp`` under
    the ``suanpan.apps`` entry point group, as ``pip install`` of a bank's package would."""
    root = tmp_path_factory.mktemp("plugin")
    info = root / "bank_notes-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bank-notes\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[suanpan.apps]\nnotes = tests.plugin_example:NotesApp\n"
    )
    return root


def _run(plugin_path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """``suanpan ARGUMENTS`` in a fresh process that sees the plugin's entry point."""
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(plugin_path), str(REPOSITORY)]),
    }
    return subprocess.run(
        [sys.executable, "-m", "node", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPOSITORY,
        timeout=120,
        check=False,
    )


def _suanpan(plugin_path: Path, *arguments: str) -> str:
    result = _run(plugin_path, *arguments)
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.split()) if arguments[-1] == "--help" else result.stdout


def test_a_plugin_app_gets_its_commands_and_api_description(plugin_path: Path) -> None:
    listing = _suanpan(plugin_path, "tx", "--help")
    assert "notes" in listing
    assert "Notes: short signed memos" in listing
    post = _suanpan(plugin_path, "tx", "notes", "post", "--help")
    assert "File a note under a topic." in post
    for option in ("--topic", "--arg-key", "--text", "--amount", "--about"):
        assert option in post
    assert "whole number of minor units" in post
    about = _suanpan(plugin_path, "query", "notes", "about", "--help")
    assert "--account" in about
    assert "--limit" in about
    api = json.loads(_suanpan(plugin_path, "openapi"))
    validate_openapi(api)
    components = api["components"]["schemas"]
    assert set(components["notes.post.arguments"]["properties"]) == {
        "topic",
        "key",
        "text",
        "amount",
        "about",
    }
    assert "notes.about.query" in components


def test_a_plugin_app_runs_on_a_node_through_its_generated_commands(
    plugin_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-validator chain enables the plugin; the node process loads it through its entry
    point, and a transaction and a query go through the commands its schema generated."""
    # The node processes see the plugin as an installed package would make them.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(plugin_path), str(REPOSITORY)]))
    info = create_testnet(tmp_path / "net", 1, chain_id="plugin-net", apps=("membership", "notes"))
    node = ("--node", info.api_addresses[0])
    net = Testnet(info)
    try:
        net.start_all()
        net.wait_serving()
        refused = _run(
            plugin_path,
            *("tx", "notes", "post", "--topic", "audit", "--arg-key", "n1", "--text", "x"),
            *("--amount", "-5", "--key", str(info.clients[0]), *node),
        )
        assert refused.returncode == 2, refused.stderr
        assert "'-5' must be positive" in refused.stderr
        posted = _suanpan(
            plugin_path,
            *("tx", "notes", "post", "--topic", "audit", "--arg-key", "n1"),
            *("--text", "ledger checked", "--amount", "1250", "--about", "ab" * 32),
            *("--key", str(info.clients[0]), *node, "--json"),
        )
        committed = json.loads(posted)
        assert committed["status"] == "committed", committed
        assert committed["receipt"]["status"] == "ok", committed
        answer = json.loads(
            _suanpan(
                plugin_path,
                *("query", "notes", "note", "--topic", "audit", "--arg-key", "n1", *node),
                "--json",
            )
        )
        note = answer["result"]
        assert (note["text"], note["amount"], note["about"]) == (
            "ledger checked",
            1250,
            {"$bytes": "ab" * 32},
        )
    finally:
        net.stop_all()
