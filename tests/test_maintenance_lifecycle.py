"""checks/maintenance/test_data_lifecycle.py (QP-23, QP-31) against real data, and the sandbox's daily cleanup.

The healthy test sandbox passes. Each fault is made in a database of its own on the test sandbox's
PostgreSQL (``opsverify_test_lc_*``, created as the sandbox superuser — the restore target's role —
with the Quantum Planner tables and rows the sandbox seeds, dropped after and proven gone): finished
jobs past 90 days (a queued job as old is no fault), a ``temp_optimization_*`` table, users past
their retention, a declared table or column that does not exist, and a monitoring role without
SELECT (a skip naming the grant; the role is dropped after, proven gone). The sandbox's own daily
cleanup (``sandbox/datacleanup.py``) then archives the old jobs and deletes the inactive users, and
the checks pass again.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from opsverify.actions.database import connect
from opsverify.profile.environment import Profile
from opsverify.sandbox import control
from opsverify.sandbox.datacleanup import clean_data
from opsverify.sandbox.seed import QUANTUM_PLANNER
from opsverify.sandbox.state import Layout, load_state

Run = Callable[..., Any]
Variant = Callable[..., Path]
T = timedelta(seconds=10)
CHECKS = "maintenance/test_data_lifecycle.py"
DATABASE = "lc_scratch"
JOBS = "test_data_lifecycle.py::test_no_finished_job_is_older_than_its_max_age[lc-jobs]"
TEMP = "test_data_lifecycle.py::test_no_temporary_table_is_left[lc-temp]"
PERSONAL = "test_data_lifecycle.py::test_no_personal_data_is_kept_past_its_retention[lc-users]"
ARCHIVE_FIX = "(the archived_jobs fixture, or the team's cleanup job)"


class Scratch:
    """A database with the sandbox's Quantum Planner tables and rows, written to as a test needs."""

    def __init__(self, sandbox: Profile, dbname: str) -> None:
        assert sandbox.restore_target is not None
        self.superuser = sandbox.restore_target
        self.dbname = dbname
        self.address = f"{self.superuser.host}:{self.superuser.port}/{dbname}"

    def execute(self, statement: str) -> None:
        with connect(self.superuser, self.dbname, T) as conn:
            conn.execute(statement)  # type: ignore[arg-type]

    def count(self, query: str) -> int:
        with connect(self.superuser, self.dbname, T) as conn:
            row = conn.execute(query).fetchone()  # type: ignore[arg-type]
        return int(row[0]) if row else -1

    def variant(self, jobs: dict[str, Any] | None = None, personal: dict[str, Any] | None = None,
                **database: Any) -> Callable[[dict[str, Any]], None]:
        """The profile declaring this database (as the monitoring role, or ``database`` overrides) and its lifecycle."""

        def mutate(data: dict[str, Any]) -> None:
            monitored = next(d for d in data["databases"] if d["name"] == "quantum_planner")
            data["databases"].append({**monitored, "name": DATABASE, "dbname": self.dbname, **database})
            data["lifecycle"].update(
                job_tables=[{"name": "lc-jobs", "database": DATABASE, "table": "optimization_jobs",
                             "archive_table": "optimization_jobs_archive", **(jobs or {})}],
                temp_tables=[{"name": "lc-temp", "database": DATABASE, "pattern": "temp_optimization_*"}],
                personal_data=[{"name": "lc-users", "database": DATABASE, "table": "users", "column": "last_login",
                                "retention": "365d", **(personal or {})}],
            )

        return mutate


@pytest.fixture
def scratch(sandbox: Profile) -> Iterator[Scratch]:
    """A database of this test seeded as the sandbox's quantum_planner; dropped and proven gone after."""
    assert sandbox.restore_target is not None
    target = sandbox.restore_target
    dbname = f"opsverify_test_lc_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with connect(target, None, T) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        with connect(target, dbname, T) as conn:
            conn.execute(QUANTUM_PLANNER)  # type: ignore[arg-type]
        yield Scratch(sandbox, dbname)
    finally:
        with connect(target, None, T) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is None


def daily_cleanup(sandbox_profile: Path, scratch: Scratch, tmp_path: Path) -> tuple[int, int]:
    """The sandbox scheduler's daily data cleanup, run on the scratch database (its day stamp under tmp_path)."""
    shared = Layout(sandbox_profile.parent)
    state = load_state(shared)
    assert state is not None
    return clean_data(Layout(tmp_path / "state"), control.postgres_of(shared, state), database=scratch.dbname)


def test_the_healthy_sandbox_passes_every_lifecycle_check(run_checks: Run, profile_variant: Variant) -> None:
    run = run_checks(profile_variant(), CHECKS)
    assert run.failed() == set()
    assert {t: c["outcome"] for t, c in run.checks.items()} == {
        "test_data_lifecycle.py::test_no_finished_job_is_older_than_its_max_age[qp-finished-jobs]": "passed",
        "test_data_lifecycle.py::test_no_temporary_table_is_left[qp-temp-tables]": "passed",
        "test_data_lifecycle.py::test_no_personal_data_is_kept_past_its_retention[qp-inactive-users]": "passed",
    }


def test_old_finished_jobs_fail_an_old_queued_job_does_not_and_the_daily_cleanup_archives_them(
    run_checks: Run, profile_variant: Variant, scratch: Scratch, sandbox_profile: Path, tmp_path: Path
) -> None:
    scratch.execute("INSERT INTO optimization_jobs (user_id, problem_type, solver, status, qubits, created_at) "
                    "VALUES (1, 'max-cut', 'qaoa', 'queued', 8, now() - interval '200 days')")
    queued = run_checks(profile_variant(scratch.variant()), CHECKS)
    assert queued.failed() == set()
    assert queued.checks[JOBS]["evidence"]["old_finished_jobs"] == "0"

    scratch.execute(
        "INSERT INTO optimization_jobs (user_id, problem_type, solver, status, qubits, duration_ms, created_at, "
        "completed_at) SELECT 2, 'portfolio', 'vqe', s, 16, 1000, now() - a - interval '1 hour', now() - a "
        "FROM (VALUES ('completed', interval '200 days'), ('failed', interval '120 days'), "
        "('completed', interval '91 days')) AS v(s, a)"
    )
    run = run_checks(profile_variant(scratch.variant()), CHECKS)
    assert run.failed() == {JOBS}
    assert run.message(JOBS) == (
        f"job table lc-jobs (optimization_jobs in database {DATABASE} at {scratch.address}): 3 finished job(s) "
        "(status completed or failed) have completed_at older than max_age 90d, the oldest 200d old: archive them "
        f"into optimization_jobs_archive {ARCHIVE_FIX}"
    )
    assert run.checks[JOBS]["evidence"]["oldest"] == "200d"

    before = scratch.count("SELECT count(*) FROM optimization_jobs")
    assert daily_cleanup(sandbox_profile, scratch, tmp_path) == (3, 0)
    assert scratch.count("SELECT count(*) FROM optimization_jobs") == before - 3
    assert scratch.count("SELECT count(*) FROM optimization_jobs_archive WHERE completed_at < now() - "
                         "interval '90 days'") == 3
    assert scratch.count("SELECT count(*) FROM optimization_jobs WHERE status = 'queued' AND created_at < now() - "
                         "interval '90 days'") == 1  # an unfinished job stays, however old
    again = run_checks(profile_variant(scratch.variant()), CHECKS)
    assert again.failed() == set()


def test_a_left_temporary_table_fails_and_only_glob_matches_count(
    run_checks: Run, profile_variant: Variant, scratch: Scratch
) -> None:
    scratch.execute("CREATE TABLE tempxoptimization_keep AS SELECT 1 AS id")  # `_` is no wildcard: not matched
    scratch.execute("CREATE SCHEMA solver; CREATE TABLE solver.temp_optimization_42 AS SELECT 1 AS id")
    run = run_checks(profile_variant(scratch.variant()), CHECKS)
    assert run.failed() == {TEMP}
    assert run.message(TEMP) == (
        f"database {DATABASE} at {scratch.address}: 1 table(s) match temp_optimization_* (solver.temp_optimization_42 "
        "8.0 KiB; 8.0 KiB in all), expected none: drop them (the dropped_temp_tables fixture, or the team's cleanup "
        "job)"
    )


def test_personal_data_past_retention_fails_and_the_daily_cleanup_deletes_it(
    run_checks: Run, profile_variant: Variant, scratch: Scratch, sandbox_profile: Path, tmp_path: Path
) -> None:
    scratch.execute("INSERT INTO users (email, full_name, created_at, last_login) VALUES "
                    "('gone@example.com', 'Gone Away', now() - interval '900 days', now() - interval '400 days'), "
                    "('left@example.com', 'Left Early', now() - interval '800 days', now() - interval '366 days')")
    run = run_checks(profile_variant(scratch.variant()), CHECKS)
    assert run.failed() == {PERSONAL}
    assert run.message(PERSONAL) == (
        f"personal data lc-users (users in database {DATABASE} at {scratch.address}): 2 row(s) have last_login "
        "older than the retention 365d, the oldest 400d old: delete or anonymise them (the team's retention job)"
    )
    assert daily_cleanup(sandbox_profile, scratch, tmp_path) == (0, 2)
    assert run_checks(profile_variant(scratch.variant()), CHECKS).failed() == set()


def test_a_declared_table_that_does_not_exist_fails_naming_it(
    run_checks: Run, profile_variant: Variant, scratch: Scratch
) -> None:
    run = run_checks(profile_variant(scratch.variant(jobs={"table": "archive.optimization_jobs"})), CHECKS)
    assert run.failed() == {JOBS}
    assert run.message(JOBS) == (
        f"job table lc-jobs (archive.optimization_jobs in database {DATABASE} at {scratch.address}): table "
        "archive.optimization_jobs does not exist: declare the table and columns it has in lifecycle.job_tables"
    )


def test_a_declared_column_that_does_not_exist_fails_naming_it(
    run_checks: Run, profile_variant: Variant, scratch: Scratch
) -> None:
    run = run_checks(profile_variant(scratch.variant(personal={"column": "last_seen"})), CHECKS)
    assert run.failed() == {PERSONAL}
    assert run.message(PERSONAL) == (
        f"personal data lc-users (users in database {DATABASE} at {scratch.address}): column \"last_seen\" does "
        "not exist in table users: declare the table and columns it has in lifecycle.personal_data"
    )


def test_a_role_without_select_skips_naming_the_grant(
    run_checks: Run, profile_variant: Variant, scratch: Scratch, tmp_path: Path
) -> None:
    role = f"opsverify_test_nosel_{uuid.uuid4().hex[:8]}"
    secret = tmp_path / "role.pass"
    secret.write_text("no-select-secret\n")
    scratch.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'no-select-secret'")
    try:
        run = run_checks(profile_variant(scratch.variant(user=role, password_file=str(secret))), CHECKS)
    finally:
        scratch.execute(f"DROP ROLE IF EXISTS {role}")
        assert scratch.count(f"SELECT count(*) FROM pg_roles WHERE rolname = '{role}'") == 0
    assert run.failed() == set()
    assert (run.outcome(JOBS), run.outcome(PERSONAL), run.outcome(TEMP)) == ("skipped", "skipped", "passed")
    assert run.message(JOBS) == (
        f"job table lc-jobs (optimization_jobs in database {DATABASE} at {scratch.address}): role {role} may not "
        f"read optimization_jobs: GRANT SELECT ON optimization_jobs TO {role}"
    )
    assert run.message(PERSONAL) == (
        f"personal data lc-users (users in database {DATABASE} at {scratch.address}): role {role} may not read "
        f"users: GRANT SELECT ON users TO {role}"
    )
