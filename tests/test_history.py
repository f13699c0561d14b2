"""The run history: SQLite and PostgreSQL stores, retention, schema refusal, concurrent appends, the once-per-run
append (also under xdist), an unreachable store, ``opsverify history`` and the growth checks that read it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opsverify.localserver.net import free_port
from opsverify.profile import Profile
from opsverify.profile.reporting import History, HistoryDatabase
from opsverify.reporting.evidence import CheckResult, EvidenceDoc, RunInfo
from opsverify.reporting.history import HistoryError, Point, open_history

NOW = datetime.now(UTC).replace(microsecond=0)
SIZE = "checks/maintenance/test_postgres_health.py::test_database_size_is_under_its_threshold[photonic_foundry]"


def run_doc(started: datetime, *, run_id: str | None = None, profile: str = "sandbox",
            metrics: dict[str, float] | None = None, nodeid: str = SIZE,
            component: str = "photonic_foundry") -> EvidenceDoc:
    """An earlier run as a real one would have recorded it: one passed check carrying ``metrics``."""
    run = RunInfo(id=run_id or f"{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}", profile=profile, role="staging",
                  opsverify="0.1.0", started=started, finished=started + timedelta(seconds=30), host="ci-1",
                  totals={"passed": 1}, exit_status=0)
    check = CheckResult(nodeid=nodeid, component=component, runbook=["PF-26"], outcome="passed", duration_s=0.5,
                        metrics=metrics or {})
    return EvidenceDoc(run=run, checks=[check])


def test_sqlite_store_keeps_runs_checks_and_metrics(tmp_path: Path) -> None:
    store = open_history(History(), tmp_path, 5.0)
    assert store.where == str(tmp_path / "history.sqlite")
    first, second = NOW - timedelta(days=2), NOW - timedelta(days=1)
    store.append(run_doc(first, run_id="r1", metrics={"database_size_bytes": 1000.0}))
    store.append(run_doc(second, run_id="r2", metrics={"database_size_bytes": 1500.0}))
    store.append(run_doc(second, run_id="r3", profile="other", metrics={"database_size_bytes": 9.0}))
    assert [r.run_id for r in store.runs()] == ["r3", "r2", "r1"]
    row = store.runs(limit=1, profile="sandbox")[0]
    assert (row.run_id, row.started, row.finished, row.role, row.selection, row.exit_status, row.totals) == (
        "r2", second, second + timedelta(seconds=30), "staging", "(all)", 0, {"passed": 1})
    assert store.series("database_size_bytes", profile="sandbox") == [
        Point("r1", first, 1000.0, SIZE, "photonic_foundry"), Point("r2", second, 1500.0, SIZE, "photonic_foundry")]
    assert [p.run_id for p in store.series("database_size_bytes", since=second)] == ["r2", "r3"]
    store.close()
    with sqlite3.connect(tmp_path / "history.sqlite") as db:
        assert db.execute("SELECT run_id, outcome, runbook FROM checks ORDER BY run_id").fetchall() == [
            ("r1", "passed", "PF-26"), ("r2", "passed", "PF-26"), ("r3", "passed", "PF-26")]


def test_retention_deletes_runs_past_keep_and_beyond_max_runs(tmp_path: Path) -> None:
    store = open_history(History(keep=timedelta(days=30), max_runs=10), tmp_path, 5.0)
    store.append(run_doc(NOW - timedelta(days=31), run_id="old", metrics={"database_size_bytes": 1.0}))
    for n in range(11):
        store.append(run_doc(NOW - timedelta(days=20, hours=-n), run_id=f"r{n:02}", metrics={"x": float(n)}))
    assert sorted(r.run_id for r in store.runs(limit=100)) == [f"r{n:02}" for n in range(1, 11)]
    store.close()
    with sqlite3.connect(tmp_path / "history.sqlite") as db:
        assert db.execute("SELECT count(*), min(run_id) FROM checks").fetchone() == (10, "r01")
        assert db.execute("SELECT count(*), min(run_id) FROM metrics").fetchone() == (10, "r01")


def test_a_newer_schema_is_refused_in_one_sentence(tmp_path: Path) -> None:
    open_history(History(), tmp_path, 5.0).close()
    with sqlite3.connect(tmp_path / "history.sqlite") as db:
        db.execute("UPDATE schema SET version = 2")
    with pytest.raises(HistoryError) as refused:
        open_history(History(), tmp_path, 5.0)
    assert str(refused.value) == (
        f"{tmp_path / 'history.sqlite'}: its schema version is 2, newer than version 1 that opsverify 0.1.0 knows; "
        "fix: upgrade opsverify to the version that wrote it, or point reporting.history at another store")


APPENDER = """
import sys, uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_history import run_doc
from opsverify.profile.reporting import History
from opsverify.reporting.history import open_history
store = open_history(History(), Path(sys.argv[1]), 30.0)
for n in range(25):
    store.append(run_doc(datetime.now(UTC), run_id=sys.argv[2] + str(n), metrics={{"database_size_bytes": n}}))
store.close()
"""


def test_two_processes_appending_at_once_both_land(tmp_path: Path) -> None:
    script = APPENDER.format(tests=str(Path(__file__).parent))
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), name], stderr=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    assert [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs] == [(0, ""), (0, "")]
    store = open_history(History(), tmp_path, 5.0)
    assert sorted(r.run_id for r in store.runs(limit=100)) == sorted(f"{x}{n}" for x in "ab" for n in range(25))
    assert len(store.series("database_size_bytes")) == 50


@pytest.fixture
def scratch_history_db(sandbox: Profile) -> Iterator[HistoryDatabase]:
    """A scratch database on the test sandbox's PostgreSQL (as its restore target role), dropped after."""
    import psycopg

    target = sandbox.restore_target
    assert target is not None
    name = f"opsverify_scratch_history_{uuid.uuid4().hex[:8]}"
    admin: dict[str, Any] = dict(host=target.host, port=target.port, user=target.user, password=target.secret(),
                                 dbname="postgres", sslmode="require", autocommit=True, connect_timeout=5)
    with psycopg.connect(**admin) as db:
        db.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        yield HistoryDatabase(host=target.host, port=target.port, dbname=name, user=target.user,
                              password_file=target.password_file, sslmode="verify-full",
                              sslrootcert=target.sslrootcert, table_prefix="ops_hist_")
    finally:
        with psycopg.connect(**admin) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def test_postgres_store_appends_reads_and_retains(scratch_history_db: HistoryDatabase, tmp_path: Path) -> None:
    declared = History(postgres=scratch_history_db, keep=timedelta(days=30), max_runs=10)
    store = open_history(declared, tmp_path, 5.0, connect_timeout_s=5.0)
    db = scratch_history_db
    assert store.where == f"{db.user}@{db.host}:{db.port}/{db.dbname}"
    store.append(run_doc(NOW - timedelta(days=40), run_id="old", metrics={"database_size_bytes": 1.0}))
    for n in range(11):
        store.append(run_doc(NOW - timedelta(days=10, hours=-n), run_id=f"r{n:02}",
                             metrics={"database_size_bytes": 100.0 + n}))
    store.close()
    store = open_history(declared, tmp_path, 5.0)
    assert [r.run_id for r in store.runs(limit=3)] == ["r10", "r09", "r08"]
    assert [(p.run_id, p.value, p.time) for p in store.series("database_size_bytes")][:2] == [
        ("r01", 101.0, NOW - timedelta(days=10, hours=-1)), ("r02", 102.0, NOW - timedelta(days=10, hours=-2))]
    assert len(store.series("database_size_bytes")) == 10
    assert not (tmp_path / "history.sqlite").exists()
    store.close()


def test_a_newer_postgres_schema_is_refused(scratch_history_db: HistoryDatabase, tmp_path: Path) -> None:
    import psycopg

    open_history(History(postgres=scratch_history_db), tmp_path, 5.0).close()
    db = scratch_history_db
    with psycopg.connect(host=db.host, port=db.port, dbname=db.dbname, user=db.user, password=db.secret(),
                         sslmode="require", autocommit=True) as conn:
        conn.execute("UPDATE ops_hist_schema SET version = 7")
    with pytest.raises(HistoryError, match=r"its schema version is 7, newer than version 1 that opsverify"):
        open_history(History(postgres=scratch_history_db), tmp_path, 5.0)


def test_an_unreachable_postgres_store_is_named_without_its_password(tmp_path: Path) -> None:
    port = free_port()
    declared = HistoryDatabase(port=port, dbname="history", user="opsverify", password="s3cret-planted")
    with pytest.raises(HistoryError) as refused:
        open_history(History(postgres=declared), tmp_path, 2.0, connect_timeout_s=2.0)
    assert str(refused.value) == (
        f"opsverify@127.0.0.1:{port}/history: Connection refused; fix: check that the server runs and that "
        "reporting.history.postgres (host, port, dbname, user, password) is right")


HEALTH = "health/test_http_health.py"


def test_a_run_under_xdist_is_appended_once_with_every_workers_checks(
    run_checks: Any, sandbox_profile: Path, pytester: pytest.Pytester
) -> None:
    run = run_checks(sandbox_profile, HEALTH, extra=("-n", "2"))
    assert run.result.ret == 0, run.result.stdout.str()
    store_file = pytester.path / "history.sqlite"
    run.result.stdout.fnmatch_lines([f"history         appended to {store_file}"])
    with sqlite3.connect(store_file) as db:
        runs = db.execute("SELECT id, profile, exit_status, totals, selection FROM runs").fetchall()
        assert runs == [(run.evidence["run"]["id"], "sandbox", 0, '{"passed": 6}',
                         f"{Path(__file__).parents[1] / 'checks' / HEALTH} -n 2")]
        checks = db.execute("SELECT nodeid, outcome FROM checks ORDER BY nodeid").fetchall()
    assert checks == sorted((c["nodeid"], "passed") for c in run.evidence["checks"])
    assert len(checks) == 6


@pytest.mark.parametrize("flag", ["--collect-only", "--no-reports"])
def test_no_append_without_reports(flag: str, sandbox_profile: Path, pytester: pytest.Pytester) -> None:
    root = Path(__file__).parents[1]
    result = pytester.runpytest_subprocess(
        str(root / "checks" / HEALTH), str(root / "checks" / GROWTH), "--rootdir", str(root), "-c",
        str(root / "pyproject.toml"), "--profile", str(sandbox_profile), "--reports-root",
        str(pytester.path / "reports"), "-p", "no:randomly", "-rs", flag, timeout=240)
    assert result.ret == 0, result.stdout.str()
    assert not (pytester.path / "reports" / "history.sqlite").exists()  # the growth checks read none, made none
    assert "history " not in result.stdout.str()
    if flag == "--no-reports":
        result.stdout.fnmatch_lines([f"SKIPPED * 1 value(s) of database_size_bytes over 0h in the last 30d (this "
                                     f"run's and those recorded in {pytester.path / 'reports' / 'history.sqlite'})*"])


def test_an_unreachable_history_store_costs_the_run_one_line(
    run_checks: Any, profile_variant: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("HISTORY_PASSWORD", "s3cret-planted-pw")
    variant = profile_variant(lambda data: data.setdefault("reporting", {}).update(history={"postgres": {
        "port": port, "dbname": "history", "user": "opsverify", "password": "${HISTORY_PASSWORD}"}}))
    run = run_checks(variant, HEALTH)
    assert run.result.ret == 0, run.result.stdout.str()
    assert run.evidence["run"]["totals"] == {"passed": 6}
    run.result.stdout.fnmatch_lines([
        f"history         not appended to opsverify@127.0.0.1:{port}/history: Connection refused; fix: check that "
        "the server runs and that reporting.history.postgres (host, port, dbname, user, password) is right; this "
        f"run's evidence is in {run.report_dir / 'evidence.json'}"])
    assert "s3cret-planted-pw" not in run.result.stdout.str() + run.result.stderr.str()


def opsverify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opsverify", *args], capture_output=True, text=True, timeout=60)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%MZ")


def test_history_command_lists_runs_and_a_metric_trend(tmp_path: Path) -> None:
    store_file = tmp_path / "h.sqlite"
    store = open_history(History(sqlite=store_file), tmp_path, 5.0)
    days = [NOW - timedelta(days=d) for d in (30, 20, 10, 0)]
    for n, (day, size) in enumerate(zip(days, (1000, 1100, 1200, 1300), strict=True)):
        doc = run_doc(day, run_id=f"run{n}", metrics={"database_size_bytes": size * 1024.0 ** 2})
        if n == 3:
            doc.run.totals, doc.run.exit_status = {"passed": 5, "failed": 1}, 1
            doc.run.selection.markexpr = "weekly"
        store.append(doc)
    store.close()

    runs = opsverify("history", "--store", str(store_file), "--last", "2")
    assert (runs.returncode, runs.stderr) == (0, "")
    assert runs.stdout.splitlines() == [
        f"2 newest run(s) in {store_file}",
        "STARTED            PROFILE  ROLE     SELECTION  TOTALS              EXIT",
        f"{stamp(days[3])}  sandbox  staging  -m weekly  1 failed, 5 passed  1",
        f"{stamp(days[2])}  sandbox  staging  (all)      1 passed            0",
    ]
    trend = opsverify("history", "--store", str(store_file), "--metric", "database_size_bytes",
                      "--component", "photonic_foundry")
    assert (trend.returncode, trend.stderr) == (0, "")
    assert trend.stdout.splitlines() == [
        f"database_size_bytes of photonic_foundry: 4 point(s), {stamp(days[0])} → {stamp(days[3])}: 1000.0 MiB → "
        "1.3 GiB, +300.0 MiB per 30 days (+30.0%)",
        *(f"  {stamp(d)}  {s}  run{n}" for n, (d, s) in enumerate(zip(
            days, ("1000.0 MiB", "1.1 GiB   ", "1.2 GiB   ", "1.3 GiB   "), strict=True))),
    ]
    data = opsverify("history", "--store", str(store_file), "--metric", "database_size_bytes", "--json")
    parsed = __import__("json").loads(data.stdout)
    assert parsed["photonic_foundry"]["change_per_30d"] == pytest.approx(300 * 1024.0 ** 2)
    assert [p["run"] for p in parsed["photonic_foundry"]["points"]] == ["run0", "run1", "run2", "run3"]
    none = opsverify("history", "--store", str(store_file), "--metric", "backup_size_bytes")
    assert none.stdout == f"no values of backup_size_bytes recorded in {store_file}\n"
    short = opsverify("history", "--store", str(store_file), "--metric", "database_size_bytes", "--last", "2")
    assert short.stdout.splitlines()[0] == (
        f"database_size_bytes of photonic_foundry: 2 point(s), {stamp(days[2])} → {stamp(days[3])}: 1.2 GiB → 1.3 GiB; "
        "too few values for a rate (one needs 3 over at least 7d)"
    )


def test_history_command_names_a_missing_store(tmp_path: Path) -> None:
    missing = opsverify("history", "--store", str(tmp_path / "none.sqlite"))
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == (
        f"opsverify: no history store at {tmp_path / 'none.sqlite'}: a pytest run of the checks creates it (run "
        "pytest once, e.g. `pytest -m daily --profile=FILE`), or name one with --store PATH\n")
    assert not (tmp_path / "none.sqlite").exists()


GROWTH = "maintenance/test_growth.py"
GROWS = "test_growth.py::test_database_growth_is_within_bounds[photonic_foundry]"
PROJECTED = "test_growth.py::test_database_size_in_90_days_stays_under_capacity[photonic_foundry]"


def database_size(sandbox: Profile) -> int:
    """The sandbox database's real size now, as the check reads it."""
    import psycopg

    target = sandbox.restore_target
    assert target is not None
    with psycopg.connect(host=target.host, port=target.port, user=target.user, password=target.secret(),
                         dbname="photonic_foundry", sslmode="require", connect_timeout=5) as db:
        row = db.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    return int(row[0])


def earlier_sizes(store_dir: Path, profile: str, sizes: dict[int, float]) -> None:
    """Earlier runs (``days ago -> size``) of the size check, as a growing database would have recorded them."""
    store = open_history(History(), store_dir, 5.0)
    for days_ago, size in sizes.items():
        store.append(run_doc(NOW - timedelta(days=days_ago), profile=profile, metrics={"database_size_bytes": size}))
    store.close()


def with_capacity(limit: int | None, growth: float | None = None) -> Any:
    def mutate(data: dict[str, Any]) -> None:
        maintenance = data["databases"][0].setdefault("maintenance", {})
        if limit is not None:
            maintenance["max_database_size"] = limit
        if growth is not None:
            maintenance["max_growth_percent"] = growth
    return mutate


def test_a_fast_growing_database_fails_its_growth_bound(
    run_checks: Any, profile_variant: Any, sandbox: Profile, pytester: pytest.Pytester
) -> None:
    from opsverify.backups.directory import human_size

    size = database_size(sandbox)
    earlier_sizes(pytester.path, sandbox.name, {20: size / 2, 10: size * 3 / 4})
    run = run_checks(profile_variant(with_capacity(size * 10)), GROWTH)
    address = f"{sandbox.databases[0].host}:{sandbox.databases[0].port}/photonic_foundry"
    assert run.failed() == {GROWS}, run.result.stdout.str()
    assert run.message(GROWS) == (
        f"database photonic_foundry at {address}: its size grows 150% per 30 days (+{human_size(round(size * .75))}, "
        "least squares over 3 sizes in 20d; `opsverify history --metric database_size_bytes` shows them), over "
        "max_growth_percent 25%: find the tables that grow, archive or delete old data, or raise the limit once the "
        "growth is planned for")
    assert run.outcome(PROJECTED) == "passed"
    assert run.checks[GROWS]["metrics"]["database_growth_percent_per_30d"] == pytest.approx(150, abs=1)


def test_a_slow_growing_database_passes_unless_its_projection_exceeds_capacity(
    run_checks: Any, profile_variant: Any, sandbox: Profile, pytester: pytest.Pytester
) -> None:
    from opsverify.backups.directory import human_size

    size = database_size(sandbox)
    earlier_sizes(pytester.path, sandbox.name, {20: size * .95, 10: size * .975})
    run = run_checks(profile_variant(with_capacity(size * 2)), GROWTH)
    assert (run.outcome(GROWS), run.outcome(PROJECTED)) == ("passed", "passed"), run.result.stdout.str()
    assert run.checks[GROWS]["evidence"]["growth_per_30d"] == "7.9%"

    capacity = int(size * 1.1)
    run = run_checks(profile_variant(with_capacity(capacity), name="tight.yaml"), GROWTH)
    address = f"{sandbox.databases[0].host}:{sandbox.databases[0].port}/photonic_foundry"
    assert run.failed() == {PROJECTED}, run.result.stdout.str()
    assert run.message(PROJECTED) == (
        f"database photonic_foundry at {address}: its size, {human_size(size)} now and growing "
        f"{human_size(round(size * .075))} per 30 days (least squares over 3 sizes in 20d; `opsverify history "
        f"--metric database_size_bytes` shows them), reaches {human_size(round(size * 1.225))} in 90 days, over "
        f"max_database_size {human_size(capacity)}: plan the capacity now (more disk, then a higher "
        "max_database_size), or archive old data")


def test_too_little_history_skips_saying_what_is_recorded(
    run_checks: Any, profile_variant: Any, sandbox: Profile, pytester: pytest.Pytester
) -> None:
    size = database_size(sandbox)
    earlier_sizes(pytester.path, sandbox.name, {5: size, 40: size / 10})  # 40 days: outside the 30d window
    run = run_checks(profile_variant(), GROWTH)
    address = f"{sandbox.databases[0].host}:{sandbox.databases[0].port}/photonic_foundry"
    assert run.outcome(GROWS) == "skipped", run.result.stdout.str()
    assert run.message(GROWS) == (
        f"database photonic_foundry at {address}: 2 value(s) of database_size_bytes over 5d in the last 30d (this "
        f"run's and those recorded in {pytester.path / 'history.sqlite'}); a trend needs at least 3 over at least "
        "7d: let the scheduled runs record more")
    assert run.message(PROJECTED) == (
        "database photonic_foundry declares no maintenance.max_database_size, the capacity its 90-day projection is "
        "compared with: declare it to plan capacity (PF-15)")


BACKUP_GROWS = "test_backup_growth.py::test_backup_size_growth_is_within_bounds[pf-postgres-daily]"


def test_backup_size_growth_fails_fast_growth_and_passes_slow(
    run_checks: Any, sandbox_profile: Path, sandbox: Profile, pytester: pytest.Pytester
) -> None:
    from opsverify.backups.catalog import list_backups
    from opsverify.backups.directory import human_size

    source = next(s for s in sandbox.backups if s.name == "pf-postgres-daily")
    newest = list_backups(source, sandbox.timeouts).files[0]
    nodeid = "checks/backup/test_backup_size.py::test_newest_backup_is_not_empty[pf-postgres-daily]"
    store = open_history(History(), pytester.path, 5.0)
    for days_ago, share in ((20, 0.98), (10, 0.99)):
        store.append(run_doc(NOW - timedelta(days=days_ago), profile=sandbox.name, nodeid=nodeid,
                             component="pf-postgres-daily", metrics={"backup_size_bytes": newest.size * share}))
    store.close()
    run = run_checks(sandbox_profile, "backup/test_backup_growth.py")
    assert run.outcome(BACKUP_GROWS) == "passed", run.result.stdout.str()
    assert run.checks[BACKUP_GROWS]["evidence"]["growth_per_30d"] == "3.1%"
    assert run.outcome("test_backup_growth.py::test_backup_size_growth_is_within_bounds[qp-database-daily]") == (
        "skipped")

    (pytester.path / "history.sqlite").unlink()
    store = open_history(History(), pytester.path, 5.0)
    for days_ago, share in ((20, 0.4), (10, 0.7)):
        store.append(run_doc(NOW - timedelta(days=days_ago), profile=sandbox.name, nodeid=nodeid,
                             component="pf-postgres-daily", metrics={"backup_size_bytes": newest.size * share}))
    store.close()
    run = run_checks(sandbox_profile, "backup/test_backup_growth.py")
    assert run.failed() == {BACKUP_GROWS}, run.result.stdout.str()
    assert run.message(BACKUP_GROWS) == (
        f"backups of pf-postgres-daily: the newest backup's size grows 225% per 30 days "
        f"(+{human_size(round(newest.size * 0.9))}, least squares over 3 sizes in 20d; `opsverify history --metric "
        "backup_size_bytes` shows them), over max_growth_percent 50%: find what the backup holds now that it did not "
        "(the database's growth, a table or files added to it), then plan the storage or raise the limit: "
        f"{newest.location}")


RTO_TREND = "test_rto_trend.py::test_restore_time_trend_stays_inside_rto[pf-database-custom]"


def recorded_drills(store_dir: Path, profile: str, times: dict[int, float]) -> None:
    """Earlier drills of pf-database-custom (``days ago -> restore seconds``), as the drill check records them."""
    nodeid = "checks/restore/test_database_drill.py::test_restore_time_is_within_rto[pf-database-custom]"
    store = open_history(History(), store_dir, 5.0)
    for days_ago, value in times.items():
        store.append(run_doc(NOW - timedelta(days=days_ago), profile=profile, nodeid=nodeid,
                             component="pf-database-custom", metrics={"restore_rto_seconds": value}))
    store.close()


def test_a_restore_time_heading_past_the_rto_fails_its_trend(
    run_checks: Any, sandbox_profile: Path, sandbox: Profile, pytester: pytest.Pytester
) -> None:
    drill = next(d for d in sandbox.drills if d.name == "pf-database-custom")
    objective = sandbox.objective(drill.objective)
    rto = objective.rto.total_seconds()
    recorded_drills(pytester.path, sandbox.name, {180: rto * .2, 90: rto * .5, 0: rto * .8})
    run = run_checks(sandbox_profile, "recovery/test_rto_trend.py")
    assert run.failed() == {RTO_TREND}, run.result.stdout.str()
    assert run.message(RTO_TREND) == (
        f"drill pf-database-custom: its restore time, {fmt(rto * .8)} at the last drill ({NOW:%Y-%m-%d}) and rising "
        f"{fmt(rto * .1)} per 30 days (least squares over 3 drills in 180d; `opsverify history --metric "
        f"restore_rto_seconds --component pf-database-custom` shows them), reaches {fmt(rto * 1.1)} in 90 days, over "
        f"the {objective.component} RTO {fmt(rto)}: make the restore faster (pg_restore -j, a nearer backup copy, "
        "less data to restore) before the next drill, or agree a longer RTO")
    other = "test_rto_trend.py::test_restore_time_trend_stays_inside_rto[qp-database-gzip]"
    assert run.message(other) == (
        f"drill qp-database-gzip: 0 value(s) of restore_rto_seconds over 0h in the last 365d (recorded in "
        f"{pytester.path / 'history.sqlite'}); a trend needs at least 3 over at least 7d: let the scheduled runs "
        "record more")

    (pytester.path / "history.sqlite").unlink()
    recorded_drills(pytester.path, sandbox.name, {180: rto * .3, 90: rto * .3, 0: rto * .3})
    run = run_checks(sandbox_profile, "recovery/test_rto_trend.py")
    assert run.outcome(RTO_TREND) == "passed", run.result.stdout.str()
    assert run.checks[RTO_TREND]["evidence"]["projected_in_90d"] == fmt(rto * .3)


def fmt(value: float) -> str:
    from opsverify.durations import format_duration

    return format_duration(timedelta(seconds=value))


def test_history_command_reads_the_profiles_postgres_store(
    scratch_history_db: HistoryDatabase, profile_variant: Any, sandbox: Profile, tmp_path: Path
) -> None:
    db = scratch_history_db
    store = open_history(History(postgres=db), tmp_path, 5.0)
    started = NOW - timedelta(days=1)
    store.append(run_doc(started, run_id="ours", profile=sandbox.name))
    store.append(run_doc(NOW, run_id="theirs", profile="another"))
    store.close()
    variant = profile_variant(lambda data: data.setdefault("reporting", {}).update(history={"postgres": {
        "host": db.host, "port": db.port, "dbname": db.dbname, "user": db.user, "password_file": str(db.password_file),
        "sslmode": "verify-full", "sslrootcert": str(db.sslrootcert), "table_prefix": "ops_hist_"}}))
    listed = opsverify("history", "--profile", str(variant))
    assert (listed.returncode, listed.stderr) == (0, "")
    assert listed.stdout.splitlines() == [
        f"1 newest run(s) in {db.user}@{db.host}:{db.port}/{db.dbname}",
        "STARTED            PROFILE  ROLE     SELECTION  TOTALS    EXIT",
        f"{stamp(started)}  sandbox  staging  (all)      1 passed  0",
    ]


def test_a_store_that_is_no_sqlite_file_names_its_own_fix(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_text("not a database at all, just text " * 200)
    with pytest.raises(HistoryError) as refused:
        open_history(History(sqlite=garbage), tmp_path, 5.0)
    assert str(refused.value) == (f"{garbage}: file is not a database; fix: it is some other file: name a new file "
                                  "in reporting.history.sqlite (or move this one away)")
    folder = opsverify("history", "--store", str(tmp_path))
    assert (folder.returncode, folder.stdout) == (1, "")
    assert folder.stderr == (f"opsverify: the history store {tmp_path} is a directory: name the SQLite file (e.g. "
                             f"{tmp_path / 'history.sqlite'}) with --store or in reporting.history.sqlite\n")
class SilentServer:
    """A TCP server on loopback that accepts every connection and never says a word (a hung PostgreSQL)."""

    def __init__(self) -> None:
        import socket
        import threading

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.accepted.append(connection)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        for connection in self.accepted:
            connection.close()
        self.listener.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.stop()


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_growth_checks_are_broken_not_failed_when_the_history_store_never_answers(
    run_checks: Any, profile_variant: Any, silent_server: SilentServer, workers: tuple[str, ...]
) -> None:
    """A PostgreSQL history store that accepts TCP and never answers: the growth checks could not judge, so they
    are broken (not failed: the database did not grow), with one sentence each; the store is tried once per
    process (the session fixture keeps its exception), not once per check."""
    port = silent_server.port

    def mutate(data: dict[str, Any]) -> None:
        data.setdefault("timeouts", {})["connect"] = "2s"
        data.setdefault("reporting", {})["history"] = {"postgres": {
            "port": port, "dbname": "history", "user": "opsverify", "sslmode": "disable"}}

    run = run_checks(profile_variant(mutate), GROWTH, "backup/test_backup_growth.py", "recovery/test_rto_trend.py",
                     extra=workers)
    outcomes = {name: check["outcome"] for name, check in run.checks.items()}
    assert len(outcomes) >= 4, run.result.stdout.str()
    assert set(outcomes.values()) == {"broken"}, outcomes
    sentence = ("HistoryUnavailable: the run history cannot be read, so the trend cannot be judged: "
                f"opsverify@127.0.0.1:{port}/history: ")
    messages = {check["message"] for check in run.checks.values()}
    assert len(messages) == 1, messages
    [message] = messages
    assert message == sentence + ("connection timeout expired; fix: check that the server runs and that "
                                  "reporting.history.postgres (host, port, dbname, user, password) is right")
    assert "Traceback" not in run.result.stdout.str()
    # once per process that ran a check reading it (under -n 2 a worker may get none), then the controller's
    # append and the summary's charts, once each after every check: never once per check
    tries = {1} if not workers else {1, 2}
    assert len(silent_server.accepted) - 2 in tries, (len(silent_server.accepted), len(outcomes))
