"""The runbooks' upkeep done now, each by a fixture that proves what it changed and nothing else.

These change state (statistics, archived jobs, dropped temporary tables, deleted old files, a
flushed and restored cache), so a ``role: production`` profile skips them unless the run passes
``--allow-maintenance``. Runbook: PF-25/QP-10 VACUUM ANALYZE, QP-23 DB cleanup (old jobs, temp
tables), PF-02/QP-22 log rotation, QP-24 cache management (FLUSHDB, /tmp cleanup).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest

from fixtures.expect import expect, fail
from opsverify.actions.maintenance import Archived, DeletedFiles, DroppedTables, Flushed, Vacuumed
from opsverify.errors import OpsverifyError
from opsverify.profile import Database, RedisInstance
from opsverify.profile.maintenance import JobTable, LogDirectory, TempTables, TmpFiles

pytestmark = [pytest.mark.maintenance, pytest.mark.monthly]
T = TypeVar("T")


def proven(what: str | None, call: Callable[[], T]) -> T:
    """The fixture's result; its proof failing (a transaction rolled back) or a server refusing fails the check with
    its sentence (after ``what``; None: the error names its subject itself, as the file actions' do)."""
    __tracebackhide__ = True
    try:
        return call()
    except OpsverifyError as err:
        message = f"{what}: {err}" if what else str(err)
    fail(message)  # outside the except: one sentence, not the error and "During handling of the above exception"


@pytest.mark.runbook("PF-25", "QP-10")
def test_vacuum_analyze_advances_the_statistics(
    hot_table: tuple[Database, str], vacuum_analyzed: Callable[[str], Vacuumed]
) -> None:
    """PF-25/QP-10: ``VACUUM (ANALYZE)`` of a hot table advances ``last_vacuum`` and ``last_analyze`` and keeps its
    row count (on a table written meanwhile the counts are not compared)."""
    database, table = hot_table
    done = proven(f"VACUUM (ANALYZE) of {table} in {database.name}", lambda: vacuum_analyzed(table))
    expect(
        done.vacuum_advanced and done.analyze_advanced,
        f"VACUUM (ANALYZE) of {done.table} in {database.name} did not advance its statistics (last_vacuum "
        f"{done.vacuum_before} -> {done.vacuum_after}, last_analyze {done.analyze_before} -> {done.analyze_after}) "
        "within 10 s: maintenance_user must own the table (VACUUM skips others) and track_counts must be on",
    )


@pytest.mark.runbook("QP-23")
def test_old_jobs_archive_without_loss(job_table: JobTable, archived_jobs: Callable[..., Archived]) -> None:
    """QP-23: finished jobs older than ``max_age`` move to the archive table in one transaction; live + archived
    equals the count before and the transaction changed no other table (proved before COMMIT)."""
    done = proven(f"archiving old jobs of {job_table.table}", archived_jobs)
    before, after = done.live_before + done.archive_before, done.live_after + done.archive_after
    expect(
        before == after,
        f"archiving {done.rows} old jobs of {done.table} in {done.database} changed the total from {before} to "
        f"{after} rows (live + archive): compare the job table's and {done.archive}'s columns",
    )


@pytest.mark.runbook("QP-23")
def test_temp_tables_drop_leaves_other_tables_unchanged(
    temp_tables: TempTables, dropped_temp_tables: Callable[..., DroppedTables]
) -> None:
    """QP-23: tables matching the ``temp_tables`` pattern are dropped, none remains, and every other table kept its
    rows, storage and columns (proved before COMMIT)."""
    proven(f"dropping {temp_tables.pattern} tables in {temp_tables.database}", dropped_temp_tables)


@pytest.mark.runbook(by_kind={"logs": ("PF-02",), "audit-logs": ("QP-22",)})
def test_log_rotation_deletes_only_files_past_retention(
    log_directory: LogDirectory, rotated_logs: Callable[..., DeletedFiles]
) -> None:
    """PF-02/QP-22: files past retention are deleted; every newer file is left untouched (checked at teardown)."""
    done = proven(None, rotated_logs)  # "log rotation app-logs: directory … does not exist: …", "… left … behind"
    expect(
        not any(path in done.kept for path in done.deleted),
        f"log rotation of {log_directory.path} both deleted and kept a file: report this as a bug",
    )


@pytest.mark.runbook("QP-24")
def test_tmp_cleanup_deletes_only_stale_files(tmp_files: TmpFiles, cleaned_tmp: Callable[..., DeletedFiles]) -> None:
    """QP-24: temporary files past ``max_age`` are deleted; newer ones are left untouched (checked at teardown)."""
    done = proven(None, cleaned_tmp)  # as the rotation: "temporary file clean-up quantum-tmp: …"
    expect(
        not any(path in done.kept for path in done.deleted),
        f"clean-up of {tmp_files.pattern} both deleted and kept a file: report this as a bug",
    )


@pytest.mark.runbook("QP-24")
def test_cache_flush_restores_every_key(
    redis_instance: RedisInstance, flushed_cache: Callable[..., Flushed]
) -> None:
    """QP-24: FLUSHDB only as a fixture that restores state: every key dumped first, restored at teardown with its
    TTL, the key count and a sample of values verified, the dump file removed."""
    done = proven(f"flush of redis {redis_instance.name}", flushed_cache)
    expect(
        done.dump.stat().st_mode & 0o077 == 0,
        f"the dump of redis {redis_instance.name} db {done.db} at {done.dump} is readable by others: "
        "keep scratch_dir private (mode 0700)",
    )
