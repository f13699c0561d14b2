"""Advice on a valid profile: what it declares that its own checks cannot meet (warnings, not errors).

The RPO rule is the one ``checks/recovery/test_objectives.py`` measures, per database (or Redis
server) rather than per drill: its recovery paths are every backup source of it (each losing up to one
``schedule`` of writes: the drills' backups of it and, for a database, every ``scope: full`` PostgreSQL
series declaring it) and, for a database, point-in-time recovery where it declares ``wal_archiving``
with a ``wal_archive`` and ``base_backups`` (losing only the WAL not archived yet). The check itself
measures each drill's own series, so a drill of a weekly series still fails there when a daily series
of the same database meets the RPO; the warning names the fastest path once. A replica is no
recovery path: it replays a ``DROP TABLE`` within seconds.
"""

from __future__ import annotations

from opsverify.durations import format_duration as fmt
from opsverify.profile.environment import Profile
from opsverify.profile.model import BackupSource, Database
from opsverify.profile.recovery import Drill

PITR_FIX = "wal_archiving with wal_archive and base_backups (point-in-time recovery)"


def pitr_undeclared(db: Database) -> str | None:
    """Why ``db`` declares no point-in-time recovery path, or None when it declares one."""
    if not db.wal_archiving or db.wal_archive is None:
        return f"{db.name} declares no wal_archive"
    if db.base_backups is None:
        return f"{db.name} declares no base_backups"
    return None


def recovery_sources(profile: Profile, drill: Drill) -> list[BackupSource]:
    """Every declared backup source that recovers what ``drill`` restores: the drills' backups of the same
    database or Redis server and, for a database, every whole-database (``scope: full``) PostgreSQL series
    declaring it."""
    same = [d for d in profile.drills if (d.database, d.redis) == (drill.database, drill.redis)]
    names = {d.backup for d in same}
    if drill.database is not None:
        names |= {b.name for b in profile.backups
                  if b.kind == "postgres" and b.scope == "full" and b.database == drill.database}
    return [b for b in profile.backups if b.name in names and not b.on_demand]  # manual dumps may not exist


def rpo_warning(profile: Profile, drill: Drill) -> str | None:
    """The warning when the fastest recovery path declared for what ``drill`` restores (any backup source of
    that database or Redis server, or point-in-time recovery) loses more than its objective's RPO."""
    found = [o for o in profile.objectives if o.component == drill.objective]
    if not found:
        return None
    objective = found[0]
    if drill.database is not None and pitr_undeclared(profile.database(drill.database)) is None:
        return None  # point-in-time recovery loses only the WAL not archived yet: no static bound to compare
    drilled = {d.backup for d in profile.drills if (d.database, d.redis) == (drill.database, drill.redis)}
    source = min(recovery_sources(profile, drill), key=lambda b: (b.schedule, b.name not in drilled))  # ties: drilled
    if source.schedule <= objective.rpo:
        return None
    target = f"database {drill.database}" if drill.database is not None else f"redis {drill.redis}"
    drills = [d.name for d in profile.drills
              if (d.database, d.redis, d.objective) == (drill.database, drill.redis, drill.objective)]
    fixes = [PITR_FIX] if drill.database is not None else []
    fixes += ["a more frequent backup", "or relax the RPO"]
    return (
        f"objective {objective.component}: RPO {fmt(objective.rpo)}, but the fastest declared recovery path of "
        f"{target} ({'drill' if len(drills) == 1 else 'drills'} {', '.join(drills)}) is backup {source.name} every "
        f"{fmt(source.schedule)} (declare {', '.join(fixes)})"
    )


def rpo_warnings(profile: Profile) -> list[str]:
    """One warning per objective and database (or Redis server) whose fastest declared recovery path, over every
    backup source of it and point-in-time recovery, cannot meet the RPO (however many drills restore it)."""
    seen: set[tuple[str, str | None, str | None]] = set()
    warnings = []
    for drill in profile.drills:
        key = (drill.objective, drill.database, drill.redis)
        if key in seen:
            continue
        seen.add(key)
        warning = rpo_warning(profile, drill)
        if warning is not None:
            warnings.append(warning)
    return warnings
