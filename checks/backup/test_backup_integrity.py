"""Backups are intact: every byte reads back, trailers and checksums match, dumps are complete.

Runbook, by the source's kind: PF-10 every backup kind intact; PostgreSQL dumps PF-04 ``gunzip -t``,
PF-16 integrity of each file, PF-17 plain/custom/single-table dumps, QP-19 ``pg_restore --list``;
Redis PF-21 RDB magic/version/CRC64; config exports PF-23/QP-20; model and results archives
PF-24/QP-21; roles and grants (``pg_dumpall --globals-only``) PF-10. Backups holding secrets
(Secret exports, ``.env`` tars of any kind, globals files) not readable by others, locally or in S3:
PF-23/QP-20 for config sources (no procedure names the others' privacy). The
globals backup creates every role the live database needs: PF-10
(a full system backup a recovery onto a new cluster can use).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from fixtures.backups import CatalogOf, ExposureOf, VerdictOf, listed, none_taken
from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from opsverify.backups.roles import DatabaseRoles
from opsverify.backups.verdict import Verdict, listing
from opsverify.profile import BackupSource, Database, Profile

pytestmark = [pytest.mark.backup]
INTACT = {  # runbook IDs by the source's kind
    "postgres": ("PF-04", "PF-10", "PF-16", "PF-17", "QP-19"),
    "redis": ("PF-10", "PF-21"),
    "config": ("PF-10", "PF-23", "QP-20"),
    "archive": ("PF-10", "PF-24", "QP-21"),
    "globals": ("PF-10",),
}


@pytest.mark.daily
@pytest.mark.runbook(by_kind=INTACT)
def test_recent_backup_is_intact(
    nth_backup: tuple[BackupSource, int], catalog_of: CatalogOf, verdict_of: VerdictOf, evidence: Recorder
) -> None:
    """PF-04/QP-19 (INTACT by kind): the n-th newest backup (n < ``max_verify``) passes its format's full check."""
    source, n = nth_backup
    files = listed(source, catalog_of).files
    if none_taken(source, listed(source, catalog_of), evidence):
        return
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


SECRETS = {"postgres": (), "redis": (), "config": ("PF-23", "QP-20"), "archive": (), "globals": ()}
TOLD = ("config", "archive")  # kinds whose verifiers read every member: an unread backup is not cleared


def holds_secrets(source: BackupSource, verdict: Verdict) -> bool:
    """A globals file always does (role password hashes); any other backup does when its verdict says so."""
    return source.kind == "globals" or verdict.facts.get("holds_secrets") == "yes"


@pytest.mark.daily
@pytest.mark.security
@pytest.mark.runbook(by_kind=SECRETS)
def test_backups_holding_secrets_are_private(
    backup_source: BackupSource, catalog_of: CatalogOf, verdict_of: VerdictOf, exposure_of: ExposureOf,
    evidence: Recorder,
) -> None:
    """PF-23/QP-20 (config sources): every backup that holds secrets (a Kubernetes Secret export, a tar with an
    ``.env`` member, whatever the source's kind; every ``pg_dumpall --globals-only`` file, which holds role
    password hashes) is readable by its owner only: no group/other bits on a file, and no anonymous read of
    an S3 copy.

    A config or archive backup that cannot be read through cannot be cleared: it fails as "cannot tell"."""
    source = backup_source
    files = listed(source, catalog_of).files
    verdicts = [(f, verdict_of(source, f)) for f in files]
    unknown = [(f, v) for f, v in verdicts if source.kind in TOLD and "holds_secrets" not in v.facts]
    if unknown:
        first, verdict = unknown[0]
        fail(f"cannot tell whether {len(unknown)} backup(s) of {source.name} hold secrets, first {first.name}: "
             f"{verdict.detail} ({first.location})")
    holding = [f for f, v in verdicts if holds_secrets(source, v)]
    exposed = [f for f in holding if f.readable_by_others]
    copies = [(source.s3, f.location) for f in holding if f.location.startswith("s3://")]
    if source.offsite is not None:
        copies += [(source.offsite, f"{source.offsite.url.rstrip('/')}/{f.name}") for f in holding if f.is_local]
    looked = [exposure_of(access, url) for access, url in copies]
    evidence.record(secret_exports=len(holding), readable_by_others=len(exposed))
    evidence.record(s3_copies=sum(e.exists for e in looked))
    if exposed:
        first = exposed[0]
        fail(f"{len(exposed)} backup(s) of {source.name} holding secrets are readable by group or others, "
             f"first {first.location} (mode {oct(first.mode or 0)}): chmod 600 them")
    unclear = [e for e in looked if e.error is not None]
    if unclear:
        fail(f"cannot tell whether the S3 copy {unclear[0].url} of {source.name}'s secrets is public: "
             f"{unclear[0].error}")
    public = [e for e in looked if e.public is not None]
    if public:
        fail(f"{len(public)} S3 copies of secret-holding backups of {source.name} are publicly readable, first "
             f"{public[0].url}: {public[0].public}: make them private")


@pytest.mark.daily
@pytest.mark.runbook("PF-10")
def test_globals_backup_creates_every_role_the_database_needs(
    globals_backup_source: BackupSource, profile: Profile, catalog_of: CatalogOf, verdict_of: VerdictOf,
    roles_of: Callable[[Database], DatabaseRoles], evidence: Recorder,
) -> None:
    """PF-10: the newest ``pg_dumpall --globals-only`` file has a ``CREATE ROLE`` for every owner and grantee
    of the declared live database: a dump restored onto a new cluster names them in ``OWNER TO`` and ``GRANT``."""
    source = globals_backup_source
    if source.database is None:
        fail(f"globals backup {source.name} names no database: add `database:` with the profile database whose "
             "roles it must create")
    catalog = listed(source, catalog_of)
    if none_taken(source, catalog, evidence):
        return
    newest = catalog.files[0]
    verdict = verdict_of(source, newest)
    expect(verdict.ok, f"newest globals backup of {source.name} is not intact: {verdict.detail} ({newest.location})")
    database = profile.database(source.database)
    live = roles_of(database)
    expect(live.error is None, f"cannot read the roles of database {database.name} ({live.address}): {live.error}")
    created = set(filter(None, verdict.facts.get("roles", "").split(",")))
    missing = sorted(set(live.roles) - created)
    evidence.record(newest=newest.location, database=database.name, roles_needed=",".join(sorted(live.roles)))
    evidence.record(roles_created=len(created), roles_missing=",".join(missing))
    if missing:
        fail(f"newest globals backup of {source.name} has no CREATE ROLE for {len(missing)} role(s) that own "
             f"objects in or hold grants on database {database.name}: {listing(missing)}; a restore onto a new "
             f"cluster would lock them out: include them in the pg_dumpall --globals-only job ({newest.location})")
