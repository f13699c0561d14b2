"""No inactive replication slot holds back WAL on a primary (QP-15).

A slot keeps every WAL segment its consumer has not confirmed. When the consumer is gone (a standby
that was rebuilt or decommissioned, a logical subscriber dropped without its slot) the slot stays
inactive and the primary keeps WAL for it forever, until its disk is full and it stops.

Runbook: QP-15 failover (a standby that stopped consuming leaves its slot inactive).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.probes.replication import SlotsState
from opsverify.profile import Database

pytestmark = [pytest.mark.recovery, pytest.mark.daily]


def _size(n: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


@pytest.mark.runbook("QP-15")
def test_no_inactive_slot_retains_wal(
    primary_database: Database, slots_of: Callable[[Database], SlotsState], evidence: Recorder
) -> None:
    """QP-15: every inactive replication slot holds back at most ``max_inactive_slot_wal`` (default max_wal_size)."""
    db = primary_database
    state = slots_of(db)
    expect(state.error is None, f"cannot read pg_replication_slots of {db.name} at {state.address}: {state.error}")
    limit = int(db.max_inactive_slot_wal) if db.max_inactive_slot_wal is not None else state.max_wal_size
    what = "max_inactive_slot_wal" if db.max_inactive_slot_wal is not None else "the server's max_wal_size"
    evidence.record(inactive_slots=", ".join(f"{s.name} ({_size(s.retained)})" for s in state.inactive) or "none",
                    max_retained=f"{_size(limit)} ({what})")
    over = [s for s in state.inactive if s.retained > limit]
    if over:
        worst = over[0]
        others = f" ({len(over) - 1} more inactive slot(s) over the limit)" if len(over) > 1 else ""
        fail(
            f"inactive {worst.kind} replication slot {worst.name} on {db.name} ({state.address}) holds back "
            f"{_size(worst.retained)} of WAL (max {_size(limit)}, {what}){others}: if nothing will use it again, "
            f"SELECT pg_drop_replication_slot('{worst.name}')",
        )
