"""The database half of the data lifecycle (issue 11): QP-23 (old jobs, temporary tables) and QP-31 (retention).

Per database named by the profile's ``lifecycle`` section, one read-only session (as the database's
monitoring ``user``, every query with the ``timeouts.request`` statement timeout) counts finished
jobs older than their ``max_age``, tables matching a temporary-table glob, and personal-data rows
past their ``retention``. A declared table or column that does not exist fails naming it; a table
the role may not read skips naming the GRANT SELECT it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.backups.directory import human_size
from opsverify.durations import format_duration
from opsverify.probes.lifecycle import LifecycleFacts, StaleRows
from opsverify.profile.maintenance import JobTable, PersonalData, TempTables

pytestmark = [pytest.mark.maintenance, pytest.mark.monthly]
Lifecycle = Callable[[str], LifecycleFacts]


def age(value: timedelta) -> str:
    """Whole days from a day on (``200d``), else the compact form (``5h30m``)."""
    return f"{value.days}d" if value >= timedelta(days=1) else format_duration(value)


def _read(facts: LifecycleFacts, where: str) -> None:
    expect(facts.is_read, f"{where}: cannot read it as role {facts.role}: {facts.error}")


def _judged(rows: StaleRows | None, where: str, part: str, role: str) -> StaleRows:
    """The item's rows; a missing table or column fails, a refused SELECT skips naming the grant."""
    if rows is None:
        fail(f"{where}: the lifecycle probe did not read it")
    if rows.missing_grant:
        pytest.skip(f"{where}: role {role} may not read {rows.table}: {rows.missing_grant}")
    if rows.error:
        fail(f"{where}: {rows.error}: declare the table and columns it has in lifecycle.{part}")
    return rows


@pytest.mark.runbook("QP-23")
def test_no_finished_job_is_older_than_its_max_age(
    job_table: JobTable, lifecycle_of: Lifecycle, evidence: Recorder
) -> None:
    """No job in a finished state (``finished``) whose ``time_column`` is older than ``max_age`` (90 days) is left
    in the live table: the runbook's monthly cleanup archives them."""
    facts = lifecycle_of(job_table.database)
    where = f"job table {job_table.name} ({job_table.table} in database {job_table.database} at {facts.address})"
    _read(facts, where)
    rows = _judged(facts.jobs.get(job_table.name), where, "job_tables", facts.role)
    evidence.record(table=job_table.table, finished=", ".join(job_table.finished),
                    max_age=format_duration(job_table.max_age), old_finished_jobs=rows.count,
                    oldest=age(rows.oldest) if rows.oldest else "none")
    if rows.count:
        into = f" into {job_table.archive_table}" if job_table.archive_table else ""
        fail(f"{where}: {rows.count} finished job(s) ({job_table.status_column} {' or '.join(job_table.finished)}) "
             f"have {job_table.time_column} older than max_age {format_duration(job_table.max_age)}, the oldest "
             f"{age(rows.oldest or timedelta(0))} old: archive them{into} (the archived_jobs fixture, or the team's "
             "cleanup job)")


@pytest.mark.runbook("QP-23")
def test_no_temporary_table_is_left(temp_tables: TempTables, lifecycle_of: Lifecycle, evidence: Recorder) -> None:
    """No table (any schema but the system ones) matches the temporary-table glob ``pattern``."""
    facts = lifecycle_of(temp_tables.database)
    where = f"database {temp_tables.database} at {facts.address}"
    _read(facts, where)
    found = facts.temp_tables.get(temp_tables.name)
    if found is None:
        fail(f"{where}: the lifecycle probe did not list its tables")
    expect(found.error is None, f"{where}: {found.error}")
    evidence.record(pattern=temp_tables.pattern, matching_tables=found.count, total_size=found.total_size)
    if found.count:
        names = ", ".join(f"{name} {human_size(size)}" for name, size in found.first)
        more = f" and {found.count - len(found.first)} more" if found.count > len(found.first) else ""
        fail(f"{where}: {found.count} table(s) match {temp_tables.pattern} ({names}{more}; "
             f"{human_size(found.total_size)} in all), expected none: drop them (the dropped_temp_tables fixture, "
             "or the team's cleanup job)")


@pytest.mark.runbook("QP-31")
def test_no_personal_data_is_kept_past_its_retention(
    personal_data: PersonalData, lifecycle_of: Lifecycle, evidence: Recorder
) -> None:
    """No row of the personal-data table has its ``column`` older than ``retention``."""
    facts = lifecycle_of(personal_data.database)
    where = (f"personal data {personal_data.name} ({personal_data.table} in database {personal_data.database} "
             f"at {facts.address})")
    _read(facts, where)
    rows = _judged(facts.personal_data.get(personal_data.name), where, "personal_data", facts.role)
    evidence.record(table=personal_data.table, column=personal_data.column,
                    retention=format_duration(personal_data.retention), rows_past_retention=rows.count,
                    oldest=age(rows.oldest) if rows.oldest else "none")
    if rows.count:
        fail(f"{where}: {rows.count} row(s) have {personal_data.column} older than the retention "
             f"{format_duration(personal_data.retention)}, the oldest {age(rows.oldest or timedelta(0))} old: delete "
             "or anonymise them (the team's retention job)")
