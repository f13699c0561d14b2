"""The runbook inventory, a team's own runbook IDs, and the run summary (summary.md, summary.html).

Procedure tables are read from real files; malformed ones and unlisted marker IDs stop real pytest runs at the
start. The summary is read from real runs of checks/ against the test sandbox (a service on a dead port, the
restore drills, two xdist workers, a team's own directory) and opened in headless Chromium.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opsverify.localserver.net import free_port
from opsverify.reporting.charts import CHARTS, chart_svg
from opsverify.reporting.evidence import CheckResult, EvidenceDoc
from opsverify.reporting.history import Point
from opsverify.reporting.inventory import InventoryError, load_inventory, read_procedures
from opsverify.reporting.summary import NOT_CONFIGURED, STATUSES, build_summary, notices, status_of, write_summary

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "runbooks" / "INVENTORY.md"
TEAM_INVENTORY = """# Payments runbook

Some prose, and a table that is not a procedure table:

| owner | rota |
|---|---|
| ops | weekly |

## Payments API

| ID | Cadence | Procedure | the check verifies |
|---|---|---|---|
| OPS-01 | daily | ping the payments API | the API answers |
| OPS-02 | weekly | rotate the signing key | the key is younger than 90 days |
| OPS-H1 | monthly | review the fraud rules | human |
"""


def test_the_shipped_inventory_is_read_by_group_with_its_human_rows() -> None:
    inventory = load_inventory([SHIPPED])
    assert len(inventory.procedures) == 48 + 3 + 31 + 1
    groups = inventory.groups()
    assert list(groups) == ["Photonic Neural Network Foundry (`photonic-foundry-runbook.md`)",
                            "Quantum Planner (`quantum-planner-runbook.md`)"]
    first = groups["Photonic Neural Network Foundry (`photonic-foundry-runbook.md`)"][0]
    assert (first.id, first.cadence, first.procedure, first.line, first.human) == (
        "PF-01", "daily", "health check verification", 14, False)
    assert [p.id for p in inventory.procedures if p.human] == ["PF-H1", "PF-H2", "PF-H3", "QP-H1"]


def test_a_teams_table_comes_first_and_keeps_its_rows(tmp_path: Path) -> None:
    team = tmp_path / "RUNBOOK.md"
    team.write_text(TEAM_INVENTORY + "| PF-01 | hourly | our own health check | the API answers |\n")
    inventory = load_inventory([team, SHIPPED, team])
    assert inventory.files == (team, SHIPPED)
    assert [p.id for p in inventory.procedures[:4]] == ["OPS-01", "OPS-02", "OPS-H1", "PF-01"]
    assert inventory.procedures[3].cadence == "hourly"  # the team's row of an ID both list
    assert [p.group for p in inventory.procedures[:4]] == ["Payments API"] * 4
    assert sum(1 for p in inventory.procedures if p.id == "PF-01") == 1


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("| ID | cadence | procedure | verifies |\n|---|---|---|---|\n| OPS-01 | daily | ping |\n",
         "{path}:5: the row has 3 columns, its table's header 4: give it 4 cells (write a | inside a cell as \\|)"),
        ("| ID | cadence | procedure | verifies |\n|---|---|---|---|\n| OPS-01 | daily | a | b |\n"
         "| OPS-01 | x | y | z |\n",
         "{path}:6: OPS-01 is listed twice (first on line 5): give each procedure its own ID"),
        ("| ID | cadence | procedure | verifies |\n| OPS-01 | daily | a | b |\n",
         "{path}:3: the procedure table's header is not followed by a delimiter row: add |---|---|---|---| on line 4"),
        ("| id | cadence | procedure | verifies |\n|---|---|---|---|\n| ops 1 | daily | a | b |\n",
         "{path}:5: 'ops 1' is no procedure ID: write it as capitals, a dash and capitals or digits, e.g. OPS-01"),
    ],
)
def test_a_malformed_procedure_table_names_file_line_and_fix(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "RUNBOOK.md"
    path.write_text(f"# Ops\n\n{table}")
    with pytest.raises(InventoryError) as raised:
        read_procedures(path)
    assert str(raised.value) == message.format(path=path)


def run_team(pytester: pytest.Pytester, profile: Path, *extra: str) -> pytest.RunResult:
    """pytest over the team's own directory (its conftest loads opsverify's plugins)."""
    return pytester.runpytest_subprocess(
        "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(pytester.path), f"--profile={profile}",
        "-p", "no:randomly", *extra, timeout=180,
    )


def team_profile(profile_variant: Callable[..., Path], inventory: Path) -> Path:
    def declare(data: dict[str, Any]) -> None:
        data["reporting"] = {"inventory": str(inventory)}

    return profile_variant(declare)


TEAM_CHECKS = """import pytest


@pytest.mark.daily
@pytest.mark.runbook({ids})
def test_payments_api_answers():
    pass
"""


def test_a_malformed_team_table_stops_the_run_at_the_start(
    pytester: pytest.Pytester, profile_variant: Callable[..., Path], team_conftest: Path
) -> None:
    inventory = pytester.path / "RUNBOOK.md"
    inventory.write_text(TEAM_INVENTORY.replace("| OPS-02 | weekly |", "| OPS-02 | weekly | extra |"))
    pytester.makepyfile(test_team=TEAM_CHECKS.format(ids='"OPS-01"'))
    result = run_team(pytester, team_profile(profile_variant, inventory), "--no-reports", "test_team.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == (f"ERROR: {inventory}:14: the row has 5 columns, its table's header 4: give it "
                                      "4 cells (write a | inside a cell as \\|)")
    assert "test_payments_api_answers" not in result.stdout.str()


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ('"OPS-77"', "runbook ID OPS-77 is listed in no runbook inventory ({team}, {shipped}): add its row to your "
                     "team's table and name that file as reporting.inventory in the profile, or correct the ID"),
        ('"ops-1"', "'ops-1': runbook IDs must look like PF-04 or QP-18 (see runbooks/INVENTORY.md), or a team's own "
                    "OPS-01"),
    ],
)
def test_a_team_check_naming_an_unlisted_id_is_refused(
    pytester: pytest.Pytester, profile_variant: Callable[..., Path], team_conftest: Path, ids: str, message: str
) -> None:
    inventory = pytester.path / "RUNBOOK.md"
    inventory.write_text(TEAM_INVENTORY)
    pytester.makepyfile(test_team=TEAM_CHECKS.format(ids=ids))
    result = run_team(pytester, team_profile(profile_variant, inventory), "--no-reports", "test_team.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    said = message.format(team=inventory, shipped=SHIPPED)
    assert result.stderr.lines[0] == f"ERROR: test_team.py::test_payments_api_answers: {said}"


def test_a_team_check_carrying_its_own_listed_id_runs(
    pytester: pytest.Pytester, profile_variant: Callable[..., Path], team_conftest: Path
) -> None:
    inventory = pytester.path / "RUNBOOK.md"
    inventory.write_text(TEAM_INVENTORY)
    pytester.makepyfile(test_team=TEAM_CHECKS.format(ids='"OPS-01"'))
    result = run_team(pytester, team_profile(profile_variant, inventory), "--no-reports", "test_team.py")
    result.assert_outcomes(passed=1)


# --- the summary ------------------------------------------------------------------------------------------------

def matrix(markdown: str) -> dict[str, list[str]]:
    """The coverage matrix rows of summary.md by procedure ID: [cadence, procedure, status, checks]."""
    section = markdown.split("## Runbook coverage", 1)[1].split("## RTO / RPO", 1)[0]
    rows = [cells(line) for line in section.splitlines() if line.startswith("| ")]
    return {row[0]: row[1:] for row in rows if row[0] != "ID"}


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip()[1:-1].split(" | ")]


def table(markdown: str, heading: str) -> list[list[str]]:
    """The body rows of the first table under ``## heading``."""
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [cells(line) for line in section.splitlines() if line.startswith("| ")][1:]


def chromium(page: Path, where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium, offline and without a profile of its own, on a local page."""
    command = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", f"--user-data-dir={where / 'chromium'}", *args,
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def dead_pf_service(inventory: Path, port: int) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        service = next(s for s in data["services"] if s["name"] == "photonic-foundry")
        service["url"] = f"http://127.0.0.1:{port}"
        data["reporting"] = {"inventory": str(inventory)}

    return mutate


PF01_CHECK = "health/test_http_health.py::test_health_endpoint_answers_2xx[photonic-foundry]"
SUMMARY_CHECKS = ("health/test_http_health.py", "health/test_metrics.py", "backup/test_backup_freshness.py",
                  "backup/test_backup_size.py")


def test_the_summary_shows_failures_first_and_the_coverage_of_every_procedure(
    run_checks: Callable[..., Any], profile_variant: Callable[..., Path], tmp_path: Path
) -> None:
    """A service on a dead port: its failures lead summary.md; the matrix has a status for every procedure row."""
    inventory = tmp_path / "RUNBOOK.md"
    inventory.write_text(TEAM_INVENTORY)
    port = free_port()
    run = run_checks(profile_variant(dead_pf_service(inventory, port)), *SUMMARY_CHECKS, extra=("-k", "not metric"))
    markdown = (run.report_dir / "summary.md").read_text()
    headings = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert headings == ["## Failures", "## Warnings", "## Runbook coverage", "## RTO / RPO", "## Charts", "## Checks"]
    refused = f"photonic-foundry health endpoint http://127.0.0.1:{port}/health did not answer: connection refused"
    again = (f"photonic-foundry health endpoint did not answer: skipped probing: photonic-foundry at 127.0.0.1:{port} "
             "did not answer at ")
    failures = table(markdown, "Failures")
    assert [row[:3] for row in failures] == [
        ["health/test_http_health.py::test_health_answers_within_latency_budget[photonic-foundry]", "PF-01 QP-01",
         "failed"],
        ["health/test_http_health.py::test_health_body_reports_healthy[photonic-foundry]", "PF-01 QP-01 QP-29",
         "failed"],
        [PF01_CHECK, "PF-01 QP-01 QP-29", "failed"],
    ]
    assert failures[2][3] == refused
    assert all(row[3].startswith(again) and row[3].endswith(" (connection refused)") for row in failures[:2])

    rows = matrix(markdown)
    assert rows["PF-01"][:3] == ["daily", "health check verification", "failed"]
    assert f"{PF01_CHECK} (failed)" in rows["PF-01"][3].split("<br>")
    assert rows["PF-04"][2] == "verified"
    assert rows["PF-03"][2:] == ["not selected", "4 collected, none in this run"]
    assert rows["PF-H1"][2] == "human"
    assert rows["PF-02"][2] == "not collected"  # no check of the named files carries it: no gap can be told
    assert rows["OPS-01"] == ["daily", "ping the payments API", "not collected", ""]
    assert rows["OPS-H1"][2] == "human"
    assert list(rows)[:3] == ["OPS-01", "OPS-02", "OPS-H1"]  # the team's table first
    counts = markdown.split("## Runbook coverage\n\n", 1)[1].splitlines()[0]
    statuses = [row[2] for row in rows.values()]
    assert counts == ", ".join(f"{statuses.count(s)} {s}" for s in STATUSES if s in statuses)
    assert "could not be read" not in markdown  # the charts read the store this run was just appended to
    checks = [row[0] for row in table(markdown, "Checks")]
    assert len(checks) == len(set(checks)) == len(run.checks)
    assert checks[0] in {f"health/{t}" for t in run.failed()}  # failures first here too

    page = run.report_dir / "summary.html"
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text), "the summary must open offline"
    assert "<script" not in text
    assert "<link" not in text
    shown_offline(page, tmp_path, rows)


def shown_offline(page: Path, tmp_path: Path, rows: dict[str, list[str]]) -> None:
    """Chromium renders the page: a screenshot of more than one colour, a DOM with every procedure row and charts."""
    from PIL import Image

    shot = tmp_path / "summary.png"
    chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None
    assert len(colours) > 10, "the screenshot is blank"
    dom = chromium(page, tmp_path, "--dump-dom").stdout
    shown = re.findall(r'<tr id="procedure-([A-Z0-9-]+)" class="procedure row-[a-z-]+" data-status="([a-z ]+)"', dom)
    assert dict(shown) == {procedure: row[2] for procedure, row in rows.items()}
    assert re.search(r'<div class="chart" id="chart-backup_age_seconds"><svg', dom)
    assert re.search(r'<div class="chart" id="chart-backup_size_bytes"><svg', dom)


def test_a_drill_run_fills_the_rto_rpo_table_and_charts_the_rto(
    run_checks: Callable[..., Any], sandbox_profile: Path
) -> None:
    run = run_checks(sandbox_profile, "restore/test_database_drill.py", "restore/test_cache_drill.py",
                     "recovery/test_objectives.py", extra=("-k", "rto or rpo"))
    markdown = (run.report_dir / "summary.md").read_text()
    rows = table(markdown, "RTO / RPO")
    assert [(r[0], r[1], r[3], r[5], r[6]) for r in rows] == [
        ("cache-rdb", "full-system", "2h", "4h", "passed"),
        ("pf-database-custom", "database", "30m", "1h", "passed"),
        ("qp-database-gzip", "database", "30m", "1h", "passed"),
    ]
    duration = r"(\d+(\.\d+)?(ms|s|m|h|d))+"
    assert all(re.fullmatch(duration, r[2]) and re.fullmatch(duration, r[4]) for r in rows), rows
    assert matrix(markdown)["PF-47"][2] == "verified"
    assert re.search(r'<div class="chart" id="chart-restore_rto_seconds"><svg', (run.report_dir / "summary.html")
                     .read_text())


def test_under_xdist_the_summary_lists_each_check_once_and_knows_the_deselected(
    run_checks: Callable[..., Any], sandbox_profile: Path
) -> None:
    """Two workers: each check once; the catalogue of what was collected came through xdist's workeroutput."""
    run = run_checks(sandbox_profile, "health/test_http_health.py", "health/test_metrics.py",
                     extra=("-n", "2", "-k", "not metric and not latency"))  # no latency budget on a busy machine
    markdown = (run.report_dir / "summary.md").read_text()
    checks = [row[0] for row in table(markdown, "Checks")]
    assert sorted(checks) == sorted(f"health/{t}" for t in run.checks)
    assert len(checks) == len(set(checks)) == 4
    rows = matrix(markdown)
    assert rows["PF-03"][2:] == ["not selected", "4 collected, none in this run"]
    assert rows["PF-01"][2] == "verified"
    assert "| totals | 4 passed |" in markdown
    assert "| selection | -k 'not metric and not latency'; " in markdown


def test_a_teams_own_procedures_show_in_the_matrix(
    pytester: pytest.Pytester, profile_variant: Callable[..., Path], team_conftest: Path
) -> None:
    inventory = pytester.path / "RUNBOOK.md"
    inventory.write_text(TEAM_INVENTORY)
    pytester.makepyfile(test_team=TEAM_CHECKS.format(ids='"OPS-01"'))
    report = pytester.path / "report"
    result = run_team(pytester, team_profile(profile_variant, inventory), f"--report-dir={report}")  # all of it
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"summary.md*{report / 'summary.md'}", f"summary.html*{report / 'summary.html'}"])
    rows = matrix((report / "summary.md").read_text())
    assert rows["OPS-01"] == ["daily", "ping the payments API", "verified", "test_team.py::test_payments_api_answers "
                              "(passed)"]
    assert rows["OPS-02"][2] == "gap"
    assert rows["OPS-H1"][2] == "human"
    assert rows["PF-01"][2] == "gap"  # the shipped table is shown too


def without_lifecycle_and_scanners(data: dict[str, Any]) -> None:
    data.pop("lifecycle", None)
    data.pop("scanners", None)
    data["backups"] = [b for b in data["backups"] if b["kind"] != "config"]
    data["drills"] = [d for d in data.get("drills", []) if d["backup"] in {b["name"] for b in data["backups"]}]


def test_procedures_only_an_undeclared_kind_would_bring_are_not_configured_not_gaps(
    run_checks: Callable[..., Any], profile_variant: Callable[..., Path]
) -> None:
    """No lifecycle.log_dirs, no scanners, no config backups: the log, scanner and backup checks collect without the
    kinds their ``runbook(by_kind=…)`` gives IDs for, yet the suite checks PF-02, QP-22, PF-05, QP-08, PF-23 and
    QP-20: "not configured". The
    whole suite is collected (so a gap could be told) and deselected (-k), so nothing runs."""
    run = run_checks(profile_variant(without_lifecycle_and_scanners), extra=("-k", "no_check_is_named_like_this"))
    assert run.result.ret == pytest.ExitCode.NO_TESTS_COLLECTED, run.result.stdout.str()
    markdown = (run.report_dir / "summary.md").read_text()
    rows = matrix(markdown)
    for procedure in ("PF-02", "QP-22", "PF-05", "QP-08", "PF-23", "QP-20"):
        assert rows[procedure][2:] == ["not configured", NOT_CONFIGURED], (procedure, rows[procedure])
    assert rows["PF-01"][2:] == ["not selected", "6 collected, none in this run"]
    assert rows["PF-06"][2] == "gap"  # no check of the suite could carry it
    page = (run.report_dir / "summary.html").read_text()
    assert re.search(r'<tr id="procedure-PF-02" class="procedure row-not-configured" data-status="not configured">'
                     r'\s*<td>PF-02</td>.*?<td class="status st-not-configured">not configured</td>'
                     r'<td class="nodeid">\s*'
                     + re.escape(NOT_CONFIGURED) + r"</td></tr>", page, re.S)


LONG_NODE = ("checks/backup/test_backup_integrity.py::test_every_backup_that_holds_secrets_is_encrypted_at_rest_"
             "and_readable_only_by_its_owner[pf-postgres-custom-with-a-very-long-source-name-" + "x" * 60 + "]")


def test_long_node_ids_wrap_and_the_page_keeps_to_a_1280_px_window(tmp_path: Path) -> None:
    """Node id and message cells may break anywhere (overflow-wrap), so a 200-character node id does not push the
    message column off a 1280 px window; Chromium renders it (the screenshot was looked at when this was written:
    the node id wraps inside its cell, the message column is on the page)."""
    doc = EvidenceDoc.model_validate({
        "run": {"id": "r1", "profile": "p", "role": "staging", "opsverify": "0.1.0", "host": "h",
                "started": "2026-11-30T01:00:00Z", "finished": "2026-11-30T01:05:00Z"},
        "checks": [{"nodeid": LONG_NODE, "runbook": ["PF-23", "QP-20"], "outcome": "failed",
                    "message": "the backup pf-postgres-custom is readable by others (mode 0644): chmod 600 it"}],
    })
    _, page = write_summary(tmp_path, build_summary(doc, load_inventory([SHIPPED]), {LONG_NODE: ["PF-23", "QP-20"]},
                                                    None))
    text = page.read_text()
    assert ".nodeid,.message{overflow-wrap:anywhere;word-break:break-word}" in text
    assert "table{max-width:100%}" in text
    cells = re.findall(r"<td( class=\"[a-z]+\")?>(?:\s*<ul><li>)?" + re.escape(short_long()), text)
    assert cells == [' class="nodeid"'] * 4, cells  # failures, the matrix's PF-23 and QP-20 rows, checks
    assert text.count('<td class="nodeid">\n<ul><li>' + short_long()) == 2  # PF-23 and QP-20 rows
    shot = tmp_path / "long.png"
    chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2000)


def short_long() -> str:
    return LONG_NODE.removeprefix("checks/")


# --- pure parts: statuses and charts --------------------------------------------------------------------------

def test_status_of_a_procedure() -> None:
    shipped = load_inventory([SHIPPED])
    automatable, human = shipped.procedures[0], next(p for p in shipped.procedures if p.human)

    def ran(*outcomes: str) -> list[CheckResult]:
        return [CheckResult(nodeid=f"checks/x.py::t{n}", outcome=o) for n, o in enumerate(outcomes)]  # type: ignore[arg-type]

    assert status_of(human, ran("passed"), 1) == "human"
    assert status_of(automatable, [], 0) == "gap"
    assert status_of(automatable, [], 0, complete=False) == "not collected"
    assert status_of(automatable, [], 0, could=True) == "not configured"
    assert status_of(automatable, [], 0, complete=False, could=True) == "not configured"
    assert status_of(automatable, [], 3) == "not selected"
    assert status_of(automatable, ran("passed", "broken", "waived"), 3) == "failed"
    assert status_of(automatable, ran("passed", "waived"), 2) == "waived"
    assert status_of(automatable, ran("skipped", "skipped"), 2) == "skipped"
    assert status_of(automatable, ran("skipped", "passed"), 2) == "verified"


def test_charts_draw_one_line_per_component_as_inline_svg() -> None:
    start = datetime(2026, 9, 1, tzinfo=UTC)
    points = [Point(f"run-{day}", start + timedelta(days=day), 60.0 * (10 + day % 7), f"checks/r.py::t[{c}]", c)
              for day in range(0, 90, 3) for c in ("pf-database", "qp-database")]
    svg = chart_svg(CHARTS[0], points)
    assert svg.startswith("<svg ")
    assert svg.rstrip().endswith("</svg>")
    assert len(re.findall(r'<g id="line2d_\d+">\s*<path d="M [^"L]*(?:L [^"L]*){29}"', svg)) == 2  # 30 points each
    for text in ("pf-database", "qp-database", "minutes", "Measured RTO of the restore drills"):
        assert f">{text}</text>" in svg
    assert not re.search(r"""(src|href)="(https?:)?//""", svg)
    assert "<metadata" not in svg
    assert "<script" not in svg
    one = chart_svg(CHARTS[2], [Point("run", start, 3 * 1024 * 1024, "checks/b.py::t[pf]", None)])
    assert ">checks/b.py::t[pf]</text>" in one
    assert ">MiB</text>" in one
    assert chart_svg(CHARTS[1], []) == ""


def leaf_certificate(path: Path, days: int) -> datetime:
    """A self-signed certificate for localhost valid ``days`` more days, written to ``path``; its expiry."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert.not_valid_after_utc


def test_a_certificate_expiring_within_30_days_is_a_warning(
    run_checks: Callable[..., Any], profile_variant: Callable[..., Path], tmp_path: Path
) -> None:
    """A certificate file with 20 days left passes its check (tls.expiry_fail 14d) and is listed under Warnings;
    one with 90 days is not."""
    soon = leaf_certificate(tmp_path / "soon.pem", 20)
    leaf_certificate(tmp_path / "later.pem", 90)

    def files(data: dict[str, Any]) -> None:
        data["tls"] = {"endpoints": [], "certificate_files": [
            {"name": name, "path": str(tmp_path / f"{name}.pem"), "server_name": "localhost"}
            for name in ("soon", "later")]}

    run = run_checks(profile_variant(files), "security/test_certificate_files.py", extra=("-k", "not_expiring"))
    check = "test_certificate_files.py::test_certificate_file_is_not_expiring[{}]"
    assert (run.outcome(check.format("soon")), run.outcome(check.format("later"))) == ("passed", "passed")
    markdown = (run.report_dir / "summary.md").read_text()
    left = (soon.date() - datetime.fromisoformat(run.evidence["run"]["finished"]).date()).days
    assert table(markdown, "Warnings") == [[
        "certificate", f"security/{check.format('soon')}: certificate localhost expires on {soon:%Y-%m-%d} "
        f"(in {left} days)"]]


def test_warnings_name_waivers_updates_and_unproved_tables() -> None:
    """The warnings of evidence other parts record: waiver problems and waived checks (the waiver plugin), pending
    security updates (PF-08), a maintenance action's not-proved tables."""
    doc = EvidenceDoc.model_validate({
        "run": {"id": "r1", "profile": "p", "role": "staging", "opsverify": "0.1.0", "host": "h",
                "started": "2026-11-30T01:00:00Z", "finished": "2026-11-30T01:05:00Z"},
        "waivers": [{"check": "checks/x.py::*", "owner": "dba@example.com", "ticket": "OPS-9", "expires": "2026-11-01",
                     "problem": "expired"}],
        "checks": [
            {"nodeid": "checks/backup/test_backup_size.py::test_shrunk[qp]", "outcome": "waived",
             "message": "backup shrank 40%", "waiver": {
                 "check": "checks/backup/*", "reason": "schema cleanup", "owner": "dba@example.com",
                 "ticket": "OPS-1234", "expires": "2026-12-31", "state": "applied"}},
            {"nodeid": "checks/security/test_host_security.py::test_security_updates_are_installed[app]",
             "measured": {"pending_security": "2", "security_updates": "openssl 3.0.15-1, libc6 2.36-9"}},
            {"nodeid": "checks/maintenance/test_maintenance_actions.py::test_archive[qp]",
             "measured": {"not_proved": "1 other table the maintenance_user cannot SELECT: audit.log"}},
        ],
    })
    assert [(n.kind, n.text) for n in notices(doc)] == [
        ("waiver", "waiver for checks/x.py::* (OPS-9, dba@example.com) expired on 2026-11-01: the check counts "
                   "again; renew it or remove it"),
        ("waived", "backup/test_backup_size.py::test_shrunk[qp]: waived by dba@example.com (OPS-1234) until "
                   "2026-12-31: schema cleanup; the failure: backup shrank 40%"),
        ("not proved", "maintenance/test_maintenance_actions.py::test_archive[qp]: 1 other table the "
                       "maintenance_user cannot SELECT: audit.log"),
        ("security updates", "security/test_host_security.py::test_security_updates_are_installed[app]: 2 security "
                             "update(s) pending: openssl 3.0.15-1, libc6 2.36-9"),
    ]
