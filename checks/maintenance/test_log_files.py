"""Log files, archives and temporary files are cleaned up as the runbooks ask (the ``lifecycle`` section).

Runbook: PF-02 log rotation and cleanup (log directories: nothing past retention, rotated files compressed,
the total under its cap), QP-22 the same for audit logs (``audit: true``, 30 days), QP-12 archive logs older
than 90 days (nothing past the archive age in the live location, every archive intact), QP-24 no stale
``/tmp/quantum_*`` files, QP-03 ERROR lines of the last 24 h under a threshold. Files are listed (names, sizes,
mtimes) on this machine or on an ssh:// profile host; error lines and archives are streamed, never read whole.
A declared directory or log file that is missing or unreadable fails, naming it (and the checking user).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from fixtures.expect import expect, fail
from fixtures.logfiles import ListingOf, SourceOf
from fixtures.reporting import Recorder
from opsverify.backups.directory import human_size
from opsverify.durations import format_duration as fmt
from opsverify.probes.logfiles import (
    COMPRESSED,
    ErrorLines,
    FileListing,
    LoggedFile,
    Unverifiable,
    Worst,
    archive_problem,
    count_in_file,
    glob_matches,
)
from opsverify.profile.maintenance import ArchiveLocation, ErrorLog, LogDirectory, TmpFiles

pytestmark = [pytest.mark.maintenance]
SHOWN = 3
NUMBERED = re.compile(r"^(?P<base>.+)\.(?P<n>\d+)$")  # app.log.1
DATED = re.compile(r"^(?P<base>.+)-(?P<date>\d{8}(?:\d{2,6})?)$")  # app.log-20261129
INFIX = re.compile(r"^(?P<stem>.+)\.(?P<n>\d+)\.(?P<ext>[A-Za-z]+)$")  # app.1.log


def age(value: timedelta) -> str:
    """An age in its largest whole unit (``40d``, ``5h``, ``12m``, ``30s``): stable while a run lasts."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def window(value: timedelta) -> str:
    """A window as its runbook says it: whole hours up to two days in hours (``24h``, not ``1d``)."""
    if value <= timedelta(hours=48) and value % timedelta(hours=1) == timedelta(0) and value >= timedelta(hours=1):
        return f"{value // timedelta(hours=1)}h"
    return fmt(value)


def listed(listing: FileListing, what: str, field: str) -> FileListing:
    """``listing`` when it was listed to its end; else the check fails naming the problem and the field to fix."""
    __tracebackhide__ = True
    if listing.error is not None:
        if "does not exist" in listing.error:
            fix = f"create it or correct {field}"
        elif "permission denied" in listing.error:
            fix = f"grant the checking user read access or correct {field}"
        else:
            fix = "check the host's ssh access (hosts[].uri, ssh_config, ssh_identity_file)"
        fail(f"cannot list {what}: {listing.error}: {fix}")
    if listing.incomplete is not None:
        fail(f"cannot list every file of {what}, so it is not judged: {listing.incomplete}: raise timeouts.request "
             "or clean the directory up so that it lists in time")
    return listing


def names(files: list[LoggedFile], count: int | None = None, limit: int = SHOWN) -> str:
    count = len(files) if count is None else count
    shown = ", ".join(f.name for f in files[:limit])
    return shown + (f" and {count - limit} more" if count > limit else "")


def where(log_directory: LogDirectory) -> str:
    return f"{log_directory.host}:{log_directory.path}" if log_directory.host else str(log_directory.path)


def log_files(log_directory: LogDirectory, file_listing_of: ListingOf, evidence: Recorder,
              visit: Callable[[LoggedFile], None] | None = None) -> FileListing:
    """Every file of the log directory handed to ``visit`` (streamed); what was listed, when all of it was."""
    pattern = posixpath.join(log_directory.path, log_directory.pattern)
    listing = file_listing_of(log_directory.host, pattern, visit)
    evidence.record(directory=where(log_directory), pattern=log_directory.pattern, files=listing.count,
                    total_bytes=listing.total_size)
    return listed(listing, f"log directory {log_directory.name}", "lifecycle.log_dirs[].path")


def rotation(name: str, compressed: list[str]) -> tuple[str, int | str, bool] | None:
    """(the live file's name, its rotation number or date, compressed) of a rotated file's name; None for others."""
    suffix = next((s for s in compressed if name.endswith(s)), "")
    plain = name[: len(name) - len(suffix)] if suffix else name
    if m := NUMBERED.match(plain):
        return m["base"], int(m["n"]), bool(suffix)
    if m := DATED.match(plain):
        return m["base"], m["date"], bool(suffix)
    if m := INFIX.match(plain):
        return f"{m['stem']}.{m['ext']}", int(m["n"]), bool(suffix)
    return None


class Uncompressed:
    """Rotated files left uncompressed, judged as they stream by (per log, only its newest dated plain rotation is
    held back until the end); with ``delaycompress``, each log's newest rotation (.1, the newest date) is allowed."""

    def __init__(self, log_directory: LogDirectory) -> None:
        self.compressed, self.delay = log_directory.compressed, log_directory.delaycompress
        self.plain = Worst(key=lambda f: f.path)
        self.latest: dict[str, str] = {}  # per log, its newest dated rotation
        self.held: dict[str, tuple[str, LoggedFile]] = {}  # per log, its newest dated plain rotation

    def add(self, file: LoggedFile) -> None:
        found = rotation(file.name, self.compressed)
        if found is None:
            return
        base, key, packed = found
        if isinstance(key, str) and key > self.latest.get(base, ""):
            self.latest[base] = key
        if packed:
            return
        if not self.delay or (isinstance(key, int) and key != 1):
            self.plain.add(file)
        elif isinstance(key, str):
            held = self.held.get(base)
            if held is None or key > held[0]:
                self.held[base] = (key, file)
                if held is not None:
                    self.plain.add(held[1])
            else:
                self.plain.add(file)

    def done(self) -> Worst:
        for base, (key, file) in self.held.items():
            if self.latest.get(base) != key:
                self.plain.add(file)
        self.held.clear()
        return self.plain


@pytest.mark.daily
@pytest.mark.runbook(by_kind={"logs": ("PF-02",), "audit-logs": ("QP-22",)})
def test_log_directory_holds_nothing_past_retention(
    log_directory: LogDirectory, file_listing_of: ListingOf, now: datetime, evidence: Recorder
) -> None:
    """No file matching the directory's ``pattern`` is older (mtime) than ``retention`` (default 30d); every file
    is judged, however many there are."""
    limit = log_directory.retention
    old = Worst(key=lambda f: f.mtime)
    listing = log_files(log_directory, file_listing_of, evidence,
                        lambda f: old.add(f) if f.age(now) > limit else None)
    evidence.record(retention=fmt(limit), past_retention=old.count)
    if listing.oldest is not None:
        evidence.record(oldest_age=age(listing.oldest.age(now)))
    if old.count:
        oldest = old.first[0]
        fail(f"log directory {log_directory.name} ({where(log_directory)}) holds {old.count} file(s) older than "
             f"retention {fmt(limit)}; the oldest, {oldest.name}, is {age(oldest.age(now))} old: delete files past "
             f"retention (logrotate's rotate/maxage) or raise lifecycle.log_dirs[].retention")


@pytest.mark.daily
@pytest.mark.runbook(by_kind={"logs": ("PF-02",), "audit-logs": ("QP-22",)})
def test_rotated_log_files_are_compressed(
    log_directory: LogDirectory, file_listing_of: ListingOf, evidence: Recorder
) -> None:
    """Every rotated file (``x.log.1``, ``x.log-20261129``, ``x.1.log``) ends in a ``compressed`` suffix; the live
    file is not judged, and with ``delaycompress: true`` neither is each log's newest rotation (``.1``)."""
    judged = Uncompressed(log_directory)
    log_files(log_directory, file_listing_of, evidence, judged.add)
    plain = judged.done()
    evidence.record(delaycompress=log_directory.delaycompress, uncompressed_rotated=plain.count,
                    first_uncompressed=names(plain.first, plain.count, 5))
    if plain.count:
        allowed = " (delaycompress allows each log's newest rotation only)" if log_directory.delaycompress else ""
        fail(f"log directory {log_directory.name} ({where(log_directory)}) holds {plain.count} rotated file(s) not "
             f"compressed{allowed}: {names(plain.first, plain.count)}: enable compress in its logrotate rule and "
             "gzip them")


@pytest.mark.daily
@pytest.mark.runbook(by_kind={"logs": ("PF-02",), "audit-logs": ("QP-22",)})
def test_log_directory_is_under_its_size_cap(
    log_directory: LogDirectory, file_listing_of: ListingOf, evidence: Recorder
) -> None:
    """The matching files' total size is at most ``max_size`` (none declared: recorded only)."""
    listing = log_files(log_directory, file_listing_of, evidence)
    total = listing.total_size
    cap = log_directory.max_size
    evidence.record(max_size=human_size(cap) if cap is not None else "none declared", total=human_size(total))
    if cap is not None and total > cap and listing.largest is not None:
        largest = listing.largest
        fail(f"log directory {log_directory.name} ({where(log_directory)}) holds {human_size(total)} in "
             f"{listing.count} file(s), over max_size {human_size(cap)}; the largest is {largest.name} "
             f"({human_size(largest.size)}): rotate and compress more often, shorten retention or raise max_size")


@pytest.mark.monthly
@pytest.mark.runbook("QP-12")
def test_live_location_holds_nothing_past_the_archive_age(
    archive_location: ArchiveLocation, file_listing_of: ListingOf, now: datetime, evidence: Recorder
) -> None:
    """No file matching ``pattern`` in ``live`` is older (mtime) than ``max_age`` (default 90d): it belongs in
    ``archive``."""
    live = str(archive_location.live)
    shown = f"{archive_location.host}:{live}" if archive_location.host else live
    pattern = posixpath.join(archive_location.live, archive_location.pattern)
    limit = archive_location.max_age
    old = Worst(key=lambda f: f.mtime)
    listing = file_listing_of(archive_location.host, pattern, lambda f: old.add(f) if f.age(now) > limit else None)
    evidence.record(live=shown, files=listing.count, max_age=fmt(limit), past_max_age=old.count)
    listed(listing, f"the live location of archive {archive_location.name}", "lifecycle.archives[].live")
    if old.count:
        oldest = old.first[0]
        fail(f"{old.count} file(s) in {shown} (archive {archive_location.name}) are older than max_age {fmt(limit)}; "
             f"the oldest, {oldest.name}, is {age(oldest.age(now))} old: move them compressed to "
             f"{archive_location.archive}")


@pytest.mark.monthly
@pytest.mark.runbook("QP-12")
def test_archives_are_intact(
    archive_location: ArchiveLocation, file_listing_of: ListingOf, file_source_of: SourceOf, evidence: Recorder
) -> None:
    """Every compressed file (.gz, .xz, .bz2, .zst) matching ``pattern`` in ``archive`` decompresses to its end
    (gzip's CRC32 and length checked, zstd's frame checksums when written, a stream cut mid-frame caught)."""
    archive = str(archive_location.archive)
    shown = f"{archive_location.host}:{archive}" if archive_location.host else archive
    pattern = posixpath.join(archive_location.archive, archive_location.pattern)
    source = file_source_of(archive_location.host)
    packed = Worst(key=lambda f: f.path)
    broken = Worst(key=lambda f: f.path)
    unverified = Worst(key=lambda f: f.path)  # a zstd window too large to decode here: not known corrupt
    problems: dict[str, str] = {}  # of the broken ones kept
    why_unverified: dict[str, str] = {}

    def verify(file: LoggedFile) -> None:
        if not file.name.endswith(COMPRESSED):
            return
        packed.add(file)
        try:
            problem = archive_problem(source, file.path)
        except Unverifiable as exc:
            unverified.add(file)
            if not why_unverified:
                why_unverified[file.path] = str(exc)
            elif file.path < next(iter(why_unverified)):
                why_unverified.clear()
                why_unverified[file.path] = str(exc)
            return
        if problem is not None:
            broken.add(file)
            problems[file.path] = problem
            kept = {f.path for f in broken.first}
            for path in [p for p in problems if p not in kept]:
                del problems[path]

    listing = file_listing_of(archive_location.host, pattern, verify)
    evidence.record(archive=shown, files=listing.count, compressed=packed.count,
                    verified=packed.count - broken.count - unverified.count, unverified=unverified.count,
                    total_bytes=listing.total_size)
    listed(listing, f"the archive directory of {archive_location.name}", "lifecycle.archives[].archive")
    if broken.count:
        first = broken.first[0]
        fail(f"{broken.count} of {packed.count} archive(s) in {shown} (archive {archive_location.name}) are not "
             f"intact; {first.name}: {problems[first.path]}: restore it from a backup or archive the original again")
    if unverified.count:
        first = unverified.first[0]
        fail(f"{unverified.count} of {packed.count} archive(s) in {shown} (archive {archive_location.name}) could not "
             f"be verified; {first.name}: {why_unverified[first.path]}: test it by hand where that much memory is "
             "available, or compress the archives with a window of 2 GiB at most (zstd --long=31)")


def kind(file: LoggedFile) -> str:
    return "" if file.kind == "file" else f" (a {file.kind})"


@pytest.mark.daily
@pytest.mark.runbook("QP-24")
def test_no_stale_temporary_files(
    tmp_files: TmpFiles, file_listing_of: ListingOf, now: datetime, evidence: Recorder
) -> None:
    """No file, directory or symlink (its own mtime, as ``find -mtime`` sees it) matching the absolute glob
    ``pattern`` (``/tmp/quantum_*``) is older than ``max_age`` (default 1d)."""
    pattern = str(tmp_files.pattern)
    shown = f"{tmp_files.host}:{pattern}" if tmp_files.host else pattern
    limit = tmp_files.max_age
    old = Worst(key=lambda f: f.mtime)
    listing = file_listing_of(tmp_files.host, pattern, lambda f: old.add(f) if f.age(now) > limit else None,
                              any_kind=True)
    evidence.record(pattern=shown, files=listing.count, max_age=fmt(limit), stale=old.count, stale_bytes=old.size,
                    first_stale=", ".join(f.name + kind(f) for f in old.first))
    listed(listing, f"temporary files {tmp_files.name}", "lifecycle.tmp_files[].pattern")
    if old.count:
        oldest = old.first[0]
        fail(f"{old.count} temporary file(s) matching {shown} are older than max_age {fmt(limit)}; the oldest, "
             f"{oldest.name}{kind(oldest)}, is {age(oldest.age(now))} old: delete them (the cleanup job of "
             f"{tmp_files.name} did not run or missed them)")


@pytest.mark.daily
@pytest.mark.runbook("QP-03")
def test_error_lines_in_the_window_are_under_the_threshold(
    error_log: ErrorLog, file_listing_of: ListingOf, file_source_of: SourceOf, now: datetime, evidence: Recorder
) -> None:
    """Lines matching ``match`` (default ``\\bERROR\\b``) with a time in the last ``window`` (default 24h) number at
    most ``max_lines``; every declared path (or glob) must name at least one existing file."""
    source = file_source_of(error_log.host)
    match = re.compile(error_log.match.encode())
    since = now - error_log.window
    found = ErrorLines()
    files = 0
    earlier: list[str] = []  # a file an earlier declared path also matched was read already

    def read(file: LoggedFile) -> None:
        if not any(glob_matches(file.path, other) for other in earlier):
            count_in_file(source, file, match, since, now, found)

    for path in error_log.paths:
        pattern = str(path)
        shown = f"{error_log.host}:{pattern}" if error_log.host else pattern
        listing = listed(file_listing_of(error_log.host, pattern, read), f"error log {error_log.name}",
                         "lifecycle.error_logs[].paths")
        expect(bool(listing.count), f"error log {error_log.name}: {shown} matches no file (it is declared, so the "
                                    f"log must exist): correct lifecycle.error_logs[].paths or check the logging")
        files += listing.count
        earlier.append(pattern)
    evidence.record(files=files, files_read=found.files_read, files_before_window=found.files_skipped,
                    window=window(error_log.window), max_lines=error_log.max_lines, error_lines=found.count,
                    first_lines=" | ".join(found.samples), files_with_errors=found.files_matched,
                    first_files=", ".join(found.first_files), corrupt_files=len(found.corrupt),
                    unverified_files=len(found.unverified))
    expect(not found.errors, f"error log {error_log.name}: {found.errors[0] if found.errors else ''}: make it "
                             f"readable by the checking user or leave it out of lifecycle.error_logs[].paths")
    damaged = ""  # a corrupt compressed log: its readable part is counted, and it is named
    if found.corrupt:
        damaged = (f"{len(found.corrupt)} compressed log(s) are corrupt or truncated; the first, {found.corrupt[0]}: "
                   "restore it from a backup or remove it")
    elif found.unverified:
        damaged = (f"{len(found.unverified)} compressed log(s) could not be verified; the first, "
                   f"{found.unverified[0]}: read it by hand where that much memory is available")
    if found.count > error_log.max_lines:
        more = found.files_matched - len(found.first_files)
        files_shown = ", ".join(found.first_files) + (f" and {more} more" if more > 0 else "")
        also = f"; besides, {damaged} (its readable part is counted)" if damaged else ""
        fail(f"error log {error_log.name}: {found.count} line(s) matching {error_log.match} in the last "
             f"{window(error_log.window)}, over max_lines {error_log.max_lines}; the first, in {found.first[0][0]}: "
             f"{found.samples[0]!r}: look into them (matching lines are in {files_shown}){also}")
    if damaged:
        fail(f"error log {error_log.name}: {damaged} ({found.count} line(s) matching {error_log.match} counted in "
             f"the last {window(error_log.window)} of what is readable, max_lines {error_log.max_lines})")
