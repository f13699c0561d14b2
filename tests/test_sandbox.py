"""The embedded sandbox against its real servers: what ``up`` starts, seeds, backs up and declares,
that a second ``up`` changes nothing, and that ``down`` leaves no process and no port behind.
"""

from __future__ import annotations

import gzip
import os
import socket
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
from opsverify.localserver.net import free_port
from opsverify.localserver.process import pid_alive
from opsverify.localserver.redis import start_redis
from opsverify.profile import Profile, load_profile
from opsverify.sandbox.app import start_app, stop_process
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
        assert oldest_age < source.retention.total_seconds(), source.name
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
        if source.name in copies:
            local = {p.name for p in Path(source.path).glob(source.pattern)}
            assert copies[source.name] == local, source.name


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
    sandbox.down(running.state_dir)
    for component in running.components:
        assert refuses(port_of(component.address)), component.name
        assert component.pid is not None
        assert not pid_alive(component.pid), component.name
    stopped = sandbox.status(running.state_dir)
    assert stopped.created
    assert not any(c.running for c in stopped.components)
    sandbox.down(running.state_dir)  # harmless when nothing runs
    restarted = sandbox.up(running.state_dir)  # keeps the data: no reseed, same keys
    assert restarted.all_running
    cache = profile.redis[0]
    assert redis.Redis(host=cache.host, port=cache.port, password=cache.secret(), socket_timeout=5).dbsize() > 2000
    assert len(offsite_names(load_profile(restarted.profile_path))["qp-database-daily"]) == 7  # S3 keeps no state


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
