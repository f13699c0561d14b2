"""PF-47: the restore time the drills recorded is not heading past the RTO.

The restore times (``restore_rto_seconds``) earlier drills of this profile recorded within the last
year give a least-squares line; projected 90 days past the last drill, it must stay inside the
drill's objective. The check reads the history only (it does not run a drill: the drill checks do,
and this run's time joins the history when the run ends). Too few drills skip, naming what is recorded.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from fixtures.expect import expect
from fixtures.history import about, recorded_trend
from fixtures.reporting import Recorder
from opsverify.durations import format_duration as fmt
from opsverify.profile import Drill, Profile
from opsverify.reporting.history import HistoryStore

pytestmark = [pytest.mark.recovery, pytest.mark.quarterly]  # not `dr`: it runs no drill
WINDOW = timedelta(days=365)  # quarterly drills: four a year
HORIZON = timedelta(days=90)


def seconds(value: float) -> str:
    return fmt(timedelta(seconds=max(0.0, value)))


@pytest.mark.runbook("PF-47")
def test_restore_time_trend_stays_inside_rto(
    drill: Drill, history: HistoryStore, profile: Profile, evidence: Recorder
) -> None:
    """PF-47: the drill's recorded restore times, projected 90 days past the last one, stay inside its RTO."""
    objective = profile.objective(drill.objective)
    trend = recorded_trend(history, profile, "restore_rto_seconds", drill.name, None, WINDOW, f"drill {drill.name}")
    projected = trend.at(trend.last.time + HORIZON)
    evidence.record(drills=len(trend.samples), span=about(trend.span), last_rto=seconds(trend.last.value),
                    change_per_30d=f"{trend.change_per():+.1f}s", projected_in_90d=seconds(projected),
                    rto_objective=fmt(objective.rto))
    evidence.metric(restore_rto_projected_90d_seconds=projected)
    rising = seconds(trend.change_per())
    expect(projected <= objective.rto.total_seconds(),
           f"drill {drill.name}: its restore time, {seconds(trend.last.value)} at the last drill "
           f"({trend.last.time:%Y-%m-%d}) and rising {rising} per 30 days (least squares over "
           f"{len(trend.samples)} drills in {about(trend.span)}; `opsverify history --metric restore_rto_seconds "
           f"--component {drill.name}` shows them), reaches {seconds(projected)} in 90 days, over the "
           f"{objective.component} RTO {fmt(objective.rto)}: make the restore faster (pg_restore -j, a nearer backup "
           "copy, less data to restore) before the next drill, or agree a longer RTO")
