"""Scratch databases on the restore target: create, drop for sure, and a janitor for orphans.

Every scratch database is named ``opsverify_scratch_<run>_<worker>_<n>`` and carries a comment
saying which host and process created it and when, so the janitor at the next start can drop
what a killed run left behind (its creator is gone, or it is older than ``max_scratch_age``).
Nothing here ever drops a database whose name lacks the prefix.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from opsverify.errors import CleanupError, OpsverifyError
from opsverify.profile import Database, RestoreTarget

if TYPE_CHECKING:
    import psycopg

SCRATCH_PREFIX = "opsverify_scratch_"


class RestoreRefused(OpsverifyError):
    """A guard stopped a drill from touching something that is not a scratch target."""


def require_scratch_name(name: str) -> None:
    """Refuse any database name that is not an opsverify scratch name."""
    if not name.startswith(SCRATCH_PREFIX) or not name.replace("_", "").isalnum():
        raise RestoreRefused(f"refusing to touch database {name!r}: only {SCRATCH_PREFIX}* databases are scratch")


def require_other_server(target: RestoreTarget, sources: list[Database], timeout: timedelta | None = None) -> None:
    """Refuse a restore target that is one of the source databases' servers, when the profile says so.

    Two endpoints are one server when they resolve to the same address and port, or (with a
    ``timeout``, so both can be asked) when they report the same ``system_identifier``: that also
    catches a pooler's port, another interface, a name that hides the host.
    """
    if not target.must_differ_from_source:
        return
    target_id = _system_identifier(target, timeout) if timeout is not None else None
    for db in sources:
        same = _same_server(target.host, target.port, db.host, db.port)
        if not same and target_id is not None and timeout is not None:
            same = _system_identifier(db, timeout) == target_id
        if same:
            raise RestoreRefused(
                f"restore target {target.host}:{target.port} is the server of source database {db.name}: "
                "point restore_target at staging, or set must_differ_from_source: false"
            )


def _system_identifier(endpoint: RestoreTarget | Database, timeout: timedelta) -> int | None:
    """The cluster's ``system_identifier`` (equal on a primary and its replicas), or None when it cannot be read."""
    import psycopg

    from opsverify.probes.postgres import connect as read_only

    try:
        with read_only(endpoint, timeout, statement_timeout=timeout) as conn:  # type: ignore[arg-type]
            row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
    except (psycopg.Error, OSError):
        return None
    return int(row[0]) if row else None


def _same_server(host_a: str, port_a: int, host_b: str, port_b: int) -> bool:
    if port_a != port_b:
        return False
    try:
        addresses_a = {a[4][0] for a in socket.getaddrinfo(host_a, port_a)}
        return bool(addresses_a & {b[4][0] for b in socket.getaddrinfo(host_b, port_b)})
    except OSError:
        return host_a == host_b


def connect(target: RestoreTarget, dbname: str | None, timeout: timedelta) -> psycopg.Connection:
    """An autocommit session on the restore target (read-write: drills create and fill databases)."""
    import psycopg

    return psycopg.connect(
        host=target.host,
        port=target.port,
        dbname=dbname or target.dbname,
        user=target.user,
        password=target.secret(),
        sslmode=target.sslmode,
        connect_timeout=max(1, int(timeout.total_seconds())),
        application_name="opsverify-drill",
        autocommit=True,
    )


def exists(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def create_database(conn: psycopg.Connection, name: str) -> None:
    """``CREATE DATABASE`` owned by the session user, with the creator recorded in its comment."""
    from psycopg import sql

    require_scratch_name(name)
    conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    note = json.dumps({"opsverify": "scratch", **_creator(), "created": time.time()})
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(note)))


def drop_database(conn: psycopg.Connection, name: str) -> None:
    """Terminate its sessions, drop it, and verify it is gone from ``pg_database`` (safe to call twice)."""
    from psycopg import sql

    require_scratch_name(name)
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
    )
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    if exists(conn, name):
        raise CleanupError(f"scratch database {name} still exists after DROP DATABASE: drop it by hand")


@contextmanager
def scratch_database(target: RestoreTarget, name: str, timeout: timedelta) -> Iterator[str]:
    """Create ``name`` on the target; on exit (also after an error half-way) drop it and prove it is gone."""
    require_scratch_name(name)
    with connect(target, None, timeout) as admin:
        try:
            create_database(admin, name)
            yield name
        finally:
            drop_database(admin, name)


@dataclass(frozen=True)
class Orphan:
    """A scratch database the janitor found, and why it is (or is not) an orphan."""

    name: str
    reason: str | None  # None: it belongs to a live run and stays


def _orphan_reason(comment: str | None, max_age: timedelta, now: float) -> str | None:
    try:
        note = json.loads(comment or "")
    except ValueError:
        return "it carries no creator note"
    if not isinstance(note, dict):
        return "it carries no creator note"
    age = now - float(note.get("created", 0))
    if age > max_age.total_seconds():
        return f"it is {age / 3600:.1f}h old (max {max_age})"
    here = _creator()
    same_processes = note.get("host") == here["host"] and note.get("pidns") == here["pidns"]
    if same_processes and not _alive(int(note.get("pid", 0))):
        return f"its creator (pid {note.get('pid')}) is gone"
    return None  # a creator elsewhere (another host, container or pid namespace) is trusted until max age


def _creator() -> dict[str, object]:
    """Who creates a scratch database: host name, pid, and the pid namespace the pid is valid in."""
    try:
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pidns = 0
    return {"host": socket.gethostname(), "pid": os.getpid(), "pidns": pidns}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def janitor(target: RestoreTarget, timeout: timedelta, own_prefix: str = "") -> list[Orphan]:
    """Drop the scratch databases that no live run owns; every scratch database found, with the verdict.

    Names starting with ``own_prefix`` (this run's) are never dropped: another worker of the same
    run may be between its CREATE DATABASE and the COMMENT that records its creator.
    """
    found: list[Orphan] = []
    with connect(target, None, timeout) as admin:
        rows = admin.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database WHERE datname LIKE %s",
            (SCRATCH_PREFIX.replace("_", r"\_") + "%",),
        ).fetchall()
        for name, comment in rows:
            ours = bool(own_prefix) and str(name).startswith(own_prefix)
            reason = None if ours else _orphan_reason(comment, target.max_scratch_age, time.time())
            if reason is not None:
                drop_database(admin, str(name))
            found.append(Orphan(str(name), reason))
    return found
