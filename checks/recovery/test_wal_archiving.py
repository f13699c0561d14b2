"""WAL archiving keeps the point-in-time recovery window current.

Runbook: PF-20 point-in-time recovery (needs every WAL segment archived), PF-47 the database RPO.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.durations import format_duration as fmt
from opsverify.probes.replication import ArchivedCopy, ArchiverState
from opsverify.profile import Database, Profile

pytestmark = [pytest.mark.recovery, pytest.mark.daily, pytest.mark.dr]
ArchiverOf = Callable[[Database], ArchiverState]


def _read(db: Database, archiver_of: ArchiverOf) -> ArchiverState:
    __tracebackhide__ = True
    state = archiver_of(db)
    expect(state.error is None, f"cannot read pg_stat_archiver of {db.name} at {state.address}: {state.error}")
    expect(state.archive_mode != "off", f"WAL archiving is off on {db.name} ({state.address}): set archive_mode = on")
    return state


@pytest.mark.runbook("PF-20", "PF-47")
def test_wal_archive_lag_is_within_rpo(
    archived_database: Database, archiver_of: ArchiverOf, profile: Profile, evidence: Recorder
) -> None:
    """PF-20/PF-47: no finished WAL segment waits longer than the database RPO to be archived."""
    state = _read(archived_database, archiver_of)
    expect(state.lag_error is None,
           f"cannot measure the WAL archive lag of {archived_database.name} at {state.address}: {state.lag_error}")
    rpo = profile.objective("database").rpo
    evidence.record(last_archived_wal=state.last_archived_wal, archived_count=state.archived_count,
                    waiting_segments=state.waiting, lag=fmt(state.lag), rpo=fmt(rpo))
    expect(
        state.lag <= rpo,
        f"WAL archiving of {archived_database.name} lags {fmt(state.lag)} "
        f"(database RPO {fmt(rpo)}): {state.waiting} finished WAL segment(s) wait, last archived "
        f"{state.last_archived_wal or 'nothing'} at {state.address}",
    )


@pytest.mark.runbook("PF-20")
def test_wal_archiving_is_not_failing(archived_database: Database, archiver_of: ArchiverOf, evidence: Recorder) -> None:
    """PF-20: the archiver's last attempt succeeded (no failure newer than the last success)."""
    state = _read(archived_database, archiver_of)
    evidence.record(last_failed_wal=state.last_failed_wal or "none")
    expect(
        state.failing_since is None,
        f"WAL archiving of {archived_database.name} has been failing for "
        f"{fmt(state.failing_since) if state.failing_since else ''} (last failed {state.last_failed_wal}): "
        "check archive_command and the archive's free space",
    )


@pytest.mark.runbook("PF-20")
def test_last_archived_segment_is_in_the_archive(
    wal_archive_database: Database,
    archiver_of: ArchiverOf,
    archived_copy_of: Callable[[Database], ArchivedCopy | None],
    evidence: Recorder,
) -> None:
    """PF-20: the segment ``pg_stat_archiver`` last reports archived is in ``wal_archive``, whole.

    ``archive_command = '/bin/true'`` (or a copy to the wrong place) reports every segment archived
    while the archive stays empty: only the archive itself tells. A plain segment must hold
    ``wal_segment_size`` bytes; a compressed one must be of its suffix's format (a gzip one must
    inflate to the segment size).
    """
    db = wal_archive_database
    state = _read(db, archiver_of)
    copy = archived_copy_of(db)
    assert copy is not None
    evidence.record(archive=str(copy.archive), last_archived_wal=copy.name or "nothing yet",
                    found=str(copy.path) if copy.path else "no", size=copy.size, segment_size=state.segment_size)
    what = f"WAL segment {copy.name} that {db.name} ({state.address}) reports archived" if copy.name else (
        f"the WAL archive of {db.name} ({state.address})")
    expect(
        copy.problem is None,
        f"{what} {copy.problem}: {copy.fix}",
    )

