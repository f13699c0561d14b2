"""The embedded sandbox against its real servers: what ``up`` starts, seeds, backs up and declares,
that a second ``up`` changes nothing, and that ``down`` leaves no process and no port behind.
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from opsverify import sandbox
from opsverify.backups.formats import verify_backup
from opsverify.facts.manifest import manifest_path, read_manifest
from opsverify.localserver.net import free_port
from opsverify.localserver.process import pid_alive
from opsverify.localserver.redis import start_redis
from opsverify.profile import Profile, load_profile
from opsverify.sandbox import apps, control, scheduler
from opsverify.sandbox.app import app_env, start_app, stop_process
from opsverify.sandbox.backups import DAY, SERIES, JobContext, backups_of
from opsverify.sandbox.postgres import Postgres
from opsverify.sandbox.redis import seed_redis
from opsverify.sandbox.state import Layout, load_state
from opsverify.sandbox.status import SandboxStatus

APPS = ("photonic-foundry", "quantum-planner", "quantum-backend")
SERIES_COUNTS = {
    "pf-postgres-daily": 30,
    "pf-postgres-custom": 3,
    "pf-simulations-table": 3,
    "qp-database-daily": 7,
    "pg-globals": 3,
    "redis-rdb": 3,
    "k8s-configmaps": 3,
    "k8s-deployments": 3,
    "k8s-secrets": 3,
    "models-archive": 3,
    "results-archive": 3,
    "env-archive": 3,
}


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A sandbox of this module's own, up for its tests and purged after them."""
    directory = tmp_path_factory.mktemp("sandbox")
    try:
        sandbox.up(directory)
        yield directory
    finally:
        sandbox.down(directory, purge=True)
    assert not directory.exists()


@pytest.fixture
def running(state_dir: Path) -> SandboxStatus:
    """The sandbox's status, every component running (``up`` restores what a test stopped)."""
    status = sandbox.up(state_dir)
    assert status.all_running, status.render()
    return status


@pytest.fixture
def profile(running: SandboxStatus) -> Profile:
    return load_profile(running.profile_path)


def age_backups(backups: Path, seconds: float) -> None:
    """Move every backup (and manifest) of a tree ``seconds`` into the past, as a sandbox left down would be."""
    for path in backups.rglob("*"):
        if path.is_file():
            mtime = path.stat().st_mtime - seconds
            os.utime(path, (mtime, mtime))


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def refuses(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_profile_loads_and_points_at_the_running_servers(running: SandboxStatus, profile: Profile) -> None:
    assert (profile.name, profile.role) == ("sandbox", "sandbox")
    assert [s.name for s in profile.services] == ["photonic-foundry", "quantum-planner"]
    assert [d.name for d in profile.databases] == ["photonic_foundry", "quantum_planner"]
    assert profile.databases[0].port == port_of(running.component("postgres").address)
    assert profile.redis[0].port == port_of(running.component("redis").address)
    assert profile.dependencies[0].url == running.component("quantum-backend").address + "/health"
    assert profile.hosts[0].disk_paths == ["/", str(running.state_dir)]
    assert {b.name for b in profile.backups} == set(SERIES_COUNTS)
    assert "not created" not in running.render()


def test_postgres_answers_as_opsverify_with_seeded_rows(profile: Profile) -> None:
    counts = {}
    for db in profile.databases:
        with psycopg.connect(
            host=db.host, port=db.port, dbname=db.dbname, user=db.user, password=db.secret(), connect_timeout=5
        ) as conn:
            assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone()
            for table in ("simulations", "models", "optimization_jobs", "users"):
                found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
                if found and found[0]:
                    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
                    counts[f"{db.dbname}.{table}"] = row[0] if row else 0
            superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
            assert superuser == (False,)
    assert counts["photonic_foundry.simulations"] == 5000
    assert 12 <= counts["photonic_foundry.models"] <= 100
    assert counts["quantum_planner.optimization_jobs"] == 10000
    assert counts["quantum_planner.users"] > 0


def test_redis_answers_with_its_password_and_holds_keys(profile: Profile) -> None:
    cache = profile.redis[0]
    client = redis.Redis(host=cache.host, port=cache.port, password=cache.secret(), socket_timeout=5)
    assert client.dbsize() > 2000
    assert {client.type(k) for k in (b"session:00001", b"user:1", b"queue:optimization:0", b"model:tags:1")} == {
        b"string",
        b"hash",
        b"list",
        b"set",
    }
    assert client.ttl("session:00001") > 0
    assert client.info("persistence")["rdb_last_bgsave_status"] == "ok"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=cache.host, port=cache.port, socket_timeout=5).get("session:00001")


@pytest.mark.parametrize("name", APPS)
def test_health_answers_healthy_json(running: SandboxStatus, name: str) -> None:
    url = running.component(name).address
    ca = running.state_dir / "tls" / "ca.pem"
    reply = requests.get(f"{url}/health", timeout=5, verify=str(ca) if url.startswith("https") else True)
    assert reply.status_code == 200
    body = reply.json()
    assert (body["status"], body["service"]) == ("healthy", name)
    assert body["version"].count(".") == 2


@pytest.mark.parametrize("name", ["photonic-foundry", "quantum-planner"])
def test_metrics_expose_the_required_series(profile: Profile, name: str) -> None:
    service = next(s for s in profile.services if s.name == name)
    assert service.metrics is not None
    reply = requests.get(service.url + service.metrics.path, timeout=5, verify=str(service.ca_file or True))
    families = list(text_string_to_metric_families(reply.text))
    names = {f.name for f in families} | {s.name for f in families for s in f.samples}
    assert set(service.metrics.required) <= names
    samples = {s.name: s.value for f in families for s in f.samples}
    assert samples["error_rate"] <= service.metrics.maximum["error_rate"]
    assert abs(samples[str(service.metrics.freshness_metric)] - time.time()) < 60


def test_backups_form_fresh_series_of_the_right_length(profile: Profile) -> None:
    for source in profile.backups:
        files = sorted(Path(source.path).glob(source.pattern), key=lambda p: p.stat().st_mtime)
        assert len(files) == SERIES_COUNTS[source.name], source.name
        newest_age = time.time() - files[-1].stat().st_mtime
        assert 0 < newest_age < 24 * 3600, source.name
        oldest_age = time.time() - files[0].stat().st_mtime
        assert oldest_age < source.retention.total_seconds() + DAY, source.name  # `find -mtime +30`: 31 whole days
    newest_dump = max(Path(profile.backups[0].path).glob("backup_*.sql.gz"), key=lambda p: p.stat().st_mtime)
    with gzip.open(newest_dump, "rt") as dump:
        assert "-- PostgreSQL database dump complete" in dump.read()[-400:]


def offsite_names(profile: Profile) -> dict[str, set[str]]:
    """Object names under each source's offsite prefix, read from the sandbox's S3 server."""
    from opsverify.backups.s3 import client, list_objects

    names = {}
    for source in profile.backups:
        if source.offsite is not None:
            s3 = client(source.offsite, timedelta(seconds=5), timedelta(seconds=10))
            names[source.name] = {o.key.rsplit("/", 1)[1] for o in list_objects(s3, source.offsite.url)}
    return names


def test_recent_backups_have_offsite_copies_in_the_sandbox_s3(profile: Profile) -> None:
    copies = offsite_names(profile)
    assert set(copies) == {"qp-database-daily", "models-archive", "results-archive"}
    for source in profile.backups:
        if source.name in copies and source.offsite is not None:
            recent = time.time() - source.offsite.recent.total_seconds()
            local = {p.name for p in Path(source.path).glob(source.pattern) if p.stat().st_mtime >= recent}
            assert local, source.name
            assert local <= copies[source.name], source.name


def test_secret_files_are_private(running: SandboxStatus) -> None:
    private = [
        *(running.state_dir / "secrets").iterdir(),
        *(running.state_dir / "backups" / "config").glob("secrets_backup_*.yaml"),
        *(running.state_dir / "backups" / "archives").glob("env_backup_*.tar.gz"),  # .env inside
        *(running.state_dir / "backups" / "globals").glob("globals_*.sql"),  # role password hashes
        running.state_dir / "tls" / "server-key.pem",
    ]
    assert len(private) >= 13
    assert {oct(p.stat().st_mode & 0o777) for p in private} == {"0o600"}


def test_second_up_is_quick_and_changes_nothing(running: SandboxStatus) -> None:
    started = time.monotonic()
    again = sandbox.up(running.state_dir)
    assert time.monotonic() - started < 3
    assert again.components == running.components


def test_up_restarts_only_a_stopped_component(running: SandboxStatus) -> None:
    app = running.component("photonic-foundry")
    assert app.pid is not None
    stop_process(app.pid, timeout=10)
    assert not sandbox.status(running.state_dir).component("photonic-foundry").running
    after = sandbox.up(running.state_dir)
    assert after.component("photonic-foundry").address == app.address
    assert after.component("photonic-foundry").pid != app.pid
    assert [c for c in after.components if c.name != app.name] == [c for c in running.components if c.name != app.name]


def test_down_leaves_no_port_and_no_process(running: SandboxStatus, profile: Profile) -> None:
    assert running.component("scheduler").running
    sandbox.down(running.state_dir)
    for component in running.components:
        if component.name != "scheduler":  # the backup scheduler listens on no port
            assert refuses(port_of(component.address)), component.name
        assert component.pid is not None
        assert not pid_alive(component.pid), component.name
    stopped = sandbox.status(running.state_dir)
    assert stopped.created
    assert not any(c.running for c in stopped.components)
    sandbox.down(running.state_dir)  # harmless when nothing runs
    layout = Layout(running.state_dir)
    before = {s.name: set(backups_of(layout, s)) for s in SERIES}
    age_backups(layout.backups, 2 * DAY)  # down for two days: every series is stale
    restarted = sandbox.up(running.state_dir)  # keeps the data: no reseed, same keys; the scheduler catches up
    assert restarted.all_running
    assert restarted.component("scheduler").pid != running.component("scheduler").pid
    cache = profile.redis[0]
    assert redis.Redis(host=cache.host, port=cache.port, password=cache.secret(), socket_timeout=5).dbsize() > 2000
    for series in SERIES:
        new = set(backups_of(layout, series)) - before[series.name]
        assert len(new) == 1, series.name
        assert time.time() - new.pop().stat().st_mtime < 600, series.name
    # S3 keeps no state: the copies of the last 7 days are uploaded again, the new backup by its job
    assert len(offsite_names(load_profile(restarted.profile_path))["qp-database-daily"]) == 6


def test_a_second_scheduler_refuses_the_same_state_dir(running: SandboxStatus) -> None:
    first = running.component("scheduler").pid
    argv = [sys.executable, "-m", scheduler.MODULE, "--state-dir", str(running.state_dir.resolve())]
    second = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=app_env())
    assert second.returncode == 3
    where = running.state_dir.resolve()
    assert second.stderr.strip() == f"scheduler: another scheduler (pid {first}) runs against {where}"
    assert sandbox.status(running.state_dir).component("scheduler").pid == first


@pytest.fixture
def backup_copy(sandbox_profile: Path, tmp_path: Path) -> Iterator[tuple[Layout, JobContext, int]]:
    """A copy of the test sandbox's backup tree in a state dir of its own, aged two days; the jobs' context
    (the test sandbox's PostgreSQL, only read; a throwaway seeded Redis for the BGSAVE) and a throwaway
    S3 server's port."""
    shared = Layout(sandbox_profile.parent)
    state = load_state(shared)
    assert state is not None
    layout = Layout(tmp_path / "state")
    layout.root.mkdir()
    shutil.copytree(shared.backups, layout.backups, symlinks=True)
    (layout.root / "app").symlink_to(shared.app)
    age_backups(layout.backups, 2 * DAY)
    redis_server = start_redis(layout.redis, free_port(), password="throwaway")
    port = free_port()
    try:
        seed_redis(redis_server, sessions=100)
        context = JobContext(layout, control.postgres_of(shared, state), redis_server, dict(state.ports))
        apps.spawn_app(layout, "s3", port)
        yield layout, context, port
    finally:
        apps.stop_app(layout, "s3", port)
        redis_server.stop(timeout=10)


def test_one_tick_makes_one_verified_backup_per_stale_series_and_cleans_up(
    backup_copy: tuple[Layout, JobContext, int],
) -> None:
    layout, context, s3_port = backup_copy
    now = time.time()
    before = {s.name: backups_of(layout, s) for s in SERIES}
    expired = set()
    for series in SERIES:
        files, keep = before[series.name], series.keep_days()
        if keep is None:
            expired |= set(files[: len(files) + 1 - series.days])
        else:
            expired |= {p for p in files if now - p.stat().st_mtime >= (keep + 1) * DAY}
    assert {p.parent.name for p in expired} == {"postgres", "database", "globals", "redis", "config", "archives"}
    uploader = scheduler.Uploader(layout, s3_port)
    report = scheduler.tick(layout, now, lambda: context, lambda: uploader)
    assert report.failures == []
    assert set(report.made) == {s.name for s in SERIES}
    assert set(report.deleted) == expired
    for series in SERIES:
        after = backups_of(layout, series)
        assert set(after) - set(before[series.name]) == {report.made[series.name]}, series.name
        assert len(after) == len(before[series.name]) + 1 - len(expired & set(before[series.name])), series.name
        new = report.made[series.name]
        verdict = verify_backup(new)
        assert verdict.ok, (series.name, verdict.detail)
        assert new.stat().st_mtime == pytest.approx(now, abs=1)
        assert (read_manifest(new) is not None) == series.manifest, series.name
        if series.name == "k8s-secrets":
            assert new.stat().st_mode & 0o777 == 0o600
    assert not any(manifest_path(p).exists() for p in expired)
    for series in SERIES:
        if series.offsite:
            bucket, _, prefix = series.offsite.removeprefix("s3://").partition("/")
            names = uploader.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
            assert [o["Key"] for o in names] == [prefix + report.made[series.name].name], series.name
    again = scheduler.tick(layout, now + 60, lambda: context, lambda: uploader)
    assert (again.made, again.deleted, again.failures) == ({}, [], [])
    log = (layout.logs / "backup-jobs.log").read_text()
    assert f"qp-database-daily: made {report.made['qp-database-daily'].name}" in log


def test_a_failed_job_is_logged_and_retried_at_the_next_tick(backup_copy: tuple[Layout, JobContext, int]) -> None:
    layout, context, _ = backup_copy
    closed = free_port()  # nothing listens there: every dump is refused
    down = Postgres(context.pg.base, context.pg.as_postgres, closed, context.pg.password)
    broken = JobContext(layout, down, context.redis_server, context.ports)
    now = time.time()
    dumps = {s.name for s in SERIES if s.kind in ("postgres", "globals")}  # pg_dump and pg_dumpall
    first = scheduler.tick(layout, now, lambda: broken)
    assert set(first.made) == {s.name for s in SERIES} - dumps
    needs_pg = dumps | {"workload"}  # the daily application workload (sandbox/workload.py) reads PostgreSQL too
    assert {f.split(":", 1)[0] for f in first.failures} == needs_pg
    log = (layout.logs / "backup-jobs.log").read_text().splitlines()
    failed = [line.split(" ", 1)[1] for line in log if " FAILED " in line]
    assert len(failed) == len(needs_pg)
    refused = ("job failed: pg_dump of", "job failed: pg_dumpall --globals-only failed",
               "workload: cannot connect to PostgreSQL")
    assert all(any(r in line for r in refused) and line.endswith("(retried at the next tick)") for line in failed)
    second = scheduler.tick(layout, now + scheduler.TICK, lambda: context)
    assert (set(second.made), second.failures) == (dumps, [])


def test_status_of_a_missing_state_dir_says_not_created(tmp_path: Path) -> None:
    status = sandbox.status(tmp_path / "absent")
    assert not status.created
    assert "not created" in status.render()
    sandbox.down(tmp_path / "absent")


def test_app_fault_flag_answers_500_unhealthy(tmp_path: Path) -> None:
    port = free_port()
    proc = start_app(
        "photonic-foundry", port, tmp_path / "app.log", "--health-status", "500", "--omit-metric", "memory_usage"
    )
    try:
        reply = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert (reply.status_code, reply.json()["status"]) == (500, "unhealthy")
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "error_rate" in metrics
        assert "memory_usage" not in metrics
    finally:
        stop_process(proc, timeout=10)
    assert proc.returncode == 0  # SIGTERM ends it cleanly
    assert refuses(port)


def test_throwaway_redis_stops_for_real(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis", free_port(), password="throwaway")
    assert redis.Redis(port=server.port, password="throwaway", socket_timeout=5).ping()
    server.stop(timeout=10)
    assert refuses(server.port)
    assert not pid_alive(server.pid)
    assert os.stat(tmp_path / "redis" / "redis.conf").st_mode & 0o777 == 0o600


def test_a_sandbox_seeded_by_an_older_opsverify_is_recreated_by_up(tmp_path: Path) -> None:
    """A state.json without ``seed`` (made before issue 11) counts as seed 1: ``up`` purges and recreates it, since
    this version's checks read tables and files the old seed never made (simulation_events, log directories)."""
    import json

    from opsverify.sandbox.state import SEED_VERSION, Layout, load_state

    layout = Layout(tmp_path)
    layout.state_file.write_text(json.dumps({"ports": {}, "pg_base": str(tmp_path / "pg"), "ready": True}))
    old = load_state(layout)
    assert old is not None
    assert (old.seed, SEED_VERSION) == (1, 2)
    source = (Path(sandbox.__file__).parent / "control.py").read_text()
    assert "if state is not None and state.seed < SEED_VERSION:" in source  # up() recreates it
