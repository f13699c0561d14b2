"""Recovery set-up: where drills restore, what each drill restores and proves, which replicas exist.

Runbook: PF-11/QP-14 restore drills, PF-14 business continuity, PF-20 point-in-time recovery,
PF-46 full system recovery, PF-47 RTO/RPO objectives, QP-15 failover.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator

from opsverify.profile.model import (
    Database,
    SecretSource,
    read_secret,
)
from opsverify.profile.types import Duration, ExistingFile, Model, Name, Named, Percent


class RestoreTarget(SecretSource):
    """A PostgreSQL server where drills may create and drop ``opsverify_scratch_*`` databases (staging)."""

    name: Name = "restore-target"
    host: str = "127.0.0.1"
    port: int = Field(5432, ge=1, le=65535)
    user: str = Field(
        description="a role with LOGIN CREATEDB (no superuser needed, except for pg_amcheck and untrusted "
        "extensions that the template lacks: README, The staging role); it owns the scratch databases"
    )
    dbname: str = Field("postgres", description="the database to connect to for CREATE/DROP DATABASE")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: ExistingFile | None = Field(
        None, description="CA bundle the server's certificate must verify against (verify-ca, verify-full)"
    )
    must_differ_from_source: bool = Field(True, description="refuse to restore onto a source database's server")
    jobs: int | None = Field(None, ge=1, le=1024, description="pg_restore -j; default: the number of cores")
    max_scratch_age: Duration = Field(timedelta(hours=6), description="the janitor drops older scratch databases")
    template: Annotated[str, Field(min_length=1, max_length=63)] = Field(
        "template0",
        description="the database scratch databases are copied from (CREATE DATABASE … TEMPLATE): template0, or one "
        "a superuser prepared once with the untrusted extensions the dumps create (CREATE EXTENSION "
        "pg_stat_statements; ALTER DATABASE … IS_TEMPLATE true), so a role that is not a superuser restores them: "
        "README, The staging role",
    )


class RowTolerance(Model):
    """How far a restored table's row count may lie from a live source's (``compare_with_source``)."""

    percent: Percent = Field(
        default=5,
        description="rows a table may have gained or lost since the backup, in percent of the source's rows now: "
        "a daily dump is a day older than the source, and 5% covers a table that grows or churns up to 5% a day, "
        "while a table lost, emptied or restored with most of its rows missing still fails",
    )
    min_rows: int = Field(
        default=10,
        ge=0,
        le=1_000_000_000_000,
        description="the tolerance is never below this many rows, so a table of a few rows (a lookup or "
        "configuration table) does not fail on one insert; an emptied table of more rows still fails",
    )

    def allowed(self, source_rows: int) -> int:
        """The rows a table of ``source_rows`` may differ by: ``percent`` of them, rounded up, at least ``min_rows``."""
        return max(self.min_rows, -(-source_rows * round(self.percent * 1000) // 100_000))


class Drill(Named):
    """One restore drill: a backup source restored into scratch and proven equal (PF-11, QP-14)."""

    backup: Name = Field(description="the backup source whose newest backup is restored")
    database: Name | None = Field(None, description="the profile database the backup was taken from")
    redis: Name | None = Field(None, description="the profile Redis server the RDB was taken from")
    objective: Name = Field("database", description="the component whose RTO/RPO the drill is measured against")
    compare_with_source: bool = Field(
        False, description="without a manifest, read the source in a REPEATABLE READ snapshot to compare"
    )
    row_tolerance: RowTolerance = Field(
        default=RowTolerance(),
        description="with compare_with_source and no manifest, a table's restored rows may differ from the live "
        "source's by this much (writes made since the backup); never applied to a manifest (the state at backup "
        "time: compared exactly) nor to a source declared source_quiescent",
    )
    append_only: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="globs of tables only ever appended to (schema.table or table: logs, events, audit trails): "
        "against a live source the restored copy holds at most the source's rows and at least the source's rows "
        "less row_tolerance (rows appended since the backup may be missing, no more); against a manifest at least "
        "the manifest's rows",
    )
    source_quiescent: bool = Field(
        False,
        description="nothing writes to the source (a frozen or read-only database): with compare_with_source its "
        "row counts and content checksums must equal the restored copy's exactly. Otherwise the "
        "source is live: row counts compare within row_tolerance, and the checksum check passes only when every "
        "checksum matches and skips, saying why, when one differs (writes made since the backup change a checksum "
        "as a damaged restore does)",
    )
    checksum_max_rows: int = Field(
        100_000, ge=0, le=10**12, description="tables up to this many rows get a content checksum"
    )
    smoke_queries: list[str] = Field(default_factory=list, description="each must return at least one row")
    amcheck: bool = Field(True, description="run pg_amcheck --heapallindexed on the restored copy")
    restore_timeout: Duration = timedelta(hours=2)
    compare_timeout: Duration = Field(
        timedelta(minutes=10),
        description="bound on reading the row counts and checksums of the restored copy, and of the source with "
        "compare_with_source (each read as a whole; a longer read fails the comparison)",
    )

    @model_validator(mode="after")
    def _one_target(self) -> Drill:
        if (self.database is None) == (self.redis is None):
            raise ValueError("a drill restores either a database (database: NAME) or a Redis RDB (redis: NAME)")
        return self


class Replica(Database):
    """A streaming standby of a profile database (PF-20, QP-15)."""

    primary: Name = Field(description="the profile database it replicates")
    max_lag: Duration | None = Field(None, description="largest replay lag; default: the database objective's RPO")
    replication_user: str | None = Field(None, description="a REPLICATION role: enables the promotion drill")
    replication_password: SecretStr | None = None
    replication_password_file: ExistingFile | None = None
    basebackup_timeout: Duration = Field(timedelta(minutes=30), description="bound on the promotion drill's copy")

    def replication_secret(self) -> str | None:
        """The replication role's password, from the environment or its file."""
        return read_secret(self.replication_password, self.replication_password_file)
