"""on_demand backup sources (manual dumps): no freshness or schedule check, an empty series is fine for every
backup check, every file present is still verified, a directory that cannot be listed still fails; a drill of one
and a schedule on one are profile problems."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsverify.errors import ProfileError
from opsverify.profile import load_profile
from opsverify.profile.advice import rpo_warnings

Run = Callable[..., Any]
Variant = Callable[..., Path]
BACKUP_CHECKS = ("backup/test_backup_freshness.py", "backup/test_backup_size.py", "backup/test_backup_integrity.py",
                 "backup/test_backup_retention.py", "backup/test_backup_content.py")
NAME = "pf-postgres-custom"


def on_demand_copy(sandbox_profile: Path, directory: Path, files: bool) -> Callable[[dict[str, Any]], None]:
    """A mutation: the sandbox's custom-dump series, on_demand (no rpo/schedule), in ``directory`` (with its files
    copied, mtimes kept, or empty), the profile's only backup source."""
    source = next(s for s in yaml.safe_load(sandbox_profile.read_text())["backups"] if s["name"] == NAME)
    if files:
        directory.mkdir()
        for path in Path(source["path"]).glob(source["pattern"]):
            shutil.copy2(path, directory / path.name)
    entry = {k: v for k, v in source.items() if k not in ("rpo", "schedule")}
    entry.update(path=str(directory), on_demand=True)

    def mutate(data: dict[str, Any]) -> None:
        data["backups"] = [entry]
        data["drills"] = []  # the sandbox drills this series: refused for an on_demand source

    return mutate


def outcomes(run: Any) -> dict[str, str]:
    return {test: check["outcome"] for test, check in run.checks.items()}


def test_an_empty_on_demand_series_passes_every_backup_check(
    run_checks: Run, profile_variant: Variant, sandbox_profile: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "manual"
    empty.mkdir()
    run = run_checks(profile_variant(on_demand_copy(sandbox_profile, empty, files=False)), *BACKUP_CHECKS)
    none = "test_backup_freshness.py::{}[none]"
    assert outcomes(run) == {
        none.format("test_newest_backup_is_younger_than_rpo"): "skipped",  # no scheduled source: not a row
        none.format("test_backups_follow_their_schedule"): "skipped",
        f"test_backup_size.py::test_newest_backup_is_not_empty[{NAME}]": "passed",
        f"test_backup_size.py::test_newest_backup_has_not_shrunk[{NAME}]": "passed",
        **{f"test_backup_integrity.py::test_recent_backup_is_intact[{NAME}#{n}]": "passed" for n in (1, 2, 3)},
        f"test_backup_integrity.py::test_every_backup_in_retention_is_intact[{NAME}]": "passed",
        f"test_backup_integrity.py::test_backups_holding_secrets_are_private[{NAME}]": "passed",
        "test_backup_integrity.py::test_globals_backup_creates_every_role_the_database_needs[none]": "skipped",
        f"test_backup_retention.py::test_nothing_older_than_retention_remains[{NAME}]": "passed",
        f"test_backup_content.py::test_newest_dump_is_of_its_database[{NAME}]": "passed",
        f"test_backup_content.py::test_newest_dump_holds_rows_the_live_database_has[{NAME}]": "passed",
        f"test_backup_content.py::test_newest_full_dump_holds_every_live_table[{NAME}]": "passed",
        f"test_backup_content.py::test_newest_manifest_matches_its_backup[{NAME}]": "passed",
    }, run.result.stdout.str()[-3000:]
    assert run.checks[none.format("test_newest_backup_is_younger_than_rpo")]["message"].endswith(
        "declares no scheduled backup sources")


def test_a_corrupt_file_in_an_on_demand_series_fails_exactly_integrity(
    run_checks: Run, profile_variant: Variant, sandbox_profile: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "manual"
    mutate = on_demand_copy(sandbox_profile, directory, files=True)
    newest = max(directory.iterdir(), key=lambda p: p.stat().st_mtime)
    stat = newest.stat()
    with newest.open("r+b") as out:
        out.truncate(stat.st_size // 2)
    os.utime(newest, (stat.st_atime, stat.st_mtime))
    run = run_checks(profile_variant(mutate), "backup/test_backup_integrity.py")
    recent, every = (f"test_backup_integrity.py::{t}" for t in
                     ("test_recent_backup_is_intact", "test_every_backup_in_retention_is_intact"))
    assert run.failed() == {f"{recent}[{NAME}#1]", f"{every}[{NAME}]"}, run.result.stdout.str()[-3000:]
    assert run.message(f"{recent}[{NAME}#1]").startswith(f"backup {newest.name} of {NAME} is not intact: ")
    assert run.message(f"{recent}[{NAME}#1]").endswith(f"({newest})")
    assert run.message(f"{every}[{NAME}]").startswith(f"1 of 3 backups of {NAME} are not intact, first {newest.name}: ")


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_an_on_demand_directory_that_cannot_be_listed_fails(
    run_checks: Run, profile_variant: Variant, sandbox_profile: Path, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "manual"
    if kind == "a file":
        path.write_text("not a directory\n")
    run = run_checks(profile_variant(on_demand_copy(sandbox_profile, path, files=False)),
                     "backup/test_backup_size.py::test_newest_backup_is_not_empty")
    test = f"test_backup_size.py::test_newest_backup_is_not_empty[{NAME}]"
    assert run.failed() == {test}, run.result.stdout.str()[-3000:]
    assert run.message(test).startswith(f"cannot list backups of {NAME}: ")


def problems(tmp_path: Path, backup: str, drill: bool = False) -> list[str]:
    text = f"""name: t
databases:
  - {{name: db, host: 127.0.0.1, port: 5432, dbname: app, user: u}}
backups:
{backup}
"""
    if drill:
        text += "drills:\n  - {name: d, backup: manual, database: db}\n"
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as caught:
        load_profile(path, {})
    return caught.value.problems


def test_a_drill_of_an_on_demand_source_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, "  - {name: manual, kind: postgres, path: /b, database: db, on_demand: true}", True)
    assert found == ["drills[0].backup (line 7): backup 'manual' is on_demand (backups[0]): a drill needs a series "
                     "that is always there: drill a scheduled series instead"]


@pytest.mark.parametrize(
    ("fields", "named"), [("schedule: 1d", "schedule"), ("rpo: 7d, schedule: 7d", "rpo, schedule")]
)
def test_schedule_or_rpo_on_an_on_demand_source_is_a_problem(tmp_path: Path, fields: str, named: str) -> None:
    found = problems(tmp_path, f"  - {{name: manual, kind: postgres, path: /b, on_demand: true, {fields}}}")
    assert found == [f"backups[0] (line 5): an on_demand source has no schedule or rpo (manual backups): drop {named}"]


def test_the_shipped_profile_declares_the_manual_backups_on_demand() -> None:
    root = Path(__file__).resolve().parents[1]
    profile = load_profile(root / "environments" / "photonic-foundry.yaml", {})
    manual = {s.name for s in profile.backups if s.on_demand}
    assert manual == {"postgres-plain", "postgres-custom", "simulations-table"}
    assert all(d.backup not in manual for d in profile.drills)


def test_an_on_demand_source_is_no_recovery_path_of_the_rpo_warning(tmp_path: Path) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text("""name: t
databases:
  - {name: db, host: 127.0.0.1, port: 5432, dbname: app, user: u, wal_archiving: false}
backups:
  - {name: daily, kind: postgres, path: /b, database: db, schedule: 2d, rpo: 2d}
  - {name: manual, kind: postgres, path: /b, pattern: "backup_????????.sql", database: db, on_demand: true}
drills:
  - {name: d, backup: daily, database: db}
""")
    warnings = rpo_warnings(load_profile(path, {}))
    assert len(warnings) == 1, warnings
    assert "is backup daily every 2d" in warnings[0], warnings  # not the on_demand one (whose schedule is no period)


def test_an_on_demand_source_in_s3_is_not_required_to_be_drilled(
    run_checks: Run, profile_variant: Variant, tmp_path: Path
) -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["backups"] = [{"name": "manual-s3", "kind": "postgres", "path": "s3://manual/dumps/", "on_demand": True}]
        data["drills"] = []

    check = "backup/test_backup_offsite.py::test_backup_source_in_s3_is_restored_by_a_drill"
    run = run_checks(profile_variant(mutate), check)
    test = "test_backup_offsite.py::test_backup_source_in_s3_is_restored_by_a_drill[none]"
    assert {t: c["outcome"] for t, c in run.checks.items()} == {test: "skipped"}, run.result.stdout.str()[-2000:]
    assert run.message(test) == "profile sandbox declares no database or Redis backups in S3"


def test_retention_applies_to_an_on_demand_series_without_a_schedule_period(
    run_checks: Run, profile_variant: Variant, sandbox_profile: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "manual"
    mutate = on_demand_copy(sandbox_profile, directory, files=True)
    oldest = min(directory.iterdir(), key=lambda p: p.stat().st_mtime)
    # a backup's time is read from its name: a date 31 days back is 31d and some hours old, past 30d + 1 day but
    # inside the one schedule period (1d) a scheduled series would add
    stamp = time.strftime("%Y%m%d", time.gmtime(time.time() - 31 * 86400))
    oldest = oldest.rename(directory / f"backup_{stamp}.dump")
    run = run_checks(profile_variant(mutate), "backup/test_backup_retention.py")
    test = f"test_backup_retention.py::test_nothing_older_than_retention_remains[{NAME}]"
    assert run.failed() == {test}, run.result.stdout.str()[-3000:]
    message = run.message(test)
    assert message.startswith(f"1 backup(s) of {NAME} are past the 30d retention, oldest {oldest.name} (31d"), message
    assert message.endswith(" old): the cleanup step did not run"), message
