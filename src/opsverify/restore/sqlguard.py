"""A guard on plain SQL dumps on their way into ``psql``: only what a per-database ``pg_dump`` writes.

A cluster dump (``pg_dumpall``) or a ``--create``/``--clean`` dump carries ``\\connect``, ``CREATE
DATABASE``, ``DROP DATABASE`` and role statements that would reach past the scratch database, and
any backslash command (``\\!``) runs on this machine. Those lines stop the restore before psql sees
them. COPY data is passed through by searching for its ``\\.`` terminator, not line by line, so
the guard costs next to nothing on big tables. It guards against accidents: run drills with a
restore role that is not a superuser where dumps may not be trusted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Protocol

from opsverify.errors import ActionRefused

CHUNK = 1 << 20
_COPY = re.compile(rb"^COPY \S+( \([^)]*\))? FROM stdin;\s*$")
_FORBIDDEN = re.compile(
    rb"^\s*(\\(?!restrict |unrestrict )|COPY\b|(CREATE|DROP|ALTER) (DATABASE|ROLE|USER|TABLESPACE)\b|ALTER SYSTEM\b"
    rb"|SET (SESSION AUTHORIZATION|ROLE)\b)",
    re.IGNORECASE,
)


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _check(line: bytes, number: int) -> bool:
    """Whether ``line`` opens COPY data; ``ActionRefused`` when it would leave the scratch database."""
    if _COPY.match(line):
        return True
    if _FORBIDDEN.match(line):
        shown = line.decode(errors="replace").strip()[:60]
        raise ActionRefused(
            f"line {number} ({shown!r}) would reach beyond the scratch database (a pg_dumpall or --create dump?): "
            "drills restore per-database pg_dump files"
        )
    return False


def guarded(source: Readable, chunk: int = CHUNK) -> Iterator[bytes]:
    """The dump's bytes, unchanged, raising ``ActionRefused`` at the first line the guard refuses."""
    pending, in_copy, fresh, eof, number = b"", False, False, False, 0
    while not eof or pending:
        data = b"" if eof else source.read(chunk)
        eof = eof or not data
        pending += data
        out = bytearray()
        while pending:
            if in_copy:
                if fresh and len(pending) < 3 and not eof:
                    break
                found = pending.find(b"\n\\.\n")
                end = 3 if fresh and pending.startswith(b"\\.\n") else (found + 4 if found >= 0 else -1)
                fresh = False
                if end < 0:  # keep 3 bytes: "\n\\." may straddle two chunks
                    cut = len(pending) if eof else max(0, len(pending) - 3)
                    number += pending.count(b"\n", 0, cut)
                    out += pending[:cut]
                    pending = pending[cut:]
                    break
                number += pending.count(b"\n", 0, end)
                out += pending[:end]
                pending, in_copy = pending[end:], False
                continue
            newline = pending.find(b"\n")
            if newline < 0 and not eof:
                break
            line, pending = (pending, b"") if newline < 0 else (pending[: newline + 1], pending[newline + 1 :])
            number += 1
            in_copy = fresh = _check(line, number)
            out += line
        if out:
            yield bytes(out)
        if eof and pending:
            yield pending
            pending = b""
