"""Database growth from the run history (PF-26 "growth within bounds", PF-39 growth rate and 90-day
projection; the projection under ``max_database_size`` is PF-15's forecast for the database).

The sizes earlier runs recorded (``database_size_bytes`` of ``test_database_size_is_under_its_threshold``)
within the database's ``growth_window`` and this run's size give a least-squares line; its rise per 30
days, as a share of the line's value at the window's start, is the growth. Too little history skips,
naming what is recorded and what is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from fixtures.expect import expect
from fixtures.history import about, recorded_trend
from fixtures.reporting import Recorder
from opsverify.backups.directory import human_size
from opsverify.durations import format_duration as fmt
from opsverify.probes.pghealth import PgHealth
from opsverify.profile import Database, Profile
from opsverify.reporting.history import HistoryStore
from opsverify.reporting.trend import Trend

pytestmark = [pytest.mark.maintenance, pytest.mark.weekly]
HealthOf = Callable[[Database], PgHealth]
METRIC = "database_size_bytes"
HORIZON = timedelta(days=90)


def size_trend(
    database: Database, pg_health_of: HealthOf, history: HistoryStore, profile: Profile, evidence: Recorder
) -> tuple[Trend, str]:
    """The database's size trend over its growth_window (this run's size last) and the message prefix."""
    health = pg_health_of(database)
    where = f"database {database.name} at {health.address}"
    expect(health.is_read, f"{where}: cannot read its size as role {health.role}: {health.error}")
    window = database.maintenance.growth_window
    trend = recorded_trend(history, profile, METRIC, database.name, float(health.database_size), window, where)
    percent = trend.percent_per() or 0.0
    evidence.record(database_size=human_size(health.database_size), points=len(trend.samples),
                    span=about(trend.span), growth_window=fmt(window), growth_per_30d=f"{percent:.1f}%",
                    change_per_30d=human_size(round(trend.change_per())))
    evidence.metric(database_growth_percent_per_30d=percent)
    return trend, where


def fitted(trend: Trend, metric: str = METRIC) -> str:
    return (f"least squares over {len(trend.samples)} sizes in {about(trend.span)}; `opsverify history --metric "
            f"{metric}` shows them")


@pytest.mark.runbook("PF-26", "PF-39")
def test_database_growth_is_within_bounds(
    database: Database, pg_health_of: HealthOf, history: HistoryStore, profile: Profile, evidence: Recorder
) -> None:
    """PF-26/PF-39: the database's size grows at most ``max_growth_percent`` per 30 days (fitted over the sizes
    recorded within ``growth_window`` and this run's)."""
    trend, where = size_trend(database, pg_health_of, history, profile, evidence)
    limit = database.maintenance.max_growth_percent
    percent = trend.percent_per() or 0.0
    evidence.record(max_growth_percent=f"{limit:g}%")
    expect(percent <= limit,
           f"{where}: its size grows {percent:.0f}% per 30 days (+{human_size(round(trend.change_per()))}, "
           f"{fitted(trend)}), over max_growth_percent {limit:g}%: find the tables that grow, archive or delete "
           "old data, or raise the limit once the growth is planned for")


@pytest.mark.runbook("PF-39")  # PF-15 (capacity planning) is the hosts' row in INVENTORY.md: not claimed here
def test_database_size_in_90_days_stays_under_capacity(
    database: Database, pg_health_of: HealthOf, history: HistoryStore, profile: Profile, evidence: Recorder
) -> None:
    """PF-39 (the 90-day projection; PF-15's forecast for the database): the database's size projected 90 days
    ahead (its growth trend) stays under ``max_database_size`` (skipped, naming the field, when none is declared)."""
    limit = database.maintenance.max_database_size
    if limit is None:
        pytest.skip(f"database {database.name} declares no maintenance.max_database_size, the capacity its 90-day "
                    "projection is compared with: declare it to plan capacity (PF-15)")
    trend, where = size_trend(database, pg_health_of, history, profile, evidence)
    projected = max(0.0, trend.at(trend.last.time + HORIZON))
    evidence.record(projected_in_90d=human_size(round(projected)), max_database_size=human_size(limit))
    evidence.metric(database_size_projected_90d_bytes=projected)
    expect(projected <= limit,
           f"{where}: its size, {human_size(round(trend.last.value))} now and growing "
           f"{human_size(round(trend.change_per()))} per 30 days ({fitted(trend)}), reaches "
           f"{human_size(round(projected))} in 90 days, over max_database_size {human_size(limit)}: plan the capacity "
           "now (more disk, then a higher max_database_size), or archive old data")
