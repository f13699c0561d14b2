"""The maintenance fixtures (checks/maintenance/test_maintenance_actions.py) against servers this module owns.

A throwaway PostgreSQL cluster seeded with the sandbox's seed (plus the archive table and two
temporary tables), a throwaway redis-server seeded like the sandbox's, log and temporary files
in tmp_path: never the shared test sandbox, which other tests read concurrently. Each action
does its change and its proof passes; a sabotaged action is caught as ``CleanupError`` naming
what it left; a failing body still leaves the state restored; a killed run's journal is
finished by the next run's janitor; ``--allow-maintenance`` on a production profile changes
nothing but what each fixture declares (every other table's checksum and every Redis key's DUMP
compared before and after).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from opsverify.actions import performed
from opsverify.actions.base import NotApplicable
from opsverify.actions.maintenance import (
    ArchiveJobs,
    CleanTmp,
    DropTempTables,
    FlushCache,
    KeysLost,
    RotateLogs,
    VacuumAnalyze,
    checksums,
    finish_journal,
    read_records,
    user_tables,
    value_digest,
)
from opsverify.errors import CleanupError, OpsverifyError
from opsverify.localserver.net import free_port
from opsverify.localserver.redis import RedisServer, start_redis
from opsverify.localserver.scratch import read_note
from opsverify.profile import load_profile
from opsverify.profile.environment import Profile
from opsverify.sandbox.postgres import Postgres
from opsverify.sandbox.redis import seed_redis
from opsverify.sandbox.seed import seed_databases
from tests.test_security_postgres import make_cluster, remove

ROOT = Path(__file__).resolve().parents[1]
CHECKS = "maintenance/test_maintenance_actions.py"
PG_PASSWORD = "superuser-secret"  # make_cluster's superuser: the tables' owner, the maintenance role here
REDIS_PASSWORD = "maint-test-secret"
DAY = 86400
OWN = {"quantum_planner": {"public.optimization_jobs", "public.optimization_jobs_archive"}}
TIMEOUT = timedelta(seconds=60)


@pytest.fixture(scope="module")
def cluster(sandbox: Profile) -> Iterator[Postgres]:
    made = make_cluster(sandbox)
    try:
        seed_databases(made)
        with made.connect("quantum_planner") as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS optimization_jobs_archive (LIKE optimization_jobs)")
            # the seed's jobs span 80 days (the sandbox's cleanup keeps them so): a third of them 60 days older,
            # the finished jobs past 90 days a team's missed cleanup leaves, for archived_jobs to move
            conn.execute("UPDATE optimization_jobs SET created_at = created_at - interval '60 days', "
                         "completed_at = completed_at - interval '60 days' WHERE id % 3 = 0")
        yield made
    finally:
        remove(made)


@pytest.fixture
def jobs_reset(cluster: Postgres) -> Iterator[None]:
    """Old jobs back in the job table, the archive empty, the two temporary tables there (each test's start)."""

    def reset() -> None:
        with cluster.connect("quantum_planner") as conn:
            conn.execute("INSERT INTO optimization_jobs SELECT * FROM optimization_jobs_archive")
            conn.execute("TRUNCATE optimization_jobs_archive")
            for name in ("temp_optimization_a", "temp_optimization_b"):
                conn.execute(f"CREATE TABLE IF NOT EXISTS {name} AS SELECT g AS x FROM generate_series(1, 50) g")

    reset()
    yield
    reset()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path / "redis", free_port(), REDIS_PASSWORD)
    try:
        seed_redis(server, sessions=300)
        yield server
    finally:
        server.stop(timeout=10)


def old_and_new(directory: Path, old: list[str], new: list[str], age: float) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in [*old, *new]:
        (directory / name).write_text(f"{name}\n" * 20)
    for name in old:
        os.utime(directory / name, (time.time() - age, time.time() - age))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    logs, audit, tmp = tmp_path / "logs", tmp_path / "audit", tmp_path / "tmp"
    old_and_new(logs, ["app.log.40.gz", "app.log.31.gz"], ["app.log", "app.log.1", "app.log.2.gz"], 35 * DAY)
    old_and_new(audit, ["audit.log.45.gz"], ["audit.log", "audit.log.3.gz"], 40 * DAY)
    old_and_new(tmp, ["quantum_old1", "quantum_old2"], ["quantum_new", "other_old"], 2 * DAY)
    os.utime(tmp / "other_old", (time.time() - 3 * DAY, time.time() - 3 * DAY))  # old, but not matching
    return {"logs": logs, "audit": audit, "tmp": tmp}


def owned(cluster: Postgres, cache: RedisServer, files: dict[str, Path], tmp_path: Path,
          role: str = "production") -> Callable[[dict[str, Any]], None]:
    """The sandbox profile pointed at this module's cluster, Redis and files."""
    secret = tmp_path / "pg-maint.pass"
    secret.write_text(PG_PASSWORD + "\n")
    secret.chmod(0o600)
    redis_secret = tmp_path / "redis.pass"
    redis_secret.write_text(REDIS_PASSWORD + "\n")
    redis_secret.chmod(0o600)

    def mutate(data: dict[str, Any]) -> None:
        for key in ("services", "dependencies", "hosts", "backups", "drills", "objectives", "replicas"):
            data[key] = []
        data.pop("restore_target", None)
        data.update(role=role, scratch_dir=str(tmp_path / "scratch"))
        for database in data["databases"]:
            database.update(port=cluster.port, maintenance_user="postgres", maintenance_password_file=str(secret))
            database.update(wal_archiving=False)
            for key in ("security", "wal_archive", "base_backups"):
                database.pop(key, None)
        redis = data["redis"][0]
        redis.update(port=cache.port, password=None, password_file=str(redis_secret))
        redis.pop("security", None)
        data["redis"] = [redis]
        lifecycle = data["lifecycle"]
        lifecycle["log_dirs"] = [
            {"name": "app-logs", "path": str(files["logs"]), "pattern": "app.log*", "retention": "30d"},
            {"name": "audit-logs", "path": str(files["audit"]), "pattern": "audit.log*", "retention": "30d",
             "audit": True},
        ]
        lifecycle["tmp_files"] = [{"name": "quantum-tmp", "pattern": str(files["tmp"] / "quantum_*"), "max_age": "1d"}]
        lifecycle["archives"], lifecycle["error_logs"] = [], []

    return mutate


def pg_state(cluster: Postgres) -> dict[str, dict[str, tuple[int, str]]]:
    """Every table's row count and checksum, but those the fixtures declare they change (jobs, archive, temp)."""
    found = {}
    for dbname in ("photonic_foundry", "quantum_planner"):
        with cluster.connect(dbname) as conn:
            own = OWN.get(dbname, set())
            tables = [t for t in user_tables(conn) if t not in own and ".temp_optimization_" not in t]
            found[dbname] = checksums(conn, tables)
    return found


def redis_state(server: RedisServer) -> dict[bytes, str | None]:
    """Every key's type and content (a DUMP payload is not byte-stable: a restored small set may reorder)."""
    import redis

    conn = redis.Redis(host="127.0.0.1", port=server.port, password=server.password, decode_responses=False)
    try:
        return {key: value_digest(conn, key) for key in conn.scan_iter(count=500)}
    finally:
        conn.close()


def job_totals(cluster: Postgres) -> tuple[int, int]:
    with cluster.connect("quantum_planner") as conn:
        live = conn.execute("SELECT count(*) FROM optimization_jobs").fetchone()
        arch = conn.execute("SELECT count(*) FROM optimization_jobs_archive").fetchone()
    return int(str(live[0] if live else 0)), int(str(arch[0] if arch else 0))


def file_states(*dirs: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p): (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns) for d in dirs for p in d.iterdir()}


# ------------------------------------------------------------------------------------------- the checks


def test_maintenance_checks_change_nothing_but_what_they_declare(
    cluster: Postgres, cache: RedisServer, files: dict[str, Path], jobs_reset: None, tmp_path: Path,
    profile_variant: Callable[..., Path], run_checks: Callable[..., Any],
) -> None:
    """Done when: ``pytest -m maintenance --allow-maintenance`` on a production profile; every other table and every
    Redis key unchanged; without the flag every action skips naming it."""
    profile = profile_variant(owned(cluster, cache, files, tmp_path))
    tables, keys, live = pg_state(cluster), redis_state(cache), job_totals(cluster)
    refused = run_checks(profile, CHECKS, extra=("-m", "maintenance"))
    assert refused.checks, refused.result.stdout.str()
    assert {refused.outcome(t) for t in refused.checks} == {"skipped"}
    assert {refused.message(t) for t in refused.checks} == {
        f"refused: profile {load_profile(profile).name} is production and this check changes state; "
        "pass --allow-maintenance to let it run"
    }
    assert pg_state(cluster) == tables
    assert redis_state(cache) == keys
    assert job_totals(cluster) == live
    old = file_states(*files.values())

    run = run_checks(profile, CHECKS, extra=("-m", "maintenance", "--allow-maintenance"))
    outcomes = {t: (run.outcome(t), run.message(t)) for t in run.checks}
    assert run.failed() == set(), outcomes
    assert len(run.checks) == 10, outcomes  # 4 hot tables, 1 job table, 1 temp pattern, 2 log dirs, 1 tmp, 1 redis
    assert {o for o, _ in outcomes.values()} == {"passed"}, outcomes
    assert pg_state(cluster) == tables  # every other table: same rows, same checksum
    assert redis_state(cache) == keys  # every key restored, same DUMP
    now = job_totals(cluster)
    assert sum(now) == sum(live)
    assert now[1] > 0
    with cluster.connect("quantum_planner") as conn:
        row = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'temp_optimization_%'").fetchone()
        assert row is not None
        assert row[0] == 0
    deleted = {str(files["logs"] / n) for n in ("app.log.40.gz", "app.log.31.gz")}
    deleted |= {str(files["audit"] / "audit.log.45.gz")}
    deleted |= {str(files["tmp"] / n) for n in ("quantum_old1", "quantum_old2")}
    assert file_states(*files.values()) == {p: s for p, s in old.items() if p not in deleted}
    assert not list((tmp_path / "scratch").glob("opsverify_scratch_*"))  # every journal and dump removed


def test_undeclared_roles_and_tables_skip_naming_them_and_a_refused_login_fails(
    cluster: Postgres, cache: RedisServer, files: dict[str, Path], tmp_path: Path,
    profile_variant: Callable[..., Path], run_checks: Callable[..., Any],
) -> None:
    mutate = owned(cluster, cache, files, tmp_path, role="staging")
    tables = pg_state(cluster)

    def undeclared(data: dict[str, Any]) -> None:
        mutate(data)
        for database in data["databases"]:
            database.pop("maintenance_user")
            database.pop("maintenance_password_file")
        data["lifecycle"]["job_tables"][0].pop("archive_table")

    run = run_checks(profile_variant(undeclared), CHECKS, extra=("-k", "vacuum or archive"))
    assert run.failed() == set()
    assert run.message("test_maintenance_actions.py::test_old_jobs_archive_without_loss[qp-finished-jobs]") == (
        "job table qp-finished-jobs declares no archive_table: declare lifecycle.job_tables[].archive_table (same "
        "columns as the job table) for archived_jobs to move old jobs into"
    )
    vacuum = "test_maintenance_actions.py::test_vacuum_analyze_advances_the_statistics[quantum_planner:users]"
    assert run.outcome(vacuum) == "skipped"
    assert run.message(vacuum) == (
        "database quantum_planner declares no maintenance_user: declare the role the maintenance fixtures log in as "
        "(databases[].maintenance_user, the tables' owner, with maintenance_password_file)"
    )

    def wrong_password(data: dict[str, Any]) -> None:
        mutate(data)
        for database in data["databases"]:
            database["maintenance_password_file"] = str(tmp_path / "wrong.pass")
        (tmp_path / "wrong.pass").write_text("not-the-password\n")
        (tmp_path / "wrong.pass").chmod(0o600)

    run = run_checks(profile_variant(wrong_password), CHECKS, extra=("-k", "vacuum and users"))
    assert run.failed() == {vacuum}
    assert run.message(vacuum) == (
        f"VACUUM (ANALYZE) of users in quantum_planner: cannot open a maintenance session on database quantum_planner "
        f"at 127.0.0.1:{cluster.port} as postgres (maintenance_user): password authentication failed for user "
        '"postgres"'
    )
    assert pg_state(cluster) == tables


# ------------------------------------------------------------------------------------------- the actions


@pytest.fixture
def owned_profile(
    cluster: Postgres, cache: RedisServer, files: dict[str, Path], tmp_path: Path, profile_variant: Callable[..., Path]
) -> Profile:
    return load_profile(profile_variant(owned(cluster, cache, files, tmp_path, role="staging")))


def scratch(tmp_path: Path, name: str) -> Path:
    return tmp_path / "scratch" / f"opsverify_scratch_test_{name}"


def test_vacuum_advances_statistics_and_keeps_rows(cluster: Postgres, owned_profile: Profile, tmp_path: Path) -> None:
    db = owned_profile.databases[0]
    with performed(VacuumAnalyze(db, "simulations", owned_profile.timeouts, TIMEOUT, scratch(tmp_path, "v"))) as done:
        assert done.vacuum_advanced, done
        assert done.analyze_advanced, done
        assert done.rows_before == done.rows_after == 5000
        assert not done.written_meanwhile
    assert not scratch(tmp_path, "v").exists()


def test_vacuum_of_a_table_written_meanwhile_says_the_counts_are_not_comparable(
    cluster: Postgres, owned_profile: Profile, tmp_path: Path
) -> None:
    db = owned_profile.databases[0]

    class WrittenMeanwhile(VacuumAnalyze):
        def _count(self, conn: Any, ident: Any) -> int:
            rows = super()._count(conn, ident)
            with cluster.connect("photonic_foundry") as app:  # the application writes between the two counts
                app.execute("INSERT INTO models (name, architecture, version, parameters, created_at) "
                            "VALUES (md5(random()::text), 'MZI', '1', 1, now())")
            return rows

    with performed(WrittenMeanwhile(db, "models", owned_profile.timeouts, TIMEOUT, scratch(tmp_path, "w"))) as done:
        assert done.written_meanwhile
        assert done.rows_note == f"the table was written meanwhile: {done.rows_before} -> {done.rows_after} rows are " \
            "not comparable"
        assert done.rows_after == done.rows_before + 1


def test_flushed_cache_is_restored_even_when_the_body_fails(cache: RedisServer, owned_profile: Profile,
                                                             tmp_path: Path) -> None:
    keys = redis_state(cache)
    action = FlushCache(owned_profile.redis[0], 0, owned_profile.timeouts, scratch(tmp_path, "f"), batch=100)
    def body() -> None:
        with performed(action) as flushed:
            assert flushed.keys == len(keys)
            assert cache.client().dbsize() == 0
            assert (flushed.dump.stat().st_mode & 0o777) == 0o600
            cache.client().set("session:00001", "written meanwhile")  # the application's write wins
            raise RuntimeError("the test body failed")

    with pytest.raises(RuntimeError):
        body()
    after = redis_state(cache)
    assert set(after) == set(keys)
    assert action.restored is not None
    assert action.restored.kept == 1
    assert {k: v for k, v in after.items() if k != b"session:00001"} == {
        k: v for k, v in keys.items() if k != b"session:00001"}
    assert cache.client().get("session:00001") == b"written meanwhile"
    assert not scratch(tmp_path, "f").exists()


def test_sabotaged_cache_restore_is_caught(cache: RedisServer, owned_profile: Profile, tmp_path: Path) -> None:
    class LosesOneKey(FlushCache):
        def undo(self) -> None:
            super().undo()
            self.client().delete(b"user:9")

    action = LosesOneKey(owned_profile.redis[0], 0, owned_profile.timeouts, scratch(tmp_path, "s"))
    with pytest.raises(CleanupError) as caught, performed(action):
        pass
    assert str(caught.value) == (
        f"cache flush {owned_profile.redis[0].name} db 0: 1 of {action.flushed} keys missing after the "
        f"restore (user:9); {KEPT.format(action.dump)}"
    )
    assert action.dump.exists()  # the only copy of the lost key is kept


KEPT = ("their dump is kept in {}: the next run's janitor restores them (make room first if the server refused them "
        "for memory), or by hand: RESTORE each record (key, expiry, DUMP payload) of that file")
OOM = "command not allowed when used memory > 'maxmemory'."


def test_keys_refused_for_memory_keep_the_dump_and_the_janitor_restores_them_later(
    cache: RedisServer, owned_profile: Profile, tmp_path: Path
) -> None:
    """RESTORE refused (maxmemory reached while flushed): the CleanupError names the keys (decoded) and the kept
    dump; the janitor keeps it while the server still refuses, and restores every key once it has room."""
    keys = redis_state(cache)
    instance = owned_profile.redis[0]
    directory = scratch(tmp_path, "oom")
    action = FlushCache(instance, 0, owned_profile.timeouts, directory)
    with pytest.raises(KeysLost) as caught, performed(action):
        cache.client().config_set("maxmemory", 1)  # the application filled the memory meanwhile
    names = [k.decode() for k, _, _ in read_records(action.dump)]
    n = len(names)
    assert str(caught.value) == (
        f"cache flush {instance.name} db 0: {n} of {n} keys missing after the restore ({', '.join(names[:5])} and "
        f"{n - 5} more); the server refused {n}: {', '.join(f'{k} ({OOM})' for k in names[:3])} and {n - 3} more; "
        f"{KEPT.format(action.dump)}"
    )
    assert cache.client().dbsize() == 0
    assert action.dump.exists()
    said = finish_journal(directory, [], [instance], owned_profile.timeouts)
    assert said == (
        f"could not restore {n} keys of redis {instance.name} db 0 that an interrupted cache flush had flushed "
        f"(0 restored; the server refused {', '.join(f'{k} ({OOM})' for k in names[:3])} and {n - 3} more): their "
        f"dump is kept in {action.dump} and the next run retries (make room first if refused for memory)"
    )
    cache.client().config_set("maxmemory", 0)
    said = finish_journal(directory, [], [instance], owned_profile.timeouts)
    assert said == (f"restored {n} keys of redis {instance.name} db 0 that an interrupted cache flush had flushed "
                    "(0 written meanwhile kept, 0 expired meanwhile)")
    assert redis_state(cache) == keys


def test_a_flush_without_room_to_restore_is_refused_and_an_unreachable_server_is_one_sentence(
    cache: RedisServer, owned_profile: Profile, tmp_path: Path
) -> None:
    keys = redis_state(cache)
    instance = owned_profile.redis[0]
    client = cache.client()
    limit = int(client.info("memory")["used_memory"]) + 1000
    client.config_set("maxmemory", limit)
    try:
        with pytest.raises(NotApplicable) as refused, performed(
                FlushCache(instance, 0, owned_profile.timeouts, scratch(tmp_path, "room"))):
            pass
    finally:
        client.config_set("maxmemory", 0)
    assert re.fullmatch(
        rf"refused to flush redis {instance.name} at {instance.host}:{instance.port} db 0: used_memory \d+ \+ the "
        rf"dump's \d+ bytes exceeds maxmemory {limit} \(policy noeviction\), so the restore could be refused for "
        r"memory; raise maxmemory or free memory first", str(refused.value)), str(refused.value)
    assert redis_state(cache) == keys
    assert not scratch(tmp_path, "room").exists()

    port = free_port()
    gone = instance.model_copy(update={"port": port})
    with pytest.raises(OpsverifyError) as caught, performed(FlushCache(gone, 0, owned_profile.timeouts,
                                                                       scratch(tmp_path, "gone"))):
        pass
    assert str(caught.value) == (f"redis {instance.name} at {instance.host}:{port} db 0: Error 111 connecting to "
                                 f"{instance.host}:{port}. Connection refused.")


def test_archive_moves_old_jobs_and_a_sabotaged_one_rolls_back(
    cluster: Postgres, owned_profile: Profile, jobs_reset: None, tmp_path: Path
) -> None:
    db = next(d for d in owned_profile.databases if d.name == "quantum_planner")
    assert owned_profile.lifecycle is not None
    jobs = owned_profile.lifecycle.job_tables[0]
    live = job_totals(cluster)

    class AlsoDeletesAUser(ArchiveJobs):
        def move(self, conn: Any, args: tuple[Any, ...]) -> tuple[int, int]:
            conn.execute("UPDATE users SET full_name = full_name || ' (changed)' WHERE id = 250")
            return super().move(conn, args)

    bad = AlsoDeletesAUser(db, jobs, jobs.max_age, owned_profile.timeouts, TIMEOUT, scratch(tmp_path, "a1"))
    with pytest.raises(CleanupError) as caught, performed(bad):
        pass
    assert str(caught.value) == (
        "archive of jobs quantum_planner.optimization_jobs rolled back: table public.users had 1 row updated by this "
        "transaction (nothing was changed)"
    )
    assert job_totals(cluster) == live
    good = ArchiveJobs(db, jobs, jobs.max_age, owned_profile.timeouts, TIMEOUT, scratch(tmp_path, "a2"))
    with performed(good) as done:
        assert done.rows > 0
        assert done.live_after + done.archive_after == sum(live)
    assert job_totals(cluster) == (live[0] - done.rows, done.rows)


def test_temp_tables_drop_and_a_sabotaged_one_rolls_back(
    cluster: Postgres, owned_profile: Profile, jobs_reset: None, tmp_path: Path
) -> None:
    db = next(d for d in owned_profile.databases if d.name == "quantum_planner")

    class SkipsOne(DropTempTables):
        def drop(self, conn: Any, tables: list[str]) -> None:
            super().drop(conn, tables[1:])

    bad = SkipsOne(db, "temp_optimization_*", owned_profile.timeouts, TIMEOUT, scratch(tmp_path, "d1"))
    with pytest.raises(CleanupError) as caught, performed(bad):
        pass
    assert str(caught.value) == (
        "drop of temporary tables quantum_planner:temp_optimization_* rolled back: table "
        "public.temp_optimization_a matching temp_optimization_* remains (nothing was changed)"
    )
    good = DropTempTables(db, "temp_optimization_*", owned_profile.timeouts, TIMEOUT, scratch(tmp_path, "d2"))
    with performed(good) as done:
        assert done.tables == ("public.temp_optimization_a", "public.temp_optimization_b")


def test_rotation_keeps_newer_files_and_a_sabotaged_one_is_caught(
    owned_profile: Profile, files: dict[str, Path], tmp_path: Path
) -> None:
    assert owned_profile.lifecycle is not None
    logs = owned_profile.lifecycle.log_dirs[0]
    live = files["logs"] / "app.log"

    class AlsoDeletesANewerFile(RotateLogs):
        def delete(self, paths: list[str]) -> None:
            super().delete([*paths, str(files["logs"] / "app.log.2.gz")])

    sabotaged = AlsoDeletesANewerFile(logs, scratch(tmp_path, "r1"))
    with pytest.raises(CleanupError) as caught, performed(sabotaged), live.open("a") as out:
        out.write("appended meanwhile\n")  # the live log may grow
    assert str(caught.value) == (
        f"log rotation app-logs left newer file {files['logs'] / 'app.log.2.gz'} deleted behind: remove it by hand"
    )
    tmp = owned_profile.lifecycle.tmp_files[0]
    with performed(CleanTmp(tmp, scratch(tmp_path, "t"))) as done:
        assert sorted(Path(p).name for p in done.deleted) == ["quantum_old1", "quantum_old2"]
    assert sorted(p.name for p in files["tmp"].iterdir()) == ["other_old", "quantum_new"]


# ------------------------------------------------------------------------------------------- killed runs


HOLD = {
    "flush": "def test_hold(redis_instance, flushed_cache):\n    flushed_cache()\n",
    "archive": (
        "from opsverify.actions.maintenance import ArchiveJobs\n"
        "class Held(ArchiveJobs):\n"
        "    def move(self, conn, args):\n"
        "        done = super().move(conn, args)\n"
        "        (OUT / 'ready').write_text('')\n"
        "        time.sleep(120)\n"
        "        return done\n"
        "def test_hold(job_table, archived_jobs, monkeypatch):\n"
        "    import fixtures.maintenance as m\n"
        "    monkeypatch.setattr(m, 'ArchiveJobs', Held)\n"
        "    archived_jobs()\n"
    ),
}
READY = '    (OUT / "ready").write_text("")\n    time.sleep(120)\n'


def start_held_run(pytester: pytest.Pytester, profile: Path, kind: str, tmpdir: Path) -> subprocess.Popen[bytes]:
    head = f"import time\nfrom pathlib import Path\nOUT = Path({str(pytester.path)!r})\n"
    pytester.makepyfile(test_held=head + HOLD[kind] + (READY if kind == "flush" else ""))
    args = ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(pytester.path), f"--profile={profile}",
            "--no-reports", "-p", "no:randomly", "test_held.py"]
    return subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=pytester.path,
                            env={**os.environ, "TMPDIR": str(tmpdir)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def private_tmp() -> Iterator[Path]:
    """A temporary directory of this test alone: no other run's janitor sees its journals."""
    path = Path(tempfile.mkdtemp(prefix="opsverify-test-maint-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def held(pytester: pytest.Pytester, proc: subprocess.Popen[bytes], root: Path) -> Path:
    deadline = time.monotonic() + 120
    while not (pytester.path / "ready").exists():
        assert proc.poll() is None, "the held run ended before its action was in place"
        assert time.monotonic() < deadline, "the held run never put its action in place"
        time.sleep(0.2)
    candidates = [*root.glob("opsverify_scratch_*"), *root.glob("opsverify_journal_*")]
    found = [p for p in candidates if (read_note(p) or {}).get("pid") == proc.pid]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(("kind", "sig"), [("flush", signal.SIGKILL), ("archive", signal.SIGKILL)])
def test_killed_maintenance_is_finished_by_the_next_run(
    kind: str, sig: signal.Signals, cluster: Postgres, cache: RedisServer, files: dict[str, Path], jobs_reset: None,
    tmp_path: Path, private_tmp: Path, pytester: pytest.Pytester, profile_variant: Callable[..., Path],
    run_checks: Callable[..., Any], team_conftest: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    mutate = owned(cluster, cache, files, tmp_path, role="staging")

    def private(data: dict[str, Any]) -> None:
        mutate(data)
        data["scratch_dir"] = str(private_tmp / "scratch")

    profile = profile_variant(private)
    keys, live = redis_state(cache), job_totals(cluster)
    proc = start_held_run(pytester, profile, kind, private_tmp)
    try:
        directory = held(pytester, proc, private_tmp / "scratch")
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert directory.exists()  # the killed run could not clean up
    if kind == "flush":
        assert cache.client().dbsize() == 0
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    run = run_checks(profile, CHECKS, extra=("-k", "nothing_matches_this"))  # any next run: its janitor comes first
    out = run.result.stdout.str()
    if kind == "flush":
        name = load_profile(profile).redis[0].name
        said = (f"opsverify janitor: restored {len(keys)} keys of redis {name} db 0 that an interrupted cache flush "
                "had flushed (0 written meanwhile kept, 0 expired meanwhile)")
        assert said in out, out
        assert redis_state(cache) == keys
    else:
        said = (f"opsverify janitor: an interrupted archive of jobs in database quantum_planner was rolled back by "
                f"PostgreSQL: live {live[0]} + archived {live[1]}, {sum(live)} before: nothing lost")
        assert said in out, out
        assert job_totals(cluster) == live
    assert f"opsverify janitor: removed maintenance journal {directory}" in out, out
    assert not directory.exists()


def test_sigterm_while_flushed_restores_the_keys_in_the_same_run(
    cache: RedisServer, files: dict[str, Path], cluster: Postgres, tmp_path: Path, private_tmp: Path,
    pytester: pytest.Pytester, profile_variant: Callable[..., Path], team_conftest: Path,
) -> None:
    """SIGTERM (a supervisor's stop) while the cache is flushed: the run tears down (every key restored, the
    journal removed) and exits 143."""
    mutate = owned(cluster, cache, files, tmp_path, role="staging")

    def private(data: dict[str, Any]) -> None:
        mutate(data)
        data["scratch_dir"] = str(private_tmp / "scratch")

    keys = redis_state(cache)
    proc = start_held_run(pytester, profile_variant(private), "flush", private_tmp)
    try:
        directory = held(pytester, proc, private_tmp / "scratch")
        assert directory.name.startswith("opsverify_journal_")  # no older janitor's opsverify_scratch_* sweep
        assert cache.client().dbsize() == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert redis_state(cache) == keys
    assert not directory.exists()


def test_janitor_names_the_files_an_interrupted_rotation_left(
    owned_profile: Profile, files: dict[str, Path], tmp_path: Path
) -> None:
    """A rotation killed between its journal and its deletes: the janitor names what past retention remains."""
    from opsverify.actions.janitor import finish_maintenance, sweep_directories
    from opsverify.actions.maintenance import Journal

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    directory = scratch(tmp_path, "killed_rotation")
    journal = Journal(directory)
    journal.open("files", glob=str(files["logs"] / "app.log*"), delete=[str(files["logs"] / "app.log.40.gz")])
    note = json.loads((directory / ".opsverify-creator.json").read_text())
    (directory / ".opsverify-creator.json").write_text(json.dumps({**note, "pid": dead.pid}))
    said, keep = finish_maintenance([tmp_path / "scratch"], owned_profile)
    assert said == [
        f"an interrupted retention clean-up of {files['logs'] / 'app.log*'} left 1 file past retention: "
        f"{files['logs'] / 'app.log.40.gz'}"
    ]
    assert keep == []
    assert sweep_directories([tmp_path / "scratch"]) == [
        f"removed maintenance journal {directory} (its creator (pid {dead.pid}) is gone)"
    ]


def test_a_drop_blocked_by_a_lock_times_out_and_changes_nothing(
    cluster: Postgres, owned_profile: Profile, jobs_reset: None, tmp_path: Path
) -> None:
    """An application session holding a lock on a temporary table: the drop gives up at its lock_timeout (the
    profile's request timeout), rolls back, and says so in one sentence."""
    db = next(d for d in owned_profile.databases if d.name == "quantum_planner")
    tables = pg_state(cluster)
    with cluster.connect("quantum_planner") as app:
        app.execute("BEGIN")
        app.execute("LOCK TABLE temp_optimization_b IN ACCESS SHARE MODE")
        action = DropTempTables(db, "temp_optimization_*", owned_profile.timeouts, TIMEOUT, scratch(tmp_path, "l"))
        with pytest.raises(OpsverifyError) as caught, performed(action):
            pass
        app.execute("ROLLBACK")
    assert str(caught.value) == (
        "drop of temporary tables quantum_planner:temp_optimization_* failed and was rolled back (nothing was "
        "changed): canceling statement due to lock timeout"
    )
    with cluster.connect("quantum_planner") as conn:
        row = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'temp_optimization_%'").fetchone()
    assert row is not None
    assert row[0] == 2
    assert pg_state(cluster) == tables
    assert not scratch(tmp_path, "l").exists()


def test_each_action_check_fails_on_its_own_real_fault(
    cluster: Postgres, cache: RedisServer, files: dict[str, Path], jobs_reset: None, tmp_path: Path,
    profile_variant: Callable[..., Path], run_checks: Callable[..., Any],
) -> None:
    """A view that depends on a temporary table (the drop is refused, nothing dropped), a log directory and the
    temporary directory that are gone, a Redis that does not answer: exactly those four checks fail, in one
    sentence each; vacuum and archive still pass."""
    own = owned(cluster, cache, files, tmp_path)

    def mutate(data: dict[str, Any]) -> None:
        own(data)
        data["redis"][0]["port"] = free_port()  # nothing listens there

    profile = profile_variant(mutate)
    with cluster.connect("quantum_planner") as conn:
        conn.execute("CREATE VIEW temp_user_view AS SELECT x FROM temp_optimization_a")
    shutil.rmtree(files["logs"])
    shutil.rmtree(files["tmp"])
    try:
        run = run_checks(profile, CHECKS, extra=("-m", "maintenance", "--allow-maintenance"))
    finally:
        with cluster.connect("quantum_planner") as conn:
            conn.execute("DROP VIEW IF EXISTS temp_user_view")
    failed = {t.split("::")[1].split("[")[0]: run.message(t) for t in run.failed()}
    assert set(failed) == {
        "test_temp_tables_drop_leaves_other_tables_unchanged", "test_log_rotation_deletes_only_files_past_retention",
        "test_tmp_cleanup_deletes_only_stale_files", "test_cache_flush_restores_every_key",
    }, run.result.stdout.str()
    assert len(run.failed()) == 4  # the audit log directory is still there and rotates
    assert failed["test_temp_tables_drop_leaves_other_tables_unchanged"] == (
        "dropping temp_optimization_* tables in quantum_planner: drop of temporary tables "
        "quantum_planner:temp_optimization_* refused and rolled back (nothing was changed): table "
        "public.temp_optimization_a matching temp_optimization_* has objects depending on it (view temp_user_view "
        "depends on table temp_optimization_a), which a drop without CASCADE never removes: drop or repoint them, or "
        "narrow lifecycle.temp_tables[].pattern")
    assert failed["test_log_rotation_deletes_only_files_past_retention"] == (
        f"log rotation app-logs: directory {files['logs']} does not exist: create it or fix lifecycle.log_dirs[].path")
    assert failed["test_tmp_cleanup_deletes_only_stale_files"] == (
        f"temporary file clean-up quantum-tmp: directory {files['tmp']} does not exist: create it or fix "
        "lifecycle.tmp_files[].pattern")
    assert "Connection refused" in failed["test_cache_flush_restores_every_key"]
    assert all("\n" not in m and "Traceback" not in m for m in failed.values())
    with cluster.connect("quantum_planner") as conn:  # the refused drop changed nothing
        row = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'temp_optimization_%'").fetchone()
        assert row is not None
        assert row[0] == 2
