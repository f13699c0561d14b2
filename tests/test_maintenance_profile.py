"""The maintenance parts of a profile (issue 11): thresholds with the runbooks' defaults, the lifecycle section
validated and cross-referenced, the maintenance role's password kept a secret."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from test_profile import problems, write

from fixtures.parametrize import TABLE
from opsverify.profile import Profile, load_profile

MAINTENANCE_ROWS = ("key_query", "hot_table", "job_table", "temp_tables", "personal_data", "log_directory",
                    "archive_location", "tmp_files", "error_log")


def test_every_database_and_redis_has_the_runbooks_thresholds_by_default() -> None:
    loaded = Profile.model_validate({"name": "p", "databases": [{"name": "d", "dbname": "d", "user": "u"}],
                                     "redis": [{"name": "c"}]})
    pg, cache = loaded.databases[0].maintenance, loaded.redis[0].maintenance
    assert (pg.max_connections_percent, pg.max_idle_in_transaction, pg.max_lock_wait) == (80, timedelta(minutes=5),
                                                                                          timedelta(minutes=1))
    assert (pg.max_wraparound_percent, pg.max_vacuum_age, pg.max_dead_tuple_percent) == (50, timedelta(days=7), 20)
    assert pg.slow_query_mean == timedelta(seconds=1)
    assert pg.require_pg_stat_statements
    assert (cache.max_memory_percent, cache.ttl_prefixes, cache.scan_count) == (85, [], 1000)
    assert loaded.lifecycle is None
    assert loaded.databases[0].maintenance_user is None


def test_without_a_lifecycle_section_its_checks_skip_naming_the_part() -> None:
    loaded = Profile.model_validate({"name": "p"})
    for row in MAINTENANCE_ROWS:
        assert list(TABLE[row].values(loaded)) == [], row
    assert TABLE["log_directory"].absent == "lifecycle.log_dirs"


def test_lifecycle_parts_take_defaults_and_parametrize_by_name() -> None:
    loaded = Profile.model_validate({
        "name": "p",
        "databases": [{"name": "qp", "dbname": "qp", "user": "u",
                       "maintenance": {"hot_tables": ["jobs", "app.users"],
                                       "key_queries": [{"name": "queued", "sql": "SELECT 1"}]}}],
        "lifecycle": {
            "job_tables": [{"name": "jobs", "database": "qp", "table": "optimization_jobs"}],
            "log_dirs": [{"name": "audit", "path": "/var/log/qp/audit", "audit": True}],
            "tmp_files": [{"name": "tmp", "pattern": "/tmp/quantum_*"}],
        },
    })
    assert loaded.lifecycle is not None
    job = loaded.lifecycle.job_tables[0]
    assert (job.finished, job.time_column, job.max_age, job.archive_table) == (
        ["completed", "failed"], "completed_at", timedelta(days=90), None)
    assert loaded.lifecycle.tmp_files[0].max_age == timedelta(days=1)
    assert [TABLE["hot_table"].ids(v) for v in TABLE["hot_table"].values(loaded)] == ["qp:jobs", "qp:app.users"]
    assert [TABLE["key_query"].ids(v) for v in TABLE["key_query"].values(loaded)] == ["qp:queued"]
    assert [TABLE["log_directory"].ids(v) for v in TABLE["log_directory"].values(loaded)] == ["audit"]


def test_lifecycle_problems_are_reported_in_one_pass_with_their_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: x\n"
        "databases: [{name: qp, dbname: qp, user: u}]\n"
        "hosts: [{name: web, uri: 'ssh://ops@web'}]\n"
        "lifecycle:\n"
        "  job_tables: [{name: j, database: nope, table: 'jobs; drop table x'}]\n"
        "  log_dirs: [{name: l, path: var/log, host: db1}]\n"
        "  error_logs: [{name: e, paths: [/var/log/app.log], match: '(unclosed'}]\n"
        "  tmp_files: [{name: t, pattern: /tmp/q_*, host: web}, {name: t, pattern: /tmp/r_*}]\n",
    )
    found = "\n".join(problems(path))
    assert "lifecycle.job_tables[0].database (line 5): database 'nope' is not declared (known: ['qp'])" in found
    assert "lifecycle.log_dirs[0].host (line 6): host 'db1' is not declared (known: ['web'])" in found
    assert "'jobs; drop table x' is not a table name" in found
    assert "'var/log' is not an absolute path" in found
    assert "match '(unclosed' is not a regular expression" in found
    twice = "name 't' is used more than once (first at lifecycle.tmp_files[0])"
    assert f"lifecycle.tmp_files[1].name (line 8): {twice}" in found


def test_the_maintenance_password_is_a_secret_and_needs_its_role(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ndatabases: [{name: d, dbname: d, user: u, maintenance_password: hunter2}]\n")
    found = "\n".join(problems(path))
    assert "a secret must not be written in the profile: use ${VAR} or maintenance_password_file" in found
    assert "hunter2" not in found
    path = write(tmp_path, "name: x\ndatabases: [{name: d, dbname: d, user: u, maintenance_password: '${PW}'}]\n")
    assert "declare maintenance_user too" in "\n".join(problems(path, {"PW": "s3cret-value"}))
    path = write(tmp_path, "name: x\ndatabases: [{name: d, dbname: d, user: u, maintenance_user: owner, "
                 "maintenance_password: '${PW}'}]\n")
    assert load_profile(path, {"PW": "s3cret-value"}).databases[0].maintenance_secret() == "s3cret-value"


@pytest.mark.parametrize("value", ["0s", "-1d"])
def test_maintenance_durations_must_be_positive(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"name: x\nredis: [{{name: c, maintenance: {{slowlog_window: {value}}}}}]\n")
    assert any("redis[0].maintenance.slowlog_window" in p for p in problems(path))
