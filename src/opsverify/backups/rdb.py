"""Redis (and Valkey) RDB snapshots: header, version, EOF opcode and the CRC64 trailer, streamed.

An RDB starts with ``REDIS`` and a 4-digit format version (``REDIS0011``; Valkey 9 writes
``VALKEY`` and 3 digits, ``VALKEY080``) and ends with the EOF opcode ``0xff`` and, from version 5,
the CRC-64/Jones (Redis's ``crc64``, reflected, stored little-endian) of everything before those
last 8 bytes. A stored checksum of 0 means the server ran with ``rdbchecksum no``. The file is
read in 1 MiB chunks with only its last 9 bytes held back, so memory does not grow with it.
"""

from __future__ import annotations

from pathlib import Path

import anycrc

from opsverify.backups.magic import RDB_HEADER, RDB_HEADER_SIZE
from opsverify.backups.verdict import ByteStream, CorruptBackup, Expectations, Verdict, failed, passed, shown_bytes

READ_SIZE = 1 << 20
HEADER_SIZE = RDB_HEADER_SIZE
TRAILER_SIZE = 9  # EOF opcode + CRC64
EOF_OPCODE = 0xFF
FIRST_CHECKSUMMED_VERSION = 5
HEADER = RDB_HEADER


def parse_header(head: bytes) -> tuple[str, int]:
    """``(magic, version)`` of a 9-byte RDB header; ``CorruptBackup`` when it is not one."""
    match = HEADER.match(head)
    if match is None:
        raise CorruptBackup(
            f"not a Redis RDB file: header is '{shown_bytes(head)}', expected 'REDIS' or 'VALKEY' and a version"
        )
    magic, digits = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    return magic.decode(), int(digits)


def _read_header(stream: ByteStream) -> bytes:
    head = b""
    while len(head) < HEADER_SIZE and (data := stream.read(HEADER_SIZE - len(head))):
        head += data
    if not head:
        raise CorruptBackup("empty file (0 bytes)")
    if len(head) < HEADER_SIZE:
        raise CorruptBackup(f"RDB is truncated: {len(head)} bytes cannot hold a header, EOF opcode and checksum")
    return head


class _Scan:
    """CRC64 over all but the trailer, streamed: the last 9 bytes seen are held back."""

    def __init__(self, head: bytes) -> None:
        self.model = anycrc.Model("CRC64-REDIS")
        self.crc = 0
        self.size = len(head)
        self.held = head

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if len(chunk) >= TRAILER_SIZE:
            self.crc = self.model.calc(self.held, self.crc)
            self.crc = self.model.calc(memoryview(chunk)[:-TRAILER_SIZE], self.crc)
            self.held = chunk[-TRAILER_SIZE:]
        else:
            both = self.held + chunk
            self.crc = self.model.calc(both[:-TRAILER_SIZE], self.crc)
            self.held = both[-TRAILER_SIZE:]


def _scan(stream: ByteStream, head: bytes) -> _Scan:
    scan = _Scan(head)
    while chunk := stream.read(READ_SIZE):
        scan.feed(chunk)
    if scan.size < HEADER_SIZE + TRAILER_SIZE:
        raise CorruptBackup(f"RDB is truncated: {scan.size} bytes cannot hold a header, EOF opcode and checksum")
    if scan.held[0] != EOF_OPCODE:
        raise CorruptBackup(
            f"RDB is truncated: no EOF opcode (0xff) before the 8-byte checksum at its end ({scan.size:,} bytes)"
        )
    scan.crc = scan.model.calc(scan.held[:1], scan.crc)
    return scan


def _legacy(name: str, stream: ByteStream, head: bytes, facts: dict[str, str]) -> Verdict:
    """Versions before 5 have no checksum: only the final EOF opcode can be checked."""
    last, size = head[-1], len(head)
    while chunk := stream.read(READ_SIZE):
        last, size = chunk[-1], size + len(chunk)
    facts.update(bytes=str(size), checksum="none")
    if last != EOF_OPCODE:
        detail = f"RDB is truncated: it does not end with the EOF opcode (0xff) ({size:,} bytes)"
        return failed(name, "rdb", detail, facts)
    detail = f"RDB version {facts['rdb_version']} has no checksum: only its header and EOF opcode were checked"
    return passed(name, "rdb", detail, facts)


def verify_rdb_stream(stream: ByteStream, max_version: int = 12, name: str = "<stream>") -> Verdict:
    """Header, version (at most ``max_version``), EOF opcode and CRC64 of an RDB read from ``stream``."""
    try:
        head = _read_header(stream)
        magic, version = parse_header(head)
    except CorruptBackup as exc:
        return failed(name, "rdb", str(exc))
    facts = {"rdb_magic": magic, "rdb_version": str(version)}
    if version > max_version:
        detail = f"RDB version {version} is newer than the restore target supports (max {max_version})"
        return failed(name, "rdb", detail, facts)
    if version < FIRST_CHECKSUMMED_VERSION:
        return _legacy(name, stream, head, facts)
    try:
        scan = _scan(stream, head)
    except CorruptBackup as exc:
        return failed(name, "rdb", str(exc), facts)
    stored = int.from_bytes(scan.held[1:], "little")
    facts.update(bytes=str(scan.size), crc64=f"0x{scan.crc:016x}")
    if stored == 0:
        facts["checksum"] = "disabled"
        detail = f"RDB version {version}, {scan.size:,} bytes: checksum disabled (rdbchecksum no), cannot be verified"
        return passed(name, "rdb", detail, facts)
    facts["checksum"] = "verified" if stored == scan.crc else "mismatch"
    if stored != scan.crc:
        detail = f"CRC64 mismatch (stored 0x{stored:016x}, computed 0x{scan.crc:016x}): the RDB is corrupt"
        return failed(name, "rdb", detail, facts)
    return passed(name, "rdb", f"intact: RDB version {version}, CRC64 verified over {scan.size:,} bytes", facts)


def verify_rdb(path: Path, expect: Expectations) -> Verdict:
    """``verify_rdb_stream`` over a file, with the restore target's newest version from ``expect``."""
    with path.open("rb") as stream:
        return verify_rdb_stream(stream, expect.rdb_max_version, str(path))
