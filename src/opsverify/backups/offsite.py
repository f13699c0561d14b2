"""Offsite parity (QP-18, QP-21): each recent local backup has an S3 copy of equal size and hash.

The hash compared is S3's ETag: the MD5 of a single-part upload, or the MD5 of the parts' MD5s
for a multipart one (``-N`` suffix; parts of 8 MiB as ``aws s3 cp`` and boto3 upload them).
Each copy's storage class is kept too: a copy in GLACIER or DEEP_ARCHIVE exists, but a restore
from it waits hours for S3 to thaw it first.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from opsverify.backups.catalog import BackupFile
from opsverify.backups.s3 import (
    COLD_CLASSES,
    MULTIPART_CHUNK,
    S3Object,
    client,
    describe_error,
    etag_of,
    list_objects,
    unreachable,
)
from opsverify.profile.model import Offsite, Timeouts


@dataclass(frozen=True)
class CopyCheck:
    """One local backup and what its offsite copy looks like."""

    name: str
    local_size: int
    remote_size: int | None = None
    problem: str | None = None
    storage_class: str | None = None  # of the offsite copy, when there is one

    @property
    def is_cold(self) -> bool:
        return self.storage_class in COLD_CLASSES


@dataclass(frozen=True)
class OffsiteParity:
    """The recent local backups compared with the offsite prefix, or why it could not be listed."""

    url: str
    copies: list[CopyCheck] = field(default_factory=list)
    error: str | None = None
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage

    @property
    def problems(self) -> list[CopyCheck]:
        return [c for c in self.copies if c.problem is not None]

    @property
    def cold(self) -> list[CopyCheck]:
        """Copies in GLACIER or DEEP_ARCHIVE: a restore from them takes hours."""
        return [c for c in self.copies if c.is_cold]


def _compare(local: BackupFile, remote: S3Object | None) -> CopyCheck:
    check = _equal(local, remote)
    return replace(check, storage_class=remote.storage_class) if remote is not None else check


def _equal(local: BackupFile, remote: S3Object | None) -> CopyCheck:
    if remote is None:
        return CopyCheck(local.name, local.size, problem="no offsite copy")
    if remote.size != local.size:
        problem = f"offsite copy is {remote.size} bytes, local {local.size}"
        return CopyCheck(local.name, local.size, remote.size, problem)
    parts = int(remote.etag.rsplit("-", 1)[1]) if "-" in remote.etag else 1
    if parts > 1 and parts != -(-local.size // MULTIPART_CHUNK):
        return CopyCheck(local.name, local.size, remote.size, f"cannot compare hashes: ETag of {parts} odd-sized parts")
    if etag_of(Path(local.location), parts) != remote.etag:
        return CopyCheck(local.name, local.size, remote.size, "offsite copy has a different hash (ETag)")
    return CopyCheck(local.name, local.size, remote.size)


def offsite_parity(files: list[BackupFile], offsite: Offsite, timeouts: Timeouts, now: datetime) -> OffsiteParity:
    """Compare every local backup younger than ``offsite.recent`` with its copy under ``offsite.url``."""
    from botocore.exceptions import BotoCoreError, ClientError

    recent = [f for f in files if f.is_local and f.age(now) <= offsite.recent]
    try:
        s3 = client(offsite, timeouts.connect, timeouts.request)
        remote = {o.key.rsplit("/", 1)[-1]: o for o in list_objects(s3, offsite.url)}
    except (BotoCoreError, ClientError) as exc:
        error = f"cannot list {offsite.url}: {describe_error(exc, timeouts)}"
        return OffsiteParity(offsite.url, error=error, unreachable=unreachable(exc, timeouts))
    return OffsiteParity(offsite.url, [_compare(f, remote.get(f.name)) for f in recent])
