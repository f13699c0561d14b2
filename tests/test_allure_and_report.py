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
    """An Allure result's parameters, their values as written (allure-pytest quotes strings: ``'1h'``)."""
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
        assert {k: shown[k] for k in check["measured"]} == {k: f"'{v}'" for k, v in check["measured"].items()}
        assert {k: shown[k] for k in check["thresholds"]} == {k: f"'{v}'" for k, v in check["thresholds"].items()}
        assert {k: float(shown[k].strip("'")) for k in check["metrics"]} == check["metrics"]
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
        assert parameters(result)["budget"] == "'500ms'"
        assert parameters(result)["latency"].startswith("'")


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
