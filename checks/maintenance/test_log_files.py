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
from datetime import datetime, timedelta

import pytest

from fixtures.expect import expect, fail
from fixtures.logfiles import ListingOf, SourceOf
from fixtures.reporting import Recorder
from opsverify.backups.directory import human_size
from opsverify.durations import format_duration as fmt
from opsverify.probes.logfiles import (
    COMPRESSED,
    ZSTD_UNVERIFIED,
    FileListing,
    LoggedFile,
    archive_problem,
    count_error_lines,
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


def listed(listing: FileListing, what: str, field: str) -> FileListing:
    """``listing`` when it could be listed; else the check fails naming the problem and the field to fix."""
    __tracebackhide__ = True
    if listing.error is not None:
        if "does not exist" in listing.error:
            fix = f"create it or correct {field}"
        elif "permission denied" in listing.error:
            fix = f"grant the checking user read access or correct {field}"
        else:
            fix = "check the host's ssh access (hosts[].uri, ssh_config, ssh_identity_file)"
        fail(f"cannot list {what}: {listing.error}: {fix}")
    return listing


def names(files: list[LoggedFile], limit: int = SHOWN) -> str:
    shown = ", ".join(f.name for f in files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


def where(log_directory: LogDirectory) -> str:
    return f"{log_directory.host}:{log_directory.path}" if log_directory.host else str(log_directory.path)


def log_files(log_directory: LogDirectory, file_listing_of: ListingOf, evidence: Recorder) -> list[LoggedFile]:
    pattern = posixpath.join(log_directory.path, log_directory.pattern)
    listing = listed(file_listing_of(log_directory.host, pattern), f"log directory {log_directory.name}",
                     "lifecycle.log_dirs[].path")
    evidence.record(directory=where(log_directory), pattern=log_directory.pattern, files=len(listing.files),
                    total_bytes=listing.total_size)
    if listing.truncated:
        evidence.record(truncated=f"only the first {len(listing.files)} files were listed")
    return list(listing.files)


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


def uncompressed_rotated(files: list[LoggedFile], log_directory: LogDirectory) -> list[LoggedFile]:
    """Rotated files left uncompressed; with ``delaycompress``, each log's newest rotation (.1, the newest date)
    is allowed to be."""
    rotated = [(f, r) for f in files if (r := rotation(f.name, log_directory.compressed)) is not None]
    latest: dict[str, str] = {}  # per log, its newest dated rotation
    for _, (base, key, _) in rotated:
        if isinstance(key, str) and key > latest.get(base, ""):
            latest[base] = key

    def newest(base: str, key: int | str) -> bool:
        return key == 1 if isinstance(key, int) else latest.get(base) == key

    delay = log_directory.delaycompress
    return [f for f, (base, key, packed) in rotated if not packed and not (delay and newest(base, key))]


@pytest.mark.daily
@pytest.mark.runbook(by_kind={"logs": ("PF-02",), "audit-logs": ("QP-22",)})
def test_log_directory_holds_nothing_past_retention(
    log_directory: LogDirectory, file_listing_of: ListingOf, now: datetime, evidence: Recorder
) -> None:
    """No file matching the directory's ``pattern`` is older (mtime) than ``retention`` (default 30d)."""
    files = log_files(log_directory, file_listing_of, evidence)
    limit = log_directory.retention
    old = sorted((f for f in files if f.age(now) > limit), key=lambda f: f.mtime)
    evidence.record(retention=fmt(limit), past_retention=len(old))
    if files:
        evidence.record(oldest_age=age(min(files, key=lambda f: f.mtime).age(now)))
    if old:
        fail(f"log directory {log_directory.name} ({where(log_directory)}) holds {len(old)} file(s) older than "
             f"retention {fmt(limit)}; the oldest, {old[0].name}, is {age(old[0].age(now))} old: delete files past "
             f"retention (logrotate's rotate/maxage) or raise lifecycle.log_dirs[].retention")


@pytest.mark.daily
@pytest.mark.runbook(by_kind={"logs": ("PF-02",), "audit-logs": ("QP-22",)})
def test_rotated_log_files_are_compressed(
    log_directory: LogDirectory, file_listing_of: ListingOf, evidence: Recorder
) -> None:
    """Every rotated file (``x.log.1``, ``x.log-20261129``, ``x.1.log``) ends in a ``compressed`` suffix; the live
    file is not judged, and with ``delaycompress: true`` neither is each log's newest rotation (``.1``)."""
    files = log_files(log_directory, file_listing_of, evidence)
    plain = uncompressed_rotated(files, log_directory)
    evidence.record(delaycompress=log_directory.delaycompress, uncompressed_rotated=names(plain, 20))
    if plain:
        allowed = " (delaycompress allows each log's newest rotation only)" if log_directory.delaycompress else ""
        fail(f"log directory {log_directory.name} ({where(log_directory)}) holds {len(plain)} rotated file(s) not "
             f"compressed{allowed}: {names(plain)}: enable compress in its logrotate rule and gzip them")


@pytest.mark.daily
@pytest.mark.runbook(by_kind={"logs": ("PF-02",), "audit-logs": ("QP-22",)})
def test_log_directory_is_under_its_size_cap(
    log_directory: LogDirectory, file_listing_of: ListingOf, evidence: Recorder
) -> None:
    """The matching files' total size is at most ``max_size`` (none declared: recorded only)."""
    files = log_files(log_directory, file_listing_of, evidence)
    total = sum(f.size for f in files)
    cap = log_directory.max_size
    evidence.record(max_size=human_size(cap) if cap is not None else "none declared", total=human_size(total))
    if cap is not None and total > cap:
        largest = max(files, key=lambda f: f.size)
        fail(f"log directory {log_directory.name} ({where(log_directory)}) holds {human_size(total)} in "
             f"{len(files)} file(s), over max_size {human_size(cap)}; the largest is {largest.name} "
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
    listing = listed(file_listing_of(archive_location.host, pattern),
                     f"the live location of archive {archive_location.name}", "lifecycle.archives[].live")
    limit = archive_location.max_age
    old = sorted((f for f in listing.files if f.age(now) > limit), key=lambda f: f.mtime)
    evidence.record(live=shown, files=len(listing.files), max_age=fmt(limit), past_max_age=len(old))
    if old:
        fail(f"{len(old)} file(s) in {shown} (archive {archive_location.name}) are older than max_age {fmt(limit)}; "
             f"the oldest, {old[0].name}, is {age(old[0].age(now))} old: move them compressed to "
             f"{archive_location.archive}")


@pytest.mark.monthly
@pytest.mark.runbook("QP-12")
def test_archives_are_intact(
    archive_location: ArchiveLocation, file_listing_of: ListingOf, file_source_of: SourceOf, evidence: Recorder
) -> None:
    """Every compressed file (.gz, .xz, .bz2) matching ``pattern`` in ``archive`` decompresses to its end (gzip's
    CRC32 and length checked); .zst files are listed but not verified (no zstd decompressor among the
    dependencies)."""
    archive = str(archive_location.archive)
    shown = f"{archive_location.host}:{archive}" if archive_location.host else archive
    pattern = posixpath.join(archive_location.archive, archive_location.pattern)
    listing = listed(file_listing_of(archive_location.host, pattern),
                     f"the archive directory of {archive_location.name}", "lifecycle.archives[].archive")
    source = file_source_of(archive_location.host)
    packed = [f for f in listing.files if f.name.endswith(COMPRESSED)]
    problems = [(f, p) for f in packed if (p := archive_problem(source, f.path)) is not None]
    unverified = [f for f, p in problems if p == ZSTD_UNVERIFIED]
    broken = [(f, p) for f, p in problems if p != ZSTD_UNVERIFIED]
    evidence.record(archive=shown, files=len(listing.files), compressed=len(packed),
                    verified=len(packed) - len(problems), total_bytes=listing.total_size)
    if unverified:
        evidence.record(unverified=names(unverified, 20))
    if broken:
        first, problem = broken[0]
        fail(f"{len(broken)} of {len(packed)} archive(s) in {shown} (archive {archive_location.name}) are not intact; "
             f"{first.name}: {problem}: restore it from a backup or archive the original again")


@pytest.mark.daily
@pytest.mark.runbook("QP-24")
def test_no_stale_temporary_files(
    tmp_files: TmpFiles, file_listing_of: ListingOf, now: datetime, evidence: Recorder
) -> None:
    """No file matching the absolute glob ``pattern`` (``/tmp/quantum_*``) is older (mtime) than ``max_age``
    (default 1d)."""
    pattern = str(tmp_files.pattern)
    shown = f"{tmp_files.host}:{pattern}" if tmp_files.host else pattern
    listing = listed(file_listing_of(tmp_files.host, pattern), f"temporary files {tmp_files.name}",
                     "lifecycle.tmp_files[].pattern")
    limit = tmp_files.max_age
    old = sorted((f for f in listing.files if f.age(now) > limit), key=lambda f: f.mtime)
    evidence.record(pattern=shown, files=len(listing.files), max_age=fmt(limit), stale=len(old),
                    stale_bytes=sum(f.size for f in old))
    if old:
        fail(f"{len(old)} temporary file(s) matching {shown} are older than max_age {fmt(limit)}; the oldest, "
             f"{old[0].name}, is {age(old[0].age(now))} old: delete them (the cleanup job of {tmp_files.name} did not "
             f"run or missed them)")


@pytest.mark.daily
@pytest.mark.runbook("QP-03")
def test_error_lines_in_the_window_are_under_the_threshold(
    error_log: ErrorLog, file_listing_of: ListingOf, file_source_of: SourceOf, now: datetime, evidence: Recorder
) -> None:
    """Lines matching ``match`` (default ``\\bERROR\\b``) with a time in the last ``window`` (default 24h) number at
    most ``max_lines``; every declared path (or glob) must name at least one existing file."""
    files: list[LoggedFile] = []
    seen: set[str] = set()
    for path in error_log.paths:
        pattern = str(path)
        shown = f"{error_log.host}:{pattern}" if error_log.host else pattern
        listing = listed(file_listing_of(error_log.host, pattern), f"error log {error_log.name}",
                         "lifecycle.error_logs[].paths")
        expect(bool(listing.files), f"error log {error_log.name}: {shown} matches no file (it is declared, so the "
                                    f"log must exist): correct lifecycle.error_logs[].paths or check the logging")
        files += [f for f in listing.files if f.path not in seen]
        seen.update(f.path for f in listing.files)
    since = now - error_log.window
    found = count_error_lines(file_source_of(error_log.host), files, error_log.match, since, now)
    evidence.record(files=len(files), files_read=found.files_read, files_before_window=found.files_skipped,
                    window=fmt(error_log.window), max_lines=error_log.max_lines, error_lines=found.count,
                    first_lines=" | ".join(found.samples))
    expect(not found.errors, f"error log {error_log.name}: {found.errors[0] if found.errors else ''}: make it "
                             f"readable by the checking user or leave it out of lifecycle.error_logs[].paths")
    if found.count > error_log.max_lines:
        fail(f"error log {error_log.name}: {found.count} line(s) matching {error_log.match} in the last "
             f"{fmt(error_log.window)}, over max_lines {error_log.max_lines}; the first: {found.samples[0]!r}: "
             f"look into them (every matching line is in {', '.join(str(p) for p in error_log.paths)})")
