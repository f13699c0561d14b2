"""Verify a backup that is not on this machine: copy it into a private scratch directory, verify
the copy, delete the directory (an S3 object through boto3, streamed; a file on an ssh:// host
through ``ssh cat``). The directory carries a creator note, so a run killed mid-download leaves
nothing the next run's janitor does not remove.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

from opsverify.backups.catalog import BackupFile
from opsverify.backups.remote import FetchError, fetch
from opsverify.backups.verdict import Expectations, Verdict
from opsverify.localserver.scratch import SCRATCH_PREFIX, make_scratch_dir
from opsverify.profile import BackupSource, Host, Timeouts


def verify_copy(
    source: BackupSource, backup: BackupFile, expect: Expectations, timeouts: Timeouts, host: Host | None
) -> Verdict:
    """The verdict on a local copy of ``backup``; the copy is gone when this returns."""
    from opsverify.backups.formats import verify_backup

    directory = Path(tempfile.gettempdir()) / f"{SCRATCH_PREFIX}fetch_{os.getpid()}_{secrets.token_hex(4)}"
    make_scratch_dir(directory, kind="scratch download")
    try:
        local = directory / backup.name
        try:
            download(source, backup, timeouts, host, local)
        except FetchError as err:
            return Verdict(backup.location, "unknown", False, str(err))
        verdict = verify_backup(local, expect)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return Verdict(backup.location, verdict.format, verdict.ok, verdict.detail, verdict.facts)


def download(source: BackupSource, backup: BackupFile, timeouts: Timeouts, host: Host | None, target: Path) -> None:
    """Copy an S3 object (boto3, streamed) or a file on an ssh:// host (``ssh cat``) to ``target``."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    from opsverify.backups.s3 import client, describe_error, split_url

    if backup.host is not None:
        if host is None:
            raise FetchError(f"host {backup.host} is not declared in the profile")
        fetch(host, backup.path, target, timeouts.connect, max(timeouts.request * 60, timedelta(minutes=30)))
        return
    bucket, prefix = split_url(source.path)
    try:
        client(source.s3, timeouts.connect, timeouts.request).download_file(bucket, prefix + backup.name, str(target))
    except (BotoCoreError, ClientError, Boto3Error) as exc:
        raise FetchError(f"cannot download it: {describe_error(exc, timeouts)}") from None
