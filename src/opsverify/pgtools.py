"""PostgreSQL client programs (pg_dump, pg_restore, psql, pg_amcheck): where they are, how they log in.

Passwords go to libpq through ``PGPASSWORD`` in the child's environment, never on a command line.
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from opsverify.errors import OpsverifyError

PG_BINDIRS = tuple(Path(f"/usr/lib/postgresql/{v}/bin") for v in (17, 16, 15))


class MissingTool(OpsverifyError):
    """A PostgreSQL client program is not installed."""


class Endpoint(Protocol):
    """Anything libpq can log in to: a profile database, a restore target, a replica."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def user(self) -> str: ...
    @property
    def sslmode(self) -> str: ...
    def secret(self) -> str | None: ...


def pg_tool(name: str) -> str:
    """The path of a PostgreSQL client program (Debian's versioned dirs first, newest first, then PATH)."""
    for bindir in PG_BINDIRS:
        if (bindir / name).is_file():
            return str(bindir / name)
    found = shutil.which(name)
    if found is None:
        raise MissingTool(f"{name} is not installed: run `make setup` (Debian package postgresql-client-15)")
    return found


def pg_env(endpoint: Endpoint, dbname: str, connect: timedelta) -> dict[str, str]:
    """The child environment that points libpq at ``endpoint``/``dbname`` with a connect timeout."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no PGHOSTADDR/PGSERVICE detours
    env = {
        **inherited,
        "PGHOST": endpoint.host,
        "PGPORT": str(endpoint.port),
        "PGUSER": endpoint.user,
        "PGDATABASE": dbname,
        "PGSSLMODE": endpoint.sslmode,
        "PGCONNECT_TIMEOUT": str(max(1, int(connect.total_seconds()))),
        "PGAPPNAME": "opsverify",
    }
    secret = endpoint.secret()
    if secret is not None:
        env["PGPASSWORD"] = secret
    else:
        env.pop("PGPASSWORD", None)
    return env


def first_error(log: str, tool: str) -> str:
    """The first line of a tool's output that reports an error (``error:``, ``ERROR:``, ``FATAL:``), else the last.

    The tool's own prefix (``pg_restore: ``) and a bare ``error: `` are taken off.
    """
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    found = next((x for x in lines if "error:" in x or "ERROR:" in x or "FATAL:" in x), lines[-1] if lines else "")
    return found.removeprefix(f"{tool}: ").removeprefix("error: ") or "no output"
