"""The whole profile: one environment, its components, thresholds and recovery set-up."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, model_validator

from opsverify.errors import OpsverifyError
from opsverify.profile.model import (
    BackupSource,
    Database,
    Dependency,
    Host,
    HttpService,
    Model,
    Name,
    Named,
    Objective,
    RedisInstance,
    Timeouts,
    runbook_objectives,
)
from opsverify.profile.recovery import Drill, Replica, RestoreTarget

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

    @model_validator(mode="after")
    def _unique_names(self) -> Profile:
        for section in SECTIONS:
            names = [item.name for item in getattr(self, section)]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{section}: name {twice[0]!r} is used more than once")
        return self

    @model_validator(mode="after")
    def _drills_name_what_exists(self) -> Profile:
        known = {
            "backup": {b.name for b in self.backups},
            "database": {d.name for d in self.databases},
            "redis": {r.name for r in self.redis},
            "objective": {o.component for o in self.objectives},
        }
        for drill in self.drills:
            for key, names in known.items():
                value = getattr(drill, key)
                if value is not None and value not in names:
                    raise ValueError(f"drill {drill.name}: {key} {value!r} is not declared (known: {sorted(names)})")
            if drill.database is not None and self.backup(drill.backup).scope == "tables":
                raise ValueError(
                    f"drill {drill.name}: backup {drill.backup!r} has scope: tables (a pg_dump -t series), "
                    "whose tables cannot be restored alone into an empty scratch database (their foreign keys "
                    "and types name objects the dump lacks): drill a scope: full series of the same database instead"
                )
        hosts = {h.name for h in self.hosts}
        for source in self.backups:
            if source.host is not None and source.host not in hosts:
                raise ValueError(f"backup {source.name}: host {source.host!r} is not declared (known: {sorted(hosts)})")
        for replica in self.replicas:
            if replica.primary not in known["database"]:
                raise ValueError(f"replica {replica.name}: primary {replica.primary!r} is not a declared database")
        for source in self.backups:
            if source.database is not None and source.database not in known["database"]:
                raise ValueError(f"backup {source.name}: database {source.database!r} is not a declared database")
        return self

    @model_validator(mode="after")
    def _objectives_that_checks_need(self) -> Profile:
        needs = [f"database {d.name} declares wal_archiving" for d in self.databases if d.wal_archiving]
        needs += [f"replica {r.name} declares no max_lag" for r in self.replicas if r.max_lag is None]
        if needs and "database" not in {o.component for o in self.objectives}:
            raise ValueError(f"objectives: {needs[0]}, so a `database` objective (its RPO) is needed: add one")
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
