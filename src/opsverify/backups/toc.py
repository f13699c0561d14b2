"""What a PostgreSQL dump holds, read from the dump itself: its database, tables and which hold rows.

Custom and directory archives (``pg_dump -Fc``, ``-Fd``) are read by ``pgdump.read_archive``: the
header names the database, the TOC the tables, and each table's data is inflated only until its
first row.
Plain SQL (``.sql``, ``.sql.gz``) by ``sqldump.SqlContent``: ``-- Name: …; Type: TABLE`` comments
name the tables and every ``COPY … FROM stdin`` section's rows are counted while streaming. A plain
dump carries no database name (``dbname`` is None). Both read in constant memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from opsverify.backups.formats import format_by_content, format_by_name
from opsverify.backups.pgdump import read_archive
from opsverify.backups.sqldump import sql_content
from opsverify.backups.verdict import CorruptBackup

READABLE = ("pg-custom", "pg-directory", "sql", "sql.gz")


class UnreadFormat(Exception):
    """A dump in a format whose content is not read here (``pg_dump -Ft``, …): nothing to compare, not damage."""


@dataclass(frozen=True)
class DumpContent:
    """A dump's database (custom archives only), its tables and the rows found for each.

    ``rows[t]`` is the number of COPY rows (plain SQL) or 1 when the archive's data block for ``t``
    holds at least one row (custom; it is not read further), 0 when it holds none. ``unknown``: the
    tables whose data is a small lz4/zstd block (not inflated here), so whether it holds a row is not
    known; they are not in ``rows``.
    """

    path: str
    format: str
    dbname: str | None
    tables: frozenset[str]
    rows: dict[str, int]
    unknown: frozenset[str] = frozenset()

    def rows_of(self, table: str) -> int:
        return self.rows.get(table, 0)

    def holds_rows(self, table: str) -> bool | None:
        """Whether the dump holds a row of ``table``: True, False, or None when it is not known (``unknown``)."""
        return None if table in self.unknown else self.rows_of(table) > 0


def dump_format(path: Path) -> str:
    """The dump's format, from its first bytes, else its name (a directory with ``toc.dat``: ``pg-directory``)."""
    if path.is_dir():
        return "pg-directory" if (path / "toc.dat").is_file() else "unknown"
    with path.open("rb") as stream:
        head = stream.read(4096)
    return format_by_content(head) or format_by_name(path)


def dump_content(path: Path) -> DumpContent:
    """Read what the dump at ``path`` holds; ``CorruptBackup`` when it cannot be read, ``UnreadFormat`` (see there)."""
    try:
        fmt = dump_format(path)
        if fmt in ("pg-custom", "pg-directory"):
            archive = read_archive(path)
            rows = {t.table: int(t.has_rows) for t in archive.data if t.has_rows is not None}
            unknown = frozenset(t.table for t in archive.data if t.has_rows is None)
            return DumpContent(str(path), fmt, archive.dbname, archive.tables, rows, unknown)
        if fmt in ("sql", "sql.gz"):
            with path.open("rb") as stream:
                content = sql_content(stream, fmt == "sql.gz")
            return DumpContent(str(path), fmt, None, frozenset(content.tables), dict(content.rows))
    except OSError as exc:
        raise CorruptBackup(f"cannot read {path}: {exc.strerror or exc}") from None
    raise UnreadFormat(f"a {fmt} backup's content is not read here (only {', '.join(READABLE)})")
