"""PostgreSQL index and query health (checks/maintenance/test_postgres_queries.py) against real faults.

Every fault is made on a throwaway cluster configured like the sandbox's (make_cluster() of
tests/test_security_postgres.py: pg_stat_statements loaded) and seeded like it (seed_databases:
the ~150k-row simulation_events table with its used indexes); the variant profile is the sandbox's
photonic_foundry at the throwaway's port, with its hot tables and key query. Each fault is undone in
a ``finally``; the healthy sandbox and the healthy throwaway pass every check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_security_postgres import make_cluster, remove, superuser_sql

from opsverify.backups.directory import human_size
from opsverify.profile import load_profile
from opsverify.profile.environment import Profile
from opsverify.sandbox.postgres import Postgres
from opsverify.sandbox.seed import seed_databases

Run = Callable[..., Any]
Variant = Callable[..., Path]
CHECKS = "maintenance/test_postgres_queries.py"
FILE = "test_postgres_queries.py::"
DB = "photonic_foundry"
PER_DATABASE = (
    "test_no_large_index_is_unused", "test_index_bloat_is_under_threshold",
    "test_no_large_table_is_read_by_sequential_scans", "test_pg_stat_statements_is_installed_and_loaded",
    "test_no_statement_is_slow",
)
KEY = "simulation-events"
HOT = ("simulations", "models")
NEVER_RESET = "the cluster was created (statistics never reset)"


def check(name: str, param: str = DB) -> str:
    return f"{FILE}{name}[{param}]"


def healthy_ids(key_queries: tuple[str, ...] = (KEY,), hot: tuple[str, ...] = HOT) -> set[str]:
    ids = {check(n) for n in PER_DATABASE}
    for q in key_queries:
        ids |= {check("test_key_query_runs_within_budget", f"{DB}:{q}"),
                check("test_key_query_has_no_seq_scan_on_a_large_table", f"{DB}:{q}")}
    return ids | {check("test_hot_table_statistics_are_fresh", f"{DB}:{t}") for t in hot}


@pytest.fixture(scope="module")
def cluster(sandbox: Profile) -> Iterator[Postgres]:
    made = make_cluster(sandbox)
    try:
        seed_databases(made)
        yield made
    finally:
        remove(made)


def on(port: int, **maintenance: Any) -> Callable[[dict[str, Any]], None]:
    """The variant: photonic_foundry alone at ``port``; ``maintenance`` entries extend (lists) or set its block."""

    def mutate(data: dict[str, Any]) -> None:
        db = {**data["databases"][0], "port": port}
        block = dict(db.get("maintenance", {}))
        for key, value in maintenance.items():
            block[key] = [*block.get(key, []), *value] if isinstance(value, list) else value
        db["maintenance"] = block
        data["databases"] = [db]
        data.pop("lifecycle", None)  # it names quantum_planner, which the variant leaves out

    return mutate


def where(cluster: Postgres) -> str:
    return f"database {DB} at 127.0.0.1:{cluster.port}/{DB}"


def scalar(cluster: Postgres, query: str) -> Any:
    with cluster.connect(DB) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def fails_exactly(run: Any, expected: dict[str, str], ids: set[str] | None = None) -> None:
    assert run.failed() == set(expected), run.result.stdout.str()[-3000:]
    for test, message in expected.items():
        assert run.message(test) == message
    others = (ids if ids is not None else healthy_ids()) - set(expected)
    assert {t for t in others if run.outcome(t) != "passed"} == set(), {t: run.outcome(t) for t in others}


def test_healthy_sandbox_passes_every_check(run_checks: Run, sandbox_profile: Path, sandbox: Profile) -> None:
    run = run_checks(sandbox_profile, CHECKS)
    assert run.failed() == set(), run.result.stdout.str()[-3000:]
    expected = {n for n in run.checks if n.startswith(FILE)}
    assert {t for t in expected if run.outcome(t) == "passed"} == expected
    assert len(expected) == 2 * len(PER_DATABASE) + 2 * 2 + 4  # two key queries (2 checks each), four hot tables


def test_healthy_throwaway_cluster_passes_every_check(run_checks: Run, profile_variant: Variant,
                                                     cluster: Postgres) -> None:
    fails_exactly(run_checks(profile_variant(on(cluster.port)), CHECKS), {})


def test_unused_index_on_the_large_table_fails(run_checks: Run, profile_variant: Variant, cluster: Postgres) -> None:
    try:
        superuser_sql(cluster, "CREATE INDEX simulation_events_value_idx ON simulation_events (value)", dbname=DB)
        run = run_checks(profile_variant(on(cluster.port)), CHECKS)
        size = human_size(int(scalar(cluster, "SELECT pg_relation_size('simulation_events_value_idx')")))
        table = human_size(int(scalar(cluster, "SELECT pg_table_size('simulation_events')")))
    finally:
        superuser_sql(cluster, "DROP INDEX IF EXISTS simulation_events_value_idx", dbname=DB)
    fails_exactly(run, {check("test_no_large_index_is_unused"): (
        f"{where(cluster)}: index public.simulation_events_value_idx ({size}) on table public.simulation_events "
        f"({table}) has had no scan since {NEVER_RESET}, expected every index of a large table in use: check it is "
        "unused on the replicas too and backs no constraint, then DROP INDEX CONCURRENTLY "
        "public.simulation_events_value_idx"
    )})


def test_bloated_index_fails(run_checks: Run, profile_variant: Variant, cluster: Postgres) -> None:
    from opsverify.probes.pgqueries import probe_queries

    try:
        superuser_sql(
            cluster,
            "CREATE TABLE readings (v bigint NOT NULL) WITH (autovacuum_enabled = false)",
            "INSERT INTO readings SELECT i FROM generate_series(1, 30000) AS i",
            "CREATE INDEX readings_v_idx ON readings (v)",
            *["UPDATE readings SET v = v + 1000000"] * 4,  # each update adds a new entry per row: 4/5 are dead
            "ANALYZE readings",
            dbname=DB,
        )
        variant = profile_variant(on(cluster.port))
        run = run_checks(variant, CHECKS)
        db = load_profile(variant).databases[0]
        facts = probe_queries(db, db.connect_budget * 5, db.connect_budget * 5)
    finally:
        superuser_sql(cluster, "DROP TABLE IF EXISTS readings", dbname=DB)
    bloat = next(b for b in facts.index_bloat if b.index == "readings_v_idx")
    assert bloat.percent > 70
    fails_exactly(run, {check("test_index_bloat_is_under_threshold"): (
        f"{where(cluster)}: index public.readings_v_idx on table public.readings is an estimated {bloat.percent:.0f}% "
        f"bloated ({human_size(bloat.bloat)} of {human_size(bloat.size)}), expected at most 50%: REINDEX INDEX "
        "CONCURRENTLY public.readings_v_idx"
    )})


def test_large_table_read_only_by_sequential_scans_fails(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    try:
        superuser_sql(
            cluster,
            "CREATE TABLE audit_trail AS SELECT i AS id, md5(i::text) AS digest FROM generate_series(1, 200000) AS i",
            *["SELECT count(*) FROM audit_trail WHERE digest = 'x'"] * 3,
            "CREATE TABLE audit_copy AS SELECT * FROM audit_trail",  # scanned less: the "and 1 more"
            *["SELECT count(*) FROM audit_copy WHERE digest = 'x'"] * 2,
            dbname=DB,
        )
        run = run_checks(profile_variant(on(cluster.port)), CHECKS)
        size = human_size(int(scalar(cluster, "SELECT pg_table_size('audit_trail')")))
        scans, rows = (int(scalar(cluster, f"SELECT {c} FROM pg_stat_user_tables WHERE relname = 'audit_trail'"))
                       for c in ("seq_scan", "seq_tup_read"))
    finally:
        superuser_sql(cluster, "DROP TABLE IF EXISTS audit_trail", "DROP TABLE IF EXISTS audit_copy", dbname=DB)
    assert scans >= 3
    fails_exactly(run, {check("test_no_large_table_is_read_by_sequential_scans"): (
        f"{where(cluster)}: table public.audit_trail ({size}) was read by sequential scans in 100% of its scans since "
        f"{NEVER_RESET} ({scans} sequential, 0 by index, {rows} rows read sequentially), and 1 more, expected at most "
        "50%: find "
        "the statements that scan it in pg_stat_statements and add the index they need (EXPLAIN)"
    )})


def test_slow_statement_fails_and_a_role_without_read_all_stats_fails_too(
    run_checks: Run, profile_variant: Variant, cluster: Postgres, tmp_path: Path
) -> None:
    password = tmp_path / "nostats.pass"
    password.write_text("nostats-secret\n")
    try:
        superuser_sql(cluster, *["SELECT pg_sleep(1.2)"] * 3, dbname=DB)
        run = run_checks(profile_variant(on(cluster.port)), CHECKS)
        queryid, mean = (scalar(cluster, f"SELECT {c} FROM pg_stat_statements WHERE query = 'SELECT pg_sleep($1)'")
                         for c in ("queryid", "round(mean_exec_time::numeric / 1000, 1)"))
        superuser_sql(cluster, "CREATE ROLE nostats LOGIN PASSWORD 'nostats-secret'",
                      "GRANT pg_read_all_data TO nostats")

        def as_nostats(data: dict[str, Any]) -> None:
            on(cluster.port)(data)
            data["databases"][0].update(user="nostats", password_file=str(password))

        hidden = run_checks(profile_variant(as_nostats, name="nostats.yaml"), CHECKS)
    finally:
        superuser_sql(cluster, "SELECT pg_stat_statements_reset()", dbname=DB)
        superuser_sql(cluster, "DROP ROLE IF EXISTS nostats")
    fails_exactly(run, {check("test_no_statement_is_slow"): (
        f"{where(cluster)}: statement {queryid} (SELECT pg_sleep($1)) has a mean execution time of {mean}s over 3 "
        "calls, expected at most 1s: EXPLAIN (ANALYZE) it and add the index it needs or rewrite it "
        "(pg_stat_statements holds the statement)"
    )})
    fails_exactly(hidden, {check("test_no_statement_is_slow"): (  # the fault is found: its text is what is hidden
        f"{where(cluster)}: a statement (queryid hidden) of another role, its text hidden from role nostats "
        f"(<insufficient privilege>), has a mean execution time of {mean}s over 3 calls, expected at most 1s: GRANT "
        "pg_read_all_stats TO nostats (or pg_monitor) to read it, then EXPLAIN (ANALYZE) it and add the index it "
        "needs or rewrite it"
    )})


def test_opsverify_own_statements_are_not_judged_slow(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    """A statement starting with ``/* opsverify */`` (the maintenance actions' checksums, these probes) is left out;
    every statement the query probe sends starts with it."""
    own = "SELECT query FROM pg_stat_statements WHERE userid = 'opsverify'::regrole ORDER BY query"
    try:
        superuser_sql(cluster, "SELECT pg_stat_statements_reset()", *["/* opsverify */ SELECT pg_sleep(1.1)"] * 2,
                      dbname=DB)
        run = run_checks(profile_variant(on(cluster.port)), CHECKS)
        with cluster.connect(DB) as conn:
            texts = [r[0] for r in conn.execute(own).fetchall()]
    finally:
        superuser_sql(cluster, "SELECT pg_stat_statements_reset()", dbname=DB)
    fails_exactly(run, {})
    assert run.checks[check("test_no_statement_is_slow")]["evidence"]["slow_statements"] == "0"
    assert any("pg_stat_database" in t for t in texts)  # the probe's statements are recorded, and marked
    assert [t for t in texts if not t.startswith("/* opsverify */")] == []


def test_pg_stat_statements_not_installed_fails(run_checks: Run, profile_variant: Variant, cluster: Postgres) -> None:
    try:
        superuser_sql(cluster, "DROP EXTENSION pg_stat_statements", dbname=DB)
        run = run_checks(profile_variant(on(cluster.port)), CHECKS)
    finally:
        superuser_sql(cluster, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname=DB)
    slow = check("test_no_statement_is_slow")
    fails_exactly(run, {check("test_pg_stat_statements_is_installed_and_loaded"): (
        f"{where(cluster)}: the pg_stat_statements extension is not installed, expected it installed and loaded: "
        f"CREATE EXTENSION pg_stat_statements in database {DB}"
    )}, healthy_ids() - {slow})
    assert run.outcome(slow) == "skipped"


def test_key_query_with_a_seq_scan_on_the_large_table_fails(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    query = {"name": "events-by-detail", "budget": "10s",
             "sql": "SELECT count(*) FROM simulation_events WHERE detail LIKE '%residual 0.5%'"}
    run = run_checks(profile_variant(on(cluster.port, key_queries=[query])), CHECKS)
    size = human_size(int(scalar(cluster, "SELECT pg_table_size('simulation_events')")))
    test = check("test_key_query_has_no_seq_scan_on_a_large_table", f"{DB}:events-by-detail")
    fails_exactly(run, {test: (
        f"{where(cluster)}: key query events-by-detail plans a sequential scan of public.simulation_events ({size}, at "
        "least large_table 10.0 MiB), expected index access: add an index on the columns it filters or joins by "
        "(EXPLAIN shows the plan)"
    )}, healthy_ids((KEY, "events-by-detail")))


def test_key_query_over_budget_fails(run_checks: Run, profile_variant: Variant, cluster: Postgres) -> None:
    query = {"name": "loss-pairs", "budget": "200ms",  # 25 million pairs of simulations: seconds, not 200ms
             "sql": "SELECT count(*) FROM simulations a, simulations b WHERE a.loss_db + b.loss_db > 5.9"}
    run = run_checks(profile_variant(on(cluster.port, key_queries=[query])), CHECKS)
    test = check("test_key_query_runs_within_budget", f"{DB}:loss-pairs")
    fails_exactly(run, {test: (
        f"{where(cluster)}: key query loss-pairs did not finish before it was cancelled at 400ms (twice its budget), "
        "expected within 200ms: EXPLAIN (ANALYZE) it and add the index it needs or rewrite it"
    )}, healthy_ids((KEY, "loss-pairs")))


def test_write_key_query_is_never_run_and_judged_by_its_pg_stat_statements_mean(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    query = {"name": "touch-simulation", "budget": "1s",
             "sql": "UPDATE simulations SET loss_db = loss_db + 1 WHERE id = 1"}
    def without_maintenance_user(data: dict[str, Any]) -> None:  # the monitoring role's own plan, or none
        on(cluster.port, key_queries=[query])(data)
        for key in ("maintenance_user", "maintenance_password_file"):
            data["databases"][0].pop(key, None)

    variant = profile_variant(without_maintenance_user)
    test = check("test_key_query_runs_within_budget", f"{DB}:touch-simulation")
    plan = check("test_key_query_has_no_seq_scan_on_a_large_table", f"{DB}:touch-simulation")
    ids = healthy_ids((KEY, "touch-simulation"))
    denied = run_checks(variant, CHECKS)  # the read-only role may not plan a write: skipped, naming the privilege
    fails_exactly(denied, {}, ids - {test, plan})
    assert {denied.outcome(test), denied.outcome(plan)} == {"skipped"}
    assert denied.message(test) == (
        f"{where(cluster)}: key query touch-simulation cannot be planned as role opsverify: permission denied for "
        "table simulations (EXPLAIN needs the privileges the statement needs: for a write, declare maintenance_user, "
        "the role it is then planned as in a read-only transaction, never run; for a read, grant SELECT to the role)"
    )
    row = "SELECT loss_db::text || '@' || xmin::text FROM simulations WHERE id = 1"
    before = scalar(cluster, row)
    superuser_sql(cluster, "GRANT UPDATE ON simulations TO opsverify", dbname=DB)
    try:
        untimed = run_checks(variant, CHECKS)
        assert scalar(cluster, row) == before  # planned, never run
    finally:
        superuser_sql(cluster, "REVOKE UPDATE ON simulations FROM opsverify", dbname=DB)
    fails_exactly(untimed, {}, ids - {test})
    assert untimed.outcome(test) == "skipped"
    assert untimed.message(test) == (
        f"{where(cluster)}: key query touch-simulation is a write, which opsverify never runs, and pg_stat_statements "
        "holds no timing of it: it cannot be timed here"
    )
    try:
        superuser_sql(cluster, "GRANT UPDATE ON simulations TO opsverify", *[query["sql"]] * 2, dbname=DB)
        timed = run_checks(variant, CHECKS)  # the application ran it twice: judged by its mean
    finally:
        superuser_sql(cluster, "REVOKE UPDATE ON simulations FROM opsverify", "SELECT pg_stat_statements_reset()",
                      dbname=DB)
    fails_exactly(timed, {}, ids)
    assert timed.checks[test]["evidence"]["calls"] == "2"


def test_hot_table_never_analyzed_and_a_missing_one_fail(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    try:
        superuser_sql(
            cluster,
            "CREATE TABLE solver_runs (id int) WITH (autovacuum_enabled = false)",
            "INSERT INTO solver_runs SELECT generate_series(1, 1000)",
            dbname=DB,
        )
        run = run_checks(profile_variant(on(cluster.port, hot_tables=["solver_runs", "solver_queue"])), CHECKS)
    finally:
        superuser_sql(cluster, "DROP TABLE IF EXISTS solver_runs", dbname=DB)
    hot = "test_hot_table_statistics_are_fresh"
    fails_exactly(run, {
        check(hot, f"{DB}:solver_runs"): (
            f"{where(cluster)}: hot table solver_runs has no planner statistics (pg_class.reltuples is -1: never "
            "analyzed), expected statistics analyzed within 7d: ANALYZE solver_runs (and check autovacuum analyzes it)"
        ),
        check(hot, f"{DB}:solver_queue"): (
            f"{where(cluster)}: hot table solver_queue does not exist, expected a table whose statistics are kept "
            "fresh: correct maintenance.hot_tables or create the table"
        ),
    }, healthy_ids(hot=(*HOT, "solver_runs", "solver_queue")))


def test_maintenance_selects_the_slow_query_log_rule(run_checks: Run, sandbox_profile: Path) -> None:
    """QP-26 is the security rule PG-SLOW-QUERY-LOG, selected by ``-m maintenance`` too (not duplicated)."""
    run = run_checks(sandbox_profile, "security/test_postgres_security.py", extra=("-m", "maintenance"))
    rule = "test_postgres_security.py::test_postgres_meets_security_rule[{}-PG-SLOW-QUERY-LOG]"
    assert set(run.checks) == {rule.format(db) for db in (DB, "quantum_planner")}
    assert {run.outcome(t) for t in run.checks} == {"passed"}



BYPASS = "SELECT 1; COMMIT; BEGIN READ WRITE; DELETE FROM victim_rows WHERE id > 90; COMMIT"
HIDDEN_BYPASS = "SELECT 1 /* ; */, ';', E'\\';'; COMMIT; BEGIN READ WRITE; DELETE FROM victim_rows -- ;"


def test_a_key_query_of_several_statements_or_transaction_control_is_refused_at_load(
    profile_variant: Variant, cluster: Postgres
) -> None:
    from opsverify.errors import ProfileError

    queries = [{"name": "bypass", "sql": BYPASS}, {"name": "hidden", "sql": HIDDEN_BYPASS},
               {"name": "commit", "sql": "COMMIT"}, {"name": "literals", "sql": "SELECT ';' /* ; */, 1 AS \"a;b\";"}]
    with pytest.raises(ProfileError) as caught:
        load_profile(profile_variant(on(cluster.port, key_queries=queries)))
    several = ("holds more than one statement (a ';' outside strings and comments): declare exactly one statement, "
               "the key query opsverify plans")
    assert [p.split(": ", 1)[1] for p in caught.value.problems] == [  # the literals query passes
        several, several, "starts with COMMIT, transaction control: declare the one statement the application runs, "
        "opsverify plans it in its own read-only transaction",
    ]
    assert [p.split(" (line", 1)[0] for p in caught.value.problems] == [
        f"databases[0].maintenance.key_queries[{i}].sql" for i in (1, 2, 3)]  # [0] is the sandbox's own


def test_a_key_query_bypassing_validation_changes_nothing(
    profile_variant: Variant, cluster: Postgres
) -> None:
    """The probe itself refuses several statements (extended protocol) and never runs a write, even one in a CTE,
    even when the role may write: row count and xmin unchanged."""
    from opsverify.probes.pgqueries import probe_queries
    from opsverify.profile.maintenance import KeyQuery

    rows = "SELECT count(*)::text || ':' || string_agg(xmin::text, ',' ORDER BY id) FROM victim_rows"
    queries = [KeyQuery.model_construct(name=name, sql=sql, budget=timedelta(seconds=1)) for name, sql in (
        ("bypass", BYPASS), ("hidden", HIDDEN_BYPASS),
        ("cte", "WITH d AS (DELETE FROM victim_rows WHERE id > 90 RETURNING id) SELECT count(*) FROM d"))]
    try:
        superuser_sql(cluster, "CREATE TABLE victim_rows AS SELECT generate_series(1, 100) AS id",
                      "GRANT SELECT, DELETE ON victim_rows TO opsverify", dbname=DB)
        before = scalar(cluster, rows)
        db = load_profile(profile_variant(on(cluster.port))).databases[0]
        db = db.model_copy(update={"maintenance": db.maintenance.model_copy(update={"key_queries": queries})})
        facts = probe_queries(db, db.connect_budget * 5, db.connect_budget * 5)
        after = scalar(cluster, rows)
    finally:
        superuser_sql(cluster, "DROP TABLE IF EXISTS victim_rows", dbname=DB)
    assert after == before
    assert before.startswith("100:")
    plans = facts.key_queries
    assert facts.error is None
    refused = "cannot insert multiple commands into a prepared statement"
    assert plans["bypass"].error == plans["hidden"].error == refused
    assert plans["cte"].write
    assert plans["cte"].error is None
    assert plans["cte"].elapsed is None


def test_a_table_locked_by_another_session_is_left_out_and_the_other_checks_pass(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    """LOCK TABLE … IN ACCESS EXCLUSIVE MODE held idle in a transaction: the sizes skip that table (named in the
    evidence), a key query reading it skips naming the lock, every other check passes."""
    query = {"name": "held", "budget": "1s", "sql": "SELECT count(*) FROM held_rows WHERE id = 7"}
    superuser_sql(cluster, "CREATE TABLE held_rows AS SELECT i AS id, md5(i::text) AS digest "
                  "FROM generate_series(1, 200000) AS i", "GRANT SELECT ON held_rows TO opsverify", dbname=DB)
    try:
        with cluster.connect(DB) as holder:
            holder.execute("BEGIN")
            holder.execute("LOCK TABLE held_rows IN ACCESS EXCLUSIVE MODE")
            run = run_checks(profile_variant(on(cluster.port, key_queries=[query])), CHECKS)
            holder.execute("ROLLBACK")
    finally:
        superuser_sql(cluster, "DROP TABLE IF EXISTS held_rows", dbname=DB)
    skipped = {check(n, f"{DB}:held") for n in ("test_key_query_runs_within_budget",
                                               "test_key_query_has_no_seq_scan_on_a_large_table")}
    fails_exactly(run, {}, healthy_ids((KEY, "held")) - skipped)
    for test in skipped:
        assert run.outcome(test) == "skipped"
        assert run.message(test) == (
            f"{where(cluster)}: key query held cannot be planned now: canceling statement due to lock timeout (a lock "
            "held by another session on a table it reads; test_no_session_waits_long_on_a_lock judges the lock): "
            "rerun once it is released"
        )
    for name in ("test_no_large_index_is_unused", "test_index_bloat_is_under_threshold",
                 "test_no_large_table_is_read_by_sequential_scans"):
        assert run.checks[check(name)]["evidence"]["locked_tables"] == "public.held_rows"
