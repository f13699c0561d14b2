"""PostgreSQL probes: a read-only session, opened with a timeout (QP-29)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from opsverify.profile.model import Database

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class PgSession:
    """What opening a session told: latency, read-only state, server version, or the error."""

    address: str
    latency: timedelta
    read_only: bool = False
    server_version: str | None = None
    error: str | None = None

    @property
    def is_connected(self) -> bool:
        return self.error is None


def first_line(exc: BaseException) -> str:
    """The first meaningful line of a driver error, without the connection-string noise."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text.split("failed: ", 1)[-1] if text.startswith("connection to server") else text


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
        return PgSession(address, timedelta(seconds=time.perf_counter() - started), error=first_line(exc))
    latency = timedelta(seconds=time.perf_counter() - started)
    return PgSession(address, latency, read_only=bool(read_only and read_only[0] == "on"), server_version=version)
