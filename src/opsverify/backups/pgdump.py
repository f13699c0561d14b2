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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from opsverify.backups.gzipstream import READ_SIZE, GzipStream
from opsverify.backups.magic import PG_CUSTOM
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

MAGIC = PG_CUSTOM
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
    """``pg_restore --list`` of an archive, parsed; ``CorruptBackup`` when the TOC cannot be read.

    The listing prints names unquoted, so a schema or table whose name holds a space cannot be told
    from the words around it: each entry's schema and name are taken from the archive's own TOC
    (``toc_names``, by dump id) where it reads, the listing's words otherwise.
    """
    listing = run_pg_restore(["--list", str(target.absolute())], expect.timeout, "pg_restore cannot read the TOC")
    toc = parse_toc(listing)
    try:
        names = toc_names(target)
    except (CorruptBackup, OSError):
        return toc  # pg_restore read it; a header this reader does not know leaves the listing's words
    entries = tuple(replace(e, schema=names[e.dump_id][0], name=names[e.dump_id][1]) if e.dump_id in names else e
                    for e in toc.entries)
    return Toc(entries, toc.compression)


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
ARCHIVE_FORMATS = (1, 3, 5)  # the format byte pg_dump writes for custom and directory archives
ZLIB = "gzip"
GZIP_FILE = "gzip-file"  # a directory archive's *.dat.gz: gzip framing around the deflate stream
# lz4/zstd data is not inflated here: a block over this many bytes holds a row, but a smaller one may too (one
# short row in an lz4 frame is ~35 bytes), so it is unknown, never taken for empty.
FRAME_OVERHEAD = 64


def _frame_has_rows(stored: int) -> bool | None:
    """Whether an lz4/zstd block or file of ``stored`` bytes (not inflated) holds a row: True, or None (unknown)."""
    return True if stored > FRAME_OVERHEAD else None


@dataclass(frozen=True)
class ArchiveTable:
    """One ``TABLE DATA`` entry of a custom archive: its table and whether its data holds a row.

    ``has_rows`` is None (unknown) for a small lz4/zstd block, whose frames are not inflated here.
    """

    table: str
    data_bytes: int  # stored (maybe compressed) bytes of its data block
    has_rows: bool | None


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
    if reader.read_byte() not in ARCHIVE_FORMATS:
        raise CorruptBackup("not a custom or directory archive (its header names another format)")
    compression = _compression(reader, version)
    for _ in range(7):  # the creation time: sec, min, hour, mday, mon, year, isdst
        reader.read_int()
    dbname = reader.read_str() or ""
    reader.read_str()  # the server's version
    reader.read_str()  # pg_dump's version
    return version, compression, dbname


def _toc(reader: _Reader, version: tuple[int, int, int], directory: bool,
         names: dict[int, tuple[str, str]] | None = None) -> list[tuple[int, str, str, Any]]:
    """(dump id, desc, schema.tag, where its data is) of every TOC entry (``ReadToc``); ``names``, when given,
    gets each entry's (schema, tag) apart (a name may hold a dot).

    Where the data is: a custom archive's ``(flag, offset)``, a directory archive's file name. Table
    data written as INSERT statements (no COPY statement) is told apart as ``TABLE DATA INSERTS``.
    """
    entries = []
    for _ in range(reader.read_int()):
        dump_id = reader.read_int()
        reader.read_int()  # hadDumper
        reader.read_str(), reader.read_str()  # tableoid, oid
        tag, desc = reader.read_str() or "", reader.read_str() or ""
        reader.read_int()  # section
        reader.read_str(), reader.read_str()  # defn, dropStmt
        copy = reader.read_str()  # the COPY statement; none when the data is INSERTs (pg_dump --inserts)
        namespace = reader.read_str() or ""
        reader.read_str()  # tablespace
        if version >= (1, 14, 0):
            reader.read_str()  # tableam
        if version >= (1, 16, 0):
            reader.read_int()  # relkind
        reader.read_str(), reader.read_str()  # owner, "with oids"
        while reader.read_str() is not None:  # dependencies, ended by a NULL string
            pass
        where = reader.read_str() if directory else reader.read_offset()
        desc = "TABLE DATA INSERTS" if desc == "TABLE DATA" and not copy else desc
        entries.append((dump_id, desc, f"{namespace}.{tag}", where))
        if names is not None:
            names[dump_id] = (namespace, tag)
    return entries


def toc_names(path: Path) -> dict[int, tuple[str, str]]:
    """Dump id -> (schema, name) of every TOC entry of a custom archive or directory, read from the archive
    itself (exact, whatever spaces or quotes the names hold); ``CorruptBackup`` when it cannot be read."""
    toc_file = path / "toc.dat" if path.is_dir() else path
    with toc_file.open("rb") as stream:
        reader = _Reader(stream, toc_file.stat().st_size)
        version, _, _ = _header(reader)
        names: dict[int, tuple[str, str]] = {}
        _toc(reader, version, path.is_dir(), names)
        return names


class _FirstRow:
    """Fed a table's data as stored: whether it holds a row (COPY: a first line that is not ``\\.``;
    INSERTs: anything but blank lines).

    Only the beginning is inflated: the answer is known at the first line end, or after a mebibyte
    of text without one (a row that long is a row).
    """

    LIMIT = 1 << 20

    def __init__(self, compression: str, inserts: bool = False) -> None:
        self.inserts = inserts
        wbits = {ZLIB: zlib.MAX_WBITS, GZIP_FILE: 16 + zlib.MAX_WBITS}.get(compression)
        self.inflate = zlib.decompressobj(wbits) if wbits is not None else None
        self.head = b""
        self.answer: bool | None = None

    def feed(self, chunk: bytes) -> None:
        if self.answer is not None:
            return
        try:
            self.head += self.inflate.decompress(chunk, self.LIMIT) if self.inflate else chunk
        except zlib.error as exc:
            raise CorruptBackup(f"a table's data does not inflate: {exc}") from None
        if self.inserts:
            self.head = self.head.lstrip()
            self.answer = True if self.head else None
            return
        newline = self.head.find(b"\n")
        if newline >= 0:
            self.answer = self.head[:newline].rstrip(b"\r") != b"\\."
        elif len(self.head) >= self.LIMIT or (self.inflate is not None and self.inflate.unconsumed_tail):
            self.answer = True

    def result(self) -> bool:
        """At the end of the data: the answer (a last line without a line end counts too)."""
        if self.answer is None:
            text = self.head.strip()
            self.answer = bool(text) and text != b"\\."
        return self.answer


def _data_block(reader: _Reader, compression: str, inserts: frozenset[int]) -> tuple[int, int, bool | None]:
    """At a data block: (dump id, stored bytes, has a row or None: unknown); inflates its first chunks (none or
    gzip), skips over the rest."""
    kind = reader.read_byte()
    if kind != BLK_DATA:
        raise CorruptBackup(f"data block of unknown type {kind} at byte {reader.stream.tell() - 1:,}")
    dump_id = reader.read_int()
    stored = 0
    first = _FirstRow(compression, dump_id in inserts)
    while (length := reader.read_int()) > 0:
        stored += length
        if first.answer is None and compression in ("none", ZLIB):
            first.feed(reader.take(length))
        else:
            reader.stream.seek(length, os.SEEK_CUR)
    has_rows = first.result() if compression in ("none", ZLIB) else _frame_has_rows(stored)
    return dump_id, stored, has_rows


def _data_file(directory: Path, name: str | None, table: str, inserts: bool) -> tuple[int, bool | None]:
    """(stored bytes, has a row or None: unknown) of a directory archive's data file, read only until the first
    row shows."""
    file = next((directory / f"{name}{s}" for s in ("", ".gz", ".lz4", ".zst") if (directory / f"{name}{s}").is_file()),
                None) if name else None
    if file is None:
        raise CorruptBackup(f"data file {name} (table {table}) is missing from the directory dump")
    stored = file.stat().st_size
    if file.suffix in (".lz4", ".zst"):  # not inflated here: a small file is unknown, not empty
        return stored, _frame_has_rows(stored)
    first = _FirstRow(GZIP_FILE if file.suffix == ".gz" else "none", inserts)
    with file.open("rb") as stream:
        while first.answer is None and (chunk := stream.read(READ_SIZE)):
            first.feed(chunk)
    return stored, first.result()


def _skip_chunks(reader: _Reader) -> int:
    """Skip a run of length-prefixed chunks ended by a zero length; their total length."""
    total = 0
    while (length := reader.read_int()) > 0:
        total += length
        reader.stream.seek(length, os.SEEK_CUR)
    return total


def _custom_data(reader: _Reader, entries: list[tuple[int, str, str, Any]], wanted: dict[int, str],
                 compression: str) -> dict[int, tuple[int, bool | None]]:
    """(stored bytes, has a row) by dump id: by each entry's offset, else walking the blocks in order."""
    found: dict[int, tuple[int, bool | None]] = {}
    inserts = frozenset(dump_id for dump_id, desc, _, _ in entries if desc == "TABLE DATA INSERTS")
    offsets = [where[1] for dump_id, _, _, where in entries if dump_id in wanted and where[0] == K_OFFSET_POS_SET]
    if len(offsets) == len(wanted):
        for off in offsets:
            reader.stream.seek(off)
            block_id, stored, has_rows = _data_block(reader, compression, inserts)
            found[block_id] = (stored, has_rows)
        return found
    while len(found) < len(wanted) and reader.stream.tell() < reader.size:
        if reader.stream.read(1) == bytes([BLK_BLOBS]):  # large objects: (oid, chunks) until oid 0
            reader.read_int()
            while reader.read_int() != 0:
                _skip_chunks(reader)
            continue
        reader.stream.seek(-1, os.SEEK_CUR)
        block_id, stored, has_rows = _data_block(reader, compression, inserts)
        found[block_id] = (stored, has_rows)
    return found


def read_archive(path: Path) -> ArchiveContent:
    """Header, TOC and per-table data of a ``pg_dump -Fc`` file or ``-Fd`` directory, in constant memory.

    ``CorruptBackup`` when it cannot be read. A custom archive's ``TABLE DATA`` block is found by its
    offset in the TOC (a dump written to a file), else by walking the data blocks in order (a dump
    written to a pipe); a directory archive's data is in the file its TOC names. Only the start of
    each table's data is inflated, until one complete COPY row shows; the rest is skipped over.
    """
    directory = path.is_dir()
    toc_file = path / "toc.dat" if directory else path
    size = toc_file.stat().st_size
    with toc_file.open("rb") as stream:
        reader = _Reader(stream, size)
        version, compression, dbname = _header(reader)
        entries = _toc(reader, version, directory)
        wanted = {dump_id: name for dump_id, desc, name, _ in entries if desc.startswith("TABLE DATA")}
        if directory:
            found = {i: _data_file(path, w, wanted[i], d.endswith("INSERTS")) for i, d, _, w in entries if i in wanted}
        else:
            found = _custom_data(reader, entries, wanted, compression)
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise CorruptBackup(f"no data block for table {wanted[missing[0]]} (TOC entry {missing[0]})")
    data = tuple(ArchiveTable(wanted[i], *found[i]) for i in sorted(wanted))
    tables = frozenset(name for _, desc, name, _ in entries if desc == "TABLE" or desc.startswith("TABLE DATA"))
    return ArchiveContent(dbname, ".".join(map(str, version)), compression, tables, data)
