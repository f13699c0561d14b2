"""WAL archiving and streaming replicas (PF-20, QP-15): how far behind each recovery path is.

An idle primary archives nothing new, so "last archived long ago" alone is no fault: archiving
lags only while a finished segment waits (a ``.ready`` file), by the time since it was finished.
A replica is measured against its declared primary, never against itself: see ``ReplicaState``.
"""

from __future__ import annotations

import time
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
PRIMARY = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn()::text END,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE substr(pg_walfile_name(pg_current_wal_flush_lsn()), 1, 8) END,
       (SELECT system_identifier FROM pg_control_system())
"""
STANDBY = """
SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
       now() - pg_last_xact_replay_timestamp(),
       (SELECT status FROM pg_stat_wal_receiver),
       (SELECT system_identifier FROM pg_control_system()),
       COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), (SELECT timeline_id FROM pg_control_checkpoint()))
"""
CATCH_UP = timedelta(seconds=1)  # a streaming standby replays what the primary flushed within milliseconds


def parse_lsn(text: str | None) -> int | None:
    """``16/B374D848`` -> its byte position; None stays None."""
    if text is None:
        return None
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


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
    """A standby measured against its declared primary: identity, timeline, and how far its replay lags.

    The primary's flushed WAL position (``pg_current_wal_flush_lsn()``: what any standby can have
    received) is read first, through the declared primary database's read-only session; then the
    standby's replay position, again for up to ``CATCH_UP`` while it is short of that position.

    * ``behind_bytes``: WAL the primary had flushed that the standby has not replayed (0 when it
      has replayed it all). Like check_postgres's ``hot_standby_delay``, against the primary, never
      the standby's own receive position: a cut-off standby has replayed all it received and is
      still hours behind.
    * ``lag``: 0 when nothing is behind. Otherwise the time since the last transaction the standby
      replayed (``now() - pg_last_xact_replay_timestamp()`` on the standby): every commit after it is
      missing there, so a failover now loses what the primary committed since, at worst all of that
      time. It is the conservative bound (exact while the primary commits steadily; an overstatement
      when the unreplayed WAL holds no commit, which the wait for ``CATCH_UP`` makes rare on a
      streaming standby). None when the standby is behind and has replayed no transaction since it
      started: unknown. ``pg_stat_replication.replay_lag`` (timed by the primary from the standby's
      replies) is not used: it has no row for a standby that is cut off, the case that matters.
    """

    address: str
    in_recovery: bool = False
    receiver: str | None = None
    system_identifier: int | None = None
    timeline: int | None = None
    behind_bytes: int | None = None
    replay_age: timedelta | None = None  # since the standby's last replayed transaction
    primary_address: str = ""
    primary_system_identifier: int | None = None
    primary_timeline: int | None = None
    primary_error: str | None = None  # the primary's position could not be read: no lag can be measured
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage

    @property
    def lag(self) -> timedelta | None:
        """0 when it replayed all the primary had flushed; else the age of its last replayed transaction."""
        if self.behind_bytes is None:
            return None
        if self.behind_bytes == 0:
            return timedelta(0)
        return self.replay_age


@dataclass(frozen=True)
class _Primary:
    lsn: int | None = None
    timeline: int | None = None
    system_identifier: int | None = None
    error: str | None = None


def _read_primary(primary: Database, timeout: timedelta) -> _Primary:
    import psycopg

    try:
        with connect(primary, timeout, statement_timeout=timeout) as conn:
            row = conn.execute(PRIMARY).fetchone()
    except (psycopg.Error, OSError) as exc:
        return _Primary(error=unreachable(exc, timeout) or first_line(exc))
    assert row is not None
    in_recovery, lsn, timeline, system_identifier = row
    if in_recovery:
        return _Primary(system_identifier=int(system_identifier), error="it is in recovery (a standby itself)")
    return _Primary(parse_lsn(lsn), int(timeline, 16), int(system_identifier))


def probe_replica(replica: Replica, primary: Database, timeout: timedelta) -> ReplicaState:
    """The primary's flushed WAL position, then the standby's state (waiting up to ``CATCH_UP`` to reach it)."""
    import psycopg

    address = f"{replica.host}:{replica.port}"
    source = _read_primary(primary, timeout)
    try:
        with connect(replica, timeout, statement_timeout=timeout) as conn:
            deadline = time.monotonic() + CATCH_UP.total_seconds()
            while True:
                row = conn.execute(STANDBY).fetchone()
                assert row is not None
                replayed = parse_lsn(row[2])
                short = source.lsn is not None and replayed is not None and replayed < source.lsn
                if not short or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
    except (psycopg.Error, OSError) as exc:
        cause = unreachable(exc, timeout)
        return ReplicaState(address, error=cause or first_line(exc), unreachable=cause)
    in_recovery, _received, _, age, receiver, system_identifier, timeline = row
    behind = None
    if source.lsn is not None and replayed is not None:
        behind = max(0, source.lsn - replayed)
    return ReplicaState(
        address, bool(in_recovery), receiver, int(system_identifier) if system_identifier is not None else None,
        int(timeline) if timeline is not None else None, behind, age, f"{primary.host}:{primary.port}",
        source.system_identifier, source.timeline, source.error,
    )
