"""Redis answers PING inside its budget, persists to disk, its last save succeeded and nothing stays unsaved too long.

Runbook: PF-30 Redis performance monitoring (``redis-cli --latency``), PF-21 BGSAVE health, PF-47 the
recovery point (Redis has no row of its own in the RTO/RPO table: the full system's RPO applies).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.durations import format_duration
from opsverify.probes.redis import RedisState, failure
from opsverify.profile import RedisInstance

pytestmark = [pytest.mark.health, pytest.mark.daily]
StateOf = Callable[[RedisInstance], RedisState]


def answering_state(redis_instance: RedisInstance, redis_state_of: StateOf) -> RedisState:
    """The instance's state, when the profile requires persistence and the server answered; else skip or fail."""
    __tracebackhide__ = True
    if not redis_instance.require_persistence:
        pytest.skip(f"profile says redis {redis_instance.name} needs no persistence")
    state = redis_state_of(redis_instance)
    expect(state.is_answering, f"redis {redis_instance.name} at {state.address} {failure(state.error)}")
    return state


@pytest.mark.runbook("PF-30")
def test_redis_answers_ping_within_budget(
    redis_instance: RedisInstance, redis_state_of: StateOf, evidence: Recorder
) -> None:
    """PF-30: the median PING round trip is inside ``ping_budget``."""
    state = redis_state_of(redis_instance)
    expect(state.is_answering, f"redis {redis_instance.name} at {state.address} {failure(state.error)}")
    assert state.ping_latency is not None
    evidence.record(ping=format_duration(state.ping_latency), budget=format_duration(redis_instance.ping_budget))
    expect(
        state.ping_latency <= redis_instance.ping_budget,
        f"redis {redis_instance.name} PING took {format_duration(state.ping_latency)} "
        f"(budget {format_duration(redis_instance.ping_budget)}) at {state.address}",
    )


@pytest.mark.runbook("PF-47")
def test_redis_persistence_is_switched_on(
    redis_instance: RedisInstance, redis_state_of: StateOf, evidence: Recorder
) -> None:
    """PF-47: RDB snapshots (``CONFIG GET save`` not empty) or AOF (``aof_enabled:1``) are on.

    Where CONFIG cannot be read (renamed away, a managed Redis) the profile may declare ``persistence``;
    INFO persistence still checks the declaration (``aof`` needs ``aof_enabled:1``; ``none`` fails).
    """
    state = answering_state(redis_instance, redis_state_of)
    name, declared = redis_instance.name, redis_instance.persistence
    evidence.record(save=state.save_rules, aof_enabled=state.persistence.get("aof_enabled"),
                    rdb_saves=state.persistence.get("rdb_saves"), config_refused=state.config_refused,
                    declared=declared)
    if declared == "none":
        fail(f"redis {name} at {state.address}: the profile declares persistence: none, so a restart loses every key; "
             "switch on save rules or appendonly and declare it, or declare require_persistence: false")
    if declared == "aof":
        expect(state.aof_enabled, f"redis {name} at {state.address}: the profile declares persistence: aof but INFO "
               "persistence shows aof_enabled:0: set appendonly yes, or declare what the server does")
    if state.aof_enabled:
        return
    if state.save_rules is None and declared == "rdb":
        return  # declared, and nothing readable contradicts it: the BGSAVE and unsaved-age checks read INFO
    if state.config_unknown:
        fail(f"redis {name} at {state.address} does not know CONFIG ({state.config_refused}) and AOF is off: cannot "
             "tell whether RDB snapshots are on; CONFIG is renamed or disabled (rename-command, a managed Redis) and "
             f"no ACL brings it back: declare persistence: rdb (or aof, none) for redis {name} in the profile")
    expect(
        state.save_rules is not None,
        f"redis {name} at {state.address} refused CONFIG GET save ({state.config_refused}) and AOF is "
        f"off: cannot tell whether RDB snapshots are on; allow it (ACL SETUSER {redis_instance.username or 'default'} "
        "+config|get)",
    )
    expect(
        bool(state.save_rules),
        f"redis {name} at {state.address} persists nothing: RDB snapshots are off (save \"\") and AOF "
        "is off (aof_enabled:0), so a restart loses every key; set save rules (e.g. save 3600 1 300 100) or "
        "appendonly yes, or declare require_persistence: false",
    )


@pytest.mark.runbook("PF-21")
def test_redis_persistence_is_healthy(
    redis_instance: RedisInstance, redis_state_of: StateOf, evidence: Recorder
) -> None:
    """PF-21: the last BGSAVE succeeded and, when AOF is on, its last write did too."""
    state = answering_state(redis_instance, redis_state_of)
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


@pytest.mark.runbook("PF-47")
def test_redis_unsaved_changes_are_younger_than_max_unsaved_age(
    redis_instance: RedisInstance, redis_state_of: StateOf, evidence: Recorder
) -> None:
    """PF-47: with RDB only, changes are pending no longer than ``max_unsaved_age`` since the last successful save.

    With AOF on every write is appended to the AOF (its write status: the check above), so the
    age of the last RDB snapshot is not what a crash loses.
    """
    state = answering_state(redis_instance, redis_state_of)
    age, limit = state.unsaved_age, redis_instance.max_unsaved_age
    changes = state.persistence.get("rdb_changes_since_last_save")
    evidence.record(rdb_changes_since_last_save=changes, unsaved_age=format_duration(age) if age else None,
                    max_unsaved_age=format_duration(limit), aof_enabled=state.persistence.get("aof_enabled"))
    if state.aof_enabled or age is None:
        return
    expect(
        age <= limit,
        f"redis {redis_instance.name} at {state.address} has {changes} unsaved change(s) and its last successful save "
        f"was {format_duration(age)} ago (max_unsaved_age {format_duration(limit)}): a crash now loses them; see "
        "why saves stopped (save rules, BGSAVE errors in its log)",
    )
