"""The database half of the data lifecycle (issue 11, QP-23, QP-31): one read-only session per database.

For each part of the profile's ``lifecycle`` section that names the database it reads, with the
session's statement timeout on every query: finished jobs older than their ``max_age`` (count and
the oldest age), tables whose name matches a temporary-table glob (first names, count, sizes), and
personal-data rows past their retention (count and the oldest age). Every identifier is quoted by
psycopg (``sql.Identifier``, ``schema.table`` split), never formatted into the text. A table or
column that does not exist is an ``error`` (the check fails naming it); a refused SELECT is a
``missing_grant`` (the check skips naming the GRANT).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from opsverify.probes.postgres import Unread, first_line, read_only
from opsverify.profile.maintenance import JobTable, PersonalData, TempTables
from opsverify.profile.model import Database

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

FIRST_NAMES = 5
SYSTEM_SCHEMA = "n.nspname IN ('pg_catalog', 'information_schema') OR n.nspname ~ '^pg_(toast|temp_|toast_temp_)'"
# Tables (plain and partitioned) outside the system schemas whose name matches a LIKE pattern: how many, their
# total size (indexes and TOAST included), the first names in name order with their sizes.
TEMP_TABLES_SQL = f"""
SELECT count(*), coalesce(sum(pg_total_relation_size(c.oid)), 0),
       (array_agg(quote_ident(n.nspname) || '.' || quote_ident(c.relname) ORDER BY n.nspname, c.relname))[1:%(first)s],
       (array_agg(pg_total_relation_size(c.oid) ORDER BY n.nspname, c.relname))[1:%(first)s]
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT ({SYSTEM_SCHEMA}) AND c.relname LIKE %(pattern)s ESCAPE '\\'
  AND (%(schema)s::text IS NULL OR n.nspname = %(schema)s)
"""


@dataclass(frozen=True)
class StaleRows:
    """Rows of ``table`` past their age limit: a job table's finished jobs, or personal data past retention."""

    name: str  # the lifecycle item's name
    table: str
    count: int = 0
    oldest: timedelta | None = None  # the age of the oldest such row
    error: str | None = None  # the table or a column does not exist, the query timed out, …
    missing_grant: str | None = None  # the SELECT the role lacks


@dataclass(frozen=True)
class TempTablesFound:
    """Tables matching a temporary-table glob: the first ``FIRST_NAMES`` (quoted ``schema.table``) with sizes."""

    name: str
    pattern: str
    count: int = 0
    total_size: int = 0  # bytes, indexes and TOAST included
    first: tuple[tuple[str, int], ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class LifecycleFacts:
    """What one read-only session of a database found for every lifecycle item naming that database."""

    address: str
    role: str
    jobs: dict[str, StaleRows] = field(default_factory=dict)
    temp_tables: dict[str, TempTablesFound] = field(default_factory=dict)
    personal_data: dict[str, StaleRows] = field(default_factory=dict)
    error: str | None = None  # no session (the server refused, or never answered)
    unreachable: str | None = None  # the connection-level cause: an outage

    @property
    def is_read(self) -> bool:
        return self.error is None


def like_pattern(glob: str) -> str:
    """A glob (``*`` any run, ``?`` one character) as a LIKE pattern with ``\\`` as its escape character."""
    out = []
    for char in glob:
        if char in "\\%_":
            out.append("\\" + char)
        elif char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        else:
            out.append(char)
    return "".join(out)


def table_identifier(name: str) -> sql.Identifier:
    """``schema.table`` or ``table`` as a quoted (qualified) identifier."""
    from psycopg import sql

    return sql.Identifier(*name.split("."))


def grant_select(table: str, role: str) -> str:
    return f"GRANT SELECT ON {table} TO {role}"


def _stale(
    conn: psycopg.Connection, name: str, table: str, role: str, query: sql.Composed, params: Sequence[object]
) -> StaleRows:
    """Count and oldest age of the rows ``query`` selects; a missing table or column and a refusal said so."""
    import psycopg

    try:
        row = conn.execute(query, params).fetchone()
    except psycopg.errors.UndefinedTable:
        return StaleRows(name, table, error=f"table {table} does not exist")
    except psycopg.errors.UndefinedColumn as exc:
        return StaleRows(name, table, error=f"{first_line(exc)} in table {table}")
    except psycopg.errors.InsufficientPrivilege:
        return StaleRows(name, table, missing_grant=grant_select(table, role))
    except psycopg.errors.QueryCanceled:
        return StaleRows(name, table, error=f"reading table {table} took longer than the statement timeout")
    except psycopg.Error as exc:
        return StaleRows(name, table, error=f"reading table {table} failed: {first_line(exc)}")
    count, oldest = row if row else (0, None)
    return StaleRows(name, table, int(count or 0), oldest if isinstance(oldest, timedelta) else None)


def stale_jobs(conn: psycopg.Connection, job: JobTable, role: str) -> StaleRows:
    """Finished jobs (``status_column`` in ``finished``) whose ``time_column`` is older than ``max_age``."""
    from psycopg import sql

    time = sql.Identifier(job.time_column)
    query = sql.SQL("SELECT count(*), now() - min({time}) FROM {table} WHERE {status} IN ({values}) "
                    "AND {time} < now() - %s::interval").format(
        time=time, table=table_identifier(job.table), status=sql.Identifier(job.status_column),
        values=sql.SQL(", ").join(sql.Placeholder() * len(job.finished)),
    )
    return _stale(conn, job.name, job.table, role, query, [*job.finished, job.max_age])


def stale_personal_data(conn: psycopg.Connection, data: PersonalData, role: str) -> StaleRows:
    """Rows whose ``column`` is older than ``retention``."""
    from psycopg import sql

    column = sql.Identifier(data.column)
    query = sql.SQL("SELECT count(*), now() - min({column}) FROM {table} WHERE {column} < now() - %s::interval").format(
        column=column, table=table_identifier(data.table)
    )
    return _stale(conn, data.name, data.table, role, query, [data.retention])


def temp_tables(conn: psycopg.Connection, temp: TempTables) -> TempTablesFound:
    """Tables outside the system schemas whose name matches ``pattern``."""
    import psycopg

    try:
        schema, _, table = temp.pattern.rpartition(".")  # schema.glob: that schema only
        row = conn.execute(TEMP_TABLES_SQL, {"pattern": like_pattern(table), "schema": schema or None,
                                             "first": FIRST_NAMES}).fetchone()
    except psycopg.errors.QueryCanceled:
        return TempTablesFound(temp.name, temp.pattern, error="listing the tables took longer than the statement "
                               "timeout")
    except psycopg.Error as exc:
        return TempTablesFound(temp.name, temp.pattern, error=f"listing the tables failed: {first_line(exc)}")
    count, total, names, sizes = row if row else (0, 0, None, None)
    first = tuple(zip(names or (), (int(s) for s in sizes or ()), strict=True))
    return TempTablesFound(temp.name, temp.pattern, int(count or 0), int(total or 0), first)


def probe_lifecycle(
    db: Database,
    jobs: Sequence[JobTable],
    temps: Sequence[TempTables],
    personal: Sequence[PersonalData],
    timeout: timedelta,
    query_timeout: timedelta,
) -> LifecycleFacts:
    """Read every given lifecycle item of ``db`` in one read-only session (each query bounded by ``query_timeout``)."""
    address = f"{db.host}:{db.port}/{db.dbname}"

    def read(conn: psycopg.Connection) -> LifecycleFacts:
        return LifecycleFacts(
            address, db.user,
            jobs={j.name: stale_jobs(conn, j, db.user) for j in jobs},
            temp_tables={t.name: temp_tables(conn, t) for t in temps},
            personal_data={p.name: stale_personal_data(conn, p, db.user) for p in personal},
        )

    found = read_only(db, timeout, query_timeout, read)
    if isinstance(found, Unread):
        return LifecycleFacts(address, db.user, error=found.error, unreachable=found.unreachable)
    return found
