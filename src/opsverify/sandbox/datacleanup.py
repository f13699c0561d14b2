"""The Quantum Planner team's daily database cleanup in the sandbox (QP-23, QP-31), run by its scheduler.

In one transaction: finished jobs (completed, failed) older than 90 days move from
``optimization_jobs`` to ``optimization_jobs_archive``, and users whose last login is over 365 days
old are deleted — those no live job still references (``optimization_jobs.user_id`` is a foreign
key; a team keeps the account of a job it still holds, and that job is archived within 90 days,
after which the user goes at the next run). The seed keeps finished jobs within 80 days and last
logins within 300 days, so a new sandbox moves and deletes nothing for days and months, and stays
green as it runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from opsverify.sandbox.postgres import Postgres
from opsverify.sandbox.state import Layout

EVERY = 86400.0 - 600.0  # daily, a little early like the backup jobs
DATABASE = "quantum_planner"
JOB_MAX_AGE = "90 days"
USER_RETENTION = "365 days"
CREATE_ARCHIVE = "CREATE TABLE IF NOT EXISTS optimization_jobs_archive (LIKE optimization_jobs)"  # older sandboxes
ARCHIVE = f"""
WITH moved AS (
    DELETE FROM optimization_jobs
    WHERE status IN ('completed', 'failed') AND completed_at < now() - interval '{JOB_MAX_AGE}'
    RETURNING *
)
INSERT INTO optimization_jobs_archive SELECT * FROM moved
"""
DELETE_USERS = f"""
DELETE FROM users u
WHERE u.last_login < now() - interval '{USER_RETENTION}'
  AND NOT EXISTS (SELECT 1 FROM optimization_jobs j WHERE j.user_id = u.id)
"""


def _stamp(layout: Layout) -> Path:
    return layout.run / "data-cleanup.last"


def cleanup_due(layout: Layout, now: float) -> bool:
    """True when the cleanup has not run for a day (or never)."""
    stamp = _stamp(layout)
    return not stamp.exists() or now - stamp.stat().st_mtime >= EVERY


def clean_data(layout: Layout, pg: Postgres, now: float | None = None, database: str = DATABASE) -> tuple[int, int]:
    """Archive old finished jobs and delete long-inactive users of ``database`` in one transaction: (jobs moved,
    users deleted); the day's run is noted in ``run/data-cleanup.last``."""
    with pg.connect(database) as conn, conn.transaction():
        conn.execute(CREATE_ARCHIVE)
        moved = conn.execute(ARCHIVE).rowcount
        deleted = conn.execute(DELETE_USERS).rowcount
    stamp = _stamp(layout)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    when = time.time() if now is None else now
    os.utime(stamp, (when, when))
    return max(moved, 0), max(deleted, 0)
