"""Declared external dependencies are reachable inside their budget.

Runbook: QP-04 quantum backend connectivity; QP-29 "Quantum backend accessible".
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.durations import format_duration
from opsverify.probes.network import Reachability
from opsverify.profile import Dependency
from opsverify.redact import redact_url

pytestmark = [pytest.mark.health, pytest.mark.daily]


def accepted(dependency: Dependency) -> str:
    """`` or 401, 403`` when the profile accepts other statuses, else nothing."""
    return f" or {', '.join(map(str, dependency.accept_status))}" if dependency.accept_status else ""


@pytest.mark.runbook("QP-04", "QP-29")
def test_dependency_is_reachable_within_budget(
    dependency: Dependency, reach: Callable[[Dependency], Reachability], evidence: Recorder
) -> None:
    """QP-04/QP-29: a TCP connect, or an HTTP GET answering 2xx/3xx or an ``accept_status``, within ``budget``."""
    result = reach(dependency)
    shown = redact_url(dependency.url)  # a token in the URL never reaches a report
    evidence.record(address=result.address, latency=format_duration(result.latency), budget=dependency.budget,
                    status=result.status_code, accept_status=" ".join(map(str, dependency.accept_status)) or None)
    if result.status_code is not None:
        expect(
            result.is_reachable,
            f"dependency {dependency.name} at {shown} answered HTTP {result.status_code}, not 2xx/3xx"
            f"{accepted(dependency)}: check the URL and the dependency, or list the status in accept_status if it "
            "means up (e.g. 401 where the URL needs authentication)",
        )
    expect(result.is_reachable, f"dependency {dependency.name} at {shown} unreachable: {result.error}")
    expect(
        result.latency <= dependency.budget,
        f"dependency {dependency.name} took {format_duration(result.latency)} "
        f"(budget {format_duration(dependency.budget)}) at {shown}",
    )
