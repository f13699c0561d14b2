"""Standbys stream from their primary and lag by less than the RPO; one can be promoted.

Runbook: QP-15 quarterly failover test (in sync and promotable), PF-47 the database RPO (replica lag).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.durations import format_duration as fmt
from opsverify.probes.replication import ReplicaState
from opsverify.profile import Profile, Replica
from opsverify.restore.failover import Promotion

pytestmark = [pytest.mark.recovery, pytest.mark.dr]
StateOf = Callable[[Replica], ReplicaState]


def _standby(replica: Replica, state_of: StateOf) -> ReplicaState:
    __tracebackhide__ = True
    state = state_of(replica)
    expect(state.error is None, f"replica {replica.name} at {state.address} did not answer: {state.error}")
    expect(state.in_recovery, f"replica {replica.name} at {state.address} is not in recovery: it was promoted")
    return state


@pytest.mark.daily
@pytest.mark.runbook("QP-15")
def test_replica_streams_from_its_primary(replica: Replica, replica_state_of: StateOf, evidence: Recorder) -> None:
    """QP-15: the standby is in recovery and its WAL receiver is streaming."""
    state = _standby(replica, replica_state_of)
    evidence.record(receiver=state.receiver or "none", in_recovery=state.in_recovery)
    expect(
        state.receiver == "streaming",
        f"replica {replica.name} at {state.address} is not streaming from {replica.primary} "
        f"(WAL receiver: {state.receiver or 'none'})",
    )


@pytest.mark.daily
@pytest.mark.runbook("QP-15", "PF-47")
def test_replica_lag_is_within_rpo(
    replica: Replica, replica_state_of: StateOf, profile: Profile, evidence: Recorder
) -> None:
    """QP-15/PF-47: replay lag (zero when all received WAL is replayed) is under ``max_lag`` or the database RPO."""
    state = _standby(replica, replica_state_of)
    limit = replica.max_lag or profile.objective("database").rpo
    lag = state.lag
    evidence.record(lag=fmt(lag) if lag is not None else "unknown", max_lag=fmt(limit), caught_up=state.caught_up)
    expect(lag is not None, f"replica {replica.name} has replayed nothing yet: lag unknown at {state.address}")
    assert lag is not None
    expect(lag <= limit, f"replica {replica.name} lags {fmt(lag)} behind {replica.primary} (max {fmt(limit)})")


@pytest.mark.quarterly
@pytest.mark.runbook("QP-15")
def test_promoted_copy_accepts_writes_on_a_new_timeline(
    replica: Replica, promoted_replica: Promotion, evidence: Recorder
) -> None:
    """QP-15: a standby built from the primary promotes, moves to a new timeline and accepts a write."""
    evidence.record(primary_timeline=promoted_replica.primary_timeline, timeline=promoted_replica.timeline,
                    promotion_took=fmt(promoted_replica.took), standby_dir=promoted_replica.directory)
    expect(promoted_replica.error is None, f"promotion drill for {replica.name} failed: {promoted_replica.error}")
    expect(
        promoted_replica.timeline > promoted_replica.primary_timeline,
        f"promoted copy of {replica.primary} stayed on timeline {promoted_replica.timeline}",
    )
    expect(
        promoted_replica.write_error is None,
        f"promoted copy of {replica.primary} refused a write: {promoted_replica.write_error}",
    )
