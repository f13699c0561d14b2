"""The catalog of one backup source: which backups exist, when each was taken, how big it is.

A backup's time comes from its name (``backup_20250802_020000.sql.gz``, ``…_20250802.dump``,
``…2025-08-02…``, read in this machine's time zone unless it ends in ``Z``) and otherwise from its
mtime, also when the name would put it more than an hour after its mtime (another time zone).
A name with a date but no time takes the mtime when that falls on the same day (the job's real
start), else midnight of that day.
"""

from __future__ import annotations

import fnmatch
import re
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from opsverify.backups.s3 import client, describe_error, list_objects, unreachable
from opsverify.profile.model import BackupSource, Host, Timeouts

NAME_AHEAD = timedelta(hours=1)  # a job names its file when it starts: the name is not much later than its mtime
FIND_FORMAT = "%T@\\t%s\\t%m\\t%f\\n"
_STAMP = re.compile(
    r"(?P<y>20\d\d)-?(?P<m>[01]\d)-?(?P<d>[0-3]\d)(?:[T_-]?(?P<H>[0-2]\d):?(?P<M>[0-5]\d):?(?P<S>[0-5]\d)(?P<z>Z)?)?"
)


@dataclass(frozen=True)
class BackupFile:
    """One backup: where it is, its time, size and (local files) permission bits."""

    name: str
    location: str
    taken: datetime
    size: int
    time_from: Literal["name", "mtime"]
    mode: int | None = None
    host: str | None = None  # a profile host (ssh://) holding it; location is then ``host:/path``
    path: str = ""  # the path on that host

    @property
    def is_local(self) -> bool:
        return self.host is None and not self.location.startswith("s3://")

    def age(self, now: datetime) -> timedelta:
        return now - self.taken

    @property
    def readable_by_others(self) -> bool:
        """Group or world may read it (a secret export must be 0600 or tighter)."""
        return self.mode is not None and bool(self.mode & (stat.S_IRGRP | stat.S_IROTH))


@dataclass(frozen=True)
class Catalog:
    """The backups of one source, newest first, or why they could not be listed."""

    source: str
    location: str
    files: list[BackupFile] = field(default_factory=list)
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage

    @property
    def newest(self) -> BackupFile | None:
        return self.files[0] if self.files else None

    def within(self, window: timedelta, now: datetime) -> list[BackupFile]:
        """The backups younger than ``window``."""
        return [f for f in self.files if f.age(now) <= window]


def taken_at(name: str, mtime: datetime) -> tuple[datetime, Literal["name", "mtime"]]:
    """When the backup called ``name`` was taken (local time in names, as ``date +%Y%m%d`` writes)."""
    match = _STAMP.search(name)
    if match is None:
        return mtime, "mtime"
    try:
        day = datetime(int(match["y"]), int(match["m"]), int(match["d"]))
        if match["H"] is not None:
            stamp = day.replace(hour=int(match["H"]), minute=int(match["M"]), second=int(match["S"]))
            named = stamp.replace(tzinfo=UTC) if match["z"] else stamp.astimezone()
            if named > mtime + NAME_AHEAD:  # written in another time zone than ours: the name cannot be read
                return mtime, "mtime"
            return named, "name"
    except ValueError:
        return mtime, "mtime"
    local_mtime = mtime.astimezone()
    if local_mtime.date() == day.date():
        return mtime, "mtime"
    return day.astimezone(), "name"


def _local(source: BackupSource) -> Catalog:
    directory = Path(source.path)
    if not directory.is_dir():
        why = "does not exist" if not directory.exists() else "is not a directory"
        return Catalog(source.name, source.path, error=f"{directory} {why}")
    files = []
    try:
        for entry in directory.iterdir():
            if not fnmatch.fnmatch(entry.name, source.pattern) or entry.name.endswith(".part"):
                continue  # a `.part` is no backup (yet); an old one is a stray of the directory check
            try:
                info = entry.stat()
            except FileNotFoundError:  # removed by the cleanup meanwhile, or a dangling link
                continue
            mtime = datetime.fromtimestamp(info.st_mtime, UTC)
            when, origin = taken_at(entry.name, mtime)
            size = info.st_size if entry.is_file() else sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
            files.append(BackupFile(entry.name, str(entry), when, size, origin, stat.S_IMODE(info.st_mode)))
    except OSError as exc:
        return Catalog(source.name, source.path, error=f"cannot read {directory}: {exc.strerror or exc}")
    return Catalog(source.name, source.path, sorted(files, key=lambda f: f.taken, reverse=True))


def _s3(source: BackupSource, timeouts: Timeouts) -> Catalog:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3 = client(source.s3, timeouts.connect, timeouts.request)
        objects = list(list_objects(s3, source.path))
    except (BotoCoreError, ClientError) as exc:
        error = f"cannot list {source.path}: {describe_error(exc, timeouts)}"
        return Catalog(source.name, source.path, error=error, unreachable=unreachable(exc, timeouts))
    files = []
    for obj in objects:
        name = obj.key.rsplit("/", 1)[-1]
        if fnmatch.fnmatch(name, source.pattern):
            when, origin = taken_at(name, obj.modified)
            files.append(BackupFile(name, f"{source.path.rstrip('/')}/{name}", when, obj.size, origin))
    return Catalog(source.name, source.path, sorted(files, key=lambda f: f.taken, reverse=True))


def _remote(source: BackupSource, host: Host, timeouts: Timeouts) -> Catalog:
    """List the directory on ``host`` through testinfra: ``find -printf`` of time, size, mode and name."""
    from opsverify.probes.host import connect

    where = f"{host.name}:{source.path}"
    try:
        result = connect(host, timeouts.connect).run(
            "find %s -mindepth 1 -maxdepth 1 -name %s -printf %s", source.path, source.pattern, FIND_FORMAT
        )
    except Exception as exc:  # noqa: BLE001 - any backend failure (ssh refused, timeout) is a fact
        return Catalog(source.name, where, error=f"cannot reach {host.uri}: {str(exc).splitlines()[0]}")
    if result.rc != 0:
        detail = (result.stderr.strip() or f"find exited {result.rc}").splitlines()[-1]
        return Catalog(source.name, where, error=f"cannot list {where}: {detail}")
    files = []
    for line in result.stdout.splitlines():
        stamp, size, mode, name = line.split("\t", 3)
        if name.endswith(".part"):
            continue
        when, origin = taken_at(name, datetime.fromtimestamp(float(stamp), UTC))
        path = f"{source.path.rstrip('/')}/{name}"
        files.append(BackupFile(name, f"{host.name}:{path}", when, int(size), origin, int(mode, 8), host.name, path))
    return Catalog(source.name, where, sorted(files, key=lambda f: f.taken, reverse=True))


def list_backups(source: BackupSource, timeouts: Timeouts, host: Host | None = None) -> Catalog:
    """The source's backups (a local directory, a directory on an ssh:// host, an S3 prefix), newest first."""
    if source.is_s3:
        return _s3(source, timeouts)
    if host is not None and not host.uri.startswith("local://"):
        return _remote(source, host, timeouts)
    return _local(source)
