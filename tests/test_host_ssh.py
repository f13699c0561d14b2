"""Host checks over ``ssh://`` through testinfra, against a real sshd on a loopback port."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HOSTS = "health/test_host_resources.py"
SSHD = Path("/usr/sbin/sshd")
pytestmark = pytest.mark.skipif(not SSHD.exists(), reason="openssh-server is not installed: run `make setup`")


def ssh_host(server: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        for key in ("services", "databases", "redis", "dependencies"):
            data[key] = []
        user = os.environ.get("USER") or "root"
        data["hosts"] = [{
            "name": "remote", "uri": f"ssh://{user}@127.0.0.1:{server.port}", "ssh_config": str(server.ssh_config),
            "ssh_identity_file": str(server.identity), "cpu_max_percent": 100, "disk_paths": ["/"],
        }]

    return mutate


def test_host_checks_pass_over_ssh(run_checks: Callable[..., Any], profile_variant: Callable[..., Path],
                                   sshd: Any) -> None:
    run = run_checks(profile_variant(ssh_host(sshd)), HOSTS)
    assert run.result.ret == 0, run.result.stdout.str()
    assert set(run.checks) == {
        "test_host_resources.py::test_cpu_usage_is_under_limit[remote]",
        "test_host_resources.py::test_memory_usage_is_under_limit[remote]",
        "test_host_resources.py::test_disk_usage_is_under_limit[remote:/]",
    }
    cpu = run.checks["test_host_resources.py::test_cpu_usage_is_under_limit[remote]"]["evidence"]
    assert len(cpu["sample_percents"].split()) == 5  # one /proc read per sample through ssh
    assert cpu["excluded_own_percent"] == "0.0"  # a remote host runs none of this run's processes


def test_unreachable_ssh_host_fails_with_the_reason(run_checks: Callable[..., Any],
                                                     profile_variant: Callable[..., Path], sshd: Any) -> None:
    sshd.stop()
    started = time.monotonic()
    run = run_checks(profile_variant(ssh_host(sshd)), HOSTS)
    assert time.monotonic() - started < 60
    assert len(run.failed()) == 3
    message = run.message("test_host_resources.py::test_memory_usage_is_under_limit[remote]")
    assert message.startswith("cannot reach host remote at ssh://")  # the first check probed, the others name it
    assert f": skipped probing: remote at 127.0.0.1:{sshd.port} did not answer at " in message
    assert message.endswith(" (connection refused)")
