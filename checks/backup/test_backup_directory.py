"""Backup-directory hygiene: nothing old lies in a backup directory that no backup source declares.

A manual ``pg_dump > backup_20251020.sql`` left beside the series, a renamed copy, a half-finished
job's output: no source's pattern matches it, so no other check sees it, and the runbooks' cleanups
(``find -name "backup_*.sql.gz" -mtime +30 -delete``) never delete it. No runbook procedure asks for
this (their cleanups delete by pattern, so a file matching none is outside every procedure): the
check carries no runbook ID.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from fixtures.backups import ListingOf
from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.backups.directory import BackupDirectory, human_size, strays
from opsverify.durations import format_duration as fmt

pytestmark = [pytest.mark.backup, pytest.mark.daily]


def age(value: timedelta) -> str:
    """An age in its largest whole unit (``40d``, ``5h``, ``12m``, ``30s``): stable while a run lasts."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def test_backup_directory_holds_no_old_stray(
    backup_directory: BackupDirectory, directory_listing_of: ListingOf, now: datetime, evidence: Recorder
) -> None:
    """Every entry of the directory matches a source's pattern, or is a known backup's manifest
    (``<backup>.manifest.json``) or a ``<backup>.part`` being written (one older than ``stray_max_age`` is a killed
    job's leftover: a stray); any other (a stray) is recorded with its
    size and age, and fails once older than ``stray_max_age`` (default 7d; a directory shared by several
    sources takes the smallest of theirs). Declared directories of other kinds inside it (another source's
    path, a database's ``wal_archive`` or ``base_backups``, the ``scratch_dir``) are left out; any other
    subdirectory is one entry. The directory's total size is recorded."""
    listing = directory_listing_of(backup_directory)
    expect(listing.error is None, f"cannot list backup directory {backup_directory.name}: {listing.error}")
    limit = backup_directory.stray_max_age
    found = strays(listing.entries, backup_directory.patterns, now, limit)
    evidence.record(total_bytes=listing.total_size, entries=len(listing.entries), stray_max_age=fmt(limit))
    evidence.record(strays="; ".join(f"{e.shown} ({human_size(e.size)}, {age(e.age(now))} old)" for e in found))
    old = [e for e in found if e.age(now) > limit]
    if old:
        oldest = old[0]
        fail(f"backup directory {backup_directory.name} holds {len(old)} file(s) no backup source's pattern matches "
             f"older than stray_max_age {fmt(limit)}; the oldest, {oldest.shown}, is {human_size(oldest.size)} and "
             f"{age(oldest.age(now))} old: declare a backup source whose pattern matches it, or delete it")
