"""The newest backup's size grows within bounds, by the run history (PF-39 for database dumps: growth rate
from history; no procedure of the other kinds asks for it, so they carry none).

The sizes earlier runs recorded (``backup_size_bytes`` of ``test_newest_backup_is_not_empty``) within the
source's ``growth_window`` and the newest backup's size now give a least-squares line; its rise per 30 days,
as a share of the line's value at the window's start, is compared with ``max_growth_percent``.
"""

from __future__ import annotations

import pytest

from fixtures.backups import CatalogOf, listed, none_taken
from fixtures.expect import expect
from fixtures.history import about, recorded_trend
from fixtures.reporting import Recorder
from opsverify.backups.directory import human_size
from opsverify.durations import format_duration as fmt
from opsverify.profile import BackupSource, Profile
from opsverify.reporting.history import HistoryStore

pytestmark = [pytest.mark.backup, pytest.mark.weekly]
GROWTH = {"postgres": ("PF-39",), "redis": (), "config": (), "archive": (), "globals": ()}


@pytest.mark.runbook(by_kind=GROWTH)
def test_backup_size_growth_is_within_bounds(
    backup_source: BackupSource, catalog_of: CatalogOf, history: HistoryStore, profile: Profile, evidence: Recorder
) -> None:
    """PF-39 (dumps): the newest backup's size grows at most ``max_growth_percent`` per 30 days (fitted over the
    sizes recorded within ``growth_window`` and the newest's)."""
    catalog = listed(backup_source, catalog_of)
    if none_taken(backup_source, catalog, evidence):
        return
    newest = catalog.files[0]
    window, limit = backup_source.growth_window, backup_source.max_growth_percent
    where = f"backups of {backup_source.name}"
    trend = recorded_trend(history, profile, "backup_size_bytes", backup_source.name, float(newest.size), window,
                           where)
    percent = trend.percent_per() or 0.0
    evidence.record(newest=newest.location, size=human_size(newest.size), points=len(trend.samples),
                    span=about(trend.span), growth_window=fmt(window), growth_per_30d=f"{percent:.1f}%",
                    max_growth_percent=f"{limit:g}%")
    evidence.metric(backup_growth_percent_per_30d=percent)
    expect(percent <= limit,
           f"{where}: the newest backup's size grows {percent:.0f}% per 30 days "
           f"(+{human_size(round(trend.change_per()))}, least squares over {len(trend.samples)} sizes in "
           f"{about(trend.span)}; `opsverify history --metric backup_size_bytes` shows them), over max_growth_percent "
           f"{limit:g}%: find what the backup holds now that it did not (the database's growth, a table or files "
           f"added to it), then plan the storage or raise the limit: {newest.location}")
