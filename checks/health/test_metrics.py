"""Metrics endpoints expose the expected series, under their limits, and fresh.

Runbook: ``curl -s /metrics | grep -E "(quantum_solve_duration|error_rate|memory_usage)"``
(PF-03 metrics collection validation, QP-02 key metrics).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.durations import format_duration
from opsverify.probes.metrics import MetricsSnapshot
from opsverify.profile import HttpService, MetricsExpectation

pytestmark = [pytest.mark.health, pytest.mark.daily]
MetricsOf = Callable[[HttpService], MetricsSnapshot]


def _scrape(service: HttpService, metrics_of: MetricsOf) -> tuple[MetricsExpectation, MetricsSnapshot]:
    __tracebackhide__ = True
    if service.metrics is None:
        pytest.skip(f"profile declares no metrics for {service.name}")
    snapshot = metrics_of(service)
    expect(snapshot.error is None, f"{service.name} metrics at {snapshot.reply.url} unusable: {snapshot.error}")
    return service.metrics, snapshot


@pytest.mark.runbook("PF-03", "QP-02")
def test_metrics_expose_required_series(service: HttpService, metrics_of: MetricsOf, evidence: Recorder) -> None:
    """PF-03/QP-02: every series the profile requires is present."""
    wanted, snapshot = _scrape(service, metrics_of)
    missing = [name for name in wanted.required if not snapshot.has(name)]
    evidence.record(required=" ".join(wanted.required), missing=" ".join(missing) or "none")
    expect(not missing, f"{service.name} metrics at {snapshot.reply.url} lack {', '.join(missing)}")


@pytest.mark.runbook("QP-02")
def test_metric_values_stay_under_maximum(service: HttpService, metrics_of: MetricsOf, evidence: Recorder) -> None:
    """QP-02: error rate, memory usage and the other limited series stay under their maximum."""
    wanted, snapshot = _scrape(service, metrics_of)
    measured = {name: snapshot.value(name) for name in wanted.maximum}
    evidence.record(**{f"{n}": f"{v} (max {wanted.maximum[n]})" for n, v in measured.items()})
    absent = [name for name, value in measured.items() if value is None]
    expect(not absent, f"{service.name} metrics lack {', '.join(absent)}, which have a maximum in the profile")
    over = [f"{n} is {v:g} (max {wanted.maximum[n]:g})" for n, v in measured.items() if v and v > wanted.maximum[n]]
    expect(not over, f"{service.name}: {'; '.join(over)} at {snapshot.reply.url}")


@pytest.mark.runbook("PF-03")
def test_metrics_are_fresh(service: HttpService, metrics_of: MetricsOf, evidence: Recorder) -> None:
    """PF-03: the freshness gauge (a unix timestamp) is younger than ``max_age``."""
    wanted, snapshot = _scrape(service, metrics_of)
    if wanted.freshness_metric is None:
        pytest.skip(f"profile declares no freshness_metric for {service.name}")
    stamp = snapshot.value(wanted.freshness_metric)
    expect(stamp is not None, f"{service.name} metrics lack {wanted.freshness_metric} (the freshness gauge)")
    age = timedelta(seconds=max(0.0, time.time() - (stamp or 0.0)))
    evidence.record(age=format_duration(age), max_age=format_duration(wanted.max_age))
    expect(
        age <= wanted.max_age,
        f"{service.name} metrics are {format_duration(age)} old (max {format_duration(wanted.max_age)}): "
        f"{wanted.freshness_metric} at {snapshot.reply.url}",
    )
