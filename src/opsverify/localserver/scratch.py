"""Scratch things made here: ``opsverify_scratch_*`` names and the creator note each one carries.

The note (a directory's ``.opsverify-creator.json``, a database's comment) says which host, pid
namespace and process made it and when, so a janitor at a later start tells an orphan (its
creator is gone, or it is older than the maximum age) from something a live run still uses.
A note never holds a credential.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from opsverify.errors import ActionRefused
from opsverify.localserver.net import LOOPBACK, wait_port_closed
from opsverify.localserver.process import cmdline, pid_alive, wait_gone

SCRATCH_PREFIX = "opsverify_scratch_"
NOTE = ".opsverify-creator.json"
SAFE = re.compile(r"^opsverify_scratch_[a-z0-9_]+$")


def require_scratch_name(name: str, what: str = "database") -> None:
    """Refuse any name that is not an opsverify scratch name (prefix, then letters, digits and ``_`` only)."""
    if not SAFE.match(name):
        raise ActionRefused(f"refusing to touch {what} {name!r}: only {SCRATCH_PREFIX}* names are scratch")


def creator(**extra: object) -> dict[str, Any]:
    """Who makes a scratch thing: host name, pid, the pid namespace the pid is valid in, and when."""
    try:
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pidns = 0
    note = {"opsverify": "scratch", "host": socket.gethostname(), "pid": os.getpid(), "pidns": pidns}
    return {**note, "created": time.time(), **extra}


def make_scratch_dir(path: Path, **extra: object) -> Path:
    """Create ``path`` (mode 0700: what it holds is production's) with its creator note inside."""
    require_scratch_name(path.name, "directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=0o700)
    write_note(path, creator(**extra))
    return path


def write_note(path: Path, note: dict[str, Any]) -> None:
    tmp = path / (NOTE + ".tmp")
    tmp.write_text(json.dumps(note))
    tmp.replace(path / NOTE)


def read_note(path: Path) -> dict[str, Any] | None:
    """A scratch directory's creator note, or None when it has none (or it is unreadable)."""
    try:
        note = json.loads((path / NOTE).read_text())
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) else None


def orphan_reason(note: object, max_age: timedelta, now: float) -> str | None:
    """Why a scratch thing with this note belongs to no live run; None while its creator may still use it."""
    if not isinstance(note, dict) or note.get("opsverify") != "scratch":
        return "it carries no creator note"
    age = now - float(note.get("created", 0))
    if age > max_age.total_seconds():
        return f"it is {age / 3600:.1f}h old (max {max_age})"
    here = creator()
    same_processes = note.get("host") == here["host"] and note.get("pidns") == here["pidns"]
    if same_processes and not pid_alive(int(note.get("pid", 0))):
        return f"its creator (pid {note.get('pid')}) is gone"
    return None  # a creator elsewhere (another host, container or pid namespace) is trusted until max age



@dataclass(frozen=True)
class Server:
    """A server running from a scratch directory: PostgreSQL (``data/postmaster.pid``) or Redis (``redis.pid``)."""

    kind: str
    pid: int
    port: int | None

    def __str__(self) -> str:
        return f"{self.kind} pid {self.pid}" + (f" on port {self.port}" if self.port else "")


def servers_in(path: Path) -> list[Server]:
    """The servers whose pid files in ``path`` name a live process of that program."""
    found = []
    pg = _lines(path / "data" / "postmaster.pid")
    if pg and pg[0].isdigit() and "postgres" in cmdline(int(pg[0])):
        found.append(Server("postgres", int(pg[0]), int(pg[3]) if len(pg) > 3 and pg[3].isdigit() else None))
    redis = _lines(path / "redis.pid")
    if redis and redis[0].isdigit() and "redis-server" in cmdline(int(redis[0])):
        conf = [line.split() for line in _lines(path / "redis.conf") if line.startswith("port ")]
        found.append(Server("redis-server", int(redis[0]), int(conf[0][1]) if conf else None))
    return found


def _lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines()]
    except OSError:
        return []


def stop_server(server: Server, timeout: float = 10) -> None:
    """Fast shutdown (SIGINT for PostgreSQL, SIGTERM for Redis), then SIGKILL; wait for its port to close."""
    first = signal.SIGINT if server.kind == "postgres" else signal.SIGTERM
    for sig, wait in ((first, timeout), (signal.SIGKILL, 5.0)):
        if not pid_alive(server.pid):
            break
        try:
            os.kill(server.pid, sig)
        except ProcessLookupError:
            break
        if wait_gone(server.pid, wait):
            break
    if server.port:
        wait_port_closed(LOOPBACK, server.port, 5)


def processes_using(path: Path) -> list[int]:
    """Pids (not this process) whose working directory or command line lies in ``path``: a server run from
    it, a tool still writing into it (``pg_basebackup -D``, ``pg_dump -f``) after its caller was killed."""
    inside = str(path.resolve())
    found = []
    for pid in _other_pids():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = ""
        if cwd == inside or cwd.startswith(inside + "/") or inside in cmdline(pid):
            found.append(pid)
    return found


def processes_naming(name: str) -> list[int]:
    """Pids (not this process) whose command line names ``name`` (a tool a killed run left working on it)."""
    return [pid for pid in _other_pids() if name in cmdline(pid)]


def _other_pids() -> list[int]:
    """Every process but this one."""
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and int(e.name) != os.getpid()]


def stop_pid(pid: int, timeout: float = 5) -> None:
    """SIGTERM (SIGQUIT for a PostgreSQL process: immediate shutdown, children too), then SIGKILL."""
    program = cmdline(pid).split(" ", 1)[0]
    first = signal.SIGQUIT if program.endswith("/postgres") or program.startswith("postgres") else signal.SIGTERM
    for sig in (first, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_gone(pid, timeout):
            return


def remove_scratch_dir(path: Path, servers: list[Server]) -> list[str]:
    """Stop ``servers`` and every other process using ``path``, delete it; what is still there, as phrases."""
    for server in servers:
        stop_server(server)
    for _ in range(5):  # a tool that was starting a server may spawn it between a scan and the delete
        for pid in processes_using(path):
            stop_pid(pid)
        delete_note_last(path)
        time.sleep(0.2)
        if not path.exists() and not processes_using(path):
            break
    return still_there(path, servers)


def delete_note_last(path: Path) -> None:
    """Delete ``path``, its creator note last: a delete cut short (the run is killed meanwhile) leaves a
    directory the next janitor still recognises, never an anonymous one."""
    try:
        children = [child for child in path.iterdir() if child.name != NOTE]
    except OSError:
        children = []
    for child in children:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def still_there(path: Path, servers: list[Server]) -> list[str]:
    """Re-read the live state: servers still running or listening, processes using ``path``, ``path`` itself."""
    left = [f"process {s}" for s in servers if pid_alive(s.pid)]
    left += [f"port {s.port}" for s in servers if s.port and not wait_port_closed(LOOPBACK, s.port, 0.5)]
    left += [f"process {pid} ({cmdline(pid)[:80]})" for pid in processes_using(path) if pid_alive(pid)]
    return left + ([f"directory {path}"] if path.exists() else [])
