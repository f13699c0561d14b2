"""The sandbox's disaster-recovery document (QP-16): ``<state>/docs/disaster-recovery.md``, reviewed "today".

``up`` writes it afresh (when the day changed), its ``Last reviewed:`` line dated the day of the ``up``, as a team
commits its document after each quarterly review; the profile declares it as ``dr_document``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from opsverify.sandbox.state import Layout

TEXT = """# Disaster recovery: opsverify sandbox

Last reviewed: {day}

## Recovery order

1. PostgreSQL: restore the newest `pg_dump` of each database (`backups/`), or replay the WAL archive onto the
   newest base backup (point-in-time recovery); promote the streaming replica when the primary is lost.
2. Redis: load the newest RDB copy.
3. The services: start them and verify `/health` answers 2xx.

## Objectives

| component | RTO | RPO |
|---|---|---|
| application | 15m | 5m |
| database | 30m | 1h |
| full system | 2h | 4h |
"""


def dr_document(layout: Layout) -> Path:
    """Where the sandbox keeps its DR document."""
    return layout.root / "docs" / "disaster-recovery.md"


def write_dr_document(layout: Layout, now: datetime | None = None) -> Path:
    """Write the DR document, reviewed on ``now``'s UTC date (default: today); its path."""
    path = dr_document(layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    day = (now or datetime.now(UTC)).astimezone(UTC).date().isoformat()
    text = TEXT.format(day=day)
    if not path.is_file() or path.read_text() != text:  # a check reading it meanwhile sees the old or the new one
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path
