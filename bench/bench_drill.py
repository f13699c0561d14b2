"""Benchmark: a restore drill vs a bare ``pg_restore -j 2`` of the same >= 1 GB custom dump.

Targets (issue: restore drills): drill wall time <= 1.10x the bare restore with row-count fidelity,
<= 1.30x with content checksums of every table. The drill includes creating and dropping its
scratch database (verified gone), the smoke query and the fidelity reads; pg_amcheck is left out
(``amcheck: false``) because the bare restore has no counterpart. The bare restore includes
``createdb`` and ``dropdb``.

A throwaway PostgreSQL 15 cluster on a free loopback port holds a ~1.1 GB table built with
``generate_series``; ``pg_dump -Fc -Z0`` writes the dump once into bench/.data/ (about 2 minutes).
The cluster is stopped and removed at the end.

Run: ``.venv/bin/python bench/bench_drill.py`` (or ``make bench``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path

from bench_gzip import DATA, machine

from opsverify.localserver.net import free_port
from opsverify.pgtools import pg_env, pg_tool
from opsverify.profile import Drill, RestoreTarget
from opsverify.restore.drill import run_pg_drill
from opsverify.sandbox.postgres import Postgres

DUMP = DATA / "drill-1g.dump"
ROWS = 7_000_000
RUNS = 2
T = timedelta(seconds=10)
BUILD = f"""
CREATE TABLE simulations AS
SELECT i AS id, md5(i::text) AS name, (i % 5000) AS model_id, 1500 + (i % 100) / 7.0 AS wavelength_nm,
       repeat(md5((i * 7)::text), 2) AS result, now() - (i % 100000) * interval '1 minute' AS created_at
FROM generate_series(1, {ROWS}) AS i;
ALTER TABLE simulations ADD PRIMARY KEY (id);
CREATE TABLE models AS SELECT i AS id, md5(i::text) AS name FROM generate_series(1, 5000) AS i;
"""


def start_cluster() -> Postgres:
    base = Path("/tmp") / f"opsverify-bench-pg-{os.getpid()}"
    cluster = Postgres(base, os.geteuid() == 0, free_port(), secrets.token_urlsafe(16))
    cluster.init()
    with (cluster.data / "postgresql.conf").open("a") as conf:
        conf.write("archive_mode = off\nmax_wal_size = 4GB\ncheckpoint_timeout = 30min\nmaintenance_work_mem = 512MB\n")
    cluster.start()
    return cluster


def build_dump(cluster: Postgres, target: RestoreTarget) -> None:
    if DUMP.exists():
        return
    DATA.mkdir(exist_ok=True)
    print(f"building {DUMP} (once; about 2 minutes) ...", flush=True)
    with cluster.connect() as conn:
        conn.execute("CREATE DATABASE bench_source")
    with cluster.connect("bench_source") as conn:
        conn.execute(BUILD)
    part = DUMP.with_name(DUMP.name + ".part")
    subprocess.run([pg_tool("pg_dump"), "-Fc", "-Z0", "-f", str(part)], env=pg_env(target, "bench_source", T),
                   check=True, stdin=subprocess.DEVNULL)
    part.replace(DUMP)


def bare_restore(target: RestoreTarget) -> float:
    env = pg_env(target, "postgres", T)
    started = time.perf_counter()
    subprocess.run([pg_tool("createdb"), "bench_bare"], env=env, check=True, stdin=subprocess.DEVNULL)
    subprocess.run([pg_tool("pg_restore"), "-j", "2", "-d", "bench_bare", str(DUMP)], env=env, check=True,
                   stdin=subprocess.DEVNULL)
    subprocess.run([pg_tool("dropdb"), "bench_bare"], env=env, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


def drill_run(target: RestoreTarget, checksum_rows: int, n: int) -> float:
    drill = Drill(name="bench", backup="bench", database="bench", checksum_max_rows=checksum_rows, amcheck=False)
    started = time.perf_counter()
    outcome = run_pg_drill(drill, DUMP, "pg-custom", target, f"opsverify_scratch_bench_{os.getpid()}_{n}",
                           connect_timeout=T, jobs=2)
    elapsed = time.perf_counter() - started
    if not outcome.restore.ok or outcome.restored is None:
        raise SystemExit(f"the drill failed: {outcome.restore.error}")
    return elapsed


def main() -> None:
    cluster = start_cluster()
    try:
        target = RestoreTarget(host="127.0.0.1", port=cluster.port, user="postgres", sslmode="disable",
                               password=cluster.password, must_differ_from_source=False)  # type: ignore[arg-type]
        build_dump(cluster, target)
        bare = min(bare_restore(target) for _ in range(RUNS))
        counts = min(drill_run(target, 0, n) for n in range(RUNS))
        sums = min(drill_run(target, 10**12, n + RUNS) for n in range(RUNS))
    finally:
        cluster.stop()
        shutil.rmtree(cluster.base, ignore_errors=True)
    print(f"machine: {machine()}")
    print(f"dump:    {DUMP.name}: {DUMP.stat().st_size:,} bytes, custom format, uncompressed")
    print(f"bare createdb + pg_restore -j 2 + dropdb: {bare:7.2f}s")
    print(f"drill with row counts:                    {counts:7.2f}s  {counts / bare:.2f}x "
          f"(target <= 1.10x: {'met' if counts / bare <= 1.10 else 'MISSED'})")
    print(f"drill with checksums of every table:      {sums:7.2f}s  {sums / bare:.2f}x "
          f"(target <= 1.30x: {'met' if sums / bare <= 1.30 else 'MISSED'})")


if __name__ == "__main__":
    main()
