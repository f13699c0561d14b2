"""Log files, archives and temporary files of the lifecycle section (PF-02, QP-03, QP-12, QP-22, QP-24).

``FileSource(host, timeouts)`` reads files on this machine (``host`` None or ``local://``) or on an ssh://
profile host through the ssh client (BatchMode, the profile's connect timeout, as the remote backup copies
in ``backups/remote.py``). ``list_files(glob)`` lists names, sizes and mtimes only (never content), at most
``MAX_FILES`` of them, a remote listing bounded by connect + request timeout. ``open(path)`` streams a file's
bytes (remote: ``cat`` through the ssh channel, bounded by connect + ``STREAM_FACTOR`` x request timeout).

``count_error_lines`` streams declared files line by line in constant memory (files last written before the
window are skipped, ``.gz``/``.xz``/``.bz2`` read decompressing): each line's time is its leading timestamp
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
import io
import lzma
import os
import re
import shlex
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath

from opsverify.backups.gzipstream import GunzipReader, GzipStream
from opsverify.backups.remote import FetchError, ssh_command
from opsverify.backups.verdict import ByteStream, CorruptBackup
from opsverify.probes.outage import connect_timed_out, request_timed_out
from opsverify.profile.model import Host, Timeouts
from opsverify.redact import redact_text

MAX_FILES = 10_000  # files listed per directory or glob
MAX_LINE = 64 * 1024  # longer lines are read in pieces; only the first piece counts
STREAM_FACTOR = 6  # a remote file streams within connect + 6 x the request timeout
SAMPLES = 3
SAMPLE_CHARS = 120
READ_SIZE = 1 << 20
COMPRESSED = (".gz", ".xz", ".bz2", ".zst")
GLOB_META = re.compile(r"[*?[]")


@dataclass(frozen=True)
class LoggedFile:
    """One file: its absolute path, size and last modification (no content)."""

    path: str
    size: int
    mtime: datetime

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    def age(self, now: datetime) -> timedelta:
        return now - self.mtime


@dataclass(frozen=True)
class FileListing:
    """The files matching a glob, or why they could not be listed; ``user`` is who listed them."""

    where: str
    files: tuple[LoggedFile, ...] = ()
    error: str | None = None
    unreachable: str | None = None
    truncated: bool = False
    user: str = ""

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


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


class FileSource:
    """The files of one machine: this one (``host`` None or local://) or an ssh:// profile host."""

    def __init__(self, host: Host | None, timeouts: Timeouts) -> None:
        self.host = host if host is not None and not host.uri.startswith("local://") else None
        self.timeouts = timeouts

    def shown(self, path: str) -> str:
        """``path`` as messages show it: ``host:path`` on a remote host."""
        return f"{self.host.name}:{path}" if self.host else path

    def list_files(self, pattern: str) -> FileListing:
        """The regular files matching the absolute glob ``pattern`` (at most ``MAX_FILES``), sorted by path."""
        return self._remote_list(pattern) if self.host else self._local_list(pattern)

    def _local_list(self, pattern: str) -> FileListing:
        root, depth = split_glob(pattern)
        user = getpass.getuser()
        where = self.shown(pattern)
        problem = _directory_problem(root, user)
        if problem:
            return FileListing(where, error=problem, user=user)
        found: list[LoggedFile] = []
        truncated = False
        for path in _walk(root, depth):
            if not glob_matches(path, pattern):
                continue
            try:
                info = os.stat(path)
            except OSError:  # removed meanwhile, or a dangling link
                continue
            if not os.path.isfile(path):
                continue
            if len(found) == MAX_FILES:
                truncated = True
                break
            found.append(LoggedFile(path, info.st_size, _stamp(info.st_mtime)))
        return FileListing(where, tuple(sorted(found, key=lambda f: f.path)), truncated=truncated, user=user)

    def _remote_list(self, pattern: str) -> FileListing:
        assert self.host is not None
        root, depth = split_glob(pattern)
        where = self.shown(pattern)
        q = shlex.quote(root)
        script = (
            f"id -un; if [ ! -e {q} ]; then echo E missing; elif [ ! -d {q} ]; then echo E notdir; "
            f"elif [ ! -r {q} ] || [ ! -x {q} ]; then echo E denied; else LC_ALL=C find {q} -mindepth {depth} "
            f"-maxdepth {depth} -type f -path {shlex.quote(pattern)} -printf 'F %T@\\t%s\\t%p\\n' 2>/dev/null "
            f"| head -n {MAX_FILES + 1}; fi"
        )
        limit = self.timeouts.connect + self.timeouts.request
        try:
            done = subprocess.run(
                [*ssh_command(self.host, self.timeouts.connect), script], capture_output=True,
                stdin=subprocess.DEVNULL, timeout=limit.total_seconds(), check=False,
            )
        except FileNotFoundError:
            return FileListing(where, error="the ssh client is not installed: run `make setup` (openssh-client)")
        except FetchError as exc:
            return FileListing(where, error=str(exc))
        except subprocess.TimeoutExpired:
            cause = request_timed_out(limit)
            return FileListing(where, error=f"cannot reach {self.host.uri}: {cause}", unreachable=cause)
        out = done.stdout.decode(errors="replace").splitlines()
        if done.returncode != 0 or not out:
            lines = done.stderr.decode(errors="replace").strip().splitlines() or [f"ssh exit code {done.returncode}"]
            cause = lines[-1]
            unreachable = connect_timed_out(self.timeouts.connect) if "timed out" in cause else None
            return FileListing(where, error=f"cannot reach {self.host.uri}: {cause}", unreachable=unreachable)
        user = out[0].strip()
        shown_root = self.shown(root)
        errors = {"missing": f"directory {shown_root} does not exist",
                  "notdir": f"{shown_root} is not a directory",
                  "denied": f"permission denied reading directory {shown_root} (as user {user})"}
        found: list[LoggedFile] = []
        for line in out[1:]:
            if line.startswith("E "):
                return FileListing(where, error=errors.get(line[2:], line[2:]), user=user)
            stamp, size, path = line[2:].split("\t", 2)
            if glob_matches(path, pattern):
                found.append(LoggedFile(path, int(size), _stamp(float(stamp))))
        truncated = len(found) > MAX_FILES
        files = tuple(sorted(found[:MAX_FILES], key=lambda f: f.path))
        return FileListing(where, files, truncated=truncated, user=user)

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


def decompressed(stream: ByteStream, name: str) -> Iterator[bytes]:
    """The decompressed chunks of ``name`` by its suffix (.gz, .xz, .bz2); the bytes as they are otherwise."""
    if name.endswith(".gz"):
        yield from GzipStream(stream)
    elif name.endswith(".xz"):
        yield from _stdlib_stream(stream, lzma.LZMADecompressor)
    elif name.endswith(".bz2"):
        yield from _stdlib_stream(stream, bz2.BZ2Decompressor)
    else:
        while data := stream.read(READ_SIZE):
            yield data


def archive_problem(source: FileSource, path: str) -> str | None:
    """What is wrong with a compressed archive (decompressed to its end), or None when it is intact.

    ``.zst`` has no decompressor among opsverify's dependencies: ``ZSTD_UNVERIFIED`` is returned.
    """
    if path.endswith(".zst"):
        return ZSTD_UNVERIFIED
    try:
        with source.open(path) as stream:
            for _ in decompressed(stream, path):
                pass
    except CorruptBackup as exc:
        return str(exc)
    except OSError as exc:
        return str(exc) if source.host else f"cannot read {path}: {exc.strerror or exc}"
    return None


ZSTD_UNVERIFIED = "not verified: opsverify has no zstd decompressor"


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
    """Lines matching the error pattern in the window, over the files read: their count and the first few."""

    count: int = 0
    samples: list[str] = field(default_factory=list)
    files_read: int = 0
    files_skipped: int = 0  # last written before the window
    errors: list[str] = field(default_factory=list)

    def add(self, line: bytes) -> None:
        self.count += 1
        if len(self.samples) < SAMPLES:
            text = line.decode(errors="replace").rstrip("\r\n")
            cut = text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 1] + "…"
            self.samples.append(redact_text(cut))


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
    if path.endswith((".xz", ".bz2")):
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
    if file.path.endswith(".zst"):
        found.errors.append(f"{source.shown(file.path)} is zstd-compressed, which opsverify cannot read (no zstd "
                            "decompressor among its dependencies)")
        return
    current: datetime | None = None
    pending: list[bytes] = []  # matching lines before the file's first timestamp (at most SAMPLES kept)
    pending_count = 0
    try:
        with source.open(file.path) as raw:
            for line in _lines(_text_stream(raw, file.path)):
                stamp = line_time(line, now)
                if stamp is not None:
                    if current is None and pending_count:
                        _settle(pending, pending_count, stamp >= since, found)
                        pending, pending_count = [], 0
                    current = stamp
                if not match.search(line):
                    continue
                if current is None:
                    pending_count += 1
                    if len(pending) < SAMPLES:
                        pending.append(line)
                elif current >= since:
                    found.add(line)
    except CorruptBackup as exc:
        found.errors.append(f"{source.shown(file.path)}: {exc}")
        return
    except OSError as exc:
        found.errors.append(str(exc) if source.host else f"cannot read {file.path}: {exc.strerror or exc}")
        return
    if current is None and pending_count:  # no timestamp at all: the file's mtime decides
        _settle(pending, pending_count, file.mtime >= since, found)
    found.files_read += 1


def _settle(pending: list[bytes], count: int, inside: bool, found: ErrorLines) -> None:
    if not inside:
        return
    for line in pending:
        found.add(line)
    found.count += count - len(pending)


def count_error_lines(source: FileSource, files: list[LoggedFile], pattern: str, since: datetime,
                      now: datetime) -> ErrorLines:
    """Lines matching ``pattern`` (a regular expression) at or after ``since`` in ``files``."""
    match = re.compile(pattern.encode())
    found = ErrorLines()
    for file in files:
        count_in_file(source, file, match, since, now, found)
    return found

