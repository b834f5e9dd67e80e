"""TLS for the client API: the server context from the operator's certificate, key and
(optionally) the CAs whose client certificates it requires (mutual TLS).

Paths in ``[rpc]`` are relative to the node's home. ``server_context`` loads and checks every
file up front and raises ``TlsError`` naming the file and what is wrong with it, so ``suanpan
config check`` reports a bad certificate before the node starts, not at the first client.
The context requires TLS 1.2 or newer.

``certificate_expiry`` reads when the certificate stops being valid (its ``notAfter``), from
the file's first PEM certificate, walking just enough of its DER encoding: ``config check``
warns about one that expires within ``EXPIRY_WARNING_DAYS`` or has expired (a warning, not a
problem: the API's certificate is no reason to keep a validator from voting), and a node
exports it for an alert to fire well before clients start refusing the node.
"""

from __future__ import annotations

import calendar
import ssl
import time
from pathlib import Path
from typing import Final

from node.config import RPCConfig

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "TlsError",
    "api_certificate",
    "certificate_expiry",
    "read_expiry",
    "server_context",
]

# ``config check`` warns about a certificate that expires within this many days.
EXPIRY_WARNING_DAYS: Final = 14
# DER tags met on the way to the validity period.
_SEQUENCE: Final = 0x30
_EXPLICIT_VERSION: Final = 0xA0
_UTC_TIME: Final = 0x17
_GENERALIZED_TIME: Final = 0x18
_PEM_BEGIN: Final = "-----BEGIN CERTIFICATE-----"
_PEM_END: Final = "-----END CERTIFICATE-----"


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


def api_certificate(home: Path, rpc: RPCConfig) -> Path | None:
    """The API's certificate file (``[rpc] tls_certificate_file``, relative to ``home``), or
    None with TLS off; ``TlsError`` when it is not there."""
    if not rpc.tls_certificate_file:
        return None
    return _file(home, "[rpc] tls_certificate_file", rpc.tls_certificate_file)


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


def certificate_expiry(path: Path) -> int:
    """When the first certificate of PEM file ``path`` stops being valid (its ``notAfter``),
    in Unix seconds; ``ValueError`` naming what is wrong for a file that holds none, or one
    that is not a well-formed certificate that far."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read it: {error}") from None
    begin = text.find(_PEM_BEGIN)
    end = text.find(_PEM_END, begin)
    if begin < 0 or end < 0:
        raise ValueError("holds no PEM certificate")
    try:
        der = ssl.PEM_cert_to_DER_cert(text[begin : end + len(_PEM_END)])
    except ValueError as error:
        raise ValueError(f"the certificate is not base64: {error}") from None
    _, start, _ = _element(der, 0, _SEQUENCE, "certificate")
    _, at, tbs_end = _element(der, start, _SEQUENCE, "tbsCertificate")
    if at < tbs_end and der[at] == _EXPLICIT_VERSION:
        at = _element(der, at, _EXPLICIT_VERSION, "version")[2]
    for name in ("serialNumber", "signature", "issuer"):
        at = _element(der, at, None, name)[2]
    _, at, validity_end = _element(der, at, _SEQUENCE, "validity")
    at = _element(der, at, None, "notBefore")[2]
    tag, value_start, value_end = _element(der, at, None, "notAfter")
    if value_end > validity_end:
        raise ValueError("the validity period runs past its certificate")
    return _der_time(tag, der[value_start:value_end])


def read_expiry(path: Path, now_s: float) -> tuple[int | None, str | None]:
    """The certificate in ``path``: when it expires (``certificate_expiry``; None when that
    cannot be read), and a sentence to warn with when it has expired, expires within
    ``EXPIRY_WARNING_DAYS`` of ``now_s`` or cannot be read (else None). One read of the file."""
    try:
        expires = certificate_expiry(path)
    except ValueError as error:
        return None, f"[rpc] tls_certificate_file {path}: its expiry cannot be read ({error})"
    left_days = (expires - now_s) / 86_400
    when = _date(expires)
    if left_days < 0:
        return expires, (
            f"[rpc] tls_certificate_file {path} expired on {when}: clients that check it refuse"
            " the API; renew it (replace the files, then SIGHUP the node)"
        )
    if left_days < EXPIRY_WARNING_DAYS:
        return expires, (
            f"[rpc] tls_certificate_file {path} expires on {when}, in {left_days:.1f} days;"
            " renew it (replace the files, then SIGHUP the node)"
        )
    return expires, None


def _date(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _element(der: bytes, at: int, tag: int | None, name: str) -> tuple[int, int, int]:
    """The DER element at ``at``: (its tag, where its value starts, where it ends); ``tag``,
    when given, is the one it must have. ``ValueError`` naming ``name`` otherwise."""
    if at + 2 > len(der):
        raise ValueError(f"it ends before its {name}")
    found = der[at]
    if tag is not None and found != tag:
        raise ValueError(f"its {name} has tag {found:#04x}, not {tag:#04x}")
    length = der[at + 1]
    at += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or at + count > len(der):
            raise ValueError(f"its {name} has a length DER does not allow")
        length = int.from_bytes(der[at : at + count], "big")
        at += count
    if at + length > len(der):
        raise ValueError(f"its {name} runs past the end")
    return found, at, at + length


def _der_time(tag: int, value: bytes) -> int:
    """A DER UTCTime (``YYMMDDHHMMSSZ``, years 1950-2049 as RFC 5280 reads them) or
    GeneralizedTime (``YYYYMMDDHHMMSSZ``) in Unix seconds."""
    digits = {_UTC_TIME: 12, _GENERALIZED_TIME: 14}.get(tag)
    if digits is None or len(value) != digits + 1:
        raise ValueError(f"its notAfter is not a DER time (tag {tag:#04x}, {len(value)} bytes)")
    if not value[:digits].isdigit() or value[digits:] != b"Z":
        raise ValueError(f"its notAfter {value!r} is not a DER time")
    text = value[:digits].decode("ascii")
    if tag == _UTC_TIME:
        year = int(text[:2])
        year += 1900 if year >= 50 else 2000
        text = text[2:]
    else:
        year = int(text[:4])
        text = text[4:]
    month, day, hour, minute, second = (int(text[i : i + 2]) for i in range(0, 10, 2))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        raise ValueError(f"its notAfter {value!r} is not a date")
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
