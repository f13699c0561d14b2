"""Log files, archives and temporary files of the lifecycle section (PF-02, QP-03, QP-12, QP-22, QP-24).

``FileSource(host, timeouts)`` reads files on this machine (``host`` None or ``local://``) or on an ssh://
profile host through the ssh client (BatchMode, the profile's connect timeout, as the remote backup copies
in ``backups/remote.py``). ``list_files(glob, visit)`` streams names, sizes and mtimes only (never content):
every matching file is handed to ``visit`` as it is listed (``os.scandir`` here; there, the output of ``find``,
spooled to a temporary file within connect + ``STREAM_FACTOR`` x request timeout, then read line by line), and
only counters, the oldest and the largest are kept; a listing cut by that bound says so (``incomplete``).
``open(path)`` streams a file's bytes (remote: ``cat`` through the ssh channel, bounded by connect +
``STREAM_FACTOR`` x request timeout).

``count_error_lines`` streams declared files line by line in constant memory (files last written before the
window are skipped, ``.gz``/``.xz``/``.bz2``/``.zst`` read decompressing): each line's time is its leading timestamp
(ISO 8601 with or without ``T`` and zone, PostgreSQL's ``2026-11-29 22:00:01.123 UTC``, syslog's
``Nov 29 22:00:01``; without a zone: this machine's local time), a line without one (a stack trace) has the
previous line's, the lines before a file's first timestamp have that first timestamp's, and a file without
any timestamp is judged by its mtime. The first ``SAMPLES`` matching lines are kept, cut to
``SAMPLE_CHARS`` characters and redacted (``opsverify.redact.redact_text``). ``archive_problem`` decompresses
an archive to its end and says what is wrong with it, if anything.
"""

from __future__ import annotations

import bz2
import fnmatch
import getpass
import heapq
import io
import lzma
import os
import re
import shlex
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import IO, Any, cast

from opsverify.backups.gzipstream import GunzipReader, GzipStream
from opsverify.backups.remote import FetchError, ssh_command
from opsverify.backups.verdict import ByteStream, CorruptBackup
from opsverify.durations import format_duration
from opsverify.probes.outage import connect_timed_out, request_timed_out
from opsverify.profile.model import Host, Timeouts
from opsverify.redact import redact_text

MAX_LINE = 64 * 1024  # longer lines are read in pieces; only the first piece counts
STREAM_FACTOR = 6  # a remote file (or listing) streams within connect + 6 x the request timeout
SAMPLES = 3
SAMPLE_CHARS = 120
READ_SIZE = 1 << 20
COMPRESSED = (".gz", ".xz", ".bz2", ".zst")
GLOB_META = re.compile(r"[*?[]")
KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink"}


@dataclass(frozen=True)
class LoggedFile:
    """One file (or, when asked for, directory or symlink): its absolute path, size and last modification."""

    path: str
    size: int
    mtime: datetime
    kind: str = "file"

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    def age(self, now: datetime) -> timedelta:
        return now - self.mtime


Visit = Callable[[LoggedFile], None]


@dataclass
class FileListing:
    """What a streamed listing of a glob found: how many, their total size, the oldest and the largest (never the
    files themselves: each was handed to the caller's ``visit`` as it was listed), or why it could not be listed
    (``error``) or not to its end (``incomplete``, with what was listed until then); ``user`` is who listed them."""

    where: str
    count: int = 0
    total_size: int = 0
    oldest: LoggedFile | None = None
    largest: LoggedFile | None = None
    error: str | None = None
    unreachable: str | None = None
    incomplete: str | None = None
    user: str = ""

    def add(self, file: LoggedFile, visit: Visit | None) -> None:
        self.count += 1
        self.total_size += file.size
        if self.oldest is None or file.mtime < self.oldest.mtime:
            self.oldest = file
        if self.largest is None or file.size > self.largest.size:
            self.largest = file
        if visit is not None:
            visit(file)


class Worst:
    """The ``limit`` first of many files by ``key`` (a bounded heap) and how many there were: constant memory."""

    def __init__(self, key: Callable[[LoggedFile], Any], limit: int = 5) -> None:
        self.key, self.limit = key, limit
        self.count = 0
        self.size = 0
        self._heap: list[tuple[Any, int, LoggedFile]] = []  # the negated order: the worst kept one on top

    def add(self, file: LoggedFile) -> None:
        self.count += 1
        self.size += file.size
        item = (_Reversed(self.key(file)), self.count, file)
        if len(self._heap) < self.limit:
            heapq.heappush(self._heap, item)
        elif item[0] > self._heap[0][0]:
            heapq.heapreplace(self._heap, item)

    @property
    def first(self) -> list[LoggedFile]:
        return [f for _, _, f in sorted(self._heap, key=lambda i: (i[0].value, i[1]))]


@dataclass(frozen=True)
class _Reversed:
    value: Any

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.value < self.value)

    def __gt__(self, other: _Reversed) -> bool:
        return bool(self.value < other.value)


def split_glob(pattern: str) -> tuple[str, int]:
    """The directory before the first segment holding a wildcard, and how many segments deeper the files are."""
    parts = PurePosixPath(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if GLOB_META.search(part)), len(parts) - 1)
    return str(PurePosixPath(*parts[:fixed])), len(parts) - fixed


def glob_matches(path: str, pattern: str) -> bool:
    """Whether ``path`` matches ``pattern`` segment by segment (``*`` never crosses ``/`` nor matches a leading .)."""
    names, globs = PurePosixPath(path).parts, PurePosixPath(pattern).parts
    if len(names) != len(globs):
        return False
    for name, glob in zip(names, globs, strict=True):
        if name.startswith(".") and not glob.startswith(".") and name != glob:
            return False
        if not fnmatch.fnmatchcase(name, glob):
            return False
    return True


def _stamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def tree_mtime_ns(path: str) -> int:
    """The mtime (ns) a temporary entry is judged by (QP-24, and ``cleaned_tmp``, one definition for both): a file's
    or symlink's own (lstat), a directory's the newest of itself and everything below it, so that a directory
    something still writes into is not stale; no symlink is followed and no other filesystem entered (a mount
    point's own mtime counts, not what is below it). An entry removed meanwhile is passed over. OSError when
    ``path`` itself is gone."""
    top = os.lstat(path)
    newest = top.st_mtime_ns
    if not stat.S_ISDIR(top.st_mode):
        return newest
    pending = [path]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    newest = max(newest, info.st_mtime_ns)
                    if stat.S_ISDIR(info.st_mode) and info.st_dev == top.st_dev:
                        pending.append(entry.path)
        except OSError:  # unreadable, or removed meanwhile
            continue
    return newest


class FileSource:
    """The files of one machine: this one (``host`` None or local://) or an ssh:// profile host."""

    def __init__(self, host: Host | None, timeouts: Timeouts) -> None:
        self.host = host if host is not None and not host.uri.startswith("local://") else None
        self.timeouts = timeouts

    def shown(self, path: str) -> str:
        """``path`` as messages show it: ``host:path`` on a remote host."""
        return f"{self.host.name}:{path}" if self.host else path

    def list_files(self, pattern: str, visit: Visit | None = None, any_kind: bool = False) -> FileListing:
        """Stream the regular files matching the absolute glob ``pattern`` (with ``any_kind``, directories and
        symlinks too, by their own lstat, a directory with the newest mtime below it: ``tree_mtime_ns``), each handed
        to ``visit``; every one is listed, in constant memory."""
        if self.host:
            return self._remote_list(pattern, visit, any_kind)
        return self._local_list(pattern, visit, any_kind)

    def _local_list(self, pattern: str, visit: Visit | None, any_kind: bool) -> FileListing:
        root, depth = split_glob(pattern)
        user = getpass.getuser()
        listing = FileListing(self.shown(pattern), user=user)
        problem = _directory_problem(root, user)
        if problem:
            listing.error = problem
            return listing
        for path in _walk(root, depth):
            if not glob_matches(path, pattern):
                continue
            try:
                info = os.lstat(path) if any_kind else os.stat(path)
            except OSError:  # removed meanwhile, or a dangling link
                continue
            kind = KINDS.get(stat.S_IFMT(info.st_mode))
            if kind is None or (kind != "file" and not any_kind):
                continue
            mtime = info.st_mtime_ns
            if kind == "directory":
                try:
                    mtime = tree_mtime_ns(path)
                except OSError:  # removed meanwhile
                    continue
            listing.add(LoggedFile(path, info.st_size, _stamp(mtime / 1e9), kind), visit)
        return listing

    def _remote_list(self, pattern: str, visit: Visit | None, any_kind: bool) -> FileListing:
        assert self.host is not None
        root, depth = split_glob(pattern)
        listing = FileListing(self.shown(pattern))
        q = shlex.quote(root)
        types = r"\( -type f -o -type d -o -type l \)" if any_kind else "-type f"
        # with any_kind, a directory's mtime is replaced by the newest below it, as tree_mtime_ns does here
        newest = (" | while IFS= read -r l; do case \"$l\" in 'd '*) p=\"${l#*\t*\t}\"; n=$(LC_ALL=C find \"$p\" -xdev "
                  "-printf '%T@\\n' 2>/dev/null | sort -rn | head -n 1); if [ -n \"$n\" ]; then printf 'd %s\\t%s\\n' "
                  "\"$n\" \"${l#d *\t}\"; fi;; *) printf '%s\\n' \"$l\";; esac; done" if any_kind else "")
        script = (
            f"id -un; if [ ! -e {q} ]; then echo E missing; elif [ ! -d {q} ]; then echo E notdir; "
            f"elif [ ! -r {q} ] || [ ! -x {q} ]; then echo E denied; else LC_ALL=C find {q} -mindepth {depth} "
            f"-maxdepth {depth} {types} -path {shlex.quote(pattern)} -printf '%y %T@\\t%s\\t%p\\n' 2>/dev/null"
            f"{newest}; echo END; fi"
        )
        limit = self.timeouts.connect + self.timeouts.request * STREAM_FACTOR
        try:
            args = [*ssh_command(self.host, self.timeouts.connect), script]
        except FetchError as exc:
            listing.error = str(exc)
            return listing
        # the listing streams into a spooled file (disk, not memory) under the deadline, then is read line by line
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
            except FileNotFoundError:
                listing.error = "the ssh client is not installed: run `make setup` (openssh-client)"
                return listing
            try:
                returncode: int | None = proc.wait(limit.total_seconds())
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                returncode = None
            out.seek(0)
            first = out.readline()
            if not first.endswith(b"\n"):  # not even the login user: ssh never got in
                if returncode is None:
                    cause = request_timed_out(limit)
                    listing.error, listing.unreachable = f"cannot reach {self.host.uri}: {cause}", cause
                    return listing
                err.seek(0)
                lines = err.read().decode(errors="replace").strip().splitlines() or [f"ssh exit code {returncode}"]
                cause = lines[-1]
                listing.unreachable = connect_timed_out(self.timeouts.connect) if "timed out" in cause else None
                listing.error = f"cannot reach {self.host.uri}: {cause}"
                return listing
            listing.user = user = first.decode(errors="replace").strip()
            shown_root = self.shown(root)
            errors = {"missing": f"directory {shown_root} does not exist",
                      "notdir": f"{shown_root} is not a directory",
                      "denied": f"permission denied reading directory {shown_root} (as user {user})"}
            ended = False
            for raw in out:
                if not raw.endswith(b"\n"):  # cut by the deadline mid-line
                    break
                line = raw.decode(errors="replace").rstrip("\n")
                if line.startswith("E "):
                    listing.error = errors.get(line[2:], line[2:])
                    return listing
                if line == "END":
                    ended = True
                    break
                try:
                    kind, rest = line.split(" ", 1)
                    stamp, size, path = rest.split("\t", 2)
                    found = LoggedFile(path, int(size), _stamp(float(stamp)),
                                       {"f": "file", "d": "directory", "l": "symlink"}[kind])
                except (ValueError, KeyError):
                    continue
                if glob_matches(path, pattern):
                    listing.add(found, visit)
            if not ended:
                stopped = f"the listing of {listing.where} stopped after {listing.count:,} file(s)"
                listing.incomplete = (
                    f"{stopped}: it did not finish within {format_duration(limit)} (connect + {STREAM_FACTOR} x the "
                    "request timeout)" if returncode is None else f"{stopped} (exit code {returncode})"
                )
        return listing

    @contextmanager
    def open(self, path: str) -> Iterator[ByteStream]:
        """The bytes of ``path``, streamed; OSError naming the problem (missing, permission, ssh's reason)."""
        if self.host is None:
            with open(path, "rb") as stream:
                yield stream
            return
        limit = self.timeouts.connect + self.timeouts.request * STREAM_FACTOR
        args = [*ssh_command(self.host, self.timeouts.connect), f"cat -- {shlex.quote(path)}"]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(limit.total_seconds(), kill)
        timer.start()
        read_all = False
        try:
            assert proc.stdout is not None
            yield proc.stdout
            while proc.stdout.read(READ_SIZE):  # the rest, so that cat's exit status tells whether all of it came
                pass
            read_all = True
        finally:
            if not read_all and proc.poll() is None:
                proc.kill()  # the reader stopped early (a corrupt archive): nothing more is wanted
            _, err = proc.communicate()  # ends by the deadline at the latest: the timer kills it then
            timer.cancel()
        if expired.is_set():
            raise OSError(f"reading {self.shown(path)} took longer than {limit}")
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines() or [f"ssh exit code {proc.returncode}"]
            raise OSError(f"cannot read {self.shown(path)}: {lines[-1]}")


def _directory_problem(root: str, user: str) -> str | None:
    """Why ``root`` cannot be listed by ``user``, or None."""
    try:
        with os.scandir(root):
            return None
    except FileNotFoundError:
        return f"directory {root} does not exist"
    except NotADirectoryError:
        return f"{root} is not a directory"
    except PermissionError:
        return f"permission denied reading directory {root} (as user {user})"
    except OSError as exc:
        return f"cannot read directory {root}: {exc.strerror or exc}"


def _walk(root: str, depth: int) -> Iterator[str]:
    """Paths exactly ``depth`` levels below ``root`` (unreadable subdirectories are passed over)."""
    if depth == 0:
        yield root
        return
    try:
        with os.scandir(root) as entries:  # read lazily: a huge directory is never held whole
            for entry in entries:
                if depth == 1:
                    yield entry.path
                elif entry.is_dir():
                    yield from _walk(entry.path, depth - 1)
    except OSError:
        return


# --- archives -----------------------------------------------------------------------------------------------


Decompressor = type[lzma.LZMADecompressor] | type[bz2.BZ2Decompressor]


def _stdlib_stream(stream: ByteStream, make: Decompressor) -> Iterator[bytes]:
    """Decompressed chunks of an xz or bzip2 stream (concatenated streams too), bounded memory."""
    decompressor = make()
    seen = False
    while data := stream.read(READ_SIZE):
        seen = True
        while data:
            if decompressor.eof:
                decompressor = make()
            try:
                out = decompressor.decompress(data, READ_SIZE)
            except (lzma.LZMAError, OSError, EOFError) as exc:
                raise CorruptBackup(str(exc)) from None
            yield out
            data = decompressor.unused_data if decompressor.eof else b""
            while not decompressor.eof and not decompressor.needs_input:
                try:
                    yield decompressor.decompress(b"", READ_SIZE)
                except (lzma.LZMAError, OSError, EOFError) as exc:
                    raise CorruptBackup(str(exc)) from None
    if not seen:
        raise CorruptBackup("empty file (0 bytes)")
    if not decompressor.eof:
        raise CorruptBackup("truncated: the compressed stream ends before its end marker")


ZSTD_MAGIC = 0xFD2FB528
MAX_WINDOW = 2 << 30  # bytes: the largest zstd window decoded (zstd --long=31); the library's default stops at 128 MiB
SKIPPABLE = range(0x184D2A50, 0x184D2A60)


class ZstdFrames:
    """Walks the frame structure of a zstd stream as its bytes pass (RFC 8878: frame header, block headers, the
    optional checksum; skippable frames) without decompressing, in constant memory: ``complete`` says whether the
    bytes so far end exactly at a frame's end, which the zstandard library's streaming reader does not tell (a
    stream cut mid-frame just ends early)."""

    def __init__(self) -> None:
        self.seen = 0  # bytes fed
        self.frames = 0
        self.state = "magic"
        self.want = 4  # header bytes the state needs
        self.head = b""
        self.skip = 0  # payload bytes to pass over before the next header
        self.after_blocks = 0  # checksum bytes after the last block
        self.last = False
        self.fhd = 0  # the current frame's header descriptor
        self.window = 0  # the largest window a frame so far declares (bytes)

    @property
    def complete(self) -> bool:
        return self.frames > 0 and self.state == "magic" and not self.head and not self.skip

    def feed(self, data: bytes) -> None:
        view, at = memoryview(data), 0
        while at < len(view):
            if self.skip:
                step = min(self.skip, len(view) - at)
                self.skip -= step
                at += step
                self.seen += step
                if not self.skip and self.state == "end":
                    self._next_frame()
                continue
            take = min(self.want - len(self.head), len(view) - at)
            self.head += bytes(view[at: at + take])
            at += take
            self.seen += take
            if len(self.head) == self.want:
                head, self.head = self.head, b""
                self._header(head)

    def _next_frame(self) -> None:
        self.frames += 1
        self.state, self.want = "magic", 4

    def _header(self, head: bytes) -> None:
        if self.state == "magic":
            magic = int.from_bytes(head, "little")
            if magic == ZSTD_MAGIC:
                self.state, self.want = "descriptor", 1
            elif magic in SKIPPABLE:
                self.state, self.want = "skippable", 4
            elif self.frames:
                raise CorruptBackup(f"trailing garbage after zstd frame {self.frames} at compressed byte "
                                    f"{self.seen - 4:,}")
            else:
                raise CorruptBackup(f"not zstd data: it starts with 0x{head.hex()}, not the zstd magic 0x28b52ffd")
        elif self.state == "skippable":
            self.state, self.skip = "end", int.from_bytes(head, "little")
            if not self.skip:
                self._next_frame()
        elif self.state == "descriptor":
            fhd = self.fhd = head[0]
            single = bool(fhd & 0x20)
            fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
            self.after_blocks = 4 if fhd & 0x04 else 0
            self.state, self.want = "header", (0 if single else 1) + (0, 1, 2, 4)[fhd & 0x03] + fcs  # at least 1
        elif self.state == "header":
            self.window = max(self.window, zstd_window(self.fhd, head))
            self.state, self.want = "block", 3
        elif self.state == "block":
            header = int.from_bytes(head, "little")
            kind, size = (header >> 1) & 0x03, header >> 3
            if kind == 3:
                raise CorruptBackup(f"zstd frame {self.frames + 1} has a block of the reserved type at compressed byte "
                                    f"{self.seen - 3:,}")
            self.last = bool(header & 1)
            self.skip = 1 if kind == 1 else size
            if self.last:
                self.state = "end"
                self.skip += self.after_blocks
            if self.state == "end" and not self.skip:
                self._next_frame()


def zstd_window(fhd: int, rest: bytes) -> int:
    """The window size (bytes) a zstd frame declares (RFC 8878 3.1.1.1.2): its window descriptor, or for a single
    segment frame its content size; ``rest`` is the frame header after the descriptor byte."""
    if not fhd & 0x20:
        exponent, mantissa = rest[0] >> 3, rest[0] & 0x07
        base = 1 << (10 + exponent)
        return base + (base >> 3) * mantissa
    fcs = (1, 2, 4, 8)[fhd >> 6]
    size = int.from_bytes(rest[len(rest) - fcs:], "little")
    return size + 256 if fcs == 2 else size


class _Tee:
    """A stream whose bytes are also handed to ``ZstdFrames`` as they are read."""

    def __init__(self, stream: ByteStream, frames: ZstdFrames) -> None:
        self.stream, self.frames = stream, frames

    def read(self, size: int = -1, /) -> bytes:
        data = self.stream.read(size)
        self.frames.feed(data)
        return data


class Unverifiable(CorruptBackup):
    """A compressed file this machine will not decode (a zstd window above ``MAX_WINDOW``): not known corrupt."""


def _zstd_stream(stream: ByteStream) -> Iterator[bytes]:
    """Decompressed chunks of a zstd stream (concatenated frames too; each frame's checksum, when it has one,
    verified by the library), at most ``READ_SIZE`` bytes at a time: constant memory. ``zstandard`` is imported
    here, when a .zst file is read."""
    import zstandard

    frames = ZstdFrames()
    tee = _Tee(stream, frames)
    reader = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).stream_reader(
        cast("IO[bytes]", tee), read_size=READ_SIZE, read_across_frames=True
    )
    try:
        while chunk := reader.read(READ_SIZE):
            yield chunk
        while tee.read(READ_SIZE):  # what the reader left unread: the frame walk sees every byte
            pass
    except zstandard.ZstdError as exc:
        if frames.window > MAX_WINDOW:
            raise Unverifiable(f"zstd window too large to verify ({frames.window >> 20:,} MiB, above "
                               f"{MAX_WINDOW >> 20:,} MiB)") from None
        raise CorruptBackup(f"zstd stream corrupt after {frames.seen:,} compressed bytes ({exc})") from None
    if not frames.seen:
        raise CorruptBackup("empty file (0 bytes)")
    if not frames.complete:
        raise CorruptBackup(f"zstd stream truncated after {frames.seen:,} compressed bytes (its last frame does not "
                            "end)")


def decompressed(stream: ByteStream, name: str) -> Iterator[bytes]:
    """The decompressed chunks of ``name`` by its suffix (.gz, .xz, .bz2, .zst); the bytes as they are otherwise."""
    if name.endswith(".gz"):
        yield from GzipStream(stream)
    elif name.endswith(".xz"):
        yield from _stdlib_stream(stream, lzma.LZMADecompressor)
    elif name.endswith(".bz2"):
        yield from _stdlib_stream(stream, bz2.BZ2Decompressor)
    elif name.endswith(".zst"):
        yield from _zstd_stream(stream)
    else:
        while data := stream.read(READ_SIZE):
            yield data


def archive_problem(source: FileSource, path: str) -> str | None:
    """What is wrong with a compressed archive (.gz, .xz, .bz2, .zst; decompressed to its end), or None when it is
    intact; ``Unverifiable`` when this machine will not decode it (a zstd window above ``MAX_WINDOW``)."""
    try:
        with source.open(path) as stream:
            for _ in decompressed(stream, path):
                pass
    except Unverifiable:
        raise  # not known corrupt: the caller says it could not be verified
    except CorruptBackup as exc:
        return str(exc)
    except OSError as exc:
        return str(exc) if source.host else f"cannot read {path}: {exc.strerror or exc}"
    return None



# --- error lines ----------------------------------------------------------------------------------------------

MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                       "dec"), 1)}
ISO = re.compile(
    rb"^\[?(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?"
    rb"(?:\s?(Z|[+-]\d\d(?::?\d\d)?|UTC|GMT)(?![A-Za-z]))?"
)
SYSLOG = re.compile(rb"^\[?([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d)")


def line_time(line: bytes, now: datetime) -> datetime | None:
    """The time of a line's leading timestamp, or None when it has none (see the module's formats)."""
    m = ISO.match(line)
    if m:
        year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
        micro = int((m.group(7) or b"0")[:6].ljust(6, b"0"))
        zone = (m.group(8) or b"").decode()
        try:
            naive = datetime(year, month, day, hour, minute, second, micro)
        except ValueError:
            return None
        if zone in ("Z", "UTC", "GMT"):
            return naive.replace(tzinfo=UTC)
        if zone:
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
            return (naive - sign * offset).replace(tzinfo=UTC)
        return naive.astimezone(UTC)  # no zone: this machine's local time
    m = SYSLOG.match(line)
    if m:
        found = MONTHS.get(m.group(1).decode().lower())
        if found is None:
            return None
        day, hour, minute, second = (int(g) for g in m.groups()[1:5])
        try:
            at = datetime(now.astimezone().year, found, day, hour, minute, second).astimezone(UTC)
        except ValueError:
            return None
        if at > now + timedelta(days=1):  # no year: December's lines read in January
            at = at.replace(year=at.year - 1)
        return at
    return None


@dataclass
class ErrorLines:
    """Lines matching the error pattern in the window, over the files read: their count, the first few (by path,
    then line) and the first few files holding any (by path): constant memory however many files are read."""

    count: int = 0
    first: list[tuple[str, int, str]] = field(default_factory=list)  # (shown path, line number, redacted text)
    files_matched: int = 0
    first_files: list[str] = field(default_factory=list)
    files_read: int = 0
    files_skipped: int = 0  # last written before the window
    errors: list[str] = field(default_factory=list)  # a file that could not be read
    corrupt: list[str] = field(default_factory=list)  # a corrupt or truncated compressed file: its prefix counted
    unverified: list[str] = field(default_factory=list)  # a zstd window too large to decode: its prefix counted

    @property
    def samples(self) -> list[str]:
        return [text for _, _, text in self.first]

    def add(self, line: bytes, where: str = "", number: int = 0) -> None:
        self.count += 1
        if len(self.first) == SAMPLES and (where, number) >= self.first[-1][:2]:
            return
        text = line.decode(errors="replace").rstrip("\r\n")
        cut = text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 1] + "…"
        self.first = sorted([*self.first, (where, number, redact_text(cut))])[:SAMPLES]

    def matched_in(self, where: str) -> None:
        self.files_matched += 1
        self.first_files = sorted([*self.first_files, where])[:SAMPLES]


def _lines(stream: ByteStream) -> Iterator[bytes]:
    """The lines of a binary stream, each at most ``MAX_LINE`` bytes (the rest of a longer line is dropped)."""
    reader = io.BufferedReader(_Raw(stream), READ_SIZE)
    while line := reader.readline(MAX_LINE):
        if len(line) == MAX_LINE and not line.endswith(b"\n"):
            while (rest := reader.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
        yield line


class _Raw(io.RawIOBase):
    """A ``ByteStream`` (anything with ``read``) as a raw stream, for ``io.BufferedReader``."""

    def __init__(self, stream: ByteStream) -> None:
        super().__init__()
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview, /) -> int:  # type: ignore[override]
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _text_stream(stream: ByteStream, path: str) -> ByteStream:
    if path.endswith(".gz"):
        return GunzipReader(stream)
    if path.endswith((".xz", ".bz2", ".zst")):
        return _ChunkReader(decompressed(stream, path))
    return stream


class _ChunkReader:
    """Chunks as a ``read(size)`` stream."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buffer = b""

    def read(self, size: int = -1, /) -> bytes:
        while not self.buffer:
            chunk = next(self.chunks, None)
            if chunk is None:
                return b""
            self.buffer = chunk
        size = len(self.buffer) if size < 0 else size
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out


def count_in_file(source: FileSource, file: LoggedFile, match: re.Pattern[bytes], since: datetime, now: datetime,
                  found: ErrorLines) -> None:
    """Add the matching lines of ``file`` at or after ``since`` to ``found`` (streamed, constant memory)."""
    if file.mtime < since:
        found.files_skipped += 1
        return
    where = source.shown(file.path)
    before = found.count
    current: datetime | None = None
    pending: list[tuple[int, bytes]] = []  # matching lines before the file's first timestamp (at most SAMPLES kept)
    pending_count = 0
    try:
        with source.open(file.path) as raw:
            for number, line in enumerate(_lines(_text_stream(raw, file.path)), 1):
                stamp = line_time(line, now)
                if stamp is not None:
                    if current is None and pending_count:
                        _settle(pending, pending_count, stamp >= since, found, where)
                        pending, pending_count = [], 0
                    current = stamp
                if not match.search(line):
                    continue
                if current is None:
                    pending_count += 1
                    if len(pending) < SAMPLES:
                        pending.append((number, line))
                elif current >= since:
                    found.add(line, where, number)
    except CorruptBackup as exc:  # what decompressed before the damage is counted, so a finding is not hidden
        (found.unverified if isinstance(exc, Unverifiable) else found.corrupt).append(f"{where}: {exc}")
        if current is None and pending_count:
            _settle(pending, pending_count, file.mtime >= since, found, where)
        if found.count > before:
            found.matched_in(where)
        return
    except OSError as exc:
        found.errors.append(str(exc) if source.host else f"cannot read {file.path}: {exc.strerror or exc}")
        return
    if current is None and pending_count:  # no timestamp at all: the file's mtime decides
        _settle(pending, pending_count, file.mtime >= since, found, where)
    found.files_read += 1
    if found.count > before:
        found.matched_in(where)


def _settle(pending: list[tuple[int, bytes]], count: int, inside: bool, found: ErrorLines, where: str) -> None:
    if not inside:
        return
    for number, line in pending:
        found.add(line, where, number)
    found.count += count - len(pending)


def count_error_lines(source: FileSource, files: list[LoggedFile], pattern: str, since: datetime,
                      now: datetime) -> ErrorLines:
    """Lines matching ``pattern`` (a regular expression) at or after ``since`` in ``files``."""
    match = re.compile(pattern.encode())
    found = ErrorLines()
    for file in files:
        count_in_file(source, file, match, since, now, found)
    return found

