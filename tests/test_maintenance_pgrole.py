"""PostgreSQL sessions and roles of the maintenance checks and fixtures, against real faults.

- A server cut off mid-query (a network partition: the check runs in a network namespace whose veth link
  is taken down while its query waits on a lock and its backend is SIGSTOPped) fails the check within the
  keepalive bound instead of hanging. (SIGSTOP alone on loopback would not do: the kernel still ACKs.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_security_postgres import make_cluster, remove, superuser_sql

from opsverify.backups.directory import human_size
from opsverify.profile.environment import Profile
from opsverify.sandbox.postgres import Postgres
from opsverify.sandbox.seed import seed_databases

ROOT = Path(__file__).resolve().parents[1]
Variant = Callable[..., Path]
Run = Callable[..., Any]
DB = "photonic_foundry"
CHECKS = "maintenance/test_postgres_queries.py"


# ---------------------------------------------------------------------------------------------- a partition


@dataclass(frozen=True)
class Namespace:
    """A network namespace joined to this one by a veth pair: ``host_ip`` here, ``peer_ip`` inside ``name``."""

    name: str
    host_link: str
    peer_link: str
    host_ip: str
    peer_ip: str

    def cut(self) -> None:
        """The partition: this end of the link goes down, so the veth silently drops what the namespace sends."""
        ip("link", "set", self.host_link, "down")

    def mend(self) -> None:
        ip("link", "set", self.host_link, "up")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=10, capture_output=True)


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a network partition needs root and iproute2 (ip netns, veth)")
    tag = f"{os.getpid() % 100000}"
    subnet = f"10.231.{os.getpid() % 250}"
    ns = Namespace(f"opsverify-pgrole-{tag}", f"ovh{tag}", f"ovn{tag}", f"{subnet}.1", f"{subnet}.2")
    ip("netns", "add", ns.name)
    try:
        ip("link", "add", ns.host_link, "type", "veth", "peer", "name", ns.peer_link)
        ip("link", "set", ns.peer_link, "netns", ns.name)
        ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.host_link)
        ip("link", "set", ns.host_link, "up")
        ip("-n", ns.name, "addr", "add", f"{ns.peer_ip}/30", "dev", ns.peer_link)
        ip("-n", ns.name, "link", "set", ns.peer_link, "up")
        ip("-n", ns.name, "link", "set", "lo", "up")
        mac = Path(f"/sys/class/net/{ns.host_link}/address").read_text().strip()  # no ARP: a cut link times out
        ip("-n", ns.name, "neigh", "replace", ns.host_ip, "lladdr", mac, "dev", ns.peer_link, "nud", "permanent")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", ns.host_link], timeout=10, capture_output=True, check=False)
        ip("netns", "del", ns.name)
    assert ns.name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout


@pytest.fixture
def reachable_cluster(sandbox: Profile, namespace: Namespace) -> Iterator[Postgres]:
    """A throwaway cluster (make_cluster) listening on loopback and on the veth address the namespace reaches."""
    made = make_cluster(sandbox)
    try:
        superuser_sql(made, f"ALTER SYSTEM SET listen_addresses = '127.0.0.1,{namespace.host_ip}'")
        with (made.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"\nhost all all {namespace.peer_ip}/32 scram-sha-256\n")
        made.stop()
        made.start()
        yield made
    finally:
        remove(made)


WAITING = "SELECT pid FROM pg_stat_activity WHERE client_addr = %s::inet AND wait_event_type = 'Lock'"


def run_in(namespace: Namespace, profile: Path, report: Path, target: str) -> subprocess.Popen[str]:
    """The checks of ``target`` run by a pytest process inside the namespace (its TCP goes through the veth)."""
    args = ["ip", "netns", "exec", namespace.name, sys.executable, "-m", "pytest", str(ROOT / "checks" / target),
            "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), "--profile", str(profile),
            "--report-dir", str(report), "-p", "no:randomly", "-p", "no:cacheprovider"]
    return subprocess.Popen(args, cwd=report.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def outcomes(report: Path) -> dict[str, tuple[str, str]]:
    evidence = json.loads((report / "evidence.json").read_text())
    return {c["nodeid"].split("/")[-1]: (c["outcome"], c["message"]) for c in evidence["checks"]}


HEALTH = "maintenance/test_postgres_health.py"


def test_a_partition_mid_query_fails_the_check_within_the_keepalive_bound(
    profile_variant: Variant, reachable_cluster: Postgres, namespace: Namespace, tmp_path: Path
) -> None:
    from opsverify.probes.postgres import lost, tcp_options

    def mutate(data: dict[str, Any]) -> None:
        db = {**data["databases"][0], "host": namespace.host_ip, "port": reachable_cluster.port, "sslmode": "require"}
        data["databases"] = [db]
        data["timeouts"] = {"connect": "3s", "request": "10s"}
        data.pop("lifecycle", None)

    variant = profile_variant(mutate)
    assert tcp_options(timedelta(seconds=3), timedelta(seconds=10)) == {
        "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 1, "keepalives_count": 3,
        "tcp_user_timeout": 13000,
    }
    superuser_sql(reachable_cluster, "CREATE TABLE held_rows (id int)", dbname=DB)
    healthy = tmp_path / "healthy"
    output, _ = run_in(namespace, variant, healthy, HEALTH).communicate(timeout=120)
    checks = outcomes(healthy)
    assert len(checks) == 10, output[-3000:]
    assert {o for o, _ in checks.values()} == {"passed"}, output[-3000:]

    report = tmp_path / "report"
    stopped: list[int] = []
    with reachable_cluster.connect(DB) as holder, reachable_cluster.connect() as watcher:
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE held_rows IN ACCESS EXCLUSIVE MODE")  # the probe's table sizes wait for it
        proc = run_in(namespace, variant, report, HEALTH)
        try:
            deadline = time.monotonic() + 60
            while not stopped and time.monotonic() < deadline and proc.poll() is None:
                stopped = [int(r[0]) for r in watcher.execute(WAITING, (namespace.peer_ip,)).fetchall()]
                time.sleep(0.01)
            assert stopped, "the check's query never waited on the server"
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)  # the query in flight gets no answer (nor its lock timeout) ...
            namespace.cut()  # ... and nothing gets through: not even the server kernel's ACK of a keepalive probe
            cut_at = time.monotonic()
            output, _ = proc.communicate(timeout=120)
            elapsed = time.monotonic() - cut_at
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
            namespace.mend()
            holder.execute("ROLLBACK")
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert elapsed < 45, (elapsed, output[-3000:])  # 13 s of silence, then the rest of the run (was: forever)
    where = f"database {DB} at {namespace.host_ip}:{reachable_cluster.port}/{DB}"
    cause = lost(timedelta(seconds=3), timedelta(seconds=10))
    assert cause == ("the server stopped answering mid-session: no TCP reply within 13s (the 10s query timeout, then "
                     "3 keepalive probes 1s apart): check the network path to it and that its host and postmaster run")
    found = outcomes(report)
    assert set(found) == set(checks), output[-3000:]
    assert {o for o, _ in found.values()} == {"failed"}, output[-3000:]
    first, *later = found.values()
    assert first[1] == f"{where}: cannot read its health as role opsverify: {cause}"
    skipped = re.compile(
        re.escape(f"{where}: cannot read its health as role opsverify: skipped probing: {DB} at "
                  f"{namespace.host_ip}:{reachable_cluster.port} did not answer at ")
        + r"\d\d:\d\d:\d\d" + re.escape(f" ({cause})")
    )
    assert all(skipped.fullmatch(m) for _, m in later), later


# ---------------------------------------------------------------------------------------------- profile check --connect


def profile_check(profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opsverify", "profile", "check", str(profile), *extra],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)


def connect_rows(stdout: str) -> dict[tuple[str, str], str]:
    """(component, kind) -> the RESULT cell of the ``--connect`` table."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("COMPONENT"))
    kind_at, address_at, result_at = (lines[header].index(w) for w in ("KIND", "ADDRESS", "RESULT"))
    return {(line[:kind_at].strip(), line[kind_at:address_at].strip()): line[result_at:]
            for line in lines[header + 1:] if len(line) > result_at}


def test_connect_logs_in_as_the_maintenance_role_and_names_the_field_to_fix(
    profile_variant: Variant, sandbox: Profile, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-maintenance-password-4242\n")
    pf, qp = sandbox.databases
    assert pf.maintenance_user == qp.maintenance_user == "postgres"

    def faults(data: dict[str, Any]) -> None:
        data["databases"][0]["maintenance_password_file"] = str(wrong)
        data["databases"][1]["maintenance_user"] = "opsverify_no_such_maintainer"

    done = profile_check(profile_variant(faults), "--connect")
    table = connect_rows(done.stdout)
    assert done.returncode == 1, done.stdout + done.stderr
    refused = ("FAILED: as role {0} (the maintenance user): password authentication failed for user \"{0}\": check "
               "maintenance_user and its maintenance_password (or maintenance_password_file)")
    assert {k: v for k, v in table.items() if not v.startswith("ok: ")} == {
        (pf.name, "maintenance role"): refused.format("postgres"),
        (qp.name, "maintenance role"): refused.format("opsverify_no_such_maintainer"),
    }
    assert "not-the-maintenance-password-4242" not in done.stdout + done.stderr
    assert table[(pf.name, "database")].endswith(f" as {pf.user}")  # the checking role still logs in

    def no_password(data: dict[str, Any]) -> None:
        data["databases"][0].pop("maintenance_password_file")

    done = profile_check(profile_variant(no_password), "--connect")
    assert done.returncode == 1, done.stdout + done.stderr
    assert {k: v for k, v in connect_rows(done.stdout).items() if not v.startswith("ok: ")} == {
        (pf.name, "maintenance role"): "FAILED: as role postgres (the maintenance user): fe_sendauth: no password "
        "supplied: set maintenance_password or maintenance_password_file"}

    done = profile_check(profile_variant(), "--connect")  # the healthy sandbox's maintenance role logs in
    healthy = connect_rows(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    for db in (pf, qp):
        assert re.fullmatch(r"ok: PostgreSQL 15[\d.]* as postgres \(the maintenance user\)",
                            healthy[(db.name, "maintenance role")])


# ---------------------------------------------------------------------------------------------- write key queries


@pytest.fixture(scope="module")
def seeded(sandbox: Profile) -> Iterator[Postgres]:
    """A throwaway cluster configured and seeded like the sandbox's (simulation_events: ~150k rows, over 10 MiB)."""
    made = make_cluster(sandbox)
    try:
        seed_databases(made)
        yield made
    finally:
        remove(made)


def test_explain_of_a_write_is_allowed_in_a_read_only_transaction_and_its_analyze_is_not(seeded: Postgres) -> None:
    import psycopg

    with seeded.connect(DB) as conn:
        conn.execute("BEGIN READ ONLY")
        plan = conn.execute("EXPLAIN (FORMAT JSON) UPDATE simulation_events SET detail = detail WHERE id = 42")
        assert plan.fetchone() is not None
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("EXPLAIN (ANALYZE) UPDATE simulation_events SET detail = detail WHERE id = 42")
        conn.execute("ROLLBACK")


def test_write_key_queries_are_planned_as_the_maintenance_user_never_run(
    run_checks: Run, profile_variant: Variant, seeded: Postgres, tmp_path: Path
) -> None:
    from test_maintenance_queries import check, fails_exactly, healthy_ids, on, scalar, where

    password = tmp_path / "maintainer.pass"
    password.write_text(seeded.password + "\n")
    queries = [{"name": "rescale-by-value", "budget": "1s",  # value has no index: a sequential scan of 150k rows
                "sql": "UPDATE simulation_events SET detail = detail WHERE value = 42.5"},
               {"name": "touch-event", "budget": "1s",  # through the primary key
                "sql": "UPDATE simulation_events SET detail = detail WHERE id = 42"},
               {"name": "simulation-events-read", "budget": "1s",  # a read stays the monitoring role's
                "sql": "SELECT kind FROM simulation_events WHERE simulation_id = 7"}]

    def as_maintainer(data: dict[str, Any]) -> None:
        on(seeded.port, key_queries=queries)(data)
        data["databases"][0].update(maintenance_user="postgres", maintenance_password_file=str(password))

    rows = "SELECT count(*)::text || ':' || sum(xmin::text::bigint)::text FROM simulation_events"
    before = scalar(seeded, rows)
    run = run_checks(profile_variant(as_maintainer), CHECKS)
    assert scalar(seeded, rows) == before  # planned, never run
    names = ("rescale-by-value", "touch-event", "simulation-events-read")
    seq, budget = "test_key_query_has_no_seq_scan_on_a_large_table", "test_key_query_runs_within_budget"
    size = human_size(int(scalar(seeded, "SELECT pg_table_size('simulation_events')")))
    bad = f"{where(seeded)}: key query rescale-by-value (a write, planned as maintenance_user postgres)"
    writes = {check(budget, f"{DB}:{n}") for n in names[:2]}
    fails_exactly(run, {check(seq, f"{DB}:rescale-by-value"): (
        f"{bad} plans a sequential scan of public.simulation_events ({size}, at least large_table 10.0 MiB), "
        "expected index access: add an index on the columns it filters or joins by (EXPLAIN shows the plan)"
    )}, healthy_ids(("simulation-events", *names)) - writes)
    for name in names[:2]:  # writes are never run: without a pg_stat_statements mean they are not timed
        assert run.outcome(check(budget, f"{DB}:{name}")) == "skipped"
    assert run.message(check(budget, f"{DB}:touch-event")) == (
        f"{where(seeded)}: key query touch-event (a write, planned as maintenance_user postgres) is a write, which "
        "opsverify never runs, and pg_stat_statements holds no timing of it: it cannot be timed here")
    assert run.outcome(check(seq, f"{DB}:touch-event")) == "passed"

    def without(data: dict[str, Any]) -> None:
        on(seeded.port, key_queries=queries[:1])(data)
        for key in ("maintenance_user", "maintenance_password_file"):
            data["databases"][0].pop(key, None)

    skipped = run_checks(profile_variant(without), CHECKS)
    tests = {check(t, f"{DB}:rescale-by-value") for t in (seq, budget)}
    fails_exactly(skipped, {}, healthy_ids(("simulation-events", "rescale-by-value")) - tests)
    for test in tests:
        assert skipped.outcome(test) == "skipped"
        assert skipped.message(test) == (
            f"{where(seeded)}: key query rescale-by-value cannot be planned as role opsverify: permission denied for "
            "table simulation_events (EXPLAIN needs the privileges the statement needs: for a write, declare "
            "maintenance_user, the role it is then planned as in a read-only transaction, never run; for a read, "
            "grant SELECT to the role)")


# ---------------------------------------------------------------------------------------------- job table archive


@pytest.mark.parametrize("archive", ["optimization_jobs", "public.optimization_jobs", "Optimization_Jobs"])
def test_a_job_table_archived_into_itself_is_refused_at_load(tmp_path: Path, archive: str) -> None:
    profile = tmp_path / "profile.yaml"
    text = ("name: x\ndatabases: [{name: qp, dbname: qp, user: u}]\nlifecycle:\n  job_tables:\n"
            "    - {name: jobs, database: qp, table: optimization_jobs, archive_table: ARCHIVE}\n")
    profile.write_text(text.replace("ARCHIVE", archive))
    done = profile_check(profile)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"opsverify: profile {profile} is not valid: lifecycle.job_tables[0] (line 5): archive_table {archive} is the "
        "job table optimization_jobs itself, so archived_jobs would move its old rows into the table it takes them "
        "from: name a separate table with the same columns, or leave archive_table empty"]
    profile.write_text(text.replace("ARCHIVE", "archive.optimization_jobs"))  # another schema: another table
    done = profile_check(profile)
    assert done.returncode == 0, done.stdout + done.stderr
