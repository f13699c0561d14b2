"""The failover drill (QP-15, PF-20): build a scratch standby of a primary, promote it, prove it writes.

The standby is made here with ``pg_basebackup -R`` into an ``opsverify_scratch_*`` directory on a
free loopback port (run as the ``postgres`` user when we are root), so the real replica is never
touched. On exit the server is stopped and its process, port and directory are verified gone.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from opsverify.errors import CleanupError, OpsverifyError
from opsverify.probes.postgres import connect, first_line
from opsverify.profile import Database, Replica
from opsverify.restore.scratch import SCRATCH_PREFIX
from opsverify.sandbox.net import LOOPBACK, free_port, port_is_open
from opsverify.sandbox.postgres import Postgres
from opsverify.sandbox.process import pid_alive

PROBE = "CREATE TEMP TABLE opsverify_scratch_probe (at timestamptz); INSERT INTO opsverify_scratch_probe VALUES (now())"


@dataclass(frozen=True)
class Promotion:
    """What the promoted copy showed: timelines before and after, and whether it took a write."""

    port: int
    primary_timeline: int
    directory: str = ""
    timeline: int = 0
    write_error: str | None = None
    error: str | None = None
    took: timedelta = timedelta(0)


def _timeline(db: Database, port: int | None, timeout: timedelta) -> int:
    target = db if port is None else db.model_copy(update={"host": LOOPBACK, "port": port})
    with connect(target, timeout, statement_timeout=timeout) as conn:
        row = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
    return int(str(row[0])[:8], 16) if row else 0


def _wait_until_streaming(db: Database, port: int, timeout: timedelta) -> None:
    target = db.model_copy(update={"host": LOOPBACK, "port": port})
    deadline = time.monotonic() + timeout.total_seconds()
    while True:
        try:
            with connect(target, timedelta(seconds=2)) as conn:
                row = conn.execute("SELECT status FROM pg_stat_wal_receiver").fetchone()
            if row and row[0] == "streaming":
                return
        except Exception:  # noqa: BLE001 - still starting up
            pass
        if time.monotonic() > deadline:
            raise OpsverifyError(f"the scratch standby on port {port} did not start streaming within {timeout}")
        time.sleep(0.2)


def _write(db: Database, port: int, timeout: timedelta) -> str | None:
    import psycopg

    target = db.model_copy(update={"host": LOOPBACK, "port": port})
    try:
        with connect(target, timeout, statement_timeout=timeout) as conn:
            conn.execute("SET default_transaction_read_only = off")
            conn.execute(PROBE)
    except psycopg.Error as exc:
        return first_line(exc)
    return None


@contextmanager
def scratch_standby(replica: Replica, primary: Database, base: Path, timeout: timedelta) -> Iterator[Postgres]:
    """A streaming standby of ``primary`` built in ``base`` (credentials from ``replica``); removed and verified."""
    if not base.name.startswith(SCRATCH_PREFIX):
        raise CleanupError(f"refusing to build a standby in {base}: its name lacks {SCRATCH_PREFIX}")
    cluster = Postgres(base, os.geteuid() == 0, free_port(), "")
    try:
        cluster.basebackup_from(
            primary.host, primary.port, replica.replication_user or "", replica.replication_secret() or "",
            timeout=replica.basebackup_timeout.total_seconds(),
        )
        cluster.start()
        _wait_until_streaming(replica, cluster.port, timeout * 6)
        yield cluster
    finally:
        _remove(cluster)


@contextmanager
def promoted_copy(replica: Replica, primary: Database, base: Path, timeout: timedelta) -> Iterator[Promotion]:
    """A scratch standby of ``primary``, promoted and probed; removed and verified on exit."""
    import psycopg

    try:
        before = _timeline(primary, None, timeout)
    except (psycopg.Error, OSError) as exc:
        yield Promotion(0, 0, error=f"primary {primary.name} at {primary.host}:{primary.port}: {first_line(exc)}")
        return
    started = time.monotonic()
    with ExitStack() as stack:
        try:
            cluster = stack.enter_context(scratch_standby(replica, primary, base, timeout))
            cluster.promote()
            took = timedelta(seconds=time.monotonic() - started)
            after = _timeline(replica, cluster.port, timeout)
            written = _write(replica, cluster.port, timeout)
            promotion = Promotion(cluster.port, before, str(base), after, written, took=took)
        except CleanupError:
            raise
        except OpsverifyError as err:
            promotion = Promotion(0, before, str(base), error=str(err).split(": fix that")[0])
        yield promotion


def _remove(cluster: Postgres) -> None:
    pid = cluster.pid()
    cluster.stop()
    shutil.rmtree(cluster.base, ignore_errors=True)
    leftovers = []
    if pid is not None and pid_alive(pid):
        leftovers.append(f"process {pid}")
    if port_is_open(LOOPBACK, cluster.port):
        leftovers.append(f"port {cluster.port}")
    if cluster.base.exists():
        leftovers.append(f"directory {cluster.base}")
    if leftovers:
        raise CleanupError(f"the scratch standby left {', '.join(leftovers)} behind: remove them by hand")
