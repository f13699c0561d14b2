"""API health endpoints answer 2xx, report healthy, and do so inside the latency budget.

Runbook: ``curl -f http://localhost:8080/health`` (PF-01, QP-01, QP-29 "API endpoint healthy");
the latency budget is PF-01's (QP-29's script has none).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.durations import format_duration
from opsverify.probes.http import HealthReply
from opsverify.profile import HttpService

pytestmark = [pytest.mark.health, pytest.mark.daily, pytest.mark.dr]
HealthOf = Callable[[HttpService], HealthReply]


@pytest.mark.runbook("PF-01", "QP-01", "QP-29")
def test_health_endpoint_answers_2xx(service: HttpService, health_of: HealthOf, evidence: Recorder) -> None:
    """PF-01/QP-01/QP-29: the health endpoint answers with a 2xx status."""
    reply = health_of(service).reply
    evidence.record(url=reply.url, status=reply.status_code or reply.error)
    expect(reply.is_answered, f"{service.name} health endpoint {reply.url} did not answer: {reply.error}")
    expect(reply.is_success, f"{service.name} health endpoint {reply.url} answered HTTP {reply.status_code}, not 2xx")


@pytest.mark.runbook("PF-01", "QP-01", "QP-29")
def test_health_body_reports_healthy(service: HttpService, health_of: HealthOf, evidence: Recorder) -> None:
    """PF-01/QP-01/QP-29: the body's ``status`` is one of the profile's healthy values."""
    health = health_of(service)
    evidence.record(body_status=health.body_status, version=health.version, healthy=" ".join(service.healthy_status))
    expect(health.reply.is_answered, f"{service.name} health endpoint did not answer: {health.reply.error}")
    expect(
        (health.body_status or "").lower() in service.healthy_status,
        f"{service.name} reports status {health.body_status!r} at {health.reply.url}, "
        f"expected one of {', '.join(service.healthy_status)}",
    )


@pytest.mark.runbook("PF-01", "QP-01")
def test_health_answers_within_latency_budget(service: HttpService, health_of: HealthOf, evidence: Recorder) -> None:
    """PF-01/QP-01: the health endpoint answers inside the service's latency budget."""
    reply = health_of(service).reply
    evidence.record(latency=format_duration(reply.latency), budget=format_duration(service.latency_budget))
    expect(reply.is_answered, f"{service.name} health endpoint did not answer: {reply.error}")
    expect(
        reply.latency <= service.latency_budget,
        f"{service.name} health took {format_duration(reply.latency)} "
        f"(budget {format_duration(service.latency_budget)}): {reply.url}",
    )
