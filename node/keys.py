"""Key generation and key files.

Key files are JSON, shaped like CometBFT's ``priv_validator_key.json`` so operators recognise
them::

    {
      "type": "suanpan/ed25519",
      "address": "<hex of the first 20 bytes of SHA-256(public key)>",
      "public_key": "<base64 of 32 bytes>",
      "private_key": "<base64 of the 32-byte seed>"
    }

They are written atomically with mode 0600. Loading refuses a file that group or others can
read, a file that is not valid JSON, a key of the wrong length, and a public key that does not
belong to the private key, each with a ``KeyFileError`` that names the file and the problem.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Final

import nacl.utils

from consensus.crypto import PUBLIC_KEY_BYTES, SEED_BYTES, PrivateKey, hash_bytes

__all__ = [
    "KEY_TYPE",
    "KeyFileError",
    "address_of",
    "generate_private_key",
    "load_key_file",
    "load_public_key_file",
    "save_key_file",
]

KEY_TYPE: Final = "suanpan/ed25519"
# A key file is a few hundred bytes; anything much larger is not a key file.
_KEY_FILE_BYTES_MAX: Final = 4096


class KeyFileError(ValueError):
    """A key file could not be used; the message names the file and the problem."""


def generate_private_key() -> PrivateKey:
    """A fresh ed25519 key from the operating system's random source."""
    return PrivateKey(nacl.utils.random(SEED_BYTES))


def address_of(public_key: bytes) -> str:
    """Short hex identifier of a public key (CometBFT-style address)."""
    return hash_bytes(public_key)[:20].hex()


def save_key_file(path: Path, key: PrivateKey, *, overwrite: bool = False) -> None:
    """Write ``key`` to ``path`` with mode 0600, atomically (temp file, fsync, rename),
    creating missing directories; ``KeyFileError`` names the path when it cannot be written."""
    document = {
        "type": KEY_TYPE,
        "address": address_of(key.public_key),
        "public_key": base64.b64encode(key.public_key).decode("ascii"),
        "private_key": base64.b64encode(key.seed).decode("ascii"),
    }
    if path.is_dir():
        raise KeyFileError(f"{path}: is a directory; give the key file's path")
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key")
    temporary = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(descriptor, 0o600)
            os.write(descriptor, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        where = error.filename if isinstance(error.filename, str) else path
        raise KeyFileError(
            f"{path}: cannot write key file ({where}: {error.strerror or error})"
        ) from None


def load_key_file(path: Path) -> PrivateKey:
    """Load a private key file, refusing unsafe permissions and malformed contents."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read key file: {error.strerror}") from None
    # Recognise the file first, so a file that is not a key gets that error, not "chmod".
    document = _read_document(path)
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise KeyFileError(
            f"{path}: private key file is readable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
        )
    public_key = _field_bytes(path, document, "public_key", PUBLIC_KEY_BYTES)
    seed = _field_bytes(path, document, "private_key", SEED_BYTES)
    key = PrivateKey(seed)
    if key.public_key != public_key:
        raise KeyFileError(f"{path}: public_key does not belong to private_key")
    return key


def load_public_key_file(path: Path) -> bytes:
    """The public key from a key file (no permission check: the public half is not secret)."""
    return _field_bytes(path, _read_document(path), "public_key", PUBLIC_KEY_BYTES)


def _read_document(path: Path) -> dict[str, object]:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read key file: {error.strerror}") from None
    if len(raw) > _KEY_FILE_BYTES_MAX:
        raise KeyFileError(f"{path}: {len(raw)} bytes is too large for a key file")
    try:
        document = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise KeyFileError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as error:
        # UnicodeDecodeError, JSONDecodeError, and an integer too long for int() (4300 digits).
        raise KeyFileError(f"{path}: not valid JSON ({error}); the file may be truncated") from None
    if not isinstance(document, dict):
        raise KeyFileError(f"{path}: expected a JSON object")
    if document.get("type") != KEY_TYPE:
        raise KeyFileError(f"{path}: type must be {KEY_TYPE!r}, found {document.get('type')!r}")
    return document


def _field_bytes(path: Path, document: dict[str, object], name: str, length: int) -> bytes:
    text = document.get(name)
    if not isinstance(text, str):
        raise KeyFileError(f"{path}: missing {name!r} (base64 string)")
    try:
        value = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise KeyFileError(f"{path}: {name!r} is not valid base64") from None
    if len(value) != length:
        raise KeyFileError(f"{path}: {name!r} is {len(value)} bytes, expected {length}")
    return value
