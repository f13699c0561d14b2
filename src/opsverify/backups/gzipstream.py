"""Streaming gzip inflate that verifies every member's CRC32 and ISIZE trailer, in constant memory.

``inflate(stream)`` yields the decompressed chunks of a gzip stream (a file, an S3 body, an ssh
pipe) and raises ``CorruptBackup`` at the first problem: truncation, bad deflate data, a trailer
that does not match the data, garbage after the last member. Member headers and trailers are
parsed here around a raw inflate, so a trailer mismatch names the stored and the computed
value. Concatenated members (``cat a.gz b.gz``) are one valid stream. Memory stays bounded
however compressible the data: 1 MiB read at a time, 256 KiB into and out of the inflater per call.

The inflate and the CRC32 are ISA-L's (PyPI ``isal``: ``isal_zlib.decompressobj`` and ``crc32``,
about 1.6x zlib's speed) when it is importable, else the standard library's ``zlib``; both are
driven identically (raw deflate, ``wbits=-15``, ``max_length``, ``unconsumed_tail``, ``eof``,
``unused_data``), and the trailer check does not depend on which one ran. ``inflater()`` picks
once, on first use.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from opsverify.backups.magic import GZIP
from opsverify.backups.verdict import ByteStream, CorruptBackup, Expectations, Verdict, failed, passed

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

READ_SIZE = 1 << 20
FEED_SIZE = 1 << 18
OUT_SIZE = 1 << 18
MAX_HEADER = 1 << 20
MAGIC = GZIP
DEFLATE = 8
FHCRC, FEXTRA, FNAME, FCOMMENT, RESERVED = 0x02, 0x04, 0x08, 0x10, 0xE0
HEADER, BODY, TRAILER = "header", "body", "trailer"


@dataclass(frozen=True)
class Inflater:
    """One raw-deflate implementation: its name, ``decompressobj``, ``crc32`` and the error it raises."""

    name: str
    decompressobj: Callable[[int], Any]
    crc32: Callable[[bytes, int], int]
    error: type[Exception]

    def reason(self, exc: Exception) -> str:
        """The library's reason, without its error-code prefix: ``invalid block type``."""
        text = str(exc).rpartition(": ")[2]
        text = re.sub(r"^Error -?\d+ ", "", text)
        return text[:1].lower() + text[1:]


STDLIB = Inflater("zlib", zlib.decompressobj, zlib.crc32, zlib.error)
_chosen: Inflater | None = None


def inflater() -> Inflater:
    """ISA-L's inflate when ``isal`` is importable, else zlib's; chosen on first use, then kept."""
    global _chosen
    if _chosen is None:
        try:
            from isal import isal_zlib
        except ImportError:
            _chosen = STDLIB
        else:
            error = cast("type[Exception]", isal_zlib.error)  # its stub calls the class an instance
            _chosen = Inflater("isal", isal_zlib.decompressobj, isal_zlib.crc32, error)
    return _chosen


def header_end(buf: bytes, pos: int, member: int) -> int | None:
    """Index just past the gzip member header at ``buf[pos:]``; None while it is incomplete."""
    if len(buf) - pos < 10:
        return None
    method, flags = buf[pos + 2], buf[pos + 3]
    if method != DEFLATE:
        raise CorruptBackup(f"gzip member {member} uses compression method {method}, not deflate")
    if flags & RESERVED:
        raise CorruptBackup(f"gzip member {member} has reserved header flags set (0x{flags:02x})")
    end = pos + 10
    if flags & FEXTRA:
        if len(buf) < end + 2:
            return None
        end += 2 + int.from_bytes(buf[end : end + 2], "little")
    for flag in (FNAME, FCOMMENT):
        if flags & flag:
            nul = buf.find(b"\0", end)
            if nul < 0:
                return None
            end = nul + 1
    end += 2 if flags & FHCRC else 0
    if len(buf) < end:
        return None
    if flags & FHCRC and zlib.crc32(buf[pos : end - 2]) & 0xFFFF != int.from_bytes(buf[end - 2 : end], "little"):
        raise CorruptBackup(f"header CRC16 mismatch in gzip member {member}")
    return end


class GzipStream:
    """The decompressed chunks of a gzip stream, verified; then ``bytes_in``, ``bytes_out``, ``members``."""

    def __init__(self, stream: ByteStream, read_size: int = READ_SIZE) -> None:
        self.stream = stream
        self.read_size = read_size
        self.bytes_in = 0
        self.bytes_out = 0
        self.members = 0
        self._state = HEADER
        self._pending = b""
        self.impl = inflater()
        self._inflater = self.impl.decompressobj(-zlib.MAX_WBITS)
        self._crc = 0
        self._size = 0

    def __iter__(self) -> Iterator[bytes]:
        while data := self.stream.read(self.read_size):
            self.bytes_in += len(data)
            yield from self._consume(data)
        self._finish()

    def facts(self) -> dict[str, str]:
        return {"bytes_in": str(self.bytes_in), "bytes_out": str(self.bytes_out), "members": str(self.members)}

    def _consume(self, data: bytes) -> Iterator[bytes]:
        buf = self._pending + data if self._pending else data
        base = self.bytes_in - len(buf)
        self._pending = b""
        pos = 0
        while pos < len(buf):
            if self._state == BODY:
                pos = yield from self._inflate(buf, pos, base)
            elif self._state == HEADER:
                end = self._header(buf, pos, base)
                if end is None:
                    self._pending = buf[pos:]
                    return
                pos = end
            elif len(buf) - pos >= 8:
                self._trailer(buf[pos : pos + 8])
                pos += 8
            else:
                self._pending = buf[pos:]
                return

    def _header(self, buf: bytes, pos: int, base: int) -> int | None:
        member = self.members + 1
        head = buf[pos : pos + 2]
        if not MAGIC.startswith(head):
            if member > 1:
                offset = base + pos
                raise CorruptBackup(f"trailing garbage after gzip member {member - 1} at compressed byte {offset:,}")
            raise CorruptBackup(f"not gzip data: it starts with 0x{head.hex()}, not the gzip magic 0x1f8b")
        end = header_end(buf, pos, member)
        if end is None:
            if len(buf) - pos > MAX_HEADER:
                raise CorruptBackup(f"gzip member {member} has a malformed header (no end within 1 MiB)")
            return None
        self._state, self._crc, self._size = BODY, 0, 0
        self._inflater = self.impl.decompressobj(-zlib.MAX_WBITS)
        return end

    def _inflate(self, buf: bytes, pos: int, base: int) -> Generator[bytes, None, int]:
        view, inflater, crc32 = memoryview(buf), self._inflater, self.impl.crc32
        while pos < len(buf):
            end = min(pos + FEED_SIZE, len(buf))
            out = self._decompress(view[pos:end], base + pos, base + end)
            while True:
                if out:
                    self._crc = crc32(out, self._crc)
                    self._size += len(out)
                    self.bytes_out += len(out)
                    yield out
                if inflater.eof:  # its unconsumed_tail is stale then: the trailer starts in unused_data
                    self._state = TRAILER
                    return end - len(inflater.unused_data)
                if not inflater.unconsumed_tail and len(out) < OUT_SIZE:
                    break
                out = self._decompress(inflater.unconsumed_tail, base + pos, base + end)
            pos = end
        return pos

    def _decompress(self, data: bytes | memoryview, low: int, high: int) -> bytes:
        try:
            out: bytes = self._inflater.decompress(data, OUT_SIZE)
        except self.impl.error as exc:
            reason = self.impl.reason(exc)
            raise CorruptBackup(
                f"corrupt deflate data in gzip member {self.members + 1} ({reason}) "
                f"within compressed bytes {low:,}-{high:,}"
            ) from None
        return out

    def _trailer(self, trailer: bytes) -> None:
        stored_crc, stored_size = struct.unpack("<II", trailer)
        member, size = self.members + 1, self._size & 0xFFFFFFFF
        if stored_crc != self._crc:
            raise CorruptBackup(
                f"CRC32 mismatch in gzip member {member} (stored 0x{stored_crc:08x}, computed 0x{self._crc:08x})"
            )
        if stored_size != size:
            raise CorruptBackup(
                f"ISIZE mismatch in gzip member {member} (stored {stored_size:,} bytes, inflated {size:,} mod 2^32)"
            )
        self.members += 1
        self._state = HEADER

    def _finish(self) -> None:
        if self._state == HEADER and not self._pending:
            if self.bytes_in == 0:
                raise CorruptBackup("empty file (0 bytes)")
            return
        raise CorruptBackup(f"gzip stream truncated after {self.bytes_in:,} compressed bytes (no trailer)")


def inflate(stream: ByteStream) -> Iterator[bytes]:
    """Decompressed chunks (at most 256 KiB each) of a gzip stream; ``CorruptBackup`` on any damage."""
    yield from GzipStream(stream)


class GunzipReader(io.RawIOBase):
    """The verified decompressed bytes of a gzip stream as a readable raw stream (for ``tarfile``)."""

    def __init__(self, stream: ByteStream) -> None:
        super().__init__()
        self.gzip = GzipStream(stream)
        self._chunks = iter(self.gzip)
        self._view = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        while not self._view:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._view = memoryview(chunk)
        target = memoryview(buffer).cast("B")
        count = min(len(target), len(self._view))
        target[:count] = self._view[:count]
        self._view = self._view[count:]
        return count


def verify_gzip_stream(stream: ByteStream, name: str = "<stream>") -> Verdict:
    """Inflate a whole gzip stream, verifying every member; a ``Verdict`` with bytes in and out."""
    gz = GzipStream(stream)
    try:
        for _ in gz:
            pass
    except CorruptBackup as exc:
        return failed(name, "gzip", str(exc), gz.facts())
    detail = f"intact: {gz.members} gzip member(s), {gz.bytes_in:,} bytes in, {gz.bytes_out:,} bytes out"
    return passed(name, "gzip", detail, gz.facts())


def verify_gzip(path: Path, expect: Expectations) -> Verdict:
    """``verify_gzip_stream`` over a file (``expect`` has nothing to say about plain gzip)."""
    with path.open("rb") as stream:
        return verify_gzip_stream(stream, str(path))
