"""Which roles a live database needs after a recovery: its owners and grantees (for the globals backup).

A ``pg_dump`` restores objects with ``OWNER TO`` and ``GRANT`` statements naming roles it does
not create; on a new cluster those roles come only from ``pg_dumpall --globals-only``. This is
the live side of that comparison: one read-only catalog query, bounded by the request timeout
and a row limit, naming every role that owns the database or an object in its own schemas, or
holds a privilege on one of them (default privileges included). PostgreSQL's predefined
``pg_*`` roles are left out: pg_dumpall never creates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opsverify.probes.postgres import Unread, read_only
from opsverify.profile.model import Database, Timeouts

MAX_ROLES = 10_000
USER_SCHEMA = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"
ROLES_QUERY = f"""
WITH needed(oid, why) AS (
    SELECT datdba, 'owns' FROM pg_database WHERE datname = current_database()
    UNION SELECT (aclexplode(datacl)).grantee, 'granted' FROM pg_database
          WHERE datname = current_database() AND datacl IS NOT NULL
    UNION SELECT n.nspowner, 'owns' FROM pg_namespace n WHERE {USER_SCHEMA}
    UNION SELECT (aclexplode(n.nspacl)).grantee, 'granted' FROM pg_namespace n
          WHERE n.nspacl IS NOT NULL AND {USER_SCHEMA}
    UNION SELECT c.relowner, 'owns' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMA}
    UNION SELECT (aclexplode(c.relacl)).grantee, 'granted' FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relacl IS NOT NULL AND {USER_SCHEMA}
    UNION SELECT (aclexplode(a.attacl)).grantee, 'granted' FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace WHERE a.attacl IS NOT NULL AND {USER_SCHEMA}
    UNION SELECT p.proowner, 'owns' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {USER_SCHEMA}
    UNION SELECT (aclexplode(p.proacl)).grantee, 'granted' FROM pg_proc p
          JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proacl IS NOT NULL AND {USER_SCHEMA}
    UNION SELECT t.typowner, 'owns' FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {USER_SCHEMA}
    UNION SELECT d.defaclrole, 'owns' FROM pg_default_acl d
    UNION SELECT (aclexplode(d.defaclacl)).grantee, 'granted' FROM pg_default_acl d
)
SELECT r.rolname, string_agg(DISTINCT needed.why, ',') FROM needed JOIN pg_roles r ON r.oid = needed.oid
WHERE r.rolname !~ '^pg_' GROUP BY r.rolname ORDER BY r.rolname LIMIT {MAX_ROLES}
"""


@dataclass(frozen=True)
class DatabaseRoles:
    """The roles a database needs (name -> ``owns``, ``granted`` or ``granted,owns``), or why they are unknown."""

    address: str
    roles: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage


def database_roles(db: Database, timeouts: Timeouts) -> DatabaseRoles:
    """Read the roles that own objects in ``db`` or hold privileges on them, in one read-only query."""
    address = f"{db.host}:{db.port}/{db.dbname}"
    rows = read_only(db, timeouts.connect, timeouts.request, lambda conn: conn.execute(ROLES_QUERY).fetchall())
    if isinstance(rows, Unread):
        return DatabaseRoles(address, error=rows.error, unreachable=rows.unreachable)
    return DatabaseRoles(address, {str(name): str(why) for name, why in rows})
