"""PostgreSQL programs (pg_dump, pg_restore, psql, pg_amcheck, initdb, pg_ctl, pg_basebackup): where
they are, how they log in.

Every PostgreSQL program the suite starts is found here (Debian's versioned dirs, newest first, or
the major version a data directory or a primary needs) and runs in ``clean_env()``: no inherited
``PG*`` variable (``PGHOST``, ``PGPASSWORD``, ``PGSERVICE``, …) can redirect or authenticate it.
Passwords go to libpq through ``PGPASSWORD`` in the child's environment, never on a command line.
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from opsverify.errors import OpsverifyError

PG_ROOT = Path("/usr/lib/postgresql")
PG_VERSIONS = (18, 17, 16, 15, 14, 13)
PG_BINDIRS = tuple(PG_ROOT / str(v) / "bin" for v in PG_VERSIONS)


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


def pg_tool(name: str, major: int | None = None) -> str:
    """The path of a PostgreSQL program: Debian's versioned dirs newest first, then PATH.

    With ``major`` (a data directory's or a primary's version) only that version's program will do:
    a server must be started by binaries of its own major version.
    """
    if major is not None:
        if (PG_ROOT / str(major) / "bin" / name).is_file():
            return str(PG_ROOT / str(major) / "bin" / name)
        raise MissingTool(f"{name} of PostgreSQL {major} is not installed: install postgresql-{major}")
    for bindir in PG_BINDIRS:
        if (bindir / name).is_file():
            return str(bindir / name)
    found = shutil.which(name)
    if found is None:
        raise MissingTool(f"{name} is not installed: run `make setup` (Debian package postgresql-client-15)")
    return found


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``PG*`` variable, plus ``extra``: for every PostgreSQL program."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, **extra}


def forget_inherited_pg_settings() -> list[str]:
    """Remove every ``PG*`` variable from this process's environment; the names removed.

    libpq inside this process (psycopg) reads them too: ``PGSERVICE``, ``PGOPTIONS`` or
    ``PGHOSTADDR`` from an operator's shell would redirect or alter the suite's sessions. The
    profile alone says where and how to connect.
    """
    names = sorted(k for k in os.environ if k.startswith("PG"))
    for name in names:
        del os.environ[name]
    return names


def pg_env(endpoint: Endpoint, dbname: str, connect: timedelta) -> dict[str, str]:
    """The child environment that points libpq at ``endpoint``/``dbname`` with a connect timeout."""
    env = {
        **clean_env(),
        "PGHOST": endpoint.host,
        "PGPORT": str(endpoint.port),
        "PGUSER": endpoint.user,
        "PGDATABASE": dbname,
        "PGSSLMODE": endpoint.sslmode,
        "PGCONNECT_TIMEOUT": str(max(1, int(connect.total_seconds()))),
        "PGAPPNAME": "opsverify",
    }
    rootcert = getattr(endpoint, "sslrootcert", None)  # a profile database's or restore target's CA bundle
    if rootcert is not None:
        env["PGSSLROOTCERT"] = str(rootcert)
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
