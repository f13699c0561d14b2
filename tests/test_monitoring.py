"""Monitoring output: Prometheus metrics of a run (textfile, a real Pushgateway), the webhook, the alert rules."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from opsverify.localserver.net import free_port, wait_for_port
from opsverify.profile.reporting import Pushgateway as PushgatewaySettings
from opsverify.profile.reporting import Webhook
from opsverify.reporting.evidence import CheckResult, EvidenceDoc, RunInfo, Selection
from opsverify.reporting.prometheus import push, run_registry, selection_label
from opsverify.reporting.webhook import DeliveryError, explain, post
from opsverify.sandbox.tls import TlsFiles, create_tls

ROOT = Path(__file__).resolve().parents[1]
PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"
HTTP = "health/test_http_health.py"
FRESHNESS = "backup/test_backup_freshness.py"
ANSWERS = "health/test_http_health.py::test_health_endpoint_answers_2xx"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str, prefix: str = "opsverify_", drop: tuple[str, ...] = ()) -> Samples:
    """Every sample of the exposition ``text`` whose name starts with ``prefix``: (name, labels) -> value."""
    return {
        (s.name, frozenset((k, v) for k, v in s.labels.items() if k not in drop)): s.value
        for family in text_string_to_metric_families(text) for s in family.samples if s.name.startswith(prefix)
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


# --- metrics built from an evidence document --------------------------------------------------------------------

def check(nodeid: str, outcome: str, markers: list[str], **fields: Any) -> CheckResult:
    return CheckResult(nodeid=nodeid, outcome=outcome, markers=markers, **fields)  # type: ignore[arg-type]


FINISHED = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
PASSED = "checks/health/test_http_health.py::test_health_endpoint_answers_2xx[qp]"
FAILED = "checks/backup/test_backup_freshness.py::test_newest_backup_is_younger_than_rpo[db]"
WAIVED = "checks/backup/test_backup_size.py::test_newest_backup_has_not_shrunk[db]"
SKIPPED = "checks/security/test_tls.py::test_certificate_is_valid"
BROKEN = "checks/health/test_dependencies.py::test_dependency_answers[token=planted-label-secret]"


def a_run() -> EvidenceDoc:
    run = RunInfo(id="r1", profile="quantum-planner", role="staging", opsverify="0", started=FINISHED,
                  finished=FINISHED, host="h", selection=Selection(markexpr="daily or dr", keyword="http"))
    return EvidenceDoc(run=run, checks=[
        check(PASSED, "passed", ["daily", "health"], runbook=["PF-01", "QP-01"], severity="critical",
              component="qp", duration_s=0.25),
        check(FAILED, "failed", ["backup", "daily"], runbook=["PF-04"], severity="blocker", component="db",
              duration_s=1.5, metrics={"backup_age_seconds": 90000.0, "backup_rpo_seconds": 86400.0}),
        check(WAIVED, "waived", ["weekly", "backup"], runbook=["PF-11"], severity="blocker", component="db",
              metrics={"backup_size_bytes": 1024.0, "queue-depth.count": 3.0}),
        check(SKIPPED, "skipped", ["security", "weekly"], severity="critical"),
        check(BROKEN, "broken", ["health", "daily"], component="token=planted-label-secret"),
    ])


def test_metrics_of_a_run_hold_every_check_its_outcome_and_measurements() -> None:
    from prometheus_client import generate_latest

    text = generate_latest(run_registry(a_run())).decode()
    broken = "checks/health/test_dependencies.py::test_dependency_answers[token=***"  # redact_text masks to the end
    chosen = "daily_or_dr"  # -m "daily or dr"; -k adds nothing

    def labels(nodeid: str, domain: str, runbook: str, severity: str, component: str) -> dict[str, str]:
        return {"check": nodeid, "domain": domain, "runbook": runbook, "severity": severity, "component": component,
                "selection": "daily_or_dr"}

    passed = labels(PASSED, "health", "PF-01,QP-01", "critical", "qp")
    failed = labels(FAILED, "backup", "PF-04", "blocker", "db")
    waived = labels(WAIVED, "backup", "PF-11", "blocker", "db")
    assert samples(text) == {
        key("opsverify_check_success", **passed): 1.0,
        key("opsverify_check_success", **failed): 0.0,
        key("opsverify_check_success", **waived): 0.0,
        key("opsverify_check_success", **labels(broken, "health", "", "normal", "token=***")): 0.0,
        key("opsverify_check_waived", **waived): 1.0,
        key("opsverify_check_skipped", **labels(SKIPPED, "security", "", "critical", "")): 1.0,
        key("opsverify_check_duration_seconds", check=PASSED, selection=chosen): 0.25,
        key("opsverify_check_duration_seconds", check=FAILED, selection=chosen): 1.5,
        key("opsverify_check_duration_seconds", check=WAIVED, selection=chosen): 0.0,
        key("opsverify_check_duration_seconds", check=SKIPPED, selection=chosen): 0.0,
        key("opsverify_check_duration_seconds", check=broken, selection=chosen): 0.0,
        key("opsverify_backup_age_seconds", check=FAILED, component="db", selection=chosen): 90000.0,
        key("opsverify_backup_rpo_seconds", check=FAILED, component="db", selection=chosen): 86400.0,
        key("opsverify_backup_size_bytes", check=WAIVED, component="db", selection=chosen): 1024.0,
        key("opsverify_queue_depth_count", check=WAIVED, component="db", selection=chosen): 3.0,
        key("opsverify_last_run_timestamp_seconds", profile="quantum-planner", role="staging",
            selection=chosen): FINISHED.timestamp(),
        **{key("opsverify_run_checks", outcome=o, selection=chosen): 1.0
           for o in ("passed", "failed", "broken", "skipped", "waived")},
        key("opsverify_run_success", selection=chosen): 0.0,
    }
    assert "planted-label-secret" not in text


@pytest.mark.parametrize(("markexpr", "label"), [
    ("daily", "daily"), ("weekly", "weekly"), ("daily or dr", "daily_or_dr"), ("not (weekly)", "not_weekly"),
    ("Daily and not slow", "daily_and_not_slow"), ("", "all"), ("  ", "all"),
])
def test_the_selection_label_is_the_m_expression_made_label_safe(markexpr: str, label: str) -> None:
    assert selection_label(markexpr) == label


# --- real servers: a Pushgateway, a counting proxy in front of it, a webhook receiver ------------------------------

class Pushgateway:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, auth: tuple[str, str] | None,
                 tls: TlsFiles | None = None) -> None:
        self.proc, self.url, self.auth, self.tls = proc, url, auth, tls

    def metrics(self) -> str:
        verify = str(self.tls.ca) if self.tls else True
        response = requests.get(f"{self.url}/metrics", auth=self.auth, timeout=10, verify=verify)
        response.raise_for_status()
        return response.text


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[Callable[..., Pushgateway]]:
    """``pushgateway(auth=None, tls=None)``: Debian's prometheus-pushgateway on a free loopback port (no
    persistence), with basic auth for ``auth=(user, password)`` and HTTPS for ``tls``; stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(auth: tuple[str, str] | None = None, tls: TlsFiles | None = None) -> Pushgateway:
        port = free_port()
        args = [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="]  # Debian persists
        web = ""
        if auth is not None:
            hashed = bcrypt.hashpw(auth[1].encode(), bcrypt.gensalt(rounds=4)).decode()
            web += f"basic_auth_users:\n  {auth[0]}: '{hashed}'\n"
        if tls is not None:
            web += f"tls_server_config:\n  cert_file: {tls.cert}\n  key_file: {tls.key}\n"
        if web:
            (tmp_path / f"web-{port}.yml").write_text(web)
            args.append(f"--web.config.file={tmp_path / f'web-{port}.yml'}")
        started.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_port("127.0.0.1", port, timeout=20)
        return Pushgateway(started[-1], f"http{'s' if tls else ''}://127.0.0.1:{port}", auth, tls)

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


class Receiver:
    """A real HTTP server on loopback recording every request; answers with ``statuses`` in turn, then 200."""

    def __init__(self, statuses: list[int] | None = None, upstream: str | None = None,
                 tls: TlsFiles | None = None) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.present: list[dict[str, bool]] = []  # per POSTed run outcome: each listed report's file exists now
        self.statuses = list(statuses or [])
        self.upstream = upstream
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append((self.command, self.path, dict(self.headers), body))
                receiver.note_reports(body)
                status, answer = receiver.answer(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_PUT = do_POST = do_DELETE = handle_one

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert, tls.key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"http{'s' if tls else ''}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if self.upstream is not None:  # a counting proxy: forward to the real server
            forwarded = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}
            response = requests.request(method, self.upstream + path, data=body, headers=forwarded, timeout=10)
            return response.status_code, response.content
        return (self.statuses.pop(0) if self.statuses else 200), b"ok"

    def note_reports(self, body: bytes) -> None:
        try:
            reports = json.loads(body).get("reports")
        except (ValueError, AttributeError):
            return
        if isinstance(reports, dict):
            self.present.append({name: Path(path).is_file() for name, path in reports.items()})

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, _, body in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    """``receiver(statuses=[500, 200], upstream=None, tls=None)``: an HTTP(S) receiver (or counting proxy) in a
    thread."""
    started: list[Receiver] = []

    def start(statuses: list[int] | None = None, upstream: str | None = None, tls: TlsFiles | None = None) -> Receiver:
        started.append(Receiver(statuses, upstream, tls))
        return started[-1]

    yield start
    for one in started:
        one.stop()


def reporting(**sections: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data.setdefault("reporting", {}).update(sections)

    return mutate


def dead_service(port: int) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        service = next(s for s in data["services"] if s["name"] == "photonic-foundry")
        service["url"] = f"http://127.0.0.1:{port}"

    return mutate


def every_file_and_output(run: Any) -> str:
    files = [p for p in run.report_dir.rglob("*") if p.is_file()]
    return run.result.stdout.str() + run.result.stderr.str() + "".join(
        p.read_bytes().decode(errors="replace") for p in files)


def line_of(run: Any, label: str) -> list[str]:
    return [line for line in run.result.stdout.lines if line.startswith(f"{label} ")]


# --- one run under xdist: one push, one POST, every worker's checks once -----------------------------------------

def test_under_xdist_the_controller_pushes_and_posts_once_with_every_workers_check(
    run_checks: Any, profile_variant: Any, pushgateway: Any, receiver: Any, tmp_path: Path
) -> None:
    gateway = pushgateway()
    proxy, hook = receiver(upstream=gateway.url), receiver()
    token, path_secret = "planted-webhook-token-7f3a9c", "planted-path-secret-91b2"  # a chat webhook's URL holds one
    (tmp_path / "token").write_text(token + "\n")
    dead = free_port()
    textfile = tmp_path / "node-exporter" / "opsverify.prom"

    def mutate(data: dict[str, Any]) -> None:
        dead_service(dead)(data)
        reporting(textfile=str(textfile), pushgateway={"url": proxy.url, "timeout": "10s"},
                  webhook={"url": f"{hook.url}/hook/{path_secret}", "token_file": str(tmp_path / "token")})(data)

    run = run_checks(profile_variant(mutate), HTTP, FRESHNESS, extra=("-n", "2"))
    assert run.result.ret == 1, run.result.stdout.str()
    down = "test_http_health.py::test_health_endpoint_answers_2xx[photonic-foundry]"
    assert run.message(down) == (
        f"photonic-foundry health endpoint http://127.0.0.1:{dead}/health did not answer: connection refused")
    profile, evidence = run.evidence["run"]["profile"], run.evidence["checks"]

    group = f"/metrics/job/opsverify/profile/{profile}/selection/all"  # no -m
    assert [(m, p) for m, p, _, _ in proxy.requests] == [("PUT", group)]
    pushed = samples(gateway.metrics(), drop=("job", "instance", "profile", "selection"))
    success = {dict(labels)["check"]: value for (name, labels), value in pushed.items()
               if name == "opsverify_check_success"}
    assert success == {c["nodeid"]: float(c["outcome"] == "passed") for c in evidence}
    assert len([n for n, _ in pushed if n == "opsverify_check_success"]) == len(evidence) == len(set(success))
    assert success[f"checks/{HTTP}::test_health_endpoint_answers_2xx[photonic-foundry]"] == 0.0
    assert success[f"checks/{HTTP}::test_health_endpoint_answers_2xx[quantum-planner]"] == 1.0
    ages = {c["nodeid"]: c["metrics"]["backup_age_seconds"] for c in evidence if "backup_age_seconds" in c["metrics"]}
    assert ages
    assert {dict(labels)["check"]: value for (name, labels), value in pushed.items()
                     if name == "opsverify_backup_age_seconds"} == ages
    assert pushed[key("opsverify_run_success")] == 0.0
    assert textfile.read_text() == (run.report_dir / "metrics.prom").read_text()

    assert len(hook.requests) == 1
    method, path, headers, _ = hook.requests[0]
    assert (method, path, headers["Authorization"]) == ("POST", f"/hook/{path_secret}", f"Bearer {token}")
    body = hook.bodies()[0]
    failures = [{"nodeid": c["nodeid"], "outcome": c["outcome"], "runbook": c["runbook"], "message": c["message"],
                 "component": c["component"], "severity": c["severity"]}
                for c in sorted(evidence, key=lambda c: c["nodeid"]) if c["outcome"] in ("failed", "broken")]
    assert body == {
        "schema_version": "1.0", "run_id": run.evidence["run"]["id"], "profile": profile,
        "role": run.evidence["run"]["role"], "started": body["started"], "finished": body["finished"],
        "success": False, "totals": {**dict.fromkeys(("failed", "broken", "waived", "skipped", "passed"), 0),
                                     **run.evidence["run"]["totals"]},
        "failures": failures, "reports": body["reports"],
    }
    assert set(body["reports"]) == {"summary.html", "summary.md", "evidence.json", "metrics.prom", "report.html",
                                    "junit.xml"}
    assert {name: body["reports"][name] for name in ("summary.html", "summary.md", "evidence.json")} == {
        name: str(run.report_dir / name) for name in ("summary.html", "summary.md", "evidence.json")}
    # when the POST arrived, every report it lists was written, but pytest-html's, which follows the hook
    assert hook.present == [{"summary.html": True, "summary.md": True, "evidence.json": True, "metrics.prom": True,
                             "junit.xml": True, "report.html": False}]
    assert body["reports"]["report.html"] == str(run.report_dir / "report.html")
    assert line_of(run, "webhook") == [f"webhook         posted to {hook.url}/hook/*** (HTTP 200)"]
    assert line_of(run, "pushgateway") == [f"pushgateway     {proxy.url}{group}"]
    shown = every_file_and_output(run)
    assert token not in shown
    assert path_secret not in shown
    assert f"2 workers [{len(evidence)} items]" in run.result.stdout.str()


# --- one group and one textfile per selection: a weekly run leaves the daily run's failures -------------------------

def test_a_run_of_another_selection_leaves_the_daily_runs_failures_in_the_pushgateway_and_its_textfile(
    run_checks: Any, profile_variant: Any, pushgateway: Any, tmp_path: Path
) -> None:
    gateway = pushgateway()
    dead = free_port()
    textfile = tmp_path / "node-exporter" / "opsverify-{selection}.prom"

    def publish(data: dict[str, Any]) -> None:
        reporting(textfile=str(textfile), pushgateway={"url": gateway.url, "timeout": "10s"})(data)

    def failing(data: dict[str, Any]) -> None:
        dead_service(dead)(data)
        publish(data)

    daily = run_checks(profile_variant(failing, name="daily.yaml"), HTTP, extra=("-m", "daily"))
    assert daily.result.ret == 1, daily.result.stdout.str()
    down = f"checks/{HTTP}::test_health_endpoint_answers_2xx[photonic-foundry]"
    profile = daily.evidence["run"]["profile"]
    daily_metrics = (daily.report_dir / "metrics.prom").read_text()  # the next run writes the same report folder
    other = run_checks(profile_variant(publish, name="health.yaml"), ANSWERS, extra=("-m", "health and not weekly"))
    assert other.result.ret == 0, other.result.stdout.str()
    assert line_of(other, "pushgateway") == [
        f"pushgateway     {gateway.url}/metrics/job/opsverify/profile/{profile}/selection/health_and_not_weekly"]

    pushed = samples(gateway.metrics(), drop=("instance", "domain", "runbook", "severity", "component"))
    groups = {"job": "opsverify", "profile": profile}
    assert pushed[key("opsverify_check_success", check=down, selection="daily", **groups)] == 0.0
    assert pushed[key("opsverify_check_success", check=down, selection="health_and_not_weekly", **groups)] == 1.0
    assert pushed[key("opsverify_run_success", selection="daily", **groups)] == 0.0
    assert pushed[key("opsverify_run_success", selection="health_and_not_weekly", **groups)] == 1.0
    finished = {dict(labels)["selection"]: value for (name, labels), value in pushed.items()
                if name == "opsverify_last_run_timestamp_seconds"}
    assert finished == {
        "daily": datetime.fromisoformat(daily.evidence["run"]["finished"]).timestamp(),
        "health_and_not_weekly": datetime.fromisoformat(other.evidence["run"]["finished"]).timestamp()}

    written = sorted(p.name for p in textfile.parent.iterdir())
    assert written == ["opsverify-daily.prom", "opsverify-health_and_not_weekly.prom"]
    assert line_of(daily, "textfile") == [f"textfile        {textfile.parent / 'opsverify-daily.prom'}"]
    assert (textfile.parent / "opsverify-daily.prom").read_text() == daily_metrics
    kept = samples((textfile.parent / "opsverify-daily.prom").read_text(),
                   drop=("domain", "runbook", "severity", "component"))
    assert kept[key("opsverify_check_success", check=down, selection="daily")] == 0.0
    assert kept[key("opsverify_run_success", selection="daily")] == 0.0


def test_a_textfile_path_may_hold_only_the_selection_placeholder(tmp_path: Path) -> None:
    from opsverify.errors import ProfileError
    from opsverify.profile.loader import load_profile

    (tmp_path / "ok.yaml").write_text("name: demo\nreporting:\n  textfile: /tmp/x/opsverify-{selection}.prom\n")
    assert load_profile(tmp_path / "ok.yaml", environ={}).reporting.textfile == Path(
        "/tmp/x/opsverify-{selection}.prom")
    (tmp_path / "bad.yaml").write_text("name: demo\nreporting:\n  textfile: /tmp/x/opsverify-{mode}.prom\n")
    with pytest.raises(ProfileError) as refused:
        load_profile(tmp_path / "bad.yaml", environ={})
    assert "reporting.textfile (line 3): /tmp/x/opsverify-{mode}.prom: only {selection} may stand in braces (write " \
           "a literal brace as {{ or }})" in str(refused.value)


# --- failures to publish are one line and change nothing -----------------------------------------------------------

def test_unreachable_targets_are_one_line_each_and_leave_the_exit_status(
    run_checks: Any, profile_variant: Any, receiver: Any, tmp_path: Path
) -> None:
    hook = receiver()
    dead = free_port()
    (tmp_path / "a-file").write_text("")
    blocked = tmp_path / "a-file" / "opsverify.prom"
    variant = profile_variant(reporting(
        textfile=str(blocked), pushgateway={"url": f"http://127.0.0.1:{dead}", "timeout": "2s"},
        webhook={"url": hook.url, "on": "failure"}))
    run = run_checks(variant, ANSWERS)
    assert run.result.ret == 0, run.result.stdout.str()
    assert {test: run.outcome(test) for test in run.checks} == {
        f"test_http_health.py::test_health_endpoint_answers_2xx[{name}]": "passed"
        for name in ("photonic-foundry", "quantum-planner")}
    assert line_of(run, "pushgateway") == [
        f"pushgateway     metrics not pushed to http://127.0.0.1:{dead}: connection refused; start it or correct "
        "reporting.pushgateway.url"]
    assert line_of(run, "textfile") == [
        f"textfile        metrics not written to {blocked}: File exists ({blocked.parent}); make its directory "
        "writable or correct reporting.textfile"]
    assert hook.requests == []  # on: failure, and nothing failed
    assert samples((run.report_dir / "metrics.prom").read_text())[key("opsverify_run_success", selection="all")] == 1.0
    assert "Traceback" not in run.result.stdout.str()


def test_pushgateway_basic_auth_works_and_its_password_is_never_shown(
    run_checks: Any, profile_variant: Any, pushgateway: Any, receiver: Any, tmp_path: Path
) -> None:
    password = "planted-push-password-c41d"
    gateway, hook = pushgateway(auth=("opsverify", password)), receiver()
    (tmp_path / "right").write_text(password + "\n")
    (tmp_path / "wrong").write_text("not-the-password\n")

    def variant(file: str) -> Path:
        return profile_variant(reporting(
            pushgateway={"url": gateway.url, "username": "opsverify", "password_file": str(tmp_path / file)},
            webhook={"url": hook.url, "on": "always"}), name=f"{file}.yaml")

    run = run_checks(variant("right"), ANSWERS)
    profile = run.evidence["run"]["profile"]
    assert line_of(run, "pushgateway") == [
        f"pushgateway     {gateway.url}/metrics/job/opsverify/profile/{profile}/selection/all"]
    pushed = samples(gateway.metrics(), drop=("instance",))
    assert pushed[key("opsverify_run_success", job="opsverify", profile=profile, selection="all")] == 1.0
    assert password not in every_file_and_output(run)
    posted = hook.bodies()
    assert [(b["success"], b["failures"], b["totals"]["passed"]) for b in posted] == [(True, [], 2)]  # on: always

    refused = run_checks(variant("wrong"), ANSWERS)
    assert refused.result.ret == 0
    assert line_of(refused, "pushgateway") == [
        f"pushgateway     metrics not pushed to {gateway.url}: HTTP 401 (credentials refused); check "
        "reporting.pushgateway.username/password"]
    assert password not in every_file_and_output(refused)


# --- the webhook's retries and bounds ------------------------------------------------------------------------------

def hook_at(url: str, **fields: Any) -> Webhook:
    return Webhook.model_validate({"url": url, **fields})


def test_webhook_retries_5xx_with_backoff_and_gives_up_on_a_refusal(receiver: Any) -> None:
    flaky = receiver(statuses=[500, 503])
    began = time.monotonic()
    assert post(hook_at(flaky.url, timeout="5s", retries=3), {"a": 1}) == 200
    assert time.monotonic() - began >= 3.0  # 1 s, then 2 s
    assert [m for m, _, _, _ in flaky.requests] == ["POST", "POST", "POST"]
    assert flaky.bodies() == [{"a": 1}] * 3

    refusing = receiver(statuses=[401])
    with pytest.raises(DeliveryError) as raised:
        post(hook_at(refusing.url, retries=3), {"a": 1})
    assert str(raised.value) == "HTTP 401 (credentials refused) after 1 attempt; check reporting.webhook.token"
    assert len(refusing.requests) == 1

    failing = receiver(statuses=[500, 500, 500])
    with pytest.raises(DeliveryError) as raised:
        post(hook_at(failing.url, retries=1), {"a": 1})
    assert str(raised.value) == "HTTP 500 after 2 attempts; check the receiver's log for reporting.webhook.url"


def test_a_webhook_that_never_answers_is_bounded_by_timeout_and_attempts() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        began = time.monotonic()
        with pytest.raises(DeliveryError) as raised:
            post(hook_at(url, timeout="1s", retries=2), {"a": 1})
        took = time.monotonic() - began
    assert str(raised.value) == (
        "no answer within 1s after 3 attempts; check that reporting.webhook.url is reachable or raise "
        "reporting.webhook.timeout")
    assert 3 + 3 <= took < 3 + 3 + 3  # three 1 s timeouts, 1 s and 2 s apart


def test_tls_targets_are_verified_against_the_declared_ca_file(receiver: Any, pushgateway: Any, tmp_path: Path) -> None:
    tls = create_tls(tmp_path / "tls")
    secure = receiver(tls=tls)
    with pytest.raises(DeliveryError) as raised:
        post(hook_at(secure.url, retries=2), {"a": 1})
    assert str(raised.value) == (
        "TLS verification failed after 1 attempt; set reporting.webhook.ca_file to the CA that signed the server's "
        "certificate")
    assert secure.requests == []
    assert post(hook_at(secure.url, ca_file=str(tls.ca)), {"a": 1}) == 200
    assert secure.bodies() == [{"a": 1}]

    gateway = pushgateway(tls=tls)
    registry = run_registry(a_run())
    with pytest.raises(requests.exceptions.SSLError) as refused:
        push(PushgatewaySettings(url=gateway.url), registry, "qp", "daily_or_dr")
    assert explain(refused.value, 10, "reporting.pushgateway", "username/password")[:2] == (
        "TLS verification failed", "set reporting.pushgateway.ca_file to the CA that signed the server's certificate")
    settings = PushgatewaySettings.model_validate({"url": gateway.url, "ca_file": str(tls.ca)})
    assert push(settings, registry, "qp", "daily_or_dr") == (
        f"{gateway.url}/metrics/job/opsverify/profile/qp/selection/daily_or_dr")
    assert samples(gateway.metrics(), drop=("instance",))[key("opsverify_run_success", job="opsverify",
                                                                 profile="qp", selection="daily_or_dr")] == 0.0


# --- the README's example, as YAML text ----------------------------------------------------------------------------

def readme_reporting_example() -> str:
    """The ``reporting:`` YAML block of README "Monitoring output", as written there."""
    section = (ROOT / "README.md").read_text().split("## Monitoring output", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert block.startswith("reporting:\n")
    return block


def test_the_readme_reporting_example_loads_with_its_unquoted_on_key(tmp_path: Path) -> None:
    from opsverify.errors import ProfileError
    from opsverify.profile.loader import load_profile, profile_schema

    block = readme_reporting_example()
    assert "\n    on: failure" in block  # YAML 1.1 reads this unquoted key as the boolean true
    (tmp_path / "ca.pem").write_text(create_tls(tmp_path / "tls").ca.read_text())
    text = "name: demo\n" + block.replace("/etc/ssl/internal-ca.pem", str(tmp_path / "ca.pem"))
    (tmp_path / "p.yaml").write_text(text)
    environ = {"PUSHGATEWAY_PASSWORD": "planted-pg-password", "WEBHOOK_TOKEN": "planted-hook-token"}
    hook = load_profile(tmp_path / "p.yaml", environ=environ).reporting.webhook
    assert hook is not None
    assert (hook.url, hook.on, hook.retries, hook.secret()) == (
        "https://hooks.example.com/opsverify", "failure", 3, "planted-hook-token")
    (tmp_path / "always.yaml").write_text(text.replace("on: failure", "on: always"))
    always = load_profile(tmp_path / "always.yaml", environ=environ).reporting.webhook
    assert always is not None
    assert always.on == "always"
    (tmp_path / "bad.yaml").write_text(text.replace("on: failure", "on: sometimes"))
    with pytest.raises(ProfileError) as refused:
        load_profile(tmp_path / "bad.yaml", environ=environ)
    assert "reporting.webhook.on (line 11): Input should be 'failure' or 'always'" in str(refused.value)
    assert "on" in profile_schema()["$defs"]["Webhook"]["properties"]

    checked = subprocess.run([str(ROOT / ".venv" / "bin" / "opsverify"), "profile", "check", str(tmp_path / "p.yaml")],
                             capture_output=True, text=True, timeout=60, check=False,
                             env={"PATH": "/usr/bin:/bin", **environ})
    assert (checked.returncode, checked.stderr) == (0, "")
    assert checked.stdout == (f"{tmp_path / 'p.yaml'}: profile demo (staging) is valid: 0 services, 0 databases, "
                              "0 redis, 0 dependencies, 0 hosts, 0 backups\n")


# --- the example alert rules ---------------------------------------------------------------------------------------

ALERTS = ROOT / "examples" / "alerts"


def promtool(*args: str, cwd: Path = ALERTS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_example_alert_rules_are_valid_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", "opsverify.rules.yml")
    assert (checked.returncode, checked.stdout) == (0, "Checking opsverify.rules.yml\n  SUCCESS: 6 rules found\n\n")
    tested = promtool("test", "rules", "opsverify.rules.test.yml")
    assert (tested.returncode, tested.stdout) == (0, "Unit Testing:  opsverify.rules.test.yml\n  SUCCESS\n\n")


@pytest.mark.parametrize(("change", "alert"), [
    (("unless (opsverify_check_waived == 1)", "unless (opsverify_check_waived == 2)"), "OpsverifyCriticalCheckFailed"),
    (("> 26 * 3600", "> 28 * 3600"), "OpsverifyRunStale"),
    (("> 8 * 24 * 3600", "> 10 * 24 * 3600"), "OpsverifyWeeklyRunStale"),
    (("opsverify_backup_age_seconds > opsverify_backup_rpo_seconds",
      "opsverify_backup_age_seconds > 2 * opsverify_backup_rpo_seconds"), "OpsverifyBackupOlderThanRpo"),
    (("opsverify_restore_rto_seconds > opsverify_rto_objective_seconds",
      "opsverify_restore_rto_seconds < opsverify_rto_objective_seconds"), "OpsverifyRestoreSlowerThanRto"),
])
def test_the_alert_unit_tests_catch_a_broken_rule(tmp_path: Path, change: tuple[str, str], alert: str) -> None:
    rules = (ALERTS / "opsverify.rules.yml").read_text()
    assert change[0] in rules
    (tmp_path / "opsverify.rules.yml").write_text(rules.replace(change[0], change[1]))
    (tmp_path / "opsverify.rules.test.yml").write_text((ALERTS / "opsverify.rules.test.yml").read_text())
    tested = promtool("test", "rules", "opsverify.rules.test.yml", cwd=tmp_path)
    assert tested.returncode == 1
    assert re.findall(r"alertname: (\w+),", tested.stdout + tested.stderr) == [alert]
