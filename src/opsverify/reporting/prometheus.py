"""The run's Prometheus metrics, built from its ``EvidenceDoc``: a node-exporter textfile and a Pushgateway push.

Per check: ``opsverify_check_success{check, domain, runbook, severity, component}`` (1 passed; 0 failed, broken
or waived), ``opsverify_check_waived{…} 1`` beside a waived check's 0, ``opsverify_check_skipped{…} 1`` for a
skipped check (which has no success series: it verified nothing), ``opsverify_check_duration_seconds{check}`` and
every number the check recorded as ``opsverify_<name>{check, component}``. Per run:
``opsverify_last_run_timestamp_seconds{profile, role}``, ``opsverify_run_checks{outcome}`` and
``opsverify_run_success`` (1 when nothing failed or broke). Every series also carries ``selection`` (the run's
``-m`` expression as a label value, ``all`` without one: see ``selection_label``), so a ``-m weekly`` run never
replaces nor collides with a ``-m daily`` run's series. Label values come from node ids and profile names and
still pass through ``redact_text``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from opsverify.profile.reporting import Pushgateway
from opsverify.redact import redact_text
from opsverify.reporting.evidence import OUTCOMES, CheckResult, EvidenceDoc

PREFIX = "opsverify_"
DOMAINS = ("health", "backup", "restore", "security", "recovery", "maintenance", "kubernetes")
CHECK_LABELS = ("check", "domain", "runbook", "severity", "component")
FIXED = ("check_success", "check_waived", "check_skipped", "check_duration_seconds", "last_run_timestamp_seconds",
         "run_checks", "run_success")
NOT_IN_NAME = re.compile(r"[^a-zA-Z0-9_]")
NOT_IN_SELECTION = re.compile(r"[^a-z0-9]+")


def selection_label(markexpr: str) -> str:
    """The run's ``-m`` expression as a label value and path segment: lower case, every run of other characters
    one ``_`` (``daily``, ``weekly``, ``daily or dr`` → ``daily_or_dr``, ``not (weekly)`` → ``not_weekly``);
    ``all`` without ``-m``. ``-k`` and the paths named add nothing: such a run shares its ``-m`` selection's."""
    label = NOT_IN_SELECTION.sub("_", markexpr.lower()).strip("_")[:80].strip("_")
    return label or "all"


def check_labels(check: CheckResult) -> dict[str, str]:
    """``check`` (node id), ``domain`` (the first domain marker), ``runbook`` (IDs joined by ","), ``severity``,
    ``component``: empty strings where the check has none."""
    domain = next((m for m in check.markers if m in DOMAINS), "")
    values = {"check": check.nodeid, "domain": domain, "runbook": ",".join(check.runbook),
              "severity": check.severity, "component": check.component or ""}
    return {key: redact_text(value) for key, value in values.items()}


def metric_name(name: str) -> str:
    """``opsverify_<name>`` with any character Prometheus does not allow in a name replaced by ``_``."""
    return PREFIX + NOT_IN_NAME.sub("_", name)


def run_registry(doc: EvidenceDoc) -> CollectorRegistry:
    """A registry of gauges holding the run's metrics (see the module docstring)."""
    registry = CollectorRegistry(auto_describe=True)
    chosen = selection_label(doc.run.selection.markexpr)
    _check_gauges(registry, doc.checks, chosen)
    _recorded_gauges(registry, doc.checks, chosen)
    _run_gauges(registry, doc, chosen)
    return registry


def _check_gauges(registry: CollectorRegistry, checks: Sequence[CheckResult], chosen: str) -> None:
    def gauge(name: str, doc: str, labels: Sequence[str]) -> Gauge:
        return Gauge(PREFIX + name, doc, (*labels, "selection"), registry=registry)

    success = gauge("check_success", "1 when the check passed, 0 when it failed, broke or was waived", CHECK_LABELS)
    waived = gauge("check_waived", "1 for a failure accepted by a waiver (its success is 0)", CHECK_LABELS)
    skipped = gauge("check_skipped", "1 for a skipped check (it has no success series)", CHECK_LABELS)
    duration = gauge("check_duration_seconds", "time the check took, setup and teardown included", ("check",))
    for check in sorted(checks, key=lambda c: c.nodeid):  # a stable textfile: the same run, the same lines
        labels = {**check_labels(check), "selection": chosen}
        if check.outcome == "skipped":
            skipped.labels(**labels).set(1)
        else:
            success.labels(**labels).set(1 if check.outcome == "passed" else 0)
        if check.outcome == "waived":
            waived.labels(**labels).set(1)
        duration.labels(check=labels["check"], selection=chosen).set(check.duration_s)


def _recorded_gauges(registry: CollectorRegistry, checks: Sequence[CheckResult], chosen: str) -> None:
    gauges: dict[str, Gauge] = {}
    reserved = {PREFIX + name for name in FIXED}
    for check in sorted(checks, key=lambda c: c.nodeid):
        labels = check_labels(check)
        for name, value in sorted(check.metrics.items()):
            full = metric_name(name)
            if full in reserved:
                continue
            if full not in gauges:
                gauges[full] = Gauge(full, f"{name}, as the check recorded it", ("check", "component", "selection"),
                                     registry=registry)
            gauges[full].labels(check=labels["check"], component=labels["component"], selection=chosen).set(value)


def _run_gauges(registry: CollectorRegistry, doc: EvidenceDoc, chosen: str) -> None:
    last = Gauge(PREFIX + "last_run_timestamp_seconds", "when the last run of this selection finished (Unix time)",
                 ("profile", "role", "selection"), registry=registry)
    last.labels(profile=redact_text(doc.run.profile), role=redact_text(doc.run.role), selection=chosen).set(
        doc.run.finished.timestamp())
    counts = Gauge(PREFIX + "run_checks", "checks of the last run by outcome", ("outcome", "selection"),
                   registry=registry)
    for outcome in OUTCOMES:
        counts.labels(outcome=outcome, selection=chosen).set(sum(1 for c in doc.checks if c.outcome == outcome))
    success = Gauge(PREFIX + "run_success", "1 when no check of the last run failed or broke", ("selection",),
                    registry=registry)
    success.labels(selection=chosen).set(0 if doc.failures() else 1)


def write_textfile(path: Path, registry: CollectorRegistry) -> Path:
    """Write the metrics for node-exporter's textfile collector (atomically: a temporary file renamed into place)."""
    from prometheus_client import write_to_textfile

    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    return path


def push(gateway: Pushgateway, registry: CollectorRegistry, profile: str, selection: str) -> str:
    """PUT the metrics to the Pushgateway under ``{job, profile, selection}`` (a run replaces the last run of the
    same profile and selection only); returns the group's URL. Raises ``requests.RequestException`` (no answer,
    refused, HTTP ≥ 400) on failure."""
    from prometheus_client import push_to_gateway

    pushed: list[str] = []
    handler = _handler(gateway, pushed)
    push_to_gateway(gateway.url, job=gateway.job, registry=registry,
                    grouping_key={"profile": profile, "selection": selection},
                    timeout=gateway.timeout.total_seconds(), handler=handler)
    return pushed[0]


Handle = Callable[[], None]


def _handler(gateway: Pushgateway, pushed: list[str]) -> Callable[..., Handle]:
    """prometheus_client's push handler, done with requests: the declared timeout, basic auth, the CA file."""

    def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                data: bytes) -> Handle:
        def handle() -> None:
            import requests

            auth = (gateway.username, gateway.secret() or "") if gateway.username else None
            verify: str | bool = str(gateway.ca_file) if gateway.ca_file else True
            response = requests.request(method, url, data=data, headers=dict(headers), timeout=timeout,
                                        auth=auth, verify=verify, allow_redirects=False)
            response.raise_for_status()
            pushed.append(url)

        return handle

    return handler
