"""PostgreSQL session, vacuum and size health, read in one read-only session per database (issue 11, PF-25/26/38).

What the maintenance checks (``checks/maintenance/test_postgres_health.py``) judge: client sessions
against ``max_connections``; sessions idle in transaction and the oldest open transaction (never
their query text: it may hold secrets); sessions waiting on a lock and the pids blocking them;
transaction ID age against ``autovacuum_freeze_max_age``; per table at least
``maintenance.large_table`` big its last (auto)vacuum and (auto)analyze and its live and dead
tuples; the database's size and the sizes of the tables ``table_sizes`` names or that exceed
``max_table_size``.

``pg_stat_activity`` shows other roles' sessions without state, transaction start or client to a
role that is neither superuser nor a member of ``pg_read_all_stats`` (``pg_monitor`` holds it): then
``stats_grant`` names the grant and the session parts are left empty. Table sizes take an
ACCESS SHARE lock per table: they are read under a ``lock_timeout``, so a table held by an
exclusive lock leaves ``tables_error`` set (and the session parts still read) instead of a hung probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from opsverify.probes.postgres import Unread, first_line, read_only
from opsverify.profile.model import Database

if TYPE_CHECKING:
    import psycopg

LIMIT = 20  # sessions and lock waits listed at most, oldest first
TOP_TABLES = 10  # the largest tables, recorded as evidence of size (growth checks read it)
GRANT_STATS = "GRANT pg_monitor TO {role} (or pg_read_all_stats)"
LOCAL = "local socket"

PRIVILEGE_SQL = """
SELECT r.rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
FROM pg_roles r WHERE r.rolname = current_user
"""
SETTINGS_SQL = """
SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,
       current_setting('autovacuum_freeze_max_age')::bigint
"""
CONNECTIONS_SQL = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
# who a session is: never its query text
WHO = """a.pid, coalesce(a.usename, ''), coalesce(a.application_name, ''),
       CASE WHEN a.client_addr IS NULL THEN %(local)s ELSE host(a.client_addr) END, coalesce(a.state, '')"""
IDLE_SQL = f"""
SELECT {WHO}, now() - a.state_change
FROM pg_stat_activity a
WHERE a.state IN ('idle in transaction', 'idle in transaction (aborted)') AND a.pid <> pg_backend_pid()
ORDER BY a.state_change LIMIT %(limit)s
"""
OLDEST_SQL = f"""
SELECT {WHO}, now() - a.xact_start
FROM pg_stat_activity a
WHERE a.xact_start IS NOT NULL AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
ORDER BY a.xact_start LIMIT 1
"""
# sessions waiting for a lock someone holds: since pg_locks.waitstart (PostgreSQL 14+), else the state change
LOCK_WAITS_SQL = """
SELECT {who}, now() - coalesce(l.waitstart, a.state_change), b.pids
FROM (SELECT pid, {waitstart} AS waitstart FROM pg_locks WHERE NOT granted GROUP BY pid) l
JOIN pg_stat_activity a ON a.pid = l.pid
CROSS JOIN LATERAL (SELECT pg_blocking_pids(l.pid) AS pids) b
WHERE cardinality(b.pids) > 0
ORDER BY 6 DESC LIMIT %(limit)s
"""
XID_SQL = """
SELECT d.datname, age(d.datfrozenxid), (SELECT age(datfrozenxid) FROM pg_database WHERE datname = current_database())
FROM pg_database d ORDER BY age(d.datfrozenxid) DESC, d.datname LIMIT 1
"""
DATABASE_SIZE_SQL = "SELECT pg_database_size(current_database())"
# the large tables (judged), those over max_table_size and the TOP_TABLES largest (evidence), largest first
TABLES_SQL = """
WITH t AS (
    SELECT format('%%I.%%I', schemaname, relname) AS name, pg_total_relation_size(relid) AS size,
           n_live_tup, n_dead_tup,
           now() - greatest(last_vacuum, last_autovacuum) AS vacuumed,
           now() - greatest(last_analyze, last_autoanalyze) AS analyzed
    FROM pg_stat_user_tables
), ranked AS (SELECT t.*, row_number() OVER (ORDER BY size DESC, name) AS rank FROM t)
SELECT name, size, n_live_tup, n_dead_tup, vacuumed, analyzed FROM ranked
WHERE size >= %(large)s OR size > %(over)s OR rank <= %(top)s
ORDER BY size DESC, name LIMIT 1000
"""
# each name table_sizes declares: its canonical schema.table and size (both NULL when there is no such table)
DECLARED_SQL = """
SELECT n, CASE WHEN c.oid IS NOT NULL THEN format('%%I.%%I', s.nspname, c.relname) END, pg_total_relation_size(c.oid)
FROM unnest(%(names)s::text[]) AS n
LEFT JOIN pg_class c ON c.oid = to_regclass(n) LEFT JOIN pg_namespace s ON s.oid = c.relnamespace
"""


@dataclass(frozen=True)
class Session:
    """A backend as ``pg_stat_activity`` shows it (no query text); ``age`` since what the caller measured."""

    pid: int
    role: str
    application: str
    client: str  # the client's address, or "local socket"
    state: str
    age: timedelta

    def who(self) -> str:
        """``pid 123 (role app, application "web", client 10.0.0.5)``."""
        return f'pid {self.pid} (role {self.role}, application "{self.application}", client {self.client})'


@dataclass(frozen=True)
class LockWait:
    """A session waiting for a lock (``waited`` so far) and the pids holding or queued before it."""

    session: Session
    waited: timedelta
    blocked_by: tuple[int, ...]


@dataclass(frozen=True)
class TableHealth:
    """A table's size (table, indexes and TOAST), tuples, and time since its last (auto)vacuum/(auto)analyze."""

    name: str  # schema.table, quoted where SQL needs it
    size: int
    live: int
    dead: int
    vacuumed: timedelta | None  # None: never vacuumed (since the statistics were reset)
    analyzed: timedelta | None

    @property
    def dead_percent(self) -> float:
        total = self.live + self.dead
        return 100.0 * self.dead / total if total else 0.0


@dataclass(frozen=True)
class DeclaredTable:
    """A table ``table_sizes`` names: as declared, as the server names it (``schema.table``), its size."""

    declared: str
    name: str | None = None  # None: no such table
    size: int | None = None


@dataclass(frozen=True)
class PgHealth:
    """What one read-only session told about a database's sessions, vacuum state and sizes.

    ``stats_grant``: the grant the role lacks to see other roles' sessions (then ``connections``,
    ``idle_in_transaction``, ``oldest_transaction`` and ``lock_waits`` are unread). ``tables_error``:
    why the table part (``tables``, ``declared_tables``) is unread while the rest was.
    """

    address: str
    role: str
    connections: int = 0
    max_connections: int = 0
    superuser_reserved: int = 0
    idle_in_transaction: tuple[Session, ...] = ()  # oldest first
    oldest_transaction: Session | None = None
    lock_waits: tuple[LockWait, ...] = ()  # longest wait first
    xid_age: int = 0  # the oldest datfrozenxid's age over all databases
    xid_database: str = ""  # the database it belongs to
    xid_age_here: int = 0  # this database's
    freeze_max_age: int = 0
    database_size: int = 0
    tables: tuple[TableHealth, ...] = ()  # the large ones, those over max_table_size and the largest few
    declared_tables: tuple[DeclaredTable, ...] = ()  # the tables table_sizes names
    large_table: int = 0
    stats_grant: str | None = None
    tables_error: str | None = None
    error: str | None = None
    unreachable: str | None = None

    @property
    def is_read(self) -> bool:
        return self.error is None

    @property
    def large_tables(self) -> tuple[TableHealth, ...]:
        return tuple(t for t in self.tables if t.size >= self.large_table)


def _session(row: tuple[Any, ...]) -> Session:
    pid, role, application, client, state, age = row[:6]
    return Session(int(pid), str(role), str(application), str(client), str(state), age or timedelta(0))


def read_sessions(conn: psycopg.Connection) -> dict[str, Any]:
    """Connections, idle-in-transaction sessions, the oldest transaction and lock waits (needs the stats grant)."""
    params = {"local": LOCAL, "limit": LIMIT}
    count = conn.execute(CONNECTIONS_SQL).fetchone()
    idle = tuple(_session(r) for r in conn.execute(IDLE_SQL, params).fetchall())
    oldest = conn.execute(OLDEST_SQL, params).fetchone()
    waitstart = "min(waitstart)" if conn.info.server_version >= 140000 else "NULL::timestamptz"
    query = LOCK_WAITS_SQL.format(who=WHO, waitstart=waitstart)
    waits = tuple(
        LockWait(_session(r), r[5] or timedelta(0), tuple(int(p) for p in r[6]))
        for r in conn.execute(query, params).fetchall()
    )
    return {
        "connections": int(count[0]) if count else 0, "idle_in_transaction": idle,
        "oldest_transaction": _session(oldest) if oldest else None, "lock_waits": waits,
    }


def read_tables(conn: psycopg.Connection, db: Database, query_timeout: timedelta) -> dict[str, Any]:
    """The table part, under a lock timeout (a size needs an ACCESS SHARE lock on its table)."""
    m = db.maintenance
    lock_ms = max(1, int(query_timeout.total_seconds() * 1000) // 2)
    conn.execute(f"SET lock_timeout = {lock_ms}")
    over = int(m.max_table_size) if m.max_table_size is not None else 2**62
    rows = conn.execute(TABLES_SQL, {"large": int(m.large_table), "over": over, "top": TOP_TABLES}).fetchall()
    tables = tuple(TableHealth(str(r[0]), int(r[1]), int(r[2]), int(r[3]), r[4], r[5]) for r in rows)
    declared: tuple[DeclaredTable, ...] = ()
    if m.table_sizes:
        rows = conn.execute(DECLARED_SQL, {"names": list(m.table_sizes)}).fetchall()
        declared = tuple(
            DeclaredTable(str(n), None if size is None else str(name), None if size is None else int(size))
            for n, name, size in rows
        )
    return {"tables": tables, "declared_tables": declared}


def read_health(conn: psycopg.Connection, db: Database, address: str, query_timeout: timedelta) -> PgHealth:
    """Every part from an open session (each query under the session's statement timeout)."""
    import psycopg

    privileged = conn.execute(PRIVILEGE_SQL).fetchone()
    max_connections, reserved, freeze_max_age = conn.execute(SETTINGS_SQL).fetchone() or (0, 0, 0)
    sessions = read_sessions(conn) if privileged and privileged[0] else {}
    xid = conn.execute(XID_SQL).fetchone() or ("", 0, 0)
    size = conn.execute(DATABASE_SIZE_SQL).fetchone()
    try:
        tables = read_tables(conn, db, query_timeout)
        tables_error = None
    except psycopg.errors.LockNotAvailable as exc:
        tables, tables_error = {}, f"cannot read the table sizes: {first_line(exc)} (a session holds a lock on a table)"
    except psycopg.errors.QueryCanceled as exc:
        tables, tables_error = {}, f"cannot read the table sizes: {first_line(exc)}"
    return PgHealth(
        address, db.user, max_connections=int(max_connections), superuser_reserved=int(reserved),
        xid_age=int(xid[1]), xid_database=str(xid[0]), xid_age_here=int(xid[2] or 0),
        freeze_max_age=int(freeze_max_age), database_size=int(size[0]) if size else 0,
        large_table=int(db.maintenance.large_table),
        stats_grant=None if sessions else GRANT_STATS.format(role=db.user), tables_error=tables_error,
        **sessions, **tables,
    )


def probe_health(db: Database, timeout: timedelta, query_timeout: timedelta) -> PgHealth:
    """Read the health of ``db`` as its declared (monitoring) role in one read-only session."""
    address = f"{db.host}:{db.port}/{db.dbname}"
    found = read_only(db, timeout, query_timeout, lambda conn: read_health(conn, db, address, query_timeout))
    if isinstance(found, Unread):
        return PgHealth(address, db.user, error=found.error, unreachable=found.unreachable)
    return found
