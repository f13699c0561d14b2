"""``opsverify profile check FILE --connect`` against the real test sandbox, and the RPO warning of ``profile check``.

Faults are real: a port where nothing listens, a wrong password in a file, a socket that accepts and
never answers, a staging role without CREATEDB (created here, dropped after).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opsverify.localserver.net import free_port
from opsverify.profile import Profile, load_profile
from opsverify.profile.advice import rpo_warnings

ROOT = Path(__file__).resolve().parents[1]
Variant = Callable[..., Path]


def check(profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opsverify", "profile", "check", str(profile), *extra],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )


def rows(stdout: str) -> dict[tuple[str, str], str]:
    """(component, kind) -> the RESULT cell, from the printed table."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("COMPONENT"))
    kind_at, result_at = lines[header].index("KIND"), lines[header].index("RESULT")
    out = {}
    for line in lines[header + 1:]:
        if len(line) <= result_at:
            continue
        out[(line[:kind_at].strip(), line[kind_at:lines[header].index("ADDRESS")].strip())] = line[result_at:]
    return out


def failed(table: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
    return {key: value for key, value in table.items() if not value.startswith("ok: ")}


def test_connect_reaches_every_component_of_the_healthy_sandbox(sandbox_profile: Path, sandbox: Profile) -> None:
    done = check(sandbox_profile, "--connect")
    table = rows(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not failed(table)
    expected = {(s.name, "service") for s in sandbox.services} | {(d.name, "database") for d in sandbox.databases}
    expected |= {(r.name, "replica") for r in sandbox.replicas} | {("restore-target", "restore target")}
    expected |= {(r.name, "redis") for r in sandbox.redis} | {(d.name, "dependency") for d in sandbox.dependencies}
    expected |= {(h.name, "host") for h in sandbox.hosts} | {(b.name, "backups") for b in sandbox.backups}
    expected |= {(b.name, "offsite") for b in sandbox.backups if b.offsite is not None}
    expected |= {(d.name, "backup role") for d in sandbox.databases if d.backup_user is not None}
    expected |= {(d.name, "maintenance role") for d in sandbox.databases if d.maintenance_user is not None}
    assert set(table) == expected
    db = sandbox.databases[0]
    assert table[(db.name, "database")].startswith("ok: PostgreSQL 15")
    assert table[(db.name, "database")].endswith(f" as {db.user}")
    assert table[("pf-replica", "replica")].endswith("in recovery (a standby)")
    assert re.fullmatch(r"ok: Redis [\d.]+, PING answered", table[("cache", "redis")])
    assert re.fullmatch(r"ok: \d+ files match backup_\*\.sql\.gz, newest backup_\d{8}_\d{6}\.sql\.gz",
                        table[("pf-postgres-daily", "backups")])
    secrets = [Path(p).read_text().strip() for p in (sandbox_profile.parent / "secrets").glob("*.pass")]
    assert not any(s and s in done.stdout + done.stderr for s in secrets)
    assert f"{len(expected)} of {len(expected)} components answered" in done.stdout


def test_one_wrong_port_fails_exactly_that_row(profile_variant: Variant, sandbox: Profile) -> None:
    port = free_port()
    path = profile_variant(lambda d: d["redis"][0].update(port=port))
    done = check(path, "--connect")
    table = rows(done.stdout)
    assert done.returncode == 1
    refused = "FAILED: connection refused: check host and port: nothing listens there"
    assert failed(table) == {("cache", "redis"): refused}
    assert f"{len(table) - 1} of {len(table)} components answered, 1 failed" in done.stdout


def test_wrong_password_names_the_fix_and_never_the_secret(
    profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password-4242\n")

    def mutate(data: dict[str, Any]) -> None:
        data["databases"][1]["password_file"] = str(wrong)

    done = check(profile_variant(mutate), "--connect")
    db = sandbox.databases[1]
    assert done.returncode == 1
    assert failed(rows(done.stdout)) == {(db.name, "database"): (
        f'FAILED: password authentication failed for user "{db.user}": check the user and its password '
        "(or password_file)")}
    assert "not-the-password-4242" not in done.stdout + done.stderr


def test_a_service_that_never_answers_fails_within_the_timeouts(profile_variant: Variant) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"

        def mutate(data: dict[str, Any]) -> None:
            data["services"][0]["url"] = url
            data["timeouts"] = {"connect": "1s", "request": "1s"}

        started = time.monotonic()
        done = check(profile_variant(mutate), "--connect")
        elapsed = time.monotonic() - started
    assert elapsed < 30
    assert done.returncode == 1
    assert failed(rows(done.stdout)) == {
        ("photonic-foundry", "service"):
            "FAILED: no answer within the 1s request timeout: check host, port and firewall"
    }


def test_restore_role_without_createdb_fails_naming_the_grant(
    profile_variant: Variant, sandbox: Profile, sandbox_profile: Path, tmp_path: Path
) -> None:
    import psycopg

    superuser = (sandbox_profile.parent / "secrets" / "pg_superuser.pass").read_text().strip()
    db = sandbox.databases[0]
    role = f"opsverify_test_nocreatedb_{free_port()}"
    admin = {"host": db.host, "port": db.port, "dbname": "postgres", "user": "postgres", "password": superuser,
             "autocommit": True, "connect_timeout": 10}
    (tmp_path / "role.pass").write_text("a-role-password-77\n")
    with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'a-role-password-77'")
    try:
        path = profile_variant(lambda d: d["restore_target"].update(
            user=role, password_file=str(tmp_path / "role.pass")))
        done = check(path, "--connect")
    finally:
        with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
            conn.execute(f"DROP ROLE IF EXISTS {role}")
            assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,)).fetchone() == (0,)
    assert done.returncode == 1
    (key, result), = failed(rows(done.stdout)).items()
    assert key == ("restore-target", "restore target")
    assert result.startswith("FAILED: PostgreSQL 15")
    assert result.endswith(f"as {role}, which may not create databases: ALTER ROLE {role} CREATEDB")


def test_rpo_shorter_than_the_fastest_declared_path_warns_without_changing_the_exit(
    profile_variant: Variant,
) -> None:
    def daily_only(data: dict[str, Any]) -> None:
        for db in data["databases"]:
            for key in ("wal_archiving", "wal_archive", "base_backups"):
                db.pop(key, None)
        for source in data["backups"]:
            if source["name"] == "redis-rdb":
                source["schedule"] = "1d"

    done = check(profile_variant(daily_only))
    assert done.returncode == 0
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: objective database: RPO 1h, but the fastest declared recovery path of database photonic_foundry "
        "(drill pf-database-custom) is backup pf-postgres-custom every 1d (declare wal_archiving with wal_archive "
        "and base_backups (point-in-time recovery), a more frequent backup, or relax the RPO)",
        "warning: objective database: RPO 1h, but the fastest declared recovery path of database quantum_planner "
        "(drill qp-database-gzip) is backup qp-database-daily every 1d (declare wal_archiving with wal_archive "
        "and base_backups (point-in-time recovery), a more frequent backup, or relax the RPO)",
        "warning: objective full-system: RPO 4h, but the fastest declared recovery path of redis cache "
        "(drill cache-rdb) is backup redis-rdb every 1d (declare a more frequent backup, or relax the RPO)",
    ]


def test_a_pytest_run_shows_the_rpo_warning_at_its_start_and_end(
    run_checks: Callable[..., Any], profile_variant: Variant
) -> None:
    def no_pitr(data: dict[str, Any]) -> None:
        for key in ("wal_archiving", "wal_archive", "base_backups"):
            data["databases"][1].pop(key, None)

    run = run_checks(profile_variant(no_pitr), "recovery/test_objectives.py")
    warning = (
        "opsverify warning: objective database: RPO 1h, but the fastest declared recovery path of database "
        "quantum_planner (drill qp-database-gzip) is backup qp-database-daily every 1d (declare wal_archiving with "
        "wal_archive and base_backups (point-in-time recovery), a more frequent backup, or relax the RPO)"
    )
    lines = run.result.stdout.lines
    assert lines.count(warning) == 2
    assert lines.index(warning) < next(i for i, line in enumerate(lines) if "test_objectives.py" in line)


def test_point_in_time_recovery_or_a_frequent_backup_silences_the_warning(sandbox: Profile) -> None:
    assert rpo_warnings(sandbox) == []  # WAL archive + base backups for the databases, hourly RDB copies


def test_shipped_profiles_warn_where_their_runbook_cannot_meet_its_rpo() -> None:
    qp = load_profile(ROOT / "environments" / "quantum-planner.yaml", {})
    assert rpo_warnings(qp) == [
        "objective database: RPO 1h, but the fastest declared recovery path of database quantum_planner (drill "
        "database-daily) is backup database-daily every 1d (declare wal_archiving with wal_archive and base_backups "
        "(point-in-time recovery), a more frequent backup, or relax the RPO)"
    ]
    pf = load_profile(ROOT / "environments" / "photonic-foundry.yaml", {})
    assert rpo_warnings(pf) == [
        "objective full-system: RPO 4h, but the fastest declared recovery path of redis cache (drill cache-rdb) is "
        "backup redis-rdb every 7d (declare a more frequent backup, or relax the RPO)"
    ]


def test_shipped_profile_switches_point_in_time_recovery_off_by_variables_and_then_warns() -> None:
    off = {"PF_WAL_ARCHIVING": "false", "PF_WAL_ARCHIVE": "", "PF_BASE_BACKUPS": ""}
    pf = load_profile(ROOT / "environments" / "photonic-foundry.yaml", off)
    db = pf.database("photonic_foundry")
    assert (db.wal_archiving, db.wal_archive, db.base_backups) == (False, None, None)
    assert [w.split(" is backup ")[0].split(" (")[-1].rstrip(")") for w in rpo_warnings(pf)] == [
        "drill database-daily", "drill cache-rdb"]  # postgres-custom is on_demand: not drilled
    qp = load_profile(ROOT / "environments" / "quantum-planner.yaml", {"QP_S3_ENDPOINT": "http://minio:9000"})
    assert {b.offsite.endpoint_url for b in qp.backups if b.offsite} == {"http://minio:9000"}
    qp_aws = load_profile(ROOT / "environments" / "quantum-planner.yaml", {})
    assert {b.offsite.endpoint_url for b in qp_aws.backups if b.offsite} == {None}
