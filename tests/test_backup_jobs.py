"""Backup jobs as fixtures: scratch files cleaned and verified gone, the production gate, real failures."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

Run = Callable[..., Any]
Variant = Callable[..., Path]
JOBS = "backup/test_backup_jobs.py"
DUMP = "test_backup_jobs.py::test_fresh_dump_is_complete[photonic_foundry]"
BGSAVE = "test_backup_jobs.py::test_bgsave_completes_and_writes_a_valid_rdb[cache]"
BGSAVE_CHECK = JOBS + "::test_bgsave_completes_and_writes_a_valid_rdb"


def scratch(tmp_path: Path, **changes: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data["scratch_dir"] = str(tmp_path / "scratch")
        data["databases"] = data["databases"][:1]
        data.update(changes)

    (tmp_path / "scratch").mkdir(exist_ok=True)
    return mutate


def test_fresh_dump_and_bgsave_pass_and_leave_no_scratch_file(
    run_checks: Run, profile_variant: Variant, tmp_path: Path
) -> None:
    run = run_checks(profile_variant(scratch(tmp_path)), JOBS)
    assert run.result.ret == 0, run.result.stdout.str()
    assert int(run.checks[DUMP]["evidence"]["size_bytes"]) > 10_000
    assert run.checks[BGSAVE]["evidence"]["status"] == "ok"
    saved = run.checks[BGSAVE]["evidence"]
    assert int(saved["lastsave_after"]) > int(saved["lastsave_before"])
    assert (saved["rdb_from"], Path(saved["rdb_file"]).name) == ("CONFIG GET", "dump.rdb")  # no rdb_file declared
    assert saved["detail"].startswith("intact: ")
    assert list((tmp_path / "scratch").iterdir()) == []


def test_production_profile_refuses_maintenance_without_the_flag(
    run_checks: Run, profile_variant: Variant, tmp_path: Path
) -> None:
    profile = profile_variant(scratch(tmp_path, role="production"))
    refused = run_checks(profile, JOBS)
    assert {c["outcome"] for c in refused.checks.values()} == {"skipped"}
    assert refused.message(DUMP) == (
        "refused: profile sandbox is production and this check changes state; pass --allow-maintenance to let it run"
    )
    allowed = run_checks(profile, JOBS, extra=("--allow-maintenance",))
    assert allowed.outcome(DUMP) == "passed"
    assert list((tmp_path / "scratch").iterdir()) == []


def test_dump_with_wrong_password_fails_with_pg_dumps_reason(
    run_checks: Run, profile_variant: Variant, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")

    def mutate(data: dict[str, Any]) -> None:
        scratch(tmp_path)(data)
        data["databases"][0]["backup_password_file"] = str(wrong)  # pg_dump runs as the backup role

    run = run_checks(profile_variant(mutate), JOBS + "::test_fresh_dump_is_complete")
    assert run.failed() == {DUMP}
    assert run.message(DUMP).startswith("pg_dump of photonic_foundry at 127.0.0.1:")
    assert run.message(DUMP).endswith(
        ' as role opsverify_backup (the backup user) was refused: password authentication failed for user '
        '"opsverify_backup"')
    assert "not-the-password" not in run.result.stdout.str()
    assert list((tmp_path / "scratch").iterdir()) == []


def test_bgsave_on_a_stopped_redis_fails(run_checks: Run, profile_variant: Variant, tmp_path: Path) -> None:
    from opsverify.localserver.net import free_port

    port = free_port()
    mutate = scratch(tmp_path, redis=[{"name": "cache", "port": port}])
    run = run_checks(profile_variant(mutate), BGSAVE_CHECK)
    assert run.failed() == {BGSAVE}
    assert run.message(BGSAVE) == f"BGSAVE on redis cache ended connection refused at 127.0.0.1:{port}"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Any]:
    """A throwaway redis-server (no password) in tmp_path/redis, with one key; stopped after."""
    import redis

    from opsverify.localserver.net import free_port
    from opsverify.localserver.redis import start_redis

    server = start_redis(tmp_path / "redis", free_port())
    redis.Redis(port=server.port, socket_timeout=5).set("k", "v")
    yield server
    server.stop(timeout=10)


def own(port: int, tmp_path: Path, **redis: Any) -> Callable[[dict[str, Any]], None]:
    return scratch(tmp_path, redis=[{"name": "cache", "port": port, **redis}])


def test_bgsave_into_a_vanished_directory_fails(
    run_checks: Run, profile_variant: Variant, tmp_path: Path, own_redis: Any
) -> None:
    shutil.rmtree(tmp_path / "redis")  # the server's dir is gone: it cannot write its snapshot
    run = run_checks(profile_variant(own(own_redis.port, tmp_path)), BGSAVE_CHECK)
    assert run.failed() == {BGSAVE}
    assert run.message(BGSAVE) == (
        "BGSAVE on redis cache ended err: see the redis log (its dir must be writable, with free space)"
    )


def test_bgsave_rdb_found_through_config_get_is_verified(
    run_checks: Run, profile_variant: Variant, tmp_path: Path, own_redis: Any
) -> None:
    run = run_checks(profile_variant(own(own_redis.port, tmp_path)), BGSAVE_CHECK)
    assert run.outcome(BGSAVE) == "passed"
    assert run.checks[BGSAVE]["evidence"]["rdb_file"] == str(tmp_path / "redis" / "dump.rdb")
    assert run.checks[BGSAVE]["evidence"]["detail"].startswith("intact: ")


def test_bgsave_where_config_is_denied_verifies_the_rdb_fetched_over_replication(
    run_checks: Run, profile_variant: Variant, tmp_path: Path, own_redis: Any
) -> None:
    import redis

    admin = redis.Redis(port=own_redis.port, socket_timeout=5)
    admin.execute_command("ACL", "SETUSER", "checker", "on", ">checker-secret", "~*", "+@all", "-config")
    (tmp_path / "checker.pass").write_text("checker-secret\n")
    mutate = own(own_redis.port, tmp_path, username="checker", password_file=str(tmp_path / "checker.pass"))
    run = run_checks(profile_variant(mutate), BGSAVE_CHECK)
    assert run.outcome(BGSAVE) == "passed"
    saved = run.checks[BGSAVE]["evidence"]
    assert saved["rdb_from"] == "redis-cli --rdb"
    assert saved["rdb_local"] == (
        "CONFIG GET dir/dbfilename failed (this user has no permissions to run the 'config|get' command)"
    )
    assert saved["detail"].startswith("intact: ")
    assert "checker-secret" not in run.result.stdout.str()
    assert list((tmp_path / "scratch").iterdir()) == []


@pytest.fixture
def walled_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A throwaway redis-server whose dir is a tmpfs of its own mount namespace: ``CONFIG GET dir`` names a path
    that here is an empty directory, as for a Redis on another host. (port, that dir); stopped after."""
    import subprocess
    import time

    import redis

    from opsverify.localserver.net import free_port

    port, directory = free_port(), tmp_path / "walled"
    directory.mkdir()
    script = (f"mount -t tmpfs tmpfs {directory} && exec redis-server --port {port} --bind 127.0.0.1 "
              f"--dir {directory} --save '' --appendonly no")
    server = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conn = redis.Redis(port=port, socket_timeout=5)
    for _ in range(100):
        try:
            conn.set("k", "v")
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    else:
        server.kill()
        pytest.fail(f"redis-server in its own mount namespace did not start on port {port}")
    yield port, directory
    server.terminate()
    server.wait(timeout=10)


def test_bgsave_rdb_not_readable_here_is_fetched_over_replication_and_verified(
    run_checks: Run, profile_variant: Variant, tmp_path: Path, walled_redis: tuple[int, Path]
) -> None:
    port, directory = walled_redis
    run = run_checks(profile_variant(own(port, tmp_path)), BGSAVE_CHECK)
    assert run.outcome(BGSAVE) == "passed"
    saved = run.checks[BGSAVE]["evidence"]
    assert saved["rdb_from"] == "redis-cli --rdb"
    assert saved["rdb_local"] == f"{directory / 'dump.rdb'} is not readable here (No such file or directory)"
    assert saved["detail"].startswith("intact: ")
    assert list((tmp_path / "scratch").iterdir()) == []


def test_bgsave_rdb_not_readable_here_and_sync_denied_fails_naming_the_permission(
    run_checks: Run, profile_variant: Variant, tmp_path: Path, walled_redis: tuple[int, Path]
) -> None:
    import redis

    port, directory = walled_redis
    admin = redis.Redis(port=port, socket_timeout=5)
    admin.execute_command("ACL", "SETUSER", "checker", "on", ">checker-secret", "~*", "+@all", "-sync", "-psync")
    (tmp_path / "checker.pass").write_text("checker-secret\n")
    mutate = own(port, tmp_path, username="checker", password_file=str(tmp_path / "checker.pass"))
    run = run_checks(profile_variant(mutate), BGSAVE_CHECK)
    assert run.failed() == {BGSAVE}
    assert run.message(BGSAVE) == (
        f"cannot verify the RDB of redis cache after BGSAVE: {directory / 'dump.rdb'} is not readable here (No such "
        "file or directory), and user checker may not fetch it over replication (redis-cli --rdb: SYNC with master "
        "failed: -NOPERM this user has no permissions to run the 'sync' command): allow SYNC (ACL SETUSER checker "
        "+sync +psync), or declare rdb_file in the profile with a path readable here, or run the checks where the "
        "RDB is readable"
    )
    assert "checker-secret" not in run.result.stdout.str()
    assert list((tmp_path / "scratch").iterdir()) == []


def test_declared_rdb_file_of_another_machine_fails(
    run_checks: Run, profile_variant: Variant, tmp_path: Path, own_redis: Any
) -> None:
    import redis

    redis.Redis(port=own_redis.port, socket_timeout=5).save()
    other = tmp_path / "elsewhere.rdb"  # a real RDB, but a day-old copy: not the file the server writes
    shutil.copy2(tmp_path / "redis" / "dump.rdb", other)
    os.utime(other, (other.stat().st_atime - 86400, other.stat().st_mtime - 86400))
    run = run_checks(profile_variant(own(own_redis.port, tmp_path, rdb_file=str(other))),
                     BGSAVE_CHECK)
    assert run.failed() == {BGSAVE}
    assert run.message(BGSAVE) == (
        f"cannot verify the RDB of redis cache after BGSAVE: {other} here was last written before that BGSAVE (it is "
        "another machine's file, or not the server's): declare rdb_file in the profile with a path readable here, or "
        "run the checks where the RDB is readable"
    )
