"""Small but realistic data for the two databases (server-side ``generate_series``, seeded random)."""

from __future__ import annotations

from opsverify.sandbox.postgres import Postgres
from opsverify.sandbox.workload import run_workload

PHOTONIC_FOUNDRY = """
SELECT setseed(0.42);
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE TABLE models (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    architecture text NOT NULL,
    version text NOT NULL,
    parameters bigint NOT NULL,
    accuracy numeric(5, 4),
    created_at timestamptz NOT NULL
);
INSERT INTO models (name, architecture, version, parameters, accuracy, created_at)
SELECT format('%s-%s', (ARRAY['mzi-mesh', 'ring-resonator', 'clements', 'reck', 'diffractive'])[1 + i % 5], i),
       (ARRAY['MZI', 'MRR', 'Clements', 'Reck', 'D2NN'])[1 + i % 5],
       format('1.%s.%s', i % 4, i % 7),
       (1000 + random() * 1e6)::bigint,
       round((0.80 + random() * 0.19)::numeric, 4),
       now() - random() * interval '200 days'
FROM generate_series(1, 36) AS i;
CREATE TABLE simulations (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    model_id integer NOT NULL REFERENCES models (id),
    status text NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    wavelength_nm numeric(7, 2) NOT NULL,
    loss_db numeric(6, 3),
    result jsonb,
    created_at timestamptz NOT NULL,
    completed_at timestamptz
);
INSERT INTO simulations (name, model_id, status, wavelength_nm, loss_db, result, created_at, completed_at)
SELECT format('sim-%s-%s', to_char(created, 'YYYYMMDD'), i), 1 + i % 36, status,
       round((1500 + random() * 100)::numeric, 2),
       round((0.1 + random() * 3)::numeric, 3),
       CASE WHEN status = 'completed' THEN jsonb_build_object(
           'transmission', round(random()::numeric, 4), 'crosstalk_db', round((-40 + random() * 15)::numeric, 2),
           'ports', 4 + i % 12, 'converged', true) END,
       created,
       CASE WHEN status IN ('completed', 'failed') THEN created + random() * interval '2 hours' END
FROM (
    SELECT i, now() - (i / 5000.0) * interval '90 days' - random() * interval '1 hour' AS created,
           CASE WHEN i <= 20 THEN (ARRAY['queued', 'running'])[1 + i % 2]
                WHEN random() < 0.06 THEN 'failed' ELSE 'completed' END AS status
    FROM generate_series(1, 5000) AS i
) AS s;
CREATE INDEX simulations_status_idx ON simulations (status);
CREATE INDEX simulations_created_at_idx ON simulations (created_at);
-- issue 11: a realistic volume, ~150k events (over the default large_table, 10 MiB), read through its indexes
CREATE TABLE simulation_events (
    id bigserial PRIMARY KEY,
    simulation_id bigint NOT NULL,
    kind text NOT NULL,
    value double precision NOT NULL,
    detail text NOT NULL,
    recorded_at timestamptz NOT NULL
);
INSERT INTO simulation_events (simulation_id, kind, value, detail, recorded_at)
SELECT 1 + i % 5000, (ARRAY['started', 'iteration', 'converged', 'checkpoint', 'metric'])[1 + i % 5],
       (i * 37 % 10000) / 100.0, format('step %s of simulation %s: residual %s', i / 5000, 1 + i % 5000,
       (i * 7919 % 1000000) / 1e6), now() - (i / 150000.0) * interval '90 days'
FROM generate_series(1, 150000) AS i;  -- values from i, not random(): the 30 daily dumps gzip fast
CREATE INDEX simulation_events_simulation_idx ON simulation_events (simulation_id);
CREATE INDEX simulation_events_recorded_at_idx ON simulation_events (recorded_at);
"""

QUANTUM_PLANNER = """
SELECT setseed(0.17);
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE TABLE users (
    id serial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    full_name text NOT NULL,
    created_at timestamptz NOT NULL,
    last_login timestamptz
);
INSERT INTO users (email, full_name, created_at, last_login)
SELECT lower(format('%s.%s%s@example.com', f, l, i)), format('%s %s', f, l), created,
       created + random() * (now() - created)
FROM (
    SELECT i, (ARRAY['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Frances', 'John'])[1 + i % 8] AS f,
           (ARRAY['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth', 'Allen', 'Backus'])[1 + (i / 8) % 8]
               AS l,
           now() - random() * interval '300 days' AS created
    FROM generate_series(1, 250) AS i
) AS u;
CREATE TABLE optimization_jobs (
    id bigserial PRIMARY KEY,
    user_id integer NOT NULL REFERENCES users (id),
    problem_type text NOT NULL,
    solver text NOT NULL,
    status text NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    qubits integer NOT NULL,
    duration_ms integer,
    created_at timestamptz NOT NULL,
    completed_at timestamptz
);
INSERT INTO optimization_jobs (user_id, problem_type, solver, status, qubits, duration_ms, created_at, completed_at)
SELECT 1 + i % 250, (ARRAY['vehicle-routing', 'portfolio', 'scheduling', 'max-cut'])[1 + i % 4],
       (ARRAY['qaoa', 'vqe', 'annealer', 'classical-fallback'])[1 + (i / 4) % 4], status, 8 + i % 120,
       CASE WHEN status IN ('completed', 'failed') THEN d END, created,
       CASE WHEN status IN ('completed', 'failed') THEN created + d * interval '1 millisecond' END
FROM (
    SELECT i, now() - (i / 10000.0) * interval '80 days' AS created, (50 + random() * 30000)::integer AS d,
           CASE WHEN i <= 6 THEN 'queued' WHEN i <= 12 THEN 'running'
                WHEN random() < 0.08 THEN 'failed' ELSE 'completed' END AS status
    FROM generate_series(1, 10000) AS i
) AS j;
CREATE INDEX optimization_jobs_status_created_idx ON optimization_jobs (status, created_at);
CREATE INDEX optimization_jobs_user_idx ON optimization_jobs (user_id);
-- where the daily cleanup moves finished jobs older than 90 days (QP-23): the same columns, no keys
CREATE TABLE optimization_jobs_archive (LIKE optimization_jobs);
"""

WORKLOAD = {
    "photonic_foundry": [
        "SELECT status, count(*) FROM simulations GROUP BY status",
        "SELECT avg(loss_db) FROM simulations WHERE created_at > now() - interval '7 days'",
        "SELECT m.name, count(*) FROM simulations s JOIN models m ON m.id = s.model_id GROUP BY m.name",
    ],
    "quantum_planner": [
        "SELECT solver, avg(duration_ms) FROM optimization_jobs WHERE status = 'completed' GROUP BY solver",
        "SELECT count(*) FROM optimization_jobs WHERE created_at > now() - interval '1 day'",
        "SELECT count(*) FROM users WHERE last_login > now() - interval '30 days'",
    ],
}


def seed_databases(pg: Postgres) -> dict[str, int]:
    """Create and fill the tables, run a little workload, VACUUM ANALYZE; rows per main table."""
    counts: dict[str, int] = {}
    for dbname, script, table in (
        ("photonic_foundry", PHOTONIC_FOUNDRY, "simulations"),
        ("quantum_planner", QUANTUM_PLANNER, "optimization_jobs"),
    ):
        with pg.connect(dbname) as conn:
            conn.execute(script)
            for query in WORKLOAD[dbname]:
                conn.execute(query)
            conn.execute("VACUUM (ANALYZE)")
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[f"{dbname}.{table}"] = int(str(row[0])) if row else 0
    with pg.connect("photonic_foundry") as conn:  # the bulk load is no application statement: start empty
        conn.execute("SELECT pg_stat_statements_reset()")
    run_workload(pg)  # the application's index lookups on the large tables (the scheduler repeats them daily)
    return counts
