"""A ``redis-server`` run here: ``start_redis(dir, port, password)``, and stopping it for sure.

The server daemonizes with a pidfile and a logfile in its dir, snapshots only on request
(``save ""``) unless given save rules, and reads its password from a mode-0600 config file, so it never shows in ``ps``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from opsverify.errors import LocalServerError
from opsverify.localserver.net import LOOPBACK, port_is_open, wait_port_closed
from opsverify.localserver.process import cmdline, pid_alive, run, wait_gone

if TYPE_CHECKING:
    import redis

INSTALL = "redis-server is not installed: run `sudo apt-get install redis-server` (or `make setup`)"


class RedisServer:
    """A running ``redis-server`` on ``127.0.0.1:port`` with its files in ``directory``."""

    def __init__(self, directory: Path, port: int, password: str | None, pid: int) -> None:
        self.directory = directory
        self.port = port
        self.password = password
        self.pid = pid

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def is_running(self) -> bool:
        return pid_alive(self.pid) and "redis-server" in cmdline(self.pid)

    def client(self, timeout: float = 5) -> redis.Redis:
        """A client of this server: one attempt per command (no retries), bounded by ``timeout``."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis(
            host=LOOPBACK,
            port=self.port,
            password=self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (no save), SIGKILL after ``timeout`` s; then verify the process and the port are gone."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if not self.is_running:
                break
            os.kill(self.pid, sig)
            if wait_gone(self.pid, wait):
                break
        if pid_alive(self.pid) and "redis-server" in cmdline(self.pid):
            raise LocalServerError(f"redis-server (pid {self.pid}) survived SIGKILL: check it with `ps -p {self.pid}`")
        if not wait_port_closed(LOOPBACK, self.port, timeout):
            raise LocalServerError(f"port {self.port} of redis-server is still open after stop: see `ss -ltnp`")


def _config(directory: Path, port: int, password: str | None, save: str = "", extra: tuple[str, ...] = ()) -> Path:
    lines = {
        "bind": LOOPBACK,
        "port": str(port),
        "daemonize": "yes",
        "protected-mode": "yes",
        "pidfile": json.dumps(str(directory / "redis.pid")),
        "logfile": json.dumps(str(directory / "redis.log")),
        "dir": json.dumps(str(directory)),
        "dbfilename": "dump.rdb",
        "save": json.dumps(save),
        "appendonly": "no",
    }
    if password is not None:
        lines["requirepass"] = json.dumps(password)
    conf = directory / "redis.conf"
    conf.touch(mode=0o600, exist_ok=True)
    conf.chmod(0o600)
    conf.write_text("".join(f"{key} {value}\n" for key, value in lines.items()) + "".join(f"{x}\n" for x in extra))
    return conf


def _died(directory: Path) -> bool:
    """The pidfile names a process that is gone: the server exited at start (a bad RDB, a taken port)."""
    try:
        return not pid_alive(int((directory / "redis.pid").read_text().strip()))
    except (OSError, ValueError):
        return False


def read_pid(directory: Path) -> int | None:
    """The pid in ``directory/redis.pid`` while that redis-server runs."""
    try:
        pid = int((directory / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) and "redis-server" in cmdline(pid) else None


def start_redis(
    directory: Path, port: int, password: str | None = None, timeout: float = 10, save: str = "",
    extra: tuple[str, ...] = (),
) -> RedisServer:
    """Start a daemonized redis-server on ``127.0.0.1:port`` and return once it answers PING.

    ``save``: its RDB snapshot rules (``"3600 1 300 100"``); empty, the default, snapshots only on request.
    ``extra``: more redis.conf lines (``'rename-command CONFIG ""'``).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise LocalServerError(INSTALL)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "redis.pid").unlink(missing_ok=True)
    run([binary, str(_config(directory, port, password, save, extra))], "starting redis-server", timeout=timeout)
    deadline = time.monotonic() + timeout
    pid = read_pid(directory)
    while pid is None:
        if time.monotonic() > deadline or _died(directory):
            raise LocalServerError(f"redis-server did not stay up within {timeout:g}s: see {directory / 'redis.log'}")
        time.sleep(0.05)
        pid = read_pid(directory)
    server = RedisServer(directory, port, password, pid)
    while not port_is_open(LOOPBACK, port, timeout=0.2):  # a server that quits on a bad RDB must not be waited for
        if time.monotonic() > deadline or _died(directory):
            raise LocalServerError(f"redis-server did not listen within {timeout:g}s: see {directory / 'redis.log'}")
        time.sleep(0.05)
    return server
