"""The profile: one environment described as frozen, validated models.

Thresholds default to the values the two runbooks give (CPU < 80 %, disk < 85 %, the
Photonic Foundry RTO/RPO table). Secrets are ``SecretStr`` so they never print.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    ByteSize,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from opsverify.durations import parse_duration
from opsverify.profile.maintenance import PostgresMaintenance, RedisMaintenance
from opsverify.profile.security import HostSecurity, PostgresSecurity, RedisSecurity
from opsverify.profile.types import Duration, ExistingFile, Model, Name, Named, Percent


def read_secret(value: SecretStr | None, file: Path | None) -> str | None:
    """A secret given in the environment (``${VAR}``) or as a file (its first line, stripped); None if neither."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        lines = file.read_text().splitlines()
        return lines[0].strip() if lines else ""
    return None


class SecretSource(Named):
    """A credential from the environment (``password: ${VAR}``) or from a file."""

    password: SecretStr | None = None
    password_file: ExistingFile | None = None

    def secret(self) -> str | None:
        """The password, read from the file when one is named (first line, stripped)."""
        return read_secret(self.password, self.password_file)


class MetricsExpectation(Model):
    """What ``/metrics`` must expose (PF-03, QP-02)."""

    path: str = "/metrics"
    required: list[str] = Field(default_factory=list, description="metric family names that must be present")
    maximum: dict[str, float] = Field(default_factory=dict, description="sample name -> largest allowed value")
    freshness_metric: str | None = Field(None, description="a gauge holding a unix timestamp of the last update")
    max_age: Duration = timedelta(minutes=5)


class HttpService(Named):
    """An HTTP service with a health endpoint (PF-01, QP-01)."""

    url: str = Field(description="base URL, http:// or https://")
    health_path: str = "/health"
    healthy_status: list[str] = Field(default_factory=lambda: ["ok", "healthy", "pass", "up"])
    latency_budget: Duration = timedelta(seconds=1)
    ca_file: ExistingFile | None = Field(None, description="CA bundle for https; default: the system store")
    metrics: MetricsExpectation | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/")


class Database(SecretSource):
    """A PostgreSQL database, opened read-only by the checks."""

    host: str = "127.0.0.1"
    port: int = Field(5432, ge=1, le=65535)
    dbname: str
    user: str
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: ExistingFile | None = Field(
        None, description="CA bundle the server's certificate must verify against (verify-ca, verify-full)"
    )
    connect_budget: Duration = timedelta(seconds=2)
    security: PostgresSecurity | None = Field(
        None, description="the security policy the server and database are checked against (`-m security`)"
    )
    wal_archiving: bool = Field(False, description="the server archives WAL (PF-20): pg_stat_archiver is checked")
    wal_archive: Path | None = Field(
        None,
        description="the directory archive_command copies finished WAL segments into, readable from here (PF-20): "
        "the last segment pg_stat_archiver reports archived must be in it. Default: none declared, so the "
        "archive is not checked and point-in-time recovery is no recovery path for the RPO",
    )
    base_backups: Path | None = Field(
        None,
        description="directory of this server's pg_basebackup base backups, one subdirectory each (PF-20): the "
        "newest must be younger than base_backup_max_age. Default: none declared (not checked)",
    )
    base_backup_max_age: Duration = Field(
        timedelta(days=7),
        description="point-in-time recovery restores the newest base backup and replays every WAL segment "
        "archived since: a weekly base backup bounds that replay (the recovery time) and the WAL the archive "
        "must keep to a week",
    )

    max_inactive_slot_wal: ByteSize | None = Field(
        None,
        le=2**60,
        description="most WAL an inactive replication slot may hold back on this server (1GB, 512MiB). Default: "
        "the server's max_wal_size, the most WAL it keeps for itself: beyond it, WAL exists only for a slot "
        "nothing reads, checkpoints cannot recycle it, and it grows until the disk is full",
    )

    backup_user: str | None = Field(
        None,
        description="the role the backup jobs (pg_dump) log in as, e.g. one granted pg_read_all_data: it reads every "
        "table and sequence. Default: none declared, so backup jobs run as `user`, the read-only monitoring role, "
        "and a refusal says so. Checks that only read use `user`",
    )
    backup_password: SecretStr | None = Field(None, description="the backup role's password: ${VAR} only")
    backup_password_file: ExistingFile | None = Field(None, description="a file holding the backup role's password")
    maintenance: PostgresMaintenance = Field(
        default=PostgresMaintenance(), description="thresholds of the maintenance checks (`-m maintenance`)"
    )
    maintenance_user: str | None = Field(
        None,
        description="the role the maintenance fixtures (vacuum_analyzed, archived_jobs, dropped_temp_tables) log in "
        "as: the tables' owner (VACUUM needs it); write key queries are also planned as it (EXPLAIN, never run). "
        "Default: none declared, so those fixtures refuse and write key queries skip, naming it; the other checks "
        "only read, as `user`",
    )
    maintenance_password: SecretStr | None = Field(None, description="the maintenance role's password: ${VAR} only")
    maintenance_password_file: ExistingFile | None = Field(
        None, description="a file holding the maintenance role's password"
    )

    def backup_secret(self) -> str | None:
        """The backup role's password, from the environment or its file."""
        return read_secret(self.backup_password, self.backup_password_file)

    def maintenance_secret(self) -> str | None:
        """The maintenance role's password, from the environment or its file."""
        return read_secret(self.maintenance_password, self.maintenance_password_file)

    @model_validator(mode="after")
    def _maintenance_password_needs_user(self) -> Database:
        if self.maintenance_user is None and (
            self.maintenance_password is not None or self.maintenance_password_file is not None
        ):
            raise ValueError("maintenance_password is the maintenance role's password: declare maintenance_user too")
        return self

    @model_validator(mode="after")
    def _backup_password_needs_backup_user(self) -> Database:
        if self.backup_user is None and (self.backup_password is not None or self.backup_password_file is not None):
            raise ValueError("backup_password is the backup role's password: declare backup_user (the role) too")
        return self

    @field_validator("wal_archive", "base_backups", "maintenance_user", mode="before")
    @classmethod
    def _blank_path_is_none(cls, value: object) -> object:
        return value or None  # `${PF_WAL_ARCHIVE:-}` left empty: none declared

    @model_validator(mode="after")
    def _archive_needs_archiving(self) -> Database:
        if self.wal_archive is not None and not self.wal_archiving:
            raise ValueError("wal_archive is checked only when the server archives WAL: set wal_archiving: true")
        return self


class RedisInstance(SecretSource):
    """A Redis server (PF-21, PF-29, PF-30)."""

    host: str = "127.0.0.1"
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0, le=100_000)
    username: str | None = None
    tls: bool = Field(False, description="the server speaks TLS on port (tls-port): clients connect over TLS")
    ca_file: ExistingFile | None = Field(None, description="CA bundle for tls; default: the system store")
    security: RedisSecurity | None = Field(
        None, description="the security policy the server is checked against (`-m security`)"
    )
    maintenance: RedisMaintenance = Field(
        default=RedisMaintenance(), description="thresholds of the maintenance checks (`-m maintenance`)"
    )
    ping_budget: Duration = timedelta(milliseconds=50)
    require_persistence: bool = Field(
        True,
        description="the server persists (RDB save rules or AOF on), its last BGSAVE succeeded and no change stays "
        "unsaved longer than max_unsaved_age",
    )
    rdb_file: Path | None = Field(None, description="the server's dump.rdb, when readable from here (PF-21)")
    persistence: Literal["rdb", "aof", "none"] | None = Field(
        None,
        description="what the server persists with, for a server whose CONFIG cannot be read (renamed away by "
        "hardening, blocked on a managed Redis): rdb (save rules), aof (appendonly), none. Unset: ask the server "
        "(CONFIG GET save). Declared, INFO persistence still checks it: aof needs aof_enabled:1; a readable CONFIG "
        "GET save must agree",
    )
    max_unsaved_age: Duration = Field(
        timedelta(hours=4),
        description="with RDB only (AOF off), how long a change may stay unsaved: the age of the last successful "
        "save (rdb_last_save_time) while rdb_changes_since_last_save > 0. Default 4h, the runbooks' full-system RPO "
        "(PF-47): Redis has no row of its own, a crash loses what is unsaved",
    )


class Dependency(Named):
    """An external dependency that must be reachable (QP-04), ``tcp://host:port`` or a URL."""

    url: str
    budget: Duration = timedelta(seconds=2)
    accept_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=list,
        description="http(s): statuses besides 2xx/3xx that count as reachable, e.g. [401] for a backend whose "
        "health URL needs authentication; anything else (a 404, a 403) fails",
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("tcp", "http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not a tcp://host:port, http:// or https:// address")
        if parts.scheme == "tcp" and parts.port is None:
            raise ValueError(f"{value!r} has no port: write tcp://host:port")
        return value


class Host(Named):
    """A machine whose resources are checked through testinfra (QP-29, PF-07)."""

    uri: str = Field("local://", description="testinfra host spec: local://, ssh://user@host:port")
    ssh_config: ExistingFile | None = None
    ssh_identity_file: ExistingFile | None = None
    cpu_max_percent: Percent = Field(80, description="busy share of all CPUs, without this run's processes (100: any)")
    cpu_window: Duration = Field(timedelta(seconds=5), description="CPU use is measured over this window")
    cpu_samples: int = Field(5, ge=1, le=100, description="samples in the window; the check takes their median")
    memory_max_percent: Percent = 90
    disk_max_percent: Percent = 85
    disk_paths: list[str] = Field(default_factory=lambda: ["/"])
    security: HostSecurity | None = Field(
        None, description="the security policy the host is checked against (`-m security`)"
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, dict) and "cpu_sample" in data:
            raise ValueError("cpu_sample was replaced by cpu_window (default 5s) and cpu_samples (default 5)")
        return data

    @model_validator(mode="after")
    def _sample_length(self) -> Host:
        if self.cpu_window / self.cpu_samples < timedelta(milliseconds=100):
            raise ValueError("cpu_window / cpu_samples is under 100ms: take fewer samples or a longer window")
        return self


class S3Access(Model):
    """How to reach an S3 API; credentials default to boto3's own chain (env, ~/.aws, instance role)."""

    endpoint_url: str | None = Field(None, description="S3-compatible endpoint; default: AWS for the region")
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    secret_access_key_file: ExistingFile | None = None

    def secret(self) -> str | None:
        """The secret key, read from the file when one is named (first line, stripped)."""
        return read_secret(self.secret_access_key, self.secret_access_key_file)

    @field_validator("endpoint_url", mode="before")
    @classmethod
    def _blank_endpoint_is_aws(cls, value: object) -> object:
        return value or None  # `${S3_ENDPOINT:-}` left empty: AWS for the region


def _s3_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"{value!r} is not an s3://bucket/prefix URL")
    return value


class Offsite(S3Access):
    """Where the offsite copies of a local series live (QP-18 S3 upload, QP-21 S3 sync)."""

    url: str = Field(description="s3://bucket/prefix/ holding a copy of each local backup, by file name")
    recent: Duration = Field(timedelta(days=7), description="local backups younger than this must have a copy")

    @field_validator("url")
    @classmethod
    def _s3(cls, value: str) -> str:
        return _s3_url(value)


class BackupSource(Named):
    """A location the runbooks' backup jobs write to (PF-04, PF-16, QP-18)."""

    kind: Literal["postgres", "redis", "config", "archive", "globals"] = Field(
        description="globals: files of `pg_dumpall --globals-only` (roles and grants) for the cluster of `database`"
    )
    path: str = Field(description="directory holding the backups, or s3://bucket/prefix/")
    pattern: str = Field("*", description="glob of the backup file names")
    host: Name | None = Field(None, description="the profile host whose directory this is (ssh://); default: here")
    s3: S3Access | None = Field(None, description="S3 access when path is s3://")
    database: str | None = Field(
        None, description="the profile database this backs up (globals: whose owners and grantees it must create)"
    )
    rpo: Duration = timedelta(hours=24)
    retention: Duration = timedelta(days=30)
    schedule: Duration = Field(timedelta(days=1), description="how often the job runs; a bigger gap is a miss")
    max_verify: int = Field(
        3, ge=1, le=10_000, description="newest backups fully verified by the daily run (monthly: all)"
    )
    max_shrink_percent: Percent = Field(50, description="newest may be at most this much smaller than the median")
    max_growth_percent: float = Field(
        50, ge=0, le=10_000, description="largest growth of the newest backup's size per 30 days, as a share of "
        "its size at the start of growth_window (least squares over the recorded runs)",
    )
    growth_window: Duration = Field(timedelta(days=30), description="how far back the recorded sizes reach")
    tables: list[str] = Field(default_factory=list, description="tables every dump must hold")
    kinds: list[str] = Field(default_factory=list, description="Kubernetes kinds every config export must hold")
    rdb_max_version: int = Field(12, ge=1, le=1000, description="newest RDB version the restore target loads")
    offsite: Offsite | None = None
    scope: Literal["full", "tables"] = Field(
        "full", description="full: a whole-database dump, compared with every live table; tables: selected tables (-t)"
    )
    exclude_tables: list[str] = Field(
        default_factory=list,
        description="globs of live tables (schema.table or table) a dump may leave out, or leave the rows of out",
    )

    stray_max_age: Duration = Field(
        timedelta(days=7),
        description="a file in this source's directory that matches no source's pattern (a stray: a manual dump, "
        "a renamed copy) fails the directory check once older than this; a directory shared by several sources "
        "takes the smallest of theirs. Default 7d",
    )
    on_demand: bool = Field(
        False,
        description="manual backups taken only when someone needs them: no freshness or schedule check, an empty "
        "series is fine; every file present is still verified and retention applies. No schedule or rpo",
    )

    @property
    def is_s3(self) -> bool:
        return self.path.startswith("s3://")

    @model_validator(mode="after")
    def _s3_path(self) -> BackupSource:
        if self.is_s3:
            _s3_url(self.path)
            if self.host is not None:
                raise ValueError("an s3:// source has no host: drop `host`")
        if self.host is not None and self.offsite is not None:
            raise ValueError("offsite parity hashes local files: check it where the backups are, not through `host`")
        if self.on_demand and (given := sorted({"schedule", "rpo"} & self.model_fields_set)):
            raise ValueError(f"an on_demand source has no schedule or rpo (manual backups): drop {', '.join(given)}")
        return self


class Objective(Model):
    """Recovery objectives of one component (PF-47)."""

    component: Name
    rto: Duration
    rpo: Duration


def runbook_objectives() -> list[Objective]:
    table = [("application", "15m", "5m"), ("database", "30m", "1h"), ("full-system", "2h", "4h")]
    return [Objective(component=c, rto=parse_duration(t), rpo=parse_duration(p)) for c, t, p in table]


class Timeouts(Model):
    """Upper bounds of every network call; nothing waits longer than these."""

    connect: Duration = timedelta(seconds=5)
    request: Duration = timedelta(seconds=10)
