"""Redis probes: PING latency and persistence state (PF-21, PF-30)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from opsverify.probes.outage import connect_timed_out, connection_failure, request_timed_out
from opsverify.profile.model import RedisInstance

if TYPE_CHECKING:
    import redis


@dataclass(frozen=True)
class RedisState:
    """PING latency and the ``INFO persistence`` section, or why the server did not answer."""

    address: str
    ping_latency: timedelta | None = None
    persistence: dict[str, Any] = field(default_factory=dict)
    save_rules: str | None = None  # CONFIG GET save ("" when RDB snapshots are off); None when it was refused
    config_refused: str | None = None  # why CONFIG GET save was refused (an ACL without +config|get, a renamed command)
    config_unknown: bool = False  # refused as an unknown command (renamed or disabled), not by an ACL (NOPERM)
    server_time: float | None = None  # the server's clock (TIME; this host's when refused), unix seconds
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage

    @property
    def is_answering(self) -> bool:
        return self.error is None

    @property
    def last_bgsave_ok(self) -> bool:
        return self.persistence.get("rdb_last_bgsave_status") == "ok"

    @property
    def aof_enabled(self) -> bool:
        return self.persistence.get("aof_enabled") == 1

    @property
    def unsaved_age(self) -> timedelta | None:
        """How long the oldest unsaved change may be, by the server's clock: None when nothing is unsaved."""
        changes, saved = self.persistence.get("rdb_changes_since_last_save"), self.persistence.get("rdb_last_save_time")
        if not changes or saved is None or self.server_time is None:
            return None
        return timedelta(seconds=max(0.0, self.server_time - float(saved)))

    @property
    def aof_ok(self) -> bool:
        enabled = self.persistence.get("aof_enabled") == 1
        return not enabled or self.persistence.get("aof_last_write_status") == "ok"


def client(
    instance: RedisInstance, connect: timedelta, request: timedelta, decode_responses: bool = True
) -> redis.Redis:
    """A redis-py client bounded by the profile's timeouts: one attempt per command, no retries (replies as bytes
    with ``decode_responses=False``: key names need not be UTF-8)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # One attempt: redis-py 6+ retries 3 times with backoff by default, timeouts too (25 s for a 2 s/3 s
    # profile). Retry(NoBackoff(), 0) ends that; retry_on_timeout=False is deprecated since 6.0 and adds nothing.
    return redis.Redis(
        host=instance.host,
        port=instance.port,
        db=instance.db,
        username=instance.username,
        password=instance.secret(),
        socket_connect_timeout=connect.total_seconds(),
        socket_timeout=request.total_seconds(),
        retry=Retry(NoBackoff(), 0),
        decode_responses=decode_responses,
        ssl=instance.tls,
        ssl_ca_certs=str(instance.ca_file) if instance.ca_file else None,
    )


def unreachable(exc: BaseException, connect: timedelta, request: timedelta) -> str | None:
    """The connection-level cause of a failed command (refused, timed out, …), else None (e.g. a wrong password)."""
    timed_out = connect_timed_out(connect) if "connecting" in str(exc) else request_timed_out(request)
    return connection_failure(exc, timed_out)


REFUSED_CREDENTIALS = "refused the profile's credentials"
WANTS_PASSWORD = "wants a password the profile does not give"


def refused_credentials(exc: BaseException) -> str | None:
    """The server's refusal of the profile's username/password (it did answer), worded with the fix; else None."""
    import redis

    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if text.upper().startswith("NOAUTH") or "HELLO must be called with the client already authenticated" in text:
        return f"{WANTS_PASSWORD} (NOAUTH): set password or password_file (and username for an ACL user)"
    if isinstance(exc, redis.AuthenticationError) or text.upper().startswith("WRONGPASS"):
        return f"{REFUSED_CREDENTIALS} ({text.rstrip('.')}): check password/password_file and username"
    return None


def failure(error: str | None) -> str:
    """How a check words a failed probe after ``redis X at host:port``: the refusal of the credentials as it is,
    anything else as ``did not answer: …``."""
    answered = error is not None and error.startswith((REFUSED_CREDENTIALS, WANTS_PASSWORD))
    return error if error is not None and answered else f"did not answer: {error}"


def probe_redis(instance: RedisInstance, connect: timedelta, request: timedelta, pings: int = 5) -> RedisState:
    """Median of a few PINGs over one connection, then ``INFO persistence``, ``TIME`` and ``CONFIG GET save``."""
    import redis

    address = f"{instance.host}:{instance.port}"
    conn = client(instance, connect, request)
    try:
        conn.ping()  # connect and authenticate outside the timed pings
        samples = []
        for _ in range(pings):
            started = time.perf_counter()
            conn.ping()
            samples.append(time.perf_counter() - started)
        persistence = conn.info("persistence")
        now = server_clock(conn)
        save_rules, refused, unknown = save_config(conn)
    except redis.RedisError as exc:
        cause = unreachable(exc, connect, request)
        error = cause or refused_credentials(exc) or str(exc).splitlines()[0] or type(exc).__name__
        return RedisState(address, error=error, unreachable=cause)
    finally:
        conn.close()
    ping = timedelta(seconds=sorted(samples)[len(samples) // 2])
    return RedisState(address, ping, dict(persistence), save_rules, refused, unknown, now)


def server_clock(conn: redis.Redis) -> float:
    """The server's clock (``TIME``), unix seconds; this host's clock when an ACL refuses ``TIME``."""
    import redis

    try:
        seconds, micros = conn.time()
    except redis.ResponseError:  # NOPERM: a user allowed only PING and INFO still gets its other checks
        return time.time()
    return float(seconds) + micros / 1e6


def save_config(conn: redis.Redis) -> tuple[str | None, str | None, bool]:
    """``CONFIG GET save`` (the RDB snapshot rules, "" when off), or None, why the server refused it, and whether
    it refused it as an unknown command (``rename-command CONFIG ""``, a managed Redis) rather than by an ACL."""
    import redis

    try:
        reply = conn.config_get("save")
    except redis.ResponseError as exc:  # NOPERM (ACL), or CONFIG renamed away: the connection itself is fine
        text = str(exc).splitlines()[0] or type(exc).__name__
        unknown = not isinstance(exc, redis.exceptions.NoPermissionError) and text.lower().startswith("unknown command")
        return None, text, unknown
    if "save" not in reply:
        return None, "CONFIG GET save returned no 'save' parameter", False
    return str(reply["save"]), None, False
