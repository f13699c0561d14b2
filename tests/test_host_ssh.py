"""Host checks over ``ssh://`` through testinfra, against a real sshd on a loopback port."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HOSTS = "health/test_host_resources.py"
SSHD = Path("/usr/sbin/sshd")
pytestmark = pytest.mark.skipif(not SSHD.exists(), reason="openssh-server is not installed: run `make setup`")


CPU = "test_host_resources.py::test_cpu_usage_is_under_limit[remote]"
MEMORY = "test_host_resources.py::test_memory_usage_is_under_limit[remote]"
DISK = "test_host_resources.py::test_disk_usage_is_under_limit[remote:/]"
SAMPLES = 5


def user() -> str:
    return os.environ.get("USER") or "root"


def ssh_host(server: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        for key in ("services", "databases", "redis", "dependencies"):
            data[key] = []
        data["hosts"] = [{
            "name": "remote", "uri": f"ssh://{user()}@127.0.0.1:{server.port}", "ssh_config": str(server.ssh_config),
            "ssh_identity_file": str(server.identity), "cpu_max_percent": 100, "cpu_samples": SAMPLES,
            "disk_paths": ["/"],
        }]

    return mutate


def test_host_checks_pass_over_ssh(run_checks: Callable[..., Any], profile_variant: Callable[..., Path],
                                   sshd: Any) -> None:
    run = run_checks(profile_variant(ssh_host(sshd)), HOSTS)
    assert run.result.ret == 0, run.result.stdout.str()
    assert {test: run.outcome(test) for test in run.checks} == {CPU: "passed", MEMORY: "passed", DISK: "passed"}
    cpu = run.checks[CPU]["evidence"]
    assert len(cpu["sample_percents"].split()) == SAMPLES  # one /proc read per sample through ssh
    assert cpu["excluded_own_percent"] == "0.0"  # a remote host runs none of this run's processes


def test_unreachable_ssh_host_fails_with_the_reason(run_checks: Callable[..., Any],
                                                     profile_variant: Callable[..., Path], sshd: Any) -> None:
    sshd.stop()
    started = time.monotonic()
    run = run_checks(profile_variant(ssh_host(sshd)), HOSTS)
    assert time.monotonic() - started < 60
    assert run.failed() == {CPU, MEMORY, DISK}
    uri, where = f"ssh://{user()}@127.0.0.1:{sshd.port}", f"127.0.0.1:{sshd.port}"
    assert run.message(CPU) == f"cannot reach host remote at {uri}: connection refused"  # the first check probed
    note = re.escape(f"cannot reach host remote at {uri}: skipped probing: remote at {where} did not answer at ")
    for later in (MEMORY, DISK):  # the others name the first failure and its time
        assert re.fullmatch(note + r"\d\d:\d\d:\d\d \(connection refused\)", run.message(later)), run.message(later)
