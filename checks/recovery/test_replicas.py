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
    """QP-15: the standby is in recovery and its WAL receiver is streaming.

    A role without ``pg_read_all_stats`` sees a running WAL receiver's pid but not its status: that
    fails naming the grant, never as "not streaming".
    """
    state = _standby(replica, replica_state_of)
    evidence.record(receiver=state.receiver or ("hidden" if state.receiver_hidden else "none"),
                    in_recovery=state.in_recovery)
    expect(
        state.receiver_hidden is None,
        f"cannot tell whether replica {replica.name} at {state.address} streams from {replica.primary}: "
        f"{state.receiver_hidden}",
    )
    expect(
        state.receiver == "streaming",
        f"replica {replica.name} at {state.address} is not streaming from {replica.primary} "
        f"(WAL receiver: {state.receiver or 'none'})",
    )


@pytest.mark.daily
@pytest.mark.runbook("QP-15")
def test_replica_follows_its_declared_primary(replica: Replica, replica_state_of: StateOf, evidence: Recorder) -> None:
    """QP-15: the standby is a copy of its declared primary (same ``system_identifier``) on the primary's timeline.

    A standby streaming from another cluster (a staging primary, an old cluster left running)
    streams and lags by nothing, yet holds none of the declared primary's data.
    """
    state = _standby(replica, replica_state_of)
    evidence.record(system_identifier=state.system_identifier, timeline=state.timeline,
                    primary_system_identifier=state.primary_system_identifier, primary_timeline=state.primary_timeline)
    expect(
        state.primary_system_identifier is not None,
        f"cannot read the system identifier of {replica.primary} ({state.primary_address}), primary of replica "
        f"{replica.name}: {state.primary_error}",
    )
    expect(
        state.system_identifier == state.primary_system_identifier,
        f"replica {replica.name} at {state.address} is a copy of database system {state.system_identifier}, not of "
        f"{replica.primary} (system {state.primary_system_identifier} at {state.primary_address}): "
        "rebuild it from its primary, or fix its primary_conninfo or the profile's primary",
    )
    expect(
        state.primary_error is None,
        f"cannot read the timeline of {replica.primary} ({state.primary_address}), primary of replica "
        f"{replica.name}: {state.primary_error}",
    )
    expect(
        state.receiver_hidden is None,
        f"cannot read the timeline replica {replica.name} at {state.address} receives: {state.receiver_hidden}",
    )
    expect(
        state.timeline == state.primary_timeline,
        f"replica {replica.name} at {state.address} is on timeline {state.timeline}, {replica.primary} on "
        f"{state.primary_timeline}: it does not follow the current primary (set recovery_target_timeline = "
        "'latest', or rebuild it)",
    )


@pytest.mark.daily
@pytest.mark.runbook("QP-15", "PF-47")
def test_replica_lag_is_within_rpo(
    replica: Replica, replica_state_of: StateOf, profile: Profile, evidence: Recorder
) -> None:
    """QP-15/PF-47: measured against the primary's flushed WAL, the standby lags less than ``max_lag`` (or the RPO).

    Lag is 0 when it has replayed all the primary had flushed; otherwise the time since the last
    transaction it replayed (the commits after it are missing there): see ``ReplicaState``.
    """
    state = _standby(replica, replica_state_of)
    limit = replica.max_lag or profile.objective("database").rpo
    expect(
        state.primary_error is None,
        f"cannot read the WAL position of {replica.primary} ({state.primary_address}), primary of replica "
        f"{replica.name}: {state.primary_error}",
    )
    expect(
        state.system_identifier == state.primary_system_identifier,
        f"replica {replica.name} is no copy of {replica.primary}: its lag behind it cannot be measured "
        "(see test_replica_follows_its_declared_primary)",
    )
    lag = state.lag
    evidence.record(lag=fmt(lag) if lag is not None else "unknown", behind_bytes=state.behind_bytes,
                    max_lag=fmt(limit), last_replayed_transaction_age=fmt(state.replay_age) if state.replay_age
                    is not None else "none since start")
    expect(
        lag is not None,
        f"replica {replica.name} is {state.behind_bytes} bytes of WAL behind {replica.primary} and has replayed "
        f"no transaction since it started: lag unknown at {state.address}",
    )
    assert lag is not None
    expect(
        lag <= limit,
        f"replica {replica.name} lags {fmt(lag)} behind {replica.primary} ({state.behind_bytes} bytes of WAL not "
        f"replayed; max {fmt(limit)}): check its WAL receiver and pg_stat_replication on {replica.primary}",
    )


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
