"""Redis of the sandbox: seeded like the runbooks' cache, snapshotted with BGSAVE, with an ACL application user."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

from opsverify.errors import SandboxError
from opsverify.localserver.redis import RedisServer

__all__ = ["APP_USER", "MEMORY_LIMIT", "SAVE_RULES", "app_user_config", "bgsave", "seed_redis"]
SAVE_RULES = "3600 1 300 100 60 10000"  # Redis 7's default snapshot rules: a careful team keeps persistence on
# PF-29: a memory ceiling, as a careful team sets one; noeviction: a full cache refuses writes (an error the
# application sees) rather than silently dropping keys, which would also change the drills' key counts
MEMORY_LIMIT = ("maxmemory 256mb", "maxmemory-policy noeviction")
APP_USER = "app"  # the application's ACL user: every key, no dangerous command (security.app_users)
APP_DENIED = "-@dangerous -keys -flushall -flushdb -config -debug -module -shutdown -script"


def app_user_config(password: str) -> tuple[str, ...]:
    """The redis.conf line of the application user: its password only as a SHA-256 hash (the file is 0600 and
    the server reads it, so no password shows in ``ps`` or in the file)."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return (f"user {APP_USER} on #{digest} ~* &* +@all {APP_DENIED}",)


def seed_redis(server: RedisServer, sessions: int = 1500) -> int:
    """A few thousand keys of several types, like the runbooks' cache; returns the key count."""
    conn = server.client()
    with conn.pipeline(transaction=False) as pipe:
        for i in range(sessions):
            pipe.set(
                f"session:{i:05d}",
                json.dumps({"user_id": i % 200, "scopes": ["read", "solve"]}),
                ex=3600 + (i * 37) % 82800,
            )
        for i in range(1000):
            pipe.set(f"cache:simulation:{i + 1}", json.dumps({"transmission": round(0.5 + (i % 50) / 100, 2)}))
        for i in range(400):
            pipe.hset(f"user:{i + 1}", mapping={"plan": ("free", "team", "enterprise")[i % 3], "jobs": str(i * 3)})
        for i in range(20):
            pipe.rpush(f"queue:optimization:{i}", *[f"job-{i}-{n}" for n in range(50)])
        for i in range(60):
            pipe.sadd(f"model:tags:{i + 1}", "photonic", f"gen{i % 4}", ("mzi", "ring", "d2nn")[i % 3])
        pipe.execute()
    return int(conn.dbsize())


def bgsave(server: RedisServer, timeout: float = 15) -> Path:
    """BGSAVE and wait (bounded) until it has finished well; the RDB file."""
    from opsverify.backups.jobs import bgsave as run_bgsave

    done = run_bgsave(server.client(), timedelta(seconds=timeout))
    if done.status != "ok":
        raise SandboxError(f"redis BGSAVE ended {done.status}: see {server.directory}/redis.log")
    return server.directory / "dump.rdb"
