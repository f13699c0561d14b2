"""A scratch Redis (PF-22): a throwaway ``redis-server`` on a free loopback port that has loaded a copy
of an RDB from its scratch directory; stopped, its process and port proven gone, the directory deleted.
"""

from __future__ import annotations

import secrets
import shutil
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from opsverify.actions.directory import ScratchDirectory
from opsverify.errors import LocalServerError, OpsverifyError
from opsverify.localserver.net import free_port
from opsverify.localserver.redis import RedisServer, start_redis
from opsverify.localserver.scratch import Server

if TYPE_CHECKING:
    import redis


class ScratchRedis(ScratchDirectory[RedisServer]):
    """A redis-server that has loaded a copy of ``rdb``; ``OpsverifyError`` with its own reason when it does not."""

    kind = "scratch redis"
    touches_production = False  # a copy of a file, on this machine

    def __init__(self, rdb: Path, directory: Path, timeout: timedelta) -> None:
        super().__init__(directory)
        self.rdb, self.timeout = rdb, timeout

    def act(self) -> RedisServer:
        import redis

        self.make_dir()  # mode 0700: the data is production's, readable by us alone
        shutil.copyfile(self.rdb, self.directory / "dump.rdb")
        (self.directory / "dump.rdb").chmod(0o600)
        deadline = time.monotonic() + self.timeout.total_seconds()
        port = free_port()
        try:
            server = start_redis(self.directory, port, secrets.token_urlsafe(18), self.timeout.total_seconds())
            self.started.append(Server("redis-server", server.pid, port))
            wait_loaded(server.client(timeout=self.timeout.total_seconds()), deadline)
        except (LocalServerError, redis.RedisError) as err:  # it exited at start or while loading: its log says why
            reason = log_tail(self.directory) or str(err).splitlines()[0]
            raise OpsverifyError(f"redis-server did not load the RDB: {reason}") from None
        return server


def wait_loaded(conn: redis.Redis, deadline: float) -> None:
    """PING until the server answers (it says LOADING while it reads the RDB)."""
    import redis

    while True:
        try:
            conn.ping()
            return
        except redis.BusyLoadingError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def log_tail(directory: Path) -> str:
    """The reason redis-server logged last (its warning lines, ``#``), without the pid/time prefix."""
    try:
        lines = [line for line in (directory / "redis.log").read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    warnings = [line for line in lines if " # " in line and "Terminating server" not in line]
    chosen = (warnings or lines)[-1:]
    return chosen[0].split(" * ")[-1].split(" # ")[-1].strip() if chosen else ""
