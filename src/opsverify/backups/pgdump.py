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
from dataclasses import dataclass
from pathlib import Path

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
