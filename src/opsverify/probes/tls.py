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
``tls`` endpoints are plain TLS; ``https`` endpoints also answer one GET whose
Strict-Transport-Security header is kept.
"""

from __future__ import annotations

import math
import re
import socket
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
    or commands whose scan failed (unreadable evidence, never "refused"). ``hsts`` is the raw
    Strict-Transport-Security max-age (None: no header) of an https endpoint's GET.
    """

    endpoint: str
    protocol: Protocol
    server_name: str
    chain: tuple[str, ...] = ()
    accepted: dict[str, tuple[str, ...]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    hsts_max_age: int | None = None
    hsts_error: str | None = None
    ocsp: str | None = None  # "stapled (successful)", "not stapled"
    duration: float = 0.0
    error: str | None = None
    unreachable: str | None = None  # a connection-level cause: an outage

    @property
    def problem(self) -> str | None:
        """Why the scan holds no facts (the endpoint did not answer, or never completed a handshake)."""
        return self.unreachable or self.error

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
    if request.protocol == "https":
        commands.add(ScanCommand.HTTP_HEADERS)
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
    headers = attempts.http_headers
    if headers.status == ScanCommandAttemptStatusEnum.COMPLETED and headers.result is not None:
        if headers.result.http_error_trace is not None:
            scan["hsts_error"] = _trace_text(headers.result.http_error_trace)
        elif headers.result.strict_transport_security_header is not None:
            scan["hsts_max_age"] = headers.result.strict_transport_security_header.max_age
    elif headers.status == ScanCommandAttemptStatusEnum.ERROR:
        scan["hsts_error"] = _trace_text(headers.error_trace)
    scan["accepted"], scan["errors"] = accepted, errors


def scan_tls(request: TlsScanRequest) -> TlsScan:
    """Scan one endpoint: one TCP connect to find it, then sslyze's handshakes (each bounded by the timeout)."""
    started = time.monotonic()
    base: dict[str, Any] = {"endpoint": request.endpoint, "protocol": request.protocol, "server_name": request.sni}
    ip, unreachable = _preflight(request)
    if ip is None:
        return TlsScan(**base, unreachable=unreachable, duration=time.monotonic() - started)
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
    return TlsScan(**base, duration=time.monotonic() - started)

