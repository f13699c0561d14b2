"""Each recent local backup has an offsite copy of equal size and hash.

Runbook, by the source's kind: QP-18 ``aws s3 cp backup.sql.gz s3://quantum-planner-backups/database/``
(PostgreSQL dumps), QP-21 ``aws s3 sync backups/ s3://quantum-planner-backups/application/`` (model
archives and config copies). No runbook procedure copies Redis RDBs or globals files offsite.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.backups.offsite import OffsiteParity
from opsverify.profile import BackupSource

pytestmark = [pytest.mark.backup, pytest.mark.daily]


OFFSITE = {"postgres": ("QP-18",), "redis": (), "config": ("QP-21",), "archive": ("QP-21",), "globals": ()}


@pytest.mark.runbook(by_kind=OFFSITE)
def test_recent_backups_have_equal_offsite_copies(
    offsite_backup_source: BackupSource, offsite_of: Callable[[BackupSource], OffsiteParity], evidence: Recorder
) -> None:
    """QP-18/QP-21: every local backup younger than ``offsite.recent`` is in S3 with the same size and ETag."""
    parity = offsite_of(offsite_backup_source)
    expect(parity.error is None, f"offsite copies of {offsite_backup_source.name}: {parity.error}")
    problems = parity.problems
    evidence.record(offsite=parity.url, compared=len(parity.copies), mismatched=len(problems))
    if problems:
        first = problems[0]
        fail(f"{len(problems)} of {len(parity.copies)} recent backups of {offsite_backup_source.name} lack an "
             f"equal copy in {parity.url}, first {first.name}: {first.problem}")
