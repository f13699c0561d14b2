"""Backups are intact: every byte reads back, trailers and checksums match, dumps are complete.

Runbook, by the source's kind: PF-10 every backup kind intact; PostgreSQL dumps PF-04 ``gunzip -t``,
PF-16 integrity of each file, PF-17 plain/custom/single-table dumps, QP-19 ``pg_restore --list``;
Redis PF-21 RDB magic/version/CRC64; config exports PF-23/QP-20; model and results archives
PF-24/QP-21. Secret exports not world-readable: PF-23/QP-20.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from fixtures.backups import CatalogOf, VerdictOf, listed
from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.profile import BackupSource

pytestmark = [pytest.mark.backup]
INTACT = {  # runbook IDs by the source's kind
    "postgres": ("PF-04", "PF-10", "PF-16", "PF-17", "QP-19"),
    "redis": ("PF-10", "PF-21"),
    "config": ("PF-10", "PF-23", "QP-20"),
    "archive": ("PF-10", "PF-24", "QP-21"),
}


@pytest.mark.daily
@pytest.mark.runbook(by_kind=INTACT)
def test_recent_backup_is_intact(
    nth_backup: tuple[BackupSource, int], catalog_of: CatalogOf, verdict_of: VerdictOf, evidence: Recorder
) -> None:
    """PF-04/QP-19 (INTACT by kind): the n-th newest backup (n < ``max_verify``) passes its format's full check."""
    source, n = nth_backup
    files = listed(source, catalog_of).files
    if n >= len(files):
        pytest.skip(f"{source.name} has {len(files)} backup(s): nothing to verify at position {n + 1}")
    backup = files[n]
    verdict = verdict_of(source, backup)
    evidence.record(backup=backup.location, format=verdict.format, detail=verdict.detail, **verdict.facts)
    expect(verdict.ok, f"backup {backup.name} of {source.name} is not intact: {verdict.detail} ({backup.location})")


@pytest.mark.monthly
@pytest.mark.runbook(by_kind=INTACT)
def test_every_backup_in_retention_is_intact(
    backup_source: BackupSource, catalog_of: CatalogOf, verdict_of: VerdictOf, now: datetime, evidence: Recorder
) -> None:
    """PF-10 (INTACT by kind): every backup inside the retention window passes its format's full verification."""
    files = listed(backup_source, catalog_of).within(backup_source.retention, now)
    broken = [(f, verdict_of(backup_source, f)) for f in files]
    broken = [(f, v) for f, v in broken if not v.ok]
    evidence.record(verified=len(files), broken=len(broken))
    if broken:
        first, verdict = broken[0]
        fail(f"{len(broken)} of {len(files)} backups of {backup_source.name} are not intact, first {first.name}: "
             f"{verdict.detail}")


@pytest.mark.daily
@pytest.mark.security
@pytest.mark.runbook("PF-23", "QP-20")
def test_secret_exports_are_private(
    config_backup_source: BackupSource, catalog_of: CatalogOf, verdict_of: VerdictOf, evidence: Recorder
) -> None:
    """PF-23/QP-20: exports that hold Secrets (``kubectl get secrets -o yaml``) are readable by their owner only."""
    files = [f for f in listed(config_backup_source, catalog_of).files if f.mode is not None]  # S3 has no modes
    holding = [f for f in files if verdict_of(config_backup_source, f).facts.get("holds_secrets") == "yes"]
    exposed = [f for f in holding if f.readable_by_others]
    evidence.record(secret_exports=len(holding), readable_by_others=len(exposed))
    if exposed:
        first = exposed[0]
        fail(f"{len(exposed)} secret export(s) of {config_backup_source.name} are readable by group or others, "
             f"first {first.location} (mode {oct(first.mode or 0)}): chmod 600 them")
