"""Host checks over ``ssh://`` through testinfra, against a real sshd on a loopback port."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opsverify.sandbox.net import free_port, wait_for_port

HOSTS = "health/test_host_resources.py"
SSHD = Path("/usr/sbin/sshd")
pytestmark = pytest.mark.skipif(not SSHD.exists(), reason="openssh-server is not installed: run `make setup`")


@dataclass
class Sshd:
    proc: subprocess.Popen[bytes]
    port: int
    identity: Path
    ssh_config: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A throwaway sshd on 127.0.0.1 that accepts one generated key for the current user."""
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    keygen = ["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f"]
    subprocess.run([*keygen, str(tmp_path / "host_key")], check=True, timeout=30)
    subprocess.run([*keygen, str(tmp_path / "id")], check=True, timeout=30)
    shutil.copy(tmp_path / "id.pub", tmp_path / "authorized_keys")
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host_key'}\nPidFile {tmp_path / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPasswordAuthentication no\nPermitRootLogin "
        "prohibit-password\nStrictModes no\nUsePAM no\n"
    )
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port, timeout=10)
    client = tmp_path / "ssh_config"
    client.write_text(
        "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n"
    )
    server = Sshd(proc, port, tmp_path / "id", client)
    yield server
    server.stop()


def ssh_host(server: Sshd) -> Callable[[dict[str, Any]], None]:
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
                                   sshd: Sshd) -> None:
    run = run_checks(profile_variant(ssh_host(sshd)), HOSTS)
    assert run.result.ret == 0, run.result.stdout.str()
    assert set(run.checks) == {
        "test_host_resources.py::test_cpu_usage_is_under_limit[remote]",
        "test_host_resources.py::test_memory_usage_is_under_limit[remote]",
        "test_host_resources.py::test_disk_usage_is_under_limit[remote:/]",
    }


def test_unreachable_ssh_host_fails_with_the_reason(run_checks: Callable[..., Any],
                                                     profile_variant: Callable[..., Path], sshd: Sshd) -> None:
    sshd.stop()
    started = time.monotonic()
    run = run_checks(profile_variant(ssh_host(sshd)), HOSTS)
    assert time.monotonic() - started < 60
    assert len(run.failed()) == 3
    message = run.message("test_host_resources.py::test_memory_usage_is_under_limit[remote]")
    assert message.startswith("cannot read memory usage of host remote: ")
    assert "Connection refused" in message
