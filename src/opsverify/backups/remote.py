"""Copy a backup from an ssh:// profile host to a local file, streamed (``ssh host cat -- PATH``).

The backup's verifier then reads the local copy; the copy lives in a private temporary directory
that is removed afterwards. The ssh client runs with BatchMode and the profile's connect timeout,
and the whole copy is bounded by a timeout of its own.
"""

from __future__ import annotations

import shlex
import subprocess
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from opsverify.errors import OpsverifyError
from opsverify.profile.model import Host


class FetchError(OpsverifyError):
    """A remote backup could not be copied here."""


def ssh_command(host: Host, connect: timedelta) -> list[str]:
    """The ssh client's argv for ``host`` (``ssh://user@name:port``, its ssh_config and identity)."""
    parts = urlsplit(host.uri)
    if parts.scheme != "ssh" or not parts.hostname:
        raise FetchError(f"host {host.name} is {host.uri}: remote backups are read over ssh://user@host[:port]")
    args = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, int(connect.total_seconds()))}"]
    if host.ssh_config:
        args += ["-F", str(host.ssh_config)]
    if host.ssh_identity_file:
        args += ["-i", str(host.ssh_identity_file)]
    if parts.port:
        args += ["-p", str(parts.port)]
    return [*args, f"{parts.username}@{parts.hostname}" if parts.username else parts.hostname]


def fetch(host: Host, remote_path: str, target: Path, connect: timedelta, timeout: timedelta) -> None:
    """Stream ``remote_path`` on ``host`` into ``target``; ``FetchError`` with ssh's reason when it fails."""
    args = [*ssh_command(host, connect), f"cat -- {shlex.quote(remote_path)}"]
    try:
        with target.open("wb") as out:
            done = subprocess.run(
                args, stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=timeout.total_seconds(),
                check=False,
            )
    except FileNotFoundError:
        raise FetchError("the ssh client is not installed: run `make setup` (Debian package openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"copying {host.name}:{remote_path} took longer than {timeout}") from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines() or [f"ssh exit code {done.returncode}"]
        raise FetchError(f"cannot copy {host.name}:{remote_path}: {lines[-1]}")
