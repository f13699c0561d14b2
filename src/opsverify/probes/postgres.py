"""PostgreSQL probes: a read-only session, opened with a timeout (QP-29)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from opsverify.probes.outage import REFUSED, UNRESOLVED, UNROUTABLE, connect_timed_out, connection_failure
from opsverify.profile.model import Database

if TYPE_CHECKING:
    import psycopg

LIBPQ_FAILURES = (  # libpq's own words for a connection-level failure (its errors carry no OS exception)
    ("Connection refused", REFUSED),
    ("No route to host", UNROUTABLE),
    ("Network is unreachable", UNROUTABLE),
    ("could not translate host name", UNRESOLVED),
    ("Name or service not known", UNRESOLVED),
)


@dataclass(frozen=True)
class PgSession:
    """What opening a session told: latency, read-only state, server version, or the error."""

    address: str
    latency: timedelta
    read_only: bool = False
    server_version: str | None = None
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage

    @property
    def is_connected(self) -> bool:
        return self.error is None


def first_line(exc: BaseException) -> str:
    """The first meaningful line of a driver error, without the connection-string noise."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text.split("failed: ", 1)[-1] if text.startswith("connection to server") else text


def unreachable(exc: BaseException, timeout: timedelta) -> str | None:
    """The connection-level cause of a failed session (refused, timed out, no route, unknown host), else None."""
    import psycopg

    if isinstance(exc, psycopg.errors.ConnectionTimeout):
        return connect_timed_out(timeout)
    if not isinstance(exc, psycopg.OperationalError | OSError):
        return None
    found = connection_failure(exc, connect_timed_out(timeout))
    text = str(exc).split("\n", 1)[0]
    return found or next((cause for words, cause in LIBPQ_FAILURES if words in text), None)


def connect(db: Database, timeout: timedelta, statement_timeout: timedelta | None = None) -> psycopg.Connection:
    """Open a read-only autocommit session (``default_transaction_read_only=on``)."""
    import psycopg

    options = "-c default_transaction_read_only=on"
    if statement_timeout is not None:
        options += f" -c statement_timeout={int(statement_timeout.total_seconds() * 1000)}"
    return psycopg.connect(
        host=db.host,
        port=db.port,
        dbname=db.dbname,
        user=db.user,
        password=db.secret(),
        sslmode=db.sslmode,
        connect_timeout=max(1, int(timeout.total_seconds())),
        options=options,
        application_name="opsverify",
        autocommit=True,
    )


def probe_session(db: Database, timeout: timedelta) -> PgSession:
    """Open a session, confirm it is read-only and answers ``SELECT 1``."""
    import psycopg

    address = f"{db.host}:{db.port}/{db.dbname}"
    started = time.perf_counter()
    try:
        with connect(db, timeout, statement_timeout=timeout) as conn:
            read_only = conn.execute("SHOW transaction_read_only").fetchone()
            conn.execute("SELECT 1").fetchone()
            version = conn.info.parameter_status("server_version")
    except (psycopg.Error, OSError) as exc:
        elapsed = timedelta(seconds=time.perf_counter() - started)
        cause = unreachable(exc, timeout)
        return PgSession(address, elapsed, error=cause or first_line(exc), unreachable=cause)
    latency = timedelta(seconds=time.perf_counter() - started)
    return PgSession(address, latency, read_only=bool(read_only and read_only[0] == "on"), server_version=version)
