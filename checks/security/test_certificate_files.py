"""Certificate files on disk: the runbooks' ``openssl x509 -in cert.pem -noout -enddate`` (PF-43, QP-09).

Each declared file (``tls.certificate_files``) must exist and parse as PEM certificates (the leaf
first, then its chain); each rule judges what it holds offline, with the same rules and
thresholds as the TLS endpoints' certificates.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from fixtures.security import check_expiry
from opsverify.probes.certificates import (
    CertificateError,
    CertInfo,
    describe,
    matches_hostname,
    read_pem_chain,
    sha1_signed,
    trust_source,
    verify_chain,
    weak_keys,
)
from opsverify.profile.security import CertificateFile, TlsPolicy

pytestmark = [pytest.mark.security, pytest.mark.weekly, pytest.mark.monthly, pytest.mark.runbook("PF-43", "QP-09")]


def where(cert: CertificateFile) -> str:
    return f"certificate file {cert.name} ({cert.path})"


def read(cert: CertificateFile) -> tuple[tuple[str, ...], list[CertInfo]]:
    """The file's PEM certificates and their facts; the check fails when it is missing, unreadable or no certificate."""
    __tracebackhide__ = True
    path = Path(cert.path)
    expect(path.is_file(), f"{where(cert)} does not exist; install the certificate there or fix tls.certificate_files")
    try:
        chain = read_pem_chain(path)
    except OSError as exc:
        fail(f"{where(cert)} cannot be read ({exc.strerror}); give the checking user read access to it")
    expect(bool(chain), f"{where(cert)} holds no PEM certificate (-----BEGIN CERTIFICATE-----); "
                        "convert it with `openssl x509 -outform PEM`")
    try:
        return chain, describe(chain)
    except CertificateError as exc:
        fail(f"{where(cert)}: the {exc}; replace the file with the issued certificate")


def test_certificate_file_parses(certificate_file: CertificateFile, evidence: Recorder) -> None:
    """PF-43/QP-09: the file exists and every PEM block in it parses as an X.509 certificate."""
    _, infos = read(certificate_file)
    evidence.record(certificates=" <- ".join(i.subject for i in infos))


def test_certificate_file_is_not_expiring(
    certificate_file: CertificateFile, tls_policy: TlsPolicy, evidence: Recorder
) -> None:
    """PF-43/QP-09: every certificate of the file has more than tls.expiry_fail left (warn below expiry_warn)."""
    _, infos = read(certificate_file)
    evidence.record(not_after=" ".join(f"{i.subject}={i.not_after:%Y-%m-%d}" for i in infos))
    check_expiry(where(certificate_file), infos, tls_policy, evidence)


def test_certificate_file_chain_verifies(certificate_file: CertificateFile, evidence: Recorder) -> None:
    """PF-43/QP-09: the file's leaf verifies, through the chain in the file, against its ca_file or the system store."""
    chain, infos = read(certificate_file)
    ca_file = certificate_file.ca_file
    evidence.record(trust=trust_source(ca_file))
    problem = verify_chain(chain, ca_file)
    fix = "install the chain its CA issued" + (" or declare its ca_file" if ca_file is None else "")
    expect(problem is None, f"{where(certificate_file)}: {infos[0].label} does not verify against "
                            f"{ca_file if ca_file is not None else trust_source(None)} ({problem}); {fix}")


def test_certificate_file_matches_server_name(certificate_file: CertificateFile, evidence: Recorder) -> None:
    """PF-43/QP-09: the leaf is valid for the declared server_name."""
    if certificate_file.server_name is None:
        pytest.skip(f"{certificate_file.name} declares no server_name to match")
    _, infos = read(certificate_file)
    leaf, name = infos[0], certificate_file.server_name
    evidence.record(names=" ".join(leaf.names) or f"CN={leaf.subject}")
    expect(matches_hostname(leaf, name), f"{where(certificate_file)}: the certificate is for "
                                         f"{', '.join(leaf.names) or 'CN=' + leaf.subject}, not {name}; "
                                         f"reissue it with {name} in its subjectAltName")


def test_certificate_file_key_is_strong(
    certificate_file: CertificateFile, tls_policy: TlsPolicy, evidence: Recorder
) -> None:
    """PF-43/QP-09: every certificate's key is RSA >= tls.min_rsa_bits or EC >= tls.min_ec_bits."""
    _, infos = read(certificate_file)
    evidence.record(keys=" ".join(f"{i.key}-{i.key_bits}" for i in infos))
    for info, minimum in weak_keys(infos, tls_policy.min_rsa_bits, tls_policy.min_ec_bits):
        fail(f"{where(certificate_file)}: {info.label} has a {info.key_bits}-bit {info.key} key, below {minimum}; "
             "reissue it with a stronger key")


def test_certificate_file_has_no_sha1_signature(certificate_file: CertificateFile, evidence: Recorder) -> None:
    """PF-43/QP-09: no certificate of the file (trust anchors aside) is signed with SHA-1 or MD5."""
    _, infos = read(certificate_file)
    evidence.record(signatures=" ".join(f"{i.subject}={i.signature_hash}" for i in infos))
    for info in sha1_signed(infos):
        fail(f"{where(certificate_file)}: {info.label} is signed with {(info.signature_hash or '').upper()}; "
             "reissue it signed with SHA-256")
