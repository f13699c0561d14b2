"""PostgreSQL health checks (checks/maintenance/test_postgres_health.py) against real faults.

Every fault is made on a throwaway cluster of the test's own (``make_cluster`` of the security
self-tests: TLS with the sandbox CA's certificate, the ``opsverify`` role with the sandbox's
password and pg_monitor), reached by the sandbox profile with its port changed: a table bloated
by updates with autovacuum off for it, large tables never vacuumed or never analyzed, a session
idle in transaction, a long transaction, a session blocked on another's row lock, sizes over
declared thresholds, a role without pg_monitor. Transaction ID age and connections need a cluster
of their own (autovacuum off, ``autovacuum_freeze_max_age`` 100000, ``max_connections`` 10): one
per test, as burnt XIDs cannot be given back. Each fault is undone in a ``finally``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_security_postgres import make_cluster, remove, superuser_sql

from opsverify.backups.directory import human_size
from opsverify.profile.environment import Profile
from opsverify.sandbox.postgres import Postgres

Run = Callable[..., Any]
Variant = Callable[..., Path]
CHECKS = "maintenance/test_postgres_health.py"
CHECK = "test_postgres_health.py::{}[photonic_foundry]"
NAMES = (
    "test_connections_are_under_the_limit", "test_no_session_idle_in_transaction_too_long",
    "test_no_transaction_open_too_long", "test_no_session_waits_long_on_a_lock",
    "test_transaction_ids_are_far_from_wraparound", "test_large_tables_were_vacuumed_recently",
    "test_large_tables_were_analyzed_recently", "test_large_tables_have_few_dead_tuples",
    "test_database_size_is_under_its_threshold", "test_table_sizes_are_under_their_thresholds",
)
SESSION_CHECKS = NAMES[:4]
DB = "photonic_foundry"
# about 13 MiB with its primary key: above the default large_table (10 MiB)
LARGE_TABLE = """
CREATE TABLE {name} (id integer PRIMARY KEY, pad text NOT NULL) WITH (autovacuum_enabled = false);
INSERT INTO {name} SELECT i, repeat('x', 100) FROM generate_series(1, 100000) AS i;
"""


def check(name: str) -> str:
    return CHECK.format(name)


@pytest.fixture(scope="module")
def cluster(sandbox: Profile) -> Iterator[Postgres]:
    made = make_cluster(sandbox)
    try:
        yield made
    finally:
        remove(made)


def on(port: int, user: str | None = None, **thresholds: Any) -> Callable[[dict[str, Any]], None]:
    """The variant: photonic_foundry alone, at ``port``, with ``thresholds`` added to its ``maintenance``."""

    def mutate(data: dict[str, Any]) -> None:
        database = data["databases"][0]
        database = {**database, "port": port, "maintenance": {**database.get("maintenance", {}), **thresholds}}
        if user is not None:
            database["user"] = user
        data["databases"] = [database]
        data.pop("lifecycle", None)  # it names quantum_planner, which the variant drops

    return mutate


def where(cluster: Postgres) -> str:
    return f"database {DB} at 127.0.0.1:{cluster.port}/{DB}"


def evidence(run: Any, name: str) -> dict[str, str]:
    return dict(run.checks[check(name)]["evidence"])


def fails_exactly(run: Any, expected: dict[str, str]) -> None:
    assert run.failed() == {check(n) for n in expected}, run.result.stdout.str()[-3000:]
    for name, message in expected.items():
        assert run.message(check(name)) == message
    assert {n for n in NAMES if n not in expected and run.outcome(check(n)) != "passed"} == set()


@contextmanager
def session(cluster: Postgres, application: str, dbname: str = DB) -> Iterator[psycopg.Connection[Any]]:
    """A superuser session (not autocommit) named ``application``; closed after."""
    conn = psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                           dbname=dbname, application_name=application, connect_timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def scalar(cluster: Postgres, query: str, *params: Any) -> Any:
    with cluster.connect(DB) as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def wait_for(cluster: Postgres, query: str, *params: Any, timeout: float = 20) -> None:
    """Poll ``query`` (a new statement each time) until it answers true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scalar(cluster, query, *params):
            return
        time.sleep(0.2)
    raise AssertionError(f"never true: {query} {params}")


def in_thread(conn: psycopg.Connection[Any], statement: str) -> threading.Thread:
    """Run ``statement`` on ``conn`` in a thread (it blocks or sleeps); its error, when ended, is swallowed."""

    def work() -> None:
        with suppress(psycopg.Error):
            conn.execute(statement)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def measured(run: Any, name: str, key: str) -> str:
    """The duration after `` for `` in an evidence value such as ``pid 12 for 3.1s (active)``."""
    return evidence(run, name)[key].split(" for ", 1)[1].split(" ", 1)[0]


def test_healthy_sandbox_passes_every_check(run_checks: Run, sandbox_profile: Path, sandbox: Profile) -> None:
    run = run_checks(sandbox_profile, CHECKS)
    assert run.failed() == set(), run.result.stdout.str()[-3000:]
    expected = {f"test_postgres_health.py::{n}[{db.name}]" for db in sandbox.databases for n in NAMES}
    assert {t for t in expected if run.outcome(t) == "passed"} == expected
    sizes = evidence(run, "test_database_size_is_under_its_threshold")
    assert sizes["max_database_size"] == "no threshold declared"
    assert int(sizes["database_size"]) > 0
    assert "public.simulations" in sizes["largest_tables"]
    assert evidence(run, "test_table_sizes_are_under_their_thresholds")["max_table_size"] == "no threshold declared"


def test_healthy_throwaway_cluster_passes_every_check(run_checks: Run, profile_variant: Variant,
                                                      cluster: Postgres) -> None:
    fails_exactly(run_checks(profile_variant(on(cluster.port)), CHECKS), {})


def test_table_bloated_by_updates_fails_the_dead_tuple_check(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    table = "opsverify_test_bloat"
    try:
        superuser_sql(cluster, LARGE_TABLE.format(name=table), f"VACUUM (ANALYZE) {table}", dbname=DB)
        superuser_sql(cluster, f"UPDATE {table} SET pad = repeat('y', 100) WHERE id <= 50000", dbname=DB)
        wait_for(cluster, "SELECT n_dead_tup >= 50000 FROM pg_stat_user_tables WHERE relname = %s", table)
        run = run_checks(profile_variant(on(cluster.port)), CHECKS)
        dead, live = (int(scalar(cluster, f"SELECT n_{c}_tup FROM pg_stat_user_tables WHERE relname = %s", table))
                      for c in ("dead", "live"))
    finally:
        superuser_sql(cluster, f"DROP TABLE IF EXISTS {table}", dbname=DB)
    assert dead >= 40000
    fails_exactly(run, {
        "test_large_tables_have_few_dead_tuples":
            f"{where(cluster)}: table public.{table} holds {dead} dead tuples, {100 * dead / (dead + live):.1f}% of "
            f"its {dead + live}, expected under 20%: run VACUUM public.{table} and find why autovacuum did not (the "
            "table's autovacuum_enabled off, a scale factor too high, a long transaction holding back cleanup)",
    })


@pytest.mark.parametrize(("done", "check_name", "never"), [
    ("ANALYZE", "test_large_tables_were_vacuumed_recently",
     "was never vacuumed, expected within 7d: run VACUUM (ANALYZE) {t} and check that autovacuum runs on it"),
    ("VACUUM", "test_large_tables_were_analyzed_recently",
     "was never analyzed, expected within 7d: run ANALYZE {t} and check that autovacuum analyzes it"),
], ids=["never-vacuumed", "never-analyzed"])
def test_large_table_never_maintained_fails_its_check(
    run_checks: Run, profile_variant: Variant, cluster: Postgres, done: str, check_name: str, never: str
) -> None:
    table = "opsverify_test_unmaintained"
    try:
        superuser_sql(cluster, LARGE_TABLE.format(name=table), f"{done} {table}", dbname=DB)
        size = int(scalar(cluster, "SELECT pg_total_relation_size(%s::regclass)", table))
        run = run_checks(profile_variant(on(cluster.port)), CHECKS)
    finally:
        superuser_sql(cluster, f"DROP TABLE IF EXISTS {table}", dbname=DB)
    assert size >= 10 * 1024 * 1024
    fails_exactly(run, {
        check_name: f"{where(cluster)}: table public.{table} ({human_size(size)}) {never.format(t=f'public.{table}')} "
                    "(autovacuum on, the table's autovacuum_enabled not off)",
    })


def test_session_idle_in_transaction_fails_its_check(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    with session(cluster, "opsverify-test-idle") as idle:
        idle.execute("SELECT 1")  # BEGIN (not autocommit), then nothing: idle in transaction
        pid = idle.info.backend_pid
        time.sleep(3)
        run = run_checks(profile_variant(on(cluster.port, max_idle_in_transaction="2s")), CHECKS)
        idle.rollback()
    age = measured(run, "test_no_session_idle_in_transaction_too_long", "oldest_idle")
    fails_exactly(run, {
        "test_no_session_idle_in_transaction_too_long":
            f'{where(cluster)}: session pid {pid} (role postgres, application "opsverify-test-idle", client '
            f"127.0.0.1) has been idle in transaction for {age}, expected at most 2s: end it with SELECT "
            f"pg_terminate_backend({pid}) and set idle_in_transaction_session_timeout so the server ends such sessions",
    })


def test_long_transaction_fails_its_check(run_checks: Run, profile_variant: Variant, cluster: Postgres) -> None:
    with session(cluster, "opsverify-test-long") as busy:
        busy.execute("SELECT 1")  # the transaction starts here
        pid = busy.info.backend_pid
        worker = in_thread(busy, "SELECT pg_sleep(60)")  # and stays busy
        try:
            time.sleep(3)
            run = run_checks(profile_variant(on(cluster.port, max_transaction_age="2s")), CHECKS)
        finally:
            superuser_sql(cluster, f"SELECT pg_terminate_backend({pid})")
            worker.join(timeout=10)
    age = measured(run, "test_no_transaction_open_too_long", "oldest_transaction")
    fails_exactly(run, {
        "test_no_transaction_open_too_long":
            f"{where(cluster)}: the transaction of session pid {pid} (role postgres, application "
            f'"opsverify-test-long", client 127.0.0.1) has been open for {age} (state active), expected at most 2s: '
            f"find out what it waits for and end it with SELECT pg_terminate_backend({pid}) if it is stuck; a long "
            "transaction holds back VACUUM and freezing",
    })


def test_session_blocked_on_a_lock_fails_its_check(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    table = "opsverify_test_locked"
    superuser_sql(cluster, f"CREATE TABLE {table} (id integer PRIMARY KEY, v integer)",
                  f"INSERT INTO {table} VALUES (1, 0)", dbname=DB)
    try:
        with session(cluster, "opsverify-test-holder") as holder, session(cluster, "opsverify-test-blocked") as blocked:
            holder.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1")  # holds the row lock, idle in transaction
            worker = in_thread(blocked, f"UPDATE {table} SET v = v + 2 WHERE id = 1")
            try:
                wait_for(cluster, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                         blocked.info.backend_pid)
                time.sleep(3)
                run = run_checks(profile_variant(on(cluster.port, max_lock_wait="2s")), CHECKS)
            finally:
                holder.rollback()
                worker.join(timeout=10)
            blocked.rollback()
            held, waiting = holder.info.backend_pid, blocked.info.backend_pid
    finally:
        superuser_sql(cluster, f"DROP TABLE IF EXISTS {table}", dbname=DB)
    waited = measured(run, "test_no_session_waits_long_on_a_lock", "longest_lock_wait")
    fails_exactly(run, {
        "test_no_session_waits_long_on_a_lock":
            f'{where(cluster)}: session pid {waiting} (role postgres, application "opsverify-test-blocked", client '
            f"127.0.0.1) has waited {waited} for a lock held by pid {held}, expected at most 2s: see what pid {held} "
            f"does in pg_stat_activity, end it with SELECT pg_terminate_backend({held}) if it is stuck, and set "
            "lock_timeout so sessions give up waiting",
    })
    assert run.checks[check("test_no_session_waits_long_on_a_lock")]["runbook"] == []


def test_database_over_its_declared_size_fails_the_database_size_check(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    run = run_checks(profile_variant(on(cluster.port, max_database_size="1MiB")), CHECKS)
    size = int(evidence(run, "test_database_size_is_under_its_threshold")["database_size"])
    assert size == int(scalar(cluster, "SELECT pg_database_size(current_database())"))
    fails_exactly(run, {
        "test_database_size_is_under_its_threshold":
            f"{where(cluster)}: the database is {human_size(size)}, over max_database_size 1.0 MiB: find what grew "
            "(its largest tables are in the evidence), archive or delete old data, or raise the threshold once the "
            "disk has room for it",
    })


@pytest.mark.parametrize(("thresholds", "limit"), [
    ({"table_sizes": {"public.opsverify_test_sized": "8KiB"}}, "its table_sizes limit 8.0 KiB"),
    ({"max_table_size": "16KiB"}, "max_table_size 16.0 KiB"),
], ids=["table_sizes", "max_table_size"])
def test_table_over_its_declared_size_fails_the_table_size_check(
    run_checks: Run, profile_variant: Variant, cluster: Postgres, thresholds: dict[str, Any], limit: str
) -> None:
    table = "opsverify_test_sized"
    try:
        superuser_sql(cluster, f"CREATE TABLE {table} (id integer, pad text)",
                      f"INSERT INTO {table} SELECT i, repeat('x', 100) FROM generate_series(1, 2000) AS i", dbname=DB)
        size = int(scalar(cluster, "SELECT pg_total_relation_size(%s::regclass)", table))
        run = run_checks(profile_variant(on(cluster.port, **thresholds)), CHECKS)
    finally:
        superuser_sql(cluster, f"DROP TABLE IF EXISTS {table}", dbname=DB)
    fails_exactly(run, {
        "test_table_sizes_are_under_their_thresholds":
            f"{where(cluster)}: table public.{table} is {human_size(size)}, over {limit}: archive or delete old "
            "rows (then VACUUM FULL or pg_repack gives the space back), or raise the threshold once the disk has room "
            "for it",
    })


def test_declared_table_that_does_not_exist_fails_the_table_size_check(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    run = run_checks(profile_variant(on(cluster.port, table_sizes={"public.no_such_table": "1MiB"})), CHECKS)
    fails_exactly(run, {
        "test_table_sizes_are_under_their_thresholds":
            f"{where(cluster)}: table public.no_such_table named in table_sizes does not exist: correct the name "
            "(schema.table) or remove it from maintenance.table_sizes",
    })


def test_role_without_pg_monitor_skips_the_session_checks_naming_the_grant(
    run_checks: Run, profile_variant: Variant, cluster: Postgres, sandbox: Profile
) -> None:
    from psycopg import sql

    role = "opsverify_plain"
    with cluster.connect() as conn:
        conn.execute("SET pg_stat_statements.track_utility = off")  # keeps the password out of its table
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(sandbox.databases[0].secret() or "")))
    try:
        run = run_checks(profile_variant(on(cluster.port, user=role)), CHECKS)
    finally:
        superuser_sql(cluster, f"DROP ROLE IF EXISTS {role}")
    assert run.failed() == set(), run.result.stdout.str()[-3000:]
    for name in SESSION_CHECKS:
        assert run.outcome(check(name)) == "skipped"
        assert run.message(check(name)) == (
            f"{where(cluster)}: role {role} cannot see other roles' sessions in pg_stat_activity: GRANT pg_monitor "
            f"TO {role} (or pg_read_all_stats)"
        )
    assert {n for n in NAMES[4:] if run.outcome(check(n)) != "passed"} == set()


@pytest.fixture
def small_cluster(sandbox: Profile) -> Iterator[Postgres]:
    """A throwaway cluster with autovacuum off, autovacuum_freeze_max_age 100000 (its minimum) and 10 connections,
    one of them reserved for superusers."""
    made = make_cluster(sandbox)
    try:
        made.append_settings("postgresql.conf", {
            "autovacuum": "off", "autovacuum_freeze_max_age": "100000", "max_connections": "10",
            "superuser_reserved_connections": "1",
        })
        made.stop()
        made.start()
        yield made
    finally:
        remove(made)


def test_transaction_ids_burnt_towards_wraparound_fail_the_xid_check(
    run_checks: Run, profile_variant: Variant, small_cluster: Postgres
) -> None:
    superuser_sql(small_cluster, """
        CREATE PROCEDURE opsverify_burn(n integer) LANGUAGE plpgsql AS $$
        BEGIN
            FOR i IN 1..n LOOP
                PERFORM txid_current();
                COMMIT;
            END LOOP;
        END $$""", "SET synchronous_commit = off", "CALL opsverify_burn(60000)")
    run = run_checks(profile_variant(on(small_cluster.port)), CHECKS)
    facts = evidence(run, "test_transaction_ids_are_far_from_wraparound")
    age, database = int(facts["xid_age"]), facts["xid_database"]
    assert 60000 <= age < 100000
    assert facts["autovacuum_freeze_max_age"] == "100000"
    share = f"{100.0 * age / 100000:.1f}%"
    fails_exactly(run, {
        "test_transaction_ids_are_far_from_wraparound":
            f"{where(small_cluster)}: transaction ID age {age} of database {database} is {share} of "
            f"autovacuum_freeze_max_age 100000, expected under 50%: run VACUUM (FREEZE) in {database}, oldest tables "
            "first, and find what keeps autovacuum from freezing (autovacuum off, a long transaction, a stale "
            "replication slot or prepared transaction)",
    })


def test_too_many_connections_fail_the_connection_check(
    run_checks: Run, profile_variant: Variant, small_cluster: Postgres
) -> None:
    held = [psycopg.connect(host="127.0.0.1", port=small_cluster.port, user="postgres",
                            password=small_cluster.password, dbname="postgres", connect_timeout=10)
            for _ in range(8)]
    try:
        run = run_checks(profile_variant(on(small_cluster.port)), CHECKS)  # the check's own session is the 9th
    finally:
        for conn in held:
            conn.close()
    fails_exactly(run, {
        "test_connections_are_under_the_limit":
            f"{where(small_cluster)}: 9 of max_connections 10 connections in use (90.0%), expected under 80%: see who "
            "holds them in pg_stat_activity, end idle ones or pool them (PgBouncer), or raise max_connections "
            "(superuser_reserved_connections keeps 1 of them for superusers)",
    })


def test_the_sandbox_daily_vacuum_clears_a_large_table_never_vacuumed_nor_analyzed(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    """The sandbox scheduler's daily job (``upkeep.vacuum_analyze``) is what keeps its large tables passing."""
    from opsverify.sandbox import upkeep

    table = "opsverify_test_upkeep"
    now = time.time()
    try:
        superuser_sql(cluster, LARGE_TABLE.format(name=table), dbname=DB)
        assert upkeep.vacuum_due(cluster, now)  # never noted on this cluster
        assert upkeep.vacuum_analyze(cluster) == ("photonic_foundry", "quantum_planner")
        assert not upkeep.vacuum_due(cluster, time.time())
        assert upkeep.vacuum_due(cluster, time.time() + upkeep.VACUUM_EVERY)
        wait_for(cluster, "SELECT last_vacuum IS NOT NULL AND last_analyze IS NOT NULL FROM pg_stat_user_tables "
                 "WHERE relname = %s", table)
        run = run_checks(profile_variant(on(cluster.port)), CHECKS)
    finally:
        superuser_sql(cluster, f"DROP TABLE IF EXISTS {table}", dbname=DB)
        upkeep.vacuum_stamp(cluster).unlink(missing_ok=True)
    fails_exactly(run, {})
    assert f"public.{table}" in evidence(run, "test_large_tables_were_vacuumed_recently")["large_tables"]


def test_table_held_by_an_exclusive_lock_fails_the_table_checks_not_the_probe(
    run_checks: Run, profile_variant: Variant, cluster: Postgres
) -> None:
    """A size needs an ACCESS SHARE lock: under a lock timeout the table part fails, the session part still reads."""
    table = "opsverify_test_exclusive"
    superuser_sql(cluster, f"CREATE TABLE {table} (id integer)", dbname=DB)
    try:
        with session(cluster, "opsverify-test-exclusive") as holder:
            holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # then idle in transaction
            run = run_checks(profile_variant(on(cluster.port)), CHECKS)
            holder.rollback()
    finally:
        superuser_sql(cluster, f"DROP TABLE IF EXISTS {table}", dbname=DB)
    message = (f"{where(cluster)}: cannot read the table sizes: canceling statement due to lock timeout (a session "
               "holds a lock on a table)")
    fails_exactly(run, {name: message for name in (
        "test_large_tables_were_vacuumed_recently", "test_large_tables_were_analyzed_recently",
        "test_large_tables_have_few_dead_tuples", "test_table_sizes_are_under_their_thresholds",
    )})
