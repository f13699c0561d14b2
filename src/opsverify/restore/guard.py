"""The restore target's guard: drills restore only onto a server that is none of the sources'.

Scratch databases themselves are an action (``opsverify.actions.database``).
"""

from __future__ import annotations

import socket
from datetime import timedelta

from opsverify.errors import ActionRefused
from opsverify.profile import Database, RestoreTarget


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
            raise ActionRefused(
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


