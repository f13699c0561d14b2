"""What a database holds: its tables, row counts and content checksums (``DataFacts``), read from a
live source in one snapshot, from a restored copy, or from a manifest written at backup time.

A content checksum is the sum of a 64-bit hash of each row (``hash_record_extended``, the hash
PostgreSQL's hash partitioning relies on, so stable across versions): independent of the physical
order and computed in one (parallel) scan without sorting or text conversion, so it costs about
one sequential read of the table. Only tables up to a row bound get one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from opsverify.durations import format_duration

if TYPE_CHECKING:
    import psycopg

    from opsverify.profile.model import Database

TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND NOT c.relispartition
ORDER BY 1, 2
"""
CHECKSUM_ALGORITHM = "sum-hash-64"
PINNED = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET extra_float_digits = 3",
    "SET IntervalStyle = 'iso_8601'",
)
# The row's columns hashed by their types' own 64-bit hash functions (no text conversion); a table
# with a column type that has none (json, point, …) falls back to hashing the row's text form.
CHECKSUMS = (
    ("r", "SELECT coalesce(sum(hash_record_extended(t, 0)), 0)::text FROM {} AS t"),
    ("t", "SELECT coalesce(sum(hashtextextended(t::text, 0)), 0)::text FROM {} AS t"),
)
OBJECTS = """
SELECT CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'TABLE' WHEN 'S' THEN 'SEQUENCE'
                      WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'i' THEN 'INDEX' END,
       n.nspname || '.' || c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'S', 'v', 'm', 'i') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
"""


@dataclass(frozen=True)
class TableFact:
    """One table: its row count and, under the bound, its content checksum."""

    rows: int
    checksum: str | None = None


@dataclass
class DataFacts:
    """Every user table of one database."""

    tables: dict[str, TableFact] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        tables = {name: asdict(fact) for name, fact in self.tables.items()}
        return {"checksum_algorithm": CHECKSUM_ALGORITHM, "tables": tables}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataFacts:
        """Facts from a manifest; checksums of another algorithm are dropped (they cannot be compared)."""
        same = data.get("checksum_algorithm") == CHECKSUM_ALGORITHM
        tables = data["tables"].items()
        return cls({n: TableFact(int(f["rows"]), f.get("checksum") if same else None) for n, f in tables})

    @property
    def has_checksums(self) -> bool:
        return any(fact.checksum is not None for fact in self.tables.values())


class FactsTimeout(Exception):
    """Reading the data facts took longer than the bound it was given."""


def data_facts(conn: psycopg.Connection, checksum_max_rows: int, within: timedelta | None = None) -> DataFacts:
    """Row counts of every user table and checksums of those with at most ``checksum_max_rows`` rows.

    ``within``: a bound on the whole read (each statement gets the time left as its
    ``statement_timeout``); ``FactsTimeout`` when it runs out.
    """
    import psycopg
    from psycopg import sql

    deadline = None if within is None else time.monotonic() + within.total_seconds()

    def bounded() -> None:
        if deadline is None:
            return
        left = int((deadline - time.monotonic()) * 1000)
        if left <= 0:
            raise FactsTimeout(f"did not finish within {format_duration(within or timedelta(0))}")
        conn.execute(f"SET statement_timeout = {left}")

    facts = DataFacts()
    for setting in PINNED:  # the text form of rows (the fallback hash) must not depend on the session
        conn.execute(setting)
    try:
        bounded()
        tables = conn.execute(TABLES).fetchall()
        for schema, table in tables:
            name = sql.Identifier(str(schema), str(table))
            bounded()
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()
            rows = int(row[0]) if row else 0
            checksum = None
            if rows <= checksum_max_rows:
                bounded()
                checksum = _checksum(conn, name)
            facts.tables[f"{schema}.{table}"] = TableFact(rows, checksum)
    except psycopg.errors.QueryCanceled as exc:
        if deadline is None or "statement timeout" not in str(exc):
            raise
        raise FactsTimeout(f"did not finish within {format_duration(within or timedelta(0))}") from exc
    return facts


def _checksum(conn: psycopg.Connection, name: Any) -> str | None:
    """``r:<sum>`` from the record hash, or ``t:<sum>`` from the text hash when a column type has no hash."""
    import psycopg
    from psycopg import sql

    for method, query in CHECKSUMS:
        try:
            with conn.transaction():  # a savepoint inside a snapshot transaction
                found = conn.execute(sql.SQL(query).format(name)).fetchone()
        except psycopg.errors.UndefinedFunction:
            continue
        return f"{method}:{found[0]}" if found else None
    return None


def source_facts(conn: psycopg.Connection, checksum_max_rows: int, within: timedelta | None = None) -> DataFacts:
    """``data_facts`` of a source inside one REPEATABLE READ, READ ONLY transaction (a consistent snapshot).

    With ``row_security = off``: a table whose row-level security policies would hide rows from the
    reading role (one without BYPASSRLS, even with ``pg_read_all_data``) raises an error
    (``row_security_hides``) instead of counting only the rows it may see.
    """
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    conn.execute("SET LOCAL row_security = off")
    try:
        return data_facts(conn, checksum_max_rows, within)
    finally:
        conn.execute("ROLLBACK")


def row_security_hides(exc: Exception) -> bool:
    """Whether a read failed because row-level security would have filtered it (``row_security = off``)."""
    import psycopg

    return isinstance(exc, psycopg.errors.InsufficientPrivilege) and "row-level security" in str(exc)


def schema_objects(conn: psycopg.Connection) -> set[str]:
    """``"TABLE public.models"``-style names of the relations a database holds (constraint indexes aside)."""
    return {f"{kind} {name}" for kind, name in conn.execute(OBJECTS).fetchall()}


# The live schema a full dump is compared with: every ordinary or partitioned table outside the
# system schemas and not an extension's own (pg_dump leaves those to CREATE EXTENSION; partitions
# are dumped with their parent), its estimated rows (the planner's
# reltuples, or the statistics' n_live_tup for a table never analyzed), whether the role may read it,
# its OID (assigned in creation order: tells a table created after a dump) and the session's database
# (through a pooler, the profile's dbname may be an alias of it).
LIVE_TABLES = """
SELECT n.nspname || '.' || c.relname, c.relkind,
       CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint ELSE coalesce(s.n_live_tup, 0) END,
       has_table_privilege(c.oid, 'SELECT'), c.oid::bigint, current_database()
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' AND NOT c.relispartition
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY 1
"""
HAS_ROW = "SELECT EXISTS (SELECT FROM {})"


@dataclass(frozen=True)
class LiveTables:
    """The tables a live database holds now and, per table, its estimated row count (0: it holds none).

    A table estimated to hold rows is confirmed with one ``SELECT EXISTS`` (it stops at the first
    visible row), so a table emptied since the last ANALYZE reads 0; without SELECT on it the
    estimate stands. ``oids`` are the tables' ``pg_class.oid``; ``current_database`` is what the
    session's ``current_database()`` answered (None when the database holds no table to read it with).
    """

    address: str
    rows: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage
    oids: dict[str, int] = field(default_factory=dict)
    current_database: str | None = None

    @property
    def tables(self) -> frozenset[str]:
        return frozenset(self.rows)


def live_tables(conn: psycopg.Connection) -> LiveTables:
    """``schema.table`` -> estimated rows (0 when it holds none) of every user table (partitions aside), their
    OIDs and the session's database (``address`` left empty: the caller knows it)."""
    from psycopg import sql

    found: dict[str, int] = {}
    oids: dict[str, int] = {}
    current: str | None = None
    for name, kind, estimate, readable, oid, database in conn.execute(LIVE_TABLES).fetchall():
        oids[str(name)] = int(oid)
        current = str(database)
        rows = int(estimate) if kind == "r" else 0  # a partitioned table's rows are its partitions'
        if rows > 0 and readable:
            schema, _, table = str(name).partition(".")
            query = sql.SQL(HAS_ROW).format(sql.Identifier(schema, table))
            row = conn.execute(query).fetchone()
            rows = rows if row and row[0] else 0
        found[str(name)] = rows
    if current is None:  # no table: ask on its own, so an alias is still recognised
        row = conn.execute("SELECT current_database()").fetchone()
        current = str(row[0]) if row else None
    return LiveTables("", found, oids=oids, current_database=current)


def probe_live_tables(db: Database, timeout: timedelta, query_timeout: timedelta) -> LiveTables:
    """``live_tables`` of a profile database, read-only (connect ``timeout``, each query ``query_timeout``)."""
    from opsverify.probes.postgres import Unread, read_only

    address = f"{db.host}:{db.port}/{db.dbname}"
    tables = read_only(db, timeout, query_timeout, live_tables)
    if isinstance(tables, Unread):
        return LiveTables(address, error=tables.error, unreachable=tables.unreachable)
    return replace(tables, address=address)
