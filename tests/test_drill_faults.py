"""Faults a live-source drill must catch (checks/restore/test_database_drill.py and, where a dump leaves a
table out, checks/backup/test_backup_content.py), each made for real on a database and a backup series this
test creates: a dump whose COPY was cut short, a table created after the backup, a table hidden by row-level
security, a truncated ``.sql.gz``, a schema and table whose names hold spaces and quotes.

The live source is a copy of ``photonic_foundry`` on the test sandbox's PostgreSQL (``live_source`` of
tests/test_drill_live_source.py), dropped and proven gone after.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_drill_live_source as live
from test_drill_live_source import CHECKSUMS, COUNTS, DRILL, NAME, ORIGIN, LiveSource

live_source = live.live_source  # the fixture: a copy of photonic_foundry, dropped and proven gone after

RESTORE = live.check("test_restore_completes_without_errors")
RTO = live.check("test_restore_time_is_within_rto")
Run = Callable[..., Any]
Variant = Callable[..., Path]
EMPTIED = ("an emptied table fails whatever the row_tolerance; if it really was empty at backup time, record that "
           "exact evidence in a manifest written at backup time (opsverify manifest write BACKUP)")
EVENTS = (
    "CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL); "
    "INSERT INTO events (kind) SELECT 'e' || g FROM generate_series(1, 3041) AS g; "
    "CREATE TABLE lookup (code text PRIMARY KEY); "
    "INSERT INTO lookup SELECT 'c' || g FROM generate_series(1, 5) AS g"
)


def cut_copy(backup: Path, table: str, keep: int) -> None:
    """Keep only the first ``keep`` rows of ``table``'s COPY section in a ``.sql.gz`` (its mtime kept)."""
    stat = backup.stat()
    text = gzip.decompress(backup.read_bytes())
    section = re.compile(rb"^(COPY " + re.escape(table.encode()) + rb" [^\n]*FROM stdin;\n)(.*?)(^\\\.\n)",
                         re.M | re.S)
    match = section.search(text)
    assert match is not None, f"no COPY section for {table}"
    rows = match.group(2).splitlines(keepends=True)[:keep]
    text = text[: match.start(2)] + b"".join(rows) + text[match.end(2) :]
    backup.write_bytes(gzip.compress(text))
    os.utime(backup, (stat.st_atime, stat.st_mtime))


def test_dump_with_a_cut_copy_or_an_emptied_table_fails_the_row_counts_against_a_live_source(
    run_checks: Run, profile_variant: Variant, live_source: LiveSource
) -> None:
    """An append_only table cut to 5 of 3041 rows, and a 5-row table restored empty, fail despite the tolerance."""
    live_source.execute(EVENTS)
    backup = live_source.backup()
    healthy = run_checks(profile_variant(live_source.variant(append_only=["events"])), DRILL)
    assert healthy.failed() == set()
    assert healthy.outcome(COUNTS) == "passed"

    cut_copy(backup, "public.lookup", 0)  # 5 rows in the source, fewer than min_rows 10
    emptied = run_checks(profile_variant(live_source.variant(append_only=["events"])), DRILL)
    assert emptied.failed() == {COUNTS}
    assert emptied.message(COUNTS) == (
        f"drill {NAME}: 1 table(s) differ from {ORIGIN}, first public.lookup: 0 rows restored, 5 in the source: "
        f"{EMPTIED}"
    )

    cut_copy(backup, "public.events", 5)
    cut = run_checks(profile_variant(live_source.variant(append_only=["events"])), DRILL)
    assert cut.failed() == {COUNTS}
    assert cut.message(COUNTS) == (
        f"drill {NAME}: 2 table(s) differ from {ORIGIN}, first public.events: 5 rows restored, 3041 in the source, "
        "3036 fewer: beyond the row_tolerance of 153 rows (5% of 3041, at least 10) (append_only: rows appended "
        "since the backup may be missing, no more)"
    )


def test_table_created_in_the_source_after_the_backup_is_recorded_not_failed(
    run_checks: Run, profile_variant: Variant, live_source: LiveSource
) -> None:
    live_source.backup()
    live_source.execute("CREATE TABLE created_later (id integer PRIMARY KEY); "
                        "INSERT INTO created_later SELECT generate_series(1, 40)")
    run = run_checks(profile_variant(live_source.variant()), DRILL)
    assert run.failed() == set()
    assert run.outcome(COUNTS) == "passed"
    assert run.checks[COUNTS]["evidence"]["in_the_source_not_in_the_dump"] == "public.created_later"
    assert run.checks[COUNTS]["evidence"]["tables"] == "3"


def test_table_whose_rows_row_level_security_hides_from_the_monitoring_role_fails_as_an_unreadable_source(
    run_checks: Run, profile_variant: Variant, live_source: LiveSource
) -> None:
    """The monitoring role reads every table (pg_read_all_data) but does not bypass RLS: no false "0 in the source"."""
    live_source.execute(
        "CREATE TABLE secrets (id integer PRIMARY KEY, owner text NOT NULL); "
        "INSERT INTO secrets SELECT g, 'tenant' || g % 3 FROM generate_series(1, 50) AS g; "
        "ALTER TABLE secrets ENABLE ROW LEVEL SECURITY; "
        "CREATE POLICY own_rows ON secrets USING (owner = current_user)"
    )
    live_source.backup()  # by a superuser: every row
    role = live_source.profile.database("photonic_foundry").user
    run = run_checks(profile_variant(live_source.variant()), DRILL)
    assert run.failed() == {COUNTS, CHECKSUMS}
    problem = (
        f"source {live.DATABASE} is unreadable (query would be affected by row-level security policy for table "
        f"\"secrets\": row-level security hides rows from role {role}): let it read every row (ALTER ROLE {role} "
        "BYPASSRLS), or write a manifest beside each backup at backup time (opsverify manifest write BACKUP); "
        "compare_with_source is on and no manifest is beside the backup"
    )
    assert run.message(COUNTS) == f"drill {NAME}: cannot compare row counts: {problem}"
    assert run.message(CHECKSUMS) == f"drill {NAME}: cannot compare checksums: {problem}"


def test_truncated_sql_gz_fails_the_drill_and_content_checks_in_one_line(
    run_checks: Run, profile_variant: Variant, live_source: LiveSource
) -> None:
    """The last 100 bytes of a .sql.gz cut (a full disk during gzip): one-line findings, no EOFError traceback."""
    from opsverify.restore.toc import TocError, data_tables, dump_objects

    backup = live_source.backup()
    stat = backup.stat()
    with backup.open("r+b") as stream:
        stream.truncate(stat.st_size - 100)
    os.utime(backup, (stat.st_atime, stat.st_mtime))
    with pytest.raises(TocError) as toc:
        dump_objects(backup, "sql.gz")
    truncated = str(toc.value)
    assert re.fullmatch(r"gzip stream truncated after [\d,]+ compressed bytes \(no trailer\)", truncated)
    with pytest.raises(TocError, match=re.escape(truncated)):
        data_tables(backup, "sql.gz")

    run = run_checks(profile_variant(live_source.variant()), DRILL, live.CONTENT)
    output = run.result.stdout.str()
    assert "Traceback" not in output
    assert "EOFError" not in output
    content = [f"test_backup_content.py::{test}[live-series]" for test in (
        "test_newest_dump_is_of_its_database", "test_newest_dump_holds_rows_the_live_database_has",
        "test_newest_full_dump_holds_every_live_table")]
    assert run.failed() == {RESTORE, RTO, *content}
    assert run.message(RESTORE) == (
        f"restore of {backup} for drill {NAME} failed: the backup could not be read to its end (Compressed file "
        "ended before the end-of-stream marker was reached): restore stopped"
    )
    assert run.message(RTO) == f"drill {NAME}: not recovered (the restore failed), RTO 30m not met"
    for test in content:  # one line, from the newest_dump fixture (an error at its setup)
        assert run.message(test) == (
            f"cannot read what newest dump {backup.name} of live-series holds: {truncated} ({backup})"
        )
    assert run.outcome(COUNTS) == "skipped"


def test_custom_dump_of_names_with_spaces_and_quotes_restores_its_schema(
    run_checks: Run, profile_variant: Variant, live_source: LiveSource
) -> None:
    """pg_restore --list prints names unquoted: the archive's own TOC gives schema "Odd Schema", table 'Weird "T"'."""
    import subprocess
    from datetime import UTC, datetime, timedelta

    from opsverify.backups.pgdump import list_toc
    from opsverify.backups.verdict import Expectations
    from opsverify.pgtools import pg_env, pg_tool

    live_source.execute(
        'CREATE SCHEMA "Odd Schema"; '
        'CREATE TABLE "Odd Schema"."Weird ""T""" (id integer PRIMARY KEY, "a b" text); '
        'CREATE INDEX "an index" ON "Odd Schema"."Weird ""T""" ("a b"); '
        'INSERT INTO "Odd Schema"."Weird ""T""" SELECT g, \'x\' || g FROM generate_series(1, 7) AS g'
    )
    when = datetime.now(UTC) - timedelta(minutes=30)
    backup = live_source.series / f"backup_{when:%Y%m%d_%H%M%S}.dump"
    subprocess.run([pg_tool("pg_dump"), "-Fc", "-f", str(backup)], env=pg_env(live_source.superuser,
                   live_source.dbname, live.T), check=True, timeout=120, stdin=subprocess.DEVNULL, capture_output=True)
    os.utime(backup, (when.timestamp(), when.timestamp()))
    toc = list_toc(backup, Expectations(timeout=60))
    assert 'Odd Schema.Weird "T"' in toc.tables
    assert {(e.desc, e.schema, e.name) for e in toc.entries if e.schema == "Odd Schema"} >= {
        ("TABLE", "Odd Schema", 'Weird "T"'), ("INDEX", "Odd Schema", "an index"),
        ("TABLE DATA", "Odd Schema", 'Weird "T"'),
    }

    def custom(data: dict[str, Any]) -> None:
        live_source.variant()(data)
        data["backups"][0]["pattern"] = "backup_*.dump"

    run = run_checks(profile_variant(custom), DRILL)
    assert run.failed() == set()
    assert run.outcome(live.check("test_restored_schema_matches_the_dump")) == "passed"
    assert run.outcome(COUNTS) == "passed"
    assert run.checks[COUNTS]["evidence"]["tables"] == "4"


def test_manifest_without_checksums_skips_naming_from_source_or_falls_back_to_a_quiescent_source(
    run_checks: Run, profile_variant: Variant, live_source: LiveSource
) -> None:
    """``opsverify manifest write BACKUP`` (facts from the backup: rows, no checksums) beside the newest dump."""
    import subprocess

    from opsverify.facts.manifest import manifest_path

    backup = live_source.backup()
    subprocess.run([str(Path(live.__file__).parents[1] / ".venv" / "bin" / "opsverify"), "manifest", "write",
                    str(backup)], check=True, timeout=120, capture_output=True)
    origin = f"the manifest {manifest_path(backup).name}"
    live_run = run_checks(profile_variant(live_source.variant()), DRILL)
    assert live_run.failed() == set()
    assert live_run.outcome(COUNTS) == "passed"
    assert live_run.outcome(CHECKSUMS) == "skipped"
    assert live_run.message(CHECKSUMS) == (
        f"drill {NAME}: nothing to compare checksums with ({origin} records no content checksums: write it at "
        "backup time with opsverify manifest write BACKUP --from-source, or declare compare_with_source with "
        "source_quiescent: true if nothing writes to the source)"
    )

    quiescent = run_checks(profile_variant(live_source.variant(source_quiescent=True)), DRILL)
    assert quiescent.failed() == set()
    assert quiescent.outcome(CHECKSUMS) == "passed"
    evidence = quiescent.checks[CHECKSUMS]["evidence"]
    source = f"source {live.DATABASE} (REPEATABLE READ snapshot; source_quiescent)"
    assert (evidence["compared_with"], evidence["checksummed_tables"]) == (source, "2")
    assert quiescent.checks[COUNTS]["evidence"]["compared_with"] == origin

    backed_up = live_source.facts()["public.models"]["checksum"]
    live_source.execute("UPDATE models SET accuracy = 0.5 WHERE id = 7")  # "quiescent", yet written to
    now = live_source.facts()["public.models"]["checksum"]
    changed = run_checks(profile_variant(live_source.variant(source_quiescent=True)), DRILL)
    assert changed.failed() == {CHECKSUMS}
    assert changed.message(CHECKSUMS) == (
        f"drill {NAME}: public.models content checksum {backed_up} differs from {now} ({source})"
    )
