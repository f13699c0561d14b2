"""Restore drill of each database: the newest backup restores into a scratch database and equals the source.

Runbook: PF-11 monthly DR test, QP-14 quarterly restoration test ("as PF-11" plus row-count and
checksum fidelity), QP-19 "test restoration to staging" and ``pg_restore --list``, PF-19
``pg_restore -j`` of custom dumps, PF-46 full system recovery (the database part and its smoke
test), PF-47/PF-14 the RTO.
"""

from __future__ import annotations

import pytest

from fixtures.drills import Expected
from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.durations import format_duration as fmt
from opsverify.profile import Profile, RestoreTarget
from opsverify.restore.drill import PgDrillOutcome
from opsverify.restore.fidelity import compare_checksums, compare_rows, in_the_dump, matches

pytestmark = [pytest.mark.restore, pytest.mark.dr, pytest.mark.monthly]


def restored(outcome: PgDrillOutcome) -> PgDrillOutcome:
    """The outcome of a drill whose restore succeeded; the check is skipped (the restore check fails) otherwise."""
    __tracebackhide__ = True
    if not outcome.restore.ok:
        pytest.skip(f"drill {outcome.drill.name}: the restore failed, nothing to compare (see its restore check)")
    return outcome


@pytest.mark.runbook("PF-11", "QP-14", "QP-19", "PF-19", "PF-46")
def test_restore_completes_without_errors(pg_drill_outcome: PgDrillOutcome, evidence: Recorder) -> None:
    """PF-11/QP-14/QP-19/PF-19/PF-46: psql (ON_ERROR_STOP) or pg_restore (--exit-on-error, -j) restores the backup."""
    run = pg_drill_outcome.restore
    evidence.record(backup=run.backup, format=pg_drill_outcome.format, tool=run.tool, duration=fmt(run.duration))
    evidence.record(scratch_database=run.database)
    expect(run.ok, f"restore of {pg_drill_outcome.backup} for drill {pg_drill_outcome.drill.name} failed: {run.error}")


@pytest.mark.runbook("PF-11", "QP-14", "QP-19")
def test_restored_schema_matches_the_dump(pg_drill_outcome: PgDrillOutcome, evidence: Recorder) -> None:
    """QP-19/PF-11/QP-14: every table, sequence, view and index in the dump's TOC exists in the restored copy."""
    outcome = restored(pg_drill_outcome)
    toc = outcome.dump_toc
    if toc is None:
        fail(f"cannot read the table of contents of {outcome.backup}: {outcome.toc_error}")
    missing = sorted(toc - outcome.objects)
    evidence.record(dump_objects=len(toc), restored_objects=len(outcome.objects), missing=" ".join(missing) or "none")
    expect(not missing, f"drill {outcome.drill.name}: restored copy lacks {', '.join(missing)} listed in the dump")


@pytest.mark.runbook("QP-14")
def test_restored_row_counts_match_the_backup(
    pg_drill_outcome: PgDrillOutcome, drill_expectation: Expected, evidence: Recorder
) -> None:
    """QP-14: every table has the row count the backup recorded (or the source holds in one snapshot).

    Against a manifest or a ``source_quiescent`` source exactly (an ``append_only`` table: at least
    the manifest's rows); against a live source within the drill's ``row_tolerance`` (an
    ``append_only`` table: at most the source's rows, and at least them less the tolerance); a table
    restored empty while the source holds rows fails whatever the tolerance. A source table the
    dump's TOC does not list (created since the backup) is recorded in the evidence, not compared:
    whether the dump left a live table out is checks/backup/test_backup_content.py's finding. A
    table the dump lists (or a manifest records) but the restored copy lacks fails. A malformed
    manifest, or an unreadable source with ``compare_with_source``, fails; no manifest with
    ``compare_with_source`` off skips.
    """
    outcome = restored(pg_drill_outcome)
    expected, origin = drill_expectation.facts, drill_expectation.origin
    if drill_expectation.problem is not None:
        fail(f"drill {outcome.drill.name}: cannot compare row counts: {drill_expectation.problem}")
    if expected is None:
        pytest.skip(f"drill {outcome.drill.name}: nothing to compare row counts with ({origin})")
    if outcome.facts_problem is not None:
        fail(f"drill {outcome.drill.name}: cannot compare row counts: {outcome.facts_problem}")
    assert outcome.restored is not None
    drill = outcome.drill
    basis = drill_expectation.basis
    if basis != "manifest":  # a table created in the source since the backup is not the restore's to hold
        expected, not_in_dump = in_the_dump(expected, outcome.dump_toc)
        evidence.record(in_the_source_not_in_the_dump=" ".join(not_in_dump) or "none")
    differences = compare_rows(expected, outcome.restored, basis, drill.row_tolerance, drill.append_only)
    evidence.record(compared_with=origin, tables=len(expected.tables), differing=len(differences), comparison=basis)
    if basis == "live":
        evidence.record(row_tolerance=f"{drill.row_tolerance.percent:g}% (at least {drill.row_tolerance.min_rows} "
                                      "rows)", append_only=" ".join(drill.append_only) or "none")
    if differences:
        first = differences[0]
        fail(f"drill {outcome.drill.name}: {len(differences)} table(s) differ from {origin}, first {first.table}: "
             f"{first.problem}")


@pytest.mark.runbook("QP-14")
def test_restored_tables_match_their_checksums(
    pg_drill_outcome: PgDrillOutcome, drill_expectation: Expected, evidence: Recorder
) -> None:
    """QP-14: tables up to ``checksum_max_rows`` rows have the content checksum the backup recorded.

    Against a manifest or a ``source_quiescent`` source every checksum must match (an
    ``append_only`` table restored with more rows than the manifest is not compared). A live source
    (``compare_with_source`` without ``source_quiescent``) passes only where every checksum matches;
    where one differs the check skips, saying so: writes made since the backup change a checksum
    as a damaged restore does. ``checksum_max_rows: 0`` turns checksums off (skip); a bound below
    every table's size fails, as do a malformed manifest and an unreadable source with
    ``compare_with_source``. A manifest that records no content checksums (``opsverify manifest write
    BACKUP`` reads the backup, no server) is compared with a ``source_quiescent`` source's checksums
    under ``compare_with_source``, and skips otherwise, naming ``--from-source``.
    """
    outcome = restored(pg_drill_outcome)
    drill = outcome.drill
    if drill.checksum_max_rows == 0:
        pytest.skip(f"drill {drill.name}: checksums are off (checksum_max_rows: 0)")
    expectation = drill_expectation.for_checksums  # a manifest without checksums: a quiescent source's
    expected, origin = expectation.facts, expectation.origin
    if expectation.problem is not None:
        fail(f"drill {drill.name}: cannot compare checksums: {expectation.problem}")
    if expected is None or not expected.has_checksums:
        why = origin if expected is None else (
            f"{origin} records no content checksums: write it at backup time with opsverify manifest write BACKUP "
            "--from-source, or declare compare_with_source with source_quiescent: true if nothing writes to the "
            "source")
        pytest.skip(f"drill {outcome.drill.name}: nothing to compare checksums with ({why})")
    if outcome.facts_problem is not None:
        fail(f"drill {drill.name}: cannot compare checksums: {outcome.facts_problem}")
    assert outcome.restored is not None
    grown = frozenset(name for name, fact in outcome.restored.tables.items()  # append-only rows since the manifest
                      if expectation.basis == "manifest" and matches(name, drill.append_only)
                      and name in expected.tables and fact.rows != expected.tables[name].rows)
    differences, compared = compare_checksums(expected, outcome.restored, grown)
    evidence.record(compared_with=origin, checksummed_tables=compared, differing=len(differences),
                    comparison=expectation.basis)
    if compared == 0 and outcome.restored.tables:
        smallest, fact = min(outcome.restored.tables.items(), key=lambda item: (item[1].rows, item[0]))
        if fact.rows > drill.checksum_max_rows:
            fail(f"no table of drill {drill.name} has at most {drill.checksum_max_rows} rows: raise "
                 f"checksum_max_rows to at least {fact.rows} (the smallest table, {smallest}) "
                 "or set it to 0 to turn checksums off")
    if compared == 0:
        pytest.skip(f"drill {drill.name}: no table with a checksum in both {origin} and the restored copy")
    if differences and expectation.basis == "live":
        pytest.skip(
            f"drill {drill.name}: cannot compare checksums with a live source: {len(differences)} of {compared} "
            f"checksummed table(s) differ from {origin} (first {differences[0].table}), and writes made since the "
            "backup change a checksum as a damaged restore does: write a manifest beside each backup at backup "
            "time (opsverify manifest write BACKUP --from-source), or declare source_quiescent: true if nothing "
            f"writes to {expectation.source}"
        )
    if differences:
        first = differences[0]
        fail(f"drill {outcome.drill.name}: {first.table} {first.problem} ({origin})")


@pytest.mark.runbook("PF-46")
def test_smoke_queries_return_rows(pg_drill_outcome: PgDrillOutcome, evidence: Recorder) -> None:
    """PF-46: the drill's smoke queries run on the restored copy and each returns at least one row.

    Without ``smoke_queries``: ``SELECT 1 FROM t LIMIT 1`` on each table the backup holds rows for
    (the manifest's tables with rows, else the dump's data sections), at most the 20 largest.
    """
    outcome = restored(pg_drill_outcome)
    evidence.record(smoke="default: each table the backup holds rows for" if outcome.default_smoke else "declared",
                    queries=len(outcome.smoke))
    evidence.record(**{f"query_{n + 1}": f"{s.rows} rows" if s.error is None else s.error
                       for n, s in enumerate(outcome.smoke)})
    broken = [s for s in outcome.smoke if not s.ok]
    if broken:
        first = broken[0]
        why = f" ({first.why})" if first.why else ""
        fail(f"drill {outcome.drill.name}: smoke query {first.query!r} "
             f"{'failed: ' + first.error if first.error else 'returned no rows'}{why}")


@pytest.mark.runbook("PF-11", "QP-14", "QP-19")
def test_restored_copy_passes_amcheck(
    pg_drill_outcome: PgDrillOutcome, restore_target: RestoreTarget, evidence: Recorder
) -> None:
    """PF-11/QP-14/QP-19: ``pg_amcheck --heapallindexed`` finds no corruption in the restored tables and indexes."""
    outcome = restored(pg_drill_outcome)
    drill = outcome.drill
    if outcome.amcheck is not None and outcome.amcheck.startswith(("unavailable: ", "off: ")):
        pytest.skip(f"drill {drill.name}: pg_amcheck {outcome.amcheck}")
    if outcome.amcheck is not None and outcome.amcheck.startswith("denied: "):
        role = restore_target.user
        fail(f"drill {drill.name}: pg_amcheck may not check the restored copy as role {role} "
             f"({outcome.amcheck.removeprefix('denied: ')}): amcheck is not a trusted extension and the "
             f"scratch database is a copy of {restore_target.template}, which lacks it, so use a superuser restore "
             "role, or set amcheck: false on the drill")
    evidence.record(amcheck=outcome.amcheck or "clean")
    expect(outcome.amcheck is None, f"drill {outcome.drill.name}: pg_amcheck on the restored copy: {outcome.amcheck}")


@pytest.mark.recovery
@pytest.mark.runbook("PF-47", "PF-14")
def test_restore_time_is_within_rto(pg_drill_outcome: PgDrillOutcome, profile: Profile, evidence: Recorder) -> None:
    """PF-47/PF-14: from the start of the restore (of the download, for a remote backup) until the last smoke
    query answered with a row, inside the component's RTO."""
    outcome = pg_drill_outcome
    drill = outcome.drill
    objective = profile.objective(drill.objective)
    measured = outcome.rto
    evidence.record(component=objective.component, rto_objective=fmt(objective.rto),
                    rto_measured=fmt(measured) if measured is not None else "not recovered")
    evidence.metric(rto_objective_seconds=objective.rto.total_seconds())
    if measured is not None:
        evidence.metric(restore_rto_seconds=measured.total_seconds())
    evidence.record(restore_seconds=f"{outcome.restore.duration.total_seconds():.3f}",
                    rto_seconds=f"{measured.total_seconds():.3f}" if measured is not None else "-")
    if measured is None:
        broken = next((s for s in outcome.smoke if not s.ok), None)
        why = "the restore failed" if broken is None else f"smoke query {broken.query!r} did not return a row"
        fail(f"drill {drill.name}: not recovered ({why}), RTO {fmt(objective.rto)} not met")
    assert measured is not None
    expect(measured <= objective.rto, f"drill {drill.name} took {fmt(measured)} to recover "
                                      f"({objective.component} RTO {fmt(objective.rto)}): {pg_drill_outcome.backup}")
