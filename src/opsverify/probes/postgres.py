"""PostgreSQL probes: a read-only session, opened with a timeout (QP-29)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

from opsverify.durations import format_duration
from opsverify.probes.outage import REFUSED, UNRESOLVED, UNROUTABLE, connect_timed_out, connection_failure
from opsverify.profile.model import Database
from opsverify.profile.recovery import RestoreTarget

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")
LIBPQ_FAILURES = (  # libpq's own words for a connection-level failure (its errors carry no OS exception)
    ("Connection refused", REFUSED),
    ("No route to host", UNROUTABLE),
    ("Network is unreachable", UNROUTABLE),
    ("could not translate host name", UNRESOLVED),
    ("Name or service not known", UNRESOLVED),
)


@dataclass(frozen=True)
class PgSession:
    """What opening a session told: latency, server version, or the error."""

    address: str
    latency: timedelta
    server_version: str | None = None
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage

    @property
    def is_connected(self) -> bool:
        return self.error is None


CONNECTION_NOISE = re.compile(  # psycopg 3 and libpq wrap the server's reason in where they tried
    r'^(?:connection failed: )?connection to server (?:at "[^"]*"(?:, port \d+)?|on socket "[^"]*") failed: '
    r"(?:(?:FATAL|ERROR):\s+)?"
)


def first_line(exc: BaseException) -> str:
    """The first meaningful line of a driver error, without the connection-string noise.

    ``connection failed: connection to server at "h", port 5432 failed: FATAL:  password authentication
    failed for user "x"`` becomes ``password authentication failed for user "x"`` (the caller names the server).
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return CONNECTION_NOISE.sub("", text)


def unreachable(exc: BaseException, timeout: timedelta, query_timeout: timedelta | None = None) -> str | None:
    """The connection-level cause of a failed session (refused, timed out, no route, unknown host, a server
    that stopped answering mid-session), else None; ``query_timeout``: the session's, as ``tcp_options`` got it."""
    import psycopg

    if isinstance(exc, psycopg.errors.ConnectionTimeout):
        return connect_timed_out(timeout)
    if not isinstance(exc, psycopg.OperationalError | OSError):
        return None
    found = connection_failure(exc, connect_timed_out(timeout))
    text = str(exc).split("\n", 1)[0]
    if found is None and any(f"{words} server: Connection timed out" in text for words in LOST):
        return lost(timeout, query_timeout or timeout)
    return found or next((cause for words, cause in LIBPQ_FAILURES if words in text), None)


LOST = ("could not receive data from", "could not send data to")  # libpq, when the kernel gave up on the peer


def lost(timeout: timedelta, query_timeout: timedelta) -> str:
    """The phrase for a session whose server stopped answering (``tcp_options`` dropped it), naming the bound."""
    options = tcp_options(timeout, query_timeout)
    return (
        f"the server stopped answering mid-session: no TCP reply within "
        f"{format_duration(dead_peer_after(timeout, query_timeout))} (the {format_duration(query_timeout)} query "
        f"timeout, then {options['keepalives_count']} keepalive probes {options['keepalives_interval']}s apart): "
        "check the network path to it and that its host and postmaster run"
    )


KEEPALIVE_COUNT = 3  # unanswered keepalive probes before the kernel drops the connection


def tcp_options(timeout: timedelta, query_timeout: timedelta) -> dict[str, int]:
    """libpq's TCP options: a peer that stops answering is dropped in about ``query_timeout`` + a few seconds.

    psycopg has no read timeout of its own: a server that a network partition cut off mid-query
    leaves the client waiting on a socket forever. Keepalive probes start after ``query_timeout``
    of silence (the server sends nothing while a statement runs, but its kernel answers the probes),
    then one every ``timeout``/3 (1 to 5 s); ``KEEPALIVE_COUNT`` unanswered ones end the session, as
    does data the peer leaves unacknowledged that long (``tcp_user_timeout``).
    """
    idle = max(1, math.ceil(query_timeout.total_seconds()))
    interval = max(1, min(5, math.ceil(timeout.total_seconds() / KEEPALIVE_COUNT)))
    return {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": KEEPALIVE_COUNT,
        "tcp_user_timeout": (idle + interval * KEEPALIVE_COUNT) * 1000,
    }


def dead_peer_after(timeout: timedelta, query_timeout: timedelta) -> timedelta:
    """How long a silent peer keeps a session open under ``tcp_options`` (the message names it)."""
    return timedelta(milliseconds=tcp_options(timeout, query_timeout)["tcp_user_timeout"])


def open_session(
    server: Database | RestoreTarget,
    user: str | None,
    password: str | None,
    timeout: timedelta,
    query_timeout: timedelta,
    *,
    dbname: str | None = None,
    options: str | None = None,
    application_name: str = "opsverify",
    autocommit: bool = True,
) -> psycopg.Connection:
    """A session on ``server`` as ``user``: connect ``timeout``, TLS as declared, ``tcp_options``.

    Every ``psycopg.connect`` of opsverify goes through here (checks, maintenance actions, drills).
    """
    import psycopg
    from psycopg.conninfo import make_conninfo

    return psycopg.connect(
        host=server.host,
        port=server.port,
        dbname=dbname or server.dbname,
        user=user,
        password=password,
        sslmode=server.sslmode,
        sslrootcert=str(server.sslrootcert) if server.sslrootcert else None,
        connect_timeout=max(1, int(timeout.total_seconds())),
        options=options,
        application_name=application_name,
        autocommit=autocommit,
        conninfo=make_conninfo("", **tcp_options(timeout, query_timeout)),
    )


def connect(db: Database, timeout: timedelta, statement_timeout: timedelta | None = None) -> psycopg.Connection:
    """Open a read-only autocommit session (``default_transaction_read_only=on``)."""
    options = "-c default_transaction_read_only=on"
    if statement_timeout is not None:
        options += f" -c statement_timeout={int(statement_timeout.total_seconds() * 1000)}"
    return open_session(db, db.user, db.secret(), timeout, statement_timeout or timeout, options=options)


@dataclass(frozen=True)
class Unread:
    """Why a read-only session gave no answer; ``unreachable`` is the connection-level cause of an outage."""

    error: str
    unreachable: str | None = None


def read_only(
    db: Database, timeout: timedelta, query_timeout: timedelta, read: Callable[[psycopg.Connection], T]
) -> T | Unread:
    """``read(conn)`` in a read-only session (connect ``timeout``, each query ``query_timeout``), or ``Unread``."""
    import psycopg

    try:
        with connect(db, timeout, statement_timeout=query_timeout) as conn:
            return read(conn)
    except (psycopg.Error, OSError) as exc:
        cause = unreachable(exc, timeout, query_timeout)
        return Unread(cause or first_line(exc), cause)


def probe_session(db: Database, timeout: timedelta) -> PgSession:
    """Open a (read-only) session and have it answer ``SELECT 1``."""
    import psycopg

    address = f"{db.host}:{db.port}/{db.dbname}"
    started = time.perf_counter()
    try:
        with connect(db, timeout, statement_timeout=timeout) as conn:
            conn.execute("SELECT 1").fetchone()
            version = conn.info.parameter_status("server_version")
    except (psycopg.Error, OSError) as exc:
        elapsed = timedelta(seconds=time.perf_counter() - started)
        cause = unreachable(exc, timeout)
        return PgSession(address, elapsed, error=cause or first_line(exc), unreachable=cause)
    latency = timedelta(seconds=time.perf_counter() - started)
    return PgSession(address, latency, server_version=version)


WRITE_PRIVILEGES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")
SYSTEM_SCHEMA = "n.nspname IN ('pg_catalog', 'information_schema') OR n.nspname ~ '^pg_(toast|temp_)'"
# One bounded query, decided by the server: the session role's superuser flag, its membership of
# pg_write_all_data (PostgreSQL 14+), the first write privileges it holds on a relation outside the
# system schemas, and the first schemas it may CREATE in (each list capped at ``limit``).
ROLE_WRITES = f"""
SELECT r.rolsuper,
       CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_write_all_data')
            THEN pg_has_role(current_user, 'pg_write_all_data', 'MEMBER') ELSE false END,
       ARRAY(SELECT p.priv || ' ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
                  unnest(%(privileges)s::text[]) WITH ORDINALITY AS p(priv, i)
             WHERE c.relkind IN ('r', 'p', 'v', 'f') AND NOT ({SYSTEM_SCHEMA})
               AND has_table_privilege(c.oid, p.priv)
             ORDER BY n.nspname, c.relname, p.i LIMIT %(limit)s),
       ARRAY(SELECT quote_ident(n.nspname) FROM pg_namespace n
             WHERE NOT ({SYSTEM_SCHEMA}) AND has_schema_privilege(n.oid, 'CREATE')
             ORDER BY n.nspname LIMIT %(limit)s)
FROM pg_roles r WHERE r.rolname = current_user
"""


# Where the role's first write privilege comes from: the grantees of the ACL entries (the default ACL
# when none was set: the owner's) that give it and that the role holds: itself, PUBLIC, or a role it
# inherits from (pg_has_role … USAGE). A REVOKE from the role itself does not touch the other two.
GRANTEES = """
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
FROM aclexplode(%(acl)s) a
WHERE a.privilege_type = %(privilege)s AND (a.grantee = 0 OR pg_has_role(current_user, a.grantee, 'USAGE'))
ORDER BY a.grantee <> (SELECT oid FROM pg_roles WHERE rolname = current_user), a.grantee <> 0, 1
"""
TABLE_ACL = "(SELECT coalesce(relacl, acldefault('r', relowner)) FROM pg_class WHERE oid = %(name)s::regclass)"
SCHEMA_ACL = "(SELECT coalesce(nspacl, acldefault('n', nspowner)) FROM pg_namespace WHERE oid = %(name)s::regnamespace)"
# The roles the session role is a member of through which it is in pg_write_all_data (itself when directly).
WRITE_ALL_THROUGH = """
SELECT m.member::regrole::text FROM pg_auth_members m
WHERE m.roleid = 'pg_write_all_data'::regrole AND pg_has_role(current_user, m.member, 'MEMBER')
ORDER BY m.member <> (SELECT oid FROM pg_roles WHERE rolname = current_user), 1
"""


def grantees(conn: psycopg.Connection, acl: str, name: str, privilege: str) -> tuple[str, ...]:
    """Who holds ``privilege`` on ``name`` for the session role: itself, ``PUBLIC``, or roles it is a member of."""
    query = GRANTEES.replace("%(acl)s", acl)
    rows = conn.execute(query, {"name": name, "privilege": privilege}).fetchall()
    return tuple(dict.fromkeys(r[0] for r in rows))  # one entry per grantee, whoever granted it


@dataclass(frozen=True)
class RoleWrites:
    """What the server says the session's role may change: superuser, pg_write_all_data, table and schema grants.

    ``table_writes`` holds ``"INSERT schema.table"`` items (identifiers quoted as SQL needs them),
    ``create_schemas`` the schemas it may CREATE in; both in name order, at most ``limit`` each.
    ``*_through``: who holds the first of each (the role itself, ``PUBLIC``, a role it is a member of).
    """

    address: str
    role: str
    superuser: bool = False
    writes_all_data: bool = False
    table_writes: tuple[str, ...] = ()
    create_schemas: tuple[str, ...] = ()
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage
    writes_all_through: tuple[str, ...] = ()
    table_write_through: tuple[str, ...] = ()
    create_through: tuple[str, ...] = ()

    @property
    def is_read(self) -> bool:
        return self.error is None


def probe_role_writes(db: Database, timeout: timedelta, query_timeout: timedelta, limit: int = 20) -> RoleWrites:
    """Ask the server what the declared role (``db.user``) may write: one query bounded by ``query_timeout``."""
    address = f"{db.host}:{db.port}/{db.dbname}"
    params = {"privileges": list(WRITE_PRIVILEGES), "limit": limit}

    def read(conn: psycopg.Connection) -> RoleWrites | None:
        row = conn.execute(ROLE_WRITES, params).fetchone()
        if row is None:
            return None
        superuser, writes_all, tables, schemas = row
        through_all = tuple(dict.fromkeys(r[0] for r in conn.execute(WRITE_ALL_THROUGH))) if writes_all else ()
        privilege, table = tables[0].split(" ", 1) if tables else ("", "")
        through_table = grantees(conn, TABLE_ACL, table, privilege) if tables else ()
        through_create = grantees(conn, SCHEMA_ACL, schemas[0], "CREATE") if schemas else ()
        return RoleWrites(address, db.user, bool(superuser), bool(writes_all), tuple(tables), tuple(schemas),
                          writes_all_through=through_all, table_write_through=through_table,
                          create_through=through_create)

    found = read_only(db, timeout, query_timeout, read)
    if isinstance(found, Unread):
        return RoleWrites(address, db.user, error=found.error, unreachable=found.unreachable)
    if found is None:
        return RoleWrites(address, db.user, error=f"role {db.user} is not in pg_roles")
    return found
