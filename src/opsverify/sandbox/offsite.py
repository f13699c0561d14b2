"""The sandbox's offsite copies: the S3 upload step of the backup jobs (QP-18 ``aws s3 cp``, QP-21 sync).

The S3 server (moto) keeps objects in memory, so every start of it uploads the copies again.
"""

from __future__ import annotations

import fnmatch
from datetime import timedelta

from opsverify.backups.s3 import client, split_url
from opsverify.errors import SandboxError
from opsverify.profile.model import S3Access
from opsverify.sandbox.backups import SERIES
from opsverify.sandbox.state import Layout, ensure_secret

ACCESS_KEY_ID = "opsverify-sandbox"
RECENT = timedelta(days=7)


def s3_access(layout: Layout, port: int) -> S3Access:
    """How the sandbox's profile and jobs reach its S3 server."""
    ensure_secret(layout, "s3")
    return S3Access(
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key_id=ACCESS_KEY_ID,
        secret_access_key_file=layout.secret_file("s3").resolve(),
    )


def sync_offsite(layout: Layout, port: int, now: float) -> int:
    """Create the buckets and upload every series' backups of the last 7 days; the number uploaded."""
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = client(s3_access(layout, port), timedelta(seconds=5), timedelta(seconds=30))
    uploaded = 0
    try:
        for bucket in sorted({split_url(s.offsite)[0] for s in SERIES if s.offsite}):
            s3.create_bucket(Bucket=bucket)
        for series in (s for s in SERIES if s.offsite):
            bucket, prefix = split_url(series.offsite or "")
            for path in sorted((layout.backups / series.subdir).iterdir()):
                recent = now - path.stat().st_mtime <= RECENT.total_seconds()
                if recent and fnmatch.fnmatch(path.name, series.pattern):
                    s3.upload_file(str(path), bucket, prefix + path.name)
                    uploaded += 1
    except (BotoCoreError, ClientError) as exc:
        raise SandboxError(f"uploading the offsite copies to the sandbox S3 failed ({exc}): see logs/s3.log") from None
    return uploaded



