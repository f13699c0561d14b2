"""End to end: the shipped environments/photonic-foundry.yaml, pointed at the test sandbox by its variables only.

The environment is the one a team builds with the runbook's own scripts: a photonic_foundry database
as the runbook describes it (a copy of the sandbox's, with its pg_stat_statements extension, which the
runbook's slow-query procedure reads and only a superuser may create; made here, dropped after,
verified), its daily ``pg_dump | gzip``, ``pg_dump -Fc`` and ``pg_dump -t simulations`` series made here
with those commands and no manifests, back-dated a day apart, the sandbox's Redis, config and archive
backups copied with their times, the backup role the profile declares (the sandbox's ``opsverify_backup``),
the drills restoring as a staging role that is NOT a superuser (``LOGIN CREATEDB``, created here and
dropped after, verified) from a template database the staging DBA prepared once with pg_stat_statements
(``PF_RESTORE_TEMPLATE``; made here, dropped after, verified), and live writes to the source after the
backups (rows inserted into ``simulations``, deleted after, verified). ``pytest -m "daily or dr"`` over it must be
green; the only skips allowed are ones an SRE accepts. ``profile check --connect`` must reach every
component, and a variant with one wrong port must fail exactly that row.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsverify.localserver.net import free_port
from opsverify.pgtools import clean_env, pg_tool

ROOT = Path(__file__).resolve().parents[1]
PF = ROOT / "environments" / "photonic-foundry.yaml"
LIVE_ROWS = 12
# what the runbook's scripts leave, per backup directory, copied from the sandbox (the Redis copies keep their
# manifests, as a runbook script calling `opsverify manifest write` would); the database dumps are made here
DUMP_AGES = (1800, 86400 + 1800, 2 * 86400 + 1800)  # a daily series, the newest half an hour old
RUNBOOK_FILES = {
    "redis": ("redis_backup_*.rdb", "redis_backup_*.rdb.manifest.json"),
    "config": ("*_backup*.yaml",),
    "archives": ("*_backup_*.tar.gz",),
}
# skips an SRE accepts on this environment: what the profile leaves out on purpose or the runbook does not
# describe, and what a runbook backup cannot show (a plain dump names no database, no manifest to bind)
ACCEPTED_SKIPS = tuple(re.compile(p) for p in (
    r"profile photonic-foundry declares no [\w ,:./()-]+",  # replicas, a dependency, globals, offsite copies
    r"profile declares no freshness_metric for photonic-foundry",  # the runbook names no freshness gauge
    r"drill [\w-]+: pg_amcheck off: the drill sets amcheck: false",  # needs a superuser restore role
    r"newest dump \S+ is plain SQL, which names no database: its tables are compared with the live ones instead",
    r"[\w-]+ dumps selected tables \(scope: tables\), not the whole database",  # the pg_dump -t series
    r"no backup of [\w-]+ has a manifest \(<backup>\.manifest\.json\)",  # the runbook's scripts write none
    # live writes change a checksum as damage does: without a manifest, a live source's checksums cannot decide
    r"drill [\w-]+: cannot compare checksums with a live source: .*opsverify manifest write .*",
))


# The shipped profile names no CA variable: it reaches the sandbox's TLS PostgreSQL encrypted, unverified.
SHIPPED_SSLMODE = {"verify-full": "require", "verify-ca": "require"}


@dataclass(frozen=True)
class Sandbox:
    data: dict[str, Any]
    state: Path

    def secret(self, name: str) -> Path:
        return self.state / "secrets" / f"{name}.pass"

    def pg(self) -> dict[str, Any]:
        return dict(self.data["databases"][0])

    def admin(self, dbname: str = "postgres") -> dict[str, Any]:
        db = self.pg()
        return {"host": db["host"], "port": db["port"], "dbname": dbname, "user": "postgres",
                "password": self.secret("pg_superuser").read_text().strip(), "autocommit": True, "connect_timeout": 10}


@pytest.fixture
def box(sandbox_profile: Path) -> Sandbox:
    return Sandbox(yaml.safe_load(sandbox_profile.read_text()), sandbox_profile.parent)


def run_tool(args: list[str], box: Sandbox, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    env = clean_env(PGPASSWORD=box.admin()["password"], PGCONNECT_TIMEOUT="10")
    return subprocess.run(args, env=env, capture_output=True, timeout=120, check=True, **kwargs)


@pytest.fixture
def runbook_database(box: Sandbox) -> Iterator[str]:
    """A copy of photonic_foundry as the sandbox seeds it, with its pg_stat_statements extension (not trusted:
    only a superuser creates it, so the staging role restores its dumps from a template that has it): the
    database the runbook describes. Dropped after, verified."""
    import psycopg

    name = f"opsverify_test_pf_{os.getpid()}"
    db = box.pg()
    conn_args = ["-h", str(db["host"]), "-p", str(db["port"]), "-U", "postgres"]
    with psycopg.connect(**box.admin()) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    dump = run_tool([pg_tool("pg_dump"), *conn_args, "-d", db["dbname"]], box).stdout
    assert b"CREATE EXTENSION IF NOT EXISTS pg_stat_statements" in dump
    run_tool([pg_tool("psql"), *conn_args, "-d", name, "-q", "-v", "ON_ERROR_STOP=1"], box, input=dump)
    yield name
    with psycopg.connect(**box.admin()) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone() == (0,)


@pytest.fixture
def runbook_backups(box: Sandbox, runbook_database: str, tmp_path: Path) -> Path:
    """The backup tree the runbook's scripts leave: its pg_dump series of the runbook database (no manifests),
    back-dated a day apart, and the sandbox's other backups copied with their times."""
    root = tmp_path / "backups"
    for subdir, patterns in RUNBOOK_FILES.items():
        (root / subdir).mkdir(parents=True)
        for pattern in patterns:
            for path in (box.state / "backups" / subdir).glob(pattern):
                if not path.name.endswith(".part"):
                    shutil.copy2(path, root / subdir / path.name)
    pg = root / "postgres"
    pg.mkdir()
    db = box.pg()
    dump = [pg_tool("pg_dump"), "-h", str(db["host"]), "-p", str(db["port"]), "-U", "postgres", "-d", runbook_database]
    now = time.time()
    for age in DUMP_AGES:
        when = time.localtime(now - age)
        made = [
            (pg / time.strftime("backup_%Y%m%d_%H%M%S.sql.gz", when), None),  # the daily script: pg_dump | gzip
            (pg / time.strftime("backup_%Y%m%d.dump", when), "-Fc"),  # manual: custom format
            (pg / time.strftime("simulations_backup_%Y%m%d.sql", when), "-t"),  # manual: one table
            (pg / time.strftime("backup_%Y%m%d.sql", when), "-p"),  # manual: plain SQL
        ]
        for target, flag in made:
            if flag is None:
                target.write_bytes(gzip.compress(run_tool(dump, box).stdout))
            elif flag == "-p":
                target.write_bytes(run_tool(dump, box).stdout)
            elif flag == "-t":
                run_tool([*dump, "-t", "simulations", "-f", str(target)], box)
            else:
                run_tool([*dump, "-Fc", "-f", str(target)], box)
            os.utime(target, (now - age, now - age))
    return root


@pytest.fixture
def restore_template(box: Sandbox) -> Iterator[str]:
    """What the staging DBA runs once as a superuser (README, The staging (restore target) role): a database with
    pg_stat_statements, marked a template. Dropped after (IS_TEMPLATE false first), verified gone."""
    import psycopg

    name = f"opsverify_test_pf_template_{os.getpid()}"
    with psycopg.connect(**box.admin()) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'ALTER DATABASE "{name}" IS_TEMPLATE false')
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        with psycopg.connect(**box.admin(name)) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        with psycopg.connect(**box.admin()) as conn:
            conn.execute(f'ALTER DATABASE "{name}" IS_TEMPLATE true')
        yield name
    finally:
        with psycopg.connect(**box.admin()) as conn:
            conn.execute(f'ALTER DATABASE "{name}" IS_TEMPLATE false')
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone() == (0,)


@pytest.fixture
def staging_role(box: Sandbox, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A restore role that is no superuser: ``LOGIN CREATEDB`` only; dropped after, and proven gone."""
    import psycopg

    role = f"opsverify_test_staging_{os.getpid()}"
    password = tmp_path / "staging.pass"
    password.write_text(f"staging-{os.getpid()}-secret\n")
    with psycopg.connect(**box.admin()) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN CREATEDB NOSUPERUSER PASSWORD '{password.read_text().strip()}'")
    yield role, password
    with psycopg.connect(**box.admin()) as conn:
        owned = conn.execute("SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles "
                             "WHERE rolname = %s)", (role,)).fetchall()
        for (name,) in owned:  # a drill that failed half way (its own check fails on that): not left behind
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,)).fetchone() == (0,)
    assert not owned, f"databases left behind by {role}: {owned}"


@pytest.fixture
def live_writes(box: Sandbox, runbook_database: str, runbook_backups: Path) -> Iterator[int]:
    """Rows written to the source after its backups were taken (deleted after, verified)."""
    import psycopg

    marker = f"opsverify_test_live_{os.getpid()}_%"
    with psycopg.connect(**box.admin(runbook_database)) as conn:
        conn.execute(
            "INSERT INTO simulations (name, model_id, status, wavelength_nm, created_at) "
            "SELECT %s || n, (SELECT min(id) FROM models), 'queued', 1550, now() FROM generate_series(1, %s) n",
            (marker.rstrip("%"), LIVE_ROWS),
        )
    yield LIVE_ROWS
    with psycopg.connect(**box.admin(runbook_database)) as conn:
        conn.execute("DELETE FROM simulations WHERE name LIKE %s", (marker,))
        assert conn.execute("SELECT count(*) FROM simulations WHERE name LIKE %s", (marker,)).fetchone() == (0,)


def pf_variables(
    box: Sandbox, backups: Path, role: str, role_password: Path, dbname: str, template: str
) -> dict[str, str]:
    """Every variable environments/photonic-foundry.yaml names, set for the test sandbox."""
    db = box.pg()
    redis = box.data["redis"][0]
    service = next(s for s in box.data["services"] if s["name"] == "photonic-foundry")
    return {
        "PF_API_URL": service["url"],
        "PF_DB_HOST": str(db["host"]), "PF_DB_PORT": str(db["port"]), "PF_DB_NAME": dbname,
        "PF_DB_USER": db["user"], "PF_DB_PASSWORD_FILE": db["password_file"],
        "PF_DB_SSLMODE": SHIPPED_SSLMODE.get(db["sslmode"], db["sslmode"]),
        "PF_DB_BACKUP_USER": db["backup_user"], "PF_DB_BACKUP_PASSWORD_FILE": db["backup_password_file"],
        "PF_WAL_ARCHIVE": db["wal_archive"], "PF_BASE_BACKUPS": db["base_backups"],
        "PF_REDIS_HOST": str(redis["host"]), "PF_REDIS_PORT": str(redis["port"]),
        "PF_REDIS_PASSWORD_FILE": redis["password_file"],
        "PF_HOST_URI": "local://",
        "PF_CPU_MAX_PERCENT": "100",  # the shared test machine's load is not under test here
        "PF_BACKUP_ROOT": str(backups),
        "PF_PG_BACKUP_DIR": str(backups / "postgres"), "PF_REDIS_BACKUP_DIR": str(backups / "redis"),
        "PF_CONFIG_BACKUP_DIR": str(backups / "config"), "PF_ARCHIVE_BACKUP_DIR": str(backups / "archives"),
        "PF_STAGING_DB_HOST": str(db["host"]), "PF_STAGING_DB_PORT": str(db["port"]),
        "PF_STAGING_DB_USER": role, "PF_STAGING_DB_PASSWORD_FILE": str(role_password),
        "PF_STAGING_DB_SSLMODE": "disable",
        "PF_STAGING_MUST_DIFFER": "false",  # the sandbox has one PostgreSQL: scratch databases sit beside the source
        "PF_RESTORE_TEMPLATE": template,
    }


def scan_variables(root: Path) -> dict[str, str]:
    """What the runbook's daily security scan job leaves (PF-05, PF-42): a bandit report of a real run over a clean
    source tree, and clean trivy and safety reports in those tools' JSON formats (neither runs offline here)."""
    src, reports = root / "src", root / "security"
    src.mkdir(parents=True)
    (src / "app.py").write_text("def add(a, b):\n    return a + b\n")
    for tool in ("trivy", "safety", "bandit"):
        (reports / tool).mkdir(parents=True)
    out = reports / "bandit" / "b.json"
    bandit = [sys.executable, "-m", "bandit", "-q", "-r", str(src), "-f", "json", "-o", str(out)]
    subprocess.run(bandit, capture_output=True, timeout=300, check=True)
    now = datetime.now(UTC)
    trivy = {"SchemaVersion": 2, "CreatedAt": now.isoformat(), "ArtifactName": "photonic-foundry:latest",
             "Results": [{"Target": "photonic-foundry:latest (debian 12)", "Vulnerabilities": None}]}
    (reports / "trivy" / "image.json").write_text(json.dumps(trivy))
    safety = {"report_meta": {"timestamp": now.astimezone().strftime("%Y-%m-%d %H:%M:%S"), "json_version": 1},
              "vulnerabilities": [], "ignored_vulnerabilities": []}
    (reports / "safety" / "safety.json").write_text(json.dumps(safety))
    lock = root / "requirements.txt"
    lock.write_text("prometheus-client==0.20.0\n")
    return {"PF_SCAN_REPORTS": str(reports), "PF_SRC_DIR": str(src), "PF_LOCK_FILE": str(lock)}


def log_variables(root: Path) -> dict[str, str]:
    """The application's log directory as logrotate leaves it (PF-02): the live log, yesterday's rotation gzipped."""
    root.mkdir(parents=True)
    (root / "app.log").write_text(f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC INFO started\n")
    (root / "app.log.1.gz").write_bytes(gzip.compress(b"INFO yesterday\n"))
    day_ago = time.time() - 86400
    os.utime(root / "app.log.1.gz", (day_ago, day_ago))
    return {"PF_LOG_DIR": str(root)}


def environ(variables: dict[str, str]) -> dict[str, str]:
    """This process's environment without any PF_/PG variable of its own, plus ``variables``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("PF_", "PG", "OPSVERIFY_"))}
    return {**kept, **variables}


def profile_check(variables: dict[str, str], *extra: str, profile: Path = PF) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opsverify", "profile", "check", str(profile), *extra],
                          capture_output=True, text=True, timeout=180, cwd=ROOT, env=environ(variables), check=False)


def failed_rows(stdout: str) -> dict[str, str]:
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("COMPONENT"))
    kind, result = header.index("KIND"), header.index("RESULT")
    return {f"{line[:kind].strip()} {line[kind:header.index('ADDRESS')].strip()}": line[result:]
            for line in lines[lines.index(header) + 1:]
            if len(line) > result and not line[result:].startswith("ok: ")}


def test_photonic_foundry_profile_runs_daily_and_dr_green_on_a_runbook_built_environment(
    box: Sandbox, runbook_database: str, runbook_backups: Path, staging_role: tuple[str, Path], live_writes: int,
    restore_template: str, tmp_path: Path,
) -> None:
    variables = pf_variables(box, runbook_backups, *staging_role, runbook_database, restore_template)
    variables.update(scan_variables(tmp_path / "scans"))
    variables.update(log_variables(tmp_path / "logs"))
    report = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "daily or dr", f"--profile={PF}", f"--report-dir={report}",
         "-p", "no:randomly", "-p", "no:cacheprovider", "-q"],
        capture_output=True, text=True, timeout=900, cwd=ROOT, env=environ(variables), check=False,
    )
    evidence_file = report / "evidence.json"
    assert evidence_file.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    checks = json.loads(evidence_file.read_text())["checks"]
    broken = {c["nodeid"]: c["message"] for c in checks if c["outcome"] in ("failed", "broken")}
    skipped = {c["nodeid"]: c["message"] for c in checks if c["outcome"] == "skipped"}
    unaccepted = {t: why for t, why in skipped.items() if not any(p.fullmatch(why) for p in ACCEPTED_SKIPS)}
    assert unaccepted == {}, json.dumps({"skips no SRE accepts": unaccepted, "failures": broken}, indent=1)
    assert broken == {}, json.dumps(broken, indent=1)
    passed = {c["nodeid"] for c in checks if c["outcome"] == "passed"}
    restored = {"database-daily": "test_restore_completes_without_errors",
                "cache-rdb": "test_rdb_loads_into_a_scratch_redis"}
    for drill, test in restored.items():  # each drill really restored, as the non-superuser staging role
        assert any(f"::{test}[{drill}]" in t for t in passed), sorted(t for t in passed if drill in t)
    clean = "test_newest_report_has_no_finding_at_or_above_threshold"
    scans = {f"{clean}[image]", f"{clean}[dependencies]", f"{clean}[code]",
             "test_bandit_finds_nothing_at_or_above_threshold[src]"}
    assert scans <= {t.rpartition("::")[2] for t in passed}  # the security scan's evidence (PF-05, PF-42) was judged
    assert done.returncode == 0, done.stdout[-3000:]
    staging_password = staging_role[1].read_text().strip()
    assert staging_password not in done.stdout + done.stderr + (report / "evidence.json").read_text()


def test_profile_check_connect_reaches_every_component_and_fails_exactly_a_wrong_port(
    box: Sandbox, runbook_database: str, runbook_backups: Path, staging_role: tuple[str, Path], restore_template: str
) -> None:
    variables = pf_variables(box, runbook_backups, *staging_role, runbook_database, restore_template)
    db = box.pg()
    unset = profile_check(variables, "--connect")  # the maintenance role, as shipped, has no password yet
    assert unset.returncode == 1
    assert failed_rows(unset.stdout) == {
        "photonic_foundry maintenance role": "FAILED: as role photonic (the maintenance user): fe_sendauth: no "
        "password supplied: set maintenance_password or maintenance_password_file"
    }
    variables |= {"PF_DB_MAINTENANCE_USER": db["maintenance_user"],
                  "PF_DB_MAINTENANCE_PASSWORD_FILE": db["maintenance_password_file"]}
    done = profile_check(variables, "--connect")
    assert done.returncode == 0, done.stdout + done.stderr
    assert failed_rows(done.stdout) == {}
    assert re.search(r"^photonic_foundry +maintenance role .* ok: PostgreSQL [\d.]+ as postgres \(the maintenance "
                     r"user\)$", done.stdout, re.MULTILINE), done.stdout
    assert "components answered" in done.stdout
    assert re.search(r"^restore-target +restore target .* ok: PostgreSQL [\d.]+ as opsverify_test_staging_\d+ "
                     r"\(CREATEDB\)$", done.stdout, re.MULTILINE), done.stdout
    wrong = profile_check({**variables, "PF_STAGING_DB_PORT": str(free_port())}, "--connect")
    assert wrong.returncode == 1
    assert failed_rows(wrong.stdout) == {
        "restore-target restore target": "FAILED: connection refused: check host and port: nothing listens there"
    }


def test_photonic_foundry_profile_backup_job_dumps_as_the_backup_role_its_variables_declare(
    box: Sandbox, runbook_database: str, runbook_backups: Path, staging_role: tuple[str, Path], restore_template: str,
    tmp_path: Path,
) -> None:
    variables = pf_variables(box, runbook_backups, *staging_role, runbook_database, restore_template)
    report = tmp_path / "report"
    job = "checks/backup/test_backup_jobs.py::test_fresh_dump_is_complete"

    def dump(extra: dict[str, str]) -> dict[str, Any]:
        subprocess.run(
            [sys.executable, "-m", "pytest", job, f"--profile={PF}", f"--report-dir={report}", "--allow-maintenance",
             "-p", "no:randomly", "-p", "no:cacheprovider", "-q"],
            capture_output=True, text=True, timeout=300, cwd=ROOT, env=environ({**variables, **extra}), check=False,
        )
        checks = json.loads((report / "evidence.json").read_text())["checks"]
        assert len(checks) == 1, checks
        return dict(checks[0])

    declared = dump({})
    assert declared["outcome"] == "passed", declared["message"]
    assert declared["measured"]["dump_role"] == f"role {box.pg()['backup_user']} (the backup user)"
    # the runbook's default backup role, photonic, does not exist here: the refusal names it and the variable's field
    runbook = dump({"PF_DB_BACKUP_USER": "photonic", "PF_DB_BACKUP_PASSWORD_FILE": ""})
    assert runbook["outcome"] == "failed"
    assert "role photonic (the backup user)" in runbook["message"], runbook["message"]
