"""The sandbox's database upkeep: the daily ``VACUUM (ANALYZE)`` a careful team's maintenance cron runs (PF-25, QP-10).

The sandbox stays up for days; its large tables must not age past ``max_vacuum_age`` and
``max_analyze_age`` (7 days) nor gather dead tuples, or ``pytest -m maintenance`` would report
what the team's cron prevents. The scheduler runs ``vacuum_analyze`` once a day (as the
superuser, every table of both databases); the time of the last run is the mtime of a stamp file
beside the cluster's data (``<pg base>/vacuumed-at``), which ``sandbox up`` sets after the seed's own
``VACUUM (ANALYZE)``.
"""

from __future__ import annotations

from pathlib import Path

from opsverify.sandbox.postgres import DATABASES, Postgres

VACUUM_EVERY = 86400.0  # daily
STAMP = "vacuumed-at"


def vacuum_stamp(pg: Postgres) -> Path:
    return pg.base / STAMP


def mark_vacuumed(pg: Postgres) -> None:
    """Note that every table of both databases was vacuumed and analyzed just now."""
    stamp = vacuum_stamp(pg)
    stamp.touch()
    stamp.write_text("VACUUM (ANALYZE) of " + ", ".join(DATABASES) + "\n")


def vacuum_due(pg: Postgres, now: float, early: float = 0.0) -> bool:
    """True when the last ``VACUUM (ANALYZE)`` is a day old (less ``early``) or was never noted."""
    try:
        return now - vacuum_stamp(pg).stat().st_mtime >= VACUUM_EVERY - early
    except FileNotFoundError:
        return True


def vacuum_analyze(pg: Postgres) -> tuple[str, ...]:
    """``VACUUM (ANALYZE)`` every table of both databases (as the superuser), then note it; the databases done."""
    for name in DATABASES:
        with pg.connect(name) as conn:
            conn.execute("VACUUM (ANALYZE)")
    mark_vacuumed(pg)
    return DATABASES
