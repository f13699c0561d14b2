"""Each drill's recovery point is inside its component's RPO (the runbook's RTO/RPO table).

Runbook: PF-47 RTO/RPO objectives (Application 15m/5m, Database 30m/1h, Full system 2h/4h). The
RTO side, and with it PF-14 business continuity, is measured by the drills themselves (checks/restore).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from fixtures.backups import CatalogOf, listed
from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.durations import format_duration as fmt
from opsverify.probes.replication import ReplicaState
from opsverify.profile import Drill, Profile, Replica

pytestmark = [pytest.mark.recovery, pytest.mark.dr, pytest.mark.daily]


def recovery_points(
    drill: Drill, profile: Profile, catalog_of: CatalogOf, state_of: Callable[[Replica], ReplicaState], now: datetime
) -> dict[str, timedelta]:
    """How much data each recovery path of the drill's component would lose now: backup age, replica lag."""
    source = profile.backup(drill.backup)
    newest = listed(source, catalog_of).files[0]
    points = {f"backup {newest.name}": newest.age(now)}
    for replica in profile.replicas:
        if drill.database is not None and replica.primary == drill.database:
            lag = state_of(replica).lag
            if lag is not None and state_of(replica).in_recovery:
                points[f"replica {replica.name}"] = lag
    return points


@pytest.mark.runbook("PF-47")
def test_recovery_point_is_within_rpo(
    drill: Drill,
    profile: Profile,
    catalog_of: CatalogOf,
    replica_state_of: Callable[[Replica], ReplicaState],
    now: datetime,
    evidence: Recorder,
) -> None:
    """PF-47: the drill's best recovery path (its newest backup, or a streaming replica) loses less than the RPO."""
    objective = profile.objective(drill.objective)
    points = recovery_points(drill, profile, catalog_of, replica_state_of, now)
    best = min(points, key=lambda p: points[p])
    evidence.record(component=objective.component, rpo_objective=fmt(objective.rpo),
                    rpo_measured=fmt(points[best]), recovery_path=best,
                    **{f"path {name}": fmt(loss) for name, loss in points.items()})
    expect(
        points[best] <= objective.rpo,
        f"drill {drill.name} would lose {fmt(points[best])} of data ({best}; {objective.component} RPO "
        f"{fmt(objective.rpo)})",
    )
