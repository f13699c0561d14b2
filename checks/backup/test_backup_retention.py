"""Nothing older than the retention period remains.

Runbook: PF-16 ``find $BACKUP_DIR -name "backup_*.sql.gz" -mtime +30 -delete`` (30 days),
QP-18 ``find /backups/database -mtime +7 -delete`` (7 days locally). Both are PostgreSQL dump
series; no runbook procedure keeps a retention of Redis, config, archive or globals backups, so those
sources are checked against their declared retention without a runbook ID.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from fixtures.backups import CatalogOf
from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.durations import format_duration as fmt
from opsverify.profile import BackupSource

pytestmark = [pytest.mark.backup, pytest.mark.daily]


@pytest.mark.runbook(by_kind={"postgres": ("PF-16", "QP-18"), "redis": (), "config": (), "archive": (), "globals": ()})
def test_nothing_older_than_retention_remains(
    backup_source: BackupSource, catalog_of: CatalogOf, now: datetime, evidence: Recorder
) -> None:
    """PF-16/QP-18: every backup is younger than retention + 1 day + one schedule period.

    The slack is the cleanup's own: ``find -mtime +30`` deletes a file only once it is 31 whole
    days old, and the cleanup runs once per schedule period.
    """
    catalog = catalog_of(backup_source)
    expect(catalog.error is None, f"cannot list backups of {backup_source.name}: {catalog.error}")
    cleanup_period = timedelta(0) if backup_source.on_demand else backup_source.schedule  # no job: no period
    limit = backup_source.retention + timedelta(days=1) + cleanup_period
    stale = [f for f in catalog.files if f.age(now) > limit]
    oldest = catalog.files[-1] if catalog.files else None
    evidence.record(retention=fmt(backup_source.retention), oldest=fmt(oldest.age(now)) if oldest else "-")
    evidence.record(past_retention=len(stale))
    if stale:
        oldest = stale[-1]
        fail(f"{len(stale)} backup(s) of {backup_source.name} are past the {fmt(backup_source.retention)} "
             f"retention, oldest {oldest.name} ({fmt(oldest.age(now))} old): the cleanup step did not run")
