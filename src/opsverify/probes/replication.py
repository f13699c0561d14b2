"""WAL archiving and streaming replicas (PF-20, QP-15): how far behind each recovery path is.

An idle primary archives nothing new, so "last archived long ago" alone is no fault: archiving
lags only while a finished segment waits (a ``.ready`` file), by the time since it was finished.
A replica is measured against its declared primary, never against itself: see ``ReplicaState``.
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opsverify.probes.postgres import Unread, connect, first_line, read_only, unreachable
from opsverify.profile import Database, Replica

ARCHIVER = """
SELECT archived_count, last_archived_wal, last_archived_time, last_failed_wal, last_failed_time,
       current_setting('archive_mode'), now(), pg_size_bytes(current_setting('wal_segment_size'))
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
       COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), (SELECT timeline_id FROM pg_control_checkpoint())),
       (SELECT status IS NULL FROM pg_stat_wal_receiver)  -- a row, its status hidden
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
    segment_size: int = 16 * 1024 * 1024  # wal_segment_size
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage
    lag_error: str | None = None  # the .ready listing (pg_ls_archive_statusdir) was refused: lag unknown


def probe_archiver(db: Database, timeout: timedelta) -> ArchiverState:
    """Read the archiver's state through a read-only session.

    ``pg_stat_archiver`` is readable by any role; only the ``.ready`` listing
    (``pg_ls_archive_statusdir()``, the lag) needs ``pg_monitor``: without it ``lag_error`` says so
    and the rest is read.
    """
    import psycopg

    address = f"{db.host}:{db.port}"
    lag_error = None
    try:
        with connect(db, timeout, statement_timeout=timeout) as conn:
            row = conn.execute(ARCHIVER).fetchone()
            try:
                ready = conn.execute(READY).fetchone()
            except psycopg.errors.InsufficientPrivilege:
                ready = (0, None)
                lag_error = (f"role {db.user} may not call pg_ls_archive_statusdir() (the finished segments waiting): "
                             f"GRANT pg_monitor TO {db.user}")
    except (psycopg.Error, OSError) as exc:
        cause = unreachable(exc, timeout)
        return ArchiverState(address, error=cause or first_line(exc), unreachable=cause)
    assert row is not None
    assert ready is not None
    count, last_wal, last_time, failed_wal, failed_time, mode, now, segment_size = row
    waiting, oldest = int(ready[0]), ready[1]
    failing = (now - failed_time) if failed_time and (last_time is None or failed_time > last_time) else None
    lag = (now - oldest) if waiting and oldest else timedelta(0)
    return ArchiverState(address, str(mode), int(count), last_wal, waiting, lag, failing, failed_wal, int(segment_size),
                         lag_error=lag_error)


COMPRESSED = {  # suffix an archive_command's compressor adds -> the magic bytes its files start with
    ".gz": b"\x1f\x8b", ".zst": b"\x28\xb5\x2f\xfd", ".lz4": b"\x04\x22\x4d\x18", ".bz2": b"BZh",
    ".xz": b"\xfd7zXZ\x00",
}
SEGMENT = re.compile(r"^[0-9A-F]{24}(\.partial)?$")  # a whole segment: wal_segment_size bytes uncompressed


@dataclass(frozen=True)
class ArchivedCopy:
    """Whether the segment the archiver last reported archived is really in the declared archive directory.

    A plain copy of a segment must hold ``wal_segment_size`` bytes; a compressed one (``.gz``,
    ``.zst``, ``.lz4``, ``.bz2``, ``.xz``) must start with its format's magic bytes, and a gzip one
    must say in its trailer (ISIZE) that it inflates to the segment size. A segment compressed under
    its plain name (``gzip < %p > archive/%f``, the PostgreSQL docs' example) is known by its magic
    bytes when its size is not the segment size, and the same rules apply. History and ``.backup``
    files only need to be non-empty. ``problem`` (what is wrong with the segment, a predicate: "is not
    in /archive") is None when the copy is good.
    """

    archive: Path
    name: str | None  # pg_stat_archiver.last_archived_wal; None when nothing was archived yet
    path: Path | None = None
    size: int | None = None
    problem: str | None = None
    unreadable: Path | None = None  # the archive or segment opsverify's user may not read (Permission denied)

    @property
    def fix(self) -> str:
        """What to do about ``problem``: read permission when opsverify was refused, else the archiving itself."""
        if self.unreadable is not None:
            return f"give {running_user()}, the user running opsverify, read permission on {self.unreadable}"
        return "fix archive_command (PF-20) or the profile's wal_archive"


def running_user() -> str:
    """The name of the effective user (its uid when it has no name)."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def check_archived_copy(archive: Path, name: str | None, segment_size: int) -> ArchivedCopy:
    """Look for ``name`` (or a compressed form of it) in ``archive`` and check its size or format."""
    try:
        is_dir = stat.S_ISDIR(archive.stat().st_mode)
    except PermissionError:  # a directory above it is closed to this user
        return ArchivedCopy(archive, name, problem=f"cannot be looked up: {archive}: Permission denied",
                            unreadable=archive)
    except OSError:
        is_dir = False
    if not is_dir:
        return ArchivedCopy(archive, name, problem=f"cannot be looked up: {archive} is not a readable directory")
    if name is None:
        return ArchivedCopy(archive, name)
    whole = SEGMENT.match(name) is not None
    for suffix in ("", *COMPRESSED):
        path = archive / (name + suffix)
        try:
            size = path.stat().st_size
            with path.open("rb") as f:
                head = f.read(8)
                if size >= 18:
                    f.seek(-4, os.SEEK_END)
                    trailer: int | None = int.from_bytes(f.read(4), "little")
                else:
                    trailer = None
        except FileNotFoundError:
            continue
        except PermissionError as exc:
            closed = path if os.access(archive, os.X_OK, effective_ids=True) else archive  # the file, or its directory
            return ArchivedCopy(archive, name, path, problem=f"cannot be read: {path}: {exc.strerror}",
                                unreadable=closed)
        except OSError as exc:
            return ArchivedCopy(archive, name, path, problem=f"cannot be read: {path}: {exc.strerror}")
        kind = suffix
        if not suffix and whole and size != segment_size:  # compressed under the plain name (gzip < %p > %f)
            kind = next((s for s, magic in COMPRESSED.items() if head.startswith(magic)), "")
        problem = None
        if suffix and not head.startswith(COMPRESSED[suffix]):
            problem = f"is damaged: {path} is not a {suffix[1:]} file"
        elif kind == ".gz" and whole and trailer != segment_size % 2**32:
            problem = f"is not whole: {path} inflates to {trailer} bytes, not {segment_size}"
        elif not kind and whole and size != segment_size:
            problem = f"is not whole: {path} holds {size} bytes, not {segment_size}"
        elif size == 0:
            problem = f"is not whole: {path} is empty"
        return ArchivedCopy(archive, name, path, size, problem)
    return ArchivedCopy(archive, name, problem=f"is not in {archive}")


BASE_BACKUP_FILES = ("backup_label", "base.tar", "base.tar.gz", "base.tar.zst", "base.tar.lz4")  # a backup begun


@dataclass(frozen=True)
class BaseBackups:
    """The complete base backups in a directory (one subdirectory each, as ``pg_basebackup -D DIR/NAME`` writes).

    A base backup is complete when its ``backup_manifest`` is there: pg_basebackup (PostgreSQL 13+)
    writes it last, after the data and the WAL. A subdirectory holding ``backup_label`` or
    ``base.tar*`` but no manifest is ``incomplete`` (killed, still running, or taken with
    ``--no-manifest``, whose completeness nothing on disk shows) and is not counted.
    """

    directory: Path
    newest: str | None = None
    taken: datetime | None = None  # when the newest finished: the mtime of its manifest (written last)
    count: int = 0
    error: str | None = None
    incomplete: tuple[str, ...] = ()  # subdirectories with a begun base backup but no backup_manifest


def list_base_backups(directory: Path) -> BaseBackups:
    """Every subdirectory holding ``backup_manifest`` is a base backup, dated by the manifest's mtime.

    Subdirectories with ``backup_label`` or ``base.tar*`` but no manifest are listed as incomplete.
    """
    try:
        entries = [e for e in directory.iterdir() if e.is_dir()]
    except OSError as exc:
        return BaseBackups(directory, error=f"{directory} is not a readable directory ({exc.strerror})")
    found: list[tuple[float, str]] = []
    incomplete: list[str] = []
    for entry in entries:
        try:
            found.append(((entry / "backup_manifest").stat().st_mtime, entry.name))
        except OSError:
            if any((entry / marker).exists() for marker in BASE_BACKUP_FILES):
                incomplete.append(entry.name)
    begun = tuple(sorted(incomplete))
    if not found:
        return BaseBackups(directory, incomplete=begun)
    mtime, name = max(found)
    return BaseBackups(directory, name, datetime.fromtimestamp(mtime, UTC), len(found), incomplete=begun)


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
    receiver: str | None = None  # pg_stat_wal_receiver.status; None: no WAL receiver (or hidden, see below)
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
    receiver_hidden: str | None = None  # a WAL receiver runs, but the role may not see its status: the grant

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
    in_recovery, _received, _, age, receiver, system_identifier, timeline, hidden = row
    hidden_why = None
    if hidden:  # without pg_read_all_stats, its row shows the pid only: status, received_tli NULL
        hidden_why = (f"role {replica.user} may not read pg_stat_wal_receiver's status and timeline: "
                      f"GRANT pg_read_all_stats TO {replica.user}")
        timeline = None  # the checkpoint's timeline is no stand-in for the received one
    behind = None
    if source.lsn is not None and replayed is not None:
        behind = max(0, source.lsn - replayed)
    return ReplicaState(
        address, bool(in_recovery), receiver, int(system_identifier) if system_identifier is not None else None,
        int(timeline) if timeline is not None else None, behind, age, f"{primary.host}:{primary.port}",
        source.system_identifier, source.timeline, source.error, receiver_hidden=hidden_why,
    )


SLOTS = """
SELECT slot_name, slot_type, COALESCE(wal_status, 'unknown'),
       COALESCE(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                                     ELSE pg_current_wal_lsn() END, restart_lsn), 0)::bigint
FROM pg_replication_slots WHERE NOT active ORDER BY 4 DESC, 1
"""
MAX_WAL_SIZE = "SELECT pg_size_bytes(current_setting('max_wal_size'))"


@dataclass(frozen=True)
class InactiveSlot:
    """A replication slot no process uses: the WAL since its ``restart_lsn`` stays on the server for it."""

    name: str
    kind: str  # physical or logical
    wal_status: str
    retained: int  # bytes of WAL from its restart_lsn to the server's current position


@dataclass(frozen=True)
class SlotsState:
    """The inactive replication slots of a server, largest retention first, and its ``max_wal_size``."""

    address: str
    inactive: tuple[InactiveSlot, ...] = ()
    max_wal_size: int = 0
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage


def probe_slots(db: Database, timeout: timedelta) -> SlotsState:
    """Read ``pg_replication_slots`` (inactive ones) and ``max_wal_size`` through a read-only session."""
    address = f"{db.host}:{db.port}"
    read = read_only(db, timeout, timeout, lambda conn: (conn.execute(SLOTS).fetchall(),
                                                         conn.execute(MAX_WAL_SIZE).fetchone()))
    if isinstance(read, Unread):
        return SlotsState(address, error=read.error, unreachable=read.unreachable)
    rows, limit = read
    slots = tuple(InactiveSlot(str(n), str(k), str(w), int(r)) for n, k, w, r in rows)
    return SlotsState(address, slots, int(limit[0]) if limit else 0)
