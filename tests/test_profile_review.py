"""Issue 9, review of profiles as a new user: secrets never as defaults, cross-reference gaps, values from
the environment named in errors, a mistyped --profile, the RPO warning per database, --connect output."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_profile import problems, write

from opsverify.profile import load_profile

ROOT = Path(__file__).resolve().parents[1]




def opsverify(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opsverify", *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
        env=env,
    )


# 1. a secret is never written in the profile, not even as a default ---------------------------------------------


def test_a_secret_written_as_a_default_is_refused_without_showing_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: x\n"
        "databases:\n"
        "  - {name: pf, dbname: pf, user: u, password: '${PF_DB_PASSWORD:-hunter2}'}\n"
        "  - {name: pg, dbname: pf, user: u, backup_user: b, backup_password: '${PF_BACKUP_PASSWORD-hunter2}'}\n"
        "redis: [{name: c, password: $$}]\n",
    )
    found = problems(path, {"PF_DB_PASSWORD": "s3cret"})
    assert found == [
        "databases[0].password (line 3): a secret must not be written in the profile, not even as the default of "
        "${PF_DB_PASSWORD}: write ${PF_DB_PASSWORD} (or ${PF_DB_PASSWORD:-} for none), or use password_file",
        "databases[1].backup_password (line 4): a secret must not be written in the profile, not even as the default "
        "of ${PF_BACKUP_PASSWORD}: write ${PF_BACKUP_PASSWORD} (or ${PF_BACKUP_PASSWORD:-} for none), or use "
        "backup_password_file",
        "redis[0].password (line 5): a secret must not be written in the profile: use ${VAR} or password_file",
    ]
    assert not any("hunter2" in p for p in found)


def test_a_secret_from_a_variable_or_an_empty_default_is_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: x\n"
        "databases:\n"
        "  - {name: pf, dbname: pf, user: u, password: '${PF_DB_PASSWORD}'}\n"
        "  - {name: pg, dbname: pf, user: u, password: '${PF_NONE:-}'}\n"
        "  - {name: ph, dbname: pf, user: u, password: '${PF_NONE-}'}\n",
    )
    profile = load_profile(path, {"PF_DB_PASSWORD": "s3cret"})
    assert [d.secret() for d in profile.databases] == ["s3cret", None, None]


# 2. cross-reference gaps, all in one pass -----------------------------------------------------------------------


def test_drills_objectives_and_doubled_secrets_are_cross_checked_in_one_pass(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    path = write(
        tmp_path,
        "name: x\n"
        "databases:\n"
        "  - {name: db, dbname: pf, user: u, password: '${PW}', password_file: pw}\n"
        "  - {name: db2, dbname: pf, user: u, backup_user: b, backup_password: '${PW}', backup_password_file: pw}\n"
        "redis: [{name: cache, password: '${PW}', password_file: pw}]\n"
        "backups:\n"
        "  - {name: rdb, kind: redis, path: /r}\n"
        "  - {name: dump, kind: postgres, path: /d, database: db}\n"
        "  - name: s3dump\n"
        "    kind: postgres\n"
        "    path: s3://bucket/dumps/\n"
        "    s3: {secret_access_key: '${PW}', secret_access_key_file: pw}\n"
        "drills:\n"
        "  - {name: d1, backup: rdb, database: db}\n"
        "  - {name: d2, backup: dump, redis: cache}\n"
        "  - {name: d3, backup: dump, database: db2}\n"
        "  - {name: d4, backup: dump, database: db, source_quiescent: true, row_tolerance: {percent: 10}}\n"
        "  - {name: d5, backup: dump, database: db, compare_with_source: true, source_quiescent: true,\n"
        "     row_tolerance: {percent: 10}, append_only: [events]}\n"
        "replicas: [{name: r, primary: db, dbname: pf, user: u, max_lag: 1m, replication_user: rep,\n"
        "            replication_password: '${PW}', replication_password_file: pw}]\n"
        "restore_target: {user: staging, password: '${PW}', password_file: pw}\n"
        "objectives:\n"
        "  - {component: database, rto: 30m, rpo: 1h}\n"
        "  - {component: database, rto: 1h, rpo: 1d}\n",
    )
    both = "and which one is used would be a guess: keep one"
    assert problems(path, {"PW": "s3cret"}) == [
        f"databases[0].password_file (line 3): both password and password_file are set, {both}",
        f"databases[1].backup_password_file (line 4): both backup_password and backup_password_file are set, {both}",
        f"redis[0].password_file (line 5): both password and password_file are set, {both}",
        f"backups[2].s3.secret_access_key_file (line 12): both secret_access_key and secret_access_key_file are set, "
        f"{both}",
        "drills[0].backup (line 14): backup 'rdb' is kind: redis (backups[0]), but a drill with database: restores "
        "a kind: postgres backup: name one",
        "drills[1].backup (line 15): backup 'dump' is kind: postgres (backups[1]), but a drill with redis: restores "
        "a kind: redis backup: name one",
        "drills[2].database (line 16): backup 'dump' backs up database 'db' (backups[1].database), not 'db2': name "
        "the same database in both",
        "drills[3].row_tolerance (line 17): row_tolerance is used only with compare_with_source: true (a manifest "
        "compares exactly): set that, or drop it",
        "drills[3].source_quiescent (line 17): source_quiescent is used only with compare_with_source: true (the "
        "source is never read otherwise): set that, or drop it",
        f"replicas[0].replication_password_file (line 21): both replication_password and replication_password_file "
        f"are set, {both}",
        f"restore_target.password_file (line 22): both password and password_file are set, {both}",
        "objectives[1].component (line 25): component 'database' has an objective already (objectives[0]), and only "
        "the first would count: keep one",
    ]


def test_an_empty_inline_secret_beside_its_file_is_one_secret(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    path = write(tmp_path, "name: x\ndatabases: [{name: db, dbname: pf, user: u, password: '${PW:-}', "
                           "password_file: pw}]\n")
    assert load_profile(path, {}).databases[0].secret() == "s3cret"


# 3. a problem in a value from the environment names the variable -----------------------------------------------


def test_a_bad_value_from_the_environment_names_its_variable_but_never_a_secret(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: x\n"
        "databases:\n"
        "  - name: pf\n"
        "    dbname: pf\n"
        "    user: u\n"
        "    port: ${PF_DB_PORT:-5432}\n"
        "    password: ${PF_DB_PASSWORD}\n"
        "services: [{name: app, url: '${PF_SCHEME}://${PF_HOST}'}]\n"
        "redis: [{name: c, port: '${PF_REDIS_PORT:-abc}', token: '${PF_TOKEN}'}]\n",
    )
    environ = {"PF_DB_PORT": "abc", "PF_DB_PASSWORD": "s3cret", "PF_SCHEME": "ftp", "PF_HOST": "h", "PF_TOKEN": "t0k"}
    found = problems(path, environ)
    assert found == [
        'databases[0].port (line 6): Input should be a valid integer, unable to parse string as an integer '
        '(the value "abc" of ${PF_DB_PORT})',
        "services[0].url (line 8): 'ftp://h' is not an http:// or https:// URL "
        '(the value "ftp" of ${PF_SCHEME}, the value "h" of ${PF_HOST})',
        "redis[0].port (line 9): Input should be a valid integer, unable to parse string as an integer",
        "redis[0].token (line 9): unknown key (check the spelling; `opsverify profile schema` lists the keys) "
        "(from ${PF_TOKEN})",
    ]
    assert not any("s3cret" in p or "t0k" in p for p in found)


# 4. a mistyped --profile is a mistyped path, not a missing sandbox ---------------------------------------------


def _run_checks_with(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        str(ROOT / "checks"), "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), *args, "--no-reports",
        timeout=60,
    )


def test_a_mistyped_profile_path_says_only_that_it_does_not_exist(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = tmp_path / "rv" / "pff.yaml"
    monkeypatch.delenv("OPSVERIFY_PROFILE", raising=False)
    result = _run_checks_with(pytester, f"--profile={absent}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: no profile at {absent} (named by --profile): the file does not exist, check the path" in (
        result.stderr.lines
    )
    assert "make demo" not in result.stderr.str()
    monkeypatch.setenv("OPSVERIFY_PROFILE", str(absent))
    result = _run_checks_with(pytester)
    assert f"ERROR: no profile at {absent} (named by OPSVERIFY_PROFILE): the file does not exist, check the path" in (
        result.stderr.lines
    )


def test_without_a_named_profile_a_missing_sandbox_profile_suggests_the_sandbox(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPSVERIFY_PROFILE", raising=False)
    copy = tmp_path / "checkout"  # a checkout without .sandbox/: its own rootdir and configuration
    copy.mkdir()
    (copy / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    shutil.copytree(ROOT / "checks", copy / "checks", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "fixtures").symlink_to(ROOT / "fixtures")
    (copy / "conftest.py").symlink_to(ROOT / "conftest.py")
    result = pytester.runpytest_subprocess(str(copy / "checks"), "--rootdir", str(copy), "-c",
                                           str(copy / "pyproject.toml"), "--no-reports", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        f"ERROR: no profile at {copy / '.sandbox' / 'profile.yaml'}: start the sandbox with `make demo` (or "
        "`opsverify sandbox up`), or pass --profile=PATH (one word) or set OPSVERIFY_PROFILE=PATH"
    ) in result.stderr.lines


# 5. the RPO warning: once per database, over every backup source of it -----------------------------------------


RPO_PROFILE = (
    "name: x\n"
    "databases: [{name: pf, dbname: pf, user: u}]\n"
    "backups:\n"
    "  - {name: weekly, kind: postgres, path: /w, database: pf, schedule: 7d}\n"
    "  - {name: daily, kind: postgres, path: /d, database: pf, schedule: 1d}\n"
    "  - {name: tables, kind: postgres, path: /t, database: pf, schedule: 1h, scope: tables}\n"
    "drills:\n"
    "  - {name: weekly-drill, backup: weekly, database: pf}\n"
    "  - {name: weekly-again, backup: weekly, database: pf}\n"
    "objectives: [{component: database, rto: 30m, rpo: RPO}]\n"
)


def test_the_rpo_warning_is_once_per_database_and_names_its_fastest_series(tmp_path: Path) -> None:
    from opsverify.profile.advice import rpo_warnings

    profile = load_profile(write(tmp_path, RPO_PROFILE.replace("RPO", "1h")), {})
    assert rpo_warnings(profile) == [
        "objective database: RPO 1h, but the fastest declared recovery path of database pf (drills weekly-drill, "
        "weekly-again) is backup daily every 1d (declare wal_archiving with wal_archive and base_backups "
        "(point-in-time recovery), a more frequent backup, or relax the RPO)"
    ]  # the hourly `scope: tables` series restores some tables only: no recovery path
    assert rpo_warnings(load_profile(write(tmp_path, RPO_PROFILE.replace("RPO", "2d")), {})) == []


# 6. profile check output: grammar, warnings on their own lines, the backup role tried -------------------------


def test_warnings_are_lines_of_their_own_under_2_and_1(tmp_path: Path) -> None:
    path = write(tmp_path, RPO_PROFILE.replace("RPO", "1h"))
    done = subprocess.run([sys.executable, "-m", "opsverify", "profile", "check", str(path)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=60, cwd=ROOT, check=False)
    assert (done.returncode, done.stdout.splitlines()) == (0, [
        f"{path}: profile x (staging) is valid: 0 services, 1 databases, 0 redis, 0 dependencies, 0 hosts, 3 backups",
        "warning: objective database: RPO 1h, but the fastest declared recovery path of database pf (drills "
        "weekly-drill, weekly-again) is backup daily every 1d (declare wal_archiving with wal_archive and base_backups "
        "(point-in-time recovery), a more frequent backup, or relax the RPO)",
    ])


def test_connect_logs_in_as_the_backup_role_and_counts_one_file_in_the_singular(
    profile_variant: Callable[..., Path], sandbox: Any, tmp_path: Path
) -> None:
    from test_profile_connect import check, failed, rows

    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-backup-password-4242\n")
    single = tmp_path / "single"
    single.mkdir()
    (single / "configmaps_backup.yaml").write_text("kind: List\n")
    db = next(d for d in sandbox.databases if d.backup_user is not None)
    index = [d.name for d in sandbox.databases].index(db.name)

    def mutate(data: dict[str, Any]) -> None:
        data["databases"][index]["backup_password_file"] = str(wrong)
        data["backups"].append({"name": "one-export", "kind": "config", "path": str(single), "pattern": "*.yaml"})

    done = check(profile_variant(mutate), "--connect")
    table = rows(done.stdout)
    assert done.returncode == 1
    assert failed(table) == {(db.name, "backup role"): (
        f'FAILED: as role {db.backup_user} (the backup user): password authentication failed for user '
        f'"{db.backup_user}": check backup_user and its backup_password (or backup_password_file)')}
    assert table[("one-export", "backups")] == "ok: 1 file matches *.yaml, newest configmaps_backup.yaml"
    assert "not-the-backup-password-4242" not in done.stdout + done.stderr
