"""The runbooks' backup jobs as functions: ``pg_dump`` of a profile database, Redis ``BGSAVE``.

They change state (a new file, a new snapshot), so only maintenance fixtures call them.
"""

from __future__ import annotations

import ipaddress
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


@dataclass(frozen=True)
class BackupRole:
    """Who a backup job logs in as: the database's ``backup_user``, else (none declared) its monitoring ``user``.

    An ``Endpoint`` for libpq (``pg_env``); the password is read only when asked for, never kept.
    """

    db: Database

    @property
    def declared(self) -> bool:
        """The profile declares a backup role for this database."""
        return self.db.backup_user is not None

    @property
    def host(self) -> str:
        return self.db.host

    @property
    def port(self) -> int:
        return self.db.port

    @property
    def sslmode(self) -> str:
        return self.db.sslmode

    @property
    def sslrootcert(self) -> Path | None:
        return self.db.sslrootcert

    @property
    def user(self) -> str:
        return self.db.backup_user or self.db.user

    def secret(self) -> str | None:
        return self.db.backup_secret() if self.declared else self.db.secret()

    @property
    def described(self) -> str:
        """``role X (the backup user)``, or ``role X (the monitoring user; declare backup_user)``."""
        which = "the backup user" if self.declared else "the monitoring user; declare backup_user"
        return f"role {self.user} ({which})"


REFUSALS = ("permission denied", "authentication failed", "no pg_hba.conf entry", "must be ", "does not exist")


def pg_dump(db: Database, target: Path, connect: timedelta, timeout: timedelta, fmt: str = "custom") -> Path:
    """``pg_dump -F<fmt> -f target`` of ``db`` as its backup role (``BackupRole``); raise ``BackupJobError`` naming
    that role and pg_dump's first error line."""
    role, where = BackupRole(db), f"{db.host}:{db.port}"
    try:
        args = [pg_tool("pg_dump"), f"--format={fmt}", "-f", str(target)]
    except MissingTool as err:
        raise BackupJobError(str(err)) from None
    try:
        done = subprocess.run(
            args,
            env=pg_env(role, db.dbname, connect),
            capture_output=True,
            text=True,
            timeout=timeout.total_seconds(),
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise BackupJobError(f"pg_dump of {db.name} at {where} as {role.described} did not finish within {timeout}: "
                             "is the server busy?") from None
    if done.returncode != 0:
        reason = _last_error(done.stderr)
        if not any(marker in reason for marker in REFUSALS):
            raise BackupJobError(f"pg_dump of {db.name} at {where} as {role.described} failed: {reason}")
        fix = ""
        if role.declared and "permission denied" in reason:
            fix = f": let it read every table and sequence (GRANT pg_read_all_data TO {role.user})"
        raise BackupJobError(f"pg_dump of {db.name} at {where} as {role.described} was refused: {reason}{fix}")
    return target


def _last_error(stderr: str) -> str:
    """pg_dump's first error line; a server's refusal (``ERROR:``/``FATAL:``) without libpq's wrapping."""
    lines = [line.removeprefix("pg_dump: ").removeprefix("error: ") for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line or "failed" in line] or lines
    first = errors[0] if errors else "no output"
    for level in ("ERROR:", "FATAL:"):
        _, found, said = first.partition(level)
        if found and any(marker in said for marker in REFUSALS):
            return said.strip()
    return first


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


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def fetch_rdb(instance: RedisInstance, target: Path, timeout: timedelta) -> FetchedRdb:
    """``redis-cli --rdb target``: the server sends its snapshot as to a replica (SYNC), bounded by ``timeout``.

    The password goes through ``REDISCLI_AUTH`` (never argv); over TLS when the instance declares ``tls`` (its
    ``ca_file``); the reason of a failure is redis-cli's last line."""
    args = ["redis-cli", "-h", instance.host, "-p", str(instance.port)]
    if instance.tls:  # as probes.redis.client: TLS verified against ca_file, else the system store
        args += ["--tls", *([] if _is_ip(instance.host) else ["--sni", instance.host])]
        args += ["--cacert", str(instance.ca_file)] if instance.ca_file else []
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
