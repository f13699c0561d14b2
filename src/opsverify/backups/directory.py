"""Backup directories as a whole: every entry in a directory the profile's backup sources write to, and the
strays among them (entries no source's pattern matches).

A directory is the distinct ``path`` of one or more backup sources on one host (here, an ssh:// profile host,
or an S3 prefix). An entry is known when a source's pattern matches it, when it is the manifest
(``<backup>.manifest.json``) of a known backup beside it, or a ``<backup>.part`` a job is writing (the catalog
skips those too) while it is younger than ``stray_max_age``: an older one is a killed job's leftover (often as
big as the backup), a stray like any other file. Directories of other kinds declared inside (another source's
path, a database's ``wal_archive`` or ``base_backups``, the ``scratch_dir``) are left out entirely; any other
subdirectory is one entry (its total size, its newest time). S3: the objects directly under the prefix (deeper
"folders" are not listed, as for the catalog).
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opsverify.backups.s3 import client, describe_error, list_objects, unreachable
from opsverify.profile.environment import Profile
from opsverify.profile.model import BackupSource, Host, Timeouts

MANIFEST, PART = ".manifest.json", ".part"


@dataclass(frozen=True)
class BackupDirectory:
    """One directory (or S3 prefix) and the backup sources that write to it."""

    path: str
    host: str | None
    sources: tuple[BackupSource, ...]
    nested: tuple[str, ...] = ()  # declared directories of other kinds inside it: not listed

    @property
    def name(self) -> str:
        return f"{self.host}:{self.path}" if self.host else self.path

    @property
    def stray_max_age(self) -> timedelta:
        """The smallest ``stray_max_age`` among its sources."""
        return min(s.stray_max_age for s in self.sources)

    @property
    def patterns(self) -> tuple[str, ...]:
        return tuple(s.pattern for s in self.sources)

    def __repr__(self) -> str:
        return f"BackupDirectory({self.name})"


def _normal(path: str) -> str:
    return path if path.startswith("s3://") else os.path.normpath(path)


def _inside(child: str, parent: str) -> bool:
    return child != parent and child.startswith(parent.rstrip("/") + "/")


def backup_directories(profile: Profile) -> list[BackupDirectory]:
    """Every distinct backup directory of the profile (sources grouped by host and path), in declaration order."""
    groups: dict[tuple[str | None, str], list[BackupSource]] = {}
    for source in profile.backups:
        groups.setdefault((source.host, _normal(source.path)), []).append(source)
    here = [str(p) for d in profile.databases for p in (d.wal_archive, d.base_backups) if p is not None]
    here += [str(profile.scratch_dir)] if profile.scratch_dir is not None else []
    out = []
    for (host, path), sources in groups.items():
        others = [p for h, p in groups if h == host and p != path]
        declared = others + ([] if host is not None or path.startswith("s3://") else [_normal(p) for p in here])
        nested = tuple(sorted({p for p in declared if _inside(p, path)}))
        out.append(BackupDirectory(path, host, tuple(sources), nested))
    return out


@dataclass(frozen=True)
class Entry:
    """One entry of a backup directory: a file, or a subdirectory as a whole (``is_dir``)."""

    name: str
    size: int
    modified: datetime  # a subdirectory: the newest time of anything in it
    is_dir: bool = False

    @property
    def shown(self) -> str:
        return self.name + "/" if self.is_dir else self.name

    def age(self, now: datetime) -> timedelta:
        return now - self.modified


@dataclass(frozen=True)
class DirectoryListing:
    """Every entry of one backup directory, or why it could not be listed."""

    location: str
    entries: tuple[Entry, ...] = ()
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.entries)


def strays(
    entries: tuple[Entry, ...], patterns: tuple[str, ...], now: datetime | None = None, max_age: timedelta | None = None
) -> list[Entry]:
    """The entries no pattern accounts for, oldest first (manifests of known backups aside, and a ``<backup>.part``
    while it is being written: not older than ``max_age`` at ``now``; without them, every ``.part`` is exempt)."""
    names = {e.name for e in entries}

    def matches(name: str) -> bool:
        return any(fnmatch.fnmatch(name, p) for p in patterns)

    def known(entry: Entry) -> bool:
        name = entry.name
        if matches(name):
            return True
        if name.endswith(PART) and matches(name.removesuffix(PART)):
            # a backup being written (the catalog skips it); an old one is a killed job's leftover
            return now is None or max_age is None or entry.age(now) <= max_age
        backup = name.removesuffix(MANIFEST)
        return name.endswith(MANIFEST) and backup in names and matches(backup)

    return sorted((e for e in entries if not known(e)), key=lambda e: e.modified)


def _stamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _tree(root: Path, skip: set[str]) -> tuple[int, float]:
    """Total size and newest mtime under ``root`` (its own mtime included), declared directories left out."""
    size, newest = 0, root.stat().st_mtime
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(top, d) not in skip]
        for name in files:
            try:
                info = os.lstat(os.path.join(top, name))
            except FileNotFoundError:
                continue
            size, newest = size + info.st_size, max(newest, info.st_mtime)
    return size, newest


def _local(directory: BackupDirectory) -> DirectoryListing:
    root = Path(directory.path)
    skip = set(directory.nested)
    entries = []
    try:
        with os.scandir(root) as found:
            for item in found:
                if item.path in skip:
                    continue
                try:
                    if item.is_dir():
                        size, newest = _tree(Path(item.path), skip)
                        entries.append(Entry(item.name, size, _stamp(newest), is_dir=True))
                    else:
                        info = item.stat()
                        entries.append(Entry(item.name, info.st_size, _stamp(info.st_mtime)))
                except FileNotFoundError:  # removed by a cleanup meanwhile, or a dangling link
                    continue
    except OSError as exc:
        return DirectoryListing(directory.name, error=f"cannot read {root}: {exc.strerror or exc}")
    return DirectoryListing(directory.name, tuple(entries))


def _remote(directory: BackupDirectory, host: Host, timeouts: Timeouts) -> DirectoryListing:
    """``find -printf`` of every entry on ``host`` (declared directories pruned), folded into top-level entries."""
    from opsverify.probes.host import connect

    command, args = "find %s -mindepth 1", [directory.path]
    if directory.nested:
        command += " \\( " + " -o ".join("-path %s" for _ in directory.nested) + " \\) -prune -o"
        args += list(directory.nested)
    command += " -printf %s"
    args.append("%T@\\t%s\\t%y\\t%P\\n")
    try:
        result = connect(host, timeouts.connect).run(command, *args)
    except Exception as exc:  # noqa: BLE001 - any backend failure (ssh refused, timeout) is a fact
        return DirectoryListing(directory.name, error=f"cannot reach {host.uri}: {str(exc).splitlines()[0]}")
    if result.rc != 0:
        detail = (result.stderr.strip() or f"find exited {result.rc}").splitlines()[-1]
        return DirectoryListing(directory.name, error=f"cannot list {directory.name}: {detail}")
    top: dict[str, list[float]] = {}  # name -> [size, newest, is_dir]
    for line in result.stdout.splitlines():
        stamp, size, kind, relative = line.split("\t", 3)
        name, _, deeper = relative.partition("/")
        entry = top.setdefault(name, [0.0, 0.0, 0.0])
        entry[1] = max(entry[1], float(stamp))
        if kind == "d" and not deeper:
            entry[2] = 1.0
        elif kind != "d":
            entry[0] += int(size)
    entries = (Entry(n, int(v[0]), _stamp(v[1]), bool(v[2])) for n, v in top.items())
    return DirectoryListing(directory.name, tuple(entries))


def _s3(directory: BackupDirectory, timeouts: Timeouts) -> DirectoryListing:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3 = client(directory.sources[0].s3, timeouts.connect, timeouts.request)
        objects = list(list_objects(s3, directory.path))
    except (BotoCoreError, ClientError) as exc:
        error = f"cannot list {directory.path}: {describe_error(exc, timeouts)}"
        return DirectoryListing(directory.name, error=error, unreachable=unreachable(exc, timeouts))
    entries = (Entry(o.key.rsplit("/", 1)[-1], o.size, o.modified) for o in objects)
    return DirectoryListing(directory.name, tuple(e for e in entries if e.name))


def list_directory(directory: BackupDirectory, timeouts: Timeouts, host: Host | None = None) -> DirectoryListing:
    """Every entry of the directory: local, on an ssh:// host (through testinfra) or an S3 prefix."""
    if directory.path.startswith("s3://"):
        return _s3(directory, timeouts)
    if host is not None and not host.uri.startswith("local://"):
        return _remote(directory, host, timeouts)
    return _local(directory)


def human_size(size: int) -> str:
    """``314572800`` -> ``300.0 MiB``; below a KiB, ``512 bytes``."""
    value, unit = float(size), "bytes"
    for next_unit in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, next_unit
    return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
