"""The newest backup is not empty and has not shrunk against its predecessors.

Runbook: QP-19 backup verification (``ls -lh``: size sane vs history), PF-04 "non-empty",
PF-24 model and results archives.
"""

from __future__ import annotations

import statistics

import pytest

from fixtures.backups import CatalogOf, listed
from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.profile import BackupSource

pytestmark = [pytest.mark.backup, pytest.mark.daily, pytest.mark.runbook("PF-04", "QP-19", "PF-24")]
HISTORY = 7  # how many earlier backups the newest is compared with


def test_newest_backup_is_not_empty(backup_source: BackupSource, catalog_of: CatalogOf, evidence: Recorder) -> None:
    """PF-04: the newest backup holds bytes."""
    newest = listed(backup_source, catalog_of).files[0]
    evidence.record(newest=newest.location, size_bytes=newest.size)
    expect(newest.size > 0, f"newest backup of {backup_source.name} is empty (0 bytes): {newest.location}")


def test_newest_backup_has_not_shrunk(backup_source: BackupSource, catalog_of: CatalogOf, evidence: Recorder) -> None:
    """QP-19: the newest backup is at most ``max_shrink_percent`` smaller than the median of the previous ones."""
    files = listed(backup_source, catalog_of).files
    newest, history = files[0], [f.size for f in files[1 : HISTORY + 1]]
    if not history:
        pytest.skip(f"{backup_source.name} has a single backup: no history to compare its size with")
    median = statistics.median(history)
    shrink = 100.0 * (1 - newest.size / median) if median else 0.0
    evidence.record(size_bytes=newest.size, median_bytes=int(median), shrink_percent=f"{shrink:.1f}")
    evidence.record(max_shrink_percent=backup_source.max_shrink_percent)
    expect(
        shrink <= backup_source.max_shrink_percent,
        f"newest backup of {backup_source.name} is {shrink:.0f}% smaller than the median of the previous "
        f"{len(history)} ({newest.size} vs {int(median)} bytes, limit {backup_source.max_shrink_percent:g}%): "
        f"{newest.location}",
    )
