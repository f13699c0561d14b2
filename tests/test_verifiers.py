"""Backup verifiers on real files with real faults: gzip, pg_dump (plain, -Fc, -Fd, -t), RDB, tar, YAML.

Good files come from the real tools (the ``gzip`` and ``tar`` binaries, pg_dump of a throwaway
PostgreSQL 15 cluster, BGSAVE of a throwaway redis-server); faults are made the way they happen
(a cut transfer, a flipped bit, garbage appended, a file deleted), and the exact phrase is asserted.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anycrc
import pytest
import yaml

from opsverify import pgtools
from opsverify.backups import gzipstream
from opsverify.backups.formats import FORMATS, detect_format, verify_backup
from opsverify.backups.gzipstream import inflate
from opsverify.backups.rdb import verify_rdb_stream
from opsverify.backups.sqldump import SqlScanner
from opsverify.backups.verdict import INTEGRITY_ONLY, CorruptBackup, Expectations
from opsverify.localserver.net import free_port
from opsverify.localserver.process import wait_gone
from opsverify.localserver.redis import start_redis
from opsverify.sandbox.redis import bgsave, seed_redis

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MARKER_MISSING = "dump-complete marker missing: pg_dump did not finish"
CRC64 = anycrc.Model("CRC64-REDIS")

SYNTHETIC_DUMP = """--
-- PostgreSQL database dump
--

\\restrict 8hGq2

SET statement_timeout = 0;

--
-- Name: simulations; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.simulations (id integer);

--
-- PostgreSQL database dump complete
--

"""


def text_rows(count: int) -> bytes:
    """Deterministic COPY-like rows that compress like a real dump."""
    return b"".join(b'%d\tsim-%06d\t%.6f\t{"mode": "te"}\n' % (i, i * 7919 % 10**6, i / 7) for i in range(count))


def flip(path: Path, offset: int) -> None:
    """Invert one byte of a file in place."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def check(path: Path, expect: Expectations = INTEGRITY_ONLY) -> tuple[bool, str]:
    """A verdict's (ok, detail), after checking its format is a known one."""
    verdict = verify_backup(path, expect)
    assert verdict.format in FORMATS
    return verdict.ok, verdict.detail


# --- gzip -------------------------------------------------------------------------------------
# Every gzip test runs with ISA-L's inflate (the default: ``isal`` is a dependency) and with the
# standard library's zlib, the fallback when ``isal`` cannot be imported.


@pytest.fixture(params=["isal", "zlib"])
def each_inflater(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Verify with the inflate named by the parameter."""
    if request.param == "zlib":
        monkeypatch.setattr(gzipstream, "_chosen", gzipstream.STDLIB)
    else:
        monkeypatch.setattr(gzipstream, "_chosen", None)
        assert gzipstream.inflater().name == "isal", "the isal package is not installed: run `make setup`"
    return str(request.param)


EACH_INFLATER = pytest.mark.usefixtures("each_inflater")


def test_without_isal_the_standard_library_inflate_is_chosen(
    gz_text: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "isal", None)  # `import isal` fails as when it is not installed
    monkeypatch.setattr(gzipstream, "_chosen", None)
    assert gzipstream.inflater() is gzipstream.STDLIB
    path, content = gz_text
    stream = gzipstream.GzipStream(path.open("rb"))
    assert b"".join(stream) == content
    assert (stream.impl.name, stream.members) == ("zlib", 1)
    assert gzipstream.inflater() is gzipstream.STDLIB  # chosen once


@pytest.mark.parametrize("read_size", [777, 1 << 20])
def test_members_ending_inside_a_capped_output_loop_are_each_checked(each_inflater: str, read_size: int) -> None:
    """A member's deflate data ends while its output is still being drained (``max_length``) and the next
    member starts in ``unused_data``: both inflaters must hand over at the same byte."""
    first, second = gzip.compress(bytes(5 << 20), mtime=0), gzip.compress(b"x" * 1000 + bytes(3 << 20), mtime=0)
    data = first + second + gzip.compress(b"tail\n", mtime=0)
    stream = gzipstream.GzipStream(io.BytesIO(data), read_size)
    assert sum(len(chunk) for chunk in stream) == (5 << 20) + 1000 + (3 << 20) + 5
    assert (stream.members, stream.impl.name) == (3, each_inflater)
    damaged = bytearray(data)
    damaged[len(first) + len(second) - 8] ^= 1  # the second member's stored CRC32
    crc = zlib.crc32(b"x" * 1000 + bytes(3 << 20))
    with pytest.raises(CorruptBackup) as raised:
        for _ in gzipstream.GzipStream(io.BytesIO(bytes(damaged)), read_size):
            pass
    assert str(raised.value) == f"CRC32 mismatch in gzip member 2 (stored 0x{crc ^ 1:08x}, computed 0x{crc:08x})"


def test_an_invalid_deflate_block_names_the_reason(tmp_path: Path, each_inflater: str) -> None:
    path = tmp_path / "bad-block.gz"
    path.write_bytes(gzip.compress(b"", mtime=0)[:10] + b"\x07" + bytes(20))  # BFINAL=1, BTYPE=11 (reserved)
    reason = {"zlib": "invalid block type", "isal": "invalid deflate block found"}[each_inflater]
    assert check(path) == (False, f"corrupt deflate data in gzip member 1 ({reason}) within compressed bytes 10-31")


@pytest.fixture
def gz_text(tmp_path: Path) -> tuple[Path, bytes]:
    """A text file gzipped by the gzip binary, and its content."""
    content = text_rows(40_000)
    source = tmp_path / "rows.txt"
    source.write_bytes(content)
    subprocess.run(["gzip", "-6", str(source)], check=True, timeout=30)
    return tmp_path / "rows.txt.gz", content


@EACH_INFLATER
def test_gzip_made_by_the_gzip_binary_is_intact(gz_text: tuple[Path, bytes]) -> None:
    path, content = gz_text
    verdict = verify_backup(path)
    assert (verdict.ok, verdict.format) == (True, "gzip")
    assert verdict.detail == f"intact: 1 gzip member(s), {path.stat().st_size:,} bytes in, {len(content):,} bytes out"


@EACH_INFLATER
def test_concatenated_gzip_members_are_one_valid_stream(gz_text: tuple[Path, bytes], tmp_path: Path) -> None:
    path, content = gz_text
    both = tmp_path / "both.gz"
    both.write_bytes(path.read_bytes() + gzip.compress(b"second member\n", mtime=0))
    verdict = verify_backup(both)
    assert verdict.ok, verdict.detail
    assert verdict.facts["members"] == "2"
    assert verdict.facts["bytes_out"] == str(len(content) + 14)


@EACH_INFLATER
def test_inflate_reads_a_pipe(gz_text: tuple[Path, bytes]) -> None:
    path, content = gz_text
    with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert b"".join(inflate(proc.stdout)) == content


@EACH_INFLATER
def test_truncated_gzip_fails(gz_text: tuple[Path, bytes]) -> None:
    path, _ = gz_text
    cut = path.stat().st_size // 2
    path.write_bytes(path.read_bytes()[:cut])
    assert check(path) == (False, f"gzip stream truncated after {cut:,} compressed bytes (no trailer)")


@EACH_INFLATER
def test_flipped_byte_in_stored_data_is_a_crc_mismatch(tmp_path: Path) -> None:
    content = random.Random(5).randbytes(300_000)  # incompressible: deflate stores it as is
    path = tmp_path / "random.gz"
    path.write_bytes(gzip.compress(content, mtime=0))
    flip(path, path.stat().st_size // 2)
    body = path.read_bytes()[10:-8]
    damaged = zlib.decompressobj(-zlib.MAX_WBITS).decompress(body)
    expected = f"(stored 0x{zlib.crc32(content):08x}, computed 0x{zlib.crc32(damaged):08x})"
    assert check(path) == (False, f"CRC32 mismatch in gzip member 1 {expected}")


@EACH_INFLATER
def test_flipped_byte_in_the_middle_of_compressed_text_fails(gz_text: tuple[Path, bytes]) -> None:
    path, _ = gz_text
    flip(path, path.stat().st_size // 2)
    ok, detail = check(path)
    assert not ok
    assert re.fullmatch(
        r"corrupt deflate data in gzip member 1 \(.+\) within compressed bytes [\d,]+-[\d,]+"
        r"|CRC32 mismatch in gzip member 1 \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)",
        detail,
    ), detail


@EACH_INFLATER
def test_corrupted_trailer_crc_is_reported_as_such(gz_text: tuple[Path, bytes]) -> None:
    path, content = gz_text
    flip(path, path.stat().st_size - 8)
    crc = zlib.crc32(content)
    expected = f"CRC32 mismatch in gzip member 1 (stored 0x{crc ^ 0xFF:08x}, computed 0x{crc:08x})"
    assert check(path) == (False, expected)


@EACH_INFLATER
def test_corrupted_trailer_length_is_reported_as_such(gz_text: tuple[Path, bytes]) -> None:
    path, content = gz_text
    flip(path, path.stat().st_size - 1)
    stored = len(content) ^ 0xFF000000
    expected = f"ISIZE mismatch in gzip member 1 (stored {stored:,} bytes, inflated {len(content):,} mod 2^32)"
    assert check(path) == (False, expected)


@EACH_INFLATER
def test_trailing_garbage_fails(gz_text: tuple[Path, bytes]) -> None:
    path, _ = gz_text
    size = path.stat().st_size
    path.write_bytes(path.read_bytes() + b"garbage after the end\n")
    assert check(path) == (False, f"trailing garbage after gzip member 1 at compressed byte {size:,}")


@EACH_INFLATER
def test_not_gzip_data_with_a_gz_name_fails(tmp_path: Path) -> None:
    path = tmp_path / "dump.sql.gz"
    path.write_bytes(SYNTHETIC_DUMP.encode())
    verdict = verify_backup(path)
    assert (verdict.ok, verdict.format) == (False, "sql.gz")
    assert verdict.detail == "not gzip data: it starts with 0x2d2d, not the gzip magic 0x1f8b"


@pytest.mark.parametrize("name", ["backup.sql.gz", "data.gz", "dump.rdb", "db.dump", "models.tar.gz", "cm.yaml"])
def test_zero_byte_file_is_empty(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.touch()
    assert check(path) == (False, "empty file (0 bytes)")


MEMORY_PROBE = """
import sys
from pathlib import Path
from opsverify.backups.formats import verify_backup

def high_water_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

before = high_water_kib()
verdict = verify_backup(Path(sys.argv[1]))
print(before, high_water_kib(), verdict.ok, verdict.facts.get("bytes_out"), verdict.detail)
"""


def test_200_mb_of_zeros_verify_in_constant_memory(tmp_path: Path) -> None:
    path = tmp_path / "zeros.gz"
    block = bytes(1 << 20)
    with path.open("wb") as out, subprocess.Popen(["gzip", "-1", "-c"], stdin=subprocess.PIPE, stdout=out) as proc:
        assert proc.stdin is not None
        for _ in range(200):
            proc.stdin.write(block)
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    before, after, ok, bytes_out, detail = probe.stdout.split(maxsplit=4)
    assert (ok, bytes_out) == ("True", str(200 << 20)), detail
    assert int(after) - int(before) < 64 * 1024, f"peak RSS grew by {int(after) - int(before)} KiB"


# --- plain SQL ----------------------------------------------------------------------------------


def test_dump_with_unrestrict_line_after_the_marker_passes(tmp_path: Path) -> None:
    path = tmp_path / "db.sql"
    path.write_text(SYNTHETIC_DUMP + "\\unrestrict 8hGq2\n\n")
    ok, detail = check(path, Expectations(tables=("simulations",)))
    assert (ok, detail) == (
        True,
        f"intact: {path.stat().st_size:,} bytes of SQL, dump-complete marker present, 1 expected table(s) present",
    )


def test_statements_after_the_marker_fail(tmp_path: Path) -> None:
    path = tmp_path / "db.sql"
    path.write_text(SYNTHETIC_DUMP + "DROP TABLE public.simulations;\n")
    expected = "dump-complete marker is not at the end: it is followed by 'DROP TABLE public.simulations;'"
    assert check(path) == (False, expected)


def test_table_comments_are_found_across_chunk_boundaries() -> None:
    text = (SYNTHETIC_DUMP.replace("\\restrict", "-- Name: models; Type: TABLE; Schema: lab; Owner: x\n")).encode()
    for size in (1, 7, 64):
        scanner = SqlScanner(find_tables=True)
        for start in range(0, len(text), size):
            scanner.feed(text[start : start + size])
        assert scanner.tables == {"public.simulations", "lab.models"}
        assert scanner.completion_problem() is None


# --- pg_dump of a throwaway PostgreSQL ------------------------------------------------------------


@dataclass(frozen=True)
class Dumps:
    plain: Path
    custom: Path
    directory: Path
    table: Path


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[int]:
    """initdb + pg_ctl start on a free loopback port (as ``postgres`` when root); stopped and deleted after."""
    assert (PG_BIN / "initdb").is_file(), "PostgreSQL 15 is not installed: run `make setup`"
    base = Path(tempfile.mkdtemp(prefix="opsverify-verifiers-pg-", dir="/tmp"))
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(base, "postgres", "postgres")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    data, port = base / "data", free_port()

    def pg(tool: str, *args: str) -> None:
        subprocess.run(
            [*prefix, str(PG_BIN / tool), *args], check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL
        )

    try:
        pg("initdb", "-D", str(data), "--auth=trust", "-U", "postgres", "--no-locale", "--no-sync", "-E", "UTF8")
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        pg("pg_ctl", "start", "-D", str(data), "-l", str(base / "log"), "-w", "-t", "30", "-o", options)
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        try:
            yield port
        finally:
            pg("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w", "-t", "30")
        assert wait_gone(postmaster, 10), "the throwaway postmaster survived pg_ctl stop"
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert not base.exists(), f"{base} was not removed"


SEED_SQL = """
CREATE TABLE simulations (id integer PRIMARY KEY, name text, transmission double precision);
INSERT INTO simulations SELECT i, 'sim-' || i, (i % 97) / 97.0 FROM generate_series(1, 20000) AS i;
CREATE TABLE models (id integer, body text);
INSERT INTO models VALUES (1, 'mzi'), (2, 'ring');
"""


@pytest.fixture(scope="module")
def pg_dumps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dumps]:
    """Plain, -Fc, -Fd and -t dumps made by pg_dump of a throwaway cluster (gone after the module)."""
    out = tmp_path_factory.mktemp("dumps")
    dumps = Dumps(out / "db.sql", out / "db.dump", out / "db.dir", out / "simulations.sql")
    with throwaway_cluster() as port:
        connect = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres"]
        subprocess.run(
            [str(PG_BIN / "psql"), *connect, "-q", "-v", "ON_ERROR_STOP=1", "-c", SEED_SQL],
            check=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        for target, extra in (
            (dumps.plain, []),
            (dumps.custom, ["-Fc"]),
            (dumps.directory, ["-Fd"]),
            (dumps.table, ["-t", "simulations"]),
        ):
            subprocess.run(
                [str(PG_BIN / "pg_dump"), *connect, *extra, "-f", str(target)],
                check=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
        yield dumps


def test_plain_dump_from_pg_dump_is_intact(pg_dumps: Dumps) -> None:
    verdict = verify_backup(pg_dumps.plain, Expectations(tables=("simulations", "public.models")))
    assert (verdict.ok, verdict.format, verdict.facts["marker"]) == (True, "sql", "present"), verdict.detail
    assert verdict.facts["tables"] == "public.models,public.simulations"


@EACH_INFLATER
def test_gzipped_plain_dump_is_checked_in_one_pass(pg_dumps: Dumps, tmp_path: Path) -> None:
    path = tmp_path / "db.sql.gz"
    with path.open("wb") as out:
        subprocess.run(["gzip", "-c", str(pg_dumps.plain)], stdout=out, check=True, timeout=30)
    verdict = verify_backup(path, Expectations(tables=("simulations",)))
    assert (verdict.ok, verdict.format) == (True, "sql.gz"), verdict.detail
    assert verdict.detail.startswith(f"intact: gzip verified, {pg_dumps.plain.stat().st_size:,} bytes of SQL")


@pytest.mark.parametrize("gzipped", [False, True], ids=["sql", "sql.gz"])
def test_dump_without_the_marker_fails(pg_dumps: Dumps, tmp_path: Path, gzipped: bool) -> None:
    text = pg_dumps.plain.read_bytes()
    cut = text[: text.rindex(b"-- PostgreSQL database dump complete")]
    path = tmp_path / ("cut.sql.gz" if gzipped else "cut.sql")
    path.write_bytes(gzip.compress(cut) if gzipped else cut)
    assert check(path) == (False, MARKER_MISSING)


def test_single_table_dump_holds_its_table_only(pg_dumps: Dumps) -> None:
    assert check(pg_dumps.table, Expectations(tables=("public.simulations",)))[0]
    expected = "expected table(s) missing from the dump: models (it holds 1: public.simulations)"
    assert check(pg_dumps.table, Expectations(tables=("simulations", "models"))) == (False, expected)


def test_custom_dump_is_intact_to_its_last_data_block(pg_dumps: Dumps) -> None:
    verdict = verify_backup(pg_dumps.custom, Expectations(tables=("simulations", "public.models")))
    assert (verdict.ok, verdict.format) == (True, "pg-custom"), verdict.detail
    assert verdict.detail == "intact: 2 table(s), 5 TOC entries, all data blocks readable"


def test_custom_dump_missing_an_expected_table_fails(pg_dumps: Dumps) -> None:
    expected = "expected table(s) missing from the dump: results (it holds 2: public.models, public.simulations)"
    assert check(pg_dumps.custom, Expectations(tables=("results",))) == (False, expected)


def test_custom_dump_with_a_wrong_header_fails(pg_dumps: Dumps, tmp_path: Path) -> None:
    path = tmp_path / "db.dump"
    path.write_bytes(b"PGDMX" + pg_dumps.custom.read_bytes()[5:])
    assert check(path) == (False, "not a pg_dump custom-format archive: header is 'PGDMX', not 'PGDMP'")


def test_truncated_custom_dump_fails(pg_dumps: Dumps, tmp_path: Path) -> None:
    path = tmp_path / "db.dump"
    path.write_bytes(pg_dumps.custom.read_bytes()[: pg_dumps.custom.stat().st_size // 2])
    expected = "pg_restore cannot read the data to the end: could not read from input file: end of file"
    assert check(path) == (False, expected)


def test_missing_pg_restore_is_named(pg_dumps: Dumps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgtools, "PG_BINDIRS", ())
    monkeypatch.setenv("PATH", str(tmp_path))
    ok, detail = check(pg_dumps.custom)
    assert (ok, detail.split(" (")[0]) == (False, "pg_restore is not installed: run `make setup`")


def children_named(name: str) -> list[int]:
    """Pids of this process's children whose command is ``name`` (zombies included)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            command, ppid = text[text.index("(") + 1 : text.rindex(")")], int(text[text.rindex(")") + 2 :].split()[1])
            if command == name and ppid == os.getpid():
                found.append(int(stat.parent.name))
    return found


def test_pg_restore_overrunning_its_timeout_fails_and_is_reaped(pg_dumps: Dumps) -> None:
    ok, detail = check(pg_dumps.custom, Expectations(timeout=0.001))
    assert not ok
    assert detail.startswith("pg_restore did not finish within 0.001s: ")
    assert children_named("pg_restore") == []


def test_directory_dump_is_intact(pg_dumps: Dumps) -> None:
    verdict = verify_backup(pg_dumps.directory, Expectations(tables=("simulations",)))
    assert (verdict.ok, verdict.format, verdict.facts["data_files"]) == (True, "pg-directory", "2"), verdict.detail


def _largest_data_file(directory: Path) -> Path:
    return max(directory.glob("*.dat.gz"), key=lambda p: p.stat().st_size)


def test_directory_dump_with_a_data_file_removed_fails(pg_dumps: Dumps, tmp_path: Path) -> None:
    copy = shutil.copytree(pg_dumps.directory, tmp_path / "db.dir")
    removed = _largest_data_file(copy)
    removed.unlink()
    expected = f"data file {removed.name} (table public.simulations) is missing from the directory dump"
    assert check(copy) == (False, expected)


def test_directory_dump_with_a_corrupt_data_file_fails(pg_dumps: Dumps, tmp_path: Path) -> None:
    copy = shutil.copytree(pg_dumps.directory, tmp_path / "db.dir")
    damaged = _largest_data_file(copy)
    flip(damaged, damaged.stat().st_size - 8)
    ok, detail = check(copy)
    assert not ok
    assert detail.startswith(f"data file {damaged.name} (table public.simulations) is corrupt: CRC32 mismatch in")


def test_custom_and_gzipped_dumps_are_recognised_by_content(pg_dumps: Dumps, tmp_path: Path) -> None:
    custom, sql = tmp_path / "nightly.bin", tmp_path / "nightly.gz"
    shutil.copy(pg_dumps.custom, custom)
    sql.write_bytes(gzip.compress(pg_dumps.plain.read_bytes()[:8192]))
    assert (detect_format(custom), detect_format(sql), detect_format(pg_dumps.directory)) == (
        "pg-custom",
        "sql.gz",
        "pg-directory",
    )


# --- Redis RDB ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_rdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RDB written by BGSAVE of a throwaway, seeded redis-server (stopped before the tests use it)."""
    base = tmp_path_factory.mktemp("redis")
    server = start_redis(base / "server", free_port())
    try:
        seed_redis(server)
        target = base / "dump.rdb"
        shutil.copy(bgsave(server), target)
    finally:
        server.stop()
    assert not server.is_running
    return target


@pytest.fixture
def rdb(saved_rdb: Path, tmp_path: Path) -> Path:
    """A private copy of the saved RDB to damage."""
    return Path(shutil.copy(saved_rdb, tmp_path / "redis_backup.rdb"))


def rewrite_header(path: Path, header: bytes) -> None:
    """A new 9-byte header with a recomputed CRC64, so only the header differs."""
    body = header + path.read_bytes()[9:-8]
    path.write_bytes(body + CRC64.calc(body).to_bytes(8, "little"))


def test_rdb_from_bgsave_is_intact(rdb: Path) -> None:
    version = int(rdb.read_bytes()[5:9])
    verdict = verify_backup(rdb)
    assert (verdict.ok, verdict.format, verdict.facts["checksum"]) == (True, "rdb", "verified")
    assert verdict.detail == f"intact: RDB version {version}, CRC64 verified over {rdb.stat().st_size:,} bytes"


def test_rdb_stream_from_a_pipe_is_intact(rdb: Path) -> None:
    with subprocess.Popen(["cat", str(rdb)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        verdict = verify_rdb_stream(proc.stdout, max_version=12)
    assert verdict.ok, verdict.detail


def test_flipped_byte_in_the_middle_of_an_rdb_fails(rdb: Path) -> None:
    stored = int.from_bytes(rdb.read_bytes()[-8:], "little")
    flip(rdb, rdb.stat().st_size // 2)
    computed = CRC64.calc(rdb.read_bytes()[:-8])
    expected = f"CRC64 mismatch (stored 0x{stored:016x}, computed 0x{computed:016x}): the RDB is corrupt"
    assert check(rdb) == (False, expected)


def test_rdb_with_a_bad_magic_fails(rdb: Path) -> None:
    rewrite_header(rdb, b"RADIS0010")
    expected = "not a Redis RDB file: header is 'RADIS0010', expected 'REDIS' or 'VALKEY' and a version"
    assert check(rdb) == (False, expected)


def test_rdb_from_a_newer_redis_fails(rdb: Path) -> None:
    rewrite_header(rdb, b"REDIS0099")
    assert check(rdb) == (False, "RDB version 99 is newer than the restore target supports (max 12)")
    assert check(rdb, Expectations(rdb_max_version=99))[0], "only the version was to be wrong"


def test_valkey_rdb_header_is_accepted(rdb: Path) -> None:
    rewrite_header(rdb, b"VALKEY080")
    verdict = verify_backup(rdb, Expectations(rdb_max_version=80))
    assert (verdict.ok, verdict.facts["rdb_magic"], verdict.facts["rdb_version"]) == (True, "VALKEY", "80")
    assert check(rdb) == (False, "RDB version 80 is newer than the restore target supports (max 12)")


def test_truncated_rdb_fails(rdb: Path) -> None:
    data = rdb.read_bytes()
    cut = next(n for n in range(len(data) // 2, 0, -1) if data[n - 9] != 0xFF)
    rdb.write_bytes(data[:cut])
    expected = f"RDB is truncated: no EOF opcode (0xff) before the 8-byte checksum at its end ({cut:,} bytes)"
    assert check(rdb) == (False, expected)


def test_rdb_saved_without_checksum_is_reported_unverifiable(rdb: Path) -> None:
    rdb.write_bytes(rdb.read_bytes()[:-8] + bytes(8))  # what `rdbchecksum no` writes
    verdict = verify_backup(rdb)
    assert (verdict.ok, verdict.facts["checksum"]) == (True, "disabled")
    assert "checksum disabled (rdbchecksum no), cannot be verified" in verdict.detail


# --- tar and tar.gz -------------------------------------------------------------------------------

MEMBERS = ["data/notes.txt", "data/model.bin", "data/sub/config.json"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small tree to archive: text, 1 MB of random bytes, a nested file."""
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "notes.txt").write_bytes(text_rows(2000))
    (tmp_path / "data" / "model.bin").write_bytes(random.Random(7).randbytes(1 << 20))
    (tmp_path / "data" / "sub" / "config.json").write_text('{"layers": 4}\n')
    return tmp_path


def make_tar(tree: Path, name: str, flags: str) -> Path:
    subprocess.run(["tar", flags, name, *MEMBERS], cwd=tree, check=True, timeout=30)
    return tree / name


@EACH_INFLATER
def test_tar_gz_from_tar_is_intact(tree: Path) -> None:
    verdict = verify_backup(make_tar(tree, "models.tar.gz", "-czf"))
    size = sum((tree / m).stat().st_size for m in MEMBERS)
    assert (verdict.ok, verdict.format, verdict.facts["gzip_members"]) == (True, "tar.gz", "1"), verdict.detail
    assert verdict.detail == f"intact: 3 members, {size:,} bytes"


def test_plain_tar_is_intact(tree: Path) -> None:
    path = make_tar(tree, "models.tar", "-cf")
    assert verify_backup(path).ok
    assert detect_format(Path(shutil.copy(path, tree / "archive.bin"))) == "tar"


@EACH_INFLATER
def test_truncated_tar_gz_fails_at_the_member_being_read(tree: Path) -> None:
    path = make_tar(tree, "models.tar.gz", "-czf")
    cut = path.stat().st_size // 2
    path.write_bytes(path.read_bytes()[:cut])
    expected = f"corrupt tar.gz at member 'data/model.bin': gzip stream truncated after {cut:,} compressed bytes"
    assert check(path) == (False, expected + " (no trailer)")


@EACH_INFLATER
def test_tar_gz_with_a_corrupt_member_header_fails(tree: Path) -> None:
    tar = bytearray(make_tar(tree, "models.tar", "-cf").read_bytes())
    with tarfile.open(tree / "models.tar") as archive:
        second = archive.getmember("data/model.bin").offset
    tar[second + 5] ^= 0x20  # a bit flip in the member's name: its header checksum no longer matches
    path = tree / "damaged.tar.gz"
    path.write_bytes(gzip.compress(bytes(tar), mtime=0))
    assert check(path) == (False, "corrupt tar.gz at the header after member 'data/notes.txt': bad checksum")


@EACH_INFLATER
def test_flipped_byte_inside_a_tar_gz_member_fails(tree: Path) -> None:
    path = make_tar(tree, "models.tar.gz", "-czf")
    flip(path, path.stat().st_size // 2)
    ok, detail = check(path)
    assert not ok
    assert detail.startswith("corrupt tar.gz at member 'data/model.bin': "), detail


# --- Kubernetes YAML exports ----------------------------------------------------------------------


def kube_list(kind: str, count: int) -> dict[str, object]:
    """What ``kubectl get <kind>s -o yaml`` prints."""
    items = [
        {"apiVersion": "v1", "kind": kind, "metadata": {"name": f"{kind.lower()}-{i}"}, "data": {"k": "dg=="}}
        for i in range(count)
    ]
    return {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}


def test_configmap_export_is_intact(tmp_path: Path) -> None:
    path = tmp_path / "configmaps_backup_20250802.yaml"
    path.write_text(yaml.safe_dump(kube_list("ConfigMap", 3)))
    verdict = verify_backup(path, Expectations(kinds=("ConfigMap",)))
    assert (verdict.ok, verdict.format, verdict.detail) == (True, "k8s-yaml", "intact: 3 object(s): 3 ConfigMap")
    assert (verdict.facts["kinds"], verdict.facts["holds_secrets"]) == ("ConfigMap", "no")


def test_export_with_secrets_says_so(tmp_path: Path) -> None:
    path = tmp_path / "export.yml"
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "data": {"password": "cw=="}}
    path.write_text(yaml.safe_dump_all([kube_list("ConfigMap", 1), secret]))
    verdict = verify_backup(path, Expectations(kinds=("Secret", "ConfigMap")))
    assert (verdict.ok, verdict.facts["kinds"], verdict.facts["holds_secrets"]) == (True, "ConfigMap,Secret", "yes")


def test_yaml_that_does_not_parse_fails(tmp_path: Path) -> None:
    path = tmp_path / "deployments.yaml"
    path.write_text("apiVersion: v1\nkind: List\nitems:\n- kind: Deployment\n   metadata: x\n")
    expected = "YAML does not parse: mapping values are not allowed in this context at line 5, column 12"
    assert check(path) == (False, expected)


def test_export_lacking_an_expected_kind_fails(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump(kube_list("ConfigMap", 2)))
    expected = "expected kind(s) missing from the export: Secret (it holds 2 ConfigMap)"
    assert check(path, Expectations(kinds=("Secret",))) == (False, expected)


def test_oversized_export_is_not_parsed(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as sparse:
        sparse.truncate((64 << 20) + 1)
    assert check(path) == (False, "too large to parse as a config export (67,108,865 bytes, limit 64 MiB)")


# --- dispatch -------------------------------------------------------------------------------------


def test_unknown_content_is_unrecognised(tmp_path: Path) -> None:
    path = tmp_path / "notes.bin"
    path.write_bytes(b"\x00\x01 neither a dump nor an archive")
    verdict = verify_backup(path)
    assert (verdict.ok, verdict.format) == (False, "unknown")
    assert verdict.detail.startswith("unrecognised backup format: notes.bin is neither gzip")


def test_missing_file_and_plain_directory_are_facts_not_exceptions(tmp_path: Path) -> None:
    missing = tmp_path / "backup_20250802.sql.gz"
    assert check(missing) == (False, f"cannot read {missing}: no such file or directory")
    expected = f"unrecognised backup format: {tmp_path.name} is a directory without toc.dat (not a pg_dump -Fd dump)"
    assert check(tmp_path) == (False, expected)


UNREADABLE_PROBE = """
import os, sys
from pathlib import Path
from opsverify.backups.formats import verify_backup
if os.geteuid() == 0:  # root reads anything: look as nobody
    os.setegid(65534)
    os.seteuid(65534)
verdict = verify_backup(Path(sys.argv[1]))
print(verdict.ok, verdict.detail)
"""


def test_unreadable_file_is_a_fact_not_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "redis_backup.rdb"
    path.write_bytes(b"REDIS0011")
    path.chmod(0)
    probe = subprocess.run(
        [sys.executable, "-c", UNREADABLE_PROBE, str(path)], capture_output=True, text=True, timeout=30, check=True
    )
    assert probe.stdout.strip() == f"False cannot read {path}: Permission denied"
