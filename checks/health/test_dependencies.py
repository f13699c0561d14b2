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

pytestmark = [pytest.mark.health, pytest.mark.daily]


@pytest.mark.runbook("QP-04", "QP-29")
def test_dependency_is_reachable_within_budget(
    dependency: Dependency, reach: Callable[[Dependency], Reachability], evidence: Recorder
) -> None:
    """QP-04/QP-29: a TCP connect (or HTTP GET below 500) succeeds within ``budget``."""
    result = reach(dependency)
    evidence.record(address=result.address, latency=format_duration(result.latency), budget=dependency.budget)
    expect(result.is_reachable, f"dependency {dependency.name} at {dependency.url} unreachable: {result.error}")
    expect(
        result.latency <= dependency.budget,
        f"dependency {dependency.name} took {format_duration(result.latency)} "
        f"(budget {format_duration(dependency.budget)}) at {dependency.url}",
    )
