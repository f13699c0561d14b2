"""The Redis drill (PF-22): load an RDB into a throwaway ``redis-server`` and read what it holds.

The server runs on a free loopback port from a scratch directory holding a copy of the RDB; on
exit it is stopped, its process and port verified gone, and the directory deleted and verified.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from opsverify.errors import CleanupError, OpsverifyError, SandboxError
from opsverify.restore.redisdata import RedisFacts, redis_facts
from opsverify.restore.scratch import SCRATCH_PREFIX
from opsverify.sandbox.net import free_port
from opsverify.sandbox.redis import RedisServer, read_pid, start_redis

if TYPE_CHECKING:
    import redis


@contextmanager
def scratch_redis(rdb: Path, directory: Path, timeout: timedelta) -> Iterator[RedisServer]:
    """A redis-server that has loaded a copy of ``rdb`` from ``directory`` (an ``opsverify_scratch_*`` path).

    ``OpsverifyError`` with redis-server's own reason when it does not load the file.
    """
    import redis

    if not directory.name.startswith(SCRATCH_PREFIX):
        raise CleanupError(f"refusing to use {directory} as scratch: its name lacks {SCRATCH_PREFIX}")
    server: RedisServer | None = None
    port = free_port()
    try:
        directory.mkdir(mode=0o700, parents=True)  # the data is production's: readable by us alone
        shutil.copyfile(rdb, directory / "dump.rdb")
        (directory / "dump.rdb").chmod(0o600)
        deadline = time.monotonic() + timeout.total_seconds()
        try:
            server = start_redis(directory, port, secrets.token_urlsafe(18), timeout=timeout.total_seconds())
            _wait_loaded(server.client(timeout=timeout.total_seconds()), deadline)
        except (SandboxError, redis.RedisError) as err:  # it exited at start or while loading: its log says why
            reason = _log_tail(directory) or str(err).splitlines()[0]
            raise OpsverifyError(f"redis-server did not load the RDB: {reason}") from None
        yield server
    finally:
        pid = server.pid if server is not None else read_pid(directory)  # started, but not ready: stop it too
        if pid is not None:
            RedisServer(directory, port, None, pid).stop(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)
        if directory.exists():
            raise CleanupError(f"scratch directory {directory} is still there: remove it by hand")


@dataclass(frozen=True)
class RedisDrillOutcome:
    """What loading the RDB showed: the time to the first answer, the facts, or why it failed."""

    backup: str
    rto: timedelta | None = None
    restored: RedisFacts | None = None
    error: str | None = None


def run_redis_drill(rdb: Path, directory: Path, timeout: timedelta) -> RedisDrillOutcome:
    """Load ``rdb`` into a scratch server, time it to the first PING, read its keys; the server is gone after."""
    import redis

    started = time.monotonic()
    try:
        with scratch_redis(rdb, directory, timeout) as server:
            conn = server.client(timeout=timeout.total_seconds())
            rto = timedelta(seconds=time.monotonic() - started)
            return RedisDrillOutcome(str(rdb), rto, redis_facts(conn))
    except CleanupError:
        raise
    except (OpsverifyError, redis.RedisError, OSError) as exc:  # OSError: the RDB vanished, the disk is full
        return RedisDrillOutcome(str(rdb), error=str(exc).splitlines()[0])


def _wait_loaded(conn: redis.Redis, deadline: float) -> None:
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


def _log_tail(directory: Path) -> str:
    """The reason redis-server logged last (its warning lines, ``#``), without the pid/time prefix."""
    try:
        lines = [line for line in (directory / "redis.log").read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    warnings = [line for line in lines if " # " in line and "Terminating server" not in line]
    chosen = (warnings or lines)[-1:]
    return chosen[0].split(" * ")[-1].split(" # ")[-1].strip() if chosen else ""
