"""Each drill's recovery point is inside its component's RPO (the runbook's RTO/RPO table).

Runbook: PF-47 RTO/RPO objectives (Application 15m/5m, Database 30m/1h, Full system 2h/4h). The
RTO side, and with it PF-14 business continuity, is measured by the drills themselves (checks/restore).

A streaming replica is no recovery path here: it replays a ``DROP TABLE`` or a bad ``UPDATE`` within
seconds, so what it holds is lost with the primary's data. The paths are the drill's newest backup
(it loses what was written since it was taken) and, where the drill's database archives WAL into a
declared ``wal_archive`` that holds the last segment the archiver reports archived and declares
``base_backups`` holding a complete one (with its ``backup_manifest``) younger than
``base_backup_max_age``, point-in-time recovery: it loses the WAL not archived yet,
the archive lag (the time since the oldest finished segment still waiting; 0 when none waits).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from fixtures.backups import CatalogOf, listed
from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.durations import format_duration as fmt
from opsverify.probes.replication import ArchivedCopy, ArchiverState, BaseBackups
from opsverify.profile import Database, Drill, Profile
from opsverify.profile.advice import pitr_undeclared

pytestmark = [pytest.mark.recovery, pytest.mark.dr, pytest.mark.daily]


def point_in_time(
    db: Database,
    archiver_of: Callable[[Database], ArchiverState],
    archived_copy_of: Callable[[Database], ArchivedCopy | None],
    base_backups_of: Callable[[Database], BaseBackups | None],
) -> tuple[str, timedelta] | str:
    """The point-in-time recovery path of ``db`` and its loss (the archive lag), or why there is none."""
    undeclared = pitr_undeclared(db)
    if undeclared is not None:
        return undeclared
    state = archiver_of(db)
    if state.error is not None or state.archive_mode == "off":
        return f"the archiver of {db.name} is unreadable or off"
    if state.lag_error is not None:
        return f"the WAL archive lag of {db.name} cannot be measured ({state.lag_error})"
    copy = archived_copy_of(db)
    if copy is None or copy.problem is not None or copy.name is None:
        return f"the WAL archive of {db.name} does not hold the last segment reported archived"
    base = base_backups_of(db)
    if base is None or base.newest is None or base.taken is None:
        return f"no complete base backup of {db.name} in {db.base_backups}"
    age = datetime.now(UTC) - base.taken
    if age > db.base_backup_max_age:
        return f"the newest complete base backup of {db.name} is {fmt(age)} old (max {fmt(db.base_backup_max_age)})"
    return f"point-in-time recovery (base backup {base.newest} + WAL archive)", state.lag


def recovery_points(
    drill: Drill, profile: Profile, catalog_of: CatalogOf, now: datetime, pitr: Callable[[Database], object]
) -> tuple[dict[str, timedelta], str | None]:
    """How much data each recovery path of the drill's component would lose now; why PITR is no path, if not."""
    source = profile.backup(drill.backup)
    newest = listed(source, catalog_of).files[0]
    points = {f"backup {newest.name}": newest.age(now)}
    if drill.database is None:
        return points, None
    path = pitr(profile.database(drill.database))
    if isinstance(path, tuple):
        points[path[0]] = path[1]
        return points, None
    return points, str(path)


@pytest.mark.runbook("PF-47")
def test_recovery_point_is_within_rpo(
    drill: Drill,
    profile: Profile,
    catalog_of: CatalogOf,
    archiver_of: Callable[[Database], ArchiverState],
    archived_copy_of: Callable[[Database], ArchivedCopy | None],
    base_backups_of: Callable[[Database], BaseBackups | None],
    now: datetime,
    evidence: Recorder,
) -> None:
    """PF-47: the drill's best recovery path (newest backup, or verified point-in-time recovery) loses < the RPO."""
    objective = profile.objective(drill.objective)
    points, no_pitr = recovery_points(
        drill, profile, catalog_of, now, lambda db: point_in_time(db, archiver_of, archived_copy_of, base_backups_of)
    )
    best = min(points, key=lambda p: points[p])
    evidence.record(component=objective.component, rpo_objective=fmt(objective.rpo),
                    rpo_measured=fmt(points[best]), recovery_path=best,
                    **{f"path {name}": fmt(loss) for name, loss in points.items()})
    evidence.metric(recovery_point_seconds=points[best].total_seconds(),
                    rpo_objective_seconds=objective.rpo.total_seconds())
    if no_pitr is not None:
        evidence.record(point_in_time_recovery=f"no path: {no_pitr}")
    expect(
        points[best] <= objective.rpo,
        f"drill {drill.name} would lose {fmt(points[best])} of data (best path: {best}; {objective.component} RPO "
        f"{fmt(objective.rpo)}{f'; no point-in-time recovery: {no_pitr}' if no_pitr else ''})",
    )
