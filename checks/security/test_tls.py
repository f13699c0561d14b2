"""TLS endpoints over real handshakes: certificates, protocol versions, cipher suites, HSTS.

Runbook: ``openssl s_client -connect host:443 | openssl x509 -noout -dates`` and ``sslyze --regular``
(PF-43 monthly, QP-09 weekly: expiry, chain, hostname; QP-30 monthly: the protocol and cipher
policy). Every endpoint is scanned once (``tls_scan_of``); each check judges one expectation of
that scan offline. An endpoint that never completed a handshake fails every check, naming why.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from fixtures.security import check_expiry
from opsverify.durations import format_duration
from opsverify.probes.certificates import (
    WEAK_FAMILIES,
    CertificateError,
    CertInfo,
    capped,
    describe,
    matches_hostname,
    sha1_signed,
    trust_source,
    verify_chain,
    weak_keys,
    weak_suites,
)
from opsverify.probes.tls import LEGACY, VERSIONS, TlsScan, parse_hsts
from opsverify.profile.security import TlsEndpoint, TlsPolicy

pytestmark = [pytest.mark.security]
ScanOf = Callable[[TlsEndpoint], TlsScan]


def where(ep: TlsEndpoint, scan: TlsScan) -> str:
    return f"TLS endpoint {ep.name} at {scan.endpoint}"


def scanned(ep: TlsEndpoint, scan_of: ScanOf, evidence: Recorder) -> TlsScan:
    """The endpoint's scan; the check fails when the endpoint never completed a handshake."""
    __tracebackhide__ = True
    scan = scan_of(ep)
    evidence.record(endpoint=scan.endpoint, protocol=ep.protocol, server_name=scan.server_name)
    expect(scan.problem is None, f"{where(ep, scan)}: {scan.problem}")
    return scan


def certificates(ep: TlsEndpoint, scan_of: ScanOf, evidence: Recorder) -> tuple[TlsScan, list[CertInfo]]:
    """The scan and the facts of every certificate the server presented (leaf first)."""
    __tracebackhide__ = True
    scan = scanned(ep, scan_of, evidence)
    if "certificate" in scan.errors or not scan.chain:
        fail(f"{where(ep, scan)}: its certificate could not be read ({scan.errors.get('certificate', 'none sent')}); "
             "check the certificate the server is configured with")
    try:
        return scan, describe(scan.chain)
    except CertificateError as exc:
        fail(f"{where(ep, scan)}: the {exc}; check the certificate the server is configured with")


def protocols_tested(ep: TlsEndpoint, scan: TlsScan, versions: tuple[str, ...]) -> None:
    __tracebackhide__ = True
    broken = {v: scan.errors[v] for v in versions if v in scan.errors}
    if broken:
        version, error = next(iter(broken.items()))
        fail(f"{where(ep, scan)}: {version} could not be tested ({error}); see the server's log")


@pytest.mark.weekly
@pytest.mark.monthly
@pytest.mark.runbook("PF-43", "QP-09")
def test_certificates_are_not_expiring(
    tls_endpoint: TlsEndpoint, tls_scan_of: ScanOf, tls_policy: TlsPolicy, evidence: Recorder
) -> None:
    """PF-43/QP-09: leaf and chain certificates have more than tls.expiry_fail left (warn below expiry_warn)."""
    scan, infos = certificates(tls_endpoint, tls_scan_of, evidence)
    evidence.record(not_after=" ".join(f"{i.subject}={i.not_after:%Y-%m-%d}" for i in infos),
                    expiry_fail=format_duration(tls_policy.expiry_fail),
                    expiry_warn=format_duration(tls_policy.expiry_warn))
    check_expiry(where(tls_endpoint, scan), infos, tls_policy, evidence)


@pytest.mark.weekly
@pytest.mark.monthly
@pytest.mark.runbook("PF-43", "QP-09")
def test_chain_is_trusted(tls_endpoint: TlsEndpoint, tls_scan_of: ScanOf, evidence: Recorder) -> None:
    """PF-43/QP-09: the presented chain verifies against the endpoint's ca_file or the system store (OCSP reported)."""
    scan, infos = certificates(tls_endpoint, tls_scan_of, evidence)
    evidence.record(trust=trust_source(tls_endpoint.ca_file), chain=" <- ".join(i.subject for i in infos),
                    ocsp_stapling=scan.ocsp)
    problem = verify_chain(scan.chain, tls_endpoint.ca_file)
    if tls_endpoint.ca_file is None:
        fix = "serve the chain of a trusted CA or declare its ca_file"
        against = trust_source(None)
    else:
        fix = ("serve the intermediate certificate(s) after the leaf, or declare the ca_file of the CA that issued "
               "it")
        against = str(tls_endpoint.ca_file)
    expect(problem is None, f"{where(tls_endpoint, scan)}: the certificate chain of {infos[0].subject!r} does not "
                            f"verify against {against} ({problem}); {fix}")


@pytest.mark.weekly
@pytest.mark.monthly
@pytest.mark.runbook("PF-43", "QP-09")
def test_certificate_matches_hostname(tls_endpoint: TlsEndpoint, tls_scan_of: ScanOf, evidence: Recorder) -> None:
    """PF-43/QP-09: the leaf certificate is valid for server_name (default: host), unless check_hostname is false."""
    if not tls_endpoint.check_hostname:
        pytest.skip(f"{tls_endpoint.name} has check_hostname false (a database with sslmode verify-ca: libpq "
                    "checks no hostname)")
    scan, infos = certificates(tls_endpoint, tls_scan_of, evidence)
    leaf, name = infos[0], scan.server_name
    evidence.record(names=" ".join(leaf.names) or f"CN={leaf.subject}")
    expect(
        matches_hostname(leaf, name),
        f"{where(tls_endpoint, scan)}: the certificate is for {', '.join(leaf.names) or 'CN=' + leaf.subject}, "
        f"not {name}; reissue it with {name} in its subjectAltName",
    )


@pytest.mark.monthly
@pytest.mark.runbook("QP-30")
def test_legacy_protocols_are_refused(tls_endpoint: TlsEndpoint, tls_scan_of: ScanOf, evidence: Recorder) -> None:
    """QP-30: SSL 3.0, TLS 1.0 and TLS 1.1 handshakes are really offered, and refused."""
    scan = scanned(tls_endpoint, tls_scan_of, evidence)
    evidence.record(protocols=", ".join(scan.accepted_versions()) or "none")
    protocols_tested(tls_endpoint, scan, LEGACY)
    legacy = scan.accepted_versions(LEGACY)
    expect(
        not legacy,
        f"{where(tls_endpoint, scan)} accepts {' and '.join(legacy)}; expected SSLv3, TLS 1.0 and TLS 1.1 refused: "
        "set the server's minimum protocol version to TLS 1.2",
    )


@pytest.mark.monthly
@pytest.mark.runbook("QP-30")
def test_no_weak_cipher_suites(tls_endpoint: TlsEndpoint, tls_scan_of: ScanOf, evidence: Recorder) -> None:
    """QP-30: no NULL, EXPORT, RC4, DES/3DES or anonymous cipher suite is accepted in any protocol version."""
    scan = scanned(tls_endpoint, tls_scan_of, evidence)
    evidence.record(suites=sum(len(s) for s in scan.accepted.values()))
    protocols_tested(tls_endpoint, scan, VERSIONS)
    weak = weak_suites(scan.accepted)
    expect(
        not weak,
        f"{where(tls_endpoint, scan)} accepts weak cipher suites {capped(weak)} ({WEAK_FAMILIES}); "
        "remove them from the server's cipher list",
    )


@pytest.mark.weekly
@pytest.mark.monthly
@pytest.mark.runbook("PF-43", "QP-09", "QP-30")
def test_key_is_strong(
    tls_endpoint: TlsEndpoint, tls_scan_of: ScanOf, tls_policy: TlsPolicy, evidence: Recorder
) -> None:
    """PF-43/QP-09/QP-30: every presented certificate's key is RSA >= min_rsa_bits or EC >= min_ec_bits."""
    scan, infos = certificates(tls_endpoint, tls_scan_of, evidence)
    evidence.record(keys=" ".join(f"{i.key}-{i.key_bits}" for i in infos))
    weak = weak_keys(infos, tls_policy.min_rsa_bits, tls_policy.min_ec_bits)
    for info, minimum in weak:
        fail(f"{where(tls_endpoint, scan)}: {info.label} has a {info.key_bits}-bit {info.key} key, below {minimum}; "
             "reissue it with a stronger key")


@pytest.mark.weekly
@pytest.mark.monthly
@pytest.mark.runbook("PF-43", "QP-09", "QP-30")
def test_no_sha1_signature(tls_endpoint: TlsEndpoint, tls_scan_of: ScanOf, evidence: Recorder) -> None:
    """PF-43/QP-09/QP-30: no presented certificate (trust anchors aside) is signed with SHA-1 or MD5."""
    scan, infos = certificates(tls_endpoint, tls_scan_of, evidence)
    evidence.record(signatures=" ".join(f"{i.subject}={i.signature_hash}" for i in infos))
    for info in sha1_signed(infos):
        fail(f"{where(tls_endpoint, scan)}: {info.label} is signed with {(info.signature_hash or '').upper()}; "
             "reissue it signed with SHA-256")


@pytest.mark.monthly
@pytest.mark.runbook("QP-30")
def test_hsts_is_long_enough(
    tls_endpoint: TlsEndpoint, tls_scan_of: ScanOf, tls_policy: TlsPolicy, evidence: Recorder
) -> None:
    """QP-30: an https endpoint sends Strict-Transport-Security with max-age >= tls.hsts_min_age."""
    if tls_endpoint.protocol != "https":
        pytest.skip(f"{tls_endpoint.name} is a {tls_endpoint.protocol} endpoint: HSTS applies to https only")
    scan = scanned(tls_endpoint, tls_scan_of, evidence)
    minimum = int(tls_policy.hsts_min_age.total_seconds())
    evidence.record(hsts=" | ".join(scan.hsts_headers) or "none", hsts_min_age=minimum)
    expect(scan.hsts_error is None, f"{where(tls_endpoint, scan)}: the HTTPS GET for its headers failed "
                                    f"({scan.hsts_error}); see the server's log")
    fix = f'send "Strict-Transport-Security: max-age={minimum}" or longer'
    expect(bool(scan.hsts_headers),
           f"{where(tls_endpoint, scan)} sends no Strict-Transport-Security header; expected max-age >= {minimum} "
           f"(tls.hsts_min_age {format_duration(tls_policy.hsts_min_age)}): {fix}")
    max_age, invalid = parse_hsts(scan.hsts_headers)
    expect(invalid is None, f"{where(tls_endpoint, scan)} {invalid}, which browsers ignore (RFC 6797): "
                            f"send exactly one \"Strict-Transport-Security: max-age={minimum}\" or longer")
    evidence.record(hsts_max_age=max_age)
    expect((max_age or 0) >= minimum,
           f"{where(tls_endpoint, scan)} sends Strict-Transport-Security max-age={max_age}, below {minimum} "
           f"(tls.hsts_min_age {format_duration(tls_policy.hsts_min_age)}): {fix}")
