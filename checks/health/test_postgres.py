"""Databases accept a read-only session within the connect budget.

Runbook: QP-29 health script, "Database connection healthy" (``pg_isready``/``psql -c 'SELECT 1'``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.expect import expect
from fixtures.reporting import Recorder
from opsverify.durations import format_duration
from opsverify.probes.postgres import PgSession
from opsverify.profile import Database

pytestmark = [pytest.mark.health, pytest.mark.daily, pytest.mark.dr]
SessionOf = Callable[[Database], PgSession]


@pytest.mark.runbook("QP-29")
def test_database_accepts_read_only_session(database: Database, pg_session_of: SessionOf, evidence: Recorder) -> None:
    """QP-29: a session opens, answers ``SELECT 1`` and is read-only."""
    session = pg_session_of(database)
    evidence.record(address=session.address, server_version=session.server_version, read_only=session.read_only)
    expect(session.is_connected, f"database {database.name} at {session.address} refused a session: {session.error}")
    expect(session.read_only, f"database {database.name} session is not read-only (default_transaction_read_only)")


@pytest.mark.runbook("QP-29")
def test_database_connects_within_budget(database: Database, pg_session_of: SessionOf, evidence: Recorder) -> None:
    """QP-29: opening the session takes no longer than ``connect_budget``."""
    session = pg_session_of(database)
    evidence.record(latency=format_duration(session.latency), budget=format_duration(database.connect_budget))
    expect(session.is_connected, f"database {database.name} at {session.address} refused a session: {session.error}")
    expect(
        session.latency <= database.connect_budget,
        f"database {database.name} took {format_duration(session.latency)} to open a session "
        f"(budget {format_duration(database.connect_budget)}) at {session.address}",
    )
