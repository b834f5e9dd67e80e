"""Loads the Merkle tree's update in C (``apps/_merkletree.c``) and the SHA-256 it hashes with.

The extension is built by the install with the compiled modules (``setup.py``). It hashes with
OpenSSL's ``SHA256_Init``/``SHA256_Update``/``SHA256_Final``, taken from the library Python's
own ``hashlib`` loaded (so nothing new is linked, and the hashes are hashlib's), and checks them
against ``hashlib`` before use. ``apps.merkle`` then compares the extension's update with its
own on a fixed workload before it uses it, and keeps its own (the same results, slower) when
the extension is not built, OpenSSL's functions are not found, either check fails, or the
node's import guard refuses the extension (``SUANPAN_PURE_PYTHON=1``: ``node.native``).
Loading reads no state and no clock; the update itself is as deterministic as the Python one.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["Loaded", "NativeUpdate", "TreeRead", "load"]

_SYMBOLS: Final = ("SHA256_Init", "SHA256_Update", "SHA256_Final")

TreeRead = Callable[[bytes], bytes | None]
# (tree_node, the stored root slot, [(key, value or None)]) -> (new root slot, records by
# key, the same records sorted by key without the root slot's)
NativeUpdate = Callable[
    [TreeRead, bytes | None, list[tuple[bytes, bytes | None]]],
    tuple[bytes | None, dict[bytes, bytes | None], list[tuple[bytes, bytes | None]]],
]


@dataclass(frozen=True, slots=True)
class Loaded:
    """The extension's update, ready to use (None: not available), and what was loaded or
    why not."""

    update: NativeUpdate | None
    status: str
    # Keeps the library holding the hash functions loaded for as long as the update is used.
    library: ctypes.CDLL | None = None


def _unavailable(reason: str) -> Loaded:
    return Loaded(None, f"python ({reason})")


def load() -> Loaded:
    """The extension with its hash functions configured and checked, or why not."""
    try:
        native = importlib.import_module("apps._merkletree")
    except ModuleNotFoundError:
        return _unavailable("apps._merkletree is not built")
    except ImportError as error:
        # The node's import guard refuses it with SUANPAN_PURE_PYTHON=1 (``node.native``).
        return _unavailable(str(error))
    try:
        hashlib_module = importlib.import_module("_hashlib")
        library = ctypes.CDLL(hashlib_module.__file__)
        addresses = [
            ctypes.cast(getattr(library, name), ctypes.c_void_p).value for name in _SYMBOLS
        ]
    except (ImportError, OSError, AttributeError, TypeError) as error:
        return _unavailable(f"OpenSSL's SHA-256 functions were not found: {error}")
    if not all(addresses):
        return _unavailable("OpenSSL's SHA-256 functions have no address")
    native.configure(*addresses)
    for sample in (b"", b"abc", bytes(range(256)) * 5):
        if native.digest(sample) != hashlib.sha256(sample).digest():
            return _unavailable("OpenSSL's SHA-256 through the extension differs from hashlib")
    update: NativeUpdate = native.update
    return Loaded(update, "native", library)
