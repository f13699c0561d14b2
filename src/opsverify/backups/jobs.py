"""The runbooks' backup jobs as functions: ``pg_dump`` of a profile database, Redis ``BGSAVE``.

They change state (a new file, a new snapshot), so only maintenance fixtures call them.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from opsverify.errors import OpsverifyError
from opsverify.pgtools import MissingTool, pg_env, pg_tool
from opsverify.profile.model import Database, RedisInstance

if TYPE_CHECKING:
    import redis


class BackupJobError(OpsverifyError):
    """A backup job did not produce its backup."""


def pg_dump(db: Database, target: Path, connect: timedelta, timeout: timedelta, fmt: str = "custom") -> Path:
    """``pg_dump -F<fmt> -f target`` of ``db``; raise ``BackupJobError`` with pg_dump's first error line."""
    try:
        args = [pg_tool("pg_dump"), f"--format={fmt}", "-f", str(target)]
    except MissingTool as err:
        raise BackupJobError(str(err)) from None
    try:
        done = subprocess.run(
            args,
            env=pg_env(db, db.dbname, connect),
            capture_output=True,
            text=True,
            timeout=timeout.total_seconds(),
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise BackupJobError(f"pg_dump of {db.name} did not finish within {timeout}: is the server busy?") from None
    if done.returncode != 0:
        raise BackupJobError(f"pg_dump of {db.name} failed: {_last_error(done.stderr)}")
    return target


def _last_error(stderr: str) -> str:
    lines = [line.removeprefix("pg_dump: ").removeprefix("error: ") for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line or "failed" in line] or lines
    return errors[0] if errors else "no output"


@dataclass(frozen=True)
class Bgsave:
    """What one BGSAVE did: LASTSAVE before and after, and the server's verdict."""

    lastsave_before: int
    lastsave_after: int
    status: str

    @property
    def advanced(self) -> bool:
        return self.lastsave_after > self.lastsave_before


def bgsave(conn: redis.Redis, timeout: timedelta) -> Bgsave:
    """BGSAVE, then wait (bounded) until LASTSAVE advances or the save ends badly."""
    before = int(conn.lastsave().timestamp())
    if int(time.time()) == before:
        time.sleep(1.05)  # LASTSAVE has one-second resolution: make an advance visible
    conn.bgsave(schedule=True)  # BGSAVE SCHEDULE: one of the server's own saves may be running now
    deadline = time.monotonic() + timeout.total_seconds()
    while True:
        info = conn.info("persistence")
        after = int(conn.lastsave().timestamp())
        status = str(info["rdb_last_bgsave_status"])
        if not info["rdb_bgsave_in_progress"] and (after > before or status != "ok"):
            return Bgsave(before, after, status)
        if time.monotonic() > deadline:
            return Bgsave(before, after, "timeout")
        time.sleep(0.05)


@dataclass(frozen=True)
class RdbLocation:
    """Where a Redis server writes its snapshot (``CONFIG GET dir`` + ``dbfilename``), or why it would not say."""

    path: Path | None = None
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage


def rdb_location(instance: RedisInstance, connect: timedelta, request: timedelta) -> RdbLocation:
    """Ask the server where its RDB is: ``CONFIG GET dir`` and ``CONFIG GET dbfilename`` (read-only)."""
    import redis

    from opsverify.probes.redis import client, unreachable

    conn = client(instance, connect, request)
    try:
        directory = conn.config_get("dir").get("dir")
        name = conn.config_get("dbfilename").get("dbfilename")
    except redis.RedisError as exc:
        cause = unreachable(exc, connect, request)
        return RdbLocation(error=cause or str(exc).splitlines()[0] or type(exc).__name__, unreachable=cause)
    finally:
        conn.close()
    if not directory or not name:
        return RdbLocation(error="CONFIG GET dir/dbfilename answered nothing")
    return RdbLocation(Path(directory) / name)


@dataclass(frozen=True)
class FetchedRdb:
    """The server's snapshot fetched over the replication protocol into ``path``, or why it was not."""

    path: Path
    error: str | None = None

    @property
    def refused(self) -> bool:
        """The server's ACL refused SYNC/PSYNC to the profile's user."""
        return self.error is not None and "NOPERM" in self.error


def fetch_rdb(instance: RedisInstance, target: Path, timeout: timedelta) -> FetchedRdb:
    """``redis-cli --rdb target``: the server sends its snapshot as to a replica (SYNC), bounded by ``timeout``.

    The password goes through ``REDISCLI_AUTH`` (never argv); the reason of a failure is redis-cli's last line."""
    args = ["redis-cli", "-h", instance.host, "-p", str(instance.port)]
    if instance.username:
        args += ["--user", instance.username]
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    password = instance.secret()
    if password:
        env["REDISCLI_AUTH"] = password
    try:
        done = subprocess.run(
            [*args, "--rdb", str(target)], env=env, capture_output=True, text=True,
            timeout=timeout.total_seconds(), check=False, stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return FetchedRdb(target, "redis-cli is not installed here (apt install redis-tools)")
    except subprocess.TimeoutExpired:
        return FetchedRdb(target, f"redis-cli --rdb did not finish within {timeout.total_seconds():g}s")
    if done.returncode != 0 or not target.is_file():
        lines = [line.strip() for line in (done.stdout + "\n" + done.stderr).splitlines()]
        lines = [line for line in lines if line and not line.startswith("sending ")]
        return FetchedRdb(target, lines[-1] if lines else f"redis-cli exited {done.returncode}")
    return FetchedRdb(target)
