"""One restore drill, end to end and timed: scratch database, restore, smoke queries, facts, drop.

The clock starts before the restore (before the download, for a backup fetched from S3) and stops
when the last smoke query has answered with a row: that span is the measured RTO. A drill without
``smoke_queries`` smokes each table the backup holds rows for (``SELECT 1 FROM t LIMIT 1``, each
bounded by the statement timeout), at most ``MAX_SMOKE_TABLES`` of them: the largest by the rows
the manifest records, else by their size in the restored copy (a table missing from it first).
A database that only answers ``SELECT 1`` is not recovered. The restored copy's row counts and
checksums are read within the drill's ``compare_timeout``. Everything the checks compare is read
while the scratch database exists; the database is dropped (and proven gone) before the outcome is
handed back.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsverify.actions.base import performed
from opsverify.actions.database import ScratchDatabase, TemplateError, connect, foreign_extensions
from opsverify.facts.database import DataFacts, FactsTimeout, data_facts, schema_objects
from opsverify.pgtools import MissingTool, first_error, pg_env, pg_tool
from opsverify.probes.postgres import first_line
from opsverify.profile import Drill, RestoreTarget
from opsverify.restore.pgrestore import RestoreRun, restore_backup

if TYPE_CHECKING:
    import psycopg


MAX_SMOKE_TABLES = 20


@dataclass(frozen=True)
class SmokeResult:
    """One smoke query: how many rows it returned, or its error; ``why`` it must return one (default smoke)."""

    query: str
    rows: int = 0
    error: str | None = None
    why: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and self.rows > 0


@dataclass(frozen=True)
class SmokeTable:
    """A table the backup holds rows for: smoked by default. ``rows``: what the manifest records, if known."""

    table: str
    why: str
    rows: int | None = None


@dataclass
class PgDrillOutcome:
    """What a database drill measured."""

    drill: Drill
    backup: str
    format: str
    scratch: str
    restore: RestoreRun
    rto: timedelta | None = None
    smoke: list[SmokeResult] = field(default_factory=list)
    restored: DataFacts | None = None
    objects: set[str] = field(default_factory=set)
    amcheck: str | None = None  # None: clean; "off: …", "denied: …", "unavailable: …" (no pg_amcheck), or the finding
    dump_toc: set[str] | None = None  # the relations the dump's TOC lists (read while the backup is here)
    toc_error: str | None = None
    manifest: dict[str, Any] | None = None  # the backup's manifest, read while the backup is here
    manifest_name: str = ""
    manifest_problem: str | None = None  # the manifest exists but is malformed
    facts_problem: str | None = None  # the restored copy's row counts and checksums could not be read in time

    @property
    def default_smoke(self) -> bool:
        return not self.drill.smoke_queries


def run_pg_drill(
    drill: Drill,
    backup: Path,
    fmt: str,
    target: RestoreTarget,
    scratch: str,
    *,
    connect_timeout: timedelta,
    query_timeout: timedelta = timedelta(seconds=10),
    jobs: int,
    smoke_tables: list[SmokeTable] | None = None,
    started: float | None = None,
    label: str | None = None,
) -> PgDrillOutcome:
    """Restore ``backup`` into the scratch database ``scratch`` and measure it; the database is gone after.

    ``smoke_tables``: what a drill without ``smoke_queries`` smokes; ``started``: when the clock
    started (``time.monotonic()``, e.g. before a download), default now; ``label``: how messages
    name the backup (its S3 location), default its path.
    """
    import psycopg

    name = label or str(backup)
    try:
        return _drill(drill, backup, fmt, target, scratch, connect_timeout, query_timeout, jobs,
                      smoke_tables or [], time.monotonic() if started is None else started, name)
    except psycopg.Error as exc:  # the target refused CREATE DATABASE, a connection, a query
        refused = RestoreRun(name, scratch, "-", timedelta(0), f"the restore target refused: {first_line(exc)}")
        return PgDrillOutcome(drill, name, fmt, scratch, refused)
    except TemplateError as err:  # its template cannot be copied: the sentence names the fix
        return PgDrillOutcome(drill, name, fmt, scratch, RestoreRun(name, scratch, "-", timedelta(0), str(err)))


def _drill(
    drill: Drill, backup: Path, fmt: str, target: RestoreTarget, scratch: str, connect_timeout: timedelta,
    query_timeout: timedelta, jobs: int, smoke_tables: list[SmokeTable], started: float, name: str,
) -> PgDrillOutcome:
    with performed(ScratchDatabase(target, scratch, connect_timeout)):
        with connect(target, scratch, connect_timeout) as conn:  # what the template gave it, owned by others
            present = foreign_extensions(conn)
        run = restore_backup(
            backup, fmt, target, scratch, jobs=jobs, connect=connect_timeout, timeout=drill.restore_timeout,
            present=present, template=target.template,
        )
        run = replace(run, backup=name)
        outcome = PgDrillOutcome(drill, name, fmt, scratch, run)
        if not run.ok:
            return outcome
        with connect(target, scratch, connect_timeout) as conn:
            conn.execute(f"SET statement_timeout = {max(1, int(query_timeout.total_seconds() * 1000))}")
            if drill.smoke_queries:
                outcome.smoke = [_smoke(conn, query.encode(), query) for query in drill.smoke_queries]
            else:
                outcome.smoke = [_smoke(conn, *_select_one(conn, t.table), t.why) for t in _largest(conn, smoke_tables)]
            if all(s.ok for s in outcome.smoke):  # the clock stops when the last smoke query answered
                outcome.rto = timedelta(seconds=time.monotonic() - started)
            try:
                outcome.restored = data_facts(conn, drill.checksum_max_rows, drill.compare_timeout)
            except FactsTimeout as err:
                outcome.facts_problem = (
                    f"reading the row counts and checksums of the restored copy {err}: raise the drill's "
                    "compare_timeout, or lower checksum_max_rows"
                )
            conn.execute(f"SET statement_timeout = {max(1, int(drill.compare_timeout.total_seconds() * 1000))}")
            outcome.objects = schema_objects(conn)
        if drill.amcheck:
            outcome.amcheck = amcheck(target, scratch, connect_timeout, drill.restore_timeout)
        else:
            outcome.amcheck = "off: the drill sets amcheck: false"
    return outcome


def _largest(conn: psycopg.Connection, tables: list[SmokeTable]) -> list[SmokeTable]:
    """At most ``MAX_SMOKE_TABLES``: the largest by the manifest's rows, else by size in the restored copy."""
    if len(tables) <= MAX_SMOKE_TABLES:
        return tables
    if all(t.rows is not None for t in tables):
        return sorted(tables, key=lambda t: (-(t.rows or 0), t.table))[:MAX_SMOKE_TABLES]
    sizes: dict[str, int] = dict(conn.execute(
        "SELECT t, coalesce(pg_relation_size(to_regclass(t)), -1) FROM unnest(%s::text[]) AS t",
        ([_quoted(t.table) for t in tables],),
    ).fetchall())
    rank = {t.table: int(sizes.get(_quoted(t.table), -1)) for t in tables}
    missing_first = sorted(tables, key=lambda t: (rank[t.table] >= 0, -rank[t.table], t.table))
    return missing_first[:MAX_SMOKE_TABLES]


def _quoted(table: str) -> str:
    schema, _, name = table.partition(".")
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, name))


def _select_one(conn: psycopg.Connection, table: str) -> tuple[bytes, str]:
    """``SELECT 1 FROM "schema"."table" LIMIT 1`` (as sent, and as named in messages)."""
    query = f"SELECT 1 FROM {_quoted(table)} LIMIT 1"
    return query.encode(), f"SELECT 1 FROM {table} LIMIT 1"


def _smoke(conn: psycopg.Connection, query: bytes, shown: str, why: str = "") -> SmokeResult:
    import psycopg

    try:
        rows = conn.execute(query).fetchall()
    except psycopg.Error as exc:
        return SmokeResult(shown, error=str(exc).splitlines()[0], why=why)
    return SmokeResult(shown, len(rows), why=why)


def amcheck(target: RestoreTarget, database: str, connect_timeout: timedelta, timeout: timedelta) -> str | None:
    """``pg_amcheck --install-missing --heapallindexed`` on the restored copy; None when it finds nothing."""
    try:
        args = [pg_tool("pg_amcheck"), "--install-missing", "--heapallindexed", database]
    except MissingTool as err:
        return f"unavailable: {err}"
    env = pg_env(target, database, connect_timeout)
    try:
        done = subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=timeout.total_seconds(), check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return f"pg_amcheck did not finish within {timeout}"
    if done.returncode == 0 and not done.stdout.strip():
        return None
    text = done.stdout + done.stderr
    if "permission denied" in text or "must be superuser" in text or "must be owner" in text:
        return f"denied: {first_error(text, 'pg_amcheck')}"
    return first_error(text, "pg_amcheck")


