"""Benchmark: the PostgreSQL maintenance health set against ``check_postgres`` (Debian package ``check-postgres``).

Run with ``.venv/bin/python bench/bench_maintenance.py`` (``make bench``). It installs
``check-postgres`` with apt-get when missing (as root; otherwise it says how), makes a throwaway
PostgreSQL cluster in /tmp (a 13 MiB table with autovacuum off for it, VACUUM ANALYZEd), and then,
healthy and under each fault (dead tuples, idle in transaction, a lock wait, a large table never
vacuumed), times on the same database:

- ``check_postgres`` x9: the actions backends, bloat, txn_wraparound, last_vacuum, last_analyze,
  locks, query_time, txn_idle, database_size, one run each (a Perl process that starts ``psql``);
- ``opsverify probe``: ``probe_health`` in-process, the one read-only session every check of
  ``checks/maintenance/test_postgres_health.py`` reads (the checks then only compare numbers): what
  a pytest run spends per database once started;
- ``opsverify pytest``: ``pytest checks/maintenance/test_postgres_health.py`` in a new process
  (interpreter, plugins and report writing included), whose verdicts fill the table.

Timings are the best of 3; the ratio is opsverify probe / check_postgres (target <= 0.5x). Thresholds
are set alike where the tools measure alike (2s idle in transaction and lock wait for the faults,
80% connections, 7 days vacuum/analyze age, 50% of autovacuum_freeze_max_age, 20% dead tuples /
bloat of at least 1 MB; the dead-tuple fault is ANALYZEd, as autovacuum would, since check_postgres's
bloat estimate reads ``pg_class.relpages``). Where the verdicts differ the table says so; two
differences are by design:
``check_postgres`` counts only lock waits on relations of a database (a session blocked on another's
row lock waits on a transaction ID and is not counted), and its ``last_vacuum`` ignores a table that
was never vacuumed. It is not part of ``make test``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import yaml

from opsverify.localserver.net import free_port
from opsverify.pgtools import clean_env
from opsverify.probes.pghealth import probe_health
from opsverify.profile import Database, load_profile
from opsverify.sandbox.postgres import Postgres

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 3
DB = "photonic_foundry"
CHECK_PASSWORD = "bench-check-secret"
TABLE = "bench_events"
FREEZE_MAX_AGE = 200_000_000
# concern: (check_postgres action and its thresholds, the opsverify check judging the same)
PAIRS: dict[str, tuple[list[str], str]] = {
    "connections": (["--action=backends", "--warning=80%", "--critical=80%"], "test_connections_are_under_the_limit"),
    "dead tuples / bloat": (["--action=bloat", "--warning=1 MB and 20%", "--critical=1 MB and 20%"],
                            "test_large_tables_have_few_dead_tuples"),
    "XID wraparound": (["--action=txn_wraparound", f"--warning={FREEZE_MAX_AGE // 2}",
                        f"--critical={FREEZE_MAX_AGE // 2}"], "test_transaction_ids_are_far_from_wraparound"),
    "vacuum age": (["--action=last_vacuum", "--warning=7d", "--critical=7d"],
                   "test_large_tables_were_vacuumed_recently"),
    "analyze age": (["--action=last_analyze", "--warning=7d", "--critical=7d"],
                    "test_large_tables_were_analyzed_recently"),
    "lock waits": (["--action=locks", "--warning=waiting=1", "--critical=waiting=1"],
                   "test_no_session_waits_long_on_a_lock"),
    "long transaction/query": (["--action=query_time", "--warning=5m", "--critical=5m"],
                               "test_no_transaction_open_too_long"),
    "idle in transaction": (["--action=txn_idle", "--warning=2s", "--critical=2s"],
                            "test_no_session_idle_in_transaction_too_long"),
    "database size": (["--action=database_size", "--warning=10GB", "--critical=10GB"],
                      "test_database_size_is_under_its_threshold"),
}


def check_postgres() -> str:
    """The check_postgres program, installed with apt-get when missing (as root), else exit saying how."""
    found = shutil.which("check_postgres") or shutil.which("check_postgres.pl")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing check-postgres (apt-get install check-postgres) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "check-postgres"], env=env,
                       check=False, timeout=600, stdout=subprocess.DEVNULL)
        found = shutil.which("check_postgres") or shutil.which("check_postgres.pl")
        if found:
            return found
    sys.exit("check_postgres is not installed: run `sudo apt-get install check-postgres` (Debian/Ubuntu), or put "
             "check_postgres.pl from https://bucardo.org/check_postgres/ on the PATH, then run this again")


@contextmanager
def throwaway_cluster() -> Iterator[Postgres]:
    """A started cluster with the read-only ``opsverify`` role (pg_monitor) and a large table, removed after."""
    base = Path("/tmp") / f"opsverify-bench-maint-{uuid.uuid4().hex[:8]}"
    cluster = Postgres(base, os.geteuid() == 0, free_port(), "bench-superuser-secret")
    try:
        cluster.init(None)
        cluster.start()
        cluster.create_role_and_databases(CHECK_PASSWORD, "bench-replication-secret")
        with cluster.connect(DB) as conn:
            conn.execute(f"CREATE TABLE {TABLE} (id integer PRIMARY KEY, pad text NOT NULL) "
                         "WITH (autovacuum_enabled = false)")
            conn.execute(f"INSERT INTO {TABLE} SELECT i, repeat('x', 100) FROM generate_series(1, 100000) AS i")
            conn.execute(f"VACUUM (ANALYZE) {TABLE}")
        yield cluster
    finally:
        with suppress(Exception):
            cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def write_profile(cluster: Postgres, where: Path) -> Path:
    secret = where / "check-password"
    secret.write_text(CHECK_PASSWORD + "\n")
    secret.chmod(0o600)
    profile = {"name": "bench", "role": "staging", "databases": [{
        "name": "bench", "host": "127.0.0.1", "port": cluster.port, "dbname": DB, "user": "opsverify",
        "password_file": str(secret), "sslmode": "disable",
        "maintenance": {"max_idle_in_transaction": "2s", "max_lock_wait": "2s"},
    }]}
    path = where / "bench.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def session(cluster: Postgres, application: str) -> psycopg.Connection[Any]:
    return psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                           dbname=DB, application_name=application, connect_timeout=10)


def in_thread(conn: psycopg.Connection[Any], statement: str) -> threading.Thread:
    def work() -> None:
        with suppress(psycopg.Error):
            conn.execute(statement)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def wait_for(cluster: Postgres, query: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with cluster.connect(DB) as conn:
            row = conn.execute(query).fetchone()
        if row and row[0]:
            return
        time.sleep(0.2)
    sys.exit(f"bench fault never took effect: {query}")


@contextmanager
def healthy(cluster: Postgres) -> Iterator[None]:
    yield


@contextmanager
def dead_tuples(cluster: Postgres) -> Iterator[None]:
    with cluster.connect(DB) as conn:
        conn.execute(f"UPDATE {TABLE} SET pad = repeat('y', 100) WHERE id <= 50000")
        conn.execute(f"ANALYZE {TABLE}")  # as autovacuum's analyze would: check_postgres's estimate reads relpages
    wait_for(cluster, f"SELECT n_dead_tup >= 40000 FROM pg_stat_user_tables WHERE relname = '{TABLE}'")
    try:
        yield
    finally:
        with cluster.connect(DB) as conn:  # back to healthy: compacted (no free space left), vacuumed, analyzed
            conn.execute(f"VACUUM FULL {TABLE}")
            conn.execute(f"VACUUM (ANALYZE) {TABLE}")


@contextmanager
def idle_in_transaction(cluster: Postgres) -> Iterator[None]:
    with session(cluster, "bench-idle") as idle:
        idle.execute("SELECT 1")
        time.sleep(3)
        yield
        idle.rollback()


@contextmanager
def lock_wait(cluster: Postgres) -> Iterator[None]:
    with session(cluster, "bench-holder") as holder, session(cluster, "bench-blocked") as blocked:
        holder.execute(f"UPDATE {TABLE} SET pad = pad WHERE id = 1")
        worker = in_thread(blocked, f"UPDATE {TABLE} SET pad = pad WHERE id = 1")
        wait_for(cluster, "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        time.sleep(3)
        try:
            yield
        finally:
            holder.rollback()
            worker.join(timeout=10)
            blocked.rollback()


@contextmanager
def never_vacuumed(cluster: Postgres) -> Iterator[None]:
    with cluster.connect(DB) as conn:
        conn.execute(f"CREATE TABLE {TABLE}_new (id integer PRIMARY KEY, pad text NOT NULL) "
                     "WITH (autovacuum_enabled = false)")
        conn.execute(f"INSERT INTO {TABLE}_new SELECT i, repeat('x', 100) FROM generate_series(1, 100000) AS i")
        conn.execute(f"ANALYZE {TABLE}_new")
    try:
        yield
    finally:
        with cluster.connect(DB) as conn:
            conn.execute(f"DROP TABLE {TABLE}_new")


FAULTS: dict[str, Callable[[Postgres], Any]] = {
    "healthy": healthy, "dead tuples": dead_tuples, "idle in transaction": idle_in_transaction,
    "lock wait": lock_wait, "never vacuumed": never_vacuumed,
}


def run_check_postgres(program: str, cluster: Postgres) -> dict[str, str]:
    """Each action once (as the monitoring role): its verdict word (OK, WARNING, CRITICAL, UNKNOWN)."""
    env = clean_env(PGPASSWORD=CHECK_PASSWORD, PGSSLMODE="disable", PGCONNECT_TIMEOUT="5")
    common = ["--host=127.0.0.1", f"--port={cluster.port}", f"--dbname={DB}", "--dbuser=opsverify"]
    verdicts = {}
    for concern, (args, _) in PAIRS.items():
        done = subprocess.run([program, *common, *args], env=env, capture_output=True, text=True, timeout=60,
                              check=False)
        words = (done.stdout or done.stderr).split()
        verdicts[concern] = words[1].rstrip(":") if len(words) > 1 else f"exit {done.returncode}"
    return verdicts


def run_pytest(profile: Path, where: Path) -> dict[str, str]:
    """The health checks in a new pytest process: outcome per concern."""
    report = where / "report"
    shutil.rmtree(report, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "checks" / "maintenance" / "test_postgres_health.py"),
                    "--profile", str(profile), "--report-dir", str(report), "-p", "no:randomly", "-q",
                    "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml")],
                   cwd=where, capture_output=True, timeout=300, check=False)
    checks = {c["id"].split("::")[1].split("[")[0]: c["outcome"]
              for c in json.loads((report / "evidence.json").read_text())["checks"]}
    return {concern: checks.get(name, "?") for concern, (_, name) in PAIRS.items()}


def best(run: Callable[[], object]) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def timed_peer(program: str, cluster: Postgres) -> tuple[float, dict[str, str]]:
    """The best time of the nine check_postgres actions, and their verdicts."""
    verdicts: dict[str, str] = {}
    return best(lambda: verdicts.update(run_check_postgres(program, cluster))), verdicts


def judge_probe(db: Database, connect: timedelta, request: timedelta) -> None:
    health = probe_health(db, connect, request)
    if not health.is_read:
        sys.exit(f"opsverify could not read the bench database: {health.error}")


def main() -> None:
    program = check_postgres()
    with ExitStack() as stack:
        cluster = stack.enter_context(throwaway_cluster())
        where = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="opsverify-bench-maint-")))
        profile_path = write_profile(cluster, where)
        profile = load_profile(profile_path)
        db, t = profile.databases[0], profile.timeouts
        print(f"{program} ({len(PAIRS)} actions) vs opsverify's PostgreSQL health set on 127.0.0.1:{cluster.port}/"
              f"{DB}; best of {ROUNDS}; load {os.getloadavg()[0]:.2f}\n")
        print(f"{'fault':22} {'check_postgres':>15} {'opsverify probe':>16} {'ratio':>7} {'opsverify pytest':>17}")
        tables = {}
        for fault, make in FAULTS.items():
            with make(cluster):
                peer_time, theirs = timed_peer(program, cluster)
                probe_time = best(lambda: judge_probe(db, t.connect, t.request))
                started = time.perf_counter()
                verdicts = run_pytest(profile_path, where)
                pytest_time = time.perf_counter() - started
            tables[fault] = (theirs, verdicts)
            print(f"{fault:22} {peer_time * 1000:12.0f} ms {probe_time * 1000:13.0f} ms {probe_time / peer_time:6.2f}x "
                  f"{pytest_time * 1000:14.0f} ms")
        print("\nverdicts (check_postgres action | opsverify check), '*' where a tool flags the fault:")
        for fault, (theirs, ours_) in tables.items():
            print(f"\n{fault}:")
            for concern in PAIRS:
                peer_flag = "*" if theirs[concern] not in ("OK",) else " "
                our_flag = "*" if ours_[concern] != "passed" else " "
                differs = "   <- verdicts differ" if (peer_flag == "*") != (our_flag == "*") else ""
                print(f"  {concern:24} {peer_flag} {theirs[concern]:10} | {our_flag} {ours_[concern]:7}{differs}")


if __name__ == "__main__":
    main()
