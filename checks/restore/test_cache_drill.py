"""Restore drill of Redis: the newest RDB loads into a throwaway redis-server and holds the same keys.

Runbook: PF-22 Redis restore (stop, copy the RDB into /data, start), PF-46 full system recovery
(the cache part: the restored server answers), PF-47/PF-14 the RTO.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.durations import format_duration as fmt
from opsverify.facts.redis import RedisFacts
from opsverify.profile import Drill, Profile
from opsverify.restore.fidelity import compare_redis
from opsverify.restore.redisdrill import RedisDrillOutcome

pytestmark = [pytest.mark.restore, pytest.mark.dr, pytest.mark.monthly]


@pytest.mark.runbook("PF-22", "PF-46")
def test_rdb_loads_into_a_scratch_redis(redis_drill_outcome: RedisDrillOutcome, evidence: Recorder) -> None:
    """PF-22/PF-46: redis-server starts from the RDB and answers PING."""
    evidence.record(backup=redis_drill_outcome.backup, error=redis_drill_outcome.error or "none")
    expect(
        redis_drill_outcome.error is None,
        f"RDB {redis_drill_outcome.backup} does not load: {redis_drill_outcome.error}",
    )


@pytest.mark.runbook("PF-22")
def test_restored_keys_match_the_backup(
    redis_drill: Drill, redis_drill_outcome: RedisDrillOutcome, evidence: Recorder
) -> None:
    """PF-22: the persistent key count and a sample of keys with their types equal the backup's manifest.

    No manifest skips; a manifest that is malformed or holds no key facts fails, naming it.
    """
    restored = redis_drill_outcome.restored
    if restored is None:
        pytest.skip(f"drill {redis_drill.name}: the RDB did not load (see its load check)")
    if redis_drill_outcome.manifest_problem is not None:
        fail(f"drill {redis_drill.name}: cannot compare keys: {redis_drill_outcome.manifest_problem}")
    manifest = redis_drill_outcome.manifest
    if manifest is None:
        pytest.skip(f"drill {redis_drill.name}: no manifest beside {redis_drill_outcome.backup} to compare keys with: "
                    f"write one after each RDB copy with `opsverify manifest write {redis_drill_outcome.backup}`")
    try:
        expected = RedisFacts.from_json(manifest)
    except (KeyError, TypeError, ValueError, AttributeError):
        fail(f"drill {redis_drill.name}: cannot compare keys: the manifest {redis_drill_outcome.backup}.manifest.json "
             'holds no key facts (a "redis" object with dbsize, persistent_keys and sample): '
             "re-run the backup job that writes it")
    evidence.record(persistent_keys=restored.persistent_keys, expected=expected.persistent_keys,
                    dbsize=restored.dbsize, sampled=len(expected.sample))
    problems = compare_redis(expected, restored)
    if problems:
        fail(f"drill {redis_drill.name}: {problems[0]} ({Path(redis_drill_outcome.backup).name}.manifest.json)")


@pytest.mark.recovery
@pytest.mark.runbook("PF-47", "PF-14")
def test_cache_recovers_within_rto(
    redis_drill: Drill, redis_drill_outcome: RedisDrillOutcome, profile: Profile, evidence: Recorder
) -> None:
    """PF-47/PF-14: from starting redis-server on the RDB to its first answer, inside the component's RTO."""
    objective = profile.objective(redis_drill.objective)
    measured = redis_drill_outcome.rto
    evidence.record(component=objective.component, rto_objective=fmt(objective.rto),
                    rto_measured=fmt(measured) if measured is not None else "not recovered")
    evidence.metric(rto_objective_seconds=objective.rto.total_seconds())
    if measured is not None:
        evidence.metric(restore_rto_seconds=measured.total_seconds())
    expect(measured is not None, f"drill {redis_drill.name}: not recovered, RTO {fmt(objective.rto)} not met")
    assert measured is not None
    expect(measured <= objective.rto,
           f"drill {redis_drill.name} took {fmt(measured)} to recover ({objective.component} RTO {fmt(objective.rto)})")
