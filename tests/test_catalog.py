"""The backup catalog and offsite hashing on their own: names to times, listing, ETags from a real S3."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from opsverify.backups.catalog import list_backups, taken_at
from opsverify.backups.s3 import etag_of, split_url
from opsverify.profile.model import BackupSource, Timeouts

MTIME = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "expected", "origin"),
    [
        ("backup_20261127_010203.sql.gz", datetime(2026, 11, 27, 1, 2, 3), "name"),
        ("results_20261127T101010Z.tar.gz", datetime(2026, 11, 27, 10, 10, 10, tzinfo=UTC), "name"),
        ("backup_20261120.dump", datetime(2026, 11, 20), "name"),
        ("backup_20261127.dump", MTIME, "mtime"),
        ("qp_2026-11-27.sql.gz", MTIME, "mtime"),
        ("dump.rdb.1", MTIME, "mtime"),
        ("backup_20261127_230000.sql.gz", MTIME, "mtime"),  # 3h after its mtime: another time zone
        ("backup_20261399.dump", MTIME, "mtime"),
    ],
)
def test_backup_time_comes_from_the_name_else_the_mtime(name: str, expected: datetime, origin: str) -> None:
    when, source = taken_at(name, MTIME)
    assert source == origin
    assert when == (expected if expected.tzinfo else expected.astimezone())


def test_local_listing_filters_sorts_and_skips_partial_files(tmp_path: Path) -> None:
    for day in (25, 27, 26):
        path = tmp_path / f"backup_202611{day}_020000.sql.gz"
        path.write_bytes(b"x" * day)
    (tmp_path / "backup_20261128_020000.sql.gz.part").write_bytes(b"in progress")
    (tmp_path / "other.txt").write_text("not a backup")
    source = BackupSource(name="s", kind="postgres", path=str(tmp_path), pattern="backup_*.sql.gz*")
    catalog = list_backups(source, Timeouts())
    assert catalog.error is None
    assert [f.size for f in catalog.files] == [27, 26, 25]
    assert catalog.newest is not None
    assert catalog.newest.mode == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_missing_directory_is_an_error_not_an_empty_list(tmp_path: Path) -> None:
    source = BackupSource(name="s", kind="postgres", path=str(tmp_path / "absent"))
    catalog = list_backups(source, Timeouts())
    assert catalog.error == f"{tmp_path / 'absent'} does not exist"
    assert catalog.files == []


def test_split_url() -> None:
    assert split_url("s3://bucket/a/b") == ("bucket", "a/b/")
    assert split_url("s3://bucket") == ("bucket", "")


def test_etag_matches_what_a_real_s3_computes_single_and_multipart(sandbox_profile: Path, tmp_path: Path) -> None:
    import boto3
    from boto3.s3.transfer import TransferConfig

    offsite = next(s["offsite"] for s in yaml.safe_load(sandbox_profile.read_text())["backups"] if s.get("offsite"))
    s3 = boto3.client("s3", endpoint_url=offsite["endpoint_url"], region_name=offsite["region"],
                      aws_access_key_id=offsite["access_key_id"],
                      aws_secret_access_key=Path(offsite["secret_access_key_file"]).read_text().strip())
    bucket = f"opsverify-etag-{os.getpid()}-{tmp_path.name[-12:].lower().replace('_', '-')}"
    s3.create_bucket(Bucket=bucket)
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(os.urandom(1000))
    big.write_bytes(os.urandom(20 * 1024 * 1024))
    chunk = 8 * 1024 * 1024
    config = TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk)
    try:
        for path in (small, big):
            s3.upload_file(str(path), bucket, path.name, Config=config)
        etags = {o["Key"]: o["ETag"].strip('"') for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
        assert etags["small.bin"] == etag_of(small)
        assert etags["big.bin"].endswith("-3")
        assert etags["big.bin"] == etag_of(big, parts=3)
    finally:
        for key in ("small.bin", "big.bin"):
            s3.delete_object(Bucket=bucket, Key=key)
        s3.delete_bucket(Bucket=bucket)


def test_catalog_ages_use_the_reference_time(tmp_path: Path) -> None:
    path = tmp_path / "backup_20261127_190000.sql.gz"
    path.write_bytes(b"x")
    catalog = list_backups(BackupSource(name="s", kind="postgres", path=str(tmp_path)), Timeouts())
    newest = catalog.files[0]
    assert newest.age(newest.taken + timedelta(hours=2)) == timedelta(hours=2)
