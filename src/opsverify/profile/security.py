"""Security policies of a profile: what the security checks (``checks/security/``) hold each layer to.

Every policy is opt-in: a component is security-checked when it declares one (``databases[].security``,
``redis[].security``, ``hosts[].security``), and the profile-wide layers when their section exists
(``tls``, ``kubernetes``, ``scanners``). Defaults are the strict values the issue and the CIS
benchmarks give; allow-lists name the exceptions a team accepts.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from opsverify.durations import format_duration
from opsverify.profile.types import Duration, ExistingFile, Model, Name, Named

Severity = Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"]
FailAt = Annotated[Severity, BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)]  # `high` is HIGH
_REDIS_COMMAND = re.compile(r"[A-Za-z0-9_-]+(\|[A-Za-z0-9_-]+)?")
HOST_PORT_GLOB = re.compile(r"(\[[^\[\]\s]+\]|[^\[\]:\s]+):[^\[\]:\s]+")  # 0.0.0.0:443, *:22, [::]:80
DANGEROUS_REDIS_COMMANDS = ("FLUSHALL", "FLUSHDB", "CONFIG", "DEBUG", "KEYS", "MODULE", "SHUTDOWN", "SCRIPT")


class PostgresSecurity(Model):
    """How one PostgreSQL server and database must be configured (checked over SQL as the database's ``user``)."""

    superusers: list[str] = Field(default_factory=lambda: ["postgres"], description="roles allowed SUPERUSER")
    createrole: list[str] = Field(default_factory=list, description="roles besides superusers allowed CREATEROLE")
    bypassrls: list[str] = Field(default_factory=list, description="roles besides superusers allowed BYPASSRLS")
    replication: list[str] = Field(default_factory=list, description="roles besides superusers allowed REPLICATION")
    extensions: list[str] = Field(
        default_factory=lambda: ["plpgsql"], description="extensions this database may have installed"
    )
    log_min_duration_statement: Duration | None = Field(
        None,
        description="the slow-query logging threshold the server must run with (QP-26). Default: none declared, "
        "so any enabled value passes and only -1 (off) fails",
    )
    require_ssl: bool = Field(True, description="the server has ssl = on")
    log_connections: bool = Field(True, description="log_connections and log_disconnections are on")
    data_checksums: bool = Field(True, description="the cluster was initialised with data checksums")


class RedisSecurity(Model):
    """How one Redis server must be configured (checked over the protocol, never reading a password back)."""

    wildcard_bind: bool = Field(False, description="the server may listen on 0.0.0.0 / :: / * (bind)")
    app_users: list[str] = Field(
        default_factory=list, description="the application's ACL users: each must be denied denied_commands"
    )
    denied_commands: list[str] = Field(
        default_factory=lambda: list(DANGEROUS_REDIS_COMMANDS),
        description="commands the application users may not run (checked with ACL DRYRUN): a command name, or "
        "command|subcommand (config|set); upper-cased. One the server does not run, though it knows it (renamed "
        "away with rename-command ... \"\"), counts as denied",
    )

    @field_validator("denied_commands")
    @classmethod
    def _command_names(cls, value: list[str]) -> list[str]:
        bad = [c for c in value if not _REDIS_COMMAND.fullmatch(c)]
        if bad:  # "config set" would be sent as one unknown command name
            raise ValueError(
                f"{', '.join(repr(c) for c in bad)}: not a Redis command name: write a command (FLUSHALL) or "
                "command|subcommand (CONFIG|SET), of letters, digits, - and _")
        return [c.upper() for c in value]


class HostSecurity(Model):
    """How one host must be configured (checked through testinfra, local:// or ssh://)."""

    app_dirs: list[str] = Field(
        default_factory=list, description="application directories: no world-writable file or directory (QP-30)"
    )
    secret_files: list[str] = Field(
        default_factory=lambda: [
            ".env*", "*.env", "*.key", "*-key.pem", "*.key.pem", "privkey*.pem", "*private*.pem",
            "id_rsa", "id_ecdsa", "id_ed25519",
        ],
        description="name globs of secret files under app_dirs: none may be readable by group or others (any file "
        "under 64 KiB holding a PEM private key is held to the same rule, whatever its name)",
    )
    suid_paths: list[str] = Field(default_factory=lambda: ["/"], description="where SUID/SGID files are looked for")
    suid_allowed: list[str] = Field(
        default_factory=list,
        description="path globs of SUID/SGID files that may exist (besides the distribution's usual ones)",
    )
    app_processes: list[str] = Field(
        default_factory=list, description="process names of the application: none may run as root"
    )
    sshd: bool = Field(False, description="the host runs sshd: its effective settings (sshd -T) are checked")
    sshd_config: str | None = Field(None, description="the sshd_config sshd -T reads (-f); default: the server's own")
    listening_allowed: list[str] | None = Field(
        None,
        description="address:port globs that may listen besides loopback (\"0.0.0.0:443\", \"*:22\"). Default: "
        "none declared, so listening sockets are not checked",
    )
    security_updates_max_age: Duration | None = Field(
        timedelta(days=7),
        description="longest a pending security update may stay uninstalled (PF-08, Debian/Ubuntu hosts: "
        "apt-get -s upgrade against the host's own lists, never an update); null: not checked",
    )
    apt_lists_max_age: Duration = Field(
        timedelta(days=2), description="the host's package lists must be fresher than this to judge pending updates"
    )
    scan_timeout: Duration = Field(
        timedelta(minutes=2),
        description="longest one command on the host may run (find over app_dirs or suid_paths, apt-get -s, sshd -T)",
    )

    @field_validator("app_dirs", "suid_paths")
    @classmethod
    def _absolute_paths(cls, paths: list[str], info: ValidationInfo) -> list[str]:
        if info.field_name == "suid_paths" and not paths:
            raise ValueError("must name at least one directory (default [\"/\"])")
        wrong = [p for p in paths if not p.startswith("/")]
        if wrong:
            raise ValueError(f"must be absolute paths on the host: {', '.join(repr(p) for p in wrong)}")
        return paths

    @field_validator("listening_allowed")
    @classmethod
    def _address_port_globs(cls, globs: list[str] | None) -> list[str] | None:
        wrong = [g for g in globs or [] if not HOST_PORT_GLOB.fullmatch(g)]
        if wrong:
            raise ValueError(
                f"must be address:port globs (\"0.0.0.0:443\", \"*:22\", \"[::]:80\"): {', '.join(map(repr, wrong))}"
            )
        return globs


class TlsEndpoint(Named):
    """A TLS endpoint checked over real handshakes (PF-43, QP-09, QP-30)."""

    host: str
    port: int = Field(ge=1, le=65535)
    protocol: Literal["tls", "https", "postgres", "redis"] = Field(
        "tls", description="https adds the HSTS check; postgres speaks its SSLRequest before the handshake"
    )
    server_name: str | None = Field(None, description="the name the certificate must match (SNI); default: host")
    ca_file: ExistingFile | None = Field(None, description="CA bundle the chain must verify against; default: system")
    check_hostname: bool = Field(
        True, description="the leaf must be valid for server_name (false: a database with sslmode verify-ca)"
    )

    @field_validator("host")
    @classmethod
    def _host_name(cls, value: str) -> str:
        if not is_host(value):
            raise ValueError(f"{value!r} is not a host name or IP address (a URL? give only its host, and its port "
                             "as port)")
        return value


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def is_host(value: str) -> bool:
    """Whether ``value`` is a DNS host name or an IP address (not a URL, not host:port)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return len(value) <= 253 and _HOST.fullmatch(value) is not None
    return True


class CertificateFile(Named):
    """A certificate file on disk (the runbooks' ``openssl x509 -in cert.pem -noout -enddate``)."""

    path: Path = Field(description="PEM file: the leaf first, then its chain")
    ca_file: ExistingFile | None = Field(None, description="CA bundle the chain must verify against")
    server_name: str | None = Field(None, description="a name the certificate must be valid for")


class TlsPolicy(Model):
    """Which TLS endpoints and certificate files are checked, and the thresholds they are held to.

    Besides ``endpoints``, every https:// service, every database with sslmode verify-ca/verify-full
    and every Redis with ``tls: true`` is an endpoint (``tls_endpoints(profile)``)."""

    expiry_fail: Duration = Field(timedelta(days=14), description="a certificate expiring sooner fails")
    expiry_warn: Duration = Field(timedelta(days=30), description="a certificate expiring sooner warns")
    min_rsa_bits: int = Field(2048, ge=1024, le=16384)
    min_ec_bits: int = Field(256, ge=160, le=571)
    hsts_min_age: Duration = Field(timedelta(days=180), description="smallest Strict-Transport-Security max-age")
    endpoints: list[TlsEndpoint] = Field(default_factory=list)
    certificate_files: list[CertificateFile] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> TlsPolicy:
        if self.expiry_fail > self.expiry_warn:
            fail, warn = format_duration(self.expiry_fail), format_duration(self.expiry_warn)
            raise ValueError(f"expiry_fail {fail} is longer than expiry_warn {warn}: a certificate would fail "
                             "before it warns; set expiry_fail <= expiry_warn")
        for section, items in (("endpoints", self.endpoints), ("certificate_files", self.certificate_files)):
            names = [item.name for item in items]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"tls.{section} declares {', '.join(map(repr, twice))} more than once: "
                                 "give each a name of its own")
        return self


class ManifestSet(Named):
    """Kubernetes manifests: deploy files or the runbooks' ``kubectl get … -o yaml`` backups."""

    path: Path = Field(description="a YAML file or a directory of them (searched recursively)")


KUBERNETES_RULE_IDS = (  # the rules of opsverify.rules.kubernetes (a self-test keeps the two equal)
    "pod-run-as-non-root", "pod-privileged", "pod-privilege-escalation", "pod-read-only-root",
    "pod-capabilities-drop-all", "pod-dangerous-capabilities", "pod-host-namespaces", "pod-host-path",
    "pod-host-port", "pod-seccomp", "pod-resources", "pod-probes", "image-tag-not-latest", "image-digest",
    "namespace-default-deny", "env-secret-literal", "configmap-secrets", "automount-service-account-token",
    "rbac-wildcard", "rbac-cluster-admin",
)


class KubernetesPolicy(Model):
    """The rules Kubernetes objects are held to (PF-13, PF-44, PF-45) and the exceptions a team accepts."""

    manifests: list[ManifestSet] = Field(default_factory=list)
    cluster_admin_subjects: list[str] = Field(
        default_factory=list,
        description="subjects allowed a cluster-admin binding: User:<name>, Group:<name> or "
        "ServiceAccount:<namespace>/<name> globs (kinds case-sensitive, as Kubernetes spells them)",
    )
    wildcard_roles: list[str] = Field(default_factory=list, description="(Cluster)Role names allowed '*' rules")
    require_digest: bool = Field(False, description="images must be pinned by @sha256 digest")
    exemptions: dict[str, list[str]] = Field(
        default_factory=dict, description="rule ID -> object globs (Kind/namespace/name) the rule does not apply to"
    )

    @field_validator("exemptions")
    @classmethod
    def _known_rules(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = sorted(set(value) - set(KUBERNETES_RULE_IDS))
        if unknown:  # a typo would silently exempt nothing
            raise ValueError(f"no Kubernetes rule {', '.join(unknown)}: the rules are {', '.join(KUBERNETES_RULE_IDS)}")
        return value

    @field_validator("manifests")
    @classmethod
    def _unique_sets(cls, value: list[ManifestSet]) -> list[ManifestSet]:
        first: dict[str, int] = {}
        for index, manifest_set in enumerate(value):
            if manifest_set.name in first:  # check ids <set>:<rule> and messages would not tell the sets apart
                raise ValueError(f"manifest set name {manifest_set.name!r} is used more than once (manifests"
                                 f"[{first[manifest_set.name]}] and manifests[{index}]): give each set its own name")
            first[manifest_set.name] = index
        return value

    @field_validator("cluster_admin_subjects")
    @classmethod
    def _subject_form(cls, value: list[str]) -> list[str]:
        for entry in value:  # an entry in another form would match no subject and silently allow nothing
            problem = subject_problem(entry)
            if problem:
                raise ValueError(f"cluster_admin_subjects entry {entry!r} {problem}")
        return value


SUBJECT_KINDS = ("User", "Group", "ServiceAccount")


def subject_problem(entry: str) -> str | None:
    """Why ``entry`` can match no RBAC subject as ``rules.kubernetes.subject_name`` writes them, else None."""
    form = "write User:<name>, Group:<name> or ServiceAccount:<namespace>/<name> (globs allowed in the names)"
    kind, colon, name = entry.partition(":")
    if not colon:
        return f"names no subject kind: {form}"
    if kind not in SUBJECT_KINDS:
        spelt = next((k for k in SUBJECT_KINDS if k.lower() == kind.lower()), None)
        if spelt is not None:
            return f"spells the kind {kind!r}, and kinds are case-sensitive: write {spelt}:{name}"
        return f"has kind {kind!r}, not User, Group or ServiceAccount: {form}"
    if kind == "ServiceAccount":
        namespace, slash, account = name.partition("/")
        spans = "*" in name  # fnmatch's * matches '/' too: ServiceAccount:* is every service account
        if not spans and (not (namespace and slash and account) or "/" in account):
            return "is not in the form ServiceAccount:<namespace>/<name> (ServiceAccount:ci/deployer)"
    elif not name:
        return f"names no {kind.lower()}: write {kind}:<name>"
    return None


class ScannerReport(Named):
    """Where a scanner's JSON reports land (PF-05, PF-42, PF-32, QP-08, QP-17): the newest is judged."""

    tool: Literal["trivy", "bandit", "pip-audit", "safety"]
    path: Path = Field(description="directory holding the reports")
    pattern: str = Field("*.json", description="glob of the report file names")
    max_age: Duration = Field(timedelta(days=1), description="the scanner's cadence: the newest must be younger")
    fail_at: FailAt = Field("HIGH", description="a finding at or above this severity fails (any case)")
    ignore: list[str] = Field(default_factory=list, description="finding IDs accepted (CVE-…, B105, GHSA-…)")


class LockFile(Named):
    """A dependency lock file that must be refreshed regularly (PF-32, QP-17)."""

    path: Path
    max_age: Duration = Field(timedelta(days=92), description="quarterly dependency updates (QP-17)")


class BanditRun(Named):
    """A source tree bandit scans offline during the check (PF-42)."""

    source: Path
    fail_at: FailAt = "HIGH"
    ignore: list[str] = Field(default_factory=list, description="bandit test IDs accepted (B101, …)")
    timeout: Duration = Field(timedelta(minutes=5), description="the bandit run is stopped and fails after this")


class ScannerPolicy(Model):
    """Security scanner evidence: reports, lock files, offline bandit runs."""

    reports: list[ScannerReport] = Field(default_factory=list)
    lock_files: list[LockFile] = Field(default_factory=list)
    bandit: list[BanditRun] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> ScannerPolicy:
        """A name is a check's ID: two entries of one list with the same name would be one check judged twice."""
        for section in ("reports", "lock_files", "bandit"):
            first: dict[str, int] = {}
            for index, item in enumerate(getattr(self, section)):
                if item.name in first:
                    raise ValueError(
                        f"name {item.name!r} is used more than once in scanners.{section} "
                        f"({section}[{first[item.name]}] and {section}[{index}]): give each entry its own name"
                    )
                first[item.name] = index
        return self


__all__ = [
    "BanditRun",
    "CertificateFile",
    "HostSecurity",
    "KubernetesPolicy",
    "LockFile",
    "ManifestSet",
    "Name",
    "PostgresSecurity",
    "RedisSecurity",
    "ScannerPolicy",
    "ScannerReport",
    "TlsEndpoint",
    "TlsPolicy",
]
