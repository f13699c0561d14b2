"""Scratch databases on the restore target: ``ScratchDatabase`` (an action) and their janitor.

Every scratch database is named ``opsverify_scratch_<run>_<worker>_<n>_…`` and carries its creator
note as its comment, so the janitor at the next start drops what a killed run left behind (its
creator is gone, or it is older than ``max_scratch_age``). Nothing here ever drops a database
whose name lacks the prefix.

Scratch databases are copies of the restore target's ``template`` (default ``template0``): a database
a superuser prepared once with the untrusted extensions the dumps create, so that a role with
CREATEDB only restores them. A template that does not exist, that the role may not copy, or that
has sessions connected is one ``TemplateError`` naming the fix.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from opsverify.actions.base import Action
from opsverify.errors import OpsverifyError
from opsverify.localserver.scratch import SCRATCH_PREFIX, creator, orphan_reason, require_scratch_name
from opsverify.profile import RestoreTarget

if TYPE_CHECKING:
    import psycopg


def connect(target: RestoreTarget, dbname: str | None, timeout: timedelta) -> psycopg.Connection:
    """An autocommit session on the restore target (read-write: drills create and fill databases)."""
    from opsverify.probes.postgres import open_session

    return open_session(target, target.user, target.secret(), timeout, timeout, dbname=dbname,
                        application_name="opsverify-drill")


def exists(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


class TemplateError(OpsverifyError):
    """The restore target's ``template`` cannot be copied: it does not exist, the role may not, or it is in use."""


RECIPE = "README, The staging (restore target) role"


def _template_problem(target: RestoreTarget, exc: psycopg.Error) -> TemplateError | None:
    """The one-sentence fix when CREATE DATABASE failed on the template; None when it failed for another reason."""
    import psycopg

    template, where = target.template, f"{target.host}:{target.port}"
    named = f"restore_target's template {template}"
    if isinstance(exc, psycopg.errors.InvalidCatalogName):  # CREATE DATABASE: only its template can be missing
        return TemplateError(
            f"{named} does not exist on {where}: create it once as a superuser ({RECIPE}), or set template: template0"
        )
    if isinstance(exc, psycopg.errors.InsufficientPrivilege) and "permission denied to copy database" in str(exc):
        return TemplateError(
            f"role {target.user} may not copy {named} on {where}: only a superuser or its owner may copy a database "
            f"not marked as a template, so as a superuser run ALTER DATABASE {template} IS_TEMPLATE true ({RECIPE})"
        )
    if isinstance(exc, psycopg.errors.ObjectInUse):  # "source database … is being accessed by other users"
        detail = exc.diag.message_detail or ""
        count = re.search(r"(\d+) other session", detail)
        sessions = f"{count.group(1)} other session(s)" if count else "other sessions"
        return TemplateError(
            f"{named} on {where} has {sessions} connected, and PostgreSQL copies a database only while nobody is "
            f"connected to it: close them (SELECT pid, usename, application_name FROM pg_stat_activity WHERE datname "
            f"= '{template}') and connect to the template only to change it"
        )
    return None


class ScratchDatabase(Action[str]):
    """An empty database on the restore target, owned by its role; dropped and proven gone after."""

    kind = "scratch database"
    touches_production = False  # the restore target is staging, guarded by require_other_server

    def __init__(self, target: RestoreTarget, name: str, timeout: timedelta) -> None:
        super().__init__(name)
        self.target = target
        self.timeout = timeout

    def act(self) -> str:
        import psycopg
        from psycopg import sql

        with connect(self.target, None, self.timeout) as admin:
            create = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(self.name), sql.Identifier(self.target.template)
            )
            try:
                admin.execute(create)
            except psycopg.Error as exc:
                problem = _template_problem(self.target, exc)
                if problem is None:
                    raise
                raise problem from None
            note = sql.Literal(json.dumps(creator()))
            admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(self.name), note))
        return self.name

    def undo(self) -> None:
        with connect(self.target, None, self.timeout) as admin:
            drop_database(admin, self.name)

    def leftovers(self, before: object) -> list[str]:
        with connect(self.target, None, self.timeout) as admin:
            return [f"database {self.name} in pg_database"] if exists(admin, self.name) else []


def foreign_extensions(conn: psycopg.Connection) -> frozenset[str]:
    """The extensions in the session's database its role does not own (nor has the privileges of the owner of).

    In a scratch database these came from the template: a dump's ``CREATE EXTENSION IF NOT EXISTS`` of one
    does nothing, and its ``COMMENT ON EXTENSION`` would fail (``must be owner of extension``).
    """
    rows = conn.execute("SELECT extname FROM pg_extension WHERE NOT pg_has_role(extowner, 'USAGE')").fetchall()
    return frozenset(str(name) for (name,) in rows)


def drop_database(conn: psycopg.Connection, name: str) -> None:
    """Terminate its sessions and drop it (safe to call twice).

    Only client sessions are terminated: an autovacuum worker in a freshly restored copy may be
    signalled by a superuser alone, and a plain ``DROP DATABASE`` stops it by itself, so a
    restore role that is not a superuser falls back to that when ``FORCE`` is refused.
    """
    import psycopg
    from psycopg import sql

    require_scratch_name(name)
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'",
        (name,),
    )
    try:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    except psycopg.errors.InsufficientPrivilege:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@dataclass(frozen=True)
class Orphan:
    """A scratch database the janitor found, and why it is (or is not) an orphan."""

    name: str
    reason: str | None  # None: it belongs to a live run and stays


def sweep_databases(target: RestoreTarget, timeout: timedelta, own_prefix: str = "") -> list[Orphan]:
    """Drop the scratch databases that no live run owns; every scratch database found, with the verdict.

    Names starting with ``own_prefix`` (this run's) are never dropped: another worker of the same
    run may be between its CREATE DATABASE and the COMMENT that records its creator.
    """
    found: list[Orphan] = []
    with connect(target, None, timeout) as admin:
        rows = _scratch_rows(admin)
        noteless = {name for name, comment in rows if _note(comment) is None}
        if noteless:  # another run may be between its CREATE DATABASE and its COMMENT: look again after a grace
            time.sleep(NO_NOTE_GRACE)
            rows = _scratch_rows(admin)
        for name, comment in rows:
            ours = bool(own_prefix) and name.startswith(own_prefix)
            note = _note(comment)
            fresh = note is None and name not in noteless  # created since the first look: its note may follow
            reason = None if ours or fresh else orphan_reason(note, target.max_scratch_age, time.time())
            if reason is not None:
                drop_database(admin, name)
            found.append(Orphan(name, reason))
    return found


NO_NOTE_GRACE = 2.0  # seconds: a scratch database between its CREATE DATABASE and the COMMENT naming its creator


def _scratch_rows(admin: psycopg.Connection) -> list[tuple[str, str | None]]:
    rows = admin.execute(
        "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database WHERE datname LIKE %s",
        (SCRATCH_PREFIX.replace("_", r"\_") + "%",),
    ).fetchall()
    return [(str(name), comment) for name, comment in rows]


def _note(comment: str | None) -> object:
    try:
        return json.loads(comment or "")
    except ValueError:
        return None
