"""The sandbox host's security section: what the sandbox owns on this machine, kept private and not world-writable.

The sandbox declares only its own application files (``app/``): the host's system directories, its
sshd and its listening sockets are the machine's, not the sandbox's.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path
from typing import Any

from opsverify.profile.security import HostSecurity
from opsverify.sandbox.state import Layout


def secure_app_files(layout: Layout) -> None:
    """No world-writable file or directory under ``app/`` and its secret files (``.env``, keys) readable by the owner
    only, whatever the umask of the process that made them."""
    secret_globs = HostSecurity.model_fields["secret_files"].get_default(call_default_factory=True)
    for directory, _dirs, files in os.walk(layout.app):
        for path in [Path(directory), *(Path(directory) / f for f in files)]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_file() and any(fnmatch.fnmatch(path.name, g) for g in secret_globs):
                path.chmod(mode & 0o700)
            elif mode & stat.S_IWOTH:
                path.chmod(mode & ~stat.S_IWOTH)


def host_security(layout: Layout) -> dict[str, Any]:
    """``hosts[local].security``: the app directories (also where SUID files are looked for), default secret files
    and update policy; no sshd, no listening allow-list, and no app processes when they run as root (as the user who
    started the sandbox: the sandbox does not drop privileges)."""
    app = str(layout.app.resolve())
    section: dict[str, Any] = {"app_dirs": [app], "suid_paths": [app]}
    return section
