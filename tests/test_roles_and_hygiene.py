"""Roles (the backup jobs' own role beside the monitoring role) and backup-directory hygiene (strays).

Faults are real: a throwaway PostgreSQL cluster of the test's own whose monitoring role may read the
tables but not their sequences (as a runbook's ``photonic_monitor``), a wrong password; copies of a
sandbox backup series in ``tmp_path`` with a stray file added.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opsverify.localserver.net import free_port
from opsverify.localserver.postgres import Cluster
from opsverify.profile import load_profile
from opsverify.sandbox.postgres import serve_sandbox_tls

Run = Callable[..., Any]
Variant = Callable[..., Path]
DUMP_CHECK = "backup/test_backup_jobs.py::test_fresh_dump_is_complete"
DUMP = "test_backup_jobs.py::test_fresh_dump_is_complete[photonic_foundry]"
MONITOR, BACKUP = "photonic_monitor", "photonic_backup"
OUTSIDER = "photonic_outsider"  # may log in, but not CONNECT to photonic_foundry


@dataclass(frozen=True)
class RolesServer:
    """A cluster of the test's own: ``photonic_foundry`` with a serial-keyed table, a monitoring role that may
    SELECT its tables (not its sequences) and a backup role with ``pg_read_all_data``."""

    port: int
    monitor_password: Path
    backup_password: Path


@pytest.fixture(scope="module")
def roles_server(tmp_path_factory: pytest.TempPathFactory, sandbox_profile: Path) -> Iterator[RolesServer]:
    from psycopg import sql

    secrets = tmp_path_factory.mktemp("roles")
    base = Path("/tmp") / f"opsverify-test-roles-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(base, os.geteuid() == 0, free_port(), "superuser-secret")
    cluster.initdb({})
    serve_sandbox_tls(cluster, load_profile(sandbox_profile).databases[0].sslrootcert)  # the profile says verify-full
    try:
        cluster.start()
        with cluster.connect() as conn:
            for role, password in ((MONITOR, "monitor-secret"), (BACKUP, "backup-secret")):
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)))
            conn.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(BACKUP)))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'outsider-secret'").format(sql.Identifier(OUTSIDER)))
            conn.execute("CREATE DATABASE photonic_foundry")
            conn.execute("REVOKE CONNECT ON DATABASE photonic_foundry FROM PUBLIC")
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE photonic_foundry TO {}, {}").format(
                sql.Identifier(MONITOR), sql.Identifier(BACKUP)))
        with cluster.connect("photonic_foundry") as conn:
            conn.execute("CREATE TABLE simulations (id serial PRIMARY KEY, status text)")
            conn.execute("INSERT INTO simulations (status) SELECT 'completed' FROM generate_series(1, 50)")
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(MONITOR)))
        (secrets / "monitor.pass").write_text("monitor-secret\n")
        (secrets / "backup.pass").write_text("backup-secret\n")
        (secrets / "outsider.pass").write_text("outsider-secret\n")
        yield RolesServer(cluster.port, secrets / "monitor.pass", secrets / "backup.pass")
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert not base.exists()


def on_roles_server(server: RolesServer, tmp_path: Path, **backup: str) -> Callable[[dict[str, Any]], None]:
    """The profile's photonic_foundry moved to ``server`` as its monitoring role, with ``backup`` keys (if any)."""

    def mutate(data: dict[str, Any]) -> None:
        data["scratch_dir"] = str(tmp_path / "scratch")
        database = {k: v for k, v in data["databases"][0].items() if not k.startswith("backup_")}
        database.update(port=server.port, user=MONITOR, password_file=str(server.monitor_password), **backup)
        for key in ("wal_archiving", "wal_archive", "base_backups"):
            database.pop(key, None)
        data["databases"] = [database]
        data["replicas"] = []

    (tmp_path / "scratch").mkdir(exist_ok=True)
    return mutate


def test_dump_as_the_monitoring_role_is_refused_naming_the_role_and_the_field(
    run_checks: Run, profile_variant: Variant, roles_server: RolesServer, tmp_path: Path
) -> None:
    run = run_checks(profile_variant(on_roles_server(roles_server, tmp_path)), DUMP_CHECK)
    assert run.failed() == {DUMP}
    assert run.message(DUMP) == (
        f"pg_dump of photonic_foundry at 127.0.0.1:{roles_server.port} as role {MONITOR} (the monitoring user; "
        "declare backup_user) was refused: permission denied for sequence simulations_id_seq"
    )
    assert list((tmp_path / "scratch").iterdir()) == []


def test_dump_as_the_declared_backup_role_passes(
    run_checks: Run, profile_variant: Variant, roles_server: RolesServer, tmp_path: Path
) -> None:
    backup = {"backup_user": BACKUP, "backup_password_file": str(roles_server.backup_password)}
    run = run_checks(profile_variant(on_roles_server(roles_server, tmp_path, **backup)), DUMP_CHECK)
    assert run.failed() == set()
    assert run.outcome(DUMP) == "passed"
    assert run.checks[DUMP]["evidence"]["dump_role"] == f"role {BACKUP} (the backup user)"
    assert list((tmp_path / "scratch").iterdir()) == []


def test_backup_role_with_a_wrong_password_fails_naming_that_role(
    run_checks: Run, profile_variant: Variant, roles_server: RolesServer, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")
    backup = {"backup_user": BACKUP, "backup_password_file": str(wrong)}
    run = run_checks(profile_variant(on_roles_server(roles_server, tmp_path, **backup)), DUMP_CHECK)
    assert run.failed() == {DUMP}
    assert run.message(DUMP) == (
        f"pg_dump of photonic_foundry at 127.0.0.1:{roles_server.port} as role {BACKUP} (the backup user) was "
        f'refused: password authentication failed for user "{BACKUP}"'
    )
    assert "not-the-password" not in run.result.stdout.str()


ROLES_CHECK = "backup/test_backup_integrity.py::test_globals_backup_creates_every_role_the_database_needs"
ROLES = "test_backup_integrity.py::test_globals_backup_creates_every_role_the_database_needs[pg-globals]"


def test_a_read_refused_to_the_monitoring_role_names_it(
    run_checks: Run, profile_variant: Variant, roles_server: RolesServer, tmp_path: Path
) -> None:
    def mutate(data: dict[str, Any]) -> None:
        on_roles_server(roles_server, tmp_path, backup_user=BACKUP,
                        backup_password_file=str(roles_server.backup_password))(data)
        data["databases"][0].update(user=OUTSIDER, password_file=str(roles_server.monitor_password.parent /
                                                                     "outsider.pass"))
        data["backups"] = [s for s in data["backups"] if s["name"] == "pg-globals"]

    run = run_checks(profile_variant(mutate), ROLES_CHECK)
    assert run.failed() == {ROLES}
    assert run.message(ROLES) == (
        f"cannot read the roles of database photonic_foundry (127.0.0.1:{roles_server.port}/photonic_foundry): "
        f'permission denied for database "photonic_foundry" (as role {OUTSIDER}, the monitoring user)'
    )


def test_sandbox_declares_its_backup_role_and_dumps_with_it(
    run_checks: Run, profile_variant: Variant, tmp_path: Path
) -> None:
    from opsverify.sandbox.postgres import BACKUP_ROLE

    def mutate(data: dict[str, Any]) -> None:
        data["scratch_dir"] = str(tmp_path / "scratch")
        assert data["databases"][0]["backup_user"] == BACKUP_ROLE
        data["databases"] = data["databases"][:1]

    (tmp_path / "scratch").mkdir()
    run = run_checks(profile_variant(mutate), DUMP_CHECK)
    assert run.failed() == set()
    assert run.checks[DUMP]["evidence"]["dump_role"] == f"role {BACKUP_ROLE} (the backup user)"


def test_backup_password_written_in_clear_is_refused(tmp_path: Path) -> None:
    from opsverify.errors import ProfileError
    from opsverify.profile import load_profile

    profile = tmp_path / "p.yaml"
    profile.write_text(
        "name: p\ndatabases:\n  - name: db\n    dbname: db\n    user: monitor\n    backup_user: backup\n"
        "    backup_password: hunter2\n"
    )
    with pytest.raises(ProfileError) as err:
        load_profile(profile, environ={})
    assert "databases[0].backup_password (line 7): a secret must not be written in the profile" in str(err.value)
    assert "hunter2" not in str(err.value)
    profile.write_text(
        "name: p\ndatabases:\n  - name: db\n    dbname: db\n    user: monitor\n    backup_user: backup\n"
        "    backup_password: ${PF_BACKUP_PASSWORD}\n"
    )
    loaded = load_profile(profile, environ={"PF_BACKUP_PASSWORD": "s3cret"})
    assert loaded.databases[0].backup_secret() == "s3cret"
    assert "s3cret" not in repr(loaded.databases[0]) + str(loaded.model_dump())


DIRECTORY_CHECK = "backup/test_backup_directory.py"
STRAY = "test_backup_directory.py::test_backup_directory_holds_no_old_stray[{}]"
DAY = 86400


@pytest.fixture
def series_copy(sandbox_profile: Path, tmp_path: Path) -> tuple[Path, Callable[[dict[str, Any]], None]]:
    """A copy of the sandbox's qp-database-daily series (dumps and manifests, mtimes kept) in ``tmp_path``, with a
    declared ``wal_archive`` nested inside it holding a 40-day-old segment; the profile change that points at it."""
    import yaml

    source = next(s for s in yaml.safe_load(sandbox_profile.read_text())["backups"] if s["name"] == "qp-database-daily")
    copy = tmp_path / "database"
    shutil.copytree(source["path"], copy)
    archive = copy / "wal_archive"  # a directory of another kind inside: never reported file by file
    archive.mkdir()
    segment = archive / "000000010000000000000001"
    segment.write_bytes(b"\0" * 1024)
    os.utime(segment, (segment.stat().st_atime, segment.stat().st_mtime - 40 * DAY))

    def mutate(data: dict[str, Any]) -> None:
        kept = {**next(s for s in data["backups"] if s["name"] == "qp-database-daily"), "path": str(copy)}
        kept.pop("offsite", None)
        data["backups"] = [kept]
        data["drills"] = []
        quantum = next(d for d in data["databases"] if d["name"] == "quantum_planner")
        quantum["wal_archive"] = str(archive)

    return copy, mutate


def test_a_stray_dump_40_days_old_fails_naming_it_its_size_and_age(
    run_checks: Run, profile_variant: Variant, series_copy: tuple[Path, Callable[[dict[str, Any]], None]]
) -> None:
    copy, mutate = series_copy
    stray = copy / "backup_20261020.sql"  # a manual uncompressed dump beside the series: no pattern matches it
    stray.write_bytes(b"-- PostgreSQL database dump\n" * 2000)
    os.utime(stray, (stray.stat().st_atime, stray.stat().st_mtime - 40 * DAY))
    run = run_checks(profile_variant(mutate), DIRECTORY_CHECK)
    test = STRAY.format(copy)
    assert run.failed() == {test}
    assert run.message(test) == (
        f"backup directory {copy} holds 1 file(s) no backup source's pattern matches older than stray_max_age 7d; "
        "the oldest, backup_20261020.sql, is 54.7 KiB and 40d old: declare a backup source whose pattern matches "
        "it, or delete it"
    )
    evidence = run.checks[test]["evidence"]
    assert evidence["strays"] == "backup_20261020.sql (54.7 KiB, 40d old)"  # the nested wal_archive is not listed
    assert int(evidence["total_bytes"]) == sum(p.stat().st_size for p in copy.iterdir() if p.is_file())


def test_a_fresh_stray_passes_and_is_in_the_evidence(
    run_checks: Run, profile_variant: Variant, series_copy: tuple[Path, Callable[[dict[str, Any]], None]]
) -> None:
    copy, mutate = series_copy
    (copy / "backup_20261129.sql").write_bytes(b"x" * 300)
    orphan = next(copy.glob("*.manifest.json"))  # a manifest whose backup is gone is a stray too
    orphan.with_name(orphan.name.removesuffix(".manifest.json")).unlink()
    run = run_checks(profile_variant(mutate), DIRECTORY_CHECK)
    test = STRAY.format(copy)
    assert run.failed() == set()
    assert run.outcome(test) == "passed"
    strays = run.checks[test]["evidence"]["strays"]
    assert f"{orphan.name} (" in strays
    assert re.search(r"; backup_20261129\.sql \(300 bytes, \d+s old\)$", strays), strays


def test_the_healthy_sandbox_has_no_stray(run_checks: Run, sandbox_profile: Path, sandbox: Any) -> None:
    run = run_checks(sandbox_profile, DIRECTORY_CHECK)
    assert run.failed() == set()
    directories = {str(Path(s.path)) for s in sandbox.backups}
    assert {STRAY.format(d) for d in directories} == set(run.checks)
    assert all(c["evidence"]["strays"] == "" and int(c["evidence"]["total_bytes"]) > 0 for c in run.checks.values())


def test_a_stray_on_an_ssh_host_is_found_through_find(
    run_checks: Run, profile_variant: Variant, series_copy: tuple[Path, Callable[[dict[str, Any]], None]], sshd: Any
) -> None:
    copy, local = series_copy
    shutil.rmtree(copy / "wal_archive")  # a database's wal_archive is a path here: not one on the ssh host
    stray = copy / "backup_20261020.sql"
    stray.write_bytes(b"x" * 3 * 1024 * 1024)
    os.utime(stray, (stray.stat().st_atime, stray.stat().st_mtime - 40 * DAY))
    (copy / "old_dumps").mkdir()  # an undeclared subdirectory: one entry, its total size, its newest time
    (copy / "old_dumps" / "a.sql").write_bytes(b"y" * 2048)

    def mutate(data: dict[str, Any]) -> None:
        local(data)
        user = os.environ.get("USER") or "root"
        data["hosts"] = [{
            "name": "backup-host", "uri": f"ssh://{user}@127.0.0.1:{sshd.port}", "ssh_config": str(sshd.ssh_config),
            "ssh_identity_file": str(sshd.identity),
        }]
        data["backups"][0]["host"] = "backup-host"

    run = run_checks(profile_variant(mutate), DIRECTORY_CHECK)
    test = STRAY.format(f"backup-host:{copy}")
    assert run.failed() == {test}
    assert run.message(test) == (
        f"backup directory backup-host:{copy} holds 1 file(s) no backup source's pattern matches older than "
        "stray_max_age 7d; the oldest, backup_20261020.sql, is 3.0 MiB and 40d old: declare a backup source whose "
        "pattern matches it, or delete it"
    )
    strays = run.checks[test]["evidence"]["strays"]
    assert strays.startswith("backup_20261020.sql (3.0 MiB, 40d old); old_dumps/ (2.0 KiB, "), strays


def test_a_stray_in_an_s3_prefix_is_in_the_evidence(
    run_checks: Run, profile_variant: Variant, series_copy: tuple[Path, Callable[[dict[str, Any]], None]],
    bucket: tuple[Any, dict[str, Any]],
) -> None:
    copy, local = series_copy
    s3, settings = bucket
    url = settings["url"]
    prefix = url.removeprefix("s3://").partition("/")[2]
    bucket_name = url.removeprefix("s3://").partition("/")[0]
    dumps = sorted(copy.glob("quantum_planner_*.sql.gz"))[-2:]
    for path in [*dumps, copy / "notes.txt"]:
        body = path.read_bytes() if path.exists() else b"left by hand\n"
        s3.put_object(Bucket=bucket_name, Key=prefix + path.name, Body=body)
    s3.put_object(Bucket=bucket_name, Key=prefix + "deeper/x.sql", Body=b"a deeper folder is not listed")

    def mutate(data: dict[str, Any]) -> None:
        local(data)
        access = {k: settings[k] for k in ("endpoint_url", "region", "access_key_id", "secret_access_key_file")}
        data["backups"][0].update(path=url, s3=access)

    run = run_checks(profile_variant(mutate), DIRECTORY_CHECK)
    test = STRAY.format(url)
    assert run.failed() == set()
    evidence = run.checks[test]["evidence"]
    assert re.fullmatch(r"notes\.txt \(13 bytes, \d+s old\)", evidence["strays"]), evidence["strays"]
    assert int(evidence["total_bytes"]) == sum(p.stat().st_size for p in dumps) + 13


def test_reads_refused_to_the_monitoring_role_name_it_in_session_archiver_slots_and_source_compare(
    run_checks: Run, profile_variant: Variant, roles_server: RolesServer, sandbox_profile: Path, tmp_path: Path
) -> None:
    """A monitoring role that may log in but not CONNECT to the database: the session, pg_stat_archiver,
    pg_replication_slots and a drill's compare_with_source each name the role the server refused."""
    import yaml

    sources = yaml.safe_load(sandbox_profile.read_text())["backups"]
    custom = next(s for s in sources if s["name"] == "pf-postgres-custom")
    newest = max(Path(custom["path"]).glob(custom["pattern"]), key=lambda p: p.stat().st_mtime)
    copied = tmp_path / "copied"
    copied.mkdir()
    shutil.copy2(newest, copied / newest.name)  # no manifest: the drill compares with the source
    source = {"name": "pf-copied", "kind": "postgres", "path": str(copied), "pattern": "backup_*.dump"}

    def mutate(data: dict[str, Any]) -> None:
        on_roles_server(roles_server, tmp_path)(data)
        data["databases"][0].update(user=OUTSIDER, wal_archiving=True,
                                    password_file=str(roles_server.monitor_password.parent / "outsider.pass"))
        drill = next(d for d in data["drills"] if d["name"] == "pf-database-custom")
        data["backups"] = [source]
        data["drills"] = [{**drill, "backup": "pf-copied", "compare_with_source": True}]

    run = run_checks(profile_variant(mutate), "health/test_postgres.py", "recovery/test_wal_archiving.py",
                     "recovery/test_replication_slots.py", "restore/test_database_drill.py")
    where = f"127.0.0.1:{roles_server.port}"
    refused = f'permission denied for database "photonic_foundry" (as role {OUTSIDER}, the monitoring user)'
    db = "[photonic_foundry]"
    drill = "[pf-database-custom]"
    session = {f"test_postgres.py::{t}{db}" for t in ("test_database_accepts_a_session",
                                                       "test_database_connects_within_budget")}
    archiver = {f"test_wal_archiving.py::{t}{db}" for t in ("test_wal_archive_lag_is_within_rpo",
                                                             "test_wal_archiving_is_not_failing")}
    slots = f"test_replication_slots.py::test_no_inactive_slot_retains_wal{db}"
    compare = {f"test_database_drill.py::{t}{drill}" for t in ("test_restored_row_counts_match_the_backup",
                                                              "test_restored_tables_match_their_checksums")}
    writes = f"test_postgres.py::test_database_role_cannot_write{db}"
    assert run.failed() == session | archiver | compare | {slots, writes}, run.result.stdout.str()
    for test in session:
        assert run.message(test) == (
            f"database photonic_foundry at {where}/photonic_foundry refused a session: {refused}")
    for test in archiver:
        assert run.message(test) == f"cannot read pg_stat_archiver of photonic_foundry at {where}: {refused}"
    assert run.message(slots) == f"cannot read pg_replication_slots of photonic_foundry at {where}: {refused}"
    cause = (f"source photonic_foundry is unreadable ({refused}); compare_with_source is on and no manifest is beside "
             "the backup")
    for test in compare:
        what = "row counts" if "row_counts" in test else "checksums"
        assert run.message(test) == f"drill pf-database-custom: cannot compare {what}: {cause}"


def test_a_part_file_older_than_stray_max_age_is_a_stray_and_a_fresh_one_is_not(
    run_checks: Run, profile_variant: Variant, series_copy: tuple[Path, Callable[[dict[str, Any]], None]]
) -> None:
    copy, mutate = series_copy
    newest = max(copy.glob("quantum_planner_*.sql.gz"), key=lambda p: p.stat().st_mtime)
    killed = copy / "quantum_planner_20261119_020000.sql.gz.part"  # a job killed 10 days ago while writing it
    killed.write_bytes(b"\x1f\x8b" + b"\0" * (2 * 1024 * 1024 - 2))
    os.utime(killed, (killed.stat().st_atime, killed.stat().st_mtime - 10 * DAY))
    writing = copy / (newest.name.replace(".sql.gz", "_next.sql.gz") + ".part")  # a job writing right now
    writing.write_bytes(b"\x1f\x8b" + b"\0" * 1000)
    run = run_checks(profile_variant(mutate), DIRECTORY_CHECK)
    test = STRAY.format(copy)
    assert run.failed() == {test}
    assert run.message(test) == (
        f"backup directory {copy} holds 1 file(s) no backup source's pattern matches older than stray_max_age 7d; "
        f"the oldest, {killed.name}, is 2.0 MiB and 10d old: declare a backup source whose pattern matches it, or "
        "delete it"
    )
    assert run.checks[test]["evidence"]["strays"] == f"{killed.name} (2.0 MiB, 10d old)"  # the fresh .part is exempt
    killed.unlink()
    assert run_checks(profile_variant(mutate), DIRECTORY_CHECK).failed() == set()
