"""The failover drill (QP-15, PF-20): a scratch standby of a primary (an action), promoted, proven to write.

The real replica is never touched; on exit the standby's process, port and directory are verified gone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta

from opsverify.actions.base import performed
from opsverify.actions.standby import ScratchStandby
from opsverify.errors import CleanupError, OpsverifyError
from opsverify.localserver.net import LOOPBACK
from opsverify.probes.postgres import connect, first_line
from opsverify.profile import Database

PROBE = "CREATE TEMP TABLE opsverify_scratch_probe (at timestamptz); INSERT INTO opsverify_scratch_probe VALUES (now())"


@dataclass(frozen=True)
class Promotion:
    """What the promoted copy showed: timelines before and after, and whether it took a write."""

    port: int
    primary_timeline: int
    directory: str = ""
    timeline: int = 0
    write_error: str | None = None
    error: str | None = None
    took: timedelta = timedelta(0)


def _timeline(db: Database, port: int | None, timeout: timedelta) -> int:
    target = db if port is None else db.model_copy(update={"host": LOOPBACK, "port": port})
    with connect(target, timeout, statement_timeout=timeout) as conn:
        row = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
    return int(str(row[0])[:8], 16) if row else 0


def _write(db: Database, port: int, timeout: timedelta) -> str | None:
    import psycopg

    target = db.model_copy(update={"host": LOOPBACK, "port": port})
    try:
        with connect(target, timeout, statement_timeout=timeout) as conn:
            conn.execute("SET default_transaction_read_only = off")
            conn.execute(PROBE)
    except psycopg.Error as exc:
        return first_line(exc)
    return None


@contextmanager
def promoted_copy(standby: ScratchStandby, timeout: timedelta) -> Iterator[Promotion]:
    """The scratch standby, built, promoted and probed; removed and verified on exit (``CleanupError``)."""
    import psycopg

    replica, primary, base = standby.replica, standby.primary, standby.directory
    try:
        before = _timeline(primary, None, timeout)
    except (psycopg.Error, OSError) as exc:
        yield Promotion(0, 0, error=f"primary {primary.name} at {primary.host}:{primary.port}: {first_line(exc)}")
        return
    started = time.monotonic()
    with ExitStack() as stack:
        try:
            cluster = stack.enter_context(performed(standby))
            cluster.promote()
            took = timedelta(seconds=time.monotonic() - started)
            after = _timeline(replica, cluster.port, timeout)
            written = _write(replica, cluster.port, timeout)
            promotion = Promotion(cluster.port, before, str(base), after, written, took=took)
        except CleanupError:
            raise
        except OpsverifyError as err:
            promotion = Promotion(0, before, str(base), error=str(err))
        yield promotion


