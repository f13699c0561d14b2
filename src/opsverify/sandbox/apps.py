"""The processes the sandbox spawns (three apps and the S3 server): detached, a pidfile each, stopped by pid."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from opsverify.localserver.process import cmdline, pid_alive, stop_process
from opsverify.sandbox.app import app_command, app_env, await_app
from opsverify.sandbox.state import Layout
from opsverify.sandbox.tls import TlsFiles

TLS_APPS = ("quantum-planner",)


def url(name: str, port: int) -> str:
    """Where an app answers (the TLS one by the name its certificate holds)."""
    return f"https://localhost:{port}" if name in TLS_APPS else f"http://127.0.0.1:{port}"


def _pidfile(layout: Layout, name: str) -> Path:
    return layout.run / f"{name}.pid"


def _argv(layout: Layout, name: str, port: int) -> list[str]:
    if name == "s3":
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    files = TlsFiles.under(layout.tls)
    return app_command(name, port, tls=(files.cert, files.key) if name in TLS_APPS else None)


def app_pid(layout: Layout, name: str, port: int) -> int | None:
    """The pid of the sandbox's process ``name`` while it runs (checked against its command line)."""
    try:
        pid = int(_pidfile(layout, name).read_text().strip())
    except (OSError, ValueError):
        return None
    ours = " ".join(_argv(layout, name, port)[1:]) in cmdline(pid)
    return pid if ours and pid_alive(pid) else None


def spawn_app(layout: Layout, name: str, port: int) -> int:
    """Start the app in a new session (not waited for by anyone), logging to ``logs/<name>.log``."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    layout.run.mkdir(parents=True, exist_ok=True)
    log = layout.logs / f"{name}.log"
    argv = _argv(layout, name, port)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    pid = os.posix_spawn(argv[0], argv, app_env(), file_actions=actions, setsid=True)
    _pidfile(layout, name).write_text(f"{pid}\n")
    try:
        await_app(pid, name, port, log, timeout=30)
    except BaseException:
        stop_process(pid, timeout=5)
        raise
    return pid


def stop_app(layout: Layout, name: str, port: int, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s; harmless when the app is not running."""
    pid = app_pid(layout, name, port)
    if pid is not None:
        stop_process(pid, timeout)
    _pidfile(layout, name).unlink(missing_ok=True)
