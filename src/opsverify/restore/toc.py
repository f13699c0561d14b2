"""What a dump says it holds: its table of contents as ``"TABLE public.models"``-style names.

Custom and directory archives through ``pg_restore --list``; plain SQL (and ``.sql.gz``) through
the ``-- Name: models; Type: TABLE; Schema: public;`` comments pg_dump writes before each object.
Only relations are listed (tables, sequences, views, materialized views, indexes), the kinds a
restored database can be compared on.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

from opsverify.backups.gzipstream import inflate
from opsverify.backups.pgdump import list_toc
from opsverify.backups.verdict import CorruptBackup, Expectations

KINDS = ("MATERIALIZED VIEW", "TABLE", "SEQUENCE", "VIEW", "INDEX")
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
    """The ``-- Name`` comments of a plain dump, streamed (``.sql.gz`` through the verifying inflater, so a
    truncated or corrupt stream is a ``TocError`` saying so, as the integrity check does)."""
    found: set[str] = set()
    tail = b""
    try:
        with backup.open("rb") as source:
            chunks = inflate(source) if fmt == "sql.gz" else iter(lambda: source.read(1 << 20), b"")
            for chunk in chunks:
                block = tail + chunk
                cut = block.rfind(b"\n") + 1
                for name, kind, schema in _COMMENT.findall(block[:cut]):
                    found.add(f"{kind.decode()} {schema.decode()}.{name.decode()}")
                tail = block[cut:]
    except CorruptBackup as err:
        raise TocError(str(err)) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise TocError(f"gzip stream is corrupt or truncated ({exc})") from None
    except OSError as exc:
        raise TocError(f"cannot read {backup.name}: {exc.strerror or exc}") from None
    return found


def data_tables(backup: Path, fmt: str, timeout: float = 600) -> set[str]:
    """The tables whose rows the dump carries, as ``public.models``; ``TocError`` when it cannot be read.

    Plain SQL: the ``COPY … FROM stdin`` sections (or ``INSERT``s) holding at least one row. Custom
    and directory archives: the ``TABLE DATA`` entries whose data holds a first row (pg_dump writes
    one for an empty table too; a small lz4/zstd block, whose rows are unknown, is left out). Read by
    ``backups.toc.dump_content``, as the backup content checks do.
    """
    from opsverify.backups.toc import UnreadFormat, dump_content

    if fmt not in ("pg-custom", "pg-directory", "sql", "sql.gz"):
        raise TocError(f"a {fmt} backup has no PostgreSQL table of contents")
    try:
        content = dump_content(backup)
    except (CorruptBackup, UnreadFormat) as err:
        raise TocError(str(err)) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise TocError(f"gzip stream is corrupt or truncated ({exc})") from None
    except OSError as exc:
        raise TocError(f"cannot read {backup.name}: {exc.strerror or exc}") from None
    return {table for table, rows in content.rows.items() if rows > 0}
