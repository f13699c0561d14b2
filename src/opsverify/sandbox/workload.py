"""The application's read workload on the sandbox's databases (issue 11): it uses every index of the large tables.

``simulation_events`` (photonic_foundry, ~150k rows, over the default ``large_table`` of 10 MiB) is read
the way the application reads it: the events of one simulation (``simulation_events_simulation_idx``)
and the newest events (``simulation_events_recorded_at_idx``); the primary key answers single-event
lookups. The seed runs it once, the scheduler daily (``run/workload.stamp``), so no index of a large
table stays ``idx_scan = 0`` and sequential scans (the backup jobs' ``COPY``) stay a small share of its scans.
"""

from __future__ import annotations

import time

from opsverify.sandbox.postgres import Postgres
from opsverify.sandbox.state import Layout

EVERY = 86400.0
LOOKUPS = 100  # index scans per query and run: many more than the sequential scans a day of backup jobs adds
QUERIES = {
    "photonic_foundry": [
        "SELECT kind, recorded_at, value FROM simulation_events WHERE simulation_id = %(n)s ORDER BY recorded_at",
        "SELECT count(*) FROM simulation_events WHERE recorded_at > now() - %(n)s * interval '1 minute'",
        "SELECT kind, detail FROM simulation_events WHERE id = %(n)s * 997",
    ],
}


def run_workload(pg: Postgres) -> int:
    """Run each query ``LOOKUPS`` times with varying parameters; the number of statements run."""
    done = 0
    for dbname, queries in QUERIES.items():
        with pg.connect(dbname) as conn:
            for query in queries:
                for n in range(1, LOOKUPS + 1):
                    conn.execute(query, {"n": n}).fetchall()
                    done += 1
    return done


def workload_due(layout: Layout, now: float) -> bool:
    """True when the workload last ran ``EVERY`` ago, or never (on this state dir)."""
    stamp = layout.run / "workload.stamp"
    return not stamp.is_file() or now - stamp.stat().st_mtime >= EVERY


def mark_workload(layout: Layout) -> None:
    layout.run.mkdir(parents=True, exist_ok=True)
    (layout.run / "workload.stamp").write_text(f"{time.time():.0f}\n")
