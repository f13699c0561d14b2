"""checks/security/test_scanner_reports.py against real scanner evidence and real faults.

Reports are written in each tool's own JSON format: bandit's for real (bandit runs on a file with
``subprocess.call(..., shell=True)``, B602 HIGH), trivy's, pip-audit's and safety's (both of its
formats) as those tools write them. The faults are files in tmp_path: a report whose own timestamp is
old, one whose file is old, a HIGH finding, an unrated pip-audit finding, a truncated report, an empty
report directory, an old lock file and a source tree with a HIGH issue; the shared sandbox is only read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opsverify.errors import ProfileError
from opsverify.profile import load_profile
from opsverify.scanners import MAX_REPORT_BYTES, ReportError, read_report, run_bandit

Run = Callable[..., Any]
Variant = Callable[..., Path]
CHECKS = "security/test_scanner_reports.py"
FRESH = "test_scanner_reports.py::test_newest_report_is_fresh"
PARSES = "test_scanner_reports.py::test_newest_report_parses"
CLEAN = "test_scanner_reports.py::test_newest_report_has_no_finding_at_or_above_threshold"
LOCK = "test_scanner_reports.py::test_lock_file_is_fresh"
BANDIT = "test_scanner_reports.py::test_bandit_finds_nothing_at_or_above_threshold"
SHELL_CALL = "import subprocess\n\n\ndef run(command):\n    return subprocess.call(command, shell=True)\n"
SAFE_CODE = "def add(a, b):\n    return a + b\n"

TRIVY = {  # trivy image -f json (schema 2), trimmed to the fields a reader looks at
    "SchemaVersion": 2,
    "CreatedAt": "CREATED",
    "ArtifactName": "photonic-foundry:latest",
    "ArtifactType": "container_image",
    "Results": [
        {
            "Target": "photonic-foundry:latest (debian 12.1)", "Class": "os-pkgs", "Type": "debian",
            "Vulnerabilities": [
                {"VulnerabilityID": "CVE-2023-0286", "PkgName": "libssl3", "InstalledVersion": "3.0.7-1",
                 "FixedVersion": "3.0.8-1", "Severity": "HIGH", "Title": "openssl: X.400 address type confusion"},
                {"VulnerabilityID": "CVE-2022-40897", "PkgName": "setuptools", "InstalledVersion": "65.5.0",
                 "Severity": "MEDIUM", "Title": "pypa-setuptools: Regular Expression Denial of Service"},
            ],
        },
        {
            "Target": "Dockerfile", "Class": "config", "Type": "dockerfile",
            "Misconfigurations": [
                {"Type": "Dockerfile Security Check", "ID": "DS002", "AVDID": "AVD-DS-0002",
                 "Title": "Image user should not be 'root'", "Severity": "HIGH", "Status": "FAIL"},
                {"Type": "Dockerfile Security Check", "ID": "DS026", "AVDID": "AVD-DS-0026",
                 "Title": "No HEALTHCHECK defined", "Severity": "LOW", "Status": "PASS"},
            ],
        },
        {
            "Target": "app/settings.py", "Class": "secret",
            "Secrets": [{"RuleID": "aws-access-key-id", "Category": "AWS", "Severity": "CRITICAL",
                         "Title": "AWS Access Key ID", "StartLine": 3, "EndLine": 3}],
        },
    ],
}
PIP_AUDIT = {  # pip-audit -f json
    "dependencies": [
        {"name": "requests", "version": "2.30.0", "vulns": [
            {"id": "PYSEC-2023-74", "fix_versions": ["2.31.0"], "aliases": ["CVE-2023-32681", "GHSA-j8r2-6x86-q33q"],
             "description": "Requests is a HTTP library. Since Requests 2.3.0, Requests has been leaking ..."}]},
        {"name": "certifi", "version": "2024.2.2", "vulns": []},
        {"name": "opsverify", "skip_reason": "Dependency not found on PyPI and could not be audited: opsverify"},
    ],
    "fixes": [],
}
SAFETY_2 = {  # safety check --json (2.x/3.x)
    "report_meta": {"scan_target": "environment", "safety_version": "2.3.5", "timestamp": "STAMP",
                    "packages_found": 2, "vulnerabilities_found": 1, "json_version": 1},
    "scanned_packages": {"sqlalchemy": {"name": "sqlalchemy", "version": "1.2.17"}},
    "affected_packages": {},
    "announcements": [],
    "vulnerabilities": [
        {"vulnerability_id": "37071", "package_name": "sqlalchemy", "ignored": {}, "vulnerable_spec": "<1.2.18",
         "analyzed_version": "1.2.17", "advisory": "SQLAlchemy 1.2.18 includes a fix for CVE-2019-7548 ...",
         "CVE": "CVE-2019-7548", "severity": {"source": "CVE-2019-7548", "cvssv2": None,
                                              "cvssv3": {"base_score": 7.8, "base_severity": "HIGH"}},
         "more_info_url": "https://pyup.io/v/37071/f17"},
    ],
    "ignored_vulnerabilities": [],
    "remediations": {},
}
SAFETY_1 = [  # safety 1.x check --json: [package, affected, installed, advisory, id]
    ["django", "<2.2.18", "2.2.1", "Django 2.2.18 fixes a security issue ...", "39594"],
]


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def real_bandit_report(out: Path, code: str) -> Path:
    """``bandit -f json -o OUT FILE`` run for real over ``code``."""
    source = out.parent / f"{out.stem}_src.py"
    out.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(code)
    command = [sys.executable, "-m", "bandit", "-q", "-f", "json", "-o", str(out), str(source)]
    assert subprocess.run(command, capture_output=True, timeout=120, check=False).returncode in (0, 1)
    source.unlink()
    return out


def age(path: Path, by: timedelta) -> None:
    """Set the file's mtime ``by`` into the past (as a report written then)."""
    then = time.time() - by.total_seconds()
    os.utime(path, (then, then))


def report(name: str, tool: str, path: Path, **extra: Any) -> dict[str, Any]:
    return {"name": name, "tool": tool, "path": str(path), **extra}


def scanners(**section: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation replacing the sandbox's ``scanners`` with ``section``."""

    def mutate(data: dict[str, Any]) -> None:
        data["scanners"] = section

    return mutate


# --- the parsers, over each tool's format --------------------------------------------------------


def test_a_real_bandit_report_gives_its_findings_and_timestamp(tmp_path: Path) -> None:
    parsed = read_report("bandit", real_bandit_report(tmp_path / "bandit.json", SHELL_CALL))
    assert [(f.id, f.severity) for f in parsed.findings] == [("B404", "LOW"), ("B602", "HIGH")]
    assert parsed.generated is not None
    assert abs(datetime.now(UTC) - parsed.generated) < timedelta(minutes=2)
    assert [f.id for f in parsed.blocking("HIGH")] == ["B602"]
    assert parsed.blocking("HIGH", ["b602"]) == []


def test_trivy_reports_of_both_schemas_give_failing_findings_only(tmp_path: Path) -> None:
    data = {**TRIVY, "CreatedAt": "2026-03-01T10:20:30.123456789+01:00"}
    parsed = read_report("trivy", write(tmp_path / "trivy.json", data))
    assert parsed.generated == datetime(2026, 3, 1, 9, 20, 30, 123456, tzinfo=UTC)
    assert [f.id for f in parsed.findings] == ["CVE-2023-0286", "CVE-2022-40897", "DS002", "aws-access-key-id"]
    assert [f.describe() for f in parsed.blocking("CRITICAL")] == ["aws-access-key-id (app/settings.py:3, CRITICAL)"]
    assert parsed.blocking("HIGH", ["AVD-DS-0002", "aws-access-key-id"])[0].id == "CVE-2023-0286"
    legacy = read_report("trivy", write(tmp_path / "legacy.json", TRIVY["Results"]))  # before trivy 0.20
    assert (legacy.generated, len(legacy.findings)) == (None, 4)


def test_pip_audit_findings_are_unrated_and_count_at_any_threshold(tmp_path: Path) -> None:
    parsed = read_report("pip-audit", write(tmp_path / "audit.json", PIP_AUDIT))
    assert [f.describe() for f in parsed.blocking("CRITICAL")] == ["PYSEC-2023-74 (requests 2.30.0, unrated)"]
    assert parsed.blocking("LOW", ["CVE-2023-32681"]) == []  # ignored by an alias
    assert parsed.generated is None
    assert parsed.time_from == "file mtime"
    assert [s.describe() for s in parsed.not_covered()] == [
        "opsverify (Dependency not found on PyPI and could not be audited: opsverify)"
    ]
    assert parsed.not_covered(["OpsVerify"]) == []  # accepted by package name
    legacy = read_report("pip-audit", write(tmp_path / "legacy.json", PIP_AUDIT["dependencies"]))
    assert [f.id for f in legacy.findings] == ["PYSEC-2023-74"]


def test_safety_reports_of_both_formats_parse(tmp_path: Path) -> None:
    parsed = read_report("safety", write(tmp_path / "safety.json", {**SAFETY_2, "report_meta": {
        **SAFETY_2["report_meta"], "timestamp": "2026-03-01 10:20:30"}}))
    assert parsed.generated == datetime(2026, 3, 1, 10, 20, 30).astimezone(UTC)  # safety writes local time
    assert [f.describe() for f in parsed.findings] == ["37071 (sqlalchemy 1.2.17, HIGH)"]
    assert parsed.blocking("CRITICAL") == []
    assert parsed.blocking("HIGH", ["CVE-2019-7548"]) == []
    old = read_report("safety", write(tmp_path / "safety1.json", SAFETY_1))
    assert [f.describe() for f in old.findings] == ["39594 (django 2.2.1, unrated)"]


def test_a_report_that_is_no_report_is_refused_with_one_sentence(tmp_path: Path) -> None:
    bandit_json = real_bandit_report(tmp_path / "bandit.json", SAFE_CODE)
    with pytest.raises(ReportError, match=r"^.*bandit\.json is JSON but not a trivy JSON report \(expected an object "
                       r"with SchemaVersion and Results\[\]\): write it with trivy -f json$"):
        read_report("trivy", bandit_json)
    huge = tmp_path / "huge.json"
    with huge.open("wb") as out:
        out.truncate(MAX_REPORT_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(ReportError, match=r"huge\.json is 64 MiB, over the 64 MiB a scanner report may be: point"):
        read_report("bandit", huge)


def test_bandit_runs_offline_over_a_tree(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "jobs.py").write_text(SHELL_CALL)
    parsed = run_bandit(tmp_path, timeout=120)
    assert [f.describe() for f in parsed.blocking("HIGH")] == ["B602 (pkg/jobs.py:5, HIGH)"]
    with pytest.raises(ReportError, match=r"bandit source tree .*/nowhere does not exist: fix scanners\.bandit"):
        run_bandit(tmp_path / "nowhere", timeout=120)


# --- the checks, on the sandbox and on faults ----------------------------------------------------


def test_the_sandbox_scanner_evidence_passes(run_checks: Run, sandbox_profile: Path, sandbox: Any) -> None:
    assert sandbox.scanners is not None
    assert [r.tool for r in sandbox.scanners.reports] == ["bandit"]
    run = run_checks(sandbox_profile, CHECKS)
    names = [f"{FRESH}[sandbox-app-bandit]", f"{PARSES}[sandbox-app-bandit]", f"{CLEAN}[sandbox-app-bandit]",
             f"{LOCK}[sandbox-app]", f"{BANDIT}[sandbox-app]"]
    assert {n: run.outcome(n) for n in names} == dict.fromkeys(names, "passed"), run.result.stdout.str()[-3000:]
    assert run.failed() == set()


def test_every_tool_clean_and_fresh_passes(run_checks: Run, profile_variant: Variant, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    clean_trivy = {**TRIVY, "CreatedAt": now.isoformat(), "Results": [{"Target": "x", "Vulnerabilities": None}]}
    write(tmp_path / "trivy" / "image.json", clean_trivy)
    write(tmp_path / "audit" / "audit.json", {"dependencies": [{"name": "certifi", "version": "1", "vulns": []}]})
    write(tmp_path / "safety" / "safety.json", SAFETY_2)  # one HIGH finding, accepted by its CVE
    real_bandit_report(tmp_path / "bandit" / "bandit.json", SHELL_CALL)
    section = [report("trivy-image", "trivy", tmp_path / "trivy"), report("audit", "pip-audit", tmp_path / "audit"),
               report("safety", "safety", tmp_path / "safety", ignore=["CVE-2019-7548"]),
               report("bandit", "bandit", tmp_path / "bandit", fail_at="CRITICAL")]
    run = run_checks(profile_variant(scanners(reports=section)), CHECKS)
    assert run.failed() == set(), run.result.stdout.str()[-3000:]
    assert sum(c["outcome"] == "passed" for c in run.checks.values()) == 12
    ids = {name: run.checks[f"{CLEAN}[{name}]"]["runbook"] for name in ("trivy-image", "audit", "safety", "bandit")}
    assert ids == {  # by the report's tool (INVENTORY.md: PF-05, PF-42, PF-32, QP-08, QP-17)
        "trivy-image": ["PF-05", "PF-42"], "bandit": ["PF-05", "PF-42"],
        "audit": ["PF-05", "PF-32", "QP-08", "QP-17"], "safety": ["PF-32", "PF-42"],
    }
    assert run.checks[f"{FRESH}[audit]"]["cadence"] == ["daily", "weekly"]


def test_stale_reports_fail_freshness_only(run_checks: Run, profile_variant: Variant, tmp_path: Path) -> None:
    old = real_bandit_report(tmp_path / "bandit" / "bandit-1.json", SAFE_CODE)
    data = json.loads(old.read_text())
    data["generated_at"] = (datetime.now(UTC) - timedelta(days=2, hours=3, minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old.write_text(json.dumps(data))  # the file is new; the scan it holds ran two days ago
    audit = write(tmp_path / "audit" / "audit-1.json", {"dependencies": []})
    age(audit, timedelta(days=8, hours=2, minutes=30))  # pip-audit writes no timestamp: its mtime tells
    section = [report("old-bandit", "bandit", tmp_path / "bandit"),
               report("old-audit", "pip-audit", tmp_path / "audit", max_age="7d")]
    run = run_checks(profile_variant(scanners(reports=section)), CHECKS)
    assert run.failed() == {f"{FRESH}[old-bandit]", f"{FRESH}[old-audit]"}
    assert run.message(f"{FRESH}[old-bandit]") == (
        f"newest bandit report of old-bandit is 2d3h old by its report timestamp (max_age 1d): {old}; "
        "the scan no longer runs on its cadence"
    )
    assert run.message(f"{FRESH}[old-audit]") == (
        f"newest pip-audit report of old-audit is 8d2h old by its file mtime (max_age 7d): {audit}; "
        "the scan no longer runs on its cadence"
    )


def test_findings_at_or_above_the_threshold_fail_with_their_ids(
    run_checks: Run, profile_variant: Variant, tmp_path: Path
) -> None:
    trivy = write(tmp_path / "trivy" / "image.json", {**TRIVY, "CreatedAt": datetime.now(UTC).isoformat()})
    audit = write(tmp_path / "audit" / "audit.json", PIP_AUDIT)
    write(tmp_path / "safety" / "safety.json", SAFETY_1)
    section = [report("trivy-image", "trivy", tmp_path / "trivy"),
               report("audit", "pip-audit", tmp_path / "audit", fail_at="CRITICAL"),
               report("safety", "safety", tmp_path / "safety", ignore=["39594"])]
    run = run_checks(profile_variant(scanners(reports=section)), CHECKS)
    assert run.failed() == {f"{CLEAN}[trivy-image]", f"{CLEAN}[audit]"}
    assert run.message(f"{CLEAN}[trivy-image]") == (
        f"trivy report {trivy} holds 3 finding(s) at or above HIGH: aws-access-key-id (app/settings.py:3, "
        "CRITICAL), CVE-2023-0286 (libssl3 3.0.7-1, HIGH), DS002 (Dockerfile, HIGH); fix them or accept their IDs "
        "in scanners.reports[trivy-image].ignore"
    )
    assert run.message(f"{CLEAN}[audit]") == (  # pip-audit rates nothing: unrated counts at any threshold
        f"pip-audit report {audit} holds 1 finding(s) at or above CRITICAL: PYSEC-2023-74 (requests 2.30.0, "
        "unrated); fix them or accept their IDs in scanners.reports[audit].ignore; and pip-audit report "
        f"{audit} could not audit 1 dependency: opsverify (Dependency not found on PyPI and could not be audited: "
        "opsverify); a dependency that was not audited is not a clean audit: make it auditable or accept the "
        "package names in scanners.reports[audit].ignore"
    )


def test_an_unreadable_or_missing_report_fails(run_checks: Run, profile_variant: Variant, tmp_path: Path) -> None:
    good = real_bandit_report(tmp_path / "cut" / "bandit-1.json", SAFE_CODE)
    cut = tmp_path / "cut" / "bandit-2.json"
    cut.write_text(good.read_text()[:100])  # the newest: a scan killed while writing
    age(good, timedelta(hours=1))
    (tmp_path / "empty").mkdir()
    section = [report("cut", "bandit", tmp_path / "cut", pattern="bandit-*.json"),
               report("none-yet", "trivy", tmp_path / "empty"), report("no-dir", "safety", tmp_path / "gone")]
    run = run_checks(profile_variant(scanners(reports=section)), CHECKS)
    missing = {f"{t}[none-yet]" for t in (FRESH, PARSES, CLEAN)}
    no_dir = {f"{t}[no-dir]" for t in (FRESH, PARSES, CLEAN)}
    assert run.failed() == {f"{PARSES}[cut]", f"{CLEAN}[cut]", *missing, *no_dir}
    for test in no_dir:
        assert run.message(test) == (
            f"cannot list safety reports of no-dir: report directory {tmp_path / 'gone'} does not exist: "
            "fix the path or run the scan"
        )
    with pytest.raises(json.JSONDecodeError) as error:
        json.loads(cut.read_text())
    where = f"line {error.value.lineno} column {error.value.colno}: {error.value.msg}"
    unreadable = (
        f"cannot read the newest bandit report of cut: {cut} is not valid JSON ({where}): "
        "the scan wrote a truncated or non-JSON report"
    )
    assert run.message(f"{PARSES}[cut]") == run.message(f"{CLEAN}[cut]") == unreadable
    for test in missing:
        assert run.message(test) == (
            f"no trivy report in {tmp_path / 'empty'} matches *.json (none-yet): the scan has not run or writes its "
            "JSON elsewhere; run it on its cadence with JSON output into that directory"
        )


def test_a_stale_lock_file_and_a_high_bandit_issue_fail(
    run_checks: Run, profile_variant: Variant, tmp_path: Path
) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("prometheus-client==0.20.0\n")
    age(lock, timedelta(days=100, hours=2, minutes=30))
    fresh = tmp_path / "fresh.lock"
    fresh.write_text("prometheus-client==0.26.0\n")
    for name, code in (("risky", SHELL_CALL), ("accepted", SHELL_CALL), ("clean", SAFE_CODE)):
        (tmp_path / name / "svc").mkdir(parents=True)
        (tmp_path / name / "svc" / "jobs.py").write_text(code)
    mutate = scanners(
        lock_files=[{"name": "old-lock", "path": str(lock)}, {"name": "new-lock", "path": str(fresh)},
                    {"name": "gone-lock", "path": str(tmp_path / "gone.lock")}],
        bandit=[{"name": "risky", "source": str(tmp_path / "risky")},
                {"name": "accepted", "source": str(tmp_path / "accepted"), "ignore": ["B602"]},
                {"name": "clean", "source": str(tmp_path / "clean"), "fail_at": "LOW"}],
    )
    run = run_checks(profile_variant(mutate), CHECKS)
    assert run.failed() == {f"{LOCK}[old-lock]", f"{LOCK}[gone-lock]", f"{BANDIT}[risky]"}
    assert run.message(f"{LOCK}[gone-lock]") == (
        f"lock file {tmp_path / 'gone.lock'} of gone-lock cannot be read (No such file or directory): "
        "fix scanners.lock_files"
    )
    assert run.message(f"{LOCK}[old-lock]") == (
        f"lock file {lock} of old-lock was last written 100d2h ago (max_age 92d): "
        "update the dependencies and regenerate it"
    )
    assert run.message(f"{BANDIT}[risky]") == (
        f"bandit finds 1 issue(s) at or above HIGH in {tmp_path / 'risky'}: B602 (svc/jobs.py:5, HIGH); "
        "fix them or accept their test IDs in scanners.bandit[risky].ignore"
    )
    assert {run.outcome(f"{BANDIT}[accepted]"), run.outcome(f"{BANDIT}[clean]")} == {"passed"}


def test_the_sandbox_bandit_scan_is_real_kept_and_due_daily(tmp_path: Path) -> None:
    from opsverify.sandbox import scanners as sandbox_scanners
    from opsverify.sandbox.state import Layout

    layout = Layout(tmp_path)
    assert sandbox_scanners.bandit_due(layout, time.time())
    written = sandbox_scanners.run_bandit(layout)
    parsed = read_report("bandit", written)
    assert parsed.findings
    assert parsed.blocking("HIGH") == []  # the app's own code: low findings only (subprocess use)
    assert not sandbox_scanners.bandit_due(layout, time.time())
    assert sandbox_scanners.bandit_due(layout, time.time() + sandbox_scanners.EVERY)
    for n in range(sandbox_scanners.KEPT + 2):  # older reports beyond KEPT are deleted
        (sandbox_scanners.bandit_dir(layout) / f"bandit-2000010{n}T000000Z.json").write_text("{}")
    newest = sandbox_scanners.run_bandit(layout)
    kept = sorted(sandbox_scanners.bandit_dir(layout).glob("bandit-*.json"))
    assert len(kept) == sandbox_scanners.KEPT
    assert kept[-1] == newest
    lock = sandbox_scanners.write_lock_file(layout).read_text().splitlines()
    assert [line.split("==")[0].replace("_", "-").lower() for line in lock[1:]] == ["prometheus-client"]


BROKEN = "def run(command:\n    return eval(input())\n"  # a syntax error: bandit cannot parse it, so skips it


def test_files_bandit_could_not_parse_fail_the_report_and_the_run(
    run_checks: Run, profile_variant: Variant, tmp_path: Path
) -> None:
    tree = tmp_path / "tree" / "svc"
    tree.mkdir(parents=True)
    (tree / "ok.py").write_text(SAFE_CODE)
    for n in range(7):  # more than a message names
        (tree / f"broken{n}.py").write_text(BROKEN)
    out = tmp_path / "reports" / "bandit.json"
    out.parent.mkdir()
    command = [sys.executable, "-m", "bandit", "-q", "-r", "-f", "json", "-o", str(out), str(tree / "broken0.py")]
    assert subprocess.run(command, capture_output=True, timeout=120, check=False).returncode in (0, 1)
    assert read_report("bandit", out).findings == ()  # eval(input()) is unseen: the file is not scanned
    mutate = scanners(reports=[report("skips", "bandit", out.parent, fail_at="LOW")],
                      bandit=[{"name": "tree", "source": str(tmp_path / "tree"), "fail_at": "LOW"}])
    run = run_checks(profile_variant(mutate), CHECKS)
    assert run.failed() == {f"{CLEAN}[skips]", f"{BANDIT}[tree]"}
    reason = "syntax error while parsing AST from file"
    assert run.message(f"{CLEAN}[skips]") == (
        f"bandit could not parse 1 file(s) listed in bandit report {out}, so they were not scanned: "
        f"{tree / 'broken0.py'} ({reason}); fix their syntax (or run bandit under the Python they are written "
        "for) so they are scanned"
    )
    shown = ", ".join(f"svc/broken{n}.py ({reason})" for n in range(5))
    assert run.message(f"{BANDIT}[tree]") == (
        f"bandit could not parse 7 file(s) in {tmp_path / 'tree'}, so they were not scanned: {shown} and 2 more; "
        "fix their syntax (or run bandit under the Python they are written for) so they are scanned"
    )


def test_a_report_dated_in_the_future_fails_freshness(
    run_checks: Run, profile_variant: Variant, tmp_path: Path
) -> None:
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(days=365, hours=2, minutes=30)
    trivy = write(tmp_path / "trivy" / "image.json", {**TRIVY, "CreatedAt": ahead.isoformat(), "Results": []})
    local = ahead.astimezone().replace(tzinfo=None)  # safety writes local time
    safety = write(tmp_path / "safety" / "safety.json", {**SAFETY_2, "vulnerabilities": [], "report_meta": {
        **SAFETY_2["report_meta"], "timestamp": local.strftime("%Y-%m-%d %H:%M:%S")}})
    skewed = datetime.now(UTC) + timedelta(minutes=3)  # within the clock skew allowed
    write(tmp_path / "near" / "image.json", {**TRIVY, "CreatedAt": skewed.isoformat(), "Results": []})
    section = [report("future-trivy", "trivy", tmp_path / "trivy"), report("future-safety", "safety",
               tmp_path / "safety"), report("near", "trivy", tmp_path / "near")]
    run = run_checks(profile_variant(scanners(reports=section)), CHECKS)
    assert run.failed() == {f"{FRESH}[future-trivy]", f"{FRESH}[future-safety]"}
    for tool, name, file in (("trivy", "future-trivy", trivy), ("safety", "future-safety", safety)):
        message = run.message(f"{FRESH}[{name}]")
        prefix = f"newest {tool} report of {name} is dated {ahead:%Y-%m-%d %H:%M:%S} UTC by its report timestamp, "
        assert message.startswith(prefix), message
        assert message.endswith(f" in the future: {file}; the scanner's clock or the report is wrong"), message
        assert message.removeprefix(prefix).split(" ")[0] in ("365d2h", "365d2h29m", "365d2h30m"), message


def test_fail_at_in_lower_case_is_the_severity(run_checks: Run, profile_variant: Variant, tmp_path: Path) -> None:
    trivy = write(tmp_path / "trivy" / "image.json", {**TRIVY, "CreatedAt": datetime.now(UTC).isoformat()})
    mutate = scanners(reports=[report("trivy-image", "trivy", tmp_path / "trivy", fail_at="critical")],
                      bandit=[{"name": "clean", "source": str(tmp_path / "trivy"), "fail_at": "Medium"}])
    variant = profile_variant(mutate)
    policy = load_profile(variant).scanners
    assert policy is not None
    assert (policy.reports[0].fail_at, policy.bandit[0].fail_at) == ("CRITICAL", "MEDIUM")
    run = run_checks(variant, CHECKS)
    assert run.failed() == {f"{CLEAN}[trivy-image]"}
    assert run.message(f"{CLEAN}[trivy-image]") == (
        f"trivy report {trivy} holds 1 finding(s) at or above CRITICAL: aws-access-key-id (app/settings.py:3, "
        "CRITICAL); fix them or accept their IDs in scanners.reports[trivy-image].ignore"
    )


@pytest.mark.parametrize("section", ["reports", "lock_files", "bandit"])
def test_a_name_used_twice_in_a_scanner_list_is_a_profile_error(
    section: str, profile_variant: Variant, tmp_path: Path
) -> None:
    entry = {"reports": report("dup", "trivy", tmp_path), "lock_files": {"name": "dup", "path": str(tmp_path)},
             "bandit": {"name": "dup", "source": str(tmp_path)}}[section]
    other = {**entry, "name": "other"}
    variant = profile_variant(scanners(**{section: [entry, other, entry]}))
    with pytest.raises(ProfileError) as caught:
        load_profile(variant)
    assert str(caught.value).splitlines()[1:] == [
        f"  scanners (line {_line_of(variant, 'scanners:')}): name 'dup' is used more than once in "
        f"scanners.{section} ({section}[0] and {section}[2]): give each entry its own name"
    ]


def _line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(text))
