"""Plain SQL dumps (``pg_dump``, ``pg_dump -t``, ``pg_dumpall``; plain or gzipped): did pg_dump finish?

pg_dump writes ``-- PostgreSQL database dump complete`` last (newer releases add a
``\\unrestrict <key>`` line after it), so a dump without that marker at its end was cut short.
Only a small tail is kept to look for it. Expected tables are found as pg_dump's
``-- Name: <table>; Type: TABLE;`` comments (or ``-- Data for Name: …; Type: TABLE DATA;`` in a
data-only dump), and the text is scanned for them only when some are expected. A ``.sql.gz``
is inflated and checked in the same pass. A roles file (``pg_dumpall --globals-only``, expected
with ``Expectations.roles``) must be text (no NUL byte) and hold ``CREATE ROLE`` statements, whose
role names land in ``facts["roles"]``.
"""

from __future__ import annotations

import re
from pathlib import Path

from opsverify.backups.gzipstream import READ_SIZE, GzipStream
from opsverify.backups.verdict import (
    ByteStream,
    CorruptBackup,
    Expectations,
    Verdict,
    failed,
    missing_tables_detail,
    passed,
    shown_bytes,
)

MARKER = re.compile(rb"^-- PostgreSQL database (?:cluster )?dump complete[ \t\r]*$", re.MULTILINE)
TABLE_COMMENT = re.compile(rb"\n-- (?:Data for )?Name: ([^;\n]+); Type: TABLE(?: DATA)?; Schema: ([^;\n]+);")
CREATE_ROLE = re.compile(rb'\nCREATE ROLE ("(?:[^"]|"")+"|[^\s;"]+);')
TAIL_SIZE = 4096
OVERLAP = 1024
MISSING = "dump-complete marker missing: pg_dump did not finish"


def _after_marker_ok(line: bytes) -> bool:
    """Lines pg_dump itself writes after the marker: blank, ``--`` and ``\\unrestrict <key>``."""
    text = line.strip()
    return text in (b"", b"--") or text.startswith(b"\\unrestrict ")


class SqlScanner:
    """Fed a dump's text chunk by chunk: keeps its tail for the marker and, when asked, its table names."""

    def __init__(self, find_tables: bool, find_roles: bool = False) -> None:
        self.size = 0
        self.tables: set[str] = set()
        self.roles: set[str] = set()
        self.binary_at: int | None = None  # offset of the first NUL byte (not SQL text), when roles are read
        self._find_tables = find_tables
        self._find_roles = find_roles
        self._tail = b""
        self._carry = b"\n"

    def feed(self, chunk: bytes) -> None:
        if self._find_roles and self.binary_at is None and b"\0" in chunk:
            self.binary_at = self.size + chunk.index(b"\0")
        self.size += len(chunk)
        self._tail = chunk[-TAIL_SIZE:] if len(chunk) >= TAIL_SIZE else (self._tail + chunk)[-TAIL_SIZE:]
        if self._find_tables or self._find_roles:
            self._scan(chunk)

    def _scan(self, chunk: bytes) -> None:
        buf = self._carry + chunk  # the overlap catches a comment split across two chunks
        for match in TABLE_COMMENT.finditer(buf) if self._find_tables else ():
            name, schema = (part.decode(errors="replace") for part in match.groups())
            self.tables.add(f"{schema}.{name}")
        for match in CREATE_ROLE.finditer(buf) if self._find_roles else ():
            self.roles.add(role_name(match[1].decode(errors="replace")))
        self._carry = buf[-OVERLAP:]

    def completion_problem(self) -> str | None:
        """Why the text is not a finished pg_dump, or None when the marker ends it."""
        markers = list(MARKER.finditer(self._tail))
        if not markers:
            return MISSING
        extra = [line for line in self._tail[markers[-1].end() :].splitlines() if not _after_marker_ok(line)]
        if extra:
            return f"dump-complete marker is not at the end: it is followed by '{shown_bytes(extra[0][:60])}'"
        return None


def role_name(written: str) -> str:
    """A role name as pg_dumpall writes it (``app`` or ``"App-User"``), unquoted."""
    if written.startswith('"') and written.endswith('"'):
        return written[1:-1].replace('""', '"')
    return written


def sql_verdict(name: str, fmt: str, scanner: SqlScanner, expect: Expectations, facts: dict[str, str]) -> Verdict:
    """The verdict on a fully scanned dump: marker first, then the expected tables."""
    problem = scanner.completion_problem()
    facts["marker"] = "missing" if problem else "present"
    if expect.tables:
        facts["tables"] = ",".join(sorted(scanner.tables))
    if expect.roles:
        facts["roles"] = ",".join(sorted(scanner.roles))
        if scanner.binary_at is not None:
            return failed(name, fmt, f"not SQL text: a NUL byte at offset {scanner.binary_at:,}", facts)
    if problem:
        return failed(name, fmt, problem, facts)
    missing = expect.missing_tables(scanner.tables)
    if missing:
        return failed(name, fmt, missing_tables_detail(missing, scanner.tables), facts)
    if expect.roles and not scanner.roles:
        return failed(name, fmt, "holds no CREATE ROLE statement: not a pg_dumpall --globals-only file", facts)
    gzipped = "gzip verified, " if fmt == "sql.gz" else ""
    tables = f", {len(expect.tables)} expected table(s) present" if expect.tables else ""
    roles = f", {len(scanner.roles)} role(s) created" if expect.roles else ""
    detail = f"intact: {gzipped}{scanner.size:,} bytes of SQL, dump-complete marker present{tables}{roles}"
    return passed(name, fmt, detail, facts)


def verify_sql_stream(stream: ByteStream, expect: Expectations, name: str = "<stream>") -> Verdict:
    """Check a plain SQL dump read from ``stream`` (format ``sql``)."""
    scanner = SqlScanner(bool(expect.tables), expect.roles)
    while chunk := stream.read(READ_SIZE):
        scanner.feed(chunk)
    if scanner.size == 0:
        return failed(name, "sql", "empty file (0 bytes)", {"bytes": "0"})
    return sql_verdict(name, "sql", scanner, expect, {"bytes": str(scanner.size)})


def verify_sql_gz_stream(stream: ByteStream, expect: Expectations, name: str = "<stream>") -> Verdict:
    """Inflate a gzipped SQL dump, verifying every gzip member, and check the SQL in the same pass."""
    gz = GzipStream(stream)
    scanner = SqlScanner(bool(expect.tables), expect.roles)
    try:
        for chunk in gz:
            scanner.feed(chunk)
    except CorruptBackup as exc:
        return failed(name, "sql.gz", str(exc), gz.facts())
    return sql_verdict(name, "sql.gz", scanner, expect, gz.facts())


def verify_sql(path: Path, expect: Expectations) -> Verdict:
    """``verify_sql_stream`` over a file."""
    with path.open("rb") as stream:
        return verify_sql_stream(stream, expect, str(path))


def verify_sql_gz(path: Path, expect: Expectations) -> Verdict:
    """``verify_sql_gz_stream`` over a file."""
    with path.open("rb") as stream:
        return verify_sql_gz_stream(stream, expect, str(path))


# --- What a plain dump holds: its tables and the rows of each COPY section, counted while streaming ---

COPY_START = re.compile(rb"^COPY (.+?) (?:\(.*\) )?FROM stdin;\n", re.MULTILINE)
COPY_END = re.compile(rb"^\\\.\r?\n", re.MULTILINE)
TABLE_LINE = re.compile(TABLE_COMMENT.pattern.replace(rb"\n", b"^", 1), re.MULTILINE)  # at a line start
_IDENT = rb'(?:"(?:[^"]|"")*"|[^\s"(.]+)'
INSERT = re.compile(rb"^INSERT INTO (" + _IDENT + rb"(?:\." + _IDENT + rb")?)[ (]", re.MULTILINE)


def unquote(name: str) -> str:
    """``public."My Table"`` -> ``public.My Table`` (pg_dump quotes identifiers only when it must)."""
    parts, part, quoted, i = [], "", False, 0
    while i < len(name):
        c = name[i]
        if c == '"':
            if quoted and name[i + 1 : i + 2] == '"':
                part += '"'
                i += 1
            else:
                quoted = not quoted
        elif c == "." and not quoted:
            parts.append(part)
            part = ""
        else:
            part += c
        i += 1
    return ".".join([*parts, part])


class SqlContent:
    """Fed a plain dump chunk by chunk: the tables it creates (or holds data for) and the rows of each.

    Memory stays bounded by the longest line: rows are counted as newlines between ``COPY … FROM
    stdin;`` and its ``\\.`` (or as ``INSERT INTO`` statements, ``pg_dump --inserts``), never kept.
    """

    def __init__(self) -> None:
        self.tables: set[str] = set()
        self.rows: dict[str, int] = {}
        self.size = 0
        self._carry = b""
        self._copying: str | None = None

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        buf = self._carry + chunk
        pos = 0
        end = buf.rfind(b"\n") + 1  # only whole lines are parsed; the rest waits for the next chunk
        while pos < end:
            if self._copying is None:
                start = COPY_START.search(buf, pos, end)
                stop = start.start() if start else end
                for name, schema in TABLE_LINE.findall(buf, pos, stop):
                    self.tables.add(f"{schema.decode(errors='replace')}.{name.decode(errors='replace')}")
                for table in INSERT.findall(buf, pos, stop):  # pg_dump --inserts: one statement per row
                    name = unquote(table.decode(errors="replace"))
                    self.rows[name] = self.rows.get(name, 0) + 1
                if start is None:
                    pos = end
                    break
                self._copying = unquote(start.group(1).decode(errors="replace"))
                self.rows.setdefault(self._copying, 0)
                pos = start.end()
            else:
                done = COPY_END.search(buf, pos, end)
                self.rows[self._copying] += buf.count(b"\n", pos, done.start() if done else end)
                if done is None:
                    pos = end
                    break
                self._copying = None
                pos = done.end()
        self._carry = buf[pos:]


def sql_content(stream: ByteStream, gzipped: bool) -> SqlContent:
    """``SqlContent`` of a whole plain dump (inflated and CRC-checked when gzipped); ``CorruptBackup`` if damaged."""
    content = SqlContent()
    if gzipped:
        for chunk in GzipStream(stream):
            content.feed(chunk)
    else:
        while chunk := stream.read(READ_SIZE):
            content.feed(chunk)
    return content
