"""The offline judgement of certificates and of a TLS scan: no network, only what a scan or a file holds.

Certificates are parsed with ``cryptography``; a chain is verified with OpenSSL's ``X509_verify_cert``
(through nassl, sslyze's OpenSSL binding) against the declared CA bundle or the system's trust
store, with no security level applied, so a weak key or a SHA-1 signature is reported by its own
rule and not again as an untrusted chain. Hostnames are matched against the subjectAltName (DNS
names with a left-most ``*`` wildcard, IP addresses), the common name only when there is no SAN.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from opsverify.errors import OpsverifyError

WEAK_SUITE = re.compile(r"_NULL_|_NULL$|EXPORT|_RC4_|_3DES_|_DES_|_DES40_|_anon_", re.IGNORECASE)
WEAK_FAMILIES = "NULL/EXPORT/RC4/DES/3DES/anonymous"
PEM_BEGIN, PEM_END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"


class CertificateError(OpsverifyError):
    """A certificate that cannot be read or parsed."""


@dataclass(frozen=True)
class CertInfo:
    """One certificate's facts the rules read."""

    position: str  # "leaf", "chain certificate 2"
    subject: str  # the common name, else the whole subject
    not_after: datetime
    key: str  # "RSA", "EC", "Ed25519", …
    key_bits: int
    signature_hash: str | None  # "sha256", "sha1"; None for Ed25519/Ed448
    self_signed: bool
    names: tuple[str, ...]  # subjectAltName DNS names and IP addresses

    @property
    def label(self) -> str:
        return f"{self.position} {self.subject!r}"

    def left(self, now: datetime) -> timedelta:
        return self.not_after - now


def read_pem_chain(path: Path) -> tuple[str, ...]:
    """The PEM certificates of a file, in order (leaf first): the same shape as a scan's ``chain``."""
    text = path.read_text(errors="replace")
    return tuple(PEM_BEGIN + part.split(PEM_END, 1)[0] + PEM_END + "\n" for part in text.split(PEM_BEGIN)[1:]
                 if PEM_END in part)


def _subject(cert: object) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    assert isinstance(cert, x509.Certificate)
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if common else cert.subject.rfc4514_string() or "(empty subject)"


def _names(cert: object) -> tuple[str, ...]:
    from cryptography import x509

    assert isinstance(cert, x509.Certificate)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return (*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)))


def _key(cert: object) -> tuple[str, int]:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    assert isinstance(cert, x509.Certificate)
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    return type(key).__name__, 0


def describe(chain: tuple[str, ...]) -> list[CertInfo]:
    """The facts of every certificate of a PEM chain (leaf first); CertificateError when one does not parse."""
    from cryptography import x509

    infos = []
    for index, pem in enumerate(chain):
        position = "leaf" if index == 0 else f"chain certificate {index + 1}"
        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
        except ValueError as exc:
            raise CertificateError(f"{position} does not parse as an X.509 certificate ({exc})") from exc
        digest = cert.signature_hash_algorithm
        key, bits = _key(cert)
        infos.append(
            CertInfo(position, _subject(cert), cert.not_valid_after_utc, key, bits,
                     digest.name if digest is not None else None, cert.issuer == cert.subject, _names(cert))
        )
    return infos


def days_text(left: timedelta) -> str:
    """``"in 12 days"``, ``"in less than a day"``, ``"3 days ago"``: whole days rounded to nearest, both ways."""
    days = round(abs(left) / timedelta(days=1))
    if days == 0:
        return "in less than a day" if left >= timedelta(0) else "less than a day ago"
    count = f"{days} day" if days == 1 else f"{days} days"
    return f"in {count}" if left >= timedelta(0) else f"{count} ago"


def expiring(infos: list[CertInfo], below: timedelta, now: datetime | None = None) -> list[CertInfo]:
    """The certificates with less than ``below`` left (expired ones included)."""
    moment = now or datetime.now(UTC)
    return [info for info in infos if info.left(moment) < below]


def weak_keys(infos: list[CertInfo], min_rsa: int, min_ec: int) -> list[tuple[CertInfo, str]]:
    """The certificates whose key is below the policy, each with the threshold it misses (``tls.min_rsa_bits``)."""
    found = []
    for info in infos:
        if info.key in ("RSA", "DSA") and info.key_bits < min_rsa:
            found.append((info, f"tls.min_rsa_bits {min_rsa}"))
        elif info.key == "EC" and info.key_bits < min_ec:
            found.append((info, f"tls.min_ec_bits {min_ec}"))
    return found


def sha1_signed(infos: list[CertInfo]) -> list[CertInfo]:
    """Certificates signed with SHA-1 (or MD5), self-signed trust anchors aside (their signature is never checked)."""
    return [i for i in infos if i.signature_hash in ("sha1", "md5") and not (i.self_signed and i.position != "leaf")]


def capped(items: list[str], shown: int = 5) -> str:
    """``"a, b, c, d, e and 3 more"``: the first ``shown`` items, then how many more."""
    text = ", ".join(items[:shown])
    return f"{text} and {len(items) - shown} more" if len(items) > shown else text


def weak_suites(accepted: dict[str, tuple[str, ...]]) -> list[str]:
    """The accepted cipher suites of a NULL/EXPORT/RC4/DES/3DES/anonymous family, once each, sorted by name."""
    return sorted({s for suites in accepted.values() for s in suites if WEAK_SUITE.search(s)})


def matches_hostname(info: CertInfo, name: str) -> bool:
    """Whether the certificate is valid for ``name`` (SAN DNS names with a left-most wildcard, IPs; CN without SAN)."""
    try:
        wanted_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(name)
    except ValueError:
        wanted_ip = None
    names = info.names or (info.subject,)
    for candidate in names:
        if wanted_ip is not None:
            try:
                if ipaddress.ip_address(candidate) == wanted_ip:
                    return True
            except ValueError:
                continue
        elif _dns_match(candidate.lower().rstrip("."), name.lower().rstrip(".")):
            return True
    return False


def _dns_match(pattern: str, name: str) -> bool:
    if pattern == name:
        return True
    if pattern.startswith("*.") and "." in name:
        return name.split(".", 1)[1] == pattern[2:] and not name.startswith(".")
    return False


@cache
def _system_roots() -> tuple[str, ...]:
    paths = ssl.get_default_verify_paths()
    files = [Path(p) for p in (paths.cafile, paths.openssl_cafile) if p]
    found = next((f for f in files if f.is_file()), None)
    if found is not None:
        return read_pem_chain(found)
    directory = Path(paths.capath or paths.openssl_capath or "/etc/ssl/certs")
    pems: list[str] = []
    for path in sorted(directory.glob("*")) if directory.is_dir() else []:
        if path.is_file():
            pems += read_pem_chain(path)
    return tuple(dict.fromkeys(pems))


def trust_source(ca_file: Path | None) -> str:
    return f"ca_file {ca_file}" if ca_file is not None else "the system trust store"


def verify_chain(chain: tuple[str, ...], ca_file: Path | None, at: datetime | None = None) -> str | None:
    """Why the chain does not verify against ``ca_file`` (default: the system store), or None when it does.

    OpenSSL's own verification (signatures, issuers, validity dates, CA constraints) with the
    certificates in ``chain`` after the leaf as untrusted intermediates and no security level.
    """
    from nassl._nassl import X509, X509_STORE_CTX

    roots = read_pem_chain(ca_file) if ca_file is not None else _system_roots()
    if not roots:
        return f"{trust_source(ca_file)} holds no certificate"
    certs = [X509(pem) for pem in chain]
    context = X509_STORE_CTX()
    context.set0_trusted_stack([X509(pem) for pem in roots])
    context.set0_untrusted(certs)
    context.set_cert(certs[0])
    if X509.verify_cert(context) == 1:
        return None
    return str(X509.verify_cert_error_string(context.get_error()))
