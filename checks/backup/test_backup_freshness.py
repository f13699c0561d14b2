"""Every backup series is fresh and on schedule.

Runbook, by the source's kind: PF-10 full system backup verification (every kind); PostgreSQL
dumps PF-04 daily backup verification, PF-16 the daily backup script, QP-18 the backup cron;
config exports PF-23/QP-20; model and results archives PF-24/QP-21; roles and grants
(``pg_dumpall --globals-only``, which no runbook job makes) PF-10 only. A Redis RDB series verifies
PF-10 only (PF-21 is BGSAVE and the RDB's validity, checked by the integrity and job checks).
"""

from __future__ import annotations

import itertools
from datetime import datetime

import pytest

from fixtures.backups import CatalogOf, listed
from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.durations import format_duration as fmt
from opsverify.profile import BackupSource

pytestmark = [pytest.mark.backup, pytest.mark.daily]
GAP_TOLERANCE = 1.5  # a gap up to 1.5 x the schedule is jitter; beyond, a run was missed
FRESH = {  # runbook IDs by the source's kind
    "postgres": ("PF-04", "PF-10", "PF-16", "QP-18"),
    "redis": ("PF-10",),
    "config": ("PF-10", "PF-23", "QP-20"),
    "archive": ("PF-10", "PF-24", "QP-21"),
    "globals": ("PF-10",),
}
ON_SCHEDULE = {  # as FRESH without PF-04, which is about the newest backup only
    "postgres": ("PF-10", "PF-16", "QP-18"),
    "redis": ("PF-10",),
    "config": ("PF-10", "PF-23", "QP-20"),
    "archive": ("PF-10", "PF-24", "QP-21"),
    "globals": ("PF-10",),
}


@pytest.mark.runbook(by_kind=FRESH)
def test_newest_backup_is_younger_than_rpo(
    scheduled_source: BackupSource, catalog_of: CatalogOf, now: datetime, evidence: Recorder
) -> None:
    """PF-04/QP-18 (and FRESH by kind): the newest backup exists and is younger than the source's RPO."""
    backup_source = scheduled_source  # on_demand sources (manual dumps) have no RPO or schedule
    newest = listed(backup_source, catalog_of).files[0]
    age = newest.age(now)
    evidence.record(newest=newest.location, age=fmt(age), rpo=fmt(backup_source.rpo), time_from=newest.time_from)
    evidence.metric(backup_age_seconds=age.total_seconds(), backup_rpo_seconds=backup_source.rpo.total_seconds())
    expect(
        age <= backup_source.rpo,
        f"newest backup of {backup_source.name} is {fmt(age)} old (RPO {fmt(backup_source.rpo)}): {newest.location}",
    )


@pytest.mark.runbook(by_kind=ON_SCHEDULE)
def test_backups_follow_their_schedule(
    scheduled_source: BackupSource, catalog_of: CatalogOf, now: datetime, evidence: Recorder
) -> None:
    """PF-16: inside the retention window no two consecutive backups are further apart than the schedule allows.

    A missed run leaves the series stale for a while, so its kind's freshness IDs (ON_SCHEDULE) apply too.
    """
    backup_source = scheduled_source
    files = listed(backup_source, catalog_of).within(backup_source.retention, now)
    if len(files) < 2:
        pytest.skip(f"{backup_source.name} has {len(files)} backup(s) inside its retention: no gap to measure")
    gaps = [(older.age(now) - newer.age(now), newer, older) for newer, older in itertools.pairwise(files)]
    widest = max(gaps, key=lambda g: g[0])
    evidence.record(backups=len(files), schedule=fmt(backup_source.schedule), widest_gap=fmt(widest[0]))
    gap, newer, older = widest
    expect(
        gap <= backup_source.schedule * GAP_TOLERANCE,
        f"backups of {backup_source.name} skip {fmt(gap)} between {older.name} and {newer.name} "
        f"(schedule {fmt(backup_source.schedule)}): a backup run was missed",
    )
