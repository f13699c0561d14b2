"""The maintenance actions' guards (issue 11 review): what each refuses, and what it never deletes or drops.

Reuses tests/test_maintenance_actions.py's throwaway cluster, Redis and files: a ``*`` temp_tables pattern, a
log pattern leaving its directory, a live log, a missing directory, a table the maintenance_user cannot read
and an unreachable server, each with the exact refusal or message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from opsverify.actions import performed
from opsverify.actions.maintenance import ArchiveJobs, CleanTmp, DropTempTables, RotateLogs, VacuumAnalyze
from opsverify.errors import CleanupError, OpsverifyError
from opsverify.localserver.net import free_port
from opsverify.profile.environment import Profile
from opsverify.profile.maintenance import ArchiveLocation, LogDirectory, TempTables, TmpFiles
from opsverify.sandbox.postgres import Postgres
from tests import test_maintenance_actions as base
from tests.test_maintenance_actions import DAY, TIMEOUT, job_totals, pg_state, scratch

cluster = base.cluster  # the module's fixtures, reused: its cluster (a module-scoped one of this module), Redis,
cache = base.cache  # files and profile
files = base.files
jobs_reset = base.jobs_reset
owned_profile = base.owned_profile


def refusal(model: Any, **fields: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        model(**fields)
    return str(caught.value.errors()[0]["msg"])


def test_broad_temp_table_patterns_are_refused_at_load_and_by_the_action(
    cluster: Postgres, owned_profile: Profile, jobs_reset: None, tmp_path: Path
) -> None:
    for pattern in ("*", "?*", "te*", "[a-z]*"):
        assert refusal(TempTables, name="t", database="d", pattern=pattern) == (
            f"Value error, temp_tables pattern {pattern!r} is too broad: it must start with at least 3 literal "
            "characters before its first wildcard (e.g. temp_optimization_*)"
        )
    assert TempTables(name="t", database="d").max_tables == 50
    db = next(d for d in owned_profile.databases if d.name == "quantum_planner")
    tables = pg_state(cluster)
    with pytest.raises(OpsverifyError) as caught, performed(
        DropTempTables(db, "*", owned_profile.timeouts, TIMEOUT, scratch(tmp_path, "g0"))
    ):
        pass
    assert str(caught.value) == (
        "drop of temporary tables quantum_planner:* refused (nothing was changed): temp_tables pattern '*' is too "
        "broad: it must start with at least 3 literal characters before its first wildcard (e.g. temp_optimization_*)"
    )
    capped = DropTempTables(db, "temp_optimization_*", owned_profile.timeouts, TIMEOUT, scratch(tmp_path, "g1"), 1)
    with pytest.raises(OpsverifyError) as caught, performed(capped):
        pass
    assert str(caught.value) == (
        "drop of temporary tables quantum_planner:temp_optimization_* refused (nothing was changed): pattern "
        "temp_optimization_* matches 2 tables, more than max_tables 1 (public.temp_optimization_a, "
        "public.temp_optimization_b): narrow lifecycle.temp_tables[].pattern or raise its max_tables"
    )
    with cluster.connect("postgres") as conn:
        conn.execute("DROP DATABASE IF EXISTS only_temp")
        conn.execute("CREATE DATABASE only_temp")
    with cluster.connect("only_temp") as conn:
        conn.execute("CREATE TABLE tmp_a (x int)")
        conn.execute("CREATE TABLE tmp_b (x int)")
    only = db.model_copy(update={"dbname": "only_temp"})
    with pytest.raises(OpsverifyError) as caught, performed(
        DropTempTables(only, "tmp_*", owned_profile.timeouts, TIMEOUT, scratch(tmp_path, "g2"))
    ):
        pass
    assert str(caught.value) == (
        "drop of temporary tables quantum_planner:tmp_* refused (nothing was changed): pattern tmp_* matches "
        "public.tmp_a, public.tmp_b and leaves no other table to prove the drop against: narrow "
        "lifecycle.temp_tables[].pattern"
    )
    with cluster.connect("only_temp") as conn:
        row = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert row is not None
    assert row[0] == 2
    assert pg_state(cluster) == tables
    for name in ("g0", "g1", "g2"):
        assert not scratch(tmp_path, name).exists()


def test_file_patterns_leaving_their_directory_are_refused_and_symlinks_not_followed(
    owned_profile: Profile, files: dict[str, Path], tmp_path: Path
) -> None:
    for model, extra in ((LogDirectory, {"path": "/var/log/app"}), (ArchiveLocation, {"live": "/a", "archive": "/b"})):
        for pattern in ("../*", "sub/app.log*", ".."):
            assert refusal(model, name="x", pattern=pattern, **extra) == (
                f"Value error, pattern {pattern!r} must be a plain file-name glob (no '/' and no '..'), e.g. app.log*"
            )
    for pattern in ("/*", "/tmp/*", "/tmp/quantum/*?", "/tmp/../etc/x*"):
        assert refusal(TmpFiles, name="x", pattern=pattern) == (
            f"Value error, tmp_files pattern {pattern!r} is too broad: its last component must hold a literal part "
            "(e.g. /tmp/quantum_*), never only wildcards, and no '..'"
        )
    assert owned_profile.lifecycle is not None
    logs = owned_profile.lifecycle.log_dirs[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.log.9"
    victim.write_text("not the log directory's\n")
    os.utime(victim, (time.time() - 90 * DAY, time.time() - 90 * DAY))
    (files["logs"] / "app.log.50").symlink_to(victim)
    escaping = RotateLogs(logs.model_copy(update={"pattern": "../*"}), scratch(tmp_path, "p1"))
    with pytest.raises(OpsverifyError) as caught, performed(escaping):
        pass
    assert str(caught.value) == (
        "log rotation app-logs refused: pattern '../*' must be a plain file-name glob (no '/' and no '..'): fix "
        "lifecycle.log_dirs[].pattern"
    )
    with performed(RotateLogs(logs, scratch(tmp_path, "p2"))) as done:
        assert sorted(Path(p).name for p in done.deleted) == ["app.log.31.gz", "app.log.40.gz"]
    assert victim.exists()
    assert (files["logs"] / "app.log.50").is_symlink()
    tmp = owned_profile.lifecycle.tmp_files[0]
    with pytest.raises(OpsverifyError) as caught, performed(CleanTmp(tmp, scratch(tmp_path, "p3"), "/tmp/*")):
        pass
    assert str(caught.value) == (
        "temporary file clean-up quantum-tmp refused: tmp_files pattern '/tmp/*' is too broad: its last component "
        "must hold a literal part (e.g. /tmp/quantum_*), never only wildcards, and no '..'"
    )


def test_rotation_never_deletes_a_live_log(owned_profile: Profile, files: dict[str, Path], tmp_path: Path) -> None:
    assert owned_profile.lifecycle is not None
    logs = owned_profile.lifecycle.log_dirs[0].model_copy(update={"pattern": "*.log*"})
    old = time.time() - 60 * DAY
    for name in ("app.log", "worker.log", "app.log-20260101", "app.1.log", "app.log.3"):
        (files["logs"] / name).write_text("line\n")
        os.utime(files["logs"] / name, (old, old))
    with performed(RotateLogs(logs, scratch(tmp_path, "live"))) as done:
        assert sorted(Path(p).name for p in done.deleted) == [
            "app.1.log", "app.log-20260101", "app.log.3", "app.log.31.gz", "app.log.40.gz"
        ]
    assert sorted(p.name for p in files["logs"].iterdir()) == ["app.log", "app.log.1", "app.log.2.gz", "worker.log"]


def test_a_missing_directory_fails_naming_it(owned_profile: Profile, tmp_path: Path) -> None:
    assert owned_profile.lifecycle is not None
    gone = tmp_path / "no-such-dir"
    logs = owned_profile.lifecycle.log_dirs[0].model_copy(update={"path": str(gone)})
    with pytest.raises(OpsverifyError) as caught, performed(RotateLogs(logs, scratch(tmp_path, "m1"))):
        pass
    assert str(caught.value) == (
        f"log rotation app-logs: directory {gone} does not exist: create it or fix lifecycle.log_dirs[].path"
    )
    tmp = owned_profile.lifecycle.tmp_files[0]
    with pytest.raises(OpsverifyError) as caught, performed(
        CleanTmp(tmp, scratch(tmp_path, "m2"), str(gone / "quantum_*"))
    ):
        pass
    assert str(caught.value) == (
        f"temporary file clean-up quantum-tmp: directory {gone} does not exist: create it or fix "
        "lifecycle.tmp_files[].pattern"
    )


@pytest.fixture
def limited_role(cluster: Postgres, tmp_path: Path) -> Iterator[Path]:
    """A maintenance role that may move jobs and read every table but su_owned (created after the grant)."""
    secret = tmp_path / "limited.pass"
    secret.write_text("limited-secret\n")
    secret.chmod(0o600)
    with cluster.connect("quantum_planner") as conn:
        conn.execute("CREATE ROLE limited_maint LOGIN PASSWORD 'limited-secret'")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO limited_maint")
        conn.execute("GRANT INSERT, DELETE ON optimization_jobs, optimization_jobs_archive TO limited_maint")
        conn.execute("CREATE TABLE su_owned AS SELECT g AS x FROM generate_series(1, 10) g")
    try:
        yield secret
    finally:
        with cluster.connect("quantum_planner") as conn:
            conn.execute("DROP TABLE su_owned")
            conn.execute("DROP OWNED BY limited_maint")
            conn.execute("DROP ROLE limited_maint")


def test_an_unreadable_table_is_proved_by_statistics_and_named_when_track_counts_is_off(
    cluster: Postgres, owned_profile: Profile, jobs_reset: None, limited_role: Path, tmp_path: Path
) -> None:
    db = next(d for d in owned_profile.databases if d.name == "quantum_planner")
    db = db.model_copy(update={"maintenance_user": "limited_maint", "maintenance_password_file": limited_role})
    assert owned_profile.lifecycle is not None
    jobs = owned_profile.lifecycle.job_tables[0]
    live = job_totals(cluster)
    with performed(ArchiveJobs(db, jobs, jobs.max_age, owned_profile.timeouts, TIMEOUT, scratch(tmp_path, "u"))) as d:
        assert d.rows > 0
        assert d.not_proved == ()  # the statistics proof reads no table: su_owned is proved without SELECT
        assert d.note == ""
    assert job_totals(cluster) == (live[0] - d.rows, live[1] + d.rows)
    with cluster.connect("postgres") as conn:
        conn.execute("ALTER ROLE limited_maint SET track_counts = off")  # the proof falls back to reading tables
    with cluster.connect("quantum_planner") as conn:
        conn.execute("INSERT INTO optimization_jobs SELECT * FROM optimization_jobs_archive")
        conn.execute("TRUNCATE optimization_jobs_archive")
    with performed(ArchiveJobs(db, jobs, jobs.max_age, owned_profile.timeouts, TIMEOUT, scratch(tmp_path, "v"))) as d:
        assert d.rows > 0
        assert d.not_proved == ("public.su_owned",)
        assert d.note == (
            "not proved: public.su_owned (no SELECT): track_counts is off, so the proof reads every other table, and "
            "the role limited_maint (maintenance_user) cannot read it; turn track_counts on, or GRANT SELECT ON "
            "public.su_owned TO limited_maint, if the team wants them proved"
        )
    assert job_totals(cluster) == (live[0] - d.rows, live[1] + d.rows)


def test_a_partitioned_archive_table_takes_the_jobs_and_its_partitions_are_its_own(
    cluster: Postgres, owned_profile: Profile, jobs_reset: None, tmp_path: Path
) -> None:
    db = next(d for d in owned_profile.databases if d.name == "quantum_planner")
    assert owned_profile.lifecycle is not None
    declared = owned_profile.lifecycle.job_tables[0]
    jobs = declared.model_copy(update={"archive_table": "jobs_archive_parted"})
    live, tables = job_totals(cluster), pg_state(cluster)
    with cluster.connect("quantum_planner") as conn:
        conn.execute(f"CREATE TABLE jobs_archive_parted (LIKE optimization_jobs) PARTITION BY RANGE "
                     f"({declared.time_column})")
        conn.execute("CREATE TABLE jobs_archive_parted_old PARTITION OF jobs_archive_parted DEFAULT")
    try:
        with performed(ArchiveJobs(db, jobs, jobs.max_age, owned_profile.timeouts, TIMEOUT,
                                   scratch(tmp_path, "p"))) as done:
            assert done.rows > 0
            assert done.archive == "public.jobs_archive_parted"
        with cluster.connect("quantum_planner") as conn:
            row = conn.execute("SELECT count(*) FROM jobs_archive_parted_old").fetchone()
        assert row is not None
        assert row[0] == done.rows
        assert job_totals(cluster) == (live[0] - done.rows, live[1])
    finally:
        with cluster.connect("quantum_planner") as conn:
            conn.execute("INSERT INTO optimization_jobs SELECT * FROM jobs_archive_parted")
            conn.execute("DROP TABLE jobs_archive_parted")
    assert job_totals(cluster) == live
    assert pg_state(cluster) == tables


def test_an_archive_table_with_its_own_column_order_and_extra_columns_takes_the_jobs_by_name(
    cluster: Postgres, owned_profile: Profile, jobs_reset: None, tmp_path: Path
) -> None:
    db = next(d for d in owned_profile.databases if d.name == "quantum_planner")
    assert owned_profile.lifecycle is not None
    jobs = owned_profile.lifecycle.job_tables[0].model_copy(update={"archive_table": "jobs_archive_own"})
    live = job_totals(cluster)
    with cluster.connect("quantum_planner") as conn:  # columns reversed, an archived_at of its own, no user_id yet
        conn.execute("CREATE TABLE jobs_archive_own (archived_at timestamptz NOT NULL DEFAULT now(), completed_at "
                     "timestamptz, created_at timestamptz, duration_ms int, qubits int, status text, solver text, "
                     "problem_type text, id bigint GENERATED ALWAYS AS IDENTITY)")
    try:
        with pytest.raises(OpsverifyError) as caught, performed(
            ArchiveJobs(db, jobs, jobs.max_age, owned_profile.timeouts, TIMEOUT, scratch(tmp_path, "c0"))
        ):
            pass
        assert str(caught.value) == (
            "archive of jobs quantum_planner.optimization_jobs refused (nothing was changed): archive table "
            "public.jobs_archive_own lacks column user_id of public.optimization_jobs: add it (ALTER TABLE "
            "public.jobs_archive_own ADD COLUMN …), or fix lifecycle.job_tables[].archive_table"
        )
        assert job_totals(cluster) == live
        with cluster.connect("quantum_planner") as conn:
            conn.execute("ALTER TABLE jobs_archive_own ADD COLUMN user_id int")
        with performed(ArchiveJobs(db, jobs, jobs.max_age, owned_profile.timeouts, TIMEOUT,
                                   scratch(tmp_path, "c1"))) as done:
            assert done.rows > 0
        with cluster.connect("quantum_planner") as conn:
            moved = conn.execute("SELECT count(*) FROM jobs_archive_own a JOIN optimization_jobs_archive b USING (id)"
                                 ).fetchone()
            same = conn.execute(
                "SELECT count(*) FROM jobs_archive_own WHERE status IN ('completed', 'failed') AND user_id > 0 "
                "AND created_at <= completed_at AND archived_at > completed_at"
            ).fetchone()
        assert moved is not None
        assert moved[0] == 0  # nothing went to the declared archive: only to this one
        assert same is not None
        assert same[0] == done.rows  # every value in its own column
        assert job_totals(cluster) == (live[0] - done.rows, live[1])
    finally:
        with cluster.connect("quantum_planner") as conn:
            conn.execute("INSERT INTO optimization_jobs (id, user_id, problem_type, solver, status, qubits, "
                         "duration_ms, created_at, completed_at) SELECT id, user_id, problem_type, solver, status, "
                         "qubits, duration_ms, created_at, completed_at FROM jobs_archive_own")
            conn.execute("DROP TABLE jobs_archive_own")
    assert job_totals(cluster) == live


@pytest.fixture
def side_table(cluster: Postgres) -> Iterator[str]:
    """A table of the team's beside the job table (an audit log), with rows, dropped after."""
    with cluster.connect("quantum_planner") as conn:
        conn.execute("CREATE TABLE job_audit (job_id bigint, note text)")
        conn.execute("INSERT INTO job_audit SELECT g, 'seen' FROM generate_series(1, 20) g")
    try:
        yield "public.job_audit"
    finally:
        with cluster.connect("quantum_planner") as conn:
            conn.execute("DROP TABLE IF EXISTS job_audit")
            conn.execute("DROP FUNCTION IF EXISTS audit_job_delete() CASCADE")


def test_the_proof_catches_a_trigger_write_a_truncate_and_an_altered_column_and_rolls_back(
    cluster: Postgres, owned_profile: Profile, jobs_reset: None, side_table: str, tmp_path: Path
) -> None:
    db = next(d for d in owned_profile.databases if d.name == "quantum_planner")
    assert owned_profile.lifecycle is not None
    jobs = owned_profile.lifecycle.job_tables[0]
    live, tables = job_totals(cluster), pg_state(cluster)
    prefix = "archive of jobs quantum_planner.optimization_jobs rolled back: "

    class Truncates(ArchiveJobs):
        def move(self, conn: Any, args: tuple[Any, ...]) -> tuple[int, int]:
            conn.execute("TRUNCATE job_audit")
            return super().move(conn, args)

    class AltersAColumn(ArchiveJobs):
        def move(self, conn: Any, args: tuple[Any, ...]) -> tuple[int, int]:
            conn.execute("ALTER TABLE job_audit DROP COLUMN note")
            return super().move(conn, args)

    for n, (sabotaged, message) in enumerate((
        (Truncates, "table public.job_audit was rewritten or truncated (new storage file)"),
        (AltersAColumn, "table public.job_audit changed columns (job_id bigint, note text -> job_id bigint)"),
    )):
        with pytest.raises(CleanupError) as caught, performed(
            sabotaged(db, jobs, jobs.max_age, owned_profile.timeouts, TIMEOUT, scratch(tmp_path, f"s{n}"))
        ):
            pass
        assert str(caught.value) == f"{prefix}{message} (nothing was changed)"
        assert job_totals(cluster) == live
        assert pg_state(cluster) == tables

    with cluster.connect("quantum_planner") as conn:  # the team's audit trigger: each archived job writes a row
        conn.execute("CREATE FUNCTION audit_job_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "INSERT INTO job_audit VALUES (0, 'deleted'); RETURN OLD; END $$")
        conn.execute("CREATE TRIGGER audit_delete AFTER DELETE ON optimization_jobs FOR EACH ROW "
                      "EXECUTE FUNCTION audit_job_delete()")
        row = conn.execute(
            f"SELECT count(*) FROM optimization_jobs WHERE {jobs.status_column} = ANY(%s) "
            f"AND {jobs.time_column} < now() - %s", (list(jobs.finished), jobs.max_age)
        ).fetchone()
    assert row is not None
    assert row[0] > 1
    with pytest.raises(CleanupError) as caught, performed(
        ArchiveJobs(db, jobs, jobs.max_age, owned_profile.timeouts, TIMEOUT, scratch(tmp_path, "trigger"))
    ):
        pass
    assert str(caught.value) == (
        f"{prefix}table public.job_audit had {row[0]} rows inserted by this transaction (nothing was changed)"
    )
    assert job_totals(cluster) == live
    assert pg_state(cluster) == tables
    declared = jobs.model_copy(update={"side_tables": ["job_audit"]})  # the team declares its audit log
    with performed(ArchiveJobs(db, declared, jobs.max_age, owned_profile.timeouts, TIMEOUT,
                               scratch(tmp_path, "side"))) as done:
        assert done.rows == row[0]
    with cluster.connect("quantum_planner") as conn:
        audited = conn.execute("SELECT count(*) FROM job_audit WHERE note = 'deleted'").fetchone()
        conn.execute("DROP TRIGGER audit_delete ON optimization_jobs")
    assert audited is not None
    assert audited[0] == row[0]
    assert job_totals(cluster) == (live[0] - done.rows, live[1] + done.rows)


@pytest.fixture
def retry_column(cluster: Postgres) -> Iterator[int]:
    """``retry_of`` on the jobs (ON DELETE SET NULL) and the archive; a live job retrying an old finished one."""
    with cluster.connect("quantum_planner") as conn:
        conn.execute("ALTER TABLE optimization_jobs ADD COLUMN retry_of bigint REFERENCES optimization_jobs (id) "
                     "ON DELETE SET NULL")
        conn.execute("ALTER TABLE optimization_jobs_archive ADD COLUMN retry_of bigint")
        old = conn.execute("SELECT min(id) FROM optimization_jobs WHERE status IN ('completed', 'failed') "
                           "AND completed_at < now() - interval '100 days'").fetchone()
        assert old is not None
        conn.execute("UPDATE optimization_jobs SET retry_of = %s WHERE id = (SELECT max(id) FROM optimization_jobs "
                     "WHERE status IN ('queued', 'running'))", (old[0],))
    try:
        yield int(old[0])
    finally:
        with cluster.connect("quantum_planner") as conn:
            conn.execute("ALTER TABLE optimization_jobs DROP COLUMN retry_of")
            conn.execute("ALTER TABLE optimization_jobs_archive DROP COLUMN retry_of")


def test_a_foreign_keys_on_delete_action_on_live_jobs_rolls_the_archive_back(
    cluster: Postgres, owned_profile: Profile, jobs_reset: None, retry_column: int, tmp_path: Path
) -> None:
    db = next(d for d in owned_profile.databases if d.name == "quantum_planner")
    assert owned_profile.lifecycle is not None
    jobs = owned_profile.lifecycle.job_tables[0]
    live = job_totals(cluster)
    with pytest.raises(CleanupError) as caught, performed(
        ArchiveJobs(db, jobs, jobs.max_age, owned_profile.timeouts, TIMEOUT, scratch(tmp_path, "fk"))
    ):
        pass
    message = str(caught.value)
    moved = message.split(" had ", 1)[1].split(" rows inserted", 1)[0]
    assert message == (
        "archive of jobs quantum_planner.optimization_jobs rolled back: the job table and its archive "
        f"(public.optimization_jobs, public.optimization_jobs_archive) had {moved} rows inserted, 1 row updated, "
        f"{moved} rows deleted by this transaction, expected {moved} rows inserted, {moved} rows deleted (a trigger, "
        "rule or foreign key's ON DELETE/ON UPDATE action changed rows the action does not declare) (nothing was "
        "changed)"
    )
    assert int(moved) > 0
    assert job_totals(cluster) == live
    with cluster.connect("quantum_planner") as conn:
        kept = conn.execute("SELECT count(*) FROM optimization_jobs WHERE retry_of = %s", (retry_column,)).fetchone()
    assert kept is not None
    assert kept[0] == 1  # the live job still names the job it retries


def test_an_archive_column_of_another_type_is_refused_before_anything_changes(
    cluster: Postgres, owned_profile: Profile, jobs_reset: None, tmp_path: Path
) -> None:
    db = next(d for d in owned_profile.databases if d.name == "quantum_planner")
    assert owned_profile.lifecycle is not None
    jobs = owned_profile.lifecycle.job_tables[0].model_copy(update={"archive_table": "jobs_archive_typed"})
    live = job_totals(cluster)
    with cluster.connect("quantum_planner") as conn:
        conn.execute("CREATE TABLE jobs_archive_typed (LIKE optimization_jobs)")
        conn.execute("ALTER TABLE jobs_archive_typed ALTER COLUMN duration_ms TYPE smallint")
    try:
        with pytest.raises(OpsverifyError) as caught, performed(
            ArchiveJobs(db, jobs, jobs.max_age, owned_profile.timeouts, TIMEOUT, scratch(tmp_path, "ty"))
        ):
            pass
    finally:
        with cluster.connect("quantum_planner") as conn:
            conn.execute("DROP TABLE jobs_archive_typed")
    assert str(caught.value) == (
        "archive of jobs quantum_planner.optimization_jobs refused (nothing was changed): archive table "
        "public.jobs_archive_typed has other types than public.optimization_jobs for duration_ms integer (archive: "
        "smallint), so archived values would be cast (rounded, truncated): ALTER TABLE public.jobs_archive_typed "
        "ALTER COLUMN … TYPE to match, or fix lifecycle.job_tables[].archive_table"
    )
    assert job_totals(cluster) == live


def test_partitioned_tables_are_vacuumed_through_their_partitions_and_dropped_with_them(
    cluster: Postgres, owned_profile: Profile, jobs_reset: None, tmp_path: Path
) -> None:
    db = next(d for d in owned_profile.databases if d.name == "quantum_planner")
    tables = pg_state(cluster)
    with cluster.connect("quantum_planner") as conn:
        conn.execute("CREATE TABLE metrics_parted (at int, v int) PARTITION BY RANGE (at)")
        conn.execute("CREATE TABLE metrics_parted_1 PARTITION OF metrics_parted FOR VALUES FROM (0) TO (500)")
        conn.execute("CREATE TABLE metrics_parted_2 PARTITION OF metrics_parted FOR VALUES FROM (500) TO (1000)")
        conn.execute("INSERT INTO metrics_parted SELECT g, g FROM generate_series(0, 999) g")
        conn.execute("CREATE TABLE temp_optimization_p (x int) PARTITION BY RANGE (x)")
        conn.execute("CREATE TABLE temp_optimization_p_1 PARTITION OF temp_optimization_p FOR VALUES FROM (0) TO (9)")
    try:
        with performed(VacuumAnalyze(db, "metrics_parted", owned_profile.timeouts, TIMEOUT,
                                     scratch(tmp_path, "vp"))) as vacuumed:
            assert vacuumed.vacuum_advanced
            assert vacuumed.analyze_advanced
            assert vacuumed.rows_after == 1000
        with performed(DropTempTables(db, "temp_optimization_*", owned_profile.timeouts, TIMEOUT,
                                      scratch(tmp_path, "dp"))) as dropped:
            assert dropped.tables == ("public.temp_optimization_a", "public.temp_optimization_b",
                                      "public.temp_optimization_p", "public.temp_optimization_p_1")
    finally:
        with cluster.connect("quantum_planner") as conn:
            conn.execute("DROP TABLE IF EXISTS metrics_parted, temp_optimization_p")
    assert pg_state(cluster) == tables


def test_an_unreachable_server_says_one_sentence(
    cluster: Postgres, cache: Any, files: dict[str, Path], tmp_path: Path, profile_variant: Callable[..., Path],
    run_checks: Callable[..., Any],
) -> None:
    port = free_port()
    mutate = base.owned(cluster, cache, files, tmp_path, role="staging")

    def unreachable(data: dict[str, Any]) -> None:
        mutate(data)
        for database in data["databases"]:
            database["port"] = port

    run = run_checks(profile_variant(unreachable), base.CHECKS, extra=("-k", "vacuum and users"))
    vacuum = "test_maintenance_actions.py::test_vacuum_analyze_advances_the_statistics[quantum_planner:users]"
    assert run.failed() == {vacuum}
    message = run.message(vacuum)
    assert message.startswith(
        f"VACUUM (ANALYZE) of users in quantum_planner: cannot open a maintenance session on database quantum_planner "
        f"at 127.0.0.1:{port} as postgres (maintenance_user): "
    ), message
    out = run.result.stdout.str()
    assert "During handling of the above exception" not in out, out
    # once in the failure section (the short summary line repeats it after "Failed: ", as for every failure)
    assert out.count("\nVACUUM (ANALYZE) of users in quantum_planner: cannot open a maintenance session") == 1, out


def test_a_schema_qualified_temp_pattern_matches_that_schema_only(
    cluster: Postgres, owned_profile: Profile, jobs_reset: None, tmp_path: Path
) -> None:
    from opsverify.probes.lifecycle import temp_tables

    assert refusal(TempTables, name="t", database="d", pattern="pub*.temp_optimization_*") == (
        "Value error, temp_tables pattern 'pub*.temp_optimization_*' has a wildcard in its schema part: name one "
        "schema (e.g. app.temp_optimization_*) or none (every schema)"
    )
    assert refusal(TempTables, name="t", database="d", pattern="app.te*") == (
        "Value error, temp_tables pattern 'app.te*' is too broad: it must start with at least 3 literal characters "
        "before its first wildcard (e.g. temp_optimization_*)"
    )
    db = next(d for d in owned_profile.databases if d.name == "quantum_planner")
    with cluster.connect("quantum_planner") as conn:
        conn.execute("CREATE SCHEMA other")
        conn.execute("CREATE TABLE other.temp_optimization_keep (x int)")
    try:
        with cluster.connect("quantum_planner") as conn:
            counted = {p: temp_tables(conn, TempTables(name="t", database="quantum_planner", pattern=p)).count
                       for p in ("temp_optimization_*", "public.temp_optimization_*", "other.temp_optimization_*",
                                 "app.temp_optimization_*")}
        assert counted == {"temp_optimization_*": 3, "public.temp_optimization_*": 2, "other.temp_optimization_*": 1,
                           "app.temp_optimization_*": 0}
        with performed(DropTempTables(db, "public.temp_optimization_*", owned_profile.timeouts, TIMEOUT,
                                      scratch(tmp_path, "sq"))) as dropped:
            assert dropped.tables == ("public.temp_optimization_a", "public.temp_optimization_b")
        with cluster.connect("quantum_planner") as conn:
            kept = conn.execute("SELECT to_regclass('other.temp_optimization_keep') IS NOT NULL").fetchone()
        assert kept == (True,)
    finally:
        with cluster.connect("quantum_planner") as conn:
            conn.execute("DROP SCHEMA other CASCADE")


def test_a_generated_job_column_is_archived_as_its_value_or_left_to_a_generated_archive_column(
    cluster: Postgres, owned_profile: Profile, jobs_reset: None, tmp_path: Path
) -> None:
    db = next(d for d in owned_profile.databases if d.name == "quantum_planner")
    assert owned_profile.lifecycle is not None
    jobs = owned_profile.lifecycle.job_tables[0]
    with cluster.connect("quantum_planner") as conn:
        conn.execute("ALTER TABLE optimization_jobs ADD COLUMN double_qubits int GENERATED ALWAYS AS (qubits * 2) "
                     "STORED, ADD COLUMN triple_qubits int GENERATED ALWAYS AS (qubits * 3) STORED")
        conn.execute("ALTER TABLE optimization_jobs_archive ADD COLUMN double_qubits int, ADD COLUMN triple_qubits "
                     "int GENERATED ALWAYS AS (qubits * 3) STORED")
    try:
        with performed(ArchiveJobs(db, jobs, jobs.max_age, owned_profile.timeouts, TIMEOUT,
                                   scratch(tmp_path, "gen"))) as done:
            assert done.rows > 0
        with cluster.connect("quantum_planner") as conn:
            row = conn.execute("SELECT count(*) FROM optimization_jobs_archive WHERE double_qubits = qubits * 2 "
                               "AND triple_qubits = qubits * 3").fetchone()
        assert row == (done.rows,)
    finally:
        with cluster.connect("quantum_planner") as conn:
            conn.execute("ALTER TABLE optimization_jobs DROP COLUMN double_qubits, DROP COLUMN triple_qubits")
            conn.execute("ALTER TABLE optimization_jobs_archive DROP COLUMN double_qubits, DROP COLUMN triple_qubits")
