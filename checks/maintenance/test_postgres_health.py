"""PostgreSQL sessions, locks, transaction ID age, vacuum state and sizes (issue 11; PF-25, PF-26, PF-38, QP-10).

Per database, one read-only session as the database's ``user`` (``pg_health_of``) reads everything;
each check judges one part against the database's ``maintenance`` thresholds. The session checks
need ``pg_monitor`` (``pg_read_all_stats``): without it PostgreSQL hides other roles' sessions, so
they skip naming the grant. No query text is ever read (it may hold secrets).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.backups.directory import human_size
from opsverify.durations import format_duration as fmt
from opsverify.probes.pghealth import PgHealth, TableHealth
from opsverify.profile import Database

pytestmark = [pytest.mark.maintenance, pytest.mark.weekly]
HealthOf = Callable[[Database], PgHealth]


def read(database: Database, pg_health_of: HealthOf) -> tuple[PgHealth, str]:
    """The database's health facts and the ``database X at host:port/db`` prefix; fails when unread."""
    health = pg_health_of(database)
    where = f"database {database.name} at {health.address}"
    expect(health.is_read, f"{where}: cannot read its health as role {health.role}: {health.error}")
    return health, where


def sessions_visible(health: PgHealth, where: str) -> None:
    """Skip, naming the grant, when the role cannot see other roles' sessions."""
    if health.stats_grant is not None:
        pytest.skip(f"{where}: role {health.role} cannot see other roles' sessions in pg_stat_activity: "
                    f"{health.stats_grant}")


def tables_read(health: PgHealth, where: str) -> None:
    expect(health.tables_error is None, f"{where}: {health.tables_error}")


def percent(value: float) -> str:
    return f"{value:.1f}%"


def more(count: int, what: str) -> str:
    """`` (3 sessions are)``-style note when more than one item is over the limit."""
    return f" ({count} {what})" if count > 1 else ""


def sizes(tables: tuple[TableHealth, ...]) -> str:
    return ", ".join(f"{t.name} {human_size(t.size)}" for t in tables) or "none"


@pytest.mark.runbook("PF-38")
def test_connections_are_under_the_limit(database: Database, pg_health_of: HealthOf, evidence: Recorder) -> None:
    """PF-38: client sessions stay under ``max_connections_percent`` of ``max_connections``."""
    health, where = read(database, pg_health_of)
    sessions_visible(health, where)
    limit = database.maintenance.max_connections_percent
    share = 100.0 * health.connections / health.max_connections if health.max_connections else 0.0
    evidence.record(connections=health.connections, max_connections=health.max_connections,
                    superuser_reserved_connections=health.superuser_reserved, share=percent(share),
                    max_connections_percent=f"{limit:g}%")
    expect(share < limit,
           f"{where}: {health.connections} of max_connections {health.max_connections} connections in use "
           f"({percent(share)}), expected under {limit:g}%: see who holds them in pg_stat_activity, end idle ones "
           f"or pool them (PgBouncer), or raise max_connections (superuser_reserved_connections keeps "
           f"{health.superuser_reserved} of them for superusers)")


@pytest.mark.runbook("PF-38")
def test_no_session_idle_in_transaction_too_long(
    database: Database, pg_health_of: HealthOf, evidence: Recorder
) -> None:
    """PF-38: no session stays idle in transaction longer than ``max_idle_in_transaction``."""
    health, where = read(database, pg_health_of)
    sessions_visible(health, where)
    limit = database.maintenance.max_idle_in_transaction
    over = [s for s in health.idle_in_transaction if s.age > limit]
    oldest = health.idle_in_transaction[0] if health.idle_in_transaction else None
    evidence.record(idle_in_transaction=len(health.idle_in_transaction), max_idle_in_transaction=fmt(limit),
                    oldest_idle=f"pid {oldest.pid} for {fmt(oldest.age)}" if oldest else "none")
    if over:
        s = over[0]
        fail(f"{where}: session {s.who()} has been idle in transaction for {fmt(s.age)}, expected at most "
             f"{fmt(limit)}{more(len(over), 'such sessions')}: end it with SELECT pg_terminate_backend({s.pid}) and "
             "set idle_in_transaction_session_timeout so the server ends such sessions")


@pytest.mark.runbook("PF-38")
def test_no_transaction_open_too_long(database: Database, pg_health_of: HealthOf, evidence: Recorder) -> None:
    """PF-38: no client transaction has been open longer than ``max_transaction_age``."""
    health, where = read(database, pg_health_of)
    sessions_visible(health, where)
    limit = database.maintenance.max_transaction_age
    s = health.oldest_transaction
    evidence.record(max_transaction_age=fmt(limit),
                    oldest_transaction=f"pid {s.pid} for {fmt(s.age)} ({s.state})" if s else "none")
    if s is not None and s.age > limit:
        fail(f"{where}: the transaction of session {s.who()} has been open for {fmt(s.age)} (state {s.state}), "
             f"expected at most {fmt(limit)}: find out what it waits for and end it with SELECT "
             f"pg_terminate_backend({s.pid}) if it is stuck; a long transaction holds back VACUUM and freezing")


@pytest.mark.runbook(by_kind={"postgres": ()})  # no runbook procedure asks for lock waits
def test_no_session_waits_long_on_a_lock(database: Database, pg_health_of: HealthOf, evidence: Recorder) -> None:
    """No session has waited for a lock longer than ``max_lock_wait``; the message names who blocks it."""
    health, where = read(database, pg_health_of)
    sessions_visible(health, where)
    limit = database.maintenance.max_lock_wait
    over = [w for w in health.lock_waits if w.waited > limit]
    longest = health.lock_waits[0] if health.lock_waits else None
    evidence.record(lock_waits=len(health.lock_waits), max_lock_wait=fmt(limit),
                    longest_lock_wait=f"pid {longest.session.pid} for {fmt(longest.waited)}" if longest else "none")
    if over:
        w = over[0]
        pids = ", ".join(str(p) for p in w.blocked_by)
        held = f"pid{'s' if len(w.blocked_by) > 1 else ''} {pids}"
        fail(f"{where}: session {w.session.who()} has waited {fmt(w.waited)} for a lock held by {held}, expected "
             f"at most {fmt(limit)}{more(len(over), 'sessions wait that long')}: see what {held} does in "
             f"pg_stat_activity, end it with SELECT pg_terminate_backend({w.blocked_by[0]}) if it is stuck, and set "
             "lock_timeout so sessions give up waiting")


@pytest.mark.runbook("PF-25")
def test_transaction_ids_are_far_from_wraparound(
    database: Database, pg_health_of: HealthOf, evidence: Recorder
) -> None:
    """PF-25: the oldest ``datfrozenxid`` of the server is younger than ``max_wraparound_percent`` of
    ``autovacuum_freeze_max_age``."""
    health, where = read(database, pg_health_of)
    limit = database.maintenance.max_wraparound_percent
    share = 100.0 * health.xid_age / health.freeze_max_age if health.freeze_max_age else 0.0
    evidence.record(xid_age=health.xid_age, xid_database=health.xid_database, xid_age_here=health.xid_age_here,
                    autovacuum_freeze_max_age=health.freeze_max_age, share=percent(share),
                    max_wraparound_percent=f"{limit:g}%")
    expect(share < limit,
           f"{where}: transaction ID age {health.xid_age} of database {health.xid_database} is {percent(share)} of "
           f"autovacuum_freeze_max_age {health.freeze_max_age}, expected under {limit:g}%: run VACUUM (FREEZE) in "
           f"{health.xid_database}, oldest tables first, and find what keeps autovacuum from freezing (autovacuum "
           "off, a long transaction, a stale replication slot or prepared transaction)")


def _overdue(tables: tuple[TableHealth, ...], age: Callable[[TableHealth], timedelta | None],
             limit: timedelta) -> list[TableHealth]:
    """Tables never done or done longer than ``limit`` ago: never first, then the oldest, then the largest."""
    late = [t for t in tables if (a := age(t)) is None or a > limit]
    return sorted(late, key=lambda t: (age(t) is not None, -(age(t) or timedelta(0)), -t.size))


def _large(health: PgHealth, evidence: Recorder) -> tuple[TableHealth, ...]:
    large = health.large_tables
    evidence.record(large_table=human_size(health.large_table), large_tables=sizes(large))
    return large


@pytest.mark.monthly
@pytest.mark.runbook("PF-25", "QP-10")
def test_large_tables_were_vacuumed_recently(database: Database, pg_health_of: HealthOf, evidence: Recorder) -> None:
    """PF-25/QP-10: every table at least ``large_table`` big was (auto)vacuumed within ``max_vacuum_age``."""
    health, where = read(database, pg_health_of)
    tables_read(health, where)
    limit = database.maintenance.max_vacuum_age
    evidence.record(max_vacuum_age=fmt(limit))
    late = _overdue(_large(health, evidence), lambda t: t.vacuumed, limit)
    if late:
        t = late[0]
        when = "was never vacuumed" if t.vacuumed is None else f"was last vacuumed {fmt(t.vacuumed)} ago"
        fail(f"{where}: table {t.name} ({human_size(t.size)}) {when}, expected within {fmt(limit)}"
             f"{more(len(late), 'large tables are overdue')}: run VACUUM (ANALYZE) {t.name} and check that "
             "autovacuum runs on it (autovacuum on, the table's autovacuum_enabled not off)")


@pytest.mark.monthly
@pytest.mark.runbook("PF-25", "QP-10")
def test_large_tables_were_analyzed_recently(database: Database, pg_health_of: HealthOf, evidence: Recorder) -> None:
    """PF-25/QP-10: every table at least ``large_table`` big was (auto)analyzed within ``max_analyze_age``."""
    health, where = read(database, pg_health_of)
    tables_read(health, where)
    limit = database.maintenance.max_analyze_age
    evidence.record(max_analyze_age=fmt(limit))
    late = _overdue(_large(health, evidence), lambda t: t.analyzed, limit)
    if late:
        t = late[0]
        when = "was never analyzed" if t.analyzed is None else f"was last analyzed {fmt(t.analyzed)} ago"
        fail(f"{where}: table {t.name} ({human_size(t.size)}) {when}, expected within {fmt(limit)}"
             f"{more(len(late), 'large tables are overdue')}: run ANALYZE {t.name} and check that autovacuum "
             "analyzes it (autovacuum on, the table's autovacuum_enabled not off)")


@pytest.mark.runbook("PF-25")
def test_large_tables_have_few_dead_tuples(database: Database, pg_health_of: HealthOf, evidence: Recorder) -> None:
    """PF-25: dead tuples are under ``max_dead_tuple_percent`` of each large table's tuples."""
    health, where = read(database, pg_health_of)
    tables_read(health, where)
    limit = database.maintenance.max_dead_tuple_percent
    large = _large(health, evidence)
    worst = max(large, key=lambda t: t.dead_percent, default=None)
    evidence.record(max_dead_tuple_percent=f"{limit:g}%",
                    most_dead=f"{worst.name} {worst.dead} of {worst.live + worst.dead} ({percent(worst.dead_percent)})"
                    if worst else "none")
    bloated = sorted((t for t in large if t.dead_percent >= limit), key=lambda t: -t.dead_percent)
    if bloated:
        t = bloated[0]
        fail(f"{where}: table {t.name} holds {t.dead} dead tuples, {percent(t.dead_percent)} of its "
             f"{t.live + t.dead}, expected under {limit:g}%{more(len(bloated), 'large tables are over')}: run VACUUM "
             f"{t.name} and find why autovacuum did not (the table's autovacuum_enabled off, a scale factor too "
             "high, a long transaction holding back cleanup)")


@pytest.mark.runbook("PF-26")
def test_database_size_is_under_its_threshold(database: Database, pg_health_of: HealthOf, evidence: Recorder) -> None:
    """PF-26: the database is no bigger than ``max_database_size``; its size and its largest tables are evidence
    either way (passes with "no threshold declared" when none is)."""
    health, where = read(database, pg_health_of)
    limit = database.maintenance.max_database_size
    evidence.record(database_size=health.database_size, database_size_human=human_size(health.database_size),
                    largest_tables=sizes(health.tables[:10]),
                    max_database_size=human_size(limit) if limit is not None else "no threshold declared")
    evidence.metric(database_size_bytes=health.database_size)
    if limit is not None:
        expect(health.database_size <= limit,
               f"{where}: the database is {human_size(health.database_size)}, over max_database_size "
               f"{human_size(limit)}: find what grew (its largest tables are in the evidence), archive or delete old "
               "data, or raise the threshold once the disk has room for it")


@pytest.mark.runbook("PF-26")
def test_table_sizes_are_under_their_thresholds(
    database: Database, pg_health_of: HealthOf, evidence: Recorder
) -> None:
    """PF-26: each table ``table_sizes`` names is no bigger than its own limit, every other table no bigger than
    ``max_table_size`` (passes with "no threshold declared" when neither is)."""
    health, where = read(database, pg_health_of)
    tables_read(health, where)
    m = database.maintenance
    evidence.record(largest_tables=sizes(health.tables[:10]),
                    max_table_size=human_size(m.max_table_size) if m.max_table_size is not None else
                    "no threshold declared", table_sizes=", ".join(f"{n} {human_size(s)}" for n, s in
                                                                   m.table_sizes.items()) or "none declared")
    missing = [d.declared for d in health.declared_tables if d.name is None]
    expect(not missing, f"{where}: table {', '.join(missing)} named in table_sizes does not exist: correct the name "
           "(schema.table) or remove it from maintenance.table_sizes")
    over: list[tuple[str, int, int, str]] = [
        (d.name, d.size, m.table_sizes[d.declared], "its table_sizes limit")
        for d in health.declared_tables
        if d.name is not None and d.size is not None and d.size > m.table_sizes[d.declared]
    ]
    if m.max_table_size is not None:
        declared = {d.name for d in health.declared_tables}
        over += [(t.name, t.size, int(m.max_table_size), "max_table_size") for t in health.tables
                 if t.name not in declared and t.size > m.max_table_size]
    if over:
        name, size, limit, source = max(over, key=lambda o: o[1] - o[2])
        fail(f"{where}: table {name} is {human_size(size)}, over {source} {human_size(limit)}"
             f"{more(len(over), 'tables are over')}: archive or delete old rows (then VACUUM FULL or pg_repack gives "
             "the space back), or raise the threshold once the disk has room for it")
