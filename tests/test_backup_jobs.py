"""Backup jobs as fixtures: scratch files cleaned and verified gone, the production gate, real failures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Run = Callable[..., Any]
Variant = Callable[..., Path]
JOBS = "backup/test_backup_jobs.py"
DUMP = "test_backup_jobs.py::test_fresh_dump_is_complete[photonic_foundry]"
BGSAVE = "test_backup_jobs.py::test_bgsave_completes_and_writes_a_valid_rdb[cache]"


def scratch(tmp_path: Path, **changes: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data["scratch_dir"] = str(tmp_path / "scratch")
        data["databases"] = data["databases"][:1]
        data.update(changes)

    (tmp_path / "scratch").mkdir(exist_ok=True)
    return mutate


def test_fresh_dump_and_bgsave_pass_and_leave_no_scratch_file(
    run_checks: Run, profile_variant: Variant, tmp_path: Path
) -> None:
    run = run_checks(profile_variant(scratch(tmp_path)), JOBS)
    assert run.result.ret == 0, run.result.stdout.str()
    assert int(run.checks[DUMP]["evidence"]["size_bytes"]) > 10_000
    assert run.checks[BGSAVE]["evidence"]["status"] == "ok"
    saved = run.checks[BGSAVE]["evidence"]
    assert int(saved["lastsave_after"]) > int(saved["lastsave_before"])
    assert list((tmp_path / "scratch").iterdir()) == []


def test_production_profile_refuses_maintenance_without_the_flag(
    run_checks: Run, profile_variant: Variant, tmp_path: Path
) -> None:
    profile = profile_variant(scratch(tmp_path, role="production"))
    refused = run_checks(profile, JOBS)
    assert {c["outcome"] for c in refused.checks.values()} == {"skipped"}
    assert refused.message(DUMP) == (
        "refused: profile sandbox is production and this check changes state; pass --allow-maintenance to let it run"
    )
    allowed = run_checks(profile, JOBS, extra=("--allow-maintenance",))
    assert allowed.outcome(DUMP) == "passed"
    assert list((tmp_path / "scratch").iterdir()) == []


def test_dump_with_wrong_password_fails_with_pg_dumps_reason(
    run_checks: Run, profile_variant: Variant, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")

    def mutate(data: dict[str, Any]) -> None:
        scratch(tmp_path)(data)
        data["databases"][0]["password_file"] = str(wrong)

    run = run_checks(profile_variant(mutate), JOBS + "::test_fresh_dump_is_complete")
    assert run.failed() == {DUMP}
    assert run.message(DUMP).startswith("pg_dump of photonic_foundry failed: ")
    assert 'password authentication failed for user "opsverify"' in run.message(DUMP)
    assert "not-the-password" not in run.result.stdout.str()
    assert list((tmp_path / "scratch").iterdir()) == []


def test_bgsave_on_a_stopped_redis_fails(run_checks: Run, profile_variant: Variant, tmp_path: Path) -> None:
    from opsverify.localserver.net import free_port

    port = free_port()
    mutate = scratch(tmp_path, redis=[{"name": "cache", "port": port}])
    run = run_checks(profile_variant(mutate), JOBS + "::test_bgsave_completes_and_writes_a_valid_rdb")
    assert run.failed() == {BGSAVE}
    assert run.message(BGSAVE) == f"BGSAVE on redis cache ended connection refused at 127.0.0.1:{port}"
