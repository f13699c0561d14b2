"""Advice on a valid profile: what it declares that its own checks cannot meet (warnings, not errors).

The RPO rule is the one ``checks/recovery/test_objectives.py`` measures: a drill's recovery paths
are its backup source (losing up to one ``schedule`` of writes) and, for a database drill, point-in-
time recovery where the database declares ``wal_archiving`` with a ``wal_archive`` and ``base_backups``
(losing only the WAL not archived yet). A replica is no recovery path: it replays a ``DROP TABLE``
within seconds.
"""

from __future__ import annotations

from opsverify.durations import format_duration as fmt
from opsverify.profile.environment import Profile
from opsverify.profile.model import Database
from opsverify.profile.recovery import Drill

PITR_FIX = "wal_archiving with wal_archive and base_backups (point-in-time recovery)"


def pitr_undeclared(db: Database) -> str | None:
    """Why ``db`` declares no point-in-time recovery path, or None when it declares one."""
    if not db.wal_archiving or db.wal_archive is None:
        return f"{db.name} declares no wal_archive"
    if db.base_backups is None:
        return f"{db.name} declares no base_backups"
    return None


def rpo_warning(profile: Profile, drill: Drill) -> str | None:
    """The warning when the fastest recovery path ``drill`` declares loses more than its objective's RPO."""
    found = [o for o in profile.objectives if o.component == drill.objective]
    if not found:
        return None
    objective = found[0]
    source = profile.backup(drill.backup)
    if drill.database is not None and pitr_undeclared(profile.database(drill.database)) is None:
        return None  # point-in-time recovery loses only the WAL not archived yet: no static bound to compare
    if source.schedule <= objective.rpo:
        return None
    target = f"database {drill.database}" if drill.database is not None else f"redis {drill.redis}"
    fixes = [PITR_FIX] if drill.database is not None else []
    fixes += ["a more frequent backup", "or relax the RPO"]
    return (
        f"objective {objective.component}: RPO {fmt(objective.rpo)}, but the fastest declared recovery path of "
        f"{target} (drill {drill.name}) is backup {source.name} every {fmt(source.schedule)} "
        f"(declare {', '.join(fixes)})"
    )


def rpo_warnings(profile: Profile) -> list[str]:
    """One warning per drill whose fastest declared recovery path cannot meet its objective's RPO."""
    return [w for w in (rpo_warning(profile, d) for d in profile.drills) if w is not None]
