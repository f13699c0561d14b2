"""QP-16: the DR document's review date, from its review line, its last git commit or its mtime, against max_age;
real documents, a real git repository with a back-dated commit, a missing file, a date in the future."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TEST = "test_dr_document.py::test_dr_document_was_reviewed_within_max_age"


def run_with_document(run_checks: Callable[..., Any], profile_variant: Callable[..., Path],
                      document: dict[str, str] | None) -> Any:
    def declare(data: dict[str, Any]) -> None:
        data.pop("dr_document", None)
        if document is not None:
            data["dr_document"] = document

    run = run_checks(profile_variant(declare), "recovery/test_dr_document.py")
    assert run.result.ret in (0, 1), run.result.stdout.str()
    return run


def git(repo: Path, *args: str, when: datetime | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = when.isoformat()
    done = subprocess.run(["git", "-C", str(repo), "-c", "user.name=Ops", "-c", "user.email=ops@example.com", *args],
                          capture_output=True, text=True, env=env, timeout=30, check=True)
    return done.stdout.strip()


def test_a_review_line_93_days_old_fails(run_checks: Callable[..., Any], profile_variant: Callable[..., Path],
                                         tmp_path: Path) -> None:
    day = (datetime.now(UTC) - timedelta(days=93)).date().isoformat()
    document = tmp_path / "disaster-recovery.md"
    document.write_text(f"# Disaster recovery\n\n**Last reviewed:** {day}\n\nRestore the newest dump.\n")
    run = run_with_document(run_checks, profile_variant, {"file": str(document)})
    assert run.outcome(TEST) == "failed"
    assert run.message(TEST) == (
        f"the DR document {document} was last reviewed 93d ago (on {day}, its line 3, '**Last reviewed:** {day}'; "
        "max 92d): review it and update that line (QP-16)"
    )
    assert run.checks[TEST]["metrics"] == {"dr_document_age_seconds": 93 * 86400.0}


def test_the_last_git_commit_counts_not_the_mtime(run_checks: Callable[..., Any],
                                                    profile_variant: Callable[..., Path], tmp_path: Path) -> None:
    """A document without a review line in a git work tree is as old as its last commit, though a checkout (here:
    a write after the commit) made its mtime new; a freshly committed one passes."""
    repo = tmp_path / "runbooks"
    (repo / "docs").mkdir(parents=True)
    git(repo, "init", "-q")
    old, fresh = repo / "docs" / "disaster-recovery.md", repo / "docs" / "dr-fresh.md"
    old.write_text("# Disaster recovery\n\nRestore the newest dump.\n")
    committed = datetime.now(UTC).replace(microsecond=0) - timedelta(days=100)
    git(repo, "add", "docs/disaster-recovery.md")
    git(repo, "commit", "-q", "-m", "DR document", when=committed)
    old.write_text(old.read_text())  # mtime: now
    short = git(repo, "log", "-1", "--format=%h", "--", "docs/disaster-recovery.md")
    run = run_with_document(run_checks, profile_variant, {"file": str(old)})
    assert run.outcome(TEST) == "failed"
    assert run.message(TEST) == (
        f"the DR document {old} was last reviewed 100d ago (on {committed.date().isoformat()}, the last git commit "
        f"that changed it, {short}; max 92d): review it and commit the update (QP-16)"
    )
    fresh.write_text("# Disaster recovery, reviewed\n")
    git(repo, "add", "docs/dr-fresh.md")
    git(repo, "commit", "-q", "-m", "DR document reviewed")
    run = run_with_document(run_checks, profile_variant, {"file": str(fresh), "max_age": "92d"})
    assert run.outcome(TEST) == "passed"
    short = git(repo, "log", "-1", "--format=%h", "--", "docs/dr-fresh.md")
    assert run.checks[TEST]["evidence"]["reviewed_from"] == f"the last git commit that changed it, {short}"


def test_outside_git_the_mtime_counts_and_says_so(run_checks: Callable[..., Any],
                                                   profile_variant: Callable[..., Path], tmp_path: Path) -> None:
    document = tmp_path / "dr.md"
    document.write_text("# Disaster recovery\n")
    modified = datetime.now(UTC) - timedelta(days=120, hours=1)
    os.utime(document, (modified.timestamp(), modified.timestamp()))
    run = run_with_document(run_checks, profile_variant, {"file": str(document)})
    assert run.message(TEST) == (
        f"the DR document {document} was last reviewed 120d ago (on {modified.date().isoformat()}, its mtime, which "
        "a checkout resets; max 92d): review it and add a 'Last reviewed: YYYY-MM-DD' line (a checkout resets the "
        "mtime) (QP-16)"
    )


def test_a_missing_document_fails_and_a_future_date_fails(run_checks: Callable[..., Any],
                                                          profile_variant: Callable[..., Path],
                                                          tmp_path: Path) -> None:
    missing = tmp_path / "docs" / "disaster-recovery.md"
    run = run_with_document(run_checks, profile_variant, {"file": str(missing)})
    assert (run.outcome(TEST), run.message(TEST)) == ("failed", (
        f"the DR document {missing} does not exist: write it there, or point dr_document.file at it (QP-16)"
    ))
    day = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    future = tmp_path / "future.md"
    future.write_text(f"Reviewed: {day}\n")
    run = run_with_document(run_checks, profile_variant, {"file": str(future)})
    assert (run.outcome(TEST), run.message(TEST)) == ("failed", (
        f"the DR document {future} says it was reviewed on {day} (its line 1, 'Reviewed: {day}'), a date in the "
        "future: correct the date (QP-16)"
    ))


def test_the_sandbox_document_passes_and_none_declared_skips(
    run_checks: Callable[..., Any], sandbox_profile: Path, profile_variant: Callable[..., Path]
) -> None:
    run = run_checks(sandbox_profile, "recovery/test_dr_document.py")
    assert run.outcome(TEST) == "passed", run.result.stdout.str()
    today = datetime.now(UTC).date().isoformat()
    assert run.checks[TEST]["evidence"]["reviewed_from"] == f"its line 3, 'Last reviewed: {today}'"
    assert run.checks[TEST]["runbook"] == ["QP-16"]
    assert run.checks[TEST]["markers"] == ["quarterly", "recovery"]
    run = run_with_document(run_checks, profile_variant, None)
    assert (run.outcome(TEST), run.message(TEST)) == ("skipped", (
        "no dr_document declared: declare dr_document.file (the disaster-recovery document) in the profile to "
        "verify QP-16"
    ))
