"""The whole profile: one environment, its components, thresholds and recovery set-up."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, model_validator

from opsverify.errors import OpsverifyError, ProfileError
from opsverify.profile.maintenance import Lifecycle
from opsverify.profile.model import (
    BackupSource,
    Database,
    Dependency,
    Host,
    HttpService,
    Objective,
    RedisInstance,
    Timeouts,
    runbook_objectives,
)
from opsverify.profile.recovery import Drill, Replica, RestoreTarget, RowTolerance
from opsverify.profile.reporting import DrDocument, Reporting, Waiver, waiver_problems
from opsverify.profile.security import KubernetesPolicy, ScannerPolicy, TlsEndpoint, TlsPolicy
from opsverify.profile.types import Model, Name, Named

N = TypeVar("N", bound=Named)
SECTIONS = ("services", "databases", "redis", "dependencies", "hosts", "backups", "drills", "replicas")


class Profile(Model):
    """One environment: what runs where and which thresholds hold."""

    name: Name
    role: Literal["sandbox", "staging", "production"] = "staging"
    description: str = ""
    timeouts: Timeouts = Timeouts()
    services: list[HttpService] = Field(default_factory=list)
    databases: list[Database] = Field(default_factory=list)
    redis: list[RedisInstance] = Field(default_factory=list)
    dependencies: list[Dependency] = Field(default_factory=list)
    hosts: list[Host] = Field(default_factory=list)
    backups: list[BackupSource] = Field(default_factory=list)
    objectives: list[Objective] = Field(default_factory=runbook_objectives)
    scratch_dir: Path | None = Field(None, description="maintenance fixtures' scratch files; default: $TMPDIR")
    restore_target: RestoreTarget | None = Field(None, description="where drills create scratch databases")
    drills: list[Drill] = Field(default_factory=list)
    replicas: list[Replica] = Field(default_factory=list)
    tls: TlsPolicy | None = Field(None, description="TLS endpoints and certificate files checked (`-m security`)")
    kubernetes: KubernetesPolicy | None = Field(None, description="Kubernetes objects checked (`-m security`)")
    scanners: ScannerPolicy | None = Field(None, description="security scanner evidence checked (`-m security`)")
    lifecycle: Lifecycle | None = Field(
        None, description="job tables, temporary tables, personal data, logs and temporary files cleaned up "
        "(`-m maintenance`)"
    )
    dr_document: DrDocument | None = Field(
        None, description="the disaster-recovery document, reviewed every quarter (QP-16, `-m recovery`)"
    )
    reporting: Reporting = Field(
        default=Reporting(), description="coverage table, history store, Prometheus textfile, Pushgateway, webhook"
    )
    waivers: list[Waiver] = Field(
        default_factory=list,
        description="accepted failures until a date: a waived failure is reported `waived`, not failed",
    )

    @model_validator(mode="after")
    def _cross_references(self, info: ValidationInfo) -> Profile:
        if not (info.context or {}).get("cross_referenced"):  # the loader checked them, with paths, beforehand
            problems = cross_reference_problems(self)
            if problems:
                raise ValueError("; ".join(f"{dotted(path)}: {message}" for path, message in problems))
        return self

    def database(self, name: str) -> Database:
        """The declared database ``name`` (references are checked when the profile loads)."""
        return _by_name(self.databases, name, "database")

    def backup(self, name: str) -> BackupSource:
        """The declared backup source ``name``."""
        return _by_name(self.backups, name, "backup source")

    def host(self, name: str) -> Host:
        """The declared host ``name``."""
        return _by_name(self.hosts, name, "host")

    def tls_endpoints(self) -> list[TlsEndpoint]:
        """Every TLS endpoint the TLS checks handshake with (none without a ``tls`` section): the declared ones,
        then each https:// service, each database with sslmode verify-ca/verify-full and each Redis with ``tls``;
        one per host, port, server name (SNI) and protocol, the first name kept. A derived endpoint named like
        an earlier one is that one when it is the same address, else a ProfileError (two names, one per address)."""
        if self.tls is None:
            return []
        found = list(self.tls.endpoints)
        for service in self.services:
            parts = urlsplit(service.url)
            if parts.scheme == "https" and parts.hostname:
                found.append(TlsEndpoint(name=service.name, host=parts.hostname, port=parts.port or 443,
                                         protocol="https", server_name=None, ca_file=service.ca_file,
                                         check_hostname=True))
        for db in self.databases:
            if db.sslmode in ("verify-ca", "verify-full"):  # verify-ca: libpq checks no hostname
                found.append(TlsEndpoint(name=db.name, host=db.host, port=db.port, protocol="postgres",
                                         server_name=None, ca_file=db.sslrootcert,
                                         check_hostname=db.sslmode == "verify-full"))
        for redis in self.redis:
            if redis.tls:
                found.append(TlsEndpoint(name=redis.name, host=redis.host, port=redis.port, protocol="redis",
                                         server_name=None, ca_file=redis.ca_file, check_hostname=True))
        unique: dict[tuple[str, int, str, str], TlsEndpoint] = {}
        named: dict[str, TlsEndpoint] = {}
        for endpoint in found:
            earlier = named.get(endpoint.name)
            if earlier is not None:
                if (earlier.host, earlier.port) == (endpoint.host, endpoint.port):
                    continue
                at = [f"{e.host}:{e.port}" for e in (earlier, endpoint)]
                raise ProfileError(self.name, [
                    f"tls: two TLS endpoints are named {endpoint.name!r}, at {at[0]} and {at[1]}: "
                    "rename the one in tls.endpoints"])
            key = (endpoint.host, endpoint.port, endpoint.server_name or endpoint.host, endpoint.protocol)
            kept = unique.get(key)
            if kept is None or (endpoint.check_hostname and not kept.check_hostname):  # verify-full over verify-ca
                unique[key] = named[endpoint.name] = endpoint
        return list(unique.values())

    def objective(self, component: str) -> Objective:
        """The RTO/RPO objective of ``component`` (``application``, ``database``, ``full-system``, …)."""
        found = [o for o in self.objectives if o.component == component]
        if not found:
            raise ProfileLookupError(f"profile {self.name} declares no {component!r} objective: add it to objectives")
        return found[0]


class ProfileLookupError(OpsverifyError):
    """A name the profile does not declare (the loader's cross-checks make this rare)."""


def _by_name(items: Sequence[N], name: str, what: str) -> N:
    for item in items:
        if item.name == name:
            return item
    raise ProfileLookupError(f"no {what} named {name!r} is declared (known: {sorted(i.name for i in items)})")


PathKey = tuple[str | int, ...]


def dotted(path: PathKey) -> str:
    """``("databases", 0, "port")`` -> ``databases[0].port``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _get(item: object, key: str, default: Any = None) -> Any:
    if isinstance(item, Mapping):
        return item.get(key, default)
    return getattr(item, key, default) if isinstance(item, Model) else default


def _items(data: object, section: str) -> Iterator[tuple[int, object]]:
    items = _get(data, section)
    if isinstance(items, (list, tuple)):
        yield from ((i, item) for i, item in enumerate(items) if isinstance(item, (Mapping, Model)))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _true(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in {"1", "on", "t", "true", "y", "yes"})


def _known(names: set[str], shown: int = 10) -> str:
    """``['a', 'b']``; a long list is cut: ``['a', …, 'j', … (20000 declared)]``."""
    ordered = sorted(names)
    if len(ordered) <= shown:
        return str(ordered)
    return str(ordered[:shown])[:-1] + f", … ({len(ordered)} declared)]"


def cross_reference_problems(data: object) -> list[tuple[PathKey, str]]:
    """Every problem between sections (unique names, names a drill, backup or replica refers to, the objectives the
    checks need), each with its path; ``data`` is the raw interpolated profile (a mapping) or a ``Profile``.

    Malformed entries are skipped (field validation reports them), so this runs before field validation and every
    problem of a profile is reported in one pass."""
    problems: list[tuple[PathKey, str]] = []
    names: dict[str, set[str]] = {}
    for section in SECTIONS:
        first: dict[str, int] = {}
        for index, item in _items(data, section):
            name = _text(_get(item, "name"))
            if name is None:
                continue
            if name in first:
                problems.append(((section, index, "name"), f"name {name!r} is used more than once "
                                 f"(first at {section}[{first[name]}])"))
            else:
                first[name] = index
        names[section] = set(first)
    objectives = _get(data, "objectives")
    components = (
        {c for _, o in _items(data, "objectives") if (c := _text(_get(o, "component"))) is not None}
        if objectives is not None else {o.component for o in runbook_objectives()}
    )
    known = {"backup": names["backups"], "database": names["databases"], "redis": names["redis"],
             "objective": components}
    scopes = {_text(_get(b, "name")): _get(b, "scope", "full") for _, b in _items(data, "backups")}
    sources = {name: (i, b) for i, b in _items(data, "backups") if (name := _text(_get(b, "name"))) is not None}
    for index, drill in _items(data, "drills"):
        problems += _drill_problems(index, drill, sources)
        for key, declared in known.items():
            value = _text(_get(drill, key, "database" if key == "objective" else None))
            if value is not None and value not in declared:
                problems.append(
                    (("drills", index, key), f"{key} {value!r} is not declared (known: {_known(declared)})")
                )
        backup = _text(_get(drill, "backup"))
        if _get(drill, "database") is not None and backup in names["backups"] and scopes.get(backup) == "tables":
            problems.append((("drills", index, "backup"),
                             f"backup {backup!r} has scope: tables (a pg_dump -t series), "
                             "whose tables cannot be restored alone into an empty scratch database (their foreign keys "
                             "and types name objects the dump lacks): drill a scope: full series of the same database "
                             "instead"))
    for index, source in _items(data, "backups"):
        host = _text(_get(source, "host"))
        if host is not None and host not in names["hosts"]:
            problems.append((("backups", index, "host"),
                             f"host {host!r} is not declared (known: {_known(names['hosts'])})"))
        database = _text(_get(source, "database"))
        if database is not None and database not in names["databases"]:
            problems.append((("backups", index, "database"), f"database {database!r} is not a declared database"))
    problems += _lifecycle_problems(data, names)
    for index, replica in _items(data, "replicas"):
        primary = _text(_get(replica, "primary"))
        if primary is not None and primary not in names["databases"]:
            problems.append((("replicas", index, "primary"), f"primary {primary!r} is not a declared database"))
    seen: dict[str, int] = {}
    for index, objective in _items(data, "objectives"):
        component = _text(_get(objective, "component"))
        if component is not None and component in seen:
            problems.append((("objectives", index, "component"), f"component {component!r} has an objective already "
                             f"(objectives[{seen[component]}]), and only the first would count: keep one"))
        elif component is not None:
            seen[component] = index
    problems += _secret_problems(data)
    problems += waiver_problems(data)
    if "database" not in components:
        for index, db in _items(data, "databases"):
            if _true(_get(db, "wal_archiving")):
                problems.append((("objectives",), f"database {_get(db, 'name')} declares wal_archiving (databases"
                                 f"[{index}]), so a `database` objective (its RPO) is needed: add one"))
                break
        else:
            for index, replica in _items(data, "replicas"):
                if _get(replica, "max_lag") is None:
                    problems.append((("objectives",), f"replica {_get(replica, 'name')} declares no max_lag "
                                     f"(replicas[{index}]), so a `database` objective (its RPO) is needed: add one"))
                    break
    return problems


_SECRET_PAIRS = ("password", "backup_password", "replication_password", "secret_access_key", "maintenance_password")
LIFECYCLE_PARTS = ("job_tables", "temp_tables", "personal_data", "log_dirs", "archives", "tmp_files", "error_logs")


def _secret_problems(data: object) -> list[tuple[PathKey, str]]:
    """A secret given both inline (``${VAR}``) and as a file: which one wins would be a guess."""
    places: list[tuple[PathKey, object]] = []
    for section in ("databases", "redis", "replicas"):
        places += [((section, index), item) for index, item in _items(data, section)]
    target = _get(data, "restore_target")
    if isinstance(target, (Mapping, Model)):
        places.append((("restore_target",), target))
    for index, source in _items(data, "backups"):
        for key in ("s3", "offsite"):
            access = _get(source, key)
            if isinstance(access, (Mapping, Model)):
                places.append((("backups", index, key), access))
    problems: list[tuple[PathKey, str]] = []
    for path, item in places:
        for key in _SECRET_PAIRS:
            if _get(item, key) is not None and _get(item, f"{key}_file") is not None:
                problems.append(((*path, f"{key}_file"), f"both {key} and {key}_file are set, and which one is "
                                 "used would be a guess: keep one"))
    return problems


def _lifecycle_problems(data: object, names: dict[str, set[str]]) -> list[tuple[PathKey, str]]:
    """Lifecycle parts with a name used twice, or naming a database or host the profile does not declare."""
    lifecycle = _get(data, "lifecycle")
    if not isinstance(lifecycle, (Mapping, Model)):
        return []
    problems: list[tuple[PathKey, str]] = []
    for part in LIFECYCLE_PARTS:
        first: dict[str, int] = {}
        for index, item in _items(lifecycle, part):
            name = _text(_get(item, "name"))
            if name is not None and name in first:
                problems.append((("lifecycle", part, index, "name"), f"name {name!r} is used more than once "
                                 f"(first at lifecycle.{part}[{first[name]}])"))
            elif name is not None:
                first[name] = index
            for key, section in (("database", "databases"), ("host", "hosts")):
                value = _text(_get(item, key))
                if value is not None and value not in names[section]:
                    problems.append((("lifecycle", part, index, key), f"{key} {value!r} is not declared "
                                     f"(known: {_known(names[section])})"))
    return problems


def _drill_problems(index: int, drill: object, sources: dict[str, tuple[int, object]]) -> list[tuple[PathKey, str]]:
    """A drill's backup of another kind or another database, and fields that do nothing without compare_with_source."""
    problems: list[tuple[PathKey, str]] = []
    backup = _text(_get(drill, "backup"))
    database, redis = _text(_get(drill, "database")), _text(_get(drill, "redis"))
    if backup in sources:
        at, source = sources[backup]
        if _get(source, "on_demand") is True:
            problems.append((("drills", index, "backup"), f"backup {backup!r} is on_demand (backups[{at}]): a drill "
                             "needs a series that is always there: drill a scheduled series instead"))
        kind = _text(_get(source, "kind"))
        for target, key, wanted in ((database, "database", "postgres"), (redis, "redis", "redis")):
            if target is not None and kind is not None and kind != wanted:
                problems.append((("drills", index, "backup"), f"backup {backup!r} is kind: {kind} (backups[{at}]), "
                                 f"but a drill with {key}: restores a kind: {wanted} backup: name one"))
        declared = _text(_get(source, "database"))
        if database is not None and declared is not None and declared != database:
            problems.append((("drills", index, "database"), f"backup {backup!r} backs up database {declared!r} "
                             f"(backups[{at}].database), not {database!r}: name the same database in both"))
    if database is not None and not _true(_get(drill, "compare_with_source")):
        if _true(_get(drill, "source_quiescent")):
            problems.append((("drills", index, "source_quiescent"), "source_quiescent is used only with "
                             "compare_with_source: true (the source is never read otherwise): set that, or drop it"))
        tolerance = _get(drill, "row_tolerance")
        if tolerance is not None and _not_default_tolerance(tolerance):
            problems.append((("drills", index, "row_tolerance"), "row_tolerance is used only with "
                             "compare_with_source: true (a manifest compares exactly): set that, or drop it"))
    return problems


def _not_default_tolerance(tolerance: object) -> bool:
    if isinstance(tolerance, RowTolerance):
        return tolerance != RowTolerance()
    try:
        return RowTolerance.model_validate(tolerance) != RowTolerance()
    except ValueError:
        return False  # malformed: field validation reports it
