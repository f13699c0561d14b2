"""Waivers end to end: profile validation, the matcher, and runs of checks/ against the test sandbox with a real
fault (photonic-foundry's health URL on a port where nothing listens), waived, unwaived, expired, passing and
under xdist; JUnit, pytest-html and Allure show the waiver."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from opsverify.localserver.net import free_port
from opsverify.profile.reporting import Waiver
from opsverify.reporting import waivers as rules
from opsverify.reporting.evidence import WaiverProblem
from tests.test_summary import table

ROOT = Path(__file__).resolve().parents[1]

Run = Callable[..., Any]
Variant = Callable[..., Path]
TODAY = rules.today_utc()
LATER = TODAY + timedelta(days=30)
HTTP = "health/test_http_health.py"
STATUS = "test_health_endpoint_answers_2xx"
NODE = f"checks/{HTTP}::{STATUS}[photonic-foundry]"
SHORT = f"test_http_health.py::{STATUS}[photonic-foundry]"


def waiver(check: str = NODE, expires: date = LATER, ticket: str = "OPS-1234", **more: Any) -> dict[str, Any]:
    return {"check": check, "reason": "the vendor moves the health endpoint", "owner": "sre@example.com",
            "ticket": ticket, "expires": expires.isoformat(), **more}


def unit(check: str, expires: date, ticket: str = "T-1") -> Waiver:
    return Waiver(check=check, reason="r", owner="o", ticket=ticket, expires=expires)


# --- the matcher ------------------------------------------------------------------------------------------------


def test_a_waiver_matches_its_node_id_exactly_with_brackets_literal() -> None:
    exact = unit("checks/b/test_s.py::test_x[qp-database-daily]", LATER)
    assert rules.matches(exact, "checks/b/test_s.py::test_x[qp-database-daily]")
    assert not rules.matches(exact, "checks/b/test_s.py::test_x[q]")  # not a character class
    assert not rules.matches(exact, "checks/b/test_s.py::test_x[qp-database-daily-2]")


def test_a_glob_matches_with_star_and_question_mark_and_literal_brackets() -> None:
    glob = unit("checks/health/*::test_health_*[photonic-foundry]", LATER)
    assert rules.matches(glob, NODE)
    assert not rules.matches(glob, f"checks/{HTTP}::{STATUS}[quantum-planner]")
    assert rules.matches(unit("checks/backup/*", LATER), "checks/backup/test_s.py::test_x[a]")
    assert rules.matches(unit("checks/b/test_?.py::test_x", LATER), "checks/b/test_s.py::test_x")
    assert not rules.matches(unit("checks/b/test_?.py::test_x", LATER), "checks/B/test_s.py::test_x")  # case counts


def test_the_latest_expiring_unexpired_waiver_wins_and_holds_through_its_day() -> None:
    early, late = unit("checks/*", TODAY, "EARLY"), unit(NODE, TODAY + timedelta(days=5), "LATE")
    assert rules.choose([early, late], NODE, TODAY) == (late, "applied")
    assert rules.choose([early], NODE, TODAY) == (early, "applied")  # the expires day itself still holds
    assert rules.choose([early], NODE, TODAY + timedelta(days=1)) == (early, "expired")
    gone = unit(NODE, TODAY - timedelta(days=3), "GONE")
    assert rules.choose([gone, early], NODE, TODAY + timedelta(days=1)) == (early, "expired")  # the latest expired
    assert rules.choose([early, late], "checks/other.py::test_y", TODAY) == (early, "applied")
    assert rules.choose([late], "checks/other.py::test_y", TODAY) is None


def test_problems_list_expired_and_unmatched_waivers_in_profile_order() -> None:
    listed = [unit("checks/a.py::*", TODAY - timedelta(days=1), "OLD"), unit("checks/b.py::test_x", LATER, "B"),
              unit("checks/c.py::test_x", LATER, "C")]
    matched = rules.matched_by(listed, ["checks/a.py::test_1", "checks/c.py::test_x"])
    assert matched == {0, 2}
    found = rules.problems(listed, matched, TODAY)
    assert found == [
        WaiverProblem(check="checks/a.py::*", owner="o", ticket="OLD", expires=TODAY - timedelta(days=1),
                      problem="expired"),
        WaiverProblem(check="checks/b.py::test_x", owner="o", ticket="B", expires=LATER, problem="unmatched"),
    ]
    assert [rules.problem_text(p) for p in found] == [
        f"waiver for checks/a.py::* (OLD, o) expired on {TODAY - timedelta(days=1)}: the check counts again; renew "
        "it or remove it",
        "waiver for checks/b.py::test_x (B, o) matched no check in this run: correct its check or remove it",
    ]


# --- the profile -------------------------------------------------------------------------------------------------


def profile_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opsverify", "profile", "check", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_profile_check_refuses_a_waiver_too_far_ahead_one_without_expires_and_one_that_is_no_node_id(
    tmp_path: Path,
) -> None:
    too_far = TODAY + timedelta(days=91)
    latest = TODAY + timedelta(days=90)
    path = tmp_path / "waivers.yaml"
    path.write_text(
        "name: waived\n"
        "waivers:\n"
        f"  - {{check: 'checks/a.py::test_x', reason: r, owner: o, ticket: T-1, expires: {too_far}}}\n"
        f"  - {{check: 'checks/a.py::test_x', reason: r, owner: o, ticket: T-2, expires: {latest}}}\n"
        "  - check: 'checks/a.py::test_x'\n"
        "    reason: r\n"
        "    owner: o\n"
        "    ticket: ' '\n"
        "  - {check: test_x, reason: r, owner: o, ticket: T-4, expires: '2026-02-29'}\n"
    )
    result = profile_check(path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"profile {path} is not valid (5 problem(s)):",
        f"  waivers[0].expires (line 3): {too_far} is more than 90d ahead (reporting.waiver_max_ahead): the latest "
        f"allowed today is {latest}; set expires to {latest} or earlier and renew the waiver then",
        "  waivers[2].expires (line 5): expires is required: the last day the waiver holds, as YYYY-MM-DD, at most "
        "90d ahead",
        "  waivers[2].ticket (line 8): ticket is empty: the ticket that tracks the fix",
        "  waivers[3].check (line 9): 'test_x' names no test file (a node id is checks/…/test_x.py::test_y[param]): "
        "name the test file and let a glob stand only in the test name and parameter, e.g. "
        "checks/health/test_http_health.py::*[photonic-foundry]",
        "  waivers[3].expires (line 9): '2026-02-29' is not a date: write the last day the waiver holds as "
        "YYYY-MM-DD",
    ]


def test_waiver_max_ahead_is_the_profiles_to_declare(tmp_path: Path) -> None:
    path = tmp_path / "waivers.yaml"
    ahead = TODAY + timedelta(days=20)
    path.write_text(f"name: waived\nreporting: {{waiver_max_ahead: 14d}}\nwaivers:\n"
                    f"  - {{check: 'checks/a/test_a.py::*', reason: r, owner: o, ticket: T-1, expires: {ahead}}}\n")
    latest = TODAY + timedelta(days=14)
    assert profile_check(path).stderr.splitlines() == [
        f"opsverify: profile {path} is not valid: waivers[0].expires (line 4): {ahead} is more than 14d ahead "
        f"(reporting.waiver_max_ahead): the latest allowed today is {latest}; set expires to {latest} or earlier and "
        "renew the waiver then"]


def test_profile_check_warns_about_an_expired_waiver_and_stays_valid(tmp_path: Path) -> None:
    path = tmp_path / "waivers.yaml"
    gone = TODAY - timedelta(days=2)
    path.write_text("name: waived\nwaivers:\n"
                    f"  - {{check: 'checks/a/test_a.py::*', reason: r, owner: dba@example.com, ticket: OPS-1234, "
                    f"expires: {gone}}}\n"
                    f"  - {{check: 'checks/a/test_a.py::*', reason: r, owner: o, ticket: OPS-9, expires: {TODAY}}}\n")
    result = profile_check(path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"warning: waivers[0] (OPS-1234, dba@example.com) expired on {gone}: the check counts again; renew it or "
        "remove it"]


CATCH_ALL_FIX = ("name the test file and let a glob stand only in the test name and parameter, e.g. "
                 "checks/health/test_http_health.py::*[photonic-foundry]")


def test_profile_check_refuses_catch_all_waivers_and_takes_a_glob_inside_one_file(tmp_path: Path) -> None:
    """``*``, ``*::*``, ``checks/*`` and a directory glob would hide every failure of the suite or of a directory
    (checks added later too); a glob of the test name and parameter inside one named file is a waiver."""
    path = tmp_path / "waivers.yaml"
    checks = ["*", "*::*", "checks/*", "checks/health/*.py::*", "checks/health/test_*.py::*",
              "checks/health/test_http_health.py::*[photonic-foundry]", "checks/*/test_http_health.py::test_health_*"]
    path.write_text("name: waived\nwaivers:\n" + "".join(
        f"  - {{check: '{c}', reason: r, owner: o, ticket: T-{i}, expires: {LATER}}}\n" for i, c in enumerate(checks)))
    result = profile_check(path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"profile {path} is not valid (5 problem(s)):",
        f"  waivers[0].check (line 3): '*' names no test file (a node id is checks/…/test_x.py::test_y[param]): "
        f"{CATCH_ALL_FIX}",
        f"  waivers[1].check (line 4): '*::*' names no test file ('*' before :: does not end in .py): {CATCH_ALL_FIX}",
        f"  waivers[2].check (line 5): 'checks/*' names no test file (a node id is checks/…/test_x.py::test_y[param]): "
        f"{CATCH_ALL_FIX}",
        f"  waivers[3].check (line 6): 'checks/health/*.py::*' names no test file ('*.py' is wildcards only, test_ and "
        f".py aside), so it would waive every check of a directory, new ones too, unseen: {CATCH_ALL_FIX}",
        f"  waivers[4].check (line 7): 'checks/health/test_*.py::*' names no test file ('test_*.py' is wildcards "
        f"only, test_ and .py aside), so it would waive every check of a directory, new ones too, unseen: "
        f"{CATCH_ALL_FIX}",
    ]


# --- runs of checks/ ----------------------------------------------------------------------------------------------


def closed_service(*waivers: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Only photonic-foundry, at a loopback port where nothing listens, with ``waivers``."""
    url = f"http://127.0.0.1:{free_port()}"

    def mutate(data: dict[str, Any]) -> None:
        for key in ("services", "databases", "redis", "dependencies", "hosts"):
            data[key] = [s for s in data.get(key, []) if key == "services" and s["name"] == "photonic-foundry"]
        data["services"][0]["url"] = url
        data["waivers"] = list(waivers)

    return mutate


def healthy(*waivers: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        for key in ("databases", "redis", "dependencies", "hosts"):
            data[key] = []
        data["waivers"] = list(waivers)

    return mutate


def section(stdout: str) -> list[str]:
    """The lines of the terminal summary's "waivers" section."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if re.fullmatch(r"-+ waivers -+", line))
    return list(lines[start + 1:next(i for i in range(start + 1, len(lines)) if lines[i].startswith(("-", "=")))])


def refused(run: Any) -> str:
    return run.message(SHORT)


def test_a_waived_failure_is_reported_waived_and_does_not_fail_the_run(
    run_checks: Run, profile_variant: Variant
) -> None:
    run = run_checks(profile_variant(closed_service(waiver())), f"{HTTP}::{STATUS}")
    assert run.result.ret == 0, run.result.stdout.str()
    check = run.checks[SHORT]
    message = check["message"]
    assert re.fullmatch(r"photonic-foundry health endpoint http://127\.0\.0\.1:\d+/health did not answer: "
                        "connection refused", message)
    assert (check["outcome"], check["notes"]) == ("waived", [])
    assert check["waiver"] == {"check": NODE, "reason": "the vendor moves the health endpoint",
                               "owner": "sre@example.com", "ticket": "OPS-1234", "expires": LATER.isoformat(),
                               "state": "applied"}
    assert run.evidence["run"]["totals"] == {"waived": 1}
    assert run.evidence["waivers"] == []
    assert section(run.result.stdout.str()) == [
        f"WAIVED {NODE}: {message} — sre@example.com, OPS-1234, until {LATER}"]
    run.result.assert_outcomes(xfailed=1)


def test_without_the_waiver_the_same_fault_fails_the_run(run_checks: Run, profile_variant: Variant) -> None:
    run = run_checks(profile_variant(closed_service()), f"{HTTP}::{STATUS}")
    assert run.result.ret == 1
    assert (run.outcome(SHORT), run.checks[SHORT]["waiver"]) == ("failed", None)
    assert "-- waivers --" not in run.result.stdout.str()


def test_an_expired_waiver_lets_the_check_fail_and_is_listed_expired(run_checks: Run, profile_variant: Variant) -> None:
    gone = TODAY - timedelta(days=1)
    run = run_checks(profile_variant(closed_service(waiver(expires=gone))), f"{HTTP}::{STATUS}")
    assert run.result.ret == 1
    check = run.checks[SHORT]
    assert check["outcome"] == "failed"
    assert check["waiver"]["state"] == "expired"
    assert check["notes"] == [f"waiver OPS-1234 (sre@example.com) expired on {gone}: the check counts again"]
    assert run.evidence["waivers"] == [{"check": NODE, "owner": "sre@example.com", "ticket": "OPS-1234",
                                        "expires": gone.isoformat(), "problem": "expired"}]
    stdout = run.result.stdout.str()
    assert (f"opsverify warning: waivers[0] (OPS-1234, sre@example.com) expired on {gone}: the check counts again; "
            "renew it or remove it") in stdout.splitlines()
    expired = (f"waiver for {NODE} (OPS-1234, sre@example.com) expired on {gone}: the check counts again; renew it "
               "or remove it")
    assert section(stdout) == [expired]  # once, per waiver, as the summary says it
    assert table((run.report_dir / "summary.md").read_text(), "Warnings") == [["waiver", expired]]


def test_a_passing_waived_check_stays_passed_with_a_note(run_checks: Run, profile_variant: Variant) -> None:
    node = f"checks/{HTTP}::{STATUS}[quantum-planner]"
    run = run_checks(profile_variant(healthy(waiver(node))), f"{HTTP}::{STATUS}")
    assert run.result.ret == 0
    check = run.checks[f"test_http_health.py::{STATUS}[quantum-planner]"]
    assert (check["outcome"], check["waiver"]["state"]) == ("passed", "not-needed")
    note = "waiver OPS-1234 (sre@example.com) is no longer needed: the check passes; remove it"
    assert check["notes"] == [note]
    assert run.evidence["waivers"] == []
    needless = (f"waiver for {node} (OPS-1234, sre@example.com) is no longer needed: none of the 1 check(s) it "
                "matches failed in this run; remove it")
    assert section(run.result.stdout.str()) == [needless]
    assert table((run.report_dir / "summary.md").read_text(), "Warnings") == [["waiver", needless]]


def test_a_glob_waives_every_check_it_matches_and_an_unmatched_waiver_is_a_warning(
    run_checks: Run, profile_variant: Variant
) -> None:
    glob = f"checks/{HTTP}::*[photonic-foundry]"
    elsewhere = "checks/backup/test_backup_size.py::test_newest_backup_has_not_shrunk[*]"
    run = run_checks(profile_variant(closed_service(waiver(glob), waiver(elsewhere, ticket="OPS-7"))), HTTP)
    assert run.result.ret == 0, run.result.stdout.str()
    assert {t: c["outcome"] for t, c in run.checks.items()} == {
        f"test_http_health.py::{t}[photonic-foundry]": "waived" for t in (
            STATUS, "test_health_body_reports_healthy", "test_health_answers_within_latency_budget")}
    assert {c["waiver"]["check"] for c in run.checks.values()} == {glob}
    assert run.evidence["waivers"] == [{"check": elsewhere, "owner": "sre@example.com", "ticket": "OPS-7",
                                        "expires": LATER.isoformat(), "problem": "unmatched"}]
    assert section(run.result.stdout.str())[-1] == (f"waiver for {elsewhere} (OPS-7, sre@example.com) matched no "
                                                     "check in this run: correct its check or remove it")


def one_service_down(*waivers: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Every service, photonic-foundry at a loopback port where nothing listens (quantum-planner answers)."""
    url = f"http://127.0.0.1:{free_port()}"

    def mutate(data: dict[str, Any]) -> None:
        healthy(*waivers)(data)
        next(s for s in data["services"] if s["name"] == "photonic-foundry")["url"] = url

    return mutate


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_a_glob_that_waives_a_failure_is_not_called_needless_for_its_passing_matches(
    run_checks: Run, profile_variant: Variant, workers: tuple[str, ...]
) -> None:
    """One glob over every service's health checks: photonic-foundry's fail (waived), quantum-planner's pass under a
    second glob that expires later (so it governs them): the first is still needed and never called needless, the
    second is, once, with its number of matches."""
    glob = f"checks/{HTTP}::test_health_*[*]"
    spare = f"checks/{HTTP}::test_health_*[quantum-planner]"
    variant = profile_variant(one_service_down(waiver(glob), waiver(spare, ticket="OPS-8", expires=LATER + timedelta(
        days=1))))
    run = run_checks(variant, HTTP, extra=workers)
    assert run.result.ret == 0, run.result.stdout.str()
    passing = run.checks[f"test_http_health.py::{STATUS}[quantum-planner]"]  # the spare one governs it: it expires
    assert (passing["outcome"], passing["waiver"]["check"]) == ("passed", spare)  # later
    failing = run.checks[SHORT]
    assert (failing["outcome"], failing["waiver"]["check"], failing["notes"]) == ("waived", glob, [])
    stdout = run.result.stdout.str()
    needless = ("waiver for checks/health/test_http_health.py::test_health_*[quantum-planner] (OPS-8, "
                "sre@example.com) is no longer needed: none of the 3 check(s) it matches failed in this run; remove it")
    assert [line for line in section(stdout) if not line.startswith("WAIVED ")] == [needless]
    assert stdout.count("no longer needed") == 1
    warnings = table((run.report_dir / "summary.md").read_text(), "Warnings")
    assert [row for row in warnings if "no longer needed" in row[1]] == [["waiver", needless]]


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_a_glob_still_needed_drops_the_waiver_from_its_passing_matches(
    run_checks: Run, profile_variant: Variant, workers: tuple[str, ...]
) -> None:
    glob = f"checks/{HTTP}::{STATUS}[*]"
    run = run_checks(profile_variant(one_service_down(waiver(glob))), f"{HTTP}::{STATUS}", extra=workers)
    assert run.result.ret == 0, run.result.stdout.str()
    passing = run.checks[f"test_http_health.py::{STATUS}[quantum-planner]"]
    assert (passing["outcome"], passing["waiver"], passing["notes"]) == ("passed", None, [])
    assert run.outcome(SHORT) == "waived"
    stdout = run.result.stdout.str()
    assert "no longer needed" not in stdout
    [line] = section(stdout)
    assert line.startswith(f"WAIVED {NODE}: photonic-foundry health endpoint ")
    assert not any("no longer needed" in row[1] for row in table((run.report_dir / "summary.md").read_text(),
                                                                   "Warnings"))


def test_a_waiver_of_a_check_this_selection_left_out_is_no_warning(run_checks: Run, profile_variant: Variant) -> None:
    """A weekly check's waiver in a `-m daily` run: the check was collected, then deselected; nothing to warn about."""
    left_out = f"checks/{HTTP}::test_health_answers_within_latency_budget[*]"
    run = run_checks(profile_variant(healthy(waiver(left_out))), HTTP, extra=("-k", "not latency"))
    assert run.result.ret == 0, run.result.stdout.str()
    assert not any("latency" in t for t in run.checks)
    assert run.evidence["waivers"] == []
    assert "matched no check" not in run.result.stdout.str()


def test_under_xdist_each_waived_check_is_reported_once_and_the_unmatched_warning_once(
    run_checks: Run, profile_variant: Variant
) -> None:
    glob = f"checks/{HTTP}::*[photonic-foundry]"
    elsewhere = "checks/no_such_dir/test_gone.py::*"
    variant = profile_variant(closed_service(waiver(glob), waiver(elsewhere, ticket="OPS-7")))
    run = run_checks(variant, HTTP, extra=("-n", "2"))
    assert run.result.ret == 0, run.result.stdout.str()
    nodeids = [c["nodeid"] for c in run.evidence["checks"]]
    assert sorted(nodeids) == sorted(f"checks/{HTTP}::{t}[photonic-foundry]" for t in (
        STATUS, "test_health_body_reports_healthy", "test_health_answers_within_latency_budget"))
    assert {c["outcome"] for c in run.evidence["checks"]} == {"waived"}
    assert run.evidence["run"]["selection"]["workers"] == 2
    stdout = run.result.stdout.str()
    assert stdout.count(f"waiver for {elsewhere} (OPS-7, sre@example.com) matched no check in this run: correct its "
                        "check or remove it") == 1
    assert len([line for line in section(stdout) if line.startswith("WAIVED ")]) == 3
    assert run.evidence["waivers"] == [{"check": elsewhere, "owner": "sre@example.com", "ticket": "OPS-7",
                                        "expires": LATER.isoformat(), "problem": "unmatched"}]


def test_junit_html_and_allure_show_a_waived_check_with_its_waiver(run_checks: Run, profile_variant: Variant) -> None:
    run = run_checks(profile_variant(closed_service(waiver())), f"{HTTP}::{STATUS}")
    text = f"waived by sre@example.com until {LATER} (OPS-1234): the vendor moves the health endpoint"
    junit = ElementTree.parse(run.report_dir / "junit.xml").getroot()
    [case] = list(junit.iter("testcase"))
    [skipped] = list(case.iter("skipped"))
    assert (skipped.get("type"), skipped.get("message")) == ("pytest.xfail", text)
    assert not list(case.iter("failure"))

    blob = re.search(r'data-jsonblob="([^"]*)"', (run.report_dir / "report.html").read_text())
    assert blob is not None
    [row] = json.loads(html.unescape(blob.group(1)))["tests"][NODE]
    assert row["result"] == "XFailed"
    assert text in row["log"]

    results = [json.loads(p.read_text()) for p in (run.report_dir / "allure-results").glob("*-result.json")]
    [result] = results
    assert result["status"] == "skipped"
    assert result["statusDetails"]["message"].startswith(f"XFAIL {text}\n")


TEAM_CHECK = """
import socket
from urllib.parse import urlsplit

import pytest


@pytest.fixture
def health_socket(profile):
    url = urlsplit(profile.services[0].url)
    with socket.create_connection((url.hostname, url.port), timeout=5) as connection:
        yield connection


def test_service_accepts_tcp(health_socket):
    assert health_socket.fileno() > 0
"""


def test_a_broken_setup_is_waived_too_and_keeps_its_note(
    pytester: pytest.Pytester, profile_variant: Variant, team_conftest: Path
) -> None:
    """A team's own check whose fixture cannot connect (an exception, not a failed expectation: broken) in setup."""
    pytester.makepyfile(test_own=TEAM_CHECK)
    node = "test_own.py::test_service_accepts_tcp"

    def run(*waivers: dict[str, Any]) -> tuple[pytest.RunResult, dict[str, Any]]:
        result = pytester.runpytest_subprocess(
            "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(pytester.path), "--profile",
            str(profile_variant(closed_service(*waivers))), "--report-dir", str(pytester.path / "report"),
            "-p", "no:randomly", "test_own.py", timeout=120)
        evidence = json.loads((pytester.path / "report" / "evidence.json").read_text())
        [check] = evidence["checks"]
        return result, check

    unwaived, check = run()
    unwaived.assert_outcomes(errors=1)
    assert check["outcome"] == "broken"
    assert check["message"] == "ConnectionRefusedError: [Errno 111] Connection refused"
    waived, check = run(waiver(node))
    assert waived.ret == 0
    waived.assert_outcomes(xfailed=1)
    assert (check["outcome"], check["message"], check["waiver"]["state"]) == (
        "waived", "ConnectionRefusedError: [Errno 111] Connection refused", "applied")
    assert check["notes"] == ["the waived failure is broken (ConnectionRefusedError), not a failed expectation: the "
                              "check could not judge the environment"]


def test_a_run_with_a_catch_all_waiver_stops_at_load_and_runs_no_check(
    run_checks: Run, profile_variant: Variant
) -> None:
    run = run_checks(profile_variant(closed_service(waiver("*"))), f"{HTTP}::{STATUS}")
    assert run.result.ret not in (0, 1), run.result.stdout.str()
    assert run.evidence == {}
    problem = [line for line in run.result.stderr.lines if "waivers[0]" in line]
    assert len(problem) == 1, run.result.stderr.str()
    assert re.fullmatch(r"  waivers\[0\]\.check \(line \d+\): " + re.escape(
        f"'*' names no test file (a node id is checks/…/test_x.py::test_y[param]): {CATCH_ALL_FIX}"), problem[0])
