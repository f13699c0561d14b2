"""What a dump says it holds: its table of contents as ``"TABLE public.models"``-style names.

Custom and directory archives through ``pg_restore --list``; plain SQL (and ``.sql.gz``) through
the ``-- Name: models; Type: TABLE; Schema: public;`` comments pg_dump writes before each object.
Only relations are listed (tables, sequences, views, materialized views, indexes), the kinds a
restored database can be compared on.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

from opsverify.backups.pgdump import list_toc
from opsverify.backups.verdict import CorruptBackup, Expectations
from opsverify.pgtools import MissingTool, pg_tool

KINDS = ("MATERIALIZED VIEW", "TABLE", "SEQUENCE", "VIEW", "INDEX")
_COPY = re.compile(rb"^COPY (\S+) (?:\([^)]*\) )?FROM stdin;$")
_COMMENT = re.compile(rb"^-- Name: ([^;]+); Type: (" + "|".join(KINDS).encode() + rb"); Schema: ([^;]+);", re.M)


class TocError(Exception):
    """The dump's table of contents could not be read."""


def dump_objects(backup: Path, fmt: str, timeout: float = 600) -> set[str]:
    """The relations the dump creates; ``TocError`` when its TOC cannot be read."""
    if fmt in ("pg-custom", "pg-directory"):
        return _archive_objects(backup, timeout)
    if fmt in ("sql", "sql.gz"):
        return _sql_objects(backup, fmt)
    raise TocError(f"a {fmt} backup has no PostgreSQL table of contents")


def _archive_objects(backup: Path, timeout: float) -> set[str]:
    try:
        toc = list_toc(backup, Expectations(timeout=timeout))
    except CorruptBackup as err:
        raise TocError(str(err)) from None
    return {f"{e.desc} {e.qualified}" for e in toc.entries if e.desc in KINDS}


def _sql_objects(backup: Path, fmt: str) -> set[str]:
    opener = gzip.GzipFile(backup, "rb") if fmt == "sql.gz" else backup.open("rb")
    found: set[str] = set()
    tail = b""
    with opener as source:
        while chunk := source.read(1 << 20):
            block = tail + chunk
            cut = block.rfind(b"\n") + 1
            for name, kind, schema in _COMMENT.findall(block[:cut]):
                found.add(f"{kind.decode()} {schema.decode()}.{name.decode()}")
            tail = block[cut:]
    return found


def data_tables(backup: Path, fmt: str, timeout: float = 600) -> set[str]:
    """The tables whose rows the dump carries, as ``public.models``; ``TocError`` when it cannot be read.

    Plain SQL: the ``COPY … FROM stdin`` sections holding at least one row. Custom and directory
    archives: the ``TABLE DATA`` entries of their TOC (pg_dump writes one for an empty table too)
    whose data, read through ``pg_restore --data-only`` up to its first row, holds one.
    """
    if fmt in ("pg-custom", "pg-directory"):
        try:
            toc = list_toc(backup, Expectations(timeout=timeout))
        except CorruptBackup as err:
            raise TocError(str(err)) from None
        return {e.qualified for e in toc.data if _holds_a_row(backup, e.schema, e.name, timeout)}
    if fmt not in ("sql", "sql.gz"):
        raise TocError(f"a {fmt} backup has no PostgreSQL table of contents")
    found: set[str] = set()
    opener = gzip.GzipFile(backup, "rb") if fmt == "sql.gz" else backup.open("rb")
    copying: str | None = None
    try:
        with opener as source:
            for line in source:
                if copying is not None:
                    if not line.startswith(b"\\."):
                        found.add(copying)
                    copying = None
                    continue
                if line.startswith(b"COPY ") and (match := _COPY.match(line.rstrip(b"\r\n"))):
                    copying = match.group(1).decode().replace('"', "")
    except (OSError, EOFError) as exc:
        raise TocError(f"cannot read {backup}: {exc}") from None
    return found


def _holds_a_row(backup: Path, schema: str, table: str, timeout: float) -> bool:
    """Whether the archive's data of ``schema.table`` has a first row (pg_restore stopped once it is seen)."""
    try:
        args = [pg_tool("pg_restore"), "--data-only", f"--schema={schema}", f"--table={table}", "-f", "-", str(backup)]
    except MissingTool as err:
        raise TocError(str(err)) from None
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    timer = threading.Timer(timeout, lambda: _kill(proc))
    timer.start()
    try:
        assert proc.stdout is not None
        copying = False
        for line in proc.stdout:
            if copying:
                return not line.startswith(b"\\.")
            copying = line.startswith(b"COPY ") and line.rstrip().endswith(b"FROM stdin;")
        return False
    finally:
        timer.cancel()
        _stop(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    _kill(proc)
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
