"""Each drill's recovery point is inside its component's RPO (the runbook's RTO/RPO table).

Runbook: PF-47 RTO/RPO objectives (Application 15m/5m, Database 30m/1h, Full system 2h/4h). The
RTO side, and with it PF-14 business continuity, is measured by the drills themselves (checks/restore).

A streaming replica is no recovery path here: it replays a ``DROP TABLE`` or a bad ``UPDATE`` within
seconds, so what it holds is lost with the primary's data. The paths are the drill's newest backup
(it loses what was written since it was taken).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from fixtures.backups import CatalogOf, listed
from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.durations import format_duration as fmt
from opsverify.profile import Drill, Profile

pytestmark = [pytest.mark.recovery, pytest.mark.dr, pytest.mark.daily]


def recovery_points(drill: Drill, profile: Profile, catalog_of: CatalogOf, now: datetime) -> dict[str, timedelta]:
    """How much data each recovery path of the drill's component would lose now: the newest backup's age."""
    source = profile.backup(drill.backup)
    newest = listed(source, catalog_of).files[0]
    return {f"backup {newest.name}": newest.age(now)}


@pytest.mark.runbook("PF-47")
def test_recovery_point_is_within_rpo(
    drill: Drill, profile: Profile, catalog_of: CatalogOf, now: datetime, evidence: Recorder
) -> None:
    """PF-47: the drill's best recovery path (its newest backup; never a replica) loses less than the RPO."""
    objective = profile.objective(drill.objective)
    points = recovery_points(drill, profile, catalog_of, now)
    best = min(points, key=lambda p: points[p])
    evidence.record(component=objective.component, rpo_objective=fmt(objective.rpo),
                    rpo_measured=fmt(points[best]), recovery_path=best,
                    **{f"path {name}": fmt(loss) for name, loss in points.items()})
    expect(
        points[best] <= objective.rpo,
        f"drill {drill.name} would lose {fmt(points[best])} of data (best path: {best}; {objective.component} RPO "
        f"{fmt(objective.rpo)})",
    )
