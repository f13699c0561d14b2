"""PostgreSQL index and query health (issue 11, PF-27/28/37, QP-07/11/25): one read-only session per database.

Read in one session with a statement timeout: unused indexes (``idx_scan = 0`` since the statistics
reset) of the large tables, a btree bloat estimate (the well-known one from ``pg_class`` and
``pg_stats``, as ioguix's and check_postgres's queries make it), sequential-scan shares of the large
tables, ``pg_stat_statements`` (installed, loaded, its slowest statements of this database), the
declared key queries (``EXPLAIN (VERBOSE, FORMAT JSON)``; a read-only query also ``EXPLAIN (ANALYZE)``
under a statement timeout of twice its budget, a write never; a write the monitoring role may not plan is
planned, never run, as the database's ``maintenance_user`` in a read-only transaction) and the planner
statistics of the declared hot tables. Everything is measured here; the checks judge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from opsverify.probes.postgres import Unread, first_line, read_only
from opsverify.profile.maintenance import KeyQuery, PostgresMaintenance
from opsverify.profile.model import Database

if TYPE_CHECKING:
    import psycopg

HIDDEN_TEXT = "<insufficient privilege>"  # pg_stat_statements' text of another role's statement without the grant
GRANT_STATS = "GRANT pg_read_all_stats TO {role} (or pg_monitor)"
TOP = 5
TEXT_CHARS = 80
WRITE_NODES = ("ModifyTable", "LockRows")  # INSERT/UPDATE/DELETE/MERGE, SELECT … FOR UPDATE/SHARE: never analyzed
MARK = "/* opsverify */"  # opsverify's own statements start with it: the slow-statement check leaves them out

STATS_RESET_SQL = MARK + " SELECT stats_reset, now() FROM pg_stat_database WHERE datname = current_database()"
# Indexes with no scan since the reset, big enough, on big enough tables, that enforce no constraint.
# A size takes an ACCESS SHARE lock: the relations another session holds (or waits for) in ACCESS EXCLUSIVE mode
# are left out first (a MATERIALIZED CTE, so no size is read before), under the session's lock_timeout besides.
UNUSED_SQL = MARK + """
WITH s AS MATERIALIZED (
    SELECT s.schemaname, s.relname, s.indexrelname, s.indexrelid, s.relid
    FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
    WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary AND NOT i.indisexclusion
      AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid)
      AND s.relid <> ALL(%(locked)s::oid[]) AND s.indexrelid <> ALL(%(locked)s::oid[])
)
SELECT schemaname, relname, indexrelname, pg_relation_size(indexrelid), pg_table_size(relid) FROM s
WHERE pg_relation_size(indexrelid) >= %(min_index)s AND pg_table_size(relid) >= %(large)s
ORDER BY 4 DESC, 1, 2, 3
"""
# The btree bloat estimate: the pages the index's live tuples need at its fillfactor, from the average width of
# each key column (pg_stats of the table; of the index itself for an expression column), its null fraction,
# the 8-byte index tuple header (+4 for the null bitmap when a column has nulls), MAXALIGN 8, the 4-byte line
# pointer, the 24-byte page header and the 16-byte btree special space, plus the metapage; the rest of its
# real size is bloat. Deduplicated indexes (PostgreSQL 13+) come out smaller than estimated: 0 %.
BLOAT_SQL = MARK + """
WITH keys AS MATERIALIZED (
    SELECT i.indexrelid, i.indrelid, n.nspname, t.relname AS tblname, c.relname AS idxname, c.reltuples,
           current_setting('block_size')::numeric AS bs,
           coalesce(substring(array_to_string(c.reloptions, ' ') FROM 'fillfactor=([0-9]+)')::numeric, 90) AS ff,
           k.attnum, k.pos
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_class t ON t.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = t.relnamespace
    CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, pos)
    WHERE c.relam = (SELECT oid FROM pg_am WHERE amname = 'btree') AND k.pos <= i.indnkeyatts
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
      AND i.indrelid <> ALL(%(locked)s::oid[]) AND i.indexrelid <> ALL(%(locked)s::oid[])
), idx AS (
    SELECT *, pg_relation_size(indexrelid) AS bytes FROM keys WHERE pg_relation_size(indexrelid) >= %(min_index)s
), cols AS (
    SELECT idx.*, coalesce(ta.attname, ia.attname) AS attname,
           CASE WHEN idx.attnum = 0 THEN idx.idxname ELSE idx.tblname END AS statrel
    FROM idx
    LEFT JOIN pg_attribute ta ON idx.attnum <> 0 AND ta.attrelid = idx.indrelid AND ta.attnum = idx.attnum
    LEFT JOIN pg_attribute ia ON idx.attnum = 0 AND ia.attrelid = idx.indexrelid AND ia.attnum = idx.pos
), widths AS (
    SELECT c.nspname, c.tblname, c.idxname, c.reltuples, c.bytes, c.bs, c.ff,
           count(s.attname) AS known, count(*) AS columns,
           sum((1 - coalesce(s.null_frac, 0)) * coalesce(s.avg_width, 1024)) AS data,
           max(coalesce(s.null_frac, 0)) > 0 AS nullable
    FROM cols c
    LEFT JOIN pg_stats s ON s.schemaname = c.nspname AND s.tablename = c.statrel AND s.attname = c.attname
    GROUP BY 1, 2, 3, 4, 5, 6, 7
), tuples AS (
    SELECT *, 4 + 8 * ceil(((CASE WHEN nullable THEN 12 ELSE 8 END) + data) / 8) AS per_tuple
    FROM widths WHERE known = columns AND reltuples >= 0
)
SELECT nspname, tblname, idxname, bytes,
       greatest(bytes - bs * (1 + ceil(reltuples / floor((bs - 24 - 16) * ff / 100 / per_tuple))), 0)::bigint
FROM tuples ORDER BY 1, 2, 3
"""
SEQ_SCAN_SQL = MARK + """
WITH t AS MATERIALIZED (SELECT * FROM pg_stat_user_tables WHERE relid <> ALL(%(locked)s::oid[]))
SELECT schemaname, relname, pg_table_size(relid), coalesce(seq_scan, 0), coalesce(idx_scan, 0),
       coalesce(seq_tup_read, 0)
FROM t WHERE pg_table_size(relid) >= %(large)s ORDER BY 1, 2
"""
# The relations of this database another session holds or waits for in ACCESS EXCLUSIVE mode (pg_locks is
# readable by every role): reading their size would wait for it.
LOCKED_SQL = MARK + """
SELECT DISTINCT l.relation, quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY 2
"""
LOCKED_BY_OTHERS = "a lock held by another session"
EXTENSION_SQL = MARK + " SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')"
PRELOAD_SQL = MARK + " SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'"
HAS_STATS_SQL = MARK + " SELECT pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')"
# The slowest statements of this database (one row per role, statement and nesting level): a role without
# pg_read_all_stats sees other roles' timings, but neither their text nor their queryid (so no grouping by it).
# opsverify's own statements (their text starts with MARK: these probes', the maintenance actions') are left out.
SLOW_SQL = MARK + """
SELECT queryid, calls, mean_exec_time, query
FROM {schema}.pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND calls >= %(min_calls)s AND mean_exec_time > %(mean_ms)s AND coalesce(query, '') NOT LIKE %(mark)s
ORDER BY mean_exec_time DESC LIMIT %(top)s
"""
# A write's timing as the application's roles ran it: not the session role's own (its EXPLAIN is recorded too).
STATEMENT_MEAN_SQL = MARK + """
SELECT sum(calls)::bigint, sum(total_exec_time) / nullif(sum(calls), 0) FROM {schema}.pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND queryid = %(queryid)s
  AND userid NOT IN (SELECT oid FROM pg_roles WHERE rolname IN (current_user, %(exclude)s))
"""
EXTENSION_SCHEMA_SQL = MARK + """
SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
"""
RELATION_SIZE_SQL = MARK + " SELECT pg_table_size(to_regclass(%(name)s))"
HOT_TABLE_SQL = MARK + """
SELECT c.reltuples, greatest(s.last_analyze, s.last_autoanalyze), has_table_privilege(c.oid, 'SELECT'),
       (SELECT count(*) FROM pg_stats p WHERE p.schemaname = n.nspname AND p.tablename = c.relname), n.nspname,
       c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
WHERE c.oid = to_regclass(%(name)s)
"""


@dataclass(frozen=True)
class UnusedIndex:
    """An index with ``idx_scan = 0`` since the statistics reset (enforcing no constraint) on a large table."""

    schema: str
    table: str
    index: str
    size: int
    table_size: int


@dataclass(frozen=True)
class IndexBloat:
    """The estimated bloat of one btree index: bytes beyond what its live tuples need at its fillfactor."""

    schema: str
    table: str
    index: str
    size: int
    bloat: int

    @property
    def percent(self) -> float:
        return 100.0 * self.bloat / self.size if self.size else 0.0


@dataclass(frozen=True)
class ScanShare:
    """A large table's scans since the statistics reset (``pg_stat_user_tables``)."""

    schema: str
    table: str
    size: int
    seq_scan: int
    idx_scan: int
    seq_tup_read: int

    @property
    def seq_percent(self) -> float:
        total = self.seq_scan + self.idx_scan
        return 100.0 * self.seq_scan / total if total else 0.0


@dataclass(frozen=True)
class SlowStatement:
    """A statement of ``pg_stat_statements`` whose mean execution time is above the threshold."""

    queryid: int | None
    calls: int
    mean: timedelta
    text: str  # the first TEXT_CHARS characters of the normalised text, or HIDDEN_TEXT

    @property
    def hidden(self) -> bool:
        return self.text == HIDDEN_TEXT


@dataclass(frozen=True)
class SeqScan:
    """A ``Seq Scan`` node of a plan on a relation of ``size`` bytes."""

    relation: str
    size: int


@dataclass(frozen=True)
class KeyQueryPlan:
    """What planning (and, for a read, running) one key query told."""

    name: str
    seq_scans: tuple[SeqScan, ...] = ()
    write: bool = False
    elapsed: timedelta | None = None  # EXPLAIN ANALYZE's Execution Time (a read that finished)
    timed_out: timedelta | None = None  # the statement timeout (2x budget) a read ran into
    statement_mean: timedelta | None = None  # a write's mean in pg_stat_statements, when it holds the statement
    statement_calls: int = 0
    queryid: int | None = None
    error: str | None = None
    denied: str | None = None  # the server refused to plan it for want of a privilege (a write, as a read-only role)
    locked: str | None = None  # planning it waited past the lock timeout: a table it reads is locked by another session
    planned_as: str | None = None  # the maintenance_user that planned this write (None: the monitoring role)


@dataclass(frozen=True)
class HotTableStats:
    """The planner statistics of one declared hot table; ``exists`` False: no such table."""

    name: str
    exists: bool = True
    reltuples: float = -1
    stats_rows: int | None = None  # pg_stats rows (None: the role may not SELECT the table, so they are hidden)
    last_analyze: datetime | None = None


@dataclass(frozen=True)
class PgQueryFacts:
    """Index and query health of one database, read in one read-only session."""

    address: str
    role: str
    stats_reset: datetime | None = None  # None: the statistics were never reset (since the cluster was created)
    now: datetime | None = None  # the server's clock
    unused_indexes: tuple[UnusedIndex, ...] = ()
    index_bloat: tuple[IndexBloat, ...] = ()
    scan_shares: tuple[ScanShare, ...] = ()
    statements_installed: bool = False
    statements_loaded: bool | None = None  # None: not installed and shared_preload_libraries unreadable
    statements_error: str | None = None
    slow_statements: tuple[SlowStatement, ...] = ()
    reads_all_stats: bool = True
    key_queries: Mapping[str, KeyQueryPlan] = field(default_factory=dict)
    hot_tables: Mapping[str, HotTableStats] = field(default_factory=dict)
    locked_tables: tuple[str, ...] = ()  # left out of the size-based parts: locked in ACCESS EXCLUSIVE mode by others
    error: str | None = None
    lock_error: bool = False  # the read failed on a lock held by another session (not on the role)
    unreachable: str | None = None

    @property
    def is_read(self) -> bool:
        return self.error is None

    @property
    def stats_grant(self) -> str:
        return GRANT_STATS.format(role=self.role)


def _ms(value: Any) -> timedelta:
    return timedelta(milliseconds=float(value))


def plan_nodes(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan tree (``Plans`` children, depth first)."""
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)


def _explained(conn: psycopg.Connection, options: str, sql: str) -> Mapping[str, Any]:
    # binary=True: the extended query protocol, whose Parse refuses more than one statement (the simple one runs
    # every statement of a string), whatever the profile's validation let through.
    row = conn.execute(f"{MARK} EXPLAIN ({options}, FORMAT JSON) {sql}", binary=True).fetchone()
    if row is None:
        raise ValueError("EXPLAIN returned no plan")
    doc = row[0]
    if isinstance(doc, bytes | str):
        import json

        doc = json.loads(doc)
    return dict(doc[0])


def _key_query(
    conn: psycopg.Connection, query: KeyQuery, large: int, schema: str | None, maintainer: Maintainer | None = None
) -> KeyQueryPlan:
    """Plan (and, a read, run) ``query`` inside its own ``BEGIN READ ONLY`` … ``ROLLBACK`` transaction; a plan the
    monitoring role may not make (a write it has no privilege for) is made as ``maintainer``, never run."""
    conn.execute(f"{MARK} BEGIN READ ONLY")
    try:
        plan = _key_query_in_transaction(conn, query, large, schema)
    finally:
        conn.execute(f"{MARK} ROLLBACK")
    if plan.denied is None or maintainer is None:
        return plan
    return _write_plan(conn, query, large, schema, maintainer) or plan


@dataclass(frozen=True)
class Maintainer:
    """The database's ``maintenance_user`` session settings: write key queries are planned as it."""

    db: Database
    timeout: timedelta
    query_timeout: timedelta


def _write_plan(
    conn: psycopg.Connection, query: KeyQuery, large: int, schema: str | None, maintainer: Maintainer
) -> KeyQueryPlan | None:
    """``EXPLAIN (VERBOSE)`` of ``query`` as the maintenance role in a ``BEGIN READ ONLY`` transaction (never
    ANALYZE: the executor never starts), same statement and lock timeouts; sizes and timings read on ``conn``.
    None when it is no write (a read stays the monitoring role's: its refusal stands)."""
    import psycopg

    from opsverify.probes.postgres import open_session

    db, role = maintainer.db, maintainer.db.maintenance_user
    ms = max(1, int(maintainer.query_timeout.total_seconds() * 1000))
    options = f"-c default_transaction_read_only=on -c statement_timeout={ms} -c lock_timeout={max(1, ms // 2)}"
    try:
        with open_session(db, role, db.maintenance_secret(), maintainer.timeout, maintainer.query_timeout,
                          options=options) as writer:
            writer.execute(f"{MARK} BEGIN READ ONLY")
            try:
                top = _explained(writer, "VERBOSE", query.sql)
            finally:
                writer.execute(f"{MARK} ROLLBACK")
    except psycopg.errors.InsufficientPrivilege as exc:
        return KeyQueryPlan(query.name, denied=f"{first_line(exc)} (also as maintenance_user {role})")
    except psycopg.errors.LockNotAvailable as exc:
        return KeyQueryPlan(query.name, locked=first_line(exc))
    except (psycopg.Error, OSError, ValueError) as exc:
        return KeyQueryPlan(query.name, error=f"as maintenance_user {role}: {first_line(exc)}")
    nodes = list(plan_nodes(top["Plan"]))
    if not any(node.get("Node Type") in WRITE_NODES for node in nodes):
        return None
    plan = _judged(conn, query, nodes, top, large, schema, exclude=role)
    return dataclasses.replace(plan, planned_as=role)


def _key_query_in_transaction(
    conn: psycopg.Connection, query: KeyQuery, large: int, schema: str | None
) -> KeyQueryPlan:
    import psycopg

    try:
        top = _explained(conn, "VERBOSE", query.sql)
    except psycopg.errors.InsufficientPrivilege as exc:  # EXPLAIN needs the privileges the statement needs
        return KeyQueryPlan(query.name, denied=first_line(exc))
    except psycopg.errors.LockNotAvailable as exc:  # EXPLAIN locks the tables it plans
        return KeyQueryPlan(query.name, locked=first_line(exc))
    except (psycopg.Error, ValueError) as exc:
        return KeyQueryPlan(query.name, error=first_line(exc))
    nodes = list(plan_nodes(top["Plan"]))  # data-modifying CTEs are among the Plans (InitPlan/CTE subplans)
    plan = _judged(conn, query, nodes, top, large, schema)
    if plan.write:
        return plan
    queryid, scans = plan.queryid, plan.seq_scans
    limit = query.budget * 2
    conn.execute(f"{MARK} SET LOCAL statement_timeout = {max(1, int(limit.total_seconds() * 1000))}")
    try:
        analyzed = _explained(conn, "ANALYZE", query.sql)
    except psycopg.errors.QueryCanceled:
        return KeyQueryPlan(query.name, tuple(scans), False, timed_out=limit, queryid=queryid)
    except (psycopg.Error, ValueError) as exc:
        return KeyQueryPlan(query.name, tuple(scans), False, queryid=queryid, error=first_line(exc))
    return KeyQueryPlan(query.name, tuple(scans), False, _ms(analyzed.get("Execution Time", 0)), queryid=queryid)


def _judged(
    conn: psycopg.Connection, query: KeyQuery, nodes: list[Mapping[str, Any]], top: Mapping[str, Any], large: int,
    schema: str | None, exclude: str | None = None,
) -> KeyQueryPlan:
    """The plan's large sequential scans and whether it writes; a write's mean from pg_stat_statements (the
    application roles' runs: not the session role's nor ``exclude``'s)."""
    import psycopg

    scans = []
    for node in nodes:
        if node.get("Node Type") == "Seq Scan" and node.get("Relation Name"):
            name = f'{node.get("Schema", "public")}.{node["Relation Name"]}'
            size_row = conn.execute(RELATION_SIZE_SQL, {"name": name}).fetchone()
            size = int(size_row[0]) if size_row and size_row[0] is not None else 0
            if size >= large:
                scans.append(SeqScan(name, size))
    queryid = top.get("Query Identifier")
    queryid = int(queryid) if queryid is not None else None
    write = any(node.get("Node Type") in WRITE_NODES for node in nodes)
    plan = KeyQueryPlan(query.name, tuple(scans), write, queryid=queryid)
    if write:
        if schema is None or queryid is None:
            return plan
        try:
            row = conn.execute(STATEMENT_MEAN_SQL.format(schema=schema),
                               {"queryid": queryid, "exclude": exclude}).fetchone()
        except psycopg.Error:
            return plan
        if row and row[0] and row[1] is not None:
            return KeyQueryPlan(query.name, tuple(scans), True, statement_mean=_ms(row[1]),
                                statement_calls=int(row[0]), queryid=queryid)
    return plan


def _hot_table(conn: psycopg.Connection, name: str) -> HotTableStats:
    row = conn.execute(HOT_TABLE_SQL, {"name": name}).fetchone()
    if row is None:
        return HotTableStats(name, exists=False)
    reltuples, analyzed, readable, stats_rows = row[0], row[1], row[2], row[3]
    return HotTableStats(name, True, float(reltuples), int(stats_rows) if readable else None, analyzed)


def _statements(conn: psycopg.Connection, settings: PostgresMaintenance) -> dict[str, Any]:
    """Whether pg_stat_statements is installed and loaded, its schema, the slow statements of this database."""
    import psycopg

    found: dict[str, Any] = {"installed": False, "loaded": None, "schema": None, "slow": (), "error": None}
    preload = conn.execute(PRELOAD_SQL).fetchone()
    if preload is not None:
        libraries = {lib.strip().strip('"') for lib in str(preload[0]).split(",")}
        found["loaded"] = "pg_stat_statements" in libraries
    row = conn.execute(EXTENSION_SCHEMA_SQL).fetchone()
    if row is None:
        return found
    found["installed"], found["schema"] = True, str(row[0])
    params = {"min_calls": settings.slow_query_min_calls, "top": TOP, "mark": MARK + "%",
              "mean_ms": settings.slow_query_mean.total_seconds() * 1000}
    try:
        rows = conn.execute(SLOW_SQL.format(schema=found["schema"]), params).fetchall()
    except psycopg.errors.ObjectNotInPrerequisiteState as exc:  # installed, but not in shared_preload_libraries
        found["loaded"], found["error"] = False, first_line(exc)
        return found
    except psycopg.Error as exc:
        found["error"] = first_line(exc)
        return found
    if found["loaded"] is None:
        found["loaded"] = True  # the view answered: the library is loaded
    found["slow"] = tuple(
        SlowStatement(int(r[0]) if r[0] is not None else None, int(r[1]), _ms(r[2]),
                      " ".join(str(r[3] or "").split())[:TEXT_CHARS])
        for r in rows
    )
    return found


def read_query_facts(
    conn: psycopg.Connection, db: Database, address: str, query_timeout: timedelta, timeout: timedelta | None = None
) -> PgQueryFacts:
    """Every fact from an open read-only session (each query under the session's statement timeout; those that lock
    relations also under a lock timeout of half of it). A lock timeout all the same is a lock, not the role.
    ``timeout``: the connect timeout of the maintenance_user's session (write key queries), default ``query_timeout``.
    """
    import psycopg

    try:
        return _read_query_facts(conn, db, address, query_timeout, timeout or query_timeout)
    except psycopg.errors.LockNotAvailable as exc:
        return PgQueryFacts(address, db.user, error=f"{first_line(exc)} ({LOCKED_BY_OTHERS} on a table)",
                            lock_error=True)


def _read_query_facts(
    conn: psycopg.Connection, db: Database, address: str, query_timeout: timedelta, timeout: timedelta
) -> PgQueryFacts:
    settings = db.maintenance
    conn.execute(f"{MARK} SET lock_timeout = {max(1, int(query_timeout.total_seconds() * 1000) // 2)}")
    locked_rows = conn.execute(LOCKED_SQL).fetchall()
    sizes: dict[str, Any] = {"min_index": int(settings.unused_index_min_size), "large": int(settings.large_table),
                             "locked": [int(r[0]) for r in locked_rows]}
    reset = conn.execute(STATS_RESET_SQL).fetchone()
    unused = tuple(UnusedIndex(str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]))
                   for r in conn.execute(UNUSED_SQL, sizes).fetchall())
    bloat = tuple(IndexBloat(str(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]))
                  for r in conn.execute(BLOAT_SQL, sizes).fetchall())
    shares = tuple(ScanShare(str(r[0]), str(r[1]), *(int(v) for v in r[2:]))
                   for r in conn.execute(SEQ_SCAN_SQL, sizes).fetchall())
    stats_row = conn.execute(HAS_STATS_SQL).fetchone()
    statements = _statements(conn, settings)
    hot = {name: _hot_table(conn, name) for name in settings.hot_tables}
    maintainer = Maintainer(db, timeout, query_timeout) if db.maintenance_user is not None else None
    plans = {q.name: _key_query(conn, q, sizes["large"], statements["schema"], maintainer)
             for q in settings.key_queries}
    return PgQueryFacts(
        address, db.user, reset[0] if reset else None, reset[1] if reset else None, unused, bloat, shares,
        statements["installed"], statements["loaded"], statements["error"], statements["slow"],
        bool(stats_row and stats_row[0]), plans, hot, tuple(str(r[1]) for r in locked_rows),
    )


def probe_queries(db: Database, timeout: timedelta, query_timeout: timedelta) -> PgQueryFacts:
    """Read the index and query health of ``db`` as its declared role in one read-only session."""
    address = f"{db.host}:{db.port}/{db.dbname}"
    found = read_only(db, timeout, query_timeout,
                      lambda conn: read_query_facts(conn, db, address, query_timeout, timeout))
    if isinstance(found, Unread):
        return PgQueryFacts(address, db.user, error=found.error, unreachable=found.unreachable)
    return found
