"""JSON <-> canonical ``Value`` conversion for files and the client API.

JSON has no byte strings, and the canonical value model has no floats, so the two meet through
one unambiguous convention used everywhere an operator or client writes or reads values
(genesis app state, transaction arguments in the CLI, API responses):

* ``bytes`` is the object ``{"$bytes": "<hex>"}``;
* a map with bytes keys is the object ``{"$map": [[key, value], ...]}``;
* everything else (null, booleans, integers, strings, arrays, objects with string keys) is
  itself. Floats are refused: amounts are integers in minor units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from consensus.codec import Value

__all__ = ["JsonValueError", "from_json", "to_json"]

# Genesis documents and API bodies are shallow; this bounds recursion on hostile input.
_DEPTH_MAX: Final = 32

JsonType = None | bool | int | float | str | list["JsonType"] | dict[str, "JsonType"]


class JsonValueError(ValueError):
    """A JSON document that has no canonical ``Value``; the message names the path."""


def from_json(document: object, path: str = "$") -> Value:
    """Convert parsed JSON to a canonical ``Value``; raise ``JsonValueError`` naming the path."""
    return _from_json(document, path, 0)


def _from_json(document: object, path: str, depth: int) -> Value:
    if depth > _DEPTH_MAX:
        raise JsonValueError(f"{path}: nested deeper than {_DEPTH_MAX}")
    if document is None or isinstance(document, bool | int | str):
        return document
    if isinstance(document, float):
        raise JsonValueError(f"{path}: floats are not allowed; use integers in minor units")
    if isinstance(document, list):
        return tuple(_from_json(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(document))
    if isinstance(document, dict):
        if set(document) == {"$bytes"}:
            text = document["$bytes"]
            if not isinstance(text, str):
                raise JsonValueError(f"{path}: $bytes must be a hex string")
            try:
                return bytes.fromhex(text)
            except ValueError:
                raise JsonValueError(f"{path}: $bytes is not valid hex") from None
        if set(document) == {"$map"}:
            entries = document["$map"]
            if not isinstance(entries, list):
                raise JsonValueError(f"{path}: $map must be a list of [key, value] pairs")
            result: dict[bytes, Value] = {}
            for i, entry in enumerate(entries):
                if not isinstance(entry, list) or len(entry) != 2:
                    raise JsonValueError(f"{path}.$map[{i}]: expected [key, value]")
                key = _from_json(entry[0], f"{path}.$map[{i}][0]", depth + 1)
                if not isinstance(key, bytes):
                    raise JsonValueError(f"{path}.$map[{i}][0]: $map keys must be $bytes")
                result[key] = _from_json(entry[1], f"{path}.$map[{i}][1]", depth + 1)
            return result
        converted: dict[str, Value] = {}
        for key, item in document.items():
            if not isinstance(key, str):
                raise JsonValueError(f"{path}: object keys must be strings")
            converted[key] = _from_json(item, f"{path}.{key}", depth + 1)
        return converted
    raise JsonValueError(f"{path}: unsupported JSON type {type(document).__name__}")


def to_json(value: Value) -> JsonType:
    """Convert a ``Value`` to JSON-serialisable data (inverse of ``from_json``)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, Mapping):
        if all(isinstance(key, str) for key in value):
            return {str(key): to_json(item) for key, item in value.items()}
        return {
            "$map": [
                [to_json(key), to_json(item)]
                for key, item in sorted(value.items(), key=lambda kv: _key_bytes(kv[0]))
            ]
        }
    if isinstance(value, Sequence):
        return [to_json(item) for item in value]
    raise TypeError(f"not a canonical value: {type(value).__name__}")


def _key_bytes(key: object) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode("utf-8")
