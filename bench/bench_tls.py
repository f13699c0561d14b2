"""Benchmark: opsverify's TLS checks of one endpoint against the ``sslyze`` CLI asking the same questions.

Run with ``.venv/bin/python bench/bench_tls.py``. An HTTPS server (Python ``ssl``, TLS 1.2+, an
ECDSA P-256 certificate of a CA made here, HSTS) runs on a free loopback port in its own process.
The peer is ``sslyze --certinfo --sslv3 --tlsv1 --tlsv1_1 --tlsv1_2 --tlsv1_3 --elliptic_curves
--http_headers`` (the ``--regular`` subset the TLS checks answer; ``--elliptic_curves`` as the
issue's "same questions" name it, although no check reads it). Ours runs twice: the scan and every
judgement in a fresh Python process (``scan_tls`` + ``probes/certificates``), and the whole check
module through pytest (``pytest checks/security/test_tls.py`` against a one-endpoint profile,
``--no-reports``), which adds pytest's own start. Each runs in a fresh process, best of 3.
Target: time <= 1.0x of the sslyze CLI.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_gzip import best_of, machine
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from opsverify.localserver.net import LOOPBACK, free_port, wait_for_port
from opsverify.localserver.process import stop_process

ROOT = Path(__file__).resolve().parents[1]
SERVER = """
import ssl, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Strict-Transport-Security", "max-age=31536000")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass

server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2], sys.argv[3])
server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
server.serve_forever()
"""
JUDGE = """
import sys
from pathlib import Path
from opsverify.probes import certificates as c
from opsverify.probes.tls import LEGACY, TlsScanRequest, scan_tls

scan = scan_tls(TlsScanRequest("localhost", int(sys.argv[1]), "https", None, 5.0))
assert scan.problem is None, scan.problem
infos = c.describe(scan.chain)
verdict = [
    c.expiring(infos, c.timedelta(days=14)), c.verify_chain(scan.chain, Path(sys.argv[2])),
    c.matches_hostname(infos[0], "localhost"), scan.accepted_versions(LEGACY), c.weak_suites(scan.accepted),
    c.weak_keys(infos, 2048, 256), c.sha1_signed(infos), scan.hsts_max_age, scan.ocsp,
]
print(verdict)
"""


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for localhost / 127.0.0.1: (ca, cert, key) files."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("bench CA")).issuer_name(_name("bench CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256())
    )
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (
        x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=90))
        .add_extension(san, critical=False).sign(ca_key, hashes.SHA256())
    )
    files = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return files


def main() -> None:
    sslyze = shutil.which("sslyze", path=str(Path(sys.executable).parent))
    if sslyze is None:
        raise SystemExit("the sslyze CLI is not installed: run `make setup` (it is a dependency of opsverify)")
    with tempfile.TemporaryDirectory(prefix="opsverify-bench-tls-") as tmp:
        work = Path(tmp)
        ca, cert, key = make_pki(work)
        port = free_port()
        profile = work / "profile.yaml"
        profile.write_text(f"name: bench\ntls:\n  endpoints:\n    - name: bench\n      host: localhost\n"
                           f"      port: {port}\n      protocol: https\n      ca_file: {ca}\n")
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(cert), str(key)],
                                  stdin=subprocess.DEVNULL)
        try:
            wait_for_port(LOOPBACK, port, 10)
            commands = {
                "sslyze CLI": [sslyze, "--quiet", "--certinfo", "--certinfo_ca_file", str(ca), "--sslv3", "--tlsv1",
                               "--tlsv1_1", "--tlsv1_2", "--tlsv1_3", "--elliptic_curves", "--http_headers",
                               "--json_out", str(work / "sslyze.json"), f"localhost:{port}"],
                "opsverify scan + judgement": [sys.executable, "-c", JUDGE, str(port), str(ca)],
                "opsverify pytest test_tls.py": [
                    sys.executable, "-m", "pytest", str(ROOT / "checks" / "security" / "test_tls.py"), "-q",
                    "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), "--profile", str(profile),
                    "--no-reports", "-p", "no:randomly",
                ],
            }
            results = {name: best_of(args, quiet=True) for name, args in commands.items()}
        finally:
            stop_process(server, timeout=10)
    print(f"machine: {machine()}")
    print(f"endpoint: https://localhost:{port} (Python ssl, TLS 1.2 + 1.3, ECDSA P-256, HSTS)")
    print(f"{'tool':<32}{'best of 3':>11}{'peak RSS':>13}{'CPU':>9}{'vs sslyze':>11}")
    theirs = results["sslyze CLI"][0]
    for name, (seconds, rss, cpu) in results.items():
        print(f"{name:<32}{seconds:>10.2f}s{rss / 1024:>9.1f} MiB{cpu:>8.2f}s{seconds / theirs:>10.2f}x")
    for name in ("opsverify scan + judgement", "opsverify pytest test_tls.py"):
        ratio = results[name][0] / theirs
        print(f"target {name}: time <= 1.0x: {ratio:.2f}x ({'met' if ratio <= 1.0 else 'MISSED'})")


if __name__ == "__main__":
    main()
