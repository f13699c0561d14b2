"""S3 access for backup sources and offsite copies: a boto3 client with timeouts, listing, hashing.

boto3 is imported only here and only when a profile names an S3 location.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from opsverify.probes.outage import connect_timed_out, connection_failure, request_timed_out
from opsverify.profile.model import S3Access, Timeouts
from opsverify.redact import redact_urls

S3Client = Any  # botocore builds the client class at run time

MULTIPART_CHUNK = 8 * 1024 * 1024  # the part size of `aws s3 cp` and boto3's upload_file
COLD_CLASSES = ("GLACIER", "DEEP_ARCHIVE")  # objects that must be restored (hours) before they can be read


@dataclass(frozen=True)
class S3Object:
    """One object under a prefix."""

    key: str
    size: int
    modified: datetime
    etag: str
    storage_class: str = "STANDARD"

    @property
    def is_cold(self) -> bool:
        """In GLACIER or DEEP_ARCHIVE: a ``restore-object`` request of hours comes before any download."""
        return self.storage_class in COLD_CLASSES


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b/")`` (a non-empty prefix always ends with ``/``)."""
    parts = urlsplit(url)
    prefix = parts.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return parts.netloc, prefix


def client(access: S3Access | None, connect: timedelta, read: timedelta, *, anonymous: bool = False) -> S3Client:
    """A boto3 S3 client that gives up after ``connect``/``read``, in one attempt (no retries).

    ``anonymous``: requests go unsigned, as anyone on the internet would send them (no credentials)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    access = access or S3Access.model_validate({})
    config = Config(
        connect_timeout=connect.total_seconds(),
        read_timeout=read.total_seconds(),
        retries={"total_max_attempts": 1, "mode": "standard"},  # max_attempts counts retries: 1 would be two tries
        s3={"addressing_style": "path"},
        **({"signature_version": UNSIGNED} if anonymous else {}),
    )
    if anonymous:
        return boto3.client("s3", endpoint_url=access.endpoint_url, region_name=access.region, config=config)
    return boto3.client(
        "s3",
        endpoint_url=access.endpoint_url,
        region_name=access.region,
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret(),
        config=config,
    )


def list_objects(s3: S3Client, url: str) -> Iterator[S3Object]:
    """Every object directly under the URL's prefix (not in deeper "folders")."""
    bucket, prefix = split_url(url)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for item in page.get("Contents", []):
            etag, storage_class = str(item["ETag"]).strip('"'), str(item.get("StorageClass") or "STANDARD")
            yield S3Object(item["Key"], int(item["Size"]), item["LastModified"], etag, storage_class)


def endpoint_url(access: S3Access | None) -> str:
    """The URL the client talks to: the profile's endpoint, else AWS's for the region."""
    access = access or S3Access.model_validate({})
    return access.endpoint_url or f"https://s3.{access.region}.amazonaws.com"


def unreachable(exc: BaseException, timeouts: Timeouts | None = None) -> str | None:
    """The connection-level cause of a failed S3 call (refused, timed out, …), else None."""
    from botocore.exceptions import ConnectTimeoutError

    if isinstance(exc, ConnectTimeoutError):
        return connection_failure(exc, connect_timed_out(timeouts.connect if timeouts else None))
    return connection_failure(exc, request_timed_out(timeouts.request if timeouts else None))


def describe_error(exc: BaseException, timeouts: Timeouts | None = None) -> str:
    """One phrase for a botocore/boto3 failure (no credentials or request ids, URLs redacted); a timeout names its
    value."""
    cause = unreachable(exc, timeouts)
    if cause is not None:
        return cause
    response = getattr(exc, "response", None)  # None on a transport error
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    if code:
        return f"S3 error {code}"
    return redact_urls(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__  # its endpoint URL


def etag_of(path: Path, parts: int = 1, chunk: int = 1 << 20) -> str:
    """The ETag S3 gives ``path`` uploaded in ``parts`` parts of ``MULTIPART_CHUNK`` (streamed MD5s)."""
    whole = hashlib.md5(usedforsecurity=False)
    part_digests: list[bytes] = []
    part = hashlib.md5(usedforsecurity=False)
    in_part = 0
    with path.open("rb") as source:
        while block := source.read(chunk):
            whole.update(block)
            part.update(block)
            in_part += len(block)
            if in_part >= MULTIPART_CHUNK:
                part_digests.append(part.digest())
                part, in_part = hashlib.md5(usedforsecurity=False), 0
    if parts <= 1:
        return whole.hexdigest()
    if in_part:
        part_digests.append(part.digest())
    return f"{hashlib.md5(b''.join(part_digests), usedforsecurity=False).hexdigest()}-{len(part_digests)}"


PUBLIC_GROUPS = {
    "http://acs.amazonaws.com/groups/global/AllUsers": "AllUsers",
    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers": "AuthenticatedUsers",
}
READING = ("READ", "FULL_CONTROL")
MISSING = ("NoSuchKey", "404")
DENIED = ("AccessDenied", "403", "401", "Unauthorized")
READ_EMPTY = ("InvalidRange", "416")  # a zero-byte object answers a ranged GET so, after authorising it


@dataclass(frozen=True)
class Exposure:
    """Whether one object can be read by anyone (how), or why that is unknown."""

    url: str
    public: str | None = None
    error: str | None = None
    exists: bool = True
    unreachable: str | None = None  # the connection-level cause (refused, timed out, …): an outage


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _why_public(s3: S3Client, bucket: str, key: str) -> str | None:
    """The ACL grant or bucket policy that makes the object public, where the credentials may read them.

    Detail only: providers without GetObjectAcl/GetBucketPolicyStatus, and read-only credentials, answer
    errors here, which leave the reason unnamed."""
    from botocore.exceptions import ClientError

    try:
        for grant in s3.get_object_acl(Bucket=bucket, Key=key).get("Grants", []):
            group = PUBLIC_GROUPS.get(str(grant.get("Grantee", {}).get("URI", "")))
            if group is not None and grant.get("Permission") in READING:
                return f"its ACL grants {grant['Permission']} to {group}"
    except ClientError:
        pass
    try:
        if s3.get_bucket_policy_status(Bucket=bucket).get("PolicyStatus", {}).get("IsPublic"):
            return f"the policy of bucket {bucket} is public"
    except ClientError:
        pass
    return None


def exposure(access: S3Access | None, url: str, timeouts: Timeouts) -> Exposure:
    """Can anyone read the object at ``s3://bucket/key``: does an unsigned (anonymous) GET of its first byte
    succeed? 200/206 = public, 401/403 = private. That is the definitive test whatever grants it (ACL, bucket
    policy, access point); the credentials' HEAD only tells whether the object exists."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_url(url)
    key = key.rstrip("/")
    try:
        s3 = client(access, timeouts.connect, timeouts.request)
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in MISSING:
                return Exposure(url, exists=False)  # else (no HEAD allowed to these credentials) ask anonymously
        anonymous = client(access, timeouts.connect, timeouts.request, anonymous=True)
        try:
            anonymous.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].close()
        except ClientError as exc:
            code = _code(exc)
            if code in DENIED:
                return Exposure(url)
            if code in MISSING:
                return Exposure(url, exists=False)
            if code not in READ_EMPTY:
                return Exposure(url, error=f"an unsigned GET answered {describe_error(exc, timeouts)}")
        why = _why_public(s3, bucket, key)
        return Exposure(url, public="an unsigned (anonymous) GET reads it" + (f" ({why})" if why else ""))
    except (BotoCoreError, ClientError) as exc:
        return Exposure(url, error=describe_error(exc, timeouts), unreachable=unreachable(exc, timeouts))
