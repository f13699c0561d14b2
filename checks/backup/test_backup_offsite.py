"""Each recent local backup has an offsite copy of equal size and hash that can be read in minutes,
and every backup kept in S3 is restored by a drill.

Runbook, by the source's kind: QP-18 ``aws s3 cp backup.sql.gz s3://quantum-planner-backups/database/``
(PostgreSQL dumps), QP-21 ``aws s3 sync backups/ s3://quantum-planner-backups/application/`` (model
archives and config copies). No runbook procedure copies Redis RDBs or globals files offsite.
A backup source in S3 is proven restorable only by a drill (PF-11/QP-14 databases, PF-22 Redis); the check
that one is declared reads the profile only and verifies no procedure: it carries no runbook ID.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.backups.offsite import OffsiteParity
from opsverify.profile import BackupSource, Profile

pytestmark = [pytest.mark.backup, pytest.mark.daily]


OFFSITE = {"postgres": ("QP-18",), "redis": (), "config": ("QP-21",), "archive": ("QP-21",), "globals": ()}


@pytest.mark.runbook(by_kind=OFFSITE)
def test_recent_backups_have_equal_offsite_copies(
    offsite_backup_source: BackupSource, offsite_of: Callable[[BackupSource], OffsiteParity], evidence: Recorder
) -> None:
    """QP-18/QP-21: every local backup younger than ``offsite.recent`` is in S3 with the same size and ETag,
    in a storage class it can be downloaded from now (not GLACIER or DEEP_ARCHIVE, which thaw for hours first)."""
    parity = offsite_of(offsite_backup_source)
    expect(parity.error is None, f"offsite copies of {offsite_backup_source.name}: {parity.error}")
    problems = parity.problems
    evidence.record(offsite=parity.url, compared=len(parity.copies), mismatched=len(problems))
    if problems:
        first = problems[0]
        fail(f"{len(problems)} of {len(parity.copies)} recent backups of {offsite_backup_source.name} lack an "
             f"equal copy in {parity.url}, first {first.name}: {first.problem}")
    cold = parity.cold
    evidence.record(cold=len(cold))
    if cold:
        first = cold[0]
        fail(f"{len(cold)} of {len(parity.copies)} recent offsite copies of {offsite_backup_source.name} in "
             f"{parity.url} are in storage class {first.storage_class}, first {first.name}: a restore from them takes "
             "hours (an S3 restore request must thaw each object first): keep recent copies in STANDARD or "
             "STANDARD_IA, or move them to GLACIER only after offsite.recent")


@pytest.mark.runbook(by_kind={"postgres": (), "redis": ()})  # reads the profile: the drill verifies PF-11/PF-22
def test_backup_source_in_s3_is_restored_by_a_drill(
    s3_backup_source: BackupSource, profile: Profile, evidence: Recorder
) -> None:
    """A database or Redis backup source in S3 is named by a restore drill (``drills: backup:``); the profile only,
    no procedure: the drill itself (checks/restore) verifies PF-11/QP-14/PF-22."""
    drills = [d.name for d in profile.drills if d.backup == s3_backup_source.name]
    evidence.record(path=s3_backup_source.path, drills=",".join(drills) or "-")
    expect(
        bool(drills),
        f"backup source {s3_backup_source.name} in {s3_backup_source.path} is never drilled: add a drill "
        f"(drills: - backup: {s3_backup_source.name}) so a restore from S3 is proven, not assumed",
    )
