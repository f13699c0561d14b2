"""Plain-SQL drills on a restore role that is not a superuser: the guard drops what ``pg_restore --no-owner
--no-privileges`` leaves out (and nothing else), and the drills pass on such a role against the real sandbox;
with a template database holding the untrusted extension (``restore_target.template``), the sandbox's own
photonic_foundry dumps (which create pg_stat_statements and comment on it) restore on such a role too.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import secrets
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from opsverify.actions.database import connect, drop_database
from opsverify.errors import ActionRefused
from opsverify.facts.database import source_facts
from opsverify.facts.manifest import write_manifest
from opsverify.localserver.scratch import SCRATCH_PREFIX
from opsverify.pgtools import pg_env, pg_tool
from opsverify.profile.environment import Profile
from opsverify.restore.sqlguard import guarded

Run = Callable[..., Any]
Variant = Callable[..., Path]
T = timedelta(seconds=10)
DRILL = "restore/test_database_drill.py"
PLAIN, CUSTOM = "owned-plain", "owned-custom"

BODY = (
    b"CREATE FUNCTION app.f(integer) RETURNS integer\n    LANGUAGE plpgsql\n    AS $_$\nBEGIN\n"
    b"GRANT SELECT ON app.t TO reader;\nALTER TABLE app.t OWNER TO someone;\nREVOKE ALL ON app.t FROM PUBLIC;\n"
    b"RETURN $1;\nEND\n$_$;\n"
)
KEPT = (
    b"SET standard_conforming_strings = on;\n\\restrict abc\n"
    b"CREATE TABLE app.t (\n    id integer NOT NULL,\n    \"GRANT\" text DEFAULT E'it\\'s\nGRANT ALL ON x TO y;'\n);\n"
    + BODY
    + b"COMMENT ON TABLE app.t IS 'GRANT in a string\nREVOKE ALL ON app.t FROM x;';\n"
    b"/* a comment\nGRANT ALL ON app.t TO x;\n*/\n-- GRANT in a line comment\n"
    b"ALTER SEQUENCE app.s OWNED BY app.t.id;\nALTER TABLE ONLY app.t\n"
    b"    ADD CONSTRAINT \"x OWNER TO y\" PRIMARY KEY (id);\n"
    b"COPY app.t (id, \"GRANT\") FROM stdin;\n1\tGRANT SELECT ON t TO x;\n2\tALTER TABLE t OWNER TO x;\n\\.\n"
    b"COMMENT ON EXTENSION pg_trgm IS 'text similarity';\n\\unrestrict abc\n"
)
DROPPED = [
    b"ALTER TABLE app.t OWNER TO photonic;\n",
    b"ALTER TABLE app.v OWNER TO \"Photonic Owner\";\n",
    b"ALTER MATERIALIZED VIEW app.mv OWNER TO photonic;\n",
    b"ALTER FUNCTION app.f(integer, character varying) OWNER TO photonic;\n",
    b"ALTER PROCEDURE app.p() OWNER TO photonic;\n",
    b"ALTER AGGREGATE app.agg(integer) OWNER TO photonic;\n",
    b"ALTER TYPE app.mood OWNER TO photonic;\n",
    b"ALTER DOMAIN app.pos OWNER TO photonic;\n",
    b"ALTER SCHEMA public OWNER TO photonic;\n",
    b"ALTER FOREIGN TABLE app.ft OWNER TO photonic;\n",
    b"ALTER LARGE OBJECT 424242 OWNER TO photonic;\n",
    b"ALTER PUBLICATION pub OWNER TO photonic;\n",
    b"ALTER TEXT SEARCH CONFIGURATION app.cfg OWNER TO photonic;\n",
    b"ALTER STATISTICS app.st OWNER TO photonic;\n",
    b"ALTER OPERATOR FAMILY app.fam USING btree OWNER TO photonic;\n",
    b"GRANT SELECT ON TABLE app.t TO reader;\n",
    b"GRANT UPDATE(note) ON TABLE app.t TO reader;\n",
    b"REVOKE ALL ON FUNCTION app.f(integer) FROM PUBLIC;\n",
    b"GRANT SELECT ON LARGE OBJECT 424242 TO reader;\n",
    b"ALTER DEFAULT PRIVILEGES FOR ROLE photonic IN SCHEMA app GRANT SELECT ON TABLES  TO reader;\n",
    b"GRANT SELECT,\n    INSERT\n    ON TABLE app.t\n    TO reader;\n",
    b"GRANT SELECT ON TABLE \"a;b\" TO \"c;\nd\";\n",
    b"ALTER TABLE app.t\n    OWNER TO photonic;\n",
]
CHUNKS = [1, 2, 3, 5, 7, 64, 1 << 20]
TEMPLATE_FIX = (  # an untrusted extension, scratch databases copied from template0
    "have a superuser create it once in a template database and name that database in restore_target's template "
    "(README, The staging (restore target) role), restore as a superuser role, or drill a backup of a database "
    "without it"
)


def run(dump: bytes, chunk: int) -> bytes:
    return b"".join(guarded(io.BytesIO(dump), chunk))


@pytest.mark.parametrize("chunk", CHUNKS)
def test_words_in_bodies_strings_comments_and_copy_data_are_left_alone(chunk: int) -> None:
    assert run(KEPT, chunk) == KEPT


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("statement", DROPPED)
def test_owner_and_privilege_statements_become_empty_lines(statement: bytes, chunk: int) -> None:
    dump = KEPT.replace(BODY, BODY + statement)
    out = run(dump, chunk)
    assert out == KEPT.replace(BODY, BODY + b"\n" * statement.count(b"\n"))


@pytest.mark.parametrize(
    "statement",
    [
        b"ALTER TABLE app.t ADD COLUMN a integer, OWNER TO photonic;\n",  # not an owner statement alone
        b"ALTER TABLE app.t RENAME TO \"OWNER TO x\";\n",
        b"ALTER SEQUENCE app.s OWNED BY app.t.id;\n",
        b"SELECT 1; GRANT SELECT ON app.t TO reader;\n",  # not at the start of a line
        b"  GRANT SELECT ON app.t TO reader;\n",
    ],
)
@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_statements_pg_restore_keeps_are_kept(statement: bytes, chunk: int) -> None:
    dump = KEPT.replace(BODY, BODY + statement)
    assert run(dump, chunk) == dump


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_dollar_quotes_end_at_their_own_tag(chunk: int) -> None:
    dump = b"SELECT $a$b$a$, $1, x$y$;\nSELECT $$\nGRANT$$;\nGRANT ALL ON t TO x;\nSELECT 1;\n"
    assert run(dump, chunk) == dump.replace(b"GRANT ALL ON t TO x;", b"")


def test_a_statement_after_a_dropped_one_on_its_line_is_kept() -> None:
    dump = b"GRANT ALL ON t TO x; CREATE INDEX i ON t (a);\nSELECT 1;\n"
    assert run(dump, 3) == b" CREATE INDEX i ON t (a);\nSELECT 1;\n"


@pytest.mark.parametrize(
    ("tail", "number", "shown"),
    [
        (b"GRANT ALL\n  ON t TO x;\n\\connect other\n", 3, "\\connect other"),
        (b"SELECT 1; CREATE DATABASE x;\n", 1, "CREATE DATABASE x;"),
        (b"SELECT 1 \\! rm -rf /\n;\n", 1, "\\! rm -rf /"),
        (b"CREATE TABLE t (\n  a text)\n;\nCOPY t FROM '/etc/passwd';\n", 4, "COPY t FROM '/etc/passwd';"),
        (b"/* x */ SET ROLE postgres;\n", 1, "SET ROLE postgres;"),
    ],
)
@pytest.mark.parametrize("chunk", [1, 5, 1 << 20])
def test_refusals_name_the_dump_line(tail: bytes, number: int, shown: str, chunk: int) -> None:
    lines = KEPT.count(b"\n")
    with pytest.raises(ActionRefused, match="^" + re.escape(f"line {lines + number} ({shown!r})")):
        run(KEPT + tail, chunk)


@pytest.mark.parametrize("chunk", [1, 5, 1 << 20])
def test_a_backslash_in_a_dollar_body_or_string_is_no_command(chunk: int) -> None:
    dump = b"CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$\n\\! not a command\n$$;\nSELECT '\n\\connect x';\n"
    assert run(dump, chunk) == dump


# --- drills on the real sandbox PostgreSQL, as roles that are not superusers ---------------------------------------

SOURCE_SQL = """
CREATE EXTENSION pg_trgm;
ALTER SCHEMA public OWNER TO {owner};
COMMENT ON SCHEMA public IS 'owned by the application role';
SET ROLE {owner};
CREATE SCHEMA app;
CREATE TABLE app.models (id serial PRIMARY KEY, name text NOT NULL, "GRANT" text);
INSERT INTO app.models (name, "GRANT")
SELECT 'model-' || i, 'GRANT SELECT ON app.models TO x;' FROM generate_series(1, 40) i;
CREATE INDEX models_name_trgm ON app.models USING gin (name gin_trgm_ops);
CREATE TABLE public.events (
    id bigserial PRIMARY KEY, model_id integer REFERENCES app.models (id), note text
);
INSERT INTO public.events (model_id, note) SELECT 1 + i % 40, E'line\\nREVOKE ALL ON app.models FROM PUBLIC;'
FROM generate_series(1, 300) i;
CREATE VIEW app.recent AS SELECT * FROM public.events WHERE id > 100;
CREATE MATERIALIZED VIEW app.counts AS SELECT model_id, count(*) AS n FROM public.events GROUP BY model_id;
CREATE FUNCTION app.touch(integer) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
GRANT SELECT ON app.models TO {reader};
ALTER TABLE app.models OWNER TO {owner};
RETURN $1;
END
$$;
CREATE TYPE app.mood AS ENUM ('ok', 'bad');
CREATE DOMAIN app.positive AS integer CHECK (VALUE > 0);
COMMENT ON TABLE app.models IS 'GRANT and OWNER TO in a comment';
GRANT USAGE ON SCHEMA app TO {reader};
GRANT SELECT, UPDATE (note) ON public.events TO {reader};
REVOKE EXECUTE ON FUNCTION app.touch(integer) FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO {reader};
RESET ROLE;
"""


@dataclass
class Roles:
    """The test's roles on the sandbox PostgreSQL: ``createdb`` (LOGIN CREATEDB only) and ``member`` (also a
    member of the dumped objects' owner role), each with its password file; the owner role."""

    owner: str
    createdb: str
    member: str
    passwords: dict[str, Path]


def _superuser(sandbox: Profile) -> Any:
    assert sandbox.restore_target is not None
    return sandbox.restore_target


def _drop_roles(sandbox: Profile, roles: list[str]) -> None:
    from psycopg import sql

    with connect(_superuser(sandbox), None, T) as conn:
        for role in roles:
            owned = conn.execute(  # a drill whose cleanup failed left its scratch database (its test fails anyway)
                "SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = %s)", (role,)
            ).fetchall()
            for (database,) in owned:
                drop_database(conn, str(database))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        left = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (roles,)).fetchall()
    assert left == [], f"roles left behind: {left}"


@pytest.fixture
def roles(sandbox: Profile, tmp_path: Path) -> Iterator[Roles]:
    """An owner role (NOLOGIN) and two restore roles (LOGIN CREATEDB NOSUPERUSER, one IN ROLE owner); dropped after."""
    from psycopg import sql

    tag = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    names = Roles(f"opsverify_test_owner_{tag}", f"opsverify_test_createdb_{tag}", f"opsverify_test_member_{tag}", {})
    try:
        with connect(_superuser(sandbox), None, T) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(names.owner)))
            for role, extra in ((names.createdb, ""), (names.member, " IN ROLE " + names.owner)):
                password = secrets.token_hex(16)
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB NOSUPERUSER PASSWORD {}" + extra).format(
                    sql.Identifier(role), sql.Literal(password)))
                names.passwords[role] = tmp_path / f"{role}.pass"
                names.passwords[role].write_text(password + "\n")
        yield names
    finally:
        _drop_roles(sandbox, [names.member, names.createdb, names.owner])


@dataclass
class Backups:
    """Plain ``.sql.gz`` and custom dumps (with manifests) of a database whose objects the owner role owns."""

    plain: Path
    custom: Path


@pytest.fixture
def owned_backups(sandbox: Profile, tmp_path: Path, roles: Roles) -> Backups:
    """Dumps of a source database (a scratch database of this test, dropped after) owned by ``roles.owner``, with
    grants to a reader role that no longer exists when the drills run."""
    from psycopg import sql

    target = _superuser(sandbox)
    reader = roles.owner.replace("owner", "reader")
    source = f"{SCRATCH_PREFIX}test_owned_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    directory = tmp_path / "owned"
    directory.mkdir()
    plain, custom = directory / "backup_20260101_000000.sql.gz", directory / "backup_20260101_000000.dump"
    with connect(target, None, T) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(reader)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(
            sql.Identifier(source), sql.Identifier(roles.owner)))
    try:
        with connect(target, source, T) as conn:
            conn.execute(SOURCE_SQL.format(owner=roles.owner, reader=reader).encode())
            facts = source_facts(conn, 100_000)
        env = pg_env(target, source, T)
        dumped = subprocess.run([pg_tool("pg_dump"), "-d", source], env=env, capture_output=True, check=True,
                                timeout=60).stdout
        plain.write_bytes(gzip.compress(dumped))
        subprocess.run([pg_tool("pg_dump"), "-Fc", "-f", str(custom), "-d", source], env=env, check=True, timeout=60)
        for backup in (plain, custom):
            write_manifest(backup, facts)
    finally:
        with connect(target, None, T) as conn:
            drop_database(conn, source)
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(reader)))
    for statement in (f"ALTER TABLE app.models OWNER TO {roles.owner};", f"GRANT USAGE ON SCHEMA app TO {reader};",
                      f"ALTER SCHEMA public OWNER TO {roles.owner};", "ALTER DEFAULT PRIVILEGES FOR ROLE",
                      "COMMENT ON SCHEMA public IS", "COMMENT ON EXTENSION pg_trgm IS"):
        assert statement.encode() in dumped  # what a non-superuser could not restore is in the dump
    return Backups(plain, custom)


def as_role(role: str, password: Path, backups: Backups, **drill: Any) -> Callable[[dict[str, Any]], None]:
    """The two drills of ``backups`` only, restored as ``role``."""

    def mutate(data: dict[str, Any]) -> None:
        data["backups"] = [
            {"name": "owned-sql", "kind": "postgres", "path": str(backups.plain.parent), "pattern": "backup_*.sql.gz"},
            {"name": "owned-dump", "kind": "postgres", "path": str(backups.custom.parent), "pattern": "backup_*.dump"},
        ]
        data["drills"] = [
            {"name": PLAIN, "backup": "owned-sql", "database": "photonic_foundry", **drill},
            {"name": CUSTOM, "backup": "owned-dump", "database": "photonic_foundry", **drill},
        ]
        data["restore_target"].update(user=role, password_file=str(password))

    return mutate


def check(name: str, drill: str) -> str:
    return f"test_database_drill.py::{name}[{drill}]"


def amcheck_denied(drill: str, role: str) -> str:
    return (
        f"drill {drill}: pg_amcheck may not check the restored copy as role {role} (query failed: ERROR:  permission "
        'denied to create extension "amcheck"): amcheck is not a trusted extension and the scratch database is '
        "a copy of template0, which lacks it, so use a superuser restore role, or set amcheck: false on the drill"
    )


def test_a_createdb_only_role_restores_plain_and_custom_dumps_of_objects_other_roles_own(
    run_checks: Run, profile_variant: Variant, roles: Roles, owned_backups: Backups
) -> None:
    role = roles.createdb
    run = run_checks(profile_variant(as_role(role, roles.passwords[role], owned_backups)), DRILL)
    amcheck = {check("test_restored_copy_passes_amcheck", d) for d in (PLAIN, CUSTOM)}
    assert run.failed() == amcheck, run.result.stdout.str()[-3000:]
    for drill, tool in ((PLAIN, "psql"), (CUSTOM, "pg_restore")):
        assert run.checks[check("test_restore_completes_without_errors", drill)]["evidence"]["tool"] == tool
        assert run.message(check("test_restored_copy_passes_amcheck", drill)) == amcheck_denied(drill, role)
        for name in ("test_restore_completes_without_errors", "test_restored_schema_matches_the_dump",
                     "test_restored_row_counts_match_the_backup", "test_restored_tables_match_their_checksums",
                     "test_smoke_queries_return_rows", "test_restore_time_is_within_rto"):
            assert run.outcome(check(name, drill)) == "passed", (name, drill, run.message(check(name, drill)))
    off = run_checks(profile_variant(as_role(role, roles.passwords[role], owned_backups, amcheck=False)), DRILL)
    assert off.failed() == set()
    assert off.message(check("test_restored_copy_passes_amcheck", PLAIN)) == (
        f"drill {PLAIN}: pg_amcheck off: the drill sets amcheck: false"
    )


def test_a_member_of_the_owner_role_restores_them_too(
    run_checks: Run, profile_variant: Variant, roles: Roles, owned_backups: Backups
) -> None:
    role = roles.member
    run = run_checks(profile_variant(as_role(role, roles.passwords[role], owned_backups, amcheck=False)), DRILL)
    assert run.failed() == set(), run.result.stdout.str()[-3000:]
    for drill in (PLAIN, CUSTOM):
        assert run.outcome(check("test_restored_row_counts_match_the_backup", drill)) == "passed"
        assert run.outcome(check("test_smoke_queries_return_rows", drill)) == "passed"


def test_an_untrusted_extension_fails_the_restore_naming_the_privilege(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, roles: Roles
) -> None:
    role = roles.createdb
    source = next(b for b in sandbox.backups if b.name == "qp-database-daily")
    dump = max(Path(source.path).glob(source.pattern), key=lambda p: p.stat().st_mtime)
    line = gzip.decompress(dump.read_bytes()).split(b"\n").index(
        b"CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public;") + 1

    def mutate(data: dict[str, Any]) -> None:
        data["drills"] = [d for d in data["drills"] if d["name"] == "qp-database-gzip"]
        data["restore_target"].update(user=role, password_file=str(roles.passwords[role]))

    run = run_checks(profile_variant(mutate), DRILL)
    restore = check("test_restore_completes_without_errors", "qp-database-gzip")
    rto = check("test_restore_time_is_within_rto", "qp-database-gzip")
    assert run.failed() == {restore, rto}
    assert run.message(restore) == (
        f"restore of {dump} for drill qp-database-gzip failed: psql:<stdin>:{line}: ERROR:  permission denied to "
        'create extension "pg_stat_statements": pg_stat_statements is not a trusted extension, so only a superuser '
        f"may create it: {TEMPLATE_FIX}"
    )
    assert run.message(rto) == "drill qp-database-gzip: not recovered (the restore failed), RTO 30m not met"


# --- a template database with the untrusted extensions the dumps use (restore_target.template) ------------------

EXTENSION_COMMENT = b"COMMENT ON EXTENSION pg_stat_statements IS 'track planning and execution statistics';\n"
SKIP = frozenset({"pg_stat_statements", "My Ext"})


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_comments_of_extensions_the_template_gave_become_empty_lines(chunk: int) -> None:
    skipped = [
        EXTENSION_COMMENT,
        b"COMMENT ON EXTENSION \"My Ext\" IS 'a comment;\nGRANT ALL ON t TO x;\nover lines';\n",
        b"comment on extension PG_STAT_STATEMENTS is NULL;\n",
    ]
    for statement in skipped:
        dump = KEPT.replace(BODY, BODY + statement)
        out = b"".join(guarded(io.BytesIO(dump), chunk, skip_extension_comments=SKIP))
        assert out == KEPT.replace(BODY, BODY + b"\n" * statement.count(b"\n")), statement
    kept = [
        b"COMMENT ON EXTENSION pg_trgm IS 'text similarity';\n",  # not given by the template: the role owns it
        b"COMMENT ON EXTENSION \"my ext\" IS 'another extension';\n",
        b"COMMENT ON TABLE pg_stat_statements IS 'a table of that name';\n",
        b"SELECT 1; COMMENT ON EXTENSION pg_stat_statements IS 'x';\n",  # not at the start of a line
    ]
    for statement in kept:
        dump = KEPT.replace(BODY, BODY + statement)
        assert b"".join(guarded(io.BytesIO(dump), chunk, skip_extension_comments=SKIP)) == dump, statement
    dump = KEPT.replace(BODY, BODY + EXTENSION_COMMENT)
    assert run(dump, chunk) == dump  # nothing to skip: the comment stays, as before


@pytest.fixture
def createdb_role(sandbox: Profile, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A restore role with LOGIN CREATEDB only; dropped after (with any database it owns), verified."""
    from psycopg import sql

    role = f"opsverify_test_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    password = secrets.token_hex(16)
    secret = tmp_path / f"{role}.pass"
    secret.write_text(password + "\n")
    with connect(_superuser(sandbox), None, T) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB NOSUPERUSER PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
    try:
        yield role, secret
    finally:
        _drop_roles(sandbox, [role])


def _drop_template(sandbox: Profile, name: str) -> None:
    """``IS_TEMPLATE false`` (a template database cannot be dropped), drop it, and prove it gone."""
    from psycopg import sql

    with connect(_superuser(sandbox), None, T) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None


@pytest.fixture
def template(sandbox: Profile) -> Iterator[str]:
    """The recipe a staging DBA runs once as a superuser: a database with pg_stat_statements, marked a template.
    Dropped after (IS_TEMPLATE false first), verified gone."""
    from psycopg import sql

    name = f"opsverify_test_template_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    target = _superuser(sandbox)
    try:
        with connect(target, None, T) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        with connect(target, name, T) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        with connect(target, None, T) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(sql.Identifier(name)))
        yield name
    finally:
        _drop_template(sandbox, name)


@pytest.fixture
def sandbox_dumps(sandbox: Profile, tmp_path: Path) -> Backups:
    """Copies of the sandbox's newest photonic_foundry dumps, plain .sql.gz and custom, with their manifests: they
    create pg_stat_statements (not trusted) and comment on it."""
    import shutil

    copies = []
    for series in ("pf-postgres-daily", "pf-postgres-custom"):
        source = next(b for b in sandbox.backups if b.name == series)
        newest = max(Path(source.path).glob(source.pattern), key=lambda p: p.stat().st_mtime)
        directory = tmp_path / series
        directory.mkdir()
        for path in (newest, newest.with_name(newest.name + ".manifest.json")):
            shutil.copy2(path, directory / path.name)
        copies.append(directory / newest.name)
    plain, custom = copies
    assert b"\nCOMMENT ON EXTENSION pg_stat_statements IS " in gzip.decompress(plain.read_bytes())
    listing = subprocess.run([pg_tool("pg_restore"), "-l", str(custom)], capture_output=True, check=True, timeout=60)
    assert b" COMMENT - EXTENSION pg_stat_statements" in listing.stdout
    return Backups(plain, custom)


def with_template(role: str, password: Path, dumps: Backups, template: str | None) -> Callable[[dict[str, Any]], None]:
    """The sandbox dumps' two drills restored as ``role`` (no amcheck: it needs a superuser), from ``template``."""

    def mutate(data: dict[str, Any]) -> None:
        as_role(role, password, dumps, amcheck=False)(data)
        data["backups"][0]["pattern"] = "backup_*.sql.gz"
        if template is not None:
            data["restore_target"]["template"] = template

    return mutate


def test_a_template_with_the_untrusted_extension_lets_a_createdb_role_drill_the_sandbox_dumps(
    run_checks: Run, profile_variant: Variant, createdb_role: tuple[str, Path], template: str,
    sandbox_dumps: Backups,
) -> None:
    role, password = createdb_role
    run = run_checks(profile_variant(with_template(role, password, sandbox_dumps, template)), DRILL)
    assert run.failed() == set(), run.result.stdout.str()[-3000:]
    for drill, tool in ((PLAIN, "psql"), (CUSTOM, "pg_restore")):
        assert run.checks[check("test_restore_completes_without_errors", drill)]["evidence"]["tool"] == tool
        for name in ("test_restore_completes_without_errors", "test_restored_schema_matches_the_dump",
                     "test_restored_row_counts_match_the_backup", "test_restored_tables_match_their_checksums",
                     "test_smoke_queries_return_rows", "test_restore_time_is_within_rto"):
            assert run.outcome(check(name, drill)) == "passed", (name, drill, run.message(check(name, drill)))

    without = run_checks(profile_variant(with_template(role, password, sandbox_dumps, None)), DRILL)
    restore = {d: check("test_restore_completes_without_errors", d) for d in (PLAIN, CUSTOM)}
    rto = {d: check("test_restore_time_is_within_rto", d) for d in (PLAIN, CUSTOM)}
    assert without.failed() == {*restore.values(), *rto.values()}, without.result.stdout.str()[-3000:]
    line = gzip.decompress(sandbox_dumps.plain.read_bytes()).split(b"\n").index(
        b"CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public;") + 1
    fix = (
        'permission denied to create extension "pg_stat_statements": pg_stat_statements is not a trusted extension, '
        f"so only a superuser may create it: {TEMPLATE_FIX}"
    )
    assert without.message(restore[PLAIN]) == (
        f"restore of {sandbox_dumps.plain} for drill {PLAIN} failed: psql:<stdin>:{line}: ERROR:  {fix}"
    )
    assert without.message(restore[CUSTOM]) == (
        f"restore of {sandbox_dumps.custom} for drill {CUSTOM} failed: could not execute query: ERROR:  {fix}"
    )
    assert without.message(rto[PLAIN]) == f"drill {PLAIN}: not recovered (the restore failed), RTO 30m not met"


def test_a_template_missing_not_copyable_in_use_or_without_the_extension_fails_the_restore_naming_the_fix(
    run_checks: Run, profile_variant: Variant, sandbox: Profile, createdb_role: tuple[str, Path], template: str,
    sandbox_dumps: Backups,
) -> None:
    from psycopg import sql

    role, password = createdb_role
    target = _superuser(sandbox)
    where = f"{target.host}:{target.port}"
    restore = check("test_restore_completes_without_errors", PLAIN)
    rto = check("test_restore_time_is_within_rto", PLAIN)

    def only_plain(name: str) -> Callable[[dict[str, Any]], None]:
        def mutate(data: dict[str, Any]) -> None:
            with_template(role, password, sandbox_dumps, name)(data)
            data["drills"] = data["drills"][:1]

        return mutate

    def failure(name: str) -> str:
        run = run_checks(profile_variant(only_plain(name)), DRILL)
        assert run.failed() == {restore, rto}, run.result.stdout.str()[-3000:]
        return run.message(restore).removeprefix(f"restore of {sandbox_dumps.plain} for drill {PLAIN} failed: ")

    missing = f"{template}_missing"
    assert failure(missing) == (
        f"restore_target's template {missing} does not exist on {where}: create it once as a superuser (README, The "
        "staging (restore target) role), or set template: template0"
    )
    with connect(target, None, T) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(template)))
    assert failure(template) == (
        f"role {role} may not copy restore_target's template {template} on {where}: only a superuser or its owner may "
        f"copy a database not marked as a template, so as a superuser run ALTER DATABASE {template} IS_TEMPLATE true "
        "(README, The staging (restore target) role)"
    )
    with connect(target, None, T) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(sql.Identifier(template)))
    with connect(target, template, T):  # a DBA's session left open on the template
        assert failure(template) == (
            f"restore_target's template {template} on {where} has 1 other session(s) connected, and PostgreSQL "
            "copies a database only while nobody is connected to it: close them (SELECT pid, usename, "
            f"application_name FROM pg_stat_activity WHERE datname = '{template}') and connect to the template only "
            "to change it"
        )
    with connect(target, template, T) as conn:
        conn.execute("DROP EXTENSION pg_stat_statements")
    line = gzip.decompress(sandbox_dumps.plain.read_bytes()).split(b"\n").index(
        b"CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public;") + 1
    assert failure(template) == (
        f'psql:<stdin>:{line}: ERROR:  permission denied to create extension "pg_stat_statements": pg_stat_statements '
        f"is not a trusted extension, so only a superuser may create it, and restore_target's template {template} "
        f"lacks it: as a superuser, CREATE EXTENSION pg_stat_statements in {template} (README, The staging (restore "
        "target) role), restore as a superuser role, or drill a backup of a database without it"
    )
