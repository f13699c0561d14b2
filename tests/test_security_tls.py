"""checks/security TLS: real TLS servers on loopback with certificates made here; each fault fails its check.

The servers are Python ``ssl`` servers (HTTP over TLS) in this process's threads; the checks run in
a pytester subprocess and handshake with them through sslyze. The faults are real: a certificate
that expires tomorrow, a self-signed one, one for another name, a server that still accepts TLS
1.0 (verified here with a TLS 1.0 handshake of our own), an RSA 1024 key, a SHA-1 signature, an
https server without HSTS, a closed port; plus a scratch PostgreSQL with ssl on (its SSLRequest
STARTTLS path) and certificate files on disk.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import shutil
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from opsverify.errors import ProfileError
from opsverify.localserver.net import free_port
from opsverify.localserver.postgres import Cluster
from opsverify.profile import Profile, load_profile

Run = Callable[..., Any]
Variant = Callable[..., Path]
TLS = "security/test_tls.py"
FILES = "security/test_certificate_files.py"
HSTS = "test_tls.py::test_hsts_is_long_enough[{}]"
NOW = dt.datetime.now(dt.UTC)
Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
TLS_CHECKS = (
    "test_certificates_are_not_expiring", "test_chain_is_trusted", "test_certificate_matches_hostname",
    "test_legacy_protocols_are_refused", "test_no_weak_cipher_suites", "test_key_is_strong",
    "test_no_sha1_signature", "test_hsts_is_long_enough",
)
FILE_CHECKS = (
    "test_certificate_file_parses", "test_certificate_file_is_not_expiring", "test_certificate_file_chain_verifies",
    "test_certificate_file_matches_server_name", "test_certificate_file_key_is_strong",
    "test_certificate_file_has_no_sha1_signature",
)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, written as PEM files."""

    cert: x509.Certificate
    key: Key
    cert_file: Path
    key_file: Path


class Pki:
    """A CA of this test and the certificates it (or the leaf itself) signs, in ``directory``."""

    def __init__(self, directory: Path, name: str = "test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = self._write("ca", *self._ca(name))

    def _ca(self, name: str) -> tuple[x509.Certificate, Key]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cert, key

    def _write(self, stem: str, cert: x509.Certificate, key: Key) -> Issued:
        cert_file, key_file = self.directory / f"{stem}.pem", self.directory / f"{stem}-key.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_file.chmod(0o600)
        return Issued(cert, key, cert_file, key_file)

    def issue(
        self, stem: str, names: tuple[str, ...] = ("localhost", "127.0.0.1"), valid: dt.timedelta = dt.timedelta(90),
        key: Key | None = None, self_signed: bool = False,
    ) -> Issued:
        key = key or ec.generate_private_key(ec.SECP256R1())
        general: list[x509.GeneralName] = []
        for name in names:
            try:
                general.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                general.append(x509.DNSName(name))
        issuer, signer = (_name(names[0]), key) if self_signed else (self.ca.cert.subject, self.ca.key)
        cert = (
            x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(min(NOW, NOW + valid) - dt.timedelta(hours=1)).not_valid_after(NOW + valid)
            .add_extension(x509.SubjectAlternativeName(general), critical=False)
            .sign(signer, hashes.SHA256())
        )
        return self._write(stem, cert, key)

    def issue_sha1(self, stem: str) -> Issued:
        """A leaf signed by the CA with SHA-1: ``cryptography`` refuses to, the ``openssl`` command still does."""
        healthy = self.issue(f"{stem}-sha256")
        ext = self.directory / f"{stem}.ext"
        ext.write_text("subjectAltName = DNS:localhost, IP:127.0.0.1\n")
        cert_file = self.directory / f"{stem}.pem"
        csr = self.directory / f"{stem}.csr"
        subprocess.run(["openssl", "req", "-new", "-key", str(healthy.key_file), "-subj", "/CN=localhost",
                        "-out", str(csr)], check=True, capture_output=True, timeout=30)
        subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(self.ca.cert_file), "-CAkey",
                        str(self.ca.key_file), "-CAcreateserial", "-sha1", "-days", "90", "-extfile", str(ext),
                        "-out", str(cert_file)], check=True, capture_output=True, timeout=30)
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        assert cert.signature_hash_algorithm is not None
        assert cert.signature_hash_algorithm.name == "sha1"
        return Issued(cert, healthy.key, cert_file, healthy.key_file)


class _Handler(BaseHTTPRequestHandler):
    hsts: str | tuple[str, ...] | None = None

    def do_GET(self) -> None:
        self.send_response(200)
        for value in (self.hsts,) if isinstance(self.hsts, str) else self.hsts or ():
            self.send_header("Strict-Transport-Security", value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a scan's refused handshakes (an offered TLS 1.0, a cipher suite not served) are expected here


@dataclass
class TlsServer:
    port: int
    server: _Server


def server_context(issued: Issued, legacy: bool = False, weak: bool = False, ciphers: str | None = None,
                   also: Issued | None = None) -> ssl.SSLContext:
    """A server context: TLS 1.2+ with strong suites; ``legacy`` also TLS 1.0/1.1; ``weak`` loads weak keys."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if ciphers:  # NULL and anonymous suites: served at security level 0 only
        context.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    elif legacy:  # OpenSSL 3 refuses TLS 1.0 at security level 1 and up
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.set_ciphers("ECDHE+AES:!aNULL:@SECLEVEL=0")
    elif weak:  # an RSA 1024 key or a SHA-1 signature loads only at security level 0
        context.set_ciphers("ECDH+AESGCM:ECDH+CHACHA20:@SECLEVEL=0")
    context.load_cert_chain(issued.cert_file, issued.key_file)
    if also is not None:  # a second certificate of another key type (an RSA one beside the EC one)
        context.load_cert_chain(also.cert_file, also.key_file)
    return context


@pytest.fixture
def tls_server() -> Iterator[Callable[..., TlsServer]]:
    """``tls_server(issued, hsts=..., legacy=..., weak=...)``: an HTTPS server on loopback in a thread."""
    started: list[TlsServer] = []

    def start(issued: Issued, hsts: str | tuple[str, ...] | None = "max-age=31536000", legacy: bool = False,
              weak: bool = False, ciphers: str | None = None, also: Issued | None = None) -> TlsServer:
        handler = type("Handler", (_Handler,), {"hsts": hsts})
        server = _Server(("127.0.0.1", 0), handler)
        context = server_context(issued, legacy, weak, ciphers, also)
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        started.append(TlsServer(server.server_address[1], server))
        return started[-1]

    yield start
    for running in started:
        running.server.shutdown()
        running.server.server_close()


def endpoint(name: str, port: int, ca: Path | None, protocol: str = "tls", **extra: Any) -> dict[str, Any]:
    entry = {"name": name, "host": "127.0.0.1", "port": port, "protocol": protocol, "server_name": "localhost"}
    return {**entry, **({"ca_file": str(ca)} if ca else {}), **extra}


def with_tls(endpoints: list[dict[str, Any]] | None = None, files: list[dict[str, Any]] | None = None
             ) -> Callable[..., None]:
    def mutate(data: dict[str, Any]) -> None:
        data["tls"] = {"endpoints": endpoints or [], "certificate_files": files or []}

    return mutate


def handshake_tls10(port: int) -> str:
    """The protocol a TLS 1.0-only client of ours negotiates with the server (the fault is real)."""
    import socket

    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.minimum_version = client.maximum_version = ssl.TLSVersion.TLSv1
    client.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, client.wrap_socket(raw) as tls:
        return str(tls.version())


def every(checks: tuple[str, ...], ids: str) -> set[str]:
    module = "test_tls.py" if checks is TLS_CHECKS else "test_certificate_files.py"
    return {f"{module}::{check}[{ids}]" for check in checks}


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated:DeprecationWarning")  # the fault is TLS 1.0
def test_each_tls_fault_fails_exactly_its_check(
    run_checks: Run, profile_variant: Variant, tls_server: Callable[..., TlsServer], tmp_path: Path, sandbox: Profile
) -> None:
    pki = Pki(tmp_path)
    ca = pki.ca.cert_file
    expiring = pki.issue("expiring", valid=dt.timedelta(days=1))
    soon = pki.issue("soon", valid=dt.timedelta(days=20))
    rsa1024 = pki.issue("rsa1024", key=rsa.generate_private_key(65537, 1024))
    sha1 = pki.issue_sha1("sha1")
    expired = pki.issue("expired", valid=-dt.timedelta(days=3, hours=1))
    three_days = pki.issue("three-days", valid=dt.timedelta(days=3))
    servers = {
        "healthy": tls_server(pki.issue("healthy")),
        "expired": tls_server(expired),
        "three-days": tls_server(three_days),
        "other-ca": tls_server(Pki(tmp_path / "other", "other CA").issue("other")),
        "weak-suites": tls_server(pki.issue("weak"), ciphers="ECDHE+AESGCM:aNULL:eNULL",
                                  also=pki.issue("weak-rsa", key=rsa.generate_private_key(65537, 2048))),
        "hsts-quoted": tls_server(pki.issue("quoted"), hsts='MAX-AGE="31536000"; IncludeSubDomains'),
        "hsts-twice": tls_server(pki.issue("twice"), hsts="max-age=31536000; Max-Age=60"),
        "hsts-invalid": tls_server(pki.issue("invalid"), hsts="max-age=1y"),
        "hsts-fields": tls_server(pki.issue("fields"), hsts=("max-age=60", "max-age=31536000")),
        "expiring": tls_server(expiring),
        "soon": tls_server(soon),
        "self-signed": tls_server(pki.issue("self", self_signed=True)),
        "mismatch": tls_server(pki.issue("mismatch", names=("db.example.org",))),
        "tls10": tls_server(pki.issue("tls10"), legacy=True),
        "rsa1024": tls_server(rsa1024, weak=True),
        "sha1": tls_server(sha1, weak=True),
        "no-hsts": tls_server(pki.issue("nohsts"), hsts=None),
    }
    assert handshake_tls10(servers["tls10"].port) == "TLSv1"
    endpoints = [
        endpoint(name, server.port, None if name == "self-signed" else ca,
                 "https" if name in ("healthy", "no-hsts") or name.startswith("hsts-") else "tls")
        for name, server in servers.items()
    ]
    # an SNI virtual host on the healthy server's address, whose certificate lacks its name: scanned on its own
    endpoints.append(endpoint("vhost", servers["healthy"].port, ca, server_name="shop.example.org"))
    closed = free_port()
    endpoints.append(endpoint("gone", closed, ca, "https"))
    plain = sandbox.services[0].url  # photonic-foundry, plain HTTP: declared as TLS, it never completes a handshake
    plain_port = int(plain.rsplit(":", 1)[1])
    endpoints.append(endpoint("plain", plain_port, ca))
    run = run_checks(profile_variant(with_tls(endpoints)), TLS)
    at = {name: f"TLS endpoint {name} at 127.0.0.1:{server.port}" for name, server in servers.items()}
    hsts_fix = 'send exactly one "Strict-Transport-Security: max-age=15552000" or longer'
    failures = {
        "test_certificates_are_not_expiring[expiring]": (
            f"{at['expiring']}: leaf 'localhost' expires in 1 day "
            f"({expiring.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC), below tls.expiry_fail 14d; renew it (PF-43)"),
        "test_certificates_are_not_expiring[three-days]": (
            f"{at['three-days']}: leaf 'localhost' expires in 3 days "
            f"({three_days.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC), below tls.expiry_fail 14d; renew it (PF-43)"),
        "test_certificates_are_not_expiring[expired]": (
            f"{at['expired']}: leaf 'localhost' expired 3 days ago "
            f"({expired.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC); renew it (PF-43)"),
        "test_chain_is_trusted[expired]": (
            f"{at['expired']}: the certificate chain of 'localhost' does not verify against {ca} (certificate has "
            "expired); serve the intermediate certificate(s) after the leaf, or declare the ca_file of the CA that "
            "issued it"),
        "test_chain_is_trusted[other-ca]": (
            f"{at['other-ca']}: the certificate chain of 'localhost' does not verify against {ca} (unable to get "
            "local issuer certificate); serve the intermediate certificate(s) after the leaf, or declare the ca_file "
            "of the CA that issued it"),
        "test_certificate_matches_hostname[vhost]": (
            "TLS endpoint vhost at 127.0.0.1:{}: the certificate is for localhost, 127.0.0.1, not shop.example.org; "
            "reissue it with shop.example.org in its subjectAltName".format(servers["healthy"].port)),
        "test_hsts_is_long_enough[hsts-twice]": (
            f"{at['hsts-twice']} sends the Strict-Transport-Security directive max-age twice "
            f"('max-age=31536000; Max-Age=60'), which browsers ignore (RFC 6797): {hsts_fix}"),
        "test_hsts_is_long_enough[hsts-invalid]": (
            f"{at['hsts-invalid']} sends an invalid Strict-Transport-Security max-age '1y' (expected whole seconds), "
            f"which browsers ignore (RFC 6797): {hsts_fix}"),
        "test_hsts_is_long_enough[hsts-fields]": (
            f"{at['hsts-fields']} sends Strict-Transport-Security max-age=60, below 15552000 "
            '(tls.hsts_min_age 180d): send "Strict-Transport-Security: max-age=15552000" or longer'),
        "test_chain_is_trusted[self-signed]": (
            f"{at['self-signed']}: the certificate chain of 'localhost' does not verify against the system trust "
            "store (self signed certificate); serve the chain of a trusted CA or declare its ca_file"),
        "test_certificate_matches_hostname[mismatch]": (
            f"{at['mismatch']}: the certificate is for db.example.org, not localhost; "
            "reissue it with localhost in its subjectAltName"),
        "test_legacy_protocols_are_refused[tls10]": (
            f"{at['tls10']} accepts TLS 1.0 and TLS 1.1; expected SSLv3, TLS 1.0 and TLS 1.1 refused: "
            "set the server's minimum protocol version to TLS 1.2"),
        "test_key_is_strong[rsa1024]": (
            f"{at['rsa1024']}: leaf 'localhost' has a 1024-bit RSA key, below tls.min_rsa_bits 2048; "
            "reissue it with a stronger key"),
        "test_no_sha1_signature[sha1]": (
            f"{at['sha1']}: leaf 'localhost' is signed with SHA1; reissue it signed with SHA-256"),
        "test_hsts_is_long_enough[no-hsts]": (
            f"{at['no-hsts']} sends no Strict-Transport-Security header; expected max-age >= 15552000 "
            '(tls.hsts_min_age 180d): send "Strict-Transport-Security: max-age=15552000" or longer'),
    }
    gone, plain_checks = every(TLS_CHECKS, "gone"), every(TLS_CHECKS, "plain") - {HSTS.format("plain")}
    weak_check = "test_tls.py::test_no_weak_cipher_suites[weak-suites]"
    expected = {f"test_tls.py::{t}" for t in failures} | {weak_check} | gone | plain_checks
    assert run.failed() == expected, run.result.stdout.str()
    assert {run.message(t) for t in plain_checks} == {
        f"TLS endpoint plain at 127.0.0.1:{plain_port}: no TLS handshake completed (TLS probing failed: could not "
        "find a TLS version and cipher suite supported by the server); check that the server speaks TLS on this port"}
    for test, message in failures.items():
        assert run.message(f"test_tls.py::{test}") == message
    weak = run.message(weak_check)
    assert weak == (
        f"{at['weak-suites']} accepts weak cipher suites TLS_ECDHE_ECDSA_WITH_NULL_SHA, TLS_ECDHE_RSA_WITH_NULL_SHA, "
        "TLS_ECDH_anon_WITH_AES_128_CBC_SHA, TLS_ECDH_anon_WITH_AES_256_CBC_SHA, TLS_ECDH_anon_WITH_NULL_SHA and 3 "
        "more (NULL/EXPORT/RC4/DES/3DES/anonymous); remove them from the server's cipher list")
    # one outage, one root cause: the first check names the refusal, every later one that first failure
    messages = sorted(run.message(t) for t in gone)
    first = f"TLS endpoint gone at 127.0.0.1:{closed}: connection refused"
    assert first in messages
    later = re.compile(rf"TLS endpoint gone at 127\.0\.0\.1:{closed}: skipped probing: gone at 127\.0\.0\.1:{closed} "
                       r"did not answer at \d\d:\d\d:\d\d \(connection refused\)")
    assert all(later.fullmatch(m) for m in messages if m != first), messages
    # expiring within expiry_warn: passes, with a warning and its evidence
    assert run.outcome("test_tls.py::test_certificates_are_not_expiring[soon]") == "passed"
    assert "CertificateExpiryWarning" in run.result.stdout.str()
    assert f"{at['soon']}: leaf 'localhost' expires in 20 days" in run.result.stdout.str()
    # the healthy https endpoint, one with a valid quoted HSTS, and the sandbox's own quantum-planner pass every rule
    for ids in ("healthy", "hsts-quoted", "quantum-planner"):
        assert all(run.outcome(t) == "passed" for t in every(TLS_CHECKS, ids)), ids


@pytest.fixture
def ssl_cluster(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A throwaway PostgreSQL with ``ssl = on`` and a certificate of this test's CA for ``localhost`` only (not
    127.0.0.1: what sslmode verify-ca accepts and verify-full refuses): its port and the CA file."""
    base = Path("/tmp") / f"opsverify-test-tls-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(base, os.geteuid() == 0, free_port(), "superuser-secret")
    cluster.initdb({})
    pki = Pki(tmp_path)
    server = pki.issue("postgres", names=("localhost",))
    for issued in (server.cert_file, server.key_file):
        target = cluster.data / issued.name
        shutil.copy(issued, target)
        target.chmod(0o600)
        cluster.own(target)
    cluster.append_settings("postgresql.conf", {"ssl": "on", "ssl_cert_file": "'postgres.pem'",
                                                "ssl_key_file": "'postgres-key.pem'"})
    try:
        cluster.start()
        yield cluster.port, pki.ca.cert_file
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert not base.exists()


@pytest.fixture
def plain_cluster() -> Iterator[int]:
    """A throwaway PostgreSQL with ``ssl = off``: its port."""
    base = Path("/tmp") / f"opsverify-test-tls-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(base, os.geteuid() == 0, free_port(), "superuser-secret")
    cluster.initdb({})
    cluster.append_settings("postgresql.conf", {"ssl": "off"})
    try:
        cluster.start()
        yield cluster.port
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_postgres_starttls_endpoint_is_scanned_after_its_sslrequest(
    run_checks: Run, profile_variant: Variant, ssl_cluster: tuple[int, Path], plain_cluster: int
) -> None:
    port, ca = ssl_cluster
    healthy = endpoint("pg", port, ca, "postgres")
    renamed = {**endpoint("pg-by-name", port, ca, "postgres"), "host": "localhost", "server_name": "db.internal"}
    no_ssl = endpoint("pg-no-ssl", plain_cluster, None, "postgres")

    def mutate(data: dict[str, Any]) -> None:
        # a database with sslmode verify-ca at 127.0.0.1, whose certificate is for localhost only: libpq accepts it
        first = data["databases"][0]
        data["databases"].append({key: first[key] for key in ("dbname", "user", "password_file") if key in first}
                                 | {"name": "ca-only", "host": "127.0.0.1", "port": port, "sslmode": "verify-ca",
                                    "sslrootcert": str(ca)})
        with_tls([healthy, renamed, no_ssl])(data)

    run = run_checks(profile_variant(mutate), TLS)
    check = "test_tls.py::test_certificate_matches_hostname[pg-by-name]"
    refused = every(TLS_CHECKS, "pg-no-ssl") - {HSTS.format("pg-no-ssl")}
    assert run.failed() == {check} | refused, run.result.stdout.str()
    assert run.message(check) == (
        f"TLS endpoint pg-by-name at localhost:{port}: the certificate is for localhost, not db.internal; "
        "reissue it with db.internal in its subjectAltName")
    assert {run.message(t) for t in refused} == {
        f"TLS endpoint pg-no-ssl at 127.0.0.1:{plain_cluster}: the server does not accept SSL (ssl = off?): "
        "set ssl = on"}
    hsts = HSTS.format("pg")
    assert all(run.outcome(t) == "passed" for t in every(TLS_CHECKS, "pg") - {hsts})
    assert run.outcome(hsts) == "skipped"
    # verify-ca: every rule but the hostname, which libpq does not check either
    hostname = "test_tls.py::test_certificate_matches_hostname[ca-only]"
    assert run.outcome(hostname) == "skipped"
    assert "ca-only has check_hostname false (a database with sslmode verify-ca: libpq checks no hostname)" in (
        run.result.stdout.str())
    assert all(run.outcome(t) == "passed" for t in every(TLS_CHECKS, "ca-only") - {hostname, HSTS.format("ca-only")})


def test_a_listener_that_never_speaks_tls_fails_within_the_timeout(run_checks: Run, profile_variant: Variant) -> None:
    """A port that accepts TCP and then holds the connection: every check fails within the connect timeout."""
    import socket
    import time

    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:  # never accepts: the kernel holds them
        port = listener.getsockname()[1]
        started = time.monotonic()
        run = run_checks(profile_variant(with_tls([endpoint("silent", port, None)])), TLS)
        elapsed = time.monotonic() - started
    checks = every(TLS_CHECKS, "silent") - {HSTS.format("silent")}
    assert run.failed() == checks, run.result.stdout.str()
    assert {run.message(t) for t in checks} == {
        f"TLS endpoint silent at 127.0.0.1:{port}: accepted the connection but completed no TLS handshake within "
        "5s; check that the server speaks TLS on this port"}
    assert elapsed < 40, elapsed


def test_certificate_files_on_disk(run_checks: Run, profile_variant: Variant, tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    expiring = pki.issue("expiring", valid=dt.timedelta(days=1))
    expired = pki.issue("expired", valid=-dt.timedelta(days=3, hours=1))
    private = pki.issue("private")
    ca = str(pki.ca.cert_file)
    files = [
        {"name": "healthy", "path": str(pki.issue("healthy").cert_file), "ca_file": ca, "server_name": "localhost"},
        {"name": "expiring", "path": str(expiring.cert_file), "ca_file": ca, "server_name": "localhost"},
        {"name": "expired", "path": str(expired.cert_file), "ca_file": ca},
        {"name": "private", "path": str(private.cert_file)},  # no ca_file: the system trust store
        {"name": "missing", "path": str(tmp_path / "missing.pem"), "ca_file": ca, "server_name": "localhost"},
    ]
    run = run_checks(profile_variant(with_tls(files=files)), FILES)
    expiry = "test_certificate_files.py::test_certificate_file_is_not_expiring[{}]"
    chain = "test_certificate_files.py::test_certificate_file_chain_verifies[{}]"
    failures = {
        expiry.format("expiring"): (
            f"certificate file expiring ({expiring.cert_file}): leaf 'localhost' expires in 1 day "
            f"({expiring.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC), below tls.expiry_fail 14d; renew it (PF-43)"),
        expiry.format("expired"): (
            f"certificate file expired ({expired.cert_file}): leaf 'localhost' expired 3 days ago "
            f"({expired.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC); renew it (PF-43)"),
        chain.format("expired"): (
            f"certificate file expired ({expired.cert_file}): leaf 'localhost' does not verify against {ca} "
            "(certificate has expired); install the chain its CA issued"),
        chain.format("private"): (
            f"certificate file private ({private.cert_file}): leaf 'localhost' does not verify against the system "
            "trust store (unable to get local issuer certificate); install the chain its CA issued or declare its "
            "ca_file"),
    }
    assert run.failed() == set(failures) | every(FILE_CHECKS, "missing"), run.result.stdout.str()
    for check, message in failures.items():
        assert run.message(check) == message
    assert {run.message(t) for t in every(FILE_CHECKS, "missing")} == {
        f"certificate file missing ({tmp_path / 'missing.pem'}) does not exist; "
        "install the certificate there or fix tls.certificate_files"}
    assert all(run.outcome(t) == "passed" for t in every(FILE_CHECKS, "healthy"))


def test_healthy_sandbox_passes_every_tls_check(run_checks: Run, sandbox_profile: Path) -> None:
    run = run_checks(sandbox_profile, TLS, FILES)
    assert run.failed() == set(), run.result.stdout.str()
    assert every(TLS_CHECKS, "quantum-planner") | every(FILE_CHECKS, "quantum-planner-cert") <= set(run.checks)
    outcomes = {check: c["outcome"] for check, c in run.checks.items()}
    hsts_skipped = {c for c in outcomes if "::test_hsts_is_long_enough[" in c and "[quantum-planner]" not in c}
    assert hsts_skipped, outcomes  # the sandbox's PostgreSQL (verify-full): a postgres endpoint, no HSTS
    assert {c for c, o in outcomes.items() if o != "passed"} == hsts_skipped, outcomes
    assert all(outcomes[c] == "skipped" for c in hsts_skipped), outcomes


def test_redis_with_tls_is_an_endpoint_of_its_own(run_checks: Run, profile_variant: Variant, tmp_path: Path) -> None:
    """A Redis declared ``tls: true`` (its ``ca_file``) is scanned as plain TLS on its tls-port; here on a real one."""
    from opsverify.localserver.redis import start_redis

    pki = Pki(tmp_path)
    issued = pki.issue("redis")
    tls_port = free_port()
    extra = (f"tls-port {tls_port}", f"tls-cert-file {issued.cert_file}", f"tls-key-file {issued.key_file}",
             f"tls-ca-cert-file {pki.ca.cert_file}", "tls-auth-clients no")
    server = start_redis(tmp_path / "redis", free_port(), extra=extra)

    def mutate(data: dict[str, Any]) -> None:
        data["redis"] = [{"name": "tls-cache", "host": "127.0.0.1", "port": tls_port, "tls": True,
                          "ca_file": str(pki.ca.cert_file)}]
        with_tls()(data)

    try:
        run = run_checks(profile_variant(mutate), TLS)
    finally:
        server.stop(timeout=10)
    assert run.failed() == set(), run.result.stdout.str()
    assert all(run.outcome(t) == "passed" for t in every(TLS_CHECKS, "tls-cache") - {HSTS.format("tls-cache")})


def tls_profile(tmp_path: Path, sandbox_profile: Path, tls: dict[str, Any]) -> Path:
    data = yaml.safe_load(sandbox_profile.read_text())
    data["tls"] = tls
    path = tmp_path / "tls.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(("tls", "problem"), [
    ({"expiry_fail": "30d", "expiry_warn": "14d"},
     "expiry_fail 30d is longer than expiry_warn 14d: a certificate would fail before it warns; "
     "set expiry_fail <= expiry_warn"),
    ({"endpoints": [{"name": "web", "host": "https://shop.example.org", "port": 443}]},
     "'https://shop.example.org' is not a host name or IP address (a URL? give only its host, and its port as port)"),
    ({"endpoints": [{"name": "web", "host": "a.example.org", "port": 443},
                    {"name": "web", "host": "b.example.org", "port": 443}]},
     "tls.endpoints declares 'web' more than once: give each a name of its own"),
    ({"certificate_files": [{"name": "c", "path": "/a.pem"}, {"name": "c", "path": "/b.pem"}]},
     "tls.certificate_files declares 'c' more than once: give each a name of its own"),
])
def test_profile_rejects_an_inconsistent_tls_section(
    tmp_path: Path, sandbox_profile: Path, tls: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ProfileError, match=re.escape(problem)):
        load_profile(tls_profile(tmp_path, sandbox_profile, tls), {})


def test_tls_endpoints_key_by_address_server_name_and_protocol(tmp_path: Path, sandbox_profile: Path) -> None:
    sandbox = load_profile(sandbox_profile, {})
    planner = next(s for s in sandbox.services if s.url.startswith("https://"))
    parts = urlsplit(planner.url)
    host, port = parts.hostname, parts.port
    vhosts = [{"name": "shop", "host": "127.0.0.1", "port": 8443, "server_name": "shop.example.org"},
              {"name": "blog", "host": "127.0.0.1", "port": 8443, "server_name": "blog.example.org"},
              {"name": "shop-again", "host": "127.0.0.1", "port": 8443, "server_name": "shop.example.org"},
              # named like the derived https service, at its address: the declared one is that endpoint
              {"name": planner.name, "host": host, "port": port, "server_name": "localhost"}]
    profile = load_profile(tls_profile(tmp_path, sandbox_profile, {"endpoints": vhosts}), {})
    found = {e.name: e for e in profile.tls_endpoints()}
    assert {"shop", "blog", planner.name} <= set(found)
    assert "shop-again" not in found
    assert found[planner.name].server_name == "localhost"
    databases = [e for e in found.values() if e.protocol == "postgres"]
    assert databases  # the sandbox's are verify-full: their hostname is checked
    assert all(e.check_hostname for e in databases)
    # named like the derived https service at another address: an error, not a silent drop
    moved = [{"name": planner.name, "host": "127.0.0.1", "port": 9443}]
    profile = load_profile(tls_profile(tmp_path, sandbox_profile, {"endpoints": moved}), {})
    with pytest.raises(ProfileError, match=re.escape(
            f"tls: two TLS endpoints are named {planner.name!r}, at 127.0.0.1:9443 and {host}:{port}: "
            "rename the one in tls.endpoints")):
        profile.tls_endpoints()


def test_a_verify_full_database_keeps_the_hostname_check_of_a_verify_ca_one_on_the_same_server(
    tmp_path: Path,
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    db = {"host": "db.example.com", "user": "u", "sslrootcert": str(ca)}
    profile = Profile.model_validate({"name": "p", "tls": {}, "databases": [
        {**db, "name": "reports", "dbname": "reports", "sslmode": "verify-ca"},
        {**db, "name": "main", "dbname": "main", "sslmode": "verify-full"},
        {**db, "name": "other", "host": "db2.example.com", "dbname": "o", "sslmode": "verify-ca"},
    ]})
    assert [(e.name, e.host, e.check_hostname) for e in profile.tls_endpoints()] == [
        ("main", "db.example.com", True), ("other", "db2.example.com", False)]


def test_a_declared_endpoint_named_like_a_derived_one_elsewhere_stops_the_run(
    run_checks: Run, profile_variant: Variant, sandbox: Profile
) -> None:
    """Two TLS endpoints of one name at two addresses: a usage error naming both, not a collection traceback."""
    planner = next(s for s in sandbox.services if s.url.startswith("https://"))
    parts = urlsplit(planner.url)

    def mutate(data: dict[str, Any]) -> None:
        data["tls"] = {"endpoints": [{"name": planner.name, "host": "127.0.0.1", "port": 9443}]}

    run = run_checks(profile_variant(mutate), TLS)
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR, run.result.stdout.str()
    assert (f"tls: two TLS endpoints are named {planner.name!r}, at 127.0.0.1:9443 and {parts.hostname}:{parts.port}: "
            "rename the one in tls.endpoints") in run.result.stderr.str()
    assert "Traceback" not in run.result.stderr.str() + run.result.stdout.str()
