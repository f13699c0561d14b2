"""WAL archiving and streaming replicas (PF-20, QP-15): how far behind each recovery path is.

An idle primary archives nothing new, so "last archived long ago" alone is no fault: archiving
lags only while a finished segment waits (a ``.ready`` file), by the time since it was finished.
A replica that has replayed all it received lags by nothing, however old its last transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from opsverify.probes.postgres import connect, first_line, unreachable
from opsverify.profile import Database, Replica

ARCHIVER = """
SELECT archived_count, last_archived_wal, last_archived_time, last_failed_wal, last_failed_time,
       current_setting('archive_mode'), now()
FROM pg_stat_archiver
"""
READY = "SELECT count(*), min(modification) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
STANDBY = """
SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(),
       now() - pg_last_xact_replay_timestamp(),
       (SELECT status FROM pg_stat_wal_receiver)
"""


@dataclass(frozen=True)
class ArchiverState:
    """``pg_stat_archiver`` and the segments waiting in ``archive_status`` (``.ready`` files), read once."""

    address: str
    archive_mode: str = "off"
    archived_count: int = 0
    last_archived_wal: str | None = None
    waiting: int = 0  # finished segments not archived yet
    lag: timedelta = timedelta(0)  # since the oldest of them was finished: the committed WAL at risk
    failing_since: timedelta | None = None  # the last failure is newer than the last success
    last_failed_wal: str | None = None
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage


def probe_archiver(db: Database, timeout: timedelta) -> ArchiverState:
    """Read the archiver's state through a read-only session (the role needs ``pg_monitor``)."""
    import psycopg

    address = f"{db.host}:{db.port}"
    try:
        with connect(db, timeout, statement_timeout=timeout) as conn:
            row = conn.execute(ARCHIVER).fetchone()
            ready = conn.execute(READY).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        why = f"role {db.user} may not list archive_status: GRANT pg_monitor TO {db.user}"
        return ArchiverState(address, error=why)
    except (psycopg.Error, OSError) as exc:
        cause = unreachable(exc, timeout)
        return ArchiverState(address, error=cause or first_line(exc), unreachable=cause)
    assert row is not None
    assert ready is not None
    count, last_wal, last_time, failed_wal, failed_time, mode, now = row
    waiting, oldest = int(ready[0]), ready[1]
    failing = (now - failed_time) if failed_time and (last_time is None or failed_time > last_time) else None
    lag = (now - oldest) if waiting and oldest else timedelta(0)
    return ArchiverState(address, str(mode), int(count), last_wal, waiting, lag, failing, failed_wal)


@dataclass(frozen=True)
class ReplicaState:
    """What a standby says of itself: in recovery, receiving, and how far its replay lags."""

    address: str
    in_recovery: bool = False
    receiver: str | None = None
    caught_up: bool = False
    replay_age: timedelta | None = None
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage

    @property
    def lag(self) -> timedelta | None:
        """Zero when everything received is replayed; else the age of the last replayed transaction."""
        if self.caught_up:
            return timedelta(0)
        return self.replay_age


def probe_replica(replica: Replica, timeout: timedelta) -> ReplicaState:
    """Ask the standby: ``pg_is_in_recovery()``, WAL receiver status, receive vs replay position."""
    import psycopg

    address = f"{replica.host}:{replica.port}"
    try:
        with connect(replica, timeout, statement_timeout=timeout) as conn:
            row = conn.execute(STANDBY).fetchone()
    except (psycopg.Error, OSError) as exc:
        cause = unreachable(exc, timeout)
        return ReplicaState(address, error=cause or first_line(exc), unreachable=cause)
    assert row is not None
    in_recovery, replayed_all, age, receiver = row
    caught_up = bool(replayed_all) and receiver == "streaming"  # cut off, it has replayed all it got, yet lags
    return ReplicaState(address, bool(in_recovery), receiver, caught_up, age)
