"""Allure results link every runbook procedure a check verifies and show its measured values, thresholds and
metrics; ``make report`` (scripts/report.sh) renders them into one self-contained HTML file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FRESHNESS = "test_backup_freshness.py::test_newest_backup_is_younger_than_rpo"


def allure_results(report_dir: Path) -> dict[str, dict[str, Any]]:
    """Each allure-results test result by its full name (``checks.….test_file#test_name[param]`` → short name)."""
    results = [json.loads(p.read_text()) for p in (report_dir / "allure-results").glob("*-result.json")]
    return {r["name"]: r for r in results}


def parameters(result: dict[str, Any]) -> dict[str, str]:
    """An Allure result's parameters, their values as written (the recorded text: ``1h``)."""
    return {p["name"]: p["value"] for p in result["parameters"]}


def test_allure_links_each_runbook_id_to_the_profile_template_and_shows_measured_values(
    run_checks: Callable[..., Any], profile_variant: Callable[..., Path]
) -> None:
    template = "https://git.example.com/ops/runbooks/-/blob/main/INVENTORY.md#{id}"
    profile = profile_variant(lambda data: data.setdefault("reporting", {}).update(runbook_url=template))
    run = run_checks(profile, "backup/test_backup_freshness.py", extra=("-k", "younger_than_rpo"))
    assert run.result.ret == 0, run.result.stdout.str()
    results = allure_results(run.report_dir)
    checked = 0
    for name, check in run.checks.items():
        if not name.startswith(FRESHNESS):
            continue
        result = results[name.split("::")[1]]
        expected = [{"type": "link", "name": i, "url": template.format(id=i)} for i in check["runbook"]]
        assert sorted(result["links"], key=lambda link: link["name"]) == expected
        shown = parameters(result)
        assert {k: shown[k] for k in check["measured"]} == check["measured"]  # the text, not a repr
        assert {k: shown[k] for k in check["thresholds"]} == check["thresholds"]
        assert {k: float(shown[k]) for k in check["metrics"]} == check["metrics"]
        assert set(check["metrics"]) == {"backup_age_seconds", "backup_rpo_seconds"}
        assert check["thresholds"]["rpo"] == "1d"
        checked += 1
    assert checked == len(results) >= 5
    pf_daily = results["test_newest_backup_is_younger_than_rpo[pf-postgres-daily]"]
    assert [link["url"] for link in sorted(pf_daily["links"], key=lambda link: link["name"])] == [
        f"https://git.example.com/ops/runbooks/-/blob/main/INVENTORY.md#{i}" for i in ("PF-04", "PF-10", "PF-16",
                                                                                      "QP-18")
    ]
    redis = results["test_newest_backup_is_younger_than_rpo[redis-rdb]"]
    assert redis["links"] == [{"type": "link", "name": "PF-10", "url": template.format(id="PF-10")}]


def test_allure_links_default_to_the_inventory_file(
    run_checks: Callable[..., Any], sandbox_profile: Path
) -> None:
    """Without ``reporting.runbook_url`` a link opens the shipped runbooks/INVENTORY.md at the procedure's ID."""
    run = run_checks(sandbox_profile, "health/test_http_health.py", extra=("-k", "latency_budget"))
    assert run.result.ret == 0, run.result.stdout.str()
    inventory = (ROOT / "runbooks" / "INVENTORY.md").resolve().as_uri()
    for name, result in allure_results(run.report_dir).items():
        assert sorted(result["links"], key=lambda link: link["name"]) == [
            {"type": "link", "name": "PF-01", "url": f"{inventory}#PF-01"},
            {"type": "link", "name": "QP-01", "url": f"{inventory}#QP-01"},
        ], name
        assert parameters(result)["budget"] == "500ms"
        assert not parameters(result)["latency"].startswith("'")


def test_with_a_teams_own_inventory_the_shipped_ids_still_link_to_the_shipped_table(
    run_checks: Callable[..., Any], profile_variant: Callable[..., Path], tmp_path: Path
) -> None:
    """A team's table lists its own procedures: a PF/QP ID links to runbooks/INVENTORY.md, where it is listed."""
    team = tmp_path / "RUNBOOK.md"
    team.write_text("## Payments\n\n| ID | cadence | procedure | the check verifies |\n|---|---|---|---|\n"
                    "| OPS-01 | daily | ping the payments API | answers |\n")
    run = run_checks(profile_variant(lambda d: d.setdefault("reporting", {}).update(inventory=str(team))),
                     "health/test_http_health.py", extra=("-k", "latency_budget"))
    assert run.result.ret == 0, run.result.stdout.str()
    shipped = (ROOT / "runbooks" / "INVENTORY.md").resolve().as_uri()
    for name, result in allure_results(run.report_dir).items():
        assert {link["url"] for link in result["links"]} == {f"{shipped}#PF-01", f"{shipped}#QP-01"}, name


def test_a_runbook_url_without_its_id_is_refused() -> None:
    import pytest
    from pydantic import ValidationError

    from opsverify.profile.reporting import Reporting

    with pytest.raises(ValidationError) as no_id:
        Reporting(runbook_url="https://git.example.com/ops/runbooks/INVENTORY.md")
    assert no_id.value.errors()[0]["msg"] == (
        "Value error, 'https://git.example.com/ops/runbooks/INVENTORY.md' has no {id}: write where a procedure's ID "
        "goes, e.g. …/INVENTORY.md#{id}"
    )
    with pytest.raises(ValidationError) as other:
        Reporting(runbook_url="https://wiki/{space}/{id}")
    assert other.value.errors()[0]["msg"] == (
        "Value error, 'https://wiki/{space}/{id}': only {id} may stand in braces (write a literal brace as {{ or }})"
    )
    assert Reporting(runbook_url="https://wiki/{{x}}/{id}").runbook_url == "https://wiki/{{x}}/{id}"


def embedded_test_cases(report: Path) -> dict[str, dict[str, Any]]:
    """The test cases the single-file Allure report embeds (``d('data/test-cases/….json', '<base64>')``)."""
    import base64
    import re

    blobs = re.findall(r"d\('data/test-cases/[^']+',\s*'([^']*)'\)", report.read_text())
    cases = [json.loads(base64.b64decode(blob)) for blob in blobs]
    return {case["name"]: case for case in cases}


def test_make_report_renders_a_real_run_into_one_offline_html_file(
    run_checks: Callable[..., Any], sandbox_profile: Path
) -> None:
    import re
    import subprocess

    run = run_checks(sandbox_profile, "health/test_http_health.py", extra=("-k", "latency_budget or 2xx"))
    assert run.result.ret == 0, run.result.stdout.str()
    done = subprocess.run(["make", "-s", "report", f"RUN={run.report_dir}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    report = run.report_dir / "allure-report.html"
    assert (done.returncode, done.stdout, done.stderr) == (0, f"allure report: {report}\n", "")
    assert [p.name for p in run.report_dir.glob("allure-report*")] == ["allure-report.html"]  # one file, no folder
    text = report.read_text()
    assert re.findall(r'<(?:script|link|img|iframe)[^>]+(?:src|href)="(?!data:)[^"]*"', text) == []
    assert re.findall(r"https?://", text) == []  # not even Allure's analytics script
    cases = embedded_test_cases(report)
    names = {name.split("::")[1] for name in run.checks}
    assert set(cases) == names
    assert len(names) == 4
    case = cases["test_health_answers_within_latency_budget[photonic-foundry]"]
    inventory = (ROOT / "runbooks" / "INVENTORY.md").resolve().as_uri()
    assert sorted(link["url"] for link in case["links"]) == [f"{inventory}#PF-01", f"{inventory}#QP-01"]
    assert {p["name"]: p["value"] for p in case["parameters"]}["budget"] == "500ms"
    assert case["status"] == "passed"


def bare_checkout(tmp_path: Path, with_allure: bool) -> tuple[Path, dict[str, str]]:
    """A checkout holding only scripts/report.sh (and, ``with_allure``, this one's .tools/), and an environment whose
    PATH has the few commands the script uses, neither ``allure`` nor ``java``."""
    import os
    import shutil

    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "report.sh", checkout / "scripts" / "report.sh")
    if with_allure:
        (checkout / ".tools").symlink_to(ROOT / ".tools")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in ("bash", "dirname", "readlink", "ls", "grep", "tail", "mktemp", "mv", "rm", "timeout"):
        found = shutil.which(command)
        assert found is not None, command
        (bin_dir / command).symlink_to(found)
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    return checkout, {**env, "PATH": str(bin_dir)}


def run_report(checkout: Path, env: dict[str, str], run: Path) -> tuple[int, str, str]:
    import subprocess

    done = subprocess.run(["bash", str(checkout / "scripts" / "report.sh"), str(run)], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


def test_make_report_says_how_to_get_allure_and_java_when_they_are_missing(tmp_path: Path) -> None:
    run = tmp_path / "reports" / "20261130T010203Z"
    (run / "allure-results").mkdir(parents=True)
    (run / "allure-results" / "x-result.json").write_text("{}")
    checkout, env = bare_checkout(tmp_path, with_allure=False)
    assert run_report(checkout, env, run) == (2, "", (
        "make report: the Allure command line is not installed: npm install --prefix .tools allure-commandline\n"
        "make report: Allure needs Java, which is not installed: apt-get install default-jre-headless\n"
    ))
    checkout, env = bare_checkout(tmp_path / "with-allure", with_allure=True)
    assert run_report(checkout, env, run) == (
        2, "", "make report: Allure needs Java, which is not installed: apt-get install default-jre-headless\n"
    )


def test_make_report_without_results_names_the_folder_and_make_demo(tmp_path: Path) -> None:
    checkout, env = bare_checkout(tmp_path, with_allure=True)
    for run in (tmp_path / "reports" / "latest", tmp_path / "empty"):
        (tmp_path / "empty" / "allure-results").mkdir(parents=True, exist_ok=True)
        assert run_report(checkout, env, run) == (1, "", (
            f"make report: no Allure results in {run}/allure-results: run the checks first (make demo), or name a "
            "run: make report RUN=reports/<run>\n"
        ))
