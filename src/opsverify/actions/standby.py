"""A scratch standby of a primary (QP-15, PF-20): ``pg_basebackup`` into a scratch directory, started
on a free loopback port (as ``postgres`` when we are root), streaming before it is handed over.

The real replica is never touched. The replication password reaches ``pg_basebackup`` and the
standby's WAL receiver only through their environment: nothing in the directory holds it.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

from opsverify.actions.directory import ScratchDirectory
from opsverify.errors import OpsverifyError
from opsverify.localserver.net import LOOPBACK, free_port
from opsverify.localserver.postgres import Cluster, Primary
from opsverify.localserver.scratch import Server
from opsverify.probes.postgres import connect
from opsverify.profile import Database, Replica


class ScratchStandby(ScratchDirectory[Cluster]):
    """A streaming standby of ``primary`` in ``directory``, built with ``replica``'s replication role."""

    kind = "scratch standby"
    touches_production = True  # it forces a checkpoint on the primary and copies all of it

    def __init__(self, replica: Replica, primary: Database, directory: Path, timeout: timedelta) -> None:
        super().__init__(directory)
        self.replica, self.primary, self.timeout = replica, primary, timeout

    def act(self) -> Cluster:
        self.make_dir()
        password = self.replica.replication_secret() or ""
        cluster = Cluster(self.directory, os.geteuid() == 0, free_port(), standby_password=password)
        user, major = self.replica.replication_user or "", major_version(self.primary, self.timeout)
        source = Primary(self.primary.host, self.primary.port, user, password, major)
        cluster.basebackup_from(source, timeout=self.replica.basebackup_timeout.total_seconds())
        cluster.start()
        self.started.append(Server("postgres", cluster.pid() or 0, cluster.port))
        wait_until_streaming(self.replica, cluster.port, self.timeout * 6)
        return cluster


def major_version(db: Database, timeout: timedelta) -> int | None:
    """The server's major version (a standby needs binaries of the same one); None when unreadable."""
    import psycopg

    try:
        with connect(db, timeout, statement_timeout=timeout) as conn:
            return int(conn.info.server_version) // 10000
    except (psycopg.Error, OSError):
        return None


def wait_until_streaming(db: Database, port: int, timeout: timedelta) -> None:
    """Return once the standby on ``port`` reports its WAL receiver streaming; ``OpsverifyError`` after ``timeout``."""
    import psycopg

    target = db.model_copy(update={"host": LOOPBACK, "port": port})
    deadline = time.monotonic() + timeout.total_seconds()
    while True:
        try:
            with connect(target, timedelta(seconds=2), statement_timeout=timedelta(seconds=2)) as conn:
                row = conn.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
            if row and row[0] == "streaming":
                return
        except (psycopg.Error, OSError):  # still starting up
            pass
        if time.monotonic() > deadline:
            raise OpsverifyError(f"the scratch standby on port {port} did not start streaming within {timeout}")
        time.sleep(0.2)
