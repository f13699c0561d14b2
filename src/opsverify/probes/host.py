"""Host resources through testinfra (QP-29, PF-07): the connection, memory and disk use; CPU is in ``cpu``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opsverify.profile.model import Host

if TYPE_CHECKING:
    import testinfra.host


@dataclass(frozen=True)
class Usage:
    """A utilisation in percent of one resource, or why it could not be read."""

    resource: str
    percent: float | None
    error: str | None = None


def connect(host: Host, timeout: timedelta) -> testinfra.host.Host:
    """A testinfra host: ``local://`` runs commands here, ``ssh://`` through the ssh client."""
    import testinfra

    kwargs: dict[str, object] = {}
    if host.uri.startswith(("ssh://", "paramiko://")):
        kwargs["timeout"] = max(1, int(timeout.total_seconds()))
        if host.ssh_config:
            kwargs["ssh_config"] = str(host.ssh_config)
        if host.ssh_identity_file:
            kwargs["ssh_identity_file"] = str(host.ssh_identity_file)
    return testinfra.get_host(host.uri, **kwargs)


def ssh_address(host: Host) -> tuple[str, int] | None:
    """Where the sshd of an ssh:// host listens (``HostName``/``Port`` of its ssh_config apply, as for ssh).

    None for other backends and for a host reached through a ``ProxyCommand`` or ``ProxyJump``.
    """
    import paramiko

    parts = urlsplit(host.uri)
    if parts.scheme not in ("ssh", "paramiko") or not parts.hostname:
        return None
    config = host.ssh_config or Path.home() / ".ssh" / "config"
    seen = paramiko.SSHConfig.from_path(str(config)).lookup(parts.hostname) if config.is_file() else {}
    if "proxycommand" in seen or "proxyjump" in seen:
        return None
    return str(seen.get("hostname", parts.hostname)), parts.port or int(seen.get("port", 22))


def command_output(target: testinfra.host.Host, command: str, *args: str) -> str:
    """The standard output of ``command``; OSError with the first line of its error output if it failed."""
    result = target.run(command, *args)
    if result.rc != 0:
        raise OSError(result.stderr.strip().splitlines()[0] if result.stderr.strip() else f"`{command}` failed")
    return str(result.stdout)


def memory_usage(target: testinfra.host.Host) -> Usage:
    """Used share of memory, from ``MemAvailable`` in /proc/meminfo."""
    try:
        info = {
            line.split(":")[0]: int(line.split()[1])
            for line in command_output(target, "cat /proc/meminfo").splitlines()
            if line.count(" ") and line.split()[1].isdigit()
        }
        return Usage("memory", 100.0 * (1 - info["MemAvailable"] / info["MemTotal"]))
    except Exception as exc:  # noqa: BLE001
        return Usage("memory", None, str(exc))


def disk_usage(target: testinfra.host.Host, path: str) -> Usage:
    """Used share of the filesystem holding ``path``, as ``df`` computes Use%."""
    try:
        last = command_output(target, "df -P -k %s", path).strip().splitlines()[-1].split()
        used, available = int(last[2]), int(last[3])
        return Usage(f"disk {path}", 100.0 * used / max(used + available, 1))
    except Exception as exc:  # noqa: BLE001
        return Usage(f"disk {path}", None, str(exc))
