"""Redis probes: PING latency and persistence state (PF-21, PF-30)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from opsverify.profile.model import RedisInstance

if TYPE_CHECKING:
    import redis


@dataclass(frozen=True)
class RedisState:
    """PING latency and the ``INFO persistence`` section, or why the server did not answer."""

    address: str
    ping_latency: timedelta | None = None
    persistence: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def is_answering(self) -> bool:
        return self.error is None

    @property
    def last_bgsave_ok(self) -> bool:
        return self.persistence.get("rdb_last_bgsave_status") == "ok"

    @property
    def aof_ok(self) -> bool:
        enabled = self.persistence.get("aof_enabled") == 1
        return not enabled or self.persistence.get("aof_last_write_status") == "ok"


def client(instance: RedisInstance, timeout: timedelta) -> redis.Redis:
    """A redis-py client with connect and socket timeouts from the profile."""
    import redis

    return redis.Redis(
        host=instance.host,
        port=instance.port,
        db=instance.db,
        username=instance.username,
        password=instance.secret(),
        socket_connect_timeout=timeout.total_seconds(),
        socket_timeout=timeout.total_seconds(),
        decode_responses=True,
    )


def probe_redis(instance: RedisInstance, timeout: timedelta, pings: int = 5) -> RedisState:
    """Median of a few PINGs over one connection, then ``INFO persistence``."""
    import redis

    address = f"{instance.host}:{instance.port}"
    conn = client(instance, timeout)
    try:
        conn.ping()  # connect and authenticate outside the timed pings
        samples = []
        for _ in range(pings):
            started = time.perf_counter()
            conn.ping()
            samples.append(time.perf_counter() - started)
        persistence = conn.info("persistence")
    except redis.RedisError as exc:
        return RedisState(address, error=str(exc).splitlines()[0] or type(exc).__name__)
    finally:
        conn.close()
    return RedisState(address, timedelta(seconds=sorted(samples)[len(samples) // 2]), dict(persistence))
