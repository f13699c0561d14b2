"""Plain-SQL drills on a restore role that is not a superuser: the guard drops what ``pg_restore --no-owner
--no-privileges`` leaves out (and nothing else), and the drills pass on such a role against the real sandbox.
"""

from __future__ import annotations

import io
import re

import pytest

from opsverify.errors import ActionRefused
from opsverify.restore.sqlguard import guarded

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
