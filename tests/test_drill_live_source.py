"""checks/restore/test_database_drill.py with ``compare_with_source`` against a live source: writes made
after the backup are no failure, a lost or emptied table still is.

Each test makes its own source database on the test sandbox's PostgreSQL (a copy of
``photonic_foundry``, dropped and proven gone after), dumps it the way the runbook's daily job does
(``pg_dump | gzip`` into ``backup_<date>.sql.gz``, no manifest) into tmp_path, writes to the source
after the backup, and runs the drill checks against a profile declaring that database, series and
drill.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from opsverify.actions.database import connect
from opsverify.facts.database import source_facts
from opsverify.pgtools import pg_env, pg_tool
from opsverify.profile.environment import Profile

Run = Callable[..., Any]
Variant = Callable[..., Path]
T = timedelta(seconds=10)
DRILL = "restore/test_database_drill.py"
NAME = "live-drill"
DATABASE = "live_source"


def check(name: str) -> str:
    return f"test_database_drill.py::{name}[{NAME}]"


COUNTS = check("test_restored_row_counts_match_the_backup")
CHECKSUMS = check("test_restored_tables_match_their_checksums")
ORIGIN = f"source {DATABASE} (REPEATABLE READ snapshot)"
CONTENT = "backup/test_backup_content.py"
EVERY_TABLE = "test_backup_content.py::test_newest_full_dump_holds_every_live_table[live-series]"


class LiveSource:
    """A copy of photonic_foundry on the sandbox server, written to as a test needs, and its backups."""

    def __init__(self, profile: Profile, dbname: str, tmp_path: Path) -> None:
        assert profile.restore_target is not None
        self.profile = profile
        self.superuser = profile.restore_target
        self.dbname = dbname
        self.series = tmp_path / "series"
        self.series.mkdir()

    def execute(self, statement: str) -> None:
        with connect(self.superuser, self.dbname, T) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def facts(self) -> dict[str, Any]:
        with connect(self.superuser, self.dbname, T) as conn:
            return source_facts(conn, 100_000).to_json()["tables"]  # type: ignore[no-any-return]

    def backup(self, *pg_dump_args: str) -> Path:
        """``pg_dump DB | gzip > backup_<date>.sql.gz`` (the runbook's daily job), half an hour old."""
        when = datetime.now(UTC) - timedelta(minutes=30)
        target = self.series / f"backup_{when:%Y%m%d_%H%M%S}.sql.gz"
        dump = subprocess.run(
            [pg_tool("pg_dump"), *pg_dump_args], env=pg_env(self.superuser, self.dbname, T), check=True,
            timeout=120, stdin=subprocess.DEVNULL, capture_output=True,
        )
        with gzip.open(target, "wb") as out:
            out.write(dump.stdout)
        os.utime(target, (when.timestamp(), when.timestamp()))
        return target

    def variant(self, **drill: Any) -> Callable[[dict[str, Any]], None]:
        """The profile declaring this database (read by the sandbox's monitoring role), its series and one drill."""

        def mutate(data: dict[str, Any]) -> None:
            monitored = next(d for d in data["databases"] if d["name"] == "photonic_foundry")
            data["databases"].append({**monitored, "name": DATABASE, "dbname": self.dbname})
            data["backups"] = [{"name": "live-series", "kind": "postgres", "path": str(self.series),
                                "pattern": "backup_*.sql.gz", "database": DATABASE}]
            data["drills"] = [{"name": NAME, "backup": "live-series", "database": DATABASE,
                               "compare_with_source": True, **drill}]

        return mutate


@pytest.fixture
def live_source(sandbox: Profile, tmp_path: Path) -> Iterator[LiveSource]:
    """A copy of photonic_foundry (pg_dump | psql) in a database of this test; dropped and proven gone after."""
    assert sandbox.restore_target is not None
    target = sandbox.restore_target
    dbname = f"opsverify_test_live_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with connect(target, None, T) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        dump = subprocess.run(
            [pg_tool("pg_dump"), "--no-owner", "--no-privileges"], env=pg_env(target, "photonic_foundry", T),
            check=True, timeout=120, stdin=subprocess.DEVNULL, capture_output=True,
        )
        subprocess.run(
            [pg_tool("psql"), "-q", "-v", "ON_ERROR_STOP=1", "-X"], env=pg_env(target, dbname, T),
            input=dump.stdout, check=True, timeout=120, capture_output=True,
        )
        yield LiveSource(sandbox, dbname, tmp_path)
    finally:
        with connect(target, None, T) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is None


WRITES = (
    "INSERT INTO simulations (name, model_id, status, wavelength_nm, loss_db, result, created_at) "
    "SELECT 'after-backup-' || g, 1, 'queued', 1550, 0.2, NULL, now() FROM generate_series(1, 12) AS g; "
    "UPDATE models SET accuracy = 0.5 WHERE id IN (3, 5, 7); "
    "UPDATE simulations SET status = 'failed' WHERE id IN (10, 20)"
)


def test_writes_after_the_backup_pass_the_row_counts_and_leave_checksums_undecided(
    run_checks: Run, profile_variant: Variant, live_source: LiveSource
) -> None:
    live_source.backup()
    untouched = run_checks(profile_variant(live_source.variant(source_quiescent=True)), DRILL)
    assert untouched.failed() == set()
    assert (untouched.outcome(COUNTS), untouched.outcome(CHECKSUMS)) == ("passed", "passed")
    assert untouched.checks[CHECKSUMS]["evidence"]["compared_with"] == (
        f"source {DATABASE} (REPEATABLE READ snapshot; source_quiescent)"
    )
    assert untouched.checks[CHECKSUMS]["evidence"]["checksummed_tables"] == "2"

    live_source.execute(WRITES)  # 12 inserts and 5 updates since the backup
    run = run_checks(profile_variant(live_source.variant()), DRILL)
    assert run.failed() == set()
    assert run.outcome(COUNTS) == "passed"
    evidence = run.checks[COUNTS]["evidence"]
    assert (evidence["compared_with"], evidence["comparison"]) == (ORIGIN, "live")
    assert evidence["row_tolerance"] == "5% (at least 10 rows)"
    assert run.outcome(CHECKSUMS) == "skipped"
    assert run.message(CHECKSUMS) == (
        f"drill {NAME}: cannot compare checksums with a live source: 2 of 2 checksummed table(s) differ from "
        f"{ORIGIN} (first public.models), and writes made since the backup change a checksum as a damaged restore "
        "does: write a manifest beside each backup at backup time (opsverify manifest write BACKUP --from-source), "
        f"or declare source_quiescent: true if nothing writes to {DATABASE}"
    )


def test_backup_lacking_its_rows_fails_the_row_counts_despite_later_writes(
    run_checks: Run, profile_variant: Variant, live_source: LiveSource
) -> None:
    live_source.backup("--exclude-table-data=public.simulations")
    live_source.execute(WRITES)
    run = run_checks(profile_variant(live_source.variant()), DRILL)
    assert run.failed() == {COUNTS}
    assert run.message(COUNTS) == (
        f"drill {NAME}: 1 table(s) differ from {ORIGIN}, first public.simulations: 0 rows restored, 5012 in the "
        "source: an emptied table fails whatever the row_tolerance; if it really was empty at backup time, record "
        "that exact evidence in a manifest written at backup time (opsverify manifest write BACKUP)"
    )


def test_backup_lacking_a_table_fails_the_backup_content_check_not_the_drill(
    run_checks: Run, profile_variant: Variant, live_source: LiveSource
) -> None:
    """A dump taken with -T: the content check names the table the dump left out; the drill restored what it holds.

    A table created after simulations (a larger OID) is in the dump, so simulations was not created since it.
    """
    live_source.execute("CREATE TABLE notes (id integer PRIMARY KEY); INSERT INTO notes VALUES (1)")
    backup = live_source.backup("--exclude-table=public.simulations")
    live_source.execute(WRITES)
    run = run_checks(profile_variant(live_source.variant()), DRILL, CONTENT)
    assert run.failed() == {EVERY_TABLE}
    taken = datetime.strptime(backup.name, "backup_%Y%m%d_%H%M%S.sql.gz").replace(tzinfo=UTC)
    assert run.message(EVERY_TABLE) == (
        f"newest dump {backup.name} of live-series lacks 1 of the 4 table(s) database {DATABASE} holds live, first "
        f"public.simulations (dump taken {taken.astimezone().strftime('%Y-%m-%d %H:%M %Z')}; older than the tables "
        "it holds, so not created since: add it to the job's dump, or to exclude_tables when it is never dumped): "
        f"{backup}"
    )
    assert run.outcome(COUNTS) == "passed"
    assert run.checks[COUNTS]["evidence"]["in_the_source_not_in_the_dump"] == "public.simulations"


def test_table_with_rows_beyond_the_tolerance_fails_the_row_counts(
    run_checks: Run, profile_variant: Variant, live_source: LiveSource
) -> None:
    live_source.backup()
    live_source.execute(  # 300 rows since the backup: beyond 5% of the 5300 the source holds
        "INSERT INTO simulations (name, model_id, status, wavelength_nm, created_at) "
        "SELECT 'after-backup-' || g, 1, 'queued', 1550, now() FROM generate_series(1, 300) AS g"
    )
    run = run_checks(profile_variant(live_source.variant()), DRILL)
    assert run.failed() == {COUNTS}
    assert run.message(COUNTS) == (
        f"drill {NAME}: 1 table(s) differ from {ORIGIN}, first public.simulations: 5000 rows restored, 5300 in the "
        "source, off by 300: beyond the row_tolerance of 265 rows (5% of 5300, at least 10)"
    )
    wider = run_checks(profile_variant(live_source.variant(row_tolerance={"percent": 10, "min_rows": 10})), DRILL)
    assert wider.failed() == set()


def test_append_only_table_holding_more_rows_than_the_source_fails(
    run_checks: Run, profile_variant: Variant, live_source: LiveSource
) -> None:
    live_source.backup()
    live_source.execute("DELETE FROM simulations WHERE id > 4980")  # 20 rows: inside the tolerance of 250
    tolerant = run_checks(profile_variant(live_source.variant()), DRILL)
    assert tolerant.failed() == set()
    assert tolerant.outcome(COUNTS) == "passed"
    run = run_checks(profile_variant(live_source.variant(append_only=["simulations", "audit_*"])), DRILL)
    assert run.failed() == {COUNTS}
    assert run.message(COUNTS) == (
        f"drill {NAME}: 1 table(s) differ from {ORIGIN}, first public.simulations: 5000 rows restored, more than "
        "the 4980 the source holds now (append_only: the table cannot have shrunk since the backup)"
    )


def test_update_of_a_quiescent_source_after_the_backup_fails_the_checksums(
    run_checks: Run, profile_variant: Variant, live_source: LiveSource
) -> None:
    live_source.backup()
    backed_up = live_source.facts()["public.models"]["checksum"]
    live_source.execute("UPDATE models SET accuracy = 0.5 WHERE id = 7")
    now = live_source.facts()["public.models"]["checksum"]
    assert backed_up != now
    run = run_checks(profile_variant(live_source.variant(source_quiescent=True)), DRILL)
    assert run.failed() == {CHECKSUMS}
    assert run.message(CHECKSUMS) == (
        f"drill {NAME}: public.models content checksum {backed_up} differs from {now} "
        f"(source {DATABASE} (REPEATABLE READ snapshot; source_quiescent))"
    )


def test_append_only_table_compares_with_its_manifest_as_at_least_its_rows(
    run_checks: Run, profile_variant: Variant, live_source: LiveSource
) -> None:
    """A manifest read from the source before the dump: an append_only table may hold more, never fewer rows."""
    from opsverify.facts.database import DataFacts
    from opsverify.facts.manifest import manifest_path, write_manifest

    before = live_source.facts()
    live_source.execute(WRITES)  # 12 rows appended to simulations between the manifest and the dump
    backup = live_source.backup()
    write_manifest(backup, DataFacts.from_json({"checksum_algorithm": "sum-hash-64", "tables": before}))
    exact = run_checks(profile_variant(live_source.variant()), DRILL)
    origin = f"the manifest {manifest_path(backup).name}"
    assert exact.failed() == {COUNTS, CHECKSUMS}
    assert exact.message(COUNTS) == (
        f"drill {NAME}: 1 table(s) differ from {origin}, first public.simulations: 5012 rows restored, 5000 expected"
    )
    grown = run_checks(profile_variant(live_source.variant(append_only=["public.sim*", "models"])), DRILL)
    assert grown.failed() == {CHECKSUMS}  # models was updated, not appended to: its checksum differs
    assert grown.message(CHECKSUMS).startswith(f"drill {NAME}: public.models content checksum ")
    assert grown.checks[CHECKSUMS]["evidence"]["checksummed_tables"] == "1"  # simulations grew: not compared
    assert grown.outcome(COUNTS) == "passed"

    live_source.execute("DELETE FROM simulations WHERE id > 4990")  # a dump with fewer rows than the manifest
    backup.unlink()
    manifest_path(backup).unlink()
    backup = live_source.backup()
    write_manifest(backup, DataFacts.from_json({"checksum_algorithm": "sum-hash-64", "tables": before}))
    shrunk = run_checks(profile_variant(live_source.variant(append_only=["simulations"])), DRILL)
    assert shrunk.failed() == {COUNTS, CHECKSUMS}  # models: updated since the manifest
    assert shrunk.message(COUNTS) == (
        f"drill {NAME}: 1 table(s) differ from the manifest {manifest_path(backup).name}, first public.simulations: "
        "4990 rows restored, fewer than the 5000 recorded (append_only)"
    )
