"""checks/backup against the real test sandbox: healthy passes; each fault on a copy fails its check.

Faults are made on copies of the sandbox's real backups (made by pg_dump, BGSAVE, tar, …): a
truncated or bit-flipped file, a dump without its completion marker, an aged series, a missing
day, a stale file past retention, a missing or different offsite object in the sandbox's S3.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

Run = Callable[..., Any]
Variant = Callable[..., Path]
Mutation = Callable[[dict[str, Any]], None]
DAY = 86400
INTEGRITY = "backup/test_backup_integrity.py"
RECENT = "backup/test_backup_integrity.py::test_recent_backup_is_intact"


@dataclass
class SeriesCopy:
    """A copy of one sandbox backup series in a directory of the test's own."""

    source: dict[str, Any]
    directory: Path

    @property
    def name(self) -> str:
        return str(self.source["name"])

    @property
    def files(self) -> list[Path]:
        """Newest first (by mtime, which the sandbox sets to the time each stands for)."""
        found = [p for p in self.directory.iterdir() if p.is_file()]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    def only(self, **overrides: Any) -> Mutation:
        """A profile mutation: this copy is the profile's only backup source."""

        def mutate(data: dict[str, Any]) -> None:
            data["backups"] = [{**self.source, "path": str(self.directory), **overrides}]

        return mutate


@pytest.fixture
def series(sandbox_profile: Path, tmp_path: Path) -> Callable[[str], SeriesCopy]:
    """``series("pf-postgres-daily")``: copy that series (mtimes kept) into tmp_path."""

    def copy(name: str) -> SeriesCopy:
        sources = yaml.safe_load(sandbox_profile.read_text())["backups"]
        source = next(s for s in sources if s["name"] == name)
        target = tmp_path / name
        target.mkdir()
        for path in Path(source["path"]).glob(source["pattern"]):
            shutil.copy2(path, target / path.name)
        return SeriesCopy(source, target)

    return copy


def keep_mtime(path: Path, change: Callable[[Path], None]) -> None:
    """Change a file's content but not its mtime (the fault must not look like a new backup)."""
    stat = path.stat()
    change(path)
    os.utime(path, (stat.st_atime, stat.st_mtime))


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate_by(count: int) -> Callable[[Path], None]:
    def cut(path: Path) -> None:
        with path.open("r+b") as out:
            out.truncate(path.stat().st_size - count)

    return cut


def age_by(path: Path, seconds: float) -> None:
    stat = path.stat()
    os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


def expected_backup_checks(profile: Any) -> set[str]:
    """Every check of checks/backup that must pass on the healthy sandbox, computed from its profile."""
    scheduled = (
        "test_backup_freshness.py::test_newest_backup_is_younger_than_rpo",
        "test_backup_freshness.py::test_backups_follow_their_schedule",
    )
    expected = {f"{check}[{s.name}]" for check in scheduled for s in profile.backups if not s.on_demand}
    per_source = (
        "test_backup_integrity.py::test_every_backup_in_retention_is_intact",
        "test_backup_retention.py::test_nothing_older_than_retention_remains",
        "test_backup_size.py::test_newest_backup_is_not_empty",
        "test_backup_size.py::test_newest_backup_has_not_shrunk",
    )
    expected |= {f"{check}[{s.name}]" for check in per_source for s in profile.backups}
    expected |= {
        f"test_backup_integrity.py::test_recent_backup_is_intact[{s.name}#{n + 1}]"
        for s in profile.backups for n in range(s.max_verify)
    }
    secrets = "test_backup_integrity.py::test_backups_holding_secrets_are_private"
    expected |= {f"{secrets}[{s.name}]" for s in profile.backups}
    roles = "test_backup_integrity.py::test_globals_backup_creates_every_role_the_database_needs"
    expected |= {f"{roles}[{s.name}]" for s in profile.backups if s.kind == "globals"}
    offsite = "test_backup_offsite.py::test_recent_backups_have_equal_offsite_copies"
    expected |= {f"{offsite}[{s.name}]" for s in profile.backups if s.offsite is not None}
    expected |= {f"test_backup_jobs.py::test_fresh_dump_is_complete[{d.name}]" for d in profile.databases}
    expected |= {f"test_backup_jobs.py::test_bgsave_completes_and_writes_a_valid_rdb[{r.name}]" for r in profile.redis}
    return expected


def test_healthy_sandbox_passes_every_backup_check(run_checks: Run, profile_variant: Variant, sandbox: Any) -> None:
    run = run_checks(profile_variant(), "backup")
    assert run.result.ret == 0, run.result.stdout.str()
    assert run.failed() == set()
    modules = {"test_backup_freshness.py", "test_backup_integrity.py", "test_backup_retention.py",
               "test_backup_size.py", "test_backup_offsite.py", "test_backup_jobs.py"}  # others: no failure (above)
    outcomes = {t: c["outcome"] for t, c in run.checks.items() if t.partition("::")[0] in modules}
    passed = {t for t, outcome in outcomes.items() if outcome == "passed"}
    assert passed == expected_backup_checks(sandbox)
    # 12 sources x 7 + 12 x 3 newest + 1 globals + 3 offsite + 2 dumps + 1 BGSAVE, less the 2 freshness checks
    # the on_demand pf-simulations-table has none of
    assert len(passed) == 125
    drilled = "test_backup_offsite.py::test_backup_source_in_s3_is_restored_by_a_drill[none]"
    assert {t: o for t, o in outcomes.items() if t not in passed} == {drilled: "skipped"}
    assert run.message(drilled) == "profile sandbox declares no database or Redis backups in S3"
    assert run.checks["test_backup_integrity.py::test_backups_holding_secrets_are_private[env-archive]"]["evidence"][
        "secret_exports"] == "3"
    rpo = run.checks["test_backup_freshness.py::test_newest_backup_is_younger_than_rpo[qp-database-daily]"]
    assert rpo["evidence"]["rpo"] == "1d"
    assert rpo["runbook"][:2] == ["PF-04", "PF-10"]


def test_truncated_gzip_dump_fails_integrity(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("pf-postgres-daily")
    newest = copy.files[0]
    keep_mtime(newest, truncate_by(100))
    run = run_checks(profile_variant(copy.only()), RECENT)
    test = "test_backup_integrity.py::test_recent_backup_is_intact[pf-postgres-daily#1]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"backup {newest.name} of pf-postgres-daily is not intact: gzip stream truncated after "
        f"{newest.stat().st_size:,} compressed bytes (no trailer) ({newest})"
    )


def rot_a_byte(path: Path) -> tuple[int, int]:
    """Flip a byte in the deflate data from the middle on, the first whose stream still inflates (silent bit rot
    only the CRC catches): (the CRC32 stored in the trailer, the CRC32 of what now inflates), computed with zlib."""
    data = bytes(path.read_bytes())
    assert data[3] in (0, 8)  # gzip header flags: at most FNAME, as Python's GzipFile writes it
    start = data.index(b"\0", 10) + 1 if data[3] else 10
    stored = int.from_bytes(data[-8:-4], "little")
    for at in range(len(data) // 2, len(data) - 8):
        rotten = bytearray(data)
        rotten[at] ^= 0xFF
        inflate = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate: zlib itself must not check the CRC
        try:
            inflated = inflate.decompress(bytes(rotten[start:])) + inflate.flush()
        except zlib.error:
            continue
        if inflate.eof and len(inflate.unused_data) == 8 and zlib.crc32(inflated) != stored:
            path.write_bytes(bytes(rotten))
            return stored, zlib.crc32(inflated)
    raise AssertionError(f"no byte of {path} could be flipped without breaking the deflate stream")


def test_flipped_byte_in_gzip_dump_fails_integrity(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("pf-postgres-daily")
    second = copy.files[1]
    crcs: list[int] = []
    keep_mtime(second, lambda p: crcs.extend(rot_a_byte(p)))
    run = run_checks(profile_variant(copy.only()), RECENT)
    test = "test_backup_integrity.py::test_recent_backup_is_intact[pf-postgres-daily#2]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"backup {second.name} of pf-postgres-daily is not intact: CRC32 mismatch in gzip member 1 "
        f"(stored 0x{crcs[0]:08x}, computed 0x{crcs[1]:08x}) ({second})"
    )


def strip_marker(path: Path) -> None:
    with gzip.open(path, "rt") as dump:
        text = dump.read()
    assert "-- PostgreSQL database dump complete" in text
    with gzip.open(path, "wt") as out:
        out.write(text.split("-- PostgreSQL database dump complete")[0])


def test_dump_without_completion_marker_fails(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("qp-database-daily")
    newest = copy.files[0]
    keep_mtime(newest, strip_marker)
    run = run_checks(profile_variant(copy.only()), RECENT)
    test = "test_backup_integrity.py::test_recent_backup_is_intact[qp-database-daily#1]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"backup {newest.name} of qp-database-daily is not intact: dump-complete marker missing: pg_dump did not "
        f"finish ({newest})"
    )


def test_zero_byte_backup_fails_size_and_integrity(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("pf-postgres-daily")
    newest = copy.files[0]
    keep_mtime(newest, lambda p: p.write_bytes(b""))
    run = run_checks(profile_variant(copy.only()), "backup/test_backup_size.py", RECENT)
    assert run.failed() == {
        "test_backup_size.py::test_newest_backup_is_not_empty[pf-postgres-daily]",
        "test_backup_size.py::test_newest_backup_has_not_shrunk[pf-postgres-daily]",
        "test_backup_integrity.py::test_recent_backup_is_intact[pf-postgres-daily#1]",
    }
    assert run.message("test_backup_size.py::test_newest_backup_is_not_empty[pf-postgres-daily]") == (
        f"newest backup of pf-postgres-daily is empty (0 bytes): {newest}"
    )
    assert run.message("test_backup_size.py::test_newest_backup_has_not_shrunk[pf-postgres-daily]") == (
        f"newest backup of pf-postgres-daily is 100% smaller than the median of the previous 7 (0 vs "
        f"{median_size(copy.files[1:8])} bytes, limit 50%): {newest}"
    )
    assert run.message("test_backup_integrity.py::test_recent_backup_is_intact[pf-postgres-daily#1]") == (
        f"backup {newest.name} of pf-postgres-daily is not intact: empty file (0 bytes) ({newest})"
    )


def median_size(files: list[Path]) -> int:
    import statistics

    return int(statistics.median(p.stat().st_size for p in files))


def test_small_but_valid_newest_dump_fails_the_shrink_check(
    run_checks: Run, profile_variant: Variant, series: Any
) -> None:
    copy = series("pf-postgres-daily")
    newest = copy.files[0]

    def replace(path: Path) -> None:
        with gzip.open(path, "wb") as out:
            out.write(b"--\n-- PostgreSQL database dump\n--\n\n-- PostgreSQL database dump complete\n--\n\n")

    keep_mtime(newest, replace)
    run = run_checks(profile_variant(copy.only(tables=[])), "backup/test_backup_size.py", RECENT)
    test = "test_backup_size.py::test_newest_backup_has_not_shrunk[pf-postgres-daily]"
    assert run.failed() == {test}, run.result.stdout.str()
    size, median = newest.stat().st_size, median_size(copy.files[1:8])
    assert run.message(test) == (
        f"newest backup of pf-postgres-daily is {100 * (1 - size / median):.0f}% smaller than the median of the "
        f"previous 7 ({size} vs {median} bytes, limit 50%): {newest}"
    )


def test_custom_dump_with_wrong_header_fails(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("pf-postgres-custom")
    newest = copy.files[0]
    keep_mtime(newest, lambda p: p.write_bytes(b"NOTPG" + p.read_bytes()[5:]))
    run = run_checks(profile_variant(copy.only()), RECENT)
    test = "test_backup_integrity.py::test_recent_backup_is_intact[pf-postgres-custom#1]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"backup {newest.name} of pf-postgres-custom is not intact: not a pg_dump custom-format archive: header is "
        f"'NOTPG', not 'PGDMP' ({newest})"
    )


def test_backup_older_than_rpo_fails_freshness(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("pf-postgres-daily")  # the job stopped two days ago: its last two runs are missing
    for path in copy.files[:2]:
        path.unlink()
    newest = copy.files[0]
    run = run_checks(profile_variant(copy.only()), "backup/test_backup_freshness.py")
    test = "test_backup_freshness.py::test_newest_backup_is_younger_than_rpo[pf-postgres-daily]"
    assert run.failed() == {test}
    assert re.fullmatch(rf"newest backup of pf-postgres-daily is 2d\w* old \(RPO 1d\): {re.escape(str(newest))}",
                        run.message(test)), run.message(test)


def test_aged_mtime_only_backup_fails_freshness(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("redis-rdb")
    for n, path in enumerate(copy.files):  # rotated like logrotate: no date in the names
        age_by(path, 3 * DAY)
        path.rename(path.with_name(f"dump.rdb.{n + 1}"))
    run = run_checks(profile_variant(copy.only(pattern="dump.rdb.*")), "backup/test_backup_freshness.py")
    test = "test_backup_freshness.py::test_newest_backup_is_younger_than_rpo[redis-rdb]"
    assert run.failed() == {test}
    assert re.match(r"newest backup of redis-rdb is 3d\w* old \(RPO 1d\): ", run.message(test)), run.message(test)


def test_file_past_retention_fails(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("qp-database-daily")  # 7-day retention
    oldest = copy.files[-1]
    stale = copy.directory / "quantum_planner_20200101_020000.sql.gz"
    shutil.copy2(oldest, stale)
    run = run_checks(profile_variant(copy.only()), "backup/test_backup_retention.py")
    test = "test_backup_retention.py::test_nothing_older_than_retention_remains[qp-database-daily]"
    assert run.failed() == {test}
    assert re.fullmatch(
        r"1 backup\(s\) of qp-database-daily are past the 7d retention, "
        r"oldest quantum_planner_20200101_020000\.sql\.gz \((\d+[ydhms])+ old\): the cleanup step did not run",
        run.message(test),
    ), run.message(test)


def test_missing_day_in_the_series_fails_the_schedule(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("pf-postgres-daily")
    files = copy.files
    files[2].unlink()
    run = run_checks(profile_variant(copy.only()), "backup/test_backup_freshness.py")
    test = "test_backup_freshness.py::test_backups_follow_their_schedule[pf-postgres-daily]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"backups of pf-postgres-daily skip 2d between {files[3].name} and {files[1].name} "
        "(schedule 1d): a backup run was missed"
    )


def test_world_readable_secret_export_fails(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("k8s-secrets")
    exposed = copy.files[1]
    exposed.chmod(0o644)
    run = run_checks(profile_variant(copy.only()), INTEGRITY + "::test_backups_holding_secrets_are_private")
    test = "test_backup_integrity.py::test_backups_holding_secrets_are_private[k8s-secrets]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"1 backup(s) of k8s-secrets holding secrets are readable by group or others, first {exposed} (mode 0o644): "
        "chmod 600 them"
    )


SECRETS = INTEGRITY + "::test_backups_holding_secrets_are_private"


def test_unparseable_secret_export_fails(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("k8s-secrets")
    broken = copy.files[1]
    keep_mtime(broken, lambda p: p.write_text("apiVersion: v1\nkind: List\nitems: [\n"))  # the export was cut short
    run = run_checks(profile_variant(copy.only()), SECRETS)
    test = "test_backup_integrity.py::test_backups_holding_secrets_are_private[k8s-secrets]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"cannot tell whether 1 backup(s) of k8s-secrets hold secrets, first {broken.name}: YAML does not parse: "
        f"did not find expected node content at line 4, column 1 ({broken})"
    )


def test_env_tarball_readable_by_others_fails(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("env-archive")
    exposed = copy.files[0]
    exposed.chmod(0o640)
    run = run_checks(profile_variant(copy.only()), SECRETS)
    test = "test_backup_integrity.py::test_backups_holding_secrets_are_private[env-archive]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"1 backup(s) of env-archive holding secrets are readable by group or others, first {exposed} (mode 0o640): "
        "chmod 600 them"
    )


def test_env_tarball_declared_as_archive_readable_by_others_fails(
    run_checks: Run, profile_variant: Variant, series: Any
) -> None:
    copy = series("env-archive")
    exposed = copy.files[0]
    exposed.chmod(0o644)
    run = run_checks(profile_variant(copy.only(kind="archive")), SECRETS)
    test = "test_backup_integrity.py::test_backups_holding_secrets_are_private[env-archive]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"1 backup(s) of env-archive holding secrets are readable by group or others, first {exposed} (mode 0o644): "
        "chmod 600 them"
    )
    assert run.checks[test]["runbook"] == []  # PF-23/QP-20 name config backups: an archive source verifies neither


def test_globals_file_readable_by_others_fails(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("pg-globals")  # pg_dumpall --globals-only: role password hashes, whatever the file says
    exposed = copy.files[1]
    exposed.chmod(0o644)
    run = run_checks(profile_variant(copy.only()), SECRETS)
    test = "test_backup_integrity.py::test_backups_holding_secrets_are_private[pg-globals]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"1 backup(s) of pg-globals holding secrets are readable by group or others, first {exposed} (mode 0o644): "
        "chmod 600 them"
    )


def test_tarball_without_an_env_file_holds_no_secrets(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    import tarfile

    copy = series("env-archive")
    for path in copy.files:
        def repack(p: Path) -> None:
            with tarfile.open(p) as old, tarfile.open(p.with_suffix(".new"), "w:gz") as new:
                for member in old.getmembers():
                    if member.name != ".env":
                        new.addfile(member, old.extractfile(member))
            p.with_suffix(".new").replace(p)

        keep_mtime(path, repack)
        path.chmod(0o644)
    run = run_checks(profile_variant(copy.only()), SECRETS)
    test = "test_backup_integrity.py::test_backups_holding_secrets_are_private[env-archive]"
    assert run.outcome(test) == "passed"
    assert run.checks[test]["evidence"]["secret_exports"] == "0"


SECRETS_TEST = "test_backup_integrity.py::test_backups_holding_secrets_are_private[k8s-secrets]"


def test_private_s3_copies_of_secret_exports_pass(
    run_checks: Run, profile_variant: Variant, series: Any, bucket: Any
) -> None:
    run = run_checks(profile_variant(uploaded(series("k8s-secrets"), bucket)), SECRETS)
    assert run.outcome(SECRETS_TEST) == "passed"
    assert run.checks[SECRETS_TEST]["evidence"]["s3_copies"] == "3"


def test_public_acl_on_an_s3_copy_of_a_secret_export_fails(
    run_checks: Run, profile_variant: Variant, series: Any, bucket: Any
) -> None:
    copy = series("k8s-secrets")
    mutate = uploaded(copy, bucket)
    s3, offsite = bucket
    public = copy.files[2]
    s3.put_object_acl(Bucket=offsite["url"].split("/")[2], Key=f"database/{public.name}", ACL="public-read")
    run = run_checks(profile_variant(mutate), SECRETS)
    assert run.failed() == {SECRETS_TEST}
    assert run.message(SECRETS_TEST) == (
        f"1 S3 copies of secret-holding backups of k8s-secrets are publicly readable, first {offsite['url']}"
        f"{public.name}: an unsigned (anonymous) GET reads it (its ACL grants READ to AllUsers): make them private"
    )


def test_public_bucket_policy_over_s3_copies_of_secret_exports_fails(
    run_checks: Run, profile_variant: Variant, series: Any, bucket: Any
) -> None:
    import json

    copy = series("k8s-secrets")
    mutate = uploaded(copy, bucket)
    s3, offsite = bucket
    name = offsite["url"].split("/")[2]
    statement = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{name}/*"}
    s3.put_bucket_policy(Bucket=name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [statement]}))
    run = run_checks(profile_variant(mutate), SECRETS)
    assert run.failed() == {SECRETS_TEST}
    assert run.message(SECRETS_TEST) == (
        f"3 S3 copies of secret-holding backups of k8s-secrets are publicly readable, first {offsite['url']}"
        f"{copy.files[0].name}: an unsigned (anonymous) GET reads it (the policy of bucket {name} is public): "
        "make them private"
    )


# --- the roles/grants backup (pg_dumpall --globals-only) against the live database's owners and grantees ----

ROLES = "backup/test_backup_integrity.py::test_globals_backup_creates_every_role_the_database_needs"
ROLES_TEST = "test_backup_integrity.py::test_globals_backup_creates_every_role_the_database_needs[pg-globals]"


def drop_line(line: str) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        text = path.read_text()
        assert f"\n{line}\n" in text
        path.write_text(text.replace(f"\n{line}\n", "\n"))

    return edit


def test_globals_backup_without_a_role_of_the_database_fails(
    run_checks: Run, profile_variant: Variant, series: Any
) -> None:
    copy = series("pg-globals")
    newest = copy.files[0]
    keep_mtime(newest, drop_line("CREATE ROLE postgres;"))  # the owner of every object of photonic_foundry
    run = run_checks(profile_variant(copy.only()), ROLES, RECENT)
    assert run.failed() == {ROLES_TEST}
    assert run.message(ROLES_TEST) == (
        "newest globals backup of pg-globals has no CREATE ROLE for 1 role(s) that own objects in or hold grants on "
        "database photonic_foundry: postgres; a restore onto a new cluster would lock them out: include them in the "
        f"pg_dumpall --globals-only job ({newest})"
    )


def test_no_globals_files_fail(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("pg-globals")
    for path in copy.files:
        path.unlink()
    run = run_checks(profile_variant(copy.only()), ROLES)
    assert run.failed() == {ROLES_TEST}
    assert run.message(ROLES_TEST) == f"no backup of pg-globals in {copy.directory} matches globals_*.sql"


def test_globals_file_without_create_role_fails(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("pg-globals")
    newest = copy.files[0]
    keep_mtime(newest, lambda p: p.write_text(re.sub(r"(?m)^CREATE ROLE .*\n", "", p.read_text())))
    run = run_checks(profile_variant(copy.only()), ROLES, RECENT)
    intact = "test_backup_integrity.py::test_recent_backup_is_intact[pg-globals#1]"
    assert run.failed() == {ROLES_TEST, intact}
    detail = "holds no CREATE ROLE statement: not a pg_dumpall --globals-only file"
    assert run.message(intact) == f"backup {newest.name} of pg-globals is not intact: {detail} ({newest})"
    assert run.message(ROLES_TEST) == f"newest globals backup of pg-globals is not intact: {detail} ({newest})"


@pytest.fixture
def app_role_cluster(sandbox_profile: Path) -> Iterator[int]:
    """A throwaway cluster whose photonic_foundry has an application role owning a table, and a reader granted on it."""
    from opsverify.localserver.net import free_port
    from opsverify.profile import load_profile
    from opsverify.sandbox.postgres import Postgres, sandbox_tls

    base = Path("/tmp") / f"opsverify-test-roles-{uuid.uuid4().hex[:8]}"
    cluster = Postgres(base, os.geteuid() == 0, free_port(), "superuser-secret")
    cluster.init(sandbox_tls(load_profile(sandbox_profile).databases[0].sslrootcert))
    cluster.start()
    try:
        check = load_profile(sandbox_profile).databases[0].secret() or ""
        cluster.create_role_and_databases(check, "unused-replication-secret")
        with cluster.connect("photonic_foundry") as conn:
            conn.execute("CREATE ROLE photonic LOGIN")
            conn.execute("CREATE ROLE photonic_reader")
            conn.execute("CREATE TABLE models (id int)")
            conn.execute("ALTER TABLE models OWNER TO photonic")
            conn.execute("GRANT SELECT ON models TO photonic_reader")
        yield cluster.port
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert not base.exists()


def test_globals_backup_of_a_cluster_without_the_app_role_fails(
    run_checks: Run, profile_variant: Variant, series: Any, app_role_cluster: int
) -> None:
    copy = series("pg-globals")  # real pg_dumpall --globals-only files of the sandbox, which has no such roles

    def mutate(data: dict[str, Any]) -> None:
        copy.only()(data)
        data["databases"] = [{**data["databases"][0], "port": app_role_cluster}]

    run = run_checks(profile_variant(mutate), ROLES)
    assert run.failed() == {ROLES_TEST}
    assert run.message(ROLES_TEST) == (
        "newest globals backup of pg-globals has no CREATE ROLE for 2 role(s) that own objects in or hold grants on "
        "database photonic_foundry: photonic, photonic_reader; a restore onto a new cluster would lock them out: "
        f"include them in the pg_dumpall --globals-only job ({copy.files[0]})"
    )
    assert run.checks[ROLES_TEST]["evidence"]["roles_needed"] == "photonic,photonic_reader,postgres"


def test_flipped_byte_in_rdb_fails(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("redis-rdb")
    newest = copy.files[0]
    keep_mtime(newest, flip_middle_byte)
    run = run_checks(profile_variant(copy.only()), RECENT)
    test = "test_backup_integrity.py::test_recent_backup_is_intact[redis-rdb#1]"
    assert run.failed() == {test}
    stored, computed = crc64_of(newest)
    assert run.message(test) == (
        f"backup {newest.name} of redis-rdb is not intact: CRC64 mismatch (stored 0x{stored:016x}, computed "
        f"0x{computed:016x}): the RDB is corrupt ({newest})"
    )


def crc64_of(path: Path) -> tuple[int, int]:
    """(the RDB's stored CRC64 trailer, the CRC64 of everything before it), computed here independently."""
    import anycrc

    data = path.read_bytes()
    return int.from_bytes(data[-8:], "little"), anycrc.Model("CRC64-REDIS").calc(data[:-8])


def newer_rdb_version(path: Path) -> None:
    import anycrc

    data = bytearray(path.read_bytes())
    assert data[:5] == b"REDIS"
    data[5:9] = b"0099"
    body = bytes(data[:-8])
    path.write_bytes(body + anycrc.Model("CRC64-REDIS").calc(body).to_bytes(8, "little"))


def test_rdb_from_a_newer_version_fails(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("redis-rdb")
    newest = copy.files[0]
    keep_mtime(newest, newer_rdb_version)
    run = run_checks(profile_variant(copy.only()), RECENT)
    test = "test_backup_integrity.py::test_recent_backup_is_intact[redis-rdb#1]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"backup {newest.name} of redis-rdb is not intact: RDB version 99 is newer than the restore target supports "
        f"(max 12) ({newest})"
    )


def flip_gzip_crc(path: Path) -> tuple[int, int]:
    """Flip one bit of the (single) gzip member's CRC32 trailer: (the CRC now stored, the CRC of the content)."""
    data = bytearray(path.read_bytes())
    computed = zlib.crc32(gzip.decompress(bytes(data)))
    assert int.from_bytes(data[-8:-4], "little") == computed
    data[-8] ^= 0x01
    path.write_bytes(bytes(data))
    return int.from_bytes(data[-8:-4], "little"), computed


def test_corrupt_archive_member_fails(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    copy = series("models-archive")
    newest = copy.files[0]
    crcs: list[int] = []
    keep_mtime(newest, lambda p: crcs.extend(flip_gzip_crc(p)))
    run = run_checks(profile_variant(copy.only(offsite=None)), RECENT)
    test = "test_backup_integrity.py::test_recent_backup_is_intact[models-archive#1]"
    assert run.failed() == {test}
    assert newest.stat().st_size < 1 << 20  # inflated whole on the first read: the damage shows at the first header
    assert run.message(test) == (
        f"backup {newest.name} of models-archive is not intact: corrupt tar.gz at the first header: CRC32 mismatch "
        f"in gzip member 1 (stored 0x{crcs[0]:08x}, computed 0x{crcs[1]:08x}) ({newest})"
    )


# --- offsite copies, in a bucket of each test's own on the sandbox's S3 server ---------------------------


def uploaded(copy: SeriesCopy, bucket: tuple[Any, dict[str, Any]]) -> Mutation:
    s3, offsite = bucket
    name = offsite["url"].split("/")[2]
    for path in copy.files:
        s3.upload_file(str(path), name, f"database/{path.name}")
    return copy.only(offsite=offsite)


OFFSITE = "backup/test_backup_offsite.py"
OFFSITE_TEST = "test_backup_offsite.py::test_recent_backups_have_equal_offsite_copies[qp-database-daily]"


def test_offsite_copies_in_a_fresh_bucket_pass(
    run_checks: Run, profile_variant: Variant, series: Any, bucket: Any
) -> None:
    run = run_checks(profile_variant(uploaded(series("qp-database-daily"), bucket)), OFFSITE)
    assert run.outcome(OFFSITE_TEST) == "passed"
    assert run.checks[OFFSITE_TEST]["evidence"]["compared"] == "7"


def test_missing_offsite_object_fails(run_checks: Run, profile_variant: Variant, series: Any, bucket: Any) -> None:
    copy = series("qp-database-daily")
    mutate = uploaded(copy, bucket)
    s3, offsite = bucket
    gone = copy.files[1]
    s3.delete_object(Bucket=offsite["url"].split("/")[2], Key=f"database/{gone.name}")
    run = run_checks(profile_variant(mutate), OFFSITE)
    assert run.failed() == {OFFSITE_TEST}
    assert run.message(OFFSITE_TEST) == (
        f"1 of 7 recent backups of qp-database-daily lack an equal copy in {offsite['url']}, "
        f"first {gone.name}: no offsite copy"
    )


def test_offsite_object_of_other_size_fails(run_checks: Run, profile_variant: Variant, series: Any,
                                            bucket: Any) -> None:
    copy = series("qp-database-daily")
    mutate = uploaded(copy, bucket)
    s3, offsite = bucket
    newest = copy.files[0]
    s3.put_object(Bucket=offsite["url"].split("/")[2], Key=f"database/{newest.name}", Body=b"partial upload")
    run = run_checks(profile_variant(mutate), OFFSITE)
    assert run.failed() == {OFFSITE_TEST}
    assert run.message(OFFSITE_TEST) == (
        f"1 of 7 recent backups of qp-database-daily lack an equal copy in {offsite['url']}, first {newest.name}: "
        f"offsite copy is 14 bytes, local {newest.stat().st_size}"
    )


def test_offsite_object_with_same_size_other_content_fails(
    run_checks: Run, profile_variant: Variant, series: Any, bucket: Any
) -> None:
    copy = series("qp-database-daily")
    mutate = uploaded(copy, bucket)
    s3, offsite = bucket
    newest = copy.files[0]
    s3.put_object(Bucket=offsite["url"].split("/")[2], Key=f"database/{newest.name}",
                  Body=b"\0" * newest.stat().st_size)
    run = run_checks(profile_variant(mutate), OFFSITE)
    assert run.failed() == {OFFSITE_TEST}
    assert run.message(OFFSITE_TEST) == (
        f"1 of 7 recent backups of qp-database-daily lack an equal copy in {offsite['url']}, first {newest.name}: "
        "offsite copy has a different hash (ETag)"
    )


def test_offsite_copy_in_glacier_fails(run_checks: Run, profile_variant: Variant, series: Any, bucket: Any) -> None:
    copy = series("qp-database-daily")
    mutate = uploaded(copy, bucket)
    s3, offsite = bucket
    newest = copy.files[0]
    s3.upload_file(str(newest), offsite["url"].split("/")[2], f"database/{newest.name}",
                   ExtraArgs={"StorageClass": "GLACIER"})  # a lifecycle rule moved it: same bytes, cold
    run = run_checks(profile_variant(mutate), OFFSITE)
    assert run.failed() == {OFFSITE_TEST}
    assert run.message(OFFSITE_TEST) == (
        f"1 of 7 recent offsite copies of qp-database-daily in {offsite['url']} are in storage class GLACIER, "
        f"first {newest.name}: a restore from them takes hours (an S3 restore request must thaw each object first): "
        "keep recent copies in STANDARD or STANDARD_IA, or move them to GLACIER only after offsite.recent"
    )


DRILLED = "backup/test_backup_offsite.py::test_backup_source_in_s3_is_restored_by_a_drill"
DRILLED_TEST = "test_backup_offsite.py::test_backup_source_in_s3_is_restored_by_a_drill[qp-database-daily]"


def s3_source(copy: SeriesCopy, bucket: tuple[Any, dict[str, Any]], drilled: bool) -> Mutation:
    """The copy, uploaded, as the profile's only backup source, read from S3; with a drill of it or none."""
    uploaded(copy, bucket)
    offsite = bucket[1]
    access = {k: offsite[k] for k in ("endpoint_url", "region", "access_key_id", "secret_access_key_file")}
    source = {**copy.source, "path": offsite["url"], "s3": access}
    source.pop("offsite")
    drills = [{"name": "qp-from-s3", "backup": copy.name, "database": "quantum_planner"}] if drilled else []
    return lambda d: d.update(backups=[source], drills=drills)


def test_backup_in_s3_that_no_drill_restores_fails(
    run_checks: Run, profile_variant: Variant, series: Any, bucket: Any
) -> None:
    copy = series("qp-database-daily")
    never = run_checks(profile_variant(s3_source(copy, bucket, drilled=False)), DRILLED)
    assert never.failed() == {DRILLED_TEST}
    url = bucket[1]["url"]
    assert never.message(DRILLED_TEST) == (
        f"backup source qp-database-daily in {url} is never drilled: add a drill (drills: - backup: "
        "qp-database-daily) so a restore from S3 is proven, not assumed"
    )
    assert never.checks[DRILLED_TEST]["runbook"] == []  # it reads the profile: it verifies no procedure
    drilled = run_checks(profile_variant(s3_source(copy, bucket, drilled=True)), DRILLED)
    assert drilled.outcome(DRILLED_TEST) == "passed"
    assert drilled.checks[DRILLED_TEST]["evidence"]["drills"] == "qp-from-s3"


def test_unreachable_s3_fails_within_the_timeout(run_checks: Run, profile_variant: Variant, series: Any) -> None:
    from opsverify.localserver.net import free_port

    copy = series("qp-database-daily")
    offsite = dict(copy.source["offsite"], endpoint_url=f"http://127.0.0.1:{free_port()}")
    mutate = copy.only(offsite=offsite)
    run = run_checks(profile_variant(lambda d: (mutate(d), d.update(timeouts={"connect": "1s", "request": "2s"}))),
                     OFFSITE)
    assert run.failed() == {OFFSITE_TEST}
    assert run.message(OFFSITE_TEST) == (
        f"offsite copies of qp-database-daily: cannot list {offsite['url']}: connection refused"
    )
    assert "Traceback" not in run.result.stdout.str()


def test_backups_read_from_s3_pass_freshness_and_integrity(
    run_checks: Run, profile_variant: Variant, series: Any, bucket: Any
) -> None:
    copy = series("qp-database-daily")
    uploaded(copy, bucket)
    _, offsite = bucket
    access = {k: offsite[k] for k in ("endpoint_url", "region", "access_key_id", "secret_access_key_file")}
    source = {**copy.source, "path": offsite["url"], "s3": access}
    source.pop("offsite")
    run = run_checks(profile_variant(lambda d: d.update(backups=[source])),
                     "backup/test_backup_freshness.py", RECENT)
    assert run.result.ret == 0, run.result.stdout.str()
    assert run.outcome("test_backup_integrity.py::test_recent_backup_is_intact[qp-database-daily#3]") == "passed"


# --- backups in a directory of an ssh:// host (listed through testinfra, copied with ssh cat) -------------


def remote(copy: SeriesCopy, server: Any) -> Mutation:
    """The copy as the profile's only source, read through the throwaway sshd as host ``backup-host``."""

    def mutate(data: dict[str, Any]) -> None:
        user = os.environ.get("USER") or "root"
        data["hosts"] = [{
            "name": "backup-host", "uri": f"ssh://{user}@127.0.0.1:{server.port}", "ssh_config": str(server.ssh_config),
            "ssh_identity_file": str(server.identity),
        }]
        source = {**copy.source, "path": str(copy.directory), "host": "backup-host"}
        source.pop("offsite", None)
        data["backups"] = [source]

    return mutate


def test_backups_on_an_ssh_host_pass_and_a_flipped_byte_there_fails(
    run_checks: Run, profile_variant: Variant, series: Any, sshd: Any
) -> None:
    copy = series("qp-database-daily")
    healthy = run_checks(profile_variant(remote(copy, sshd)), "backup/test_backup_freshness.py", RECENT)
    assert healthy.result.ret == 0, healthy.result.stdout.str()
    newest = healthy.checks["test_backup_freshness.py::test_newest_backup_is_younger_than_rpo[qp-database-daily]"]
    assert newest["evidence"]["newest"] == f"backup-host:{copy.files[0]}"
    crcs: list[int] = []
    keep_mtime(copy.files[1], lambda p: crcs.extend(rot_a_byte(p)))
    broken = run_checks(profile_variant(remote(copy, sshd)), RECENT)
    test = "test_backup_integrity.py::test_recent_backup_is_intact[qp-database-daily#2]"
    assert broken.failed() == {test}
    assert broken.message(test) == (
        f"backup {copy.files[1].name} of qp-database-daily is not intact: CRC32 mismatch in gzip member 1 "
        f"(stored 0x{crcs[0]:08x}, computed 0x{crcs[1]:08x}) (backup-host:{copy.files[1]})"
    )


def test_unreachable_backup_host_fails_with_the_reason(
    run_checks: Run, profile_variant: Variant, series: Any, sshd: Any
) -> None:
    copy = series("qp-database-daily")
    sshd.stop()
    run = run_checks(profile_variant(remote(copy, sshd)), "backup/test_backup_freshness.py")
    test = "test_backup_freshness.py::test_newest_backup_is_younger_than_rpo[qp-database-daily]"
    assert run.outcome(test) == "failed"
    user = os.environ.get("USER") or "root"
    assert run.message(test) == (
        f"cannot list backups of qp-database-daily: cannot reach ssh://{user}@127.0.0.1:{sshd.port}: connection refused"
    )


def test_monthly_run_finds_a_broken_old_backup_the_daily_run_does_not_reach(
    run_checks: Run, profile_variant: Variant, series: Any
) -> None:
    copy = series("pf-postgres-daily")
    old = copy.files[10]  # beyond max_verify (3): only the monthly check reads it
    keep_mtime(old, truncate_by(100))
    run = run_checks(profile_variant(copy.only()), INTEGRITY, extra=("-m", "daily or monthly"))
    test = "test_backup_integrity.py::test_every_backup_in_retention_is_intact[pf-postgres-daily]"
    assert run.failed() == {test}
    assert run.message(test) == (
        f"1 of 30 backups of pf-postgres-daily are not intact, first {old.name}: gzip stream truncated after "
        f"{old.stat().st_size:,} compressed bytes (no trailer)"
    )
