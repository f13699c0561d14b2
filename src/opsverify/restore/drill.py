"""One restore drill, end to end and timed: scratch database, restore, smoke queries, facts, drop.

The clock starts before the restore and stops at the first successful smoke query: that span is
the measured RTO. Everything the checks compare is read while the scratch database exists; the
database is dropped (and proven gone) before the outcome is handed back.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from opsverify.actions.base import performed
from opsverify.actions.database import ScratchDatabase, connect
from opsverify.facts.database import DataFacts, data_facts, schema_objects
from opsverify.pgtools import MissingTool, first_error, pg_env, pg_tool
from opsverify.probes.postgres import first_line
from opsverify.profile import Drill, RestoreTarget
from opsverify.restore.pgrestore import RestoreRun, restore_backup

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class SmokeResult:
    """One smoke query: how many rows it returned, or its error."""

    query: str
    rows: int = 0
    error: str | None = None


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
    amcheck: str | None = None  # None: clean; "unavailable: …" when pg_amcheck could not run


def run_pg_drill(
    drill: Drill,
    backup: Path,
    fmt: str,
    target: RestoreTarget,
    scratch: str,
    *,
    connect_timeout: timedelta,
    jobs: int,
) -> PgDrillOutcome:
    """Restore ``backup`` into the scratch database ``scratch`` and measure it; the database is gone after."""
    import psycopg

    try:
        return _drill(drill, backup, fmt, target, scratch, connect_timeout, jobs)
    except psycopg.Error as exc:  # the target refused CREATE DATABASE, a connection, a query
        refused = RestoreRun(str(backup), scratch, "-", timedelta(0), f"the restore target refused: {first_line(exc)}")
        return PgDrillOutcome(drill, str(backup), fmt, scratch, refused)


def _drill(
    drill: Drill, backup: Path, fmt: str, target: RestoreTarget, scratch: str, connect_timeout: timedelta, jobs: int
) -> PgDrillOutcome:
    with performed(ScratchDatabase(target, scratch, connect_timeout)):
        started = time.monotonic()
        run = restore_backup(
            backup, fmt, target, scratch, jobs=jobs, connect=connect_timeout, timeout=drill.restore_timeout
        )
        outcome = PgDrillOutcome(drill, str(backup), fmt, scratch, run)
        if not run.ok:
            return outcome
        with connect(target, scratch, connect_timeout) as conn:
            for query in drill.smoke_queries or ["SELECT 1"]:
                outcome.smoke.append(_smoke(conn, query))
                if outcome.rto is None and outcome.smoke[-1].error is None:  # the clock stops at the first success
                    outcome.rto = timedelta(seconds=time.monotonic() - started)
            outcome.restored = data_facts(conn, drill.checksum_max_rows)
            outcome.objects = schema_objects(conn)
        if drill.amcheck:
            outcome.amcheck = amcheck(target, scratch, connect_timeout, drill.restore_timeout)
        else:
            outcome.amcheck = "unavailable: the drill sets amcheck: false"
    return outcome


def _smoke(conn: psycopg.Connection, query: str) -> SmokeResult:
    import psycopg

    try:
        rows = conn.execute(query.encode()).fetchall()
    except psycopg.Error as exc:
        return SmokeResult(query, error=str(exc).splitlines()[0])
    return SmokeResult(query, len(rows))


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
    if "permission denied" in text or "must be superuser" in text:
        return f"unavailable: {first_error(text, 'pg_amcheck')}"
    return first_error(text, "pg_amcheck")


