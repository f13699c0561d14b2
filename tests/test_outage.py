"""One outage, one root cause: a component that refused or timed out is probed once per run and worker.

Real faults: a service frozen with SIGSTOP (it accepts connections and never answers), a stopped
one (connections refused), listeners that accept and never answer standing in for a hung Redis,
S3 or HTTP server, and two answers that are no outage (HTTP 500, a wrong password).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opsverify.localserver.net import free_port
from opsverify.sandbox.app import start_app, stop_process

Run = Callable[..., Any]
Variant = Callable[..., Path]
Mutation = Callable[[dict[str, Any]], None]
CONNECT, REQUEST = 2, 5  # the profile timeouts of these tests, in seconds
MARGIN = 4  # a loaded machine's slack: generous, yet less than a second timeout
TIMEOUTS = {"connect": f"{CONNECT}s", "request": f"{REQUEST}s"}
HTTP_CHECKS = ("health/test_http_health.py", "health/test_metrics.py", "health/test_dependencies.py")
PF = "[photonic-foundry]"
FIRST = f"test_http_health.py::test_health_endpoint_answers_2xx{PF}"
SERVICE_CHECKS = {
    FIRST,
    f"test_http_health.py::test_health_body_reports_healthy{PF}",
    f"test_http_health.py::test_health_answers_within_latency_budget{PF}",
    f"test_metrics.py::test_metrics_expose_required_series{PF}",
    f"test_metrics.py::test_metric_values_stay_under_maximum{PF}",
    f"test_metrics.py::test_metrics_are_fresh{PF}",
    "test_dependencies.py::test_dependency_is_reachable_within_budget[quantum-backend]",
}
TIMED_OUT = f"no answer within the {REQUEST}s request timeout"


def keep(**sections: list[dict[str, Any]]) -> Callable[[dict[str, Any]], None]:
    """Keep only the given component sections (others emptied), with this module's short timeouts."""

    def mutate(data: dict[str, Any]) -> None:
        for key in ("services", "databases", "redis", "dependencies", "hosts"):
            data[key] = sections.get(key, [])
        data["timeouts"] = TIMEOUTS

    return mutate


def service_at(url: str) -> Mutation:
    """photonic-foundry at ``url``, and the quantum-backend dependency on the same server."""
    return lambda data: keep(
        services=[{**data["services"][0], "url": url}],
        dependencies=[{**data["dependencies"][0], "url": f"{url}/health"}],
    )(data)


def skipped(component: str, port: int, cause: str) -> re.Pattern[str]:
    """The note of a check that did not probe again: the first failure, its time and cause."""
    when = r"\d\d:\d\d:\d\d"
    return re.compile(rf"skipped probing: {component} at 127\.0\.0\.1:{port} did not answer at {when} \({cause}\)$")


def one_root_cause(run: Any, checks: set[str], first: str, root: str, note: re.Pattern[str]) -> None:
    """Every check failed; the first with ``root`` itself, each other one with the note naming it."""
    assert run.failed() == checks, run.result.stdout.str()
    assert run.message(first).endswith(root)
    for test in checks - {first}:
        assert note.search(run.message(test)), run.message(test)


def took(run: Any, checks: set[str]) -> float:
    """Seconds the checks took together (setup, call and teardown), from the evidence."""
    return sum(float(run.checks[t]["duration_s"]) for t in checks)


@dataclass
class App:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def freeze(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process acts on SIGTERM only once continued
        stop_process(self.proc, timeout=10)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Callable[..., App]]:
    """``app(*fault_flags)``: a real photonic-foundry app process; continued and stopped after the test."""
    started: list[App] = []

    def start(*flags: str) -> App:
        port = free_port()
        started.append(App(start_app("photonic-foundry", port, tmp_path / f"app-{port}.log", *flags), port))
        return started[-1]

    yield start
    for one in started:
        one.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener accepts connections (the kernel's backlog) and never answers: a hung server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def timed(run_checks: Run, profile: Path, *targets: str) -> tuple[Any, float]:
    started = time.monotonic()
    run = run_checks(profile, *targets)
    return run, time.monotonic() - started


def test_frozen_service_costs_one_request_timeout(run_checks: Run, profile_variant: Variant, app: Any) -> None:
    service = app()
    profile = profile_variant(service_at(service.url))
    healthy, healthy_took = timed(run_checks, profile, *HTTP_CHECKS)
    assert healthy.failed() == set(), healthy.result.stdout.str()
    service.freeze()
    frozen, frozen_took = timed(run_checks, profile, *HTTP_CHECKS)
    assert frozen_took <= healthy_took + REQUEST + MARGIN, (healthy_took, frozen_took)
    assert took(frozen, SERVICE_CHECKS) < REQUEST + MARGIN
    one_root_cause(frozen, SERVICE_CHECKS, FIRST, f"did not answer: {TIMED_OUT}",
                   skipped("photonic-foundry", service.port, TIMED_OUT))
    times = {re.findall(r"did not answer at (\S+) ", frozen.message(t))[-1] for t in SERVICE_CHECKS - {FIRST}}
    assert len(times) == 1, times  # one failure, named by every later check


def test_killed_service_fails_every_check_naming_the_first_refusal(
    run_checks: Run, profile_variant: Variant, app: Any
) -> None:
    service = app()
    service.stop()
    run = run_checks(profile_variant(service_at(service.url)), *HTTP_CHECKS)
    one_root_cause(run, SERVICE_CHECKS, FIRST, "did not answer: connection refused",
                   skipped("photonic-foundry", service.port, "connection refused"))
    assert run.message(FIRST) == (
        f"photonic-foundry health endpoint {service.url}/health did not answer: connection refused")


def test_silent_http_endpoint_fails_within_one_timeout(
    run_checks: Run, profile_variant: Variant, silent_port: int
) -> None:
    run = run_checks(profile_variant(service_at(f"http://127.0.0.1:{silent_port}")), *HTTP_CHECKS)
    one_root_cause(run, SERVICE_CHECKS, FIRST, f"did not answer: {TIMED_OUT}",
                   skipped("photonic-foundry", silent_port, TIMED_OUT))
    assert took(run, SERVICE_CHECKS) < CONNECT + REQUEST + MARGIN


def test_silent_redis_fails_within_one_timeout(run_checks: Run, profile_variant: Variant, silent_port: int) -> None:
    def redis_at_silent_port(data: dict[str, Any]) -> None:
        keep(redis=[{**data["redis"][0], "port": silent_port}])(data)

    run = run_checks(profile_variant(redis_at_silent_port), "health/test_redis.py")
    ping = "test_redis.py::test_redis_answers_ping_within_budget[cache]"
    checks = {ping, "test_redis.py::test_redis_persistence_is_healthy[cache]",
              "test_redis.py::test_redis_persistence_is_switched_on[cache]",
              "test_redis.py::test_redis_unsaved_changes_are_younger_than_max_unsaved_age[cache]"}
    one_root_cause(run, checks, ping, f"did not answer: {TIMED_OUT}", skipped("cache", silent_port, TIMED_OUT))
    assert run.message(ping) == f"redis cache at 127.0.0.1:{silent_port} did not answer: {TIMED_OUT}"
    assert took(run, checks) < CONNECT + REQUEST + MARGIN


def test_silent_s3_endpoint_fails_the_offsite_checks_within_one_timeout(
    run_checks: Run, profile_variant: Variant, silent_port: int
) -> None:
    offsite: list[dict[str, Any]] = []

    def offsite_at_silent_port(data: dict[str, Any]) -> None:
        data["timeouts"] = TIMEOUTS
        offsite.extend(s for s in data["backups"] if s.get("offsite"))
        for source in offsite:
            source["offsite"]["endpoint_url"] = f"http://127.0.0.1:{silent_port}"

    run = run_checks(profile_variant(offsite_at_silent_port), "backup/test_backup_offsite.py")
    checks = {f"test_backup_offsite.py::test_recent_backups_have_equal_offsite_copies[{s['name']}]" for s in offsite}
    first = f"test_backup_offsite.py::test_recent_backups_have_equal_offsite_copies[{offsite[0]['name']}]"
    assert len(checks) >= 2
    root = f"offsite copies of {offsite[0]['name']}: cannot list {offsite[0]['offsite']['url']}: {TIMED_OUT}"
    one_root_cause(run, checks, first, root, skipped(f"the offsite S3 server of {offsite[0]['name']}", silent_port,
                                                      TIMED_OUT))
    assert took(run, checks) < CONNECT + REQUEST + MARGIN


def test_answers_that_are_no_outage_leave_later_probes_running(
    run_checks: Run, profile_variant: Variant, app: Any, tmp_path: Path
) -> None:
    failing = app("--health-status", "500")
    run = run_checks(profile_variant(service_at(failing.url)), *HTTP_CHECKS)
    assert run.message(FIRST) == f"photonic-foundry health endpoint {failing.url}/health answered HTTP 500, not 2xx"
    assert run.outcome(f"test_metrics.py::test_metrics_expose_required_series{PF}") == "passed"
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")

    def wrong_password(data: dict[str, Any]) -> None:
        keep(databases=[{**data["databases"][0], "password_file": str(wrong)}])(data)

    run = run_checks(profile_variant(wrong_password), "health/test_postgres.py", "recovery/test_wal_archiving.py")
    assert run.failed() == set(run.checks)
    for test in run.checks:
        assert 'password authentication failed for user "opsverify"' in run.message(test), run.message(test)
