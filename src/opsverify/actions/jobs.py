"""The runbooks' backup jobs run as actions (PF-16/PF-17 ``pg_dump``, PF-21 ``BGSAVE``).

The dump goes to a scratch directory of its own, deleted and proven gone after. A BGSAVE cannot
be undone — the snapshot it writes replaces the server's previous one, which is what the
runbook's manual backup does too — so its proof is that no save of ours is still running.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from opsverify.actions.base import Action
from opsverify.actions.directory import ScratchDirectory
from opsverify.backups.jobs import BackupJobError, BackupRole, Bgsave, bgsave, pg_dump
from opsverify.probes.outage import OutageRegister, address
from opsverify.probes.redis import client, unreachable
from opsverify.profile import Database, RedisInstance, Timeouts


@dataclass(frozen=True)
class DumpJob:
    """A backup job run by a fixture: the file it wrote, or why it wrote none."""

    path: Path
    error: str | None = None
    role: str = ""  # the role it ran as, described: ``role X (the backup user)``


class ScratchDump(ScratchDirectory[DumpJob]):
    """``pg_dump -Fc`` of ``database`` into ``directory/<name>.dump``, now, as its backup role (``backup_user``;
    the monitoring ``user`` when none is declared); a refusal names the role."""

    kind = "scratch dump"
    touches_production = True  # it reads the whole live database

    def __init__(self, database: Database, directory: Path, timeouts: Timeouts, timeout: timedelta) -> None:
        super().__init__(directory)
        self.database, self.timeouts, self.timeout = database, timeouts, timeout

    def act(self) -> DumpJob:
        self.make_dir()
        target = self.directory / f"{self.database.name}.dump"
        target.touch(mode=0o600)  # pg_dump keeps the mode of the file it overwrites: the dump stays private
        role = BackupRole(self.database).described
        try:
            return DumpJob(pg_dump(self.database, target, self.timeouts.connect, self.timeout), role=role)
        except BackupJobError as err:
            return DumpJob(target, str(err), role)


class RedisBgsave(Action[Bgsave]):
    """``BGSAVE`` on a live Redis instance, waited for (bounded by 6x the request timeout)."""

    kind = "BGSAVE"
    touches_production = True

    def __init__(self, instance: RedisInstance, timeouts: Timeouts, outages: OutageRegister | None = None) -> None:
        super().__init__(instance.name)
        self.instance, self.timeouts, self.outages = instance, timeouts, outages or OutageRegister()
        self.where = address(instance.host, instance.port)
        self.issued = False

    def guard(self) -> None:
        """Nothing to refuse by name: the production gate decides whether a live server may be asked."""

    def act(self) -> Bgsave:
        import redis

        if (known := self.outages.outage(self.where)) is not None:
            return Bgsave(0, 0, known.note())
        t = self.timeouts
        conn = client(self.instance, t.connect, t.request)
        try:
            self.issued = True
            return bgsave(conn, t.request * 6)
        except redis.RedisError as exc:
            self.issued = False
            if (cause := unreachable(exc, t.connect, t.request)) is not None:
                self.outages.record(self.where, self.instance.name, cause)
                return Bgsave(0, 0, f"{cause} at {self.where}")
            return Bgsave(0, 0, str(exc).splitlines()[0] or type(exc).__name__)
        finally:
            conn.close()

    def undo(self) -> None:
        """Wait (bounded) for a save still in progress: the snapshot itself is the job's product."""
        deadline = time.monotonic() + self.timeouts.request.total_seconds() * 6
        while self.issued and self._saving() and time.monotonic() < deadline:
            time.sleep(0.1)

    def leftovers(self, before: object) -> list[str]:
        return [f"a BGSAVE still running on redis {self.instance.name}"] if self.issued and self._saving() else []

    def _saving(self) -> bool:
        conn = client(self.instance, self.timeouts.connect, self.timeouts.request)
        try:
            return bool(conn.info("persistence").get("rdb_bgsave_in_progress"))
        finally:
            conn.close()
