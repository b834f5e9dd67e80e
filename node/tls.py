"""TLS for the client API: the server context from the operator's certificate, key and
(optionally) the CAs whose client certificates it requires (mutual TLS).

Paths in ``[rpc]`` are relative to the node's home. ``server_context`` loads and checks every
file up front and raises ``TlsError`` naming the file and what is wrong with it, so ``suanpan
config check`` reports a bad certificate before the node starts, not at the first client.
The context requires TLS 1.2 or newer.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from node.config import RPCConfig

__all__ = ["TlsError", "server_context"]


class TlsError(ValueError):
    """A TLS file that cannot be used: ``key`` is the config key, the message says why."""

    def __init__(self, key: str, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.key = key
        self.path = path
        self.problem = problem


def _file(home: Path, key: str, name: str) -> Path:
    path = Path(name)
    try:
        path = path.expanduser()
    except RuntimeError:  # "~user/..." of no such user
        raise TlsError(key, path, "no such user's home directory") from None
    if not path.is_absolute():
        path = home / path
    try:
        found = path.is_file()
    except OSError as error:  # e.g. a name too long; is_file only swallows "not found"
        raise TlsError(key, path, error.strerror or str(error)) from None
    if not found:
        raise TlsError(key, path, "no such file")
    return path


class _EncryptedKeyError(Exception):
    """OpenSSL asked for a passphrase: the key file is encrypted."""


def _no_passphrase() -> bytes:
    raise _EncryptedKeyError


def server_context(home: Path, rpc: RPCConfig) -> ssl.SSLContext | None:
    """The server TLS context ``[rpc]`` asks for, or None when TLS is off."""
    if not rpc.tls_certificate_file:
        return None
    certificate = _file(home, "[rpc] tls_certificate_file", rpc.tls_certificate_file)
    key = _file(home, "[rpc] tls_key_file", rpc.tls_key_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # OpenSSL asks a terminal for an encrypted key's passphrase (and, with none, fails
        # as if the certificate were unreadable); a node has nobody to ask.
        context.load_cert_chain(certificate, key, password=_no_passphrase)
    except _EncryptedKeyError:
        raise TlsError(
            "[rpc] tls_key_file",
            key,
            "the key is encrypted with a passphrase, which the node cannot ask for: give it"
            " the key unencrypted, readable only by the node's user (chmod 600)",
        ) from None
    except ssl.SSLError as error:
        raise TlsError(
            "[rpc] tls_key_file",
            key,
            f"certificate {certificate.name} and this key do not load together"
            f" ({error.reason or error})",
        ) from None
    except OSError as error:
        raise TlsError("[rpc] tls_certificate_file", certificate, str(error)) from None
    if rpc.tls_client_ca_file:
        authorities = _file(home, "[rpc] tls_client_ca_file", rpc.tls_client_ca_file)
        try:
            context.load_verify_locations(cafile=authorities)
        except (ssl.SSLError, OSError) as error:
            raise TlsError(
                "[rpc] tls_client_ca_file",
                authorities,
                f"not a PEM file of CA certificates ({getattr(error, 'reason', None) or error})",
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context
