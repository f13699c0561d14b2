"""Base backups are recent: point-in-time recovery restores the newest and replays the WAL archived since.

Runbook: PF-20 point-in-time recovery.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.durations import format_duration as fmt
from opsverify.probes.replication import BaseBackups
from opsverify.profile import Database

pytestmark = [pytest.mark.recovery, pytest.mark.daily, pytest.mark.dr]


@pytest.mark.runbook("PF-20")
def test_newest_base_backup_is_recent(
    base_backup_database: Database,
    base_backups_of: Callable[[Database], BaseBackups | None],
    now: datetime,
    evidence: Recorder,
) -> None:
    """PF-20: the newest base backup in ``base_backups`` is younger than ``base_backup_max_age`` (default 7d).

    Only a complete one counts: a subdirectory holding ``backup_manifest`` (pg_basebackup writes it
    last), dated by it. One with ``backup_label`` or ``base.tar*`` but no manifest (a killed
    pg_basebackup, or ``--no-manifest``) is recorded as incomplete and ignored. Contents are not
    verified here.
    """
    db = base_backup_database
    found = base_backups_of(db)
    assert found is not None
    limit = db.base_backup_max_age
    expect(found.error is None, f"cannot list the base backups of {db.name}: {found.error}")
    evidence.record(incomplete=", ".join(found.incomplete) or "none")
    ignored = f" ({', '.join(found.incomplete)} incomplete: no backup_manifest)" if found.incomplete else ""
    expect(found.taken is not None,
           f"no complete base backup of {db.name} in {found.directory}{ignored}: run pg_basebackup -D "
           f"{found.directory}/NAME (PF-20)")
    assert found.taken is not None
    age = now - found.taken
    evidence.record(directory=str(found.directory), newest=found.newest, age=fmt(age), max_age=fmt(limit),
                    base_backups=found.count)
    expect(
        age <= limit,
        f"the newest base backup of {db.name} ({found.directory}/{found.newest}) is {fmt(age)} old "
        f"(max {fmt(limit)}){ignored}: run pg_basebackup; point-in-time recovery replays every WAL segment since it",
    )
