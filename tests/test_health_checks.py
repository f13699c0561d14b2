"""checks/health against the real test sandbox: healthy passes; each injected fault fails its check.

Faults are real: a server that was stopped, a server answering 500 or slowly, a wrong password,
a Redis whose background save failed, limits below the measured use (a busy CPU: test_host_cpu.py).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opsverify.localserver.net import free_port
from opsverify.localserver.postgres import Cluster
from opsverify.localserver.redis import start_redis
from opsverify.profile.environment import Profile
from opsverify.sandbox.app import start_app, stop_process
from opsverify.sandbox.postgres import serve_sandbox_tls

Run = Callable[..., Any]
Variant = Callable[..., Path]
Mutation = Callable[[dict[str, Any]], None]
HTTP = "health/test_http_health.py"
METRICS = "health/test_metrics.py"
PF = "[photonic-foundry]"


def only(section: str, name: str | None = None) -> Mutation:
    """Keep just one instance of ``section`` (the first when unnamed) and drop the other sections."""

    def mutate(data: dict[str, Any]) -> None:
        for key in ("services", "databases", "redis", "dependencies", "hosts"):
            kept = [i for i in data.get(key, []) if key == section and name in (None, i["name"])]
            data[key] = kept[:1]

    return mutate


def then(*mutations: Mutation) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        for m in mutations:
            m(data)

    return mutate


def set_in(section: str, **values: Any) -> Mutation:
    return lambda data: data[section][0].update(values)


@dataclass
class App:
    proc: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)
        assert_port_closed(int(self.url.rsplit(":", 1)[1]))


def assert_port_closed(port: int, wait: float = 10) -> None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"port {port} is still open")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Callable[..., App]]:
    """``app(*fault_flags)``: a real photonic-foundry app process, stopped after the test."""
    started: list[App] = []

    def start(*flags: str) -> App:
        port = free_port()
        started.append(App(start_app("photonic-foundry", port, tmp_path / f"app-{port}.log", *flags),
                           f"http://127.0.0.1:{port}"))
        return started[-1]

    yield start
    for one in started:
        one.stop()


def service_at(url: str, **overrides: Any) -> Mutation:
    return then(only("services", "photonic-foundry"), set_in("services", url=url, **overrides))


HEALTH_CHECKS = {  # module -> (checks, the profile's instances each runs over)
    "test_http_health.py": (("test_health_endpoint_answers_2xx", "test_health_body_reports_healthy",
                             "test_health_answers_within_latency_budget"), lambda p: [s.name for s in p.services]),
    "test_metrics.py": (("test_metrics_expose_required_series", "test_metric_values_stay_under_maximum",
                         "test_metrics_are_fresh"), lambda p: [s.name for s in p.services if s.metrics]),
    "test_postgres.py": (("test_database_accepts_a_session", "test_database_connects_within_budget",
                          "test_database_role_cannot_write"), lambda p: [d.name for d in p.databases]),
    "test_redis.py": (("test_redis_answers_ping_within_budget", "test_redis_persistence_is_switched_on",
                       "test_redis_persistence_is_healthy",
                       "test_redis_unsaved_changes_are_younger_than_max_unsaved_age"),
                      lambda p: [r.name for r in p.redis]),
    "test_dependencies.py": (("test_dependency_is_reachable_within_budget",),
                             lambda p: [d.name for d in p.dependencies]),
    "test_host_resources.py": (("test_cpu_usage_is_under_limit", "test_memory_usage_is_under_limit"),
                               lambda p: [h.name for h in p.hosts]),
    "test_host_resources.py#disk": (("test_disk_usage_is_under_limit",),
                                    lambda p: [f"{h.name}:{d}" for h in p.hosts for d in h.disk_paths]),
}


def every_health_check(profile: Profile) -> set[str]:
    """The node ids of checks/health over the profile's components, computed from the profile itself."""
    return {f"{module.split('#')[0]}::{check}[{name}]" for module, (checks, names) in HEALTH_CHECKS.items()
            for check in checks for name in names(profile)}


def test_healthy_sandbox_passes_every_health_check(run_checks: Run, profile_variant: Variant, sandbox: Profile) -> None:
    run = run_checks(profile_variant(), "health")
    assert run.result.ret == 0, run.result.stdout.str()
    expected = every_health_check(sandbox)
    assert len(expected) == 27  # two services with metrics, two databases, one Redis, one dependency, one host
    assert {test: run.outcome(test) for test in run.checks} == dict.fromkeys(expected, "passed")
    evidence = run.checks["test_http_health.py::test_health_answers_within_latency_budget[quantum-planner]"]
    assert evidence["runbook"] == ["PF-01", "QP-01"]  # QP-29's health script has no latency budget
    assert evidence["evidence"]["budget"] == "500ms"


def test_stopped_service_fails_its_health_checks(run_checks: Run, profile_variant: Variant, app: Any) -> None:
    stopped = app()
    stopped.stop()
    run = run_checks(profile_variant(service_at(stopped.url)), HTTP)
    assert run.failed() == {f"test_http_health.py::{t}{PF}" for t in (
        "test_health_endpoint_answers_2xx", "test_health_body_reports_healthy",
        "test_health_answers_within_latency_budget")}
    assert run.message(f"test_http_health.py::test_health_endpoint_answers_2xx{PF}") == (
        f"photonic-foundry health endpoint {stopped.url}/health did not answer: connection refused")


def test_http_500_fails_the_status_check(run_checks: Run, profile_variant: Variant, app: Any) -> None:
    broken = app("--health-status", "500")
    run = run_checks(profile_variant(service_at(broken.url)), HTTP)
    assert run.failed() == {f"test_http_health.py::{t}{PF}" for t in (
        "test_health_endpoint_answers_2xx", "test_health_body_reports_healthy")}  # its body says "unhealthy"
    assert run.message(f"test_http_health.py::test_health_endpoint_answers_2xx{PF}") == (
        f"photonic-foundry health endpoint {broken.url}/health answered HTTP 500, not 2xx")
    assert run.outcome(f"test_http_health.py::test_health_answers_within_latency_budget{PF}") == "passed"


def test_degraded_body_fails_the_body_check(run_checks: Run, profile_variant: Variant, app: Any) -> None:
    degraded = app("--health-body-status", "degraded")
    run = run_checks(profile_variant(service_at(degraded.url)), HTTP)
    assert run.failed() == {f"test_http_health.py::test_health_body_reports_healthy{PF}"}
    assert run.message(f"test_http_health.py::test_health_body_reports_healthy{PF}") == (
        f"photonic-foundry reports status 'degraded' at {degraded.url}/health, expected one of ok, healthy, pass, up")


def test_slow_endpoint_fails_only_the_latency_check(run_checks: Run, profile_variant: Variant, app: Any) -> None:
    slow = app("--delay", "1.5")
    run = run_checks(profile_variant(service_at(slow.url, latency_budget="500ms")), HTTP)
    test = f"test_http_health.py::test_health_answers_within_latency_budget{PF}"
    assert run.failed() == {test}
    latency = run.checks[test]["evidence"]["latency"]  # measured: at least the 1.5 s delay
    assert re.fullmatch(r"\d+(\.\d)?s", latency), latency
    assert float(latency[:-1]) >= 1.5, latency
    assert run.message(test) == f"photonic-foundry health took {latency} (budget 500ms): {slow.url}/health"


def test_endpoint_that_never_answers_fails_within_the_request_timeout(
    run_checks: Run, profile_variant: Variant
) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        mutate = then(service_at(url), lambda d: d.update(timeouts={"connect": "1s", "request": "1s"}))
        started = time.monotonic()
        run = run_checks(profile_variant(mutate), HTTP)
    assert time.monotonic() - started < 30
    first = f"test_http_health.py::test_health_endpoint_answers_2xx{PF}"
    assert run.failed() == {f"test_http_health.py::{t}{PF}" for t in (
        "test_health_endpoint_answers_2xx", "test_health_body_reports_healthy",
        "test_health_answers_within_latency_budget")}
    assert run.message(first) == (
        f"photonic-foundry health endpoint {url}/health did not answer: no answer within the 1s request timeout")


def test_missing_metric_fails_the_required_series_check(run_checks: Run, profile_variant: Variant, app: Any) -> None:
    lacking = app("--omit-metric", "memory_usage")
    run = run_checks(profile_variant(service_at(lacking.url)), METRICS)
    test = f"test_metrics.py::test_metrics_expose_required_series{PF}"
    assert run.failed() == {test}
    assert run.message(test) == f"photonic-foundry metrics at {lacking.url}/metrics lack memory_usage"


def test_error_rate_above_maximum_fails(run_checks: Run, profile_variant: Variant, app: Any) -> None:
    failing = app("--error-rate", "0.25")
    run = run_checks(profile_variant(service_at(failing.url)), METRICS)
    test = f"test_metrics.py::test_metric_values_stay_under_maximum{PF}"
    assert run.failed() == {test}
    assert run.message(test) == f"photonic-foundry: error_rate is 0.25 (max 0.05) at {failing.url}/metrics"


def test_stale_metrics_fail_the_freshness_check(run_checks: Run, profile_variant: Variant, app: Any) -> None:
    stale = app("--stale", "3600")
    run = run_checks(profile_variant(service_at(stale.url)), METRICS)
    test = f"test_metrics.py::test_metrics_are_fresh{PF}"
    assert run.failed() == {test}
    age = run.checks[test]["evidence"]["age"]  # measured: the 1h staleness plus the seconds the run took
    assert re.fullmatch(r"1h(\d+s)?", age), age
    assert run.message(test) == (
        f"photonic-foundry metrics are {age} old (max 5m): photonic_last_update_timestamp_seconds at "
        f"{stale.url}/metrics")


def test_wrong_database_password_fails_the_session_check(
    run_checks: Run, profile_variant: Variant, tmp_path: Path, sandbox: Profile
) -> None:
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")
    run = run_checks(profile_variant(then(only("databases"), set_in("databases", password_file=str(wrong)))),
                     "health/test_postgres.py")
    db = sandbox.databases[0]
    where = f"{db.host}:{db.port}/{db.dbname}"
    refused = f'password authentication failed for user "{db.user}"'
    assert run.failed() == {f"test_postgres.py::{t}[{db.name}]" for t in (
        "test_database_accepts_a_session", "test_database_connects_within_budget", "test_database_role_cannot_write")}
    assert run.message(f"test_postgres.py::test_database_accepts_a_session[{db.name}]") == (
        f"database {db.name} at {where} refused a session: {refused}")
    assert run.message(f"test_postgres.py::test_database_role_cannot_write[{db.name}]") == (
        f"database {db.name} at {where}: cannot read the privileges of role {db.user}: {refused}")
    assert "not-the-password" not in run.result.stdout.str()


@dataclass
class ScratchServer:
    """A throwaway PostgreSQL cluster of the test's own with one database and a role of a unique name."""

    port: int
    role: str
    password_file: Path
    superuser_password_file: Path


@pytest.fixture
def scratch_server(tmp_path: Path, sandbox: Profile) -> Iterator[ScratchServer]:
    """Its ``photonic_foundry`` holds ``simulations`` (the role may INSERT) and ``results`` (SELECT only)."""
    from psycopg import sql

    base = Path("/tmp") / f"opsverify-test-roles-{uuid.uuid4().hex[:8]}"
    cluster = Cluster(base, os.geteuid() == 0, free_port(), "superuser-secret")
    role = f"opsverify_writer_{uuid.uuid4().hex[:8]}"
    cluster.initdb({})
    serve_sandbox_tls(cluster, sandbox.databases[0].sslrootcert)  # the sandbox profile says verify-full
    try:
        cluster.start()
        with cluster.connect() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'writer-secret'").format(sql.Identifier(role)))
            conn.execute("CREATE DATABASE photonic_foundry")
        with cluster.connect("photonic_foundry") as conn:
            conn.execute("CREATE TABLE results (id int)")
            conn.execute("CREATE TABLE simulations (id int)")
            conn.execute(sql.SQL("GRANT SELECT ON results, simulations TO {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT INSERT ON simulations TO {}").format(sql.Identifier(role)))
        (tmp_path / "writer.pass").write_text("writer-secret\n")
        (tmp_path / "superuser.pass").write_text("superuser-secret\n")
        yield ScratchServer(cluster.port, role, tmp_path / "writer.pass", tmp_path / "superuser.pass")
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert not base.exists()


ROLE_CHECK = "test_postgres.py::test_database_role_cannot_write[photonic_foundry]"
READ_ONLY = "opsverify needs a role that cannot write"


def database_at(port: int, user: str, password_file: Path) -> Mutation:
    return then(only("databases"), set_in("databases", port=port, user=user, password_file=str(password_file)))


def test_role_granted_insert_fails_the_read_only_role_check(
    run_checks: Run, profile_variant: Variant, scratch_server: ScratchServer
) -> None:
    role, port = scratch_server.role, scratch_server.port
    run = run_checks(profile_variant(database_at(port, role, scratch_server.password_file)), "health/test_postgres.py")
    assert run.failed() == {ROLE_CHECK}
    assert run.message(ROLE_CHECK) == (
        f"database photonic_foundry at 127.0.0.1:{port}/photonic_foundry: role {role} holds INSERT on "
        f"public.simulations; {READ_ONLY} (REVOKE INSERT ON public.simulations FROM {role})")


def as_superuser(server: ScratchServer, *statements: str) -> None:
    """Run ``statements`` in the scratch cluster's photonic_foundry as its superuser ({role}: the declared role)."""
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=server.port, user="postgres", password="superuser-secret",
                         dbname="photonic_foundry", connect_timeout=10, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.replace("{role}", server.role))


def test_create_granted_to_public_fails_naming_the_revoke_from_public(
    run_checks: Run, profile_variant: Variant, scratch_server: ScratchServer
) -> None:
    role, port = scratch_server.role, scratch_server.port
    as_superuser(scratch_server, "REVOKE INSERT ON simulations FROM {role}",
                 "GRANT CREATE ON SCHEMA public TO PUBLIC",  # the default up to PostgreSQL 14
                 "REVOKE CREATE ON SCHEMA public FROM {role}")  # the old advice: it changes nothing
    profile = profile_variant(database_at(port, role, scratch_server.password_file))
    run = run_checks(profile, "health/test_postgres.py")
    assert run.failed() == {ROLE_CHECK}
    assert run.message(ROLE_CHECK) == (
        f"database photonic_foundry at 127.0.0.1:{port}/photonic_foundry: role {role} can CREATE in schema public "
        f"through PUBLIC; {READ_ONLY} (REVOKE CREATE ON SCHEMA public FROM PUBLIC)")
    as_superuser(scratch_server, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # the advice given works
    assert run_checks(profile, "health/test_postgres.py").failed() == set()


def test_insert_held_through_a_group_role_fails_naming_the_group(
    run_checks: Run, profile_variant: Variant, scratch_server: ScratchServer
) -> None:
    role, port = scratch_server.role, scratch_server.port
    group = f"writers_{uuid.uuid4().hex[:8]}"
    as_superuser(scratch_server, "REVOKE INSERT ON simulations FROM {role}", f"CREATE ROLE {group}",
                 f"GRANT INSERT ON simulations TO {group}", f"GRANT {group} TO {{role}}")
    profile = profile_variant(database_at(port, role, scratch_server.password_file))
    run = run_checks(profile, "health/test_postgres.py")
    assert run.failed() == {ROLE_CHECK}
    assert run.message(ROLE_CHECK) == (
        f"database photonic_foundry at 127.0.0.1:{port}/photonic_foundry: role {role} holds INSERT on "
        f"public.simulations through role {group}; {READ_ONLY} (REVOKE INSERT ON public.simulations FROM {group}, "
        f"or take {role} out of {group})")
    as_superuser(scratch_server, f"REVOKE {group} FROM {{role}}")  # the advice given works
    assert run_checks(profile, "health/test_postgres.py").failed() == set()


def test_pg_write_all_data_through_a_group_role_fails_naming_the_group(
    run_checks: Run, profile_variant: Variant, scratch_server: ScratchServer
) -> None:
    role, port = scratch_server.role, scratch_server.port
    group = f"loaders_{uuid.uuid4().hex[:8]}"
    as_superuser(scratch_server, "REVOKE INSERT ON simulations FROM {role}", f"CREATE ROLE {group}",
                 f"GRANT pg_write_all_data TO {group}", f"GRANT {group} TO {{role}}")
    profile = profile_variant(database_at(port, role, scratch_server.password_file))
    run = run_checks(profile, "health/test_postgres.py")
    assert run.failed() == {ROLE_CHECK}
    assert run.message(ROLE_CHECK) == (
        f"database photonic_foundry at 127.0.0.1:{port}/photonic_foundry: role {role} is a member of "
        f"pg_write_all_data through role {group}; {READ_ONLY} (REVOKE pg_write_all_data FROM {group}, "
        f"or take {role} out of {group})")


def test_superuser_declared_as_the_database_user_fails_the_read_only_role_check(
    run_checks: Run, profile_variant: Variant, scratch_server: ScratchServer
) -> None:
    port = scratch_server.port
    mutate = database_at(port, "postgres", scratch_server.superuser_password_file)
    run = run_checks(profile_variant(mutate), "health/test_postgres.py")
    assert run.failed() == {ROLE_CHECK}
    assert run.message(ROLE_CHECK) == (
        f"database photonic_foundry at 127.0.0.1:{port}/photonic_foundry: role postgres is a superuser; "
        f"{READ_ONLY} (declare one, or ALTER ROLE postgres NOSUPERUSER)")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Any]:
    server = start_redis(tmp_path / "redis", free_port())
    yield server
    server.stop(timeout=10)


def redis_at(port: int) -> Mutation:
    return then(only("redis"), set_in("redis", port=port, password=None, password_file=None))


def test_stopped_redis_fails_its_checks(run_checks: Run, profile_variant: Variant, own_redis: Any) -> None:
    own_redis.stop(timeout=10)
    run = run_checks(profile_variant(redis_at(own_redis.port)), "health/test_redis.py")
    test = "test_redis.py::test_redis_answers_ping_within_budget[cache]"
    assert run.failed() == {test, SWITCHED_ON, "test_redis.py::test_redis_persistence_is_healthy[cache]", UNSAVED}
    assert run.message(test) == f"redis cache at 127.0.0.1:{own_redis.port} did not answer: connection refused"


def test_failed_background_save_fails_the_persistence_check(
    run_checks: Run, profile_variant: Variant, own_redis: Any, tmp_path: Path
) -> None:
    import redis

    client = redis.Redis(port=own_redis.port, socket_timeout=5)
    client.config_set("save", NEVER)  # persistence on: only the failed save is the fault …
    client.config_set("stop-writes-on-bgsave-error", "no")  # … and Redis keeps answering PING (else: MISCONF)
    client.set("k", "v")
    shutil.rmtree(tmp_path / "redis")  # the server's working directory disappears under it
    client.bgsave()
    deadline = time.monotonic() + 10
    while client.info("persistence")["rdb_bgsave_in_progress"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.info("persistence")["rdb_last_bgsave_status"] == "err"
    run = run_checks(profile_variant(redis_at(own_redis.port)), "health/test_redis.py")
    test = "test_redis.py::test_redis_persistence_is_healthy[cache]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"redis cache last BGSAVE failed (rdb_last_bgsave_status:err): see the redis log on 127.0.0.1:{own_redis.port}")


REDIS = "health/test_redis.py"
SWITCHED_ON = "test_redis.py::test_redis_persistence_is_switched_on[cache]"
UNSAVED = "test_redis.py::test_redis_unsaved_changes_are_younger_than_max_unsaved_age[cache]"
NEVER = "1000000000 1000000000"  # save rules that are on, yet never fire in a test's lifetime
PAST_TIME_C = r"""
/* time() runs OPSVERIFY_TIME_OFFSET seconds off the real clock; gettimeofday and clock_gettime stay true. */
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

time_t time(time_t *out) {
    struct timeval now;
    const char *offset = getenv("OPSVERIFY_TIME_OFFSET");
    gettimeofday(&now, NULL);
    time_t t = now.tv_sec + (offset ? atol(offset) : 0);
    if (out) *out = t;
    return t;
}
"""


def test_redis_without_persistence_fails_the_switched_on_check(
    run_checks: Run, profile_variant: Variant, own_redis: Any
) -> None:
    run = run_checks(profile_variant(redis_at(own_redis.port)), REDIS)  # own_redis: save "", appendonly no
    assert run.failed() == {SWITCHED_ON}
    assert run.message(SWITCHED_ON) == (
        f"redis cache at 127.0.0.1:{own_redis.port} persists nothing: RDB snapshots are off (save \"\") and AOF is off "
        "(aof_enabled:0), so a restart loses every key; set save rules (e.g. save 3600 1 300 100) or appendonly yes, "
        "or declare require_persistence: false")


def test_redis_with_aof_only_passes_the_persistence_checks(
    run_checks: Run, profile_variant: Variant, own_redis: Any
) -> None:
    own_redis.client().config_set("appendonly", "yes")
    run = run_checks(profile_variant(redis_at(own_redis.port)), REDIS)
    assert run.failed() == set()
    assert run.outcome(SWITCHED_ON) == run.outcome(UNSAVED) == "passed"


def test_redis_refusing_config_get_fails_naming_the_permission(
    run_checks: Run, profile_variant: Variant, tmp_path: Path
) -> None:
    server = start_redis(tmp_path / "redis", free_port(), save=NEVER)
    try:
        server.client().acl_setuser("checker", enabled=True, passwords=["+checker-secret"], keys=["*"],
                                    channels=["*"], commands=["+@all", "-config", "-time"])  # TIME: host clock
        (tmp_path / "checker.pass").write_text("checker-secret\n")
        mutate = then(redis_at(server.port), set_in("redis", username="checker",
                                                   password_file=str(tmp_path / "checker.pass")))
        run = run_checks(profile_variant(mutate), REDIS)
    finally:
        server.stop(timeout=10)
    assert run.failed() == {SWITCHED_ON}
    assert run.message(SWITCHED_ON) == (
        f"redis cache at 127.0.0.1:{server.port} refused CONFIG GET save (this user has no permissions to run the "
        "'config|get' command) and AOF is off: cannot tell whether RDB snapshots are on; allow it (ACL SETUSER "
        "checker +config|get)")


@pytest.fixture
def hardened_redis(tmp_path: Path) -> Iterator[Any]:
    """A throwaway redis-server with CONFIG renamed away (hardening; a managed Redis blocks it too), AOF off."""
    server = start_redis(tmp_path / "hardened", free_port(), save=NEVER,  # PING answers after a failed BGSAVE
                         extra=('rename-command CONFIG ""', "stop-writes-on-bgsave-error no"))
    yield server
    server.stop(timeout=10)


UNKNOWN_CONFIG = "unknown command 'CONFIG', with args beginning with: 'GET' 'save' "


def test_redis_with_config_renamed_fails_naming_the_declaration_not_an_acl(
    run_checks: Run, profile_variant: Variant, hardened_redis: Any
) -> None:
    run = run_checks(profile_variant(redis_at(hardened_redis.port)), REDIS)
    assert run.failed() == {SWITCHED_ON}
    assert run.message(SWITCHED_ON) == (
        f"redis cache at 127.0.0.1:{hardened_redis.port} does not know CONFIG ({UNKNOWN_CONFIG}) and AOF is off: "
        "cannot tell whether RDB snapshots are on; CONFIG is renamed or disabled (rename-command, a managed Redis) "
        "and no ACL brings it back: declare persistence: rdb (or aof, none) for redis cache in the profile")


def test_redis_with_config_renamed_passes_when_the_profile_declares_rdb(
    run_checks: Run, profile_variant: Variant, hardened_redis: Any
) -> None:
    run = run_checks(profile_variant(then(redis_at(hardened_redis.port), set_in("redis", persistence="rdb"))), REDIS)
    assert run.failed() == set()
    assert run.outcome(SWITCHED_ON) == "passed"
    assert run.checks[SWITCHED_ON]["evidence"]["declared"] == "rdb"


def test_redis_with_config_renamed_declared_aof_fails_on_aof_off(
    run_checks: Run, profile_variant: Variant, hardened_redis: Any
) -> None:
    run = run_checks(profile_variant(then(redis_at(hardened_redis.port), set_in("redis", persistence="aof"))), REDIS)
    assert run.failed() == {SWITCHED_ON}
    assert run.message(SWITCHED_ON) == (
        f"redis cache at 127.0.0.1:{hardened_redis.port}: the profile declares persistence: aof but INFO persistence "
        "shows aof_enabled:0: set appendonly yes, or declare what the server does")


def test_redis_declared_without_persistence_fails_the_switched_on_check(
    run_checks: Run, profile_variant: Variant, hardened_redis: Any
) -> None:
    run = run_checks(profile_variant(then(redis_at(hardened_redis.port), set_in("redis", persistence="none"))), REDIS)
    assert run.failed() == {SWITCHED_ON}
    assert run.message(SWITCHED_ON) == (
        f"redis cache at 127.0.0.1:{hardened_redis.port}: the profile declares persistence: none, so a restart loses "
        "every key; switch on save rules or appendonly and declare it, or declare require_persistence: false")


def test_redis_with_config_renamed_declared_rdb_still_fails_a_failed_bgsave(
    run_checks: Run, profile_variant: Variant, hardened_redis: Any
) -> None:
    client = hardened_redis.client()
    client.set("k", "v")
    shutil.rmtree(hardened_redis.directory)  # the server's working directory disappears under it
    client.bgsave()
    deadline = time.monotonic() + 10
    while client.info("persistence")["rdb_bgsave_in_progress"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.info("persistence")["rdb_last_bgsave_status"] == "err"
    run = run_checks(profile_variant(then(redis_at(hardened_redis.port), set_in("redis", persistence="rdb"))), REDIS)
    test = "test_redis.py::test_redis_persistence_is_healthy[cache]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"redis cache last BGSAVE failed (rdb_last_bgsave_status:err): see the redis log on "
        f"127.0.0.1:{hardened_redis.port}")


@pytest.fixture
def past_time(tmp_path: Path) -> Path:
    """A preload library whose ``time()`` runs off the real clock (libfaketime hangs redis-server: jemalloc)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("no C compiler to build the clock-shifting preload: run `make setup` (gcc)")
    source, library = tmp_path / "past_time.c", tmp_path / "past_time.so"
    source.write_text(PAST_TIME_C)
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(source)], check=True, timeout=60)
    return library


def test_redis_with_changes_unsaved_for_days_fails_the_unsaved_age_check(
    run_checks: Run, profile_variant: Variant, tmp_path: Path, past_time: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as started_in_the_past:  # its last save (its start) is 3d30m ago; its TIME is true
        started_in_the_past.setenv("LD_PRELOAD", str(past_time))
        started_in_the_past.setenv("OPSVERIFY_TIME_OFFSET", str(-(3 * 86400 + 30 * 60)))
        server = start_redis(tmp_path / "redis", free_port(), save=NEVER)
    try:
        client = server.client()
        client.set("pending", "not on disk")
        info = client.info("persistence")
        assert info["rdb_changes_since_last_save"] == 1
        assert client.time()[0] - info["rdb_last_save_time"] >= 3 * 86400
        run = run_checks(profile_variant(redis_at(server.port)), REDIS)
    finally:
        server.stop(timeout=10)
    assert run.failed() == {UNSAVED}
    assert run.message(UNSAVED) == (
        f"redis cache at 127.0.0.1:{server.port} has 1 unsaved change(s) and its last successful save was 3d30m ago "
        "(max_unsaved_age 4h): a crash now loses them; see why saves stopped (save rules, BGSAVE errors in its log)")


DEPENDENCIES = "health/test_dependencies.py"
DEPENDENCY = "test_dependencies.py::test_dependency_is_reachable_within_budget[quantum-backend]"
NOT_UP = ("check the URL and the dependency, or list the status in accept_status if it means up (e.g. 401 where the "
          "URL needs authentication)")


def dependency_at(url: str, **overrides: Any) -> Mutation:
    return then(only("dependencies"), set_in("dependencies", url=url, **overrides))


def test_unreachable_dependency_fails(run_checks: Run, profile_variant: Variant, app: Any) -> None:
    gone = app()
    gone.stop()
    run = run_checks(profile_variant(dependency_at(gone.url + "/health")), DEPENDENCIES)
    assert run.failed() == {DEPENDENCY}
    assert run.message(DEPENDENCY) == f"dependency quantum-backend at {gone.url}/health unreachable: connection refused"


def test_dependency_answering_404_fails(run_checks: Run, profile_variant: Variant, app: Any) -> None:
    backend = app()
    url = backend.url + "/no-such-health"  # a wrong URL: the server answers, the thing is not there
    run = run_checks(profile_variant(dependency_at(url)), DEPENDENCIES)
    assert run.failed() == {DEPENDENCY}
    assert run.message(DEPENDENCY) == f"dependency quantum-backend at {url} answered HTTP 404, not 2xx/3xx: {NOT_UP}"


def test_dependency_answering_401_fails_unless_the_profile_accepts_it(
    run_checks: Run, profile_variant: Variant, app: Any
) -> None:
    backend = app("--health-status", "401")
    url = backend.url + "/health"
    run = run_checks(profile_variant(dependency_at(url)), DEPENDENCIES)
    assert run.failed() == {DEPENDENCY}
    assert run.message(DEPENDENCY) == f"dependency quantum-backend at {url} answered HTTP 401, not 2xx/3xx: {NOT_UP}"
    accepted = run_checks(profile_variant(dependency_at(url, accept_status=[401])), DEPENDENCIES)
    assert accepted.failed() == set()
    assert accepted.outcome(DEPENDENCY) == "passed"
    assert accepted.checks[DEPENDENCY]["evidence"]["status"] == "401"


def test_dependency_accepting_401_still_fails_on_404(run_checks: Run, profile_variant: Variant, app: Any) -> None:
    backend = app()
    url = backend.url + "/no-such-health"
    run = run_checks(profile_variant(dependency_at(url, accept_status=[401])), DEPENDENCIES)
    assert run.failed() == {DEPENDENCY}
    assert run.message(DEPENDENCY) == (
        f"dependency quantum-backend at {url} answered HTTP 404, not 2xx/3xx or 401: {NOT_UP}")


SECRETS = ("s3cr3tTOKEN", "SECRETKEY")


def assert_no_secret_shown(run: Any) -> None:
    """Neither planted secret in the run's output nor in any file of its report directory."""
    shown = {"stdout": run.result.stdout.str(), "stderr": run.result.stderr.str()}
    shown |= {str(f): f.read_bytes().decode(errors="replace") for f in run.report_dir.rglob("*") if f.is_file()}
    assert len(shown) > 3  # the report was written (evidence.json, junit, html, …)
    leaked = {where for where, text in shown.items() for secret in SECRETS if secret in text}
    assert not leaked, leaked


@pytest.mark.parametrize(("path", "outcome"), [("/nope", "failed"), ("/health", "passed")])
def test_dependency_url_secrets_never_reach_the_report(
    run_checks: Run, profile_variant: Variant, app: Any, path: str, outcome: str
) -> None:
    backend = app()
    host = backend.url.removeprefix("http://")
    url = f"http://svc:s3cr3tTOKEN@{host}{path}?api_key=SECRETKEY"
    run = run_checks(profile_variant(dependency_at(url)), DEPENDENCIES, extra=("-rA",))
    assert run.outcome(DEPENDENCY) == outcome
    assert run.checks[DEPENDENCY]["evidence"]["address"] == f"http://svc:***@{host}{path}?api_key=***"
    if outcome == "failed":
        assert run.message(DEPENDENCY) == (
            f"dependency quantum-backend at http://svc:***@{host}/nope?api_key=*** answered HTTP 404, not 2xx/3xx: "
            f"{NOT_UP}")
    assert_no_secret_shown(run)


def test_unreachable_dependency_url_secrets_never_reach_the_report(
    run_checks: Run, profile_variant: Variant, app: Any
) -> None:
    gone = app()
    gone.stop()
    host = gone.url.removeprefix("http://")
    run = run_checks(profile_variant(dependency_at(f"http://s3cr3tTOKEN@{host}/health?api_key=SECRETKEY&v=2")),
                     DEPENDENCIES, extra=("-rA",))
    assert run.failed() == {DEPENDENCY}
    assert run.message(DEPENDENCY) == (
        f"dependency quantum-backend at http://***@{host}/health?api_key=***&v=*** unreachable: connection refused")
    assert_no_secret_shown(run)


def test_service_url_secrets_never_reach_the_report(run_checks: Run, profile_variant: Variant, app: Any) -> None:
    backend = app("--health-status", "500")
    host = backend.url.removeprefix("http://")
    mutate = service_at(f"http://svc:s3cr3tTOKEN@{host}", health_path="/health?api_key=SECRETKEY")
    run = run_checks(profile_variant(mutate), HTTP, METRICS, extra=("-rA",))
    status, body = (f"test_http_health.py::{check}{PF}" for check in ("test_health_endpoint_answers_2xx",
                                                                         "test_health_body_reports_healthy"))
    assert run.failed() == {status, body}
    shown = f"http://svc:***@{host}/health?api_key=***"
    assert run.message(status) == f"photonic-foundry health endpoint {shown} answered HTTP 500, not 2xx"
    assert run.message(body) == (
        f"photonic-foundry reports status 'unhealthy' at {shown}, expected one of ok, healthy, pass, up")
    assert run.checks[status]["evidence"]["url"] == shown
    assert_no_secret_shown(run)


@pytest.fixture
def full_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of the test's own, filled to about 94 %; unmounted (and proven gone) after."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({done.stderr.strip()}): run the self-tests as root")
    try:
        (mount / "ballast").write_bytes(b"\0" * (960 * 1024))
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True, timeout=10, check=True)
        assert not os.path.ismount(mount)


def test_nearly_full_filesystem_fails_only_its_disk_check(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, full_filesystem: Path
) -> None:
    host = sandbox.hosts[0]
    run = run_checks(profile_variant(then(only("hosts"), set_in("hosts", disk_paths=["/", str(full_filesystem)]))),
                     "health/test_host_resources.py")
    test = f"test_host_resources.py::test_disk_usage_is_under_limit[{host.name}:{full_filesystem}]"
    assert run.failed() == {test}
    used = run.checks[test]["evidence"]["used_percent"]
    assert float(used) > 90
    assert run.message(test) == (
        f"host {host.name} disk {full_filesystem} usage is {used}% (limit {host.disk_max_percent:g}%) on {host.uri}"
    )


def test_memory_limit_below_current_use_fails(run_checks: Run, profile_variant: Variant) -> None:
    run = run_checks(profile_variant(then(only("hosts"), set_in("hosts", memory_max_percent=0.01))),
                     "health/test_host_resources.py")
    test = "test_host_resources.py::test_memory_usage_is_under_limit[local]"
    assert run.failed() == {test}
    used = run.checks[test]["evidence"]["used_percent"]
    assert run.message(test) == f"host local memory usage is {used}% (limit 0.01%) on local://"
