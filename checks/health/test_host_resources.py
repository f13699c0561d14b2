"""Hosts have CPU, memory and disk headroom.

Runbook: QP-29 health script (CPU < 80 %, disk < 85 %; it has no memory line), PF-07 capacity
utilisation review (CPU, memory, disk) and QP-06 resource utilisation ("as PF-07").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.durations import format_duration
from opsverify.probes.cpu import CpuUsage, cpu_usage
from opsverify.probes.host import Usage, disk_usage, memory_usage
from opsverify.profile import Host

pytestmark = [pytest.mark.health, pytest.mark.daily]
HostOf = Callable[[Host], Any]


def expect_under(host: Host, usage: Usage, limit: float, evidence: Recorder) -> None:
    __tracebackhide__ = True
    evidence.record(resource=usage.resource, used_percent=f"{usage.percent:.1f}" if usage.percent is not None else "?")
    evidence.record(limit_percent=limit)
    expect(usage.percent is not None, f"cannot read {usage.resource} usage of host {host.name}: {usage.error}")
    expect(
        (usage.percent or 0.0) < limit,
        f"host {host.name} {usage.resource} usage is {usage.percent:.1f}% (limit {limit:g}%) on {host.uri}",
    )


def top_of(usage: CpuUsage) -> str:
    """``postgres 41%, java 30%``: the biggest consumers outside this run."""
    named = ", ".join(f"{c.command} {c.percent:.0f}%" for c in usage.top)
    return named or "no lasting process (short-lived ones or the kernel)"


def record_cpu(usage: CpuUsage, limit: float, evidence: Recorder) -> None:
    percent = f"{usage.percent:.1f}" if usage.percent is not None else "?"
    evidence.record(resource="cpu", used_percent=percent, limit_percent=limit)
    evidence.record(window=format_duration(usage.window), samples=len(usage.samples))
    evidence.record(sample_percents=" ".join(f"{s:.1f}" for s in usage.samples))
    evidence.record(excluded_own_percent=f"{usage.own_percent:.1f}", top=top_of(usage))


@pytest.mark.runbook("PF-07", "QP-06", "QP-29")
def test_cpu_usage_is_under_limit(
    profile_host: Host, testinfra_host: HostOf, own_processes: Callable[[Host], frozenset[int]], evidence: Recorder
) -> None:
    """QP-29/PF-07/QP-06: median CPU busy share of ``cpu_samples`` samples over ``cpu_window`` under the limit.

    The processes of this run (pytest, its workers and what they started) are left out on a local host.
    """
    host, limit = profile_host, profile_host.cpu_max_percent
    usage = cpu_usage(testinfra_host(host), host.cpu_window, host.cpu_samples, own_processes(host))
    record_cpu(usage, limit, evidence)
    expect(usage.percent is not None, f"cannot read cpu usage of host {host.name}: {usage.error}")
    expect(
        (usage.percent or 0.0) < limit or limit >= 100,  # a saturated host measures 100%: a 100% limit accepts it
        f"host {host.name} cpu {usage.percent:.0f}% over {format_duration(usage.window)} (limit {limit:g}%); "
        f"top: {top_of(usage)}",
    )


@pytest.mark.runbook("PF-07", "QP-06")
def test_memory_usage_is_under_limit(profile_host: Host, testinfra_host: HostOf, evidence: Recorder) -> None:
    """PF-07/QP-06: used memory (MemTotal - MemAvailable) is under ``memory_max_percent``."""
    host = profile_host
    expect_under(host, memory_usage(testinfra_host(host)), host.memory_max_percent, evidence)


@pytest.mark.runbook("PF-07", "QP-06", "QP-29")
def test_disk_usage_is_under_limit(disk: tuple[Host, str], testinfra_host: HostOf, evidence: Recorder) -> None:
    """QP-29/PF-07/QP-06: each declared path's filesystem is under ``disk_max_percent`` used."""
    host, path = disk
    expect_under(host, disk_usage(testinfra_host(host), path), host.disk_max_percent, evidence)
