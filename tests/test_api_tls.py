"""The client API over TLS, with and without client certificates, and ``config check`` on the
TLS files. Certificates are made in the test with the ``openssl`` command line (the test is
skipped, saying so, on a machine without it)."""

from __future__ import annotations

import calendar
import logging
import os
import shutil
import signal
import ssl
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from node import runtime
from node.cli import main
from node.client.client import ApiError, Client, tls_context
from node.config import RPCConfig
from node.home import check_home, load_home, write_config
from node.http import HttpLimits, Request, Response, json_response, serve_http
from node.testnet.testnet import create_testnet
from node.tls import TlsError, certificate_expiry, read_expiry, server_context

EC = ("ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")
RSA = ("rsa:2048",)

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None,
    reason="the openssl command line is needed to make test certificates",
)


def make_certificate(
    directory: Path, name: str, *, days: int = 2, algorithm: tuple[str, ...] = EC
) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files)."""
    certificate, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", *algorithm),
            *("-nodes", "-days", str(days)),
            *("-keyout", str(key), "-out", str(certificate)),
            *("-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    return certificate, key


async def echo(request: Request) -> Response:
    return json_response(200, {"path": request.path})


async def serve(nursery: trio.Nursery, rpc: RPCConfig, home: Path) -> int:
    context = server_context(home, rpc)
    assert context is not None
    port: int = await nursery.start(
        lambda task_status: serve_http(
            echo,
            "127.0.0.1",
            0,
            HttpLimits(request_timeout_s=5),
            tls=context,
            task_status=task_status,
        )
    )
    return port


def get(client: Client) -> tuple[int, bytes]:
    try:
        return client.request_raw("GET", "/ok", signed=False)
    finally:
        client.close()


async def test_the_api_serves_over_tls_and_refuses_plain_http(tmp_path: Path) -> None:
    certificate, key = make_certificate(tmp_path, "node")
    rpc = RPCConfig(tls_certificate_file=certificate.name, tls_key_file=str(key))
    async with trio.open_nursery() as nursery:
        port = await serve(nursery, rpc, tmp_path)
        secure = Client(f"https://127.0.0.1:{port}", tls=tls_context(certificate))
        status, body = await trio.to_thread.run_sync(get, secure)
        assert status == 200
        assert b'"/ok"' in body
        # A client that does not trust the certificate is refused by its own TLS check.
        with pytest.raises(ApiError, match="CERTIFICATE_VERIFY_FAILED"):
            await trio.to_thread.run_sync(get, Client(f"https://127.0.0.1:{port}"))
        # Plain HTTP to the TLS port gets no HTTP answer.
        with pytest.raises(ApiError):
            await trio.to_thread.run_sync(get, Client(f"127.0.0.1:{port}", timeout_s=10))
        nursery.cancel_scope.cancel()


async def test_mutual_tls_requires_a_client_certificate_from_the_configured_ca(
    tmp_path: Path,
) -> None:
    certificate, key = make_certificate(tmp_path, "node")
    client_certificate, client_key = make_certificate(tmp_path, "back-office")
    stranger_certificate, stranger_key = make_certificate(tmp_path, "stranger")
    rpc = RPCConfig(
        tls_certificate_file=str(certificate),
        tls_key_file=str(key),
        tls_client_ca_file=str(client_certificate),
    )
    async with trio.open_nursery() as nursery:
        port = await serve(nursery, rpc, tmp_path)
        address = f"https://127.0.0.1:{port}"
        trusted = Client(address, tls=tls_context(certificate, client_certificate, client_key))
        status, _ = await trio.to_thread.run_sync(get, trusted)
        assert status == 200
        for context in (
            tls_context(certificate),
            tls_context(certificate, stranger_certificate, stranger_key),
        ):
            with pytest.raises(ApiError):
                await trio.to_thread.run_sync(get, Client(address, tls=context, timeout_s=10))
        nursery.cancel_scope.cancel()


def test_config_check_names_each_unusable_tls_file(tmp_path: Path) -> None:
    info = create_testnet(tmp_path / "net", 1)
    home = info.homes[0]
    config = load_home(home).config
    certificate, key = make_certificate(home, "node")
    _, other_key = make_certificate(home, "other")
    not_pem = home / "notes.txt"
    not_pem.write_text("not a certificate\n")
    cases = {
        "[rpc] tls_certificate_file": replace(
            config.rpc, tls_certificate_file="missing.pem", tls_key_file=key.name
        ),
        "[rpc] tls_key_file": replace(
            config.rpc, tls_certificate_file=certificate.name, tls_key_file=other_key.name
        ),
        "[rpc] tls_client_ca_file": replace(
            config.rpc,
            tls_certificate_file=certificate.name,
            tls_key_file=key.name,
            tls_client_ca_file=not_pem.name,
        ),
    }
    for expected_key, rpc in cases.items():
        write_config(home, replace(config, rpc=rpc))
        loaded, problems = check_home(home)
        assert loaded is None, expected_key
        assert [problem.key for problem in problems] == [expected_key], problems
    write_config(
        home, replace(config, rpc=replace(config.rpc, tls_certificate_file=certificate.name))
    )
    _, problems = check_home(home)
    assert [problem.key for problem in problems] == ["[rpc] tls_key_file"]  # the missing one
    assert "both a certificate and its key" in problems[0].problem
    write_config(
        home,
        replace(
            config,
            rpc=replace(config.rpc, tls_certificate_file=certificate.name, tls_key_file=key.name),
        ),
    )
    loaded, problems = check_home(home)
    assert loaded is not None, problems


def test_an_encrypted_key_is_named_not_prompted_for(tmp_path: Path) -> None:
    """OpenSSL would ask a terminal for the passphrase (and, without one, blame the
    certificate); the node names the key file and says it is encrypted."""
    certificate, key = tmp_path / "node.pem", tmp_path / "node-key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec"),
            *("-pkeyopt", "ec_paramgen_curve:prime256v1", "-passout", "pass:secret"),
            *("-days", "2", "-keyout", str(key), "-out", str(certificate), "-subj", "/CN=node"),
        ],
        check=True,
        capture_output=True,
    )
    assert key.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    rpc = RPCConfig(tls_certificate_file=certificate.name, tls_key_file=key.name)
    with pytest.raises(TlsError) as refused:
        server_context(tmp_path, rpc)
    assert refused.value.key == "[rpc] tls_key_file"
    assert refused.value.path == key
    assert "encrypted with a passphrase" in refused.value.problem


async def test_a_renewed_certificate_is_served_after_sighup_and_one_that_fails_is_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A running node's API certificate renewed in place (same paths) and the node sent
    SIGHUP: new connections get the new certificate. Files that do not load then leave the
    renewed one serving, and say why (``api_tls_reload_failed``)."""
    info = create_testnet(tmp_path / "net", 1, chain_id="tls-reload-net")
    home = info.homes[0]
    config = load_home(home).config
    old_certificate, old_key = make_certificate(tmp_path, "old")
    new_certificate, new_key = make_certificate(tmp_path, "new")
    served_certificate, served_key = home / "api.pem", home / "api-key.pem"
    shutil.copy(old_certificate, served_certificate)
    shutil.copy(old_key, served_key)
    served_key.chmod(0o600)
    rpc = replace(config.rpc, tls_certificate_file="api.pem", tls_key_file="api-key.pem")
    write_config(home, replace(config, rpc=rpc))
    caplog.set_level(logging.INFO, logger="suanpan.api")

    async def reloaded(event: str) -> None:
        """SIGHUP to this process (the node's), then until the node logs ``event``."""
        seen = len([r for r in caplog.records if r.getMessage() == event])
        os.kill(os.getpid(), signal.SIGHUP)
        with trio.fail_after(30):
            while len([r for r in caplog.records if r.getMessage() == event]) == seen:  # noqa: ASYNC110
                await trio.sleep(0.02)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            node: runtime.Node = await nursery.start(runtime.Node(load_home(home)).run)
            address = f"https://127.0.0.1:{node.ports['rpc']}"

            async def status(trusted: Path) -> int:
                client = Client(address, tls=tls_context(trusted), timeout_s=10)
                try:
                    answer = await trio.to_thread.run_sync(
                        lambda: client.request_raw("GET", "/healthz", signed=False)
                    )
                finally:
                    client.close()
                return answer[0]

            assert await status(old_certificate) in (200, 503)
            # Two days of validity: the start says so.
            expiring = [
                r for r in caplog.records if r.getMessage() == "api_tls_certificate_expiring"
            ]
            assert len(expiring) == 1
            assert "in 2.0 days" in expiring[0].__dict__["warning"]
            assert await expiry_exported(address, old_certificate) == certificate_expiry(
                old_certificate
            )
            shutil.copy(new_certificate, served_certificate)
            shutil.copy(new_key, served_key)
            await reloaded("api_tls_reloaded")
            assert await status(new_certificate) in (200, 503)
            with pytest.raises(ApiError, match="CERTIFICATE_VERIFY_FAILED"):
                await status(old_certificate)
            assert await expiry_exported(address, new_certificate) == certificate_expiry(
                new_certificate
            )
            served_certificate.write_text("not a certificate\n")
            await reloaded("api_tls_reload_failed")
            failed = [r for r in caplog.records if r.getMessage() == "api_tls_reload_failed"]
            assert failed[-1].__dict__["key"] == "[rpc] tls_key_file"
            assert failed[-1].__dict__["path"] == str(served_key)
            assert await status(new_certificate) in (200, 503)  # the renewed one serves on
            nursery.cancel_scope.cancel()


async def expiry_exported(address: str, trusted: Path) -> float:
    """The node's ``suanpan_api_tls_certificate_expiry_timestamp_seconds``, read over TLS."""
    client = Client(address, tls=tls_context(trusted), timeout_s=10)
    try:
        _, body = await trio.to_thread.run_sync(
            lambda: client.request_raw("GET", "/metrics", signed=False)
        )
    finally:
        client.close()
    name = b"suanpan_api_tls_certificate_expiry_timestamp_seconds "
    line = next(line for line in body.splitlines() if line.startswith(name))
    return float(line[len(name) :])


def openssl_expiry(certificate: Path) -> int:
    """What ``openssl x509 -enddate`` says of ``certificate``, in Unix seconds."""
    said = subprocess.run(
        ["openssl", "x509", "-enddate", "-noout", "-in", str(certificate)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert said.startswith("notAfter="), said
    assert said.endswith(" GMT"), said
    return calendar.timegm(time.strptime(said[len("notAfter=") : -4], "%b %d %H:%M:%S %Y"))


@pytest.mark.parametrize(
    ("algorithm", "days"),
    [(EC, 2), (RSA, 30), (EC, 10_000)],  # 10,000 days: past 2049, a GeneralizedTime
    ids=["ec-2-days", "rsa-30-days", "ec-past-2049"],
)
def test_the_certificate_expiry_is_what_openssl_reads(
    tmp_path: Path, algorithm: tuple[str, ...], days: int
) -> None:
    certificate, _ = make_certificate(tmp_path, "node", days=days, algorithm=algorithm)
    expires = certificate_expiry(certificate)
    assert expires == openssl_expiry(certificate)
    assert abs(expires - (time.time() + days * 86_400)) < 600


def test_config_check_warns_of_a_certificate_that_expires_soon_or_has_expired(
    tmp_path: Path,
) -> None:
    certificate, _ = make_certificate(tmp_path, "node", days=2)
    expires = certificate_expiry(certificate)
    assert read_expiry(certificate, expires - 30 * 86_400) == (expires, None)
    _, soon = read_expiry(certificate, expires - 2 * 86_400)
    assert soon is not None
    assert "expires on" in soon
    assert "in 2.0 days" in soon
    _, gone = read_expiry(certificate, expires + 1)
    assert gone is not None
    assert "expired on" in gone
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    no_date, unread = read_expiry(not_pem, time.time())
    assert no_date is None
    assert unread is not None
    assert "holds no PEM certificate" in unread
    # The command line: the home's certificate expires in 2 days.
    info = create_testnet(tmp_path / "net", 1)
    home = info.homes[0]
    config = load_home(home).config
    served, key = make_certificate(home, "api", days=2)
    rpc = replace(config.rpc, tls_certificate_file=served.name, tls_key_file=key.name)
    write_config(home, replace(config, rpc=rpc))
    result = CliRunner().invoke(main, ["config", "check", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert "warning: [rpc] tls_certificate_file" in result.output
    valid_until = time.strftime("%Y-%m-%d", time.gmtime(certificate_expiry(served)))
    assert f"certificate valid until {valid_until}" in result.output


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_damaged_certificate_is_a_value_error_never_a_crash(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    der = _reference_der(tmp_path_factory)
    damaged = bytearray(der)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(damaged)))
    pem = ssl.DER_cert_to_PEM_cert(bytes(damaged[:cut]))
    path = tmp_path_factory.mktemp("damaged") / "cert.pem"
    path.write_text(pem)
    outcome: int | str
    try:
        outcome = certificate_expiry(path)
    except ValueError as error:
        outcome = str(error)
    assert outcome != ""  # an expiry, or a sentence naming what is wrong


def test_a_truncated_certificate_never_reads_as_one(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    der = _reference_der(tmp_path_factory)
    path = tmp_path_factory.mktemp("truncated") / "cert.pem"
    for cut in range(len(der)):
        path.write_text(ssl.DER_cert_to_PEM_cert(der[:cut]))
        with pytest.raises(ValueError, match=r"runs past the end|ends before|holds no|length"):
            certificate_expiry(path)
    path.write_text(ssl.DER_cert_to_PEM_cert(der))
    assert certificate_expiry(path) > time.time()


_REFERENCE: dict[str, bytes] = {}


def _reference_der(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """One real certificate's DER, made once."""
    if "der" not in _REFERENCE:
        certificate, _ = make_certificate(tmp_path_factory.mktemp("reference"), "node")
        _REFERENCE["der"] = ssl.PEM_cert_to_DER_cert(certificate.read_text())
    return _REFERENCE["der"]
