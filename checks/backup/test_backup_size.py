"""The newest backup is not empty and has not shrunk against its predecessors.

Runbook, by the source's kind: PF-10 every backup kind present and intact; PostgreSQL dumps
PF-04 "non-empty", QP-19 backup verification (``ls -lh``: size sane vs history); model and results
archives PF-24/QP-21 "size sane".
"""

from __future__ import annotations

import statistics

import pytest

from fixtures.backups import CatalogOf, listed, none_taken
from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.profile import BackupSource

pytestmark = [pytest.mark.backup, pytest.mark.daily]
HISTORY = 7  # how many earlier backups the newest is compared with
ARCHIVE = ("PF-10", "PF-24", "QP-21")
NOT_EMPTY = {
    "postgres": ("PF-04", "PF-10"), "redis": ("PF-10",), "config": ("PF-10",), "archive": ARCHIVE, "globals": ("PF-10",)
}
NOT_SHRUNK = {
    "postgres": ("PF-10", "QP-19"), "redis": ("PF-10",), "config": ("PF-10",), "archive": ARCHIVE, "globals": ("PF-10",)
}


@pytest.mark.runbook(by_kind=NOT_EMPTY)
def test_newest_backup_is_not_empty(backup_source: BackupSource, catalog_of: CatalogOf, evidence: Recorder) -> None:
    """PF-04/PF-10 "present" (NOT_EMPTY by kind): the newest backup holds bytes."""
    catalog = listed(backup_source, catalog_of)
    if none_taken(backup_source, catalog, evidence):
        return
    newest = catalog.files[0]
    evidence.record(newest=newest.location, size_bytes=newest.size)
    evidence.metric(backup_size_bytes=newest.size)
    expect(newest.size > 0, f"newest backup of {backup_source.name} is empty (0 bytes): {newest.location}")


@pytest.mark.runbook(by_kind=NOT_SHRUNK)
def test_newest_backup_has_not_shrunk(backup_source: BackupSource, catalog_of: CatalogOf, evidence: Recorder) -> None:
    """QP-19/PF-24 (NOT_SHRUNK by kind): the newest is at most ``max_shrink_percent`` under the earlier ones' median."""
    files = listed(backup_source, catalog_of).files
    if none_taken(backup_source, listed(backup_source, catalog_of), evidence):
        return
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
