"""Databases accept a session within the connect budget; the role opsverify connects with cannot write.

Runbook: QP-29 health script, "Database connection healthy" (``pg_isready``/``psql -c 'SELECT 1'``).
The read-only role is opsverify's own safety (it connects to production with the declared role):
no runbook procedure verifies it, so that check names none.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.durations import format_duration
from opsverify.probes.postgres import PgSession, RoleWrites
from opsverify.profile import Database

pytestmark = [pytest.mark.health, pytest.mark.daily, pytest.mark.dr]
SessionOf = Callable[[Database], PgSession]
PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_$]*$")


def sql_name(name: str) -> str:
    """``name`` as an SQL identifier (double-quoted when it is not a plain lower-case name)."""
    return name if PLAIN_NAME.match(name) else '"' + name.replace('"', '""') + '"'


@pytest.mark.runbook("QP-29")
def test_database_accepts_a_session(database: Database, pg_session_of: SessionOf, evidence: Recorder) -> None:
    """QP-29: a session opens and the server answers ``SELECT 1``."""
    session = pg_session_of(database)
    evidence.record(address=session.address, server_version=session.server_version)
    expect(session.is_connected, f"database {database.name} at {session.address} refused a session: {session.error}")


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


@pytest.mark.security
@pytest.mark.runbook(by_kind={"postgres": ()})
def test_database_role_cannot_write(
    database: Database, role_writes_of: Callable[[Database], RoleWrites], evidence: Recorder
) -> None:
    """The declared role is no superuser, not in pg_write_all_data, holds no INSERT/UPDATE/DELETE/TRUNCATE on a
    table outside the system schemas and cannot CREATE in any schema: the server's answer, not the session's setting.
    """
    found = role_writes_of(database)
    role, grantee = database.user, sql_name(database.user)
    expect(found.is_read, f"database {database.name} at {found.address}: cannot read the privileges of role "
           f"{role}: {found.error}")
    evidence.record(
        role=role, superuser=found.superuser, pg_write_all_data=found.writes_all_data,
        table_writes=" ".join(found.table_writes[:5]), create_schemas=" ".join(found.create_schemas[:5]),
        writes_through=" ".join(found.writes_all_through or found.table_write_through or found.create_through) or None,
    )
    where = f"database {database.name} at {found.address}: role {role}"
    if found.superuser:
        fail(f"{where} is a superuser; opsverify needs a role that cannot write (declare one, or ALTER ROLE {grantee} "
             "NOSUPERUSER)")
    if found.writes_all_data:
        source, fix = revoke("pg_write_all_data", found.writes_all_through, grantee)
        fail(f"{where} is a member of pg_write_all_data{source}; opsverify needs a role that cannot write ({fix})")
    if found.table_writes:
        privilege, table = found.table_writes[0].split(" ", 1)
        source, fix = revoke(f"{privilege} ON {table}", found.table_write_through, grantee)
        fail(f"{where} holds {privilege} on {table}{source}; opsverify needs a role that cannot write ({fix})")
    if found.create_schemas:
        schema = found.create_schemas[0]
        source, fix = revoke(f"CREATE ON SCHEMA {schema}", found.create_through, grantee)
        fail(f"{where} can CREATE in schema {schema}{source}; opsverify needs a role that cannot write ({fix})")


def revoke(what: str, through: tuple[str, ...], grantee: str) -> tuple[str, str]:
    """Where a privilege comes from (`` through PUBLIC``, `` through role g``; nothing when granted to the role
    itself) and the REVOKE that removes it: a REVOKE from the role leaves what PUBLIC or a group role holds."""
    holders = list(through) or [grantee]
    others = [h for h in holders if h != grantee]
    if not others:
        return "", f"REVOKE {what} FROM {grantee}"
    named = [h if h == "PUBLIC" else f"role {h}" for h in others]
    groups = [h for h in others if h != "PUBLIC"]
    out_of = f", or take {grantee} out of {' and '.join(groups)}" if groups and "PUBLIC" not in others else ""
    return f" through {' and '.join(named)}", f"REVOKE {what} FROM {', '.join(holders)}{out_of}"
