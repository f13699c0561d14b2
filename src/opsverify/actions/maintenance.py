"""The runbooks' maintenance done by the suite (issue 11): each one ``Action`` that proves what it changed.

- ``VacuumAnalyze``: ``VACUUM (ANALYZE)`` of a table; ``last_vacuum``/``last_analyze`` advanced, row count kept.
- ``ArchiveJobs``: finished jobs older than the cutoff moved to the archive table in ONE transaction; inside
  it, live + archived == before and no other table written, truncated or altered by it, else ROLLBACK.
- ``DropTempTables``: tables matching a glob dropped in one transaction, with the same proof.
- ``RotateLogs`` / ``CleanTmp``: files past retention deleted; every newer file untouched (inode, size, mtime;
  a live log may only grow).
- ``FlushCache``: the safe FLUSHDB: every key's DUMP + PTTL streamed into a private scratch file, FLUSHDB; the
  undo RESTOREs them (a key the application wrote meanwhile wins), checks the count and a sample, removes it.

PostgreSQL actions log in as the database's ``maintenance_user``, every statement bounded by a
``statement_timeout`` and a ``lock_timeout``. Each action writes a journal in its own scratch
directory (creator note first) before it changes anything, so that the janitor of a later run
understands what a killed run left (``finish_journals``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import re
import stat
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from opsverify.actions.base import Action, NotApplicable, Permanent
from opsverify.actions.janitor import JOURNAL_PREFIX  # no older opsverify's janitor matches it
from opsverify.errors import CleanupError, OpsverifyError
from opsverify.localserver.scratch import (
    SCRATCH_PREFIX,
    creator,
    delete_note_last,
    make_scratch_dir,
    require_scratch_name,
    write_note,
)
from opsverify.profile import Database, RedisInstance, Timeouts
from opsverify.profile.maintenance import JobTable, LogDirectory, TmpFiles, temp_pattern_problem, tmp_glob_problem

if TYPE_CHECKING:
    import psycopg
    import redis

R = TypeVar("R")
JOURNAL = "journal.json"
DUMP_FILE = "keys.dump"
KIND = "maintenance journal"  # the creator note's kind: the janitor reads these before removing the directory
STATS_WAIT = 10.0  # seconds: the statistics collector flushes asynchronously
SAMPLE = 100  # keys whose value is compared after a RESTORE
SAMPLE_EVERY = 8  # a key is in the sample when crc32(key) % SAMPLE_EVERY == 0 (until SAMPLE are taken)
SAMPLE_FILE = "sample.json"
RESTORE_BATCH = 100  # keys per RESTORE pipeline: a small batch refused for memory is retried once


def journal_dir(scratch: Path) -> Path:
    """The journal directory for a scratch name (``opsverify_scratch_X`` -> ``opsverify_journal_X``)."""
    return scratch.with_name(scratch.name.replace(SCRATCH_PREFIX, JOURNAL_PREFIX, 1))
GLOB_CHARS = re.compile(r"[*?[]")
TAG = "/* opsverify */ "  # the slow-statement check ignores statements starting with it


# ---------------------------------------------------------------------------------------------- journal


class Journal:
    """``journal.json`` in a scratch directory with a creator note: what the action is about to do, then did."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.state: dict[str, Any] = {}

    def open(self, action: str, **state: Any) -> None:
        if self.directory.name.startswith(JOURNAL_PREFIX):
            require_scratch_name(SCRATCH_PREFIX + self.directory.name[len(JOURNAL_PREFIX):], "directory")
            self.directory.parent.mkdir(parents=True, exist_ok=True)
            self.directory.mkdir(mode=0o700)
            write_note(self.directory, creator(kind=KIND, action=action))
        else:
            make_scratch_dir(self.directory, kind=KIND, action=action)
        self.write(action=action, creator_pid=os.getpid(), **state)

    def write(self, **state: Any) -> None:
        self.state.update(state)
        tmp = self.directory / (JOURNAL + ".tmp")
        tmp.write_text(json.dumps(self.state, default=str))
        tmp.replace(self.directory / JOURNAL)

    def remove(self) -> list[str]:
        if self.directory.exists():
            delete_note_last(self.directory)
        return [f"journal directory {self.directory}"] if self.directory.exists() else []


def read_journal(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / JOURNAL).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------------------------- PostgreSQL


def maintenance_connect(
    db: Database, timeouts: Timeouts, statement_timeout: timedelta, autocommit: bool = True
) -> psycopg.Connection:
    """A session as the database's ``maintenance_user``, each statement bounded (statement and lock timeout)."""
    import psycopg

    if db.maintenance_user is None:
        raise NotApplicable(
            f"database {db.name} declares no maintenance_user: declare the role the maintenance fixtures log in as "
            "(databases[].maintenance_user, the tables' owner, with maintenance_password_file)"
        )
    ms = int(statement_timeout.total_seconds() * 1000)
    lock_ms = max(1000, min(ms, int(timeouts.request.total_seconds() * 1000)))
    try:
        return _connect(db, timeouts, ms, lock_ms, autocommit)
    except (psycopg.Error, OSError) as exc:
        from opsverify.probes.postgres import first_line

        raise OpsverifyError(
            f"cannot open a maintenance session on database {db.name} at {db.host}:{db.port} as "
            f"{db.maintenance_user} (maintenance_user): {first_line(exc)}"
        ) from None


def _connect(db: Database, timeouts: Timeouts, ms: int, lock_ms: int, autocommit: bool) -> psycopg.Connection:
    from opsverify.probes.postgres import open_session

    return open_session(
        db, db.maintenance_user, db.maintenance_secret(), timeouts.connect, timedelta(milliseconds=ms),
        options=f"-c statement_timeout={ms} -c lock_timeout={lock_ms}",
        application_name=f"opsverify-maintenance-{os.getpid()}", autocommit=autocommit,
    )


def table_identifier(name: str) -> Any:
    """``schema.table`` or ``table`` as a quoted identifier."""
    from psycopg import sql

    return sql.Identifier(*name.split(".", 1))


def user_tables(conn: psycopg.Connection) -> list[str]:
    """Every ordinary table of the database outside the system schemas, as ``schema.table``."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1, 2"
    ).fetchall()
    return [f"{r[0]}.{r[1]}" for r in rows]


def checksums(conn: psycopg.Connection, tables: list[str]) -> dict[str, tuple[int, str]]:
    """Per table: row count and an order-independent content checksum (the sum of 64-bit row hashes)."""
    from psycopg import sql

    found: dict[str, tuple[int, str]] = {}
    for table in tables:
        query = sql.SQL(TAG + "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0)::text "
                        "FROM {} t")
        row = conn.execute(query.format(table_identifier(table))).fetchone()
        found[table] = (int(row[0]), str(row[1])) if row else (0, "0")
    return found


def unreadable_tables(conn: psycopg.Connection, tables: list[str]) -> list[str]:
    """Those of ``tables`` the session's role may not SELECT from (they cannot be checksummed)."""
    if not tables:
        return []
    rows = conn.execute(
        TAG + "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname || '.' || c.relname = ANY(%s) AND NOT has_table_privilege(c.oid, 'SELECT') ORDER BY 1",
        (tables,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def compare(before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]) -> list[str]:
    """The other tables' differences, one phrase each."""
    diffs = []
    for table, (rows, digest) in before.items():
        now = after.get(table)
        if now is None:
            diffs.append(f"table {table} is gone")
        elif now[0] != rows:
            diffs.append(f"table {table} has {now[0]} rows instead of {rows}")
        elif now[1] != digest:
            diffs.append(f"table {table} changed content ({rows} rows, checksum differs)")
    diffs += [f"table {t} appeared" for t in after if t not in before]
    return diffs


# The proof that a transaction changed no other table, in O(tables) rather than by reading every row: the
# transaction's own row writes per table (pg_stat_xact_user_tables: inserts, updates and deletes made so far by this
# transaction, triggers and cascades included, never another session's), and each table's storage file and columns
# (pg_class.relfilenode changes on TRUNCATE, VACUUM FULL, CLUSTER and a rewriting ALTER TABLE; a dropped, added or
# retyped column changes the column list). Needs track_counts (on by default); without it the proof reads tables.
MARKS = (
    TAG + "SELECT n.nspname || '.' || c.relname, c.relfilenode, coalesce((SELECT string_agg(a.attname || ' ' || "
    "format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.oid AND "
    "a.attnum > 0 AND NOT a.attisdropped), ''), coalesce(x.n_tup_ins, 0), coalesce(x.n_tup_upd, 0), "
    "coalesce(x.n_tup_del, 0) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_stat_xact_user_tables x ON x.relid = c.oid WHERE c.relkind IN ('r', 'p') "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
    "AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1"
)


@dataclass(frozen=True)
class TableMark:
    """What the statistics proof compares of one table: its storage file, its columns and this transaction's writes."""

    relfilenode: int
    columns: str
    inserted: int
    updated: int
    deleted: int


def table_marks(conn: psycopg.Connection) -> dict[str, TableMark]:
    """Every user table's ``TableMark`` (catalog and statistics reads only, no table read)."""
    rows = conn.execute(MARKS).fetchall()
    return {str(r[0]): TableMark(int(r[1]), str(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows}


Writes = tuple[int, int, int]  # rows inserted, updated, deleted


def writes_to(marks: dict[str, TableMark], tables: set[str]) -> Writes:
    """This transaction's row writes to ``tables`` so far, summed."""
    found = [m for t, m in marks.items() if t in tables]
    return sum(m.inserted for m in found), sum(m.updated for m in found), sum(m.deleted for m in found)


def said(writes: Writes) -> str:
    """``(3, 0, 3)`` as "3 rows inserted, 3 rows deleted"; all zero: "no row written"."""
    verbs = ("inserted", "updated", "deleted")
    parts = [f"{n} row{'s' if n != 1 else ''} {verb}" for n, verb in zip(writes, verbs, strict=True) if n]
    return ", ".join(parts) or "no row written"


def compare_marks(before: dict[str, TableMark], after: dict[str, TableMark]) -> list[str]:
    """The other tables' differences, one phrase each (what this transaction did to them)."""
    diffs = []
    for table, mark in before.items():
        now = after.get(table)
        if now is None:
            diffs.append(f"table {table} is gone")
            continue
        if now.columns != mark.columns:
            diffs.append(f"table {table} changed columns ({mark.columns} -> {now.columns})")
        if now.relfilenode != mark.relfilenode:
            diffs.append(f"table {table} was rewritten or truncated (new storage file)")
        written = (now.inserted - mark.inserted, now.updated - mark.updated, now.deleted - mark.deleted)
        if any(written):
            diffs.append(f"table {table} had {said(written)} by this transaction")
    diffs += [f"table {t} appeared" for t in after if t not in before]
    return diffs


def with_partitions(conn: psycopg.Connection, tables: set[str]) -> set[str]:
    """``tables`` and every partition under them (a partitioned job or archive table writes into its partitions)."""
    rows = conn.execute(
        TAG + "SELECT n2.nspname || '.' || c2.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "CROSS JOIN LATERAL pg_partition_tree(c.oid) p JOIN pg_class c2 ON c2.oid = p.relid "
        "JOIN pg_namespace n2 ON n2.oid = c2.relnamespace WHERE n.nspname || '.' || c.relname = ANY(%s)",
        (sorted(tables),),
    ).fetchall()
    return tables | {str(r[0]) for r in rows}


def counts_tracked(conn: psycopg.Connection) -> bool:
    """Whether the server counts row writes per table (``track_counts``), which the statistics proof reads."""
    row = conn.execute("SELECT current_setting('track_counts')").fetchone()
    return row is not None and str(row[0]) == "on"


def _qualified(conn: psycopg.Connection, name: str, database: str) -> str:
    """``name`` resolved on the search path as ``schema.table`` (as ``user_tables`` names it)."""
    row = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = to_regclass(%s)", (name,)
    ).fetchone()
    if row is None:
        raise NotApplicable(f"table {name} does not exist in database {database} (or is not on the maintenance_user's "
                            "search_path): name it as schema.table, as the database has it")
    return str(row[0])


@dataclass(frozen=True)
class Vacuumed:
    """What ``VACUUM (ANALYZE)`` of a table did, read from ``pg_stat_user_tables``."""

    database: str
    table: str
    vacuum_before: datetime | None
    vacuum_after: datetime | None
    analyze_before: datetime | None
    analyze_after: datetime | None
    rows_before: int
    rows_after: int
    written_meanwhile: bool  # n_tup_ins/upd/del moved: the row counts are not comparable

    @property
    def vacuum_advanced(self) -> bool:
        return self.vacuum_after is not None and (self.vacuum_before is None or self.vacuum_after > self.vacuum_before)

    @property
    def analyze_advanced(self) -> bool:
        return self.analyze_after is not None and (
            self.analyze_before is None or self.analyze_after > self.analyze_before
        )

    @property
    def rows_note(self) -> str:
        if self.written_meanwhile:
            return f"the table was written meanwhile: {self.rows_before} -> {self.rows_after} rows are not comparable"
        return f"{self.rows_after} rows, as before"


STATS = (  # a partitioned table has no vacuum of its own: its leaf partitions' oldest (min ignores a never)
    "SELECT min(last_vacuum), min(last_analyze), sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables "
    "WHERE relid IN (SELECT relid FROM pg_partition_tree(to_regclass(%(t)s)) WHERE isleaf) "
    "OR (relid = to_regclass(%(t)s) AND NOT EXISTS (SELECT FROM pg_partition_tree(to_regclass(%(t)s)) WHERE isleaf))"
)


class VacuumAnalyze(Permanent[Vacuumed]):
    """``VACUUM (ANALYZE)`` of ``table`` (PF-25, QP-10)."""

    kind = "VACUUM ANALYZE"

    def __init__(self, database: Database, table: str, timeouts: Timeouts, timeout: timedelta, directory: Path) -> None:
        super().__init__(f"{database.name}.{table}")
        self.database, self.table, self.timeouts, self.timeout = database, table, timeouts, timeout
        self.journal = Journal(directory)

    def guard(self) -> None:
        maintenance_connect(self.database, self.timeouts, self.timeout).close()

    def act(self) -> Vacuumed:
        import psycopg

        try:
            return self._vacuum()
        except psycopg.Error as exc:  # a lock or statement timeout, a refused privilege
            from opsverify.probes.postgres import first_line

            raise OpsverifyError(f"{self.kind} of {self.name} failed: {first_line(exc)}") from None

    def _vacuum(self) -> Vacuumed:
        from psycopg import sql

        with maintenance_connect(self.database, self.timeouts, self.timeout) as conn:
            self.table = _qualified(conn, self.table, self.database.name)
            ident = table_identifier(self.table)
            conn.execute("SELECT pg_stat_clear_snapshot()")
            vac0, ana0, writes0 = self._stats(conn)
            rows0 = self._count(conn, ident)
            self.journal.open("vacuum", database=self.database.name, table=self.table)
            try:
                conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(ident))
                rows1 = self._count(conn, ident)
                deadline = time.monotonic() + STATS_WAIT
                while True:  # the statistics are flushed asynchronously: a bounded wait
                    conn.execute("SELECT pg_stat_clear_snapshot()")
                    vac1, ana1, writes1 = self._stats(conn)
                    advanced = vac1 is not None and ana1 is not None and (vac0 is None or vac1 > vac0) and (
                        ana0 is None or ana1 > ana0
                    )
                    if advanced or time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                while rows1 != rows0 and writes1 == writes0 and time.monotonic() < deadline + 2:
                    time.sleep(0.2)  # another session's write: its counters reach the statistics within ~1 s
                    conn.execute("SELECT pg_stat_clear_snapshot()")
                    writes1 = self._stats(conn)[2]
            finally:
                self.differences += self.journal.remove()
        done = Vacuumed(self.database.name, self.table, vac0, vac1, ana0, ana1, rows0, rows1, writes1 != writes0)
        if not done.written_meanwhile and rows1 != rows0:
            self.differences.append(f"{rows1} rows instead of {rows0} with no write meanwhile")
        return done

    def _stats(self, conn: psycopg.Connection) -> tuple[Any, Any, int]:
        row = conn.execute(STATS, {"t": self.table}).fetchone()
        return (row[0], row[1], int(row[2] or 0)) if row else (None, None, 0)

    def _count(self, conn: psycopg.Connection, ident: Any) -> int:
        from psycopg import sql

        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
        return int(row[0]) if row else 0


class InTransaction(Permanent[R]):
    """A change made in ONE repeatable-read transaction that proves, before COMMIT, that it changed no other table of
    the database (no row written, no storage file replaced, no column changed: ``table_marks``; where track_counts is
    off, every other readable table's row count and checksum); any difference: ROLLBACK and ``CleanupError``."""

    action = "transaction"

    def __init__(self, database: Database, name: str, timeouts: Timeouts, timeout: timedelta, directory: Path) -> None:
        super().__init__(name)
        self.database, self.timeouts, self.timeout = database, timeouts, timeout
        self.journal = Journal(directory)

    def guard(self) -> None:
        maintenance_connect(self.database, self.timeouts, self.timeout).close()

    declared_writes: Writes = (0, 0, 0)  # the rows the change itself writes to its own tables (set by ``change``)
    own_what = "its own tables"

    def own_tables(self, conn: psycopg.Connection) -> set[str]:
        """The tables the change may touch (excluded from the other tables' proof; their writes must be
        ``declared_writes``)."""
        raise NotImplementedError

    def side_tables(self, conn: psycopg.Connection) -> set[str]:
        """Tables the profile lets the change write as a side effect (an audit trigger's log): left out of the proof."""
        return set()

    def change(self, conn: psycopg.Connection) -> tuple[R, list[str]]:
        """Make the change inside the transaction; its result and the differences from what it declared."""
        raise NotImplementedError

    def act(self) -> R:
        import psycopg

        try:
            return self._in_transaction()
        except psycopg.Error as exc:  # a lock or statement timeout, a serialization failure, a refused privilege
            from opsverify.probes.postgres import first_line

            raise OpsverifyError(
                f"{self.kind} {self.name} failed and was rolled back (nothing was changed): {first_line(exc)}"
            ) from None

    def _in_transaction(self) -> R:
        with maintenance_connect(self.database, self.timeouts, self.timeout, autocommit=False) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            mine = with_partitions(conn, self.own_tables(conn))
            own = mine | with_partitions(conn, self.side_tables(conn))
            tracked = counts_tracked(conn)
            others = [t for t in user_tables(conn) if t not in own]
            unread = [] if tracked else unreadable_tables(conn, others)
            others = [t for t in others if t not in unread]
            self.refuse(others)
            marks = table_marks(conn) if tracked else {}
            sums = {} if tracked else checksums(conn, others)
            self.journal.open(self.action, database=self.database.name, host=self.database.host,
                              port=self.database.port, state="begun", **self.journal_state())
            try:
                result, diffs = self.change(conn)
                if tracked:
                    now = table_marks(conn)
                    diffs += compare_marks({t: m for t, m in marks.items() if t not in own},
                                           {t: m for t, m in now.items() if t not in own})
                    before, after = writes_to(marks, mine), writes_to(now, mine)
                    done = (after[0] - before[0], after[1] - before[1], after[2] - before[2])
                    if done != self.declared_writes:
                        diffs.append(f"{self.own_what} had {said(done)} by this transaction, expected "
                                     f"{said(self.declared_writes)} (a trigger, rule or foreign key's ON DELETE/ON "
                                     "UPDATE action changed rows the action does not declare)")
                else:
                    diffs += compare(sums, checksums(conn, [t for t in user_tables(conn)
                                                            if t not in own and t not in unread]))
                if diffs:
                    conn.rollback()
                    self.journal.write(state="rolled back")
                    raise CleanupError(
                        f"{self.kind} {self.name} rolled back: {'; '.join(diffs)} (nothing was changed)"
                    )
                conn.commit()
                self.journal.write(state="committed")
                if unread:
                    result = dataclasses.replace(result, not_proved=tuple(unread),  # type: ignore[type-var]
                                                 note=self.not_proved_note(unread))
            except BaseException:
                if not conn.closed:
                    conn.rollback()
                raise
            finally:
                self.differences += self.journal.remove()
        return result

    def journal_state(self) -> dict[str, Any]:
        return {}

    def refuse(self, others: list[str]) -> None:
        """Raise ``OpsverifyError`` when the change may not be made (before anything is changed)."""

    def not_proved_note(self, unread: list[str]) -> str:
        shown, role = ", ".join(f"{t} (no SELECT)" for t in unread), self.database.maintenance_user
        return (f"not proved: {shown}: track_counts is off, so the proof reads every other table, and the role {role} "
                f"(maintenance_user) cannot read {'it' if len(unread) == 1 else 'them'}; turn track_counts on, or "
                f"GRANT SELECT ON {', '.join(unread)} TO {role}, if the team wants them proved")


@dataclass(frozen=True)
class Archived:
    """What ``archived_jobs`` moved: ``rows`` finished jobs older than ``cutoff`` from ``table`` to ``archive``."""

    database: str
    table: str
    archive: str
    cutoff: datetime
    rows: int
    live_before: int
    live_after: int
    archive_before: int
    archive_after: int
    not_proved: tuple[str, ...] = ()  # other tables the maintenance_user cannot SELECT: left out of the proof
    note: str = ""  # "not proved: ... (no SELECT)", naming the grant; empty when every other table was proved


class ArchiveJobs(InTransaction["Archived"]):
    """Finished jobs older than ``older_than`` moved from the job table to its ``archive_table`` (QP-23)."""

    kind = "archive of jobs"
    action = "archive"

    def __init__(
        self, database: Database, jobs: JobTable, older_than: timedelta, timeouts: Timeouts, timeout: timedelta,
        directory: Path,
    ) -> None:
        super().__init__(database, f"{database.name}.{jobs.table}", timeouts, timeout, directory)
        self.jobs, self.older_than = jobs, older_than

    def guard(self) -> None:
        if self.jobs.archive_table is None:
            raise NotApplicable(
                f"job table {self.jobs.name} declares no archive_table: declare lifecycle.job_tables[].archive_table "
                "(same columns as the job table) for archived_jobs to move old jobs into"
            )
        with maintenance_connect(self.database, self.timeouts, self.timeout) as conn:
            for table in (self.jobs.table, self.jobs.archive_table):
                found = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
                if not found or found[0] is None:
                    raise NotApplicable(
                        f"table {table} does not exist in database {self.database.name}: create the archive table "
                        f"(CREATE TABLE {self.jobs.archive_table} (LIKE {self.jobs.table})) or fix "
                        "lifecycle.job_tables"
                    )

    def journal_state(self) -> dict[str, Any]:
        return {"table": self.jobs.table, "archive": self.jobs.archive_table, "totals": self.totals}

    def own_tables(self, conn: psycopg.Connection) -> set[str]:
        assert self.jobs.archive_table is not None
        self.table = _qualified(conn, self.jobs.table, self.database.name)
        self.archive = _qualified(conn, self.jobs.archive_table, self.database.name)
        self.totals = [self._count(conn, self.table), self._count(conn, self.archive)]
        self.names = self.columns(conn)  # refused here, before the journal, when the archive lacks a column
        self.own_what = f"the job table and its archive ({self.table}, {self.archive})"
        return {self.table, self.archive}

    def side_tables(self, conn: psycopg.Connection) -> set[str]:
        return {_qualified(conn, t, self.database.name) for t in self.jobs.side_tables}

    def _count(self, conn: psycopg.Connection, table: str, where: Any = None, args: tuple[Any, ...] = ()) -> int:
        from psycopg import sql

        query = sql.SQL("SELECT count(*) FROM {}").format(table_identifier(table))
        if where is not None:
            query = sql.SQL("{} WHERE {}").format(query, where)
        row = conn.execute(query, args).fetchone()
        return int(row[0]) if row else 0

    def selection(self) -> Any:
        from psycopg import sql

        return sql.SQL("{} = ANY(%s) AND {} < %s").format(
            sql.Identifier(self.jobs.status_column), sql.Identifier(self.jobs.time_column)
        )

    def columns(self, conn: psycopg.Connection) -> list[str]:
        """The job table's columns, by name, each of which the archive table must have with the same type (in any
        order; the archive may have more, such as an ``archived_at`` with a default). A column the archive
        generates itself is left to it; a generated column of the job table is copied as its value."""
        query = (TAG + "SELECT attname, format_type(atttypid, atttypmod), attgenerated <> '' FROM pg_attribute "
                 "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum")
        mine = [(str(r[0]), str(r[1])) for r in conn.execute(query, (self.table,)).fetchall()]
        theirs = {str(r[0]): (str(r[1]), bool(r[2])) for r in conn.execute(query, (self.archive,)).fetchall()}
        missing = [c for c, _ in mine if c not in theirs]
        retyped = [f"{c} {t} (archive: {theirs[c][0]})" for c, t in mine if c in theirs and theirs[c][0] != t]
        problem = ""
        if missing:
            problem = (f"lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)} of {self.table}: add "
                       f"{'them' if len(missing) > 1 else 'it'} (ALTER TABLE {self.archive} ADD COLUMN …)")
        elif retyped:
            problem = (f"has other types than {self.table} for {', '.join(retyped)}, so archived values would be "
                       f"cast (rounded, truncated): ALTER TABLE {self.archive} ALTER COLUMN … TYPE to match")
        if problem:
            raise OpsverifyError(f"{self.kind} {self.name} refused (nothing was changed): archive table "
                                 f"{self.archive} {problem}, or fix lifecycle.job_tables[].archive_table")
        return [c for c, _ in mine if not theirs[c][1]]

    def move(self, conn: psycopg.Connection, args: tuple[Any, ...]) -> tuple[int, int]:
        """INSERT the selected rows into the archive (by column name), DELETE them from the job table: (inserted,
        deleted)."""
        from psycopg import sql

        names = sql.SQL(", ").join(sql.Identifier(c) for c in self.names)
        copied = conn.execute(
            sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} WHERE {}").format(
                table_identifier(self.archive), names, names, table_identifier(self.table), self.selection()
            ), args,
        ).rowcount
        deleted = conn.execute(
            sql.SQL("DELETE FROM {} WHERE {}").format(table_identifier(self.table), self.selection()), args
        ).rowcount
        self.declared_writes = (copied, 0, deleted)
        return copied, deleted

    def change(self, conn: psycopg.Connection) -> tuple[Archived, list[str]]:
        row = conn.execute("SELECT now() - %s", (self.older_than,)).fetchone()
        cutoff = row[0] if row else datetime.now()
        args = (list(self.jobs.finished), cutoff)
        live0, arch0 = self.totals
        selected = self._count(conn, self.table, self.selection(), args)
        copied, deleted = self.move(conn, args)
        live1, arch1 = self._count(conn, self.table), self._count(conn, self.archive)
        diffs = []
        if live1 + arch1 != live0 + arch0:
            diffs.append(f"live {live1} + archived {arch1} != {live0 + arch0} before (rows lost or added)")
        if not copied == deleted == selected:
            diffs.append(f"{selected} rows selected, {copied} archived, {deleted} deleted")
        if self._count(conn, self.table, self.selection(), args):
            diffs.append("old finished jobs remain in the job table")
        done = Archived(self.database.name, self.table, self.archive, cutoff, deleted, live0, live1, arch0, arch1)
        return done, diffs


@dataclass(frozen=True)
class DroppedTables:
    database: str
    pattern: str
    tables: tuple[str, ...]
    not_proved: tuple[str, ...] = ()  # other tables the maintenance_user cannot SELECT: left out of the proof
    note: str = ""  # "not proved: ... (no SELECT)", naming the grant; empty when every other table was proved


class DropTempTables(InTransaction["DroppedTables"]):
    """Tables whose name matches ``pattern`` (a glob, any schema) dropped, nothing else (QP-23)."""

    kind = "drop of temporary tables"
    action = "drop"

    def __init__(
        self, database: Database, pattern: str, timeouts: Timeouts, timeout: timedelta, directory: Path,
        max_tables: int = 50,
    ) -> None:
        super().__init__(database, f"{database.name}:{pattern}", timeouts, timeout, directory)
        self.pattern, self.max_tables = pattern, max_tables
        self.matching: list[str] = []

    def journal_state(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "tables": self.matching}

    def _matching(self, conn: psycopg.Connection) -> list[str]:
        schema, _, table = self.pattern.rpartition(".")  # schema.glob: that schema only
        return [t for t in user_tables(conn) if fnmatch.fnmatchcase(t.split(".", 1)[1], table)
                and (not schema or t.split(".", 1)[0] == schema)]

    def guard(self) -> None:
        problem = temp_pattern_problem(self.pattern)
        if problem:
            raise OpsverifyError(f"{self.kind} {self.name} refused (nothing was changed): {problem}")
        super().guard()

    def own_tables(self, conn: psycopg.Connection) -> set[str]:
        self.matching = self._matching(conn)
        if len(self.matching) > self.max_tables:
            raise OpsverifyError(
                f"{self.kind} {self.name} refused (nothing was changed): pattern {self.pattern} matches "
                f"{len(self.matching)} tables, more than max_tables {self.max_tables} ({_shown(self.matching)}): "
                "narrow lifecycle.temp_tables[].pattern or raise its max_tables"
            )
        return set(self.matching)

    def refuse(self, others: list[str]) -> None:
        if not others:
            raise OpsverifyError(
                f"{self.kind} {self.name} refused (nothing was changed): pattern {self.pattern} matches "
                f"{_shown(self.matching)} and leaves no other table to prove the drop against: narrow "
                "lifecycle.temp_tables[].pattern"
            )

    def drop(self, conn: psycopg.Connection, tables: list[str]) -> None:
        import psycopg
        from psycopg import sql

        for table in tables:
            try:
                # no CASCADE: a dependent fails; IF EXISTS: a matching partition went with its matching parent
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table_identifier(table)))
            except psycopg.errors.DependentObjectsStillExist as exc:  # the transaction rolls back: nothing dropped
                raise OpsverifyError(
                    f"{self.kind} {self.name} refused and rolled back (nothing was changed): table {table} matching "
                    f"{self.pattern} has objects depending on it ({_dependents(exc)}), which a drop without CASCADE "
                    "never removes: drop or repoint them, or narrow lifecycle.temp_tables[].pattern"
                ) from None

    def change(self, conn: psycopg.Connection) -> tuple[DroppedTables, list[str]]:
        self.drop(conn, self.matching)
        remaining = self._matching(conn)
        diffs = [f"table {t} matching {self.pattern} remains" for t in remaining]
        return DroppedTables(self.database.name, self.pattern, tuple(self.matching)), diffs


def _dependents(exc: psycopg.Error) -> str:
    """The server's own list of what depends on a table (the error's DETAIL: "view v depends on table t", one a
    line, "and N other objects" past 100), on one line."""
    detail = exc.diag.message_detail or ""
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    return "; ".join(lines) if lines else "the server named none"


def _shown(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more if names else "no table"


# ---------------------------------------------------------------------------------------------- files


@dataclass(frozen=True)
class FileState:
    inode: int
    size: int
    mtime_ns: int
    kind: str = "file"  # or "directory", "symlink" (CleanTmp only)


@dataclass(frozen=True)
class DeletedFiles:
    """What a retention clean-up deleted (``deleted``) and kept (``kept``: newer files, untouched)."""

    where: str
    deleted: tuple[str, ...]
    kept: tuple[str, ...]


class OldFiles(Permanent[DeletedFiles]):
    """Files matching a glob older than ``max_age`` deleted; newer ones proven untouched (inode, size, mtime;
    a file being appended may only grow)."""

    kind = "retention clean-up"

    def __init__(self, name: str, glob: str, host: str | None, max_age: timedelta, directory: Path,
                 root: str | None = None, declared: str = "its path") -> None:
        super().__init__(name)
        self.glob, self.host, self.max_age = glob, host, max_age
        self.root, self.declared = root, declared  # the directory that must exist, and where it is declared
        self.journal = Journal(directory)
        self.cutoff = 0.0
        self.old: list[str] = []
        self.failed: dict[str, str] = {}  # a file past retention that could not be deleted: why

    def guard(self) -> None:
        if self.host is not None:
            raise NotApplicable(
                f"{self.name} is on host {self.host}: remote hosts are not supported by the fixture, only this "
                "machine's files (declare a local path, or run the suite on that host)"
            )

    def files(self) -> dict[str, FileState]:
        import glob

        found = {}
        for path in sorted(glob.glob(self.glob)):
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if os.path.isfile(path) and not os.path.islink(path):
                found[path] = FileState(st.st_ino, st.st_size, st.st_mtime_ns)
        return found

    def snapshot(self) -> dict[str, FileState]:
        self.cutoff = time.time() - self.max_age.total_seconds()
        return self.files()

    def delete(self, paths: list[str]) -> None:
        for path in paths:
            self.unlink(path)

    def unlink(self, path: str) -> None:
        """Delete one file; one that cannot be deleted is recorded with why, and the others are still tried."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.failed[path] = exc.strerror or str(exc)

    def still_there(self, path: str) -> str:
        why = self.failed.get(path)
        return f"{path} (past retention) still there" + (f": {why}" if why else "")

    def deletable(self, path: str) -> bool:
        """Whether a file past retention may be deleted (a rotation never deletes a live log)."""
        return True

    def act(self) -> DeletedFiles:
        if self.root is not None and not os.path.isdir(self.root):
            raise OpsverifyError(
                f"{self.kind} {self.name}: directory {self.root} does not exist: create it or fix {self.declared}"
            )
        before = self.files()
        self.old = [p for p, s in before.items() if s.mtime_ns / 1e9 < self.cutoff and self.deletable(p)]
        self.journal.open("files", name=self.name, glob=self.glob, max_age=self.max_age.total_seconds(),
                          cutoff=self.cutoff, delete=self.old, state="deleting")
        self.delete(self.old)
        self.journal.write(state="done")
        self.differences += self.journal.remove()
        return DeletedFiles(self.glob, tuple(self.old), tuple(p for p in before if p not in self.old))

    def leftovers(self, before: object) -> list[str]:
        assert isinstance(before, dict)
        now = self.files()
        left = [self.still_there(p) for p in self.old if os.path.lexists(p)]
        for path, was in before.items():
            if path in self.old:
                continue
            is_ = now.get(path)
            if is_ is None:
                left.append(f"newer file {path} deleted")
            elif is_.inode != was.inode:
                left.append(f"newer file {path} replaced (inode {was.inode} -> {is_.inode})")
            elif is_.size < was.size:
                left.append(f"newer file {path} shrank ({was.size} -> {is_.size} bytes)")
            elif is_.size == was.size and is_.mtime_ns != was.mtime_ns:
                left.append(f"newer file {path} modified (mtime changed, same size)")
        return [*self.differences, *left]


# rotated log file names, as checks/maintenance/test_log_files.py's compression check knows them
NUMBERED = re.compile(r"^(?P<base>.+)\.(?P<n>\d+)$")  # app.log.1
DATED = re.compile(r"^(?P<base>.+)-(?P<date>\d{8}(?:\d{2,6})?)$")  # app.log-20261129
INFIX = re.compile(r"^(?P<stem>.+)\.(?P<n>\d+)\.(?P<ext>[A-Za-z]+)$")  # app.1.log


def is_rotated(name: str, compressed: list[str]) -> bool:
    """``x.log.1``, ``x.log.2.gz``, ``x.log-20261129``, ``x.1.log``: a rotated file; a live file is none of them."""
    suffix = next((s for s in compressed if name.endswith(s)), "")
    plain = name[: len(name) - len(suffix)] if suffix else name
    return any(p.match(plain) for p in (NUMBERED, DATED, INFIX))


class RotateLogs(OldFiles):
    """Rotated log files (``x.log.1``, ``x.log.2.gz``, ``x.log-20261129``, ``x.1.log``) of a ``lifecycle.log_dirs``
    entry past its ``retention`` deleted (PF-02, QP-22): only regular files directly in its directory (no symlink
    followed), never a live log."""

    kind = "log rotation"

    def __init__(self, logs: LogDirectory, directory: Path) -> None:
        super().__init__(logs.name, os.path.join(logs.path, logs.pattern), logs.host, logs.retention, directory,
                         root=os.path.realpath(logs.path), declared="lifecycle.log_dirs[].path")
        self.pattern, self.compressed = logs.pattern, list(logs.compressed)

    def guard(self) -> None:
        super().guard()
        if "/" in self.pattern or ".." in self.pattern:
            raise OpsverifyError(
                f"{self.kind} {self.name} refused: pattern {self.pattern!r} must be a plain file-name glob (no '/' "
                "and no '..'): fix lifecycle.log_dirs[].pattern"
            )

    def files(self) -> dict[str, FileState]:
        found: dict[str, FileState] = {}
        assert self.root is not None
        try:
            entries = sorted(os.scandir(self.root), key=lambda e: e.name)
        except OSError:
            return found
        for entry in entries:
            if entry.name.startswith(".") and not self.pattern.startswith("."):
                continue  # as glob: hidden files only by a pattern naming them
            if not fnmatch.fnmatch(entry.name, self.pattern) or not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            found[os.path.join(self.root, entry.name)] = FileState(st.st_ino, st.st_size, st.st_mtime_ns)
        return found

    def deletable(self, path: str) -> bool:
        return is_rotated(os.path.basename(path), self.compressed)


class CleanTmp(OldFiles):
    """Temporary entries of a ``lifecycle.tmp_files`` entry past their ``max_age`` deleted (QP-24), every kind the
    QP-24 check counts, judged by the same mtime (``tree_mtime_ns``: a directory's is the newest below it): a
    regular file, a symlink (unlinked, never followed), a directory with its contents (no symlink followed out of
    it, no other filesystem entered; what it could not remove is a leftover). A newer directory is proven kept
    (same inode; what is written into it is not the clean-up's)."""

    kind = "temporary file clean-up"

    def __init__(self, tmp: TmpFiles, directory: Path, pattern: str | None = None) -> None:
        glob = pattern or str(tmp.pattern)
        parts = glob.split("/")
        wild = next((i for i, part in enumerate(parts) if GLOB_CHARS.search(part)), len(parts) - 1)
        super().__init__(tmp.name, glob, tmp.host, tmp.max_age, directory, root="/".join(parts[:wild]) or "/",
                         declared="lifecycle.tmp_files[].pattern")
        self.unremoved: dict[str, str] = {}  # a directory past retention not fully removed: why
        self.mounts: list[str] = []  # a directory past retention that is a mount point: never entered

    def guard(self) -> None:
        super().guard()
        problem = tmp_glob_problem(self.glob) if os.path.isabs(self.glob) else f"pattern {self.glob!r} is not absolute"
        if problem:
            raise OpsverifyError(f"{self.kind} {self.name} refused: {problem}")

    def files(self) -> dict[str, FileState]:
        import glob

        from opsverify.probes.logfiles import tree_mtime_ns

        found = {}
        for path in sorted(glob.glob(self.glob)):
            try:
                st = os.lstat(path)
                kind = ENTRY_KINDS.get(stat.S_IFMT(st.st_mode))
                if kind is None:
                    continue
                mtime = tree_mtime_ns(path) if kind == "directory" else st.st_mtime_ns
            except OSError:  # removed meanwhile
                continue
            found[path] = FileState(st.st_ino, st.st_size, mtime, kind)
        return found

    def delete(self, paths: list[str]) -> None:
        for path in paths:
            try:
                st = os.lstat(path)
                parent_dev = os.lstat(os.path.dirname(path) or "/").st_dev
            except FileNotFoundError:
                continue
            except OSError as exc:
                self.failed[path] = exc.strerror or str(exc)
                continue
            if not stat.S_ISDIR(st.st_mode):
                self.unlink(path)
                continue
            if st.st_dev != parent_dev:
                self.mounts.append(path)  # another filesystem mounted on it: never entered
                continue
            problems = remove_tree(path)
            if problems:
                more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
                self.unremoved[path] = f"{problems[0]}{more}"

    def leftovers(self, before: object) -> list[str]:
        assert isinstance(before, dict)
        left = [f"directory {p} (past retention) not fully removed: {self.unremoved[p]}" if p in self.unremoved
                else self.still_there(p) for p in self.old if os.path.lexists(p) and p not in self.mounts]
        now = self.files()
        for path, was in before.items():
            if path in self.old:
                continue
            is_ = now.get(path)
            what = f"newer {was.kind} {path}"
            if is_ is None:
                left.append(f"{what} deleted")
            elif is_.inode != was.inode or is_.kind != was.kind:
                left.append(f"{what} replaced (inode {was.inode} -> {is_.inode})")
            elif was.kind != "file":
                continue  # a directory may be written into; a symlink's own inode is its proof
            elif is_.size < was.size:
                left.append(f"{what} shrank ({was.size} -> {is_.size} bytes)")
            elif is_.size == was.size and is_.mtime_ns != was.mtime_ns:
                left.append(f"{what} modified (mtime changed, same size)")
        left = [*self.differences, *left]
        mounts = [p for p in self.mounts if os.path.lexists(p)]
        if mounts:  # not "remove it by hand": nothing to remove, a mount to review
            rest = f"; it also left {'; '.join(left)} behind: remove it by hand" if left else ""
            raise CleanupError(
                f"{self.kind} {self.name}: " + "; ".join(
                    f"directory {p} (past retention) is a mount point of another filesystem, left in place"
                    for p in mounts
                ) + f": unmount it if it is stale{rest}"
            )
        return left


ENTRY_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink"}


def remove_tree(path: str) -> list[str]:
    """Remove the directory ``path`` and everything in it, through directory descriptors opened ``O_NOFOLLOW`` (a
    symlink in it is unlinked, never followed, even one swapped in meanwhile) and never entering another
    filesystem than its parent directory's (``path`` itself a mount point is not entered; a mount point in it is
    left, with its parents); what could not be removed, each with why."""
    problems: list[str] = []
    parent, name = os.path.split(path.rstrip("/"))
    try:
        parent_fd = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        return [f"{path}: {exc.strerror or exc}"]
    try:
        dev = os.fstat(parent_fd).st_dev
    except OSError as exc:
        os.close(parent_fd)
        return [f"{path}: {exc.strerror or exc}"]
    try:
        _remove_in(parent_fd, name, path, dev, problems)
    finally:
        os.close(parent_fd)
    return problems


def _remove_in(parent_fd: int, name: str, shown: str, dev: int, problems: list[str]) -> None:
    """Remove directory ``name`` of ``parent_fd`` with its contents (see ``remove_tree``)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        problems.append(f"{shown}: {exc.strerror or exc}")
        return
    before = len(problems)
    try:
        if os.fstat(fd).st_dev != dev:
            problems.append(f"{shown} is a mount point of another filesystem")
            return
        with os.scandir(fd) as entries:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for child, is_dir in children:
            if is_dir:
                _remove_in(fd, child, f"{shown}/{child}", dev, problems)
                continue
            try:
                os.unlink(child, dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                problems.append(f"{shown}/{child}: {exc.strerror or exc}")
    except OSError as exc:
        problems.append(f"{shown}: {exc.strerror or exc}")
    finally:
        os.close(fd)
    if len(problems) == before:
        try:
            os.rmdir(name, dir_fd=parent_fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"{shown}: {exc.strerror or exc}")


# ---------------------------------------------------------------------------------------------- Redis


def binary_client(instance: RedisInstance, timeouts: Timeouts, db: int | None = None) -> redis.Redis:
    """A client bounded by the profile's timeouts that keeps values as bytes (DUMP payloads are binary)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(
        host=instance.host, port=instance.port, db=instance.db if db is None else db, username=instance.username,
        password=instance.secret(), socket_connect_timeout=timeouts.connect.total_seconds(),
        socket_timeout=timeouts.request.total_seconds(), retry=Retry(NoBackoff(), 0), decode_responses=False,
        ssl=instance.tls, ssl_ca_certs=str(instance.ca_file) if instance.ca_file else None,
    )


RECORD = struct.Struct(">IqI")  # key length, absolute expiry in ms since the epoch (-1: none), payload length


def write_record(out: IO[bytes], key: bytes, expires_ms: int, payload: bytes) -> None:
    out.write(RECORD.pack(len(key), expires_ms, len(payload)) + key + payload)


def read_records(path: Path) -> Iterator[tuple[bytes, int, bytes]]:
    """The dump file's records; a record cut short (the run was killed while writing it) ends the stream."""
    with path.open("rb") as src:
        while len(head := src.read(RECORD.size)) == RECORD.size:
            klen, expires, plen = RECORD.unpack(head)
            key, payload = src.read(klen), src.read(plen)
            if len(key) != klen or len(payload) != plen:
                return
            yield key, expires, payload


@dataclass
class Restored:
    """What a RESTORE of a dump file did."""

    restored: int = 0
    kept: int = 0  # written by the application meanwhile: its value wins
    expired: int = 0  # its TTL ran out meanwhile
    failed: list[str] = field(default_factory=list)


def restore_keys(conn: redis.Redis, path: Path, batch: int = RESTORE_BATCH) -> Restored:
    """RESTORE every key of the dump file that is missing (no REPLACE: a key written meanwhile wins), in small
    batches; a key the server refused for memory (OOM) is retried once after its batch."""
    done = Restored()
    records = read_records(path)
    while chunk := [r for _, r in zip(range(batch), records, strict=False)]:
        refused = _restore_chunk(conn, chunk, done, retry=True)
        if refused:
            _restore_chunk(conn, refused, done, retry=False)
    return done


def _restore_chunk(conn: redis.Redis, chunk: list[tuple[bytes, int, bytes]], done: Restored,
                   retry: bool) -> list[tuple[bytes, int, bytes]]:
    """One pipeline of RESTOREs counted into ``done``; with ``retry`` the records refused for memory (OOM) are
    returned for one more try, else every refusal is a failed key (its name decoded, the server's answer)."""
    import redis

    now_ms = int(time.time() * 1000)
    todo = []
    for key, expires, payload in chunk:
        if expires < 0:
            todo.append((key, expires, 0, payload))  # no TTL
        elif expires - now_ms > 0:
            todo.append((key, expires, expires - now_ms, payload))  # the remaining TTL
        else:
            done.expired += 1
    with conn.pipeline(transaction=False) as pipe:
        for key, _, ttl, payload in todo:
            pipe.restore(key, ttl, payload)
        answers = pipe.execute(raise_on_error=False)
    refused = []
    for (key, expires, _, payload), answer in zip(todo, answers, strict=True):
        if not isinstance(answer, redis.ResponseError):
            done.restored += 1
        elif "BUSYKEY" in str(answer):
            done.kept += 1
        elif retry and (str(answer).startswith("OOM") or "maxmemory" in str(answer)):
            refused.append((key, expires, payload))
        else:
            done.failed.append(f"{key.decode(errors='replace')} ({str(answer).splitlines()[0]})")
    return refused


@dataclass(frozen=True)
class Flushed:
    """What ``flushed_cache`` flushed: ``keys`` keys of db ``db`` of the instance, dumped to ``dump``."""

    instance: str
    db: int
    keys: int
    dump: Path


class FlushCache(Action[Flushed]):
    """The safe FLUSHDB (QP-24): every key's DUMP + PTTL to a private scratch file, FLUSHDB; undone by RESTORE."""

    kind = "cache flush"
    touches_production = True

    def __init__(self, instance: RedisInstance, db: int, timeouts: Timeouts, directory: Path, batch: int = 500) -> None:
        super().__init__(f"{instance.name} db {db}")
        self.instance, self.db, self.timeouts, self.batch = instance, db, timeouts, batch
        self.journal = Journal(directory)
        self.dump = directory / DUMP_FILE
        self.flushed = 0
        self.restored: Restored | None = None
        self.app_written: int = 0
        self.undo_failed = ""

    def guard(self) -> None:
        """Nothing to refuse by name: the production gate decides whether a live server may be flushed."""

    def client(self) -> redis.Redis:
        return binary_client(self.instance, self.timeouts, self.db)

    def snapshot(self) -> int:
        import redis

        conn = self.client()
        try:
            return int(conn.dbsize())
        except redis.RedisError as exc:
            raise OpsverifyError(f"{self._where()}: {_reason(exc)}") from None
        finally:
            conn.close()

    def _where(self) -> str:
        return f"redis {self.instance.name} at {self.instance.host}:{self.instance.port} db {self.db}"

    def act(self) -> Flushed:
        import redis

        try:
            return self._flush()
        except redis.RedisError as exc:
            raise OpsverifyError(f"{self._where()}: {_reason(exc)}") from None

    def headroom(self, conn: redis.Redis, dump_bytes: int) -> None:
        """Refuse (``NotApplicable``) to flush when the restore may not fit: with a ``maxmemory`` and a policy that
        refuses writes rather than evicting any key (``noeviction``, ``volatile-*``), the server must hold
        ``used_memory`` + the dump's size, so that the restore fits even when the application refills the flushed
        memory meanwhile."""
        info: dict[str, Any] = conn.info("memory")  # type: ignore[assignment]
        limit, used = int(info.get("maxmemory", 0) or 0), int(info.get("used_memory", 0) or 0)
        policy = info.get("maxmemory_policy", "noeviction")
        policy = policy.decode() if isinstance(policy, bytes) else str(policy)
        if limit and not policy.startswith("allkeys-") and used + dump_bytes > limit:
            raise NotApplicable(
                f"refused to flush {self._where()}: used_memory {used} + the dump's {dump_bytes} bytes exceeds "
                f"maxmemory {limit} (policy {policy}), so the restore could be refused for memory; raise maxmemory "
                f"or free memory first"
            )

    def _flush(self) -> Flushed:
        conn = self.client()
        try:
            self.journal.open("flush", instance=self.instance.name, host=self.instance.host, port=self.instance.port,
                              db=self.db, state="dumping")
            fd = os.open(self.dump, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            count = 0
            sample: dict[str, str | None] = {}
            with os.fdopen(fd, "wb") as out:
                for keys in self._batches(conn):
                    with conn.pipeline(transaction=False) as pipe:
                        for key in keys:
                            pipe.pttl(key)
                            pipe.dump(key)
                        answers = pipe.execute()
                    now_ms = int(time.time() * 1000)
                    for key, ttl, payload in zip(keys, answers[0::2], answers[1::2], strict=True):
                        if payload is None:  # expired or deleted between SCAN and DUMP
                            continue
                        write_record(out, key, -1 if int(ttl) < 0 else now_ms + int(ttl), payload)
                        count += 1
                        if len(sample) < SAMPLE and zlib.crc32(key) % SAMPLE_EVERY == 0 and int(ttl) < 0:
                            sample[key.hex()] = value_digest(conn, key)  # keys without a TTL: they cannot expire
                out.flush()
                os.fsync(out.fileno())
            self.headroom(conn, self.dump.stat().st_size)
            sample_file = self.journal.directory / SAMPLE_FILE
            sample_file.write_text(json.dumps(sample))
            sample_file.chmod(0o600)
            self.journal.write(state="flushing", keys=count)
            conn.flushdb()
            self.flushed = count
            self.journal.write(state="flushed")
            return Flushed(self.instance.name, self.db, count, self.dump)
        finally:
            conn.close()

    def _batches(self, conn: redis.Redis) -> Iterator[list[bytes]]:
        cursor = 0
        while True:
            cursor, keys = conn.scan(cursor, count=self.batch)
            if keys:
                yield [k if isinstance(k, bytes) else k.encode() for k in keys]
            if int(cursor) == 0:
                return

    def undo(self) -> None:
        if self.dump.exists() and self.journal.state.get("state") in ("flushing", "flushed"):
            conn = self.client()
            try:
                self.restored = restore_keys(conn, self.dump, min(self.batch, RESTORE_BATCH))
                self.app_written = self.restored.kept
            except Exception as exc:
                self.undo_failed = _reason(exc)
                raise
            finally:
                conn.close()

    def leftovers(self, before: object) -> list[str]:
        """The sample compared; a key missing after the restore keeps the dump (the only copy) and raises
        ``KeysLost`` naming it and how to restore; else the journal is removed and proven gone."""
        left: list[str] = []
        if self.restored is None and self.journal.state.get("state") in ("flushing", "flushed"):
            raise KeysLost(
                f"cache flush {self.name}: the restore of its {self.flushed} keys failed ({self.undo_failed}); "
                f"{self._kept()}"
            )
        if self.restored is not None:
            count, names = self._missing()
            if count or self.restored.failed:
                raise KeysLost(self._lost(count, names))
            self.journal.write(state="restored")
            left += self._compare_sample()
        left += self.journal.remove()
        return left

    def _lost(self, count: int, names: list[str]) -> str:
        failed = self.restored.failed if self.restored else []
        shown = ", ".join(failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
        refused = f"; the server refused {len(failed)}: {shown}" if failed else ""
        more = f" and {count - len(names)} more" if count > len(names) else ""
        missing = f" ({', '.join(names)}{more})" if names else ""
        lost = f"{count} of {self.flushed} keys missing after the restore{missing}{refused}"
        return f"cache flush {self.name}: {lost}; {self._kept()}"

    def _kept(self) -> str:
        return (f"their dump is kept in {self.dump}: the next run's janitor restores them (make room first if the "
                "server refused them for memory), or by hand: RESTORE each record (key, expiry, DUMP payload) of "
                "that file")

    def _missing(self) -> tuple[int, list[str]]:
        """Keys of the dump file (not expired meanwhile) that do not exist now: their count and the first five."""
        conn = self.client()
        count, names = 0, list[str]()
        try:
            records = read_records(self.dump)
            while chunk := [r for _, r in zip(range(self.batch), records, strict=False)]:
                now_ms = time.time() * 1000
                keys = [k for k, expires, _ in chunk if expires < 0 or expires > now_ms + 1000]
                with conn.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.exists(key)
                    found = pipe.execute()
                for key, exists in zip(keys, found, strict=True):
                    if not exists:
                        count += 1
                        if len(names) < 5:
                            names.append(key.decode(errors="replace"))
        finally:
            conn.close()
        return count, names

    def _compare_sample(self) -> list[str]:
        """The sampled keys' values (type and content) equal those read before the flush; a key the application
        wrote meanwhile (RESTORE found it) is its own. Compared by content: a DUMP payload is not byte-stable (a
        restored small set may list its members in another order)."""
        try:
            sample = json.loads((self.journal.directory / SAMPLE_FILE).read_text())
        except (OSError, ValueError):
            return ["the sample of values taken before the flush is unreadable"]
        conn = self.client()
        left = []
        try:
            for key_hex, digest in sample.items():
                key = bytes.fromhex(key_hex)
                now = value_digest(conn, key)
                if now is None:
                    continue  # counted as missing
                if now != digest and not self._written_meanwhile():
                    left.append(f"key {key.decode(errors='replace')} differs after the restore")
                if len(left) >= 5:
                    break
        finally:
            conn.close()
        return left

    def _written_meanwhile(self) -> bool:
        return bool(self.restored and self.restored.kept)


class KeysLost(CleanupError):
    """Keys a restore could not bring back: their dump is kept (``performed`` reports it as it is)."""


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def value_digest(conn: redis.Redis, key: bytes) -> str | None:
    """A digest of a key's type and content, independent of its encoding (None: no such key)."""
    kind = conn.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    parts: Any
    if kind == "none":
        return None
    if kind == "string":
        parts = [conn.get(key)]
    elif kind == "list":
        parts = conn.lrange(key, 0, -1)
    elif kind == "set":
        parts = sorted(conn.smembers(key))
    elif kind == "hash":
        fields: dict[Any, Any] = conn.hgetall(key)  # type: ignore[assignment]
        parts = sorted(bytes(f) + b"=" + bytes(v) for f, v in fields.items())
    elif kind == "zset":
        members: list[Any] = conn.zrange(key, 0, -1, withscores=True)  # type: ignore[assignment]
        parts = [bytes(m) + b"=" + repr(score).encode() for m, score in members]
    else:
        parts = [conn.dump(key)]
    digest = hashlib.sha256(kind.encode())
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- janitor part


def finish_journal(directory: Path, databases: list[Database], redis_instances: list[RedisInstance],
                   timeouts: Timeouts) -> str | None:
    """What a killed run's maintenance journal asks for, done: one sentence, or None when it holds no journal."""
    journal = read_journal(directory)
    if journal is None:
        return None
    action = journal.get("action")
    try:
        if action == "flush":
            return _finish_flush(directory, journal, redis_instances, timeouts)
        if action in ("archive", "drop"):
            return _finish_transaction(journal, databases, timeouts)
        if action == "files":
            return _finish_files(journal)
        if action == "vacuum":
            return f"a VACUUM ANALYZE of {journal.get('table')} in {journal.get('database')} was interrupted: " \
                "nothing to reverse (VACUUM changes no rows)"
    except Exception as exc:  # noqa: BLE001 - one sentence, never a traceback
        return f"could not finish the interrupted {action} journal in {directory}: {str(exc).splitlines()[0]}"
    return None


def _finish_flush(directory: Path, journal: dict[str, Any], instances: list[RedisInstance], timeouts: Timeouts) -> str:
    name, db = journal.get("instance"), int(journal.get("db", 0))
    if journal.get("state") == "dumping":
        return f"a cache flush of redis {name} db {db} was interrupted before FLUSHDB: nothing was flushed"
    if journal.get("state") == "restored":
        return f"a cache flush of redis {name} db {db} had been restored already"
    where = (journal.get("host"), journal.get("port"))
    instance = next((i for i in instances if i.name == name and (i.host, i.port) == where), None)
    if instance is None:
        raise CleanupError(
            f"the profile names no redis instance {name} at {where[0]}:{where[1]}: its keys are in "
            f"{directory / DUMP_FILE} (run with the profile that flushed it)"
        )
    conn = binary_client(instance, timeouts, db)
    try:
        done = restore_keys(conn, directory / DUMP_FILE)
    finally:
        conn.close()
    if done.failed:  # "could not": the janitor keeps the directory, the next run retries
        shown = ", ".join(done.failed[:3]) + (f" and {len(done.failed) - 3} more" if len(done.failed) > 3 else "")
        return (f"could not restore {len(done.failed)} keys of redis {name} db {db} that an interrupted cache flush "
                f"had flushed ({done.restored} restored; the server refused {shown}): their dump is kept in "
                f"{directory / DUMP_FILE} and the next run retries (make room first if refused for memory)")
    return (f"restored {done.restored} keys of redis {name} db {db} that an interrupted cache flush had flushed "
            f"({done.kept} written meanwhile kept, {done.expired} expired meanwhile)")


def _finish_transaction(journal: dict[str, Any], databases: list[Database], timeouts: Timeouts) -> str:
    name = journal.get("database")
    what = "archive of jobs" if journal.get("action") == "archive" else "drop of temporary tables"
    if journal.get("state") in ("committed", "rolled back"):
        return f"the {what} in database {name} had {journal.get('state')}: nothing to reverse"
    where = (journal.get("host"), journal.get("port"))
    db = next((d for d in databases if d.name == name and (d.host, d.port) == where), None)
    if db is None:
        return f"an interrupted {what} in database {name} was rolled back by PostgreSQL (not in the profile: unchecked)"
    with maintenance_connect(db, timeouts, timeouts.request) as conn:
        deadline = time.monotonic() + timeouts.request.total_seconds()
        pid = str(journal.get("creator_pid", ""))
        while time.monotonic() < deadline:  # the killed run's backend ends at its next read of the socket
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                               (f"opsverify-maintenance-{pid}",)).fetchone()
            if not row or not row[0]:
                break
            time.sleep(0.2)
        if journal.get("action") == "archive":
            totals = [int(t) for t in journal.get("totals", [0, 0])]
            live = _count(conn, str(journal["table"]))
            arch = _count(conn, str(journal["archive"]))
            kept = "nothing lost" if live + arch == sum(totals) else "the counts differ (written meanwhile?)"
            return (f"an interrupted archive of jobs in database {name} was rolled back by PostgreSQL: live {live} + "
                    f"archived {arch}, {sum(totals)} before: {kept}")
        tables = [t for t in journal.get("tables", []) if t in set(user_tables(conn))]
        return (f"an interrupted drop of temporary tables in database {name} was rolled back by PostgreSQL: "
                f"{len(tables)} of its {len(journal.get('tables', []))} tables still there")


def _count(conn: psycopg.Connection, table: str) -> int:
    from psycopg import sql

    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table_identifier(table))).fetchone()
    return int(row[0]) if row else 0


def _finish_files(journal: dict[str, Any]) -> str:
    remain = [p for p in journal.get("delete", []) if os.path.lexists(p)]
    where = journal.get("glob")
    if not remain:
        return f"an interrupted retention clean-up of {where} had deleted every file past retention"
    shown = ", ".join(remain[:5]) + (f" and {len(remain) - 5} more" if len(remain) > 5 else "")
    files = f"{len(remain)} file{'s' if len(remain) != 1 else ''}"
    return f"an interrupted retention clean-up of {where} left {files} past retention: {shown}"
