"""The OpenAPI 3.1 description of the client API, derived from the apps' schemas.

Theory of operation
-------------------
The fixed endpoints (``node.api``: status, submission, blocks, queries, events, metrics) are
described here once; every app query and operation is described from its app's schema
(``apps.schema``), so a plugin app appears with no extra work:

* ``POST /query``'s request body is ``oneOf`` one variant per query: ``app`` and ``path`` as
  constants and ``arguments`` referring to ``components/schemas/<app>.<path>.query``;
* ``POST /tx`` carries a signed transaction (``apps.transaction``: canonical msgpack, hex
  encoded), which JSON Schema cannot look inside; what it signs is described as
  ``components/schemas/TransactionContent``, ``oneOf`` one variant per operation with its
  arguments at ``components/schemas/<app>.<operation>.arguments`` and the roles allowed to send
  it (``x-roles``), also listed under the operation's ``x-suanpan-operations``.

Values follow ``node.jsonvalue``: bytes are ``{"$bytes": "<hex>"}`` (public keys and hashes may
also be plain hex strings where the app accepts them), and null means "not given". A JSON
schema can say a little less than the app checks (text limits are in UTF-8 bytes, which JSON
Schema cannot count; ``maxLength`` bounds characters, so it never refuses what the app
accepts): the app's check is the one that counts. The node serves the document at
``GET /openapi.json`` for the apps of its chain; ``suanpan openapi`` writes it for any set of
installed apps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from apps.schema import (
    AMOUNT_MAX,
    ID_PATTERN,
    PARTY_FIELDS_MAX,
    TEXT_BYTES_MAX,
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
    Party,
    PublicKey,
    Record,
    Records,
    Strings,
    Text,
    TimeMs,
)
from node.jsonvalue import JsonType, to_json

__all__ = ["OPENAPI_VERSION", "arguments_schema", "openapi_document", "type_schema"]

OPENAPI_VERSION: Final = "3.1.0"
_SCHEMAS: Final = "#/components/schemas/"
_HEX_32: Final = "^[0-9a-fA-F]{64}$"

Json = dict[str, JsonType]


def _ref(name: str) -> Json:
    return {"$ref": _SCHEMAS + name}


def _anchored(pattern: str) -> str:
    return f"^(?:{pattern})$"


def _bytes_32() -> Json:
    return {
        "type": "object",
        "properties": {"$bytes": {"type": "string", "pattern": _HEX_32}},
        "required": ["$bytes"],
        "additionalProperties": False,
    }


def type_schema(argument_type: ArgumentType) -> Json:
    """The JSON Schema of one argument type's JSON form (without ``description``)."""
    match argument_type:
        case Text():
            schema: Json = {"type": "string"}
            if argument_type.characters is not None:
                schema["minLength"] = argument_type.characters[0]
                schema["maxLength"] = argument_type.characters[1]
            if argument_type.bytes_max is not None:
                # JSON Schema counts characters; each is at least one UTF-8 byte.
                current = schema.get("maxLength")
                schema["maxLength"] = (
                    min(current, argument_type.bytes_max)
                    if isinstance(current, int)
                    else argument_type.bytes_max
                )
                schema["x-max-utf8-bytes"] = argument_type.bytes_max
            return schema
        case Identifier():
            return {"type": "string", "pattern": _anchored(argument_type.pattern.pattern)}
        case Integer():
            schema = {
                "type": "integer",
                "minimum": argument_type.low,
                "maximum": argument_type.high,
            }
            if isinstance(argument_type, TimeMs):
                schema["x-unit"] = "milliseconds since the epoch (block time)"
            return schema
        case Amount():
            return {
                "type": "integer",
                "minimum": argument_type.low,
                "maximum": AMOUNT_MAX,
                "x-unit": "minor units",
            }
        case Boolean():
            return {"type": "boolean"}
        case Choice():
            return {"type": "string", "enum": list(argument_type.options)}
        case PublicKey():
            if not argument_type.hex:
                return _bytes_32()
            return {"oneOf": [{"type": "string", "pattern": _HEX_32}, _bytes_32()]}
        case Hash():
            return {"oneOf": [{"type": "string", "pattern": _HEX_32}, _bytes_32()]}
        case Strings():
            items: Json = {"type": "string"}
            if argument_type.pattern is not None:
                items["pattern"] = _anchored(argument_type.pattern.pattern)
            schema = {"type": "array", "items": items, "minItems": argument_type.items_min}
            if argument_type.items_max is not None:
                schema["maxItems"] = argument_type.items_max
            return schema
        case Amounts():
            return {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": AMOUNT_MAX},
                "minItems": argument_type.items_min,
                "maxItems": argument_type.items_max,
            }
        case Party():
            return {
                "type": "object",
                "maxProperties": PARTY_FIELDS_MAX,
                "propertyNames": {"pattern": _anchored(ID_PATTERN.pattern)},
                "additionalProperties": {
                    "type": "string",
                    "maxLength": TEXT_BYTES_MAX,
                    "x-max-utf8-bytes": TEXT_BYTES_MAX,
                },
            }
        case Record():
            return arguments_schema(argument_type.fields)
        case Records():
            return {
                "type": "array",
                "items": arguments_schema(argument_type.fields),
                "maxItems": argument_type.items_max,
            }
    # A type this module does not know (a plugin's own): any value, described in words.
    return {}


def argument_schema(argument: Argument) -> Json:
    """The JSON Schema of one argument: its type's, with its help and what it accepts; an
    optional argument may also be null (not given)."""
    schema = type_schema(argument.type)
    described: Json = {
        "description": f"{argument.help} ({argument.type.describe()})",
    }
    if argument.default is not None:
        described["default"] = to_json(argument.default)
    if argument.client_default is not None:
        described["x-client-default"] = argument.client_default
    if argument.required:
        return {**schema, **described}
    return {"anyOf": [schema, {"type": "null"}], **described}


def arguments_schema(declared: Iterable[Argument]) -> Json:
    """The JSON Schema of an argument map: an object with one property per argument (names
    the schema does not declare are allowed, and ignored by the app)."""
    arguments = tuple(declared)
    schema: Json = {
        "type": "object",
        "properties": {argument.name: argument_schema(argument) for argument in arguments},
    }
    required: list[JsonType] = [argument.name for argument in arguments if argument.required]
    if required:
        schema["required"] = required
    return schema


def _content(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _ok(description: str, schema: Json | None = None) -> Json:
    response: Json = {"description": description}
    response["content"] = _content(schema if schema is not None else {"type": "object"})
    return response


def _errors(*statuses: int) -> Json:
    meaning = {
        400: "malformed request (the message names the field)",
        401: "a signed request whose signature, time or nonce is refused",
        403: "the read rules refuse the caller (names the rule)",
        404: "unknown path or object",
        422: "refused by admission or by the app (code and message)",
        429: "a per-client limit, or the node is at capacity (Retry-After)",
        503: "too many connections, the node is stopping or not current, or a read met damage in"
        " its store (code store_damaged)",
    }
    # Any request may meet 503 (the connection limit, a stopping node, a damaged store).
    return {
        str(status): {"description": meaning[status], "content": _content(_ref("Error"))}
        for status in sorted({*statuses, 503})
    }


def _get(summary: str, ok: Json, *errors: int, parameters: list[JsonType] | None = None) -> Json:
    operation: Json = {"summary": summary, "responses": {"200": ok, **_errors(*errors)}}
    if parameters:
        operation["parameters"] = parameters
    return {"get": operation}


def _parameter(name: str, where: str, schema: Json, description: str) -> Json:
    parameter: Json = {"name": name, "in": where, "schema": schema, "description": description}
    if where == "path":
        parameter["required"] = True
    return parameter


def openapi_document(
    schemas: Iterable[tuple[str, AppSchema]], *, version: str, title: str = "Suanpan client API"
) -> Json:
    """The OpenAPI document of a node serving the apps ``schemas`` ((name, schema) pairs)."""
    apps = sorted(schemas, key=lambda item: item[0])
    components: Json = {
        "Bytes": {
            "type": "object",
            "description": "Bytes, as hex (node.jsonvalue)",
            "properties": {"$bytes": {"type": "string", "pattern": "^([0-9a-fA-F]{2})*$"}},
            "required": ["$bytes"],
            "additionalProperties": False,
        },
        "Value": {
            "description": "A canonical value in JSON: null, booleans, integers, strings, "
            'arrays, objects; bytes as {"$bytes": hex}; a map with bytes keys as '
            '{"$map": [[key, value], ...]}'
        },
        "Error": {
            "type": "object",
            "properties": {
                "error": {"type": "string"},
                "code": {"type": "string"},
                "rule": {"type": "string"},
            },
            "required": ["error"],
        },
    }
    query_variants: list[JsonType] = []
    operation_variants: list[JsonType] = []
    operations_listed: list[JsonType] = []
    for app, schema in apps:
        for query in schema.queries:
            name = f"{app}.{query.name}.query"
            components[name] = {
                "description": query.help,
                **arguments_schema(query.arguments),
            }
            query_variants.append(
                {
                    "title": f"{app} {query.name}",
                    "description": query.help,
                    "type": "object",
                    "properties": {
                        "app": {"const": app},
                        "path": {"const": query.name},
                        "arguments": _ref(name),
                        "prove": {"type": "boolean"},
                    },
                    "required": ["app", "path"],
                    "additionalProperties": False,
                }
            )
        for operation in schema.operations:
            name = f"{app}.{operation.name}.arguments"
            roles: list[JsonType] = [*sorted(operation.roles)]
            components[name] = {
                "description": operation.help,
                **arguments_schema(operation.arguments),
            }
            operation_variants.append(
                {
                    "title": f"{app} {operation.name}",
                    "description": operation.help,
                    "type": "object",
                    "properties": {
                        "app": {"const": app},
                        "operation": {"const": operation.name},
                        "arguments": _ref(name),
                    },
                    "required": ["app", "operation", "arguments"],
                    "x-roles": roles,
                }
            )
            operations_listed.append(
                {
                    "app": app,
                    "operation": operation.name,
                    "summary": operation.help,
                    "roles": roles,
                    "arguments": _ref(name),
                }
            )
    components["QueryRequest"] = {"oneOf": query_variants} if query_variants else {"type": "object"}
    components["TransactionContent"] = {
        "description": "What a transaction signs, besides chain id, sender and nonce: one "
        "operation of one app with its arguments.",
        **({"oneOf": operation_variants} if operation_variants else {"type": "object"}),
    }
    hash_parameter = _parameter(
        "hash", "path", {"type": "string", "pattern": _HEX_32}, "hash, 64 hex digits"
    )
    submission: Json = {
        "type": "object",
        "properties": {
            "tx": {
                "type": "string",
                "pattern": "^([0-9a-fA-F]{2})+$",
                "description": "A signed transaction (apps.transaction), hex; it signs a "
                "TransactionContent.",
            },
            "wait": {"type": "boolean"},
            "timeout_ms": {"type": "integer", "minimum": 0},
        },
        "required": ["tx"],
        "additionalProperties": False,
    }
    paths: Json = {
        "/healthz": _get("Whether the node is current.", _ok("current"), 503),
        "/status": _get("Height, view, peers, validators, app hash, version.", _ok("status")),
        "/tx": {
            "post": {
                "summary": "Submit a signed transaction (optionally wait for its commit).",
                "requestBody": {"required": True, "content": _content(submission)},
                "responses": {
                    "200": _ok("its hash and status (and, once committed, the receipt)"),
                    **_errors(400, 422, 429),
                },
                "x-suanpan-operations": operations_listed,
            }
        },
        "/txs": {
            "post": {
                "summary": "Submit many signed transactions (JSON hex list or msgpack).",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "txs": {"type": "array", "items": {"type": "string"}}
                                },
                                "required": ["txs"],
                            }
                        },
                        "application/msgpack": {"schema": {}},
                    },
                },
                "responses": {"200": _ok("accepted count and refusals"), **_errors(400, 429)},
            }
        },
        "/tx/{hash}": _get(
            "A transaction's status, block and receipt.",
            _ok("the transaction"),
            403,
            404,
            parameters=[hash_parameter],
        ),
        "/block/latest": _get("The last committed block and its certificate.", _ok("block")),
        "/block/{height}": _get(
            "A block by height (?transactions=1: bodies, nodes only).",
            _ok("block"),
            403,
            404,
            parameters=[
                _parameter("height", "path", {"type": "integer", "minimum": 1}, "height"),
                _parameter(
                    "transactions", "query", {"type": "string", "enum": ["0", "1"]}, "bodies"
                ),
            ],
        ),
        "/block/hash/{hash}": _get(
            "A block by hash.", _ok("block"), 404, parameters=[hash_parameter]
        ),
        "/query": {
            "post": {
                "summary": "Ask an app a read-only question (prove: with Merkle proofs).",
                "requestBody": {"required": True, "content": _content(_ref("QueryRequest"))},
                "responses": {
                    "200": _ok(
                        "the result (and proof)",
                        {
                            "type": "object",
                            "properties": {"result": _ref("Value"), "proof": {"type": "object"}},
                            "required": ["result"],
                        },
                    ),
                    **_errors(400, 403, 404, 422, 503),
                },
            }
        },
        "/account/{public_key}": _get(
            "The nonce the sender's next transaction needs.",
            _ok("next nonce"),
            403,
            parameters=[
                _parameter(
                    "public_key", "path", {"type": "string", "pattern": _HEX_32}, "the sender"
                )
            ],
        ),
        "/evidence": _get("Equivocation evidence recorded by this node.", _ok("evidence")),
        "/blocks": _get(
            "Long poll: blocks from a height.",
            _ok("blocks"),
            400,
            parameters=[
                _parameter("from", "query", {"type": "integer", "minimum": 1}, "first height"),
                _parameter("limit", "query", {"type": "integer", "minimum": 1}, "at most"),
                _parameter("timeout_ms", "query", {"type": "integer", "minimum": 0}, "wait"),
            ],
        ),
        "/stream": {
            "get": {
                "summary": "NDJSON: one line per committed block.",
                "responses": {
                    "200": {
                        "description": "a stream",
                        "content": {"application/x-ndjson": {"schema": {}}},
                    },
                    **_errors(),
                },
            }
        },
        "/events": {
            "get": {
                "summary": "Server-Sent Events: blocks, receipts and app events, scoped.",
                "responses": {
                    "200": {
                        "description": "a stream",
                        "content": {"text/event-stream": {"schema": {}}},
                    },
                    **_errors(400, 403),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition.",
                "responses": {
                    "200": {
                        "description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(),
                },
            }
        },
        "/openapi.json": _get("This document.", _ok("the OpenAPI document")),
    }
    app_lines = "".join(f"\n* **{app}**: {schema.help}" for app, schema in apps)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": "The client API of a Suanpan node. Requests may be signed "
            "(suanpan-key, suanpan-time-ms, suanpan-nonce, suanpan-signature headers) so the "
            "apps' read rules know who asks. Apps:" + (app_lines or " none"),
        },
        "paths": paths,
        "components": {"schemas": components},
    }
