"""TLS endpoints over real handshakes (PF-43, QP-09, QP-30): one scan per endpoint, judged offline.

A scan is a typed request (:class:`TlsScanRequest`) and a typed result (:class:`TlsScan`), the shape
of sslyze's scan commands: the network work happens here, once; the result holds what the server
presented and accepted (its certificate chain as PEM, the cipher suites it accepted per protocol
version, its Strict-Transport-Security header, whether it stapled an OCSP response), and
``probes/certificates.py`` judges it without the network, so the same judgement serves
certificate files on disk and a result read back from a report.

The handshakes are sslyze's (imported when a scan runs): it really offers SSL 3.0, TLS 1.0 and
TLS 1.1 through its legacy OpenSSL, which the standard library's ``ssl`` cannot. ``postgres``
endpoints speak PostgreSQL's SSLRequest first (sslyze's ``--starttls postgres``); ``redis`` and
``tls`` endpoints are plain TLS; ``https`` endpoints also answer one GET of ours whose raw
Strict-Transport-Security header fields are kept (and parsed here per RFC 6797, not by sslyze).

Before sslyze, one handshake of ours (after the SSLRequest for ``postgres``) is bounded by the
connect timeout: a listener that accepts the connection but never speaks TLS fails within it, and
a PostgreSQL that answers the SSLRequest with "N" (ssl = off) is named as such.
"""

from __future__ import annotations

import http.client
import ipaddress
import math
import re
import socket
import ssl
import struct
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from opsverify.probes.outage import address, connect_timed_out, connection_failure

if TYPE_CHECKING:
    from sslyze.scanner.models import ServerScanRequest, ServerScanResult

Protocol = Literal["tls", "https", "postgres", "redis"]
LEGACY = ("SSLv3", "TLS 1.0", "TLS 1.1")
CURRENT = ("TLS 1.2", "TLS 1.3")
VERSIONS = (*LEGACY, *CURRENT)
_COMMANDS = {  # protocol version -> sslyze scan command (attribute of ServerScanResult.scan_result)
    "SSLv3": "ssl_3_0_cipher_suites",
    "TLS 1.0": "tls_1_0_cipher_suites",
    "TLS 1.1": "tls_1_1_cipher_suites",
    "TLS 1.2": "tls_1_2_cipher_suites",
    "TLS 1.3": "tls_1_3_cipher_suites",
}


@dataclass(frozen=True)
class TlsScanRequest:
    """What to scan: where, how to start TLS there, which name to send (SNI), and how long to wait."""

    host: str
    port: int
    protocol: Protocol = "tls"
    server_name: str | None = None
    connect_timeout: float = 5.0

    @property
    def endpoint(self) -> str:
        return address(self.host, self.port)

    @property
    def sni(self) -> str:
        return self.server_name or self.host


@dataclass(frozen=True)
class TlsScan:
    """What one endpoint presented and accepted: the facts the TLS checks judge, or why there are none.

    ``chain`` is the certificate chain as the server sent it (PEM, leaf first); ``accepted`` the
    cipher suites (IANA names) it accepted per protocol version; ``errors`` the protocol versions
    or commands whose scan failed (unreadable evidence, never "refused"). ``hsts_headers`` are the
    Strict-Transport-Security header fields (raw values, as sent) of an https endpoint's GET.
    """

    endpoint: str
    protocol: Protocol
    server_name: str
    chain: tuple[str, ...] = ()
    accepted: dict[str, tuple[str, ...]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    hsts_headers: tuple[str, ...] = ()
    hsts_error: str | None = None
    ocsp: str | None = None  # "stapled (successful)", "not stapled"
    duration: float = 0.0
    error: str | None = None
    unreachable: str | None = None  # a connection-level cause: an outage

    @property
    def problem(self) -> str | None:
        """Why the scan holds no facts (the endpoint did not answer, or never completed a handshake)."""
        return self.unreachable or self.error

    @property
    def hsts_max_age(self) -> int | None:
        """The max-age of a valid Strict-Transport-Security header (None: none, or not valid)."""
        return parse_hsts(self.hsts_headers)[0]

    def accepted_versions(self, versions: tuple[str, ...] = VERSIONS) -> list[str]:
        return [v for v in versions if self.accepted.get(v)]


def _preflight(request: TlsScanRequest) -> tuple[str | None, str | None]:
    """Connect once over TCP: the peer's IP address, or the connection-level cause of the failure."""
    try:
        with socket.create_connection((request.host, request.port), timeout=request.connect_timeout) as sock:
            return str(sock.getpeername()[0]), None
    except OSError as exc:
        limit = connect_timed_out(timedelta(seconds=request.connect_timeout))
        return None, connection_failure(exc, limit) or f"cannot connect: {exc.strerror or exc}"


SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # PostgreSQL's SSLRequest: length 8, code 1234.5679


def _client_context() -> ssl.SSLContext:
    """A client that completes a handshake with any server (no verification, every version, security level 0)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("ALL:@SECLEVEL=0")
    return context


def _wrap(request: TlsScanRequest, sock: socket.socket) -> ssl.SSLSocket:
    server_name = None if _is_ip(request.sni) else request.sni
    return _client_context().wrap_socket(sock, server_hostname=server_name)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _first_handshake(request: TlsScanRequest, ip: str) -> str | None:
    """One handshake of ours, bounded by the timeout: why the endpoint cannot be scanned, or None to go on.

    Only a silent listener and a PostgreSQL without ssl are named here; any other handshake error is
    left to sslyze, whose handshakes say more (a plain HTTP server, an unsupported version).
    """
    limit = f"{request.connect_timeout:g}s"
    silent = (f"accepted the connection but completed no TLS handshake within {limit}; check that the server "
              "speaks TLS on this port")
    try:
        with socket.create_connection((ip, request.port), timeout=request.connect_timeout) as sock:
            if request.protocol == "postgres":
                sock.sendall(SSL_REQUEST)
                answer = sock.recv(1)
                if answer == b"N":
                    return "the server does not accept SSL (ssl = off?): set ssl = on"
                if answer != b"S":
                    return ("did not answer PostgreSQL's SSLRequest (" + (repr(answer) if answer else "closed")
                            + "); check that a PostgreSQL server listens on this port")
            with _wrap(request, sock):
                return None
    except TimeoutError:
        return silent
    except (ssl.SSLError, OSError):
        return None


def _hsts_headers(request: TlsScanRequest, ip: str) -> tuple[tuple[str, ...], str | None]:
    """The Strict-Transport-Security header fields of one GET / (raw values), or why the GET failed."""
    try:
        with socket.create_connection((ip, request.port), timeout=request.connect_timeout) as sock, \
                _wrap(request, sock) as tls:
            host = request.sni if request.port == 443 else f"{request.sni}:{request.port}"
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: opsverify\r\nConnection: close\r\n\r\n"
                        .encode())
            response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
            response.begin()
            return tuple(response.msg.get_all("Strict-Transport-Security") or ()), None
    except (OSError, http.client.HTTPException) as exc:
        return (), f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def parse_hsts(values: tuple[str, ...]) -> tuple[int | None, str | None]:
    """The max-age of Strict-Transport-Security header fields per RFC 6797, or why they are not valid.

    Directive names are case-insensitive, a value may be a quoted-string, each directive appears at
    most once and max-age (delta-seconds) is required. Of several header fields only the first
    counts, as for a browser (RFC 6797 section 8.1).
    """
    if not values:
        return None, None
    seen: dict[str, str | None] = {}
    for part in values[0].split(";"):
        directive = part.strip()
        if not directive:
            continue
        name, equals, value = directive.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            return None, f"sends an invalid Strict-Transport-Security directive {directive!r}"
        if name in seen:
            return None, f"sends the Strict-Transport-Security directive {name} twice ({values[0]!r})"
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        seen[name] = value if equals else None
    if "max-age" not in seen:
        return None, f"sends Strict-Transport-Security without max-age ({values[0]!r})"
    max_age = seen["max-age"]
    if max_age is None or not max_age.isascii() or not max_age.isdigit():
        return None, f"sends an invalid Strict-Transport-Security max-age {max_age!r} (expected whole seconds)"
    return int(max_age), None


def _server_request(request: TlsScanRequest, ip: str) -> ServerScanRequest:
    from sslyze.connection_helpers.opportunistic_tls_helpers import ProtocolWithOpportunisticTlsEnum
    from sslyze.plugins.scan_commands import ScanCommand
    from sslyze.scanner.models import ServerScanRequest
    from sslyze.server_setting import ServerNetworkConfiguration, ServerNetworkLocation

    commands = {
        ScanCommand.CERTIFICATE_INFO,
        ScanCommand.SSL_3_0_CIPHER_SUITES,
        ScanCommand.TLS_1_0_CIPHER_SUITES,
        ScanCommand.TLS_1_1_CIPHER_SUITES,
        ScanCommand.TLS_1_2_CIPHER_SUITES,
        ScanCommand.TLS_1_3_CIPHER_SUITES,
    }
    starttls = ProtocolWithOpportunisticTlsEnum.POSTGRES if request.protocol == "postgres" else None
    config = ServerNetworkConfiguration(
        tls_server_name_indication=request.sni,
        tls_opportunistic_encryption=starttls,
        network_timeout=max(1, math.ceil(request.connect_timeout)),
        network_max_retries=1,
    )
    location = ServerNetworkLocation(request.host, request.port, ip_address=ip)
    return ServerScanRequest(server_location=location, network_configuration=config, scan_commands=commands)


def _trace_text(trace: Any) -> str:
    """The last line of an exception trace sslyze kept (its message), without the traceback."""
    if trace is None:
        return "no detail"
    lines = [line.strip() for line in trace.format_exception_only() if line.strip()]
    return lines[-1] if lines else "no detail"


def _connectivity_error(result: ServerScanResult) -> str:
    """Why no handshake completed, in sslyze's words without its ``ip:port -> "…"`` frame, and what to look at."""
    trace = result.connectivity_error_trace
    text = str(getattr(trace, "_str", "") or "") if trace is not None else ""
    framed = re.search(r' -> "(.*)"$', text.strip().rstrip("."), re.DOTALL)
    reason = (framed.group(1) if framed else text or _trace_text(trace)).rstrip(".")
    return f"no TLS handshake completed ({reason}); check that the server speaks TLS on this port"


def _read(result: ServerScanResult, scan: dict[str, Any]) -> None:
    """Fill ``scan`` (TlsScan fields) from sslyze's result; a command that failed lands in ``errors``."""
    from cryptography.hazmat.primitives.serialization import Encoding
    from sslyze.scanner.scan_command_attempt import ScanCommandAttemptStatusEnum

    attempts = result.scan_result
    assert attempts is not None
    errors: dict[str, str] = {}
    accepted: dict[str, tuple[str, ...]] = {}
    for version, attr in _COMMANDS.items():
        attempt = getattr(attempts, attr)
        if attempt.status != ScanCommandAttemptStatusEnum.COMPLETED or attempt.result is None:
            errors[version] = _trace_text(attempt.error_trace)
            continue
        accepted[version] = tuple(s.cipher_suite.name for s in attempt.result.accepted_cipher_suites)
    cert = attempts.certificate_info
    if cert.status == ScanCommandAttemptStatusEnum.COMPLETED and cert.result is not None:
        deployment = cert.result.certificate_deployments[0]
        scan["chain"] = tuple(c.public_bytes(Encoding.PEM).decode() for c in deployment.received_certificate_chain)
        ocsp = deployment.ocsp_response
        scan["ocsp"] = f"stapled ({ocsp.response_status.name.lower()})" if ocsp is not None else "not stapled"
    else:
        errors["certificate"] = _trace_text(cert.error_trace)
    scan["accepted"], scan["errors"] = accepted, errors


def scan_tls(request: TlsScanRequest) -> TlsScan:
    """Scan one endpoint: one TCP connect to find it, then sslyze's handshakes (each bounded by the timeout)."""
    started = time.monotonic()
    base: dict[str, Any] = {"endpoint": request.endpoint, "protocol": request.protocol, "server_name": request.sni}
    ip, unreachable = _preflight(request)
    if ip is None:
        return TlsScan(**base, unreachable=unreachable, duration=time.monotonic() - started)
    refused = _first_handshake(request, ip)
    if refused is not None:
        return TlsScan(**base, error=refused, duration=time.monotonic() - started)
    from sslyze.scanner.models import ServerConnectivityStatusEnum
    from sslyze.scanner.scanner import Scanner

    scanner = Scanner(per_server_concurrent_connections_limit=5, concurrent_server_scans_limit=1)
    with warnings.catch_warnings():  # sslyze's bundled trust stores hold roots newer cryptography warns about
        warnings.simplefilter("ignore")
        scanner.queue_scans([_server_request(request, ip)])
        result = next(iter(scanner.get_results()))
    if result.connectivity_status != ServerConnectivityStatusEnum.COMPLETED or result.scan_result is None:
        return TlsScan(**base, error=_connectivity_error(result), duration=time.monotonic() - started)
    _read(result, base)
    if request.protocol == "https":
        base["hsts_headers"], base["hsts_error"] = _hsts_headers(request, ip)
    return TlsScan(**base, duration=time.monotonic() - started)

