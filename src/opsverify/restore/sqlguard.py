"""A guard on plain SQL dumps on their way into ``psql``: only what a per-database ``pg_dump`` writes,
without the owner and privilege statements ``pg_restore --no-owner --no-privileges`` leaves out.

A cluster dump (``pg_dumpall``) or a ``--create``/``--clean`` dump carries ``\\connect``, ``CREATE
DATABASE``, ``DROP DATABASE`` and role statements that would reach past the scratch database, and
any backslash command (``\\!``) runs on this machine. Those statements stop the restore before psql
sees them. It guards against accidents: run drills with a restore role that is not a superuser
where dumps may not be trusted.

So that such a role can restore a dump of objects owned by other roles, the statements pg_dump
writes in its owner and ACL entries are dropped, as ``pg_restore --no-owner --no-privileges`` does
for an archive: ``ALTER <kind> <name> OWNER TO <role>;`` (every kind pg_dump writes: TABLE, which
pg_dump also uses for sequences and views, SEQUENCE, VIEW, MATERIALIZED VIEW, FOREIGN TABLE, FUNCTION,
PROCEDURE, AGGREGATE, TYPE, DOMAIN, SCHEMA, COLLATION, CONVERSION, TEXT SEARCH DICTIONARY and
CONFIGURATION, OPERATOR [CLASS|FAMILY], LARGE OBJECT, PUBLICATION, SUBSCRIPTION, STATISTICS, FOREIGN
DATA WRAPPER, SERVER, EVENT TRIGGER, [PROCEDURAL] LANGUAGE), ``GRANT …;``, ``REVOKE …;`` and ``ALTER
DEFAULT PRIVILEGES …;``. ``SECURITY LABEL`` stays, as pg_restore keeps it; so does ``COMMENT ON EXTENSION
x``, except for the extensions named in ``skip_extension_comments``: those the scratch database already
holds (copied from the restore target's template) and the restore role does not own, where the dump's
``CREATE EXTENSION IF NOT EXISTS x`` does nothing and its comment would fail (``must be owner of
extension x``), as the same TOC entry is left out of a pg_restore list. Only statements that start a
line at the top level are dropped: the word GRANT in a dollar-quoted body, a string, a comment or COPY
data is left alone. A dropped statement becomes as many empty lines as it had, so psql's line numbers
still name the dump's own lines.

The SQL between COPY blocks is followed like psql's lexer does (quotes, E'' strings, dollar quotes,
nested comments, parentheses) to know where statements start; COPY data is passed through by searching
for its ``\\.`` terminator, not line by line, so the guard costs next to nothing on big tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol

from opsverify.errors import ActionRefused

CHUNK = 1 << 20
HOLD_MAX = 1 << 16  # an ALTER statement longer than this is no owner statement: it is passed on
_COPY = re.compile(rb"^COPY \S+( \([^)]*\))? FROM stdin;\s*$")
_FORBIDDEN = re.compile(
    rb"^\s*(\\(?!restrict |unrestrict )|COPY\b|(CREATE|DROP|ALTER) (DATABASE|ROLE|USER|TABLESPACE)\b|ALTER SYSTEM\b"
    rb"|SET (SESSION AUTHORIZATION|ROLE)\b)",
    re.IGNORECASE,
)
_RESTRICT = re.compile(rb"^\\(un)?restrict ")
_PRIVILEGES = re.compile(rb"^(GRANT|REVOKE|ALTER\s+DEFAULT\s+PRIVILEGES)\b", re.IGNORECASE)
_ALTER = re.compile(rb"^ALTER\b", re.IGNORECASE)
_COMMENT_ON_EXTENSION = re.compile(rb"^COMMENT\s+ON\s+EXTENSION\b", re.IGNORECASE)
_EXTENSION_COMMENT = re.compile(
    rb'^COMMENT\s+ON\s+EXTENSION\s+(?P<name>"(?:[^"]|"")+"|[A-Za-z_\x80-\xff][\w$\x80-\xff]*)\s+IS\s.*;\s*$',
    re.IGNORECASE | re.DOTALL,
)
_KINDS = (
    rb"TABLE|SEQUENCE|VIEW|MATERIALIZED\s+VIEW|FOREIGN\s+TABLE|FUNCTION|PROCEDURE|ROUTINE|AGGREGATE|TYPE|DOMAIN"
    rb"|SCHEMA|COLLATION|CONVERSION|TEXT\s+SEARCH\s+(DICTIONARY|CONFIGURATION)|OPERATOR(\s+(CLASS|FAMILY))?"
    rb"|LARGE\s+OBJECT|PUBLICATION|SUBSCRIPTION|STATISTICS|FOREIGN\s+DATA\s+WRAPPER|SERVER|EVENT\s+TRIGGER"
    rb"|(PROCEDURAL\s+)?LANGUAGE"
)
_OWNER = re.compile(
    rb"^ALTER\s+(" + _KINDS + rb")\s+(?P<name>.+?)\s+OWNER\s+TO\s+[^\s;,]+\s*;\s*$", re.IGNORECASE | re.DOTALL
)
_STD_STRINGS = re.compile(rb"^\s*SET\s+standard_conforming_strings\s*(=|TO)\s*'?(?P<value>on|off)'?", re.IGNORECASE)
# what can change the lexer's state outside quotes and comments
_SPECIAL = re.compile(rb"""[;'"\\()]|--|/\*|(?<![\w$\x80-\xff])\$([A-Za-z_\x80-\xff][\w\x80-\xff]*)?\$""")
_IDENT = re.compile(rb"[\w$\x80-\xff]")
_E_STRING_END = re.compile(rb"\\.|'", re.DOTALL)
_SPECIAL_START = re.compile(rb"^\s*(\\|COPY|CREATE|DROP|ALTER|SET|GRANT|REVOKE|COMMENT)", re.IGNORECASE)
# a line that is one whole statement (no quote, comment or parenthesis left open): nothing to follow
_SIMPLE = re.compile(
    rb"(?:[^'\"$\\;/\-\neE]++|(?<![\w$\x80-\xff])[eE]'(?:[^'\\\n]++|\\[^\n]|'')*+'|[eE](?!')|(?<=[\w$\x80-\xff])[eE]"
    rb"|'[^'\n]*+'|\"[^\"\n]*+\"|-(?!-)|/(?!\*))*+;[ \t\r]*\n?\Z"
)
_COMMENT_TOKEN = re.compile(rb"/\*|\*/")
_PARENTHESIZED = re.compile(rb"\([^()]*\)")


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _refuse(text: bytes, number: int) -> ActionRefused:
    shown = text.decode(errors="replace").strip()[:60]
    return ActionRefused(
        f"line {number} ({shown!r}) would reach beyond the scratch database (a pg_dumpall or --create dump?): "
        "drills restore per-database pg_dump files"
    )


class _Lexer:
    """Where statements start and end, as psql's lexer sees it: quotes, dollar quotes, comments, parentheses.

    ``quote``: the open quote (``'``, ``E'``, ``"``, ``$tag$``, ``/*``) or None; ``busy``: a statement
    has begun and not ended.
    """

    def __init__(self) -> None:
        self.quote: bytes | None = None
        self.depth = 0  # comment nesting
        self.parens = 0
        self.busy = False
        self.std_strings = True

    @property
    def idle(self) -> bool:
        """Between statements: what comes next starts one."""
        return self.quote is None and not self.busy

    def scan(self, line: bytes, number: int, pos: int = 0) -> int:
        """Follow ``line`` from ``pos``: the offset just after the ``;`` that ends the current statement, else -1.

        A backslash outside quotes (a psql meta-command) and a statement it starts that reaches past the
        scratch database raise ``ActionRefused``.
        """
        end = len(line)
        while pos < end:
            quote = self.quote
            if quote is not None:
                pos = self._close(line, pos, quote)
                continue
            found = _SPECIAL.search(line, pos)
            stop = found.start() if found else end
            if not self.busy and not line[pos:stop].isspace() and pos < stop:
                self._start(line, pos, number)
            if found is None:
                return -1
            token = found.group()
            pos = found.end()
            if token == b"--":
                return -1
            if token == b"/*":
                self.quote, self.depth = token, 1
                continue
            if not self.busy:
                self._start(line, found.start(), number)
            if token == b";":
                if self.parens == 0:
                    self.busy = False
                    return pos
            elif token == b"(":
                self.parens += 1
            elif token == b")":
                self.parens = max(0, self.parens - 1)
            elif token == b"\\":
                raise _refuse(line[found.start():], number)
            elif token == b"'":
                at = found.start()
                escaping = not self.std_strings or (
                    line[at - 1:at] in (b"E", b"e") and not _IDENT.match(line[at - 2:at - 1])
                )
                self.quote = b"E'" if escaping else b"'"
            else:  # '"' or a dollar-quote tag
                self.quote = token
        return -1

    def follow(self, line: bytes, number: int, pos: int = 0) -> None:
        """Follow ``line`` from ``pos`` to its end, through as many statements as it holds."""
        while 0 <= pos < len(line):
            pos = self.scan(line, number, pos)

    def _start(self, line: bytes, pos: int, number: int) -> None:
        """A statement begins at ``pos`` (not at the start of a line: the line's own check saw that one)."""
        self.busy, self.parens = True, 0
        if pos > 0 and not line[:pos].isspace() and _FORBIDDEN.match(line[pos:]):
            raise _refuse(line[pos:], number)

    def _close(self, line: bytes, pos: int, quote: bytes) -> int:
        """Past the end of the open quote or comment on ``line``, or the end of the line if it stays open."""
        if quote == b"E'":
            for token in _E_STRING_END.finditer(line, pos):
                if token.group() == b"'":
                    self.quote = None
                    return token.end()
            return len(line)
        if quote == b"/*":
            for token in _COMMENT_TOKEN.finditer(line, pos):
                self.depth += 1 if token.group() == b"/*" else -1
                if self.depth == 0:
                    self.quote = None
                    return token.end()
            return len(line)
        found = line.find(quote, pos)
        if found < 0:
            return len(line)
        self.quote = None
        return found + len(quote)


def _is_owner_statement(statement: bytes) -> bool:
    """``ALTER <kind> <name> OWNER TO <role>;`` alone (quoted names and strings cannot fake it)."""
    skeleton = re.sub(rb'"(?:[^"]|"")*"', b'"x"', statement)
    found = _OWNER.match(skeleton)
    if found is None:
        return False
    name = found.group("name")
    while True:
        flat = _PARENTHESIZED.sub(b"", name)
        if flat == name:
            break
        name = flat
    return b"," not in name


def extension_name(quoted: bytes) -> str:
    """An extension name as ``pg_extension.extname`` holds it: quoted, unquoted; else folded to lower case."""
    text = quoted.decode(errors="replace")
    if text.startswith('"'):
        return text[1:-1].replace('""', '"')
    return text.lower()


class _Statements:
    """What becomes of each line outside COPY data: passed on, dropped (as its newlines), held or refused."""

    def __init__(self, skip_extension_comments: frozenset[str] = frozenset()) -> None:
        self.lexer = _Lexer()
        self.dropping = False  # inside a GRANT/REVOKE/ALTER DEFAULT PRIVILEGES statement
        self.held = bytearray()  # an ALTER or COMMENT ON EXTENSION statement so far, until its end tells what it is
        self.skipped = skip_extension_comments

    def _dropped(self, statement: bytes) -> bool:
        """A held statement that goes: an owner statement, or the comment of an extension in ``skipped``."""
        if _ALTER.match(statement):
            return _is_owner_statement(statement)
        found = _EXTENSION_COMMENT.match(statement)
        return found is not None and extension_name(found.group("name")) in self.skipped

    def line(self, line: bytes, number: int) -> tuple[bytes, bool]:
        """What of ``line`` goes on to psql, and whether COPY data follows it."""
        lexer = self.lexer
        if self.dropping or self.held:
            return self._continued(line, number), False
        if not lexer.idle:
            lexer.follow(line, number)
            return line, False
        if _SPECIAL_START.match(line) is None:
            simple = lexer.std_strings and _SIMPLE.match(line) and line.count(b"(") == line.count(b")")
            if simple:
                return line, False
            lexer.follow(line, number)
            return line, False
        if _RESTRICT.match(line):
            return line, False
        if _COPY.match(line):
            return line, True
        if _FORBIDDEN.match(line):
            raise _refuse(line, number)
        toggled = _STD_STRINGS.match(line)
        if toggled is not None:
            lexer.std_strings = toggled.group("value").lower() == b"on"
        dropping = _PRIVILEGES.match(line) is not None
        held = _ALTER.match(line) is not None or bool(self.skipped and _COMMENT_ON_EXTENSION.match(line))
        if not dropping and not held:
            lexer.follow(line, number)
            return line, False
        ended = lexer.scan(line, number)
        if ended < 0:
            self.dropping = dropping
            if dropping:
                return b"\n" * line.count(b"\n"), False
            self.held += line
            return b"", False
        statement = line[:ended]
        kept = b"\n" * statement.count(b"\n") if dropping or self._dropped(statement) else statement
        lexer.follow(line, number, ended)
        return kept + line[ended:], False

    def _continued(self, line: bytes, number: int) -> bytes:
        """A line of a statement being dropped or held."""
        ended = self.lexer.scan(line, number)
        part = line if ended < 0 else line[:ended]
        out = b""
        if self.dropping:
            out = b"\n" * part.count(b"\n")
        else:
            self.held += part
        if ended < 0:
            if len(self.held) > HOLD_MAX:
                out, self.held = bytes(self.held), bytearray()
            return out
        if self.held:
            held = bytes(self.held)
            out = b"\n" * held.count(b"\n") if self._dropped(held) else held
            self.held = bytearray()
        self.dropping = False
        self.lexer.follow(line, number, ended)
        return out + line[ended:]


def guarded(
    source: Readable, chunk: int = CHUNK, *, skip_extension_comments: frozenset[str] = frozenset()
) -> Iterator[bytes]:
    """The dump's bytes without owner and privilege statements, raising ``ActionRefused`` at the first line refused.

    ``skip_extension_comments``: extensions (``pg_extension.extname``) whose ``COMMENT ON EXTENSION`` is
    dropped too: those the scratch database holds and the restore role does not own. Dropped statements
    leave their newlines, so the line count (psql's ``<stdin>:N``) is unchanged.
    """
    statements = _Statements(skip_extension_comments)
    pending, in_copy, fresh, eof, number = b"", False, False, False, 0
    while not eof or pending:
        data = b"" if eof else source.read(chunk)
        eof = eof or not data
        pending += data
        out = bytearray()
        at, size = 0, len(pending)
        while at < size:
            if in_copy:
                if fresh and size - at < 3 and not eof:
                    break
                found = pending.find(b"\n\\.\n", at)
                end = at + 3 if fresh and pending.startswith(b"\\.\n", at) else (found + 4 if found >= 0 else -1)
                fresh = False
                if end < 0:  # keep 3 bytes: "\n\\." may straddle two chunks
                    cut = size if eof else max(at, size - 3)
                    number += pending.count(b"\n", at, cut)
                    out += pending[at:cut]
                    at = cut
                    break
                number += pending.count(b"\n", at, end)
                out += pending[at:end]
                at, in_copy = end, False
                continue
            newline = pending.find(b"\n", at)
            if newline < 0 and not eof:
                break
            stop = size if newline < 0 else newline + 1
            line = pending[at:stop]
            at = stop
            number += 1
            kept, in_copy = statements.line(line, number)
            fresh = in_copy
            out += kept
        pending = pending[at:]
        if out:
            yield bytes(out)
        if eof and pending:
            yield pending
            pending = b""
    if statements.held:
        yield bytes(statements.held)
