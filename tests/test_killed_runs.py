"""A run killed mid-action (SIGKILL) leaves a scratch standby or a scratch Redis running; the next run's
janitor stops it and removes its directory, and no credential outlived the killed run. A SIGTERM'd run
runs its teardowns itself (exit 143), leaving nothing behind.
Also: no inherited ``PG*`` variable reaches the PostgreSQL tools the suite starts.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opsverify.localserver.net import port_is_open
from opsverify.localserver.process import pid_alive
from opsverify.localserver.scratch import read_note, servers_in
from opsverify.profile.environment import Profile

ROOT = Path(__file__).resolve().parents[1]
HOLD = {
    # a team's own test that holds the action open until it is killed
    "standby": "def test_hold(promoted_replica):\n    assert promoted_replica.error is None\n",
    "redis": "def test_hold(scratch_redis):\n    scratch_redis(RDB)\n",
}
READY = '    (OUT / "ready").write_text("")\n    time.sleep(120)\n'



def start_held_run(
    pytester: pytest.Pytester, profile: Path, kind: str, rdb: Path, tmpdir: Path
) -> subprocess.Popen[bytes]:
    head = f"import time\nfrom pathlib import Path\nRDB = Path({str(rdb)!r})\nOUT = Path({str(pytester.path)!r})\n"
    pytester.makepyfile(test_held=head + HOLD[kind] + READY)
    args = ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(pytester.path), f"--profile={profile}",
            "--no-reports", "-p", "no:randomly", "test_held.py"]
    with (pytester.path / "held.log").open("wb") as log:  # read back when the held run ends too early
        return subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=pytester.path,
                                env={**os.environ, "TMPDIR": str(tmpdir)}, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
def private_tmp() -> Iterator[Path]:
    """A temporary directory of this test alone (reachable by the postgres user): no other run's janitor sees it."""
    path = Path(tempfile.mkdtemp(prefix="opsverify-test-killed-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def held_directory(ready: Path, proc: subprocess.Popen[bytes], roots: list[Path], timeout: float = 120) -> Path:
    """The scratch directory whose creator note names the held run's process."""
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            said = (ready.parent / "held.log").read_text(errors="replace").strip().splitlines()[-15:]
            raise AssertionError("the held run ended before its action was in place:\n" + "\n".join(said))
        assert time.monotonic() < deadline, "the held run never put its action in place"
        time.sleep(0.2)
    found = [p for r in roots for p in r.glob("opsverify_scratch_*") if (read_note(p) or {}).get("pid") == proc.pid]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(
    ("kind", "sig"), [("standby", signal.SIGKILL), ("redis", signal.SIGKILL), ("redis", signal.SIGTERM)]
)
def test_killed_action_is_cleaned_by_the_next_run(
    kind: str, sig: signal.Signals, pytester: pytest.Pytester, sandbox: Profile, private_tmp: Path,
    run_checks: Callable[..., Any], team_conftest: Path, profile_variant: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rdb = max(Path(next(b for b in sandbox.backups if b.kind == "redis").path).glob("*.rdb"))
    profile = profile_variant(lambda data: data.update(scratch_dir=str(private_tmp / "scratch")))
    proc = start_held_run(pytester, profile, kind, rdb, private_tmp)
    try:
        directory = held_directory(pytester.path / "ready", proc, [private_tmp, private_tmp / "scratch"])
        servers = servers_in(directory)
        assert len(servers) == 1, f"no server runs from {directory}"
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    if sig == signal.SIGTERM:  # SIGTERM runs the teardowns (fixtures/actions.py): the run cleans up after itself
        assert proc.returncode == 143
        assert not directory.exists()
        assert not pid_alive(servers[0].pid)
        return
    assert directory.exists()  # the killed run could not clean up
    assert pid_alive(servers[0].pid)
    if kind == "standby":
        secret = sandbox.replicas[0].replication_secret() or ""
        assert secret
        holding = [str(p) for p in directory.rglob("*") if p.is_file() and secret in p.read_text(errors="ignore")]
        assert not holding, f"the replication password is on disk in {holding}"
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    run = run_checks(profile, "health/test_postgres.py")  # any next run: its janitor comes first
    assert f"opsverify janitor: removed scratch {kind} {directory}" in run.result.stdout.str()
    assert not directory.exists()
    assert not pid_alive(servers[0].pid)
    assert servers[0].port is not None
    assert not port_is_open("127.0.0.1", servers[0].port)


BOGUS_PG = {
    "PGHOST": "/nonexistent", "PGPORT": "1", "PGUSER": "nobody", "PGPASSWORD": "wrong", "PGDATABASE": "nowhere",
    "PGSERVICE": "opsverify_no_such_service", "PGOPTIONS": "-c default_transaction_read_only=on",
    "PGSSLMODE": "require", "PGCONNECT_TIMEOUT": "1",
}


def test_inherited_pg_variables_reach_no_postgres_tool(
    run_checks: Callable[..., Any], sandbox_profile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg_dump, pg_restore (-j), pg_amcheck, pg_basebackup, pg_ctl and psycopg all ignore a hostile PG* environment."""
    for key, value in BOGUS_PG.items():
        monkeypatch.setenv(key, value)
    targets = ("restore/test_database_drill.py", "recovery/test_replicas.py", "backup/test_backup_jobs.py",
               "backup/test_backup_integrity.py")
    run = run_checks(sandbox_profile, *targets, extra=("-k", "photonic_foundry or pf- or pf_ or replica"))
    assert run.checks, run.result.stdout.str()
    failed = {t: run.message(t) for t in run.failed()}
    assert not failed, failed
    promoted = "test_replicas.py::test_promoted_copy_accepts_writes_on_a_new_timeline[pf-replica]"
    assert run.outcome(promoted) == "passed"
