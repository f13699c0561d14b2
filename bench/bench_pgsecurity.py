"""Benchmark: the PostgreSQL security rules against the same SQL run through ``psql``, one query per process.

Run with ``.venv/bin/python bench/bench_pgsecurity.py [PROFILE]`` (default: the test sandbox's
``.sandbox-test/profile.yaml``; start it with ``opsverify sandbox up --state-dir .sandbox-test``).
pgdsat, the peer the issue names, is a Perl script run on the database host as the ``postgres``
user (it reads PGDATA); it is not packaged here, so the comparison is the way a runbook would
script the same questions: ``psql -XAt -c <query>`` per question, each a new connection (TLS
handshake and SCRAM authentication included, as for opsverify's one session).

Three timings, best of 5 each, over every database of the profile that declares ``security:``:
- ``opsverify (process)``: a fresh Python process loads the profile, reads the facts in one
  session per database and judges all 15 rules (interpreter start and imports included);
- ``opsverify (in-process)``: the same read and judgement inside a running process (a pytest run);
- ``psql x6``: the six queries (settings, roles, hash kinds, hba rules, schema public ACL,
  extensions), six ``psql`` processes per database, no judgement at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from opsverify.pgtools import clean_env, pg_tool
from opsverify.probes.pgsecurity import QUERIES, SETTINGS, probe_security
from opsverify.profile import Database, load_profile
from opsverify.rules.postgres import evaluate

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 5
RUN_RULES = """
import sys
from opsverify.profile import load_profile
from opsverify.probes.pgsecurity import probe_security
from opsverify.rules.postgres import evaluate
profile = load_profile(sys.argv[1])
for db in profile.databases:
    if db.security is not None:
        facts = probe_security(db, profile.timeouts.connect, profile.timeouts.request)
        assert facts.is_read, facts.error
        evaluate(facts, db.security)
"""


def best(run: Callable[[], None]) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def psql_env(db: Database) -> dict[str, str]:
    env = clean_env(PGHOST=db.host, PGPORT=str(db.port), PGUSER=db.user, PGDATABASE=db.dbname,
                    PGSSLMODE=db.sslmode, PGCONNECT_TIMEOUT="5")
    if db.sslrootcert is not None:
        env["PGSSLROOTCERT"] = str(db.sslrootcert)
    secret = db.secret()
    if secret is not None:
        env["PGPASSWORD"] = secret
    return env


def literal_queries() -> list[str]:
    names = "ARRAY[" + ", ".join(f"'{n}'" for n in SETTINGS) + "]"
    return [" ".join(q.replace("%(names)s", names).split()) for q in QUERIES]


def main() -> None:
    profile_path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".sandbox-test" / "profile.yaml"
    profile = load_profile(profile_path)
    secured = [db for db in profile.databases if db.security is not None]
    if not secured:
        sys.exit(f"profile {profile_path} declares no databases[].security: nothing to benchmark")
    psql, queries = pg_tool("psql"), literal_queries()
    t = profile.timeouts

    def in_process() -> None:
        for db in secured:
            assert db.security is not None
            facts = probe_security(db, t.connect, t.request)
            if not facts.is_read:
                sys.exit(f"database {db.name}: {facts.error}")
            evaluate(facts, db.security)

    def fresh_process() -> None:
        subprocess.run([sys.executable, "-c", RUN_RULES, str(profile_path)], check=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})

    def psql_each() -> None:
        for db in secured:
            env = psql_env(db)
            for query in queries:
                # a query the role may not run (pg_authid) fails as it would for the rules: timed all the same
                subprocess.run([psql, "-XAt", "-c", query], env=env, capture_output=True, timeout=60, check=False)

    rows = [("opsverify (process)", best(fresh_process)), ("opsverify (in-process)", best(in_process)),
            (f"psql x{len(queries)}", best(psql_each))]
    print(f"{len(secured)} database(s), {len(queries)} queries each, best of {ROUNDS}; load {os.getloadavg()[0]:.2f}")
    baseline = rows[-1][1]
    for name, seconds in rows:
        print(f"{name:24} {seconds * 1000:8.0f} ms   {seconds / baseline:5.2f}x psql")


if __name__ == "__main__":
    main()
