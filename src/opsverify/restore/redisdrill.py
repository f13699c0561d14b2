"""The Redis drill (PF-22): load an RDB into a scratch ``redis-server`` (an action) and read what it holds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from opsverify.actions.base import performed
from opsverify.actions.redis import ScratchRedis
from opsverify.errors import CleanupError, OpsverifyError
from opsverify.facts.redis import RedisFacts, redis_facts


@dataclass(frozen=True)
class RedisDrillOutcome:
    """What loading the RDB showed: the time to the first answer, the facts, or why it failed."""

    backup: str
    rto: timedelta | None = None
    restored: RedisFacts | None = None
    error: str | None = None
    manifest: dict[str, Any] | None = None  # the RDB's manifest, read while the RDB is here
    manifest_problem: str | None = None  # the manifest exists but is malformed


def run_redis_drill(
    rdb: Path, directory: Path, timeout: timedelta, *, started: float | None = None, label: str | None = None
) -> RedisDrillOutcome:
    """Load ``rdb`` into a scratch server, time it to the first PING, read its keys; the server is gone after.

    ``started``: when the clock started (``time.monotonic()``, e.g. before a download), default now;
    ``label``: how messages name the RDB (its S3 location), default its path.
    """
    import redis

    started = time.monotonic() if started is None else started
    name = label or str(rdb)
    try:
        with performed(ScratchRedis(rdb, directory, timeout)) as server:
            conn = server.client(timeout=timeout.total_seconds())
            rto = timedelta(seconds=time.monotonic() - started)
            return RedisDrillOutcome(name, rto, redis_facts(conn))
    except CleanupError:
        raise
    except (OpsverifyError, redis.RedisError, OSError) as exc:  # OSError: the RDB vanished, the disk is full
        return RedisDrillOutcome(name, error=str(exc).splitlines()[0])
