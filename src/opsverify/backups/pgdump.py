"""pg_dump custom (``-Fc``) and directory (``-Fd``) archives, read through pg_restore.

Custom: the ``PGDMP`` header, then ``pg_restore --list`` (the TOC must parse and hold every
expected table), then ``pg_restore -f /dev/null`` streams through every data block to the end in
pg_restore's constant memory and fails with its first error. Directory: ``pg_restore --list DIR``
and the tables, then every data file the TOC names must be there and intact (``*.dat.gz`` through
the gzip verifier, so a bad CRC is named, other files read to the end). Each pg_restore runs with
no stdin and a timeout, and is killed and reaped when it overruns.
"""

from __future__ import annotations

import os
import re
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from opsverify.backups.gzipstream import READ_SIZE, GzipStream
from opsverify.backups.verdict import (
    CorruptBackup,
    Expectations,
    Verdict,
    failed,
    missing_tables_detail,
    passed,
    shown_bytes,
)
from opsverify.pgtools import MissingTool, first_error, pg_tool

MAGIC = b"PGDMP"
TOC_ENTRY = re.compile(r"^(\d+); \d+ \d+ (.*)$")
COMPRESSION = re.compile(r"^;\s+Compression: (\S+)", re.MULTILINE)
DATA_SUFFIXES = (".dat.gz", ".dat", ".dat.lz4", ".dat.zst")


@dataclass(frozen=True)
class TocEntry:
    """One line of ``pg_restore --list``: dump id, description (``TABLE``, ``TABLE DATA``, …) and object."""

    dump_id: int
    desc: str
    schema: str = ""
    name: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Toc:
    """A parsed archive TOC."""

    entries: tuple[TocEntry, ...]
    compression: str

    @property
    def tables(self) -> list[str]:
        return sorted({e.qualified for e in self.entries if e.desc == "TABLE"})

    @property
    def data(self) -> list[TocEntry]:
        return [e for e in self.entries if e.desc == "TABLE DATA"]

    def facts(self) -> dict[str, str]:
        return {"toc_entries": str(len(self.entries)), "tables": ",".join(self.tables)}


MULTIWORD = ("MATERIALIZED VIEW DATA", "MATERIALIZED VIEW", "SEQUENCE OWNED BY", "SEQUENCE SET", "TABLE DATA",
             "TABLE ATTACH", "FK CONSTRAINT", "DEFAULT ACL", "INDEX ATTACH", "TEXT SEARCH CONFIGURATION",
             "TEXT SEARCH DICTIONARY", "FOREIGN TABLE", "EVENT TRIGGER", "LARGE OBJECT")


def _entry(dump_id: int, rest: str) -> TocEntry:
    desc = next((d for d in MULTIWORD if rest.startswith(d + " ")), rest.partition(" ")[0])
    schema, _, tail = rest[len(desc) + 1 :].partition(" ")
    return TocEntry(dump_id, desc, "" if schema == "-" else schema, tail.rpartition(" ")[0])  # last word: owner


def parse_toc(listing: str) -> Toc:
    """Parse ``pg_restore --list`` output (lines like ``215; 1259 16390 TABLE public simulations postgres``)."""
    entries = []
    for line in listing.splitlines():
        match = TOC_ENTRY.match(line)
        if match:
            entries.append(_entry(int(match.group(1)), match.group(2)))
    compression = COMPRESSION.search(listing)
    return Toc(tuple(entries), compression.group(1).lower() if compression else "")


def run_pg_restore(args: list[str], timeout: float, what: str) -> str:
    """pg_restore's stdout; ``CorruptBackup("<what>: <first error>")`` when it fails or overruns."""
    try:
        binary = pg_tool("pg_restore")
    except MissingTool as err:
        raise CorruptBackup(str(err)) from None
    try:
        done = subprocess.run(
            [binary, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:  # subprocess.run has killed and reaped it
        raise CorruptBackup(
            f"pg_restore did not finish within {timeout:g}s: the dump is too large for that timeout or its disk stalls"
        ) from None
    except OSError as exc:
        raise CorruptBackup(f"pg_restore cannot run: {exc.strerror or exc}") from None
    if done.returncode != 0:
        raise CorruptBackup(f"{what}: {first_error(done.stderr, 'pg_restore')}")
    return done.stdout


def list_toc(target: Path, expect: Expectations) -> Toc:
    """``pg_restore --list`` of an archive, parsed; ``CorruptBackup`` when the TOC cannot be read."""
    listing = run_pg_restore(["--list", str(target.absolute())], expect.timeout, "pg_restore cannot read the TOC")
    return parse_toc(listing)


def _check_tables(toc: Toc, expect: Expectations) -> None:
    missing = expect.missing_tables(toc.tables)
    if missing:
        raise CorruptBackup(missing_tables_detail(missing, toc.tables))


def verify_custom(path: Path, expect: Expectations) -> Verdict:
    """A ``pg_dump -Fc`` file: header, TOC, expected tables, then every data block read to the end."""
    with path.open("rb") as stream:
        head = stream.read(len(MAGIC))
    if head != MAGIC:
        detail = f"not a pg_dump custom-format archive: header is '{shown_bytes(head)}', not 'PGDMP'"
        return failed(str(path), "pg-custom", detail)
    facts: dict[str, str] = {"bytes": str(path.stat().st_size)}
    try:
        toc = list_toc(path, expect)
        facts.update(toc.facts())
        _check_tables(toc, expect)
        args = ["-f", os.devnull, str(path.absolute())]
        run_pg_restore(args, expect.timeout, "pg_restore cannot read the data to the end")
    except CorruptBackup as exc:
        return failed(str(path), "pg-custom", str(exc), facts)
    detail = f"intact: {len(toc.tables)} table(s), {len(toc.entries)} TOC entries, all data blocks readable"
    return passed(str(path), "pg-custom", detail, facts)


def _expected_suffix(compression: str) -> str:
    if compression in ("0", "none") or compression.startswith("none"):
        return ".dat"
    return {"lz4": ".dat.lz4", "zstd": ".dat.zst"}.get(compression.partition(":")[0], ".dat.gz")


def _data_files(directory: Path, toc: Toc) -> dict[str, str]:
    """Data file name -> table, for every ``TABLE DATA`` entry; ``CorruptBackup`` naming a missing one."""
    named = {}
    for entry in toc.data:
        found = [s for s in DATA_SUFFIXES if (directory / f"{entry.dump_id}{s}").is_file()]
        if not found:
            expected = f"{entry.dump_id}{_expected_suffix(toc.compression)}"
            raise CorruptBackup(f"data file {expected} (table {entry.qualified}) is missing from the directory dump")
        named[f"{entry.dump_id}{found[0]}"] = entry.qualified
    return named


def _read_data_file(file: Path, label: str) -> int:
    """Bytes of data in one file (inflated and CRC-checked when gzipped)."""
    with file.open("rb") as stream:
        if file.name.endswith(".gz"):
            gz = GzipStream(stream)
            try:
                for _ in gz:
                    pass
            except CorruptBackup as exc:
                raise CorruptBackup(f"data file {label} is corrupt: {exc}") from None
            return gz.bytes_out
        size = 0
        while chunk := stream.read(READ_SIZE):
            size += len(chunk)
        return size


def verify_directory(path: Path, expect: Expectations) -> Verdict:
    """A ``pg_dump -Fd`` directory: TOC, expected tables, and every data file present and intact."""
    facts: dict[str, str] = {}
    try:
        toc = list_toc(path, expect)
        facts.update(toc.facts())
        _check_tables(toc, expect)
        named = _data_files(path, toc)
        files = sorted(f for f in path.iterdir() if f.is_file() and f.name != "toc.dat")
        size = 0
        for file in files:
            table = named.get(file.name)
            size += _read_data_file(file, f"{file.name} (table {table})" if table else file.name)
    except CorruptBackup as exc:
        return failed(str(path), "pg-directory", str(exc), facts)
    facts.update(data_files=str(len(files)), data_bytes=str(size))
    detail = f"intact: {len(toc.tables)} table(s), {len(files)} data file(s) verified, {size:,} bytes of data"
    return passed(str(path), "pg-directory", detail, facts)


# --- The archive itself, read without pg_restore: header (its database), TOC and data lengths ---

K_OFFSET_POS_SET = 2
BLK_DATA = 1
BLK_BLOBS = 3
ZLIB = "gzip"


@dataclass(frozen=True)
class ArchiveTable:
    """One ``TABLE DATA`` entry of a custom archive: its table and whether its data holds a row."""

    table: str
    data_bytes: int  # stored (maybe compressed) bytes of its data block
    has_rows: bool


@dataclass(frozen=True)
class ArchiveContent:
    """What a custom archive's header and TOC say it holds: its database, tables and table data."""

    dbname: str
    version: str
    compression: str
    tables: frozenset[str]
    data: tuple[ArchiveTable, ...]


class _Reader:
    """pg_dump's archive primitives (``ReadInt``, ``ReadStr``, ``ReadOffset``) over a binary file."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream = stream
        self.size = size
        self.int_size = 4
        self.off_size = 8

    def take(self, n: int) -> bytes:
        data = self.stream.read(n)
        if len(data) != n:
            raise CorruptBackup(f"archive ends inside its header or TOC at byte {self.stream.tell():,}")
        return data

    def read_byte(self) -> int:
        return self.take(1)[0]

    def read_int(self) -> int:
        sign = self.read_byte()
        value = int.from_bytes(self.take(self.int_size), "little")
        return -value if sign else value

    def read_str(self) -> str | None:
        length = self.read_int()
        if length < 0:
            return None
        if length > self.size:
            raise CorruptBackup(f"archive TOC names a {length:,}-byte string: the header or TOC is damaged")
        return self.take(length).decode(errors="replace")

    def read_offset(self) -> tuple[int, int]:
        flag = self.read_byte()
        return flag, int.from_bytes(self.take(self.off_size), "little")


def _compression(reader: _Reader, version: tuple[int, int, int]) -> str:
    if version >= (1, 15, 0):  # PostgreSQL 16+: the algorithm
        return {0: "none", 1: ZLIB, 2: "lz4", 3: "zstd"}.get(reader.read_byte(), "unknown")
    level = reader.read_int() if version >= (1, 4, 0) else reader.read_byte()
    return "none" if level == 0 else ZLIB


def _header(reader: _Reader) -> tuple[tuple[int, int, int], str, str]:
    """Version, compression and database name from the archive header (pg_backup_archiver.c ``ReadHead``)."""
    if reader.take(len(MAGIC)) != MAGIC:
        raise CorruptBackup("not a pg_dump custom-format archive: no 'PGDMP' header")
    major, minor = reader.read_byte(), reader.read_byte()
    rev = reader.read_byte() if (major, minor) > (1, 0) else 0
    version = (major, minor, rev)
    if version < (1, 10, 0) or major > 1:
        raise CorruptBackup(f"archive version {major}.{minor}.{rev} is not one this reader knows (1.10 to 1.x)")
    reader.int_size = reader.read_byte()
    reader.off_size = reader.read_byte()
    if reader.read_byte() != 1:  # archCustom
        raise CorruptBackup("not a custom-format archive (its header names another format)")
    compression = _compression(reader, version)
    for _ in range(7):  # the creation time: sec, min, hour, mday, mon, year, isdst
        reader.read_int()
    dbname = reader.read_str() or ""
    reader.read_str()  # the server's version
    reader.read_str()  # pg_dump's version
    return version, compression, dbname


def _toc(reader: _Reader, version: tuple[int, int, int]) -> list[tuple[int, str, str, tuple[int, int]]]:
    """(dump id, desc, schema.tag, data offset) of every TOC entry (``ReadToc``)."""
    entries = []
    for _ in range(reader.read_int()):
        dump_id = reader.read_int()
        reader.read_int()  # hadDumper
        reader.read_str(), reader.read_str()  # tableoid, oid
        tag, desc = reader.read_str() or "", reader.read_str() or ""
        reader.read_int()  # section
        reader.read_str(), reader.read_str(), reader.read_str()  # defn, dropStmt, copyStmt
        namespace = reader.read_str() or ""
        reader.read_str()  # tablespace
        if version >= (1, 14, 0):
            reader.read_str()  # tableam
        if version >= (1, 16, 0):
            reader.read_int()  # relkind
        reader.read_str(), reader.read_str()  # owner, "with oids"
        while reader.read_str() is not None:  # dependencies, ended by a NULL string
            pass
        entries.append((dump_id, desc, f"{namespace}.{tag}", reader.read_offset()))
    return entries


def _first_row(chunks: list[bytes], compression: str) -> bool:
    """Whether a table's COPY data holds a complete row (inflating only what is needed)."""
    inflate = zlib.decompressobj() if compression == ZLIB else None
    text = b""
    for chunk in chunks:
        try:
            text += inflate.decompress(chunk, 1 << 16) if inflate else chunk
        except zlib.error as exc:
            raise CorruptBackup(f"a table's data block does not inflate: {exc}") from None
        if any(line and line != b"\\." for line in text.split(b"\n")[:-1]):
            return True
    return False


def _data_block(reader: _Reader, compression: str) -> tuple[int, int, bool]:
    """At a data block: (dump id, stored bytes, has a row); reads the first chunks, skips over the rest."""
    kind = reader.read_byte()
    if kind not in (BLK_DATA, BLK_BLOBS):
        raise CorruptBackup(f"data block of unknown type {kind} at byte {reader.stream.tell() - 1:,}")
    dump_id = reader.read_int()
    stored, has_rows = 0, False
    kept: list[bytes] = []
    while (length := reader.read_int()) > 0:
        stored += length
        if has_rows or compression not in ("none", ZLIB) or sum(map(len, kept)) > (1 << 16):
            reader.stream.seek(length, os.SEEK_CUR)
        else:
            kept.append(reader.take(length))
            has_rows = _first_row(kept, compression)
    if compression not in ("none", ZLIB):  # lz4/zstd are not inflated here: a row needs more than a frame's overhead
        has_rows = stored > 64
    return dump_id, stored, has_rows


def read_archive(path: Path) -> ArchiveContent:
    """Header, TOC and per-table data of a ``pg_dump -Fc`` file, in constant memory; ``CorruptBackup`` if unreadable.

    A ``TABLE DATA`` entry's block is found by its offset in the TOC (a dump written to a file),
    else by walking the data blocks in order (a dump written to a pipe). Only the first chunks of
    each block are inflated, until one complete COPY row shows; the rest is skipped over.
    """
    size = path.stat().st_size
    with path.open("rb") as stream:
        reader = _Reader(stream, size)
        version, compression, dbname = _header(reader)
        entries = _toc(reader, version)
        data_start = stream.tell()
        wanted = {dump_id: name for dump_id, desc, name, _ in entries if desc == "TABLE DATA"}
        found: dict[int, tuple[int, bool]] = {}
        offsets = [off for dump_id, _, _, (flag, off) in entries if dump_id in wanted and flag == K_OFFSET_POS_SET]
        if len(offsets) == len(wanted):
            for off in offsets:
                stream.seek(off)
                block_id, stored, has_rows = _data_block(reader, compression)
                found[block_id] = (stored, has_rows)
        else:
            stream.seek(data_start)
            while len(found) < len(wanted) and stream.tell() < size:
                block_id, stored, has_rows = _data_block(reader, compression)
                found[block_id] = (stored, has_rows)
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise CorruptBackup(f"no data block for table {wanted[missing[0]]} (TOC entry {missing[0]})")
    data = tuple(ArchiveTable(wanted[i], *found[i]) for i in sorted(wanted))
    tables = frozenset(name for _, desc, name, _ in entries if desc == "TABLE")
    return ArchiveContent(dbname, ".".join(map(str, version)), compression, tables, data)
