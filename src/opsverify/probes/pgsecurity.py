"""PostgreSQL security facts, read over SQL in one read-only session (issue 10, the CIS PostgreSQL rules).

Everything the security rules (``opsverify.rules.postgres``) judge comes from here: settings, role
attributes, the kind of each role's password hash (classified by the server: no hash is ever read),
``pg_hba_file_rules``, whether PUBLIC may CREATE in schema ``public``, and the installed extensions.
A part the session's role may not read is left out and ``missing`` names the grant that would give it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from opsverify.probes.postgres import Unread, read_only
from opsverify.profile.model import Database

if TYPE_CHECKING:
    import psycopg

SETTINGS = (
    "ssl", "password_encryption", "log_connections", "log_disconnections", "log_min_duration_statement",
    "data_checksums",
)
GRANT_SETTINGS = "GRANT pg_read_all_settings TO {role} (or pg_monitor)"
GRANT_HASHES = (
    "GRANT pg_read_all_data TO {role}, or a superuser role (only those read pg_authid, where the password kinds are)"
)
GRANT_HBA = "GRANT SELECT ON pg_hba_file_rules TO {role} and GRANT EXECUTE ON FUNCTION pg_hba_file_rules() TO {role}"

SETTINGS_SQL = "SELECT name, setting FROM pg_settings WHERE name = ANY(%(names)s)"
ROLES_SQL = """
SELECT rolname, rolsuper, rolcreaterole, rolbypassrls, rolreplication, rolcanlogin
FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY rolname
"""
# The kind of each stored password, decided by the server: only the kind leaves it, never a hash.
HASHES_SQL = """
SELECT rolname,
       CASE WHEN rolpassword IS NULL THEN 'none'
            WHEN left(rolpassword, 14) = 'SCRAM-SHA-256$' THEN 'scram-sha-256'
            WHEN left(rolpassword, 3) = 'md5' AND length(rolpassword) = 35 THEN 'md5'
            ELSE 'plaintext' END
FROM pg_authid WHERE rolname !~ '^pg_' ORDER BY rolname
"""
HBA_SQL = """
SELECT line_number, type, database, user_name, address, netmask, auth_method, error
FROM pg_hba_file_rules ORDER BY line_number
"""
# PUBLIC (grantee 0) holding CREATE on schema public, from its ACL or, when none was set, the default one.
PUBLIC_CREATE_SQL = """
SELECT EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
               WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE')
"""
EXTENSIONS_SQL = "SELECT extname FROM pg_extension ORDER BY extname"
QUERIES = (SETTINGS_SQL, ROLES_SQL, HASHES_SQL, HBA_SQL, PUBLIC_CREATE_SQL, EXTENSIONS_SQL)  # what bench/ replays


@dataclass(frozen=True)
class RoleAttributes:
    """One role's privileged attributes (``pg_roles``)."""

    name: str
    superuser: bool
    createrole: bool
    bypassrls: bool
    replication: bool
    login: bool


@dataclass(frozen=True)
class HbaRule:
    """One line of ``pg_hba_file_rules`` (``address`` is None for ``local``, or the keyword ``all``/``samehost``)."""

    line: int
    type: str
    databases: tuple[str, ...]
    users: tuple[str, ...]
    address: str | None
    netmask: str | None
    method: str
    error: str | None = None


@dataclass(frozen=True)
class PgSecurityFacts:
    """What one read-only session told about a server's and a database's security configuration.

    ``missing`` maps a part (``settings``, ``password_hashes``, ``hba``) the role may not read to the
    grant that would let it; such a part is empty here.
    """

    address: str
    role: str
    settings: Mapping[str, str] = field(default_factory=dict)
    roles: tuple[RoleAttributes, ...] = ()
    password_kinds: Mapping[str, str] = field(default_factory=dict)
    hba: tuple[HbaRule, ...] = ()
    public_create: bool = False
    extensions: tuple[str, ...] = ()
    missing: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    unreachable: str | None = None

    @property
    def is_read(self) -> bool:
        return self.error is None


Rows = list[tuple[Any, ...]]


def _denied(conn: psycopg.Connection, query: str) -> Rows | None:
    """The rows of ``query``, or None when the server refuses it for want of a privilege."""
    import psycopg

    try:
        return conn.execute(query).fetchall()
    except psycopg.errors.InsufficientPrivilege:
        return None


def read_facts(conn: psycopg.Connection, address: str, role: str) -> PgSecurityFacts:
    """Every fact from an open session (each query under the session's statement timeout)."""
    missing: dict[str, str] = {}
    settings = {str(n): str(v) for n, v in conn.execute(SETTINGS_SQL, {"names": list(SETTINGS)}).fetchall()}
    if set(SETTINGS) - set(settings):
        missing["settings"] = GRANT_SETTINGS.format(role=role)
    roles = tuple(RoleAttributes(*(r[0], *(bool(v) for v in r[1:]))) for r in conn.execute(ROLES_SQL).fetchall())
    hashes = _denied(conn, HASHES_SQL)
    if hashes is None:
        missing["password_hashes"] = GRANT_HASHES.format(role=role)
    hba_rows = _denied(conn, HBA_SQL)
    if hba_rows is None:
        missing["hba"] = GRANT_HBA.format(role=role)
    hba = tuple(
        HbaRule(int(r[0]), str(r[1]), tuple(r[2] or ()), tuple(r[3] or ()), r[4], r[5], str(r[6] or ""), r[7])
        for r in hba_rows or ()
    )
    public = conn.execute(PUBLIC_CREATE_SQL).fetchone()
    extensions = tuple(str(r[0]) for r in conn.execute(EXTENSIONS_SQL).fetchall())
    return PgSecurityFacts(
        address, role, settings, roles, {str(n): str(k) for n, k in hashes or ()}, hba,
        bool(public and public[0]), extensions, missing,
    )


def probe_security(db: Database, timeout: timedelta, query_timeout: timedelta) -> PgSecurityFacts:
    """Read the security facts of ``db`` as its declared role in one read-only session."""
    address = f"{db.host}:{db.port}/{db.dbname}"
    found = read_only(db, timeout, query_timeout, lambda conn: read_facts(conn, address, db.user))
    if isinstance(found, Unread):
        return PgSecurityFacts(address, db.user, error=found.error, unreachable=found.unreachable)
    return found
