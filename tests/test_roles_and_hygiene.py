"""Roles (the backup jobs' own role beside the monitoring role) and backup-directory hygiene (strays).

Faults are real: a throwaway PostgreSQL cluster of the test's own whose monitoring role may read the
tables but not their sequences (as a runbook's ``photonic_monitor``), a wrong password; copies of a
sandbox backup series in ``tmp_path`` with a stray file added.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opsverify.localserver.net import free_port
from opsverify.localserver.postgres import Cluster

Run = Callable[..., Any]
Variant = Callable[..., Path]
DUMP_CHECK = "backup/test_backup_jobs.py::test_fresh_dump_is_complete"
DUMP = "test_backup_jobs.py::test_fresh_dump_is_complete[photonic_foundry]"
MONITOR, BACKUP = "photonic_monitor", "photonic_backup"


@dataclass(frozen=True)
class RolesServer:
    """A cluster of the test's own: ``photonic_foundry`` with a serial-keyed table, a monitoring role that may
    SELECT its tables (not its sequences) and a backup role with ``pg_read_all_data``."""

    port: int
    monitor_password: Path
    backup_password: Path


@pytest.fixture(scope="module")
def roles_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RolesServer]:
    from psycopg import sql

    secrets = tmp_path_factory.mktemp("roles")
    base = Path("/tmp") / f"opsverify-test-roles-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(base, os.geteuid() == 0, free_port(), "superuser-secret")
    cluster.initdb({})
    try:
        cluster.start()
        with cluster.connect() as conn:
            for role, password in ((MONITOR, "monitor-secret"), (BACKUP, "backup-secret")):
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)))
            conn.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(BACKUP)))
            conn.execute("CREATE DATABASE photonic_foundry")
        with cluster.connect("photonic_foundry") as conn:
            conn.execute("CREATE TABLE simulations (id serial PRIMARY KEY, status text)")
            conn.execute("INSERT INTO simulations (status) SELECT 'completed' FROM generate_series(1, 50)")
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(MONITOR)))
        (secrets / "monitor.pass").write_text("monitor-secret\n")
        (secrets / "backup.pass").write_text("backup-secret\n")
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
