"""Redis answers PING inside its budget and its last background save succeeded.

Runbook: PF-30 Redis performance monitoring (``redis-cli --latency``), PF-21 BGSAVE health.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.durations import format_duration
from opsverify.probes.redis import RedisState
from opsverify.profile import RedisInstance

pytestmark = [pytest.mark.health, pytest.mark.daily]
StateOf = Callable[[RedisInstance], RedisState]


@pytest.mark.runbook("PF-30")
def test_redis_answers_ping_within_budget(
    redis_instance: RedisInstance, redis_state_of: StateOf, evidence: Recorder
) -> None:
    """PF-30: the median PING round trip is inside ``ping_budget``."""
    state = redis_state_of(redis_instance)
    expect(state.is_answering, f"redis {redis_instance.name} at {state.address} did not answer: {state.error}")
    assert state.ping_latency is not None
    evidence.record(ping=format_duration(state.ping_latency), budget=format_duration(redis_instance.ping_budget))
    expect(
        state.ping_latency <= redis_instance.ping_budget,
        f"redis {redis_instance.name} PING took {format_duration(state.ping_latency)} "
        f"(budget {format_duration(redis_instance.ping_budget)}) at {state.address}",
    )


@pytest.mark.runbook("PF-21")
def test_redis_persistence_is_healthy(
    redis_instance: RedisInstance, redis_state_of: StateOf, evidence: Recorder
) -> None:
    """PF-21: the last BGSAVE succeeded and, when AOF is on, its last write did too."""
    if not redis_instance.require_persistence:
        pytest.skip(f"profile says redis {redis_instance.name} needs no persistence")
    state = redis_state_of(redis_instance)
    expect(state.is_answering, f"redis {redis_instance.name} at {state.address} did not answer: {state.error}")
    info = state.persistence
    evidence.record(
        rdb_last_bgsave_status=info.get("rdb_last_bgsave_status"),
        rdb_last_save_time=info.get("rdb_last_save_time"),
        aof_enabled=info.get("aof_enabled"),
    )
    expect(
        state.last_bgsave_ok,
        f"redis {redis_instance.name} last BGSAVE failed (rdb_last_bgsave_status:"
        f"{info.get('rdb_last_bgsave_status')}): see the redis log on {state.address}",
    )
    expect(state.aof_ok, f"redis {redis_instance.name} AOF write failing (aof_last_write_status not ok)")
