"""Every run leaves report.html, junit.xml, allure-results/, evidence.json and latest."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from opsverify.reporting.rundir import new_run_dir, point_latest

ROOT = Path(__file__).resolve().parents[1]


def test_run_dirs_are_utc_stamped_and_unique(tmp_path: Path) -> None:
    now = datetime(2026, 11, 22, 1, 2, 3, tzinfo=UTC)
    first, second = new_run_dir(tmp_path, now), new_run_dir(tmp_path, now)
    assert (first.name, second.name) == ("20261122T010203Z", "20261122T010203Z-1")
    assert point_latest(second).resolve() == second.resolve()
    assert point_latest(first).resolve() == first.resolve()


def test_health_run_writes_every_report(pytester: pytest.Pytester, sandbox_profile: Path) -> None:
    reports = pytester.path / "reports"
    result = pytester.runpytest_subprocess(
        str(ROOT / "checks" / "health" / "test_http_health.py"), "--rootdir", str(ROOT), "-c",
        str(ROOT / "pyproject.toml"), "--profile", str(sandbox_profile), "--reports-root", str(reports),
        "-n", "2", timeout=240,
    )
    assert result.ret == 0, result.stdout.str()
    run_dir = (reports / "latest").resolve()
    assert re.fullmatch(r"\d{8}T\d{6}Z(-\d+)?", run_dir.name)
    result.stdout.fnmatch_lines([f"report.html*{run_dir / 'report.html'}"])

    html = (run_dir / "report.html").read_text()
    assert "test_health_answers_within_latency_budget[quantum-planner]" in html
    assert not re.search(r'<(script|link)[^>]+(src|href)="https?://', html), "report must open offline"

    junit = ElementTree.parse(run_dir / "junit.xml").getroot()
    cases = junit.findall(".//testcase")
    assert len(cases) == 6
    props = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")} for c in cases}
    assert props["test_health_endpoint_answers_2xx[quantum-planner]"]["runbook"] == "PF-01 QP-01 QP-29"
    assert props["test_health_answers_within_latency_budget[quantum-planner]"]["runbook"] == "PF-01 QP-01"
    assert {p["domain"] for p in props.values()} == {"health"}

    results = [json.loads(p.read_text()) for p in (run_dir / "allure-results").glob("*-result.json")]
    assert len(results) == 6
    labels = {(lab["name"], lab["value"]) for lab in results[0]["labels"]}
    assert {("epic", "health"), ("story", "PF-01"), ("severity", "critical"), ("tag", "daily")} <= labels
    assert any(lab[0] == "feature" for lab in labels)

    evidence = json.loads((run_dir / "evidence.json").read_text())
    assert evidence["run"]["totals"] == {"passed": 6}
    latency = [c["runbook"] for c in evidence["checks"] if "latency_budget" in c["nodeid"]]
    assert latency == [["PF-01", "QP-01"]] * 2
    assert all(c["runbook"] == ["PF-01", "QP-01", "QP-29"] for c in evidence["checks"] if "latency" not in c["nodeid"])


def test_reports_show_the_runbook_ids_of_each_backup_kind(
    run_checks: Callable[..., Any], sandbox_profile: Path
) -> None:
    """A Redis backup's freshness carries no PostgreSQL procedure, in every report; a PostgreSQL dump's does."""
    run = run_checks(sandbox_profile, "backup/test_backup_freshness.py", extra=("-k", "younger_than_rpo"))
    test = "test_newest_backup_is_younger_than_rpo"
    expected = {"redis-rdb": ["PF-10"], "pf-postgres-daily": ["PF-04", "PF-10", "PF-16", "QP-18"]}

    junit = ElementTree.parse(run.report_dir / "junit.xml").getroot()
    props = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")} for c in junit.iter("testcase")}
    blob = re.search(r'data-jsonblob="([^"]*)"', (run.report_dir / "report.html").read_text())
    assert blob is not None
    rows = json.loads(html.unescape(blob.group(1)))["tests"]
    results = [json.loads(p.read_text()) for p in (run.report_dir / "allure-results").glob("*-result.json")]
    stories = {r["name"]: {lab["value"] for lab in r["labels"] if lab["name"] == "story"} for r in results}
    for source, ids in expected.items():
        name = f"{test}[{source}]"
        assert run.checks[f"test_backup_freshness.py::{name}"]["runbook"] == ids
        assert props[name]["runbook"] == " ".join(ids)
        html_row = rows[f"checks/backup/test_backup_freshness.py::{name}"][0]["resultsTableRow"]
        assert html_row[2] == f"<td>{' '.join(ids)}</td>"
        assert stories[name] == set(ids)


def test_reports_hold_no_secret(run_checks: Callable[..., Any], profile_variant: Callable[..., Path]) -> None:
    import yaml

    profile = yaml.safe_load(profile_variant().read_text())
    secrets = {Path(e["password_file"]).read_text().strip() for e in profile["databases"] + profile["redis"]}
    run = run_checks(profile_variant(), "health")
    assert run.result.ret == 0
    files = [p for p in run.report_dir.rglob("*") if p.is_file()]
    assert len(files) > 5
    for path in files:
        text = path.read_text(errors="replace")
        assert not any(s in text for s in secrets), f"a secret appears in {path}"
    assert not any(s in run.result.stdout.str() for s in secrets)


def test_bad_profile_stops_the_run_with_one_clear_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: broken\nservices:\n  - name: api\n    url: nowhere\n")
    result = pytester.runpytest_subprocess(
        str(ROOT / "checks"), "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), "--profile", str(bad),
        "--no-reports", timeout=180,
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: profile * is not valid (1 problem(s)):"])
    assert "  services[0].url (line 4): 'nowhere' is not an http:// or https:// URL" in result.stderr.lines
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_missing_profile_names_the_fix(pytester: pytest.Pytester, tmp_path: Path) -> None:
    result = pytester.runpytest_subprocess(
        str(ROOT / "checks"), "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
        "--profile", str(tmp_path / "absent.yaml"), "--no-reports", timeout=180,
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: no profile at *absent.yaml (named by --profile): the file does not exist*"])
