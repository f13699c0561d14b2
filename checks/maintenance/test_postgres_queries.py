"""PostgreSQL index and query health (issue 11): unused and bloated indexes, missing indexes, slow statements,
the declared key queries and the hot tables' planner statistics.

Per database, one read-only session as the database's ``user`` (``pg_queries_of``) measures everything
(a write key query it may not plan: planned, never run, as ``maintenance_user`` when one is declared);
each check judges one part against the database's ``maintenance`` thresholds. Runbook: PF-27/QP-07
(pg_stat_statements), PF-28/QP-25 (index usage, unused and missing indexes), PF-37 (query optimisation:
EXPLAIN of the key queries, sequential scans of large tables), QP-11 (statistics of hot tables).
QP-26 (``log_min_duration_statement``) is the PG-SLOW-QUERY-LOG rule of checks/security/test_postgres_security.py,
also selected by ``-m maintenance``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.backups.directory import human_size
from opsverify.durations import format_duration
from opsverify.probes.pgqueries import KeyQueryPlan, PgQueryFacts
from opsverify.profile import Database
from opsverify.profile.maintenance import KeyQuery

pytestmark = [pytest.mark.maintenance]
QueriesOf = Callable[[Database], PgQueryFacts]


def _facts(database: Database, pg_queries_of: QueriesOf) -> tuple[PgQueryFacts, str]:
    facts = pg_queries_of(database)
    where = f"database {database.name} at {facts.address}"
    if facts.lock_error:
        fail(f"{where}: cannot read index and query statistics because of a lock held by another session: "
             f"{facts.error}, expected to read them within the lock timeout: find the session holding it in "
             "pg_locks and pg_stat_activity, then rerun")
    expect(facts.is_read, f"{where}: cannot read index and query statistics as role {facts.role}: {facts.error}")
    return facts, where


def _locked(facts: PgQueryFacts) -> str | None:
    """The tables left out because another session holds them in ACCESS EXCLUSIVE mode (evidence)."""
    return ", ".join(facts.locked_tables) or None


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "the cluster was created (statistics never reset)"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _more(count: int) -> str:
    """", and 2 more": no parentheses, which would double those a message closes just before (the scan counts)."""
    return f", and {count - 1} more" if count > 1 else ""


@pytest.mark.weekly
@pytest.mark.monthly
@pytest.mark.runbook("PF-28", "QP-25")
def test_no_large_index_is_unused(database: Database, pg_queries_of: QueriesOf, evidence: Recorder) -> None:
    """No index of at least ``unused_index_min_size`` on a table of at least ``large_table`` has ``idx_scan = 0``
    since the statistics reset (indexes enforcing a unique, primary-key or exclusion constraint aside)."""
    facts, where = _facts(database, pg_queries_of)
    settings = database.maintenance
    evidence.record(locked_tables=_locked(facts))
    evidence.record(stats_reset=_when(facts.stats_reset), unused_indexes=len(facts.unused_indexes),
                    unused_index_min_size=int(settings.unused_index_min_size), large_table=int(settings.large_table))
    if facts.unused_indexes:
        idx = facts.unused_indexes[0]
        evidence.record(unused=", ".join(f"{i.schema}.{i.index}" for i in facts.unused_indexes[:10]))
        fail(f"{where}: index {idx.schema}.{idx.index} ({human_size(idx.size)}) on table {idx.schema}.{idx.table} "
             f"({human_size(idx.table_size)}) has had no scan since {_when(facts.stats_reset)}"
             f"{_more(len(facts.unused_indexes))}, expected every index of a large table in use: check it is unused "
             f"on the replicas too and backs no constraint, then DROP INDEX CONCURRENTLY {idx.schema}.{idx.index}")


@pytest.mark.weekly
@pytest.mark.runbook("PF-28")
def test_index_bloat_is_under_threshold(database: Database, pg_queries_of: QueriesOf, evidence: Recorder) -> None:
    """Every btree index of at least ``unused_index_min_size`` is estimated (from pg_class and pg_stats) at most
    ``max_index_bloat_percent`` bloated."""
    facts, where = _facts(database, pg_queries_of)
    limit = database.maintenance.max_index_bloat_percent
    worst = sorted(facts.index_bloat, key=lambda b: -b.percent)
    evidence.record(locked_tables=_locked(facts))
    evidence.record(indexes_estimated=len(facts.index_bloat), max_index_bloat_percent=limit,
                    worst=f"{worst[0].schema}.{worst[0].index} {worst[0].percent:.0f}%" if worst else None)
    over = [b for b in worst if b.percent > limit]
    if over:
        b = over[0]
        fail(f"{where}: index {b.schema}.{b.index} on table {b.schema}.{b.table} is an estimated {b.percent:.0f}% "
             f"bloated ({human_size(b.bloat)} of {human_size(b.size)}){_more(len(over))}, expected at most {limit:g}%: "
             f"REINDEX INDEX CONCURRENTLY {b.schema}.{b.index}")


@pytest.mark.weekly
@pytest.mark.monthly
@pytest.mark.runbook("QP-25", "PF-37")
def test_no_large_table_is_read_by_sequential_scans(
    database: Database, pg_queries_of: QueriesOf, evidence: Recorder
) -> None:
    """No table of at least ``large_table`` has sequential scans above ``max_seq_scan_percent`` of its scans
    (sequential + index) since the statistics reset: a missing index."""
    facts, where = _facts(database, pg_queries_of)
    limit = database.maintenance.max_seq_scan_percent
    evidence.record(locked_tables=_locked(facts))
    evidence.record(large_tables=len(facts.scan_shares), max_seq_scan_percent=limit,
                    stats_reset=_when(facts.stats_reset),
                    shares=", ".join(f"{s.schema}.{s.table} {s.seq_percent:.0f}%" for s in facts.scan_shares[:10]))
    heavy = sorted((s for s in facts.scan_shares if s.seq_percent > limit), key=lambda s: -s.seq_tup_read)
    if heavy:
        s = heavy[0]
        fail(f"{where}: table {s.schema}.{s.table} ({human_size(s.size)}) was read by sequential scans in "
             f"{s.seq_percent:.0f}% of its scans since {_when(facts.stats_reset)} ({s.seq_scan} sequential, "
             f"{s.idx_scan} by index, {s.seq_tup_read} rows read sequentially){_more(len(heavy))}, expected at most "
             f"{limit:g}%: find the statements that scan it in pg_stat_statements and add the index they need "
             "(EXPLAIN)")


@pytest.mark.weekly
@pytest.mark.runbook("PF-27", "QP-07")
def test_pg_stat_statements_is_installed_and_loaded(
    database: Database, pg_queries_of: QueriesOf, evidence: Recorder
) -> None:
    """The pg_stat_statements extension is installed in the database (``pg_extension``) and its library loaded
    (``shared_preload_libraries``; when that setting is hidden from the role, the view answering proves it)."""
    if not database.maintenance.require_pg_stat_statements:
        pytest.skip(f"database {database.name} declares maintenance.require_pg_stat_statements: false")
    facts, where = _facts(database, pg_queries_of)
    evidence.record(installed=facts.statements_installed, loaded=facts.statements_loaded)
    if not facts.statements_installed:
        create = f"CREATE EXTENSION pg_stat_statements in database {database.dbname}"
        if facts.statements_loaded is False:
            fail(f"{where}: the pg_stat_statements extension is not installed and its library not loaded, expected "
                 f"both: add pg_stat_statements to shared_preload_libraries, restart the server, then {create}")
        fail(f"{where}: the pg_stat_statements extension is not installed, expected it installed and loaded: {create}")
    if facts.statements_loaded is False:
        fail(f"{where}: the pg_stat_statements extension is installed but its library is not loaded, expected it "
             "in shared_preload_libraries: add pg_stat_statements to shared_preload_libraries and restart the server")
    expect(facts.statements_error is None,
           f"{where}: pg_stat_statements cannot be read as role {facts.role}: {facts.statements_error}")


@pytest.mark.weekly
@pytest.mark.runbook("PF-27", "QP-07")
def test_no_statement_is_slow(database: Database, pg_queries_of: QueriesOf, evidence: Recorder) -> None:
    """No statement of this database in pg_stat_statements called at least ``slow_query_min_calls`` times has a
    mean execution time above ``slow_query_mean`` (opsverify's own, starting with ``/* opsverify */``, aside); one
    whose text the role may not read fails all the same, naming the grant that shows it."""
    facts, where = _facts(database, pg_queries_of)
    settings = database.maintenance
    evidence.record(slow_query_mean=format_duration(settings.slow_query_mean),
                    slow_query_min_calls=settings.slow_query_min_calls, slow_statements=len(facts.slow_statements))
    if not facts.statements_installed or facts.statements_loaded is False:
        pytest.skip(f"{where}: pg_stat_statements is not installed and loaded, so no statement can be timed (see "
                    "test_pg_stat_statements_is_installed_and_loaded)")
    expect(facts.statements_error is None,
           f"{where}: pg_stat_statements cannot be read as role {facts.role}: {facts.statements_error}")
    if facts.slow_statements:
        s = facts.slow_statements[0]
        evidence.record(slowest_queryid=s.queryid, slowest_mean=format_duration(s.mean),
                        hidden_texts=sum(1 for h in facts.slow_statements if h.hidden))
        if s.hidden:  # another role's statement, its text (and queryid) hidden without pg_read_all_stats
            who = f"statement {s.queryid}" if s.queryid is not None else "a statement (queryid hidden)"
            fail(f"{where}: {who} of another role, its text hidden from role {facts.role} ({s.text}), has a mean "
                 f"execution time of {format_duration(s.mean)} over {s.calls} calls"
                 f"{_more(len(facts.slow_statements))}, expected at most {format_duration(settings.slow_query_mean)}: "
                 f"{facts.stats_grant} to read it, then EXPLAIN (ANALYZE) it and add the index it needs or rewrite it")
        fail(f"{where}: statement {s.queryid} ({s.text}) has a mean execution time of {format_duration(s.mean)} over "
             f"{s.calls} calls{_more(len(facts.slow_statements))}, expected at most "
             f"{format_duration(settings.slow_query_mean)}: EXPLAIN (ANALYZE) it and add the index it needs or "
             "rewrite it (pg_stat_statements holds the statement)")


def _plan(key_query: tuple[Database, KeyQuery], pg_queries_of: QueriesOf) -> tuple[str, KeyQuery, KeyQueryPlan]:
    database, query = key_query
    facts, where = _facts(database, pg_queries_of)
    plan = facts.key_queries[query.name]
    what = f"{where}: key query {query.name}"
    if plan.denied is not None and database.maintenance_user is None:
        pytest.skip(f"{what} cannot be planned as role {facts.role}: {plan.denied} (EXPLAIN needs the privileges the "
                    "statement needs: for a write, declare maintenance_user, the role it is then planned as in a "
                    "read-only transaction, never run; for a read, grant SELECT to the role)")
    if plan.denied is not None:
        pytest.skip(f"{what} cannot be planned as role {facts.role}: {plan.denied} (EXPLAIN needs the privileges the "
                    "statement needs: grant them to the role, or declare the read the application does instead)")
    if plan.planned_as is not None:
        what += f" (a write, planned as maintenance_user {plan.planned_as})"
    if plan.locked is not None:
        pytest.skip(f"{what} cannot be planned now: {plan.locked} (a lock held by another session on a table it "
                    "reads; test_no_session_waits_long_on_a_lock judges the lock): rerun once it is released")
    expect(plan.error is None, f"{what} cannot be planned or run: {plan.error}")
    return what, query, plan


@pytest.mark.weekly
@pytest.mark.runbook("PF-37")
def test_key_query_runs_within_budget(
    key_query: tuple[Database, KeyQuery], pg_queries_of: QueriesOf, evidence: Recorder
) -> None:
    """A read-only key query runs (``EXPLAIN (ANALYZE)`` in the read-only session, cancelled at twice its budget)
    within its ``budget``; a write is never run: its mean in pg_stat_statements is judged, else it is skipped."""
    what, query, plan = _plan(key_query, pg_queries_of)
    budget = format_duration(query.budget)
    evidence.record(budget=budget, write=plan.write, queryid=plan.queryid)
    if plan.write:
        if plan.statement_mean is None:
            pytest.skip(f"{what} is a write, which opsverify never runs, and pg_stat_statements holds no timing of "
                        "it: it cannot be timed here")
        evidence.record(mean=format_duration(plan.statement_mean), calls=plan.statement_calls)
        expect(plan.statement_mean <= query.budget,
               f"{what} (a write) has a mean execution time of {format_duration(plan.statement_mean)} over "
               f"{plan.statement_calls} calls in pg_stat_statements, expected within its budget {budget}: "
               "EXPLAIN it and add the index it needs")
        return
    if plan.timed_out is not None:
        evidence.record(timed_out=format_duration(plan.timed_out))
        fail(f"{what} did not finish before it was cancelled at {format_duration(plan.timed_out)} (twice its budget), "
             f"expected within {budget}: EXPLAIN (ANALYZE) it and add the index it needs or rewrite it")
    assert plan.elapsed is not None
    evidence.record(elapsed=format_duration(plan.elapsed))
    expect(plan.elapsed <= query.budget,
           f"{what} took {format_duration(plan.elapsed)}, expected within {budget}: EXPLAIN (ANALYZE) it and add the "
           "index it needs or rewrite it")


@pytest.mark.weekly
@pytest.mark.runbook("PF-37")
def test_key_query_has_no_seq_scan_on_a_large_table(
    key_query: tuple[Database, KeyQuery], pg_queries_of: QueriesOf, evidence: Recorder
) -> None:
    """The key query's plan (``EXPLAIN (FORMAT JSON)``) has no Seq Scan node on a table of at least ``large_table``."""
    what, _, plan = _plan(key_query, pg_queries_of)
    database = key_query[0]
    scans = plan.seq_scans
    evidence.record(seq_scans=", ".join(s.relation for s in scans) or None,
                    large_table=int(database.maintenance.large_table))
    if scans:
        s = scans[0]
        fail(f"{what} plans a sequential scan of {s.relation} ({human_size(s.size)}, at least large_table "
             f"{human_size(int(database.maintenance.large_table))}){_more(len(scans))}, expected index access: add an "
             "index on the columns it filters or joins by (EXPLAIN shows the plan)")


@pytest.mark.monthly
@pytest.mark.runbook("QP-11")
def test_hot_table_statistics_are_fresh(
    hot_table: tuple[Database, str], pg_queries_of: QueriesOf, evidence: Recorder
) -> None:
    """The hot table exists, has planner statistics (``pg_class.reltuples`` >= 0 and, where the role may read
    them, ``pg_stats`` rows when it holds rows) and was (auto)analyzed within ``statistics_max_age``."""
    database, table = hot_table
    facts, where = _facts(database, pg_queries_of)
    stats = facts.hot_tables[table]
    max_age = database.maintenance.statistics_max_age
    fix = f"ANALYZE {table} (and check autovacuum analyzes it)"
    expect(stats.exists, f"{where}: hot table {table} does not exist, expected a table whose statistics are kept "
           "fresh: correct maintenance.hot_tables or create the table")
    evidence.record(reltuples=stats.reltuples, stats_rows=stats.stats_rows, last_analyze=stats.last_analyze,
                    statistics_max_age=format_duration(max_age))
    expect(stats.reltuples >= 0, f"{where}: hot table {table} has no planner statistics (pg_class.reltuples is -1: "
           f"never analyzed), expected statistics analyzed within {format_duration(max_age)}: {fix}")
    expect(stats.stats_rows != 0 or stats.reltuples == 0,
           f"{where}: hot table {table} has no pg_stats rows (reltuples {stats.reltuples:.0f}), expected statistics "
           f"analyzed within {format_duration(max_age)}: {fix}")
    expect(stats.last_analyze is not None, f"{where}: hot table {table} was not analyzed since "
           f"{_when(facts.stats_reset)}, expected within {format_duration(max_age)}: {fix}")
    assert stats.last_analyze is not None
    assert facts.now is not None
    age = facts.now - stats.last_analyze
    evidence.record(analyze_age=format_duration(age))
    expect(age <= max_age, f"{where}: hot table {table} was last analyzed {format_duration(age)} ago "
           f"({_when(stats.last_analyze)}), expected within {format_duration(max_age)}: {fix}")
