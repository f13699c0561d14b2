"""Security scanner evidence: the newest trivy, bandit, pip-audit and safety reports are fresh, parse and are clean.

Runbook, by the report's tool: trivy and bandit are the daily scans of PF-05 (security scan execution)
and PF-42 (vulnerability scanning); pip-audit is PF-05's dependency scan, PF-32's dependency audit,
QP-08's weekly ``pip-audit`` and QP-17's quarterly dependency updates ("as PF-32"); safety is PF-42's
``safety check`` and PF-32's dependency audit. The lock file is PF-32 and QP-17; an offline bandit
run over a source tree is PF-42.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import pytest

from fixtures.expect import expect, fail
from fixtures.reporting import Recorder
from fixtures.scanners import BanditResult, NewestReport
from opsverify.durations import format_duration as fmt
from opsverify.profile.security import BanditRun, LockFile, ScannerReport
from opsverify.scanners import Finding, ScanReport, Skipped, modified_at

pytestmark = [pytest.mark.security]
REPORT_IDS = {
    "trivy": ("PF-05", "PF-42"),
    "bandit": ("PF-05", "PF-42"),
    "pip-audit": ("PF-05", "PF-32", "QP-08", "QP-17"),
    "safety": ("PF-32", "PF-42"),
}
SHOWN = 5  # findings named in a message; the rest are counted
SKEW = timedelta(minutes=5)  # a report dated further ahead than this is wrong, not fresh


def listing(findings: Sequence[Finding | Skipped]) -> str:
    """``B602 (app.py:3, HIGH), … and 4 more``."""
    shown = ", ".join(f.describe() for f in findings[:SHOWN])
    return shown + (f" and {len(findings) - SHOWN} more" if len(findings) > SHOWN else "")


def not_covered(report: ScanReport, skipped: list[Skipped], ignore: str, ran: bool = False) -> str:
    """The sentence for files bandit could not parse or dependencies pip-audit could not audit."""
    if report.tool == "pip-audit":
        what = f"{len(skipped)} dependenc{'y' if len(skipped) == 1 else 'ies'}"
        return (
            f"pip-audit report {report.path} could not audit {what}: {listing(skipped)}; a dependency that was not "
            f"audited is not a clean audit: make it auditable or accept the package names in {ignore}"
        )
    where = f"in {report.path}" if ran else f"listed in bandit report {report.path}"
    return (
        f"bandit could not parse {len(skipped)} file(s) {where}, so they were not scanned: {listing(skipped)}; "
        "fix their syntax (or run bandit under the Python they are written for) so they are scanned"
    )


@pytest.mark.daily
@pytest.mark.weekly
@pytest.mark.runbook(by_kind=REPORT_IDS)
def test_newest_report_is_fresh(
    scanner_report: ScannerReport, newest_report_of: Callable[[ScannerReport], NewestReport], now: datetime,
    evidence: Recorder,
) -> None:
    """PF-05/PF-42/QP-08: the scanner ran within its cadence (by the report's own timestamp, else the file's mtime)."""
    newest = newest_report_of(scanner_report)
    file = newest.present()
    when = newest.report.time if newest.report else modified_at(file)
    source = newest.report.time_from if newest.report else "file mtime"
    age = now - when
    evidence.record(newest=file, age=fmt(age), max_age=fmt(scanner_report.max_age), time_from=source)
    expect(
        -age <= SKEW,
        f"newest {scanner_report.tool} report of {scanner_report.name} is dated {when:%Y-%m-%d %H:%M:%S} UTC by its "
        f"{source}, {fmt(-age)} in the future: {file}; the scanner's clock or the report is wrong",
    )
    expect(
        age <= scanner_report.max_age,
        f"newest {scanner_report.tool} report of {scanner_report.name} is {fmt(age)} old by its {source} "
        f"(max_age {fmt(scanner_report.max_age)}): {file}; the scan no longer runs on its cadence",
    )


@pytest.mark.daily
@pytest.mark.weekly
@pytest.mark.runbook(by_kind=REPORT_IDS)
def test_newest_report_parses(
    scanner_report: ScannerReport, newest_report_of: Callable[[ScannerReport], NewestReport], evidence: Recorder
) -> None:
    """PF-05/PF-42/QP-08: the newest report is the tool's JSON (findings that cannot be read are not evidence)."""
    report = newest_report_of(scanner_report).parsed()
    evidence.record(report=report.path, findings=len(report.findings), generated=report.generated or "not stated")


@pytest.mark.daily
@pytest.mark.weekly
@pytest.mark.runbook(by_kind=REPORT_IDS)
def test_newest_report_has_no_finding_at_or_above_threshold(
    scanner_report: ScannerReport, newest_report_of: Callable[[ScannerReport], NewestReport], evidence: Recorder
) -> None:
    """PF-05/PF-42/PF-32/QP-08: no finding at or above ``fail_at`` outside ``ignore`` (unrated findings count)."""
    report = newest_report_of(scanner_report).parsed()
    ignore = f"scanners.reports[{scanner_report.name}].ignore"
    blocking = report.blocking(scanner_report.fail_at, scanner_report.ignore)
    skipped = report.not_covered(scanner_report.ignore if report.tool == "pip-audit" else ())
    evidence.record(report=report.path, findings=len(report.findings), blocking=len(blocking),
                    fail_at=scanner_report.fail_at, ignored=",".join(scanner_report.ignore) or "none",
                    not_scanned=",".join(s.where for s in report.skipped) or "none")
    problems = []
    if blocking:
        problems.append(
            f"{scanner_report.tool} report {report.path} holds {len(blocking)} finding(s) at or above "
            f"{scanner_report.fail_at}: {listing(blocking)}; fix them or accept their IDs in {ignore}"
        )
    if skipped:
        problems.append(not_covered(report, skipped, ignore))
    expect(not problems, "; and ".join(problems))


@pytest.mark.weekly
@pytest.mark.quarterly
@pytest.mark.runbook("PF-32", "QP-17")
def test_lock_file_is_fresh(lock_file: LockFile, now: datetime, evidence: Recorder) -> None:
    """PF-32/QP-17: the dependency lock file was regenerated within ``max_age`` (by its modification time)."""
    try:
        age = now - modified_at(lock_file.path)
    except OSError as exc:
        fail(f"lock file {lock_file.path} of {lock_file.name} cannot be read ({exc.strerror}): fix scanners.lock_files")
    evidence.record(lock_file=lock_file.path, age=fmt(age), max_age=fmt(lock_file.max_age))
    expect(
        age <= lock_file.max_age,
        f"lock file {lock_file.path} of {lock_file.name} was last written {fmt(age)} ago "
        f"(max_age {fmt(lock_file.max_age)}): update the dependencies and regenerate it",
    )


@pytest.mark.daily
@pytest.mark.runbook("PF-42")
def test_bandit_finds_nothing_at_or_above_threshold(
    bandit_run: BanditRun, bandit_result_of: Callable[[BanditRun], BanditResult], evidence: Recorder
) -> None:
    """PF-42: ``bandit -r SOURCE`` run offline now finds no issue at or above ``fail_at`` outside ``ignore``."""
    result = bandit_result_of(bandit_run)
    if result.report is None:
        fail(f"cannot run bandit for {bandit_run.name}: {result.error}")
    blocking = result.report.blocking(bandit_run.fail_at, bandit_run.ignore)
    skipped = result.report.not_covered()
    evidence.record(source=bandit_run.source, findings=len(result.report.findings), blocking=len(blocking),
                    fail_at=bandit_run.fail_at, not_scanned=",".join(s.where for s in skipped) or "none")
    problems = []
    if blocking:
        problems.append(
            f"bandit finds {len(blocking)} issue(s) at or above {bandit_run.fail_at} in {bandit_run.source}: "
            f"{listing(blocking)}; fix them or accept their test IDs in scanners.bandit[{bandit_run.name}].ignore"
        )
    if skipped:
        problems.append(not_covered(result.report, skipped, "", ran=True))
    expect(not problems, "; and ".join(problems))
